/* The prune stage: remove K blocks, one-shot from a scores.json or
 * iteratively (greedy PPL from cached inputs, optional healing between
 * removals), and export the shorter model with OUT/prune.json. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/export.h"
#include "depthprune/safetensors.h"
#include "internal.h"

typedef struct prune_out {
    const char *json;
} prune_out;

static int write_prune_json(const char *tmp_dir, void *ctx, dp_err *err) {
    prune_out *p = ctx;
    char *path = dp_path_join(tmp_dir, "prune.json");
    int rc = dp_write_file_atomic(path, p->json, strlen(p->json), err);
    dp_free(path);
    return rc;
}

void dp_prune_job_init(const dp_config *c, dp_prune_job *j) {
    *j = (dp_prune_job){.model = dp_config_str(c, "model.path"),
                        .schedule = strcmp(dp_config_str(c, "prune.schedule"), "iterative") ? DP_PRUNE_ONE_SHOT
                                                                                            : DP_PRUNE_ITERATIVE,
                        .criterion = dp_config_str(c, "prune.criterion"),
                        .run = dp_config_str(c, "run.dir"),
                        .calib = dp_config_str(c, "calib.path"),
                        .ratio = dp_config_float(c, "prune.ratio"),
                        .samples = dp_config_int(c, "calib.samples"),
                        .seq_len = dp_config_int(c, "calib.seq_len"),
                        .batch = dp_config_int(c, "score.batch"),
                        .seed = (uint64_t)dp_config_int(c, "run.seed"),
                        .protect_first = (int)dp_config_int(c, "score.protect_first"),
                        .protect_last = (int)dp_config_int(c, "score.protect_last"),
                        .units = !strcmp(dp_config_str(c, "score.units"), "sublayer")};
}

int dp_pipe_prune(const dp_pipe *p, const dp_prune_job *j, dp_err *err) {
    const dp_mpi *mpi = p->mpi;
    int rc = DP_OK;
    const char *dir = j->model, *scores = j->scores, *out = j->out, *run = j->run, *heal_data = j->heal_data;
    int iterative = j->schedule == DP_PRUNE_ITERATIVE;
    const char *sched = iterative ? "iterative" : "one-shot", *crit = iterative ? "ppl" : j->criterion;
    int64_t batch = j->batch, heal = j->heal_steps, K = j->remove;
    double ratio = j->ratio;
    if (!dir)
        rc = dp_err_set(err, DP_E_USAGE, "--model DIR is required");
    else if (!out)
        rc = dp_err_set(err, DP_E_USAGE, "--out DIR is required");
    else if (j->schedule != DP_PRUNE_ONE_SHOT && !iterative)
        rc = dp_err_set(err, DP_E_USAGE, "the pruning schedule must be one-shot or iterative");
    else if (!iterative && !scores)
        rc = dp_err_set(err, DP_E_USAGE, "one-shot pruning needs --scores RUNDIR/scores.json");
    else if (!iterative && !crit)
        rc = dp_err_set(err, DP_E_USAGE, "one-shot pruning needs a criterion of scores.json");
    else if (K <= 0 && !(ratio > 0 && ratio < 1))
        rc = dp_err_set(err, DP_E_USAGE, "--ratio expects a number in (0, 1), got %g", ratio);
    else if (heal < 0 || batch < 1 || j->protect_first < 0 || j->protect_last < 0)
        rc = dp_err_set(err, DP_E_USAGE, "bad --heal-steps, --batch or protection");
    else if (heal > 0 && !heal_data)
        rc = dp_err_set(err, DP_E_USAGE, "--heal-steps needs --heal-data FILE");
    else if (dp_file_exists(out))
        rc = dp_err_set(err, DP_E_IO, "%s already exists; refusing to overwrite it", out);
    rc = dp_mpi_agree(mpi, rc, err);
    dp_llama m;
    memset(&m, 0, sizeof m);
    if (!rc) /* healing trains m: fp32 then */
        rc = dp_mpi_agree(mpi, heal > 0 ? dp_llama_load(dir, &m, err) : dp_pipe_load_frozen(p, dir, &m, err), err);
    int L = rc ? 0 : (int)m.cfg.n_layers;
    uint64_t mhash = rc ? 0 : dp_llama_hash(&m);
    char mh[17];
    snprintf(mh, sizeof mh, "%016llx", (unsigned long long)mhash);
    int *removed = dp_calloc((size_t)(2 * L + 1), sizeof(int), "prune");
    double *ppl_after = dp_calloc((size_t)(2 * L + 1), sizeof(double), "prune");
    double dense_ppl = NAN;
    uint64_t scores_hash = 0;
    int have_ppl = 0, units = 0; /* units: one-shot from sub-layer scores */
    int *order = NULL, n_order = 0;
    int64_t n_units = 0; /* sub-layers removed (units), in order, in removed[] */
    unsigned char skip[DP_MAX_LAYERS] = {0};
    char *scores_dir = NULL;
    if (!rc && !iterative) {
        if (mpi->rank == 0) rc = dp_pipe_read_order(scores, crit, mh, L, &units, &order, &n_order, &scores_hash, err);
        rc = dp_mpi_agree(mpi, rc, err);
        if (!rc) {
            int hdr[2] = {n_order, units};
            DP_CHECK_MPI(MPI_Bcast(hdr, 2, MPI_INT, 0, mpi->comm));
            n_order = hdr[0], units = hdr[1];
            if (mpi->rank != 0) order = dp_malloc((size_t)(n_order + 1) * sizeof(int), "order");
            DP_CHECK_MPI(MPI_Bcast(order, n_order, MPI_INT, 0, mpi->comm));
        }
    }
    if (!rc && units) {
        /* sub-layers in the order of the scores: --remove K of them, or (--ratio) as many as remove the
         * parameters of round(ratio L) blocks, the nearest count */
        int got = 0;
        rc = dp_pipe_pick_units(&m, order, n_order, K, ratio, removed, &got, skip, err);
        n_units = got;
    } else if (!rc && iterative && j->units) { /* greedy over sub-layers: --remove K of them */
        units = 1;
        if (K <= 0)
            rc = dp_err_set(err, DP_E_USAGE, "iterative sub-layer pruning takes --remove K (sub-layers), not --ratio");
        else if (K >= 2 * L)
            rc = dp_err_set(err, DP_E_USAGE, "removing %lld of %d sub-layers is not possible: keep at least 1 block",
                            (long long)K, 2 * L);
    } else if (!rc) {
        if (K <= 0) K = lround(ratio * L);
        if (K < 1 || K >= L)
            rc = dp_err_set(err, DP_E_USAGE,
                            "removing %lld of %d blocks (%s) is not possible: remove at least 1 and keep at least 1",
                            (long long)K, L, j->remove > 0 ? "--remove" : "--ratio");
        else if (!iterative && K > n_order)
            rc = dp_err_set(err, DP_E_USAGE, "removing %lld blocks but %s ranks only %d unprotected candidates",
                            (long long)K, crit, n_order);
        for (int k = 0; !rc && !iterative && k < K; k++) removed[k] = order[k];
    }
    dp_free(order);
    if (!rc && !iterative) { /* the PPL after each removal, when the scores' run directory has the calibration */
        scores_dir = dp_path_dirname(scores);
        char *cp = dp_path_join(scores_dir, "calib.h5");
        int have_calib = dp_file_exists(cp);
        dp_free(cp);
        if (have_calib) {
            dp_layer_map map;
            dp_layer_map_all(&map, L);
            rc = dp_prune_map_ppl(mpi, p->device, &m, &map, scores_dir, mhash, batch, &dense_ppl, err);
            for (int k = 0; !rc && k < (units ? n_units : K); k++) {
                int64_t b = units ? removed[k] / 2 : removed[k];
                if (units) map.skip[b] |= (unsigned char)(removed[k] % 2 ? DP_SKIP_MLP : DP_SKIP_ATTN);
                if (!units || map.skip[b] == (DP_SKIP_ATTN | DP_SKIP_MLP)) rc = dp_layer_map_drop(&map, L, &b, 1, err);
                if (!rc) rc = dp_prune_map_ppl(mpi, p->device, &m, &map, scores_dir, mhash, batch, &ppl_after[k], err);
            }
            have_ppl = !rc;
        }
    }
    dp_train_data hd;
    memset(&hd, 0, sizeof hd);
    int64_t *hidx = NULL;
    dp_train_opts to;
    dp_train_opts_default(&to);
    if (!rc && iterative) {
        if (mpi->rank == 0) rc = dp_mkdir_p(run, err);
        rc = dp_mpi_agree(mpi, rc, err);
        char *cp = dp_path_join(run, "calib.h5");
        if (!rc && !dp_file_exists(cp)) {
            if (!j->calib)
                rc = dp_err_set(err, DP_E_USAGE, "%s has no calib.h5: give --calib FILE (or run `score` there)", run);
            else
                rc = dp_pipe_calibrate(p, dir, &m, mhash, j->calib, dp_config_str(p->cfg, "calib.field"), j->samples,
                                       j->seq_len, j->seed, batch, run, err);
        }
        dp_free(cp);
        if (!rc && heal > 0) { /* healing data and settings as for retrain (train.*, lora.*) */
            rc = dp_pipe_train_setup(p, dir, heal_data, &hd, &to, err);
            if (!rc) {
                hidx = dp_malloc((size_t)hd.n * sizeof(int64_t), "heal");
                for (int64_t i = 0; i < hd.n; i++) hidx[i] = i;
            }
        }
        dp_iter_opts io = {.device = p->device,
                           .run_dir = run,
                           .model_hash = mhash,
                           .batch = batch,
                           .protect_first = j->protect_first,
                           .protect_last = j->protect_last,
                           .remove = (int)K,
                           .units = units,
                           .progress = !dp_config_bool(p->cfg, "run.quiet"),
                           .heal_steps = heal,
                           .heal_data = &hd,
                           .heal_idx = hidx,
                           .heal_n = hd.n,
                           .heal_opts = &to};
        if (!rc) rc = dp_prune_iterative(mpi, &m, &io, removed, ppl_after, &dense_ppl, err);
        have_ppl = !rc;
    }
    if (!rc && iterative && units) { /* the greedy's sub-layers, in removal order */
        n_units = K;
        for (int64_t k = 0; k < n_units; k++)
            skip[removed[k] / 2] |= (unsigned char)(removed[k] % 2 ? DP_SKIP_MLP : DP_SKIP_ATTN);
    }
    if (units) { /* the blocks both of whose sub-layers went are removed whole */
        K = 0;
        for (int b = 0; b < L; b++)
            if (skip[b] == (DP_SKIP_ATTN | DP_SKIP_MLP)) removed[n_units + K++] = b;
    }
    int *blocks_gone = removed + (units ? n_units : 0);
    /* the output: kept blocks renumbered, prune.json inside, written by rank 0 */
    if (!rc && mpi->rank == 0) {
        int64_t *keep = dp_malloc((size_t)L * sizeof(int64_t), "prune");
        int *kept = dp_malloc((size_t)L * sizeof(int), "prune");
        int nk = 0;
        for (int l = 0; l < L; l++) {
            int gone = 0;
            for (int k = 0; k < K; k++) gone |= blocks_gone[k] == l;
            if (!gone) keep[nk] = l, kept[nk++] = l;
        }
        int64_t before = m.n_elems, after = before;
        for (int k = 0; k < K; k++) after -= dp_llama_layer_param_count(&m.cfg, blocks_gone[k]);
        for (int b = 0; units && b < L; b++) /* a removed sub-layer's projection is zero: its weights count as gone */
            for (int t = 0; t < DP_LLAMA_BLOCK_TENSORS && skip[b] != (DP_SKIP_ATTN | DP_SKIP_MLP); t++)
                if ((t <= DP_BT_O && (skip[b] & DP_SKIP_ATTN)) || (t > DP_BT_O && (skip[b] & DP_SKIP_MLP)))
                    after -= m.params[1 + b * DP_LLAMA_BLOCK_TENSORS + t].n_elems;
        cJSON *jo = cJSON_CreateObject();
        cJSON_AddStringToObject(jo, "schedule", sched);
        cJSON_AddStringToObject(jo, "criterion", iterative ? "ppl" : crit);
        cJSON_AddStringToObject(jo, "model", dir);
        cJSON_AddStringToObject(jo, "model_hash", mh);
        cJSON_AddNumberToObject(jo, "layers_before", L);
        cJSON_AddNumberToObject(jo, "layers_after", nk);
        cJSON_AddItemToObject(jo, "removed", cJSON_CreateIntArray(blocks_gone, (int)K));
        if (units) dp_pipe_units_json(jo, removed, (int)n_units, skip, L);
        cJSON_AddItemToObject(jo, "kept", cJSON_CreateIntArray(kept, nk));
        cJSON_AddNumberToObject(jo, "params_before", (double)before);
        cJSON_AddNumberToObject(jo, "params_after", (double)after);
        cJSON_AddNumberToObject(jo, "fraction_removed", (double)(before - after) / (double)before);
        char t[4096];
        if (!iterative) {
            cJSON_AddStringToObject(jo, "scores", scores);
            snprintf(t, sizeof t, "%016llx", (unsigned long long)scores_hash);
            cJSON_AddStringToObject(jo, "scores_hash", t);
        } else {
            cJSON_AddStringToObject(jo, "run", run);
            cJSON_AddNumberToObject(jo, "heal_steps", (double)heal);
        }
        if (have_ppl) {
            cJSON_AddNumberToObject(jo, "dense_ppl", dense_ppl);
            cJSON_AddItemToObject(jo, "ppl_after", cJSON_CreateDoubleArray(ppl_after, (int)(units ? n_units : K)));
        }
        cJSON_AddStringToObject(jo, "version", DP_VERSION_STRING);
        char *jtext = cJSON_Print(jo);
        cJSON_Delete(jo);
        prune_out po = {jtext};
        char prov[512];
        snprintf(prov, sizeof prov,
                 "{\"source_layers\": %d, \"schedule\": \"%s\", \"criterion\": \"%s\", \"version\": \"%s\"}", L, sched,
                 iterative ? "ppl" : crit, DP_VERSION_STRING);
        const char *dtype_s = dp_config_str(p->cfg, "export.dtype");
        dp_export_opts eo = {.keep = keep,
                             .n_keep = nk,
                             .dtype = strcmp(dtype_s, "auto") ? dp_dtype_from_name(dtype_s) : -1,
                             .max_shard_bytes = (uint64_t)dp_config_int(p->cfg, "export.max_shard_bytes"),
                             .provenance = prov,
                             .finish = write_prune_json,
                             .finish_ctx = &po};
        dp_st_entry *mem = NULL;
        dp_st_model st;
        int have_st = 0;
        for (int b = 0; units && b < L; b++) /* zero projections + skip lists in the export */
            if (skip[b] != (DP_SKIP_ATTN | DP_SKIP_MLP)) m.cfg.layer_skip[b] |= skip[b];
        if (heal > 0) { /* healed weights: from memory */
            mem = dp_pipe_model_entries(&m);
            eo.mem = mem;
            eo.n_mem = m.n_params;
            if (eo.dtype < 0) eo.dtype = dp_pipe_stored_dtype(dir);
            rc = dp_export_model(dir, &m.cfg, NULL, out, &eo, err);
        } else if (m.store) { /* a stored-dtype model: its own mapping (a second one doubles the RSS) */
            rc = dp_export_model(dir, &m.cfg, m.store, out, &eo, err);
        } else {
            rc = dp_st_model_open(dir, &st, err);
            have_st = !rc;
            if (!rc) rc = dp_export_model(dir, &m.cfg, &st, out, &eo, err);
        }
        if (have_st) dp_st_model_close(&st);
        if (!rc) {
            printf(units ? "removed sub-layers" : "removed blocks");
            for (int k = 0; k < (units ? n_units : K); k++)
                if (units)
                    printf(" %s.%d", removed[k] % 2 ? "mlp" : "attn", removed[k] / 2);
                else
                    printf(" %d", removed[k]);
            printf(" (%s, %s): %d of %d blocks kept, %.1f%% of parameters removed -> %s\n", sched,
                   iterative ? "ppl" : crit, nk, L, 100.0 * (double)(before - after) / (double)before, out);
            if (have_ppl) { /* PPL vs blocks removed */
                char *dat = dp_path_join(iterative ? run : scores_dir, "prune_ppl.dat");
                char *png = dp_path_join(iterative ? run : scores_dir, "prune_ppl.png");
                FILE *f = fopen(dat, "w");
                if (f) {
                    fprintf(f, "0 %.9g\n", dense_ppl);
                    for (int k = 0; k < (units ? n_units : K); k++) fprintf(f, "%d %.9g\n", k + 1, ppl_after[k]);
                    fclose(f);
                    snprintf(t, sizeof t,
                             "set terminal pngcairo size 800,500\nset output '%s'\nset xlabel '%s removed'\n"
                             "set ylabel 'calibration PPL'\nset logscale y\nset grid\nplot '%s' using 1:2 with "
                             "linespoints title '%s %s'\n",
                             png, units ? "sub-layers" : "blocks", dat, sched, iterative ? "ppl" : crit);
                    dp_gnuplot(t, png);
                }
                dp_free(dat);
                dp_free(png);
            }
        }
        dp_free(mem);
        free(jtext);
        dp_free(keep);
        dp_free(kept);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    dp_free(scores_dir);
    dp_free(hidx);
    dp_data_free(&hd);
    dp_free(removed);
    dp_free(ppl_after);
    dp_llama_free(&m);
    return rc;
}
