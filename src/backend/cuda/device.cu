/* CUDA device discovery for backend selection. Any failure of
 * cudaGetDeviceCount (no driver: error 35; no device: error 100) means
 * "no GPU", reported with CUDA's own words. */
#include "common.cuh"
#include "depthprune/backend.h"

extern "C" int dp_cuda_built(void) { return 1; }

extern "C" int dp_cuda_device_count(dp_err *err) {
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess) {
        dp_err_set(err, DP_E_DEVICE, "cudaGetDeviceCount failed: %s (error %d)",
                   cudaGetErrorString(rc), (int)rc);
        return 0;
    }
    if (n == 0) dp_err_set(err, DP_E_DEVICE, "no CUDA devices visible");
    return n;
}

/* ---- device memory, copies, streams and the cuBLAS handle ---- */

extern "C" void dp_cuda_set_device(int dev) { DP_CHECK_CUDA(cudaSetDevice(dev)); }

extern "C" void *dp_cuda_malloc(size_t n_bytes, const char *label) {
    void *p = NULL;
    if (n_bytes == 0) n_bytes = 1;
    cudaError_t rc = cudaMalloc(&p, n_bytes);
    if (rc != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        (void)cudaGetLastError();
        cudaMemGetInfo(&free_b, &total_b);
        dp_fatal("GPU out of memory: %s needs %.3f GiB, %.3f of %.3f GiB free (%s)", label,
                 (double)n_bytes / 1073741824.0, (double)free_b / 1073741824.0, (double)total_b / 1073741824.0,
                 cudaGetErrorString(rc));
    }
    return p;
}
extern "C" void dp_cuda_free(void *p) {
    if (p) DP_CHECK_CUDA(cudaFree(p));
}
extern "C" void dp_cuda_h2d(void *dst, const void *src, size_t n_bytes) {
    DP_CHECK_CUDA(cudaMemcpy(dst, src, n_bytes, cudaMemcpyHostToDevice));
}
extern "C" void dp_cuda_d2h(void *dst, const void *src, size_t n_bytes) {
    DP_CHECK_CUDA(cudaMemcpy(dst, src, n_bytes, cudaMemcpyDeviceToHost));
}
extern "C" void dp_cuda_d2d(void *dst, const void *src, size_t n_bytes, dp_stream s) {
    DP_CHECK_CUDA(cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyDeviceToDevice, s));
}
extern "C" void dp_cuda_memset0(void *p, size_t n_bytes, dp_stream s) {
    DP_CHECK_CUDA(cudaMemsetAsync(p, 0, n_bytes, s));
}
extern "C" void dp_cuda_sync(dp_stream s) {
    if (s) DP_CHECK_CUDA(cudaStreamSynchronize(s));
    else DP_CHECK_CUDA(cudaDeviceSynchronize());
}
extern "C" dp_blas dp_cuda_blas_create(dp_stream s) {
    cublasHandle_t h;
    DP_CHECK_CUBLAS(cublasCreate(&h));
    DP_CHECK_CUBLAS(cublasSetStream(h, s));
    return h;
}
extern "C" void dp_cuda_blas_destroy(dp_blas h) {
    if (h) DP_CHECK_CUBLAS(cublasDestroy(h));
}

extern "C" size_t dp_cuda_mem_free(void) {
    size_t free_b = 0, total_b = 0;
    DP_CHECK_CUDA(cudaMemGetInfo(&free_b, &total_b));
    return free_b;
}
