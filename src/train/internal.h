/* Shared inside src/train: micro-batches, the teacher cache reader, ZeRO-1
 * shards and the training log. */
#ifndef DP_TRAIN_INTERNAL_H
#define DP_TRAIN_INTERNAL_H

#include "depthprune/store.h"
#include "depthprune/train.h"

#define MPI_CHUNK ((int64_t)1 << 24) /* floats per MPI call */

/* ---- micro-batches (batch.c) ---- */
typedef struct batch {
    int64_t B, T;
    int32_t *tokens, *targets; /* (B, T) */
    uint64_t *keys;            /* (B, T) dropout row keys */
    int64_t n_real;            /* real (non-padding) tokens */
} batch;

int64_t dp_example_len(const dp_train_data *d, int64_t e);
/* Tokens of the examples ex[0..n) that carry a loss. */
int64_t dp_counted_tokens(const dp_train_data *d, const int64_t *ex, int64_t n);
/* Right-padded micro-batch of examples ex[0..n) (n <= b->B rows; missing
 * rows are all padding); T rounded up to 8 within tmax; dropout keys from
 * (seed, it, example, position). */
void dp_build_batch(batch *b, const dp_train_data *d, const int64_t *ex, int64_t n, int64_t tmax, uint64_t seed,
                    int64_t it);

/* ---- the teacher cache reader (teacher_cache.c) ---- */
typedef struct tcache {
    dp_h5 h;
    int open;
    int64_t K;
} tcache;
/* Opens a teacher cache and checks it against the data and temperature. */
int dp_tcache_open(tcache *c, const char *path, const dp_train_data *d, double temp, dp_err *err);
/* The rows of examples ex[0..n) laid out as a (n, T) micro-batch. */
int dp_tcache_fill(tcache *c, const dp_train_data *d, const int64_t *ex, int64_t n, int64_t T, int32_t *idx, float *val,
                   float *lse, dp_err *err);

/* ---- ZeRO-1 shards (zero1.c) ---- */
void dp_shard_range(int64_t n, int rank, int size, int64_t *s0, int64_t *s1);
/* g's shard of every owner becomes the sum over ranks (at the owner). */
void dp_reduce_to_owners(const dp_mpi *mpi, float *g, int64_t n);
/* Every owner's shard of p to every rank. */
void dp_bcast_from_owners(const dp_mpi *mpi, float *p, int64_t n);
/* AdamW over this rank's shard of c with gradients g; for full-parameter
 * training (m != NULL) norm vectors without decay (HF Trainer's no-decay set). */
void dp_shard_update(const dp_ckpt_vec *c, const float *g, const dp_llama *m, const dp_train_opts *o, double lr,
                     int64_t step);

/* ---- the training log (trainlog.c): RUNDIR/train_log.jsonl and its plot ---- */
/* Drops lines after iteration it (-1: all), after a resume. */
void dp_trainlog_truncate(const char *run, int64_t it);
void dp_trainlog_line(const char *run, const char *line);
/* RUNDIR/loss.png from the log (gnuplot, when installed). */
void dp_trainlog_plot(const char *run);

#endif
