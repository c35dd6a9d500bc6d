/* Engine throughput: forward tokens/s and forward+backward tokens/s
 * (full-parameter gradients, mean cross-entropy) of the CPU engine on an HF
 * model directory, best of R timed repetitions after one warm-up. Prints one
 * JSON line. The peer is bench/torch_engine.py; bench/engine_bench.sh runs
 * both side by side. usage: bench_engine MODEL_DIR B T R */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/llama.h"

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: bench_engine MODEL_DIR B T REPEATS\n");
        return 2;
    }
    int64_t B = atoll(argv[2]), T = atoll(argv[3]), R = atoll(argv[4]);
    dp_llama m;
    dp_err err;
    if (dp_llama_load(argv[1], &m, &err)) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    dp_layer_map map;
    dp_layer_map_all(&map, (int)m.cfg.n_layers);
    dp_llama_state s;
    if (dp_llama_state_init(&s, &m, NULL, B, T, map.n, DP_STATE_TRAIN, 0, &err)) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    int64_t N = B * T;
    int32_t *tok = malloc((size_t)N * sizeof(int32_t)), *tgt = malloc((size_t)N * sizeof(int32_t));
    uint64_t st = 42;
    for (int64_t i = 0; i < N; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((st >> 33) % (uint64_t)m.cfg.vocab_size);
    }
    dp_llama_next_targets(tgt, tok, B, T);
    float *grads = dp_calloc((size_t)m.n_elems, sizeof(float), "grads");
    dp_llama_view g;
    dp_llama_view_of(&m, grads, &g);
    double best_f = 1e30, best_fb = 1e30, loss = 0;
    for (int64_t r = 0; r <= R; r++) {
        double t0 = dp_time_s();
        dp_llama_forward(&m, NULL, &map, &s, tok, &err);
        int64_t cnt;
        loss = dp_llama_loss_ce(&s, &m, tgt, &cnt, 0.0) / (double)cnt;
        double t1 = dp_time_s();
        memset(grads, 0, (size_t)m.n_elems * sizeof(float));
        dp_llama_forward(&m, NULL, &map, &s, tok, &err);
        dp_llama_zero_dlogits(&s, &m);
        dp_llama_loss_ce(&s, &m, tgt, &cnt, 1.0 / (double)cnt);
        dp_llama_backward(&m, NULL, &map, &s, tok, &g, NULL);
        double t2 = dp_time_s();
        if (r > 0) { /* r == 0 warms up */
            if (t1 - t0 < best_f) best_f = t1 - t0;
            if (t2 - t1 < best_fb) best_fb = t2 - t1;
        }
    }
    printf("{\"impl\": \"depthprune\", \"fwd_tok_s\": %.1f, \"fwdbwd_tok_s\": %.1f, \"loss\": %.6f, "
           "\"activation_bytes\": %zu}\n",
           (double)N / best_f, (double)N / best_fb, loss, s.n_bytes);
    dp_free(grads);
    free(tok);
    free(tgt);
    dp_llama_state_free(&s);
    dp_llama_free(&m);
    return 0;
}
