/* `depthprune score`: draws the calibration set (rank 0, broadcast), runs or
 * reuses the dense calibration forward (RUNDIR/calib.h5), then scores every
 * block by the requested criteria (RUNDIR/scores.h5, scores.json) and
 * prints the removal order of each. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "depthprune/prune.h"
#include "depthprune/train.h"

static const dp_cli_opt k_score_opts[] = {
    {"--model", "DIR", "HF model directory", "model.path"},
    {"--calib", "FILE", "calibration text (blank-line-separated documents) or .jsonl", "calib.path"},
    {"--calib-field", "NAME", "JSONL field holding the text (default text)", "calib.field"},
    {"--criterion", "LIST", "ppl,taylor,magnitude,magnitude-l2,bi and ppl+,taylor+,... (default ppl)", NULL},
    {"--samples", "N", "calibration samples", "calib.samples"},
    {"--seq-len", "T", "tokens per sample", "calib.seq_len"},
    {"--seed", "S", "sampling seed (default run.seed = 1234)", "run.seed"},
    {"--batch", "N", "samples per forward (default 10)", NULL},
    {"--protect-first", "F", "keep the first F blocks out of the order (default 0)", NULL},
    {"--protect-last", "B", "keep the last B blocks out of the order (default 0)", NULL},
    {"--bootstrap", "R", "bootstrap replicates over calibration samples (default 0)", NULL},
    {"--ratio", "X", "fraction of blocks to remove, for the bootstrap (default 0.2)", NULL},
    {"--run", "DIR", "run directory (default run.dir)", "run.dir"},
    {"--fault-kill-after-round", "K", "testing: rank 1 kills itself after PPL round K", NULL},
    {NULL, NULL, NULL, NULL},
};

/* an unbound flag over the config key's value (the schema's default when unset) */
static int opt_or_cfg(const dp_app *app, const dp_cmd *cmd, const char *opt, const char *key, long long *out,
                      dp_err *err) {
    return dp_cli_opt_int(app, cmd, opt, dp_config_int(&app->cfg, key), out, err);
}

int dp_cli_stream_weights(const dp_app *app) {
    const char *v = dp_config_str(&app->cfg, "score.stream_weights");
    return !strcmp(v, "on") ? 1 : !strcmp(v, "off") ? 0 : -1;
}

int dp_cli_calibrate(const dp_app *app, const char *dir, const dp_llama *m, uint64_t mhash, const char *calib,
                     const char *field, int64_t N, int64_t T, uint64_t seed, int64_t batch, const char *run,
                     dp_err *err) {
    const dp_mpi *mpi = &app->mpi;
    int rc = DP_OK;
    /* calibration samples: rank 0 draws them, everyone receives them */
    const char *bos_policy = dp_config_str(&app->cfg, "tokenizer.add_bos");
    dp_calib_opts co = {.samples = N, .seq_len = T, .seed = seed, .bos_id = -1, .field = field};
    size_t cl = strlen(calib);
    if (!co.field && cl > 6 && !strcmp(calib + cl - 6, ".jsonl")) co.field = "text";
    int32_t *ids = NULL;
    int64_t *src = NULL;
    if (mpi->rank == 0) {
        dp_tokenizer *tok = NULL;
        char *text = NULL;
        size_t n = 0;
        rc = dp_tokenizer_load(dir, &tok, err);
        if (!rc) rc = dp_read_file(calib, &text, &n, err);
        if (!rc) {
            co.bos_id = strcmp(bos_policy, "false") && dp_tokenizer_adds_bos(tok) ? dp_tokenizer_bos_id(tok) : -1;
            if (!strcmp(bos_policy, "true")) co.bos_id = dp_tokenizer_bos_id(tok);
            rc = dp_calib_sample(tok, text, n, &co, &ids, &src, err);
            if (rc) dp_err_prefix(err, "%s", calib);
        }
        dp_free(text);
        dp_tokenizer_free(tok);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    if (!rc) {
        int32_t bos = co.bos_id;
        DP_CHECK_MPI(MPI_Bcast(&bos, 1, MPI_INT32_T, 0, mpi->comm));
        co.bos_id = bos;
        if (mpi->rank != 0) {
            ids = dp_malloc((size_t)(N * T) * sizeof(int32_t), "calib");
            src = dp_malloc((size_t)(N * 2) * sizeof(int64_t), "calib");
        }
        DP_CHECK_MPI(MPI_Bcast(ids, (int)(N * T), MPI_INT32_T, 0, mpi->comm));
        DP_CHECK_MPI(MPI_Bcast(src, (int)(N * 2), MPI_INT64_T, 0, mpi->comm));
        rc = dp_calibrate(mpi, m, mhash, ids, src, &co, run, batch, !dp_config_bool(&app->cfg, "run.quiet"),
                          app->device, dp_cli_stream_weights(app), err);
    }
    dp_free(ids);
    dp_free(src);
    return rc;
}

/* RUNDIR/scores_CRIT.png: each criterion's score per block (gnuplot), with
 * the bootstrap's 95% interval as error bars when one was computed; the
 * plotted numbers stay beside it in scores_CRIT.dat. */
static void plot_scores(const char *run, const char *json_path) {
    char *text = NULL;
    size_t n = 0;
    dp_err e;
    if (dp_read_file(json_path, &text, &n, &e)) return;
    cJSON *root = cJSON_ParseWithLength(text, n);
    dp_free(text);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "criteria")) {
        char name[96], script[2048];
        snprintf(name, sizeof name, "scores_%s.dat", c->string);
        char *dat = dp_path_join(run, name);
        snprintf(name, sizeof name, "scores_%s.png", c->string);
        char *png = dp_path_join(run, name);
        const cJSON *boot = cJSON_GetObjectItemCaseSensitive(c, "bootstrap");
        const cJSON *lo = cJSON_GetObjectItemCaseSensitive(boot, "lo95");
        const cJSON *hi = cJSON_GetObjectItemCaseSensitive(boot, "hi95");
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(c, "scores");
        int bars = cJSON_IsArray(lo) && cJSON_IsArray(hi) && cJSON_GetArraySize(lo) == cJSON_GetArraySize(sc) &&
                   cJSON_GetArraySize(hi) == cJSON_GetArraySize(sc);
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(boot, "replicates");
        int reps = cJSON_IsNumber(r) ? r->valueint : 0;
        /* PPL without a block spans decades (the first block is often 10-100x) */
        const char *logy = strncmp(c->string, "ppl", 3) == 0 ? "set logscale y\n" : "";
        FILE *f = fopen(dat, "w");
        for (int i = 0; f && i < cJSON_GetArraySize(sc); i++) {
            fprintf(f, "%d %.9g", i, cJSON_GetArrayItem(sc, i)->valuedouble);
            if (bars)
                fprintf(f, " %.9g %.9g", cJSON_GetArrayItem(lo, i)->valuedouble,
                        cJSON_GetArrayItem(hi, i)->valuedouble);
            fputc('\n', f);
        }
        if (f) {
            fclose(f);
            if (bars)
                snprintf(script, sizeof script,
                         "set terminal pngcairo size 800,450\nset output '%s'\nset xlabel 'block'\n"
                         "set ylabel '%s score'\nset style fill solid 0.6\nset boxwidth 0.8\nset grid y\n"
                         "set key top right\n%splot '%s' using 1:2 with boxes title 'score', '' using 1:2:3:4 "
                         "with yerrorbars pt 0 lc rgb 'black' title 'bootstrap 95%% interval (%d replicates)'\n",
                         png, c->string, logy, dat, reps);
            else
                snprintf(script, sizeof script,
                         "set terminal pngcairo size 800,450\nset output '%s'\nset xlabel 'block'\n"
                         "set ylabel '%s score'\nset style fill solid 0.6\nset boxwidth 0.8\nset grid y\n"
                         "%splot '%s' using 1:2 with boxes notitle\n",
                         png, c->string, logy, dat);
            dp_gnuplot(script, png);
        }
        dp_free(dat);
        dp_free(png);
    }
    cJSON_Delete(root);
}

static int run_score(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_score;
    const dp_mpi *mpi = &app->mpi;
    dp_err err;
    dp_err_clear(&err);
    const char *dir = dp_cli_model_path(app, cmd);
    const char *calib = dp_cli_get(app, cmd, "--calib");
    if (!calib) calib = dp_config_str(&app->cfg, "calib.path");
    const char *run = dp_cli_get(app, cmd, "--run");
    if (!run) run = dp_config_str(&app->cfg, "run.dir");
    const char *crit_s = dp_cli_get(app, cmd, "--criterion");
    if (!crit_s) crit_s = dp_config_str(&app->cfg, "score.criteria");
    const char *field = dp_cli_get(app, cmd, "--calib-field");
    if (!field) field = dp_config_str(&app->cfg, "calib.field");
    long long N = 0, T = 0, seed = 0, batch = 0, pf = 0, pl = 0, boot = 0, kill = 0;
    int rc = DP_OK;
    if (!dir)
        rc = dp_err_set(&err, DP_E_USAGE, "--model DIR is required");
    else if (!calib)
        rc = dp_err_set(&err, DP_E_USAGE, "--calib FILE is required");
    if (!rc) rc = opt_or_cfg(app, cmd, "--samples", "calib.samples", &N, &err);
    if (!rc) rc = opt_or_cfg(app, cmd, "--seq-len", "calib.seq_len", &T, &err);
    if (!rc) rc = opt_or_cfg(app, cmd, "--seed", "run.seed", &seed, &err);
    if (!rc) rc = opt_or_cfg(app, cmd, "--batch", "score.batch", &batch, &err);
    if (!rc) rc = opt_or_cfg(app, cmd, "--protect-first", "score.protect_first", &pf, &err);
    if (!rc) rc = opt_or_cfg(app, cmd, "--protect-last", "score.protect_last", &pl, &err);
    if (!rc) rc = opt_or_cfg(app, cmd, "--bootstrap", "score.bootstrap", &boot, &err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--fault-kill-after-round", 0, &kill, &err);
    double ratio = dp_config_float(&app->cfg, "score.ratio");
    const char *rs = dp_cli_get(app, cmd, "--ratio");
    if (!rc && rs) {
        char *end;
        ratio = strtod(rs, &end);
        if (!*rs || *end) rc = dp_err_set(&err, DP_E_USAGE, "--ratio expects a number, got '%s'", rs);
    }
    if (!rc && (N < 1 || T < 2 || batch < 1 || boot < 0 || N > 1000000 || T > 1000000))
        rc = dp_err_set(&err, DP_E_USAGE, "--samples >= 1, --seq-len >= 2, --batch >= 1 and --bootstrap >= 0");
    /* the criteria list */
    char *crit_buf = dp_strdup(crit_s, "cli");
    const char *crit[16];
    int n_crit = 0;
    for (char *save = NULL, *tok = strtok_r(crit_buf, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
        if (n_crit == 16)
            rc = dp_err_set(&err, DP_E_USAGE, "at most 16 criteria");
        else
            crit[n_crit++] = tok;
    }
    if (!rc && n_crit == 0) rc = dp_err_set(&err, DP_E_USAGE, "--criterion is empty");
    if (rc) {
        dp_free(crit_buf);
        return dp_cli_fail(app, &err);
    }
    dp_stop_install_signals();
    if (mpi->rank == 0) rc = dp_mkdir_p(run, &err);
    rc = dp_mpi_agree(mpi, rc, &err);
    dp_llama m;
    memset(&m, 0, sizeof m);
    if (!rc) rc = dp_mpi_agree(mpi, dp_llama_load(dir, &m, &err), &err);
    if (!rc && T > m.cfg.max_position_embeddings)
        rc = dp_err_set(&err, DP_E_RANGE, "--seq-len %lld exceeds max_position_embeddings %lld", T,
                        (long long)m.cfg.max_position_embeddings);

    int progress = !dp_config_bool(&app->cfg, "run.quiet");
    uint64_t mhash = rc ? 0 : dp_llama_hash(&m);
    if (!rc) rc = dp_cli_calibrate(app, dir, &m, mhash, calib, field, N, T, (uint64_t)seed, batch, run, &err);
    dp_score_opts so = {.run_dir = run,
                        .model_hash = mhash,
                        .batch = batch,
                        .protect_first = (int)pf,
                        .protect_last = (int)pl,
                        .bootstrap = boot,
                        .ratio = ratio,
                        .progress = progress,
                        .fault_kill_after_round = (int)kill,
                        .stop_on_signal = 1,
                        .device = app->device,
                        .stream_weights = dp_cli_stream_weights(app)};
    if (!rc) rc = dp_score(mpi, &m, crit, n_crit, &so, &err);
    if (rc == DP_E_STOPPED) {
        if (mpi->rank == 0)
            printf("score: stopped by a signal; finished candidates are kept in %s/scores.progress.h5, run the same "
                   "command to continue\n",
                   run);
        dp_free(crit_buf);
        dp_llama_free(&m);
        return 0;
    }
    if (!rc && mpi->rank == 0) {
        char *jp = dp_path_join(run, "scores.json");
        printf("scores: %s\n", jp);
        plot_scores(run, jp);
        dp_free(jp);
    }
    dp_free(crit_buf);
    dp_llama_free(&m);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_score = {
    "score",
    "rank every block by importance (PPL, Taylor, magnitude, block influence) across MPI ranks",
    "--model DIR --calib FILE --criterion ppl,taylor+ [--samples 10 --seq-len 128 --seed S] --run RUNDIR",
    k_score_opts,
    1,
    run_score,
    0,
    0};
