/* Evaluation: perplexity with the protocol of the Shortened LLaMA and
 * LLM-Pruner papers, split over MPI ranks with a result that is identical
 * bit for bit for any rank count.
 *
 * Protocol: the whole text is tokenized once with a single BOS at the start,
 * cut into non-overlapping windows of seq_len tokens (the remainder is
 * dropped); the loss counts positions 1..seq_len-1 of every window; PPL =
 * exp(mean NLL over all predicted tokens). With bos_per_window the text is
 * tokenized without BOS and every window is BOS + seq_len-1 text tokens. */
#ifndef DEPTHPRUNE_EVAL_H
#define DEPTHPRUNE_EVAL_H

#include <stdint.h>

#include "depthprune/dist.h"
#include "depthprune/engine.h"
#include "depthprune/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dp_ppl_opts {
    int64_t seq_len;    /* tokens per window */
    int64_t batch;      /* windows per forward */
    int bos_per_window; /* the BOS-per-window variant */
    int allow_long;     /* seq_len above max_position_embeddings */
    int progress;       /* log progress lines on rank 0 */
    dp_device device;   /* cuda: the GPU of the node-local rank (modulo the visible GPUs) */
} dp_ppl_opts;

typedef struct dp_ppl_result {
    double ppl, nll; /* exp(mean NLL), mean NLL */
    double nll_sum;  /* summed in window order */
    int64_t tokens;  /* predicted tokens */
    int64_t windows;
} dp_ppl_result;

/* Cuts ids (the text's tokens, without BOS) into windows (n_win, seq_len),
 * a fresh array. bos_id < 0: no BOS at all. Errors: empty text, text
 * shorter than one window. */
int dp_ppl_windows(const int32_t *ids, int64_t n_ids, int32_t bos_id, const dp_ppl_opts *o, int32_t **win,
                   int64_t *n_win, dp_err *err);

/* Collective over mpi: every rank holds the model and all windows; global
 * batches of o->batch consecutive windows are dealt round-robin to ranks;
 * per-window NLL sums are combined in window order. window_nll (n_win, may
 * be NULL) receives every window's NLL sum on every rank. */
int dp_ppl_run(const dp_mpi *mpi, const dp_llama *m, const dp_layer_map *map, const int32_t *win, int64_t n_win,
               const dp_ppl_opts *o, dp_ppl_result *r, double *window_nll, dp_err *err);

#ifdef __cplusplus
}
#endif
#endif
