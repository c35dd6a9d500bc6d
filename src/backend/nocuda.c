/* Backend discovery for builds without the CUDA toolkit. */
#include "depthprune/backend.h"

int dp_cuda_built(void) { return 0; }

int dp_cuda_device_count(dp_err *err) {
    dp_err_set(err, DP_E_DEVICE, "built without CUDA");
    return 0;
}
