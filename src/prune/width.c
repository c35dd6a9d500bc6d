/* Width pruning (LLM-Pruner's structured pruning), the baseline the depth
 * pruning papers compare against. Importance is computed per coupled group:
 * a kv group g of block l is rows [g*rep*HD, (g+1)*rep*HD) of q_proj, rows
 * [g*HD, (g+1)*HD) of k_proj and v_proj and the matching columns of o_proj;
 * MLP channel j is row j of gate_proj and up_proj and column j of
 * down_proj. Element saliences are summed over the group (LLM-Pruner's
 * "sum" grouping). Gradients come from one forward+backward of every rank's
 * calibration samples (block by block, summed over ranks); the second-order
 * term accumulates per-sample squared gradients as LLM-Pruner does
 * (sum_j g_j^2 / N, one backward per sample). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/ops.h"
#include "depthprune/prune.h"
#include "depthprune/width.h"

static const char *const k_names[] = {"param_first", "param_second", "param_mix", "l1", "l2", "random"};

int dp_width_crit_parse(const char *s) {
    for (int i = 0; i < 6; i++)
        if (s && !strcmp(s, k_names[i])) return i;
    return -1;
}

void dp_width_scores_free(dp_width_scores *s) {
    for (int l = 0; l < s->L; l++) {
        dp_free(s->attn[l]);
        dp_free(s->mlp[l]);
    }
    memset(s, 0, sizeof *s);
}

static const dp_llama_param *bparam(const dp_llama *m, int l, int k) {
    return &m->params[1 + l * DP_LLAMA_BLOCK_TENSORS + k];
}

/* salience of one element from weight w, batch gradient g, Fisher f */
static double sal(int crit, double w, double g, double f) {
    switch (crit) {
    case DP_WIDTH_TAYLOR1: return fabs(w * g);
    case DP_WIDTH_TAYLOR2: return fabs(w * f * w);
    case DP_WIDTH_MIX: return fabs(w * g - 0.5 * w * f * w);
    case DP_WIDTH_L1: return fabs(w);
    default: return w * w; /* L2: squared here, square root of the group sum below */
    }
}

/* Group sums of block l. g, f: the block's gradient and Fisher in its own
 * layout (NULL for magnitude criteria). */
static void block_groups(const dp_llama *m, int l, int crit, const float *g, const float *f, double *attn,
                         double *mlp) {
    const dp_llama_config *c = &m->cfg;
    int64_t HD = c->head_dim, rep = c->n_heads / c->n_kv_heads, G = c->layer_kv_heads[l], F = c->layer_inter[l];
    int64_t base = bparam(m, l, 0)->offset;
    memset(attn, 0, (size_t)G * sizeof(double));
    memset(mlp, 0, (size_t)F * sizeof(double));
    for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
        if (k == DP_BT_ATTN_NORM || k == DP_BT_MLP_NORM) continue;
        const dp_llama_param *p = bparam(m, l, k);
        const float *w = m->mem + p->offset, *gg = g ? g + (p->offset - base) : NULL,
                    *ff = f ? f + (p->offset - base) : NULL;
        int64_t rows = p->rows, cols = p->cols;
        if (k == DP_BT_O || k == DP_BT_DOWN) { /* column groups: rep*HD columns (o) or one (down) */
            int64_t width = k == DP_BT_O ? rep * HD : 1, n = cols / width;
            double *dst = k == DP_BT_O ? attn : mlp;
#pragma omp parallel for schedule(static)
            for (int64_t q = 0; q < n; q++) {
                double acc = 0;
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t j = q * width; j < (q + 1) * width; j++) {
                        int64_t e = r * cols + j;
                        acc += sal(crit, w[e], gg ? gg[e] : 0, ff ? ff[e] : 0);
                    }
                dst[q] += acc;
            }
            continue;
        }
        /* row groups: per-row sums in parallel, added in row order (deterministic) */
        double *rs = dp_malloc((size_t)rows * sizeof(double), "width");
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            double acc = 0;
            for (int64_t j = 0; j < cols; j++) {
                int64_t e = r * cols + j;
                acc += sal(crit, w[e], gg ? gg[e] : 0, ff ? ff[e] : 0);
            }
            rs[r] = acc;
        }
        for (int64_t r = 0; r < rows; r++) {
            if (k == DP_BT_Q)
                attn[r / (rep * HD)] += rs[r];
            else if (k == DP_BT_K || k == DP_BT_V)
                attn[r / HD] += rs[r];
            else
                mlp[r] += rs[r]; /* gate, up: one row per channel */
        }
        dp_free(rs);
    }
    if (crit == DP_WIDTH_L2) {
        for (int64_t i = 0; i < G; i++) attn[i] = sqrt(attn[i]);
        for (int64_t i = 0; i < F; i++) mlp[i] = sqrt(mlp[i]);
    }
}

typedef struct {
    const dp_mpi *mpi;
    const dp_llama *m;
    float *gblock, *fisher; /* fisher: whole model layout (block offsets), or NULL */
    int64_t n_block;
    int mode; /* 0: accumulate g^2/N into fisher; 1: group saliences */
    int crit;
    double inv_n;
    dp_width_scores *s;
} wctx;

static void block_done(int l, void *p) {
    wctx *t = p;
    if (t->mpi->size > 1)
        DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, t->gblock, (int)t->n_block, MPI_FLOAT, MPI_SUM, t->mpi->comm));
    int64_t base = bparam(t->m, l, 0)->offset;
    const dp_llama_param *z = bparam(t->m, l, DP_LLAMA_BLOCK_TENSORS - 1);
    int64_t n = z->offset + z->n_elems - base;
    if (t->mode == 0) {
        float *f = t->fisher + base;
        for (int64_t i = 0; i < n; i++) f[i] += (float)((double)t->gblock[i] * t->gblock[i] * t->inv_n);
    } else {
        block_groups(t->m, l, t->crit, t->gblock, t->fisher ? t->fisher + base : NULL, t->s->attn[l], t->s->mlp[l]);
    }
    memset(t->gblock, 0, (size_t)t->n_block * sizeof(float));
}

/* forward + backward of samples [a, b) of ids (this rank's), with loss
 * scale; ranks with no samples still join every block's reduction. */
static int grad_pass(wctx *t, dp_engine *e, const int32_t *ids, int64_t a, int64_t b, int64_t T, double scale,
                     dp_err *err) {
    int rc = dp_block_grads(t->mpi, e, ids + a * T, b - a, T, scale, t->gblock, block_done, t, err);
    if (rc == DP_OK && b == a)
        for (int l = (int)t->m->cfg.n_layers - 1; l >= 0; l--) block_done(l, t);
    return rc;
}

int dp_width_importance(const dp_mpi *mpi, dp_device dev, const dp_llama *m, const int32_t *ids, int64_t N, int64_t T,
                        int crit, uint64_t seed, dp_width_scores *s, dp_err *err) {
    const dp_llama_config *c = &m->cfg;
    int L = (int)c->n_layers;
    memset(s, 0, sizeof *s);
    s->L = L;
    for (int l = 0; l < L; l++) {
        s->n_groups[l] = c->layer_kv_heads[l];
        s->n_chan[l] = c->layer_inter[l];
        s->attn[l] = dp_calloc((size_t)s->n_groups[l], sizeof(double), "width");
        s->mlp[l] = dp_calloc((size_t)s->n_chan[l], sizeof(double), "width");
    }
    if (crit == DP_WIDTH_RANDOM) {
        uint64_t z = seed | 1;
        for (int l = 0; l < L; l++) {
            for (int64_t i = 0; i < s->n_groups[l]; i++) s->attn[l][i] = (double)dp_xorshift64s_53(&z);
            for (int64_t i = 0; i < s->n_chan[l]; i++) s->mlp[l][i] = (double)dp_xorshift64s_53(&z);
        }
        return DP_OK;
    }
    if (crit == DP_WIDTH_L1 || crit == DP_WIDTH_L2) {
        for (int l = 0; l < L; l++) block_groups(m, l, crit, NULL, NULL, s->attn[l], s->mlp[l]);
        return DP_OK;
    }
    if (T < 2) return dp_err_set(err, DP_E_RANGE, "calibration samples need at least 2 tokens");
    int64_t n_block = 0;
    for (int l = 0; l < L; l++) {
        const dp_llama_param *a = bparam(m, l, 0), *z = bparam(m, l, DP_LLAMA_BLOCK_TENSORS - 1);
        if (z->offset + z->n_elems - a->offset > n_block) n_block = z->offset + z->n_elems - a->offset;
    }
    wctx t = {.mpi = mpi, .m = m, .n_block = n_block, .crit = crit, .s = s};
    t.gblock = dp_calloc((size_t)n_block, sizeof(float), "width grads");
    /* this rank's samples: contiguous shares */
    int64_t a = N * mpi->rank / mpi->size, b = N * (mpi->rank + 1) / mpi->size;
    dp_engine e;
    memset(&e, 0, sizeof e);
    dp_engine_plan plan = {.B = b - a, .T = T, .local_rank = mpi->local_rank, .train = 1, .wgrad = 1, .recompute = 1};
    int rc = dp_mpi_agree(mpi, b > a ? dp_engine_open(&e, dev, m, &plan, err) : DP_OK, err);
    if (crit == DP_WIDTH_TAYLOR2 || crit == DP_WIDTH_MIX) {
        /* sum_j g_j^2 / N: one backward per sample, in global sample order
         * (every rank runs N passes; rank r supplies sample j if it owns it) */
        t.fisher = dp_calloc((size_t)m->n_elems, sizeof(float), "width fisher");
        t.mode = 0;
        t.inv_n = 1.0 / (double)N;
        for (int64_t j = 0; j < N && !rc; j++) {
            int mine = j >= a && j < b;
            rc = grad_pass(&t, &e, ids, mine ? j : 0, mine ? j + 1 : 0, T, 1.0 / (double)(T - 1), err);
        }
    }
    t.mode = 1;
    if (!rc) rc = grad_pass(&t, &e, ids, a, b, T, 1.0 / (double)(N * (T - 1)), err); /* mean loss over all tokens */
    dp_engine_close(&e);
    dp_free(t.gblock);
    dp_free(t.fisher);
    if (rc) dp_width_scores_free(s);
    return rc;
}

/* ---------------- the plan ---------------- */

typedef struct {
    double v;
    int64_t i;
} vi;

static int cmp_vi(const void *x, const void *y) { /* ascending importance, then index */
    const vi *a = x, *b = y;
    if (a->v != b->v) return a->v < b->v ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static int cmp_i64(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? -1 : a > b;
}

static int64_t n_removed(int64_t n, double ratio) {
    int64_t k = (int64_t)llround(ratio * (double)n);
    return k > n - 1 ? n - 1 : k < 0 ? 0 : k;
}

/* keeps the n - k most important of n, ascending indices */
static int64_t *keep_top(const double *imp, int64_t n, int64_t k) {
    vi *v = dp_malloc((size_t)n * sizeof(vi), "width");
    for (int64_t i = 0; i < n; i++) v[i] = (vi){imp[i], i};
    qsort(v, (size_t)n, sizeof(vi), cmp_vi);
    int64_t *keep = dp_malloc((size_t)(n - k) * sizeof(int64_t), "width");
    for (int64_t i = k; i < n; i++) keep[i - k] = v[i].i;
    qsort(keep, (size_t)(n - k), sizeof(int64_t), cmp_i64);
    dp_free(v);
    return keep;
}

int dp_width_plan_make(const dp_llama *m, const dp_width_scores *s, double ratio, int first, int last, dp_width_plan *p,
                       dp_err *err) {
    int L = (int)m->cfg.n_layers;
    memset(p, 0, sizeof *p);
    if (!(ratio >= 0 && ratio < 1)) return dp_err_set(err, DP_E_USAGE, "the width ratio must be in [0, 1)");
    if (first < 0 || last < 0 || first + last >= L)
        return dp_err_set(err, DP_E_USAGE, "protecting %d first and %d last of %d blocks leaves none to prune", first,
                          last, L);
    p->L = L;
    for (int l = 0; l < L; l++) {
        int pruned = l >= first && l < L - last;
        int64_t kg = pruned ? n_removed(s->n_groups[l], ratio) : 0, kc = pruned ? n_removed(s->n_chan[l], ratio) : 0;
        p->keep_g[l] = keep_top(s->attn[l], s->n_groups[l], kg);
        p->keep_c[l] = keep_top(s->mlp[l], s->n_chan[l], kc);
        p->n_keep_g[l] = s->n_groups[l] - kg;
        p->n_keep_c[l] = s->n_chan[l] - kc;
    }
    return DP_OK;
}

void dp_width_plan_free(dp_width_plan *p) {
    for (int l = 0; l < p->L; l++) {
        dp_free(p->keep_g[l]);
        dp_free(p->keep_c[l]);
    }
    memset(p, 0, sizeof *p);
}

int64_t dp_width_params(const dp_llama_config *c, double ratio, int first, int last) {
    dp_llama_config x = *c;
    int L = (int)c->n_layers;
    int64_t rep = c->n_heads / c->n_kv_heads;
    for (int l = first; l < L - last; l++) {
        x.layer_kv_heads[l] = c->layer_kv_heads[l] - n_removed(c->layer_kv_heads[l], ratio);
        x.layer_heads[l] = x.layer_kv_heads[l] * rep;
        x.layer_inter[l] = c->layer_inter[l] - n_removed(c->layer_inter[l], ratio);
    }
    return dp_llama_param_count(&x);
}

double dp_width_match_ratio(const dp_llama_config *c, int64_t target, int first, int last) {
    double best = 1e300, ratio = 0;
    for (int i = 0; i < 9500; i++) {
        double r = i * 1e-4, d = fabs((double)dp_width_params(c, r, first, last) - (double)target);
        if (d < best) best = d, ratio = r;
    }
    return ratio;
}

/* ---------------- applying it ---------------- */

int dp_width_apply(const dp_llama *m, const dp_width_plan *p, dp_st_entry **entries, int *n_entries,
                   dp_llama_config *out_cfg, dp_err *err) {
    const dp_llama_config *c = &m->cfg;
    int L = (int)c->n_layers;
    int64_t C = c->hidden_size, HD = c->head_dim, rep = c->n_heads / c->n_kv_heads;
    dp_st_entry *e = dp_calloc((size_t)(L * DP_LLAMA_BLOCK_TENSORS), sizeof *e, "width");
    int n = 0;
    for (int l = 0; l < L; l++) {
        int64_t G = p->n_keep_g[l], Fk = p->n_keep_c[l], QD = G * rep * HD, KD = G * HD, F0 = c->layer_inter[l];
        int64_t QD0 = c->layer_heads[l] * HD;
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
            const dp_llama_param *pp = bparam(m, l, k);
            const float *w = m->mem + pp->offset;
            int64_t rows = pp->rows, cols = pp->cols ? pp->cols : 1, nr = rows, nc = cols;
            if (k == DP_BT_Q)
                nr = QD;
            else if (k == DP_BT_K || k == DP_BT_V)
                nr = KD;
            else if (k == DP_BT_O)
                nc = QD;
            else if (k == DP_BT_GATE || k == DP_BT_UP)
                nr = Fk;
            else if (k == DP_BT_DOWN)
                nc = Fk;
            float *d = dp_malloc((size_t)(nr * nc) * sizeof(float) + 4, "width");
            /* source row (or column) of kept row r */
            for (int64_t r = 0; r < nr; r++) {
                int64_t sr = r;
                if (k == DP_BT_Q)
                    sr = p->keep_g[l][r / (rep * HD)] * rep * HD + r % (rep * HD);
                else if (k == DP_BT_K || k == DP_BT_V)
                    sr = p->keep_g[l][r / HD] * HD + r % HD;
                else if (k == DP_BT_GATE || k == DP_BT_UP)
                    sr = p->keep_c[l][r];
                for (int64_t j = 0; j < nc; j++) {
                    int64_t sj = j;
                    if (k == DP_BT_O)
                        sj = p->keep_g[l][j / (rep * HD)] * rep * HD + j % (rep * HD);
                    else if (k == DP_BT_DOWN)
                        sj = p->keep_c[l][j];
                    d[r * nc + j] = w[sr * cols + sj];
                }
            }
            e[n].name = dp_strdup(pp->name, "width");
            e[n].dtype = DP_DTYPE_F32;
            e[n].ndim = pp->cols ? 2 : 1;
            e[n].shape[0] = nr;
            e[n].shape[1] = pp->cols ? nc : 0;
            e[n].data = d;
            n++;
        }
        (void)F0, (void)QD0, (void)C;
    }
    *entries = e;
    *n_entries = n;
    *out_cfg = *c;
    out_cfg->json_text = dp_strdup(c->json_text ? c->json_text : "{}", "config");
    out_cfg->width_varies = 1;
    for (int l = 0; l < L; l++) {
        out_cfg->layer_kv_heads[l] = p->n_keep_g[l];
        out_cfg->layer_heads[l] = p->n_keep_g[l] * rep;
        out_cfg->layer_inter[l] = p->n_keep_c[l];
    }
    (void)err;
    return DP_OK;
}

void dp_width_entries_free(dp_st_entry *e, int n) {
    for (int i = 0; i < n; i++) {
        dp_free((void *)e[i].name);
        dp_free((void *)e[i].data);
    }
    dp_free(e);
}
