/* fp32 <-> bf16 conversion (round to nearest even, as PyTorch's .to()), and
 * the non-finite count of a buffer (gradients, before they are summed). */
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

static __global__ void nonfinite_kernel(unsigned long long *count, const float *x, int64_t n) {
    unsigned long long c = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        c += !isfinite(x[i]);
    for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
    if ((threadIdx.x & 31) == 0 && c) atomicAdd(count, c);
}

extern "C" int64_t dp_cuda_count_nonfinite(const float *x, int64_t n, dp_stream s) {
    if (n <= 0) return 0;
    unsigned long long *d = (unsigned long long *)dp_cuda_malloc(sizeof *d, "non-finite count"), h = 0;
    dp_cuda_memset0(d, sizeof *d, s);
    unsigned grid = dp_grid(n, 256) < 4096 ? dp_grid(n, 256) : 4096;
    nonfinite_kernel<<<grid, 256, 0, s>>>(d, x, n);
    DP_CHECK_LAUNCH();
    dp_cuda_sync(s);
    dp_cuda_d2h(&h, d, sizeof h);
    dp_cuda_free(d);
    return (int64_t)h;
}
