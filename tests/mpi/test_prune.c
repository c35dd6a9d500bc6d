/* Pruning schedules under mpirun (1-4 ranks) on the gqa fixture model:
 * - iterative PPL pruning from cached inputs equals a brute-force greedy
 *   loop (every candidate's model run from the tokens, same batches) in
 *   removal order and PPL after each step, for any rank count;
 * - its first step equals the one-shot PPL score of the removed block;
 * - dp_prune_map_ppl equals the brute-force PPL of a layer map;
 * - iterative sub-layer pruning equals a brute-force greedy over the attention and MLP units;
 * - protection and impossible K are refused.
 * usage: test_prune RUNDIR */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "depthprune/prune.h"

enum { N = 6, T = 12, BATCH = 4 };

/* PPL of the model under map over all samples, in the same fixed batches */
static double brute_ppl(const dp_llama *m, const dp_layer_map *map, const int32_t *ids) {
    dp_err err;
    int32_t targets[BATCH * T];
    double total = 0;
    double per[N];
    for (int a = 0; a < N; a += BATCH) {
        int nb = a + BATCH <= N ? BATCH : N - a;
        dp_llama_state s;
        CHECK(dp_llama_state_init(&s, m, NULL, nb, T, map->n, DP_STATE_NLL_ONLY, 0, &err) == DP_OK);
        CHECK(dp_llama_forward(m, NULL, map, &s, ids + a * T, &err) == DP_OK);
        dp_llama_next_targets(targets, ids + a * T, nb, T);
        dp_llama_head_nll(m, &s, map->n, targets);
        for (int i = 0; i < nb; i++) {
            double acc = 0;
            for (int t = 0; t + 1 < T; t++) acc += (double)s.nll[i * T + t];
            per[a + i] = acc;
        }
        dp_llama_state_free(&s);
    }
    for (int i = 0; i < N; i++) total += per[i];
    return exp(total / (double)(N * (T - 1)));
}

int main(int argc, char **argv) {
    dp_mpi mpi;
    dp_mpi_init(&argc, &argv, &mpi);
    if (argc != 2) {
        fprintf(stderr, "usage: test_prune RUNDIR\n");
        return 2;
    }
    const char *run = argv[1];
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
    uint64_t st = 11;
    for (int i = 0; i < N * T; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((st >> 33) % 256);
    }
    for (int i = 0; i < N; i++) src[2 * i] = i, src[2 * i + 1] = 0;
    dp_calib_opts co = {.samples = N, .seq_len = T, .seed = 7, .bos_id = -1};
    uint64_t mh = dp_llama_hash(&m);
    CHECK(dp_calibrate(&mpi, &m, mh, ids, src, &co, run, BATCH, 0, DP_TEST_DEVICE, 0, &err) == DP_OK);

    /* brute-force greedy: at each step try every remaining block */
    int want[4];
    double want_ppl[4];
    dp_layer_map cur;
    dp_layer_map_all(&cur, L);
    int K = L - 1;
    for (int step = 0; step < K; step++) {
        int best = -1;
        double best_ppl = 0;
        for (int p = 0; p < cur.n; p++) {
            dp_layer_map t = cur;
            int64_t drop = cur.layer[p];
            dp_layer_map_all(&t, L);
            for (int k = 0; k < step; k++) {
                int64_t d = want[k];
                CHECK(dp_layer_map_drop(&t, L, &d, 1, &err) == DP_OK);
            }
            CHECK(dp_layer_map_drop(&t, L, &drop, 1, &err) == DP_OK);
            double ppl = brute_ppl(&m, &t, ids);
            if (best < 0 || ppl < best_ppl) best = p, best_ppl = ppl;
        }
        want[step] = cur.layer[best];
        want_ppl[step] = best_ppl;
        int64_t d = want[step];
        dp_layer_map_all(&cur, L);
        for (int k = 0; k <= step; k++) {
            d = want[k];
            CHECK(dp_layer_map_drop(&cur, L, &d, 1, &err) == DP_OK);
        }
    }

    int removed[4];
    double ppl_after[4], dense;
    dp_iter_opts io = {.device = DP_TEST_DEVICE, .run_dir = run, .model_hash = mh, .batch = BATCH, .remove = K};
    CHECK(dp_prune_iterative(&mpi, &m, &io, removed, ppl_after, &dense, &err) == DP_OK);
    dp_layer_map all;
    dp_layer_map_all(&all, L);
    for (int k = 0; k < K; k++) {
        CHECK_MSG(removed[k] == want[k], "step %d: removed %d, brute force %d", k, removed[k], want[k]);
        /* the same ops on the same rows, so equal to the last bit */
        CHECK_MSG(ppl_after[k] == want_ppl[k], "step %d: PPL %.17g vs brute force %.17g", k, ppl_after[k], want_ppl[k]);
    }
    CHECK_MSG(fabs(dense - brute_ppl(&m, &all, ids)) <= 1e-12 * dense, "dense PPL %.17g", dense);
    if (mpi.rank == 0) {
        printf("iterative order:");
        for (int k = 0; k < K; k++) printf(" %d (PPL %.6f)", removed[k], ppl_after[k]);
        printf("\n");
    }
    /* map PPL */
    dp_layer_map two;
    dp_layer_map_all(&two, L);
    int64_t d2[2] = {1, 2};
    CHECK(dp_layer_map_drop(&two, L, d2, 2, &err) == DP_OK);
    double mp = 0;
    CHECK(dp_prune_map_ppl(&mpi, DP_TEST_DEVICE, &m, &two, run, mh, BATCH, &mp, &err) == DP_OK);
    CHECK_MSG(mp == brute_ppl(&m, &two, ids), "map PPL %.17g vs %.17g", mp, brute_ppl(&m, &two, ids));
    /* the first iterative step equals the one-shot PPL score */
    const char *crit[] = {"ppl"};
    dp_score_opts so = {.device = DP_TEST_DEVICE, .run_dir = run, .model_hash = mh, .batch = BATCH, .ratio = 0.25};
    CHECK(dp_score(&mpi, &m, crit, 1, &so, &err) == DP_OK);
    if (mpi.rank == 0) {
        char path[700], *text = NULL;
        size_t n = 0;
        snprintf(path, sizeof path, "%s/scores.json", run);
        CHECK(dp_read_file(path, &text, &n, &err) == DP_OK);
        const char *p = strstr(text, "\"ppl\": {\"scores\": [");
        CHECK(p != NULL);
        if (p) {
            p += strlen("\"ppl\": {\"scores\": [");
            for (int k = 0; k < removed[0]; k++) p = strchr(p, ',') + 1;
            double s0 = strtod(p, NULL);
            CHECK_MSG(fabs(s0 - ppl_after[0]) <= 1e-15 * s0, "one-shot score %.17g vs iterative step 1 %.17g", s0,
                      ppl_after[0]);
        }
        dp_free(text);
    }
    /* refusals */
    io.remove = L;
    CHECK_EQ_INT(dp_prune_iterative(&mpi, &m, &io, removed, ppl_after, &dense, &err), DP_E_USAGE);
    io.remove = 2;
    io.protect_first = 2;
    io.protect_last = 1;
    CHECK_EQ_INT(dp_prune_iterative(&mpi, &m, &io, removed, ppl_after, &dense, &err), DP_E_USAGE);
    io.protect_first = 1;
    io.protect_last = 1;
    CHECK(dp_prune_iterative(&mpi, &m, &io, removed, ppl_after, &dense, &err) == DP_OK);
    CHECK(removed[0] >= 1 && removed[0] <= 2 && removed[1] >= 1 && removed[1] <= 2 && removed[0] != removed[1]);
    io.model_hash = mh + 1;
    CHECK_EQ_INT(dp_prune_iterative(&mpi, &m, &io, removed, ppl_after, &dense, &err), DP_E_MISMATCH);
    io.model_hash = mh;

    /* sub-layers: the greedy over every kept block's attention and MLP equals a brute-force greedy
     * (the full model with the chosen sub-layers skipped through the layer map), bit for bit; a block
     * whose two sub-layers are gone leaves the map */
    enum { KU = 5 };
    int uwant[KU], ugot[KU];
    double uwant_ppl[KU], ugot_ppl[KU];
    dp_layer_map ucur;
    dp_layer_map_all(&ucur, L);
    for (int step = 0; step < KU; step++) {
        int best = -1;
        double best_ppl = 0;
        for (int u = 0; u < 2 * L; u++) {
            int what = u % 2 ? DP_SKIP_MLP : DP_SKIP_ATTN;
            if (ucur.skip[u / 2] & what) continue;
            dp_layer_map t = ucur;
            t.skip[u / 2] |= (unsigned char)what;
            double ppl = brute_ppl(&m, &t, ids);
            if (best < 0 || ppl < best_ppl) best = u, best_ppl = ppl;
        }
        uwant[step] = best;
        uwant_ppl[step] = best_ppl;
        ucur.skip[best / 2] |= (unsigned char)(best % 2 ? DP_SKIP_MLP : DP_SKIP_ATTN);
    }
    dp_iter_opts uo = {
        .device = DP_TEST_DEVICE, .run_dir = run, .model_hash = mh, .batch = BATCH, .remove = KU, .units = 1};
    CHECK(dp_prune_iterative(&mpi, &m, &uo, ugot, ugot_ppl, &dense, &err) == DP_OK);
    for (int k = 0; k < KU; k++) {
        CHECK_MSG(ugot[k] == uwant[k], "sub-layer step %d: removed unit %d, brute force %d", k, ugot[k], uwant[k]);
        CHECK_MSG(ugot_ppl[k] == uwant_ppl[k], "sub-layer step %d: PPL %.17g vs brute force %.17g", k, ugot_ppl[k],
                  uwant_ppl[k]);
    }
    if (mpi.rank == 0) {
        printf("iterative sub-layer order:");
        for (int k = 0; k < KU; k++)
            printf(" %s.%d (PPL %.6f)", ugot[k] % 2 ? "mlp" : "attn", ugot[k] / 2, ugot_ppl[k]);
        printf("\n");
    }
    uo.remove = 2 * L;
    CHECK_EQ_INT(dp_prune_iterative(&mpi, &m, &uo, ugot, ugot_ppl, &dense, &err), DP_E_USAGE);

    dp_llama_free(&m);
    int fails = dp_test_failures, any = 0;
    MPI_Allreduce(&fails, &any, 1, MPI_INT, MPI_SUM, mpi.comm);
    dp_mpi_finalize(&mpi);
    return any ? 1 : 0;
}
