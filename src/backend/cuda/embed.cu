/* Token embedding: rows of the bf16 table into the fp32 residual stream;
 * the backward scatters rows of the gradient back with fp32 atomics. */
#include "common.cuh"

static __global__ void embed_forward_kernel(float *out, const int32_t *tok, const bf16 *wte, int64_t N, int64_t C) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C) return;
    int64_t n = i / C, c = i % C;
    out[i] = __bfloat162float(wte[(int64_t)tok[n] * C + c]);
}

static __global__ void embed_backward_kernel(float *dwte, const float *dout, const int32_t *tok, int64_t N, int64_t C) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C) return;
    int64_t n = i / C, c = i % C;
    atomicAdd(dwte + (int64_t)tok[n] * C + c, dout[i]);
}

extern "C" void dp_cuda_embed_forward(float *out, const int32_t *tok, const dp_bf16 *wte, int64_t N, int64_t C,
                                      dp_stream s) {
    if (N * C <= 0) return;
    embed_forward_kernel<<<dp_grid(N * C, 256), 256, 0, s>>>(out, tok, (const bf16 *)wte, N, C);
    DP_CHECK_LAUNCH();
}

extern "C" void dp_cuda_embed_backward(float *dwte, const float *dout, const int32_t *tok, int64_t N, int64_t C,
                                       dp_stream s) {
    if (N * C <= 0) return;
    embed_backward_kernel<<<dp_grid(N * C, 256), 256, 0, s>>>(dwte, dout, tok, N, C);
    DP_CHECK_LAUNCH();
}
