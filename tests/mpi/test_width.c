/* Width pruning under mpirun (1-2 ranks) on the gqa fixture model
 * (4 blocks, 4 heads / 2 kv heads, MLP 176):
 * - param_first group importance == sum |w * g| over each coupled group
 *   from a full gradient computed here, and the gradient behind it == a
 *   directional finite difference of the loss along one group's weights;
 * - param_second == sum w^2 * mean_j g_j^2 from per-sample gradients;
 * - the plan removes exactly the least important groups of the unprotected
 *   blocks; the parameter count formula matches the pruned config;
 * - the pruned model computes the dense model's logits with those heads and
 *   channels zeroed (within fp32 rounding);
 * - bad input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "depthprune/width.h"

enum { N = 4, T = 10 };

static void load(dp_llama *m) {
    char dir[512];
    dp_err err;
    snprintf(dir, sizeof dir, "%s/llama_gqa", DP_TEST_DATA);
    if (dp_llama_load(dir, m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
}

/* mean CE over samples [a, b) (all T-1 predicted tokens of each), and its
 * gradient into g (whole model layout) if not NULL, scaled to the mean over
 * n_norm samples */
static double loss_grad(const dp_llama *m, const int32_t *ids, int a, int b, int n_norm, float *g) {
    dp_err err;
    dp_layer_map map;
    dp_layer_map_all(&map, (int)m->cfg.n_layers);
    int nb = b - a;
    dp_llama_state s;
    dp_llama_state_init(&s, m, NULL, nb, T, map.n, g ? DP_STATE_TRAIN : 0, 0, &err);
    int32_t tg[N * T];
    dp_llama_next_targets(tg, ids + a * T, nb, T);
    dp_llama_forward(m, NULL, &map, &s, ids + a * T, &err);
    double sum = dp_llama_loss_ce(&s, m, tg, NULL, 0.0);
    if (g) {
        dp_llama_view gv;
        memset(g, 0, (size_t)m->n_elems * sizeof(float));
        dp_llama_view_of(m, g, &gv);
        dp_llama_zero_dlogits(&s, m);
        dp_llama_loss_ce(&s, m, tg, NULL, 1.0 / (double)(n_norm * (T - 1)));
        dp_llama_backward(m, NULL, &map, &s, ids + a * T, &gv, NULL);
    }
    dp_llama_state_free(&s);
    return sum / (double)(n_norm * (T - 1));
}

/* visits every element of group (l, attention kv group q or MLP channel q) */
typedef void (*visit_fn)(int64_t offset, void *ctx);
static void for_group(const dp_llama *m, int l, int mlp, int64_t q, visit_fn f, void *ctx) {
    const dp_llama_config *c = &m->cfg;
    int64_t HD = c->head_dim, rep = c->n_heads / c->n_kv_heads;
    for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
        const dp_llama_param *p = &m->params[1 + l * DP_LLAMA_BLOCK_TENSORS + k];
        int64_t r0 = -1, r1 = -1, c0 = -1, c1 = -1;
        if (!mlp && k == DP_BT_Q) r0 = q * rep * HD, r1 = r0 + rep * HD;
        if (!mlp && (k == DP_BT_K || k == DP_BT_V)) r0 = q * HD, r1 = r0 + HD;
        if (!mlp && k == DP_BT_O) c0 = q * rep * HD, c1 = c0 + rep * HD;
        if (mlp && (k == DP_BT_GATE || k == DP_BT_UP)) r0 = q, r1 = q + 1;
        if (mlp && k == DP_BT_DOWN) c0 = q, c1 = q + 1;
        for (int64_t r = 0; r < p->rows; r++)
            for (int64_t j = 0; j < (p->cols ? p->cols : 1); j++)
                if ((r0 >= 0 && r >= r0 && r < r1) || (c0 >= 0 && j >= c0 && j < c1))
                    f(p->offset + r * p->cols + j, ctx);
    }
}

typedef struct {
    const float *w, *g, *fisher;
    double sum;
    int kind; /* 0 |w g|, 1 w g, 2 w^2 F, 3: zero the weight */
    float *wz;
} acc_ctx;
static void acc_fn(int64_t o, void *p) {
    acc_ctx *a = p;
    if (a->kind == 0)
        a->sum += fabs((double)a->w[o] * a->g[o]);
    else if (a->kind == 1)
        a->sum += (double)a->w[o] * a->g[o];
    else if (a->kind == 2)
        a->sum += fabs((double)a->w[o] * a->fisher[o] * a->w[o]);
    else
        a->wz[o] = 0;
}
typedef struct {
    float *w;
    double eps;
} scale_ctx;
static void scale_fn(int64_t o, void *p) {
    scale_ctx *s = p;
    s->w[o] *= (float)(1.0 + s->eps);
}

int main(int argc, char **argv) {
    dp_mpi mpi;
    dp_mpi_init(&argc, &argv, &mpi);
    dp_llama m;
    load(&m);
    const dp_llama_config *c = &m.cfg;
    int L = (int)c->n_layers;
    int32_t ids[N * T];
    uint64_t z = 9;
    for (int i = 0; i < N * T; i++) ids[i] = (int32_t)(dp_splitmix64(&z) % (uint64_t)c->vocab_size);
    dp_err err;

    /* ---- param_first vs a full gradient, and that gradient vs finite differences ---- */
    float *g = malloc((size_t)m.n_elems * sizeof(float));
    loss_grad(&m, ids, 0, N, N, g);
    dp_width_scores s1;
    CHECK(dp_width_importance(&mpi, DP_TEST_DEVICE, &m, ids, N, T, DP_WIDTH_TAYLOR1, 1, &s1, &err) == DP_OK);
    double worst = 0;
    for (int l = 0; l < L; l++)
        for (int mlp = 0; mlp < 2; mlp++)
            for (int64_t q = 0; q < (mlp ? s1.n_chan[l] : s1.n_groups[l]); q++) {
                acc_ctx a = {.w = m.mem, .g = g, .kind = 0};
                for_group(&m, l, mlp, q, acc_fn, &a);
                double got = mlp ? s1.mlp[l][q] : s1.attn[l][q];
                worst = fmax(worst, fabs(got - a.sum) / fmax(a.sum, 1e-30));
            }
    if (mpi.rank == 0) printf("param_first vs direct sum |w g| over every group: max rel diff %.2e\n", worst);
    CHECK_MSG(worst < (mpi.size == 1 ? 1e-9 : 1e-4), "group importance differs from the direct sum (%.3g)", worst);
    const int probes[3][3] = {{1, 0, 0}, {2, 0, 1}, {1, 1, 3}}; /* block, mlp, group */
    for (int i = 0; i < 3; i++) {
        int l = probes[i][0], mlp = probes[i][1], q = probes[i][2];
        acc_ctx a = {.w = m.mem, .g = g, .kind = 1};
        for_group(&m, l, mlp, q, acc_fn, &a);
        double eps = 1e-3, lp, lm;
        dp_llama w2;
        dp_llama_clone(&w2, &m);
        scale_ctx sc = {w2.mem, eps};
        for_group(&m, l, mlp, q, scale_fn, &sc);
        lp = loss_grad(&w2, ids, 0, N, N, NULL);
        memcpy(w2.mem, m.mem, (size_t)m.n_elems * sizeof(float));
        sc.eps = -eps;
        for_group(&m, l, mlp, q, scale_fn, &sc);
        lm = loss_grad(&w2, ids, 0, N, N, NULL);
        dp_llama_free(&w2);
        double fd = (lp - lm) / (2 * eps);
        if (mpi.rank == 0)
            printf("block %d %s %d: sum w*g %.6e, finite difference %.6e\n", l, mlp ? "channel" : "kv group", q, a.sum,
                   fd);
        CHECK_MSG(fabs(fd - a.sum) <= 2e-2 * fabs(a.sum) + 1e-6,
                  "gradient of group (%d,%d,%d) disagrees with the finite difference", l, mlp, q);
    }

    /* ---- param_second: w^2 * mean_j g_j^2 from per-sample gradients ---- */
    float *fisher = calloc((size_t)m.n_elems, sizeof(float)), *gj = malloc((size_t)m.n_elems * sizeof(float));
    for (int j = 0; j < N; j++) {
        loss_grad(&m, ids, j, j + 1, 1, gj);
        for (int64_t e = 0; e < m.n_elems; e++) fisher[e] += (float)((double)gj[e] * gj[e] / N);
    }
    dp_width_scores s2;
    CHECK(dp_width_importance(&mpi, DP_TEST_DEVICE, &m, ids, N, T, DP_WIDTH_TAYLOR2, 1, &s2, &err) == DP_OK);
    worst = 0;
    for (int l = 0; l < L; l++)
        for (int64_t q = 0; q < s2.n_chan[l]; q++) {
            acc_ctx a = {.w = m.mem, .fisher = fisher, .kind = 2};
            for_group(&m, l, 1, q, acc_fn, &a);
            worst = fmax(worst, fabs(s2.mlp[l][q] - a.sum) / fmax(a.sum, 1e-30));
        }
    if (mpi.rank == 0) printf("param_second vs direct w^2 * mean g_j^2: max rel diff %.2e\n", worst);
    CHECK(worst < 1e-4);
    dp_width_scores_free(&s2);

    /* ---- the plan: the least important groups go, protected blocks stay ---- */
    dp_width_plan p;
    CHECK(dp_width_plan_make(&m, &s1, 0.5, 1, 1, &p, &err) == DP_OK);
    for (int l = 0; l < L; l++) {
        int pruned = l >= 1 && l < L - 1;
        CHECK_EQ_INT(p.n_keep_g[l], pruned ? 1 : 2);
        CHECK_EQ_INT(p.n_keep_c[l], pruned ? 88 : 176);
        for (int mlp = 0; mlp < 2; mlp++) { /* every kept group outranks every removed one */
            int64_t n = mlp ? s1.n_chan[l] : s1.n_groups[l], nk = mlp ? p.n_keep_c[l] : p.n_keep_g[l];
            const int64_t *keep = mlp ? p.keep_c[l] : p.keep_g[l];
            const double *imp = mlp ? s1.mlp[l] : s1.attn[l];
            char *kept = calloc((size_t)n, 1);
            for (int64_t i = 0; i < nk; i++) kept[keep[i]] = 1;
            double min_kept = INFINITY, max_gone = -INFINITY;
            for (int64_t i = 0; i < n; i++)
                if (kept[i])
                    min_kept = fmin(min_kept, imp[i]);
                else
                    max_gone = fmax(max_gone, imp[i]);
            CHECK_MSG(max_gone <= min_kept, "block %d: a removed %s outranks a kept one", l, mlp ? "channel" : "group");
            free(kept);
        }
    }

    /* ---- the pruned model == the dense model with those groups zeroed ---- */
    dp_st_entry *ent = NULL;
    int n_ent = 0;
    dp_llama_config pc;
    CHECK(dp_width_apply(&m, &p, &ent, &n_ent, &pc, &err) == DP_OK);
    CHECK_EQ_INT(dp_llama_param_count(&pc), dp_width_params(c, 0.5, 1, 1));
    dp_llama pm;
    CHECK(dp_llama_init(&pm, &pc, &err) == DP_OK);
    for (int i = 0; i < pm.n_params; i++) {
        const dp_llama_param *pp = &pm.params[i];
        const float *src = NULL;
        for (int k = 0; k < n_ent; k++)
            if (!strcmp(ent[k].name, pp->name)) {
                src = ent[k].data;
                CHECK(ent[k].shape[0] == pp->rows);
            }
        if (!src)
            for (int k = 0; k < m.n_params; k++)
                if (!strcmp(m.params[k].name, pp->name)) src = m.mem + m.params[k].offset;
        CHECK(src != NULL);
        if (src) memcpy(pm.mem + pp->offset, src, (size_t)pp->n_elems * sizeof(float));
    }
    dp_llama mz;
    dp_llama_clone(&mz, &m);
    for (int l = 1; l < L - 1; l++)
        for (int mlp = 0; mlp < 2; mlp++) {
            int64_t n = mlp ? s1.n_chan[l] : s1.n_groups[l], nk = mlp ? p.n_keep_c[l] : p.n_keep_g[l];
            const int64_t *keep = mlp ? p.keep_c[l] : p.keep_g[l];
            for (int64_t q = 0; q < n; q++) {
                int kept = 0;
                for (int64_t i = 0; i < nk; i++) kept |= keep[i] == q;
                if (kept) continue;
                acc_ctx a = {.kind = 3, .wz = mz.mem};
                for_group(&m, l, mlp, q, acc_fn, &a);
            }
        }
    dp_layer_map map;
    dp_layer_map_all(&map, L);
    dp_llama_state sa, sb;
    CHECK(dp_llama_state_init(&sa, &pm, NULL, N, T, L, 0, 0, &err) == DP_OK);
    CHECK(dp_llama_state_init(&sb, &mz, NULL, N, T, L, 0, 0, &err) == DP_OK);
    dp_llama_forward(&pm, NULL, &map, &sa, ids, &err);
    dp_llama_forward(&mz, NULL, &map, &sb, ids, &err);
    double d = 0, r = 0;
    for (int64_t i = 0; i < (int64_t)N * T * c->vocab_size; i++) {
        d = fmax(d, fabs((double)sa.logits[i] - sb.logits[i]));
        r = fmax(r, fabs((double)sb.logits[i]));
    }
    if (mpi.rank == 0) printf("pruned model vs masked dense model: logits max rel diff %.2e\n", d / r);
    CHECK(d / r < 1e-5);
    /* and the masked model differs from the dense one (the test can fail) */
    dp_llama_state sd;
    dp_llama_state_init(&sd, &m, NULL, N, T, L, 0, 0, &err);
    dp_llama_forward(&m, NULL, &map, &sd, ids, &err);
    double dd = 0;
    for (int64_t i = 0; i < (int64_t)N * T * c->vocab_size; i++)
        dd = fmax(dd, fabs((double)sd.logits[i] - sb.logits[i]));
    CHECK(dd > 1e-3 * r);
    dp_llama_state_free(&sa);
    dp_llama_state_free(&sb);
    dp_llama_state_free(&sd);
    dp_llama_free(&pm);
    dp_llama_free(&mz);
    dp_width_entries_free(ent, n_ent);
    dp_width_plan_free(&p);

    /* ---- magnitude and random: no calibration; bad input ---- */
    dp_width_scores s3;
    CHECK(dp_width_importance(&mpi, DP_TEST_DEVICE, &m, NULL, 0, 0, DP_WIDTH_L1, 1, &s3, &err) == DP_OK);
    acc_ctx a = {.w = m.mem, .g = g, .kind = 0};
    (void)a;
    dp_width_scores_free(&s3);
    CHECK(dp_width_plan_make(&m, &s1, 0.5, 2, 2, &p, &err) == DP_E_USAGE);
    CHECK(dp_width_plan_make(&m, &s1, 1.0, 1, 1, &p, &err) == DP_E_USAGE);
    CHECK(dp_width_crit_parse("param_mix") == DP_WIDTH_MIX && dp_width_crit_parse("taylor") < 0);
    dp_width_scores_free(&s1);
    free(g);
    free(gj);
    free(fisher);
    dp_llama_free(&m);
    dp_mpi_finalize(&mpi);
    TEST_EXIT();
}
