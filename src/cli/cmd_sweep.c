/* `depthprune sweep`: the ablation grid (pipeline/sweep.c) from flags. */
#include "cli.h"

static const dp_cli_opt k_sweep_opts[] = {
    {"--model", "DIR", "the dense HF model directory (default model.path)", "model.path"},
    {"--run", "DIR", "sweep directory (default run.dir)", "run.dir"},
    {"--only", "NAME", "run only this configuration (comma-separated names allowed)", NULL},
    {"--list", NULL, "print the configurations and their group assignment, run nothing", NULL},
    {"--prepare", NULL, "job arrays: compute the shared inputs and write RUNDIR/cells.txt, run no configuration", NULL},
    {"--cell", "I", "job arrays: run only configuration I of the grid (0-based; no speed phase, no table)", NULL},
    {"--fault-kill-after", "N", "testing: world rank 1 SIGKILLs itself after finishing N configurations", NULL},
    {NULL, NULL, NULL, NULL},
};

static int run_sweep(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_sweep;
    dp_err err;
    dp_err_clear(&err);
    dp_pipe p = dp_cli_pipe(app);
    dp_sweep_job j = {.model = dp_config_str(p.cfg, "model.path"),
                      .run = dp_config_str(p.cfg, "run.dir"),
                      .only = dp_cli_get(app, cmd, "--only"),
                      .list = dp_cli_get(app, cmd, "--list") != NULL,
                      .prepare = dp_cli_get(app, cmd, "--prepare") != NULL,
                      .cell = -1};
    int stopped = 0, rc = dp_cli_flag_i64(app, cmd, "--fault-kill-after", &j.kill_after, &err);
    if (!rc) rc = dp_cli_flag_int(app, cmd, "--cell", &j.cell, &err);
    if (!rc && dp_cli_get(app, cmd, "--cell") && j.cell < 0) rc = dp_err_set(&err, DP_E_USAGE, "--cell must be >= 0");
    if (!rc && j.prepare && (dp_cli_get(app, cmd, "--cell") || j.only))
        rc = dp_err_set(&err, DP_E_USAGE, "--prepare computes the shared inputs of the whole grid (no --cell/--only)");
    if (!rc) rc = dp_pipe_sweep(&p, &j, &stopped, &err);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_sweep = {
    "sweep",
    "the ablation grid (criterion x ratio x schedule x retraining x KD x seed) over MPI rank groups",
    "--config configs/sweep-*.yaml [--run DIR] [--only NAME] [--list]",
    k_sweep_opts,
    1,
    run_sweep,
    0,
    0};
