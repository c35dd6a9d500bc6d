/* `depthprune prune`: remove K blocks, one-shot from a scores.json or
 * iteratively (greedy PPL from cached inputs, optional healing between
 * removals), and export the shorter model with OUT/prune.json. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "depthprune/export.h"
#include "depthprune/prune.h"
#include "depthprune/safetensors.h"
#include "depthprune/train.h"

static const dp_cli_opt k_prune_opts[] = {
    {"--model", "DIR", "the dense HF model directory", "model.path"},
    {"--scores", "FILE", "one-shot: scores.json from `depthprune score`", NULL},
    {"--criterion", "NAME", "one-shot: which criterion of scores.json (default ppl)", NULL},
    {"--schedule", "S", "one-shot (default) | iterative", NULL},
    {"--ratio", "R", "remove round(R x L) blocks", NULL},
    {"--remove", "K", "remove K blocks (instead of --ratio)", NULL},
    {"--out", "DIR", "output HF directory (must not exist)", NULL},
    {"--run", "DIR", "iterative: run directory with calib.h5 (default run.dir)", "run.dir"},
    {"--calib", "FILE", "iterative: calibration text, when RUNDIR has no calib.h5 yet", NULL},
    {"--samples", "N", "calibration samples", "calib.samples"},
    {"--seed", "S", "iterative: calibration sampling and healing seed (default run.seed)", "run.seed"},
    {"--seq-len", "T", "tokens per calibration sample", "calib.seq_len"},
    {"--batch", "N", "calibration samples per forward (default 10)", NULL},
    {"--protect-first", "F", "iterative: keep the first F blocks (default 0)", NULL},
    {"--protect-last", "B", "iterative: keep the last B blocks (default 0)", NULL},
    {"--heal-steps", "N", "iterative: retraining steps after each removal (default 0)", NULL},
    {"--heal-data", "FILE", "iterative: training data for healing (as retrain --data)", NULL},
    {NULL, NULL, NULL, NULL},
};

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

/* The one-shot removal order of crit in scores.json (unprotected blocks,
 * least important first). */
int dp_cli_read_order(const char *path, const char *crit, const char *want_hash, int L, int **order, int *n_order,
                      uint64_t *file_hash, dp_err *err) {
    char *text = NULL;
    size_t n = 0;
    int rc = dp_read_file(path, &text, &n, err);
    if (rc) return rc;
    *file_hash = dp_hash_bytes(text, n, 1);
    cJSON *root = cJSON_ParseWithLength(text, n);
    dp_free(text);
    const cJSON *mh = cJSON_GetObjectItemCaseSensitive(root, "model_hash");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "criteria"), crit);
    const cJSON *ord = cJSON_GetObjectItemCaseSensitive(c, "order");
    if (!root || !cJSON_IsObject(root))
        rc = dp_err_set(err, DP_E_FORMAT, "%s: not a JSON object", path);
    else if (!cJSON_IsString(mh) || !cJSON_IsNumber(layers))
        rc = dp_err_set(err, DP_E_FORMAT, "%s: no model_hash/layers (not a scores.json of this version)", path);
    else if (strcmp(mh->valuestring, want_hash))
        rc = dp_err_set(err, DP_E_MISMATCH, "%s scores a different model (model hash %s, this model %s)", path,
                        mh->valuestring, want_hash);
    else if (layers->valueint != L || layers->valuedouble != (double)L)
        rc = dp_err_set(err, DP_E_MISMATCH, "%s scores %g blocks, the model has %d", path, layers->valuedouble, L);
    else if (!cJSON_IsArray(ord))
        rc = dp_err_set(err, DP_E_USAGE, "%s has no criterion '%s'", path, crit);
    if (!rc) {
        *n_order = cJSON_GetArraySize(ord);
        *order = dp_malloc((size_t)(*n_order + 1) * sizeof(int), "order");
        int i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, ord) {
            int b = cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < L ? (int)it->valuedouble : -1;
            if (b < 0 || b >= L)
                rc = dp_err_set(err, DP_E_FORMAT, "%s: order of %s holds a bad block index", path, crit);
            (*order)[i++] = b;
        }
    }
    cJSON_Delete(root);
    return rc;
}

static int run_prune(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_prune;
    const dp_mpi *mpi = &app->mpi;
    dp_err err;
    dp_err_clear(&err);
    int rc = DP_OK;
    const char *dir = dp_cli_model_path(app, cmd);
    const char *scores = dp_cli_get(app, cmd, "--scores");
    const char *crit = dp_cli_get(app, cmd, "--criterion");
    const char *sched = dp_cli_get(app, cmd, "--schedule");
    const char *out = dp_cli_get(app, cmd, "--out");
    const char *run = dp_cli_get(app, cmd, "--run");
    const char *calib = dp_cli_get(app, cmd, "--calib");
    const char *ratio_s = dp_cli_get(app, cmd, "--ratio"), *remove_s = dp_cli_get(app, cmd, "--remove");
    const char *heal_data = dp_cli_get(app, cmd, "--heal-data");
    if (!sched) sched = dp_config_str(&app->cfg, "prune.schedule");
    if (!run) run = dp_config_str(&app->cfg, "run.dir");
    int iterative = !strcmp(sched, "iterative");
    long long N = 0, T = 0, batch = 0, pf = 0, pl = 0, heal = 0, K = 0;
    if (!dir)
        rc = dp_err_set(&err, DP_E_USAGE, "--model DIR is required");
    else if (!out)
        rc = dp_err_set(&err, DP_E_USAGE, "--out DIR is required");
    else if (strcmp(sched, "one-shot") && !iterative)
        rc = dp_err_set(&err, DP_E_USAGE, "--schedule must be one-shot or iterative, got '%s'", sched);
    else if (!iterative && !scores)
        rc = dp_err_set(&err, DP_E_USAGE, "one-shot pruning needs --scores RUNDIR/scores.json");
    else if (iterative && scores)
        rc = dp_err_set(&err, DP_E_USAGE, "--scores is for one-shot pruning; iterative pruning scores as it goes");
    else if (iterative && crit && strcmp(crit, "ppl"))
        rc = dp_err_set(&err, DP_E_USAGE, "iterative pruning uses the ppl criterion only");
    else if (!ratio_s == !remove_s)
        rc = dp_err_set(&err, DP_E_USAGE, "give exactly one of --ratio R and --remove K");
    else if (!iterative && (dp_cli_get(app, cmd, "--heal-steps") || heal_data || calib))
        rc = dp_err_set(&err, DP_E_USAGE, "--heal-steps, --heal-data and --calib apply to --schedule iterative");
    if (!crit) crit = "ppl";
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--samples", dp_config_int(&app->cfg, "calib.samples"), &N, &err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--seq-len", dp_config_int(&app->cfg, "calib.seq_len"), &T, &err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--batch", dp_config_int(&app->cfg, "score.batch"), &batch, &err);
    if (!rc)
        rc = dp_cli_opt_int(app, cmd, "--protect-first", dp_config_int(&app->cfg, "score.protect_first"), &pf, &err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--protect-last", dp_config_int(&app->cfg, "score.protect_last"), &pl, &err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--heal-steps", 0, &heal, &err);
    if (!rc && remove_s) rc = dp_cli_opt_int(app, cmd, "--remove", 0, &K, &err);
    double ratio = 0;
    if (!rc && ratio_s) {
        char *end;
        ratio = strtod(ratio_s, &end);
        if (!*ratio_s || *end || !(ratio > 0 && ratio < 1))
            rc = dp_err_set(&err, DP_E_USAGE, "--ratio expects a number in (0, 1), got '%s'", ratio_s);
    }
    if (!rc && (heal < 0 || batch < 1 || pf < 0 || pl < 0))
        rc = dp_err_set(&err, DP_E_USAGE, "bad --heal-steps, --batch or protection");
    if (!rc && heal > 0 && !heal_data) rc = dp_err_set(&err, DP_E_USAGE, "--heal-steps needs --heal-data FILE");
    if (!rc && dp_file_exists(out)) rc = dp_err_set(&err, DP_E_IO, "%s already exists; refusing to overwrite it", out);
    rc = dp_mpi_agree(mpi, rc, &err);
    dp_llama m;
    memset(&m, 0, sizeof m);
    if (!rc) rc = dp_mpi_agree(mpi, dp_llama_load(dir, &m, &err), &err);
    int L = rc ? 0 : (int)m.cfg.n_layers;
    if (!rc && ratio_s) K = lround(ratio * L);
    if (!rc && (K < 1 || K >= L))
        rc = dp_err_set(&err, DP_E_USAGE,
                        "removing %lld of %d blocks (%s) is not possible: remove at least 1 and keep at least 1", K, L,
                        ratio_s ? "--ratio" : "--remove");
    uint64_t mhash = rc ? 0 : dp_llama_hash(&m);
    char mh[17];
    snprintf(mh, sizeof mh, "%016llx", (unsigned long long)mhash);
    int *removed = dp_calloc((size_t)(L + 1), sizeof(int), "prune");
    double *ppl_after = dp_calloc((size_t)(L + 1), sizeof(double), "prune");
    double dense_ppl = NAN;
    uint64_t scores_hash = 0;
    int have_ppl = 0;
    char *scores_dir = NULL;
    if (!rc && !iterative) {
        int *order = NULL, n_order = 0;
        if (mpi->rank == 0) rc = dp_cli_read_order(scores, crit, mh, L, &order, &n_order, &scores_hash, &err);
        rc = dp_mpi_agree(mpi, rc, &err);
        if (!rc) {
            DP_CHECK_MPI(MPI_Bcast(&n_order, 1, MPI_INT, 0, mpi->comm));
            if (mpi->rank != 0) order = dp_malloc((size_t)(n_order + 1) * sizeof(int), "order");
            DP_CHECK_MPI(MPI_Bcast(order, n_order, MPI_INT, 0, mpi->comm));
            if (K > n_order)
                rc = dp_err_set(&err, DP_E_USAGE, "removing %lld blocks but %s ranks only %d unprotected candidates", K,
                                crit, n_order);
        }
        for (int k = 0; !rc && k < K; k++) removed[k] = order[k];
        dp_free(order);
        /* the PPL after each removal, when the scores' run directory has the calibration */
        scores_dir = dp_path_dirname(scores);
        char *cp = dp_path_join(scores_dir, "calib.h5");
        int have_calib = dp_file_exists(cp);
        dp_free(cp);
        if (!rc && have_calib) {
            dp_layer_map map;
            dp_layer_map_all(&map, L);
            rc = dp_prune_map_ppl(mpi, app->device, &m, &map, scores_dir, mhash, batch, &dense_ppl, &err);
            for (int k = 0; !rc && k < K; k++) {
                int64_t drop = removed[k];
                rc = dp_layer_map_drop(&map, L, &drop, 1, &err);
                if (!rc)
                    rc = dp_prune_map_ppl(mpi, app->device, &m, &map, scores_dir, mhash, batch, &ppl_after[k], &err);
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
        if (mpi->rank == 0) rc = dp_mkdir_p(run, &err);
        rc = dp_mpi_agree(mpi, rc, &err);
        char *cp = dp_path_join(run, "calib.h5");
        if (!rc && !dp_file_exists(cp)) {
            if (!calib)
                rc = dp_err_set(&err, DP_E_USAGE, "%s has no calib.h5: give --calib FILE (or run `score` there)", run);
            else
                rc = dp_cli_calibrate(app, dir, &m, mhash, calib, dp_config_str(&app->cfg, "calib.field"), N, T,
                                      (uint64_t)dp_config_int(&app->cfg, "run.seed"), batch, run, &err);
        }
        dp_free(cp);
        if (!rc && heal > 0) { /* healing data and settings as for retrain (train.*, lora.*) */
            rc = dp_cli_train_setup(app, dir, heal_data, &hd, &to, &err);
            if (!rc) {
                hidx = dp_malloc((size_t)hd.n * sizeof(int64_t), "heal");
                for (int64_t i = 0; i < hd.n; i++) hidx[i] = i;
            }
        }
        dp_iter_opts io = {.device = app->device,
                           .run_dir = run,
                           .model_hash = mhash,
                           .batch = batch,
                           .protect_first = (int)pf,
                           .protect_last = (int)pl,
                           .remove = (int)K,
                           .progress = !dp_config_bool(&app->cfg, "run.quiet"),
                           .heal_steps = heal,
                           .heal_data = &hd,
                           .heal_idx = hidx,
                           .heal_n = hd.n,
                           .heal_opts = &to};
        if (!rc) rc = dp_prune_iterative(mpi, &m, &io, removed, ppl_after, &dense_ppl, &err);
        have_ppl = !rc;
    }
    /* the output: kept blocks renumbered, prune.json inside, written by rank 0 */
    if (!rc && mpi->rank == 0) {
        int64_t *keep = dp_malloc((size_t)L * sizeof(int64_t), "prune");
        int *kept = dp_malloc((size_t)L * sizeof(int), "prune");
        int nk = 0;
        for (int l = 0; l < L; l++) {
            int gone = 0;
            for (int k = 0; k < K; k++) gone |= removed[k] == l;
            if (!gone) keep[nk] = l, kept[nk++] = l;
        }
        int64_t before = m.n_elems, after = before;
        for (int k = 0; k < K; k++) after -= dp_llama_layer_param_count(&m.cfg, removed[k]);
        cJSON *jo = cJSON_CreateObject();
        cJSON_AddStringToObject(jo, "schedule", sched);
        cJSON_AddStringToObject(jo, "criterion", iterative ? "ppl" : crit);
        cJSON_AddStringToObject(jo, "model", dir);
        cJSON_AddStringToObject(jo, "model_hash", mh);
        cJSON_AddNumberToObject(jo, "layers_before", L);
        cJSON_AddNumberToObject(jo, "layers_after", nk);
        cJSON_AddItemToObject(jo, "removed", cJSON_CreateIntArray(removed, (int)K));
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
            cJSON_AddItemToObject(jo, "ppl_after", cJSON_CreateDoubleArray(ppl_after, (int)K));
        }
        cJSON_AddStringToObject(jo, "version", DP_VERSION_STRING);
        char *jtext = cJSON_Print(jo);
        cJSON_Delete(jo);
        prune_out po = {jtext};
        char prov[512];
        snprintf(prov, sizeof prov,
                 "{\"source_layers\": %d, \"schedule\": \"%s\", \"criterion\": \"%s\", \"version\": \"%s\"}", L, sched,
                 iterative ? "ppl" : crit, DP_VERSION_STRING);
        const char *dtype_s = dp_config_str(&app->cfg, "export.dtype");
        dp_export_opts eo = {.keep = keep,
                             .n_keep = nk,
                             .dtype = strcmp(dtype_s, "auto") ? dp_dtype_from_name(dtype_s) : -1,
                             .max_shard_bytes = (uint64_t)dp_config_int(&app->cfg, "export.max_shard_bytes"),
                             .provenance = prov,
                             .finish = write_prune_json,
                             .finish_ctx = &po};
        dp_st_entry *mem = NULL;
        dp_st_model st;
        int have_st = 0;
        if (heal > 0) { /* healed weights: from memory */
            mem = dp_calloc((size_t)m.n_params, sizeof *mem, "export");
            for (int i = 0; i < m.n_params; i++) {
                const dp_llama_param *p = &m.params[i];
                mem[i] = (dp_st_entry){.name = p->name,
                                       .dtype = DP_DTYPE_F32,
                                       .ndim = p->cols ? 2 : 1,
                                       .shape = {p->rows, p->cols},
                                       .data = m.mem + p->offset};
            }
            eo.mem = mem;
            eo.n_mem = m.n_params;
            if (eo.dtype < 0) {
                if (!dp_st_model_open(dir, &st, &err)) {
                    const dp_st_tensor *e = dp_st_model_find(&st, "model.embed_tokens.weight");
                    eo.dtype = e ? e->dtype : DP_DTYPE_F32;
                    dp_st_model_close(&st);
                }
            }
            rc = dp_export_model(dir, &m.cfg, NULL, out, &eo, &err);
        } else {
            rc = dp_st_model_open(dir, &st, &err);
            have_st = !rc;
            if (!rc) rc = dp_export_model(dir, &m.cfg, &st, out, &eo, &err);
        }
        if (have_st) dp_st_model_close(&st);
        if (!rc) {
            printf("removed blocks");
            for (int k = 0; k < K; k++) printf(" %d", removed[k]);
            printf(" (%s, %s): %d of %d blocks kept, %.1f%% of parameters removed -> %s\n", sched,
                   iterative ? "ppl" : crit, nk, L, 100.0 * (double)(before - after) / (double)before, out);
            if (have_ppl) { /* PPL vs blocks removed */
                char *dat = dp_path_join(iterative ? run : scores_dir, "prune_ppl.dat");
                char *png = dp_path_join(iterative ? run : scores_dir, "prune_ppl.png");
                FILE *f = fopen(dat, "w");
                if (f) {
                    fprintf(f, "0 %.9g\n", dense_ppl);
                    for (int k = 0; k < K; k++) fprintf(f, "%d %.9g\n", k + 1, ppl_after[k]);
                    fclose(f);
                    snprintf(t, sizeof t,
                             "set terminal pngcairo size 800,500\nset output '%s'\nset xlabel 'blocks removed'\n"
                             "set ylabel 'calibration PPL'\nset logscale y\nset grid\nplot '%s' using 1:2 with "
                             "linespoints title '%s %s'\n",
                             png, dat, sched, iterative ? "ppl" : crit);
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
    rc = dp_mpi_agree(mpi, rc, &err);
    dp_free(scores_dir);
    dp_free(hidx);
    dp_data_free(&hd);
    dp_free(removed);
    dp_free(ppl_after);
    dp_llama_free(&m);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_prune = {
    "prune",
    "remove the least important blocks (one-shot from scores, or iterative) and export the shorter model",
    "--model DIR (--scores RUNDIR/scores.json | --schedule iterative --run RUNDIR) (--ratio R | --remove K) --out DIR",
    k_prune_opts,
    1,
    run_prune,
    0,
    0};
