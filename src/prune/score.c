/* Calibration forward and block scoring across MPI ranks.
 *
 * calibrate: contiguous shares of the calibration samples per rank (in
 * fixed global batches: calib_batch), every block input written collectively to
 * calib.h5. PPL criterion: candidate i restarts from hidden_i and runs
 * blocks i+1..L-1 (never the blocks before i: L(L-1)/2 block passes in
 * all); candidates are dealt by cost and computed whole by one rank with
 * fixed batch shapes, so scores are bit-identical for any rank count.
 * After every round of candidates the results are combined and rank 0
 * rewrites scores.progress.h5 (temporary file + rename), from which a
 * killed or requeued run resumes. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "depthprune/engine.h"
#include "depthprune/ops.h"
#include "depthprune/prune.h"
#include "depthprune/store.h"
#include "depthprune/train.h"

/* reverse and random are the baselines a criterion has to beat: the last blocks first
 * (the reverse-order pruning found competitive in 2025), and a seeded random order */
enum { CRIT_PPL, CRIT_TAYLOR, CRIT_MAG1, CRIT_MAG2, CRIT_BI, CRIT_REVERSE, CRIT_RANDOM, N_BASE };
static const char *const k_base_names[N_BASE] = {"ppl", "taylor",  "magnitude", "magnitude-l2",
                                                 "bi",  "reverse", "random"};

/* ---------------- helpers ---------------- */

static char *hex64(uint64_t h, char *buf) {
    snprintf(buf, 17, "%016llx", (unsigned long long)h);
    return buf;
}

/* Contiguous share of n items for rank r of size: [lo, hi), in whole batches. */
static void share(int64_t n, int64_t batch, int r, int size, int64_t *lo, int64_t *hi) {
    int64_t nb = (n + batch - 1) / batch;
    int64_t b0 = nb * r / size, b1 = nb * (r + 1) / size;
    *lo = b0 * batch < n ? b0 * batch : n;
    *hi = b1 * batch < n ? b1 * batch : n;
}

static int all_ok(const dp_mpi *mpi, int rc, dp_err *err) {
    return dp_mpi_agree(mpi, rc, err);
}

/* Allreduce of doubles in chunks (MPI counts are int). */
static void allreduce_d(const dp_mpi *mpi, double *x, int64_t n) {
    for (int64_t off = 0; off < n; off += 1 << 28) {
        int c = (int)(n - off < (1 << 28) ? n - off : (1 << 28));
        DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, x + off, c, MPI_DOUBLE, MPI_SUM, mpi->comm));
    }
}
static void allreduce_f(const dp_mpi *mpi, float *x, int64_t n) {
    for (int64_t off = 0; off < n; off += 1 << 28) {
        int c = (int)(n - off < (1 << 28) ? n - off : (1 << 28));
        DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, x + off, c, MPI_FLOAT, MPI_SUM, mpi->comm));
    }
}

/* Per-sample NLL sums (positions 1..T-1) from the engine's residual stream. */
static void sample_nll(dp_engine *e, const int32_t *tok, int64_t nb, int64_t T, int32_t *targets, float *nll,
                       double *out) {
    dp_llama_next_targets(targets, tok, nb, T);
    dp_engine_head_nll(e, targets, nll, nb);
    dp_llama_sum_positions(nll, nb, T, out);
}

/* Deterministic (thread-count independent) sums over block l's tensors k0 .. k1-1 (all of
 * them, its attention half 0..DP_BT_O or its MLP half); gblock: the block's gradients in
 * block-local layout (Taylor only). */
static double block_sum_range(const dp_llama *m, int l, const float *gblock, int kind, int k0, int k1) {
    double total = 0.0;
    int64_t first = dp_llama_block_first(m, l);
    dp_llama_wcache wc = {0};
    float *const *wb = dp_llama_block_weights(m, l, &wc);
    for (int k = k0; k < k1; k++) {
        const dp_llama_param *p = &m->params[1 + l * DP_LLAMA_BLOCK_TENSORS + k];
        const float *w = wb[k], *g = gblock ? gblock + (p->offset - first) : NULL;
        int64_t n = p->n_elems, chunk = 1 << 16, nc = (n + chunk - 1) / chunk;
        double *part = dp_calloc((size_t)nc, sizeof(double), "score");
#pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < nc; c++) {
            int64_t e = (c + 1) * chunk < n ? (c + 1) * chunk : n;
            double acc = 0.0;
            for (int64_t j = c * chunk; j < e; j++) {
                double v = kind == CRIT_TAYLOR ? fabs((double)w[j] * (double)g[j])
                           : kind == CRIT_MAG1 ? fabs((double)w[j])
                                               : (double)w[j] * (double)w[j];
                acc += v;
            }
            part[c] = acc;
        }
        for (int64_t c = 0; c < nc; c++) total += part[c];
        dp_free(part);
    }
    dp_llama_wcache_free(&wc);
    return kind == CRIT_MAG2 ? sqrt(total) : total;
}

static double block_sum(const dp_llama *m, int l, const float *gblock, int kind) {
    return block_sum_range(m, l, gblock, kind, 0, DP_LLAMA_BLOCK_TENSORS);
}

/* unit u's sum: block u (per 1), or the attention (u even) or MLP (u odd) of block u / 2 */
static double unit_sum(const dp_llama *m, int u, int per, const float *gblock, int kind) {
    if (per == 1) return block_sum(m, u, gblock, kind);
    return u % 2 ? block_sum_range(m, u / 2, gblock, kind, DP_BT_O + 1, DP_LLAMA_BLOCK_TENSORS)
                 : block_sum_range(m, u / 2, gblock, kind, 0, DP_BT_O + 1);
}

/* ---------------- calibrate ---------------- */

/* Samples per batch of the dense calibration forward: equal batches of at least 512 rows
 * where N x T allows (at most `batch` samples, at least one), so the ranks share the forward
 * even for a few short samples (10 x 128 tokens: 2 batches of 5, not 1 of 10 on rank 0) while
 * every GEMM keeps enough rows for its rate. A rule of N, T and batch alone, never of the rank
 * count: a row's result depends on its batch (BLAS edge kernels), and the block inputs must
 * be bit-identical for any number of ranks. */
int64_t dp_calib_batch(int64_t N, int64_t T, int64_t batch) {
    int64_t nb = N * T / 512, least = (N + batch - 1) / batch;
    if (nb < least) nb = least;
    if (nb > N) nb = N;
    if (nb < 1) nb = 1;
    return (N + nb - 1) / nb;
}

int dp_calibrate(const dp_mpi *mpi, const dp_llama *m, uint64_t model_hash, const int32_t *ids, const int64_t *src,
                 const dp_calib_opts *co, const char *run_dir, int64_t batch, int progress, dp_device dev,
                 int stream_weights, dp_err *err) {
    const char *device = dp_device_name(dev);
    int64_t N = co->samples, T = co->seq_len, C = m->cfg.hidden_size;
    int L = (int)m->cfg.n_layers;
    char mh[17], ch[17], buf[64];
    hex64(model_hash, mh);
    hex64(dp_hash_bytes(ids, (size_t)(N * T) * sizeof(int32_t), 3), ch);
    char *path = dp_path_join(run_dir, "calib.h5");
    int rc = DP_OK;
    if (dp_file_exists(path)) { /* reuse it if it is complete and ours */
        dp_calib_file cf;
        rc = dp_calib_open(mpi, run_dir, model_hash, 0, &cf, err);
        if (rc == DP_OK) {
            if (strcmp(cf.calib_hash, ch))
                rc = dp_err_set(err, DP_E_MISMATCH,
                                "%s holds a different calibration set (hash %s, this one %s: samples, seq_len, "
                                "seed or text changed); use a new --run directory",
                                path, cf.calib_hash, ch);
            else if (strcmp(cf.device, device))
                rc = dp_err_set(err, DP_E_MISMATCH,
                                "%s was computed with --device %s, this run uses --device %s (block inputs "
                                "differ in the last bits); use a new --run directory",
                                path, cf.device, device);
            int reuse = rc == DP_OK && cf.complete; /* incomplete: computed again below */
            dp_calib_close(&cf);
            if (reuse) {
                dp_log0("calibrate: reusing %s", path);
                dp_free(path);
                return all_ok(mpi, DP_OK, err);
            }
        }
        if (rc) {
            dp_free(path);
            return all_ok(mpi, rc, err);
        }
    }
    batch = dp_calib_batch(N, T, batch);
    int64_t s0, s1;
    share(N, batch, mpi->rank, mpi->size, &s0, &s1);
    int64_t mine = s1 - s0, NTC = T * C;
    float *hid = dp_malloc((size_t)((L + 1) * (mine ? mine : 1) * NTC) * sizeof(float), "calib hidden");
    double *nll = dp_calloc((size_t)(mine ? mine : 1), sizeof(double), "calib");
    int32_t *targets = dp_malloc((size_t)(batch * T) * sizeof(int32_t), "calib");
    dp_layer_map map;
    dp_layer_map_all(&map, L);
    double t0 = dp_time_s();
    /* the dense forward block by block, every block's input copied out */
    dp_engine e;
    memset(&e, 0, sizeof e);
    dp_engine_plan plan = {.B = batch, .T = T, .local_rank = mpi->local_rank, .stream_weights = stream_weights};
    if (mine > 0) rc = dp_engine_open(&e, dev, m, &plan, err);
    float *nllrow = dp_malloc((size_t)(batch * T) * sizeof(float), "calib");
    for (int64_t a = s0; a < s1 && rc == DP_OK; a += batch) {
        int64_t nb = a + batch <= s1 ? batch : s1 - a;
        if ((rc = dp_engine_embed(&e, ids + a * T, nb, T, err))) break;
        for (int i = 0; i <= L; i++) {
            if (i > 0) dp_engine_blocks(&e, &map, i - 1, i, nb);
            dp_engine_get_hidden(&e, hid + ((int64_t)i * mine + (a - s0)) * NTC, nb);
        }
        sample_nll(&e, ids + a * T, nb, T, targets, nllrow, nll + (a - s0));
        dp_fault_point("calib_batch");
        if (progress && mpi->rank == 0)
            dp_log("calibrate (%s): %lld/%lld samples on rank 0, %.1f s", device, (long long)(a + nb - s0),
                   (long long)mine, dp_time_s() - t0);
    }
    dp_engine_close(&e);
    dp_free(nllrow);
    dp_free(targets);
    rc = all_ok(mpi, rc, err);
    char *tmp = dp_path_join(run_dir, "calib.h5.tmp");
    dp_h5 h;
    if (rc == DP_OK) rc = all_ok(mpi, dp_h5_create(&h, tmp, mpi->comm, err), err);
    if (rc == DP_OK) {
        int64_t sh_ids[2] = {N, T}, sh_src[2] = {N, 2}, sh_h[3] = {N, T, C};
        int r0 = mpi->rank == 0;
        rc = dp_h5_write_rows(&h, "ids", DP_DTYPE_I32, 2, sh_ids, 0, 0, r0 ? N : 0, ids, err);
        if (!rc) rc = dp_h5_write_rows(&h, "source", DP_DTYPE_I64, 2, sh_src, 0, 0, r0 ? N : 0, src, err);
        if (!rc) rc = dp_h5_write_rows(&h, "dense_nll", DP_DTYPE_F64, 1, sh_ids, 0, s0, mine, nll, err);
        for (int i = 0; i <= L && !rc; i++) {
            char name[32];
            snprintf(name, sizeof name, "hidden_%03d", i);
            rc = dp_h5_write_rows(&h, name, DP_DTYPE_F32, 3, sh_h, 0, s0, mine, hid + (int64_t)i * mine * NTC, err);
        }
        struct {
            const char *k;
            const char *v;
        } attrs[] = {{"model_hash", mh}, {"calib_hash", ch}};
        for (size_t i = 0; i < 2 && !rc; i++) rc = dp_h5_set_attr(&h, attrs[i].k, attrs[i].v, err);
        snprintf(buf, sizeof buf, "%lld", (long long)N);
        if (!rc) rc = dp_h5_set_attr(&h, "samples", buf, err);
        snprintf(buf, sizeof buf, "%lld", (long long)T);
        if (!rc) rc = dp_h5_set_attr(&h, "seq_len", buf, err);
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)co->seed);
        if (!rc) rc = dp_h5_set_attr(&h, "seed", buf, err);
        snprintf(buf, sizeof buf, "%d", co->bos_id);
        if (!rc) rc = dp_h5_set_attr(&h, "bos", buf, err);
        if (!rc) rc = dp_h5_set_attr(&h, "version", DP_VERSION_STRING, err);
        if (!rc) rc = dp_h5_set_attr(&h, "device", device, err);
        if (!rc) rc = dp_h5_set_attr(&h, "complete", "1", err);
        int fr = dp_h5_finish(&h, rc ? NULL : err);
        if (!rc) rc = fr;
        rc = all_ok(mpi, rc, err);
        if (rc == DP_OK && mpi->rank == 0 && rename(tmp, path))
            rc = dp_err_set(err, DP_E_IO, "cannot rename %s to %s", tmp, path);
        rc = all_ok(mpi, rc, err);
    }
    if (rc == DP_OK)
        dp_log0("calibrate: %lld samples x %lld tokens, %d block inputs -> %s (%.1f s)", (long long)N, (long long)T,
                L + 1, path, dp_time_s() - t0);
    dp_free(tmp);
    dp_free(hid);
    dp_free(nll);
    dp_free(path);
    return rc;
}

/* ---------------- candidate assignment ---------------- */

void dp_score_assign(int L, int n_ranks, int *owner, int *round) {
    int *count = dp_calloc((size_t)n_ranks, sizeof(int), "score");
    int n_pairs = (L + 1) / 2;
    for (int p = 0; p < n_pairs; p++) {
        int r = p % n_ranks;
        int a = p, b = L - 1 - p;
        owner[a] = r;
        round[a] = count[r]++;
        if (b != a) {
            owner[b] = r;
            round[b] = count[r]++;
        }
    }
    dp_free(count);
}

/* ---------------- the PPL sweep ---------------- */

typedef struct {
    double *nll;   /* (L, N) per-sample NLL sums without block i */
    int32_t *done; /* (L) */
} ppl_state;

static int write_progress(const char *path, const char *tmp, int L, int64_t N, const ppl_state *p, const char *mh,
                          const char *ch, dp_err *err) {
    dp_h5 h;
    int rc = dp_h5_create(&h, tmp, MPI_COMM_SELF, err);
    if (rc) return rc;
    int64_t sh[2] = {L, N};
    rc = dp_h5_write_rows(&h, "ppl_sample_nll", DP_DTYPE_F64, 2, sh, 0, 0, L, p->nll, err);
    if (!rc) rc = dp_h5_write_rows(&h, "ppl_done", DP_DTYPE_I32, 1, sh, 0, 0, L, p->done, err);
    if (!rc) rc = dp_h5_set_attr(&h, "model_hash", mh, err);
    if (!rc) rc = dp_h5_set_attr(&h, "calib_hash", ch, err);
    int fr = dp_h5_finish(&h, rc ? NULL : err);
    if (!rc) rc = fr;
    if (!rc && rename(tmp, path)) rc = dp_err_set(err, DP_E_IO, "cannot rename %s", tmp);
    return rc;
}

/* Every rank reads the progress file (if any, and if it matches). */
static void read_progress(const dp_mpi *mpi, const char *path, int L, int64_t N, ppl_state *p, const char *mh,
                          const char *ch) {
    if (!dp_file_exists(path)) return;
    dp_h5 h;
    dp_err e;
    if (dp_h5_open(&h, path, mpi->comm, 0, &e)) return;
    char *a = NULL, *b = NULL;
    int ok = !dp_h5_get_attr(&h, "model_hash", &a, &e) && !dp_h5_get_attr(&h, "calib_hash", &b, &e) && !strcmp(a, mh) &&
             !strcmp(b, ch);
    int nd;
    int64_t sh[DP_MAX_DIMS];
    ok = ok && !dp_h5_shape(&h, "ppl_sample_nll", &nd, sh, &e) && nd == 2 && sh[0] == L && sh[1] == N;
    ok = dp_mpi_agree(mpi, ok ? 0 : 1, &e) == 0;
    if (ok) {
        ok = !dp_h5_read_rows(&h, "ppl_sample_nll", DP_DTYPE_F64, 0, L, p->nll, &e) &&
             !dp_h5_read_rows(&h, "ppl_done", DP_DTYPE_I32, 0, L, p->done, &e);
    }
    dp_h5_close(&h);
    dp_free(a), dp_free(b);
    if (!ok) {
        memset(p->nll, 0, (size_t)(L * N) * sizeof(double));
        memset(p->done, 0, (size_t)L * sizeof(int32_t));
        dp_log0("score: ignoring %s (it belongs to another model or calibration set)", path);
    }
}

/* Weight streaming: every candidate i this rank owns (not yet done) starts
 * from hidden_i in an engine buffer (GPU memory on cuda); blocks b = 1 ..
 * L-1 are then applied in order, each to every candidate i < b, so each
 * block's weights are uploaded once for the whole pass; finally the head
 * gives each candidate's per-sample NLL into pre (L, N). The per-candidate
 * arithmetic is the same as the candidate-major path (same batches, same
 * kernels). Returns 0 when a signal stopped it (stoppable) before the end:
 * pre is then incomplete and the candidate-major rounds compute them. */
static int stream_pass(dp_engine *e, const dp_llama *m, const int *owner, int rank, const ppl_state *p,
                       float *const *hin, const int32_t *ids, int64_t N, int64_t T, int64_t batch, float *nll,
                       double *pre, int stoppable, int progress) {
    int L = (int)m->cfg.n_layers;
    int64_t NTC = T * m->cfg.hidden_size;
    float **buf = dp_calloc((size_t)L, sizeof(float *), "score");
    for (int i = 0; i < L; i++)
        if (owner[i] == rank && !p->done[i]) {
            buf[i] = dp_engine_buf_alloc(e, N * NTC);
            dp_engine_buf_upload(e, buf[i], hin[i], N * NTC);
        }
    dp_layer_map all;
    dp_layer_map_all(&all, L);
    int32_t *targets = dp_malloc((size_t)(batch * T) * sizeof(int32_t), "score");
    int complete = 1;
    double t0 = dp_time_s();
    for (int b = 1; b < L && complete; b++) {
        dp_fault_point("score_block");
        if (stoppable && dp_stop_requested()) {
            complete = 0;
            break;
        }
        if (progress && b > 1 && rank == 0) {
            double el = dp_time_s() - t0, done = (double)(b - 1) * b / 2, total = (double)(L - 1) * L / 2;
            dp_log("score ppl (block-major): block %d/%d, %.1f s elapsed, ETA %.1f s", b, L - 1, el,
                   el / done * (total - done));
        }
        for (int i = 0; i < b; i++) {
            if (!buf[i]) continue;
            for (int64_t a = 0; a < N; a += batch) {
                int64_t nb = a + batch <= N ? batch : N - a;
                dp_engine_set_hidden_buf(e, buf[i] + a * NTC, nb);
                dp_engine_blocks(e, &all, b, b + 1, nb);
                dp_engine_get_hidden_buf(e, buf[i] + a * NTC, nb);
            }
        }
    }
    for (int i = 0; i < L; i++) {
        if (!buf[i]) continue;
        if (!complete) {
            dp_engine_buf_free(e, buf[i]);
            continue;
        }
        for (int64_t a = 0; a < N; a += batch) {
            int64_t nb = a + batch <= N ? batch : N - a;
            dp_engine_set_hidden_buf(e, buf[i] + a * NTC, nb);
            sample_nll(e, ids + a * T, nb, T, targets, nll, pre + (int64_t)i * N + a);
        }
        dp_engine_buf_free(e, buf[i]);
    }
    dp_free(targets);
    dp_free(buf);
    return complete;
}

static int ppl_sweep(const dp_mpi *mpi, const dp_llama *m, dp_h5 *calib, const int32_t *ids, int64_t N, int64_t T,
                     const dp_score_opts *o, const char *mh, const char *ch, ppl_state *p, int64_t *passes,
                     dp_err *err) {
    int L = (int)m->cfg.n_layers;
    int64_t C = m->cfg.hidden_size, NTC = T * C;
    int *owner = dp_malloc((size_t)L * sizeof(int), "score"), *round = dp_malloc((size_t)L * sizeof(int), "score");
    dp_score_assign(L, mpi->size, owner, round);
    char *prog = dp_path_join(o->run_dir, "scores.progress.h5"),
         *prog_tmp = dp_path_join(o->run_dir, "scores.progress.h5.tmp");
    read_progress(mpi, prog, L, N, p, mh, ch);
    int n_done0 = 0;
    for (int i = 0; i < L; i++) n_done0 += p->done[i] != 0;
    if (n_done0) dp_log0("score: resuming, %d of %d PPL candidates already scored", n_done0, L);
    /* block inputs of this rank's remaining candidates (collective reads, in block order) */
    float **hin = dp_calloc((size_t)L, sizeof(float *), "score");
    int rc = DP_OK;
    for (int i = 0; i < L && rc == DP_OK; i++) {
        int need = owner[i] == mpi->rank && !p->done[i];
        if (need) hin[i] = dp_malloc((size_t)(N * NTC) * sizeof(float), "score inputs");
        char name[32];
        snprintf(name, sizeof name, "hidden_%03d", i);
        rc = dp_h5_read_rows(calib, name, DP_DTYPE_F32, 0, need ? N : 0, hin[i], err);
    }
    rc = all_ok(mpi, rc, err);
    int n_rounds = 0;
    for (int i = 0; i < L; i++)
        if (round[i] + 1 > n_rounds) n_rounds = round[i] + 1;
    double *local = dp_calloc((size_t)(L * N), sizeof(double), "score");
    int32_t *ldone = dp_calloc((size_t)L, sizeof(int32_t), "score");
    int32_t *targets = dp_malloc((size_t)(o->batch * T) * sizeof(int32_t), "score");
    double t_open = dp_time_s();
    dp_engine e;
    memset(&e, 0, sizeof e);
    float *nll = dp_malloc((size_t)(o->batch * T) * sizeof(float), "score");
    double *pre = NULL; /* streaming: this rank's candidates computed in one block-major pass */
    if (rc == DP_OK) {
        dp_engine_plan plan = {
            .B = o->batch, .T = T, .local_rank = mpi->local_rank, .stream_weights = o->stream_weights};
        rc = all_ok(mpi, dp_engine_open(&e, o->device, m, &plan, err), err);
        if (rc == DP_OK && e.streaming) {
            pre = dp_calloc((size_t)(L * N), sizeof(double), "score");
            if (stream_pass(&e, m, owner, mpi->rank, p, hin, ids, N, T, o->batch, nll, pre, o->stop_on_signal,
                            o->progress)) {
                dp_log("score ppl: weights streamed, %lld block loads for this rank's candidates (%.1f s)",
                       (long long)dp_engine_block_loads(&e), dp_time_s() - t_open);
            } else { /* stopped: the rounds below finish a round, keep it and stop */
                dp_free(pre);
                pre = NULL;
            }
        }
    }
    double t0 = dp_time_s();
    int total_todo = L - n_done0, done_now = 0;
    *passes = 0;
    for (int r = 0; r < n_rounds && rc == DP_OK; r++) {
        memset(local, 0, (size_t)(L * N) * sizeof(double));
        memset(ldone, 0, (size_t)L * sizeof(int32_t));
        for (int i = 0; i < L && rc == DP_OK; i++) {
            if (owner[i] != mpi->rank || round[i] != r || p->done[i]) continue;
            dp_layer_map map;
            dp_layer_map_all(&map, L);
            int64_t drop = i;
            dp_layer_map_drop(&map, L, &drop, 1, err);
            for (int64_t a = 0; a < N && rc == DP_OK; a += o->batch) {
                int64_t nb = a + o->batch <= N ? o->batch : N - a;
                if (pre) { /* computed by the streaming pass */
                    memcpy(local + (int64_t)i * N + a, pre + (int64_t)i * N + a, (size_t)nb * sizeof(double));
                    continue;
                }
                /* map position i is dense block i+1: restart there from hidden_i */
                dp_engine_set_hidden(&e, hin[i] + a * NTC, nb);
                dp_engine_blocks(&e, &map, i, map.n, nb);
                sample_nll(&e, ids + a * T, nb, T, targets, nll, local + (int64_t)i * N + a);
            }
            ldone[i] = 1;
            *passes += L - 1 - i;
        }
        rc = all_ok(mpi, rc, err);
        if (rc) break;
        /* combine: only the owner contributes a row, so the sums are exact */
        allreduce_d(mpi, local, L * N);
        DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, ldone, L, MPI_INT32_T, MPI_SUM, mpi->comm));
        int new_here = 0;
        for (int i = 0; i < L; i++)
            if (ldone[i]) {
                memcpy(p->nll + (int64_t)i * N, local + (int64_t)i * N, (size_t)N * sizeof(double));
                p->done[i] = 1;
                new_here++;
            }
        done_now += new_here;
        if (new_here) {
            if (mpi->rank == 0) rc = write_progress(prog, prog_tmp, L, N, p, mh, ch, err);
            rc = all_ok(mpi, rc, err);
            double el = dp_time_s() - t0;
            if (o->progress)
                dp_log0("score ppl: %d/%d candidates, %.1f s elapsed, ETA %.1f s", done_now + n_done0, L, el,
                        el / done_now * (total_todo - done_now));
        }
        if (o->fault_kill_after_round && r + 1 == o->fault_kill_after_round && mpi->rank == 1 % mpi->size &&
            mpi->size > 1) {
            dp_log("score: fault injection: SIGKILL after round %d", r + 1);
            raise(SIGKILL);
        }
        dp_fault_point("score_round");
        if (o->stop_on_signal && r + 1 < n_rounds) { /* the progress file holds every finished candidate */
            int stop = dp_stop_requested();
            DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, &stop, 1, MPI_INT, MPI_MAX, mpi->comm));
            if (stop) {
                dp_log0("score: stop requested by a signal after %d of %d candidates; progress kept",
                        done_now + n_done0, L);
                rc = DP_E_STOPPED;
                break;
            }
        }
    }
    dp_engine_close(&e);
    dp_free(nll);
    dp_free(pre);
    for (int i = 0; i < L; i++) dp_free(hin[i]);
    dp_free(hin);
    dp_free(local);
    dp_free(ldone);
    dp_free(targets);
    dp_free(owner);
    dp_free(round);
    dp_free(prog);
    dp_free(prog_tmp);
    if (rc == DP_OK) {
        int64_t sum = *passes;
        DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, &sum, 1, MPI_INT64_T, MPI_SUM, mpi->comm));
        *passes = sum;
    }
    return rc;
}

/* PPL of every sub-layer candidate: unit u = the attention (u even) or the MLP (u odd) of
 * block b = u / 2 skipped; its NLL is computed from b's cached input through blocks b..L-1
 * with that sub-layer skipped, whole by one rank (dealt by cost, as blocks are), so the
 * scores are the same bit for bit for any rank count. p->nll: (2L, N). No resume file:
 * a stopped run recomputes. */
static int ppl_units(const dp_mpi *mpi, const dp_llama *m, dp_h5 *calib, const int32_t *ids, int64_t N, int64_t T,
                     const dp_score_opts *o, ppl_state *p, int64_t *passes, dp_err *err) {
    int L = (int)m->cfg.n_layers, U = 2 * L;
    int64_t NTC = T * m->cfg.hidden_size;
    int *owner = dp_malloc((size_t)U * sizeof(int), "score"), *round = dp_malloc((size_t)U * sizeof(int), "score");
    dp_score_assign(U, mpi->size, owner, round);
    float **hin = dp_calloc((size_t)L, sizeof(float *), "score");
    int rc = DP_OK;
    for (int b = 0; b < L && rc == DP_OK; b++) { /* collective reads, in block order */
        int need = owner[2 * b] == mpi->rank || owner[2 * b + 1] == mpi->rank;
        if (need) hin[b] = dp_malloc((size_t)(N * NTC) * sizeof(float), "score inputs");
        char name[32];
        snprintf(name, sizeof name, "hidden_%03d", b);
        rc = dp_h5_read_rows(calib, name, DP_DTYPE_F32, 0, need ? N : 0, hin[b], err);
    }
    rc = all_ok(mpi, rc, err);
    dp_engine e;
    memset(&e, 0, sizeof e);
    dp_engine_plan plan = {.B = o->batch, .T = T, .local_rank = mpi->local_rank, .stream_weights = 0};
    if (rc == DP_OK) rc = all_ok(mpi, dp_engine_open(&e, o->device, m, &plan, err), err);
    int32_t *targets = dp_malloc((size_t)(o->batch * T) * sizeof(int32_t), "score");
    float *nll = dp_malloc((size_t)(o->batch * T) * sizeof(float), "score");
    double t0 = dp_time_s();
    *passes = 0;
    for (int u = 0; u < U && rc == DP_OK; u++) {
        if (owner[u] != mpi->rank) continue;
        int b = u / 2;
        dp_layer_map map;
        dp_layer_map_all(&map, L);
        map.skip[b] = u % 2 ? DP_SKIP_MLP : DP_SKIP_ATTN;
        for (int64_t a = 0; a < N; a += o->batch) {
            int64_t nb = a + o->batch <= N ? o->batch : N - a;
            dp_engine_set_hidden(&e, hin[b] + a * NTC, nb);
            dp_engine_blocks(&e, &map, b, L, nb);
            sample_nll(&e, ids + a * T, nb, T, targets, nll, p->nll + (int64_t)u * N + a);
        }
        p->done[u] = 1;
        *passes += L - b;
        if (o->progress && mpi->rank == 0)
            dp_log("score ppl (sub-layers): %s.%d done on rank 0, %.1f s", u % 2 ? "mlp" : "attn", b, dp_time_s() - t0);
    }
    rc = all_ok(mpi, rc, err);
    if (rc == DP_OK) { /* only the owner wrote a row: the sums are exact */
        allreduce_d(mpi, p->nll, (int64_t)U * N);
        DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, p->done, U, MPI_INT32_T, MPI_SUM, mpi->comm));
        int64_t sum = *passes;
        DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, &sum, 1, MPI_INT64_T, MPI_SUM, mpi->comm));
        *passes = sum;
    }
    dp_engine_close(&e);
    dp_free(targets);
    dp_free(nll);
    for (int b = 0; b < L; b++) dp_free(hin[b]);
    dp_free(hin);
    dp_free(owner);
    dp_free(round);
    return rc;
}

/* ---------------- Taylor ----------------
 * One forward+backward of every rank's samples as one batch (recomputing
 * block activations), so each block's weight gradient is complete for this
 * rank when its backward ends: it is summed over ranks, reduced to
 * sum |w * g| and cleared. Only one block's gradient is ever held. */

typedef struct {
    const dp_mpi *mpi;
    const dp_llama *m;
    float *gblock; /* one block's gradients, block 0's layout */
    int64_t n_block;
    int units; /* sublayer: score[2l] attention, score[2l + 1] MLP */
    double *score;
} taylor_ctx;

static void taylor_block_done(int l, void *p) {
    taylor_ctx *t = p;
    allreduce_f(t->mpi, t->gblock, t->n_block);
    if (t->units) {
        t->score[2 * l] = unit_sum(t->m, 2 * l, 2, t->gblock, CRIT_TAYLOR);
        t->score[2 * l + 1] = unit_sum(t->m, 2 * l + 1, 2, t->gblock, CRIT_TAYLOR);
    } else {
        t->score[l] = block_sum(t->m, l, t->gblock, CRIT_TAYLOR);
    }
    memset(t->gblock, 0, (size_t)t->n_block * sizeof(float));
}

int dp_block_grads(const dp_mpi *mpi, dp_engine *e, const int32_t *tokens, int64_t nb, int64_t T, double scale,
                   float *gblock, void (*block_done)(int layer, void *ctx), void *ctx, dp_err *err) {
    int rc = DP_OK;
    int L = nb > 0 ? (int)e->m->cfg.n_layers : 0;
    int32_t *targets = NULL;
    if (nb > 0) { /* ids first: a rank failing inside the backward would leave the others waiting */
        targets = dp_malloc((size_t)(nb * T) * sizeof(int32_t), "block grads");
        dp_llama_next_targets(targets, tokens, nb, T);
        for (int64_t i = 0; i < nb * T && rc == DP_OK; i++)
            if (tokens[i] < 0 || tokens[i] >= e->m->cfg.vocab_size)
                rc = dp_err_set(err, DP_E_RANGE, "token id %d at position %lld is outside the vocabulary", tokens[i],
                                (long long)i);
    }
    rc = all_ok(mpi, rc, err);
    if (rc == DP_OK && nb > 0) {
        dp_layer_map map;
        dp_layer_map_all(&map, L);
        double ce = 0, kd = 0;
        dp_micro x = {.tokens = tokens,
                      .targets = targets,
                      .B = nb,
                      .T = T,
                      .temp = 1.0,
                      .gscale = scale,
                      .backward = 1,
                      .wgrad_host = gblock,
                      .block_done = block_done,
                      .ctx = ctx};
        rc = dp_engine_micro(e, &map, &x, &ce, &kd, err);
        if (rc) dp_fatal("block gradients: %s", err->msg); /* shapes were planned: cannot happen */
    }
    dp_free(targets);
    return rc;
}

static int taylor(const dp_mpi *mpi, const dp_llama *m, const int32_t *ids, int64_t N, int64_t T, int64_t batch,
                  int units, double *score, dp_device dev, dp_err *err) {
    int L = (int)m->cfg.n_layers;
    int64_t n_block = 0; /* the largest block (blocks of a width-pruned model differ) */
    for (int l = 0; l < L; l++)
        if (dp_llama_block_elems(m, l) > n_block) n_block = dp_llama_block_elems(m, l);
    taylor_ctx tc = {.mpi = mpi, .m = m, .n_block = n_block, .units = units, .score = score};
    tc.gblock = dp_calloc((size_t)n_block, sizeof(float), "taylor block grads");
    batch = dp_calib_batch(N, T, batch);
    int64_t s0, s1;
    share(N, batch, mpi->rank, mpi->size, &s0, &s1);
    int64_t nb = s1 - s0;
    double scale = 1.0 / (double)(N * (T - 1)); /* the mean over all tokens */
    /* A share of at most one batch: one forward+backward, block activations
     * recomputed, each block's gradient consumed as soon as it is complete
     * (only one block's gradient is ever held). A larger share: batches of
     * `batch` accumulate every weight's gradient (one model-sized buffer,
     * instead of the whole share's saved block inputs), then the blocks are
     * reduced in the same order. */
    int whole = nb <= batch;
    dp_engine e;
    memset(&e, 0, sizeof e);
    dp_engine_plan plan = {.B = whole ? nb : batch,
                           .T = T,
                           .local_rank = mpi->local_rank,
                           .train = 1,
                           .wgrad = whole,
                           .full = !whole,
                           .recompute = 1};
    int rc = all_ok(mpi, nb > 0 ? dp_engine_open(&e, dev, m, &plan, err) : DP_OK, err);
    if (rc == DP_OK && whole) {
        rc = dp_block_grads(mpi, &e, ids + s0 * T, nb, T, scale, tc.gblock, taylor_block_done, &tc, err);
        if (rc == DP_OK && nb == 0)
            for (int l = L - 1; l >= 0; l--) taylor_block_done(l, &tc); /* ranks without samples join every reduction */
    } else if (rc == DP_OK) {
        dp_layer_map map;
        dp_layer_map_all(&map, L);
        int32_t *targets = dp_malloc((size_t)(batch * T) * sizeof(int32_t), "taylor");
        dp_engine_zero_grad(&e);
        for (int64_t a = s0; a < s1 && rc == DP_OK; a += batch) {
            int64_t k = a + batch <= s1 ? batch : s1 - a;
            double ce = 0, kd = 0;
            dp_llama_next_targets(targets, ids + a * T, k, T);
            dp_micro x = {
                .tokens = ids + a * T, .targets = targets, .B = k, .T = T, .temp = 1.0, .gscale = scale, .backward = 1};
            rc = dp_engine_micro(&e, &map, &x, &ce, &kd, err);
        }
        rc = all_ok(mpi, rc, err);
        if (rc == DP_OK) {
            dp_engine_grad_flush(&e);
            for (int l = L - 1; l >= 0; l--) { /* each block's gradient in its own layout, as the hook gives it */
                const dp_llama_param *p0 = &m->params[1 + l * DP_LLAMA_BLOCK_TENSORS],
                                     *pz = p0 + DP_LLAMA_BLOCK_TENSORS - 1;
                memcpy(tc.gblock, e.grad + p0->offset, (size_t)(pz->offset + pz->n_elems - p0->offset) * sizeof(float));
                taylor_block_done(l, &tc);
            }
        }
        dp_free(targets);
    }
    dp_engine_close(&e);
    dp_free(tc.gblock);
    return rc;
}

/* ---------------- block influence ---------------- */

/* mean over tokens of the cosine of x and y (n_tok rows of C) */
static double mean_cos(const float *x, const float *y, int64_t n_tok, int64_t C) {
    double acc = 0.0;
    for (int64_t t = 0; t < n_tok; t++) {
        const float *a = x + t * C, *b = y + t * C;
        double xy = 0, xx = 0, yy = 0;
        for (int64_t c = 0; c < C; c++) {
            xy += (double)a[c] * b[c];
            xx += (double)a[c] * a[c];
            yy += (double)b[c] * b[c];
        }
        acc += xy / (sqrt(xx) * sqrt(yy) + 1e-30);
    }
    return acc / (double)n_tok;
}

static int block_influence(const dp_mpi *mpi, const dp_llama *m, dp_h5 *calib, int64_t N, int64_t T, int64_t batch,
                           double *bi_sample, dp_err *err) {
    int L = (int)m->cfg.n_layers;
    int64_t C = m->cfg.hidden_size, s0, s1;
    share(N, batch, mpi->rank, mpi->size, &s0, &s1);
    int64_t mine = s1 - s0;
    float *a = dp_malloc((size_t)((mine ? mine : 1) * T * C) * sizeof(float), "bi");
    float *b = dp_malloc((size_t)((mine ? mine : 1) * T * C) * sizeof(float), "bi");
    memset(bi_sample, 0, (size_t)(L * N) * sizeof(double));
    char name[32];
    snprintf(name, sizeof name, "hidden_%03d", 0);
    int rc = dp_h5_read_rows(calib, name, DP_DTYPE_F32, s0, mine, a, err);
    for (int i = 0; i < L && rc == DP_OK; i++) {
        snprintf(name, sizeof name, "hidden_%03d", i + 1);
        if ((rc = dp_h5_read_rows(calib, name, DP_DTYPE_F32, s0, mine, b, err))) break;
        for (int64_t s = 0; s < mine; s++)
            bi_sample[(int64_t)i * N + s0 + s] = 1.0 - mean_cos(a + s * T * C, b + s * T * C, T, C);
        float *tmp = a;
        a = b, b = tmp;
    }
    dp_free(a);
    dp_free(b);
    rc = all_ok(mpi, rc, err);
    if (rc == DP_OK) allreduce_d(mpi, bi_sample, L * N);
    return rc;
}

/* Block influence of sub-layers: the attention of block b maps its input x_b to
 * h_b = x_b + attn(x_b) (the block run with its MLP skipped, from the cached x_b), the MLP
 * maps h_b to x_{b+1} (cached); unit 2b / 2b + 1 scores 1 - mean cos. bi_sample (2L, N). */
static int block_influence_units(const dp_mpi *mpi, const dp_llama *m, dp_h5 *calib, int64_t N, int64_t T,
                                 int64_t batch, dp_device dev, double *bi_sample, dp_err *err) {
    int L = (int)m->cfg.n_layers;
    int64_t C = m->cfg.hidden_size, s0, s1;
    share(N, batch, mpi->rank, mpi->size, &s0, &s1);
    int64_t mine = s1 - s0;
    float *a = dp_malloc((size_t)((mine ? mine : 1) * T * C) * sizeof(float), "bi");
    float *b = dp_malloc((size_t)((mine ? mine : 1) * T * C) * sizeof(float), "bi");
    float *h = dp_malloc((size_t)((mine ? mine : 1) * T * C) * sizeof(float), "bi");
    memset(bi_sample, 0, (size_t)(2 * L * N) * sizeof(double));
    dp_engine e;
    memset(&e, 0, sizeof e);
    dp_engine_plan plan = {.B = batch, .T = T, .local_rank = mpi->local_rank};
    int rc = all_ok(mpi, mine > 0 ? dp_engine_open(&e, dev, m, &plan, err) : DP_OK, err);
    char name[32];
    snprintf(name, sizeof name, "hidden_%03d", 0);
    if (rc == DP_OK) rc = dp_h5_read_rows(calib, name, DP_DTYPE_F32, s0, mine, a, err);
    for (int l = 0; l < L && rc == DP_OK; l++) {
        snprintf(name, sizeof name, "hidden_%03d", l + 1);
        if ((rc = dp_h5_read_rows(calib, name, DP_DTYPE_F32, s0, mine, b, err))) break;
        dp_layer_map map;
        dp_layer_map_all(&map, L);
        map.skip[l] = DP_SKIP_MLP;
        for (int64_t q = 0; q < mine; q += batch) { /* h = x + attn(x): block l without its MLP */
            int64_t nb = q + batch <= mine ? batch : mine - q;
            dp_engine_set_hidden(&e, a + q * T * C, nb);
            dp_engine_blocks(&e, &map, l, l + 1, nb);
            dp_engine_get_hidden(&e, h + q * T * C, nb);
        }
        for (int64_t q = 0; q < mine; q++) {
            bi_sample[(int64_t)(2 * l) * N + s0 + q] = 1.0 - mean_cos(a + q * T * C, h + q * T * C, T, C);
            bi_sample[(int64_t)(2 * l + 1) * N + s0 + q] = 1.0 - mean_cos(h + q * T * C, b + q * T * C, T, C);
        }
        float *tmp = a;
        a = b, b = tmp;
    }
    dp_engine_close(&e);
    dp_free(a);
    dp_free(b);
    dp_free(h);
    rc = all_ok(mpi, rc, err);
    if (rc == DP_OK) allreduce_d(mpi, bi_sample, 2 * L * N);
    return rc;
}

/* ---------------- ranking, bootstrap, agreement ---------------- */

/* order: blocks by ascending score, protected ones left out; returns the count */
static int rank_blocks(const double *score, int L, int pf, int pl, int *order) {
    int n = 0;
    for (int i = 0; i < L; i++)
        if (i >= pf && i < L - pl) order[n++] = i;
    for (int a = 1; a < n; a++) { /* insertion sort, stable: ties keep block order */
        int v = order[a], j = a - 1;
        while (j >= 0 && score[order[j]] > score[v]) {
            order[j + 1] = order[j];
            j--;
        }
        order[j + 1] = v;
    }
    return n;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Resamples calibration samples with replacement: per-block 95% interval of
 * the score and the probability of being among the k removed. per_sample
 * (L, N); ppl: exp(mean/(T-1)); bi: mean. */
static void bootstrap(const double *per_sample, int L, int64_t N, int64_t T, int is_ppl, int64_t reps, uint64_t seed,
                      int pf, int pl, int k, double *lo, double *hi, double *p_removed) {
    double *rep = dp_malloc((size_t)(reps * L) * sizeof(double), "bootstrap");
    double *sc = dp_malloc((size_t)L * sizeof(double), "bootstrap");
    int64_t *idx = dp_malloc((size_t)N * sizeof(int64_t), "bootstrap");
    int *order = dp_malloc((size_t)L * sizeof(int), "bootstrap");
    memset(p_removed, 0, (size_t)L * sizeof(double));
    uint64_t st = seed;
    for (int64_t r = 0; r < reps; r++) {
        for (int64_t s = 0; s < N; s++) idx[s] = (int64_t)(dp_splitmix64(&st) % (uint64_t)N);
        for (int i = 0; i < L; i++) {
            double acc = 0.0;
            for (int64_t s = 0; s < N; s++) acc += per_sample[(int64_t)i * N + idx[s]];
            sc[i] = is_ppl ? exp(acc / (double)(N * (T - 1))) : acc / (double)N;
            rep[(int64_t)i * reps + r] = sc[i];
        }
        int n = rank_blocks(sc, L, pf, pl, order);
        for (int j = 0; j < k && j < n; j++) p_removed[order[j]] += 1.0; /* a count until the end */
    }
    for (int i = 0; i < L; i++) {
        double *v = rep + (int64_t)i * reps;
        p_removed[i] /= (double)reps;
        qsort(v, (size_t)reps, sizeof(double), cmp_double);
        lo[i] = v[(int64_t)floor(0.025 * (double)(reps - 1))];
        hi[i] = v[(int64_t)ceil(0.975 * (double)(reps - 1))];
    }
    dp_free(rep), dp_free(sc), dp_free(idx), dp_free(order);
}

double dp_kendall_tau_b(const double *x, const double *y, int n) {
    double con = 0, dis = 0, tx = 0, ty = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double a = x[i] - x[j], b = y[i] - y[j];
            if (a == 0 && b == 0) continue;
            if (a == 0)
                tx++;
            else if (b == 0)
                ty++;
            else if ((a > 0) == (b > 0))
                con++;
            else
                dis++;
        }
    double d = sqrt((con + dis + tx) * (con + dis + ty));
    return d > 0 ? (con - dis) / d : 0.0;
}

/* ---------------- dp_score ---------------- */

typedef struct {
    char name[32];
    int base, pf, pl;
} crit_entry;

static void json_array_d(dp_buf *b, const double *v, int n) {
    char t[40];
    dp_buf_puts(b, "[");
    for (int i = 0; i < n; i++) {
        snprintf(t, sizeof t, "%s%.17g", i ? ", " : "", v[i]);
        dp_buf_puts(b, t);
    }
    dp_buf_puts(b, "]");
}
static void json_array_i(dp_buf *b, const int *v, int n) {
    char t[24];
    dp_buf_puts(b, "[");
    for (int i = 0; i < n; i++) {
        snprintf(t, sizeof t, "%s%d", i ? ", " : "", v[i]);
        dp_buf_puts(b, t);
    }
    dp_buf_puts(b, "]");
}

int dp_score(const dp_mpi *mpi, const dp_llama *m, const char *const *crit, int n_crit, const dp_score_opts *o,
             dp_err *err) {
    int L = (int)m->cfg.n_layers;
    /* units: blocks, or (sublayer) the attention and the MLP of every block, unit 2l and 2l + 1;
     * protection counts blocks, so a protected block protects both of its units */
    int per = o->units ? 2 : 1, U = per * L;
    crit_entry ce[16];
    int want[N_BASE] = {0};
    if (n_crit < 1 || n_crit > 16) return dp_err_set(err, DP_E_USAGE, "give 1 to 16 criteria");
    for (int c = 0; c < n_crit; c++) {
        const char *nm = crit[c];
        size_t len = strlen(nm);
        int plus = len > 1 && nm[len - 1] == '+';
        ce[c].base = -1;
        for (int b = 0; b < N_BASE; b++)
            if (strlen(k_base_names[b]) == len - (size_t)plus && !strncmp(nm, k_base_names[b], len - (size_t)plus))
                ce[c].base = b;
        if (ce[c].base < 0)
            return dp_err_set(err, DP_E_USAGE,
                              "unknown criterion '%s' (expected ppl, taylor, magnitude, magnitude-l2, bi, or the "
                              "baselines reverse and random, with an optional + for the paper's protection of the "
                              "first 4 and last 2 blocks)",
                              nm);
        snprintf(ce[c].name, sizeof ce[c].name, "%s", nm);
        ce[c].pf = plus ? 4 : o->protect_first;
        ce[c].pl = plus ? 2 : o->protect_last;
        if (ce[c].pf < 0 || ce[c].pl < 0 || ce[c].pf + ce[c].pl >= L)
            return dp_err_set(err, DP_E_USAGE,
                              "%s: protecting the first %d and last %d of %d blocks leaves no candidate to remove", nm,
                              ce[c].pf, ce[c].pl, L);
        int k = (int)lround(o->ratio * L);
        if (k > L - ce[c].pf - ce[c].pl)
            return dp_err_set(err, DP_E_USAGE,
                              "%s: removing %d of %d blocks (ratio %g) is impossible with %d protected", nm, k, L,
                              o->ratio, ce[c].pf + ce[c].pl);
        want[ce[c].base] = 1;
    }
    if (o->units && want[CRIT_PPL] && o->stream_weights == 1)
        return dp_err_set(err, DP_E_UNSUPPORTED, "--units sublayer does not stream weights (score.stream_weights on)");
    if (o->ratio < 0 || o->ratio >= 1) return dp_err_set(err, DP_E_USAGE, "--ratio must be in [0, 1)");
    if (o->batch < 1) return dp_err_set(err, DP_E_USAGE, "--batch must be at least 1");

    dp_calib_file calib;
    int rc = dp_calib_open(mpi, o->run_dir, o->model_hash, 1, &calib, err);
    if (rc) {
        if (rc == DP_E_IO) dp_err_prefix(err, "run 'calibrate' first");
        return rc;
    }
    char mh[17];
    hex64(o->model_hash, mh);
    int64_t N = calib.N, T = calib.T;
    const int32_t *ids = calib.ids;
    const double *dense = calib.dense_nll;
    const char *fch = calib.calib_hash, *sseed = calib.seed;
    double *score[N_BASE] = {0};
    ppl_state p = {0};
    double *bi_sample = NULL;
    int64_t passes = 0;
    double t0 = dp_time_s();
    for (int b = 0; b < N_BASE && rc == DP_OK; b++) {
        if (!want[b]) continue;
        score[b] = dp_calloc((size_t)U, sizeof(double), "score");
        if (b == CRIT_PPL) {
            p.nll = dp_calloc((size_t)(U * N), sizeof(double), "score");
            p.done = dp_calloc((size_t)U, sizeof(int32_t), "score");
            rc = o->units ? ppl_units(mpi, m, &calib.h, ids, N, T, o, &p, &passes, err)
                          : ppl_sweep(mpi, m, &calib.h, ids, N, T, o, mh, fch, &p, &passes, err);
            for (int i = 0; i < U && !rc; i++) {
                double acc = 0;
                for (int64_t s = 0; s < N; s++) acc += p.nll[(int64_t)i * N + s];
                score[b][i] = exp(acc / (double)(N * (T - 1)));
            }
        } else if (b == CRIT_TAYLOR) {
            rc = taylor(mpi, m, ids, N, T, o->batch, o->units, score[b], o->device, err);
        } else if (b == CRIT_MAG1 || b == CRIT_MAG2) {
            for (int u = 0; u < U; u++) score[b][u] = unit_sum(m, u, per, NULL, b);
        } else if (b == CRIT_REVERSE) {
            for (int u = 0; u < U; u++) score[b][u] = U - 1 - u; /* the last unit is removed first */
        } else if (b == CRIT_RANDOM) {
            uint64_t st = 0x5EED0000ULL ^ (uint64_t)atoll(sseed);
            for (int u = 0; u < U; u++) score[b][u] = (double)(dp_splitmix64(&st) >> 11) * 0x1.0p-53;
        } else if (b == CRIT_BI) {
            bi_sample = dp_calloc((size_t)(U * N), sizeof(double), "score");
            rc = o->units ? block_influence_units(mpi, m, &calib.h, N, T, o->batch, o->device, bi_sample, err)
                          : block_influence(mpi, m, &calib.h, N, T, o->batch, bi_sample, err);
            for (int i = 0; i < U && !rc; i++) {
                double acc = 0;
                for (int64_t s = 0; s < N; s++) acc += bi_sample[(int64_t)i * N + s];
                score[b][i] = acc / (double)N;
            }
        }
        if (rc == DP_OK && b == CRIT_PPL)
            dp_log0("score: ppl done: %lld block passes in this run (a full sweep is L(L-1)/2 = %d), %.1f s",
                    (long long)passes, L * (L - 1) / 2, dp_time_s() - t0);
        else if (rc == DP_OK)
            dp_log0("score: %s done (%.1f s)", k_base_names[b], dp_time_s() - t0);
    }
    /* results on rank 0: scores.h5 and scores.json, each written atomically */
    if (rc == DP_OK && mpi->rank == 0) {
        double dsum = 0;
        for (int64_t s = 0; s < N; s++) dsum += dense[s];
        double dense_ppl = exp(dsum / (double)(N * (T - 1)));
        int k = (int)lround(o->ratio * U);
        char *h5 = dp_path_join(o->run_dir, "scores.h5"), *h5tmp = dp_path_join(o->run_dir, "scores.h5.tmp");
        dp_h5 out;
        rc = dp_h5_create(&out, h5tmp, MPI_COMM_SELF, err);
        dp_buf js = {0};
        char t[1024];
        dp_buf_puts(&js, "{\"criteria\": {");
        int64_t shL[1] = {U}, shLN[2] = {U, N};
        int *order = dp_malloc((size_t)U * sizeof(int), "score");
        for (int c = 0; c < n_crit && rc == DP_OK; c++) {
            int b = ce[c].base, n = rank_blocks(score[b], U, per * ce[c].pf, per * ce[c].pl, order);
            char nm[128];
            snprintf(nm, sizeof nm, "%.31s_scores", ce[c].name);
            rc = dp_h5_write_rows(&out, nm, DP_DTYPE_F64, 1, shL, 0, 0, U, score[b], err);
            int32_t *ord32 = dp_malloc((size_t)(n ? n : 1) * sizeof(int32_t), "score");
            for (int j = 0; j < n; j++) ord32[j] = order[j];
            int64_t shn[1] = {n};
            snprintf(nm, sizeof nm, "%.31s_order", ce[c].name);
            if (!rc) rc = dp_h5_write_rows(&out, nm, DP_DTYPE_I32, 1, shn, 0, 0, n, ord32, err);
            dp_free(ord32);
            snprintf(t, sizeof t, "%s\"%s\": {\"scores\": ", c ? ", " : "", ce[c].name);
            dp_buf_puts(&js, t);
            json_array_d(&js, score[b], U);
            dp_buf_puts(&js, ", \"order\": ");
            json_array_i(&js, order, n);
            int prot[2 * DP_MAX_LAYERS], np = 0;
            for (int i = 0; i < U; i++)
                if (i / per < ce[c].pf || i / per >= L - ce[c].pl) prot[np++] = i;
            dp_buf_puts(&js, ", \"protected\": ");
            json_array_i(&js, prot, np);
            const double *per_s = b == CRIT_PPL ? p.nll : b == CRIT_BI ? bi_sample : NULL;
            if (per_s && o->bootstrap > 0) {
                double *lo = dp_malloc((size_t)U * 3 * sizeof(double), "score"), *hi = lo + U, *pr = lo + 2 * U;
                bootstrap(per_s, U, N, T, b == CRIT_PPL, o->bootstrap, 0xB007 + (uint64_t)atoll(sseed), per * ce[c].pf,
                          per * ce[c].pl, k, lo, hi, pr);
                snprintf(t, sizeof t,
                         ", \"bootstrap\": {\"replicates\": %lld, \"remove\": %d, \"lo95\": ", (long long)o->bootstrap,
                         k);
                dp_buf_puts(&js, t);
                json_array_d(&js, lo, U);
                dp_buf_puts(&js, ", \"hi95\": ");
                json_array_d(&js, hi, U);
                dp_buf_puts(&js, ", \"p_removed\": ");
                json_array_d(&js, pr, U);
                dp_buf_puts(&js, "}");
                int64_t sh3[2] = {3, U};
                snprintf(nm, sizeof nm, "%.31s_bootstrap", ce[c].name);
                if (!rc) rc = dp_h5_write_rows(&out, nm, DP_DTYPE_F64, 2, sh3, 0, 0, 3, lo, err);
                dp_free(lo);
            }
            dp_buf_puts(&js, "}");
        }
        dp_free(order);
        if (!rc && p.nll) rc = dp_h5_write_rows(&out, "ppl_sample_nll", DP_DTYPE_F64, 2, shLN, 0, 0, U, p.nll, err);
        if (!rc && bi_sample) rc = dp_h5_write_rows(&out, "bi_sample", DP_DTYPE_F64, 2, shLN, 0, 0, U, bi_sample, err);
        int64_t shN[1] = {N};
        if (!rc) rc = dp_h5_write_rows(&out, "dense_sample_nll", DP_DTYPE_F64, 1, shN, 0, 0, N, dense, err);
        dp_buf_puts(&js, "}");
        /* agreement between criteria: Kendall's tau-b of the scores, and the overlap of the k blocks
         * each would remove first (k = round(ratio L)) */
        int first = 1;
        int *oa = dp_malloc((size_t)U * sizeof(int), "score"), *ob = dp_malloc((size_t)U * sizeof(int), "score");
        for (int a = 0; a < n_crit && k > 0; a++)
            for (int b2 = a + 1; b2 < n_crit; b2++) {
                if (!strcmp(ce[a].name, ce[b2].name)) continue;
                int na = rank_blocks(score[ce[a].base], U, per * ce[a].pf, per * ce[a].pl, oa),
                    nb = rank_blocks(score[ce[b2].base], U, per * ce[b2].pf, per * ce[b2].pl, ob), same = 0;
                for (int i = 0; i < k && i < na; i++)
                    for (int j = 0; j < k && j < nb; j++) same += oa[i] == ob[j];
                snprintf(t, sizeof t, "%s\"%s/%s\": %.6f", first ? ", \"top_k_overlap\": {" : ", ", ce[a].name,
                         ce[b2].name, (double)same / k);
                dp_buf_puts(&js, t);
                first = 0;
            }
        if (!first) dp_buf_puts(&js, "}");
        if (k > 0) {
            snprintf(t, sizeof t, ", \"top_k\": %d", k);
            dp_buf_puts(&js, t);
        }
        dp_free(oa);
        dp_free(ob);
        first = 1;
        for (int a = 0; a < n_crit; a++)
            for (int b2 = a + 1; b2 < n_crit; b2++) {
                if (ce[a].base == ce[b2].base) continue;
                snprintf(t, sizeof t, "%s\"%s/%s\": %.6f", first ? ", \"kendall_tau\": {" : ", ", ce[a].name,
                         ce[b2].name, dp_kendall_tau_b(score[ce[a].base], score[ce[b2].base], U));
                dp_buf_puts(&js, t);
                first = 0;
            }
        if (!first) dp_buf_puts(&js, "}");
        snprintf(t, sizeof t,
                 ", \"dense_ppl\": %.17g, \"calib\": {\"samples\": %lld, \"seq_len\": %lld, \"seed\": %s}, "
                 "\"layers\": %d, \"model_hash\": \"%s\"",
                 dense_ppl, (long long)N, (long long)T, sseed, L, mh);
        dp_buf_puts(&js, t);
        if (o->units) { /* what each score's index is */
            dp_buf_puts(&js, ", \"unit\": \"sublayer\", \"units\": [");
            for (int u = 0; u < U; u++) {
                snprintf(t, sizeof t, "%s\"%s.%d\"", u ? ", " : "", u % 2 ? "mlp" : "attn", u / 2);
                dp_buf_puts(&js, t);
            }
            dp_buf_puts(&js, "]");
        }
        if (want[CRIT_PPL] && !o->units) { /* the sweep's block passes vs rebuilding the model per candidate */
            snprintf(t, sizeof t, ", \"ppl_block_passes\": {\"sweep\": %d, \"full_forward_per_candidate\": %d}",
                     L * (L - 1) / 2, L * (L - 1));
            dp_buf_puts(&js, t);
        }
        dp_buf_puts(&js, "}\n");
        char ranks[16];
        snprintf(ranks, sizeof ranks, "%d", mpi->size);
        if (!rc) rc = dp_h5_set_attr(&out, "model_hash", mh, err);
        if (!rc) rc = dp_h5_set_attr(&out, "calib_hash", fch, err);
        if (!rc) rc = dp_h5_set_attr(&out, "ranks", ranks, err);
        if (!rc) rc = dp_h5_set_attr(&out, "version", DP_VERSION_STRING, err);
        if (!rc) rc = dp_h5_set_attr(&out, "results", js.p, err);
        int fr = dp_h5_finish(&out, rc ? NULL : err);
        if (!rc) rc = fr;
        if (!rc && rename(h5tmp, h5)) rc = dp_err_set(err, DP_E_IO, "cannot rename %s", h5tmp);
        char *jp = dp_path_join(o->run_dir, "scores.json");
        if (!rc) rc = dp_write_file_atomic(jp, js.p, js.n, err);
        if (!rc) {
            char *prog = dp_path_join(o->run_dir, "scores.progress.h5");
            remove(prog); /* the final file supersedes it */
            dp_free(prog);
            dp_log("score: wrote %s and %s", h5, jp);
        }
        dp_free(jp);
        dp_free(js.p);
        dp_free(h5);
        dp_free(h5tmp);
    }
    rc = all_ok(mpi, rc, err);
    for (int b = 0; b < N_BASE; b++) dp_free(score[b]);
    dp_free(p.nll), dp_free(p.done), dp_free(bi_sample);
    dp_calib_close(&calib);
    return rc;
}
