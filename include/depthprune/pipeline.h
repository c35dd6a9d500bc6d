/* The pipeline layer: every stage of the method as a function over a
 * resolved configuration (file, --set and bound flags applied), called the
 * same way by its own command, by `run` (the whole method) and by `sweep`
 * (the ablation grid). A stage's job names its inputs and outputs; the
 * numbers it does not name come from the configuration, whose schema is the
 * one source of defaults (dp_X_job_init fills a job from it).
 *
 * Every function here is collective over p->mpi; errors agree across ranks
 * (one message, rank 0 prints it); rank 0 writes the outputs, each published
 * atomically (a directory or file renamed into place), so a stage whose
 * output exists is complete. Results are reported on stdout by rank 0. */
#ifndef DEPTHPRUNE_PIPELINE_H
#define DEPTHPRUNE_PIPELINE_H

#include "depthprune/config.h"
#include "depthprune/core.h"
#include "depthprune/dist.h"
#include "depthprune/eval.h"
#include "depthprune/llama.h"
#include "depthprune/mc.h"
#include "depthprune/prune.h"
#include "depthprune/tensor.h"
#include "depthprune/train.h"

typedef struct dp_pipe {
    const dp_mpi *mpi;
    const dp_config *cfg; /* resolved and schema-checked */
    dp_device device;     /* checked usable */
} dp_pipe;

/* Loads a model whose weights the stage does not change: dp_llama_load_stored on the CPU
 * with model.weights = stored (the default), else dp_llama_load. */
int dp_pipe_load_frozen(const dp_pipe *p, const char *dir, dp_llama *m, dp_err *err);

/* ---- score: calibration + block importance -> RUNDIR/scores.json ---- */
typedef struct dp_score_job {
    const char *model, *calib, *field, *run;
    const char *criteria; /* "ppl,taylor+" */
    int64_t samples, seq_len, batch, bootstrap;
    uint64_t seed;
    int protect_first, protect_last;
    double ratio;               /* bootstrap's fraction removed */
    int units;                  /* 0: blocks, 1: sub-layers (score.units) */
    int fault_kill_after_round; /* testing (0: off) */
} dp_score_job;
void dp_score_job_init(const dp_config *cfg, dp_score_job *j);
/* DP_E_STOPPED: a signal stopped it; finished candidates are kept. */
int dp_pipe_score(const dp_pipe *p, const dp_score_job *j, dp_err *err);

/* Agreement between rankings from several scores.json files (comma list; the same model and
 * units: other calibration sets, seeds or criteria): Kendall's tau-b of every pair's scores and
 * the overlap of the top_k units each removes first (0: the files' top_k, else 20%), for the
 * criteria listed (NULL: all), printed as Markdown and written to out_md (NULL: not written).
 * Not collective. */
int dp_pipe_agreement(const char *files, const char *criteria, int top_k, const char *out_md, dp_err *err);

/* ---- prune: remove K blocks, export the shorter model (OUT/prune.json) ---- */
typedef struct dp_prune_job {
    const char *model, *out;
    dp_prune_schedule schedule; /* DP_PRUNE_ONE_SHOT or DP_PRUNE_ITERATIVE */
    const char *scores;         /* one-shot: scores.json */
    const char *criterion;      /* one-shot: which criterion of it */
    const char *run;            /* iterative: directory with (or for) calib.h5 */
    const char *calib;          /* iterative: calibration text when RUNDIR has no calib.h5 */
    const char *heal_data;      /* iterative: healing data (heal_steps > 0) */
    double ratio;               /* remove round(ratio x L) blocks ... */
    int64_t remove;             /* ... or exactly this many (> 0 wins) */
    int64_t samples, seq_len, batch, heal_steps;
    uint64_t seed;
    int protect_first, protect_last;
    int units; /* iterative: 1 = greedy over sub-layers (score.units); one-shot takes the scores' units */
} dp_prune_job;
void dp_prune_job_init(const dp_config *cfg, dp_prune_job *j);
int dp_pipe_prune(const dp_pipe *p, const dp_prune_job *j, dp_err *err);

/* ---- teacher cache: the dense teacher's top-k logits over the training set ---- */
typedef struct dp_teacher_job {
    const char *teacher, *data, *data_format, *out;
    int64_t topk, batch;
} dp_teacher_job;
void dp_teacher_job_init(const dp_config *cfg, dp_teacher_job *j); /* out: RUNDIR/teacher.h5 is the caller's */
int dp_pipe_teacher_cache(const dp_pipe *p, const dp_teacher_job *j, dp_err *err);

/* ---- retrain: LoRA or full, KD online or from a cache -> OUT (merged HF model) ---- */
typedef struct dp_retrain_job {
    const char *student, *teacher, *teacher_cache, *data, *data_format, *run, *out;
    int no_kd;
    int64_t fault_nan_step, fault_nan_rank; /* testing: -1 off */
} dp_retrain_job;
void dp_retrain_job_init(const dp_config *cfg, dp_retrain_job *j);
/* *stopped: paused (pause_after) or stopped by a signal, with a checkpoint. */
int dp_pipe_retrain(const dp_pipe *p, const dp_retrain_job *j, int *stopped, dp_err *err);

/* ---- eval: perplexity sets and zero-shot tasks -> RESULTS.json ---- */
typedef struct dp_eval_job {
    const char *model, *out;
    const char *ppl;                  /* "NAME=FILE,..." or NULL */
    const char *tasks;                /* "NAME=FILE,..." or NULL */
    const char *drop;                 /* blocks removed through the layer map, or NULL */
    const char *drop_attn, *drop_mlp; /* sub-layers skipped through the layer map, or NULL */
    const char *dump_requests;
    int64_t limit, batch;
    int skip_bad;
} dp_eval_job;
void dp_eval_job_init(const dp_config *cfg, dp_eval_job *j);
int dp_pipe_eval(const dp_pipe *p, const dp_eval_job *j, dp_err *err);

/* ---- width-prune: the LLM-Pruner baseline -> OUT (narrower HF model, OUT/width.json) ---- */
typedef struct dp_width_job {
    const char *model, *out;
    const char *calib;     /* calibration text (the Taylor criteria) */
    const char *criterion; /* param_first, param_second, param_mix, l1, l2, random */
    /* how much: match_model's parameter count, else match_params, else ratio in [0, 1) */
    const char *match_model;
    int64_t match_params;
    double ratio;
    int64_t samples, seq_len;
    uint64_t seed;
    int protect_first, protect_last;
} dp_width_job;
void dp_width_job_init(const dp_config *cfg, dp_width_job *j);
int dp_pipe_width_prune(const dp_pipe *p, const dp_width_job *j, dp_err *err);

/* ---- run: score -> prune -> teacher cache -> retrain -> eval -> summary.md ----
 * Resumable: a stage whose output exists is skipped. A signal stops it at
 * the next stage boundary (inside retraining: the next step), *stopped = 1. */
int dp_pipe_run(const dp_pipe *p, const char *model, const char *run, int *stopped, dp_err *err);
/* RUNDIR/summary.md from the stage outputs (rank 0). */
int dp_pipe_summary(const char *run, int retrained, dp_err *err);

/* ---- sweep: the ablation grid over rank groups -> RUNDIR/sweep.{json,md,csv} ---- */
typedef struct dp_sweep_job {
    const char *model, *run;
    const char *only;   /* comma-separated configuration names, or NULL for all */
    int list;           /* print the configurations, run nothing */
    int prepare;        /* job arrays: the shared inputs only, and RUN/cells.txt (a configuration per line) */
    int cell;           /* job arrays: only the configuration at this grid index (-1: all); no speed, no table */
    int64_t kill_after; /* testing: world rank 1 SIGKILLs itself after N configurations */
} dp_sweep_job;
int dp_pipe_sweep(const dp_pipe *p, const dp_sweep_job *j, int *stopped, dp_err *err);

/* ---- the inputs stages share ---- */

/* Draws the calibration set (co: samples, seq_len, seed, field) from the
 * text file (rank 0, tokenized with dir's tokenizer under tokenizer.add_bos;
 * then broadcast); co->bos_id is set. */
int dp_pipe_calib_sample(const dp_pipe *p, const char *dir, const char *calib, dp_calib_opts *co, int32_t **ids,
                         int64_t **src, dp_err *err);
/* Draws the calibration set from text (rank 0, broadcast) and runs or
 * reuses the dense calibration forward into RUNDIR/calib.h5. */
int dp_pipe_calibrate(const dp_pipe *p, const char *model_dir, const dp_llama *m, uint64_t model_hash,
                      const char *calib, const char *field, int64_t N, int64_t T, uint64_t seed, int64_t batch,
                      const char *run, dp_err *err);
/* score.stream_weights as 1 (on), 0 (off) or -1 (auto) */
int dp_pipe_stream_weights(const dp_pipe *p);
/* Training data and options from the config (train.*, lora.*), as retrain
 * reads them; for healing and sweeps. */
int dp_pipe_train_setup(const dp_pipe *p, const char *tok_dir, const char *data_path, dp_train_data *d,
                        dp_train_opts *o, dp_err *err);
/* The text's perplexity windows on every rank (rank 0 reads and tokenizes
 * with the model directory's tokenizer, then broadcasts). */
int dp_pipe_ppl_windows(const dp_pipe *p, const char *model_dir, const char *text, const dp_ppl_opts *o, int32_t **win,
                        int64_t *n_win, dp_err *err);
/* The removal order (unprotected units, least important first) of criterion crit in a
 * scores.json, checked against the model hash (hex) and block count; *units: 0 for block
 * scores, 1 for sub-layer scores (unit 2l: block l's attention, 2l + 1: its MLP; with
 * units NULL, sub-layer scores are an error); *file_hash: a hash of the file's bytes.
 * Not collective. */
int dp_pipe_read_order(const char *path, const char *crit, const char *want_hash, int L, int *units, int **order,
                       int *n_order, uint64_t *file_hash, dp_err *err);

/* The model's layer map (dp_layer_map_model) with the blocks of `drop` removed and the
 * attention / MLP sub-layers of `drop_attn` / `drop_mlp` skipped (comma lists of block
 * indices, each may be NULL); errors name the flag. */
int dp_pipe_layer_map(const dp_llama_config *c, const char *drop, const char *drop_attn, const char *drop_mlp,
                      dp_layer_map *map, dp_err *err);

/* Zero-shot tasks loaded for evaluation (eval and sweep). */
#define DP_PIPE_MAX_TASKS 16
typedef struct dp_tasks {
    int n;
    char *name[DP_PIPE_MAX_TASKS], *kind[DP_PIPE_MAX_TASKS], *path[DP_PIPE_MAX_TASKS];
    uint64_t hash[DP_PIPE_MAX_TASKS];
    dp_mc_doc *docs[DP_PIPE_MAX_TASKS];
    int64_t n_docs[DP_PIPE_MAX_TASKS], skipped[DP_PIPE_MAX_TASKS], truncated[DP_PIPE_MAX_TASKS];
    int64_t *first[DP_PIPE_MAX_TASKS]; /* a doc's first request */
    dp_mc_metrics metrics[DP_PIPE_MAX_TASKS];
    dp_mc_req *req; /* every task's requests */
    int64_t n_req;
} dp_tasks;
/* Parses "NAME=FILE,..." (NAME a known task, else a generic task), the
 * first `limit` documents of each (0: all), tokenized with tok_dir's
 * tokenizer for a window of max_len. Malformed lines: an error naming the
 * line, or (skip_bad) skipped and counted. Not collective. */
int dp_tasks_load(const dp_pipe *p, const char *tok_dir, const char *spec, int64_t limit, int skip_bad, int64_t max_len,
                  dp_tasks *t, dp_err *err);
/* Collective over mpi: log-likelihoods and metrics of every task. */
int dp_tasks_run(const dp_mpi *mpi, dp_device dev, const dp_llama *m, const dp_layer_map *map, dp_tasks *t,
                 int64_t batch, dp_err *err);
/* Mean over tasks of the metric each paper reports. */
double dp_tasks_average(const dp_tasks *t);
void dp_tasks_free(dp_tasks *t);

#endif
