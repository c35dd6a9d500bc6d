/* Internal interface between the depthprune command's dispatcher and its
 * subcommands: option parsing shared by all of them and the application
 * state (MPI context, resolved configuration). */
#ifndef DEPTHPRUNE_CLI_H
#define DEPTHPRUNE_CLI_H

#include "depthprune/config.h"
#include "depthprune/core.h"
#include "depthprune/dist.h"

#define DP_CLI_MAX_OPTS 32

typedef struct dp_cli_opt {
    const char *name;  /* "--model" */
    const char *arg;   /* "DIR"; NULL for a flag */
    const char *help;
} dp_cli_opt;

typedef struct dp_app {
    dp_mpi mpi;
    dp_config cfg;
    const char *cmd;
    /* parsed options, parallel to the command's option table */
    const char *opt_values[DP_CLI_MAX_OPTS];
} dp_app;

typedef struct dp_cmd {
    const char *name;
    const char *summary;
    const char *usage;          /* after "depthprune NAME " */
    const dp_cli_opt *opts;     /* terminated by {NULL} */
    int uses_config;            /* accepts --config/--set */
    int (*run)(dp_app *app);
} dp_cmd;

/* Value of a parsed option (NULL if absent; "1" for a given flag). */
const char *dp_cli_get(const dp_app *app, const dp_cmd *cmd, const char *name);
/* Parses an integer option; errors name the option. */
int dp_cli_opt_int(const dp_app *app, const dp_cmd *cmd, const char *name, long long fallback,
                   long long *out, dp_err *err);
/* The model directory: --model, else the config's model.path (NULL if neither). */
const char *dp_cli_model_path(const dp_app *app, const dp_cmd *cmd);
/* Reports err on rank 0 and returns the exit code for it. */
int dp_cli_fail(const dp_app *app, const dp_err *err);

struct dp_llama;
/* Collective. Draws the calibration set from text (rank 0, broadcast) and
 * runs or reuses the dense calibration forward into RUNDIR/calib.h5. */
int dp_cli_calibrate(const dp_app *app, const char *model_dir, const struct dp_llama *m, uint64_t model_hash,
                     const char *calib, const char *field, int64_t N, int64_t T, uint64_t seed, int64_t batch,
                     const char *run, dp_err *err);

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

extern const dp_cmd dp_cmd_config;
extern const dp_cmd dp_cmd_info;
extern const dp_cmd dp_cmd_tokenize;
extern const dp_cmd dp_cmd_export;
extern const dp_cmd dp_cmd_ppl;
extern const dp_cmd dp_cmd_synth;
extern const dp_cmd dp_cmd_score;
extern const dp_cmd dp_cmd_retrain;
extern const dp_cmd dp_cmd_teacher_cache;
extern const dp_cmd dp_cmd_prune;
extern const dp_cmd dp_cmd_sweep;

#endif
