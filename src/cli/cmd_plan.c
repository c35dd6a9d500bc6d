/* `depthprune plan`: before a job is queued, each stage of the configured
 * pipeline (score, prune, teacher cache, retrain, eval) with its memory per
 * rank, FLOPs and an estimated time, whether it fits, and the setting that
 * would make it fit. Reads only the model's config.json: a 70B plan runs on
 * a login node, for a GPU job without a GPU.
 *
 * CPU memory is the engine's own plan (dp_llama_state_bytes: the run state
 * each stage opens) plus the weights (frozen stages with model.weights =
 * stored: the mapped checkpoint, shared by a node's ranks, fp32 embedding and
 * head, one fp32 block; retraining: fp32), the block-input caches and the
 * optimizer state, plus this process's resident size before any work (the
 * libraries: MPI, HDF5, CUDA). GPU memory follows the CUDA engine's layout
 * (bf16 weights, fp32 residual stream, bf16 activations, the chunked head);
 * it is an estimate until a GPU host checks it against the engine's
 * allocations. Time: FLOPs over the measured fp32 GEMM rate of this machine
 * (CPU) or --gpu-tflops (GPU), at the stated efficiency. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "depthprune/engine.h"
#include "depthprune/llama.h"
#include "depthprune/tensor.h"

static const dp_cli_opt k_plan_opts[] = {
    {"--model", "DIR", "the dense model (only config.json is read; default model.path)", "model.path"},
    {"--ranks", "N", "MPI ranks of the job (default: this launch's)", NULL},
    {"--host-mem", "GiB", "memory per rank on the CPU (default: this machine's / ranks)", NULL},
    {"--gpu-mem", "GiB", "memory per GPU (default 80)", NULL},
    {"--gpu-tflops", "X", "bf16 GEMM rate per GPU for the time estimate (default 700: H100/H200 dense)", NULL},
    {"--efficiency", "E", "fraction of the GEMM rate the stages reach (default 0.6)", NULL},
    {"--json", NULL, "print the plan as JSON", NULL},
    {NULL, NULL, NULL, NULL},
};

typedef struct stage_plan {
    const char *stage;
    double mem, flops, seconds;
    double shared;  /* of mem: mapped checkpoint pages, one copy for the ranks of a node */
    double weights; /* the stage's weights (of mem) */
    double mapped;  /* of weights: the mapped checkpoint (stored weights), 0 for an fp32 copy */
    int fits;
    char detail[256], fix[256];
} stage_plan;

static double gib(double b) {
    return b / 1073741824.0;
}

/* this machine's memory (bytes) */
static double host_bytes(void) {
    return (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGE_SIZE);
}

static double own_rss(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0;
}

/* the CUDA engine's device memory for batch B x T (llama_cuda.c's layout) */
static double gpu_bytes(const dp_llama_config *c, int64_t n_elems, int64_t B, int64_t T, int n_blocks, int train,
                        int64_t lora_elems, int full, int streaming) {
    double N = (double)(B * T), C = (double)c->hidden_size, F = (double)c->intermediate_size,
           QD = (double)(c->n_heads * c->head_dim), KD = (double)(c->n_kv_heads * c->head_dim),
           V = (double)c->vocab_size, chunk = N < 1024 ? N : 1024;
    double block = (double)dp_llama_layer_param_count(c, 0);
    double w = 2.0 * (streaming ? (double)n_elems - c->n_layers * block + block : (double)n_elems);
    double acts =
        N * C * 4 * 2 + N * (C + 2 * QD + 2 * KD + 3 * F) * 2 + N * (QD / c->head_dim + 1) * 4 + N * 8 + chunk * V * 6;
    double tr = 0;
    if (train) { /* saved block inputs, the backward's buffers, adapters (bf16 + fp32 gradients) */
        double W = F > QD ? F : QD;
        tr = (n_blocks + 1) * N * C * 4 + N * C * 4 * 3 + N * W * 4 * 2 + N * (C + W + QD + 2 * KD) * 2 +
             (double)lora_elems * 6 + N * W * 2;
    }
    return w + acts + tr + (full ? 4.0 * (double)n_elems : 0.0);
}

/* bytes of the model's safetensors files (mapped while the weights load) */
static double file_bytes(const char *dir, double fallback) {
    DIR *d = opendir(dir);
    double total = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 12 || strcmp(e->d_name + n - 12, ".safetensors")) continue;
        char *p = dp_path_join(dir, e->d_name);
        struct stat st;
        if (!stat(p, &st)) total += (double)st.st_size;
        dp_free(p);
    }
    if (d) closedir(d);
    return total > 0 ? total : fallback;
}

/* Computes and prints (rank 0) the plan of the configured job; *fits: every
 * stage that runs fits. Errors: the model's config. */
static int plan_job(const dp_app *app, const char *dir, long long ranks, double host, double gpu_mem, double gpu_tf,
                    double eff, int json, int *fits, dp_err *err) {
    const dp_mpi *mpi = &app->mpi;
    const dp_config *cfg = &app->cfg;
    dp_llama m;
    memset(&m, 0, sizeof m);
    int rc = dp_llama_config_load(dir, &m.cfg, err);
    if (rc) return rc;
    const dp_llama_config *c = &m.cfg;
    int gpu = app->device == DP_DEVICE_CUDA;
    double P = (double)dp_llama_param_count(c), block = (double)dp_llama_layer_param_count(c, 0);
    int L = (int)c->n_layers;
    double limit = gpu ? gpu_mem * 1073741824.0 : (host > 0 ? host * 1073741824.0 : host_bytes() / (double)ranks);
    double base = own_rss(); /* MPI, HDF5, BLAS (and CUDA) as loaded: every rank's floor */
    double rate = 0;
    if (gpu)
        rate = gpu_tf * 1e12;
    else
        dp_engine_ceilings(DP_DEVICE_CPU, c->hidden_size, c->intermediate_size, NULL, &rate);
    double speed = rate * eff * (double)ranks; /* flop/s of the job */
    double wbytes = gpu ? 2.0 * P : 4.0 * P;   /* weights being trained (CPU: fp32 whatever the file's dtype) */
    double C = (double)c->hidden_size, fbytes = file_bytes(dir, 2.0 * P);
    /* frozen weights (score, prune, a teacher, eval): on the CPU with model.weights = stored, the
     * mapped files (resident once read, shared by a node's ranks but counted in each rank's RSS),
     * embedding/norm/head in fp32 and one block upcast at a time; else as wbytes */
    double big = 0;
    for (int l = 0; l < (int)c->n_layers; l++)
        if ((double)dp_llama_layer_param_count(c, l) > big) big = (double)dp_llama_layer_param_count(c, l);
    double outer = P;
    for (int l = 0; l < (int)c->n_layers; l++) outer -= (double)dp_llama_layer_param_count(c, l);
    int stored = !gpu && !strcmp(dp_config_str(cfg, "model.weights"), "stored");
    double wfrozen = stored ? fbytes + 4.0 * outer + 4.0 * big : wbytes;
    /* loading: the stored files are mapped while the fp32 (CPU) or bf16 (GPU) copy is made */
    double load = (gpu ? 0 : base) + wbytes + fbytes;
    /* the configured job */
    int64_t N = dp_config_int(cfg, "calib.samples"), T = dp_config_int(cfg, "calib.seq_len");
    int64_t sb = dp_config_int(cfg, "score.batch"), mb = dp_config_int(cfg, "train.micro_batch");
    int64_t cut = dp_config_int(cfg, "train.cutoff"), eb = dp_config_int(cfg, "eval.batch");
    int64_t et = dp_config_int(cfg, "eval.seq_len"), K = (int64_t)lround(dp_config_float(cfg, "prune.ratio") * L);
    int full = !strcmp(dp_config_str(cfg, "train.method"), "full");
    int kd = dp_config_bool(cfg, "pipeline.kd"), iterative = !strcmp(dp_config_str(cfg, "prune.schedule"), "iterative");
    int64_t r = dp_config_int(cfg, "lora.r"), topk = dp_config_int(cfg, "train.cache_topk");
    int kept = L - (int)K;
    double lora = full ? 0 : (double)kept * 7.0 * (double)r * (2.0 * C + (double)c->intermediate_size); /* approx. */
    stage_plan st[5];
    memset(st, 0, sizeof st);
    int64_t cb = dp_calib_batch(N, T, sb), nbat = (N + cb - 1) / cb; /* the calibration's batches */
    int64_t share = (nbat + ranks - 1) / ranks * cb;                 /* the largest rank share */
    if (share > N) share = N;
    /* score: the calibration forward (each rank's samples, every block input kept) and the PPL sweep
     * (each rank's candidates restart from their cached inputs) */
    {
        stage_plan *s = &st[0];
        s->stage = "score";
        double calib = (double)(L + 1) * (double)share * (double)T * C * 4.0;
        double cand = ceil((double)L / (double)ranks) * (double)N * (double)T * C * 4.0;
        double state = gpu ? gpu_bytes(c, (int64_t)P, sb, T, L, 0, 0, 0, 0) - wbytes
                           : (double)dp_llama_state_bytes(&m, NULL, sb < N ? sb : N, T, L, DP_STATE_NLL_ONLY);
        s->mem = wfrozen + (calib > cand ? calib : cand) + state + (gpu ? 0 : base);
        s->flops = 2.0 * P * (double)(N * T) + 2.0 * block * (double)(N * T) * L * (L - 1) / 2.0;
        snprintf(s->detail, sizeof s->detail, "weights %.2f GiB, block inputs %.2f GiB, activations %.2f GiB",
                 gib(wfrozen), gib(calib > cand ? calib : cand), gib(state));
        if (gpu)
            snprintf(s->fix, sizeof s->fix, "--set score.stream_weights=on (weights %.2f GiB -> %.2f GiB)", gib(wbytes),
                     gib(wbytes - 2.0 * block * (L - 1)));
        else
            snprintf(s->fix, sizeof s->fix, "more ranks (block inputs shrink per rank) or fewer calib.samples");
    }
    /* prune: one-shot reads the scores; iterative keeps every block input and re-scores after each removal */
    {
        stage_plan *s = &st[1];
        s->stage = "prune";
        double cache = iterative ? (double)(L + 1) * (double)N * (double)T * C * 4.0 : 0;
        /* the export writes tensors of the stored dtype straight from the mapping; a conversion
         * (export.dtype not auto) holds the converted tensors until the shards are written */
        const char *edt = dp_config_str(cfg, "export.dtype");
        double conv = strcmp(edt, "auto") ? (double)dp_dtype_size(dp_dtype_from_name(edt)) * P : 0;
        s->mem = wfrozen + cache + conv + (gpu ? 0 : base);
        s->flops = iterative ? 2.0 * block * (double)(N * T) * (double)K * L * L / 2.0 : 0;
        snprintf(s->detail, sizeof s->detail, "weights %.2f GiB, %s", gib(wfrozen),
                 iterative ? "every block input cached" : "export of the kept blocks");
        snprintf(s->fix, sizeof s->fix, "prune.schedule=one-shot (no block-input cache)");
    }
    /* teacher cache: the dense teacher's forward with full logits, its top-k rows */
    {
        stage_plan *s = &st[2];
        s->stage = kd ? "teacher-cache" : "teacher-cache (off)";
        double state = gpu ? gpu_bytes(c, (int64_t)P, mb, cut, L, 0, 0, 0, 0) - wbytes
                           : (double)dp_llama_state_bytes(&m, NULL, mb, cut, L, 0);
        s->mem = kd ? wfrozen + state + (gpu ? 0 : base) : 0;
        s->flops = 0; /* the data size is not known before the data is read */
        snprintf(s->detail, sizeof s->detail, "teacher weights %.2f GiB, logits state %.2f GiB, top-%lld rows",
                 gib(wfrozen), gib(state), (long long)topk);
        snprintf(s->fix, sizeof s->fix, "a smaller train.micro_batch (the logits are micro x cutoff x vocab)");
    }
    /* retrain: the pruned student, its run state, gradients and AdamW moments (ZeRO-1 shards) */
    {
        stage_plan *s = &st[3];
        s->stage = "retrain";
        double sw = (gpu ? 2.0 : 4.0) * (P - (double)K * block); /* the kept blocks */
        /* LoRA on the CPU with model.weights = stored: the frozen base stays as stored, as for
         * scoring (the student's files hold only the kept blocks) */
        if (!full && stored) {
            s->mapped = fbytes * (P - (double)K * block) / P;
            sw = s->mapped + 4.0 * outer + 4.0 * big;
        }
        s->weights = sw;
        double trainable = full ? (P - (double)K * block) : lora;
        double opt = 4.0 * trainable + 8.0 * trainable / (double)ranks; /* gradient + m, v of this rank's shard */
        dp_lora lo;
        memset(&lo, 0, sizeof lo);
        lo.rank = r;
        lo.dropout = dp_config_float(cfg, "lora.dropout");
        if (!full && (rc = dp_lora_parse_targets(dp_config_str(cfg, "lora.targets"), &lo.targets, err))) {
            dp_llama_config_free(&m.cfg);
            return rc;
        }
        double state =
            gpu ? gpu_bytes(c, (int64_t)(P - (double)K * block), mb, cut, kept, 1, (int64_t)lora, full, 0) - sw
                : (double)dp_llama_state_bytes(&m, full ? NULL : &lo, mb, cut, kept, DP_STATE_TRAIN);
        /* and its export holds the adapted tensors, merged, in the output dtype (after training) */
        double merged = 0;
        if (!full && stored) {
            const char *edt = dp_config_str(cfg, "export.dtype");
            double esz = strcmp(edt, "auto") ? (double)dp_dtype_size(dp_dtype_from_name(edt)) : fbytes / P;
            double QD = (double)(c->n_heads * c->head_dim), KD = (double)(c->n_kv_heads * c->head_dim),
                   F = (double)c->intermediate_size;
            const double per[DP_LLAMA_BLOCK_TENSORS] = {0, QD * C, KD * C, KD * C, C * QD, 0, F * C, F * C, C * F};
            for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++)
                if (lo.targets >> k & 1u) merged += per[k] * esz * (double)kept;
        }
        int retrains = dp_config_bool(cfg, "pipeline.retrain") && dp_config_str(cfg, "train.data");
        double adapters = full ? 0 : 4.0 * trainable; /* LoRA's own fp32 values; full training's are in sw */
        s->mem = retrains ? sw + (state + opt > merged ? state + opt : merged) + (gpu ? 0 : base) + adapters : 0;
        if (!retrains) s->stage = "retrain (off)";
        double tokens_per_step = (double)dp_config_int(cfg, "train.global_batch") * (double)cut;
        s->flops = (full ? 6.0 : 4.0) * (P - (double)K * block) * tokens_per_step; /* per optimizer step */
        snprintf(s->detail, sizeof s->detail,
                 "%s: student %.2f GiB, state %.2f GiB, trainable %.0fM (+ moments); flops and time per step",
                 full ? "full" : "LoRA", gib(sw), gib(state), trainable / 1e6);
        snprintf(s->fix, sizeof s->fix, "a smaller train.micro_batch or train.cutoff%s",
                 full ? ", or train.method=lora" : "");
    }
    /* eval: perplexity windows and zero-shot batches */
    {
        stage_plan *s = &st[4];
        s->stage = "eval";
        double state = gpu ? gpu_bytes(c, (int64_t)P, eb, et, L, 0, 0, 0, 0) - wbytes
                           : (double)dp_llama_state_bytes(&m, NULL, eb, et, L, DP_STATE_NLL_ONLY);
        s->mem = wfrozen + state + (gpu ? 0 : base);
        s->flops = 0;
        snprintf(s->detail, sizeof s->detail, "weights %.2f GiB, state %.2f GiB (eval.batch %lld x %lld)", gib(wfrozen),
                 gib(state), (long long)eb, (long long)et);
        snprintf(s->fix, sizeof s->fix, "a smaller eval.batch");
    }
    for (int i = 0; i < 5; i++) {
        if (i != 3) { /* every stage but retrain holds the frozen weights */
            st[i].weights = wfrozen;
            st[i].mapped = stored ? fbytes : 0;
        }
        st[i].seconds = st[i].flops / speed;
        st[i].shared = st[i].mem > 0 ? st[i].mapped : 0;
        double wshare = st[i].weights - st[i].mapped + st[i].mapped / (double)ranks;      /* this rank's part */
        if (st[i].mem > 0 && !gpu && !st[i].mapped && st[i].mem < load) st[i].mem = load; /* the load peak */
        if (!gpu && wshare + base > limit) /* the weights alone: no stage setting helps */
            snprintf(st[i].fix, sizeof st[i].fix,
                     "the %s weights alone need %.1f GiB on every rank: --device cuda (bf16), or ranks with more "
                     "memory (they are replicated per rank)",
                     st[i].mapped ? "mapped" : "fp32", gib(st[i].weights));
        /* the ranks sharing this host share the mapped pages */
        st[i].fits = st[i].mem - st[i].shared + st[i].shared / (double)ranks <= limit;
    }
    int all_fit = 1;
    for (int i = 0; i < 5; i++) all_fit &= st[i].fits;
    if (mpi->rank == 0 && json) {
        cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "stages");
        cJSON_AddStringToObject(root, "model", dir);
        cJSON_AddStringToObject(root, "device", dp_device_name(app->device));
        cJSON_AddNumberToObject(root, "ranks", (double)ranks);
        cJSON_AddNumberToObject(root, "params", P);
        cJSON_AddNumberToObject(root, "gemm_flops_per_rank", rate);
        cJSON_AddNumberToObject(root, "efficiency", eff);
        cJSON_AddNumberToObject(root, "process_base_bytes", gpu ? 0 : base);
        for (int i = 0; i < 5; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "stage", st[i].stage);
            cJSON_AddNumberToObject(o, "mem_per_rank_bytes", st[i].mem);
            cJSON_AddNumberToObject(o, "shared_bytes", st[i].shared);
            cJSON_AddNumberToObject(o, "limit_bytes", limit);
            cJSON_AddBoolToObject(o, "fits", st[i].fits);
            cJSON_AddNumberToObject(o, "flops", st[i].flops);
            cJSON_AddNumberToObject(o, "seconds", st[i].seconds);
            cJSON_AddStringToObject(o, "detail", st[i].detail);
            cJSON_AddStringToObject(o, "fix", st[i].fits ? "" : st[i].fix);
            cJSON_AddItemToArray(arr, o);
        }
        cJSON_AddBoolToObject(root, "fits", all_fit);
        char *s = cJSON_Print(root);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(root);
    } else if (mpi->rank == 0) {
        printf("plan: %s (%.0fM parameters, %d blocks) on %lld rank(s), --device %s; limit %.1f GiB per %s; "
               "%s %.0f GFLOP/s per rank at %.0f%%\n",
               dir, P / 1e6, L, ranks, dp_device_name(app->device), gib(limit), gpu ? "GPU" : "rank",
               gpu ? "assumed" : "measured GEMM", rate / 1e9, eff * 100);
        printf("%-22s %12s %6s %12s %10s  %s\n", "stage", "mem/rank GiB", "fits", "TFLOP", "time s", "what");
        for (int i = 0; i < 5; i++) {
            printf("%-22s %12.2f %6s %12.3f %10.1f  %s\n", st[i].stage, gib(st[i].mem), st[i].fits ? "yes" : "NO",
                   st[i].flops / 1e12, st[i].seconds, st[i].detail);
            if (!st[i].fits) printf("%-22s fix: %s\n", "", st[i].fix);
        }
    }
    dp_llama_config_free(&m.cfg);
    *fits = all_fit;
    return DP_OK;
}

int dp_cli_plan_check(const dp_app *app, const char *model_dir, dp_err *err) {
    int fits = 1;
    int rc = plan_job(app, model_dir, app->mpi.size, 0, 80, 700, 0.6, 0, &fits, err);
    if (!rc && !fits && app->device == DP_DEVICE_CPU) /* the CPU plan is checked against measured peaks (cli_plan) */
        rc = dp_err_set(err, DP_E_RANGE,
                        "a stage of this job needs more memory per rank than this machine has (the plan above names "
                        "the stage and a fix; `depthprune plan --help` for the limits)");
    return rc;
}

static int run_plan(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_plan;
    dp_err err;
    dp_err_clear(&err);
    const char *dir = dp_cli_model_path(app, cmd);
    long long ranks = 0;
    double host = 0, gpu_mem = 80, gpu_tf = 700, eff = 0.6;
    int rc = dp_cli_opt_int(app, cmd, "--ranks", app->mpi.size, &ranks, &err);
    if (!rc) rc = dp_cli_opt_double(app, cmd, "--host-mem", 0, &host, &err);
    if (!rc) rc = dp_cli_opt_double(app, cmd, "--gpu-mem", 80, &gpu_mem, &err);
    if (!rc) rc = dp_cli_opt_double(app, cmd, "--gpu-tflops", 700, &gpu_tf, &err);
    if (!rc) rc = dp_cli_opt_double(app, cmd, "--efficiency", 0.6, &eff, &err);
    if (!rc && !dir) rc = dp_err_set(&err, DP_E_USAGE, "--model DIR (or model.path) is required");
    if (!rc && (ranks < 1 || host < 0 || gpu_mem <= 0 || gpu_tf <= 0 || !(eff > 0 && eff <= 1)))
        rc = dp_err_set(&err, DP_E_USAGE, "need --ranks >= 1, sizes > 0, 0 < --efficiency <= 1");
    int fits = 1;
    if (!rc)
        rc = plan_job(app, dir, ranks, host, gpu_mem, gpu_tf, eff, dp_cli_get(app, cmd, "--json") != NULL, &fits, &err);
    if (rc) return dp_cli_fail(app, &err);
    return fits ? 0 : 1;
}

const dp_cmd dp_cmd_plan = {"plan",
                            "memory, FLOPs and time of every stage of the configured job, before it runs",
                            "--config FILE [--model DIR] [--ranks N] [--host-mem GiB | --gpu-mem GiB] [--json]",
                            k_plan_opts,
                            1,
                            run_plan,
                            0,
                            1};
