/* `depthprune eval`: the papers' tables in one call: perplexity on named
 * text files and zero-shot multiple-choice accuracy (lm-evaluation-harness
 * semantics, see mc.h) on named JSONL tasks, split across ranks, written to
 * RESULTS.json with everything needed to reproduce the numbers, and printed
 * as a Markdown table. The task part is shared with `sweep`. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "depthprune/eval.h"
#include "depthprune/export.h"
#include "depthprune/mc.h"
#include "depthprune/prune.h"

static const dp_cli_opt k_eval_opts[] = {
    {"--model", "DIR", "HF model directory", "model.path"},
    {"--ppl", "NAME=FILE,..", "perplexity sets, e.g. wikitext2=wiki.test.txt,ptb=ptb.test.txt", NULL},
    {"--task", "NAME=FILE,..",
     "tasks: boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa; any other NAME is a generic task",
     NULL},
    {"--limit", "N", "first N documents of each task (default all)", "eval.limit"},
    {"--skip-bad", NULL, "skip malformed task lines (reported) instead of refusing the run", NULL},
    {"--drop", "LIST", "blocks to remove through the layer map", NULL},
    {"--batch", "N", "requests / windows per forward (default eval.batch)", "eval.batch"},
    {"--out", "FILE", "RESULTS.json (default RUNDIR/results.json)", NULL},
    {"--dump-requests", "FILE",
     "also write every request (task, doc, choice, input ids, continuation ids, loglik) as JSONL", NULL},
    {NULL, NULL, NULL, NULL},
};

/* One "name=file" item of a comma list into name/path (fresh strings). */
static int split_item(const char *item, char **name, char **path, dp_err *err) {
    const char *eq = strchr(item, '=');
    if (!eq || eq == item || !eq[1]) return dp_err_set(err, DP_E_USAGE, "'%s': expected NAME=FILE", item);
    *name = dp_malloc((size_t)(eq - item) + 1, "eval");
    memcpy(*name, item, (size_t)(eq - item));
    (*name)[eq - item] = 0;
    *path = dp_strdup(eq + 1, "eval");
    return DP_OK;
}

void dp_cli_tasks_free(dp_cli_tasks *t) {
    for (int k = 0; k < t->n; k++) {
        dp_free(t->name[k]);
        dp_free(t->kind[k]);
        dp_free(t->path[k]);
        for (int64_t d = 0; d < t->n_docs[k]; d++) dp_mc_doc_free(&t->docs[k][d]);
        dp_free(t->docs[k]);
        dp_free(t->first[k]);
    }
    for (int64_t i = 0; i < t->n_req; i++) dp_mc_req_free(&t->req[i]);
    dp_free(t->req);
    memset(t, 0, sizeof *t);
}

int dp_cli_tasks_load(const dp_app *app, const char *tok_dir, const char *spec, int64_t limit, int skip_bad,
                      int64_t max_len, dp_cli_tasks *t, dp_err *err) {
    memset(t, 0, sizeof *t);
    dp_tokenizer *tok = NULL;
    int rc = dp_tokenizer_load(tok_dir, &tok, err);
    int add_bos = dp_config_bool(&app->cfg, "eval.mc_bos");
    char *buf = dp_strdup(spec, "eval");
    int64_t cap = 0;
    for (char *save = NULL, *it = strtok_r(buf, ",", &save); it && !rc; it = strtok_r(NULL, ",", &save)) {
        if (t->n == DP_CLI_MAX_TASKS) {
            rc = dp_err_set(err, DP_E_USAGE, "at most %d tasks", DP_CLI_MAX_TASKS);
            break;
        }
        int k = t->n;
        rc = split_item(it, &t->name[k], &t->path[k], err);
        if (rc) break;
        t->n++;
        /* the task kind: the name, or generic for any other name */
        t->kind[k] = dp_strdup(dp_mc_task_known(t->name[k]) ? t->name[k] : "generic", "eval");
        char *text = NULL;
        size_t n = 0;
        rc = dp_read_file(t->path[k], &text, &n, err);
        if (rc) break;
        t->hash[k] = dp_hash_bytes(text, n, 5);
        int64_t dcap = 64, line = 0;
        t->docs[k] = dp_malloc((size_t)dcap * sizeof(dp_mc_doc), "eval");
        for (size_t pos = 0; pos < n && !rc && (limit <= 0 || t->n_docs[k] < limit);) {
            const char *nl = memchr(text + pos, '\n', n - pos);
            size_t len = nl ? (size_t)(nl - (text + pos)) : n - pos;
            const char *l = text + pos;
            pos += len + 1;
            line++;
            size_t s = 0;
            while (s < len && (l[s] == ' ' || l[s] == '\r' || l[s] == '\t')) s++;
            if (s == len) continue;
            dp_mc_doc doc;
            dp_err e2;
            int r = dp_mc_parse(t->kind[k], l, len, &doc, &e2);
            if (r) {
                if (!skip_bad) {
                    rc = dp_err_set(err, r, "%s line %lld: %s", t->path[k], (long long)line, e2.msg);
                    break;
                }
                dp_log0("eval: %s line %lld skipped: %s", t->path[k], (long long)line, e2.msg);
                t->skipped[k]++;
                continue;
            }
            if (t->n_docs[k] == dcap)
                t->docs[k] = dp_realloc(t->docs[k], (size_t)(dcap *= 2) * sizeof(dp_mc_doc), "eval");
            t->docs[k][t->n_docs[k]++] = doc;
        }
        dp_free(text);
        if (!rc && t->n_docs[k] == 0) rc = dp_err_set(err, DP_E_FORMAT, "%s: no documents", t->path[k]);
        /* requests, doc-major */
        t->first[k] = dp_malloc((size_t)(t->n_docs[k] + 1) * sizeof(int64_t), "eval");
        for (int64_t d = 0; d < t->n_docs[k] && !rc; d++) {
            t->first[k][d] = t->n_req;
            for (int c = 0; c < t->docs[k][d].n && !rc; c++) {
                if (t->n_req == cap)
                    t->req = dp_realloc(t->req, (size_t)(cap = cap ? cap * 2 : 256) * sizeof(dp_mc_req), "eval");
                rc = dp_mc_encode(tok, t->docs[k][d].context[c], t->docs[k][d].cont[c], add_bos, max_len,
                                  &t->req[t->n_req], err);
                if (rc) {
                    dp_err_prefix(err, "%s document %lld choice %d", t->path[k], (long long)d + 1, c);
                    break;
                }
                t->truncated[k] += t->req[t->n_req].truncated;
                t->req[t->n_req].doc = d;
                t->req[t->n_req].choice = c;
                t->n_req++;
            }
        }
    }
    dp_free(buf);
    dp_tokenizer_free(tok);
    if (rc) dp_cli_tasks_free(t);
    return rc;
}

int dp_cli_tasks_run(const dp_mpi *mpi, dp_device dev, const dp_llama *m, const dp_layer_map *map, dp_cli_tasks *t,
                     int64_t batch, dp_err *err) {
    int rc = dp_mc_run(mpi, dev, m, map, t->req, t->n_req, batch, err);
    for (int k = 0; k < t->n && !rc; k++) dp_mc_score(t->docs[k], t->n_docs[k], t->req, t->first[k], &t->metrics[k]);
    return rc;
}

double dp_cli_tasks_average(const dp_cli_tasks *t) {
    double s = 0;
    for (int k = 0; k < t->n; k++)
        s += !strcmp(dp_mc_task_metric(t->kind[k]), "acc_norm") ? t->metrics[k].acc_norm : t->metrics[k].acc;
    return t->n ? s / t->n : NAN;
}

static uint64_t file_hash(const char *dir, const char *name) {
    char *p = dp_path_join(dir, name), *text = NULL;
    size_t n = 0;
    dp_err e;
    uint64_t h = dp_read_file(p, &text, &n, &e) ? 0 : dp_hash_bytes(text, n, 5);
    dp_free(text);
    dp_free(p);
    return h;
}

static int run_eval(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_eval;
    const dp_mpi *mpi = &app->mpi;
    dp_err err;
    dp_err_clear(&err);
    int rc = DP_OK;
    const char *dir = dp_cli_model_path(app, cmd);
    const char *ppl_s = dp_cli_get(app, cmd, "--ppl"), *task_s = dp_cli_get(app, cmd, "--task");
    const char *out = dp_cli_get(app, cmd, "--out");
    const char *drop_s = dp_cli_get(app, cmd, "--drop");
    long long limit = 0, batch = 0;
    if (!dir)
        rc = dp_err_set(&err, DP_E_USAGE, "--model DIR is required");
    else if (!ppl_s && !task_s)
        rc = dp_err_set(&err, DP_E_USAGE, "give --ppl NAME=FILE and/or --task NAME=FILE");
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--limit", dp_config_int(&app->cfg, "eval.limit"), &limit, &err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--batch", dp_config_int(&app->cfg, "eval.batch"), &batch, &err);
    if (!rc && (limit < 0 || batch < 1)) rc = dp_err_set(&err, DP_E_USAGE, "--limit must be >= 0 and --batch >= 1");
    char *outp = out ? dp_strdup(out, "path") : dp_path_join(dp_config_str(&app->cfg, "run.dir"), "results.json");
    rc = dp_mpi_agree(mpi, rc, &err);
    dp_llama m;
    memset(&m, 0, sizeof m);
    if (!rc) rc = dp_mpi_agree(mpi, dp_llama_load(dir, &m, &err), &err);
    dp_layer_map map;
    dp_layer_map_all(&map, rc ? 0 : (int)m.cfg.n_layers);
    int64_t *drop = NULL, n_drop = 0;
    if (!rc && drop_s && !(rc = dp_parse_block_list(drop_s, m.cfg.n_layers, &drop, &n_drop, &err)))
        rc = dp_layer_map_drop(&map, (int)m.cfg.n_layers, drop, n_drop, &err);
    if (!rc && map.n == 0) rc = dp_err_set(&err, DP_E_USAGE, "--drop removes every block");
    /* perplexity sets */
    dp_ppl_opts po = {.device = app->device,
                      .seq_len = dp_config_int(&app->cfg, "eval.seq_len"),
                      .batch = batch,
                      .bos_per_window = dp_config_bool(&app->cfg, "eval.bos_per_window")};
    char *pname[16] = {0}, *ppath[16] = {0};
    double pppl[16];
    int64_t ptok[16];
    uint64_t phash[16];
    int np = 0;
    char *pbuf = ppl_s ? dp_strdup(ppl_s, "eval") : NULL;
    for (char *save = NULL, *it = pbuf ? strtok_r(pbuf, ",", &save) : NULL; it && !rc;
         it = strtok_r(NULL, ",", &save)) {
        if (np == 16) {
            rc = dp_err_set(&err, DP_E_USAGE, "at most 16 --ppl sets");
            break;
        }
        rc = split_item(it, &pname[np], &ppath[np], &err);
        if (rc) break;
        np++;
        int32_t *win = NULL;
        int64_t n_win = 0;
        rc = dp_cli_ppl_windows(app, dir, ppath[np - 1], &po, &win, &n_win, &err);
        dp_ppl_result r;
        if (!rc) rc = dp_ppl_run(mpi, &m, &map, win, n_win, &po, &r, NULL, &err);
        if (!rc) {
            pppl[np - 1] = r.ppl;
            ptok[np - 1] = r.tokens;
            phash[np - 1] = file_hash(".", ppath[np - 1]);
            dp_log0("eval: %s PPL %.4f (%lld tokens)", pname[np - 1], r.ppl, (long long)r.tokens);
        }
        dp_free(win);
    }
    dp_free(pbuf);
    /* zero-shot tasks */
    dp_cli_tasks t;
    memset(&t, 0, sizeof t);
    if (!rc && task_s) {
        rc = dp_cli_tasks_load(app, dir, task_s, limit, dp_cli_get(app, cmd, "--skip-bad") != NULL,
                               m.cfg.max_position_embeddings, &t, &err);
        rc = dp_mpi_agree(mpi, rc, &err);
        if (!rc) rc = dp_cli_tasks_run(mpi, app->device, &m, &map, &t, batch, &err);
    }
    if (!rc && mpi->rank == 0) {
        cJSON *o = cJSON_CreateObject();
        char h[32];
        cJSON_AddStringToObject(o, "model", dir);
        snprintf(h, sizeof h, "%016llx", (unsigned long long)dp_llama_hash(&m));
        cJSON_AddStringToObject(o, "model_hash", h);
        snprintf(h, sizeof h, "%016llx", (unsigned long long)file_hash(dir, "tokenizer.json"));
        cJSON_AddStringToObject(o, "tokenizer_hash", h);
        cJSON *dl = cJSON_AddArrayToObject(o, "dropped");
        for (int64_t i = 0; i < n_drop; i++) cJSON_AddItemToArray(dl, cJSON_CreateNumber((double)drop[i]));
        cJSON *pr = cJSON_AddObjectToObject(o, "protocol");
        cJSON_AddNumberToObject(pr, "ppl_seq_len", (double)po.seq_len);
        cJSON_AddStringToObject(pr, "ppl_bos",
                                po.bos_per_window ? "per window" : dp_config_str(&app->cfg, "tokenizer.add_bos"));
        cJSON_AddStringToObject(
            pr, "mc_mode",
            "lm-evaluation-harness loglikelihood (context + ' ' + choice; continuation = whole[len(context):])");
        cJSON_AddBoolToObject(pr, "mc_bos", dp_config_bool(&app->cfg, "eval.mc_bos"));
        cJSON_AddStringToObject(pr, "target_delimiter", " ");
        cJSON *pp = cJSON_AddObjectToObject(o, "ppl");
        for (int i = 0; i < np; i++) {
            cJSON *e = cJSON_AddObjectToObject(pp, pname[i]);
            cJSON_AddNumberToObject(e, "ppl", pppl[i]);
            cJSON_AddNumberToObject(e, "tokens", (double)ptok[i]);
            cJSON_AddStringToObject(e, "file", ppath[i]);
            snprintf(h, sizeof h, "%016llx", (unsigned long long)phash[i]);
            cJSON_AddStringToObject(e, "file_hash", h);
        }
        cJSON *tk = cJSON_AddObjectToObject(o, "tasks");
        for (int k = 0; k < t.n; k++) {
            cJSON *e = cJSON_AddObjectToObject(tk, t.name[k]);
            cJSON_AddStringToObject(e, "kind", t.kind[k]);
            cJSON_AddStringToObject(e, "file", t.path[k]);
            snprintf(h, sizeof h, "%016llx", (unsigned long long)t.hash[k]);
            cJSON_AddStringToObject(e, "file_hash", h);
            cJSON_AddNumberToObject(e, "docs", (double)t.n_docs[k]);
            cJSON_AddNumberToObject(e, "skipped_lines", (double)t.skipped[k]);
            cJSON_AddNumberToObject(e, "truncated_requests", (double)t.truncated[k]);
            cJSON_AddNumberToObject(e, "acc", t.metrics[k].acc);
            cJSON_AddNumberToObject(e, "acc_stderr", t.metrics[k].acc_stderr);
            if (dp_mc_task_has_acc_norm(t.kind[k])) {
                cJSON_AddNumberToObject(e, "acc_norm", t.metrics[k].acc_norm);
                cJSON_AddNumberToObject(e, "acc_norm_stderr", t.metrics[k].acc_norm_stderr);
            }
            cJSON_AddStringToObject(e, "reported", dp_mc_task_metric(t.kind[k]));
        }
        if (t.n) cJSON_AddNumberToObject(o, "average", dp_cli_tasks_average(&t));
        time_t now = time(NULL);
        char date[64];
        strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        cJSON_AddStringToObject(o, "date", date);
        cJSON_AddStringToObject(o, "version", DP_VERSION_STRING);
        cJSON_AddNumberToObject(o, "ranks", mpi->size);
        char *text = cJSON_Print(o);
        cJSON_Delete(o);
        char *slash = strrchr(outp, '/');
        if (slash) {
            *slash = 0;
            rc = dp_mkdir_p(outp, &err);
            *slash = '/';
        }
        if (!rc) rc = dp_write_file_atomic(outp, text, strlen(text), &err);
        free(text);
        const char *dump = dp_cli_get(app, cmd, "--dump-requests");
        if (dump) {
            dp_buf b = {0};
            char num[256];
            for (int k = 0; k < t.n; k++)
                for (int64_t d = 0; d < t.n_docs[k]; d++)
                    for (int c = 0; c < t.docs[k][d].n; c++) {
                        const dp_mc_req *r = &t.req[t.first[k][d] + c];
                        snprintf(num, sizeof num, "{\"task\": \"%s\", \"doc\": %lld, \"choice\": %d, \"ids\": [",
                                 t.name[k], (long long)d, c);
                        dp_buf_puts(&b, num);
                        for (int64_t i = 0; i < r->n; i++) {
                            snprintf(num, sizeof num, "%s%d", i ? "," : "", r->ids[i]);
                            dp_buf_puts(&b, num);
                        }
                        dp_buf_puts(&b, "], \"cont\": [");
                        for (int64_t i = 0; i < r->n_cont; i++) {
                            snprintf(num, sizeof num, "%s%d", i ? "," : "", r->cont[i]);
                            dp_buf_puts(&b, num);
                        }
                        snprintf(num, sizeof num, "], \"loglik\": %.17g}\n", r->loglik);
                        dp_buf_puts(&b, num);
                    }
            if (!rc) rc = dp_write_file_atomic(dump, b.p ? b.p : "", b.n, &err);
            dp_free(b.p);
        }

        if (!rc) { /* the Markdown table */
            printf("| model |");
            for (int i = 0; i < np; i++) printf(" %s PPL |", pname[i]);
            for (int k = 0; k < t.n; k++) printf(" %s (%s) |", t.name[k], dp_mc_task_metric(t.kind[k]));
            if (t.n) printf(" average |");
            printf("\n|---|");
            for (int i = 0; i < np + t.n + (t.n > 0); i++) printf("---|");
            printf("\n| %s |", dir);
            for (int i = 0; i < np; i++) printf(" %.2f |", pppl[i]);
            for (int k = 0; k < t.n; k++) {
                int norm = !strcmp(dp_mc_task_metric(t.kind[k]), "acc_norm");
                double se = norm ? t.metrics[k].acc_norm_stderr : t.metrics[k].acc_stderr;
                printf(" %.2f", 100 * (norm ? t.metrics[k].acc_norm : t.metrics[k].acc));
                if (isfinite(se)) printf(" ± %.2f", 100 * se);
                printf(" |");
            }
            if (t.n) printf(" %.2f |", 100 * dp_cli_tasks_average(&t));
            printf("\nresults: %s\n", outp);
            fflush(stdout);
        }
    }
    rc = dp_mpi_agree(mpi, rc, &err);
    for (int i = 0; i < np; i++) {
        dp_free(pname[i]);
        dp_free(ppath[i]);
    }
    dp_cli_tasks_free(&t);
    dp_free(drop);
    dp_free(outp);
    dp_llama_free(&m);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_eval = {
    "eval",
    "perplexity sets and zero-shot multiple-choice tasks (lm-evaluation-harness semantics) -> RESULTS.json",
    "--model DIR [--ppl wikitext2=FILE,...] [--task boolq=FILE,...] [--limit N] [--out RESULTS.json]",
    k_eval_opts,
    1,
    run_eval,
    0,
    0};
