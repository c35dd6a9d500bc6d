/* The GPU's own ceilings, measured before any depthprune number is
 * reported against them: bf16 GEMM throughput through the same cuBLAS call
 * the engine uses (dp_cuda_matmul_forward: bf16 in, fp32 accumulate) at
 * square and LLaMA-shaped sizes, and device-to-device copy bandwidth.
 * Prints one JSON object.
 *   build/bench/cuda_ceilings [GEMM_SIZE=8192] [COPY_MIB=2048] */
#include <stdio.h>
#include <stdlib.h>

#include "depthprune/backend.h"
#include "depthprune/core.h"
#include "depthprune/cuda_ops.h"

static double gemm_tflops(dp_blas h, int64_t N, int64_t IN, int64_t OUT) {
    dp_bf16 *a = dp_cuda_malloc((size_t)(N * IN) * 2, "bench"), *w = dp_cuda_malloc((size_t)(OUT * IN) * 2, "bench");
    dp_bf16 *c = dp_cuda_malloc((size_t)(N * OUT) * 2, "bench");
    dp_cuda_memset0(a, (size_t)(N * IN) * 2, NULL);
    dp_cuda_memset0(w, (size_t)(OUT * IN) * 2, NULL);
    for (int i = 0; i < 3; i++) dp_cuda_matmul_forward(h, c, 0, a, w, N, IN, OUT, 1.0f, 0.0f);
    dp_cuda_sync(NULL);
    int reps = 20;
    double t = dp_time_s();
    for (int i = 0; i < reps; i++) dp_cuda_matmul_forward(h, c, 0, a, w, N, IN, OUT, 1.0f, 0.0f);
    dp_cuda_sync(NULL);
    t = dp_time_s() - t;
    dp_cuda_free(a), dp_cuda_free(w), dp_cuda_free(c);
    return 2.0 * (double)N * (double)IN * (double)OUT * reps / t / 1e12;
}

int main(int argc, char **argv) {
    dp_err err;
    dp_err_clear(&err);
    if (dp_cuda_device_count(&err) <= 0) {
        fprintf(stderr, "cuda_ceilings: no GPU: %s\n", err.msg);
        return 77;
    }
    int64_t S = argc > 1 ? atoll(argv[1]) : 8192, MiB = argc > 2 ? atoll(argv[2]) : 2048;
    dp_cuda_set_device(0);
    dp_blas h = dp_cuda_blas_create(NULL);
    double sq = gemm_tflops(h, S, S, S);
    /* LLaMA-7B shapes at 4 x 256 tokens: q/k/v/o, gate/up, down, head */
    double qkvo = gemm_tflops(h, 1024, 4096, 4096), up = gemm_tflops(h, 1024, 4096, 11008);
    double down = gemm_tflops(h, 1024, 11008, 4096), head = gemm_tflops(h, 1024, 4096, 32000);
    size_t n = (size_t)MiB << 20;
    void *x = dp_cuda_malloc(n, "bench"), *y = dp_cuda_malloc(n, "bench");
    dp_cuda_d2d(y, x, n, NULL);
    dp_cuda_sync(NULL);
    int reps = 10;
    double t = dp_time_s();
    for (int i = 0; i < reps; i++) dp_cuda_d2d(y, x, n, NULL);
    dp_cuda_sync(NULL);
    t = dp_time_s() - t;
    double gbps = 2.0 * (double)n * reps / t / 1e9; /* read + write */
    printf(
        "{\"gemm_bf16_tflops_%lld\": %.1f, \"gemm_bf16_tflops_7b_qkvo\": %.1f, \"gemm_bf16_tflops_7b_gate_up\": %.1f, "
        "\"gemm_bf16_tflops_7b_down\": %.1f, \"gemm_bf16_tflops_7b_head\": %.1f, \"d2d_copy_GBps\": %.0f}\n",
        (long long)S, sq, qkvo, up, down, head, gbps);
    dp_cuda_free(x), dp_cuda_free(y);
    dp_cuda_blas_destroy(h);
    return 0;
}
