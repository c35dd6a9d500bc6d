/* The whole method as one resumable job over one configuration: score
 * (calibrate) -> prune -> teacher cache (KD) -> retrain -> eval of the
 * dense, pruned and retrained models -> summary.md, each stage the same
 * function its own command calls. Each stage's output is published
 * atomically, so a stage whose output exists is complete and skipped: a
 * killed or requeued job continues where it stopped. SIGUSR1/SIGTERM stop
 * the job at the next stage boundary (inside retraining: at the next step,
 * with a checkpoint). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "depthprune/engine.h"
#include "internal.h"

/* The cost ledger, RUNDIR/ledger.json (rank 0): per stage, wall seconds, rank-seconds (CPU:
 * ranks x threads x seconds; GPU: GPUs x seconds), tokens scored and model FLOPs (the
 * engine's formula, summed over ranks; dp_engine_work). A resumed stage adds up. */
static void record_cost(const dp_pipe *p, const char *run, const char *name, double seconds, double flops,
                        int64_t tokens) {
    char *path = dp_path_join(run, "ledger.json");
    cJSON *o = dp_pipe_read_json(path);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        o = cJSON_CreateObject();
    }
    int threads = p->device == DP_DEVICE_CPU ? omp_get_max_threads() : 1;
    cJSON_DeleteItemFromObject(o, "device");
    cJSON_DeleteItemFromObject(o, "ranks");
    cJSON_DeleteItemFromObject(o, "threads_per_rank");
    cJSON_AddStringToObject(o, "device", dp_device_name(p->device));
    cJSON_AddNumberToObject(o, "ranks", p->mpi->size);
    cJSON_AddNumberToObject(o, "threads_per_rank", threads);
    cJSON *st = cJSON_GetObjectItem(o, "stages");
    if (!cJSON_IsObject(st)) {
        cJSON_DeleteItemFromObject(o, "stages");
        st = cJSON_AddObjectToObject(o, "stages");
    }
    const cJSON *old = cJSON_GetObjectItem(st, name);
    double prev[4] = {0};
    const char *keys[4] = {"seconds", "rank_seconds", "tokens", "flops"};
    for (int k = 0; k < 4; k++) {
        const cJSON *v = cJSON_GetObjectItem(old, keys[k]);
        prev[k] = cJSON_IsNumber(v) ? v->valuedouble : 0;
    }
    cJSON_DeleteItemFromObject(st, name);
    cJSON *e = cJSON_AddObjectToObject(st, name);
    double now[4] = {seconds, seconds * p->mpi->size * threads, (double)tokens, flops};
    for (int k = 0; k < 4; k++) cJSON_AddNumberToObject(e, keys[k], prev[k] + now[k]);
    char *out = cJSON_Print(o);
    dp_err err;
    dp_write_file_atomic(path, out, strlen(out), &err);
    free(out);
    cJSON_Delete(o);
    dp_free(path);
}

/* summary.md: the paper-style table and the stage times (rank 0). */
int dp_pipe_summary(const char *run, int retrained, dp_err *err) {
    const char *models[3] = {"dense", "pruned", "retrained"};
    cJSON *res[3] = {0};
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "eval/%s.json", models[i]);
        char *p = dp_path_join(run, name);
        res[i] = dp_pipe_read_json(p);
        dp_free(p);
    }
    dp_buf md = {0};
    char t[1024];
    dp_buf_puts(&md, "| model | blocks | params (M) |");
    const cJSON *pp = cJSON_GetObjectItem(res[0], "ppl"), *tk = cJSON_GetObjectItem(res[0], "tasks"), *it;
    cJSON_ArrayForEach(it, pp) {
        snprintf(t, sizeof t, " PPL %s |", it->string);
        dp_buf_puts(&md, t);
    }
    int n_tasks = 0;
    cJSON_ArrayForEach(it, tk) {
        snprintf(t, sizeof t, " %s (%s) |", it->string, cJSON_GetObjectItem(it, "reported")->valuestring);
        dp_buf_puts(&md, t);
        n_tasks++;
    }
    if (n_tasks) dp_buf_puts(&md, " average |");
    dp_buf_puts(&md, "\n|---|---|---|");
    cJSON_ArrayForEach(it, pp) dp_buf_puts(&md, "---|");
    cJSON_ArrayForEach(it, tk) dp_buf_puts(&md, "---|");
    if (n_tasks) dp_buf_puts(&md, "---|");
    dp_buf_puts(&md, "\n");
    char *pj = dp_path_join(run, "pruned/prune.json");
    cJSON *prune = dp_pipe_read_json(pj);
    dp_free(pj);
    for (int i = 0; i < 3; i++) {
        if (!res[i]) continue;
        int blocks = 0;
        double params = 0;
        if (prune) {
            blocks = (int)cJSON_GetObjectItem(prune, i ? "layers_after" : "layers_before")->valuedouble;
            params = cJSON_GetObjectItem(prune, i ? "params_after" : "params_before")->valuedouble;
        }
        snprintf(t, sizeof t, "| %s | %d | %.2f |", models[i], blocks, params / 1e6);
        dp_buf_puts(&md, t);
        const cJSON *p2 = cJSON_GetObjectItem(res[i], "ppl"), *t2 = cJSON_GetObjectItem(res[i], "tasks");
        cJSON_ArrayForEach(it, pp) {
            snprintf(t, sizeof t, " %.2f |",
                     cJSON_GetObjectItem(cJSON_GetObjectItem(p2, it->string), "ppl")->valuedouble);
            dp_buf_puts(&md, t);
        }
        cJSON_ArrayForEach(it, tk) {
            const cJSON *e = cJSON_GetObjectItem(t2, it->string);
            const char *metric = cJSON_GetObjectItem(e, "reported")->valuestring;
            snprintf(t, sizeof t, " %.2f |", 100 * cJSON_GetObjectItem(e, metric)->valuedouble);
            dp_buf_puts(&md, t);
        }
        if (n_tasks) {
            snprintf(t, sizeof t, " %.2f |", 100 * cJSON_GetObjectItem(res[i], "average")->valuedouble);
            dp_buf_puts(&md, t);
        }
        dp_buf_puts(&md, "\n");
    }
    if (prune) {
        dp_buf_puts(&md, "\nRemoved blocks (in order): ");
        const cJSON *r;
        int first = 1;
        cJSON_ArrayForEach(r, cJSON_GetObjectItem(prune, "removed")) {
            snprintf(t, sizeof t, "%s%d", first ? "" : ", ", r->valueint);
            dp_buf_puts(&md, t);
            first = 0;
        }
        snprintf(t, sizeof t, " (%s, %s).\n", cJSON_GetObjectItem(prune, "schedule")->valuestring,
                 cJSON_GetObjectItem(prune, "criterion")->valuestring);
        dp_buf_puts(&md, t);
    }
    char *sp = dp_path_join(run, "ledger.json");
    cJSON *times = dp_pipe_read_json(sp);
    dp_free(sp);
    const cJSON *stages = cJSON_GetObjectItem(times, "stages");
    if (cJSON_IsObject(stages)) { /* the cost ledger */
        const cJSON *dev = cJSON_GetObjectItem(times, "device");
        int gpu = cJSON_IsString(dev) && !strcmp(dev->valuestring, "cuda");
        snprintf(t, sizeof t,
                 "\nCost (%s x %d ranks%s; FLOPs by the engine's formula):\n\n| stage | seconds | %s | tokens | "
                 "TFLOP | GFLOP/s per %s |\n|---|---|---|---|---|---|\n",
                 gpu ? "GPU" : "CPU", cJSON_GetObjectItem(times, "ranks")->valueint,
                 gpu ? "" : ", threads per rank as below", gpu ? "GPU-seconds" : "core-seconds", gpu ? "GPU" : "core");
        dp_buf_puts(&md, t);
        cJSON_ArrayForEach(it, stages) {
            double sec = cJSON_GetObjectItem(it, "seconds")->valuedouble,
                   rs = cJSON_GetObjectItem(it, "rank_seconds")->valuedouble,
                   fl = cJSON_GetObjectItem(it, "flops")->valuedouble;
            snprintf(t, sizeof t, "| %s | %.1f | %.1f | %.0f | %.3f | %.1f |\n", it->string, sec, rs,
                     cJSON_GetObjectItem(it, "tokens")->valuedouble, fl / 1e12, rs > 0 ? fl / rs / 1e9 : 0.0);
            dp_buf_puts(&md, t);
        }
        if (!gpu) {
            snprintf(t, sizeof t, "\nThreads per rank: %d.\n",
                     cJSON_GetObjectItem(times, "threads_per_rank")->valueint);
            dp_buf_puts(&md, t);
        }
    }
    if (retrained) { /* training throughput from the log's last step */
        char *lp = dp_path_join(run, "retrain/train_log.jsonl"), *text = NULL;
        size_t n = 0;
        dp_err e;
        if (!dp_read_file(lp, &text, &n, &e)) {
            const char *last = NULL, *s = text;
            while ((s = strstr(s, "\"tok_s\":"))) last = s++;
            if (last) {
                snprintf(t, sizeof t, "\nRetraining throughput (last step): %.0f tokens/s.\n", strtod(last + 8, NULL));
                dp_buf_puts(&md, t);
            }
        }
        dp_free(text);
        dp_free(lp);
    }
    const char *plots[] = {"scores_ppl.png",  "scores_taylor.png", "scores_taylor+.png",
                           "scores_ppl+.png", "prune_ppl.png",     "retrain/loss.png"};
    int first_plot = 1;
    for (size_t i = 0; i < sizeof plots / sizeof *plots; i++) {
        char *pp2 = dp_path_join(run, plots[i]);
        if (dp_file_exists(pp2)) {
            snprintf(t, sizeof t, "%s%s", first_plot ? "\nPlots: " : ", ", plots[i]);
            dp_buf_puts(&md, t);
            first_plot = 0;
        }
        dp_free(pp2);
    }
    if (!first_plot) dp_buf_puts(&md, ".\n");
    char *out = dp_path_join(run, "summary.md");
    int rc = dp_write_file_atomic(out, md.p, md.n, err);
    if (!rc) {
        fputs(md.p, stdout);
        printf("summary: %s\n", out);
        fflush(stdout);
    }
    dp_free(out);
    dp_free(md.p);
    cJSON_Delete(times);
    cJSON_Delete(prune);
    for (int i = 0; i < 3; i++) cJSON_Delete(res[i]);
    return rc;
}

int dp_pipe_run(const dp_pipe *p, const char *model, const char *run, int *stopped, dp_err *err) {
    const dp_mpi *mpi = p->mpi;
    const dp_config *c = p->cfg;
    int rc = DP_OK;
    const char *calib = dp_config_str(c, "calib.path"), *data = dp_config_str(c, "train.data");
    const char *crit = dp_config_str(c, "prune.criterion"), *ppl_sets = dp_config_str(c, "eval.ppl");
    const char *tasks = dp_config_str(c, "eval.tasks");
    int retrain = dp_config_bool(c, "pipeline.retrain") && data;
    int kd = retrain && dp_config_bool(c, "pipeline.kd");
    *stopped = 0;
    if (!model)
        rc = dp_err_set(err, DP_E_USAGE, "--model DIR (or model.path) is required");
    else if (!calib)
        rc = dp_err_set(err, DP_E_CONFIG, "calib.path (calibration text) is required");
    else if (!ppl_sets && !tasks)
        rc = dp_err_set(err, DP_E_CONFIG, "give eval.ppl (NAME=FILE,...) and/or eval.tasks");
    if (rc) return rc;
    if (mpi->rank == 0) rc = dp_mkdir_p(run, err);
    rc = dp_mpi_agree(mpi, rc, err);
    if (rc) return rc;
    dp_stop_install_signals();
    char *scores = dp_path_join(run, "scores.json"), *pruned = dp_path_join(run, "pruned"),
         *teacher = dp_path_join(run, "teacher.h5"), *rdir = dp_path_join(run, "retrain"),
         *retrained = dp_path_join(run, "retrained"), *evdir = dp_path_join(run, "eval");
    dp_prune_job pj;
    dp_prune_job_init(c, &pj);
    int iterative = pj.schedule == DP_PRUNE_ITERATIVE;
    enum { SCORE, PRUNE, TEACHER, RETRAIN, EVAL, SUMMARY, N_STAGES };
    static const char *const names[N_STAGES] = {"score", "prune", "teacher-cache", "retrain", "eval", "summary"};
    const char *ms[3] = {"dense", "pruned", "retrained"}, *dirs[3] = {model, pruned, retrained};
    for (int s = 0; s < N_STAGES && !rc && !*stopped; s++) {
        /* complete or not needed? (rank 0 looks, everyone follows) */
        int done = 0, needed = !(s == SCORE && iterative) && !(s == TEACHER && !kd) && !(s == RETRAIN && !retrain);
        if (mpi->rank == 0) {
            switch (s) {
            case SCORE:
                if (needed && dp_file_exists(scores)) { /* with this criterion (the hash check is prune's) */
                    cJSON *j = dp_pipe_read_json(scores);
                    done = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "criteria"), crit) != NULL;
                    cJSON_Delete(j);
                }
                break;
            case PRUNE: done = dp_file_exists(pruned); break;
            case TEACHER: done = dp_file_exists(teacher); break;
            case RETRAIN: done = dp_file_exists(retrained); break;
            case EVAL:
                done = 1;
                for (int i = 0; i < (retrain ? 3 : 2); i++) {
                    char n[64];
                    snprintf(n, sizeof n, "%s.json", ms[i]);
                    char *q = dp_path_join(evdir, n);
                    done &= dp_file_exists(q);
                    dp_free(q);
                }
                break;
            default: done = 0;
            }
        }
        DP_CHECK_MPI(MPI_Bcast(&done, 1, MPI_INT, 0, mpi->comm));
        if (!needed) {
            if (s == RETRAIN) dp_log0("run: no retraining (train.data unset or pipeline.retrain false)");
            continue;
        }
        if (done) {
            dp_log0("run: %s: complete, skipped", names[s]);
            continue;
        }
        if (s != SUMMARY) dp_log0("run: %s", names[s]);
        double t0 = dp_time_s(), f0 = 0;
        int64_t k0 = 0;
        dp_engine_work(&f0, &k0);
        switch (s) {
        case SCORE: {
            dp_score_job j;
            dp_score_job_init(c, &j);
            j.model = model;
            j.run = run;
            j.criteria = crit;
            rc = dp_pipe_score(p, &j, err);
            if (rc == DP_E_STOPPED) rc = DP_OK, *stopped = 1; /* the finished candidates are kept */
            break;
        }
        case PRUNE:
            pj.model = model;
            pj.out = pruned;
            pj.run = run;
            pj.scores = iterative ? NULL : scores;
            rc = dp_pipe_prune(p, &pj, err);
            break;
        case TEACHER: {
            dp_teacher_job j;
            dp_teacher_job_init(c, &j);
            j.teacher = model;
            j.data = data;
            j.out = teacher;
            rc = dp_pipe_teacher_cache(p, &j, err);
            break;
        }
        case RETRAIN: {
            dp_retrain_job j;
            dp_retrain_job_init(c, &j);
            j.student = pruned;
            j.data = data;
            j.run = rdir;
            j.out = retrained;
            j.teacher = NULL;
            j.teacher_cache = kd ? teacher : NULL;
            j.no_kd = !kd;
            rc = dp_pipe_retrain(p, &j, stopped, err); /* stopped: a signal or pause_after, checkpointed */
            break;
        }
        case EVAL:
            for (int i = 0; i < (retrain ? 3 : 2) && !rc && !*stopped; i++) {
                char n[64];
                snprintf(n, sizeof n, "%s.json", ms[i]);
                char *q = dp_path_join(evdir, n);
                int have = 0;
                if (mpi->rank == 0) have = dp_file_exists(q);
                DP_CHECK_MPI(MPI_Bcast(&have, 1, MPI_INT, 0, mpi->comm));
                if (!have) {
                    dp_log0("run: eval %s", ms[i]);
                    dp_eval_job j;
                    dp_eval_job_init(c, &j);
                    j.model = dirs[i];
                    j.out = q;
                    rc = dp_pipe_eval(p, &j, err);
                }
                dp_free(q);
                if (!rc && dp_pipe_stop_requested(mpi)) *stopped = 1;
            }
            break;
        case SUMMARY:
            if (mpi->rank == 0) rc = dp_pipe_summary(run, retrain, err);
            rc = dp_mpi_agree(mpi, rc, err);
            break;
        }
        if (!rc && !*stopped && s != SUMMARY) { /* this stage's work, summed over ranks */
            double w[2], f1 = 0, sec = dp_time_s() - t0;
            int64_t k1 = 0;
            dp_engine_work(&f1, &k1);
            w[0] = f1 - f0, w[1] = (double)(k1 - k0);
            DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, w, 2, MPI_DOUBLE, MPI_SUM, mpi->comm));
            DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, &sec, 1, MPI_DOUBLE, MPI_MAX, mpi->comm));
            if (mpi->rank == 0) record_cost(p, run, names[s], sec, w[0], (int64_t)w[1]);
        }
        if (!rc && !*stopped && s != SUMMARY && dp_pipe_stop_requested(mpi)) *stopped = 1;
    }
    if (*stopped && !rc && mpi->rank == 0)
        printf("run: stopped by a signal; every finished stage is kept, run the same command to continue\n");
    dp_free(scores);
    dp_free(pruned);
    dp_free(teacher);
    dp_free(rdir);
    dp_free(retrained);
    dp_free(evdir);
    return rc;
}
