/* Retraining (healing) of a pruned model: data, the data-parallel trainer,
 * knowledge distillation, HDF5 checkpoints.
 *
 * Data. Alpaca JSON/JSONL (instruction, input, output) with the
 * Alpaca-LoRA template used by LLM-Pruner and Shortened LLaMA, truncated
 * at a cutoff, EOS appended, prompt labels masked unless train_on_inputs;
 * or plain text packed into windows of cutoff tokens. Examples are split
 * once (seeded) into validation and training sets; each epoch visits the
 * training set in a seeded permutation, in global batches (a trailing
 * partial batch is dropped).
 *
 * Objective. Per optimizer step, the mean over the global batch's counted
 * tokens (label >= 0) of (1 - a) CE + a T^2 KL(teacher_T || student_T); the
 * denominator is the global batch's token count, so the gradient does not
 * depend on how the batch is split into ranks and micro-batches.
 *
 * Data parallel. Each rank runs its share of the global batch in
 * micro-batches; each rank owns a contiguous shard of the trainable vector
 * (LoRA A/B or every weight): gradients are reduced to the shard's owner,
 * the owner clips, updates with AdamW (its shard's moments only: ZeRO-1)
 * and broadcasts the shard. Every rank thus holds bitwise-identical weights.
 *
 * Checkpoints (store.h): every ckpt_every steps and on a stop signal
 * (core.h: dp_stop_requested), one file per rank of its shard and moments;
 * a run resumes from the newest one that verifies. */
#ifndef DEPTHPRUNE_TRAIN_H
#define DEPTHPRUNE_TRAIN_H

#include <stdint.h>

#include "depthprune/dist.h"
#include "depthprune/engine.h"
#include "depthprune/llama.h"
#include "depthprune/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- data ---- */
typedef struct dp_train_data {
    int64_t n;       /* examples */
    int64_t *off;    /* (n + 1) token offsets of each example */
    int32_t *tokens; /* (off[n]) */
    int32_t *labels; /* (off[n]) HF labels: the token, or -1 where masked */
    int64_t max_len;
    uint64_t hash; /* of offsets, tokens and labels */
} dp_train_data;

typedef struct dp_data_opts {
    int64_t cutoff;      /* max tokens per example (256) */
    int train_on_inputs; /* 0: prompt labels masked (the papers' default) */
    int add_eos;         /* append EOS when not truncated (1) */
    int add_bos;         /* -1: the tokenizer's post-processor decides; 0/1 force */
    const char *field;   /* plain JSONL: text field (NULL: "text") */
} dp_data_opts;

/* The Alpaca-LoRA prompt (template without the output), into a fresh string. */
char *dp_alpaca_prompt(const char *instruction, const char *input);
/* Loads training data: "alpaca" (a JSON array or JSONL of objects with
 * instruction, input, output) or "text" (plain text, or JSONL with a text
 * field, tokenized and packed into cutoff-token windows). Errors name the
 * record. */
int dp_data_load(const dp_tokenizer *tok, const char *format, const char *text, size_t n_bytes, const dp_data_opts *o,
                 dp_train_data *d, dp_err *err);
void dp_data_free(dp_train_data *d);
/* Seeded split: a permutation of 0..n-1; its first n_val entries are the
 * validation examples, the rest the training examples (fresh arrays). */
void dp_data_split(int64_t n, int64_t n_val, uint64_t seed, int64_t **val, int64_t **train);
/* Seeded permutation of 0..n-1 into perm. */
void dp_permutation(int64_t *perm, int64_t n, uint64_t seed);

/* ---- teacher cache: top-k teacher logits per token, in HDF5 ----
 * RUNDIR/teacher.h5: idx (ntok, K) I32, val (ntok, K) F32 (raw logits),
 * lse (ntok) F32 = logsumexp(logits / T), rows in the data's token order;
 * attributes data_hash, model_hash, topk, temperature. */
/* Collective: ranks split the examples, each writes its rows. */
int dp_teacher_cache_build(const dp_mpi *mpi, dp_device dev, const dp_llama *teacher, uint64_t teacher_hash,
                           const dp_train_data *d, int64_t topk, double temp, int64_t batch, const char *path,
                           int progress, dp_err *err);

/* ---- trainer ---- */
typedef enum dp_train_method { DP_TRAIN_LORA = 0, DP_TRAIN_FULL = 1 } dp_train_method;
typedef enum dp_lr_schedule { DP_SCHED_COSINE = 0, DP_SCHED_LINEAR = 1, DP_SCHED_CONSTANT = 2 } dp_lr_schedule;

typedef struct dp_train_opts {
    dp_train_method method;
    int64_t lora_rank;
    double lora_alpha, lora_dropout;
    unsigned lora_targets;
    double lr, min_lr_ratio, beta1, beta2, eps, weight_decay, clip;
    int64_t warmup;
    dp_lr_schedule sched;
    int64_t global_batch, micro_batch, epochs;
    int64_t max_steps;   /* the run's length in optimizer steps, overriding epochs (HF's max_steps); 0: epochs */
    int64_t pause_after; /* checkpoint and stop (no output) after this many steps in total; resume continues; 0: none */
    double kd_alpha, kd_temp;
    int64_t kd_topk;           /* online teacher: 0 = full-vocabulary KL, K > 0 = top-K support */
    const char *teacher_cache; /* path of a teacher cache (instead of an online teacher) */
    uint64_t seed;
    int64_t log_every, val_every, ckpt_every, keep_ckpt, max_skips;
    const char *run_dir;
    uint64_t model_hash, teacher_hash;
    int progress;
    dp_device device; /* the engine's device (online KD over the full vocabulary: CPU only) */
    /* tests only */
    int64_t fault_nan_step;
    int fault_nan_rank; /* rank that injects a NaN gradient at iteration fault_nan_step (-1: none) */
} dp_train_opts;

/* Fills o with the papers' defaults (LoRA r 8, alpha 16, dropout 0.05, all
 * seven targets; lr 1e-4, warmup 100, cosine; batch 64, micro 4, 2 epochs;
 * no KD). */
void dp_train_opts_default(dp_train_opts *o);
/* Hash of everything in o that changes the trained weights. */
uint64_t dp_train_opts_hash(const dp_train_opts *o, uint64_t data_hash);

typedef struct dp_train_result {
    int64_t steps;   /* iterations done in total (including resumed ones) */
    int64_t skipped; /* non-finite steps skipped */
    int stopped;     /* 1: stopped early by a signal or max_steps (checkpoint written) */
    double last_loss, val_loss;
} dp_train_result;

/* Collective. Trains student (method LORA: adapters in *lora, allocated
 * here; FULL: student's weights in place) on the given examples, resuming
 * from RUNDIR/ckpt when a usable checkpoint exists. teacher: the dense
 * model for online KD (NULL with a teacher cache or without KD). Returns
 * DP_E_NONFINITE when too many consecutive steps were non-finite. */
int dp_train(const dp_mpi *mpi, dp_llama *student, const dp_layer_map *map, const dp_llama *teacher,
             const dp_train_data *d, const int64_t *train_idx, int64_t n_train, const int64_t *val_idx, int64_t n_val,
             const dp_train_opts *o, dp_lora *lora, dp_train_result *res, dp_err *err);

/* W += (alpha / r) B A for every adapter (merging LoRA into the base); m holds fp32 weights. */
void dp_lora_merge(dp_llama *m, const dp_lora *l);
/* The same for one adapted tensor: w (OUT, IN) fp32 of block `block`, kind k. */
void dp_lora_merge_tensor(const dp_lora *l, int block, int k, float *w, int64_t OUT, int64_t IN);
/* A PEFT adapter directory (adapter_config.json, adapter_model.safetensors);
 * layer names use the kept blocks' new indices 0..map->n-1. */
int dp_lora_save_peft(const char *dir, const dp_lora *l, const dp_llama *m, const dp_layer_map *map,
                      const char *base_model, double dropout, dp_err *err);

#ifdef __cplusplus
}
#endif
#endif
