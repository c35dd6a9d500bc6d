/* The engine: dispatch to a backend table, and the CPU backend (dp_llama,
 * fp32, the reference every other backend is tested against). */
#include <math.h>
#include <string.h>

#include "depthprune/backend.h"
#include "depthprune/engine.h"
#include "depthprune/ops.h"

int dp_device_parse(const char *s, dp_device *d, dp_err *err) {
    if (s && !strcmp(s, "cpu"))
        *d = DP_DEVICE_CPU;
    else if (s && !strcmp(s, "cuda"))
        *d = DP_DEVICE_CUDA;
    else
        return dp_err_set(err, DP_E_USAGE, "unknown device '%s' (expected cpu or cuda)", s ? s : "");
    return DP_OK;
}

const char *dp_device_name(dp_device d) {
    return d == DP_DEVICE_CUDA ? "cuda" : "cpu";
}

static const dp_engine_ops *ops_for(dp_device dev, dp_err *err) {
    if (dev == DP_DEVICE_CPU) return &dp_engine_cpu_ops;
    if (dp_backend_check("cuda", err)) return NULL; /* the one place a missing GPU is reported */
    const dp_engine_ops *o = dp_engine_cuda_ops();
    if (!o) dp_err_set(err, DP_E_DEVICE, "--device cuda: this depthprune was built without CUDA");
    return o;
}

int dp_engine_open(dp_engine *e, dp_device dev, const dp_llama *m, const dp_engine_plan *p, dp_err *err) {
    memset(e, 0, sizeof *e);
    /* the shapes first: bad input reads the same on every device */
    if (p->B < 1 || p->T < 1)
        return dp_err_set(err, DP_E_USAGE, "batch %lld and sequence length %lld must be positive", (long long)p->B,
                          (long long)p->T);
    if (!p->allow_long && p->T > m->cfg.max_position_embeddings)
        return dp_err_set(err, DP_E_RANGE,
                          "sequence length %lld exceeds the model's max_position_embeddings %lld "
                          "(override with --allow-long-seq)",
                          (long long)p->T, (long long)m->cfg.max_position_embeddings);
    const dp_engine_ops *o = ops_for(dev, err);
    if (!o) return err->code;
    e->device = dev;
    e->ops = o;
    e->m = m;
    e->plan = *p;
    if (e->plan.n_blocks <= 0) e->plan.n_blocks = (int)m->cfg.n_layers;
    e->t = p->T;
    if (p->train) e->n_grad = p->lora ? p->lora->n_elems : p->full ? m->n_elems : 0;
    int rc = o->open(e, err);
    if (rc) {
        memset(e, 0, sizeof *e);
        return rc;
    }
    return DP_OK;
}

void dp_engine_close(dp_engine *e) {
    if (!e->ops) return;
    e->ops->close(e);
    memset(e, 0, sizeof *e);
}

/* ---- the work counted for the cost ledger ----
 * Model FLOPs by the formula, per token: 2 x the parameters of every matrix it is multiplied
 * by (a skipped sub-layer's are not) + causal attention, 2 x t x (query dim) per block (QK^T
 * and AV over t/2 positions on average); the head 2 x C x V. A backward pass adds twice the
 * forward with weight gradients (full training, Taylor, width importance) and once without
 * (LoRA: activation gradients; the adapters' own are left out). Tokens: those scored by a
 * head. Per process, over every engine it opened; the caller sums over ranks. */
static double g_flops;
static int64_t g_tokens;

void dp_engine_work(double *flops, int64_t *tokens) {
    *flops = g_flops;
    *tokens = g_tokens;
}

double dp_engine_block_flops(const dp_llama_config *c, int l, int skip, int64_t t) {
    int64_t C = c->hidden_size, QD = c->layer_heads[l] * c->head_dim, KD = c->layer_kv_heads[l] * c->head_dim;
    double f = 0;
    if (!(skip & DP_SKIP_ATTN)) f += 2.0 * (double)(2 * C * QD + 2 * C * KD) + 2.0 * (double)t * (double)QD;
    if (!(skip & DP_SKIP_MLP)) f += 2.0 * 3.0 * (double)(C * c->layer_inter[l]);
    return f;
}

static double map_flops(const dp_llama_config *c, const dp_layer_map *map, int from, int to, int64_t t) {
    double f = 0;
    for (int i = from; i < to; i++) f += dp_engine_block_flops(c, map->layer[i], map->skip[map->layer[i]], t);
    return f;
}

static double head_flops(const dp_llama_config *c) {
    return 2.0 * (double)(c->hidden_size * c->vocab_size);
}

static void check_b(const dp_engine *e, int64_t b) {
    if (b < 1 || b > e->plan.B)
        dp_fatal("engine planned for %lld sequences, asked for %lld", (long long)e->plan.B, (long long)b);
}

int dp_engine_embed(dp_engine *e, const int32_t *tokens, int64_t b, int64_t t, dp_err *err) {
    check_b(e, b);
    if (t < 1 || t > e->plan.T)
        return dp_err_set(err, DP_E_USAGE, "sequence length %lld outside the planned 1..%lld", (long long)t,
                          (long long)e->plan.T);
    e->t = t;
    return e->ops->embed(e, tokens, b, err);
}
void dp_engine_blocks(dp_engine *e, const dp_layer_map *map, int from, int to, int64_t b) {
    check_b(e, b);
    if (map->n > e->plan.n_blocks) dp_fatal("engine planned for %d blocks, asked for %d", e->plan.n_blocks, map->n);
    e->ops->blocks(e, map, from, to, b);
    g_flops += (double)(b * e->t) * map_flops(&e->m->cfg, map, from, to, e->t);
}
void dp_engine_set_hidden(dp_engine *e, const float *x, int64_t b) {
    check_b(e, b);
    e->ops->set_hidden(e, x, b, 0);
}
void dp_engine_get_hidden(dp_engine *e, float *x, int64_t b) {
    check_b(e, b);
    e->ops->get_hidden(e, x, b, 0);
}
void dp_engine_set_hidden_buf(dp_engine *e, const float *buf, int64_t b) {
    check_b(e, b);
    e->ops->set_hidden(e, buf, b, 1);
}
void dp_engine_get_hidden_buf(dp_engine *e, float *buf, int64_t b) {
    check_b(e, b);
    e->ops->get_hidden(e, buf, b, 1);
}
double dp_engine_head_nll(dp_engine *e, const int32_t *targets, float *nll, int64_t b) {
    check_b(e, b);
    g_flops += (double)(b * e->t) * head_flops(&e->m->cfg);
    g_tokens += b * e->t;
    return e->ops->head_nll(e, targets, nll, b);
}
int dp_engine_topk(dp_engine *e, const dp_layer_map *map, const int32_t *tokens, int64_t b, int64_t t, int64_t K,
                   double temp, int32_t *idx, float *val, float *lse, dp_err *err) {
    check_b(e, b);
    if (t < 1 || t > e->plan.T || K < 1 || K > e->m->cfg.vocab_size)
        return dp_err_set(err, DP_E_USAGE, "top-k of %lld tokens, K = %lld: outside the plan", (long long)t,
                          (long long)K);
    e->t = t;
    g_flops += (double)(b * t) * (map_flops(&e->m->cfg, map, 0, map->n, t) + head_flops(&e->m->cfg));
    g_tokens += b * t;
    return e->ops->topk(e, map, tokens, b, K, temp, idx, val, lse, err);
}
float *dp_engine_buf_alloc(dp_engine *e, int64_t n) {
    return e->ops->buf_alloc(e, n);
}
void dp_engine_buf_free(dp_engine *e, float *buf) {
    if (buf) e->ops->buf_free(e, buf);
}
void dp_engine_buf_upload(dp_engine *e, float *buf, const float *host, int64_t n) {
    e->ops->buf_upload(e, buf, host, n);
}
int dp_engine_micro(dp_engine *e, const dp_layer_map *map, const dp_micro *mb, double *ce_sum, double *kd_sum,
                    dp_err *err) {
    if (mb->B < 1 || mb->B > e->plan.B || mb->T < 1 || mb->T > e->plan.T)
        return dp_err_set(err, DP_E_USAGE, "micro-batch %lld x %lld outside the planned %lld x %lld", (long long)mb->B,
                          (long long)mb->T, (long long)e->plan.B, (long long)e->plan.T);
    if (map->n > e->plan.n_blocks)
        return dp_err_set(err, DP_E_USAGE, "engine planned for %d blocks, asked for %d", e->plan.n_blocks, map->n);
    if (mb->backward && !e->plan.train) return dp_err_set(err, DP_E_USAGE, "engine not planned for training");
    int kd = mb->teacher || mb->tidx;
    if (kd && mb->tidx && !e->plan.K) return dp_err_set(err, DP_E_USAGE, "engine planned without a teacher");
    if (mb->teacher && mb->teacher->device != e->device)
        return dp_err_set(err, DP_E_USAGE, "the teacher runs on another device");
    if (mb->teacher && mb->teacher->m->cfg.vocab_size != e->m->cfg.vocab_size)
        return dp_err_set(err, DP_E_MISMATCH, "teacher and student vocabularies differ");
    if (mb->block_done && (!e->plan.wgrad || !mb->wgrad_host))
        return dp_err_set(err, DP_E_USAGE, "weight gradients were not planned");
    e->t = mb->T;
    double fwd = (double)(mb->B * mb->T) * (map_flops(&e->m->cfg, map, 0, map->n, mb->T) + head_flops(&e->m->cfg));
    g_flops += fwd * (!mb->backward ? 1 : e->plan.full || e->plan.wgrad || !e->plan.lora ? 3 : 2);
    if (mb->teacher) /* an online teacher's forward */
        g_flops +=
            (double)(mb->B * mb->T) * (map_flops(&mb->teacher->m->cfg, mb->teacher_map, 0, mb->teacher_map->n, mb->T) +
                                       head_flops(&mb->teacher->m->cfg));
    g_tokens += mb->B * mb->T;
    return e->ops->micro(e, map, mb, ce_sum, kd_sum, err);
}
void dp_engine_zero_grad(dp_engine *e) {
    if (e->grad) memset(e->grad, 0, (size_t)e->n_grad * sizeof(float));
    e->ops->zero_grad(e);
}
void dp_engine_grad_flush(dp_engine *e) {
    e->ops->grad_flush(e);
}
void dp_engine_params_changed(dp_engine *e) {
    e->ops->params_changed(e);
}
int64_t dp_engine_block_loads(const dp_engine *e) {
    return e->ops->block_loads(e);
}
size_t dp_engine_device_bytes(const dp_engine *e) {
    return e->ops->device_bytes(e);
}

int dp_engine_gen_open(dp_engine_gen *g, dp_device dev, const dp_llama *m, const dp_layer_map *map, int64_t B,
                       int64_t P, int64_t T, int local_rank, dp_err *err) {
    memset(g, 0, sizeof *g);
    const dp_engine_ops *o = ops_for(dev, err);
    if (!o) return err->code;
    g->device = dev;
    int rc = o->gen_open(g, m, map, B, P, T, local_rank, err);
    if (rc) memset(g, 0, sizeof *g);
    return rc;
}
int dp_engine_generate(dp_engine_gen *g, const int32_t *prompts, int64_t B, int64_t P, const dp_gen_opts *o,
                       int32_t *out, dp_gen_stats *st, dp_err *err) {
    const dp_engine_ops *x = g->device == DP_DEVICE_CPU ? &dp_engine_cpu_ops : dp_engine_cuda_ops();
    return x->generate(g, prompts, B, P, o, out, st, err);
}
void dp_engine_gen_close(dp_engine_gen *g) {
    if (!g->impl) return;
    const dp_engine_ops *x = g->device == DP_DEVICE_CPU ? &dp_engine_cpu_ops : dp_engine_cuda_ops();
    x->gen_close(g);
    memset(g, 0, sizeof *g);
}
void dp_engine_ceilings(dp_device dev, int64_t C, int64_t F, double *bandwidth, double *gemm) {
    const dp_engine_ops *x = dev == DP_DEVICE_CPU ? &dp_engine_cpu_ops : dp_engine_cuda_ops();
    x->ceilings(C, F, bandwidth, gemm);
}

/* ================= the CPU backend ================= */

typedef struct cpu_engine {
    dp_llama_state s;
    int cur;             /* the residual stream is s.x[cur] */
    dp_lora lgrad;       /* LoRA gradients (mem aliases e->grad) */
    dp_llama_view gview; /* full-parameter gradients (into e->grad) */
    int32_t *kidx;       /* online teacher top-k scratch (B*T*K) */
    float *kval, *klse, *krow;
} cpu_engine;

static cpu_engine *cpu(const dp_engine *e) {
    return e->impl;
}

static int cpu_open(dp_engine *e, dp_err *err) {
    const dp_engine_plan *p = &e->plan;
    cpu_engine *c = dp_calloc(1, sizeof *c, "engine");
    int flags =
        p->train ? DP_STATE_TRAIN | (p->recompute ? DP_STATE_RECOMPUTE : 0) : (p->logits ? 0 : DP_STATE_NLL_ONLY);
    int rc = dp_llama_state_init(&c->s, e->m, p->lora, p->B, p->T, p->n_blocks, flags, p->allow_long, err);
    if (rc) {
        dp_free(c);
        return rc;
    }
    if (p->train && p->lora) {
        dp_lora_like(&c->lgrad, p->lora, "lora grads");
        e->grad = c->lgrad.mem;
    } else if (p->train && p->full) {
        e->grad = dp_calloc((size_t)e->m->n_elems, sizeof(float), "grads");
        dp_llama_view_of(e->m, e->grad, &c->gview);
    }
    if (p->train && p->K > 0) {
        int64_t n = p->B * p->T;
        c->kidx = dp_calloc((size_t)(n * p->K), sizeof(int32_t), "kd");
        c->kval = dp_calloc((size_t)(n * p->K), sizeof(float), "kd");
        c->klse = dp_calloc((size_t)n, sizeof(float), "kd");
    }
    if (p->train) c->krow = dp_malloc((size_t)(p->B * p->T) * sizeof(float), "kd");
    /* a stored-dtype model: inference that can go block-major (the PPL sweep) upcasts each block
     * once per pass instead of once per candidate */
    e->streaming = !p->train && e->m->src && p->stream_weights != 0;
    e->impl = c;
    return DP_OK;
}

static void cpu_close(dp_engine *e) {
    cpu_engine *c = cpu(e);
    dp_llama_state_free(&c->s);
    if (c->lgrad.mem)
        dp_lora_free(&c->lgrad);
    else
        dp_free(e->grad);
    dp_free(c->kidx), dp_free(c->kval), dp_free(c->klse), dp_free(c->krow);
    dp_free(c);
}

/* the run state shaped for b x e->t (the planned memory always fits) */
static int cpu_shape(dp_engine *e, int64_t b, dp_err *err) {
    cpu_engine *c = cpu(e);
    c->cur = 0;
    return dp_llama_state_reshape(&c->s, e->m, e->plan.lora, b, e->t, err);
}

static void cpu_same_shape(const dp_engine *e, int64_t b) {
    if (cpu(e)->s.B != b || cpu(e)->s.T != e->t)
        dp_fatal("engine: batch %lld x %lld after a batch of %lld x %lld", (long long)b, (long long)e->t,
                 (long long)cpu(e)->s.B, (long long)cpu(e)->s.T);
}

static int cpu_embed(dp_engine *e, const int32_t *tokens, int64_t b, dp_err *err) {
    int rc = cpu_shape(e, b, err);
    return rc ? rc : dp_llama_embed(e->m, &cpu(e)->s, tokens, err);
}

static int64_t stream_len(const dp_engine *e) {
    return cpu(e)->s.N * e->m->cfg.hidden_size;
}
static float *stream_at(const dp_engine *e, int i) {
    return cpu(e)->s.x + (int64_t)i * stream_len(e);
}

static void cpu_blocks(dp_engine *e, const dp_layer_map *map, int from, int to, int64_t b) {
    cpu_engine *c = cpu(e);
    cpu_same_shape(e, b);
    if (c->cur != from) memcpy(stream_at(e, from), stream_at(e, c->cur), (size_t)stream_len(e) * sizeof(float));
    dp_llama_blocks_forward(e->m, e->plan.lora, map, &c->s, from, to);
    c->cur = to;
}

static void cpu_set_hidden(dp_engine *e, const float *x, int64_t b, int on_device) {
    (void)on_device; /* CPU buffers are host memory */
    dp_err err;
    if (cpu_shape(e, b, &err)) dp_fatal("engine: %s", err.msg);
    memcpy(stream_at(e, 0), x, (size_t)stream_len(e) * sizeof(float));
}

static void cpu_get_hidden(dp_engine *e, float *x, int64_t b, int on_device) {
    (void)on_device;
    cpu_engine *c = cpu(e);
    cpu_same_shape(e, b);
    memcpy(x, stream_at(e, c->cur), (size_t)stream_len(e) * sizeof(float));
}

static double cpu_head_nll(dp_engine *e, const int32_t *targets, float *nll, int64_t b) {
    cpu_engine *c = cpu(e);
    cpu_same_shape(e, b);
    double sum = dp_llama_head_nll(e->m, &c->s, c->cur, targets);
    if (nll) memcpy(nll, c->s.nll, (size_t)c->s.N * sizeof(float));
    return sum;
}

static int cpu_topk(dp_engine *e, const dp_layer_map *map, const int32_t *tokens, int64_t b, int64_t K, double temp,
                    int32_t *idx, float *val, float *lse, dp_err *err) {
    cpu_engine *c = cpu(e);
    if (c->s.flags != 0) return dp_err_set(err, DP_E_USAGE, "engine not planned for logits");
    int rc = cpu_shape(e, b, err);
    if (!rc) rc = dp_llama_forward(e->m, NULL, map, &c->s, tokens, err);
    if (!rc) dp_teacher_topk(idx, val, lse, c->s.logits, c->s.N, e->m->cfg.vocab_size, K, temp);
    return rc;
}

static float *cpu_buf_alloc(dp_engine *e, int64_t n) {
    (void)e;
    return dp_malloc((size_t)n * sizeof(float), "engine buffer");
}
static void cpu_buf_free(dp_engine *e, float *buf) {
    (void)e;
    dp_free(buf);
}
static void cpu_buf_upload(dp_engine *e, float *buf, const float *host, int64_t n) {
    (void)e;
    memcpy(buf, host, (size_t)n * sizeof(float));
}

/* each block's gradient at the start of wgrad_host, in its own layout */
static void block_local_view(const dp_llama *m, float *base, dp_llama_view *gv) {
    memset(gv, 0, sizeof *gv);
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++)
            gv->blk[l][k] = base + (m->params[1 + l * DP_LLAMA_BLOCK_TENSORS + k].offset -
                                    m->params[1 + l * DP_LLAMA_BLOCK_TENSORS].offset);
}

static int cpu_micro(dp_engine *e, const dp_layer_map *map, const dp_micro *mb, double *ce_sum, double *kd_sum,
                     dp_err *err) {
    cpu_engine *c = cpu(e);
    const dp_llama *m = e->m;
    dp_lora *lora = e->plan.lora;
    int64_t N = mb->B * mb->T, V = m->cfg.vocab_size;
    int rc = cpu_shape(e, mb->B, err);
    if (rc) return rc;
    if (!mb->backward) { /* losses only: the chunked head, no logits kept */
        if (lora) lora->drop_key = NULL;
        if ((rc = dp_llama_embed(m, &c->s, mb->tokens, err))) return rc;
        dp_llama_blocks_forward(m, lora, map, &c->s, 0, map->n);
        *ce_sum += dp_llama_head_nll(m, &c->s, map->n, mb->targets);
        return DP_OK;
    }
    int kd = mb->teacher || mb->tidx;
    double ce_w = (kd ? 1.0 - mb->alpha : 1.0) * mb->gscale, kd_w = kd ? mb->alpha * mb->gscale : 0.0;
    if (lora) lora->drop_key = mb->keys;
    rc = dp_llama_forward(m, lora, map, &c->s, mb->tokens, err);
    if (rc) {
        if (lora) lora->drop_key = NULL;
        return rc;
    }
    dp_llama_zero_dlogits(&c->s, m);
    *ce_sum += dp_llama_loss_ce(&c->s, m, mb->targets, NULL, ce_w);
    if (kd) {
        const int32_t *idx = mb->tidx;
        const float *val = mb->tval, *lse = mb->tlse, *tlog = NULL;
        int64_t K = e->plan.K;
        if (mb->teacher) {
            dp_engine *t = mb->teacher;
            cpu_engine *tc = cpu(t);
            t->t = mb->T;
            if (tc->s.flags != 0) rc = dp_err_set(err, DP_E_USAGE, "teacher engine not planned for logits");
            if (!rc) rc = cpu_shape(t, mb->B, err);
            if (!rc) rc = dp_llama_forward(t->m, NULL, mb->teacher_map, &tc->s, mb->tokens, err);
            if (rc) {
                if (lora) lora->drop_key = NULL;
                return rc;
            }
            tlog = tc->s.logits;
            if (K) {
                dp_teacher_topk(c->kidx, c->kval, c->klse, tlog, N, V, K, mb->temp);
                idx = c->kidx, val = c->kval, lse = c->klse;
            }
        }
        if (idx) {
            *kd_sum += dp_kd_topk_forward(c->krow, c->s.logits, idx, val, lse, mb->targets, mb->temp, N, V, K);
            dp_kd_topk_backward(c->s.dlogits, c->s.logits, idx, val, lse, mb->targets, mb->temp, kd_w, N, V, K);
        } else {
            *kd_sum += dp_kd_forward(c->krow, c->s.logits, tlog, mb->targets, mb->temp, N, V);
            dp_kd_backward(c->s.dlogits, c->s.logits, tlog, mb->targets, mb->temp, kd_w, N, V);
        }
    }
    if (mb->block_done) {
        dp_llama_view gv;
        block_local_view(m, mb->wgrad_host, &gv);
        dp_llama_backward_hook(m, lora, map, &c->s, mb->tokens, &gv, NULL, mb->block_done, mb->ctx);
    } else {
        dp_llama_backward(m, lora, map, &c->s, mb->tokens, e->plan.full ? &c->gview : NULL, lora ? &c->lgrad : NULL);
    }
    if (lora) lora->drop_key = NULL;
    return DP_OK;
}

static void cpu_nothing(dp_engine *e) {
    (void)e;
} /* gradients and parameters live on the host already */
static int64_t cpu_block_loads(const dp_engine *e) {
    return cpu(e)->s.wc.loads;
}
static size_t cpu_device_bytes(const dp_engine *e) {
    (void)e;
    return 0;
}

static int cpu_gen_open(dp_engine_gen *g, const dp_llama *m, const dp_layer_map *map, int64_t B, int64_t P, int64_t T,
                        int local_rank, dp_err *err) {
    (void)local_rank;
    dp_gen *x = dp_calloc(1, sizeof *x, "generation");
    int rc = dp_gen_init(x, m, map, B, P, T, err);
    if (rc)
        dp_free(x);
    else
        g->impl = x;
    return rc;
}
static int cpu_generate(dp_engine_gen *g, const int32_t *prompts, int64_t B, int64_t P, const dp_gen_opts *o,
                        int32_t *out, dp_gen_stats *st, dp_err *err) {
    return dp_generate(g->impl, prompts, B, P, o, out, NULL, st, err);
}
static void cpu_gen_close(dp_engine_gen *g) {
    dp_gen_free(g->impl);
    dp_free(g->impl);
}

/* Best-of-5 read bandwidth over a 512 MiB buffer, all threads (bytes/s). */
static double cpu_bandwidth(void) {
    size_t n = ((size_t)512 << 20) / sizeof(float);
    float *a = dp_malloc(n * sizeof(float), "bench");
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023);
    double best = 1e30, sink = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = dp_time_s(), s = 0;
        /* blocks of 4096 summed with simd (independent lanes: the loads, not
         * the adds, are the limit), the block sums in double */
#pragma omp parallel for schedule(static) reduction(+ : s)
        for (size_t b = 0; b < n / 4096; b++) {
            float part = 0;
#pragma omp simd reduction(+ : part)
            for (size_t i = b * 4096; i < b * 4096 + 4096; i++) part += a[i];
            s += part;
        }
        double t = dp_time_s() - t0;
        sink += s;
        if (t < best) best = t;
    }
    dp_free(a);
    if (sink == 42.0) dp_log("bench: %g", sink); /* keeps the loop */
    return (double)n * sizeof(float) / best;
}

/* Best-of-3 GEMM throughput (flop/s) on a shape at least 512 x 1024 x 2048
 * (the model's if larger): near the machine's peak, so the compute floor
 * stays a lower bound for the small shapes of a decode step. */
static double cpu_gemm(int64_t C, int64_t F) {
    int64_t N = 512;
    if (C < 1024) C = 1024;
    if (F < 2048) F = 2048;
    float *x = dp_calloc((size_t)(N * C), sizeof(float), "bench"),
          *w = dp_calloc((size_t)(F * C), sizeof(float), "bench"),
          *y = dp_malloc((size_t)(N * F) * sizeof(float), "bench");
    for (int64_t i = 0; i < N * C; i++) x[i] = (float)((i % 7) - 3) * 0.01f;
    for (int64_t i = 0; i < F * C; i++) w[i] = (float)((i % 5) - 2) * 0.01f;
    double best = 1e30;
    for (int r = 0; r < 4; r++) {
        double t0 = dp_time_s();
        dp_matmul_forward(y, x, w, N, C, F);
        double t = dp_time_s() - t0;
        if (r > 0 && t < best) best = t;
    }
    dp_free(x);
    dp_free(w);
    dp_free(y);
    return 2.0 * (double)N * C * F / best;
}

static void cpu_ceilings(int64_t C, int64_t F, double *bandwidth, double *gemm) {
    if (bandwidth) *bandwidth = cpu_bandwidth();
    *gemm = cpu_gemm(C, F);
}

const dp_engine_ops dp_engine_cpu_ops = {
    .open = cpu_open,
    .close = cpu_close,
    .embed = cpu_embed,
    .blocks = cpu_blocks,
    .set_hidden = cpu_set_hidden,
    .get_hidden = cpu_get_hidden,
    .head_nll = cpu_head_nll,
    .topk = cpu_topk,
    .buf_alloc = cpu_buf_alloc,
    .buf_free = cpu_buf_free,
    .buf_upload = cpu_buf_upload,
    .micro = cpu_micro,
    .zero_grad = cpu_nothing,
    .grad_flush = cpu_nothing,
    .params_changed = cpu_nothing,
    .block_loads = cpu_block_loads,
    .device_bytes = cpu_device_bytes,
    .gen_open = cpu_gen_open,
    .generate = cpu_generate,
    .gen_close = cpu_gen_close,
    .ceilings = cpu_ceilings,
};

void dp_teacher_topk(int32_t *idx, float *val, float *lse, const float *logits, int64_t N, int64_t V, int64_t K,
                     double temp) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *x = logits + n * V;
        int32_t *ix = idx + n * K;
        float *vx = val + n * K;
        int64_t have = 0;
        /* insertion into a sorted top-K list: descending value, ties to the lower index */
        for (int64_t i = 0; i < V; i++) {
            float v = x[i];
            if (have == K && !(v > vx[K - 1])) continue;
            int64_t j = have < K ? have++ : K - 1;
            while (j > 0 && v > vx[j - 1]) {
                vx[j] = vx[j - 1];
                ix[j] = ix[j - 1];
                j--;
            }
            vx[j] = v;
            ix[j] = (int32_t)i;
        }
        double mx = -INFINITY, s = 0.0, it = 1.0 / temp;
        for (int64_t i = 0; i < V; i++)
            if ((double)x[i] * it > mx) mx = (double)x[i] * it;
        for (int64_t i = 0; i < V; i++) s += exp((double)x[i] * it - mx);
        lse[n] = (float)(log(s) + mx);
    }
}
