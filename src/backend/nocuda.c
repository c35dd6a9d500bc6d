/* Backend discovery for builds without the CUDA toolkit. */
#include "depthprune/backend.h"
#include "depthprune/engine.h"

int dp_cuda_built(void) {
    return 0;
}

int dp_cuda_device_count(dp_err *err) {
    dp_err_set(err, DP_E_DEVICE, "built without CUDA");
    return 0;
}

const dp_engine_ops *dp_engine_cuda_ops(void) {
    return NULL;
}
