/* The GEMM floor of a PPL block-scoring sweep on this CPU: the time the
 * sweep's matrix products alone take when run back to back at the same
 * shapes through the same BLAS call (dp_matmul_forward), each timed best of
 * R. A block pass is the block's seven projections on ROWS rows (score.batch
 * x seq_len); the sweep does L(L-1)/2 of them, block b for the b candidates
 * that skipped an earlier block, plus one head (final norm excluded) per
 * candidate in dp_llama_head_rows chunks. bench/score_bench.sh divides this
 * by the sweep's measured time: the fraction of the measured sgemm rate the
 * sweep reaches. Attention's own products (2 T^2 x dim per sample, ~1% of
 * the FLOPs at T 128) are left out of the floor. Prints one JSON line.
 * usage: gemm_floor MODEL_DIR ROWS [REPEATS=5] */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "depthprune/llama.h"
#include "depthprune/ops.h"

static float *filled(int64_t n, int mod) {
    float *x = dp_malloc((size_t)n * sizeof(float), "bench");
    for (int64_t i = 0; i < n; i++) x[i] = (float)((i % mod) - mod / 2) * 0.01f;
    return x;
}

/* best-of-R seconds of the seven projections of one block (q, k, v, o, gate, up, down) */
static double block_seconds(int64_t N, int64_t C, int64_t QD, int64_t KD, int64_t F, int R) {
    int64_t big = F > C ? F : C;
    float *x = filled(N * big, 7), *y = filled(N * big, 3), *w = filled(big * big > QD * C ? big * big : QD * C, 5);
    double best = 1e30;
    for (int r = 0; r < R; r++) {
        double t0 = dp_time_s();
        dp_matmul_forward(y, x, w, N, C, QD);
        dp_matmul_forward(y, x, w, N, C, KD);
        dp_matmul_forward(y, x, w, N, C, KD);
        dp_matmul_forward(y, x, w, N, QD, C);
        dp_matmul_forward(y, x, w, N, C, F);
        dp_matmul_forward(y, x, w, N, C, F);
        dp_matmul_forward(y, x, w, N, F, C);
        double t = dp_time_s() - t0;
        if (t < best) best = t;
    }
    dp_free(x), dp_free(y), dp_free(w);
    return best;
}

/* best-of-R seconds of the head on N rows, in the chunks dp_llama_head_nll uses */
static double head_seconds(int64_t N, int64_t C, int64_t V, int R) {
    int64_t rows = dp_llama_head_rows(N, V);
    float *x = filled(N * C, 7), *w = filled(V * C, 5), *y = dp_malloc((size_t)(rows * V) * sizeof(float), "bench");
    double best = 1e30;
    for (int r = 0; r < R; r++) {
        double t0 = dp_time_s();
        for (int64_t r0 = 0; r0 < N; r0 += rows)
            dp_matmul_forward(y, x + r0 * C, w, r0 + rows <= N ? rows : N - r0, C, V);
        double t = dp_time_s() - t0;
        if (t < best) best = t;
    }
    dp_free(x), dp_free(w), dp_free(y);
    return best;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: gemm_floor MODEL_DIR ROWS [REPEATS=5]\n");
        return 2;
    }
    dp_llama_config c;
    dp_err err;
    if (dp_llama_config_load(argv[1], &c, &err)) {
        fprintf(stderr, "gemm_floor: %s\n", err.msg);
        return 1;
    }
    int64_t N = atoll(argv[2]);
    int R = argc > 3 ? atoi(argv[3]) : 5;
    if (N < 1 || R < 1) {
        fprintf(stderr, "gemm_floor: ROWS and REPEATS must be positive\n");
        return 2;
    }
    int L = (int)c.n_layers;
    int64_t C = c.hidden_size, HD = c.head_dim;
    double floor_s = 0, flops = 0, blk_s = 0, blk_f = 0;
    for (int l = 1; l < L; l++) { /* block l runs for the l candidates 0..l-1 */
        int64_t QD = c.layer_heads[l] * HD, KD = c.layer_kv_heads[l] * HD, F = c.layer_inter[l];
        int same =
            l > 1 && QD == c.layer_heads[l - 1] * HD && KD == c.layer_kv_heads[l - 1] * HD && F == c.layer_inter[l - 1];
        if (!same) blk_s = block_seconds(N, C, QD, KD, F, R);
        blk_f = 2.0 * (double)N * (double)(C * QD + 2 * C * KD + QD * C + 3 * C * F);
        floor_s += (double)l * blk_s;
        flops += (double)l * blk_f;
    }
    double head_s = head_seconds(N, C, c.vocab_size, R), head_f = 2.0 * (double)N * (double)C * (double)c.vocab_size;
    floor_s += (double)L * head_s;
    flops += (double)L * head_f;
    printf("{\"rows\": %lld, \"block_passes\": %d, \"block_gemm_seconds\": %.4f, \"block_gflops\": %.1f, "
           "\"head_gemm_seconds\": %.4f, \"head_gflops\": %.1f, \"floor_seconds\": %.3f, \"floor_gflops\": %.1f, "
           "\"blas\": \"OpenBLAS %s\"}\n",
           (long long)N, L * (L - 1) / 2, blk_s, blk_f / blk_s / 1e9, head_s, head_f / head_s / 1e9, floor_s,
           flops / floor_s / 1e9, openblas_get_corename());
    dp_llama_config_free(&c);
    return 0;
}
