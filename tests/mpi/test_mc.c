/* Zero-shot scoring under mpirun (1-3 ranks) on the gqa fixture model:
 * every request's log-likelihood (batched by length, right-padded) equals
 * the sum of the continuation tokens' log-softmax computed on the request
 * alone through the perplexity path (forward + cross-entropy), and the
 * results of N ranks equal one rank's bit for bit.
 * usage: test_mc */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "depthprune/mc.h"

enum { NREQ = 29 };

int main(int argc, char **argv) {
    dp_mpi mpi, self;
    dp_mpi_init(&argc, &argv, &mpi);
    dp_mpi_from_comm(MPI_COMM_SELF, &self);
    dp_llama m;
    dp_err err;
    if (dp_llama_load(DP_TEST_DATA "/llama_gqa", &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    dp_layer_map map;
    dp_layer_map_all(&map, (int)m.cfg.n_layers);
    dp_mc_req a[NREQ], b[NREQ];
    uint64_t st = 3;
    for (int i = 0; i < NREQ; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        int64_t n = 2 + (int64_t)((st >> 33) % 40), nc = 1 + (int64_t)((st >> 40) % 5);
        if (nc > n) nc = n;
        a[i] = (dp_mc_req){.n = n, .n_cont = nc, .doc = i};
        a[i].ids = malloc((size_t)n * sizeof(int32_t));
        a[i].cont = malloc((size_t)nc * sizeof(int32_t));
        for (int64_t t = 0; t < n; t++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            a[i].ids[t] = (int32_t)((st >> 33) % 256);
        }
        /* the continuation: the input's last nc-1 tokens shifted, plus one more */
        for (int64_t j = 0; j + 1 < nc; j++) a[i].cont[j] = a[i].ids[n - nc + 1 + j];
        a[i].cont[nc - 1] = (int32_t)((st >> 20) % 256);
        b[i] = a[i];
    }
    CHECK(dp_mc_run(&mpi, DP_TEST_DEVICE, &m, &map, a, NREQ, 4, &err) == DP_OK);
    CHECK(dp_mc_run(&self, DP_TEST_DEVICE, &m, &map, b, NREQ, 4, &err) == DP_OK);
    double worst = 0;
    for (int i = 0; i < NREQ; i++) {
        CHECK_MSG(a[i].loglik == b[i].loglik, "request %d: %d ranks %.17g vs 1 rank %.17g", i, mpi.size, a[i].loglik,
                  b[i].loglik);
        /* alone: input ids + the last continuation token, NLL at the continuation positions */
        int64_t n = a[i].n, nc = a[i].n_cont;
        int32_t *seq = malloc((size_t)(n + 1) * sizeof(int32_t)), *tgt = malloc((size_t)(n + 1) * sizeof(int32_t));
        memcpy(seq, a[i].ids, (size_t)n * sizeof(int32_t));
        seq[n] = a[i].cont[nc - 1];
        dp_llama_next_targets(tgt, seq, 1, n + 1);
        for (int64_t t = 0; t < n - nc; t++) tgt[t] = -1;
        dp_llama_state s;
        CHECK(dp_llama_state_init(&s, &m, NULL, 1, n + 1, map.n, 0, 0, &err) == DP_OK);
        CHECK(dp_llama_forward(&m, NULL, &map, &s, seq, &err) == DP_OK);
        int64_t cnt = 0;
        double nll = dp_llama_loss_ce(&s, &m, tgt, &cnt, 0.0);
        CHECK_EQ_INT(cnt, nc);
        double rel = fabs(-nll - a[i].loglik) / fmax(1.0, fabs(nll));
        if (rel > worst) worst = rel;
        dp_llama_state_free(&s);
        free(seq);
        free(tgt);
    }
    /* different batch shapes and padding: float rounding only */
    CHECK_MSG(worst < 1e-5, "batched log-likelihoods differ from the single-request path by %.3g", worst);
    if (mpi.rank == 0) printf("max relative difference to the single-request path: %.3g\n", worst);
    for (int i = 0; i < NREQ; i++) {
        free(a[i].ids);
        free(a[i].cont);
    }
    dp_llama_free(&m);
    dp_mpi_finalize(&self);
    int fails = dp_test_failures, any = 0;
    MPI_Allreduce(&fails, &any, 1, MPI_INT, MPI_SUM, mpi.comm);
    dp_mpi_finalize(&mpi);
    return any ? 1 : 0;
}
