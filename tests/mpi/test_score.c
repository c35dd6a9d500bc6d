/* Block scoring under mpirun (1-4 ranks) on the gqa fixture model:
 * - PPL scores equal the brute-force definition (the full model with block
 *   i dropped through the layer map, same batch shapes) bit for bit, so
 *   they are identical for every rank count;
 * - Taylor scores equal a directional finite difference of the loss;
 * - magnitude and block influence equal direct computations;
 * - sub-layer units: PPL equals the model with that attention or MLP skipped, bit for bit;
 * - bad input: protection leaving no candidate, a calib.h5 from another
 *   model. usage: test_score RUNDIR */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../test.h"
#include "depthprune/prune.h"
#include "depthprune/store.h"

enum { N = 6, T = 12, BATCH = 4 };

static double read_scalar_json(const char *json, const char *crit, int i) {
    char key[64];
    snprintf(key, sizeof key, "\"%s\": {\"scores\": [", crit);
    const char *p = strstr(json, key);
    if (!p) return NAN;
    p += strlen(key);
    for (int k = 0; k < i; k++) p = strchr(p, ',') + 1;
    return strtod(p, NULL);
}

/* mean loss over all samples (sum of per-sample NLL sums / predicted tokens),
 * in the same fixed batches as the scorer */
static double loss_of(const dp_llama *m, const dp_layer_map *map, const int32_t *ids, double *per_sample) {
    dp_err err;
    int32_t targets[BATCH * T];
    double total = 0;
    for (int a = 0; a < N; a += BATCH) {
        int nb = a + BATCH <= N ? BATCH : N - a;
        dp_llama_state s;
        dp_llama_state_init(&s, m, NULL, nb, T, map->n, 0, 0, &err);
        dp_llama_forward(m, NULL, map, &s, ids + a * T, &err);
        for (int i = 0; i < nb; i++)
            for (int t = 0; t < T; t++) targets[i * T + t] = t + 1 < T ? ids[(a + i) * T + t + 1] : -1;
        dp_llama_loss_ce(&s, m, targets, NULL, 0.0);
        for (int i = 0; i < nb; i++) {
            double acc = 0;
            for (int t = 0; t + 1 < T; t++) acc += (double)s.nll[i * T + t];
            if (per_sample) per_sample[a + i] = acc;
            total += acc;
        }
        dp_llama_state_free(&s);
    }
    return total / (double)(N * (T - 1));
}

int main(int argc, char **argv) {
    dp_mpi mpi;
    dp_mpi_init(&argc, &argv, &mpi);
    if (argc != 2) {
        fprintf(stderr, "usage: test_score RUNDIR\n");
        return 2;
    }
    const char *run = argv[1];
    /* the calibration's batches: equal ones of >= 512 rows where possible, at most `batch`
     * samples, never a function of the rank count */
    CHECK(dp_calib_batch(10, 128, 10) == 5);  /* 1280 rows: 2 batches of 5, for 2 ranks to share */
    CHECK(dp_calib_batch(10, 128, 4) == 4);   /* at most batch: 3 batches */
    CHECK(dp_calib_batch(32, 2048, 8) == 1);  /* one 2048-row sample per batch */
    CHECK(dp_calib_batch(3, 16, 10) == 3);    /* 48 rows: one batch */
    CHECK(dp_calib_batch(100, 64, 100) == 9); /* 12 batches: 9 samples, 576 rows */
    if (mpi.rank == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", run, run);
        CHECK(system(cmd) == 0);
    }
    MPI_Barrier(mpi.comm);
    dp_llama m;
    dp_err err;
    if (dp_llama_load(DP_TEST_DATA "/llama_gqa", &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int L = (int)m.cfg.n_layers;
    int32_t ids[N * T];
    int64_t src[N * 2];
    uint64_t st = 7;
    for (int i = 0; i < N * T; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((st >> 33) % 256);
    }
    for (int i = 0; i < N; i++) src[2 * i] = i, src[2 * i + 1] = 0;
    dp_calib_opts co = {.samples = N, .seq_len = T, .seed = 7, .bos_id = -1};
    uint64_t mhash = dp_llama_hash(&m);
    CHECK(dp_calibrate(&mpi, &m, mhash, ids, src, &co, run, BATCH, 0, DP_TEST_DEVICE, 0, &err) == DP_OK);
    /* a CPU calib.h5 is not reused by a GPU run (block inputs differ in the last bits) */
    CHECK(dp_calibrate(&mpi, &m, mhash, ids, src, &co, run, BATCH, 0,
                       DP_TEST_DEVICE == DP_DEVICE_CPU ? DP_DEVICE_CUDA : DP_DEVICE_CPU, 0, &err) == DP_E_MISMATCH);
    CHECK(strstr(err.msg, "--device cpu") != NULL);
    dp_err_clear(&err);
    const char *crit[] = {"ppl", "taylor", "magnitude", "magnitude-l2", "bi", "ppl+"};
    dp_score_opts o = {
        .device = DP_TEST_DEVICE, .run_dir = run, .model_hash = mhash, .batch = BATCH, .bootstrap = 50, .ratio = 0.0};
    /* ppl+ protects 4 + 2 of 4 blocks: refused */
    CHECK(dp_score(&mpi, &m, crit, 6, &o, &err) == DP_E_USAGE);
    CHECK(strstr(err.msg, "leaves no candidate") != NULL);
    o.protect_first = 1;
    int rc = dp_score(&mpi, &m, crit, 5, &o, &err);
    CHECK_MSG(rc == DP_OK, "%s", err.msg);

    char *json = NULL;
    size_t jn;
    char *jp = dp_path_join(run, "scores.json");
    CHECK(dp_read_file(jp, &json, &jn, &err) == DP_OK);
    dp_free(jp);
    /* the scores from scores.h5 (exact binary) */
    char *hp = dp_path_join(run, "scores.h5");
    dp_h5 h;
    double ppl[DP_MAX_LAYERS], tay[DP_MAX_LAYERS], mag[DP_MAX_LAYERS], mag2[DP_MAX_LAYERS], bi[DP_MAX_LAYERS];
    int32_t order[DP_MAX_LAYERS];
    CHECK(dp_h5_open(&h, hp, mpi.comm, 0, &err) == DP_OK);
    CHECK(dp_h5_read_rows(&h, "ppl_scores", DP_DTYPE_F64, 0, L, ppl, &err) == DP_OK);
    CHECK(dp_h5_read_rows(&h, "taylor_scores", DP_DTYPE_F64, 0, L, tay, &err) == DP_OK);
    CHECK(dp_h5_read_rows(&h, "magnitude_scores", DP_DTYPE_F64, 0, L, mag, &err) == DP_OK);
    CHECK(dp_h5_read_rows(&h, "magnitude-l2_scores", DP_DTYPE_F64, 0, L, mag2, &err) == DP_OK);
    CHECK(dp_h5_read_rows(&h, "bi_scores", DP_DTYPE_F64, 0, L, bi, &err) == DP_OK);
    CHECK(dp_h5_read_rows(&h, "ppl_order", DP_DTYPE_I32, 0, L - 1, order, &err) == DP_OK);
    dp_h5_close(&h);
    dp_free(hp);

    /* PPL: brute force, bit for bit */
    for (int i = 0; i < L; i++) {
        dp_layer_map map;
        dp_layer_map_all(&map, L);
        int64_t d = i;
        dp_layer_map_drop(&map, L, &d, 1, &err);
        double want = exp(loss_of(&m, &map, ids, NULL));
        CHECK_MSG(memcmp(&want, &ppl[i], sizeof(double)) == 0, "block %d: ppl %a vs brute force %a", i, ppl[i], want);
        CHECK_MSG(fabs(read_scalar_json(json, "ppl", i) - want) <= 1e-15 * want, "json ppl %d", i);
    }
    /* order: ascending, protected block 0 left out */
    for (int j = 0; j + 1 < L - 1; j++) CHECK(ppl[order[j]] <= ppl[order[j + 1]]);
    for (int j = 0; j < L - 1; j++) CHECK(order[j] != 0);

    /* Taylor: sum |w * dL/dw| over block i == d/de L(W + e v), v = w * sign(w g),
     * by a central difference (eps 1e-3: truncation ~1e-3, fp32 loss noise ~1e-4; tolerance 1e-2) */
    dp_layer_map all;
    dp_layer_map_all(&all, L);
    float *g = dp_calloc((size_t)m.n_elems, sizeof(float), "test");
    {
        dp_llama_view gv;
        dp_llama_view_of(&m, g, &gv);
        for (int a = 0; a < N; a += BATCH) {
            int nb = a + BATCH <= N ? BATCH : N - a;
            dp_llama_state s;
            int32_t targets[BATCH * T];
            dp_llama_state_init(&s, &m, NULL, nb, T, L, DP_STATE_TRAIN, 0, &err);
            for (int i = 0; i < nb; i++)
                for (int t = 0; t < T; t++) targets[i * T + t] = t + 1 < T ? ids[(a + i) * T + t + 1] : -1;
            dp_llama_forward(&m, NULL, &all, &s, ids + a * T, &err);
            dp_llama_zero_dlogits(&s, &m);
            dp_llama_loss_ce(&s, &m, targets, NULL, 1.0 / (double)(N * (T - 1)));
            dp_llama_backward(&m, NULL, &all, &s, ids + a * T, &gv, NULL);
            dp_llama_state_free(&s);
        }
    }
    for (int l = 0; l < L; l++) {
        float *save = dp_malloc((size_t)m.n_elems * sizeof(float), "test");
        memcpy(save, m.mem, (size_t)m.n_elems * sizeof(float));
        double eps = 1e-3, lp, lm, direct = 0;
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
            const dp_llama_param *p = &m.params[1 + l * DP_LLAMA_BLOCK_TENSORS + k];
            for (int64_t j = 0; j < p->n_elems; j++) {
                float w = save[p->offset + j], gg = g[p->offset + j];
                direct += fabs((double)w * gg);
                m.mem[p->offset + j] = w + (float)(eps * w * (w * gg >= 0 ? 1 : -1));
            }
        }
        lp = loss_of(&m, &all, ids, NULL);
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
            const dp_llama_param *p = &m.params[1 + l * DP_LLAMA_BLOCK_TENSORS + k];
            for (int64_t j = 0; j < p->n_elems; j++) {
                float w = save[p->offset + j], gg = g[p->offset + j];
                m.mem[p->offset + j] = w - (float)(eps * w * (w * gg >= 0 ? 1 : -1));
            }
        }
        lm = loss_of(&m, &all, ids, NULL);
        memcpy(m.mem, save, (size_t)m.n_elems * sizeof(float));
        dp_free(save);
        double fd = (lp - lm) / (2 * eps);
        CHECK_MSG(fabs(fd - tay[l]) <= 1e-2 * tay[l], "block %d: taylor %.9g vs finite difference %.9g", l, tay[l], fd);
        CHECK_MSG(fabs(direct - tay[l]) <= 1e-4 * tay[l], "block %d: taylor %.9g vs direct %.9g", l, tay[l], direct);
        if (mpi.rank == 0) printf("block %d: taylor %.6g, finite difference %.6g\n", l, tay[l], fd);
    }
    dp_free(g);

    /* magnitude and block influence, directly */
    dp_llama_state s;
    dp_llama_state_init(&s, &m, NULL, N, T, L, 0, 0, &err);
    dp_llama_forward(&m, NULL, &all, &s, ids, &err);
    for (int l = 0; l < L; l++) {
        double s1 = 0, s2 = 0;
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
            const dp_llama_param *p = &m.params[1 + l * DP_LLAMA_BLOCK_TENSORS + k];
            for (int64_t j = 0; j < p->n_elems; j++) {
                double w = m.mem[p->offset + j];
                s1 += fabs(w);
                s2 += w * w;
            }
        }
        CHECK_MSG(fabs(s1 - mag[l]) <= 1e-12 * s1 && fabs(sqrt(s2) - mag2[l]) <= 1e-12 * sqrt(s2), "magnitude %d", l);
        double cs = 0;
        int64_t C = m.cfg.hidden_size;
        for (int64_t n = 0; n < N * T; n++) {
            const float *x = s.x + ((int64_t)l * N * T + n) * C, *y = s.x + ((int64_t)(l + 1) * N * T + n) * C;
            double xy = 0, xx = 0, yy = 0;
            for (int64_t c = 0; c < C; c++)
                xy += (double)x[c] * y[c], xx += (double)x[c] * x[c], yy += (double)y[c] * y[c];
            cs += xy / (sqrt(xx) * sqrt(yy));
        }
        /* hidden states from one batch of 6 vs the scorer's 4 + 2: fp32 rounding */
        CHECK_MSG(fabs((1.0 - cs / (N * T)) - bi[l]) <= 1e-5, "block influence %d: %.9g vs %.9g", l, bi[l],
                  1.0 - cs / (N * T));
    }
    dp_llama_state_free(&s);
    CHECK(strstr(json, "\"bootstrap\": {\"replicates\": 50") != NULL);
    CHECK(strstr(json, "\"kendall_tau\": {\"ppl/taylor\": ") != NULL);
    dp_free(json);

    /* sub-layers: unit 2l (the attention of block l) and 2l + 1 (its MLP); PPL equals the full
     * model with that sub-layer skipped through the layer map, bit for bit; Taylor and
     * magnitude split the block's sums between the halves */
    const char *ucrit[] = {"ppl", "taylor", "magnitude", "bi"};
    o.units = 1;
    o.bootstrap = 0;
    rc = dp_score(&mpi, &m, ucrit, 4, &o, &err);
    CHECK_MSG(rc == DP_OK, "%s", err.msg);
    o.units = 0;
    double uppl[2 * DP_MAX_LAYERS], utay[2 * DP_MAX_LAYERS], umag[2 * DP_MAX_LAYERS], ubi[2 * DP_MAX_LAYERS];
    CHECK(dp_h5_open(&h, (hp = dp_path_join(run, "scores.h5")), mpi.comm, 0, &err) == DP_OK);
    CHECK(dp_h5_read_rows(&h, "ppl_scores", DP_DTYPE_F64, 0, 2 * L, uppl, &err) == DP_OK);
    CHECK(dp_h5_read_rows(&h, "taylor_scores", DP_DTYPE_F64, 0, 2 * L, utay, &err) == DP_OK);
    CHECK(dp_h5_read_rows(&h, "magnitude_scores", DP_DTYPE_F64, 0, 2 * L, umag, &err) == DP_OK);
    CHECK(dp_h5_read_rows(&h, "bi_scores", DP_DTYPE_F64, 0, 2 * L, ubi, &err) == DP_OK);
    dp_h5_close(&h);
    dp_free(hp);
    for (int u = 0; u < 2 * L; u++) {
        dp_layer_map map;
        dp_layer_map_all(&map, L);
        map.skip[u / 2] = u % 2 ? DP_SKIP_MLP : DP_SKIP_ATTN;
        double want = exp(loss_of(&m, &map, ids, NULL));
        CHECK_MSG(memcmp(&want, &uppl[u], sizeof(double)) == 0, "unit %d: ppl %a vs brute force %a", u, uppl[u], want);
    }
    for (int l = 0; l < L; l++) {
        CHECK_MSG(fabs(utay[2 * l] + utay[2 * l + 1] - tay[l]) <= 1e-4 * tay[l], "block %d: taylor halves", l);
        CHECK_MSG(fabs(umag[2 * l] + umag[2 * l + 1] - mag[l]) <= 1e-12 * mag[l], "block %d: magnitude halves", l);
        CHECK(utay[2 * l] > 0 && utay[2 * l + 1] > 0);
    }
    /* sub-layer block influence: attention x_l -> h_l = x_l + attn(x_l), MLP h_l -> x_{l+1}, directly */
    for (int l = 0; l < L; l++) {
        dp_layer_map hm;
        dp_layer_map_all(&hm, L);
        hm.skip[l] = DP_SKIP_MLP;
        dp_llama_state s1, s2;
        dp_llama_state_init(&s1, &m, NULL, N, T, L, 0, 0, &err);
        dp_llama_state_init(&s2, &m, NULL, N, T, L, 0, 0, &err);
        dp_llama_forward(&m, NULL, &all, &s1, ids, &err);
        dp_llama_forward(&m, NULL, &hm, &s2, ids, &err);
        int64_t C = m.cfg.hidden_size;
        double ca = 0, cm = 0;
        for (int64_t n = 0; n < N * T; n++) {
            const float *x = s1.x + ((int64_t)l * N * T + n) * C, *hh = s2.x + ((int64_t)(l + 1) * N * T + n) * C,
                        *y = s1.x + ((int64_t)(l + 1) * N * T + n) * C;
            double xh = 0, xx = 0, hhh = 0, hy = 0, yy = 0;
            for (int64_t c = 0; c < C; c++) {
                xh += (double)x[c] * hh[c], xx += (double)x[c] * x[c], hhh += (double)hh[c] * hh[c];
                hy += (double)hh[c] * y[c], yy += (double)y[c] * y[c];
            }
            ca += xh / (sqrt(xx) * sqrt(hhh)), cm += hy / (sqrt(hhh) * sqrt(yy));
        }
        /* one batch of 6 vs the scorer's 4 + 2: fp32 rounding */
        CHECK_MSG(fabs((1.0 - ca / (N * T)) - ubi[2 * l]) <= 1e-5, "attention %d: bi %.9g vs %.9g", l, ubi[2 * l],
                  1.0 - ca / (N * T));
        CHECK_MSG(fabs((1.0 - cm / (N * T)) - ubi[2 * l + 1]) <= 1e-5, "mlp %d: bi %.9g vs %.9g", l, ubi[2 * l + 1],
                  1.0 - cm / (N * T));
        dp_llama_state_free(&s1);
        dp_llama_state_free(&s2);
    }
    if (mpi.rank == 0) printf("sub-layer ppl scores equal the skipped-sub-layer model, bit for bit; bi directly\n");

    /* a calib.h5 from another model is refused */
    dp_llama other;
    CHECK(dp_llama_load(DP_TEST_DATA "/llama_tied", &other, &err) == DP_OK);
    const char *c1[] = {"ppl"};
    o.protect_first = 0;
    o.model_hash = dp_llama_hash(&other);
    CHECK(dp_score(&mpi, &other, c1, 1, &o, &err) == DP_E_MISMATCH);
    CHECK(strstr(err.msg, "different model") != NULL);
    dp_calib_opts co2 = co;
    co2.samples = N;
    co2.seq_len = T;
    CHECK(dp_calibrate(&mpi, &other, o.model_hash, ids, src, &co2, run, BATCH, 0, DP_TEST_DEVICE, 0, &err) ==
          DP_E_MISMATCH);
    CHECK(strstr(err.msg, "different model") != NULL);
    dp_llama_free(&other);
    o.model_hash = mhash;
    const char *bad[] = {"perplexity"};
    CHECK(dp_score(&mpi, &m, bad, 1, &o, &err) == DP_E_USAGE);

    dp_llama_free(&m);
    dp_mpi_finalize(&mpi);
    TEST_EXIT();
}
