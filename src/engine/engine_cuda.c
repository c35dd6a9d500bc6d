/* The CUDA backend of the engine: dp_cuda_llama (bf16 weights read in place,
 * fp32 residual stream, cuBLAS) behind the engine's verbs. Built only with
 * the CUDA toolkit; dp_engine_open reaches it after dp_backend_check found a
 * usable GPU. */
#include <stdlib.h>
#include <string.h>

#include "depthprune/backend.h"
#include "depthprune/engine.h"
#include "depthprune/llama_cuda.h"

typedef struct cuda_engine {
    dp_cuda_llama g;
    int32_t *tidx; /* device top-k rows of dp_engine_topk, (B*T*K) */
    float *tval, *tlse;
    int64_t tk; /* K they were planned for */
} cuda_engine;

static cuda_engine *cu(const dp_engine *e) {
    return e->impl;
}

/* weights streamed when the bf16 copy exceeds 70% of this GPU's free memory
 * (setting -1), else as set */
static int want_stream(const dp_llama *m, int setting) {
    if (setting >= 0) return setting;
    return (double)m->n_elems * 2.0 > 0.7 * (double)dp_cuda_mem_free();
}

static int64_t largest_block(const dp_llama *m) {
    int64_t n = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const dp_llama_param *a = &m->params[1 + l * DP_LLAMA_BLOCK_TENSORS], *z = a + DP_LLAMA_BLOCK_TENSORS - 1;
        if (z->offset + z->n_elems - a->offset > n) n = z->offset + z->n_elems - a->offset;
    }
    return n;
}

static int cuda_open(dp_engine *e, dp_err *err) {
    const dp_engine_plan *p = &e->plan;
    cuda_engine *c = dp_calloc(1, sizeof *c, "engine");
    dp_err why;
    dp_err_clear(&why);
    int n = dp_cuda_device_count(&why);
    if (n <= 0) {
        dp_free(c);
        return dp_err_set(err, DP_E_DEVICE, "--device cuda: %s: %s", n == 0 ? "no usable GPU" : "CUDA cannot start",
                          why.msg);
    }
    dp_cuda_set_device(p->local_rank % n);
    static int told = 0; /* the job log records which GPU each rank took, once per process */
    if (!told) {
        char what[160];
        dp_cuda_describe(p->local_rank % n, what, sizeof what);
        dp_log("engine: node-local rank %d on GPU %d of %d: %s (CUDA_VISIBLE_DEVICES=%s)", p->local_rank,
               p->local_rank % n, n, what, getenv("CUDA_VISIBLE_DEVICES") ? getenv("CUDA_VISIBLE_DEVICES") : "unset");
        told = 1;
    }
    c->g.streaming = !p->train && want_stream(e->m, p->stream_weights);
    int rc = dp_cuda_llama_init(&c->g, e->m, p->B, p->T, p->allow_long, err);
    if (!rc && (p->train || p->lora))
        rc = dp_cuda_llama_train_init(&c->g, p->lora, p->n_blocks, p->K, p->wgrad ? largest_block(e->m) : 0, err);
    if (!rc && p->train && p->full) rc = dp_cuda_llama_full_init(&c->g, err);
    if (rc) {
        dp_cuda_llama_free(&c->g);
        dp_free(c);
        return rc;
    }
    if (e->n_grad) e->grad = dp_calloc((size_t)e->n_grad, sizeof(float), "grads");
    e->streaming = c->g.streaming;
    e->impl = c;
    return DP_OK;
}

static void cuda_close(dp_engine *e) {
    cuda_engine *c = cu(e);
    dp_cuda_llama_free(&c->g);
    dp_cuda_free(c->tidx), dp_cuda_free(c->tval), dp_cuda_free(c->tlse);
    dp_free(e->grad);
    dp_free(c);
}

static int cuda_embed(dp_engine *e, const int32_t *tokens, int64_t b, dp_err *err) {
    cu(e)->g.T = e->t;
    return dp_cuda_llama_embed(&cu(e)->g, tokens, b, err);
}

static void cuda_blocks(dp_engine *e, const dp_layer_map *map, int from, int to, int64_t b) {
    dp_cuda_llama_blocks(&cu(e)->g, map, from, to, b);
}

static void cuda_set_hidden(dp_engine *e, const float *x, int64_t b, int on_device) {
    cu(e)->g.T = e->t;
    if (on_device)
        dp_cuda_llama_set_hidden_dev(&cu(e)->g, x, b);
    else
        dp_cuda_llama_set_hidden(&cu(e)->g, x, b);
}

static void cuda_get_hidden(dp_engine *e, float *x, int64_t b, int on_device) {
    if (on_device)
        dp_cuda_llama_get_hidden_dev(&cu(e)->g, x, b);
    else
        dp_cuda_llama_get_hidden(&cu(e)->g, x, b);
}

static double cuda_head_nll(dp_engine *e, const int32_t *targets, float *nll, int64_t b) {
    return dp_cuda_llama_head_nll(&cu(e)->g, targets, nll, b);
}

static int cuda_topk(dp_engine *e, const dp_layer_map *map, const int32_t *tokens, int64_t b, int64_t K, double temp,
                     int32_t *idx, float *val, float *lse, dp_err *err) {
    cuda_engine *c = cu(e);
    int64_t rows = e->plan.B * e->plan.T, n = b * e->t;
    if (K > c->tk) {
        dp_cuda_free(c->tidx), dp_cuda_free(c->tval), dp_cuda_free(c->tlse);
        c->tidx = dp_cuda_malloc((size_t)(rows * K) * sizeof(int32_t), "GPU teacher top-k");
        c->tval = dp_cuda_malloc((size_t)(rows * K) * sizeof(float), "GPU teacher top-k");
        c->tlse = dp_cuda_malloc((size_t)rows * sizeof(float), "GPU teacher top-k");
        c->tk = K;
    }
    int rc = dp_cuda_llama_teacher_topk(&c->g, map, tokens, b, e->t, K, temp, c->tidx, c->tval, c->tlse, err);
    if (rc) return rc;
    dp_cuda_sync(NULL);
    dp_cuda_d2h(idx, c->tidx, (size_t)(n * K) * sizeof(int32_t));
    dp_cuda_d2h(val, c->tval, (size_t)(n * K) * sizeof(float));
    dp_cuda_d2h(lse, c->tlse, (size_t)n * sizeof(float));
    return DP_OK;
}

static float *cuda_buf_alloc(dp_engine *e, int64_t n) {
    (void)e;
    return dp_cuda_malloc((size_t)n * sizeof(float), "GPU hidden states");
}
static void cuda_buf_free(dp_engine *e, float *buf) {
    (void)e;
    dp_cuda_free(buf);
}
static void cuda_buf_upload(dp_engine *e, float *buf, const float *host, int64_t n) {
    (void)e;
    dp_cuda_h2d(buf, host, (size_t)n * sizeof(float));
}

static int cuda_micro(dp_engine *e, const dp_layer_map *map, const dp_micro *mb, double *ce, double *kd, dp_err *err) {
    dp_cuda_micro x = {.tokens = mb->tokens,
                       .targets = mb->targets,
                       .keys = mb->keys,
                       .B = mb->B,
                       .T = mb->T,
                       .tidx = mb->tidx,
                       .tval = mb->tval,
                       .tlse = mb->tlse,
                       .teacher = mb->teacher ? &cu(mb->teacher)->g : NULL,
                       .teacher_map = mb->teacher_map,
                       .alpha = mb->alpha,
                       .temp = mb->temp,
                       .gscale = mb->gscale,
                       .backward = mb->backward,
                       .wgrad_host = mb->wgrad_host,
                       .block_done = mb->block_done,
                       .ctx = mb->ctx};
    return dp_cuda_llama_train_micro(&cu(e)->g, map, &x, ce, kd, err);
}

static float *dev_grad(const dp_engine *e) {
    return e->plan.lora ? cu(e)->g.lg : cu(e)->g.gfull;
}

static void cuda_zero_grad(dp_engine *e) {
    if (dev_grad(e)) dp_cuda_memset0(dev_grad(e), (size_t)e->n_grad * sizeof(float), NULL);
}

static void cuda_grad_flush(dp_engine *e) {
    float *g = dev_grad(e);
    if (!g) return;
    e->grad_summed = e->allreduce != NULL;
    /* this rank's own verdict first: after the sum every rank sees every NaN */
    e->grad_nonfinite = e->allreduce ? dp_cuda_count_nonfinite(g, e->n_grad, NULL) : 0;
    if (e->allreduce) e->allreduce(e->allreduce_ctx, g, e->n_grad);
    dp_cuda_sync(NULL);
    dp_cuda_d2h(e->grad, g, (size_t)e->n_grad * sizeof(float));
    dp_cuda_memset0(g, (size_t)e->n_grad * sizeof(float), NULL);
}

static void cuda_params_changed(dp_engine *e) {
    if (e->plan.lora)
        dp_cuda_llama_lora_upload(&cu(e)->g);
    else
        dp_cuda_llama_weights_upload(&cu(e)->g);
}

static int64_t cuda_block_loads(const dp_engine *e) {
    return cu(e)->g.block_loads;
}
static size_t cuda_device_bytes(const dp_engine *e) {
    return cu(e)->g.n_bytes;
}

static int cuda_gen_open(dp_engine_gen *g, const dp_llama *m, const dp_layer_map *map, int64_t B, int64_t P, int64_t T,
                         int local_rank, dp_err *err) {
    dp_cuda_gen *x = dp_calloc(1, sizeof *x, "generation");
    int rc = dp_cuda_gen_init(x, m, map, B, P, T, local_rank, err);
    if (rc)
        dp_free(x);
    else
        g->impl = x;
    return rc;
}
static int cuda_generate(dp_engine_gen *g, const int32_t *prompts, int64_t B, int64_t P, const dp_gen_opts *o,
                         int32_t *out, dp_gen_stats *st, dp_err *err) {
    return dp_cuda_generate(g->impl, prompts, B, P, o, out, NULL, st, err);
}
static void cuda_gen_close(dp_engine_gen *g) {
    dp_cuda_gen_free(g->impl);
    dp_free(g->impl);
}

/* device-to-device copy (read + write bytes / s, best of 5 over 1 GiB) and a
 * bf16 GEMM through the engine's cuBLAS call (4096^3, best of 5) */
static void cuda_ceilings(int64_t C, int64_t F, double *bw, double *gemm) {
    (void)C, (void)F;
    size_t n = (size_t)1 << 30;
    if (!bw) n = 0; /* the GEMM rate only */
    void *a = dp_cuda_malloc(n, "bench"), *b = dp_cuda_malloc(n, "bench");
    dp_cuda_memset0(a, n, NULL);
    double best = 1e30;
    for (int r = 0; r < 6 && n; r++) {
        dp_cuda_sync(NULL);
        double t0 = dp_time_s();
        dp_cuda_d2d(b, a, n, NULL);
        dp_cuda_sync(NULL);
        double t = dp_time_s() - t0;
        if (r > 0 && t < best) best = t;
    }
    if (bw) *bw = 2.0 * (double)n / best;
    dp_cuda_free(a);
    dp_cuda_free(b);
    const int64_t S = 4096;
    dp_bf16 *x = dp_cuda_malloc((size_t)(S * S) * 2, "bench"), *w = dp_cuda_malloc((size_t)(S * S) * 2, "bench"),
            *y = dp_cuda_malloc((size_t)(S * S) * 2, "bench");
    dp_cuda_memset0(x, (size_t)(S * S) * 2, NULL);
    dp_cuda_memset0(w, (size_t)(S * S) * 2, NULL);
    dp_blas h = dp_cuda_blas_create(NULL);
    best = 1e30;
    for (int r = 0; r < 6; r++) {
        dp_cuda_sync(NULL);
        double t0 = dp_time_s();
        dp_cuda_matmul_forward(h, y, 0, x, w, S, S, S, 1.0f, 0.0f);
        dp_cuda_sync(NULL);
        double t = dp_time_s() - t0;
        if (r > 0 && t < best) best = t;
    }
    *gemm = 2.0 * (double)S * S * S / best;
    dp_cuda_blas_destroy(h);
    dp_cuda_free(x);
    dp_cuda_free(w);
    dp_cuda_free(y);
}

static const dp_engine_ops k_cuda_ops = {
    .open = cuda_open,
    .close = cuda_close,
    .embed = cuda_embed,
    .blocks = cuda_blocks,
    .set_hidden = cuda_set_hidden,
    .get_hidden = cuda_get_hidden,
    .head_nll = cuda_head_nll,
    .topk = cuda_topk,
    .buf_alloc = cuda_buf_alloc,
    .buf_free = cuda_buf_free,
    .buf_upload = cuda_buf_upload,
    .micro = cuda_micro,
    .zero_grad = cuda_zero_grad,
    .grad_flush = cuda_grad_flush,
    .params_changed = cuda_params_changed,
    .block_loads = cuda_block_loads,
    .device_bytes = cuda_device_bytes,
    .gen_open = cuda_gen_open,
    .generate = cuda_generate,
    .gen_close = cuda_gen_close,
    .ceilings = cuda_ceilings,
};

const dp_engine_ops *dp_engine_cuda_ops(void) {
    return &k_cuda_ops;
}
