/* The width-pruning baseline (LLM-Pruner style): importance of attention
 * head groups and MLP channels, the plan for a ratio (or for a parameter
 * count to match), and the narrower model exported with OUT/width.json. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/export.h"
#include "depthprune/tokenizer.h"
#include "depthprune/width.h"
#include "internal.h"

typedef struct {
    const char *json;
} width_out;

static int write_width_json(const char *tmp_dir, void *ctx, dp_err *err) {
    char *p = dp_path_join(tmp_dir, "width.json");
    int rc = dp_write_file_atomic(p, ((width_out *)ctx)->json, strlen(((width_out *)ctx)->json), err);
    dp_free(p);
    return rc;
}

void dp_width_job_init(const dp_config *c, dp_width_job *j) {
    *j = (dp_width_job){.model = dp_config_str(c, "model.path"),
                        .criterion = "param_first",
                        .ratio = -1,
                        .samples = dp_config_int(c, "calib.samples"),
                        /* LLM-Pruner's sample length unless configured */
                        .seq_len = dp_config_has(c, "calib.seq_len") ? dp_config_int(c, "calib.seq_len") : 64,
                        .seed = (uint64_t)dp_config_int(c, "run.seed"),
                        .protect_first = (int)dp_config_int(c, "width.protect_first"),
                        .protect_last = (int)dp_config_int(c, "width.protect_last")};
}

int dp_pipe_width_prune(const dp_pipe *p, const dp_width_job *j, dp_err *err) {
    const dp_mpi *mpi = p->mpi;
    const char *dir = j->model, *calib = j->calib, *out = j->out, *crit_s = j->criterion, *match_model = j->match_model;
    long long N = j->samples, T = j->seq_len, pf = j->protect_first, pl = j->protect_last, match_n = j->match_params;
    uint64_t seed = j->seed;
    double ratio = j->ratio;
    int crit = dp_width_crit_parse(crit_s), rc = DP_OK;
    int needs_calib = crit == DP_WIDTH_TAYLOR1 || crit == DP_WIDTH_TAYLOR2 || crit == DP_WIDTH_MIX;
    if (!dir) rc = dp_err_set(err, DP_E_USAGE, "--model DIR is required");
    if (!rc && !out) rc = dp_err_set(err, DP_E_USAGE, "--out DIR is required");
    if (!rc && crit < 0)
        rc = dp_err_set(err, DP_E_USAGE,
                        "unknown --criterion '%s' (param_first, param_second, param_mix, l1, l2, random)", crit_s);
    if (!rc && needs_calib && !calib) rc = dp_err_set(err, DP_E_USAGE, "--calib FILE is required for %s", crit_s);
    if (!rc && !match_model && match_n <= 0 && !(ratio >= 0 && ratio < 1))
        rc = dp_err_set(err, DP_E_USAGE, "--ratio must be in [0, 1)");
    if (!rc && (N < 1 || T < 2 || pf < 0 || pl < 0))
        rc = dp_err_set(err, DP_E_USAGE, "need --samples >= 1, --seq-len >= 2, protections >= 0");
    if (rc) return rc;

    dp_llama m;
    memset(&m, 0, sizeof m);
    rc = dp_mpi_agree(mpi, dp_llama_load(dir, &m, err), err);
    int L = rc ? 0 : (int)m.cfg.n_layers;
    if (!rc && pf + pl >= L)
        rc = dp_err_set(err, DP_E_USAGE, "protecting %lld first and %lld last of %d blocks leaves none to prune", pf,
                        pl, L);
    int64_t before = rc ? 0 : m.n_elems, target = match_n;
    if (!rc && match_model) {
        dp_llama_config mc;
        rc = dp_llama_config_load(match_model, &mc, err);
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
            rc = dp_err_set(err, DP_E_USAGE, "the target %lld parameters needs no width pruning", (long long)target);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    /* calibration ids (the same rule as scoring) */
    int32_t *ids = NULL;
    int64_t *src = NULL;
    if (!rc && needs_calib) {
        dp_calib_opts co = {.samples = N, .seq_len = T, .seed = seed, .field = dp_config_str(p->cfg, "calib.field")};
        rc = dp_pipe_calib_sample(p, dir, calib, &co, &ids, &src, err);
    }
    dp_width_scores sc;
    memset(&sc, 0, sizeof sc);
    dp_width_plan plan;
    memset(&plan, 0, sizeof plan);
    double t0 = dp_time_s();
    if (!rc) rc = dp_width_importance(mpi, p->device, &m, ids, N, T, crit, (uint64_t)seed, &sc, err);
    if (!rc) rc = dp_width_plan_make(&m, &sc, ratio, (int)pf, (int)pl, &plan, err);
    rc = dp_mpi_agree(mpi, rc, err);
    if (!rc && mpi->rank == 0) {
        dp_st_entry *ent = NULL;
        int n_ent = 0;
        dp_llama_config pc;
        memset(&pc, 0, sizeof pc);
        rc = dp_width_apply(&m, &plan, &ent, &n_ent, &pc, err);
        int64_t after = rc ? 0 : dp_llama_param_count(&pc);
        cJSON *jo = cJSON_CreateObject();
        cJSON_AddStringToObject(jo, "method", "width (LLM-Pruner style: kv groups + MLP channels)");
        cJSON_AddStringToObject(jo, "criterion", crit_s);
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
        if (!rc) rc = dp_st_model_open(dir, &st, err), have_st = !rc;
        const dp_st_tensor *emb = have_st ? dp_st_model_find(&st, "model.embed_tokens.weight") : NULL;
        char prov[256];
        snprintf(prov, sizeof prov,
                 "{\"width_pruned\": true, \"criterion\": \"%s\", \"ratio\": %.6g, \"version\": \"%s\"}", crit_s, ratio,
                 DP_VERSION_STRING);
        dp_export_opts eo = {.dtype = emb ? (int)emb->dtype : -1,
                             .max_shard_bytes = (uint64_t)dp_config_int(p->cfg, "export.max_shard_bytes"),
                             .provenance = prov,
                             .mem = ent,
                             .n_mem = n_ent,
                             .finish = write_width_json,
                             .finish_ctx = &wo};
        if (!rc) rc = dp_export_model(dir, &pc, &st, out, &eo, err);
        if (!rc)
            printf("width-pruned (%s, ratio %.4f, blocks %lld..%lld): %lld -> %lld parameters (%.1f%% removed) -> %s\n",
                   crit_s, ratio, pf, (long long)(L - pl - 1), (long long)before, (long long)after,
                   100.0 * (1.0 - (double)after / (double)before), out);
        if (have_st) dp_st_model_close(&st);
        cJSON_free(jt);
        dp_width_entries_free(ent, n_ent);
        dp_llama_config_free(&pc);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    dp_width_plan_free(&plan);
    dp_width_scores_free(&sc);
    dp_free(ids);
    dp_free(src);
    dp_llama_free(&m);
    return rc;
}
