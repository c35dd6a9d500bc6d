/* The LLaMA model on the CPU reference backend: fp32 weights in one flat
 * allocation, a layer map saying which blocks run, LoRA adapters, and a run
 * state whose activation memory is planned once per batch shape.
 *
 * Computes what transformers' LlamaForCausalLM computes (RMSNorm, rotate-half
 * RoPE with default/linear/llama3 frequencies, causal GQA attention, SwiGLU,
 * tied or untied head). A pruned model is the dense weights plus a layer map:
 * running without some blocks never copies weights.
 *
 * Flat layouts: weights, gradients and optimizer moments share one layout
 * (dp_llama_view points into any buffer of dp_llama.n_elems floats), so an
 * optimizer step or a gradient all-reduce is one loop or one call. */
#ifndef DEPTHPRUNE_LLAMA_H
#define DEPTHPRUNE_LLAMA_H

#include <stdint.h>

#include "depthprune/core.h"
#include "depthprune/hfconfig.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Index of a block tensor, in dp_llama_block_suffix order. */
enum {
    DP_BT_ATTN_NORM = 0, /* (C) */
    DP_BT_Q,             /* (NH*HD, C) */
    DP_BT_K,             /* (NKV*HD, C) */
    DP_BT_V,             /* (NKV*HD, C) */
    DP_BT_O,             /* (C, NH*HD) */
    DP_BT_MLP_NORM,      /* (C) */
    DP_BT_GATE,          /* (F, C) */
    DP_BT_UP,            /* (F, C) */
    DP_BT_DOWN,          /* (C, F) */
};

/* Pointers into one flat buffer of the model's layout. */
typedef struct dp_llama_view {
    float *embed; /* (V, C) */
    float *norm;  /* (C) */
    float *head;  /* (V, C); == embed when tie_word_embeddings */
    float *blk[DP_MAX_LAYERS][DP_LLAMA_BLOCK_TENSORS];
} dp_llama_view;

/* One tensor of the flat layout. */
typedef struct dp_llama_param {
    char name[96]; /* the HF tensor name */
    int64_t offset, n_elems;
    int64_t rows, cols; /* cols == 0 for vectors */
    int block;          /* dense block index, -1 outside blocks */
    int kind;           /* DP_BT_* for block tensors, -1 otherwise */
} dp_llama_param;

typedef struct dp_llama {
    dp_llama_config cfg;
    int n_params;
    dp_llama_param *params; /* embed, blocks 0..L-1 (9 each), norm, [lm_head] */
    int64_t n_elems;        /* floats in the flat layout */
    float *mem;             /* (n_elems) the weights; NULL for a stored-dtype model */
    dp_llama_view w;        /* blk[][] NULL for a stored-dtype model (see dp_llama_block_weights) */
    float *inv_freq;        /* (HD/2) RoPE frequencies after scaling, fp32 as in HF */
    /* A stored-dtype model (dp_llama_load_stored): block tensors stay in the mapped
     * checkpoint in their stored dtype (src, src_dtype by parameter index), the embedding,
     * final norm and head are upcast into outer (w.embed/norm/head point there). */
    void *store; /* the open dp_st_model */
    const void **src;
    int *src_dtype;
    float *outer;
} dp_llama;

/* Loads an HF model directory: config, checkpoint (checked against the
 * config), weights upcast to fp32. */
int dp_llama_load(const char *dir, dp_llama *m, dp_err *err);
/* The same for frozen weights (inference, scoring, a teacher): the block tensors stay as
 * stored in the memory-mapped safetensors files (ranks on a node share those pages) and
 * each block is upcast when it runs (dp_llama_block_weights), so fp32 results are
 * bit-identical to dp_llama_load's. The files must stay in place while m lives. */
int dp_llama_load_stored(const char *dir, dp_llama *m, dp_err *err);
/* A 64-bit content hash of the config and the fp32 weights (the same for both kinds of model). */
uint64_t dp_llama_hash(const dp_llama *m);
/* fp32 values of the flat layout's elements [offset, offset + n), from either kind of model. */
void dp_llama_read_f32(const dp_llama *m, int64_t offset, int64_t n, float *dst);

/* One block's fp32 weights: a stored-dtype model's block upcast into mem (grown as
 * needed), kept while the same block of the same model is asked for again. */
typedef struct dp_llama_wcache {
    const dp_llama *m;
    int layer;
    int64_t cap, loads; /* loads: blocks upcast so far */
    float *mem;
    float *blk[DP_LLAMA_BLOCK_TENSORS];
} dp_llama_wcache;
/* Block l's tensors (DP_BT_* order): m->w.blk[l] for an fp32 model, else c's copy. */
float *const *dp_llama_block_weights(const dp_llama *m, int l, dp_llama_wcache *c);
void dp_llama_wcache_free(dp_llama_wcache *c);
/* The first element and the element count of block l in the flat layout. */
int64_t dp_llama_block_first(const dp_llama *m, int l);
int64_t dp_llama_block_elems(const dp_llama *m, int l);
/* Block l's tensor of kind k (DP_BT_*). */
const dp_llama_param *dp_llama_block_param(const dp_llama *m, int l, int k);
/* Sets up the layout for cfg (taken over by m, as is its json_text) with
 * zeroed weights; for tests and synthetic models. */
int dp_llama_init(dp_llama *m, dp_llama_config *cfg, dp_err *err);
void dp_llama_free(dp_llama *m);
/* A deep copy (weights included); of a stored-dtype model, an fp32 model. */
void dp_llama_clone(dp_llama *dst, const dp_llama *src);
/* Points v into base, a buffer of m->n_elems floats in m's layout. */
void dp_llama_view_of(const dp_llama *m, float *base, dp_llama_view *v);

/* ---- layer map: the dense indices of the blocks that run, ascending ---- */
typedef struct dp_layer_map {
    int n;
    int layer[DP_MAX_LAYERS];
    unsigned char skip[DP_MAX_LAYERS]; /* by block index (not map position): DP_SKIP_ATTN | DP_SKIP_MLP */
} dp_layer_map;

/* Every block, nothing skipped. */
void dp_layer_map_all(dp_layer_map *map, int n_layers);
/* Removes blocks; errors on indices out of range or duplicates. */
int dp_layer_map_drop(dp_layer_map *map, int n_layers, const int64_t *drop, int64_t n_drop, dp_err *err);
/* Skips a sub-layer (what: DP_SKIP_ATTN or DP_SKIP_MLP) of the listed blocks; errors on
 * indices out of range or duplicates. A block whose attention and MLP are both skipped
 * is the identity (use dp_layer_map_drop to remove it). */
int dp_layer_map_skip(dp_layer_map *map, int n_layers, const int64_t *blocks, int64_t n, int what, dp_err *err);
/* The model's own map: every block, with the sub-layers its config.json says are skipped
 * (depthprune.skip_attn / skip_mlp, written by a sub-layer-pruned export). */
void dp_layer_map_model(dp_layer_map *map, const dp_llama_config *c);

/* ---- LoRA adapters (PEFT layout): W x + (alpha/r) B (A x) ---- */
typedef struct dp_lora {
    int64_t rank;
    double alpha, scale; /* scale = alpha / rank */
    unsigned targets;    /* bit DP_BT_x set: that linear carries an adapter */
    int64_t n_elems;
    float *mem;
    float *a[DP_MAX_LAYERS][DP_LLAMA_BLOCK_TENSORS]; /* (r, IN) or NULL */
    float *b[DP_MAX_LAYERS][DP_LLAMA_BLOCK_TENSORS]; /* (OUT, r) or NULL */
    /* PEFT's lora_dropout on the adapter input, in TRAIN states only: set
     * dropout before dp_llama_state_init (it plans scratch for it) and
     * drop_key to N per-row keys before each forward (NULL: no dropout). The
     * mask of element i of row n of adapter (l, k) is a hash of (drop_key[n],
     * l, k, i), recomputed in backward, so it depends on what a row is (its
     * example and position), not on batch composition or rank. */
    double dropout;
    const uint64_t *drop_key;
} dp_lora;

/* Parses "q_proj,v_proj" (or "all") into a target mask. */
int dp_lora_parse_targets(const char *s, unsigned *targets, dp_err *err);
/* Adapters for the blocks in map; zeroed. */
int dp_lora_init(dp_lora *l, const dp_llama *m, const dp_layer_map *map, int64_t rank, double alpha, unsigned targets,
                 dp_err *err);
/* A second buffer in l's layout (gradients, moments), zeroed. */
void dp_lora_like(dp_lora *out, const dp_lora *l, const char *label);
/* PEFT's initialisation: A ~ U(-1/sqrt(IN), 1/sqrt(IN)) (kaiming_uniform with
 * a = sqrt(5)), B = 0; deterministic in seed. */
void dp_lora_init_random(dp_lora *l, const dp_llama *m, uint64_t seed);
void dp_lora_free(dp_lora *l);

/* ---- run state ---- */
enum {
    DP_STATE_TRAIN = 1,     /* keep activations and allocate gradient buffers */
    DP_STATE_RECOMPUTE = 2, /* with TRAIN: keep only block inputs, recompute each block in backward */
    DP_STATE_NLL_ONLY = 4,  /* inference for losses only: logits for dp_llama_head_rows rows at a time */
};

/* Rows of logits at a time for the NLL of N rows over a vocabulary of V
 * (NLL_ONLY states hold only these): all N while the logits stay within
 * DP_HEAD_CHUNK_BYTES, else equal chunks that do (at least 128 rows). The
 * head weight is packed once per chunk: in 128-row chunks a 32000 x 1024 head
 * ran at 52 GFLOP/s, in one 1280-row GEMM at 68 (OpenBLAS, one core). */
#define DP_HEAD_CHUNK_BYTES ((int64_t)256 << 20)
int64_t dp_llama_head_rows(int64_t N, int64_t V);

typedef struct dp_llama_acts {         /* saved activations of one block */
    float *ln1, *rstd1;                /* (N, C), (N) */
    float *q;                          /* (N, NH*HD) after RoPE */
    float *k, *v;                      /* (N, NKV*HD) (k after RoPE) */
    float *att;                        /* (B, NH, T, T) softmax probabilities */
    float *ao;                         /* (N, NH*HD) attention output, input of o_proj */
    float *res2;                       /* (N, C) residual after attention */
    float *ln2, *rstd2;                /* (N, C), (N) */
    float *gate, *up, *h;              /* (N, F); h = silu(gate) * up */
    float *xa[DP_LLAMA_BLOCK_TENSORS]; /* (N, r) LoRA intermediates */
} dp_llama_acts;

typedef struct dp_llama_state {
    int64_t B, T, N; /* N = B*T */
    int n_blocks;    /* kept blocks planned for */
    int flags;
    size_t n_bytes; /* the planned activation memory */
    float *mem;
    float *x; /* (n_blocks+1, N, C) residual stream; x[i] feeds kept block i */
    int n_acts;
    dp_llama_acts *acts; /* n_blocks sets with TRAIN, else 1 */
    float *lnf, *rstdf;  /* (N, C), (N) final norm */
    float *logits;       /* (N, V); (head_rows, V) with NLL_ONLY */
    int64_t head_rows;   /* rows of dp_llama_head_nll's chunks: dp_llama_head_rows(N, V) (tests set fewer) */
    float *nll;          /* (N) per-position loss of the last dp_llama_loss_ce */
    float *cosb, *sinb;  /* (T, HD/2) */
    /* training only */
    float *dlogits;          /* (N, V) the loss gradient, filled by loss functions */
    float *dres, *dln;       /* (N, C) */
    float *dq, *dao;         /* (N, NH*HD) */
    float *dk, *dv;          /* (N, NKV*HD) */
    float *dgate, *dup, *dh; /* (N, F) */
    float *dlora;            /* (N, r) */
    float *xdrop, *dxdrop;   /* (N, max(C, F, NH*HD)) LoRA dropout scratch */
    dp_llama_wcache wc;      /* a stored-dtype model's current block in fp32 */
} dp_llama_state;

/* Bytes dp_llama_state_init would allocate. */
size_t dp_llama_state_bytes(const dp_llama *m, const dp_lora *lora, int64_t B, int64_t T, int n_blocks, int flags);
/* Errors: T above max_position_embeddings (unless allow_long), bad sizes. */
int dp_llama_state_init(dp_llama_state *s, const dp_llama *m, const dp_lora *lora, int64_t B, int64_t T, int n_blocks,
                        int flags, int allow_long, dp_err *err);
void dp_llama_state_free(dp_llama_state *s);
/* Re-plans s (same flags and block count) for a batch shape B x T whose
 * memory fits the original allocation, e.g. a shorter micro-batch; errors if
 * it does not fit. */
int dp_llama_state_reshape(dp_llama_state *s, const dp_llama *m, const dp_lora *lora, int64_t B, int64_t T,
                           dp_err *err);

/* Checks token ids are inside the vocabulary; then embeds into x[0]. */
int dp_llama_embed(const dp_llama *m, dp_llama_state *s, const int32_t *tokens, dp_err *err);
/* Runs kept blocks [from, to) of map: x[from] -> x[to]. */
void dp_llama_blocks_forward(const dp_llama *m, const dp_lora *lora, const dp_layer_map *map, dp_llama_state *s,
                             int from, int to);
/* Final norm and LM head on x[at] -> logits. */
void dp_llama_head_forward(const dp_llama *m, dp_llama_state *s, int at);
/* Final norm, head and cross-entropy on x[at], dp_llama_head_rows at a time
 * (any state): s->nll gets every row's NLL (0 where targets < 0); returns
 * the sum. The logits are not kept. */
double dp_llama_head_nll(const dp_llama *m, dp_llama_state *s, int at, const int32_t *targets);
/* embed + all kept blocks + head (the head is left to dp_llama_head_nll in
 * NLL_ONLY states). */
int dp_llama_forward(const dp_llama *m, const dp_lora *lora, const dp_layer_map *map, dp_llama_state *s,
                     const int32_t *tokens, dp_err *err);
/* Cross-entropy of logits vs targets (N; < 0 ignored) into s->nll; returns
 * the sum, *n_counted the counted positions. With grad_scale != 0 (TRAIN)
 * also adds grad_scale * dCE/dlogits into s->dlogits. */
double dp_llama_loss_ce(dp_llama_state *s, const dp_llama *m, const int32_t *targets, int64_t *n_counted,
                        double grad_scale);
/* Per-sequence NLL sums of B sequences of T positions: out[b] = the sum of
 * nll[b*T + t] for t = 0..T-2 (every predicted token), in position order. */
void dp_llama_sum_positions(const float *nll, int64_t B, int64_t T, double *out);
/* Next-token targets of B sequences of T tokens: targets[b][t] =
 * tokens[b][t+1], and -1 (ignored) at the last position. */
void dp_llama_next_targets(int32_t *targets, const int32_t *tokens, int64_t B, int64_t T);
/* Zeroes s->dlogits (before the loss functions add into it). */
void dp_llama_zero_dlogits(dp_llama_state *s, const dp_llama *m);
/* Backward from s->dlogits through head, kept blocks and embedding, after a
 * TRAIN forward. Adds into grads (full-parameter; NULL: weights frozen) and
 * lgrads (LoRA; NULL without adapters). */
void dp_llama_backward(const dp_llama *m, const dp_lora *lora, const dp_layer_map *map, dp_llama_state *s,
                       const int32_t *tokens, dp_llama_view *grads, dp_lora *lgrads);
/* The same, calling after_block(dense layer, ctx) as soon as a block's
 * weight gradients are complete (blocks in reverse order). With every
 * grads->blk[l] pointing into one block-sized buffer (and embed/norm/head
 * NULL), a caller can consume and clear each block's gradient in turn and
 * never hold the whole model's. */
void dp_llama_backward_hook(const dp_llama *m, const dp_lora *lora, const dp_layer_map *map, dp_llama_state *s,
                            const int32_t *tokens, dp_llama_view *grads, dp_lora *lgrads,
                            void (*after_block)(int layer, void *ctx), void *ctx);

#ifdef __cplusplus
}
#endif
#endif
