/* MPI context: a duplicated communicator, rank/size, and the node-local
 * rank (via MPI_Comm_split_type) that selects a GPU. Modules receive the
 * communicator as a parameter and never touch MPI_COMM_WORLD.
 *
 * Works without mpirun (an MPI singleton) and under mpirun/srun. */
#ifndef DEPTHPRUNE_DIST_H
#define DEPTHPRUNE_DIST_H

#include <mpi.h>

#include "depthprune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dp_mpi {
    MPI_Comm comm; /* duplicate of the parent communicator */
    int rank, size;
    MPI_Comm node_comm; /* ranks sharing this node */
    int local_rank, local_size;
    int initialized_here; /* 1: dp_mpi_init called MPI_Init_thread */
} dp_mpi;

#define DP_CHECK_MPI(call)                                                                                             \
    do {                                                                                                               \
        int dp_mpi_rc_ = (call);                                                                                       \
        if (dp_mpi_rc_ != MPI_SUCCESS) {                                                                               \
            char dp_mpi_msg_[MPI_MAX_ERROR_STRING];                                                                    \
            int dp_mpi_len_ = 0;                                                                                       \
            MPI_Error_string(dp_mpi_rc_, dp_mpi_msg_, &dp_mpi_len_);                                                   \
            dp_fatal("%s failed: %s", #call, dp_mpi_msg_);                                                             \
        }                                                                                                              \
    } while (0)

/* Initializes MPI (if not yet initialized) and fills ctx from a duplicate
 * of MPI_COMM_WORLD. Installs the MPI_Abort hook for dp_fatal and sets the
 * log rank. Collective over MPI_COMM_WORLD. */
void dp_mpi_init(int *argc, char ***argv, dp_mpi *ctx);
/* Fills ctx from a duplicate of parent (collective over parent). */
void dp_mpi_from_comm(MPI_Comm parent, dp_mpi *ctx);
/* Frees the communicators; finalizes MPI if dp_mpi_init initialized it. */
void dp_mpi_finalize(dp_mpi *ctx);
/* Collective agreement on an error: every rank passes its local status
 * code; returns the first non-zero code in rank order (0 if all are OK) and,
 * if err is not NULL and another rank failed, copies that rank's message
 * into err. Use it so that one rank's bad read never hangs the others. */
int dp_mpi_agree(const dp_mpi *ctx, int local_code, dp_err *err);
/* A barrier for waits that may last hours for a good reason (rank groups
 * finishing their own work): polls, feeding the watchdog meanwhile. */
void dp_mpi_wait_peers(const dp_mpi *ctx);

#ifdef __cplusplus
}
#endif
#endif
