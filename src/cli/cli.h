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
/* The model directory: --model, else the config's model.path (NULL if neither). */
/* Parses a finite floating-point option; errors name the option. */
int dp_cli_opt_double(const dp_app *app, const dp_cmd *cmd, const char *name, double fallback, double *out,
                      dp_err *err);
const char *dp_cli_model_path(const dp_app *app, const dp_cmd *cmd);
/* Reports err on rank 0 and returns the exit code for it. */
int dp_cli_fail(const dp_app *app, const dp_err *err);

struct dp_llama;
/* Collective. Draws the calibration set from text (rank 0, broadcast) and
 * runs or reuses the dense calibration forward into RUNDIR/calib.h5. */
int dp_cli_calibrate(const dp_app *app, const char *model_dir, const struct dp_llama *m, uint64_t model_hash,
                     const char *calib, const char *field, int64_t N, int64_t T, uint64_t seed, int64_t batch,
                     const char *run, dp_err *err);

/* Collective. Prints the plan of the configured job (cmd_plan.c) on rank 0;
 * on the CPU, a stage that cannot fit in this machine's memory per rank is
 * an error (DP_E_RANGE) before any work. */
int dp_cli_plan_check(const dp_app *app, const char *model_dir, dp_err *err);

/* score.stream_weights as 1 (on), 0 (off) or -1 (auto) */
int dp_cli_stream_weights(const dp_app *app);

struct dp_train_data;
struct dp_train_opts;
/* Training data and options from the config alone (train.*, lora.*), as
 * `retrain` reads them; for healing inside other commands. Collective. */
int dp_cli_train_setup(const dp_app *app, const char *tok_dir, const char *data_path, struct dp_train_data *d,
                       struct dp_train_opts *o, dp_err *err);

struct dp_ppl_opts;
/* Collective. The text's perplexity windows on every rank (rank 0 reads and
 * tokenizes with the model directory's tokenizer, then broadcasts). */
int dp_cli_ppl_windows(const dp_app *app, const char *model_dir, const char *text, const struct dp_ppl_opts *o,
                       int32_t **win, int64_t *n_win, dp_err *err);

/* The removal order (unprotected blocks, least important first) of
 * criterion crit in a scores.json, checked against the model hash (hex)
 * and block count; *file_hash: a hash of the file's bytes. */
int dp_cli_read_order(const char *path, const char *crit, const char *want_hash, int L, int **order, int *n_order,
                      uint64_t *file_hash, dp_err *err);

/* Zero-shot tasks loaded for evaluation (shared by eval and sweep). */
#define DP_CLI_MAX_TASKS 16
typedef struct dp_cli_tasks {
    int n;
    char *name[DP_CLI_MAX_TASKS], *kind[DP_CLI_MAX_TASKS], *path[DP_CLI_MAX_TASKS];
    uint64_t hash[DP_CLI_MAX_TASKS];
    dp_mc_doc *docs[DP_CLI_MAX_TASKS];
    int64_t n_docs[DP_CLI_MAX_TASKS], skipped[DP_CLI_MAX_TASKS], truncated[DP_CLI_MAX_TASKS];
    int64_t *first[DP_CLI_MAX_TASKS]; /* a doc's first request */
    dp_mc_metrics metrics[DP_CLI_MAX_TASKS];
    dp_mc_req *req; /* every task's requests */
    int64_t n_req;
} dp_cli_tasks;
/* Parses "NAME=FILE,..." (NAME a known task, else a generic task), the
 * first `limit` documents of each (0: all), tokenized with tok_dir's
 * tokenizer for a window of max_len. Malformed lines: an error naming the
 * line, or (skip_bad) skipped and counted. */
int dp_cli_tasks_load(const dp_app *app, const char *tok_dir, const char *spec, int64_t limit, int skip_bad,
                      int64_t max_len, dp_cli_tasks *t, dp_err *err);
/* Collective: log-likelihoods and metrics of every task. */
int dp_cli_tasks_run(const dp_mpi *mpi, dp_device dev, const struct dp_llama *m, const dp_layer_map *map,
                     dp_cli_tasks *t, int64_t batch, dp_err *err);
/* Mean over tasks of the metric each paper reports. */
double dp_cli_tasks_average(const dp_cli_tasks *t);
void dp_cli_tasks_free(dp_cli_tasks *t);

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
extern const dp_cmd dp_cmd_retrain;
extern const dp_cmd dp_cmd_teacher_cache;
extern const dp_cmd dp_cmd_prune;
extern const dp_cmd dp_cmd_sweep;
extern const dp_cmd dp_cmd_eval;
extern const dp_cmd dp_cmd_run;

#endif
