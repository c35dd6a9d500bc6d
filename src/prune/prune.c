/* Pruning schedules (see prune.h): the PPL of a model under a layer map
 * on the calibration set, and iterative greedy removal from cached block
 * inputs, optionally healing between removals. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/prune.h"
#include "depthprune/store.h"
#include "depthprune/train.h"

typedef struct calib_set {
    int64_t N, T;
    const int32_t *ids; /* (N, T), the file's */
    int32_t *targets;   /* (N, T) */
    double dense_ppl;
} calib_set;

static void calib_free(calib_set *c) {
    dp_free(c->targets);
    memset(c, 0, sizeof *c);
}

/* Opens RUNDIR/calib.h5 (collective, checked against the model) and the next-token targets of its ids. */
static int calib_open(const dp_mpi *mpi, const char *run_dir, uint64_t model_hash, dp_calib_file *f, calib_set *c,
                      dp_err *err) {
    memset(c, 0, sizeof *c);
    int rc = dp_calib_open(mpi, run_dir, model_hash, 1, f, err);
    if (rc) {
        if (rc == DP_E_IO) dp_err_prefix(err, "no calibration in %s (run `depthprune score` there first)", run_dir);
        return rc;
    }
    c->N = f->N;
    c->T = f->T;
    c->ids = f->ids;
    c->dense_ppl = f->dense_ppl;
    c->targets = dp_malloc((size_t)(c->N * c->T) * sizeof(int32_t), "calib");
    dp_llama_next_targets(c->targets, c->ids, c->N, c->T);
    return DP_OK;
}

/* Per-sample NLL sums of positions 1..T-1 of samples [a, a+nb) after
 * running kept positions [from, sub->n) of sub from rows (nb inputs of
 * position from; NULL: the engine's residual stream, just embedded). */
static void run_from(dp_engine *e, const dp_layer_map *sub, int from, const float *rows, int64_t a, int64_t nb,
                     const calib_set *c, float *nll, double *out) {
    if (rows) dp_engine_set_hidden(e, rows, nb);
    dp_engine_blocks(e, sub, from, sub->n, nb);
    dp_engine_head_nll(e, c->targets + a * c->T, nll, nb);
    for (int64_t i = 0; i < nb; i++) {
        double acc = 0.0;
        for (int64_t t = 0; t + 1 < c->T; t++) acc += (double)nll[i * c->T + t];
        out[i] = acc;
    }
}

static int open_engine(const dp_mpi *mpi, dp_device dev, const dp_llama *m, int64_t batch, const calib_set *c,
                       int n_blocks, dp_engine *e, float **nll, dp_err *err) {
    dp_engine_plan plan = {.B = batch, .T = c->T, .n_blocks = n_blocks, .local_rank = mpi->local_rank};
    int rc = dp_mpi_agree(mpi, dp_engine_open(e, dev, m, &plan, err), err);
    *nll = rc ? NULL : dp_malloc((size_t)(batch * c->T) * sizeof(float), "prune");
    return rc;
}

int dp_prune_map_ppl(const dp_mpi *mpi, dp_device dev, const dp_llama *m, const dp_layer_map *map, const char *run_dir,
                     uint64_t model_hash, int64_t batch, double *ppl, dp_err *err) {
    dp_calib_file f;
    calib_set c;
    int rc = calib_open(mpi, run_dir, model_hash, &f, &c, err);
    if (rc) return rc;
    dp_engine e;
    float *nll = NULL;
    rc = open_engine(mpi, dev, m, batch, &c, map->n, &e, &nll, err);
    double *per = dp_calloc((size_t)c.N, sizeof(double), "ppl");
    /* fixed batches dealt round-robin: per-sample results do not depend on the rank count */
    for (int64_t a = 0, k = 0; a < c.N && !rc; a += batch, k++) {
        if (k % mpi->size != mpi->rank) continue;
        int64_t nb = a + batch <= c.N ? batch : c.N - a;
        if ((rc = dp_engine_embed(&e, c.ids + a * c.T, nb, c.T, err))) break;
        run_from(&e, map, 0, NULL, a, nb, &c, nll, per + a);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    if (!rc) {
        DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, per, (int)c.N, MPI_DOUBLE, MPI_SUM, mpi->comm));
        double s = 0;
        for (int64_t i = 0; i < c.N; i++) s += per[i];
        *ppl = exp(s / (double)(c.N * (c.T - 1)));
    }
    dp_engine_close(&e);
    dp_free(nll);
    dp_free(per);
    calib_free(&c);
    dp_calib_close(&f);
    return rc;
}

/* cache[j] (N, T, C): the input of kept position j, j = 0..map->n. Recomputes
 * positions from+1..n from cache[from] (from = 0 with embed: from the ids). */
static int refresh(dp_engine *e, const dp_layer_map *map, const calib_set *c, int from, int embed, float **cache,
                   int64_t batch, dp_err *err) {
    int64_t NTC = c->T * e->m->cfg.hidden_size;
    dp_layer_map sub = *map; /* the skips too */
    sub.n = map->n - from;
    memmove(sub.layer, map->layer + from, (size_t)sub.n * sizeof(int));
    int rc = DP_OK;
    for (int64_t a = 0; a < c->N && !rc; a += batch) {
        int64_t nb = a + batch <= c->N ? batch : c->N - a;
        if (embed) {
            if ((rc = dp_engine_embed(e, c->ids + a * c->T, nb, c->T, err))) break;
            dp_engine_get_hidden(e, cache[0] + a * NTC, nb);
        } else {
            dp_engine_set_hidden(e, cache[from] + a * NTC, nb);
        }
        for (int j = 1; j <= sub.n; j++) {
            dp_engine_blocks(e, &sub, j - 1, j, nb);
            dp_engine_get_hidden(e, cache[from + j] + a * NTC, nb);
        }
    }
    return rc;
}

int dp_prune_iterative(const dp_mpi *mpi, dp_llama *m, const dp_iter_opts *o, int *removed, double *ppl_after,
                       double *dense_ppl, dp_err *err) {
    int L = (int)m->cfg.n_layers, per = o->units ? 2 : 1;
    if (o->remove < 1 || o->remove > per * (L - o->protect_first - o->protect_last) || o->remove >= per * L)
        return dp_err_set(err, DP_E_USAGE, "removing %d of %d %s with %d blocks protected is impossible", o->remove,
                          per * L, o->units ? "sub-layers" : "blocks", o->protect_first + o->protect_last);
    if (o->batch < 1) return dp_err_set(err, DP_E_USAGE, "batch must be at least 1");
    dp_calib_file f;
    calib_set c;
    int rc = calib_open(mpi, o->run_dir, o->model_hash, &f, &c, err);
    if (rc) return rc;
    *dense_ppl = c.dense_ppl;
    int64_t NTC = c.T * m->cfg.hidden_size;
    /* the dense model's cached block inputs */
    float **cache = dp_calloc((size_t)(L + 1), sizeof(float *), "prune cache");
    for (int j = 0; j <= L && !rc; j++) {
        cache[j] = dp_malloc((size_t)(c.N * NTC) * sizeof(float), "prune cache");
        char name[32];
        snprintf(name, sizeof name, "hidden_%03d", j);
        rc = dp_h5_read_rows(&f.h, name, DP_DTYPE_F32, 0, c.N, cache[j], err);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    dp_layer_map map;
    dp_layer_map_all(&map, L);
    double *tot = dp_malloc((size_t)(per * L) * sizeof(double), "prune");
    double *per_s = dp_malloc((size_t)c.N * sizeof(double), "prune");
    int *owner = dp_malloc((size_t)(per * L) * sizeof(int), "prune"),
        *round = dp_malloc((size_t)(per * L) * sizeof(int), "prune");
    dp_engine e;
    memset(&e, 0, sizeof e);
    float *nll = NULL;
    if (!rc) rc = open_engine(mpi, o->device, m, o->batch, &c, L, &e, &nll, err);
    double t0 = dp_time_s();
    for (int step = 0; step < o->remove && !rc; step++) {
        /* candidates: the kept blocks (position p), or their sub-layers not yet removed (2p, 2p + 1) */
        int n = map.n, nc = per * n;
        dp_score_assign(nc, mpi->size, owner, round);
        for (int q = 0; q < nc; q++) tot[q] = 0.0;
        for (int q = 0; q < nc && !rc; q++) {
            int p = q / per, l = map.layer[p], what = q % 2 ? DP_SKIP_MLP : DP_SKIP_ATTN;
            if (l < o->protect_first || l >= L - o->protect_last || owner[q] != mpi->rank) continue;
            if (o->units && (map.skip[l] & what)) continue; /* already gone */
            dp_layer_map sub = map;
            if (o->units) { /* position p runs without that sub-layer */
                sub.skip[l] |= (unsigned char)what;
            } else { /* without position p: position p now holds what was p+1 */
                memmove(sub.layer + p, sub.layer + p + 1, (size_t)(n - 1 - p) * sizeof(int));
                sub.n = n - 1;
            }
            for (int64_t a = 0; a < c.N && !rc; a += o->batch) {
                int64_t nb = a + o->batch <= c.N ? o->batch : c.N - a;
                run_from(&e, &sub, p, cache[p] + a * NTC, a, nb, &c, nll, per_s + a);
            }
            double s = 0;
            for (int64_t i = 0; i < c.N; i++) s += per_s[i];
            tot[q] = s;
        }
        rc = dp_mpi_agree(mpi, rc, err);
        if (rc) break;
        /* only the owner contributes a candidate's total, so the sums are exact */
        DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, tot, nc, MPI_DOUBLE, MPI_SUM, mpi->comm));
        int best = -1;
        for (int q = 0; q < nc; q++) {
            int l = map.layer[q / per];
            if (l < o->protect_first || l >= L - o->protect_last) continue;
            if (o->units && (map.skip[l] & (q % 2 ? DP_SKIP_MLP : DP_SKIP_ATTN))) continue;
            if (best < 0 || tot[q] < tot[best]) best = q; /* ties: the lower block (its attention first) */
        }
        int bl = map.layer[best / per];
        removed[step] = o->units ? 2 * bl + best % 2 : bl;
        ppl_after[step] = exp(tot[best] / (double)(c.N * (c.T - 1)));
        if (o->units) map.skip[bl] |= (unsigned char)(best % 2 ? DP_SKIP_MLP : DP_SKIP_ATTN);
        best /= per; /* the position whose output changed */
        if (!o->units || map.skip[bl] == (DP_SKIP_ATTN | DP_SKIP_MLP)) {
            /* drop the block; inputs of the positions after it are recomputed from its input */
            memmove(map.layer + best, map.layer + best + 1, (size_t)(n - 1 - best) * sizeof(int));
            map.n = n - 1;
            float *freed = cache[best + 1];
            memmove(cache + best + 1, cache + best + 2, (size_t)(n - 1 - best) * sizeof(float *));
            cache[n] = freed;
        }
        if (o->heal_steps > 0 && step + 1 < o->remove) {
            /* heal the shortened model, then every cached input is stale */
            dp_train_opts to = *o->heal_opts;
            char dir[4096];
            snprintf(dir, sizeof dir, "%s/heal-%02d", o->run_dir, step + 1);
            if (mpi->rank == 0) rc = dp_mkdir_p(dir, err);
            rc = dp_mpi_agree(mpi, rc, err);
            to.run_dir = dir;
            to.max_steps = o->heal_steps;
            to.model_hash = dp_llama_hash(m);
            dp_lora lora;
            dp_train_result res;
            if (!rc)
                rc = dp_train(mpi, m, &map, NULL, o->heal_data, o->heal_idx, o->heal_n, NULL, 0, &to, &lora, &res, err);
            if (!rc && to.method == DP_TRAIN_LORA) dp_lora_merge(m, &lora);
            if (lora.mem) dp_lora_free(&lora);
            if (!rc) dp_engine_params_changed(&e); /* the healed weights */
            if (!rc) rc = refresh(&e, &map, &c, 0, 1, cache, o->batch, err);
        } else if (!rc && best < map.n) {
            rc = refresh(&e, &map, &c, best, 0, cache, o->batch, err);
        }
        rc = dp_mpi_agree(mpi, rc, err);
        if (!rc && o->progress && o->units)
            dp_log0("prune: step %d/%d removed %s.%d, PPL %.4f (%.1f s)", step + 1, o->remove,
                    removed[step] % 2 ? "mlp" : "attn", removed[step] / 2, ppl_after[step], dp_time_s() - t0);
        else if (!rc && o->progress)
            dp_log0("prune: step %d/%d removed block %d, PPL %.4f (%.1f s)", step + 1, o->remove, removed[step],
                    ppl_after[step], dp_time_s() - t0);
    }
    dp_engine_close(&e);
    dp_free(nll);
    for (int j = 0; j <= L; j++) dp_free(cache[j]);
    dp_free(cache);
    dp_free(tot);
    dp_free(per_s);
    dp_free(owner);
    dp_free(round);
    calib_free(&c);
    dp_calib_close(&f);
    return rc;
}
