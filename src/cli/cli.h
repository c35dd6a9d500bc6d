/* Internal interface between the depthprune command's dispatcher and its
 * subcommands: option parsing shared by all of them and the application
 * state (MPI context, resolved configuration). */
#ifndef DEPTHPRUNE_CLI_H
#define DEPTHPRUNE_CLI_H

#include "depthprune/config.h"
#include "depthprune/core.h"
#include "depthprune/dist.h"
#include "depthprune/engine.h"
#include "depthprune/mc.h"
#include "depthprune/pipeline.h"

#define DP_CLI_MAX_OPTS 32

typedef struct dp_cli_opt {
    const char *name; /* "--model" */
    const char *arg;  /* "DIR"; NULL for a flag */
    const char *help;
    const char *key; /* the config key the option sets (after --config and --set), or NULL; the same
                      * flag name means the same key in every command (tests/cli/test_cli.sh) */
} dp_cli_opt;

typedef struct dp_app {
    dp_mpi mpi;
    dp_config cfg;
    const char *cmd;
    dp_device device; /* the config's device, checked usable before the command runs */
    /* parsed options, parallel to the command's option table */
    const char *opt_values[DP_CLI_MAX_OPTS];
} dp_app;

typedef struct dp_cmd {
    const char *name;
    const char *summary;
    const char *usage;      /* after "depthprune NAME " */
    const dp_cli_opt *opts; /* terminated by {NULL} */
    int uses_config;        /* accepts --config/--set */
    int (*run)(dp_app *app);
    int cpu_only;   /* computes on the CPU reference engine by design (refuses --device cuda) */
    int plans_only; /* reads --device without opening it (plan: a GPU job planned on a login node) */
} dp_cmd;

/* Value of a parsed option (NULL if absent; "1" for a given flag). */
const char *dp_cli_get(const dp_app *app, const dp_cmd *cmd, const char *name);
/* Parses an integer option; errors name the option. */
int dp_cli_opt_int(const dp_app *app, const dp_cmd *cmd, const char *name, long long fallback, long long *out,
                   dp_err *err);
/* Parses a finite floating-point option; errors name the option. */
int dp_cli_opt_double(const dp_app *app, const dp_cmd *cmd, const char *name, double fallback, double *out,
                      dp_err *err);
/* The model directory: --model, else the config's model.path (NULL if neither). */
const char *dp_cli_model_path(const dp_app *app, const dp_cmd *cmd);
/* Reports err on rank 0 and returns the exit code for it. */
int dp_cli_fail(const dp_app *app, const dp_err *err);

/* A flag without a config key given? It overrides *v (the job's value from
 * the config); errors name the flag. */
int dp_cli_flag_i64(const dp_app *app, const dp_cmd *cmd, const char *name, int64_t *v, dp_err *err);
int dp_cli_flag_int(const dp_app *app, const dp_cmd *cmd, const char *name, int *v, dp_err *err);
int dp_cli_flag_f64(const dp_app *app, const dp_cmd *cmd, const char *name, double *v, dp_err *err);
void dp_cli_flag_str(const dp_app *app, const dp_cmd *cmd, const char *name, const char **v);
/* The pipeline's context of this invocation. */
dp_pipe dp_cli_pipe(const dp_app *app);

/* Collective. Prints the plan of the configured job (cmd_plan.c) on rank 0;
 * on the CPU, a stage that cannot fit in this machine's memory per rank is
 * an error (DP_E_RANGE) before any work. */
int dp_cli_plan_check(const dp_app *app, const char *model_dir, dp_err *err);

extern const dp_cmd dp_cmd_config;
extern const dp_cmd dp_cmd_plan;
extern const dp_cmd dp_cmd_generate;
extern const dp_cmd dp_cmd_width_prune;
extern const dp_cmd dp_cmd_bench_generate;
extern const dp_cmd dp_cmd_info;
extern const dp_cmd dp_cmd_tokenize;
extern const dp_cmd dp_cmd_export;
extern const dp_cmd dp_cmd_ppl;
extern const dp_cmd dp_cmd_logits;
extern const dp_cmd dp_cmd_synth;
extern const dp_cmd dp_cmd_score;
extern const dp_cmd dp_cmd_agreement;
extern const dp_cmd dp_cmd_retrain;
extern const dp_cmd dp_cmd_teacher_cache;
extern const dp_cmd dp_cmd_prune;
extern const dp_cmd dp_cmd_sweep;
extern const dp_cmd dp_cmd_eval;
extern const dp_cmd dp_cmd_run;

#endif
