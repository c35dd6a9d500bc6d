/* CUDA device discovery for backend selection: any failure of
 * cudaGetDeviceCount means "no usable GPU", with what is missing named. */
#include <dlfcn.h>
#include <stdlib.h>

#include "common.cuh"
#include "depthprune/backend.h"

extern "C" int dp_cuda_built(void) {
    return 1;
}

/* > 0: devices; 0: no GPU here (no driver library, or the driver sees no
 * device): skip; -1: a driver is there but CUDA cannot start (a driver older
 * than the runtime, an initialisation error): a failure, never a skip.
 * err names what is missing or wrong. */
extern "C" int dp_cuda_device_count(dp_err *err) {
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc == cudaErrorInsufficientDriver || rc == cudaErrorNoDevice || (rc == cudaSuccess && n == 0)) {
        (void)cudaGetLastError();
        void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
        int rt = 0;
        cudaRuntimeGetVersion(&rt);
        if (!h)
            dp_err_set(err, DP_E_DEVICE,
                       "no NVIDIA driver on this machine (libcuda.so.1 not found; the CUDA %d.%d "
                       "runtime needs one)",
                       rt / 1000, rt % 1000 / 10);
        else if (rc == cudaErrorInsufficientDriver)
            dp_err_set(err, DP_E_DEVICE,
                       "the NVIDIA driver is older than the CUDA %d.%d runtime this depthprune "
                       "was built with",
                       rt / 1000, rt % 1000 / 10);
        else
            dp_err_set(err, DP_E_DEVICE, "no GPU visible (driver present; CUDA_VISIBLE_DEVICES=%s)",
                       getenv("CUDA_VISIBLE_DEVICES") ? getenv("CUDA_VISIBLE_DEVICES") : "unset");
        int broken = h && rc == cudaErrorInsufficientDriver;
        if (h) dlclose(h);
        return broken ? -1 : 0;
    }
    if (rc != cudaSuccess) {
        dp_err_set(err, DP_E_DEVICE, "cudaGetDeviceCount failed: %s (error %d)", cudaGetErrorString(rc), (int)rc);
        return -1;
    }
    return n;
}

void dp_cuda_after_launch(const char *file, int line) {
    static int sync = -1;
    if (sync < 0) sync = getenv("DP_CUDA_SYNC") && atoi(getenv("DP_CUDA_SYNC")) > 0;
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && sync) e = cudaDeviceSynchronize();
    if (e != cudaSuccess)
        dp_fatal("CUDA: %s in the kernel launched at %s:%d%s", cudaGetErrorString(e), file, line,
                 sync ? " (DP_CUDA_SYNC=1)" : " (set DP_CUDA_SYNC=1 to pin down asynchronous faults)");
}

/* ---- device memory, copies, streams and the cuBLAS handle ---- */

extern "C" void dp_cuda_set_device(int dev) {
    DP_CHECK_CUDA(cudaSetDevice(dev));
}

extern "C" void dp_cuda_describe(int dev, char *buf, size_t n) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
        snprintf(buf, n, "device %d (no properties)", dev);
        return;
    }
    snprintf(buf, n, "%s (bus %04x:%02x:%02x.0, %.1f GiB)", p.name, p.pciDomainID, p.pciBusID, p.pciDeviceID,
             (double)p.totalGlobalMem / 1073741824.0);
}

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
    if (s)
        DP_CHECK_CUDA(cudaStreamSynchronize(s));
    else
        DP_CHECK_CUDA(cudaDeviceSynchronize());
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
