/* `depthprune width-prune`: the width-pruning baseline (LLM-Pruner's
 * method) in the same tool: group importance on a calibration set, the
 * same fraction of kv groups and MLP channels removed from every
 * unprotected block, or the fraction whose parameter count matches a
 * depth-pruned model; exports a model with per-block sizes
 * (config.json "depthprune_width") and OUT/width.json. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "depthprune/export.h"
#include "depthprune/prune.h"
#include "depthprune/tokenizer.h"
#include "depthprune/width.h"

static const dp_cli_opt k_width_opts[] = {
    {"--model", "DIR", "HF model directory", "model.path"},
    {"--calib", "FILE", "calibration text or JSONL (LLM-Pruner: BookCorpus); not needed for l1, l2, random", NULL},
    {"--calib-field", "NAME", "JSONL field holding the text (default text)", "calib.field"},
    {"--samples", "N", "calibration samples", "calib.samples"},
    {"--seq-len", "T", "tokens per sample (default 64)", "calib.seq_len"},
    {"--seed", "S", "sampling seed (default run.seed)", "run.seed"},
    {"--criterion", "C", "param_first (default), param_second, param_mix, l1, l2, random", NULL},
    {"--ratio", "X", "fraction of kv groups and MLP channels removed from each pruned block", NULL},
    {"--match-params", "N", "instead of --ratio: the ratio whose parameter count is closest to N", NULL},
    {"--match-model", "DIR", "instead of --ratio: match the parameter count of this (e.g. depth-pruned) model", NULL},
    {"--protect-first", "F", "first blocks left whole (default 4, as LLM-Pruner on LLaMA-7B)", NULL},
    {"--protect-last", "B", "last blocks left whole (default 2)", NULL},
    {"--out", "DIR", "output model directory (must not exist)", NULL},
    {NULL, NULL, NULL, NULL},
};

typedef struct {
    const char *json;
} width_out;

static int write_width_json(const char *tmp_dir, void *ctx, dp_err *err) {
    char *p = dp_path_join(tmp_dir, "width.json");
    int rc = dp_write_file_atomic(p, ((width_out *)ctx)->json, strlen(((width_out *)ctx)->json), err);
    dp_free(p);
    return rc;
}

static int run_width(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_width_prune;
    const dp_mpi *mpi = &app->mpi;
    dp_err err;
    dp_err_clear(&err);
    const char *dir = dp_cli_model_path(app, cmd), *calib = dp_cli_get(app, cmd, "--calib"),
               *out = dp_cli_get(app, cmd, "--out"), *crit_s = dp_cli_get(app, cmd, "--criterion"),
               *match_model = dp_cli_get(app, cmd, "--match-model"), *ratio_s = dp_cli_get(app, cmd, "--ratio");
    long long N, T, seed, pf, pl, match_n;
    double ratio = -1;
    /* --samples, --seq-len and --seed set calib.samples, calib.seq_len and run.seed (main.c); the
     * sample length defaults to LLM-Pruner's 64 unless configured */
    N = dp_config_int(&app->cfg, "calib.samples");
    T = dp_config_has(&app->cfg, "calib.seq_len") ? dp_config_int(&app->cfg, "calib.seq_len") : 64; /* LLM-Pruner */
    seed = dp_config_int(&app->cfg, "run.seed");
    int rc = dp_cli_opt_int(app, cmd, "--protect-first", dp_config_int(&app->cfg, "width.protect_first"), &pf, &err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--protect-last", dp_config_int(&app->cfg, "width.protect_last"), &pl, &err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--match-params", 0, &match_n, &err);
    if (!rc) rc = dp_cli_opt_double(app, cmd, "--ratio", -1, &ratio, &err);
    int crit = dp_width_crit_parse(crit_s ? crit_s : "param_first");
    int needs_calib = crit == DP_WIDTH_TAYLOR1 || crit == DP_WIDTH_TAYLOR2 || crit == DP_WIDTH_MIX;
    if (!rc && !dir) rc = dp_err_set(&err, DP_E_USAGE, "--model DIR is required");
    if (!rc && !out) rc = dp_err_set(&err, DP_E_USAGE, "--out DIR is required");
    if (!rc && crit < 0)
        rc = dp_err_set(&err, DP_E_USAGE,
                        "unknown --criterion '%s' (param_first, param_second, param_mix, l1, l2, random)", crit_s);
    if (!rc && needs_calib && !calib)
        rc = dp_err_set(&err, DP_E_USAGE, "--calib FILE is required for %s", crit_s ? crit_s : "param_first");
    if (!rc && (ratio_s != NULL) + (match_n > 0) + (match_model != NULL) != 1)
        rc = dp_err_set(&err, DP_E_USAGE, "give exactly one of --ratio, --match-params, --match-model");
    if (!rc && ratio_s && !(ratio >= 0 && ratio < 1)) rc = dp_err_set(&err, DP_E_USAGE, "--ratio must be in [0, 1)");
    if (!rc && (N < 1 || T < 2 || pf < 0 || pl < 0))
        rc = dp_err_set(&err, DP_E_USAGE, "need --samples >= 1, --seq-len >= 2, protections >= 0");
    if (rc) return dp_cli_fail(app, &err);

    dp_llama m;
    memset(&m, 0, sizeof m);
    rc = dp_mpi_agree(mpi, dp_llama_load(dir, &m, &err), &err);
    int L = rc ? 0 : (int)m.cfg.n_layers;
    if (!rc && pf + pl >= L)
        rc = dp_err_set(&err, DP_E_USAGE, "protecting %lld first and %lld last of %d blocks leaves none to prune", pf,
                        pl, L);
    int64_t before = rc ? 0 : m.n_elems, target = match_n;
    if (!rc && match_model) {
        dp_llama_config mc;
        rc = dp_llama_config_load(match_model, &mc, &err);
        if (!rc) {
            target = dp_llama_param_count(&mc);
            dp_llama_config_free(&mc);
        }
    }
    if (!rc && target > 0) { /* the ratio whose parameter count is closest to the target */
        ratio = dp_width_match_ratio(&m.cfg, target, (int)pf, (int)pl);
        int64_t got = dp_width_params(&m.cfg, ratio, (int)pf, (int)pl);
        dp_log0("width-prune: ratio %.4f gives %lld parameters (target %lld, %+.2f%%)", ratio, (long long)got,
                (long long)target, 100.0 * ((double)got - (double)target) / (double)target);
        if (got >= before)
            rc = dp_err_set(&err, DP_E_USAGE, "the target %lld parameters needs no width pruning", (long long)target);
    }
    rc = dp_mpi_agree(mpi, rc, &err);
    /* calibration ids (the same rule as scoring) */
    int32_t *ids = NULL;
    int64_t *src = NULL;
    if (!rc && needs_calib) {
        dp_tokenizer *tok = NULL;
        char *text = NULL;
        size_t n = 0;
        rc = dp_tokenizer_load(dir, &tok, &err);
        if (!rc) rc = dp_read_file(calib, &text, &n, &err);
        if (!rc) {
            dp_calib_opts co = {.samples = N,
                                .seq_len = T,
                                .seed = (uint64_t)seed,
                                .bos_id = dp_tokenizer_adds_bos(tok) ? dp_tokenizer_bos_id(tok) : -1,
                                .field = dp_config_str(&app->cfg, "calib.field")};
            rc = dp_calib_sample(tok, text, n, &co, &ids, &src, &err);
        }
        dp_free(text);
        if (tok) dp_tokenizer_free(tok);
        rc = dp_mpi_agree(mpi, rc, &err);
    }
    dp_width_scores sc;
    memset(&sc, 0, sizeof sc);
    dp_width_plan plan;
    memset(&plan, 0, sizeof plan);
    double t0 = dp_time_s();
    if (!rc) rc = dp_width_importance(mpi, app->device, &m, ids, N, T, crit, (uint64_t)seed, &sc, &err);
    if (!rc) rc = dp_width_plan_make(&m, &sc, ratio, (int)pf, (int)pl, &plan, &err);
    rc = dp_mpi_agree(mpi, rc, &err);
    if (!rc && mpi->rank == 0) {
        dp_st_entry *ent = NULL;
        int n_ent = 0;
        dp_llama_config pc;
        memset(&pc, 0, sizeof pc);
        rc = dp_width_apply(&m, &plan, &ent, &n_ent, &pc, &err);
        int64_t after = rc ? 0 : dp_llama_param_count(&pc);
        cJSON *jo = cJSON_CreateObject();
        cJSON_AddStringToObject(jo, "method", "width (LLM-Pruner style: kv groups + MLP channels)");
        cJSON_AddStringToObject(jo, "criterion", crit_s ? crit_s : "param_first");
        cJSON_AddNumberToObject(jo, "ratio", ratio);
        cJSON_AddNumberToObject(jo, "protect_first", (double)pf);
        cJSON_AddNumberToObject(jo, "protect_last", (double)pl);
        cJSON_AddStringToObject(jo, "model", dir);
        if (needs_calib) {
            cJSON_AddStringToObject(jo, "calib", calib);
            cJSON_AddNumberToObject(jo, "samples", (double)N);
            cJSON_AddNumberToObject(jo, "seq_len", (double)T);
        }
        cJSON_AddNumberToObject(jo, "params_before", (double)before);
        cJSON_AddNumberToObject(jo, "params_after", (double)after);
        cJSON_AddNumberToObject(jo, "fraction_removed", before ? 1.0 - (double)after / (double)before : 0);
        if (target > 0) cJSON_AddNumberToObject(jo, "params_target", (double)target);
        cJSON *bl = cJSON_AddArrayToObject(jo, "blocks");
        for (int l = 0; l < L && !rc; l++) {
            cJSON *b = cJSON_CreateObject();
            cJSON_AddNumberToObject(b, "heads", (double)pc.layer_heads[l]);
            cJSON_AddNumberToObject(b, "kv_heads", (double)pc.layer_kv_heads[l]);
            cJSON_AddNumberToObject(b, "intermediate", (double)pc.layer_inter[l]);
            cJSON *kg = cJSON_AddArrayToObject(b, "kept_kv_groups");
            for (int64_t i = 0; i < plan.n_keep_g[l]; i++)
                cJSON_AddItemToArray(kg, cJSON_CreateNumber((double)plan.keep_g[l][i]));
            cJSON_AddItemToArray(bl, b);
        }
        cJSON_AddNumberToObject(jo, "importance_s", dp_time_s() - t0);
        char *jt = cJSON_Print(jo);
        cJSON_Delete(jo);
        width_out wo = {jt};
        dp_st_model st;
        int have_st = 0;
        if (!rc) rc = dp_st_model_open(dir, &st, &err), have_st = !rc;
        const dp_st_tensor *emb = have_st ? dp_st_model_find(&st, "model.embed_tokens.weight") : NULL;
        char prov[256];
        snprintf(prov, sizeof prov,
                 "{\"width_pruned\": true, \"criterion\": \"%s\", \"ratio\": %.6g, \"version\": \"%s\"}",
                 crit_s ? crit_s : "param_first", ratio, DP_VERSION_STRING);
        dp_export_opts eo = {.dtype = emb ? (int)emb->dtype : -1,
                             .max_shard_bytes = (uint64_t)dp_config_int(&app->cfg, "export.max_shard_bytes"),
                             .provenance = prov,
                             .mem = ent,
                             .n_mem = n_ent,
                             .finish = write_width_json,
                             .finish_ctx = &wo};
        if (!rc) rc = dp_export_model(dir, &pc, &st, out, &eo, &err);
        if (!rc)
            printf("width-pruned (%s, ratio %.4f, blocks %lld..%lld): %lld -> %lld parameters (%.1f%% removed) -> %s\n",
                   crit_s ? crit_s : "param_first", ratio, pf, (long long)(L - pl - 1), (long long)before,
                   (long long)after, 100.0 * (1.0 - (double)after / (double)before), out);
        if (have_st) dp_st_model_close(&st);
        cJSON_free(jt);
        dp_width_entries_free(ent, n_ent);
        dp_llama_config_free(&pc);
    }
    rc = dp_mpi_agree(mpi, rc, &err);
    dp_width_plan_free(&plan);
    dp_width_scores_free(&sc);
    dp_free(ids);
    dp_free(src);
    dp_llama_free(&m);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_width_prune = {
    "width-prune",
    "the width-pruning baseline (LLM-Pruner): remove attention head groups and MLP channels by importance",
    "--model DIR --calib FILE [--criterion param_first] --ratio X | --match-model DIR --out DIR",
    k_width_opts,
    1,
    run_width,
    0,
    0};
