/* NCCL data parallelism (ddp.h) under mpirun: rank r contributes
 * (r + 1) * x to a buffer larger than one bucket; every rank must hold
 * sum_r (r + 1) * x afterwards. In CI there is no GPU: exit 77. On the GPU
 * machine it runs with one rank (one GPU); with several GPUs, with one rank
 * per GPU (`mpirun -np G test_ddp`). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "depthprune/backend.h"
#include "depthprune/ddp.h"

int main(int argc, char **argv) {
    dp_mpi mpi;
    dp_mpi_init(&argc, &argv, &mpi);
    dp_err err;
    dp_err_clear(&err);
    int n_dev = dp_cuda_device_count(&err);
    if (n_dev < 0) { /* a driver is there: CUDA failing to start is a failure */
        fprintf(stderr, "FAIL: CUDA cannot start: %s\n", err.msg);
        dp_mpi_finalize(&mpi);
        return 1;
    }
    int have = n_dev > 0;
    MPI_Allreduce(MPI_IN_PLACE, &have, 1, MPI_INT, MPI_MIN, mpi.comm);
    if (!have) {
        if (mpi.rank == 0) printf("SKIPPED: no GPU (%s)\n", err.msg);
        dp_mpi_finalize(&mpi);
        return 77;
    }
    dp_cuda_set_device(mpi.local_rank % n_dev);
    dp_ddp d;
    if (dp_ddp_init(&d, &mpi, 60.0, &err)) {
        fprintf(stderr, "test_ddp: %s\n", err.msg);
        dp_mpi_finalize(&mpi);
        return 1;
    }
    d.bucket = 1000; /* several buckets and a partial one */
    const int64_t n = 4321;
    float *h = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) h[i] = (float)(mpi.rank + 1) * (float)(i % 97) * 0.25f;
    float *dbuf = dp_cuda_malloc((size_t)n * sizeof(float), "test");
    dp_cuda_h2d(dbuf, h, (size_t)n * sizeof(float));
    dp_ddp_allreduce_sum(&d, dbuf, n);
    dp_cuda_d2h(h, dbuf, (size_t)n * sizeof(float));
    double k = mpi.size * (mpi.size + 1) / 2.0, worst = 0;
    for (int64_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)h[i] - k * (double)(i % 97) * 0.25));
    int ok = worst == 0.0; /* small integers times 0.25: exact in fp32 */
    printf("rank %d/%d: NCCL all-reduce over %lld values in buckets of 1000: max |error| %g%s\n", mpi.rank, mpi.size,
           (long long)n, worst, ok ? "" : "  FAILED");
    dp_cuda_free(dbuf);
    free(h);
    dp_ddp_free(&d);
    dp_mpi_finalize(&mpi);
    return ok ? 0 : 1;
}
