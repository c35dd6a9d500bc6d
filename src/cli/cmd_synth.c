/* `depthprune synth`: writes a randomly initialised LLaMA as an HF model
 * directory (config.json, model.safetensors, the tokenizer files of a real
 * tokenizer), for tests, demos and benchmarks where no checkpoint can be
 * downloaded. Weights ~ N(0, init_std) as HF's initializer_range, norms 1;
 * deterministic in --seed. Built under a temporary name, then renamed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "depthprune/hfconfig.h"
#include "depthprune/safetensors.h"
#include "depthprune/tensor.h"
#include "depthprune/tokenizer.h"

static const dp_cli_opt k_synth_opts[] = {
    {"--out", "DIR", "output model directory (must not exist)", NULL},
    {"--tokenizer", "DIR", "directory with tokenizer.json (and tokenizer_config.json) to copy", NULL},
    {"--layers", "N", "transformer blocks (default 8)", NULL},
    {"--hidden", "N", "hidden size (default 256)", NULL},
    {"--heads", "N", "attention heads (default 8)", NULL},
    {"--kv-heads", "N", "key/value heads (default = heads)", NULL},
    {"--intermediate", "N", "MLP size (default 688)", NULL},
    {"--max-pos", "N", "max_position_embeddings (default 2048)", NULL},
    {"--tie", NULL, "tie the LM head to the embedding", NULL},
    {"--seed", "N", "random seed (default 1)", NULL},
    {"--dtype", "bf16|f16|f32", "stored dtype (default bf16)", NULL},
    {NULL, NULL, NULL, NULL},
};

static double normal01(uint64_t *rng) { /* Box-Muller over xorshift64* */
    double u[2];
    for (int i = 0; i < 2; i++) u[i] = ((double)dp_xorshift64s_53(rng) + 0.5) / 9007199254740992.0;
    return sqrt(-2.0 * log(u[0])) * cos(2.0 * M_PI * u[1]);
}

static int synth(const dp_app *app, const dp_cmd *cmd, const char *out, const char *tokdir, dp_err *err) {
    long long L, C, NH, NKV, F, maxpos, seed;
    int rc = DP_OK;
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--layers", 8, &L, err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--hidden", 256, &C, err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--heads", 8, &NH, err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--kv-heads", NH, &NKV, err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--intermediate", 688, &F, err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--max-pos", 2048, &maxpos, err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--seed", 1, &seed, err);
    if (rc) return rc;
    if (L < 1 || L > 256 || C < 2 || NH < 1 || NKV < 1 || F < 1 || maxpos < 1 || C % NH || NH % NKV || (C / NH) % 2)
        return dp_err_set(err, DP_E_USAGE,
                          "bad shape: need 1 <= layers <= 256, hidden divisible by heads into an even head "
                          "size, heads divisible by kv-heads");
    const char *dts = dp_cli_get(app, cmd, "--dtype");
    dp_dtype dt = DP_DTYPE_BF16;
    if (dts && !strcmp(dts, "f32"))
        dt = DP_DTYPE_F32;
    else if (dts && !strcmp(dts, "f16"))
        dt = DP_DTYPE_F16;
    else if (dts && strcmp(dts, "bf16"))
        return dp_err_set(err, DP_E_USAGE, "--dtype must be bf16, f16 or f32");
    int tie = dp_cli_get(app, cmd, "--tie") != NULL;
    struct stat sb;
    if (stat(out, &sb) == 0) return dp_err_set(err, DP_E_USAGE, "%s already exists; not overwriting it", out);

    dp_tokenizer *tok;
    if ((rc = dp_tokenizer_load(tokdir, &tok, err))) return rc;
    int64_t V = dp_tokenizer_vocab_size(tok);
    int32_t bos = dp_tokenizer_bos_id(tok), eos = dp_tokenizer_eos_id(tok);
    dp_tokenizer_free(tok);

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", out, (int)getpid());
    if (mkdir(tmp, 0755)) return dp_err_set(err, DP_E_IO, "cannot create %s", tmp);
    dp_buf cfg = {0};
    char line[1024];
    snprintf(line, sizeof line,
             "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
             "  \"vocab_size\": %lld,\n  \"hidden_size\": %lld,\n  \"intermediate_size\": %lld,\n"
             "  \"num_hidden_layers\": %lld,\n  \"num_attention_heads\": %lld,\n  \"num_key_value_heads\": %lld,\n"
             "  \"max_position_embeddings\": %lld,\n  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 10000.0,\n"
             "  \"rope_scaling\": null,\n  \"hidden_act\": \"silu\",\n  \"attention_bias\": false,\n"
             "  \"mlp_bias\": false,\n  \"initializer_range\": 0.02,\n  \"tie_word_embeddings\": %s,\n",
             (long long)V, C, F, L, NH, NKV, maxpos, tie ? "true" : "false");
    dp_buf_puts(&cfg, line);
    snprintf(line, sizeof line,
             "  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n  \"torch_dtype\": \"%s\",\n"
             "  \"depthprune\": {\"synth\": {\"seed\": %lld}}\n}\n",
             bos, eos,
             dt == DP_DTYPE_F32   ? "float32"
             : dt == DP_DTYPE_F16 ? "float16"
                                  : "bfloat16",
             seed);
    dp_buf_puts(&cfg, line);
    char *p = dp_path_join(tmp, "config.json");
    rc = dp_write_file_atomic(p, cfg.p, cfg.n, err);
    dp_free(p);
    dp_free(cfg.p);

    /* tensors in HF order; values drawn in that order */
    int64_t HD = C / NH, n_t = 1 + 9 * L + 1 + !tie;
    dp_st_entry *e = dp_calloc((size_t)n_t, sizeof(dp_st_entry), "synth");
    char **names = dp_calloc((size_t)n_t, sizeof(char *), "synth");
    const int64_t shapes[9][2] = {{C, 0}, {NH * HD, C}, {NKV * HD, C}, {NKV * HD, C}, {C, NH * HD},
                                  {C, 0}, {F, C},       {F, C},        {C, F}};
    int k = 0;
    uint64_t rng = (uint64_t)seed * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    for (int64_t i = 0; rc == DP_OK && i < n_t; i++) {
        char nm[128];
        int64_t rows, cols;
        if (i == 0)
            snprintf(nm, sizeof nm, "model.embed_tokens.weight"), rows = V, cols = C;
        else if (i <= 9 * L) {
            int64_t l = (i - 1) / 9, j = (i - 1) % 9;
            snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)l, dp_llama_block_suffix[j]);
            rows = shapes[j][0], cols = shapes[j][1];
        } else if (i == 9 * L + 1)
            snprintf(nm, sizeof nm, "model.norm.weight"), rows = C, cols = 0;
        else
            snprintf(nm, sizeof nm, "lm_head.weight"), rows = V, cols = C;
        int64_t n = rows * (cols ? cols : 1);
        float *f = dp_malloc((size_t)n * sizeof(float), "synth");
        for (int64_t j = 0; j < n; j++) f[j] = cols ? (float)(0.02 * normal01(&rng)) : 1.0f;
        void *d = dp_malloc((size_t)n * dp_dtype_size(dt), "synth");
        dp_convert_from_f32(d, dt, f, (size_t)n);
        dp_free(f);
        names[k] = dp_strdup(nm, "synth");
        e[k] = (dp_st_entry){.name = names[k], .dtype = dt, .ndim = cols ? 2 : 1, .shape = {rows, cols}, .data = d};
        k++;
    }
    if (rc == DP_OK) rc = dp_st_write_model(tmp, e, k, 5000000000ull, err);
    for (int i = 0; i < k; i++) {
        dp_free((void *)e[i].data);
        dp_free(names[i]);
    }
    dp_free(e);
    dp_free(names);
    const char *tok_files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"};
    for (int i = 0; rc == DP_OK && i < 3; i++) {
        char *from = dp_path_join(tokdir, tok_files[i]), *to = dp_path_join(tmp, tok_files[i]);
        if (dp_file_exists(from)) rc = dp_copy_file(from, to, err);
        dp_free(from);
        dp_free(to);
    }
    if (rc == DP_OK && rename(tmp, out)) rc = dp_err_set(err, DP_E_IO, "cannot rename %s to %s", tmp, out);
    if (rc) {
        char cmdline[8300];
        snprintf(cmdline, sizeof cmdline, "rm -rf '%s'", tmp);
        if (system(cmdline)) { /* best effort */
        }
    }
    return rc;
}

static int run_synth(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_synth;
    dp_err err;
    dp_err_clear(&err);
    const char *out = dp_cli_get(app, cmd, "--out"), *tokdir = dp_cli_get(app, cmd, "--tokenizer");
    int rc = DP_OK;
    if (!out || !tokdir)
        rc = dp_err_set(&err, DP_E_USAGE, "--out DIR and --tokenizer DIR are required");
    else if (app->mpi.rank == 0)
        rc = synth(app, cmd, out, tokdir, &err);
    rc = dp_mpi_agree(&app->mpi, rc, &err);
    if (rc) return dp_cli_fail(app, &err);
    dp_log0("synth: wrote %s", out);
    return 0;
}

const dp_cmd dp_cmd_synth = {
    "synth",
    "write a randomly initialised LLaMA (HF layout) with a real tokenizer, for tests and demos",
    "--out DIR --tokenizer DIR [--layers 8 --hidden 256 --heads 8 --kv-heads 4 --intermediate 688]",
    k_synth_opts,
    0,
    run_synth,
    0,
    0};
