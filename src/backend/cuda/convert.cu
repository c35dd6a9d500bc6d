/* fp32 <-> bf16 conversion (round to nearest even, as PyTorch's .to()). */
#include "common.cuh"

static __global__ void f32_to_bf16_kernel(bf16 *out, const float *in, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2bfloat16_rn(in[i]);
}
static __global__ void bf16_to_f32_kernel(float *out, const bf16 *in, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = __bfloat162float(in[i]);
}

extern "C" void dp_cuda_f32_to_bf16(dp_bf16 *out, const float *in, int64_t n, dp_stream s) {
    if (n <= 0) return;
    f32_to_bf16_kernel<<<dp_grid(n, 256), 256, 0, s>>>((bf16 *)out, in, n);
    DP_CHECK_LAUNCH();
}
extern "C" void dp_cuda_bf16_to_f32(float *out, const dp_bf16 *in, int64_t n, dp_stream s) {
    if (n <= 0) return;
    bf16_to_f32_kernel<<<dp_grid(n, 256), 256, 0, s>>>(out, (const bf16 *)in, n);
    DP_CHECK_LAUNCH();
}
