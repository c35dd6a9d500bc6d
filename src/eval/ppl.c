/* Perplexity over non-overlapping windows, split across ranks.
 *
 * Bit-identical for any rank count: the batches are fixed globally (windows
 * b*batch .. b*batch+batch-1), so every window is computed with the same
 * batch shape wherever it runs; each window's NLL is summed in position
 * order, and the window sums are combined in window order after a reduction
 * that adds only exact zeros from the ranks that did not own a window. */
#include <math.h>
#include <string.h>

#include "depthprune/engine.h"
#include "depthprune/eval.h"

int dp_ppl_windows(const int32_t *ids, int64_t n_ids, int32_t bos_id, const dp_ppl_opts *o, int32_t **win,
                   int64_t *n_win, dp_err *err) {
    *win = NULL;
    *n_win = 0;
    int64_t T = o->seq_len;
    if (T < 2) return dp_err_set(err, DP_E_USAGE, "--seq-len must be at least 2, got %lld", (long long)T);
    if (o->batch < 1) return dp_err_set(err, DP_E_USAGE, "--batch must be at least 1");
    if (n_ids == 0) return dp_err_set(err, DP_E_FORMAT, "the text is empty (no tokens)");
    int per = o->bos_per_window && bos_id >= 0;
    int lead = !o->bos_per_window && bos_id >= 0; /* one BOS before the whole text */
    int64_t body = per ? T - 1 : T;               /* text tokens per window */
    int64_t stream = n_ids + lead;
    int64_t n = stream / body;
    if (n < 1)
        return dp_err_set(err, DP_E_FORMAT,
                          "the text has %lld tokens, fewer than one window of %lld; use a longer text or a "
                          "smaller --seq-len",
                          (long long)stream, (long long)body);
    int32_t *w = dp_malloc((size_t)(n * T) * sizeof(int32_t), "ppl windows");
    for (int64_t i = 0; i < n; i++) {
        int32_t *row = w + i * T;
        if (per) {
            row[0] = bos_id;
            memcpy(row + 1, ids + i * body, (size_t)body * sizeof(int32_t));
        } else {
            for (int64_t t = 0; t < T; t++) {
                int64_t s = i * T + t - lead; /* position in the text; -1 is the leading BOS */
                row[t] = s < 0 ? bos_id : ids[s];
            }
        }
    }
    *win = w;
    *n_win = n;
    return DP_OK;
}

int dp_ppl_run(const dp_mpi *mpi, const dp_llama *m, const dp_layer_map *map, const int32_t *win, int64_t n_win,
               const dp_ppl_opts *o, dp_ppl_result *r, double *window_nll, dp_err *err) {
    int64_t T = o->seq_len, B = o->batch;
    int64_t n_batches = (n_win + B - 1) / B;
    memset(r, 0, sizeof *r);
    dp_engine e;
    dp_engine_plan plan = {
        .B = B, .T = T, .n_blocks = map->n, .allow_long = o->allow_long, .local_rank = mpi->local_rank};
    /* every rank opens the same way, so failures agree */
    int rc = dp_engine_open(&e, o->device, m, &plan, err);
    if (rc) return rc;
    double *wnll = dp_calloc((size_t)n_win, sizeof(double), "ppl");
    int32_t *targets = dp_malloc((size_t)(B * T) * sizeof(int32_t), "ppl");
    float *nll = dp_malloc((size_t)(B * T) * sizeof(float), "ppl");
    double t0 = dp_time_s(), last = t0;
    int64_t mine = 0, done = 0;
    for (int64_t b = mpi->rank; b < n_batches; b += mpi->size) mine++;
    for (int64_t b = mpi->rank; b < n_batches && rc == DP_OK; b += mpi->size) {
        int64_t first = b * B, nb = first + B <= n_win ? B : n_win - first;
        const int32_t *tok = win + first * T;
        dp_llama_next_targets(targets, tok, nb, T);
        if ((rc = dp_engine_embed(&e, tok, nb, T, err))) break;
        dp_engine_blocks(&e, map, 0, map->n, nb);
        dp_engine_head_nll(&e, targets, nll, nb);
        dp_llama_sum_positions(nll, nb, T, wnll + first);
        done++;
        double now = dp_time_s();
        if (o->progress && mpi->rank == 0 && (now - last > 5.0 || done == mine)) {
            double rate = (double)(done * B * T) / (now - t0);
            dp_log("ppl: batch %lld/%lld on rank 0, %.0f tokens/s, ETA %.0f s", (long long)done, (long long)mine, rate,
                   (double)(mine - done) * (now - t0) / (double)done);
            last = now;
        }
    }
    rc = dp_mpi_agree(mpi, rc, err);
    if (rc == DP_OK) {
        DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, wnll, (int)n_win, MPI_DOUBLE, MPI_SUM, mpi->comm));
        for (int64_t i = 0; i < n_win; i++) r->nll_sum += wnll[i];
        r->windows = n_win;
        r->tokens = n_win * (T - 1);
        r->nll = r->nll_sum / (double)r->tokens;
        r->ppl = exp(r->nll);
        if (window_nll) memcpy(window_nll, wnll, (size_t)n_win * sizeof(double));
    }
    dp_free(wnll);
    dp_free(targets);
    dp_free(nll);
    dp_engine_close(&e);
    return rc;
}
