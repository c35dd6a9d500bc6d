/* Training step throughput of depthprune's trainer (dp_train: forward,
 * loss, backward, gradient reduction, clipping, AdamW, the log), for
 * bench/train_bench.sh. B random sequences of T tokens (the LCG of
 * torch_train.py) per optimizer step, no accumulation, no dropout, no KD.
 * Prints one JSON line with tokens/s over steps 2..S (step 1 is warm-up).
 * usage: bench_train MODEL_DIR lora|full B T STEPS RUNDIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/train.h"

int main(int argc, char **argv) {
    dp_mpi mpi;
    dp_mpi_init(&argc, &argv, &mpi);
    if (argc != 7) {
        fprintf(stderr, "usage: bench_train MODEL_DIR lora|full B T STEPS RUNDIR\n");
        return 2;
    }
    int64_t B = atoll(argv[3]), T = atoll(argv[4]), S = atoll(argv[5]);
    const char *run = argv[6];
    dp_llama m;
    dp_err err;
    if (dp_llama_load(argv[1], &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    dp_log_set_quiet(1);
    dp_train_data d;
    memset(&d, 0, sizeof d);
    d.n = B * S;
    d.off = malloc((size_t)(d.n + 1) * sizeof(int64_t));
    d.tokens = malloc((size_t)(d.n * T) * sizeof(int32_t));
    d.labels = malloc((size_t)(d.n * T) * sizeof(int32_t));
    uint64_t st = 42;
    for (int64_t i = 0; i < d.n * T; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        d.tokens[i] = d.labels[i] = (int32_t)((st >> 33) % (uint64_t)m.cfg.vocab_size);
    }
    for (int64_t e = 0; e <= d.n; e++) d.off[e] = e * T;
    d.max_len = T;
    int64_t *idx = malloc((size_t)d.n * sizeof(int64_t));
    for (int64_t i = 0; i < d.n; i++) idx[i] = i;
    dp_train_opts o;
    dp_train_opts_default(&o);
    o.method = strcmp(argv[2], "full") ? DP_TRAIN_LORA : DP_TRAIN_FULL;
    o.lora_dropout = 0;
    o.global_batch = B;
    o.micro_batch = B / mpi.size;
    o.epochs = 1;
    o.warmup = 0;
    o.val_every = o.ckpt_every = 0;
    o.pause_after = S; /* stop after S: the checkpoint comes after the last timed step */
    o.run_dir = run;
    dp_layer_map map;
    dp_layer_map_all(&map, (int)m.cfg.n_layers);
    dp_lora lora;
    dp_train_result res;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", run, run);
    if (system(cmd)) return 1;
    if (dp_train(&mpi, &m, &map, NULL, &d, idx, d.n, NULL, 0, &o, &lora, &res, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    /* time_s of steps 1 and S from the log */
    char *text = NULL, path[700];
    size_t n = 0;
    snprintf(path, sizeof path, "%s/train_log.jsonl", run);
    if (dp_read_file(path, &text, &n, &err)) return 1;
    double t1 = -1, tS = -1, loss = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        long long s;
        double l;
        char *p = strstr(line, "\"time_s\":");
        if (sscanf(line, "{\"step\":%lld,\"epoch\":%*f,\"loss\":%lf", &s, &l) == 2 && p) {
            if (s == 1) t1 = strtod(p + 9, NULL);
            if (s == S) tS = strtod(p + 9, NULL), loss = l;
        }
    }
    if (mpi.rank == 0)
        printf("{\"impl\": \"depthprune\", \"method\": \"%s\", \"ranks\": %d, \"tok_s\": %.1f, \"last_loss\": %.6f}\n",
               argv[2], mpi.size, (double)(B * T * (S - 1)) / (tS - t1), loss);
    dp_free(text);
    if (o.method == DP_TRAIN_LORA) dp_lora_free(&lora);
    dp_llama_free(&m);
    dp_mpi_finalize(&mpi);
    return 0;
}
