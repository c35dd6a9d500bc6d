/* Autoregressive generation with a KV cache on the CPU backend.
 *
 * The prompt of every sequence is run once as a batch (prefill), filling
 * the cache of every mapped block at positions 0..P-1; each decode step
 * then runs one token per sequence through the blocks, attending over the
 * cached keys and values, and appends its own. The arithmetic is the
 * training engine's (same ops, same RoPE table, same softmax), so the
 * logits equal a full recompute of the sequence within float rounding
 * (tests/unit/test_generate.c). Decode-sized matmuls split the weight rows
 * over threads (dp_matmul_forward_cols): at batch 1 a step is a pass over
 * the weights, bounded by memory bandwidth. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/generate.h"
#include "depthprune/ops.h"

typedef struct plan {
    int64_t kc, vc, cosb, sinb, x, ln, q, k, v, ao, h, gate, up, att, logits, total; /* float offsets */
} plan;

static plan make_plan(const dp_llama *m, const dp_layer_map *map, int64_t B, int64_t P, int64_t T) {
    const dp_llama_config *c = &m->cfg;
    int64_t C = c->hidden_size, F = c->intermediate_size, HD = c->head_dim, QD = c->n_heads * HD,
            KD = c->n_kv_heads * HD, N = B * P, V = c->vocab_size;
    int64_t cache = (int64_t)map->n * B * c->n_kv_heads * T * HD;
    int64_t nt = omp_get_max_threads();
    plan p;
    int64_t o = 0;
#define TAKE(f, n) (p.f = o, o += ((n) + 15) / 16 * 16)
    TAKE(kc, cache);
    TAKE(vc, cache);
    TAKE(cosb, T * (HD / 2));
    TAKE(sinb, T * (HD / 2));
    TAKE(x, N * C);
    TAKE(ln, N * C);
    TAKE(q, N * QD);
    TAKE(k, N * KD);
    TAKE(v, N * KD);
    TAKE(ao, N * QD);
    TAKE(h, N * C);
    TAKE(gate, N * F);
    TAKE(up, N * F);
    TAKE(att, nt * T);
    TAKE(logits, B * V);
#undef TAKE
    p.total = o;
    return p;
}

size_t dp_gen_bytes(const dp_llama *m, const dp_layer_map *map, int64_t B, int64_t P, int64_t T) {
    return (size_t)make_plan(m, map, B, P, T).total * sizeof(float);
}

int dp_gen_init(dp_gen *g, const dp_llama *m, const dp_layer_map *map, int64_t B, int64_t P, int64_t T, dp_err *err) {
    memset(g, 0, sizeof *g);
    if (B < 1 || P < 1 || T < P + 1)
        return dp_err_set(err, DP_E_RANGE, "generation needs >= 1 sequence, >= 1 prompt token and room for a new one");
    if (T > m->cfg.max_position_embeddings)
        return dp_err_set(err, DP_E_RANGE, "prompt + new tokens = %lld positions exceed max_position_embeddings %lld",
                          (long long)T, (long long)m->cfg.max_position_embeddings);
    plan p = make_plan(m, map, B, P, T);
    g->m = m;
    g->map = map;
    g->B = B;
    g->P = P;
    g->T = T;
    g->bytes = (size_t)p.total * sizeof(float);
    g->mem = dp_malloc(g->bytes, "generate");
    float *b = g->mem;
    g->kc = b + p.kc, g->vc = b + p.vc, g->cosb = b + p.cosb, g->sinb = b + p.sinb;
    g->x = b + p.x, g->ln = b + p.ln, g->q = b + p.q, g->k = b + p.k, g->v = b + p.v, g->ao = b + p.ao;
    g->h = b + p.h, g->gate = b + p.gate, g->up = b + p.up, g->att = b + p.att, g->logits = b + p.logits;
    int64_t half = m->cfg.head_dim / 2;
    for (int64_t t = 0; t < T; t++) /* the engine's table: fp32 product, as HF */
        for (int64_t j = 0; j < half; j++) {
            float a = (float)t * m->inv_freq[j];
            g->cosb[t * half + j] = cosf(a);
            g->sinb[t * half + j] = sinf(a);
        }
    return DP_OK;
}

void dp_gen_free(dp_gen *g) {
    dp_llama_wcache_free(&g->wc);
    dp_free(g->mem);
    memset(g, 0, sizeof *g);
}

static void mm(float *out, const float *inp, const float *w, int64_t N, int64_t IN, int64_t OUT) {
    if (N < 64)
        dp_matmul_forward_cols(out, inp, w, N, IN, OUT);
    else
        dp_matmul_forward(out, inp, w, N, IN, OUT);
}

static void attention(dp_gen *g, int l, float *const *w, int64_t Bn, int64_t Tn, int64_t pos0, float *kc, float *vc);

/* Runs Tn new positions (pos0..) of Bn sequences through the mapped blocks:
 * g->x (Bn*Tn, C) in, out. */
static void blocks(dp_gen *g, int64_t Bn, int64_t Tn, int64_t pos0) {
    const dp_llama *m = g->m;
    const dp_llama_config *c = &m->cfg;
    int64_t N = Bn * Tn, C = c->hidden_size, HD = c->head_dim, T = g->T;
    for (int bi = 0; bi < g->map->n; bi++) {
        dp_heartbeat();
        int l = g->map->layer[bi];
        int64_t F = c->layer_inter[l];
        float *const *w = dp_llama_block_weights(m, l, &g->wc);
        /* each block's cache is sized for the global kv heads (the widest block) */
        float *kc = g->kc + (int64_t)bi * g->B * c->n_kv_heads * T * HD,
              *vc = g->vc + (int64_t)bi * g->B * c->n_kv_heads * T * HD;
        int skip = g->map->skip[l];
        if (skip & DP_SKIP_ATTN) { /* a removed attention: h = x, nothing cached */
            memcpy(g->h, g->x, (size_t)(N * C) * sizeof(float));
        } else {
            attention(g, l, w, Bn, Tn, pos0, kc, vc);
        }
        if (skip & DP_SKIP_MLP) { /* a removed MLP: out = h */
            memcpy(g->x, g->h, (size_t)(N * C) * sizeof(float));
            continue;
        }
        dp_rmsnorm_forward(g->ln, NULL, g->h, w[DP_BT_MLP_NORM], N, C, c->rms_norm_eps);
        mm(g->gate, g->ln, w[DP_BT_GATE], N, C, F);
        mm(g->up, g->ln, w[DP_BT_UP], N, C, F);
        dp_swiglu_forward(g->gate, g->gate, g->up, N * F);
        mm(g->x, g->gate, w[DP_BT_DOWN], N, F, C);
        dp_add_forward(g->x, g->x, g->h, N * C);
    }
}

/* h = x + o_proj(attention over the cache) of block l, appending k/v at pos0.. */
static void attention(dp_gen *g, int l, float *const *w, int64_t Bn, int64_t Tn, int64_t pos0, float *kc, float *vc) {
    const dp_llama *m = g->m;
    const dp_llama_config *c = &m->cfg;
    int64_t N = Bn * Tn, C = c->hidden_size, HD = c->head_dim, T = g->T, half = HD / 2,
            rep = c->n_heads / c->n_kv_heads;
    int64_t NH = c->layer_heads[l], NKV = c->layer_kv_heads[l], QD = NH * HD, KD = NKV * HD;
    float scale = (float)(1.0 / sqrt((double)HD));
    {
        dp_rmsnorm_forward(g->ln, NULL, g->x, w[DP_BT_ATTN_NORM], N, C, c->rms_norm_eps);
        mm(g->q, g->ln, w[DP_BT_Q], N, C, QD);
        mm(g->k, g->ln, w[DP_BT_K], N, C, KD);
        mm(g->v, g->ln, w[DP_BT_V], N, C, KD);
        dp_rope_forward(g->q, g->cosb + pos0 * half, g->sinb + pos0 * half, Bn, Tn, NH, HD);
        dp_rope_forward(g->k, g->cosb + pos0 * half, g->sinb + pos0 * half, Bn, Tn, NKV, HD);
        for (int64_t b = 0; b < Bn; b++) /* append to the cache: (b, kv head, position) */
            for (int64_t t = 0; t < Tn; t++)
                for (int64_t kh = 0; kh < NKV; kh++) {
                    int64_t dst = ((b * NKV + kh) * T + pos0 + t) * HD, src = ((b * Tn + t) * NKV + kh) * HD;
                    memcpy(kc + dst, g->k + src, (size_t)HD * sizeof(float));
                    memcpy(vc + dst, g->v + src, (size_t)HD * sizeof(float));
                }
#pragma omp parallel for collapse(3) schedule(static)
        for (int64_t b = 0; b < Bn; b++)
            for (int64_t hd = 0; hd < NH; hd++)
                for (int64_t t = 0; t < Tn; t++) {
                    int64_t kh = hd / rep, p = pos0 + t;
                    const float *qt = g->q + ((b * Tn + t) * NH + hd) * HD;
                    const float *kb = kc + (b * NKV + kh) * T * HD, *vb = vc + (b * NKV + kh) * T * HD;
                    float *row = g->att + (int64_t)omp_get_thread_num() * T;
                    float mx = -INFINITY;
                    for (int64_t j = 0; j <= p; j++) {
                        const float *kt = kb + j * HD;
                        float s = 0;
#pragma omp simd reduction(+ : s)
                        for (int64_t i = 0; i < HD; i++) s += qt[i] * kt[i];
                        s *= scale;
                        row[j] = s;
                        if (s > mx) mx = s;
                    }
                    float sum = 0;
                    for (int64_t j = 0; j <= p; j++) {
                        row[j] = expf(row[j] - mx);
                        sum += row[j];
                    }
                    float inv = 1.0f / sum;
                    float *o = g->ao + ((b * Tn + t) * NH + hd) * HD;
                    for (int64_t i = 0; i < HD; i++) o[i] = 0;
                    for (int64_t j = 0; j <= p; j++) {
                        const float *vt = vb + j * HD;
                        float a = row[j] * inv;
#pragma omp simd
                        for (int64_t i = 0; i < HD; i++) o[i] += a * vt[i];
                    }
                }
        mm(g->h, g->ao, w[DP_BT_O], N, QD, C);
        dp_add_forward(g->h, g->h, g->x, N * C);
    }
}

/* Final norm + head on the last position of each of Bn sequences. */
static void head(dp_gen *g, int64_t Bn, int64_t Tn) {
    const dp_llama *m = g->m;
    int64_t C = m->cfg.hidden_size;
    for (int64_t b = 0; b < Bn; b++) memcpy(g->h + b * C, g->x + (b * Tn + Tn - 1) * C, (size_t)C * sizeof(float));
    dp_rmsnorm_forward(g->ln, NULL, g->h, m->w.norm, Bn, C, m->cfg.rms_norm_eps);
    mm(g->logits, g->ln, m->w.head, Bn, C, m->cfg.vocab_size);
}

typedef struct cand {
    float v;
    int32_t i;
} cand;

static int cmp_cand(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

int32_t dp_sample(const float *logits, int64_t V, const dp_gen_opts *o, uint64_t *rng, float *scratch) {
    if (!(o->temperature > 0)) {
        int64_t best = 0;
        for (int64_t i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return (int32_t)best;
    }
    cand *cs = (cand *)scratch; /* V candidates fit in 2*V floats */
    for (int64_t i = 0; i < V; i++) cs[i] = (cand){logits[i] / (float)o->temperature, (int32_t)i};
    qsort(cs, (size_t)V, sizeof *cs, cmp_cand);
    int64_t n = V;
    if (o->top_k > 0 && o->top_k < V) { /* HF: drop scores below the k-th largest (ties kept) */
        float kth = cs[o->top_k - 1].v;
        n = o->top_k;
        while (n < V && cs[n].v == kth) n++;
    }
    float *pr = scratch + 2 * V; /* softmax over the kept candidates */
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (pr[i] = expf(cs[i].v - cs[0].v));
    for (int64_t i = 0; i < n; i++) pr[i] = (float)(pr[i] / sum);
    if (o->top_p > 0 && o->top_p < 1) { /* HF: drop the low tail whose mass is <= 1 - top_p, keep >= 1 */
        double tail = 0;
        while (n > 1 && tail + pr[n - 1] <= 1.0 - o->top_p) tail += pr[--n];
    }
    double tot = 0;
    for (int64_t i = 0; i < n; i++) tot += pr[i];
    double u = (double)dp_xorshift64s_53(rng) / 9007199254740992.0 * tot;
    for (int64_t i = 0; i < n; i++) {
        u -= pr[i];
        if (u < 0) return cs[i].i;
    }
    return cs[n - 1].i;
}

void dp_gen_picker_init(dp_gen_picker *p, int64_t B, int64_t V, uint64_t seed) {
    p->B = B;
    p->V = V;
    p->live = B;
    p->scratch = dp_malloc((size_t)3 * V * sizeof(float) + 64, "generate");
    p->rng = dp_malloc((size_t)B * sizeof(uint64_t), "generate");
    p->cur = dp_malloc((size_t)B * sizeof(int32_t), "generate");
    p->done = dp_calloc((size_t)B, 1, "generate");
    for (int64_t b = 0; b < B; b++) { /* per sequence: independent of the batch it runs in */
        uint64_t z = seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(b + 1));
        p->rng[b] = dp_splitmix64(&z) | 1;
    }
}

void dp_gen_picker_free(dp_gen_picker *p) {
    dp_free(p->scratch);
    dp_free(p->rng);
    dp_free(p->cur);
    dp_free(p->done);
    memset(p, 0, sizeof *p);
}

int64_t dp_gen_pick(dp_gen_picker *p, const float *step_logits, int64_t step, const dp_gen_opts *o, int32_t *out,
                    float *logits) {
    int64_t B = p->B, V = p->V;
    for (int64_t b = 0; b < B; b++) {
        const float *lb = step_logits + b * V;
        if (logits) memcpy(logits + (b * o->max_new + step) * V, lb, (size_t)V * sizeof(float));
        int32_t tok = p->done[b] ? o->eos_id : dp_sample(lb, V, o, &p->rng[b], p->scratch);
        if (!p->done[b] && o->eos_id >= 0 && tok == o->eos_id) {
            p->done[b] = 1;
            p->live--;
        }
        out[b * o->max_new + step] = tok;
        p->cur[b] = tok;
    }
    if (p->live == 0)
        for (int64_t b = 0; b < B; b++)
            for (int64_t r = step + 1; r < o->max_new; r++) out[b * o->max_new + r] = o->eos_id;
    return p->live;
}

int dp_generate(dp_gen *g, const int32_t *prompts, int64_t B, int64_t P, const dp_gen_opts *o, int32_t *out,
                float *logits, dp_gen_stats *st, dp_err *err) {
    const dp_llama *m = g->m;
    int64_t V = m->cfg.vocab_size, C = m->cfg.hidden_size;
    if (B > g->B || P > g->P || P + o->max_new > g->T)
        return dp_err_set(err, DP_E_RANGE, "batch %lld x (%lld + %lld) does not fit the generation state (%lld x %lld)",
                          (long long)B, (long long)P, (long long)o->max_new, (long long)g->B, (long long)g->T);
    for (int64_t i = 0; i < B * P; i++)
        if (prompts[i] < 0 || prompts[i] >= V)
            return dp_err_set(err, DP_E_RANGE, "prompt token %d is outside the vocabulary (%lld)", prompts[i],
                              (long long)V);
    dp_gen_stats s = {0};
    s.cache_bytes = (size_t)2 * g->map->n * g->B * m->cfg.n_kv_heads * g->T * m->cfg.head_dim * sizeof(float);
    s.scratch_bytes = g->bytes - s.cache_bytes;
    dp_gen_picker pk;
    dp_gen_picker_init(&pk, B, V, o->seed);
    double t0 = dp_time_s();
    dp_embed_forward(g->x, prompts, m->w.embed, B * P, C);
    blocks(g, B, P, 0);
    head(g, B, P);
    s.prefill_s = dp_time_s() - t0;
    t0 = dp_time_s();
    for (int64_t step = 0; step < o->max_new; step++) {
        if (step > 0) { /* the previous token through the model */
            dp_embed_forward(g->x, pk.cur, m->w.embed, B, C);
            blocks(g, B, 1, P + step - 1);
            head(g, B, 1);
            s.steps++;
        }
        if (dp_gen_pick(&pk, g->logits, step, o, out, logits) == 0) break;
    }
    s.decode_s = dp_time_s() - t0;
    if (st) *st = s;
    dp_gen_picker_free(&pk);
    return DP_OK;
}
