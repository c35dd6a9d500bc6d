/* The teacher cache (train.h): built once by the dense teacher's forward on
 * the training data (any device), read row by row by the trainer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/engine.h"
#include "internal.h"

int dp_tcache_open(tcache *c, const char *path, const dp_train_data *d, double temp, dp_err *err) {
    memset(c, 0, sizeof *c);
    int rc = dp_h5_open(&c->h, path, MPI_COMM_SELF, 0, err);
    if (rc) return rc;
    c->open = 1;
    char *a = NULL;
    char want[64];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)d->hash);
    rc = dp_h5_get_attr(&c->h, "data_hash", &a, err);
    if (!rc && strcmp(a, want))
        rc = dp_err_set(err, DP_E_MISMATCH, "%s was built from different training data (hash %s, data %s)", path, a,
                        want);
    dp_free(a);
    a = NULL;
    if (!rc) rc = dp_h5_get_attr(&c->h, "temperature", &a, err);
    if (!rc && fabs(strtod(a, NULL) - temp) > 1e-12)
        rc = dp_err_set(err, DP_E_MISMATCH, "%s was built at temperature %s, the run uses %g", path, a, temp);
    dp_free(a);
    int nd = 0;
    int64_t sh[DP_MAX_DIMS];
    if (!rc) rc = dp_h5_shape(&c->h, "idx", &nd, sh, err);
    if (!rc && (nd != 2 || sh[0] != d->off[d->n]))
        rc = dp_err_set(err, DP_E_MISMATCH, "%s: idx has %lld rows, the data has %lld tokens", path, (long long)sh[0],
                        (long long)d->off[d->n]);
    if (!rc) c->K = sh[1];
    if (rc) {
        dp_h5_close(&c->h);
        c->open = 0;
    }
    return rc;
}

int dp_tcache_fill(tcache *c, const dp_train_data *d, const int64_t *ex, int64_t n, int64_t T, int32_t *idx, float *val,
                   float *lse, dp_err *err) {
    int64_t K = c->K;
    for (int64_t i = 0; i < n; i++) {
        int64_t len = dp_example_len(d, ex[i]), r0 = d->off[ex[i]];
        if (len > T) len = T;
        int rc = dp_h5_read_rows(&c->h, "idx", DP_DTYPE_I32, r0, len, idx + i * T * K, err);
        if (!rc) rc = dp_h5_read_rows(&c->h, "val", DP_DTYPE_F32, r0, len, val + i * T * K, err);
        if (!rc) rc = dp_h5_read_rows(&c->h, "lse", DP_DTYPE_F32, r0, len, lse + i * T, err);
        if (rc) return rc;
        for (int64_t t = 0; t < len * K; t++)
            if (idx[i * T * K + t] < 0) return dp_err_set(err, DP_E_FORMAT, "teacher cache: negative token index");
    }
    return DP_OK;
}

int dp_teacher_cache_build(const dp_mpi *mpi, dp_device dev, const dp_llama *teacher, uint64_t teacher_hash,
                           const dp_train_data *d, int64_t topk, double temp, int64_t bsz, const char *path,
                           int progress, dp_err *err) {
    int64_t V = teacher->cfg.vocab_size;
    if (topk < 1 || topk > V)
        return dp_err_set(err, DP_E_CONFIG, "top-k %lld outside [1, %lld]", (long long)topk, (long long)V);
    if (!(temp > 0)) return dp_err_set(err, DP_E_CONFIG, "KD temperature must be positive");
    /* ranks take contiguous example ranges */
    int64_t e0 = d->n * mpi->rank / mpi->size, e1 = d->n * (mpi->rank + 1) / mpi->size;
    int64_t tmax = d->max_len, ntok = d->off[d->n];
    int64_t r0 = d->off[e0], nrows = d->off[e1] - r0;
    int32_t *idx = dp_malloc((size_t)((nrows > 0 ? nrows : 1) * topk) * sizeof(int32_t), "teacher cache");
    float *val = dp_malloc((size_t)((nrows > 0 ? nrows : 1) * topk) * sizeof(float), "teacher cache");
    float *lse = dp_malloc((size_t)(nrows > 0 ? nrows : 1) * sizeof(float), "teacher cache");
    dp_engine eng;
    dp_layer_map map;
    dp_layer_map_model(&map, &teacher->cfg);
    dp_engine_plan plan = {.B = bsz, .T = tmax, .logits = 1, .local_rank = mpi->local_rank};
    int rc = dp_mpi_agree(mpi, dp_engine_open(&eng, dev, teacher, &plan, err), err);
    if (rc) {
        dp_free(idx);
        dp_free(val);
        dp_free(lse);
        return rc;
    }
    batch b = {.B = bsz};
    b.tokens = dp_malloc((size_t)(bsz * tmax) * sizeof(int32_t), "batch");
    b.targets = dp_malloc((size_t)(bsz * tmax) * sizeof(int32_t), "batch");
    b.keys = dp_malloc((size_t)(bsz * tmax) * sizeof(uint64_t), "batch");
    int32_t *bi = dp_malloc((size_t)(bsz * tmax * topk) * sizeof(int32_t), "batch");
    float *bv = dp_malloc((size_t)(bsz * tmax * topk) * sizeof(float), "batch");
    float *bl = dp_malloc((size_t)(bsz * tmax) * sizeof(float), "batch");
    int64_t *ex = dp_malloc((size_t)bsz * sizeof(int64_t), "batch");
    double t0 = dp_time_s();
    for (int64_t e = e0; e < e1 && !rc; e += bsz) {
        int64_t n = e1 - e < bsz ? e1 - e : bsz;
        for (int64_t i = 0; i < n; i++) ex[i] = e + i;
        dp_build_batch(&b, d, ex, n, tmax, 0, 0);
        if ((rc = dp_engine_topk(&eng, &map, b.tokens, bsz, b.T, topk, temp, bi, bv, bl, err))) break;
        for (int64_t i = 0; i < n; i++) {
            int64_t len = dp_example_len(d, e + i), at = d->off[e + i] - r0;
            memcpy(idx + at * topk, bi + i * b.T * topk, (size_t)(len * topk) * sizeof(int32_t));
            memcpy(val + at * topk, bv + i * b.T * topk, (size_t)(len * topk) * sizeof(float));
            memcpy(lse + at, bl + i * b.T, (size_t)len * sizeof(float));
        }
        if (progress && mpi->rank == 0)
            dp_log("teacher cache: %lld/%lld examples on rank 0, %.1f s", (long long)(e + n - e0), (long long)(e1 - e0),
                   dp_time_s() - t0);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    size_t tl = strlen(path) + 16;
    char *tmp = dp_malloc(tl, "path");
    snprintf(tmp, tl, "%s.tmp", path);
    dp_h5 h;
    if (!rc) rc = dp_h5_create(&h, tmp, mpi->comm, err);
    if (!rc) {
        int64_t g2[2] = {ntok, topk}, g1[1] = {ntok};
        char v[64];
        rc = dp_h5_write_rows(&h, "idx", DP_DTYPE_I32, 2, g2, 4096, r0, nrows, idx, err);
        if (!rc) rc = dp_h5_write_rows(&h, "val", DP_DTYPE_F32, 2, g2, 4096, r0, nrows, val, err);
        if (!rc) rc = dp_h5_write_rows(&h, "lse", DP_DTYPE_F32, 1, g1, 4096, r0, nrows, lse, err);
        snprintf(v, sizeof v, "%016llx", (unsigned long long)d->hash);
        if (!rc) rc = dp_h5_set_attr(&h, "data_hash", v, err);
        snprintf(v, sizeof v, "%016llx", (unsigned long long)teacher_hash);
        if (!rc) rc = dp_h5_set_attr(&h, "model_hash", v, err);
        snprintf(v, sizeof v, "%lld", (long long)topk);
        if (!rc) rc = dp_h5_set_attr(&h, "topk", v, err);
        snprintf(v, sizeof v, "%.17g", temp);
        if (!rc) rc = dp_h5_set_attr(&h, "temperature", v, err);
        int fr = dp_h5_finish(&h, rc ? NULL : err);
        if (!rc) rc = fr;
    }
    rc = dp_mpi_agree(mpi, rc, err);
    if (!rc && mpi->rank == 0 && rename(tmp, path)) rc = dp_err_set(err, DP_E_IO, "cannot rename %s to %s", tmp, path);
    rc = dp_mpi_agree(mpi, rc, err);
    dp_free(tmp);
    dp_free(ex);
    dp_free(bi);
    dp_free(bv);
    dp_free(bl);
    dp_free(b.tokens);
    dp_free(b.targets);
    dp_free(b.keys);
    dp_free(idx);
    dp_free(val);
    dp_free(lse);
    dp_engine_close(&eng);
    return rc;
}
