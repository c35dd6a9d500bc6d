/* CUDA device discovery for backend selection. Any failure of
 * cudaGetDeviceCount (no driver: error 35; no device: error 100) means
 * "no GPU", reported with CUDA's own words. */
#include <cuda_runtime.h>

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
