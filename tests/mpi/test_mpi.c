/* MPI context under mpirun: duplicated communicator, node-local ranks, and
 * collective error agreement (one failing rank's message reaches all). */
#include "../test.h"
#include "depthprune/dist.h"

int main(int argc, char **argv) {
    dp_mpi ctx;
    dp_mpi_init(&argc, &argv, &ctx);
    int world = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    CHECK_EQ_INT(ctx.size, world);
    int cmp = 0;
    MPI_Comm_compare(ctx.comm, MPI_COMM_WORLD, &cmp);
    CHECK(cmp == MPI_CONGRUENT); /* a duplicate, not WORLD itself */
    CHECK(ctx.local_rank >= 0 && ctx.local_rank < ctx.local_size);
    /* all ranks of this test run on one node */
    CHECK_EQ_INT(ctx.local_size, ctx.size);
    CHECK_EQ_INT(ctx.local_rank, ctx.rank);

    dp_err err;
    dp_err_clear(&err);
    CHECK_EQ_INT(dp_mpi_agree(&ctx, 0, &err), 0);

    /* the last rank fails: everyone learns its code and message */
    int last = ctx.size - 1;
    int local = ctx.rank == last ? DP_E_FORMAT : 0;
    if (local) dp_err_set(&err, local, "bad shard on this rank");
    int code = dp_mpi_agree(&ctx, local, &err);
    CHECK_EQ_INT(code, DP_E_FORMAT);
    CHECK(strstr(err.msg, "bad shard") != NULL);
    if (ctx.rank != last) {
        char want[32];
        snprintf(want, sizeof want, "rank %d", last);
        CHECK(strstr(err.msg, want) != NULL);
    }

    /* two ranks fail: the lowest rank's error wins everywhere */
    if (ctx.size >= 2) {
        dp_err_clear(&err);
        local = ctx.rank >= 1 ? DP_E_IO + ctx.rank : 0;
        if (local) dp_err_set(&err, local, "rank-local failure %d", ctx.rank);
        code = dp_mpi_agree(&ctx, local, &err);
        CHECK_EQ_INT(code, DP_E_IO + 1);
        CHECK(strstr(err.msg, "failure 1") != NULL);
    }
    int failures = dp_test_failures, total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    dp_mpi_finalize(&ctx);
    return total ? 1 : 0;
}
