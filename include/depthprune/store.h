/* HDF5 run files: the store for every intermediate tensor (block inputs,
 * scores, teacher logits, checkpoints). Files are opened with the MPI-IO
 * driver on a communicator; dataset creation, attributes and closing are
 * collective, and every rank joins each collective write even when it has
 * nothing to write (it selects no elements).
 *
 * Datasets are row-partitioned: rank r writes rows [row0, row0 + n_rows)
 * of dimension 0. */
#ifndef DEPTHPRUNE_STORE_H
#define DEPTHPRUNE_STORE_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>

#include "depthprune/core.h"
#include "depthprune/dist.h"
#include "depthprune/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DP_CHECK_H5(call)                                                                                              \
    do {                                                                                                               \
        if ((call) < 0) dp_fatal("HDF5 call failed: %s", #call);                                                       \
    } while (0)

typedef struct dp_h5 {
    hid_t file;
    MPI_Comm comm;
    char path[1024]; /* for error messages */
    int failed;      /* a collective write failed on some rank: the file is abandoned */
} dp_h5;

/* 1 once a file shared by several ranks was abandoned after a failed write.
 * Parallel HDF5 cannot be closed safely then (its collective flush would
 * diverge between the ranks and hang), so the process must end without
 * MPI_Finalize (main does: the error is reported, then _exit). */
int dp_h5_abandoned(void);

/* Collective. Creates (truncates) path. Callers that publish a file write
 * it under a temporary name and rename it after dp_h5_close. */
int dp_h5_create(dp_h5 *h, const char *path, MPI_Comm comm, dp_err *err);
/* Collective. Opens an existing file read-only or read-write. */
int dp_h5_open(dp_h5 *h, const char *path, MPI_Comm comm, int writable, dp_err *err);
/* Collective. Closes without reporting errors (readers, error paths). */
void dp_h5_close(dp_h5 *h);
/* Collective. Closes a file being written and reports whether the final
 * flush reached the disk (a full disk often shows only here). */
int dp_h5_finish(dp_h5 *h, dp_err *err);

/* Collective. Creates dataset `name` (F32, F64, I32 or I64) with the given
 * global shape, optionally chunked along dim 0 with Fletcher32 checksums
 * (chunk_rows > 0), and writes this rank's rows. n_rows may be 0. */
int dp_h5_write_rows(dp_h5 *h, const char *name, dp_dtype dtype, int ndim, const int64_t *gshape, int64_t chunk_rows,
                     int64_t row0, int64_t n_rows, const void *data, dp_err *err);
/* Collective. Reads rows [row0, row0 + n_rows) of an existing dataset into
 * data (converted to dtype). The global shape is returned in gshape/ndim. */
int dp_h5_read_rows(dp_h5 *h, const char *name, dp_dtype dtype, int64_t row0, int64_t n_rows, void *data, dp_err *err);
/* Independent. Global shape of a dataset. */
int dp_h5_shape(dp_h5 *h, const char *name, int *ndim, int64_t *gshape, dp_err *err);
/* Collective. String attribute on the file root (every rank passes the
 * same value). */
int dp_h5_set_attr(dp_h5 *h, const char *name, const char *value, dp_err *err);
/* Independent. Reads a string attribute into a fresh buffer (dp_free). */
int dp_h5_get_attr(dp_h5 *h, const char *name, char **value, dp_err *err);

/* ---- training checkpoints ----
 * RUNDIR/ckpt/step-NNNNNNNNN/rank-RRRRR.h5: param, adam_m, adam_v of that
 * rank's shard [shard_begin, shard_end) of the trainable vector
 * (Fletcher32-checked chunks) and attributes (iteration, optimizer step,
 * skip counters, seed, hashes of the configuration, the model and the
 * whole parameter vector), each file with a manifest (size + block
 * hashes). Written as step-N.tmp/, fsynced, marked complete, renamed; the
 * previous keep-1 complete ones are kept. Resume takes the newest checkpoint
 * that opens, is complete and whose parameter hash verifies, falling back
 * to older ones; any rank count can resume any checkpoint. */
typedef struct dp_ckpt_state {
    int64_t it, opt_step, skipped, consec; /* iterations done, optimizer steps, skipped steps, consecutive skips */
} dp_ckpt_state;

/* The sharded trainable vector a checkpoint holds (ZeRO-1: each rank owns
 * [s0, s1) and that range's Adam moments). */
typedef struct dp_ckpt_vec {
    const dp_mpi *mpi;
    const char *run_dir;
    int64_t n;      /* trainable floats */
    float *p;       /* all of them (identical on every rank) */
    float *m, *v;   /* this rank's shard's moments */
    int64_t s0, s1; /* this rank's shard */
    uint64_t cfg_hash, model_hash, seed;
    int64_t keep; /* complete checkpoints kept (at least 2) */
} dp_ckpt_vec;

/* Collective: writes checkpoint cs->it. */
int dp_ckpt_write(const dp_ckpt_vec *v, const dp_ckpt_state *cs, dp_err *err);
/* Collective: restores p, m, v and cs from the newest usable checkpoint
 * (*resumed = 1), or leaves them (*resumed = 0) when there is none.
 * Errors: a checkpoint of another configuration or model (DP_E_MISMATCH). */
int dp_ckpt_resume(dp_ckpt_vec *v, dp_ckpt_state *cs, int *resumed, dp_err *err);

#ifdef __cplusplus
}
#endif
#endif
