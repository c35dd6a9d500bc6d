/* `depthprune score`: the score stage (pipeline/score.c) from flags. */
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
    {"--criterion", "LIST", "ppl,taylor,magnitude,magnitude-l2,bi and ppl+,taylor+,... (default score.criteria)", NULL},
    {"--samples", "N", "calibration samples", "calib.samples"},
    {"--seq-len", "T", "tokens per sample", "calib.seq_len"},
    {"--seed", "S", "sampling seed (default run.seed = 1234)", "run.seed"},
    {"--batch", "N", "samples per forward (default score.batch)", NULL},
    {"--protect-first", "F", "keep the first F blocks out of the order (default score.protect_first)", NULL},
    {"--protect-last", "B", "keep the last B blocks out of the order (default score.protect_last)", NULL},
    {"--bootstrap", "R", "bootstrap replicates over calibration samples (default score.bootstrap)", NULL},
    {"--ratio", "X", "fraction of blocks to remove, for the bootstrap (default score.ratio)", NULL},
    {"--units", "U", "block | sublayer: candidates are whole blocks, or each block's attention and MLP", "score.units"},
    {"--run", "DIR", "run directory (default run.dir)", "run.dir"},
    {"--fault-kill-after-round", "K", "testing: rank 1 kills itself after PPL round K", NULL},
    {NULL, NULL, NULL, NULL},
};

static int run_score(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_score;
    dp_err err;
    dp_err_clear(&err);
    dp_pipe p = dp_cli_pipe(app);
    dp_score_job j;
    dp_score_job_init(p.cfg, &j); /* the bound flags are in the config */
    const char *crit = dp_cli_get(app, cmd, "--criterion");
    if (crit) j.criteria = crit;
    int rc = dp_cli_flag_i64(app, cmd, "--batch", &j.batch, &err);
    if (!rc) rc = dp_cli_flag_int(app, cmd, "--protect-first", &j.protect_first, &err);
    if (!rc) rc = dp_cli_flag_int(app, cmd, "--protect-last", &j.protect_last, &err);
    if (!rc) rc = dp_cli_flag_i64(app, cmd, "--bootstrap", &j.bootstrap, &err);
    if (!rc) rc = dp_cli_flag_f64(app, cmd, "--ratio", &j.ratio, &err);
    if (!rc) rc = dp_cli_flag_int(app, cmd, "--fault-kill-after-round", &j.fault_kill_after_round, &err);
    if (!rc) rc = dp_pipe_score(&p, &j, &err);
    return rc == DP_E_STOPPED ? 0 : rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_score = {
    "score",
    "rank every block by importance (PPL, Taylor, magnitude, block influence) across MPI ranks",
    "--model DIR --calib FILE --criterion ppl,taylor+ [--units block|sublayer] [--samples 10 --seq-len 128] --run "
    "RUNDIR",
    k_score_opts,
    1,
    run_score,
    0,
    0};

/* ---- agreement: rankings of several score runs compared ---- */

static const dp_cli_opt k_agree_opts[] = {
    {"--scores", "FILE,FILE..", "scores.json files of one model (other calibration sets, seeds)", NULL},
    {"--criterion", "LIST", "the criteria to compare (default: every one in the files)", NULL},
    {"--top-k", "K", "units each ranking removes first, for the overlap (default: the files' top_k)", NULL},
    {"--out", "FILE", "also write the Markdown tables here", NULL},
    {NULL, NULL, NULL, NULL},
};

static int run_agreement(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_agreement;
    dp_err err;
    dp_err_clear(&err);
    const char *files = dp_cli_get(app, cmd, "--scores");
    int k = 0, rc = dp_cli_flag_int(app, cmd, "--top-k", &k, &err);
    if (!rc && !files) rc = dp_err_set(&err, DP_E_USAGE, "--scores FILE,FILE.. is required");
    if (!rc && app->mpi.rank == 0)
        rc = dp_pipe_agreement(files, dp_cli_get(app, cmd, "--criterion"), k, dp_cli_get(app, cmd, "--out"), &err);
    rc = dp_mpi_agree(&app->mpi, rc, &err);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_agreement = {
    "agreement",
    "how much block rankings agree across score runs (calibration sets, seeds, criteria): Kendall's tau, top-k overlap",
    "--scores RUN1/scores.json,RUN2/scores.json [--criterion ppl] [--top-k K] [--out FILE.md]",
    k_agree_opts,
    0,
    run_agreement,
    0,
    1};
