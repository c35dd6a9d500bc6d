/* SwiGLU: out = silu(gate) * up, element-wise in fp32 on bf16 storage. */
#include "common.cuh"

static __global__ void swiglu_forward_kernel(bf16 *out, const bf16 *gate, const bf16 *up, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = ld(gate, i);
    st(out, i, g / (1.0f + expf(-g)) * ld(up, i));
}

/* d/dg silu(g) = sig(g) (1 + g (1 - sig(g))) */
static __global__ void swiglu_backward_kernel(bf16 *dgate, bf16 *dup, const bf16 *dout, const bf16 *gate,
                                              const bf16 *up, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float g = ld(gate, i), u = ld(up, i), d = ld(dout, i);
    float sg = 1.0f / (1.0f + expf(-g));
    st(dgate, i, d * u * sg * (1.0f + g * (1.0f - sg)));
    st(dup, i, d * g * sg);
}

extern "C" void dp_cuda_swiglu_forward(dp_bf16 *out, const dp_bf16 *gate, const dp_bf16 *up, int64_t n, dp_stream s) {
    if (n <= 0) return;
    swiglu_forward_kernel<<<dp_grid(n, 256), 256, 0, s>>>((bf16 *)out, (const bf16 *)gate, (const bf16 *)up, n);
    DP_CHECK_LAUNCH();
}

extern "C" void dp_cuda_swiglu_backward(dp_bf16 *dgate, dp_bf16 *dup, const dp_bf16 *dout, const dp_bf16 *gate,
                                        const dp_bf16 *up, int64_t n, dp_stream s) {
    if (n <= 0) return;
    swiglu_backward_kernel<<<dp_grid(n, 256), 256, 0, s>>>((bf16 *)dgate, (bf16 *)dup, (const bf16 *)dout,
                                                           (const bf16 *)gate, (const bf16 *)up, n);
    DP_CHECK_LAUNCH();
}
