/* One engine under every stage: the verbs calibration, scoring, teacher
 * caching, retraining, evaluation, width importance and generation need,
 * with a CPU implementation (dp_llama: fp32, the reference) and a CUDA one
 * (dp_cuda_llama: bf16 weights, fp32 residual stream). Stage code opens a
 * dp_engine on the device the run asks for and has one loop for both.
 *
 * Shapes: an engine is planned for batches of up to B sequences of up to T
 * tokens; each call names its batch b <= B, and embed/micro name the
 * sequence length t <= T (later calls reuse it). Hidden states cross to
 * the host as fp32 (b*t, C), the layout of calib.h5.
 *
 * Gradient convention (both backends): weight and adapter gradients
 * accumulate over micro-steps (the trainer zeroes them per optimizer step
 * with dp_engine_zero_grad); activation gradients are written, never
 * accumulated. After the last micro-step dp_engine_grad_flush leaves the
 * step's gradients in e->grad (host fp32, the flat layout of the trainable
 * vector: lora->mem or the model's).
 *
 * A build without CUDA, or a machine without a usable GPU, gets one error
 * from dp_engine_open (via dp_backend_check): nothing else asks. */
#ifndef DEPTHPRUNE_ENGINE_H
#define DEPTHPRUNE_ENGINE_H

#include "depthprune/generate.h"
#include "depthprune/llama.h"
#include "depthprune/tensor.h" /* dp_device */

#ifdef __cplusplus
extern "C" {
#endif

/* "cpu" / "cuda" -> dp_device; anything else is a usage error. */
int dp_device_parse(const char *s, dp_device *d, dp_err *err);
const char *dp_device_name(dp_device d);

/* What an engine is opened for. */
typedef struct dp_engine_plan {
    int64_t B, T;       /* the largest batch */
    int n_blocks;       /* the most blocks a map will run (0: all of the model's) */
    int allow_long;     /* T may exceed max_position_embeddings */
    int local_rank;     /* CUDA: GPU = node-local rank modulo the visible devices */
    int logits;         /* inference with full logits (dp_engine_topk on the CPU) */
    int stream_weights; /* CUDA: -1 auto (weights over 70% of free memory), 0 off, 1 on; CPU: a
                           stored-dtype model streams unless 0 (blocks upcast once per pass) */
    /* training (dp_engine_micro with backward): */
    int train;
    dp_lora *lora; /* adapters (trained with train; applied in every forward), or NULL */
    int full;      /* every weight's gradient (full-parameter training) */
    int wgrad;     /* one block's weight gradients at a time (Taylor, width importance) */
    int64_t K;     /* teacher top-k rows per token (KD), 0: none */
    int recompute; /* keep only block inputs, recompute each block in backward */
} dp_engine_plan;

typedef struct dp_engine_ops dp_engine_ops;

typedef struct dp_engine {
    dp_device device;
    const dp_engine_ops *ops;
    const dp_llama *m;
    dp_engine_plan plan;
    int64_t t;     /* the current sequence length */
    int streaming; /* block weights streamed (CUDA: through one slot; CPU: upcast one at a time) */
    float *grad;   /* training: host gradients of the trainable vector (n_grad floats) */
    int64_t n_grad;
    int grad_summed;        /* dp_engine_grad_flush already summed grad over ranks */
    int64_t grad_nonfinite; /* with grad_summed: this rank's non-finite gradients before the sum */
    void (*allreduce)(void *ctx, float *dev, int64_t n); /* sums device gradients over ranks, or NULL */
    void *allreduce_ctx;
    void *impl; /* the backend's state */
} dp_engine;

/* One micro-batch of forward (+ backward) with CE and optional KD losses. */
typedef struct dp_micro {
    const int32_t *tokens, *targets; /* (B, T) host; targets < 0 ignored */
    const uint64_t *keys;            /* (B*T) LoRA dropout row keys, or NULL (no dropout) */
    int64_t B, T;
    /* KD: a teacher engine on the same device (online), or host top-k rows
     * (a teacher cache: tidx/tval (B*T, K), tlse (B*T)); neither: no KD */
    dp_engine *teacher;
    const dp_layer_map *teacher_map;
    const int32_t *tidx;
    const float *tval, *tlse;
    double alpha, temp; /* KD weight and temperature */
    double gscale;      /* gradients of gscale * ((1-alpha) CE + alpha KD) summed over rows */
    int backward;       /* 0: losses only (validation) */
    /* plan.wgrad: each block's weight gradients (block-local layout: dense
     * block l's tensors from params[1 + 9l]) into wgrad_host, then
     * block_done(l, ctx), blocks in reverse order */
    float *wgrad_host;
    void (*block_done)(int layer, void *ctx);
    void *ctx;
} dp_micro;

/* Opens m on dev for p. Errors: the device is unusable (built without
 * CUDA, no driver, no GPU), shapes out of range, device memory. */
int dp_engine_open(dp_engine *e, dp_device dev, const dp_llama *m, const dp_engine_plan *p, dp_err *err);
void dp_engine_close(dp_engine *e);

/* tokens (b, t) -> the residual stream; ids checked first */
int dp_engine_embed(dp_engine *e, const int32_t *tokens, int64_t b, int64_t t, dp_err *err);
/* kept blocks [from, to) of map on the current residual stream */
void dp_engine_blocks(dp_engine *e, const dp_layer_map *map, int from, int to, int64_t b);
/* host fp32 (b*t, C) <-> the current residual stream */
void dp_engine_set_hidden(dp_engine *e, const float *x, int64_t b);
void dp_engine_get_hidden(dp_engine *e, float *x, int64_t b);
/* final norm + head + CE on the residual stream: nll (b*t host, may be
 * NULL) gets every row's NLL (0 where targets < 0); returns the sum in
 * row order */
double dp_engine_head_nll(dp_engine *e, const int32_t *targets, float *nll, int64_t b);
/* the forward of tokens (b, t) through map, then each row's top-K logits,
 * their indices and lse(logits / temp) into host arrays (b*t*K, b*t) */
int dp_engine_topk(dp_engine *e, const dp_layer_map *map, const int32_t *tokens, int64_t b, int64_t t, int64_t K,
                   double temp, int32_t *idx, float *val, float *lse, dp_err *err);

/* Buffers of hidden states where the engine computes (device memory on
 * CUDA): for passes that keep many candidates' states resident. */
float *dp_engine_buf_alloc(dp_engine *e, int64_t n_floats);
void dp_engine_buf_free(dp_engine *e, float *buf);
void dp_engine_buf_upload(dp_engine *e, float *buf, const float *host, int64_t n_floats);
/* the residual stream <-> buf (b*t*C floats) */
void dp_engine_set_hidden_buf(dp_engine *e, const float *buf, int64_t b);
void dp_engine_get_hidden_buf(dp_engine *e, float *buf, int64_t b);

/* One micro-batch: adds the row CE sum into *ce_sum and the KD sum into
 * *kd_sum (position order) and, with backward, accumulates gradients. */
int dp_engine_micro(dp_engine *e, const dp_layer_map *map, const dp_micro *mb, double *ce_sum, double *kd_sum,
                    dp_err *err);
void dp_engine_zero_grad(dp_engine *e);
/* After a step's last micro-batch: gradients -> e->grad (summed over ranks
 * first when e->allreduce is set; e->grad_summed says so). */
void dp_engine_grad_flush(dp_engine *e);
/* After an optimizer step changed the trainable values on the host. */
void dp_engine_params_changed(dp_engine *e);

/* Block uploads of a streaming engine; device bytes held (0 on the CPU). */
int64_t dp_engine_block_loads(const dp_engine *e);
size_t dp_engine_device_bytes(const dp_engine *e);

/* ---- generation with a KV cache (dp_generate's protocol on either device) ---- */
typedef struct dp_engine_gen {
    dp_device device;
    void *impl;
} dp_engine_gen;
int dp_engine_gen_open(dp_engine_gen *g, dp_device dev, const dp_llama *m, const dp_layer_map *map, int64_t B,
                       int64_t P, int64_t T, int local_rank, dp_err *err);
int dp_engine_generate(dp_engine_gen *g, const int32_t *prompts, int64_t B, int64_t P, const dp_gen_opts *o,
                       int32_t *out, dp_gen_stats *st, dp_err *err);
void dp_engine_gen_close(dp_engine_gen *g);
/* The device's ceilings for speed floors: copy bandwidth (bytes/s; NULL:
 * not measured) and GEMM throughput (flop/s) of its matmul path at C x F (or
 * larger). */
void dp_engine_ceilings(dp_device dev, int64_t C, int64_t F, double *bandwidth, double *gemm);

/* Each row's top-K of logits (N, V) (descending, ties to the lower index)
 * and lse(logits / temp): the CPU's teacher top-k. */
void dp_teacher_topk(int32_t *idx, float *val, float *lse, const float *logits, int64_t N, int64_t V, int64_t K,
                     double temp);

/* ---- the backend table (src/engine) ---- */
struct dp_engine_ops {
    int (*open)(dp_engine *e, dp_err *err);
    void (*close)(dp_engine *e);
    int (*embed)(dp_engine *e, const int32_t *tokens, int64_t b, dp_err *err);
    void (*blocks)(dp_engine *e, const dp_layer_map *map, int from, int to, int64_t b);
    void (*set_hidden)(dp_engine *e, const float *x, int64_t b, int on_device);
    void (*get_hidden)(dp_engine *e, float *x, int64_t b, int on_device);
    double (*head_nll)(dp_engine *e, const int32_t *targets, float *nll, int64_t b);
    int (*topk)(dp_engine *e, const dp_layer_map *map, const int32_t *tokens, int64_t b, int64_t K, double temp,
                int32_t *idx, float *val, float *lse, dp_err *err);
    float *(*buf_alloc)(dp_engine *e, int64_t n);
    void (*buf_free)(dp_engine *e, float *buf);
    void (*buf_upload)(dp_engine *e, float *buf, const float *host, int64_t n);
    int (*micro)(dp_engine *e, const dp_layer_map *map, const dp_micro *mb, double *ce, double *kd, dp_err *err);
    void (*zero_grad)(dp_engine *e);
    void (*grad_flush)(dp_engine *e);
    void (*params_changed)(dp_engine *e);
    int64_t (*block_loads)(const dp_engine *e);
    size_t (*device_bytes)(const dp_engine *e);
    int (*gen_open)(dp_engine_gen *g, const dp_llama *m, const dp_layer_map *map, int64_t B, int64_t P, int64_t T,
                    int local_rank, dp_err *err);
    int (*generate)(dp_engine_gen *g, const int32_t *prompts, int64_t B, int64_t P, const dp_gen_opts *o, int32_t *out,
                    dp_gen_stats *st, dp_err *err);
    void (*gen_close)(dp_engine_gen *g);
    void (*ceilings)(int64_t C, int64_t F, double *bandwidth, double *gemm);
};
extern const dp_engine_ops dp_engine_cpu_ops;
/* the CUDA table, or NULL in a build without CUDA */
const dp_engine_ops *dp_engine_cuda_ops(void);

/* The work every engine of this process has done so far (the cost ledger): model FLOPs by
 * the formula in engine.c and tokens scored by a head. Not thread-safe (one engine user per
 * process, as the stages are). */
void dp_engine_work(double *flops, int64_t *tokens);
/* The formula's forward FLOPs of block l per token at context length t (skip: DP_SKIP_*). */
double dp_engine_block_flops(const dp_llama_config *c, int l, int skip, int64_t t);

#ifdef __cplusplus
}
#endif
#endif
