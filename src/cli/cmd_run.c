/* `depthprune run`: the whole method as one resumable job, chaining the
 * other commands on one configuration: score (calibrate) -> prune ->
 * teacher cache (KD) -> retrain -> eval of the dense, pruned and retrained
 * models -> summary.md. Each stage's output is published atomically (a
 * directory or file renamed into place), so a stage whose output exists is
 * complete and skipped: a killed or requeued job continues where it stopped.
 * SIGUSR1/SIGTERM stop the job at the next stage boundary (inside
 * retraining: at the next step, with a checkpoint), exit 0. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "depthprune/train.h"

static const dp_cli_opt k_run_opts[] = {
    {"--model", "DIR", "the dense model (default model.path)", "model.path"},
    {"--run", "DIR", "run directory (default run.dir)", "run.dir"},
    {NULL, NULL, NULL, NULL},
};

/* Runs command c as a stage with the given options (name, value pairs,
 * NULL-terminated) and the pipeline's configuration. */
static int stage(const dp_app *app, const dp_cmd *c, const char *const *kv) {
    dp_app sub = *app;
    sub.cmd = c->name;
    memset(sub.opt_values, 0, sizeof sub.opt_values);
    for (int i = 0; kv[i]; i += 2) {
        int k = 0;
        for (const dp_cli_opt *o = c->opts; o->name; o++, k++)
            if (!strcmp(o->name, kv[i])) sub.opt_values[k] = kv[i + 1] ? kv[i + 1] : "1";
    }
    return c->run(&sub);
}

static int stop_requested(const dp_mpi *mpi) {
    int s = dp_stop_requested(), any = 0;
    DP_CHECK_MPI(MPI_Allreduce(&s, &any, 1, MPI_INT, MPI_MAX, mpi->comm));
    return any;
}

/* seconds of each stage run so far: RUNDIR/stage_times.json (rank 0) */
static void record_time(const char *run, const char *name, double seconds) {
    char *p = dp_path_join(run, "stage_times.json"), *text = NULL;
    size_t n = 0;
    dp_err e;
    cJSON *o = NULL;
    if (!dp_read_file(p, &text, &n, &e)) o = cJSON_ParseWithLength(text, n);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        o = cJSON_CreateObject();
    }
    cJSON *old = cJSON_GetObjectItem(o, name);
    double prev = cJSON_IsNumber(old) ? old->valuedouble : 0;
    cJSON_DeleteItemFromObject(o, name);
    cJSON_AddNumberToObject(o, name, prev + seconds); /* a resumed stage adds up */
    char *out = cJSON_Print(o);
    dp_write_file_atomic(p, out, strlen(out), &e);
    free(out);
    cJSON_Delete(o);
    dp_free(text);
    dp_free(p);
}

static cJSON *read_json(const char *path) {
    char *text = NULL;
    size_t n = 0;
    dp_err e;
    if (dp_read_file(path, &text, &n, &e)) return NULL;
    cJSON *o = cJSON_ParseWithLength(text, n);
    dp_free(text);
    return o;
}

/* summary.md: the paper-style table and the stage times (rank 0). */
static int summarize(const char *run, int retrained, dp_err *err) {
    const char *models[3] = {"dense", "pruned", "retrained"};
    cJSON *res[3] = {0};
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "eval/%s.json", models[i]);
        char *p = dp_path_join(run, name);
        res[i] = read_json(p);
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
    cJSON *prune = read_json(pj);
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
    char *sp = dp_path_join(run, "stage_times.json");
    cJSON *times = read_json(sp);
    dp_free(sp);
    if (times) {
        dp_buf_puts(&md, "\n| stage | seconds |\n|---|---|\n");
        cJSON_ArrayForEach(it, times) {
            snprintf(t, sizeof t, "| %s | %.1f |\n", it->string, it->valuedouble);
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

static int run_pipeline(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_run;
    const dp_mpi *mpi = &app->mpi;
    dp_err err;
    dp_err_clear(&err);
    int rc = DP_OK;
    const char *model = dp_cli_model_path(app, cmd);
    const char *run = dp_cli_get(app, cmd, "--run");
    if (!run) run = dp_config_str(&app->cfg, "run.dir");
    const char *calib = dp_config_str(&app->cfg, "calib.path");
    const char *data = dp_config_str(&app->cfg, "train.data");
    const char *crit = dp_config_str(&app->cfg, "prune.criterion");
    const char *sched = dp_config_str(&app->cfg, "prune.schedule");
    const char *ppl_sets = dp_config_str(&app->cfg, "eval.ppl");
    const char *tasks = dp_config_str(&app->cfg, "eval.tasks");
    int retrain = dp_config_bool(&app->cfg, "pipeline.retrain") && data;
    int kd = retrain && dp_config_bool(&app->cfg, "pipeline.kd");
    double ratio = dp_config_float(&app->cfg, "prune.ratio");
    if (!model)
        rc = dp_err_set(&err, DP_E_USAGE, "--model DIR (or model.path) is required");
    else if (!calib)
        rc = dp_err_set(&err, DP_E_CONFIG, "calib.path (calibration text) is required");
    else if (!ppl_sets && !tasks)
        rc = dp_err_set(&err, DP_E_CONFIG, "give eval.ppl (NAME=FILE,...) and/or eval.tasks");
    if (rc) return dp_cli_fail(app, &err);
    /* the plan first: a stage that cannot fit stops the job now, not hours in */
    rc = dp_mpi_agree(mpi, dp_cli_plan_check(app, model, &err), &err);
    if (rc) return dp_cli_fail(app, &err);
    if (mpi->rank == 0) rc = dp_mkdir_p(run, &err);
    rc = dp_mpi_agree(mpi, rc, &err);
    if (rc) return dp_cli_fail(app, &err);
    dp_stop_install_signals();
    char *scores = dp_path_join(run, "scores.json"), *pruned = dp_path_join(run, "pruned"),
         *teacher = dp_path_join(run, "teacher.h5"), *rdir = dp_path_join(run, "retrain"),
         *retrained = dp_path_join(run, "retrained"), *evdir = dp_path_join(run, "eval");
    char ratio_s[32];
    snprintf(ratio_s, sizeof ratio_s, "%.17g", ratio);
    int iterative = !strcmp(sched, "iterative"), code = 0, stopped = 0;
    struct {
        const char *name;
        int done;
    } st[6] = {{"score", 0}, {"prune", 0}, {"teacher-cache", 0}, {"retrain", 0}, {"eval", 0}, {"summary", 0}};
    for (int s = 0; s < 6 && !code && !stopped; s++) {
        /* complete? (rank 0 looks, everyone follows) */
        int done = 0;
        if (mpi->rank == 0) {
            switch (s) {
            case 0: /* the iterative prune calibrates itself */
                if (iterative) {
                    done = 1;
                } else if (dp_file_exists(scores)) { /* with this criterion (the hash check is prune's) */
                    cJSON *j = read_json(scores);
                    done = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "criteria"), crit) != NULL;
                    cJSON_Delete(j);
                }
                break;
            case 1: done = dp_file_exists(pruned); break;
            case 2: done = !kd || dp_file_exists(teacher); break;
            case 3: done = !retrain || dp_file_exists(retrained); break;
            case 4: {
                const char *ms[3] = {"dense", "pruned", "retrained"};
                done = 1;
                for (int i = 0; i < (retrain ? 3 : 2); i++) {
                    char n[64];
                    snprintf(n, sizeof n, "%s.json", ms[i]);
                    char *p = dp_path_join(evdir, n);
                    done &= dp_file_exists(p);
                    dp_free(p);
                }
                break;
            }
            default: done = 0;
            }
        }
        DP_CHECK_MPI(MPI_Bcast(&done, 1, MPI_INT, 0, mpi->comm));
        st[s].done = done;
        if (done) {
            if ((s != 2 || kd) && (s != 0 || !iterative) && (s != 3 || retrain))
                dp_log0("run: %s: complete, skipped", st[s].name);
            if (s == 3 && !retrain) dp_log0("run: no retraining (train.data unset or pipeline.retrain false)");
            continue;
        }
        if (s < 5) dp_log0("run: %s", st[s].name);
        double t0 = dp_time_s();
        switch (s) {
        case 0: {
            const char *kv[] = {"--model", model, "--calib", calib, "--criterion", crit, "--run", run, NULL};
            code = stage(app, &dp_cmd_score, kv);
            int have = 0;
            if (mpi->rank == 0) have = dp_file_exists(scores);
            DP_CHECK_MPI(MPI_Bcast(&have, 1, MPI_INT, 0, mpi->comm));
            if (!code && !have) stopped = 1; /* a signal: the finished candidates are kept */
            break;
        }
        case 1:
            if (iterative) {
                const char *kv[] = {"--model", model,     "--schedule", "iterative", "--run", run, "--calib",
                                    calib,     "--ratio", ratio_s,      "--out",     pruned,  NULL};
                code = stage(app, &dp_cmd_prune, kv);
            } else {
                const char *kv[] = {"--model", model,   "--scores", scores, "--criterion", crit,
                                    "--ratio", ratio_s, "--out",    pruned, NULL};
                code = stage(app, &dp_cmd_prune, kv);
            }
            break;
        case 2: {
            const char *kv[] = {"--teacher", model, "--data", data, "--out", teacher, "--run", run, NULL};
            code = stage(app, &dp_cmd_teacher_cache, kv);
            break;
        }
        case 3: {
            const char *kv[] = {"--student",
                                pruned,
                                "--data",
                                data,
                                "--run",
                                rdir,
                                "--out",
                                retrained,
                                kd ? "--teacher-cache" : "--no-kd",
                                kd ? teacher : NULL,
                                NULL};
            code = stage(app, &dp_cmd_retrain, kv);
            int have = 0;
            if (mpi->rank == 0) have = dp_file_exists(retrained);
            DP_CHECK_MPI(MPI_Bcast(&have, 1, MPI_INT, 0, mpi->comm));
            if (!code && !have) stopped = 1; /* a signal or pause_after: checkpointed */
            break;
        }
        case 4: {
            const char *ms[3] = {"dense", "pruned", "retrained"};
            const char *dirs[3] = {model, pruned, retrained};
            for (int i = 0; i < (retrain ? 3 : 2) && !code; i++) {
                char n[64];
                snprintf(n, sizeof n, "%s.json", ms[i]);
                char *p = dp_path_join(evdir, n);
                int have = 0;
                if (mpi->rank == 0) have = dp_file_exists(p);
                DP_CHECK_MPI(MPI_Bcast(&have, 1, MPI_INT, 0, mpi->comm));
                if (!have) {
                    dp_log0("run: eval %s", ms[i]);
                    const char *kv[] = {"--model",
                                        dirs[i],
                                        "--out",
                                        p,
                                        ppl_sets ? "--ppl" : "--task",
                                        ppl_sets ? ppl_sets : tasks,
                                        tasks && ppl_sets ? "--task" : NULL,
                                        tasks,
                                        NULL};
                    code = stage(app, &dp_cmd_eval, kv);
                }
                dp_free(p);
                if (!code && stop_requested(mpi)) stopped = 1;
                if (stopped) break;
            }
            break;
        }
        case 5:
            if (mpi->rank == 0) code = summarize(run, retrain, &err) ? 1 : 0;
            DP_CHECK_MPI(MPI_Bcast(&code, 1, MPI_INT, 0, mpi->comm));
            if (code) dp_cli_fail(app, &err);
            break;
        }
        if (!code && !stopped && s < 5 && mpi->rank == 0) record_time(run, st[s].name, dp_time_s() - t0);
        if (!code && !stopped && s < 5 && stop_requested(mpi)) stopped = 1;
    }
    if (stopped && !code) {
        if (mpi->rank == 0)
            printf("run: stopped by a signal; every finished stage is kept, run the same command to continue\n");
    }
    dp_free(scores);
    dp_free(pruned);
    dp_free(teacher);
    dp_free(rdir);
    dp_free(retrained);
    dp_free(evdir);
    return code;
}

const dp_cmd dp_cmd_run = {
    "run",
    "the whole pipeline as one resumable job: score, prune, (teacher cache), retrain, eval, summary",
    "--config FILE.yaml [--model DIR] [--run DIR]",
    k_run_opts,
    1,
    run_pipeline,
    0,
    0};
