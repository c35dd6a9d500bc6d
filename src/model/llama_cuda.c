/* LLaMA inference on the GPU, block by block with the CUDA ops: the CPU
 * model's block_forward (llama.c) with bf16 activations and an fp32
 * residual stream; o_proj and down_proj add into the residual inside their
 * GEMMs (beta = 1), so no separate residual add runs. */
#include <math.h>
#include <string.h>

#include "depthprune/backend.h"
#include "depthprune/llama_cuda.h"
#include "depthprune/tensor.h"

static int64_t max_i64(int64_t a, int64_t b) { return a > b ? a : b; }

static void *take(dp_cuda_llama *g, size_t n_bytes, const char *label) {
    g->n_bytes += n_bytes;
    return dp_cuda_malloc(n_bytes, label);
}

int dp_cuda_llama_init(dp_cuda_llama *g, const dp_llama *m, int64_t Bmax, int64_t T, int allow_long, dp_err *err) {
    memset(g, 0, sizeof *g);
    const dp_llama_config *c = &m->cfg;
    if (Bmax < 1 || T < 1) return dp_err_set(err, DP_E_USAGE, "GPU model: batch %lld x %lld", (long long)Bmax, (long long)T);
    if (!allow_long && T > c->max_position_embeddings)
        return dp_err_set(err, DP_E_USAGE, "sequence length %lld exceeds max_position_embeddings %lld", (long long)T,
                          (long long)c->max_position_embeddings);
    if (c->head_dim > 256) return dp_err_set(err, DP_E_UNSUPPORTED, "the CUDA attention supports head_dim <= 256, not %lld", (long long)c->head_dim);
    g->m = m;
    g->Bmax = Bmax;
    g->T = T;
    int64_t N = Bmax * T, C = c->hidden_size, HD = c->head_dim, half = HD / 2, V = c->vocab_size;
    int64_t QD = 0, KD = 0, F = 0;
    for (int l = 0; l < c->n_layers; l++) {
        QD = max_i64(QD, c->layer_heads[l] * HD);
        KD = max_i64(KD, c->layer_kv_heads[l] * HD);
        F = max_i64(F, c->layer_inter[l]);
    }
    /* weights: fp32 layout -> bf16 on the host in slices, then uploaded */
    g->w = take(g, (size_t)m->n_elems * sizeof(dp_bf16), "GPU weights (bf16)");
    const int64_t slice = (int64_t)1 << 24;
    uint16_t *buf = dp_malloc((size_t)slice * sizeof(uint16_t), "GPU upload");
    for (int64_t o = 0; o < m->n_elems; o += slice) {
        int64_t n = m->n_elems - o < slice ? m->n_elems - o : slice;
        for (int64_t i = 0; i < n; i++) buf[i] = dp_f32_to_bf16(m->mem[o + i]);
        dp_cuda_h2d(g->w + o, buf, (size_t)n * sizeof(uint16_t));
    }
    dp_free(buf);
    /* RoPE tables exactly as the CPU state builds them */
    float *cs = dp_malloc((size_t)(T * half) * 2 * sizeof(float), "GPU rope");
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < half; j++) {
            float a = (float)t * m->inv_freq[j];
            cs[t * half + j] = cosf(a);
            cs[T * half + t * half + j] = sinf(a);
        }
    g->cosb = take(g, (size_t)(T * half) * 2 * sizeof(float), "GPU rope");
    g->sinb = g->cosb + T * half;
    dp_cuda_h2d(g->cosb, cs, (size_t)(T * half) * 2 * sizeof(float));
    dp_free(cs);
    g->x = take(g, (size_t)(N * C) * sizeof(float), "GPU residual");
    g->x2 = take(g, (size_t)(N * C) * sizeof(float), "GPU residual");
    g->ln = take(g, (size_t)(N * C) * 2, "GPU activations");
    g->q = take(g, (size_t)(N * QD) * 2, "GPU activations");
    g->ao = take(g, (size_t)(N * QD) * 2, "GPU activations");
    g->k = take(g, (size_t)(N * KD) * 2, "GPU activations");
    g->v = take(g, (size_t)(N * KD) * 2, "GPU activations");
    g->gate = take(g, (size_t)(N * F) * 2, "GPU activations");
    g->up = take(g, (size_t)(N * F) * 2, "GPU activations");
    g->h = take(g, (size_t)(N * F) * 2, "GPU activations");
    g->lse = take(g, (size_t)(N * QD / HD) * sizeof(float), "GPU activations");
    g->nll = take(g, (size_t)N * sizeof(float), "GPU activations");
    g->tok = take(g, (size_t)N * sizeof(int32_t), "GPU tokens");
    g->tgt = take(g, (size_t)N * sizeof(int32_t), "GPU tokens");
    g->chunk = N < 1024 ? N : 1024;
    g->head_scratch = take(g, dp_cuda_head_scratch_bytes(g->chunk, V), "GPU head scratch");
    g->blas = dp_cuda_blas_create(NULL);
    return DP_OK;
}

int dp_cuda_llama_open(dp_cuda_llama *g, const dp_llama *m, int64_t Bmax, int64_t T, int allow_long, int local_rank,
                       dp_err *err) {
    memset(g, 0, sizeof *g);
    dp_err why;
    dp_err_clear(&why);
    int n = dp_cuda_device_count(&why);
    if (n <= 0) return dp_err_set(err, DP_E_DEVICE, "--device cuda: no usable GPU: %s", why.msg);
    dp_cuda_set_device(local_rank % n);
    return dp_cuda_llama_init(g, m, Bmax, T, allow_long, err);
}

void dp_cuda_llama_free(dp_cuda_llama *g) {
    if (!g->m) return;
    void *p[] = {g->w, g->cosb, g->x, g->x2, g->ln, g->q, g->ao, g->k, g->v, g->gate, g->up, g->h,
                 g->lse, g->nll, g->tok, g->tgt, g->head_scratch};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) dp_cuda_free(p[i]);
    dp_cuda_blas_destroy(g->blas);
    memset(g, 0, sizeof *g);
}

static const dp_bf16 *wp(const dp_cuda_llama *g, const float *host_ptr) { return g->w + (host_ptr - g->m->mem); }

static int check_b(const dp_cuda_llama *g, int64_t B) {
    if (B < 1 || B > g->Bmax) dp_fatal("GPU model planned for %lld sequences, asked for %lld", (long long)g->Bmax, (long long)B);
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

/* x <- x + attn(ln1(x)); x <- x + mlp(ln2(x)), in place on g->x */
static void block(dp_cuda_llama *g, int l, int64_t B) {
    dp_heartbeat();
    const dp_llama_config *c = &g->m->cfg;
    int64_t T = g->T, N = B * T, C = c->hidden_size, F = c->layer_inter[l];
    int64_t NH = c->layer_heads[l], NKV = c->layer_kv_heads[l], HD = c->head_dim, QD = NH * HD, KD = NKV * HD;
    float *const *w = g->m->w.blk[l];
    float eps = (float)c->rms_norm_eps;
    dp_blas h = g->blas;
    dp_cuda_rmsnorm_forward(g->ln, NULL, g->x, wp(g, w[DP_BT_ATTN_NORM]), N, C, eps, NULL);
    dp_cuda_matmul_forward(h, g->q, 0, g->ln, wp(g, w[DP_BT_Q]), N, C, QD, 1.0f, 0.0f);
    dp_cuda_matmul_forward(h, g->k, 0, g->ln, wp(g, w[DP_BT_K]), N, C, KD, 1.0f, 0.0f);
    dp_cuda_matmul_forward(h, g->v, 0, g->ln, wp(g, w[DP_BT_V]), N, C, KD, 1.0f, 0.0f);
    dp_cuda_rope_forward(g->q, g->cosb, g->sinb, B, T, NH, HD, 0, NULL);
    dp_cuda_rope_forward(g->k, g->cosb, g->sinb, B, T, NKV, HD, 0, NULL);
    dp_cuda_attention_forward(g->ao, g->lse, g->q, g->k, g->v, B, T, NH, NKV, HD, NULL);
    dp_cuda_matmul_forward(h, g->x, 1, g->ao, wp(g, w[DP_BT_O]), N, QD, C, 1.0f, 1.0f);
    dp_cuda_rmsnorm_forward(g->ln, NULL, g->x, wp(g, w[DP_BT_MLP_NORM]), N, C, eps, NULL);
    dp_cuda_matmul_forward(h, g->gate, 0, g->ln, wp(g, w[DP_BT_GATE]), N, C, F, 1.0f, 0.0f);
    dp_cuda_matmul_forward(h, g->up, 0, g->ln, wp(g, w[DP_BT_UP]), N, C, F, 1.0f, 0.0f);
    dp_cuda_swiglu_forward(g->h, g->gate, g->up, N * F, NULL);
    dp_cuda_matmul_forward(h, g->x, 1, g->h, wp(g, w[DP_BT_DOWN]), N, F, C, 1.0f, 1.0f);
}

void dp_cuda_llama_blocks(dp_cuda_llama *g, const dp_layer_map *map, int from, int to, int64_t B) {
    check_b(g, B);
    for (int i = from; i < to; i++) block(g, map->layer[i], B);
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
