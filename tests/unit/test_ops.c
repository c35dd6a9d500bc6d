/* Finite-difference gradient checks of every CPU op in double precision
 * (the fp64 twins compiled from the same source as the fp32 engine), on
 * small random shapes including GQA and odd sizes; plus fp32 vs fp64
 * agreement of the forwards, so the fp32 instantiation is checked too. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "depthprune/ops.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* xorshift64*, uniform in [-1, 1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}
static double *rnd(int64_t n, double scale) {
    double *p = malloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) p[i] = urand() * scale;
    return p;
}
static double *zeros(int64_t n) {
    return calloc((size_t)n, sizeof(double));
}

/* The op under test as a scalar function of its inputs: loss = <out, r>. */
typedef double (*loss_fn)(void *ctx);

/* Compares analytic gradient g of parameter x (n elems) with central
 * differences of f; reports the worst element relative to max(|g|). */
static void gradcheck(const char *what, loss_fn f, void *ctx, double *x, const double *g, int64_t n) {
    const double h = 1e-6;
    double worst = 0, gmax = 1e-12;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(g[i]));
    for (int64_t i = 0; i < n; i++) {
        double keep = x[i];
        x[i] = keep + h;
        double fp = f(ctx);
        x[i] = keep - h;
        double fm = f(ctx);
        x[i] = keep;
        double num = (fp - fm) / (2 * h), err = fabs(num - g[i]) / gmax;
        if (err > worst) {
            worst = err;
            at = i;
        }
    }
    CHECK_MSG(worst <= 1e-6, "%s: worst relative error %.3g at element %lld (gmax %.3g)", what, worst, (long long)at,
              gmax);
}

static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ---------------- rmsnorm ---------------- */
typedef struct {
    int64_t N, C;
    double *x, *w, *r, *out, *rstd;
} norm_ctx;
static double norm_loss(void *p) {
    norm_ctx *c = p;
    dp_rmsnorm_forward_f64(c->out, c->rstd, c->x, c->w, c->N, c->C, 1e-5);
    return dot(c->out, c->r, c->N * c->C);
}
static void test_rmsnorm(void) {
    norm_ctx c = {.N = 5, .C = 7};
    c.x = rnd(35, 1), c.w = rnd(7, 1), c.r = rnd(35, 1), c.out = zeros(35), c.rstd = zeros(5);
    double *dx = zeros(35), *dw = zeros(7);
    norm_loss(&c);
    dp_rmsnorm_backward_f64(dx, dw, c.r, c.x, c.w, c.rstd, c.N, c.C);
    gradcheck("rmsnorm dx", norm_loss, &c, c.x, dx, 35);
    gradcheck("rmsnorm dw", norm_loss, &c, c.w, dw, 7);
    free(c.x), free(c.w), free(c.r), free(c.out), free(c.rstd), free(dx), free(dw);
}

/* ---------------- matmul + LoRA ---------------- */
typedef struct {
    int64_t N, IN, OUT, RK;
    double scale;
    double *x, *w, *a, *b, *r, *out, *xa;
} lin_ctx;
static double lin_loss(void *p) {
    lin_ctx *c = p;
    dp_matmul_forward_f64(c->out, c->x, c->w, c->N, c->IN, c->OUT);
    if (c->a) dp_lora_forward_f64(c->out, c->xa, c->x, c->a, c->b, c->scale, c->N, c->IN, c->OUT, c->RK);
    return dot(c->out, c->r, c->N * c->OUT);
}
static void test_linear(void) {
    for (int lora = 0; lora <= 1; lora++) {
        lin_ctx c = {.N = 6, .IN = 5, .OUT = 9, .RK = 3, .scale = 16.0 / 3};
        c.x = rnd(30, 1), c.w = rnd(45, 1), c.r = rnd(54, 1), c.out = zeros(54), c.xa = zeros(18);
        if (lora) c.a = rnd(15, 1), c.b = rnd(27, 1);
        double *dx = zeros(30), *dw = zeros(45), *da = zeros(15), *db = zeros(27), *scr = zeros(18);
        lin_loss(&c);
        dp_matmul_backward_f64(dx, dw, c.r, c.x, c.w, c.N, c.IN, c.OUT);
        if (lora) dp_lora_backward_f64(dx, da, db, scr, c.r, c.x, c.xa, c.a, c.b, c.scale, c.N, c.IN, c.OUT, c.RK);
        gradcheck(lora ? "lora dx" : "matmul dx", lin_loss, &c, c.x, dx, 30);
        gradcheck("matmul dw", lin_loss, &c, c.w, dw, 45);
        if (lora) {
            gradcheck("lora da", lin_loss, &c, c.a, da, 15);
            gradcheck("lora db", lin_loss, &c, c.b, db, 27);
        }
        free(c.x), free(c.w), free(c.r), free(c.out), free(c.xa), free(c.a), free(c.b);
        free(dx), free(dw), free(da), free(db), free(scr);
    }
}

/* ---------------- rope + attention (GQA) ---------------- */
typedef struct {
    int64_t B, T, NH, NKV, HD;
    double *q, *k, *v, *cs, *sn, *r, *out, *att, *qr, *kr;
} att_ctx;
static double att_loss(void *p) {
    att_ctx *c = p;
    int64_t nq = c->B * c->T * c->NH * c->HD, nk = c->B * c->T * c->NKV * c->HD;
    memcpy(c->qr, c->q, (size_t)nq * sizeof(double));
    memcpy(c->kr, c->k, (size_t)nk * sizeof(double));
    dp_rope_forward_f64(c->qr, c->cs, c->sn, c->B, c->T, c->NH, c->HD);
    dp_rope_forward_f64(c->kr, c->cs, c->sn, c->B, c->T, c->NKV, c->HD);
    dp_attention_forward_f64(c->out, c->att, c->qr, c->kr, c->v, c->B, c->T, c->NH, c->NKV, c->HD);
    return dot(c->out, c->r, nq);
}
static void test_attention(int64_t NH, int64_t NKV) {
    att_ctx c = {.B = 2, .T = 5, .NH = NH, .NKV = NKV, .HD = 6};
    int64_t nq = c.B * c.T * NH * c.HD, nk = c.B * c.T * NKV * c.HD, h = c.HD / 2;
    c.q = rnd(nq, 1), c.k = rnd(nk, 1), c.v = rnd(nk, 1), c.r = rnd(nq, 1), c.out = zeros(nq);
    c.att = zeros(c.B * NH * c.T * c.T), c.qr = zeros(nq), c.kr = zeros(nk);
    c.cs = zeros(c.T * h), c.sn = zeros(c.T * h);
    for (int64_t t = 0; t < c.T; t++)
        for (int64_t j = 0; j < h; j++) {
            double a = t * pow(10000.0, -2.0 * j / c.HD);
            c.cs[t * h + j] = cos(a), c.sn[t * h + j] = sin(a);
        }
    double *dq = zeros(nq), *dk = zeros(nk), *dv = zeros(nk);
    att_loss(&c);
    dp_attention_backward_f64(dq, dk, dv, c.r, c.att, c.qr, c.kr, c.v, c.B, c.T, NH, NKV, c.HD);
    dp_rope_backward_f64(dq, c.cs, c.sn, c.B, c.T, NH, c.HD);
    dp_rope_backward_f64(dk, c.cs, c.sn, c.B, c.T, NKV, c.HD);
    char name[64];
    snprintf(name, sizeof name, "attention NH=%lld NKV=%lld dq", (long long)NH, (long long)NKV);
    gradcheck(name, att_loss, &c, c.q, dq, nq);
    name[strlen(name) - 1] = 'k';
    gradcheck(name, att_loss, &c, c.k, dk, nk);
    name[strlen(name) - 2] = 'd', name[strlen(name) - 1] = 'v';
    gradcheck(name, att_loss, &c, c.v, dv, nk);
    /* causality: the output at t=0 depends on position 0 only */
    CHECK(c.att[1] == 0.0 && fabs(c.att[0] - 1.0) < 1e-15);
    free(c.q), free(c.k), free(c.v), free(c.r), free(c.out), free(c.att), free(c.qr), free(c.kr);
    free(c.cs), free(c.sn), free(dq), free(dk), free(dv);
}

/* ---------------- swiglu, embedding ---------------- */
typedef struct {
    int64_t n;
    double *g, *u, *r, *out;
} sw_ctx;
static double sw_loss(void *p) {
    sw_ctx *c = p;
    dp_swiglu_forward_f64(c->out, c->g, c->u, c->n);
    return dot(c->out, c->r, c->n);
}
typedef struct {
    int64_t N, C;
    int32_t *tok;
    double *wte, *r, *out;
} emb_ctx;
static double emb_loss(void *p) {
    emb_ctx *c = p;
    dp_embed_forward_f64(c->out, c->tok, c->wte, c->N, c->C);
    return dot(c->out, c->r, c->N * c->C);
}
static void test_swiglu_embed(void) {
    sw_ctx c = {.n = 23};
    c.g = rnd(23, 4), c.u = rnd(23, 1), c.r = rnd(23, 1), c.out = zeros(23);
    double *dg = zeros(23), *du = zeros(23);
    sw_loss(&c);
    dp_swiglu_backward_f64(dg, du, c.r, c.g, c.u, c.n);
    gradcheck("swiglu dgate", sw_loss, &c, c.g, dg, 23);
    gradcheck("swiglu dup", sw_loss, &c, c.u, du, 23);
    free(c.g), free(c.u), free(c.r), free(c.out), free(dg), free(du);

    int32_t tok[7] = {3, 0, 3, 4, 1, 3, 2};
    emb_ctx e = {.N = 7, .C = 3, .tok = tok};
    e.wte = rnd(15, 1), e.r = rnd(21, 1), e.out = zeros(21);
    double *dw = zeros(15);
    emb_loss(&e);
    dp_embed_backward_f64(dw, e.r, tok, 7, 3);
    gradcheck("embedding dwte (repeated tokens)", emb_loss, &e, e.wte, dw, 15);
    free(e.wte), free(e.r), free(e.out), free(dw);
}

/* ---------------- cross-entropy and KD ---------------- */
typedef struct {
    int64_t N, V, K;
    double temp;
    int32_t *tgt, *idx;
    double *s, *t, *tval, *tlse, *rows;
    int mode; /* 0 CE, 1 KD full, 2 KD top-k */
} loss_ctx;
static double loss_loss(void *p) {
    loss_ctx *c = p;
    if (c->mode == 0) return dp_crossentropy_forward_f64(c->rows, c->s, c->tgt, c->N, c->V, NULL);
    if (c->mode == 1) return dp_kd_forward_f64(c->rows, c->s, c->t, c->tgt, c->temp, c->N, c->V);
    return dp_kd_topk_forward_f64(c->rows, c->s, c->idx, c->tval, c->tlse, c->tgt, c->temp, c->N, c->V, c->K);
}
static void test_losses(void) {
    int32_t tgt[4] = {2, -1, 10, 0};
    loss_ctx c = {.N = 4, .V = 11, .K = 3, .temp = 2.0, .tgt = tgt};
    c.s = rnd(44, 3), c.t = rnd(44, 3), c.rows = zeros(4);
    double *d = zeros(44);
    int64_t cnt = 0;
    double tot = dp_crossentropy_forward_f64(c.rows, c.s, tgt, 4, 11, &cnt);
    CHECK_EQ_INT(cnt, 3);
    CHECK(c.rows[1] == 0.0 && tot > 0);
    dp_crossentropy_backward_f64(d, c.s, tgt, 1.0, 4, 11);
    gradcheck("cross-entropy dlogits", loss_loss, &c, c.s, d, 44);

    c.mode = 1;
    memset(d, 0, 44 * sizeof(double));
    dp_kd_backward_f64(d, c.s, c.t, tgt, c.temp, 1.0, 4, 11);
    gradcheck("kd dstudent", loss_loss, &c, c.s, d, 44);
    /* KL of a distribution with itself is zero */
    double kself = dp_kd_forward_f64(c.rows, c.t, c.t, NULL, 2.0, 4, 11);
    CHECK_MSG(fabs(kself) < 1e-12, "KL(p||p) = %g", kself);

    /* top-k: teacher's K largest logits per row and its lse at T */
    c.mode = 2;
    c.idx = malloc(4 * 3 * sizeof(int32_t)), c.tval = zeros(12), c.tlse = zeros(4);
    for (int64_t n = 0; n < 4; n++) {
        char used[11] = {0};
        for (int64_t j = 0; j < 3; j++) {
            int64_t best = -1;
            for (int64_t i = 0; i < 11; i++)
                if (!used[i] && (best < 0 || c.t[n * 11 + i] > c.t[n * 11 + best])) best = i;
            used[best] = 1;
            c.idx[n * 3 + j] = (int32_t)best;
            c.tval[n * 3 + j] = c.t[n * 11 + best];
        }
        double mx = -1e300, s = 0;
        for (int64_t i = 0; i < 11; i++) mx = fmax(mx, c.t[n * 11 + i] / 2.0);
        for (int64_t i = 0; i < 11; i++) s += exp(c.t[n * 11 + i] / 2.0 - mx);
        c.tlse[n] = log(s) + mx;
    }
    memset(d, 0, 44 * sizeof(double));
    dp_kd_topk_backward_f64(d, c.s, c.idx, c.tval, c.tlse, tgt, c.temp, 1.0, 4, 11, 3);
    gradcheck("kd top-k dstudent", loss_loss, &c, c.s, d, 44);
    double full = dp_kd_forward_f64(c.rows, c.s, c.t, tgt, 2.0, 4, 11);
    double part = loss_loss(&c);
    CHECK_MSG(part <= full + 1e-12 && part > 0, "bucketed KL %g must not exceed full KL %g", part, full);
    /* with K = V the top-k loss is the full loss */
    int32_t idx_all[44];
    double tval_all[44];
    for (int64_t n = 0; n < 4; n++)
        for (int64_t i = 0; i < 11; i++) idx_all[n * 11 + i] = (int32_t)i, tval_all[n * 11 + i] = c.t[n * 11 + i];
    double allk = dp_kd_topk_forward_f64(c.rows, c.s, idx_all, tval_all, c.tlse, tgt, 2.0, 4, 11, 11);
    CHECK_MSG(fabs(allk - full) < 1e-10 * fabs(full), "top-k with K=V %.15g vs full %.15g", allk, full);
    free(c.s), free(c.t), free(c.rows), free(d), free(c.idx), free(c.tval), free(c.tlse);
}

/* ---------------- AdamW against its closed form after one step ---------------- */
static void test_adamw(void) {
    double p[3] = {1.0, -2.0, 0.5}, g[3] = {0.1, -0.3, 0.0}, m[3] = {0}, v[3] = {0};
    dp_adamw_update_f64(p, g, m, v, 3, 0.01, 0.9, 0.999, 1e-8, 0.1, 1);
    /* step 1: mhat = g, vhat = g^2, so the update is lr*g/(|g|+eps) after decay */
    double want0 = 1.0 * (1 - 0.001) - 0.01 * 0.1 / (0.1 + 1e-8);
    double want2 = 0.5 * (1 - 0.001);
    CHECK_MSG(fabs(p[0] - want0) < 1e-12 && fabs(p[2] - want2) < 1e-15, "adamw %.15g %.15g", p[0], p[2]);
}

/* ---------------- fp32 instantiation agrees with fp64 ---------------- */
static void test_f32_vs_f64(void) {
    int64_t B = 2, T = 9, NH = 4, NKV = 2, HD = 8, nq = B * T * NH * HD, nk = B * T * NKV * HD;
    double *q = rnd(nq, 1), *k = rnd(nk, 1), *v = rnd(nk, 1), *o = zeros(nq), *att = zeros(B * NH * T * T);
    float *qf = malloc(nq * 4), *kf = malloc(nk * 4), *vf = malloc(nk * 4), *of = malloc(nq * 4);
    float *attf = malloc(B * NH * T * T * 4), *oref = malloc(nq * 4);
    for (int64_t i = 0; i < nq; i++) qf[i] = (float)q[i];
    for (int64_t i = 0; i < nk; i++) kf[i] = (float)k[i], vf[i] = (float)v[i];
    for (int64_t i = 0; i < nq; i++) q[i] = qf[i];
    for (int64_t i = 0; i < nk; i++) k[i] = kf[i], v[i] = vf[i];
    dp_attention_forward_f64(o, att, q, k, v, B, T, NH, NKV, HD);
    dp_attention_forward(of, attf, qf, kf, vf, B, T, NH, NKV, HD);
    for (int64_t i = 0; i < nq; i++) oref[i] = (float)o[i];
    dp_test_allclose("attention fp32 vs fp64", of, oref, (size_t)nq, 1e-6, 1e-5);
    free(q), free(k), free(v), free(o), free(att), free(qf), free(kf), free(vf), free(of), free(attf), free(oref);
}

int main(void) {
    test_rmsnorm();
    test_linear();
    test_attention(4, 2);
    test_attention(3, 3);
    test_attention(6, 1);
    test_swiglu_embed();
    test_losses();
    test_adamw();
    test_f32_vs_f64();
    TEST_EXIT();
}
