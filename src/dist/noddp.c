/* Builds without NCCL: no GPU gradient reduction (the trainer sums on the host). */
#include <string.h>

#include "depthprune/ddp.h"

int dp_ddp_available(void) {
    return 0;
}

int dp_ddp_init(dp_ddp *d, const dp_mpi *mpi, double timeout_s, dp_err *err) {
    (void)mpi, (void)timeout_s;
    memset(d, 0, sizeof *d);
    return dp_err_set(err, DP_E_UNSUPPORTED, "this depthprune was built without NCCL");
}

void dp_ddp_free(dp_ddp *d) {
    memset(d, 0, sizeof *d);
}

void dp_ddp_allreduce_sum(dp_ddp *d, float *buf, int64_t n) {
    (void)d, (void)buf, (void)n;
    dp_fatal("dp_ddp_allreduce_sum: built without NCCL");
}
