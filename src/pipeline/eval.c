/* The eval stage: the papers' tables in one call: perplexity on named
 * text files and zero-shot multiple-choice accuracy (lm-evaluation-harness
 * semantics, see mc.h) on named JSONL tasks, split across ranks, written to
 * RESULTS.json with everything needed to reproduce the numbers, and printed
 * as a Markdown table. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "depthprune/export.h"
#include "internal.h"

void dp_eval_job_init(const dp_config *c, dp_eval_job *j) {
    *j = (dp_eval_job){.model = dp_config_str(c, "model.path"),
                       .ppl = dp_config_str(c, "eval.ppl"),
                       .tasks = dp_config_str(c, "eval.tasks"),
                       .limit = dp_config_int(c, "eval.limit"),
                       .batch = dp_config_int(c, "eval.batch")};
}

int dp_pipe_eval(const dp_pipe *p, const dp_eval_job *j, dp_err *err) {
    const dp_mpi *mpi = p->mpi;
    int rc = DP_OK;
    const char *dir = j->model, *ppl_s = j->ppl, *task_s = j->tasks, *drop_s = j->drop;
    int64_t limit = j->limit, batch = j->batch;
    if (!dir)
        rc = dp_err_set(err, DP_E_USAGE, "--model DIR is required");
    else if (!ppl_s && !task_s)
        rc = dp_err_set(err, DP_E_USAGE, "give --ppl NAME=FILE and/or --task NAME=FILE");
    else if (!j->out)
        rc = dp_err_set(err, DP_E_USAGE, "--out FILE is required");
    if (!rc && (limit < 0 || batch < 1)) rc = dp_err_set(err, DP_E_USAGE, "--limit must be >= 0 and --batch >= 1");
    char *outp = dp_strdup(j->out ? j->out : "", "path");
    rc = dp_mpi_agree(mpi, rc, err);
    dp_llama m;
    memset(&m, 0, sizeof m);
    if (!rc) rc = dp_mpi_agree(mpi, dp_pipe_load_frozen(p, dir, &m, err), err);
    dp_layer_map map;
    dp_layer_map_model(&map, &m.cfg);
    int64_t *drop = NULL, n_drop = 0;
    if (!rc) rc = dp_pipe_layer_map(&m.cfg, drop_s, j->drop_attn, j->drop_mlp, &map, err);
    if (!rc && drop_s) rc = dp_parse_block_list(drop_s, m.cfg.n_layers, &drop, &n_drop, err);
    /* perplexity sets */
    dp_ppl_opts po = {.device = p->device,
                      .seq_len = dp_config_int(p->cfg, "eval.seq_len"),
                      .batch = batch,
                      .bos_per_window = dp_config_bool(p->cfg, "eval.bos_per_window")};
    char *pname[16] = {0}, *ppath[16] = {0};
    double pppl[16];
    int64_t ptok[16];
    uint64_t phash[16];
    int np = 0;
    char *pbuf = ppl_s ? dp_strdup(ppl_s, "eval") : NULL;
    for (char *save = NULL, *it = pbuf ? strtok_r(pbuf, ",", &save) : NULL; it && !rc;
         it = strtok_r(NULL, ",", &save)) {
        if (np == 16) {
            rc = dp_err_set(err, DP_E_USAGE, "at most 16 --ppl sets");
            break;
        }
        rc = dp_pipe_split_item(it, &pname[np], &ppath[np], err);
        if (rc) break;
        np++;
        int32_t *win = NULL;
        int64_t n_win = 0;
        rc = dp_pipe_ppl_windows(p, dir, ppath[np - 1], &po, &win, &n_win, err);
        dp_ppl_result r;
        if (!rc) rc = dp_ppl_run(mpi, &m, &map, win, n_win, &po, &r, NULL, err);
        if (!rc) {
            pppl[np - 1] = r.ppl;
            ptok[np - 1] = r.tokens;
            phash[np - 1] = dp_pipe_file_hash(".", ppath[np - 1]);
            dp_log0("eval: %s PPL %.4f (%lld tokens)", pname[np - 1], r.ppl, (long long)r.tokens);
        }
        dp_free(win);
    }
    dp_free(pbuf);
    /* zero-shot tasks */
    dp_tasks t;
    memset(&t, 0, sizeof t);
    if (!rc && task_s) {
        rc = dp_tasks_load(p, dir, task_s, limit, j->skip_bad, m.cfg.max_position_embeddings, &t, err);
        rc = dp_mpi_agree(mpi, rc, err);
        if (!rc) rc = dp_tasks_run(mpi, p->device, &m, &map, &t, batch, err);
    }
    if (!rc && mpi->rank == 0) {
        cJSON *o = cJSON_CreateObject();
        char h[32];
        cJSON_AddStringToObject(o, "model", dir);
        snprintf(h, sizeof h, "%016llx", (unsigned long long)dp_llama_hash(&m));
        cJSON_AddStringToObject(o, "model_hash", h);
        snprintf(h, sizeof h, "%016llx", (unsigned long long)dp_pipe_file_hash(dir, "tokenizer.json"));
        cJSON_AddStringToObject(o, "tokenizer_hash", h);
        cJSON *dl = cJSON_AddArrayToObject(o, "dropped");
        for (int64_t i = 0; i < n_drop; i++) cJSON_AddItemToArray(dl, cJSON_CreateNumber((double)drop[i]));
        cJSON *sa = cJSON_AddArrayToObject(o, "skipped_attn"), *sm = cJSON_AddArrayToObject(o, "skipped_mlp");
        for (int l = 0; l < m.cfg.n_layers; l++) {
            if (map.skip[l] & DP_SKIP_ATTN) cJSON_AddItemToArray(sa, cJSON_CreateNumber(l));
            if (map.skip[l] & DP_SKIP_MLP) cJSON_AddItemToArray(sm, cJSON_CreateNumber(l));
        }
        cJSON *pr = cJSON_AddObjectToObject(o, "protocol");
        cJSON_AddNumberToObject(pr, "ppl_seq_len", (double)po.seq_len);
        cJSON_AddStringToObject(pr, "ppl_bos",
                                po.bos_per_window ? "per window" : dp_config_str(p->cfg, "tokenizer.add_bos"));
        cJSON_AddStringToObject(
            pr, "mc_mode",
            "lm-evaluation-harness loglikelihood (context + ' ' + choice; continuation = whole[len(context):])");
        cJSON_AddBoolToObject(pr, "mc_bos", dp_config_bool(p->cfg, "eval.mc_bos"));
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
        if (t.n) cJSON_AddNumberToObject(o, "average", dp_tasks_average(&t));
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
            rc = dp_mkdir_p(outp, err);
            *slash = '/';
        }
        if (!rc) rc = dp_write_file_atomic(outp, text, strlen(text), err);
        free(text);
        const char *dump = j->dump_requests;
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
            if (!rc) rc = dp_write_file_atomic(dump, b.p ? b.p : "", b.n, err);
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
            if (t.n) printf(" %.2f |", 100 * dp_tasks_average(&t));
            printf("\nresults: %s\n", outp);
            fflush(stdout);
        }
    }
    rc = dp_mpi_agree(mpi, rc, err);
    for (int i = 0; i < np; i++) {
        dp_free(pname[i]);
        dp_free(ppath[i]);
    }
    dp_tasks_free(&t);
    dp_free(drop);
    dp_free(outp);
    dp_llama_free(&m);
    return rc;
}
