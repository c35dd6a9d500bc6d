/* LLaMA inference on the GPU, block by block with the CUDA ops: the CPU
 * model's block_forward (llama.c) with bf16 activations and an fp32
 * residual stream; o_proj and down_proj add into the residual inside their
 * GEMMs (beta = 1), so no separate residual add runs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/backend.h"
#include "depthprune/llama_cuda.h"
#include "depthprune/tensor.h"

static int64_t max_i64(int64_t a, int64_t b) {
    return a > b ? a : b;
}

/* Device memory is one allocation per lifetime class (weights; activations
 * of the planned batch; training state; KV cache), laid out in two passes:
 * a planning pass with no base sums the aligned sizes, then the buffers are
 * carved from the one labelled allocation. */
typedef struct arena {
    char *base;
    size_t off;
    dp_cuda_llama *sep; /* DP_CUDA_SEPARATE=1: every buffer its own allocation, listed here */
} arena;

static void *carve(arena *a, size_t n_bytes) {
    size_t o = (a->off + 255) & ~(size_t)255;
    a->off = o + n_bytes;
    if (a->sep) { /* so the memory checker sees an overrun into the next buffer */
        dp_cuda_llama *g = a->sep;
        g->sep = dp_realloc(g->sep, (size_t)(g->n_sep + 1) * sizeof(void *), "GPU buffers");
        return g->sep[g->n_sep++] = dp_cuda_malloc(n_bytes ? n_bytes : 1, "GPU buffer (DP_CUDA_SEPARATE)");
    }
    return a->base ? a->base + o : NULL;
}

/* runs layout(g, arena) twice around one allocation labelled `label` (with
 * DP_CUDA_SEPARATE=1 in the environment: once, each buffer allocated alone,
 * for compute-sanitizer) */
static void *allocate_class(dp_cuda_llama *g, void (*layout)(dp_cuda_llama *, arena *), const char *label) {
    arena a = {NULL, 0, NULL};
    layout(g, &a);
    g->n_bytes += a.off;
    if (getenv("DP_CUDA_SEPARATE") && atoi(getenv("DP_CUDA_SEPARATE")) > 0) {
        a = (arena){NULL, 0, g};
        layout(g, &a);
        return NULL;
    }
    void *mem = dp_cuda_malloc(a.off, label);
    a = (arena){(char *)mem, 0, NULL};
    layout(g, &a);
    return mem;
}

static void widths(const dp_llama_config *c, int64_t *QD, int64_t *KD, int64_t *F) {
    *QD = *KD = *F = 0;
    for (int l = 0; l < c->n_layers; l++) {
        *QD = *QD > c->layer_heads[l] * c->head_dim ? *QD : c->layer_heads[l] * c->head_dim;
        *KD = *KD > c->layer_kv_heads[l] * c->head_dim ? *KD : c->layer_kv_heads[l] * c->head_dim;
        *F = *F > c->layer_inter[l] ? *F : c->layer_inter[l];
    }
}

static void acts_layout(dp_cuda_llama *g, arena *a) {
    const dp_llama_config *c = &g->m->cfg;
    int64_t N = g->Bmax * g->Tmax, C = c->hidden_size, HD = c->head_dim, half = HD / 2, QD, KD, F;
    widths(c, &QD, &KD, &F);
    g->cosb = carve(a, (size_t)(g->Tmax * half) * 2 * sizeof(float));
    g->sinb = g->cosb ? g->cosb + g->Tmax * half : NULL;
    g->x = carve(a, (size_t)(N * C) * sizeof(float));
    g->x2 = carve(a, (size_t)(N * C) * sizeof(float));
    g->ln = carve(a, (size_t)(N * C) * 2);
    g->q = carve(a, (size_t)(N * QD) * 2);
    g->ao = carve(a, (size_t)(N * QD) * 2);
    g->k = carve(a, (size_t)(N * KD) * 2);
    g->v = carve(a, (size_t)(N * KD) * 2);
    g->gate = carve(a, (size_t)(N * F) * 2);
    g->up = carve(a, (size_t)(N * F) * 2);
    g->h = carve(a, (size_t)(N * F) * 2);
    g->lse = carve(a, (size_t)(N * QD / HD) * sizeof(float));
    g->nll = carve(a, (size_t)N * sizeof(float));
    g->tok = carve(a, (size_t)N * sizeof(int32_t));
    g->tgt = carve(a, (size_t)N * sizeof(int32_t));
    g->head_scratch = carve(a, dp_cuda_head_scratch_bytes(g->chunk, c->vocab_size));
}

/* fp32 host values [o, o+n) -> bf16 at dst, in slices */
static void upload_range(dp_bf16 *dst, const float *src, int64_t n) {
    const int64_t slice = (int64_t)1 << 24;
    uint16_t *buf = dp_malloc((size_t)(n < slice ? n : slice) * sizeof(uint16_t) + 2, "GPU upload");
    for (int64_t o = 0; o < n; o += slice) {
        int64_t k = n - o < slice ? n - o : slice;
        for (int64_t i = 0; i < k; i++) buf[i] = dp_f32_to_bf16(src[o + i]);
        dp_cuda_h2d(dst + o, buf, (size_t)k * sizeof(uint16_t));
    }
    dp_free(buf);
}

/* The host layout: embedding, blocks 0..L-1, final norm, [head]. Streaming
 * keeps the embedding and the tail (norm, head) resident and one block in a
 * slot after them. */
static int64_t blocks_begin(const dp_llama *m) {
    return m->params[1].offset;
}
static int64_t blocks_end(const dp_llama *m) {
    return m->params[1 + m->cfg.n_layers * DP_LLAMA_BLOCK_TENSORS].offset;
}
void dp_cuda_llama_weights_upload(dp_cuda_llama *g) {
    const dp_llama *m = g->m;
    if (!g->streaming) {
        upload_range(g->w, m->mem, m->n_elems);
        return;
    }
    int64_t b0 = blocks_begin(m), b1 = blocks_end(m);
    upload_range(g->w, m->mem, b0);
    upload_range(g->w + b0, m->mem + b1, m->n_elems - b1);
    g->loaded = -1;
}

void dp_cuda_llama_load_block(dp_cuda_llama *g, int l) {
    if (!g->streaming || g->loaded == l) return;
    upload_range(g->w + g->slot, g->m->mem + dp_llama_block_first(g->m, l), dp_llama_block_elems(g->m, l));
    g->loaded = l;
    g->block_loads++;
}

int dp_cuda_llama_init(dp_cuda_llama *g, const dp_llama *m, int64_t Bmax, int64_t T, int allow_long, dp_err *err) {
    int streaming = g->streaming; /* the one setting a caller may make before init */
    memset(g, 0, sizeof *g);
    if (!m->mem) /* uploads read the fp32 host layout (the pipeline loads it for --device cuda) */
        return dp_err_set(err, DP_E_USAGE, "the GPU engine needs the fp32 host model, not a stored-dtype one");
    g->streaming = streaming;
    const dp_llama_config *c = &m->cfg;
    if (Bmax < 1 || T < 1)
        return dp_err_set(err, DP_E_USAGE, "GPU model: batch %lld x %lld", (long long)Bmax, (long long)T);
    if (!allow_long && T > c->max_position_embeddings)
        return dp_err_set(err, DP_E_USAGE, "sequence length %lld exceeds max_position_embeddings %lld", (long long)T,
                          (long long)c->max_position_embeddings);
    if (c->head_dim > 256)
        return dp_err_set(err, DP_E_UNSUPPORTED, "the CUDA attention supports head_dim <= 256, not %lld",
                          (long long)c->head_dim);
    g->m = m;
    g->Bmax = Bmax;
    g->Tmax = g->T = T;
    int64_t N = Bmax * T, HD = c->head_dim, half = HD / 2;
    int64_t n_w = m->n_elems;
    if (g->streaming) { /* resident: embedding + norm/head; one block slot */
        int64_t big = 0;
        for (int l = 0; l < c->n_layers; l++) big = dp_llama_block_elems(m, l) > big ? dp_llama_block_elems(m, l) : big;
        g->slot = blocks_begin(m) + (m->n_elems - blocks_end(m));
        n_w = g->slot + big;
    }
    g->w = dp_cuda_malloc((size_t)n_w * sizeof(dp_bf16),
                          g->streaming ? "GPU weights (bf16, streamed blocks)" : "GPU weights (bf16)");
    g->n_bytes += (size_t)n_w * sizeof(dp_bf16);
    dp_cuda_llama_weights_upload(g);
    g->chunk = N < 1024 ? N : 1024;
    g->acts = allocate_class(g, acts_layout, "GPU activations");
    /* RoPE tables exactly as the CPU state builds them */
    float *cs = dp_malloc((size_t)(T * half) * 2 * sizeof(float), "GPU rope");
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < half; j++) {
            float ang = (float)t * m->inv_freq[j];
            cs[t * half + j] = cosf(ang);
            cs[T * half + t * half + j] = sinf(ang);
        }
    dp_cuda_h2d(g->cosb, cs, (size_t)(T * half) * 2 * sizeof(float));
    dp_free(cs);
    g->blas = dp_cuda_blas_create(NULL);
    return DP_OK;
}

int dp_cuda_llama_open(dp_cuda_llama *g, const dp_llama *m, int64_t Bmax, int64_t T, int allow_long, int local_rank,
                       dp_err *err) {
    int streaming = g->streaming;
    memset(g, 0, sizeof *g);
    g->streaming = streaming;
    dp_err why;
    dp_err_clear(&why);
    int n = dp_cuda_device_count(&why);
    if (n <= 0) return dp_err_set(err, DP_E_DEVICE, "--device cuda: no usable GPU: %s", why.msg);
    dp_cuda_set_device(local_rank % n);
    return dp_cuda_llama_init(g, m, Bmax, T, allow_long, err);
}

void dp_cuda_llama_free(dp_cuda_llama *g) {
    if (!g->m) return;
    dp_cuda_free(g->w);
    dp_cuda_free(g->acts);
    dp_cuda_free(g->train_mem);
    dp_cuda_free(g->full_mem);
    for (int i = 0; i < g->n_sep; i++) dp_cuda_free(g->sep[i]);
    dp_free(g->sep);
    dp_cuda_blas_destroy(g->blas);
    memset(g, 0, sizeof *g);
}

/* the device copy of a host weight pointer; with streaming, a block's
 * tensor loads that block into the slot first */
static const dp_bf16 *wp(dp_cuda_llama *g, const float *host_ptr) {
    const dp_llama *m = g->m;
    int64_t o = host_ptr - m->mem;
    if (!g->streaming) return g->w + o;
    int64_t b0 = blocks_begin(m), b1 = blocks_end(m);
    if (o < b0) return g->w + o;
    if (o >= b1) return g->w + b0 + (o - b1);
    int lo = 0, hi = (int)m->cfg.n_layers - 1; /* the block holding offset o */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (dp_llama_block_first(m, mid) <= o)
            lo = mid;
        else
            hi = mid - 1;
    }
    dp_cuda_llama_load_block(g, lo);
    return g->w + g->slot + (o - dp_llama_block_first(m, lo));
}

static int check_b(const dp_cuda_llama *g, int64_t B) {
    if (B < 1 || B > g->Bmax)
        dp_fatal("GPU model planned for %lld sequences, asked for %lld", (long long)g->Bmax, (long long)B);
    return 0;
}

int dp_cuda_llama_embed(dp_cuda_llama *g, const int32_t *tokens, int64_t B, dp_err *err) {
    check_b(g, B);
    int64_t N = B * g->T, V = g->m->cfg.vocab_size;
    for (int64_t n = 0; n < N; n++)
        if (tokens[n] < 0 || tokens[n] >= V)
            return dp_err_set(err, DP_E_RANGE, "token id %d at position %lld is outside the vocabulary (0..%lld)",
                              tokens[n], (long long)n, (long long)V - 1);
    dp_cuda_h2d(g->tok, tokens, (size_t)N * sizeof(int32_t));
    dp_cuda_embed_forward(g->x, g->tok, wp(g, g->m->w.embed), N, g->m->cfg.hidden_size, NULL);
    return DP_OK;
}

void dp_cuda_llama_set_hidden(dp_cuda_llama *g, const float *x, int64_t B) {
    check_b(g, B);
    dp_cuda_h2d(g->x, x, (size_t)(B * g->T * g->m->cfg.hidden_size) * sizeof(float));
}

void dp_cuda_llama_get_hidden(const dp_cuda_llama *g, float *x, int64_t B) {
    check_b(g, B);
    dp_cuda_sync(NULL);
    dp_cuda_d2h(x, g->x, (size_t)(B * g->T * g->m->cfg.hidden_size) * sizeof(float));
}

void dp_cuda_llama_set_hidden_dev(dp_cuda_llama *g, const float *x, int64_t B) {
    check_b(g, B);
    dp_cuda_d2d(g->x, x, (size_t)(B * g->T * g->m->cfg.hidden_size) * sizeof(float), NULL);
}

void dp_cuda_llama_get_hidden_dev(const dp_cuda_llama *g, float *x, int64_t B) {
    check_b(g, B);
    dp_cuda_d2d(x, g->x, (size_t)(B * g->T * g->m->cfg.hidden_size) * sizeof(float), NULL);
}

/* ---- one block ---- */

static const dp_bf16 *lora_a(const dp_cuda_llama *g, int l, int k) {
    const dp_lora *lo = g->lora;
    return lo && lo->a[l][k] ? g->lw + (lo->a[l][k] - lo->mem) : NULL;
}
static const dp_bf16 *lora_b(const dp_cuda_llama *g, int l, int k) {
    return g->lw + (g->lora->b[l][k] - g->lora->mem);
}
static float *grad_a(const dp_cuda_llama *g, int l, int k) {
    return g->lg + (g->lora->a[l][k] - g->lora->mem);
}
static float *grad_b(const dp_cuda_llama *g, int l, int k) {
    return g->lg + (g->lora->b[l][k] - g->lora->mem);
}
static int drops(const dp_cuda_llama *g, int use_keys) {
    return use_keys && g->lora && g->lora->dropout > 0;
}

/* out (bf16, or fp32 += when out_f32) = inp W^T (+ the adapter of (l, k)) */
static void linear(dp_cuda_llama *g, int l, int k, void *out, int out_f32, const dp_bf16 *inp, int64_t N, int64_t IN,
                   int64_t OUT, int use_keys) {
    dp_cuda_matmul_forward(g->blas, out, out_f32, inp, wp(g, g->m->w.blk[l][k]), N, IN, OUT, 1.0f,
                           out_f32 ? 1.0f : 0.0f);
    const dp_bf16 *a = lora_a(g, l, k);
    if (!a) return;
    const dp_bf16 *x = inp;
    if (drops(g, use_keys)) {
        dp_cuda_lora_dropout(g->xdrop, inp, g->keys, l, k, N, IN, g->lora->dropout, NULL);
        x = g->xdrop;
    }
    int64_t RK = g->lora->rank;
    dp_cuda_lora_forward(g->blas, out, out_f32, g->xa + (int64_t)k * g->Bmax * g->Tmax * RK, x, a, lora_b(g, l, k),
                         (float)g->lora->scale, N, IN, OUT, RK);
}

/* the adapter's backward: dinp (fp32) += its input gradient; A/B gradients */
static void linear_lora_backward(dp_cuda_llama *g, int l, int k, float *dinp, const dp_bf16 *dout, const dp_bf16 *inp,
                                 int64_t N, int64_t IN, int64_t OUT, int use_keys) {
    const dp_bf16 *a = lora_a(g, l, k);
    if (!a) return;
    int64_t RK = g->lora->rank;
    const dp_bf16 *xa = g->xa + (int64_t)k * g->Bmax * g->Tmax * RK;
    if (drops(g, use_keys)) { /* the input gradient passes the same mask */
        dp_cuda_lora_dropout(g->xdrop, inp, g->keys, l, k, N, IN, g->lora->dropout, NULL);
        dp_cuda_memset0(g->dwide2, (size_t)(N * IN) * sizeof(float), NULL);
        dp_cuda_lora_backward(g->blas, g->dwide2, grad_a(g, l, k), grad_b(g, l, k), g->lora_scratch, dout, g->xdrop, xa,
                              a, lora_b(g, l, k), (float)g->lora->scale, N, IN, OUT, RK, NULL);
        dp_cuda_lora_dropout_backward(dinp, g->dwide2, g->keys, l, k, N, IN, g->lora->dropout, NULL);
    } else {
        dp_cuda_lora_backward(g->blas, dinp, grad_a(g, l, k), grad_b(g, l, k), g->lora_scratch, dout, inp, xa, a,
                              lora_b(g, l, k), (float)g->lora->scale, N, IN, OUT, RK, NULL);
    }
}

/* A block's KV cache during generation: positions pos0.. of this call go
 * into it; pos0 > 0 means one new token per sequence (decoding). */
typedef struct kv_cache {
    dp_bf16 *kc, *vc; /* (B, NKV, tcap, HD) */
    int64_t tcap, pos0;
} kv_cache;

/* x <- x + attn(ln1(x)); x <- x + mlp(ln2(x)), in place on g->x. With
 * save (training): rstd1/rstd2, res2 (the residual after attention) and ln2
 * are kept for the backward. With kv (generation): k/v go to the cache and
 * a decoding step attends over it. */
static void block_attention(dp_cuda_llama *g, int l, int64_t B, int save, int use_keys, const kv_cache *kv);

static void block(dp_cuda_llama *g, int l, int skip, int64_t B, int save, int use_keys, const kv_cache *kv) {
    dp_heartbeat();
    const dp_llama_config *c = &g->m->cfg;
    int64_t T = g->T, N = B * T, C = c->hidden_size, F = c->layer_inter[l];
    float *const *w = g->m->w.blk[l];
    float eps = (float)c->rms_norm_eps;
    dp_bf16 *ln2 = save ? g->ln2 : g->ln;
    if (!(skip & DP_SKIP_ATTN)) block_attention(g, l, B, save, use_keys, kv); /* skipped: x stays */
    if (save) dp_cuda_d2d(g->res2, g->x, (size_t)(N * C) * sizeof(float), NULL);
    if (skip & DP_SKIP_MLP) return;
    dp_cuda_rmsnorm_forward(ln2, save ? g->rstd2 : NULL, g->x, wp(g, w[DP_BT_MLP_NORM]), N, C, eps, NULL);
    linear(g, l, DP_BT_GATE, g->gate, 0, ln2, N, C, F, use_keys);
    linear(g, l, DP_BT_UP, g->up, 0, ln2, N, C, F, use_keys);
    dp_cuda_swiglu_forward(g->h, g->gate, g->up, N * F, NULL);
    linear(g, l, DP_BT_DOWN, g->x, 1, g->h, N, F, C, use_keys);
}

/* x <- x + attn(ln1(x)) of block l (the first half of block()) */
static void block_attention(dp_cuda_llama *g, int l, int64_t B, int save, int use_keys, const kv_cache *kv) {
    const dp_llama_config *c = &g->m->cfg;
    int64_t T = g->T, N = B * T, C = c->hidden_size;
    int64_t NH = c->layer_heads[l], NKV = c->layer_kv_heads[l], HD = c->head_dim, QD = NH * HD, KD = NKV * HD;
    float *const *w = g->m->w.blk[l];
    float eps = (float)c->rms_norm_eps;
    dp_cuda_rmsnorm_forward(g->ln, save ? g->rstd1 : NULL, g->x, wp(g, w[DP_BT_ATTN_NORM]), N, C, eps, NULL);
    linear(g, l, DP_BT_Q, g->q, 0, g->ln, N, C, QD, use_keys);
    linear(g, l, DP_BT_K, g->k, 0, g->ln, N, C, KD, use_keys);
    linear(g, l, DP_BT_V, g->v, 0, g->ln, N, C, KD, use_keys);
    int64_t pos0 = kv ? kv->pos0 : 0;
    dp_cuda_rope_forward(g->q, g->cosb, g->sinb, B, T, NH, HD, pos0, NULL);
    dp_cuda_rope_forward(g->k, g->cosb, g->sinb, B, T, NKV, HD, pos0, NULL);
    if (kv) dp_cuda_kv_store(kv->kc, kv->vc, g->k, g->v, B, T, NKV, HD, kv->tcap, pos0, NULL);
    if (kv && pos0 > 0) {
        if (T != 1) dp_fatal("decoding takes one token per sequence, got %lld", (long long)T);
        dp_cuda_attention_decode(g->ao, g->q, kv->kc, kv->vc, B, NH, NKV, HD, kv->tcap, pos0 + 1, NULL);
    } else {
        dp_cuda_attention_forward(g->ao, g->lse, g->q, g->k, g->v, B, T, NH, NKV, HD, NULL);
    }
    linear(g, l, DP_BT_O, g->x, 1, g->ao, N, QD, C, use_keys);
}

/* Gradient of block l: g->dx holds d(out) on entry, d(in) on return.
 * The block is recomputed from its saved input xin first. */
static void block_mlp_backward(dp_cuda_llama *g, int l, int64_t B, int use_keys, float *const *dw);
static void block_attention_backward(dp_cuda_llama *g, int l, const float *xin, int64_t B, int use_keys,
                                     float *const *dw);

static void block_backward(dp_cuda_llama *g, int l, int skip, const float *xin, int64_t B, int use_keys, float *gbase,
                           int64_t base_off) {
    const dp_llama_config *c = &g->m->cfg;
    int64_t N = B * g->T, C = c->hidden_size;
    /* base-weight gradients, when gbase is set: tensor k of this block at
     * gbase + (its offset - base_off) (block-local for Taylor, global for
     * full-parameter training) */
    float *dw[DP_LLAMA_BLOCK_TENSORS] = {0};
    if (gbase) {
        const dp_llama_param *p0 = &g->m->params[1 + l * DP_LLAMA_BLOCK_TENSORS];
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) dw[k] = gbase + (p0[k].offset - base_off);
    }
    dp_cuda_d2d(g->x, xin, (size_t)(N * C) * sizeof(float), NULL);
    block(g, l, skip, B, 1, use_keys, NULL);
    /* a skipped sub-layer is the identity: d(its input) = d(its output) */
    if (skip & DP_SKIP_MLP) {
        dp_cuda_d2d(g->dx2, g->dx, (size_t)(N * C) * sizeof(float), NULL);
    } else {
        block_mlp_backward(g, l, B, use_keys, dw);
    }
    if (!(skip & DP_SKIP_ATTN)) block_attention_backward(g, l, xin, B, use_keys, dw);
    float *t = g->dx;
    g->dx = g->dx2;
    g->dx2 = t;
}

/* MLP: out = res2 + down(silu(gate) * up), gate/up = W ln2(res2); g->dx = d(out) -> g->dx2 = d(res2) */
static void block_mlp_backward(dp_cuda_llama *g, int l, int64_t B, int use_keys, float *const *dw) {
    const dp_llama_config *c = &g->m->cfg;
    int64_t T = g->T, N = B * T, C = c->hidden_size, F = c->layer_inter[l];
    float *const *w = g->m->w.blk[l];
    dp_blas h = g->blas;
    dp_cuda_f32_to_bf16(g->g16, g->dx, N * C, NULL);
    dp_cuda_matmul_backward(h, g->dwide, 0.0f, dw[DP_BT_DOWN], g->g16, g->h, wp(g, w[DP_BT_DOWN]), N, F, C, 1.0f);
    linear_lora_backward(g, l, DP_BT_DOWN, g->dwide, g->g16, g->h, N, F, C, use_keys);
    dp_cuda_f32_to_bf16(g->h, g->dwide, N * F, NULL); /* h is no longer needed: it takes d(h) */
    dp_cuda_swiglu_backward(g->gate, g->up, g->h, g->gate, g->up, N * F, NULL); /* in place, element-wise */
    dp_cuda_matmul_backward(h, g->dwide, 0.0f, dw[DP_BT_GATE], g->gate, g->ln2, wp(g, w[DP_BT_GATE]), N, C, F, 1.0f);
    dp_cuda_matmul_backward(h, g->dwide, 1.0f, dw[DP_BT_UP], g->up, g->ln2, wp(g, w[DP_BT_UP]), N, C, F, 1.0f);
    linear_lora_backward(g, l, DP_BT_GATE, g->dwide, g->gate, g->ln2, N, C, F, use_keys);
    linear_lora_backward(g, l, DP_BT_UP, g->dwide, g->up, g->ln2, N, C, F, use_keys);
    dp_cuda_d2d(g->dx2, g->dx, (size_t)(N * C) * sizeof(float), NULL);
    dp_cuda_rmsnorm_backward(g->dx2, dw[DP_BT_MLP_NORM], g->norm_scratch, g->dwide, g->res2, wp(g, w[DP_BT_MLP_NORM]),
                             g->rstd2, N, C, NULL);
}

/* attention: res2 = x + o(attn(rope(q), rope(k), v)), q/k/v = W ln1(x); g->dx2 = d(res2) -> d(x) */
static void block_attention_backward(dp_cuda_llama *g, int l, const float *xin, int64_t B, int use_keys,
                                     float *const *dw) {
    const dp_llama_config *c = &g->m->cfg;
    int64_t T = g->T, N = B * T, C = c->hidden_size;
    int64_t NH = c->layer_heads[l], NKV = c->layer_kv_heads[l], HD = c->head_dim, QD = NH * HD, KD = NKV * HD;
    float *const *w = g->m->w.blk[l];
    dp_blas h = g->blas;
    dp_cuda_f32_to_bf16(g->g16, g->dx2, N * C, NULL);
    dp_cuda_matmul_backward(h, g->dwide, 0.0f, dw[DP_BT_O], g->g16, g->ao, wp(g, w[DP_BT_O]), N, QD, C, 1.0f);
    linear_lora_backward(g, l, DP_BT_O, g->dwide, g->g16, g->ao, N, QD, C, use_keys);
    dp_cuda_f32_to_bf16(g->g16, g->dwide, N * QD, NULL);
    dp_cuda_attention_backward(g->dq, g->dk, g->dv, g->dsum, g->g16, g->ao, g->lse, g->q, g->k, g->v, B, T, NH, NKV, HD,
                               NULL);
    dp_cuda_rope_backward(g->dq, g->cosb, g->sinb, B, T, NH, HD, NULL);
    dp_cuda_rope_backward(g->dk, g->cosb, g->sinb, B, T, NKV, HD, NULL);
    dp_cuda_matmul_backward(h, g->dwide, 0.0f, dw[DP_BT_Q], g->dq, g->ln, wp(g, w[DP_BT_Q]), N, C, QD, 1.0f);
    dp_cuda_matmul_backward(h, g->dwide, 1.0f, dw[DP_BT_K], g->dk, g->ln, wp(g, w[DP_BT_K]), N, C, KD, 1.0f);
    dp_cuda_matmul_backward(h, g->dwide, 1.0f, dw[DP_BT_V], g->dv, g->ln, wp(g, w[DP_BT_V]), N, C, KD, 1.0f);
    linear_lora_backward(g, l, DP_BT_Q, g->dwide, g->dq, g->ln, N, C, QD, use_keys);
    linear_lora_backward(g, l, DP_BT_K, g->dwide, g->dk, g->ln, N, C, KD, use_keys);
    linear_lora_backward(g, l, DP_BT_V, g->dwide, g->dv, g->ln, N, C, KD, use_keys);
    dp_cuda_rmsnorm_backward(g->dx2, dw[DP_BT_ATTN_NORM], g->norm_scratch, g->dwide, xin, wp(g, w[DP_BT_ATTN_NORM]),
                             g->rstd1, N, C, NULL);
}

void dp_cuda_llama_blocks(dp_cuda_llama *g, const dp_layer_map *map, int from, int to, int64_t B) {
    check_b(g, B);
    for (int i = from; i < to; i++) block(g, map->layer[i], map->skip[map->layer[i]], B, 0, 0, NULL);
}

double dp_cuda_llama_head_nll(dp_cuda_llama *g, const int32_t *targets, float *nll, int64_t B) {
    check_b(g, B);
    const dp_llama_config *c = &g->m->cfg;
    int64_t N = B * g->T, C = c->hidden_size, V = c->vocab_size;
    dp_cuda_rmsnorm_forward(g->ln, NULL, g->x, wp(g, g->m->w.norm), N, C, (float)c->rms_norm_eps, NULL);
    dp_cuda_h2d(g->tgt, targets, (size_t)N * sizeof(int32_t));
    dp_cuda_head_args a = {.targets = g->tgt, .alpha = 0.0f, .temp = 1.0f, .gscale = 1.0f, .chunk = g->chunk};
    dp_cuda_head_loss(g->blas, g->nll, NULL, NULL, NULL, g->head_scratch, g->ln, wp(g, g->m->w.head), &a, N, C, V,
                      NULL);
    float *h = nll ? nll : dp_malloc((size_t)N * sizeof(float), "GPU nll");
    dp_cuda_sync(NULL);
    dp_cuda_d2h(h, g->nll, (size_t)N * sizeof(float));
    double sum = 0.0;
    for (int64_t n = 0; n < N; n++) sum += (double)h[n];
    if (!nll) dp_free(h);
    return sum;
}

/* ---- LoRA training ---- */

static void train_layout(dp_cuda_llama *g, arena *a) {
    const dp_llama_config *c = &g->m->cfg;
    const dp_lora *lora = g->lora;
    int64_t N = g->Bmax * g->Tmax, C = c->hidden_size, HD = c->head_dim, QD, KD, F, K = g->K;
    widths(c, &QD, &KD, &F);
    int64_t W = C > F ? C : F;
    W = W > QD ? W : QD;
    int64_t n_lora = lora ? lora->n_elems : 0, rank = lora ? lora->rank : 0;
    g->lw = carve(a, (size_t)n_lora * 2);
    g->lg = carve(a, (size_t)n_lora * sizeof(float));
    g->wg = g->n_wgrad ? carve(a, (size_t)g->n_wgrad * sizeof(float)) : NULL;
    g->xs = carve(a, (size_t)g->n_saved * (size_t)(N * C) * sizeof(float));
    g->res2 = carve(a, (size_t)(N * C) * sizeof(float));
    g->dx = carve(a, (size_t)(N * C) * sizeof(float));
    g->dx2 = carve(a, (size_t)(N * C) * sizeof(float));
    g->dwide = carve(a, (size_t)(N * W) * sizeof(float));
    g->dwide2 = carve(a, (size_t)(N * W) * sizeof(float));
    float **rows[] = {&g->rstd1, &g->rstd2, &g->rstdf, &g->ce, &g->kd};
    for (size_t i = 0; i < 5; i++) *rows[i] = carve(a, (size_t)N * sizeof(float));
    g->dsum = carve(a, (size_t)(N * QD / HD) * sizeof(float));
    g->ln2 = carve(a, (size_t)(N * C) * 2);
    g->g16 = carve(a, (size_t)(N * W) * 2);
    g->dq = carve(a, (size_t)(N * QD) * 2);
    g->dk = carve(a, (size_t)(N * KD) * 2);
    g->dv = carve(a, (size_t)(N * KD) * 2);
    g->xa = carve(a, (size_t)(DP_LLAMA_BLOCK_TENSORS * N * rank) * 2);
    g->xdrop = carve(a, (size_t)(N * W) * 2);
    g->keys = carve(a, (size_t)N * sizeof(uint64_t));
    g->tidx = K ? carve(a, (size_t)(N * K) * sizeof(int32_t)) : NULL;
    g->tval = K ? carve(a, (size_t)(N * K) * sizeof(float)) : NULL;
    g->tlse = K ? carve(a, (size_t)N * sizeof(float)) : NULL;
    g->lora_scratch = carve(a, dp_cuda_lora_scratch_bytes(N, rank));
    g->norm_scratch = carve(a, dp_cuda_rmsnorm_scratch_bytes(N, C));
}

int dp_cuda_llama_train_init(dp_cuda_llama *g, const dp_lora *lora, int n_blocks, int64_t K, int64_t n_wgrad,
                             dp_err *err) {
    const dp_llama_config *c = &g->m->cfg;
    if (lora && !lora->mem) return dp_err_set(err, DP_E_USAGE, "GPU training: LoRA adapters without memory");
    g->n_wgrad = n_wgrad;
    if (K < 0 || K > c->vocab_size)
        return dp_err_set(err, DP_E_USAGE, "teacher top-k %lld outside 0..vocab", (long long)K);
    g->lora = lora;
    g->K = K;
    g->n_saved = n_blocks + 1;
    g->train_mem = allocate_class(g, train_layout, "GPU training state");
    if (lora) {
        dp_cuda_llama_lora_upload(g);
        dp_cuda_llama_lora_zero_grad(g);
    }
    return DP_OK;
}

static void full_layout(dp_cuda_llama *g, arena *a) {
    g->gfull = carve(a, (size_t)g->m->n_elems * sizeof(float));
}

int dp_cuda_llama_full_init(dp_cuda_llama *g, dp_err *err) {
    if (!g->train_mem || g->lora)
        return dp_err_set(err, DP_E_USAGE, "full-parameter GPU training: train_init without LoRA first");
    g->full_mem = allocate_class(g, full_layout, "GPU weight gradients (fp32)");
    dp_cuda_memset0(g->gfull, (size_t)g->m->n_elems * sizeof(float), NULL);
    return DP_OK;
}

void dp_cuda_llama_full_grad(dp_cuda_llama *g, float *host) {
    dp_cuda_sync(NULL);
    dp_cuda_d2h(host, g->gfull, (size_t)g->m->n_elems * sizeof(float));
    dp_cuda_memset0(g->gfull, (size_t)g->m->n_elems * sizeof(float), NULL);
}

void dp_cuda_llama_lora_upload(dp_cuda_llama *g) {
    const dp_lora *lo = g->lora;
    uint16_t *buf = dp_malloc((size_t)lo->n_elems * sizeof(uint16_t), "GPU upload");
    for (int64_t i = 0; i < lo->n_elems; i++) buf[i] = dp_f32_to_bf16(lo->mem[i]);
    dp_cuda_h2d(g->lw, buf, (size_t)lo->n_elems * sizeof(uint16_t));
    dp_free(buf);
}

void dp_cuda_llama_lora_zero_grad(dp_cuda_llama *g) {
    dp_cuda_memset0(g->lg, (size_t)g->lora->n_elems * sizeof(float), NULL);
}

void dp_cuda_llama_lora_grad(const dp_cuda_llama *g, float *host) {
    dp_cuda_sync(NULL);
    dp_cuda_d2h(host, g->lg, (size_t)g->lora->n_elems * sizeof(float));
}

int dp_cuda_llama_teacher_topk(dp_cuda_llama *t, const dp_layer_map *map, const int32_t *tokens, int64_t B, int64_t T,
                               int64_t K, double temp, int32_t *tidx, float *tval, float *tlse, dp_err *err) {
    const dp_llama_config *c = &t->m->cfg;
    if (T < 1 || T > t->Tmax || B < 1 || B > t->Bmax)
        return dp_err_set(err, DP_E_USAGE, "teacher batch %lld x %lld outside the planned %lld x %lld", (long long)B,
                          (long long)T, (long long)t->Bmax, (long long)t->Tmax);
    t->T = T;
    int rc = dp_cuda_llama_embed(t, tokens, B, err);
    if (rc) return rc;
    for (int i = 0; i < map->n; i++) block(t, map->layer[i], map->skip[map->layer[i]], B, 0, 0, NULL);
    int64_t N = B * T, C = c->hidden_size;
    dp_cuda_rmsnorm_forward(t->ln, NULL, t->x, wp(t, t->m->w.norm), N, C, (float)c->rms_norm_eps, NULL);
    dp_cuda_head_topk(t->blas, tidx, tval, tlse, t->head_scratch, t->ln, wp(t, t->m->w.head), N, C, c->vocab_size, K,
                      (float)temp, t->chunk, NULL);
    return DP_OK;
}

int dp_cuda_llama_train_micro(dp_cuda_llama *g, const dp_layer_map *map, const dp_cuda_micro *mb, double *ce_sum,
                              double *kd_sum, dp_err *err) {
    const dp_llama_config *c = &g->m->cfg;
    int64_t B = mb->B, T = mb->T, N = B * T, C = c->hidden_size, V = c->vocab_size;
    if (T < 1 || T > g->Tmax || B < 1 || B > g->Bmax)
        return dp_err_set(err, DP_E_USAGE, "GPU micro-batch %lld x %lld outside the planned %lld x %lld", (long long)B,
                          (long long)T, (long long)g->Bmax, (long long)g->Tmax);
    if (map->n + 1 > g->n_saved)
        return dp_err_set(err, DP_E_USAGE, "GPU training was planned for %d blocks", g->n_saved - 1);
    int kd = mb->tidx != NULL || mb->teacher != NULL;
    if (kd && !g->K) return dp_err_set(err, DP_E_USAGE, "GPU training was planned without a teacher");
    if (mb->teacher) { /* the teacher first: its embedding of the same tokens fills its own buffers */
        if (mb->teacher->m->cfg.vocab_size != c->vocab_size)
            return dp_err_set(err, DP_E_MISMATCH, "teacher and student vocabularies differ");
        int trc = dp_cuda_llama_teacher_topk(mb->teacher, mb->teacher_map, mb->tokens, B, T, g->K, mb->temp, g->tidx,
                                             g->tval, g->tlse, err);
        if (trc) return trc;
    }
    g->T = T;
    int rc = dp_cuda_llama_embed(g, mb->tokens, B, err);
    if (rc) return rc;
    int use_keys = mb->keys != NULL && mb->backward;
    if (use_keys) dp_cuda_h2d(g->keys, mb->keys, (size_t)N * sizeof(uint64_t));
    if (mb->tidx) {
        dp_cuda_h2d(g->tidx, mb->tidx, (size_t)(N * g->K) * sizeof(int32_t));
        dp_cuda_h2d(g->tval, mb->tval, (size_t)(N * g->K) * sizeof(float));
        dp_cuda_h2d(g->tlse, mb->tlse, (size_t)N * sizeof(float));
    }
    size_t NC = (size_t)(N * C) * sizeof(float);
    int64_t stride = g->Bmax * g->Tmax * C;
    for (int i = 0; i < map->n; i++) {
        if (mb->backward) dp_cuda_d2d(g->xs + i * stride, g->x, NC, NULL);
        block(g, map->layer[i], map->skip[map->layer[i]], B, 0, use_keys, NULL);
    }
    if (mb->backward) dp_cuda_d2d(g->xs + (int64_t)map->n * stride, g->x, NC, NULL);
    /* head: final norm, chunked logits, CE (+ KD), d(final norm output) */
    dp_cuda_rmsnorm_forward(g->ln, g->rstdf, g->x, wp(g, g->m->w.norm), N, C, (float)c->rms_norm_eps, NULL);
    dp_cuda_h2d(g->tgt, mb->targets, (size_t)N * sizeof(int32_t));
    dp_cuda_head_args a = {.targets = g->tgt,
                           .tidx = kd ? g->tidx : NULL,
                           .tval = g->tval,
                           .tlse = g->tlse,
                           .K = g->K,
                           .alpha = (float)(kd ? mb->alpha : 0.0),
                           .temp = (float)mb->temp,
                           .gscale = (float)mb->gscale,
                           .chunk = g->chunk};
    float *dw_head = g->gfull && mb->backward ? g->gfull + (g->m->w.head - g->m->mem) : NULL;
    dp_cuda_head_loss(g->blas, g->ce, g->kd, mb->backward ? g->dwide : NULL, dw_head, g->head_scratch, g->ln,
                      wp(g, g->m->w.head), &a, N, C, V, NULL);
    float *rows = dp_malloc((size_t)N * 2 * sizeof(float), "GPU losses");
    dp_cuda_sync(NULL);
    dp_cuda_d2h(rows, g->ce, (size_t)N * sizeof(float));
    dp_cuda_d2h(rows + N, g->kd, (size_t)N * sizeof(float));
    for (int64_t n = 0; n < N; n++) {
        *ce_sum += (double)rows[n];
        if (kd) *kd_sum += (double)rows[N + n];
    }
    dp_free(rows);
    if (!mb->backward) return DP_OK;
    float *gf = g->gfull; /* full-parameter training: head (in the loss call), final norm, blocks, embedding */
    dp_cuda_memset0(g->dx, NC, NULL);
    dp_cuda_rmsnorm_backward(g->dx, gf ? gf + (g->m->w.norm - g->m->mem) : NULL, g->norm_scratch, g->dwide,
                             g->xs + (int64_t)map->n * stride, wp(g, g->m->w.norm), g->rstdf, N, C, NULL);
    int wgrad = mb->block_done != NULL && !gf;
    if (wgrad && (!g->wg || !mb->wgrad_host)) return dp_err_set(err, DP_E_USAGE, "weight gradients were not planned");
    for (int i = map->n - 1; i >= 0; i--) {
        int l = map->layer[i];
        size_t nb = 0;
        if (wgrad) {
            const dp_llama_param *p0 = &g->m->params[1 + l * DP_LLAMA_BLOCK_TENSORS];
            nb =
                (size_t)(p0[DP_LLAMA_BLOCK_TENSORS - 1].offset + p0[DP_LLAMA_BLOCK_TENSORS - 1].n_elems - p0[0].offset);
            if ((int64_t)nb > g->n_wgrad)
                return dp_err_set(err, DP_E_USAGE, "block %d's gradient exceeds the planned buffer", l);
            dp_cuda_memset0(g->wg, nb * sizeof(float), NULL);
        }
        if (gf)
            block_backward(g, l, map->skip[l], g->xs + i * stride, B, use_keys, gf, 0);
        else
            block_backward(g, l, map->skip[l], g->xs + i * stride, B, use_keys, wgrad ? g->wg : NULL,
                           g->m->params[1 + l * DP_LLAMA_BLOCK_TENSORS].offset);
        if (wgrad) {
            dp_cuda_sync(NULL);
            dp_cuda_d2h(mb->wgrad_host, g->wg, nb * sizeof(float));
            mb->block_done(l, mb->ctx);
        }
    }
    if (gf) dp_cuda_embed_backward(gf + (g->m->w.embed - g->m->mem), g->dx, g->tok, N, C, NULL);
    return DP_OK;
}

/* ---- generation ---- */

int dp_cuda_gen_init(dp_cuda_gen *cg, const dp_llama *m, const dp_layer_map *map, int64_t B, int64_t P, int64_t Tcap,
                     int local_rank, dp_err *err) {
    memset(cg, 0, sizeof *cg);
    if (P < 1 || Tcap < P)
        return dp_err_set(err, DP_E_USAGE, "generation: prompt %lld, positions %lld", (long long)P, (long long)Tcap);
    int rc = dp_cuda_llama_open(&cg->g, m, B, Tcap, 0, local_rank, err);
    if (rc) return rc;
    cg->map = map;
    cg->B = B;
    cg->P = P;
    cg->Tcap = Tcap;
    int64_t KD = 0;
    for (int i = 0; i < map->n; i++) KD = max_i64(KD, m->cfg.layer_kv_heads[map->layer[i]] * m->cfg.head_dim);
    cg->cache_bytes = (size_t)map->n * (size_t)(B * KD * Tcap) * 2 * sizeof(dp_bf16);
    cg->kc = dp_cuda_malloc(cg->cache_bytes, "GPU KV cache");
    cg->g.n_bytes += cg->cache_bytes;
    cg->vc = cg->kc + cg->cache_bytes / 2 / sizeof(dp_bf16);
    cg->logits = dp_malloc((size_t)(B * m->cfg.vocab_size) * sizeof(float), "generate");
    return DP_OK;
}

void dp_cuda_gen_free(dp_cuda_gen *cg) {
    if (!cg->g.m) return;
    dp_cuda_free(cg->kc); /* vc is its second half */
    dp_free(cg->logits);
    dp_cuda_llama_free(&cg->g);
    memset(cg, 0, sizeof *cg);
}

/* the blocks on B x T new positions starting at pos0, then the head on each
 * sequence's last new position -> cg->logits (host, B x V) */
static void gen_forward(dp_cuda_gen *cg, int64_t B, int64_t T, int64_t pos0) {
    dp_cuda_llama *g = &cg->g;
    const dp_llama_config *c = &g->m->cfg;
    int64_t C = c->hidden_size, V = c->vocab_size, HD = c->head_dim;
    g->T = T;
    size_t per = 0;
    for (int i = 0; i < cg->map->n; i++) {
        int l = cg->map->layer[i];
        int64_t KD = c->layer_kv_heads[l] * HD;
        kv_cache kv = {cg->kc + per, cg->vc + per, cg->Tcap, pos0};
        block(g, l, cg->map->skip[l], B, 0, 0, &kv);
        per += (size_t)(cg->B * KD * cg->Tcap);
    }
    /* the last position of each sequence, gathered into x2 */
    for (int64_t b = 0; b < B; b++)
        dp_cuda_d2d(g->x2 + b * C, g->x + ((b + 1) * T - 1) * C, (size_t)C * sizeof(float), NULL);
    dp_cuda_rmsnorm_forward(g->ln, NULL, g->x2, wp(g, g->m->w.norm), B, C, (float)c->rms_norm_eps, NULL);
    float *dl = (float *)g->head_scratch; /* chunk >= B rows of fp32 logits */
    dp_cuda_matmul_forward(g->blas, dl, 1, g->ln, wp(g, g->m->w.head), B, C, V, 1.0f, 0.0f);
    dp_cuda_sync(NULL);
    dp_cuda_d2h(cg->logits, dl, (size_t)(B * V) * sizeof(float));
}

int dp_cuda_generate(dp_cuda_gen *cg, const int32_t *prompts, int64_t B, int64_t P, const dp_gen_opts *o, int32_t *out,
                     float *logits, dp_gen_stats *st, dp_err *err) {
    dp_cuda_llama *g = &cg->g;
    int64_t V = g->m->cfg.vocab_size;
    if (B > cg->B || P > cg->P || P + o->max_new > cg->Tcap || B > g->chunk)
        return dp_err_set(err, DP_E_RANGE,
                          "batch %lld x (%lld + %lld) does not fit the GPU generation state (%lld x %lld)",
                          (long long)B, (long long)P, (long long)o->max_new, (long long)cg->B, (long long)cg->Tcap);
    dp_gen_stats s = {0};
    s.cache_bytes = cg->cache_bytes;
    s.scratch_bytes = g->n_bytes - cg->cache_bytes;
    dp_gen_picker pk;
    dp_gen_picker_init(&pk, B, V, o->seed);
    double t0 = dp_time_s();
    g->T = P;
    int rc = dp_cuda_llama_embed(g, prompts, B, err); /* checks the ids */
    if (!rc) {
        gen_forward(cg, B, P, 0);
        s.prefill_s = dp_time_s() - t0;
        t0 = dp_time_s();
        for (int64_t step = 0; step < o->max_new && rc == DP_OK; step++) {
            if (step > 0) {
                g->T = 1;
                if ((rc = dp_cuda_llama_embed(g, pk.cur, B, err))) break;
                gen_forward(cg, B, 1, P + step - 1);
                s.steps++;
            }
            if (dp_gen_pick(&pk, cg->logits, step, o, out, logits) == 0) break;
        }
        s.decode_s = dp_time_s() - t0;
    }
    g->T = g->Tmax;
    if (st) *st = s;
    dp_gen_picker_free(&pk);
    return rc;
}
