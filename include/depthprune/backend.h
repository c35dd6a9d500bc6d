/* Backend selection. The CPU backend is always present; the CUDA backend
 * exists when the build found the CUDA toolkit and a GPU is visible at run
 * time. Asking for CUDA where there is none is a clear error, not a crash. */
#ifndef DEPTHPRUNE_BACKEND_H
#define DEPTHPRUNE_BACKEND_H

#include "depthprune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if this binary was built with the CUDA backend. */
int dp_cuda_built(void);
/* Number of usable CUDA devices; 0 when this machine has none (no driver,
 * no device), -1 when it has a driver but CUDA cannot start (a failure, not
 * a skip); err says which. */
int dp_cuda_device_count(dp_err *err);
/* Checks that `device` ("cpu" or "cuda") can be used here. */
int dp_backend_check(const char *device, dp_err *err);

#ifdef __cplusplus
}
#endif
#endif
