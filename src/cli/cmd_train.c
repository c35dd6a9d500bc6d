/* `depthprune retrain` and `depthprune teacher-cache`: the retraining
 * stages (pipeline/retrain.c) from flags. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "depthprune/export.h"
#include "depthprune/prune.h"
#include "depthprune/safetensors.h"
#include "depthprune/train.h"

static const dp_cli_opt k_retrain_opts[] = {
    {"--student", "DIR", "the model to retrain (HF directory, e.g. a pruned export)", "model.path"},
    {"--teacher", "DIR", "dense teacher for online KD", "train.teacher"},
    {"--teacher-cache", "FILE", "teacher cache from `depthprune teacher-cache` (instead of --teacher)",
     "train.teacher_cache"},
    {"--data", "FILE", "training data: Alpaca JSON/JSONL, or text", "train.data"},
    {"--data-format", "F", "alpaca | text | jsonl-text (default: alpaca for .json/.jsonl, else text)",
     "train.data_format"},
    {"--method", "M", "lora | full", "train.method"},
    {"--kd-alpha", "A", "KD weight: A * T^2 KL + (1 - A) CE (default 0.5 with a teacher)", "train.kd_alpha"},
    {"--kd-temp", "T", "KD temperature", "train.kd_temp"},
    {"--kd-topk", "K", "online KD on the teacher's top-K tokens (default 0: full vocabulary)", "train.kd_topk"},
    {"--no-kd", NULL, "plain cross-entropy even with a teacher", NULL},
    {"--run", "DIR", "run directory: log, checkpoints, plots (default run.dir)", "run.dir"},
    {"--out", "DIR", "output: merged HF model (+ adapter/ for LoRA); must not exist", "train.out"},
    {"--lr", "X", "peak learning rate", "train.lr"},
    {"--epochs", "N", "epochs", "train.epochs"},
    {"--max-steps", "N", "train for N optimizer steps in total, overriding --epochs (as HF's max_steps)",
     "train.max_steps"},
    {"--pause-after", "N", "checkpoint and stop after N steps in total, writing no output (a rerun continues)",
     "train.pause_after"},
    {"--global-batch", "N", "examples per optimizer step", "train.global_batch"},
    {"--micro-batch", "N", "examples per forward on each rank", "train.micro_batch"},
    {"--cutoff", "N", "max tokens per example", "train.cutoff"},
    {"--val-size", "N", "held-out validation examples", "train.val_size"},
    {"--seed", "S", "seed (default run.seed)", "run.seed"},
    {"--lora-r", "R", "LoRA rank", "lora.r"},
    {"--fault-nan-step", "K", "testing: inject a NaN gradient at iteration K", NULL},
    {"--fault-nan-rank", "R", "testing: the rank that injects it (default 0)", NULL},
    {NULL, NULL, NULL, NULL},
};

static int run_retrain(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_retrain;
    dp_err err;
    dp_err_clear(&err);
    dp_pipe p = dp_cli_pipe(app);
    dp_retrain_job j;
    dp_retrain_job_init(p.cfg, &j); /* the bound flags are in the config */
    j.no_kd = dp_cli_get(app, cmd, "--no-kd") != NULL;
    int rc = dp_cli_flag_i64(app, cmd, "--fault-nan-step", &j.fault_nan_step, &err), stopped = 0;
    if (!rc) rc = dp_cli_flag_i64(app, cmd, "--fault-nan-rank", &j.fault_nan_rank, &err);
    if (!rc) rc = dp_pipe_retrain(&p, &j, &stopped, &err);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_retrain = {
    "retrain",
    "heal a pruned model: data-parallel LoRA or full-parameter training, optional KD from the dense teacher",
    "--student DIR --data FILE [--teacher DIR | --teacher-cache FILE] [--method lora|full] --run RUNDIR --out OUTDIR",
    k_retrain_opts,
    1,
    run_retrain,
    0,
    0};

static const dp_cli_opt k_tc_opts[] = {
    {"--teacher", "DIR", "the dense teacher (HF directory)", "train.teacher"},
    {"--data", "FILE", "training data, as for retrain", "train.data"},
    {"--data-format", "F", "alpaca | text | jsonl-text", "train.data_format"},
    {"--cutoff", "N", "max tokens per example (default 256; must match retrain)", "train.cutoff"},
    {"--topk", "K", "teacher logits kept per token", "train.cache_topk"},
    {"--kd-temp", "T", "temperature of the stored log-sum-exp (default 1; must match retrain)", "train.kd_temp"},
    {"--batch", "N", "examples per forward (default train.micro_batch)", NULL},
    {"--out", "FILE", "the cache (HDF5); default RUNDIR/teacher.h5", NULL},
    {"--run", "DIR", "run directory (default run.dir)", "run.dir"},
    {NULL, NULL, NULL, NULL},
};

static int run_teacher_cache(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_teacher_cache;
    dp_err err;
    dp_err_clear(&err);
    dp_pipe p = dp_cli_pipe(app);
    dp_teacher_job j;
    dp_teacher_job_init(p.cfg, &j); /* the bound flags are in the config */
    const char *out = dp_cli_get(app, cmd, "--out");
    char *path = out ? dp_strdup(out, "path") : dp_path_join(dp_config_str(p.cfg, "run.dir"), "teacher.h5");
    j.out = path;
    int rc = dp_cli_flag_i64(app, cmd, "--batch", &j.batch, &err);
    if (!rc) rc = dp_pipe_teacher_cache(&p, &j, &err);
    dp_free(path);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_teacher_cache = {
    "teacher-cache",
    "run the dense teacher once over the training data and store its top-k logits (HDF5)",
    "--teacher DIR --data FILE [--topk 64 --kd-temp T --cutoff 256] [--out FILE | --run RUNDIR]",
    k_tc_opts,
    1,
    run_teacher_cache,
    0,
    0};
