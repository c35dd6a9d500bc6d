/* Block importance scoring (the first half of depth pruning): a
 * calibration set drawn reproducibly from text, one dense forward that
 * caches every block's input in calib.h5, then criteria that rank blocks.
 *
 * calib.h5 (RUNDIR/calib.h5):
 *   ids (N, T) I32            the calibration tokens
 *   source (N, 2) I64         (document index, token offset) of every sample
 *   hidden_%03d (N, T, C) F32 input of block i, i = 0..L (L: the final norm's input)
 *   dense_nll (N) F64         per-sample NLL sum of the dense model (positions 1..T-1)
 *   attributes: model_hash, calib_hash, samples, seq_len, seed, bos, version
 *
 * Criteria (ascending score = less important, removed first):
 *   ppl        exp(mean NLL) of the model without block i, from hidden_i
 *   taylor     sum over the block's weights of |w * dL/dw| (one backward)
 *   magnitude  sum |w| of the block;  magnitude-l2: sqrt(sum w^2)
 *   bi         block influence: 1 - mean cos(h_i, h_{i+1}) over tokens
 *   ppl+/taylor+  the same with the paper's protection (first 4, last 2 kept) */
#ifndef DEPTHPRUNE_PRUNE_H
#define DEPTHPRUNE_PRUNE_H

#include <stdint.h>

#include "depthprune/dist.h"
#include "depthprune/engine.h"
#include "depthprune/llama.h"
#include "depthprune/store.h"
#include "depthprune/tokenizer.h"
#include "depthprune/train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dp_calib_opts {
    int64_t samples, seq_len;
    uint64_t seed;
    int32_t bos_id;    /* < 0: no BOS; else every sample starts with it */
    const char *field; /* JSONL: the text field; NULL: plain text */
} dp_calib_opts;

/* Draws the calibration set (the paper's rule): documents are the JSONL
 * lines' `field` or the text's blank-line-separated paragraphs; a document
 * is drawn uniformly among those with at least the sample's token count,
 * then a uniformly random window of it. ids (N, T) and src (N, 2: document,
 * token offset) are fresh arrays. Deterministic in seed. */
int dp_calib_sample(const dp_tokenizer *tok, const char *text, size_t n_bytes, const dp_calib_opts *o, int32_t **ids,
                    int64_t **src, dp_err *err);

/* RUNDIR/calib.h5, opened by every stage that reads it (collective): the
 * dense model's block inputs hidden_000..hidden_L (N, T, C), ids (N, T),
 * source (N, 2), dense_nll (N) and attributes model_hash, calib_hash,
 * samples, seq_len, seed, bos, device, complete. */
typedef struct dp_calib_file {
    dp_h5 h; /* open on the communicator */
    char path[1024];
    int64_t N, T;
    char seed[32], calib_hash[17], device[16];
    int complete;
    int32_t *ids;      /* (N, T) */
    double *dense_nll; /* (N) per-sample NLL sums (positions 1..T-1) */
    double dense_ppl;
} dp_calib_file;
/* Collective. Opens and checks RUNDIR/calib.h5: a depthprune calibration
 * file (else DP_E_FORMAT), made for model_hash (else DP_E_MISMATCH),
 * complete unless need_complete is 0; reads ids and dense_nll (when
 * complete). A missing file: DP_E_IO naming it. Errors agree on every rank. */
int dp_calib_open(const dp_mpi *mpi, const char *run_dir, uint64_t model_hash, int need_complete, dp_calib_file *c,
                  dp_err *err);
void dp_calib_close(dp_calib_file *c);

/* Kendall's tau-b of two score vectors (ties in either counted as ties; 0 when undefined). */
double dp_kendall_tau_b(const double *x, const double *y, int n);

typedef struct dp_score_opts {
    const char *run_dir;
    uint64_t model_hash; /* dp_llama_hash of the model scored */
    int64_t batch;       /* samples per forward */
    int protect_first, protect_last;
    int64_t bootstrap; /* replicates; 0: none */
    double ratio;      /* fraction of blocks removed, for the bootstrap's p_removed */
    int progress;
    int fault_kill_after_round; /* tests: rank 1 SIGKILLs itself after committing round k (0: off) */
    int stop_on_signal;         /* SIGUSR1/SIGTERM (dp_train_install_signals): stop after a PPL round, DP_E_STOPPED */
    dp_device device;           /* the engine's device */
    int stream_weights;         /* cuda: -1 auto, 0 off, 1 on (see score.stream_weights) */
    int units;                  /* 0: blocks; 1: sub-layers (attention and MLP of block l: units 2l, 2l + 1) */
} dp_score_opts;

/* Collective. Runs (or reuses, when RUNDIR/calib.h5 matches model and
 * calibration) the dense calibration forward. model_hash = dp_llama_hash(m),
 * computed once by the caller (it reads every weight) and shared with dp_score. */
int dp_calibrate(const dp_mpi *mpi, const dp_llama *m, uint64_t model_hash, const int32_t *ids, const int64_t *src,
                 const dp_calib_opts *co, const char *run_dir, int64_t batch, int progress, dp_device dev,
                 int stream_weights, dp_err *err);
/* Samples per batch of that forward for N samples of T tokens, at most batch: equal batches of
 * >= 512 rows where possible; independent of the rank count. */
int64_t dp_calib_batch(int64_t N, int64_t T, int64_t batch);

/* Collective. One forward+backward of this rank's nb samples (tokens
 * (nb, T), next-token CE times scale) on e (planned with train, wgrad; NULL
 * where nb == 0): block l's weight gradient lands in gblock (block-local
 * layout) and block_done(l, ctx) runs, blocks in reverse order (it reduces
 * over ranks and clears gblock). A rank with nb == 0 calls nothing: its
 * caller joins the reductions itself. Errors: token ids outside the
 * vocabulary (on any rank). */
int dp_block_grads(const dp_mpi *mpi, dp_engine *e, const int32_t *tokens, int64_t nb, int64_t T, double scale,
                   float *gblock, void (*block_done)(int layer, void *ctx), void *ctx, dp_err *err);

/* Collective. Scores the criteria named in crit (n_crit names, see above)
 * from RUNDIR/calib.h5 and writes RUNDIR/scores.h5 and scores.json
 * (atomically). The PPL sweep commits finished candidates to
 * RUNDIR/scores.progress.h5 after every round and resumes from it. */
int dp_score(const dp_mpi *mpi, const dp_llama *m, const char *const *crit, int n_crit, const dp_score_opts *o,
             dp_err *err);

/* ---- pruning schedules ---- */

/* Collective. PPL of m under map on RUNDIR/calib.h5's samples (exp of the
 * mean NLL over positions 1..T-1), batches of `batch` samples dealt to ranks;
 * the same value for any rank count. */
int dp_prune_map_ppl(const dp_mpi *mpi, dp_device dev, const dp_llama *m, const dp_layer_map *map, const char *run_dir,
                     uint64_t model_hash, int64_t batch, double *ppl, dp_err *err);

/* How blocks are removed (a sweep's schedules): scored once, scored again
 * after every removal, width pruning (the baseline), or not at all. */
typedef enum dp_prune_schedule {
    DP_PRUNE_ONE_SHOT = 0,
    DP_PRUNE_ITERATIVE,
    DP_PRUNE_WIDTH,
    DP_PRUNE_DENSE
} dp_prune_schedule;
/* Healing after pruning. */
typedef enum dp_retrain_kind { DP_RETRAIN_NONE = 0, DP_RETRAIN_LORA, DP_RETRAIN_FULL } dp_retrain_kind;

typedef struct dp_iter_opts {
    const char *run_dir; /* holds calib.h5 (from `score`); heal runs go to RUNDIR/heal-NN */
    uint64_t model_hash; /* of the dense model calib.h5 was made with */
    int64_t batch;       /* samples per forward */
    int protect_first, protect_last;
    int remove; /* K blocks (units: K sub-layers) */
    int units;  /* candidates: 0 blocks; 1 sub-layers (removed[] holds 2l for block l's attention, 2l + 1 its MLP;
                 * a block whose attention and MLP are both gone leaves the map) */
    int progress;
    dp_device device;
    /* healing between removals (heal_steps > 0): a short training run on
     * the shortened model, LoRA merged after it */
    int64_t heal_steps;
    const dp_train_data *heal_data;
    const int64_t *heal_idx;
    int64_t heal_n;
    const dp_train_opts *heal_opts;
} dp_iter_opts;

/* Collective. Iterative PPL pruning: K times, remove the unprotected block
 * whose removal gives the lowest calibration PPL (ties: the lower index).
 * Candidates are scored from cached block inputs (the dense ones from
 * calib.h5); after a removal only the inputs downstream of it are
 * recomputed (everything, after healing). removed[k]: original index of
 * the k-th removal, ppl_after[k]: the PPL once it is gone (before healing).
 * With healing m's weights change. */
int dp_prune_iterative(const dp_mpi *mpi, dp_llama *m, const dp_iter_opts *o, int *removed, double *ppl_after,
                       double *dense_ppl, dp_err *err);

/* Cost-balanced candidate assignment: candidate i costs L-1-i blocks; pairs
 * (i, L-1-i) are dealt round-robin. owner[i] = rank; round[i] = the index
 * of the candidate among its rank's (the commit round). */
void dp_score_assign(int L, int n_ranks, int *owner, int *round);

#ifdef __cplusplus
}
#endif
#endif
