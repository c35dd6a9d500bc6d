/* `depthprune generate`: text generation with the KV cache (greedy or
 * sampled), and `depthprune bench-generate`: the paper's speed protocol
 * (fixed prompt, forced generation length, warm-up then timed runs) over
 * models x batch sizes x generation lengths, reported against the
 * machine's floors: weight + cache bytes per step over measured memory
 * bandwidth, and matmul FLOPs over measured GEMM throughput. One process
 * (the speed of one device is what the paper compares). */
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "depthprune/engine.h"
#include "depthprune/ops.h"
#include "depthprune/tokenizer.h"

/* "1,8,16" -> positive integers */
static int int_list(const char *name, const char *s, int64_t *v, int max, int *n, dp_err *err) {
    *n = 0;
    while (s && *s) {
        char *end;
        long long x = strtoll(s, &end, 10);
        if (end == s || x < 1 || (*end && *end != ',') || *n == max)
            return dp_err_set(err, DP_E_USAGE, "%s expects up to %d positive integers separated by commas", name, max);
        v[(*n)++] = x;
        s = *end ? end + 1 : end;
    }
    if (*n == 0) return dp_err_set(err, DP_E_USAGE, "%s is empty", name);
    return DP_OK;
}

static int sampling_opts(const dp_app *app, const dp_cmd *cmd, dp_gen_opts *o, dp_err *err) {
    long long k, seed, mx;
    int rc = dp_cli_opt_int(app, cmd, "--max-new", 64, &mx, err);
    if (!rc) rc = dp_cli_opt_double(app, cmd, "--temperature", 0, &o->temperature, err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--top-k", 0, &k, err);
    if (!rc) rc = dp_cli_opt_double(app, cmd, "--top-p", 1, &o->top_p, err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--seed", dp_config_int(&app->cfg, "run.seed"), &seed, err);
    if (rc) return rc;
    if (mx < 1 || k < 0 || o->temperature < 0 || !(o->top_p > 0 && o->top_p <= 1))
        return dp_err_set(err, DP_E_USAGE, "need --max-new >= 1, --top-k >= 0, --temperature >= 0, 0 < --top-p <= 1");
    o->max_new = mx;
    o->top_k = k;
    o->seed = (uint64_t)seed;
    return DP_OK;
}

/* ---------------- generate ---------------- */

static const dp_cli_opt k_gen_opts[] = {
    {"--model", "DIR", "HF model directory (dense or pruned)", "model.path"},
    {"--prompt", "TEXT", "prompt text", NULL},
    {"--max-new", "N", "new tokens (default 64; stops early at EOS)", NULL},
    {"--temperature", "T", "0: greedy (default); > 0: sample", NULL},
    {"--top-k", "K", "sample among the K most likely (default 0: off)", NULL},
    {"--top-p", "P", "nucleus sampling mass (default 1: off)", NULL},
    {"--seed", "S", "sampling seed (default run.seed)", "run.seed"},
    {"--ids", NULL, "print the new token ids (one line) instead of the text", NULL},
    {"--drop", "LIST", "blocks to remove through the layer map", NULL},
    {"--drop-attn", "LIST", "blocks whose attention sub-layer is skipped", NULL},
    {"--drop-mlp", "LIST", "blocks whose MLP sub-layer is skipped", NULL},
    {NULL, NULL, NULL, NULL},
};

static int run_generate(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_generate;
    dp_err err;
    dp_err_clear(&err);
    const char *dir = dp_cli_model_path(app, cmd), *prompt = dp_cli_get(app, cmd, "--prompt");
    dp_gen_opts o = {.eos_id = -1};
    int rc = sampling_opts(app, cmd, &o, &err);
    if (!rc && !dir) rc = dp_err_set(&err, DP_E_USAGE, "--model DIR is required");
    if (!rc && !prompt) rc = dp_err_set(&err, DP_E_USAGE, "--prompt TEXT is required");
    if (!rc && app->mpi.size > 1) rc = dp_err_set(&err, DP_E_USAGE, "generate runs on one process (no mpirun)");
    if (rc) return dp_cli_fail(app, &err);
    dp_tokenizer *tok = NULL;
    dp_llama m;
    memset(&m, 0, sizeof m);
    rc = dp_tokenizer_load(dir, &tok, &err);
    if (!rc) rc = dp_llama_load(dir, &m, &err);
    int32_t *ids = NULL, *out = NULL;
    int64_t n = 0;
    if (!rc) rc = dp_tokenizer_encode(tok, prompt, strlen(prompt), 1, &ids, &n, &err);
    if (!rc && n == 0) rc = dp_err_set(&err, DP_E_USAGE, "the prompt encodes to no tokens");
    dp_layer_map map;
    dp_engine_gen g;
    memset(&g, 0, sizeof g);
    int opened = 0;
    dp_gen_stats st;
    if (!rc) {
        o.eos_id = dp_tokenizer_eos_id(tok);
        rc = dp_pipe_layer_map(&m.cfg, dp_cli_get(app, cmd, "--drop"), dp_cli_get(app, cmd, "--drop-attn"),
                               dp_cli_get(app, cmd, "--drop-mlp"), &map, &err);
        if (!rc) rc = dp_engine_gen_open(&g, app->device, &m, &map, 1, n, n + o.max_new, 0, &err);
        opened = rc == DP_OK;
    }
    if (!rc) {
        out = dp_malloc((size_t)o.max_new * sizeof(int32_t), "cli");
        rc = dp_engine_generate(&g, ids, 1, n, &o, out, &st, &err);
    }
    if (!rc) {
        int64_t k = 0;
        while (k < o.max_new && out[k] != o.eos_id) k++;
        if (dp_cli_get(app, cmd, "--ids"))
            for (int64_t i = 0; i < k; i++) printf("%d%c", (int)out[i], i + 1 < k ? ' ' : '\n');
        int32_t *all = dp_malloc((size_t)(n + k + 1) * sizeof(int32_t), "cli");
        memcpy(all, ids, (size_t)n * sizeof(int32_t));
        memcpy(all + n, out, (size_t)k * sizeof(int32_t));
        size_t len = 0;
        char *text = dp_tokenizer_decode(tok, all, n + k, 1, &len);
        if (!dp_cli_get(app, cmd, "--ids")) {
            fwrite(text, 1, len, stdout);
            fputc('\n', stdout);
        }
        dp_log("generate: %lld prompt + %lld new tokens; prefill %.3f s, decode %.2f tokens/s", (long long)n,
               (long long)k, st.prefill_s, st.steps ? (double)st.steps / st.decode_s : 0.0);
        dp_free(text);
        dp_free(all);
    }
    if (opened) dp_engine_gen_close(&g);
    dp_free(ids);
    dp_free(out);
    dp_llama_free(&m);
    if (tok) dp_tokenizer_free(tok);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_generate = {"generate",
                                "generate text with the KV cache (greedy or sampled)",
                                "--model DIR --prompt TEXT [--max-new 64] [--temperature T --top-k K --top-p P]",
                                k_gen_opts,
                                1,
                                run_generate,
                                0,
                                0};

/* ---------------- bench-generate ---------------- */

static const dp_cli_opt k_bench_opts[] = {
    {"--model", "DIR[,DIR...]", "models to compare (dense first: speedups are relative to it)", NULL},
    {"--batch", "LIST", "batch sizes (default 1,8,16,32,64,128,256)", NULL},
    {"--prompt-len", "L", "prompt tokens (default 32)", NULL},
    {"--gen-len", "LIST", "generated tokens per sequence, forced (default 128,512)", NULL},
    {"--warmup", "N", "untimed runs per point (default 1)", NULL},
    {"--runs", "N", "timed runs per point (default 3)", NULL},
    {"--max-seconds", "S", "skip the larger batches of a model once one point takes longer (default 0: never)", NULL},
    {"--out", "FILE", "RESULTS.json (default RUNDIR/bench_generate.json); a .png plot next to it", NULL},
    {"--drop", "LIST", "blocks removed through the layer map, in every model", NULL},
    {"--drop-attn", "LIST", "blocks whose attention is skipped, in every model", NULL},
    {"--drop-mlp", "LIST", "blocks whose MLP is skipped, in every model", NULL},
    {NULL, NULL, NULL, NULL},
};

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_bench(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_bench_generate;
    dp_err err;
    dp_err_clear(&err);
    const char *models = dp_cli_model_path(app, cmd);
    int64_t batch[32], glen[8];
    int nb = 0, ng = 0;
    long long P, warm, runs;
    double maxs;
    int rc =
        int_list("--batch", dp_cli_get(app, cmd, "--batch") ? dp_cli_get(app, cmd, "--batch") : "1,8,16,32,64,128,256",
                 batch, 32, &nb, &err);
    if (!rc)
        rc = int_list("--gen-len", dp_cli_get(app, cmd, "--gen-len") ? dp_cli_get(app, cmd, "--gen-len") : "128,512",
                      glen, 8, &ng, &err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--prompt-len", 32, &P, &err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--warmup", 1, &warm, &err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--runs", 3, &runs, &err);
    if (!rc) rc = dp_cli_opt_double(app, cmd, "--max-seconds", 0, &maxs, &err);
    if (!rc && !models) rc = dp_err_set(&err, DP_E_USAGE, "--model DIR[,DIR...] is required");
    if (!rc && (P < 1 || warm < 0 || runs < 1))
        rc = dp_err_set(&err, DP_E_USAGE, "need --prompt-len >= 1, --runs >= 1");
    if (!rc && app->mpi.size > 1) rc = dp_err_set(&err, DP_E_USAGE, "bench-generate runs on one process (no mpirun)");
    if (rc) return dp_cli_fail(app, &err);
    const char *outp = dp_cli_get(app, cmd, "--out");
    char *out =
        outp ? dp_strdup(outp, "cli") : dp_path_join(dp_config_str(&app->cfg, "run.dir"), "bench_generate.json");

    char *list = dp_strdup(models, "cli");
    cJSON *root = cJSON_CreateObject(), *res = cJSON_CreateArray();
    int cuda = app->device == DP_DEVICE_CUDA;
    double bw = 0, gemm = 0, esz = cuda ? 2.0 : (double)sizeof(float); /* bytes per weight / cache value */
    cJSON_AddStringToObject(root, "device", dp_device_name(app->device));
    cJSON_AddNumberToObject(root, "threads", omp_get_max_threads());
    cJSON_AddNumberToObject(root, "prompt_len", (double)P);
    cJSON_AddNumberToObject(root, "warmup", (double)warm);
    cJSON_AddNumberToObject(root, "runs", (double)runs);
    int mi = 0;
    char *save = NULL;
    dp_buf dat = {0}, plot = {0};
    for (char *dir = strtok_r(list, ",", &save); dir && !rc; dir = strtok_r(NULL, ",", &save), mi++) {
        dp_llama m;
        memset(&m, 0, sizeof m);
        rc = dp_llama_load(dir, &m, &err);
        if (rc) break;
        const dp_llama_config *c = &m.cfg;
        if (gemm == 0) { /* the device's ceilings, at the first model's shapes */
            dp_engine_ceilings(app->device, c->hidden_size, c->intermediate_size, &bw, &gemm);
            dp_log("bench-generate: %s copy bandwidth %.1f GB/s, GEMM %.1f GFLOP/s, %d threads",
                   dp_device_name(app->device), bw / 1e9, gemm / 1e9, omp_get_max_threads());
            cJSON_AddNumberToObject(root, "bandwidth_GBps", bw / 1e9);
            cJSON_AddNumberToObject(root, "gemm_GFLOPs", gemm / 1e9);
        }
        dp_layer_map map; /* the model's own, with --drop/--drop-attn/--drop-mlp applied to every model */
        rc = dp_pipe_layer_map(c, dp_cli_get(app, cmd, "--drop"), dp_cli_get(app, cmd, "--drop-attn"),
                               dp_cli_get(app, cmd, "--drop-mlp"), &map, &err);
        if (rc) {
            dp_llama_free(&m);
            break;
        }
        int64_t C = c->hidden_size, HD = c->head_dim, V = c->vocab_size;
        double mat_w = 0, qd_sum = 0, kd_sum = 0, head_w = (double)(V * C); /* summed over blocks (own sizes) */
        for (int i = 0; i < map.n; i++) { /* a skipped sub-layer's weights are not read */
            int l = map.layer[i];
            int64_t qd = c->layer_heads[l] * HD, kd = c->layer_kv_heads[l] * HD;
            mat_w += (double)(dp_llama_layer_param_count(c, l) - 2 * C);
            if (map.skip[l] & DP_SKIP_ATTN) mat_w -= (double)(2 * C * qd + 2 * C * kd);
            if (map.skip[l] & DP_SKIP_MLP) mat_w -= (double)(3 * C * c->layer_inter[l]);
            if (!(map.skip[l] & DP_SKIP_ATTN)) qd_sum += (double)qd, kd_sum += (double)kd;
        }
        double wbytes = (mat_w + 2.0 * C * map.n + head_w + C) * esz; /* read per step */
        const char *name = strrchr(dir, '/') && strrchr(dir, '/')[1] ? strrchr(dir, '/') + 1 : dir;
        for (int gi = 0; gi < ng && !rc; gi++) {
            char key[600];
            snprintf(key, sizeof key, "%s gen %lld", name, (long long)glen[gi]);
            dp_buf_puts(&plot, plot.n ? ", " : "");
            char pl[900];
            snprintf(pl, sizeof pl, "'-' using 1:2 with linespoints title '%s'", key);
            dp_buf_puts(&plot, pl);
            int stop_batches = 0;
            for (int bi = 0; bi < nb && !rc; bi++) {
                int64_t B = batch[bi], G = glen[gi];
                if (stop_batches) break;
                if (P + G > c->max_position_embeddings) {
                    dp_log("bench-generate: %s: %lld + %lld positions exceed max_position_embeddings; skipped", name,
                           (long long)P, (long long)G);
                    break;
                }
                dp_engine_gen g;
                rc = dp_engine_gen_open(&g, app->device, &m, &map, B, P, P + G, 0, &err);
                if (rc) break;
                int32_t *pr = dp_malloc((size_t)(B * P) * sizeof(int32_t), "bench"),
                        *o = dp_malloc((size_t)(B * G) * sizeof(int32_t), "bench");
                uint64_t z = 1;
                for (int64_t i = 0; i < B * P; i++) pr[i] = (int32_t)(3 + dp_splitmix64(&z) % (uint64_t)(V - 3));
                dp_gen_opts go = {.max_new = G, .temperature = 0, .top_p = 1, .eos_id = -1};
                double *lat = dp_malloc((size_t)runs * sizeof(double), "bench"),
                       *dec = dp_malloc((size_t)runs * sizeof(double), "bench");
                dp_gen_stats st = {0};
                for (long long r = 0; r < warm + runs && !rc; r++) {
                    rc = dp_engine_generate(&g, pr, B, P, &go, o, &st, &err);
                    if (r >= warm) {
                        lat[r - warm] = st.prefill_s + st.decode_s;
                        dec[r - warm] = st.decode_s;
                    }
                }
                if (!rc) {
                    qsort(lat, (size_t)runs, sizeof(double), cmp_d);
                    qsort(dec, (size_t)runs, sizeof(double), cmp_d);
                    double l50 = lat[runs / 2], d50 = dec[runs / 2];
                    double steps = (double)(G - 1);
                    double step_s = steps > 0 ? d50 / steps : 0;
                    /* floors of one decode step: every mapped weight and the mean cache read once, or the FLOPs */
                    double cache = 2.0 * B * (P + G / 2.0) * kd_sum * esz;
                    double fl_bw = (wbytes + cache) / bw;
                    double flops = 2.0 * B * (mat_w + head_w) + 4.0 * B * (P + G / 2.0) * qd_sum; /* + attention */
                    double fl_c = flops / gemm;
                    double floor_s = fl_bw > fl_c ? fl_bw : fl_c;
                    cJSON *j = cJSON_CreateObject();
                    cJSON_AddStringToObject(j, "model", dir);
                    cJSON_AddNumberToObject(j, "blocks", map.n);
                    cJSON_AddNumberToObject(j, "params", (double)m.n_elems);
                    cJSON_AddNumberToObject(j, "batch", (double)B);
                    cJSON_AddNumberToObject(j, "gen_len", (double)G);
                    cJSON_AddNumberToObject(j, "latency_s", l50);
                    cJSON_AddNumberToObject(j, "latency_min_s", lat[0]);
                    cJSON_AddNumberToObject(j, "latency_max_s", lat[runs - 1]);
                    cJSON_AddNumberToObject(j, "tokens_per_s", (double)(B * G) / l50);
                    cJSON_AddNumberToObject(j, "prefill_s", st.prefill_s);
                    cJSON_AddNumberToObject(j, "decode_step_ms", step_s * 1e3);
                    cJSON_AddNumberToObject(j, "floor_step_ms", floor_s * 1e3);
                    cJSON_AddStringToObject(j, "floor_kind", fl_bw > fl_c ? "bandwidth" : "compute");
                    cJSON_AddNumberToObject(j, "floor_fraction", step_s > 0 ? floor_s / step_s : 0);
                    cJSON_AddNumberToObject(j, "weight_bytes", (double)m.n_elems * esz);
                    cJSON_AddNumberToObject(j, "cache_bytes", (double)st.cache_bytes);
                    cJSON_AddNumberToObject(j, "scratch_bytes", (double)st.scratch_bytes);
                    /* peak memory: what the generator holds (weights + cache + scratch, on the
                     * device with cuda), and the process's peak resident set so far */
                    cJSON_AddNumberToObject(
                        j, "peak_bytes", (double)m.n_elems * esz + (double)st.cache_bytes + (double)st.scratch_bytes);
                    struct rusage ru;
                    getrusage(RUSAGE_SELF, &ru);
                    cJSON_AddNumberToObject(j, "process_peak_rss_bytes", (double)ru.ru_maxrss * 1024.0);
                    cJSON_AddItemToArray(res, j);
                    dp_log(
                        "bench-generate: %s blocks %d batch %lld gen %lld: latency %.3f s (%.3f..%.3f), %.1f tokens/s, "
                        "step %.2f ms = %.0f%% of the %s floor %.2f ms",
                        name, map.n, (long long)B, (long long)G, l50, lat[0], lat[runs - 1], (double)(B * G) / l50,
                        step_s * 1e3, step_s > 0 ? 100 * floor_s / step_s : 0, fl_bw > fl_c ? "bandwidth" : "compute",
                        floor_s * 1e3);
                    char line[128];
                    snprintf(line, sizeof line, "%g %g\n", (double)(B * G) / l50, l50);
                    dp_buf_puts(&dat, line);
                    if (maxs > 0 && l50 > maxs) stop_batches = 1;
                }
                dp_free(lat);
                dp_free(dec);
                dp_free(pr);
                dp_free(o);
                dp_engine_gen_close(&g);
            }
            dp_buf_puts(&dat, "e\n");
        }
        dp_llama_free(&m);
    }
    /* speedup of every model over the first at the same point */
    int n = cJSON_GetArraySize(res);
    for (int i = 0; i < n && !rc; i++) {
        cJSON *a = cJSON_GetArrayItem(res, i);
        for (int k = 0; k < n; k++) {
            cJSON *b = cJSON_GetArrayItem(res, k);
            if (!strcmp(cJSON_GetObjectItem(b, "model")->valuestring,
                        cJSON_GetObjectItem(cJSON_GetArrayItem(res, 0), "model")->valuestring) &&
                cJSON_GetObjectItem(b, "batch")->valuedouble == cJSON_GetObjectItem(a, "batch")->valuedouble &&
                cJSON_GetObjectItem(b, "gen_len")->valuedouble == cJSON_GetObjectItem(a, "gen_len")->valuedouble) {
                cJSON_AddNumberToObject(a, "speedup_vs_first",
                                        cJSON_GetObjectItem(b, "latency_s")->valuedouble /
                                            cJSON_GetObjectItem(a, "latency_s")->valuedouble);
                break;
            }
        }
    }
    cJSON_AddItemToObject(root, "results", res);
    if (!rc) {
        char *js = cJSON_Print(root);
        rc = dp_write_file_atomic(out, js, strlen(js), &err);
        cJSON_free(js);
    }
    if (!rc && dat.n) {
        size_t ol = strlen(out);
        char *png = dp_malloc(ol + 8, "cli");
        snprintf(png, ol + 8, "%.*s.png", (int)(ol > 5 && !strcmp(out + ol - 5, ".json") ? ol - 5 : ol), out);
        dp_buf sc = {0};
        char head[1200];
        snprintf(
            head, sizeof head,
            "set terminal pngcairo size 900,600\nset output '%s'\nset logscale xy\nset xlabel 'throughput (tokens/s)'\n"
            "set ylabel 'latency per batch (s)'\nset key left top\nset grid\nplot ",
            png);
        dp_buf_puts(&sc, head);
        dp_buf_puts(&sc, plot.p);
        dp_buf_puts(&sc, "\n");
        dp_buf_puts(&sc, dat.p);
        dp_gnuplot(sc.p, png);
        dp_free(sc.p);
        dp_free(png);
        printf("bench-generate: %s\n", out);
    }
    dp_free(dat.p);
    dp_free(plot.p);
    cJSON_Delete(root);
    dp_free(list);
    dp_free(out);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_bench_generate = {
    "bench-generate",
    "generation latency and throughput vs batch size, against the memory-bandwidth and GEMM floors",
    "--model DIR[,DIR...] [--batch 1,8,...] [--prompt-len 32] [--gen-len 128,512] [--out FILE]",
    k_bench_opts,
    1,
    run_bench,
    0,
    0};
