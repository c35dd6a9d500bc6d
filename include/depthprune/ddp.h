/* Data-parallel gradient reduction on the GPU over NCCL (one rank per GPU).
 * The communicator is bootstrapped over MPI (rank 0's ncclUniqueId is
 * broadcast); reductions run in buckets on their own stream, which waits on
 * an event of the compute stream, and are polled with a deadline: a dead or
 * hung peer (ncclCommGetAsyncError, or no progress within timeout_s; the
 * communicator is non-blocking, so its set-up and the first collective's
 * connections are under the same deadline) aborts
 * the communicator and ends the job with one message instead of a hang.
 * Built when CUDA and NCCL are found; elsewhere dp_ddp_available() is 0 and
 * dp_ddp_init says why. */
#ifndef DEPTHPRUNE_DDP_H
#define DEPTHPRUNE_DDP_H

#include "depthprune/cuda_ops.h"
#include "depthprune/dist.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dp_ddp {
    void *comm;       /* ncclComm_t */
    dp_stream stream; /* the reduction stream */
    void *ready;      /* cudaEvent_t: compute done */
    int rank, size;
    int64_t bucket;   /* elements per all-reduce call */
    double timeout_s; /* per bucket */
} dp_ddp;

/* 1 when this build has NCCL. */
int dp_ddp_available(void);
/* Collective over mpi. Errors: NCCL initialisation failed (reported on
 * every rank). */
int dp_ddp_init(dp_ddp *d, const dp_mpi *mpi, double timeout_s, dp_err *err);
void dp_ddp_free(dp_ddp *d);
/* Collective: buf (n fp32 on the device) = the sum over ranks, in buckets;
 * waits for work already queued on the default stream first and returns when
 * the sum is complete. */
void dp_ddp_allreduce_sum(dp_ddp *d, float *buf, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
