/* Autoregressive generation with a KV cache (CPU backend): prefill the
 * prompts in one batched forward, then one token per step for the whole
 * batch; greedy or sampled (temperature, top-k, top-p, in HF's order).
 * Dense, depth-pruned through a layer map, or an exported pruned model. */
#ifndef DEPTHPRUNE_GENERATE_H
#define DEPTHPRUNE_GENERATE_H

#include "depthprune/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dp_gen_opts {
    int64_t max_new;    /* tokens generated per sequence */
    double temperature; /* 0: greedy (argmax, first on ties) */
    int64_t top_k;      /* 0: off */
    double top_p;       /* 1: off */
    uint64_t seed;      /* sampling seed */
    int32_t eos_id;     /* stop a sequence at EOS (-1: forced length, the benchmark protocol) */
} dp_gen_opts;

typedef struct dp_gen_stats {
    double prefill_s, decode_s; /* wall time of the prompt forward and of the decode steps */
    int64_t steps;              /* decode steps run */
    size_t cache_bytes, scratch_bytes;
} dp_gen_stats;

/* A generation state for batches up to B sequences of up to T positions
 * (prompt + new tokens): the KV cache of every mapped block and the scratch
 * of a prefill of B x P tokens, one planned allocation. */
typedef struct dp_gen {
    const dp_llama *m;
    const dp_layer_map *map;
    int64_t B, T, P; /* capacity: sequences, positions, prompt tokens */
    float *mem;
    float *kc, *vc;     /* (n_blocks, B, NKV, T, HD) */
    float *cosb, *sinb; /* (T, HD/2) */
    float *x, *ln, *q, *k, *v, *ao, *h, *gate, *up, *att, *logits;
    size_t bytes;
    dp_llama_wcache wc; /* a stored-dtype model's current block in fp32 */
} dp_gen;

size_t dp_gen_bytes(const dp_llama *m, const dp_layer_map *map, int64_t B, int64_t P, int64_t T);
int dp_gen_init(dp_gen *g, const dp_llama *m, const dp_layer_map *map, int64_t B, int64_t P, int64_t T, dp_err *err);
void dp_gen_free(dp_gen *g);

/* Generates o->max_new tokens after each of B prompts of P tokens
 * (prompts: B x P, row-major) into out (B x max_new; after an EOS the row
 * is padded with the EOS id). logits (B x max_new x V) receives the
 * distribution each token was drawn from (before temperature), if not NULL. */
int dp_generate(dp_gen *g, const int32_t *prompts, int64_t B, int64_t P, const dp_gen_opts *o, int32_t *out,
                float *logits, dp_gen_stats *st, dp_err *err);

/* The per-step choice shared by the CPU and GPU generators: per-sequence
 * sampling states from the seed, the last tokens, which rows ended. */
typedef struct dp_gen_picker {
    float *scratch; /* 3 V floats for dp_sample */
    uint64_t *rng;  /* (B) */
    int32_t *cur;   /* (B) the tokens just chosen: the next step's input */
    char *done;     /* (B) the row produced its EOS */
    int64_t B, V, live;
} dp_gen_picker;
void dp_gen_picker_init(dp_gen_picker *p, int64_t B, int64_t V, uint64_t seed);
void dp_gen_picker_free(dp_gen_picker *p);
/* One step for B sequences from their logits (B, V): samples (or EOS after a
 * sequence's EOS), records out/cur (and logits), pads finished rows with EOS
 * when none is live; returns the live count. */
int64_t dp_gen_pick(dp_gen_picker *p, const float *step_logits, int64_t step, const dp_gen_opts *o, int32_t *out,
                    float *logits);

/* Draws one token from logits (V) per o (greedy when temperature == 0);
 * scratch holds 3*V floats. */
int32_t dp_sample(const float *logits, int64_t V, const dp_gen_opts *o, uint64_t *rng, float *scratch);

#ifdef __cplusplus
}
#endif
#endif
