/* The LLaMA model on the CPU: flat fp32 weight layout, loading from an HF
 * directory, RoPE frequencies, the layer map, the run state's memory plan,
 * and forward/backward composed from the ops in ops.h. Each step of the
 * block reads like HF's LlamaDecoderLayer; the backward walks it in reverse. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "depthprune/llama.h"
#include "depthprune/ops.h"
#include "depthprune/safetensors.h"

/* ---------------- layout ---------------- */

static void add_param(dp_llama *m, const char *name, int64_t rows, int64_t cols, int block, int kind) {
    dp_llama_param *p = &m->params[m->n_params++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->offset = m->n_elems;
    p->rows = rows;
    p->cols = cols;
    p->n_elems = rows * (cols ? cols : 1);
    p->block = block;
    p->kind = kind;
    m->n_elems += p->n_elems;
}

static int compute_inv_freq(dp_llama *m, dp_err *err) {
    const dp_llama_config *c = &m->cfg;
    int64_t hd = c->head_dim, half = hd / 2;
    if (hd % 2) return dp_err_set(err, DP_E_UNSUPPORTED, "head_dim %lld is odd", (long long)hd);
    m->inv_freq = dp_malloc((size_t)half * sizeof(float), "rope");
    /* HF: 1 / base ** (arange(0, dim, 2).float() / dim), all in fp32 */
    for (int64_t j = 0; j < half; j++) {
        float e = (float)(2 * j) / (float)hd;
        m->inv_freq[j] = 1.0f / powf((float)c->rope_theta, e);
    }
    if (c->rope_type == DP_ROPE_LINEAR) {
        for (int64_t j = 0; j < half; j++) m->inv_freq[j] /= (float)c->rope_factor;
    } else if (c->rope_type == DP_ROPE_LLAMA3) {
        float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq_factor, hi = (float)c->rope_high_freq_factor,
              old = (float)c->rope_original_max_position_embeddings;
        float lo_wavelen = old / lo, hi_wavelen = old / hi;
        for (int64_t j = 0; j < half; j++) {
            float f = m->inv_freq[j], wavelen = 2.0f * (float)M_PI / f;
            float scaled = wavelen > lo_wavelen ? f / factor : f;
            if (!(wavelen < hi_wavelen) && !(wavelen > lo_wavelen)) {
                float smooth = (old / wavelen - lo) / (hi - lo);
                scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
            }
            m->inv_freq[j] = scaled;
        }
    }
    return DP_OK;
}

static int init_layout(dp_llama *m, dp_llama_config *cfg, int zero, int stored, dp_err *err) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    memset(cfg, 0, sizeof *cfg); /* json_text moved */
    const dp_llama_config *c = &m->cfg;
    int64_t C = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    int64_t QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    if (c->n_layers < 1 || c->n_layers > DP_MAX_LAYERS)
        return dp_err_set(err, DP_E_UNSUPPORTED, "num_hidden_layers %lld outside 1..%d", (long long)c->n_layers,
                          DP_MAX_LAYERS);
    if (c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads)
        return dp_err_set(err, DP_E_FORMAT, "num_attention_heads %lld is not a multiple of num_key_value_heads %lld",
                          (long long)c->n_heads, (long long)c->n_kv_heads);
    m->params = dp_calloc((size_t)(c->n_layers * DP_LLAMA_BLOCK_TENSORS + 3), sizeof(dp_llama_param), "model");
    add_param(m, "model.embed_tokens.weight", V, C, -1, -1);
    (void)QD, (void)KD, (void)F;
    char name[96];
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
            int64_t q = c->layer_heads[l] * c->head_dim, kv = c->layer_kv_heads[l] * c->head_dim, f = c->layer_inter[l];
            const int64_t shapes[DP_LLAMA_BLOCK_TENSORS][2] = {{C, 0}, {q, C}, {kv, C}, {kv, C}, {C, q},
                                                               {C, 0}, {f, C}, {f, C},  {C, f}};
            snprintf(name, sizeof name, "model.layers.%d.%s", l, dp_llama_block_suffix[k]);
            add_param(m, name, shapes[k][0], shapes[k][1], l, k);
        }
    add_param(m, "model.norm.weight", C, 0, -1, -1);
    if (!c->tie_word_embeddings) add_param(m, "lm_head.weight", V, C, -1, -1);
    if (stored) { /* blocks from the checkpoint; embedding, norm, head in outer */
        m->src = dp_calloc((size_t)m->n_params, sizeof(void *), "model");
        m->src_dtype = dp_calloc((size_t)m->n_params, sizeof(int), "model");
        int64_t n_outer = 0;
        for (int i = 0; i < m->n_params; i++) n_outer += m->params[i].block < 0 ? m->params[i].n_elems : 0;
        m->outer = dp_malloc((size_t)n_outer * sizeof(float), "weights");
        int64_t o = 0;
        for (int i = 0; i < m->n_params; i++) {
            const dp_llama_param *p = &m->params[i];
            if (p->block >= 0) continue;
            m->src[i] = m->outer + o;
            m->src_dtype[i] = DP_DTYPE_F32;
            if (!strcmp(p->name, "model.embed_tokens.weight"))
                m->w.embed = m->outer + o;
            else if (!strcmp(p->name, "model.norm.weight"))
                m->w.norm = m->outer + o;
            else
                m->w.head = m->outer + o;
            o += p->n_elems;
        }
        if (c->tie_word_embeddings) m->w.head = m->w.embed;
        return compute_inv_freq(m, err);
    }
    m->mem = zero ? dp_calloc((size_t)m->n_elems, sizeof(float), "weights")
                  : dp_malloc((size_t)m->n_elems * sizeof(float), "weights");
    dp_llama_view_of(m, m->mem, &m->w);
    return compute_inv_freq(m, err);
}

int dp_llama_init(dp_llama *m, dp_llama_config *cfg, dp_err *err) {
    return init_layout(m, cfg, 1, 0, err);
}

void dp_llama_view_of(const dp_llama *m, float *base, dp_llama_view *v) {
    memset(v, 0, sizeof *v);
    for (int i = 0; i < m->n_params; i++) {
        const dp_llama_param *p = &m->params[i];
        float *ptr = base + p->offset;
        if (p->block >= 0)
            v->blk[p->block][p->kind] = ptr;
        else if (!strcmp(p->name, "model.embed_tokens.weight"))
            v->embed = ptr;
        else if (!strcmp(p->name, "model.norm.weight"))
            v->norm = ptr;
        else
            v->head = ptr;
    }
    if (m->cfg.tie_word_embeddings) v->head = v->embed;
}

static int load(const char *dir, dp_llama *m, int stored, dp_err *err) {
    dp_llama_config cfg;
    dp_st_model st;
    int rc;
    memset(m, 0, sizeof *m);
    if ((rc = dp_llama_config_load(dir, &cfg, err))) return rc;
    if ((rc = dp_st_model_open(dir, &st, err))) {
        dp_llama_config_free(&cfg);
        return rc;
    }
    if ((rc = dp_llama_check_weights(&cfg, &st, err))) goto fail;
    if ((rc = init_layout(m, &cfg, 0, stored, err))) goto fail; /* every weight is written below */
    for (int i = 0; i < m->n_params; i++) {
        const dp_llama_param *p = &m->params[i];
        const dp_st_tensor *t = dp_st_model_find(&st, p->name);
        int ok = t && dp_st_numel(t) == p->n_elems &&
                 (t->dtype == DP_DTYPE_F32 || t->dtype == DP_DTYPE_F16 || t->dtype == DP_DTYPE_BF16);
        if (ok && stored && p->block >= 0) {
            m->src[i] = t->data;
            m->src_dtype[i] = t->dtype;
        } else if (ok) { /* into the fp32 layout, or a stored model's outer part */
            dp_convert_to_f32(stored ? (float *)m->src[i] : m->mem + p->offset, t->data, (dp_dtype)t->dtype,
                              (size_t)p->n_elems);
        }
        if (!ok) {
            rc = dp_err_set(err, DP_E_FORMAT, "%s: tensor '%s' cannot be read as F32/F16/BF16", dir, p->name);
            goto fail;
        }
    }
    if (stored) {
        m->store = dp_malloc(sizeof st, "model");
        memcpy(m->store, &st, sizeof st);
    } else {
        dp_st_model_close(&st);
    }
    return DP_OK;
fail:
    dp_st_model_close(&st);
    dp_llama_config_free(&cfg);
    dp_llama_free(m);
    return rc;
}

int dp_llama_load(const char *dir, dp_llama *m, dp_err *err) {
    return load(dir, m, 0, err);
}

int dp_llama_load_stored(const char *dir, dp_llama *m, dp_err *err) {
    return load(dir, m, 1, err);
}

const dp_llama_param *dp_llama_block_param(const dp_llama *m, int l, int k) {
    return &m->params[1 + l * DP_LLAMA_BLOCK_TENSORS + k];
}

int64_t dp_llama_block_first(const dp_llama *m, int l) {
    return dp_llama_block_param(m, l, 0)->offset;
}

int64_t dp_llama_block_elems(const dp_llama *m, int l) {
    const dp_llama_param *z = dp_llama_block_param(m, l, DP_LLAMA_BLOCK_TENSORS - 1);
    return z->offset + z->n_elems - dp_llama_block_first(m, l);
}

void dp_llama_read_f32(const dp_llama *m, int64_t offset, int64_t n, float *dst) {
    if (m->mem) {
        memcpy(dst, m->mem + offset, (size_t)n * sizeof(float));
        return;
    }
    for (int i = 0; i < m->n_params && n > 0; i++) {
        const dp_llama_param *p = &m->params[i];
        if (p->offset + p->n_elems <= offset) continue;
        int64_t a = offset - p->offset, len = p->n_elems - a < n ? p->n_elems - a : n;
        const int64_t chunk = (int64_t)1 << 20;
        dp_dtype dt = (dp_dtype)m->src_dtype[i];
        size_t es = dp_dtype_size(dt);
#pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < len; c += chunk)
            dp_convert_to_f32(dst + c, (const char *)m->src[i] + (size_t)(a + c) * es, dt,
                              (size_t)(len - c < chunk ? len - c : chunk));
        dst += len;
        offset += len;
        n -= len;
    }
}

float *const *dp_llama_block_weights(const dp_llama *m, int l, dp_llama_wcache *c) {
    if (m->mem) return m->w.blk[l];
    if (c->m != m || c->layer != l) {
        int64_t first = dp_llama_block_first(m, l), n = dp_llama_block_elems(m, l);
        if (n > c->cap) {
            dp_free(c->mem);
            c->mem = dp_malloc((size_t)n * sizeof(float), "block weights");
            c->cap = n;
        }
        dp_llama_read_f32(m, first, n, c->mem);
        c->loads++;
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++)
            c->blk[k] = c->mem + (m->params[1 + l * DP_LLAMA_BLOCK_TENSORS + k].offset - first);
        c->m = m;
        c->layer = l;
    }
    return c->blk;
}

void dp_llama_wcache_free(dp_llama_wcache *c) {
    dp_free(c->mem);
    memset(c, 0, sizeof *c);
}

uint64_t dp_llama_hash(const dp_llama *m) {
    /* chunks hashed in parallel, combined in order: the same for any thread count */
    const size_t chunk = (size_t)1 << 20;
    size_t n_bytes = (size_t)m->n_elems * sizeof(float), n_chunks = (n_bytes + chunk - 1) / chunk;
    uint64_t *part = dp_malloc((n_chunks ? n_chunks : 1) * sizeof(uint64_t), "hash");
#pragma omp parallel
    {
        /* the fp32 bytes of either kind of model (a stored-dtype one is upcast a chunk at a time) */
        float *buf = m->mem ? NULL : dp_malloc(chunk, "hash");
#pragma omp for schedule(static)
        for (size_t c = 0; c < n_chunks; c++) {
            size_t len = c + 1 < n_chunks ? chunk : n_bytes - c * chunk;
            const float *src = m->mem ? m->mem + c * (chunk / sizeof(float)) : buf;
            if (buf) dp_llama_read_f32(m, (int64_t)(c * (chunk / sizeof(float))), (int64_t)(len / sizeof(float)), buf);
            part[c] = dp_hash_bytes((const char *)src, len, c);
        }
        dp_free(buf);
    }
    uint64_t h = dp_hash_bytes(m->cfg.json_text, m->cfg.json_text ? strlen(m->cfg.json_text) : 0, 1);
    h = dp_hash_bytes(&h, 8, dp_hash_bytes(part, n_chunks * sizeof(uint64_t), 2));
    dp_free(part);
    return h;
}

void dp_llama_clone(dp_llama *dst, const dp_llama *src) {
    *dst = *src;
    dst->store = NULL;
    dst->src = NULL;
    dst->src_dtype = NULL;
    dst->outer = NULL;
    dst->cfg.json_text = src->cfg.json_text ? dp_strdup(src->cfg.json_text, "config") : NULL;
    dst->params = dp_malloc((size_t)src->n_params * sizeof(dp_llama_param), "model");
    memcpy(dst->params, src->params, (size_t)src->n_params * sizeof(dp_llama_param));
    dst->mem = dp_malloc((size_t)src->n_elems * sizeof(float), "weights");
    dp_llama_read_f32(src, 0, src->n_elems, dst->mem);
    int64_t half = src->cfg.head_dim / 2;
    dst->inv_freq = dp_malloc((size_t)half * sizeof(float), "model");
    memcpy(dst->inv_freq, src->inv_freq, (size_t)half * sizeof(float));
    dp_llama_view_of(dst, dst->mem, &dst->w);
}

void dp_llama_free(dp_llama *m) {
    if (m->store) dp_st_model_close(m->store);
    dp_free(m->store);
    dp_free(m->src);
    dp_free(m->src_dtype);
    dp_free(m->outer);
    dp_free(m->params);
    dp_free(m->mem);
    dp_free(m->inv_freq);
    dp_llama_config_free(&m->cfg);
    memset(m, 0, sizeof *m);
}

/* ---------------- layer map ---------------- */

void dp_layer_map_all(dp_layer_map *map, int n_layers) {
    memset(map, 0, sizeof *map);
    map->n = n_layers;
    for (int i = 0; i < n_layers; i++) map->layer[i] = i;
}

void dp_layer_map_model(dp_layer_map *map, const dp_llama_config *c) {
    dp_layer_map_all(map, (int)c->n_layers);
    for (int l = 0; l < c->n_layers; l++) map->skip[l] = c->layer_skip[l];
}

int dp_layer_map_skip(dp_layer_map *map, int n_layers, const int64_t *blocks, int64_t n, int what, dp_err *err) {
    char seen[DP_MAX_LAYERS] = {0};
    for (int64_t i = 0; i < n; i++) {
        if (blocks[i] < 0 || blocks[i] >= n_layers)
            return dp_err_set(err, DP_E_RANGE, "block %lld does not exist (the model has blocks 0..%d)",
                              (long long)blocks[i], n_layers - 1);
        if (seen[blocks[i]]) return dp_err_set(err, DP_E_USAGE, "block %lld is listed twice", (long long)blocks[i]);
        seen[blocks[i]] = 1;
    }
    for (int64_t i = 0; i < n; i++) map->skip[blocks[i]] |= (unsigned char)what;
    return DP_OK;
}

int dp_layer_map_drop(dp_layer_map *map, int n_layers, const int64_t *drop, int64_t n_drop, dp_err *err) {
    char gone[DP_MAX_LAYERS] = {0};
    for (int64_t i = 0; i < n_drop; i++) {
        if (drop[i] < 0 || drop[i] >= n_layers)
            return dp_err_set(err, DP_E_RANGE, "block %lld does not exist (the model has blocks 0..%d)",
                              (long long)drop[i], n_layers - 1);
        if (gone[drop[i]]) return dp_err_set(err, DP_E_USAGE, "block %lld is listed twice", (long long)drop[i]);
        gone[drop[i]] = 1;
    }
    int n = 0;
    for (int i = 0; i < map->n; i++)
        if (!gone[map->layer[i]]) map->layer[n++] = map->layer[i];
    map->n = n;
    return DP_OK;
}

/* ---------------- run state ---------------- */

/* The memory plan: one pass computes the offsets (base == NULL counts). */
static size_t plan(dp_llama_state *s, const dp_llama *m, const dp_lora *lora, float *base) {
    const dp_llama_config *c = &m->cfg;
    int64_t N = s->N, C = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
    int64_t QD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim, half = c->head_dim / 2;
    int64_t RK = lora ? lora->rank : 0;
    size_t off = 0;
#define TAKE(ptr, n)                                                                                                   \
    do {                                                                                                               \
        if (base) (ptr) = base + off;                                                                                  \
        off += (size_t)(((n) + 15) / 16 * 16); /* 64-byte aligned slices */                                            \
    } while (0)
    int train = s->flags & DP_STATE_TRAIN;
    TAKE(s->x, (int64_t)(s->n_blocks + 1) * N * C);
    for (int i = 0; i < s->n_acts; i++) {
        dp_llama_acts *a = &s->acts[i];
        TAKE(a->ln1, N * C);
        TAKE(a->rstd1, N);
        TAKE(a->q, N * QD);
        TAKE(a->k, N * KD);
        TAKE(a->v, N * KD);
        TAKE(a->att, s->B * c->n_heads * s->T * s->T);
        TAKE(a->ao, N * QD);
        TAKE(a->res2, N * C);
        TAKE(a->ln2, N * C);
        TAKE(a->rstd2, N);
        TAKE(a->gate, N * F);
        TAKE(a->up, N * F);
        TAKE(a->h, N * F);
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++)
            if (lora && (lora->targets >> k & 1u)) TAKE(a->xa[k], N * RK);
    }
    TAKE(s->lnf, N * C);
    TAKE(s->rstdf, N);
    s->head_rows = dp_llama_head_rows(N, V);
    TAKE(s->logits, (s->flags & DP_STATE_NLL_ONLY ? s->head_rows : N) * V);
    TAKE(s->nll, N);
    TAKE(s->cosb, s->T * half);
    TAKE(s->sinb, s->T * half);
    if (train) {
        TAKE(s->dlogits, N * V);
        TAKE(s->dres, N * C);
        TAKE(s->dln, N * C);
        TAKE(s->dq, N * QD);
        TAKE(s->dao, N * QD);
        TAKE(s->dk, N * KD);
        TAKE(s->dv, N * KD);
        TAKE(s->dgate, N * F);
        TAKE(s->dup, N * F);
        TAKE(s->dh, N * F);
        if (RK) TAKE(s->dlora, N * RK);
        if (RK && lora->dropout > 0) {
            int64_t W = C > F ? C : F;
            if (QD > W) W = QD;
            TAKE(s->xdrop, N * W);
            TAKE(s->dxdrop, N * W);
        }
    }
#undef TAKE
    return off * sizeof(float);
}

static void rope_tables(dp_llama_state *s, const dp_llama *m) {
    int64_t half = m->cfg.head_dim / 2;
    for (int64_t t = 0; t < s->T; t++)
        for (int64_t j = 0; j < half; j++) {
            float a = (float)t * m->inv_freq[j]; /* fp32 product, as HF */
            s->cosb[t * half + j] = cosf(a);
            s->sinb[t * half + j] = sinf(a);
        }
}

static void state_shape(dp_llama_state *s, int64_t B, int64_t T, int n_blocks, int flags) {
    memset(s, 0, sizeof *s);
    s->B = B;
    s->T = T;
    s->N = B * T;
    s->n_blocks = n_blocks;
    s->flags = flags;
    s->n_acts = (flags & DP_STATE_TRAIN) && !(flags & DP_STATE_RECOMPUTE) ? n_blocks : 1;
}

size_t dp_llama_state_bytes(const dp_llama *m, const dp_lora *lora, int64_t B, int64_t T, int n_blocks, int flags) {
    dp_llama_state s;
    dp_llama_acts a[1];
    state_shape(&s, B, T, n_blocks, flags);
    size_t total = 0;
    /* acts are counted one set at a time (their pointers are not kept) */
    int n_acts = s.n_acts;
    s.n_acts = 1;
    s.acts = a;
    size_t one = plan(&s, m, lora, NULL);
    s.n_acts = 0;
    size_t none = plan(&s, m, lora, NULL);
    total = none + (one - none) * (size_t)n_acts;
    if (m->src) { /* a stored-dtype model: one block upcast at a time */
        int64_t big = 0;
        for (int l = 0; l < m->cfg.n_layers; l++)
            if (dp_llama_block_elems(m, l) > big) big = dp_llama_block_elems(m, l);
        total += (size_t)big * sizeof(float);
    }
    return total + (size_t)n_acts * sizeof(dp_llama_acts);
}

int dp_llama_state_init(dp_llama_state *s, const dp_llama *m, const dp_lora *lora, int64_t B, int64_t T, int n_blocks,
                        int flags, int allow_long, dp_err *err) {
    const dp_llama_config *c = &m->cfg;
    if (B < 1 || T < 1)
        return dp_err_set(err, DP_E_USAGE, "batch %lld and sequence length %lld must be positive", (long long)B,
                          (long long)T);
    if (T > c->max_position_embeddings && !allow_long)
        return dp_err_set(err, DP_E_RANGE,
                          "sequence length %lld exceeds the model's max_position_embeddings %lld "
                          "(override with --allow-long-seq)",
                          (long long)T, (long long)c->max_position_embeddings);
    if (n_blocks < 0 || n_blocks > c->n_layers) return dp_err_set(err, DP_E_USAGE, "bad block count %d", n_blocks);
    if ((double)B * (double)T * (double)(c->vocab_size > c->hidden_size ? c->vocab_size : c->hidden_size) > 9.0e18)
        return dp_err_set(err, DP_E_RANGE, "batch shape too large");
    state_shape(s, B, T, n_blocks, flags);
    s->acts = dp_calloc((size_t)s->n_acts, sizeof(dp_llama_acts), "activations");
    s->n_bytes = plan(s, m, lora, NULL);
    /* not zeroed: every buffer is written before it is read (dlogits and the
     * backward's accumulators are zeroed where they are used) */
    s->mem = dp_malloc(s->n_bytes, "activations");
    plan(s, m, lora, s->mem);
    rope_tables(s, m);
    return DP_OK;
}

int dp_llama_state_reshape(dp_llama_state *s, const dp_llama *m, const dp_lora *lora, int64_t B, int64_t T,
                           dp_err *err) {
    if (B == s->B && T == s->T) return DP_OK;
    dp_llama_state t;
    state_shape(&t, B, T, s->n_blocks, s->flags);
    if (B < 1 || T < 1 || t.n_acts != s->n_acts)
        return dp_err_set(err, DP_E_USAGE, "cannot reshape a run state to %lld x %lld", (long long)B, (long long)T);
    t.acts = s->acts;
    size_t need = plan(&t, m, lora, NULL);
    if (need > s->n_bytes)
        return dp_err_set(err, DP_E_RANGE, "batch %lld x %lld needs %zu bytes of activations, planned %zu",
                          (long long)B, (long long)T, need, s->n_bytes);
    t.mem = s->mem;
    t.n_bytes = s->n_bytes;
    t.wc = s->wc;
    plan(&t, m, lora, t.mem);
    *s = t;
    rope_tables(s, m);
    return DP_OK;
}

void dp_llama_state_free(dp_llama_state *s) {
    dp_llama_wcache_free(&s->wc);
    dp_free(s->mem);
    dp_free(s->acts);
    memset(s, 0, sizeof *s);
}

/* ---------------- forward ---------------- */

int dp_llama_embed(const dp_llama *m, dp_llama_state *s, const int32_t *tokens, dp_err *err) {
    for (int64_t n = 0; n < s->N; n++)
        if (tokens[n] < 0 || tokens[n] >= m->cfg.vocab_size)
            return dp_err_set(err, DP_E_RANGE, "token id %d at position %lld is outside the vocabulary (0..%lld)",
                              tokens[n], (long long)n, (long long)m->cfg.vocab_size - 1);
    dp_embed_forward(s->x, tokens, m->w.embed, s->N, m->cfg.hidden_size);
    return DP_OK;
}

/* LoRA dropout: dst = src * keep / (1 - p) (or dst += that), keep decided by
 * a hash of the row's key, the adapter (l, k) and the column. The backward
 * applies the same mask to the gradient. */
static int lora_drops(const dp_lora *lora, const dp_llama_state *s) {
    return lora && lora->dropout > 0 && lora->drop_key && s->xdrop && (s->flags & DP_STATE_TRAIN);
}

static void lora_dropout(float *dst, const float *src, const dp_lora *lora, int l, int k, int64_t N, int64_t IN,
                         int accumulate) {
    uint64_t thresh = (uint64_t)(lora->dropout * 18446744073709551616.0);
    float inv = (float)(1.0 / (1.0 - lora->dropout));
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        uint64_t base = lora->drop_key[n] ^ ((uint64_t)(l * 16 + k) << 48);
        for (int64_t i = 0; i < IN; i++) {
            uint64_t st = base + (uint64_t)i * 0x9E3779B97F4A7C15ull;
            float v = dp_splitmix64(&st) < thresh ? 0.0f : src[n * IN + i] * inv;
            if (accumulate)
                dst[n * IN + i] += v;
            else
                dst[n * IN + i] = v;
        }
    }
}

/* y = x W^T (+ LoRA) for block tensor k of dense layer l */
static void linear(float *const *w, const dp_lora *lora, int l, int k, float *out, const float *inp, dp_llama_acts *a,
                   const dp_llama_state *s, int64_t IN, int64_t OUT) {
    int64_t N = s->N;
    dp_matmul_forward(out, inp, w[k], N, IN, OUT);
    if (lora && lora->a[l][k]) {
        const float *x = inp;
        if (lora_drops(lora, s)) {
            lora_dropout(s->xdrop, inp, lora, l, k, N, IN, 0);
            x = s->xdrop;
        }
        dp_lora_forward(out, a->xa[k], x, lora->a[l][k], lora->b[l][k], lora->scale, N, IN, OUT, lora->rank);
    }
}

static void block_attention(const dp_llama *m, const dp_lora *lora, int l, dp_llama_state *s, const float *x,
                            dp_llama_acts *a, int64_t N, int64_t C, int64_t NH, int64_t NKV, int64_t HD, int64_t QD,
                            int64_t KD, float *const *w);

static void block_forward(const dp_llama *m, const dp_lora *lora, int l, int skip, dp_llama_state *s, const float *x,
                          float *out, dp_llama_acts *a) {
    dp_heartbeat();
    const dp_llama_config *c = &m->cfg;
    int64_t N = s->N, C = c->hidden_size, F = c->layer_inter[l];
    int64_t NH = c->layer_heads[l], NKV = c->layer_kv_heads[l], HD = c->head_dim, QD = NH * HD, KD = NKV * HD;
    float *const *w = dp_llama_block_weights(m, l, &s->wc);
    if (skip & DP_SKIP_ATTN) { /* h = x */
        memcpy(a->res2, x, (size_t)(N * C) * sizeof(float));
    } else {
        block_attention(m, lora, l, s, x, a, N, C, NH, NKV, HD, QD, KD, w);
    }
    if (skip & DP_SKIP_MLP) { /* out = h */
        memcpy(out, a->res2, (size_t)(N * C) * sizeof(float));
        return;
    }
    /* out = h + down_proj(silu(gate_proj(ln2(h))) * up_proj(ln2(h))) */
    dp_rmsnorm_forward(a->ln2, a->rstd2, a->res2, w[DP_BT_MLP_NORM], N, C, c->rms_norm_eps);
    linear(w, lora, l, DP_BT_GATE, a->gate, a->ln2, a, s, C, F);
    linear(w, lora, l, DP_BT_UP, a->up, a->ln2, a, s, C, F);
    dp_swiglu_forward(a->h, a->gate, a->up, N * F);
    linear(w, lora, l, DP_BT_DOWN, out, a->h, a, s, F, C);
    dp_add_forward(out, out, a->res2, N * C);
}

/* h = x + o_proj(attn(rope(q_proj(ln1(x))), rope(k_proj(..)), v_proj(..))) into a->res2 */
static void block_attention(const dp_llama *m, const dp_lora *lora, int l, dp_llama_state *s, const float *x,
                            dp_llama_acts *a, int64_t N, int64_t C, int64_t NH, int64_t NKV, int64_t HD, int64_t QD,
                            int64_t KD, float *const *w) {
    const dp_llama_config *c = &m->cfg;
    dp_rmsnorm_forward(a->ln1, a->rstd1, x, w[DP_BT_ATTN_NORM], N, C, c->rms_norm_eps);
    linear(w, lora, l, DP_BT_Q, a->q, a->ln1, a, s, C, QD);
    linear(w, lora, l, DP_BT_K, a->k, a->ln1, a, s, C, KD);
    linear(w, lora, l, DP_BT_V, a->v, a->ln1, a, s, C, KD);
    dp_rope_forward(a->q, s->cosb, s->sinb, s->B, s->T, NH, HD);
    dp_rope_forward(a->k, s->cosb, s->sinb, s->B, s->T, NKV, HD);
    dp_attention_forward(a->ao, a->att, a->q, a->k, a->v, s->B, s->T, NH, NKV, HD);
    linear(w, lora, l, DP_BT_O, a->res2, a->ao, a, s, QD, C);
    dp_add_forward(a->res2, a->res2, x, N * C);
}

static dp_llama_acts *acts_for(dp_llama_state *s, int i) {
    return &s->acts[s->n_acts == 1 ? 0 : i];
}

void dp_llama_blocks_forward(const dp_llama *m, const dp_lora *lora, const dp_layer_map *map, dp_llama_state *s,
                             int from, int to) {
    int64_t NC = s->N * m->cfg.hidden_size;
    for (int i = from; i < to; i++)
        block_forward(m, lora, map->layer[i], map->skip[map->layer[i]], s, s->x + i * NC, s->x + (i + 1) * NC,
                      acts_for(s, i));
}

int64_t dp_llama_head_rows(int64_t N, int64_t V) {
    if (N * V * (int64_t)sizeof(float) <= DP_HEAD_CHUNK_BYTES) return N;
    int64_t chunks = (N * V * (int64_t)sizeof(float) + DP_HEAD_CHUNK_BYTES - 1) / DP_HEAD_CHUNK_BYTES,
            rows = (N + chunks - 1) / chunks;
    return rows < 128 ? (N < 128 ? N : 128) : rows;
}

void dp_llama_head_forward(const dp_llama *m, dp_llama_state *s, int at) {
    int64_t C = m->cfg.hidden_size;
    if (s->flags & DP_STATE_NLL_ONLY) dp_fatal("dp_llama_head_forward on a NLL_ONLY state (use dp_llama_head_nll)");
    dp_rmsnorm_forward(s->lnf, s->rstdf, s->x + at * s->N * C, m->w.norm, s->N, C, m->cfg.rms_norm_eps);
    dp_matmul_forward(s->logits, s->lnf, m->w.head, s->N, C, m->cfg.vocab_size);
}

double dp_llama_head_nll(const dp_llama *m, dp_llama_state *s, int at, const int32_t *targets) {
    int64_t C = m->cfg.hidden_size, V = m->cfg.vocab_size, N = s->N;
    dp_rmsnorm_forward(s->lnf, s->rstdf, s->x + at * N * C, m->w.norm, N, C, m->cfg.rms_norm_eps);
    double sum = 0.0;
    int64_t rows = s->head_rows;
    for (int64_t r0 = 0; r0 < N; r0 += rows) {
        int64_t nr = r0 + rows <= N ? rows : N - r0;
        dp_matmul_forward(s->logits, s->lnf + r0 * C, m->w.head, nr, C, V);
        sum += dp_crossentropy_forward(s->nll + r0, s->logits, targets + r0, nr, V, NULL);
    }
    return sum;
}

int dp_llama_forward(const dp_llama *m, const dp_lora *lora, const dp_layer_map *map, dp_llama_state *s,
                     const int32_t *tokens, dp_err *err) {
    if (map->n > s->n_blocks)
        return dp_err_set(err, DP_E_USAGE, "the run state was planned for %d blocks, the map has %d", s->n_blocks,
                          map->n);
    int rc = dp_llama_embed(m, s, tokens, err);
    if (rc) return rc;
    dp_llama_blocks_forward(m, lora, map, s, 0, map->n);
    if (!(s->flags & DP_STATE_NLL_ONLY)) dp_llama_head_forward(m, s, map->n);
    return DP_OK;
}

double dp_llama_loss_ce(dp_llama_state *s, const dp_llama *m, const int32_t *targets, int64_t *n_counted,
                        double grad_scale) {
    double sum = dp_crossentropy_forward(s->nll, s->logits, targets, s->N, m->cfg.vocab_size, n_counted);
    if (grad_scale != 0.0 && s->dlogits)
        dp_crossentropy_backward(s->dlogits, s->logits, targets, grad_scale, s->N, m->cfg.vocab_size);
    return sum;
}

void dp_llama_sum_positions(const float *nll, int64_t B, int64_t T, double *out) {
    for (int64_t b = 0; b < B; b++) {
        double acc = 0.0;
        for (int64_t t = 0; t + 1 < T; t++) acc += (double)nll[b * T + t];
        out[b] = acc;
    }
}

void dp_llama_next_targets(int32_t *targets, const int32_t *tokens, int64_t B, int64_t T) {
    for (int64_t i = 0; i < B; i++)
        for (int64_t t = 0; t < T; t++) targets[i * T + t] = t + 1 < T ? tokens[i * T + t + 1] : -1;
}

void dp_llama_zero_dlogits(dp_llama_state *s, const dp_llama *m) {
    if (s->dlogits) memset(s->dlogits, 0, (size_t)(s->N * m->cfg.vocab_size) * sizeof(float));
}

/* ---------------- backward ---------------- */

static void zero(float *p, int64_t n) {
    memset(p, 0, (size_t)n * sizeof(float));
}

/* dinp += dout W (+ LoRA); weight and adapter gradients added where asked */
static void linear_backward(float *const *w, const dp_lora *lora, int l, int k, dp_llama_state *s, float *dinp,
                            const float *dout, const float *inp, dp_llama_acts *a, dp_llama_view *g, dp_lora *lg,
                            int64_t IN, int64_t OUT) {
    int64_t N = s->N;
    dp_matmul_backward(dinp, g ? g->blk[l][k] : NULL, dout, inp, w[k], N, IN, OUT);
    if (lora && lora->a[l][k]) {
        if (lora_drops(lora, s)) {
            /* d inp += keep/(1-p) * d xd, with xd recomputed from inp */
            lora_dropout(s->xdrop, inp, lora, l, k, N, IN, 0);
            zero(s->dxdrop, N * IN);
            dp_lora_backward(dinp ? s->dxdrop : NULL, lg ? lg->a[l][k] : NULL, lg ? lg->b[l][k] : NULL, s->dlora, dout,
                             s->xdrop, a->xa[k], lora->a[l][k], lora->b[l][k], lora->scale, N, IN, OUT, lora->rank);
            if (dinp) lora_dropout(dinp, s->dxdrop, lora, l, k, N, IN, 1);
        } else {
            dp_lora_backward(dinp, lg ? lg->a[l][k] : NULL, lg ? lg->b[l][k] : NULL, s->dlora, dout, inp, a->xa[k],
                             lora->a[l][k], lora->b[l][k], lora->scale, N, IN, OUT, lora->rank);
        }
    }
}

/* the MLP half of block_backward: s->dres from d(out) to d(h) */
static void block_mlp_backward(const dp_lora *lora, int l, dp_llama_state *s, dp_llama_acts *a, dp_llama_view *g,
                               dp_lora *lg, int64_t N, int64_t C, int64_t F, float *const *w, float *dn2) {
    zero(s->dh, N * F);
    linear_backward(w, lora, l, DP_BT_DOWN, s, s->dh, s->dres, a->h, a, g, lg, F, C);
    zero(s->dgate, N * F);
    zero(s->dup, N * F);
    dp_swiglu_backward(s->dgate, s->dup, s->dh, a->gate, a->up, N * F);
    zero(s->dln, N * C);
    linear_backward(w, lora, l, DP_BT_GATE, s, s->dln, s->dgate, a->ln2, a, g, lg, C, F);
    linear_backward(w, lora, l, DP_BT_UP, s, s->dln, s->dup, a->ln2, a, g, lg, C, F);
    dp_rmsnorm_backward(s->dres, dn2, s->dln, a->res2, w[DP_BT_MLP_NORM], a->rstd2, N, C);
}

/* s->dres holds dL/d(block output) on entry and dL/d(block input) on exit. */
static void block_backward(const dp_llama *m, const dp_lora *lora, int l, int skip, dp_llama_state *s, const float *x,
                           dp_llama_acts *a, dp_llama_view *g, dp_lora *lg) {
    dp_heartbeat();
    const dp_llama_config *c = &m->cfg;
    int64_t N = s->N, C = c->hidden_size, F = c->layer_inter[l];
    int64_t NH = c->layer_heads[l], NKV = c->layer_kv_heads[l], HD = c->head_dim, QD = NH * HD, KD = NKV * HD;
    float *const *w = dp_llama_block_weights(m, l, &s->wc);
    float *dn1 = g ? g->blk[l][DP_BT_ATTN_NORM] : NULL, *dn2 = g ? g->blk[l][DP_BT_MLP_NORM] : NULL;
    /* a skipped sub-layer is the identity: d(its input) = d(its output), dres as it is */
    if (!(skip & DP_SKIP_MLP)) block_mlp_backward(lora, l, s, a, g, lg, N, C, F, w, dn2);
    if (skip & DP_SKIP_ATTN) return;
    /* attention */
    zero(s->dao, N * QD);
    linear_backward(w, lora, l, DP_BT_O, s, s->dao, s->dres, a->ao, a, g, lg, QD, C);
    zero(s->dq, N * QD);
    zero(s->dk, N * KD);
    zero(s->dv, N * KD);
    dp_attention_backward(s->dq, s->dk, s->dv, s->dao, a->att, a->q, a->k, a->v, s->B, s->T, NH, NKV, HD);
    dp_rope_backward(s->dq, s->cosb, s->sinb, s->B, s->T, NH, HD);
    dp_rope_backward(s->dk, s->cosb, s->sinb, s->B, s->T, NKV, HD);
    zero(s->dln, N * C);
    linear_backward(w, lora, l, DP_BT_Q, s, s->dln, s->dq, a->ln1, a, g, lg, C, QD);
    linear_backward(w, lora, l, DP_BT_K, s, s->dln, s->dk, a->ln1, a, g, lg, C, KD);
    linear_backward(w, lora, l, DP_BT_V, s, s->dln, s->dv, a->ln1, a, g, lg, C, KD);
    dp_rmsnorm_backward(s->dres, dn1, s->dln, x, w[DP_BT_ATTN_NORM], a->rstd1, N, C);
}

void dp_llama_backward(const dp_llama *m, const dp_lora *lora, const dp_layer_map *map, dp_llama_state *s,
                       const int32_t *tokens, dp_llama_view *grads, dp_lora *lgrads) {
    dp_llama_backward_hook(m, lora, map, s, tokens, grads, lgrads, NULL, NULL);
}

void dp_llama_backward_hook(const dp_llama *m, const dp_lora *lora, const dp_layer_map *map, dp_llama_state *s,
                            const int32_t *tokens, dp_llama_view *grads, dp_lora *lgrads,
                            void (*after_block)(int layer, void *ctx), void *ctx) {
    const dp_llama_config *c = &m->cfg;
    int64_t N = s->N, C = c->hidden_size, V = c->vocab_size, NC = N * C;
    /* head and final norm */
    zero(s->dln, NC);
    dp_matmul_backward(s->dln, grads ? grads->head : NULL, s->dlogits, s->lnf, m->w.head, N, C, V);
    zero(s->dres, NC);
    dp_rmsnorm_backward(s->dres, grads ? grads->norm : NULL, s->dln, s->x + map->n * NC, m->w.norm, s->rstdf, N, C);
    for (int i = map->n - 1; i >= 0; i--) {
        int l = map->layer[i];
        dp_llama_acts *a = acts_for(s, i);
        if (s->flags & DP_STATE_RECOMPUTE) /* this block's activations, again, from its saved input */
            block_forward(m, lora, l, map->skip[l], s, s->x + i * NC, s->x + (i + 1) * NC, a);
        block_backward(m, lora, l, map->skip[l], s, s->x + i * NC, a, grads, lgrads);
        if (after_block) after_block(l, ctx);
    }
    if (grads && grads->embed) dp_embed_backward(grads->embed, s->dres, tokens, N, C);
}
