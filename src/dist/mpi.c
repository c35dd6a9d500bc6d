/* MPI context and collective error agreement. */
#include "depthprune/dist.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static void abort_hook(int code) {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) MPI_Abort(MPI_COMM_WORLD, code);
}

void dp_mpi_from_comm(MPI_Comm parent, dp_mpi *ctx) {
    memset(ctx, 0, sizeof *ctx);
    DP_CHECK_MPI(MPI_Comm_dup(parent, &ctx->comm));
    DP_CHECK_MPI(MPI_Comm_rank(ctx->comm, &ctx->rank));
    DP_CHECK_MPI(MPI_Comm_size(ctx->comm, &ctx->size));
    DP_CHECK_MPI(MPI_Comm_split_type(ctx->comm, MPI_COMM_TYPE_SHARED, ctx->rank, MPI_INFO_NULL, &ctx->node_comm));
    DP_CHECK_MPI(MPI_Comm_rank(ctx->node_comm, &ctx->local_rank));
    DP_CHECK_MPI(MPI_Comm_size(ctx->node_comm, &ctx->local_size));
}

void dp_mpi_init(int *argc, char ***argv, dp_mpi *ctx) {
    int init = 0, provided = 0, here = 0;
    MPI_Initialized(&init);
    if (!init) {
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            fprintf(stderr, "depthprune: MPI_Init_thread failed\n");
            exit(1);
        }
        here = 1;
    }
    dp_mpi_from_comm(MPI_COMM_WORLD, ctx);
    ctx->initialized_here = here;
    dp_log_set_rank(ctx->rank, ctx->size);
    dp_set_abort_hook(abort_hook);
}

void dp_mpi_finalize(dp_mpi *ctx) {
    if (ctx->node_comm != MPI_COMM_NULL && ctx->node_comm) MPI_Comm_free(&ctx->node_comm);
    if (ctx->comm != MPI_COMM_NULL && ctx->comm) MPI_Comm_free(&ctx->comm);
    if (ctx->initialized_here) {
        dp_set_abort_hook(NULL);
        MPI_Finalize();
    }
}

int dp_mpi_agree(const dp_mpi *ctx, int local_code, dp_err *err) {
    /* lowest failing rank wins: MINLOC over (failed ? rank : size) */
    int key = local_code ? ctx->rank : ctx->size, first = 0;
    DP_CHECK_MPI(MPI_Allreduce(&key, &first, 1, MPI_INT, MPI_MIN, ctx->comm));
    if (first == ctx->size) return 0;
    int code = local_code;
    DP_CHECK_MPI(MPI_Bcast(&code, 1, MPI_INT, first, ctx->comm));
    char msg[sizeof err->msg];
    memset(msg, 0, sizeof msg);
    if (ctx->rank == first && err) memcpy(msg, err->msg, sizeof msg);
    DP_CHECK_MPI(MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first, ctx->comm));
    if (err) { /* every rank reports the first failure, naming its rank */
        err->code = code;
        if (ctx->size > 1 && strncmp(msg, "rank ", 5))
            snprintf(err->msg, sizeof err->msg, "rank %d: %.1000s", first, msg);
        else if (ctx->rank != first)
            snprintf(err->msg, sizeof err->msg, "%s", msg);
    }
    return code;
}

void dp_mpi_wait_peers(const dp_mpi *ctx) {
    MPI_Request req;
    DP_CHECK_MPI(MPI_Ibarrier(ctx->comm, &req));
    int done = 0;
    while (!done) {
        DP_CHECK_MPI(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        if (!done) {
            dp_heartbeat();
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
}
