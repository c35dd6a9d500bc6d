/* PEFT's lora_dropout with the CPU engine's mask (llama.c): element i of
 * row n of adapter (l, k) is dropped when splitmix64 of
 * (key[n] ^ ((l*16 + k) << 48)) + i * golden < p * 2^64, so the GPU drops
 * exactly the elements the CPU drops, whatever the batch or rank. */
#include "common.cuh"

static __device__ __forceinline__ int dropped(uint64_t key, int l, int k, int64_t i, uint64_t thresh) {
    uint64_t z = (key ^ ((uint64_t)(l * 16 + k) << 48)) + (uint64_t)i * 0x9E3779B97F4A7C15ull;
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (z ^ (z >> 31)) < thresh;
}

static __global__ void dropout_kernel(bf16 *dst, const bf16 *src, const uint64_t *keys, int l, int k, int64_t N,
                                      int64_t IN, uint64_t thresh, float inv) {
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N * IN) return;
    int64_t n = j / IN, i = j % IN;
    dst[j] = dropped(keys[n], l, k, i, thresh) ? __float2bfloat16_rn(0.0f) : __float2bfloat16_rn(ld(src, j) * inv);
}

static __global__ void dropout_backward_kernel(float *dinp, const float *g, const uint64_t *keys, int l, int k,
                                               int64_t N, int64_t IN, uint64_t thresh, float inv) {
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N * IN) return;
    int64_t n = j / IN, i = j % IN;
    if (!dropped(keys[n], l, k, i, thresh)) dinp[j] += g[j] * inv;
}

static uint64_t threshold(double p) {
    return p >= 1.0 ? UINT64_MAX : (uint64_t)(p * 18446744073709551616.0);
}

extern "C" void dp_cuda_lora_dropout(dp_bf16 *dst, const dp_bf16 *src, const uint64_t *keys, int l, int k, int64_t N,
                                     int64_t IN, double p, dp_stream s) {
    if (N * IN <= 0) return;
    dropout_kernel<<<dp_grid(N * IN, 256), 256, 0, s>>>((bf16 *)dst, (const bf16 *)src, keys, l, k, N, IN, threshold(p),
                                                        (float)(1.0 / (1.0 - p)));
    DP_CHECK_LAUNCH();
}

extern "C" void dp_cuda_lora_dropout_backward(float *dinp, const float *g, const uint64_t *keys, int l, int k,
                                              int64_t N, int64_t IN, double p, dp_stream s) {
    if (N * IN <= 0) return;
    dropout_backward_kernel<<<dp_grid(N * IN, 256), 256, 0, s>>>(dinp, g, keys, l, k, N, IN, threshold(p),
                                                                 (float)(1.0 / (1.0 - p)));
    DP_CHECK_LAUNCH();
}
