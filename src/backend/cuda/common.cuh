/* Shared by the CUDA ops: the check macros (a CUDA or cuBLAS failure is a
 * runtime fault: dp_fatal with the library's own words), bf16 <-> fp32 and
 * warp/block reductions. Included by .cu files only. */
#ifndef DP_CUDA_COMMON_CUH
#define DP_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "depthprune/core.h"
#include "depthprune/cuda_ops.h"

#define DP_CHECK_CUDA(call)                                                                                            \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) dp_fatal("CUDA: %s (%s)", cudaGetErrorString(e_), #call);                               \
    } while (0)
#define DP_CHECK_CUBLAS(call)                                                                                          \
    do {                                                                                                               \
        cublasStatus_t e_ = (call);                                                                                    \
        if (e_ != CUBLAS_STATUS_SUCCESS) dp_fatal("cuBLAS: %s (%d) in %s", cublasGetStatusString(e_), (int)e_, #call); \
    } while (0)
/* after a kernel launch: launch-configuration errors surface here; with
 * DP_CUDA_SYNC=1 in the environment (debugging) the device is synchronised
 * too, so an asynchronous fault is reported at the kernel that caused it,
 * not at the next copy */
#define DP_CHECK_LAUNCH() dp_cuda_after_launch(__FILE__, __LINE__)
void dp_cuda_after_launch(const char *file, int line);

typedef __nv_bfloat16 bf16;

static __device__ __forceinline__ float ld(const bf16 *p, int64_t i) {
    return __bfloat162float(p[i]);
}
static __device__ __forceinline__ float ld(const float *p, int64_t i) {
    return p[i];
}
static __device__ __forceinline__ void st(bf16 *p, int64_t i, float x) {
    p[i] = __float2bfloat16_rn(x);
}
static __device__ __forceinline__ void st(float *p, int64_t i, float x) {
    p[i] = x;
}

static __device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
static __device__ __forceinline__ double warp_sum_d(double x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
static __device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

/* Block-wide sum / max (blockDim.x a multiple of 32, <= 1024); every thread
 * gets the result. `sh` holds 32 values; the block synchronises. */
static __device__ double block_sum_d(double x, double *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    x = warp_sum_d(x);
    __syncthreads();
    if (lane == 0) sh[w] = x;
    __syncthreads();
    x = lane < nw ? sh[lane] : 0.0;
    return warp_sum_d(x);
}
static __device__ float block_max(float x, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    x = warp_max(x);
    __syncthreads();
    if (lane == 0) sh[w] = x;
    __syncthreads();
    x = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(x);
}

static inline unsigned dp_grid(int64_t n, int threads) {
    return (unsigned)((n + threads - 1) / threads);
}

#endif
