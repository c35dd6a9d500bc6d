/* RoPE, rotate-half convention (HF LLaMA), in place on bf16 q or k. The
 * backward applies the transposed rotation to the gradient. One thread per
 * (row, head, pair). */
#include "common.cuh"

static __global__ void rope_kernel(bf16 *x, const float *cosb, const float *sinb, int64_t B, int64_t T, int64_t NH,
                                   int64_t HD, int64_t pos0, float sign) {
    int64_t h = HD / 2, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * T * NH * h) return;
    int64_t j = i % h, row = i / h; /* row = (b*T + t)*NH + head */
    int64_t t = (row / NH) % T;
    float cs = cosb[(pos0 + t) * h + j], sn = sign * sinb[(pos0 + t) * h + j];
    bf16 *v = x + row * HD;
    float x1 = ld(v, j), x2 = ld(v, j + h);
    st(v, j, x1 * cs - x2 * sn);
    st(v, j + h, x2 * cs + x1 * sn);
}

extern "C" void dp_cuda_rope_forward(dp_bf16 *x, const float *cosb, const float *sinb, int64_t B, int64_t T, int64_t NH,
                                     int64_t HD, int64_t pos0, dp_stream s) {
    int64_t n = B * T * NH * (HD / 2);
    if (n <= 0) return;
    rope_kernel<<<dp_grid(n, 256), 256, 0, s>>>((bf16 *)x, cosb, sinb, B, T, NH, HD, pos0, 1.0f);
    DP_CHECK_LAUNCH();
}

extern "C" void dp_cuda_rope_backward(dp_bf16 *dx, const float *cosb, const float *sinb, int64_t B, int64_t T,
                                      int64_t NH, int64_t HD, dp_stream s) {
    int64_t n = B * T * NH * (HD / 2);
    if (n <= 0) return;
    rope_kernel<<<dp_grid(n, 256), 256, 0, s>>>((bf16 *)dx, cosb, sinb, B, T, NH, HD, 0, -1.0f);
    DP_CHECK_LAUNCH();
}
