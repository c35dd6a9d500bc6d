/* The LLaMA model on the GPU for inference: perplexity, calibration and
 * block scoring (`--device cuda`). The CPU model (llama.h) is the source:
 * its flat fp32 layout is copied to the GPU once as bf16 (exact for bf16
 * checkpoints) and read in place; a layer map drops blocks without copying.
 * Activations are planned once for B x T (B may shrink per call).
 * The residual stream is fp32 on the device; hidden states cross to the
 * host as fp32 (N, C), the layout of the CPU run state and of calib.h5. */
#ifndef DEPTHPRUNE_LLAMA_CUDA_H
#define DEPTHPRUNE_LLAMA_CUDA_H

#include "depthprune/cuda_ops.h"
#include "depthprune/generate.h"
#include "depthprune/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dp_cuda_llama {
    const dp_llama *m;
    int64_t Bmax, Tmax, T, chunk; /* T: the current sequence length (<= Tmax) */
    dp_bf16 *w;                   /* (m->n_elems) the weights, bf16 */
    float *cosb, *sinb;           /* (T, HD/2) */
    float *x, *x2;                /* (Bmax*T, C) residual stream, ping-pong */
    dp_bf16 *ln, *q, *k, *v, *ao, *gate, *up, *h;
    float *lse, *nll;   /* (Bmax*NH*T), (Bmax*T) */
    int32_t *tok, *tgt; /* (Bmax*T) */
    void *head_scratch;
    dp_blas blas;
    void *acts, *train_mem, *full_mem; /* the allocations the buffers are carved from */
    void **sep;                        /* DP_CUDA_SEPARATE=1 (sanitizer runs): each buffer's own allocation */
    int n_sep;
    /* weight streaming (set streaming = 1 before init/open): only the
     * embedding, final norm and head stay resident; a block's weights are
     * uploaded into one slot when a kernel first needs them */
    int streaming, loaded;
    int64_t slot;        /* element offset of the block slot in w */
    int64_t block_loads; /* blocks uploaded so far */
    size_t n_bytes;      /* device bytes held (weights + activations) */
    /* LoRA training (dp_cuda_llama_train_init); NULL/0 otherwise */
    const dp_lora *lora; /* the host adapters: fp32, the optimizer's copy */
    dp_bf16 *lw;         /* (lora->n_elems) bf16 adapters the GEMMs read */
    float *lg;           /* (lora->n_elems) fp32 adapter gradients */
    float *wg;           /* (n_wgrad) one block's base-weight gradients, or NULL */
    int64_t n_wgrad;
    float *gfull; /* (m->n_elems) every weight's gradient (full-parameter training), or NULL */
    int n_saved;  /* block inputs the forward keeps: map->n + 1 */
    float *xs;    /* (n_saved, Bmax*Tmax, C) */
    float *res2, *rstd1, *rstd2, *rstdf, *dx, *dx2, *dwide, *dwide2, *dsum, *ce, *kd;
    dp_bf16 *ln2, *g16, *dq, *dk, *dv, *xa, *xdrop;
    uint64_t *keys; /* (Bmax*Tmax) dropout row keys */
    int32_t *tidx;  /* (Bmax*Tmax, K) teacher top-k */
    float *tval, *tlse;
    int64_t K;
    void *lora_scratch, *norm_scratch;
} dp_cuda_llama;

/* Uploads m's weights and plans activations for Bmax x T. Collective over
 * nothing; the device must be selected first. Errors: T above the model's
 * max positions (unless allow_long), head dim above 256. */
int dp_cuda_llama_init(dp_cuda_llama *g, const dp_llama *m, int64_t Bmax, int64_t T, int allow_long, dp_err *err);
void dp_cuda_llama_free(dp_cuda_llama *g);
/* Selects this rank's GPU (node-local rank modulo the visible devices), then
 * dp_cuda_llama_init. Errors: no usable GPU, as dp_cuda_llama_init. */
int dp_cuda_llama_open(dp_cuda_llama *g, const dp_llama *m, int64_t Bmax, int64_t T, int allow_long, int local_rank,
                       dp_err *err);
/* tokens (B, T) host -> embedded residual stream; ids checked first */
int dp_cuda_llama_embed(dp_cuda_llama *g, const int32_t *tokens, int64_t B, dp_err *err);
/* host fp32 (B*T, C) <-> the current residual stream */
void dp_cuda_llama_set_hidden(dp_cuda_llama *g, const float *x, int64_t B);
void dp_cuda_llama_get_hidden(const dp_cuda_llama *g, float *x, int64_t B);
/* the same from/to device memory */
void dp_cuda_llama_set_hidden_dev(dp_cuda_llama *g, const float *x, int64_t B);
void dp_cuda_llama_get_hidden_dev(const dp_cuda_llama *g, float *x, int64_t B);
/* kept blocks [from, to) of map on the residual stream */
void dp_cuda_llama_blocks(dp_cuda_llama *g, const dp_layer_map *map, int from, int to, int64_t B);
/* final norm + head + CE on the residual stream; nll (B*T, host, may be
 * NULL) gets every position's NLL (0 where targets < 0); returns the sum
 * in position order (double). */
double dp_cuda_llama_head_nll(dp_cuda_llama *g, const int32_t *targets, float *nll, int64_t B);

/* ---- LoRA training step on the GPU: forward with every block input kept,
 * chunked head with CE + top-k KD, backward with each block recomputed from
 * its input; only the adapters get gradients (fp32, the flat layout of
 * lora->mem). Base weights stay frozen and bf16. K = teacher top-k (0: no
 * KD); T above the planned Tmax is an error. lora may be NULL (no adapters:
 * Taylor scoring); n_wgrad > 0 plans a block weight-gradient buffer. */
int dp_cuda_llama_train_init(dp_cuda_llama *g, const dp_lora *lora, int n_blocks, int64_t K, int64_t n_wgrad,
                             dp_err *err);
/* Full-parameter training: plans gfull (after train_init with lora NULL);
 * every backward then accumulates all weight gradients there (the flat
 * layout of m->mem). The optimizer runs on the host (ZeRO-Offload style:
 * the trainer's sharded AdamW over MPI); after each update the weights are
 * uploaded again with dp_cuda_llama_weights_upload. */
int dp_cuda_llama_full_init(dp_cuda_llama *g, dp_err *err);
void dp_cuda_llama_full_grad(dp_cuda_llama *g, float *host); /* d2h, then zeroes gfull */
void dp_cuda_llama_weights_upload(dp_cuda_llama *g);
/* streaming: uploads dense block l into the slot unless it is there */
void dp_cuda_llama_load_block(dp_cuda_llama *g, int l);

/* lora->mem (host fp32) -> the device's bf16 adapters; after every update */
void dp_cuda_llama_lora_upload(dp_cuda_llama *g);
void dp_cuda_llama_lora_zero_grad(dp_cuda_llama *g);
/* the accumulated adapter gradients -> host (lora->n_elems floats) */
void dp_cuda_llama_lora_grad(const dp_cuda_llama *g, float *host);

typedef struct dp_cuda_micro {
    const int32_t *tokens, *targets; /* (B, T) host; targets < 0 ignored */
    const uint64_t *keys;            /* (B*T) dropout row keys, or NULL (no dropout) */
    int64_t B, T;
    const int32_t *tidx;    /* (B*T, K) host teacher top-k (a teacher cache), or NULL */
    dp_cuda_llama *teacher; /* online teacher on the same GPU (instead of tidx), or NULL */
    const dp_layer_map *teacher_map;
    const float *tval, *tlse;
    double alpha, temp; /* KD weight and temperature */
    double gscale;      /* gradient of gscale * sum of row losses */
    int backward;       /* 0: losses only (validation) */
    /* base-weight gradients, one block at a time (Taylor scoring): with
     * block_done set, each block's weight gradient (block-local layout,
     * dense block l's tensors from params[1 + 9l]) is computed into the
     * device buffer planned by train_init's n_wgrad, copied to wgrad_host and
     * block_done(l, ctx) called (blocks in reverse order). */
    float *wgrad_host;
    void (*block_done)(int layer, void *ctx);
    void *ctx;
} dp_cuda_micro;
/* The teacher's forward on tokens (B, T host) and its top-K logits and
 * lse(logits / temp) into device arrays tidx/tval (B*T, K), tlse (B*T). */
int dp_cuda_llama_teacher_topk(dp_cuda_llama *t, const dp_layer_map *map, const int32_t *tokens, int64_t B, int64_t T,
                               int64_t K, double temp, int32_t *tidx, float *tval, float *tlse, dp_err *err);
/* One micro-batch: adds the row CE sum into *ce_sum and the KD sum into
 * *kd_sum (double, position order) and, with backward, accumulates adapter
 * gradients. Errors: token ids outside the vocabulary, T > Tmax. */
int dp_cuda_llama_train_micro(dp_cuda_llama *g, const dp_layer_map *map, const dp_cuda_micro *mb, double *ce_sum,
                              double *kd_sum, dp_err *err);

/* ---- generation on the GPU: dp_generate's protocol and sampler (the same
 * tokens for greedy decoding up to bf16 ties), KV cache in bf16 ---- */
typedef struct dp_cuda_gen {
    dp_cuda_llama g; /* weights; activations for B x Tcap */
    const dp_layer_map *map;
    int64_t B, P, Tcap; /* capacity: sequences, prompt tokens, positions */
    dp_bf16 *kc, *vc;   /* (map->n, B, NKV, Tcap, HD) */
    float *logits;      /* (B, V) host */
    size_t cache_bytes;
} dp_cuda_gen;
int dp_cuda_gen_init(dp_cuda_gen *cg, const dp_llama *m, const dp_layer_map *map, int64_t B, int64_t P, int64_t Tcap,
                     int local_rank, dp_err *err);
void dp_cuda_gen_free(dp_cuda_gen *cg);
int dp_cuda_generate(dp_cuda_gen *cg, const int32_t *prompts, int64_t B, int64_t P, const dp_gen_opts *o, int32_t *out,
                     float *logits, dp_gen_stats *st, dp_err *err);

#ifdef __cplusplus
}
#endif
#endif
