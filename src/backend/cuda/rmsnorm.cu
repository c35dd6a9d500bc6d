/* RMSNorm in HF's order (fp32 x * rstd, then the weight), from the fp32
 * residual stream to a bf16 GEMM input. One block per row. The backward
 * adds into the residual gradient; the weight gradient is reduced in a
 * fixed order (per-block partial rows in scratch, then a column sum), so
 * repeated runs give identical bits. */
#include "common.cuh"

#define NORM_THREADS 256
#define NORM_PARTS 256 /* partial rows of the weight gradient */

static __global__ void rmsnorm_forward_kernel(bf16 *out, float *rstd, const float *inp, const bf16 *w, int64_t C,
                                              float eps) {
    __shared__ double sh[32];
    const float *x = inp + (int64_t)blockIdx.x * C;
    double ss = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += (double)x[c] * (double)x[c];
    ss = block_sum_d(ss, sh);
    float rs = (float)(1.0 / sqrt(ss / (double)C + (double)eps));
    if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = rs;
    bf16 *y = out + (int64_t)blockIdx.x * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) st(y, c, ld(w, c) * (x[c] * rs));
}

/* dx += rs (w dy) - x rs^3 mean(x w dy); part[blockIdx] += dy x rs */
static __global__ void rmsnorm_backward_kernel(float *dinp, float *part, const float *dout, const float *inp,
                                               const bf16 *w, const float *rstd, int64_t N, int64_t C) {
    __shared__ double sh[32];
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const float *x = inp + n * C, *dy = dout + n * C;
        float rs = rstd[n];
        double dot = 0.0;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += (double)x[c] * (double)(ld(w, c) * dy[c]);
        dot = block_sum_d(dot, sh);
        float k = (float)(dot / (double)C) * rs * rs * rs;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            if (dinp) dinp[n * C + c] += rs * (ld(w, c) * dy[c]) - x[c] * k;
            if (part) part[(int64_t)blockIdx.x * C + c] += dy[c] * x[c] * rs;
        }
    }
}

static __global__ void column_sum_kernel(float *dw, const float *part, int64_t P, int64_t C) {
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0.0f;
    for (int64_t p = 0; p < P; p++) acc += part[p * C + c];
    dw[c] += acc;
}

static int64_t parts(int64_t N) {
    return N < NORM_PARTS ? N : NORM_PARTS;
}

extern "C" void dp_cuda_rmsnorm_forward(dp_bf16 *out, float *rstd, const float *inp, const dp_bf16 *w, int64_t N,
                                        int64_t C, float eps, dp_stream s) {
    if (N <= 0) return;
    if (N > 2147483647) dp_fatal("rmsnorm: %lld rows exceed the grid", (long long)N);
    rmsnorm_forward_kernel<<<(unsigned)N, NORM_THREADS, 0, s>>>((bf16 *)out, rstd, inp, (const bf16 *)w, C, eps);
    DP_CHECK_LAUNCH();
}

extern "C" size_t dp_cuda_rmsnorm_scratch_bytes(int64_t N, int64_t C) {
    return (size_t)(parts(N) * C) * sizeof(float);
}

extern "C" void dp_cuda_rmsnorm_backward(float *dinp, float *dw, float *scratch, const float *dout, const float *inp,
                                         const dp_bf16 *w, const float *rstd, int64_t N, int64_t C, dp_stream s) {
    if (N <= 0) return;
    int64_t P = parts(N);
    if (dw) dp_cuda_memset0(scratch, (size_t)(P * C) * sizeof(float), s);
    rmsnorm_backward_kernel<<<(unsigned)P, NORM_THREADS, 0, s>>>(dinp, dw ? scratch : NULL, dout, inp, (const bf16 *)w,
                                                                 rstd, N, C);
    DP_CHECK_LAUNCH();
    if (dw) {
        column_sum_kernel<<<dp_grid(C, 256), 256, 0, s>>>(dw, scratch, P, C);
        DP_CHECK_LAUNCH();
    }
}
