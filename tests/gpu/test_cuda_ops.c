/* Cross-backend test (ggml's test-backend-ops idea): every CUDA op forward
 * and backward on random inputs against the CPU reference op of ops.h.
 * Inputs are rounded to bf16 first wherever the GPU op reads bf16, so
 * both backends see the same numbers; what remains is accumulation order
 * (fp32 outputs) and the one rounding of a bf16 output. Tolerances are
 * max |gpu - cpu| / max |cpu| per tensor:
 *   fp32 outputs of GEMMs and reductions   1e-5 (different summation order)
 *   bf16 outputs                            1e-2 (one bf16 rounding is 2^-9
 *                                           relative; 1e-2 leaves room for
 *                                           bf16 intermediates the op keeps,
 *                                           e.g. attention's D = dout . out)
 *   losses                                  1e-5 relative per row
 * Without a GPU it exits 77 (ctest: skipped), never 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/backend.h"
#include "depthprune/core.h"
#include "depthprune/cuda_ops.h"
#include "depthprune/ops.h"
#include "depthprune/tensor.h"
#include "gpu_test.h"

static int g_fail = 0;
static uint64_t g_rng = 0x5eed;

static float urand(void) {
    return (float)(2.0 * (double)dp_xorshift64s_53(&g_rng) / 9007199254740992.0 - 1.0);
}

/* host array of n random values in [-amp, amp], rounded to bf16 */
static float *rnd16(int64_t n, float amp) {
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = dp_bf16_to_f32(dp_f32_to_bf16(amp * urand()));
    return x;
}
static float *rnd32(int64_t n, float amp) {
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = amp * urand();
    return x;
}
static float *zeros(int64_t n) {
    return calloc((size_t)n, sizeof(float));
}

static void *up16(const float *x, int64_t n) {
    uint16_t *h = malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) h[i] = dp_f32_to_bf16(x[i]);
    void *d = dp_cuda_malloc((size_t)n * 2, "test");
    dp_cuda_h2d(d, h, (size_t)n * 2);
    free(h);
    return d;
}
static float *up32(const float *x, int64_t n) {
    float *d = dp_cuda_malloc((size_t)n * 4, "test");
    dp_cuda_h2d(d, x, (size_t)n * 4);
    return d;
}
static void *upi(const int32_t *x, int64_t n) {
    void *d = dp_cuda_malloc((size_t)n * 4, "test");
    dp_cuda_h2d(d, x, (size_t)n * 4);
    return d;
}
static float *down16(const void *d, int64_t n) {
    uint16_t *h = malloc((size_t)n * 2);
    dp_cuda_sync(NULL);
    dp_cuda_d2h(h, d, (size_t)n * 2);
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = dp_bf16_to_f32(h[i]);
    free(h);
    return x;
}
static float *down32(const float *d, int64_t n) {
    float *x = malloc((size_t)n * sizeof(float));
    dp_cuda_sync(NULL);
    dp_cuda_d2h(x, d, (size_t)n * 4);
    return x;
}

static void check(const char *name, const float *got, const float *ref, int64_t n, double tol) {
    double mx = 0, ref_mx = 0;
    int finite = 1;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) finite = 0;
        double d = fabs((double)got[i] - (double)ref[i]);
        if (d > mx) mx = d;
        if (fabs((double)ref[i]) > ref_mx) ref_mx = fabs((double)ref[i]);
    }
    double rel = mx / (ref_mx > 0 ? ref_mx : 1.0);
    int ok = finite && rel <= tol && ref_mx > 0;
    printf("%-34s max|diff|/max|ref| %.3e (tol %.0e, max|ref| %.3e)%s\n", name, rel, tol, ref_mx, ok ? "" : "  FAILED");
    if (!ok) g_fail = 1;
}

/* per-row relative error: max over rows of max|diff| / max|ref row|, so a
 * wrong small row (one head, one token) cannot hide under a large one */
static void check_rows(const char *name, const float *got, const float *ref, int64_t rows, int64_t cols, double tol) {
    double worst = 0;
    int64_t at = -1;
    int finite = 1;
    for (int64_t r = 0; r < rows; r++) {
        double mx = 0, rm = 0;
        for (int64_t j = 0; j < cols; j++) {
            double g = got[r * cols + j], x = ref[r * cols + j];
            if (!isfinite(g)) finite = 0;
            if (fabs(g - x) > mx) mx = fabs(g - x);
            if (fabs(x) > rm) rm = fabs(x);
        }
        double rel = mx / (rm > 1e-30 ? rm : 1e-30);
        if (rm > 1e-30 && rel > worst) worst = rel, at = r;
    }
    int ok = finite && worst <= tol;
    printf("%-34s worst row %lld: max|diff|/max|ref row| %.3e (tol %.0e)%s\n", name, (long long)at, worst, tol,
           ok ? "" : "  FAILED");
    if (!ok) g_fail = 1;
}

static void test_matmul(dp_blas h) {
    const int64_t N = 37, IN = 96, OUT = 80;
    float *x = rnd16(N * IN, 1), *w = rnd16(OUT * IN, 0.2f), *dy = rnd16(N * OUT, 1);
    float *ref = zeros(N * OUT), *dx = zeros(N * IN), *dw = rnd32(OUT * IN, 0.1f);
    float *dw0 = malloc((size_t)(OUT * IN) * 4);
    memcpy(dw0, dw, (size_t)(OUT * IN) * 4);
    dp_matmul_forward(ref, x, w, N, IN, OUT);
    dp_matmul_backward(dx, dw, dy, x, w, N, IN, OUT);
    void *gx = up16(x, N * IN), *gw = up16(w, OUT * IN), *gdy = up16(dy, N * OUT);
    float *gout = dp_cuda_malloc((size_t)(N * OUT) * 4, "t"), *gdx = dp_cuda_malloc((size_t)(N * IN) * 4, "t");
    void *gout16 = dp_cuda_malloc((size_t)(N * OUT) * 2, "t");
    float *gdw = up32(dw0, OUT * IN);
    dp_cuda_matmul_forward(h, gout, 1, gx, gw, N, IN, OUT, 1.0f, 0.0f);
    dp_cuda_matmul_forward(h, gout16, 0, gx, gw, N, IN, OUT, 1.0f, 0.0f);
    dp_cuda_matmul_backward(h, gdx, 0.0f, gdw, gdy, gx, gw, N, IN, OUT, 1.0f);
    float *a = down32(gout, N * OUT), *b = down16(gout16, N * OUT), *c = down32(gdx, N * IN),
          *d = down32(gdw, OUT * IN);
    check("matmul forward (fp32 out)", a, ref, N * OUT, 1e-5);
    check("matmul forward (bf16 out)", b, ref, N * OUT, 1e-2);
    check("matmul backward dinp", c, dx, N * IN, 1e-5);
    check("matmul backward dw (accumulated)", d, dw, OUT * IN, 1e-5);
    /* beta = 1 adds into an fp32 residual */
    float *res = rnd32(N * OUT, 1), *gres = up32(res, N * OUT);
    for (int64_t i = 0; i < N * OUT; i++) res[i] += ref[i];
    dp_cuda_matmul_forward(h, gres, 1, gx, gw, N, IN, OUT, 1.0f, 1.0f);
    float *e = down32(gres, N * OUT);
    check("matmul forward beta=1 (residual)", e, res, N * OUT, 1e-5);
    free(x), free(w), free(dy), free(ref), free(dx), free(dw), free(dw0), free(a), free(b), free(c), free(d), free(res),
        free(e);
    dp_cuda_free(gx), dp_cuda_free(gw), dp_cuda_free(gdy), dp_cuda_free(gout), dp_cuda_free(gdx), dp_cuda_free(gout16),
        dp_cuda_free(gdw), dp_cuda_free(gres);
}

static void test_lora(dp_blas h) {
    const int64_t N = 29, IN = 64, OUT = 48, RK = 8;
    const float scale = 2.0f;
    float *x = rnd16(N * IN, 1), *A = rnd16(RK * IN, 0.3f), *B = rnd16(OUT * RK, 0.3f), *dy = rnd16(N * OUT, 1);
    float *out = zeros(N * OUT), *xa = zeros(N * RK), *dx = zeros(N * IN), *dA = zeros(RK * IN), *dB = zeros(OUT * RK),
          *scr = zeros(N * RK);
    dp_lora_forward(out, xa, x, A, B, scale, N, IN, OUT, RK);
    dp_lora_backward(dx, dA, dB, scr, dy, x, xa, A, B, scale, N, IN, OUT, RK);
    void *gx = up16(x, N * IN), *gA = up16(A, RK * IN), *gB = up16(B, OUT * RK), *gdy = up16(dy, N * OUT);
    float *gout = up32(zeros(N * OUT), N * OUT), *gdx = up32(zeros(N * IN), N * IN),
          *gdA = up32(zeros(RK * IN), RK * IN), *gdB = up32(zeros(OUT * RK), OUT * RK);
    void *gxa = dp_cuda_malloc((size_t)(N * RK) * 2, "t"), *gs = dp_cuda_malloc(dp_cuda_lora_scratch_bytes(N, RK), "t");
    dp_cuda_lora_forward(h, gout, 1, gxa, gx, gA, gB, scale, N, IN, OUT, RK);
    dp_cuda_lora_backward(h, gdx, gdA, gdB, gs, gdy, gx, gxa, gA, gB, scale, N, IN, OUT, RK, NULL);
    /* the GPU rounds xa and d(xa) to bf16 between its GEMMs */
    check("lora forward", down32(gout, N * OUT), out, N * OUT, 1e-2);
    check("lora backward dinp", down32(gdx, N * IN), dx, N * IN, 1e-2);
    check("lora backward dA", down32(gdA, RK * IN), dA, RK * IN, 1e-2);
    check("lora backward dB", down32(gdB, OUT * RK), dB, OUT * RK, 1e-2);
}

static void test_embed(void) {
    const int64_t N = 41, C = 72, V = 13;
    int32_t tok[41];
    for (int i = 0; i < N; i++) tok[i] = (int32_t)((i * 7) % V); /* repeated tokens */
    float *wte = rnd16(V * C, 1), *out = zeros(N * C), *dy = rnd32(N * C, 1), *dw = zeros(V * C);
    dp_embed_forward(out, tok, wte, N, C);
    dp_embed_backward(dw, dy, tok, N, C);
    void *gt = upi(tok, N), *gw = up16(wte, V * C);
    float *go = up32(zeros(N * C), N * C), *gdy = up32(dy, N * C), *gdw = up32(zeros(V * C), V * C);
    dp_cuda_embed_forward(go, gt, gw, N, C, NULL);
    dp_cuda_embed_backward(gdw, gdy, gt, N, C, NULL);
    check("embedding forward", down32(go, N * C), out, N * C, 0);
    check("embedding backward", down32(gdw, V * C), dw, V * C, 1e-5);
}

static void test_rmsnorm(int64_t N, int64_t C) { /* N above the weight-gradient partial rows; C above blockDim */
    float *x = rnd32(N * C, 2), *w = rnd16(C, 1), *out = zeros(N * C), *rs = zeros(N), *dy = rnd32(N * C, 1);
    float *dx = rnd32(N * C, 1), *dw = rnd32(C, 1);
    float *dx0 = malloc((size_t)(N * C) * 4), *dw0 = malloc((size_t)C * 4);
    memcpy(dx0, dx, (size_t)(N * C) * 4), memcpy(dw0, dw, (size_t)C * 4);
    dp_rmsnorm_forward(out, rs, x, w, N, C, 1e-5);
    dp_rmsnorm_backward(dx, dw, dy, x, w, rs, N, C);
    float *gx = up32(x, N * C), *grs = up32(zeros(N), N), *gdy = up32(dy, N * C), *gdx = up32(dx0, N * C),
          *gdw = up32(dw0, C);
    void *gw = up16(w, C), *go = dp_cuda_malloc((size_t)(N * C) * 2, "t");
    void *gs = dp_cuda_malloc(dp_cuda_rmsnorm_scratch_bytes(N, C), "t");
    dp_cuda_rmsnorm_forward(go, grs, gx, gw, N, C, 1e-5f, NULL);
    dp_cuda_rmsnorm_backward(gdx, gdw, gs, gdy, gx, gw, grs, N, C, NULL);
    check_rows("rmsnorm forward (bf16 out, per row)", down16(go, N * C), out, N, C, 1e-2);
    check("rmsnorm rstd", down32(grs, N), rs, N, 1e-6);
    check("rmsnorm backward dinp (accumulated)", down32(gdx, N * C), dx, N * C, 1e-5);
    check("rmsnorm backward dw (accumulated)", down32(gdw, C), dw, C, 1e-5);
    /* deterministic weight gradient: a second run gives the same bits */
    float *a = down32(gdw, C);
    dp_cuda_h2d(gdw, dw0, (size_t)C * 4);
    dp_cuda_rmsnorm_backward(NULL, gdw, gs, gdy, gx, gw, grs, N, C, NULL);
    float *b = down32(gdw, C);
    if (memcmp(a, b, (size_t)C * 4)) {
        printf("rmsnorm dw differs between two runs  FAILED\n");
        g_fail = 1;
    }
}

static void rope_table(float *cs, float *sn, int64_t T, int64_t HD) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < HD / 2; j++) {
            double f = pow(10000.0, -2.0 * (double)j / (double)HD);
            cs[t * (HD / 2) + j] = (float)cos((double)t * f);
            sn[t * (HD / 2) + j] = (float)sin((double)t * f);
        }
}

static void test_rope(void) {
    const int64_t B = 2, T = 11, NH = 3, HD = 24, n = B * T * NH * HD;
    float *cs = zeros(T * HD / 2), *sn = zeros(T * HD / 2);
    rope_table(cs, sn, T, HD);
    float *x = rnd16(n, 1), *dx = rnd16(n, 1);
    void *gx = up16(x, n), *gdx = up16(dx, n);
    float *gc = up32(cs, T * HD / 2), *gs = up32(sn, T * HD / 2);
    dp_rope_forward(x, cs, sn, B, T, NH, HD);
    dp_rope_backward(dx, cs, sn, B, T, NH, HD);
    dp_cuda_rope_forward(gx, gc, gs, B, T, NH, HD, 0, NULL);
    dp_cuda_rope_backward(gdx, gc, gs, B, T, NH, HD, NULL);
    check("rope forward", down16(gx, n), x, n, 1e-2);
    check("rope backward", down16(gdx, n), dx, n, 1e-2);
}

static void test_attention(int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD) {
    int64_t nq = B * T * NH * HD, nk = B * T * NKV * HD;
    float *q = rnd16(nq, 1), *k = rnd16(nk, 1), *v = rnd16(nk, 1), *dy = rnd16(nq, 1);
    float *out = zeros(nq), *att = zeros(B * NH * T * T), *dq = zeros(nq), *dk = zeros(nk), *dv = zeros(nk);
    dp_attention_forward(out, att, q, k, v, B, T, NH, NKV, HD);
    dp_attention_backward(dq, dk, dv, dy, att, q, k, v, B, T, NH, NKV, HD);
    void *gq = up16(q, nq), *gk = up16(k, nk), *gv = up16(v, nk), *gdy = up16(dy, nq);
    void *go = dp_cuda_malloc((size_t)nq * 2, "t"), *gdq = dp_cuda_malloc((size_t)nq * 2, "t"),
         *gdk = dp_cuda_malloc((size_t)nk * 2, "t"), *gdv = dp_cuda_malloc((size_t)nk * 2, "t");
    float *glse = dp_cuda_malloc((size_t)(B * NH * T) * 4, "t"), *gds = dp_cuda_malloc((size_t)(B * NH * T) * 4, "t");
    dp_cuda_attention_forward(go, glse, gq, gk, gv, B, T, NH, NKV, HD, NULL);
    dp_cuda_attention_backward(gdq, gdk, gdv, gds, gdy, go, glse, gq, gk, gv, B, T, NH, NKV, HD, NULL);
    char name[96];
    snprintf(name, sizeof name, "attention fwd B%lld T%lld %lld/%lld HD%lld", (long long)B, (long long)T, (long long)NH,
             (long long)NKV, (long long)HD);
    check_rows(name, down16(go, nq), out, nq / HD, HD, 2e-2);
    check_rows("attention backward dq (per head row)", down16(gdq, nq), dq, nq / HD, HD, 3e-2);
    check_rows("attention backward dk (per head row)", down16(gdk, nk), dk, nk / HD, HD, 3e-2);
    check_rows("attention backward dv (per head row)", down16(gdv, nk), dv, nk / HD, HD, 3e-2);
}

static void test_swiglu(void) {
    const int64_t n = 5000;
    float *g = rnd16(n, 4), *u = rnd16(n, 2), *dy = rnd16(n, 1), *out = zeros(n), *dg = zeros(n), *du = zeros(n);
    dp_swiglu_forward(out, g, u, n);
    dp_swiglu_backward(dg, du, dy, g, u, n);
    void *gg = up16(g, n), *gu = up16(u, n), *gdy = up16(dy, n), *go = dp_cuda_malloc((size_t)n * 2, "t"),
         *gdg = dp_cuda_malloc((size_t)n * 2, "t"), *gdu = dp_cuda_malloc((size_t)n * 2, "t");
    dp_cuda_swiglu_forward(go, gg, gu, n, NULL);
    dp_cuda_swiglu_backward(gdg, gdu, gdy, gg, gu, n, NULL);
    check("swiglu forward", down16(go, n), out, n, 1e-2);
    check("swiglu backward dgate", down16(gdg, n), dg, n, 1e-2);
    check("swiglu backward dup", down16(gdu, n), du, n, 1e-2);
}

/* V above the threads per row (every row loop's second iteration), several
 * head chunks; with KD: one peaked student row (the tail from the tokens
 * outside the set, never all - kept) and, optionally, a duplicate entry */
static void test_head(dp_blas h, int with_kd, int64_t V, int64_t K, int dup) {
    const int64_t N = 13, C = 64;
    const float alpha = with_kd ? 0.5f : 0.0f, temp = 2.0f, gscale = 1.0f / 11;
    float *hid = rnd16(N * C, 1), *w = rnd16(V * C, 0.5f);
    int32_t tg[13];
    for (int i = 0; i < N; i++) tg[i] = (i % 5 == 3) ? -1 : (int32_t)((i * 131) % V);
    if (with_kd) /* row 2's student is sure of one token the teacher keeps */
        for (int64_t c = 0; c < C; c++) hid[2 * C + c] = w[((2 * 131) % V) * C + c] > 0 ? 16.0f : -16.0f;
    /* teacher: random logits, top-K indices/values and lse(teacher / T) */
    float *teach = rnd32(N * V, 3);
    int32_t *tidx = malloc((size_t)(N * K) * 4);
    float *tval = zeros(N * K), *tlse = zeros(N);
    for (int64_t n = 0; n < N; n++) {
        const float *t = teach + n * V;
        char *used = calloc((size_t)V, 1);
        for (int64_t j = 0; j < K; j++) {
            int64_t best = -1;
            for (int64_t i = 0; i < V; i++)
                if (!used[i] && (best < 0 || t[i] > t[best])) best = i;
            used[best] = 1;
            tidx[n * K + j] = (int32_t)best;
            tval[n * K + j] = t[best];
        }
        free(used);
        double mx = -INFINITY, s = 0;
        for (int64_t i = 0; i < V; i++) mx = fmax(mx, (double)t[i] / temp);
        for (int64_t i = 0; i < V; i++) s += exp((double)t[i] / temp - mx);
        tlse[n] = (float)(mx + log(s));
        if (n == 2) tidx[n * K] = (int32_t)((2 * 131) % V);   /* the peaked student's token is kept */
        if (dup && n == 4) tidx[n * K + 3] = tidx[n * K + 1]; /* a damaged cache: one token twice */
    }
    /* CPU: logits, CE, KD, gradient, then the head's backward */
    float *logits = zeros(N * V), *nll = zeros(N), *kdv = zeros(N), *dl = zeros(N * V), *dh = zeros(N * C),
          *dw = zeros(V * C);
    dp_matmul_forward(logits, hid, w, N, C, V);
    dp_crossentropy_forward(nll, logits, tg, N, V, NULL);
    dp_crossentropy_backward(dl, logits, tg, gscale * (1 - alpha), N, V);
    if (with_kd) {
        dp_kd_topk_forward(kdv, logits, tidx, tval, tlse, tg, temp, N, V, K);
        dp_kd_topk_backward(dl, logits, tidx, tval, tlse, tg, temp, gscale * alpha, N, V, K);
    }
    dp_matmul_backward(dh, dw, dl, hid, w, N, C, V);
    /* GPU, chunks of 5 rows (two full chunks and a partial one) */
    void *ghid = up16(hid, N * C), *gw = up16(w, V * C), *gtg = upi(tg, N);
    void *gtidx = upi(tidx, N * K);
    float *gtval = up32(tval, N * K), *gtlse = up32(tlse, N);
    float *gce = up32(zeros(N), N), *gkd = up32(zeros(N), N), *gdh = up32(zeros(N * C), N * C),
          *gdw = up32(zeros(V * C), V * C);
    dp_cuda_head_args a = {.targets = gtg,
                           .tidx = with_kd ? gtidx : NULL,
                           .tval = gtval,
                           .tlse = gtlse,
                           .K = K,
                           .alpha = alpha,
                           .temp = temp,
                           .gscale = gscale,
                           .chunk = 5};
    void *gs = dp_cuda_malloc(dp_cuda_head_scratch_bytes(5, V), "t");
    dp_cuda_head_loss(h, gce, gkd, gdh, gdw, gs, ghid, gw, &a, N, C, V, NULL);
    char nm[96];
    snprintf(nm, sizeof nm, "head CE V%lld%s", (long long)V, with_kd ? " (with KD)" : "");
    check_rows(nm, down32(gce, N), nll, N, 1, 1e-4);
    if (with_kd) {
        snprintf(nm, sizeof nm, "head KD top-%lld%s (per row)", (long long)K, dup ? ", duplicate" : "");
        check_rows(nm, down32(gkd, N), kdv, N, 1, 1e-4);
    }
    check_rows(with_kd ? "head dh (CE+KD, per row)" : "head dh (CE, per row)", down32(gdh, N * C), dh, N, C, 2e-2);
    check_rows(with_kd ? "head dw (CE+KD, per row)" : "head dw (CE, per row)", down32(gdw, V * C), dw, V, C, 3e-2);
}

/* teacher top-k on integer logits (exact in bf16 and fp32, many ties): the
 * indices must equal the CPU rule's exactly (descending, ties to the lower
 * index), the values and lse to fp32 rounding */
static void test_topk(dp_blas h) {
    const int64_t N = 7, C = 8, V = 300, K = 12;
    const float temp = 2.0f;
    float *hid = malloc((size_t)(N * C) * 4), *w = malloc((size_t)(V * C) * 4);
    for (int64_t i = 0; i < N * C; i++) hid[i] = (float)((int)(urand() * 3.0f));
    for (int64_t i = 0; i < V * C; i++) w[i] = (float)((int)(urand() * 3.0f));
    float *logits = zeros(N * V);
    dp_matmul_forward(logits, hid, w, N, C, V);
    int32_t *ridx = malloc((size_t)(N * K) * 4);
    float *rval = zeros(N * K), *rlse = zeros(N);
    for (int64_t n = 0; n < N; n++) {
        const float *z = logits + n * V;
        char *used = calloc((size_t)V, 1);
        for (int64_t j = 0; j < K; j++) {
            int64_t b = -1;
            for (int64_t i = 0; i < V; i++)
                if (!used[i] && (b < 0 || z[i] > z[b])) b = i; /* strict: the lower index wins ties */
            used[b] = 1;
            ridx[n * K + j] = (int32_t)b;
            rval[n * K + j] = z[b];
        }
        free(used);
        double mx = -INFINITY, s = 0;
        for (int64_t i = 0; i < V; i++) mx = fmax(mx, (double)z[i] / temp);
        for (int64_t i = 0; i < V; i++) s += exp((double)z[i] / temp - mx);
        rlse[n] = (float)(mx + log(s));
    }
    void *gh = up16(hid, N * C), *gw = up16(w, V * C), *sc = dp_cuda_malloc(dp_cuda_head_scratch_bytes(3, V), "t");
    int32_t *gi = dp_cuda_malloc((size_t)(N * K) * 4, "t");
    float *gv = dp_cuda_malloc((size_t)(N * K) * 4, "t"), *gl = dp_cuda_malloc((size_t)N * 4, "t");
    dp_cuda_head_topk(h, gi, gv, gl, sc, gh, gw, N, C, V, K, temp, 3, NULL);
    int32_t *idx = malloc((size_t)(N * K) * 4);
    dp_cuda_sync(NULL);
    dp_cuda_d2h(idx, gi, (size_t)(N * K) * 4);
    int same = !memcmp(idx, ridx, (size_t)(N * K) * 4);
    printf("%-34s %s\n", "teacher top-k indices", same ? "identical" : "DIFFER  FAILED");
    if (!same) g_fail = 1;
    check("teacher top-k values", down32(gv, N * K), rval, N * K, 0);
    check("teacher lse(z / T)", down32(gl, N), rlse, N, 1e-6);
}

static void test_adamw(void) {
    const int64_t n = 3001;
    float *p = rnd32(n, 1), *m = zeros(n), *v = zeros(n);
    float *gp = up32(p, n), *gm = up32(m, n), *gv = up32(v, n);
    void *g16 = dp_cuda_malloc((size_t)n * 2, "t");
    for (int step = 1; step <= 3; step++) {
        float *g = rnd32(n, 1), *gg = up32(g, n);
        dp_adamw_update(p, g, m, v, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, step);
        dp_cuda_adamw_update(gp, g16, gg, gm, gv, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, step, NULL);
        dp_cuda_sync(NULL);
        dp_cuda_free(gg);
        free(g);
    }
    check("adamw params (3 steps)", down32(gp, n), p, n, 1e-6);
    check("adamw m", down32(gm, n), m, n, 1e-6);
    check("adamw v", down32(gv, n), v, n, 1e-6);
    float *r = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) r[i] = dp_bf16_to_f32(dp_f32_to_bf16(p[i]));
    check("adamw bf16 weight copy", down16(g16, n), r, n, 1e-2);
}

int main(void) {
    dp_err err;
    dp_err_clear(&err);
    dp_gpu_test_require();
    dp_cuda_set_device(0);
    dp_blas h = dp_cuda_blas_create(NULL);
    test_matmul(h);
    test_lora(h);
    test_embed();
    test_rmsnorm(300, 136);
    test_rmsnorm(40, 4096); /* C over the block's threads */
    test_rope();
    test_attention(2, 19, 4, 2, 40);   /* GQA, head dim not a multiple of 32 */
    test_attention(1, 70, 6, 1, 128);  /* MQA, LLaMA's head dim */
    test_attention(2, 33, 3, 3, 64);   /* MHA */
    test_attention(2, 40, 8, 2, 64);   /* GQA 4:1 */
    test_attention(1, 37, 16, 2, 128); /* GQA 8:1, HD 128 */
    test_swiglu();
    test_head(h, 0, 1000, 20, 0);
    test_head(h, 1, 1000, 20, 0);
    test_head(h, 1, 1000, 20, 1);    /* a duplicate teacher entry */
    test_head(h, 1, 32000, 1100, 0); /* LLaMA's vocabulary, K over the threads per row */
    test_topk(h);
    test_adamw();
    dp_cuda_blas_destroy(h);
    printf(g_fail ? "test_cuda_ops: FAILED\n" : "test_cuda_ops: all ops match the CPU reference\n");
    return g_fail;
}
