/* The formulas the CUDA kernels run (include/depthprune/numerics.h), run
 * here on the CPU against the reference ops: the teacher top-k order (the
 * kernel's K rounds of argmax with taken entries marked, NaN logits made
 * -inf), KD on the teacher's top-k with the tail computed from the tokens
 * outside the set (and duplicate entries accumulated), the online softmax
 * of the attention kernels, and AdamW element by element (bitwise).
 * The GPU kernels themselves run in tests/gpu on a GPU host; this test
 * pins the arithmetic they share with the CPU. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "depthprune/core.h"
#include "depthprune/engine.h"
#include "depthprune/numerics.h"
#include "depthprune/ops.h"

static uint64_t rng = 0x1234;
static double urand(void) {
    return (double)dp_xorshift64s_53(&rng) / 9007199254740992.0;
} /* [0, 1) */

/* the GPU top-k kernel's algorithm, serially */
static void gpu_topk(int32_t *idx, float *val, const float *logits, int64_t V, int64_t K) {
    float *z = malloc((size_t)V * sizeof(float));
    for (int64_t i = 0; i < V; i++) z[i] = dp_topk_key(logits[i]);
    for (int64_t j = 0; j < K; j++) {
        float bv = -INFINITY;
        int64_t bi = INT64_MAX;
        for (int64_t i = 0; i < V; i++)
            if (z[i] == z[i] && dp_topk_before(z[i], i, bv, bi)) bv = z[i], bi = i;
        idx[j] = (int32_t)bi;
        val[j] = bv;
        z[bi] = NAN;
    }
    free(z);
}

static void test_topk(void) {
    enum { V = 300, K = 40 };
    float row[V];
    int32_t gi[K], ci[K];
    float gv[K], cv[K], lse;
    for (int trial = 0; trial < 50; trial++) {
        for (int i = 0; i < V; i++) row[i] = (float)floor(urand() * 20.0) * 0.25f; /* many ties */
        if (trial % 7 == 3) row[V - 1] = INFINITY;
        gpu_topk(gi, gv, row, V, K);
        dp_teacher_topk(ci, cv, &lse, row, 1, V, K, 2.0);
        CHECK_MSG(!memcmp(gi, ci, sizeof gi) && !memcmp(gv, cv, sizeof gv), "top-k order differs (trial %d)", trial);
    }
    /* a NaN row (a diverged teacher): K distinct valid indices, never an out-of-range write */
    for (int i = 0; i < V; i++) row[i] = i % 3 ? NAN : (float)i;
    gpu_topk(gi, gv, row, V, K);
    char seen[V] = {0};
    int ok = 1;
    for (int j = 0; j < K; j++) {
        ok &= gi[j] >= 0 && gi[j] < V && !seen[gi[j]];
        if (gi[j] >= 0 && gi[j] < V) seen[gi[j]] = 1;
    }
    CHECK_MSG(ok, "NaN row: top-k indices not distinct and in range");
    for (int i = 0; i < V; i++) row[i] = NAN;
    gpu_topk(gi, gv, row, V, K);
    for (int j = 0; j < K; j++) ok &= gi[j] == j;
    CHECK_MSG(ok, "all-NaN row: expected the first K indices");
}

/* the GPU KD row (head_loss.cu) serially: kept set as a bitmap, tail
 * from the tokens outside it, dp_kd_topk_combine, gradient with duplicate
 * entries summed */
static double gpu_kd_row(float *d, double scale, const float *z, const int32_t *ix, const float *tv, double tl,
                         int64_t K, double T, int64_t V) {
    char *keep = calloc((size_t)V, 1);
    for (int64_t j = 0; j < K; j++) keep[ix[j]] = 1;
    double invT = 1.0 / T, mx = -INFINITY, tmx = -INFINITY, S = 0, ts = 0;
    for (int64_t i = 0; i < V; i++) mx = fmax(mx, z[i]);
    for (int64_t i = 0; i < V; i++) S += exp((double)z[i] * invT - mx * invT);
    double ls = mx * invT + log(S);
    for (int64_t i = 0; i < V; i++)
        if (!keep[i]) tmx = fmax(tmx, z[i]);
    for (int64_t i = 0; i < V; i++)
        if (!keep[i]) ts += exp((double)z[i] * invT - tmx * invT);
    double log_qtail = K < V ? log(ts) + tmx * invT - ls : -INFINITY, pk = 0, acc = 0, f;
    for (int64_t j = 0; j < K; j++) {
        double lp = (double)tv[j] * invT - tl, lq = (double)z[ix[j]] * invT - ls, p = exp(lp);
        pk += p;
        acc += p * (lp - lq);
    }
    acc = dp_kd_topk_combine(acc, pk, log_qtail, K < V, &f);
    for (int64_t i = 0; i < V; i++)
        if (!keep[i]) d[i] = (float)(scale * T * exp((double)z[i] * invT - ls) * f);
    for (int64_t j = 0; j < K; j++) { /* first occurrence: the sum over every entry naming the token */
        int64_t i = ix[j], first = 1;
        for (int64_t j2 = 0; j2 < j && first; j2++) first = ix[j2] != i;
        if (!first) continue;
        double q = exp((double)z[i] * invT - ls), sum = 0;
        for (int64_t j2 = j; j2 < K; j2++)
            if (ix[j2] == i) sum += q - exp((double)tv[j2] * invT - tl);
        d[i] = (float)(scale * T * sum);
    }
    free(keep);
    return acc * T * T;
}

/* the formula the GPU used before: tail = (all mass) - (kept mass) */
static double old_tail_log(const float *z, const int32_t *ix, int64_t K, double T, int64_t V) {
    double invT = 1.0 / T, mx = -INFINITY, Ss = 0, Sk = 0;
    for (int64_t i = 0; i < V; i++) mx = fmax(mx, z[i]);
    for (int64_t i = 0; i < V; i++) Ss += exp((double)z[i] * invT - mx * invT);
    for (int64_t j = 0; j < K; j++) Sk += exp((double)z[ix[j]] * invT - mx * invT);
    double tail = Ss - Sk;
    return tail > 0 ? log(tail) + mx * invT - (mx * invT + log(Ss)) : -INFINITY;
}

static void test_kd(void) {
    enum { V = 500, K = 8 };
    float z[V], tv[K], dc[V], dg[V];
    int32_t ix[K];
    double T = 2.0;
    for (int trial = 0; trial < 30; trial++) {
        int peaked = trial % 3 == 0, dup = trial % 5 == 1;
        for (int i = 0; i < V; i++) z[i] = (float)(urand() * 4.0 - 2.0);
        for (int j = 0; j < K; j++) ix[j] = (int32_t)(j * 37 % V);
        if (dup) ix[5] = ix[2];        /* a damaged cache */
        if (peaked) z[ix[0]] = 120.0f; /* the student is sure of one kept token */
        for (int j = 0; j < K; j++) tv[j] = (float)(3.0 - 0.4 * j);
        double tl = 0; /* the teacher's lse(logits / T): any consistent value */
        {
            double mx = -INFINITY, s = 0;
            for (int j = 0; j < K; j++) mx = fmax(mx, tv[j] / T);
            for (int j = 0; j < K; j++) s += exp(tv[j] / T - mx);
            tl = mx + log(s) + 0.3; /* mass 1 - e^-0.3 on the teacher's kept entries */
        }
        float tlf = (float)tl, kd_c;
        int32_t mask = 1;
        memset(dc, 0, sizeof dc);
        memset(dg, 0, sizeof dg);
        double lc = dp_kd_topk_forward(&kd_c, z, ix, tv, &tlf, &mask, T, 1, V, K);
        dp_kd_topk_backward(dc, z, ix, tv, &tlf, &mask, T, 0.5, 1, V, K);
        double lg = gpu_kd_row(dg, 0.5, z, ix, tv, (double)tlf, K, T, V);
        CHECK_MSG(fabs(lg - lc) <= 1e-5 * fabs(lc) + 1e-6, "KD loss: gpu formula %.9g cpu %.9g (trial %d)", lg, lc,
                  trial);
        dp_test_allclose("KD gradient, gpu formula vs cpu", dg, dc, V, 1e-7, 1e-5);
        if (peaked) { /* what the old GPU formula got wrong: the tail of a peaked student */
            double good = 0, bad = old_tail_log(z, ix, K, T, V);
            char keep[V] = {0};
            for (int j = 0; j < K; j++) keep[ix[j]] = 1;
            double mx = -INFINITY, s = 0, ts = 0;
            for (int i = 0; i < V; i++) mx = fmax(mx, z[i] / T);
            for (int i = 0; i < V; i++) s += exp(z[i] / T - mx);
            for (int i = 0; i < V; i++)
                if (!keep[i]) ts += exp(z[i] / T - mx);
            good = log(ts) - log(s);
            CHECK_MSG(isfinite(good) && !(fabs(bad - good) < 1e-3), "expected Ss - Sk to lose the tail (%.6g vs %.6g)",
                      bad, good);
        }
    }
}

static void test_online_softmax(void) {
    enum { N = 200 };
    float sc[N];
    for (int i = 0; i < N; i++) sc[i] = (float)(urand() * 30.0 - 15.0);
    float m = -INFINITY, l = 0.0f, acc = 0.0f, p;
    for (int i = 0; i < N; i++) {
        float corr = dp_online_softmax_step(&m, &l, sc[i], &p);
        acc = acc * corr + p * (float)i; /* the weighted value: sum softmax_i * i */
    }
    double mx = -INFINITY, s = 0, w = 0;
    for (int i = 0; i < N; i++) mx = fmax(mx, sc[i]);
    for (int i = 0; i < N; i++) s += exp(sc[i] - mx), w += exp(sc[i] - mx) * i;
    double lse = mx + log(s);
    CHECK_MSG(fabs((m + log(l)) - lse) < 1e-5, "online softmax lse %.7g vs %.7g", m + log(l), lse);
    CHECK_MSG(fabs(acc / l - w / s) < 1e-3, "online softmax mean %.7g vs %.7g", acc / l, w / s);
}

static void test_adamw(void) {
    enum { N = 1000 };
    float p[N], g[N], m[N], v[N], p2[N], m2[N], v2[N];
    for (int i = 0; i < N; i++) {
        p[i] = p2[i] = (float)(urand() - 0.5);
        m[i] = m2[i] = v[i] = v2[i] = 0.0f;
    }
    double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
    for (int64_t step = 1; step <= 5; step++) {
        for (int i = 0; i < N; i++) g[i] = (float)(urand() - 0.5) * (i % 10 == 0 ? 1e-6f : 1.0f);
        dp_adamw_update(p, g, m, v, N, lr, b1, b2, eps, wd, step);
        double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
        for (int i = 0; i < N; i++) /* the CUDA kernel's arguments (adamw.cu) */
            p2[i] = dp_adamw_elem(p2[i], g[i], &m2[i], &v2[i], (float)(lr / bc1), (float)sqrt(bc2),
                                  (float)(1.0 - lr * wd), (float)b1, (float)b2, (float)eps);
    }
    CHECK_MSG(!memcmp(p, p2, sizeof p) && !memcmp(m, m2, sizeof m) && !memcmp(v, v2, sizeof v),
              "AdamW element formula differs from the CPU update");
}

int main(void) {
    test_topk();
    test_kd();
    test_online_softmax();
    test_adamw();
    if (dp_test_failures)
        fprintf(stderr, "%d check(s) failed\n", dp_test_failures);
    else
        printf("numerics: top-k order, KD top-k (peaked, duplicates), online softmax, AdamW: CPU == GPU formulas\n");
    return dp_test_failures ? 1 : 0;
}
