/* `depthprune prune`: the prune stage (pipeline/prune.c) from flags. */
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
    {"--criterion", "NAME", "one-shot: which criterion of scores.json (default prune.criterion)", NULL},
    {"--schedule", "S", "one-shot (default) | iterative", NULL},
    {"--ratio", "R", "remove round(R x L) blocks", NULL},
    {"--remove", "K", "remove K blocks (instead of --ratio)", NULL},
    {"--out", "DIR", "output HF directory (must not exist)", NULL},
    {"--run", "DIR", "iterative: run directory with calib.h5 (default run.dir)", "run.dir"},
    {"--calib", "FILE", "iterative: calibration text, when RUNDIR has no calib.h5 yet", NULL},
    {"--samples", "N", "calibration samples", "calib.samples"},
    {"--seed", "S", "iterative: calibration sampling and healing seed (default run.seed)", "run.seed"},
    {"--seq-len", "T", "tokens per calibration sample", "calib.seq_len"},
    {"--batch", "N", "calibration samples per forward (default score.batch)", NULL},
    {"--protect-first", "F", "iterative: keep the first F blocks (default score.protect_first)", NULL},
    {"--protect-last", "B", "iterative: keep the last B blocks (default score.protect_last)", NULL},
    {"--heal-steps", "N", "iterative: retraining steps after each removal (default 0)", NULL},
    {"--heal-data", "FILE", "iterative: training data for healing (as retrain --data)", NULL},
    {"--units", "U", "iterative: block | sublayer (greedy over each block's attention and MLP; one-shot: the scores')",
     "score.units"},
    {NULL, NULL, NULL, NULL},
};

static int run_prune(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_prune;
    dp_err err;
    dp_err_clear(&err);
    dp_pipe p = dp_cli_pipe(app);
    dp_prune_job j;
    dp_prune_job_init(p.cfg, &j); /* the bound flags are in the config */
    const char *sched = dp_cli_get(app, cmd, "--schedule"), *crit = dp_cli_get(app, cmd, "--criterion");
    const char *ratio_s = dp_cli_get(app, cmd, "--ratio"), *remove_s = dp_cli_get(app, cmd, "--remove");
    j.scores = dp_cli_get(app, cmd, "--scores");
    j.out = dp_cli_get(app, cmd, "--out");
    j.calib = dp_cli_get(app, cmd, "--calib"); /* not calib.path: an existing calib.h5 comes first */
    j.heal_data = dp_cli_get(app, cmd, "--heal-data");
    if (crit) j.criterion = crit;
    if (sched) j.schedule = !strcmp(sched, "iterative") ? DP_PRUNE_ITERATIVE : DP_PRUNE_ONE_SHOT;
    int iterative = j.schedule == DP_PRUNE_ITERATIVE, rc = DP_OK;
    if (sched && strcmp(sched, "one-shot") && !iterative)
        rc = dp_err_set(&err, DP_E_USAGE, "--schedule must be one-shot or iterative, got '%s'", sched);
    else if (iterative && j.scores)
        rc = dp_err_set(&err, DP_E_USAGE, "--scores is for one-shot pruning; iterative pruning scores as it goes");
    else if (iterative && crit && strcmp(crit, "ppl"))
        rc = dp_err_set(&err, DP_E_USAGE, "iterative pruning uses the ppl criterion only");
    else if (!ratio_s == !remove_s)
        rc = dp_err_set(&err, DP_E_USAGE, "give exactly one of --ratio R and --remove K");
    else if (!iterative && (dp_cli_get(app, cmd, "--heal-steps") || j.heal_data || j.calib))
        rc = dp_err_set(&err, DP_E_USAGE, "--heal-steps, --heal-data and --calib apply to --schedule iterative");
    if (!rc) rc = dp_cli_flag_i64(app, cmd, "--batch", &j.batch, &err);
    if (!rc) rc = dp_cli_flag_int(app, cmd, "--protect-first", &j.protect_first, &err);
    if (!rc) rc = dp_cli_flag_int(app, cmd, "--protect-last", &j.protect_last, &err);
    if (!rc) rc = dp_cli_flag_i64(app, cmd, "--heal-steps", &j.heal_steps, &err);
    if (!rc) rc = dp_cli_flag_i64(app, cmd, "--remove", &j.remove, &err);
    if (!rc) rc = dp_cli_flag_f64(app, cmd, "--ratio", &j.ratio, &err);
    if (!rc && remove_s && j.remove < 1) rc = dp_err_set(&err, DP_E_USAGE, "--remove must be >= 1");
    if (!rc && ratio_s && !(j.ratio > 0 && j.ratio < 1))
        rc = dp_err_set(&err, DP_E_USAGE, "--ratio expects a number in (0, 1), got '%s'", ratio_s);
    if (!rc) rc = dp_pipe_prune(&p, &j, &err);
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
