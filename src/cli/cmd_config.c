/* `depthprune config`: prints the resolved configuration (defaults, then
 * the YAML file, then --set overrides) with the origin of every value, so
 * a user sees exactly what a run would use. */
#include "cli.h"

static const dp_cli_opt k_opts[] = {{NULL, NULL, NULL, NULL}};

static int run(dp_app *app) {
    if (app->mpi.rank == 0) dp_config_dump(&app->cfg, stdout);
    return 0;
}

const dp_cmd dp_cmd_config = {
    "config",
    "print the resolved run configuration (defaults < --config FILE < --set)",
    "[--config FILE] [--set KEY=VALUE ...]",
    k_opts,
    1,
    run,
    0,
    0,
};
