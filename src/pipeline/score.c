/* The score stage: draws the calibration set (rank 0, broadcast), runs or
 * reuses the dense calibration forward (RUNDIR/calib.h5), then scores every
 * block by the requested criteria (RUNDIR/scores.h5, scores.json, one plot
 * per criterion). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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

void dp_score_job_init(const dp_config *c, dp_score_job *j) {
    *j = (dp_score_job){.model = dp_config_str(c, "model.path"),
                        .calib = dp_config_str(c, "calib.path"),
                        .field = dp_config_str(c, "calib.field"),
                        .run = dp_config_str(c, "run.dir"),
                        .criteria = dp_config_str(c, "score.criteria"),
                        .samples = dp_config_int(c, "calib.samples"),
                        .seq_len = dp_config_int(c, "calib.seq_len"),
                        .batch = dp_config_int(c, "score.batch"),
                        .bootstrap = dp_config_int(c, "score.bootstrap"),
                        .seed = (uint64_t)dp_config_int(c, "run.seed"),
                        .protect_first = (int)dp_config_int(c, "score.protect_first"),
                        .protect_last = (int)dp_config_int(c, "score.protect_last"),
                        .ratio = dp_config_float(c, "score.ratio")};
}

int dp_pipe_score(const dp_pipe *p, const dp_score_job *j, dp_err *err) {
    const dp_mpi *mpi = p->mpi;
    int rc = DP_OK;
    if (!j->model)
        rc = dp_err_set(err, DP_E_USAGE, "--model DIR is required");
    else if (!j->calib)
        rc = dp_err_set(err, DP_E_USAGE, "--calib FILE is required");
    else if (j->samples < 1 || j->seq_len < 2 || j->batch < 1 || j->bootstrap < 0 || j->samples > 1000000 ||
             j->seq_len > 1000000)
        rc = dp_err_set(err, DP_E_USAGE, "--samples >= 1, --seq-len >= 2, --batch >= 1 and --bootstrap >= 0");
    /* the criteria list */
    char *crit_buf = dp_strdup(j->criteria ? j->criteria : "", "score");
    const char *crit[16];
    int n_crit = 0;
    for (char *save = NULL, *tok = strtok_r(crit_buf, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
        if (n_crit == 16)
            rc = dp_err_set(err, DP_E_USAGE, "at most 16 criteria");
        else
            crit[n_crit++] = tok;
    }
    if (!rc && n_crit == 0) rc = dp_err_set(err, DP_E_USAGE, "--criterion is empty");
    if (rc) {
        dp_free(crit_buf);
        return rc;
    }
    dp_stop_install_signals();
    if (mpi->rank == 0) rc = dp_mkdir_p(j->run, err);
    rc = dp_mpi_agree(mpi, rc, err);
    dp_llama m;
    memset(&m, 0, sizeof m);
    if (!rc) rc = dp_mpi_agree(mpi, dp_llama_load(j->model, &m, err), err);
    if (!rc && j->seq_len > m.cfg.max_position_embeddings)
        rc = dp_err_set(err, DP_E_RANGE, "--seq-len %lld exceeds max_position_embeddings %lld", (long long)j->seq_len,
                        (long long)m.cfg.max_position_embeddings);
    uint64_t mhash = rc ? 0 : dp_llama_hash(&m);
    if (!rc)
        rc = dp_pipe_calibrate(p, j->model, &m, mhash, j->calib, j->field, j->samples, j->seq_len, j->seed, j->batch,
                               j->run, err);
    dp_score_opts so = {.run_dir = j->run,
                        .model_hash = mhash,
                        .batch = j->batch,
                        .protect_first = j->protect_first,
                        .protect_last = j->protect_last,
                        .bootstrap = j->bootstrap,
                        .ratio = j->ratio,
                        .progress = !dp_config_bool(p->cfg, "run.quiet"),
                        .fault_kill_after_round = j->fault_kill_after_round,
                        .stop_on_signal = 1,
                        .device = p->device,
                        .stream_weights = dp_pipe_stream_weights(p)};
    if (!rc) rc = dp_score(mpi, &m, crit, n_crit, &so, err);
    if (rc == DP_E_STOPPED && mpi->rank == 0)
        printf("score: stopped by a signal; finished candidates are kept in %s/scores.progress.h5, run the same "
               "command to continue\n",
               j->run);
    if (!rc && mpi->rank == 0) {
        char *jp = dp_path_join(j->run, "scores.json");
        printf("scores: %s\n", jp);
        plot_scores(j->run, jp);
        dp_free(jp);
    }
    dp_free(crit_buf);
    dp_llama_free(&m);
    return rc;
}
