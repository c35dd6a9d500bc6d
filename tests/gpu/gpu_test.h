/* Shared by the GPU tests: whether this machine can run them. */
#ifndef DP_GPU_TEST_H
#define DP_GPU_TEST_H

#include <stdio.h>
#include <stdlib.h>

#include "depthprune/backend.h"

/* Returns when a GPU is usable (device 0 selected). No GPU here: exits 77
 * (ctest: skipped). A driver that cannot start CUDA: exits 1 (a failure). */
static void dp_gpu_test_require(void) {
    dp_err err;
    dp_err_clear(&err);
    int n_dev = dp_cuda_device_count(&err);
    if (n_dev == 0) {
        printf("SKIPPED: no GPU (%s)\n", err.msg);
        exit(77);
    }
    if (n_dev < 0) {
        fprintf(stderr, "FAIL: CUDA cannot start: %s\n", err.msg);
        exit(1);
    }
}

#endif
