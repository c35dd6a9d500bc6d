/* `depthprune run`: the whole pipeline (pipeline/run.c) as one resumable
 * job on one configuration, after its plan says it fits. */
#include "cli.h"

static const dp_cli_opt k_run_opts[] = {
    {"--model", "DIR", "the dense model (default model.path)", "model.path"},
    {"--run", "DIR", "run directory (default run.dir)", "run.dir"},
    {NULL, NULL, NULL, NULL},
};

static int run_pipeline(dp_app *app) {
    dp_err err;
    dp_err_clear(&err);
    dp_pipe p = dp_cli_pipe(app);
    const char *model = dp_config_str(p.cfg, "model.path"), *run = dp_config_str(p.cfg, "run.dir");
    int rc = DP_OK, stopped = 0;
    /* the plan first: a stage that cannot fit stops the job now, not hours in */
    if (model) rc = dp_mpi_agree(p.mpi, dp_cli_plan_check(app, model, &err), &err);
    if (!rc) rc = dp_pipe_run(&p, model, run, &stopped, &err);
    return rc ? dp_cli_fail(app, &err) : 0;
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
