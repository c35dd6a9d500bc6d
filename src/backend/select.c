/* Backend selection: validates the device a run asks for. */
#include <string.h>

#include "depthprune/backend.h"

int dp_backend_check(const char *device, dp_err *err) {
    if (strcmp(device, "cpu") == 0) return DP_OK;
    if (strcmp(device, "cuda") != 0)
        return dp_err_set(err, DP_E_USAGE, "unknown device '%s' (expected cpu or cuda)", device);
    if (!dp_cuda_built())
        return dp_err_set(err, DP_E_DEVICE,
                          "--device cuda: this depthprune was built without CUDA (the CUDA toolkit "
                          "was not found at configure time); use --device cpu");
    dp_err why;
    dp_err_clear(&why);
    int n = dp_cuda_device_count(&why);
    if (n == 0) return dp_err_set(err, DP_E_DEVICE, "--device cuda: no usable GPU: %s", why.msg);
    if (n < 0) return dp_err_set(err, DP_E_DEVICE, "--device cuda: CUDA cannot start: %s", why.msg);
    return DP_OK;
}
