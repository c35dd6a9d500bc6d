/* NCCL data parallelism: bootstrap over MPI, bucketed all-reduce on a
 * separate stream ordered after the compute by an event, and a polled
 * deadline so a lost peer ends the job instead of hanging it (NCCL
 * collectives otherwise wait forever). */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <string.h>
#include <time.h>

#include "depthprune/ddp.h"

#define CHECK_CUDA_RT(call)                                                                                            \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) dp_fatal("CUDA: %s (%s)", cudaGetErrorString(e_), #call);                               \
    } while (0)

int dp_ddp_available(void) {
    return 1;
}

static double since(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + 1e-9 * (double)(now.tv_nsec - t0->tv_nsec);
}

/* The communicator is non-blocking: any call may return ncclInProgress
 * (set-up, and the connections NCCL opens lazily on the first collective,
 * wait for every peer). Polls until it settles or timeout_s passes; returns
 * ncclInProgress on the deadline. */
static ncclResult_t settle(ncclComm_t comm, ncclResult_t r, double timeout_s) {
    struct timespec t0, nap = {0, 200000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (r == ncclInProgress) {
        if (since(&t0) > timeout_s) return ncclInProgress;
        nanosleep(&nap, NULL);
        if (ncclCommGetAsyncError(comm, &r) != ncclSuccess) return ncclInternalError;
    }
    return r;
}

int dp_ddp_init(dp_ddp *d, const dp_mpi *mpi, double timeout_s, dp_err *err) {
    memset(d, 0, sizeof *d);
    d->rank = mpi->rank;
    d->size = mpi->size;
    d->bucket = (int64_t)1 << 24; /* 64 MiB of fp32 per call */
    d->timeout_s = timeout_s > 0 ? timeout_s : 600;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    int rc = DP_OK;
    if (mpi->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess) rc = dp_err_set(err, DP_E_DEVICE, "ncclGetUniqueId: %s", ncclGetErrorString(r));
    }
    rc = dp_mpi_agree(mpi, rc, err);
    if (rc) return rc;
    DP_CHECK_MPI(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, mpi->comm));
    ncclComm_t comm = NULL;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0; /* set-up under the same deadline as the reductions */
    ncclResult_t r = ncclCommInitRankConfig(&comm, mpi->size, id, mpi->rank, &cfg);
    if (comm) r = settle(comm, r, d->timeout_s);
    if (r == ncclInProgress)
        rc = dp_err_set(err, DP_E_DEVICE, "NCCL set-up made no progress for %.0f s: a peer rank did not join",
                        d->timeout_s);
    else if (r != ncclSuccess)
        rc = dp_err_set(err, DP_E_DEVICE, "ncclCommInitRankConfig: %s", ncclGetErrorString(r));
    rc = dp_mpi_agree(mpi, rc, err);
    if (rc) {
        if (comm) ncclCommAbort(comm);
        return rc;
    }
    d->comm = comm;
    cudaStream_t s;
    CHECK_CUDA_RT(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    d->stream = s;
    cudaEvent_t ev;
    CHECK_CUDA_RT(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    d->ready = ev;
    return DP_OK;
}

void dp_ddp_free(dp_ddp *d) {
    if (d->comm && settle((ncclComm_t)d->comm, ncclCommDestroy((ncclComm_t)d->comm), 60.0) != ncclSuccess)
        ncclCommAbort((ncclComm_t)d->comm);
    if (d->ready) cudaEventDestroy((cudaEvent_t)d->ready);
    if (d->stream) cudaStreamDestroy(d->stream);
    memset(d, 0, sizeof *d);
}

/* Waits for the reduction stream, checking NCCL's asynchronous error state
 * and the deadline; on either, aborts the communicator and ends the job. */
static void wait_or_die(dp_ddp *d, int64_t first, int64_t n) {
    struct timespec t0, now, nap = {0, 100000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        cudaError_t q = cudaStreamQuery(d->stream);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) dp_fatal("CUDA: %s while reducing gradients", cudaGetErrorString(q));
        ncclResult_t a = ncclSuccess;
        ncclCommGetAsyncError((ncclComm_t)d->comm, &a);
        if (a != ncclSuccess && a != ncclInProgress) {
            ncclCommAbort((ncclComm_t)d->comm);
            d->comm = NULL;
            dp_fatal("NCCL all-reduce of gradients [%lld, %lld) failed: %s (a peer rank died or its network failed)",
                     (long long)first, (long long)(first + n), ncclGetErrorString(a));
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        double el = (double)(now.tv_sec - t0.tv_sec) + 1e-9 * (double)(now.tv_nsec - t0.tv_nsec);
        if (el > d->timeout_s) {
            ncclCommAbort((ncclComm_t)d->comm);
            d->comm = NULL;
            dp_fatal("NCCL all-reduce of gradients [%lld, %lld) made no progress for %.0f s: a peer rank is hung or "
                     "gone; aborting the job",
                     (long long)first, (long long)(first + n), el);
        }
        nanosleep(&nap, NULL);
    }
}

void dp_ddp_allreduce_sum(dp_ddp *d, float *buf, int64_t n) {
    if (n <= 0) return;
    CHECK_CUDA_RT(cudaEventRecord((cudaEvent_t)d->ready, NULL));
    CHECK_CUDA_RT(cudaStreamWaitEvent(d->stream, (cudaEvent_t)d->ready, 0));
    for (int64_t o = 0; o < n; o += d->bucket) {
        int64_t c = n - o < d->bucket ? n - o : d->bucket;
        ncclResult_t r =
            ncclAllReduce(buf + o, buf + o, (size_t)c, ncclFloat32, ncclSum, (ncclComm_t)d->comm, d->stream);
        r = settle((ncclComm_t)d->comm, r, d->timeout_s); /* the first call also connects to the peers */
        if (r != ncclSuccess) {
            ncclCommAbort((ncclComm_t)d->comm);
            d->comm = NULL;
            dp_fatal("NCCL all-reduce of gradients [%lld, %lld): %s", (long long)o, (long long)(o + c),
                     r == ncclInProgress ? "no progress before the deadline (a peer rank is hung or gone)"
                                         : ncclGetErrorString(r));
        }
    }
    wait_or_die(d, 0, n);
}
