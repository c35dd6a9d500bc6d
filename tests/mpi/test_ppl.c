/* Perplexity under mpirun: both protocols against PyTorch (the gqa fixture
 * of gen_llama_fixtures.py), and the distributed result identical bit for
 * bit to a one-rank computation, with a partial last batch. */
#include <math.h>
#include <string.h>

#include "../test.h"
#include "depthprune/eval.h"
#include "depthprune/safetensors.h"

static void run(const dp_mpi *world, const dp_mpi *self, const dp_llama *m, const dp_st_file *ref, int per) {
    const dp_st_tensor *ids = dp_st_find(ref, "ppl.ids");
    const dp_st_tensor *want = dp_st_find(ref, per ? "ppl.bos_per_window" : "ppl.default");
    double w[2];
    memcpy(w, want->data, sizeof w);
    dp_ppl_opts o = {.device = DP_TEST_DEVICE, .seq_len = 12, .batch = per ? 4 : 2, .bos_per_window = per};
    int32_t *win;
    int64_t n_win;
    dp_err err;
    CHECK(dp_ppl_windows(ids->data, dp_st_numel(ids), 1, &o, &win, &n_win, &err) == DP_OK);
    CHECK_EQ_INT(n_win, (int64_t)w[1]);
    CHECK(n_win % o.batch != 0); /* the last batch is partial */
    dp_layer_map map;
    dp_layer_map_all(&map, (int)m->cfg.n_layers);
    dp_ppl_result r, r1;
    CHECK(dp_ppl_run(world, m, &map, win, n_win, &o, &r, NULL, &err) == DP_OK);
    CHECK_MSG(fabs(r.ppl - w[0]) <= 1e-6 * w[0], "%s ppl %.12g vs torch %.12g", per ? "bos-per-window" : "default",
              r.ppl, w[0]);
    CHECK_EQ_INT(r.tokens, n_win * 11);
    if (world->rank == 0) {
        CHECK(dp_ppl_run(self, m, &map, win, n_win, &o, &r1, NULL, &err) == DP_OK);
        CHECK_MSG(memcmp(&r1.nll_sum, &r.nll_sum, sizeof(double)) == 0, "%d ranks: nll sum %a, 1 rank %a", world->size,
                  r.nll_sum, r1.nll_sum);
        printf("%s: ppl %.9f (torch %.9f), %lld windows, %d ranks, bit-identical to 1 rank\n",
               per ? "bos-per-window" : "default", r.ppl, w[0], (long long)n_win, world->size);
    }
    dp_free(win);
}

int main(int argc, char **argv) {
    dp_mpi world, self;
    dp_mpi_init(&argc, &argv, &world);
    dp_mpi_from_comm(MPI_COMM_SELF, &self);
    dp_llama m;
    dp_st_file ref;
    dp_err err;
    if (dp_llama_load(DP_TEST_DATA "/llama_gqa", &m, &err) ||
        dp_st_open(DP_TEST_DATA "/llama_gqa/reference.safetensors", &ref, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    run(&world, &self, &m, &ref, 0);
    run(&world, &self, &m, &ref, 1);
    /* bad input: every rank gets the same error */
    dp_ppl_opts o = {.device = DP_TEST_DEVICE, .seq_len = 12, .batch = 2};
    int32_t *win;
    int64_t n_win;
    int32_t few[5] = {3, 4, 5, 6, 7};
    CHECK(dp_ppl_windows(few, 5, 1, &o, &win, &n_win, &err) == DP_E_FORMAT);
    CHECK(strstr(err.msg, "fewer than one window") != NULL);
    CHECK(dp_ppl_windows(few, 0, 1, &o, &win, &n_win, &err) == DP_E_FORMAT);
    int32_t bad[24];
    for (int i = 0; i < 24; i++) bad[i] = 5;
    bad[17] = 256; /* outside the 256-token vocabulary */
    dp_layer_map map;
    dp_layer_map_all(&map, 4);
    dp_ppl_result r;
    CHECK(dp_ppl_run(&world, &m, &map, bad, 2, &o, &r, NULL, &err) == DP_E_RANGE);
    CHECK(strstr(err.msg, "outside the vocabulary") != NULL);
    o.seq_len = 65; /* above max_position_embeddings 64 */
    int32_t *big = dp_calloc(65 * 2, sizeof(int32_t), "test");
    CHECK(dp_ppl_run(&world, &m, &map, big, 2, &o, &r, NULL, &err) == DP_E_RANGE);
    dp_free(big);
    dp_st_close(&ref);
    dp_llama_free(&m);
    dp_mpi_finalize(&self);
    dp_mpi_finalize(&world);
    TEST_EXIT();
}
