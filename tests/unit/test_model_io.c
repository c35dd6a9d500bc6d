/* HF model directories: config.json parsing (both transformers spellings),
 * weights-vs-config checks with their error messages, and export of a
 * depth-pruned model (renumbered blocks, bit-identical weights, updated
 * config, provenance, sharding, no overwrite). */
#include <sys/stat.h>
#include <unistd.h>

#include "../test.h"
#include "depthprune/export.h"
#include "depthprune/hfconfig.h"

enum { L = 4, C = 16, NH = 4, NKV = 2, HD = 4, F = 24, V = 40 };

static const char *k_config =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 16,"
    " \"intermediate_size\": 24, \"num_hidden_layers\": 4, \"num_attention_heads\": 4,"
    " \"num_key_value_heads\": 2, \"vocab_size\": 40, \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0,"
    " \"rope_scaling\": null, \"tie_word_embeddings\": false, \"bos_token_id\": 1, \"eos_token_id\": 2,"
    " \"hidden_act\": \"silu\", \"max_position_embeddings\": 128, \"torch_dtype\": \"bfloat16\"}";

static void write_text(const char *dir, const char *name, const char *text) {
    char *p = dp_path_join(dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    dp_free(p);
}

/* A tiny random model; drop_name removes one tensor, extra adds one. */
static void make_model(const char *dir, const char *config, const char *drop_name, int extra) {
    mkdir(dir, 0755);
    write_text(dir, "config.json", config);
    dp_st_entry e[3 + L * 9 + 1];
    int n = 0;
    static uint16_t pool[200000];
    size_t used = 0;
    int64_t shapes[9][2] = {{C, 0}, {NH * HD, C}, {NKV * HD, C}, {NKV * HD, C}, {C, NH * HD},
                            {C, 0}, {F, C},       {F, C},        {C, F}};
    char names[3 + L * 9 + 1][96];
#define ADD(nm, d0, d1)                                                                                                \
    do {                                                                                                               \
        snprintf(names[n], sizeof names[n], "%s", nm);                                                                 \
        if (!drop_name || strcmp(drop_name, names[n])) {                                                               \
            e[n].name = names[n];                                                                                      \
            e[n].dtype = DP_DTYPE_BF16;                                                                                \
            e[n].ndim = (d1) ? 2 : 1;                                                                                  \
            e[n].shape[0] = d0;                                                                                        \
            e[n].shape[1] = d1;                                                                                        \
            size_t cnt = (size_t)(d0) * (size_t)((d1) ? (d1) : 1);                                                     \
            for (size_t q = 0; q < cnt; q++)                                                                           \
                pool[used + q] = dp_f32_to_bf16((float)((used + q) % 113) / 50.0f - 1.0f);                             \
            e[n].data = pool + used;                                                                                   \
            used += cnt;                                                                                               \
            n++;                                                                                                       \
        }                                                                                                              \
    } while (0)
    ADD("model.embed_tokens.weight", V, C);
    ADD("model.norm.weight", C, 0);
    ADD("lm_head.weight", V, C);
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 9; k++) {
            char nm[96];
            snprintf(nm, sizeof nm, "model.layers.%d.%s", l, dp_llama_block_suffix[k]);
            ADD(nm, shapes[k][0], shapes[k][1]);
        }
    if (extra) ADD("model.layers.0.mlp.extra_proj.weight", 2, 2);
    dp_err err;
    if (dp_st_write_model(dir, e, n, 5000, &err) != DP_OK) fprintf(stderr, "write failed: %s\n", err.msg);
}

static int open_all(const char *dir, dp_llama_config *c, dp_st_model *m, dp_err *err) {
    int rc = dp_llama_config_load(dir, c, err);
    if (rc) return rc;
    rc = dp_st_model_open(dir, m, err);
    if (rc) {
        dp_llama_config_free(c);
        return rc;
    }
    rc = dp_llama_check_weights(c, m, err);
    if (rc) {
        dp_st_model_close(m);
        dp_llama_config_free(c);
    }
    return rc;
}

static void expect_model_error(const char *root, const char *name, const char *config, const char *drop, int extra,
                               const char *needle) {
    char dir[256];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    make_model(dir, config, drop, extra);
    dp_llama_config c;
    dp_st_model m;
    dp_err err;
    dp_err_clear(&err);
    int rc = open_all(dir, &c, &m, &err);
    CHECK_MSG(rc != DP_OK, "%s: accepted", name);
    if (rc == DP_OK) {
        dp_st_model_close(&m);
        dp_llama_config_free(&c);
    } else {
        CHECK_MSG(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", name, err.msg, needle);
    }
}

static char *replace(const char *s, const char *from, const char *to) {
    static char out[4096];
    const char *p = strstr(s, from);
    if (!p) return (char *)s;
    snprintf(out, sizeof out, "%.*s%s%s", (int)(p - s), s, to, p + strlen(from));
    return out;
}

static void test_config_spellings(void) {
    dp_llama_config c;
    dp_err err;
    const char *v5 =
        "{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 16, \"intermediate_size\": 24,"
        " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 1,"
        " \"head_dim\": 8, \"vocab_size\": 40, \"eos_token_id\": [128001, 128008, 128009],"
        " \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 8.0,"
        " \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192},"
        " \"dtype\": \"bfloat16\", \"tie_word_embeddings\": true, \"sliding_window\": 4096}";
    CHECK_MSG(dp_llama_config_parse(v5, strlen(v5), "v5.json", &c, &err) == DP_OK, "%s", err.msg);
    CHECK(c.rope_type == DP_ROPE_LLAMA3 && c.rope_theta == 500000.0 && c.rope_factor == 8.0);
    CHECK_EQ_INT(c.rope_original_max_position_embeddings, 8192);
    CHECK_EQ_INT(c.n_eos, 3);
    CHECK_EQ_INT(c.eos_token_ids[2], 128009);
    CHECK_EQ_INT(c.head_dim, 8);
    CHECK(c.tie_word_embeddings == 1 && !strcmp(c.torch_dtype, "bfloat16"));
    CHECK_EQ_INT(c.sliding_window, 4096);
    dp_llama_config_free(&c);
    const char *legacy =
        "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 8, \"num_hidden_layers\": 1,"
        " \"num_attention_heads\": 2, \"vocab_size\": 4, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}";
    CHECK_MSG(dp_llama_config_parse(legacy, strlen(legacy), "legacy.json", &c, &err) == DP_OK, "%s", err.msg);
    CHECK(c.rope_type == DP_ROPE_LINEAR && c.rope_factor == 2.0 && c.n_kv_heads == 2 && c.head_dim == 4);
    CHECK(!strcmp(c.architecture, "LlamaForCausalLM"));
    dp_llama_config_free(&c);
    const char *bad[][2] = {
        {"{\"architectures\": [\"GPT2LMHeadModel\"]}", "'GPT2LMHeadModel' is not supported"},
        {"[1]", "not a JSON object"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 8}", "missing required field 'intermediate_size'"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 8.5, \"intermediate_size\": 8, \"num_hidden_layers\": 1, "
         "\"num_attention_heads\": 2, \"vocab_size\": 4}",
         "'hidden_size' must be an integer"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 8, \"num_hidden_layers\": 1, "
         "\"num_attention_heads\": 3, \"num_key_value_heads\": 2, \"vocab_size\": 4}",
         "multiple of num_key_value_heads"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 8, \"num_hidden_layers\": 1, "
         "\"num_attention_heads\": 2, \"vocab_size\": 4, \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2}}",
         "'yarn' is not supported"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 8, \"num_hidden_layers\": 1, "
         "\"num_attention_heads\": 2, \"vocab_size\": 4, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8}}",
         "llama3 rope scaling needs"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 8, \"num_hidden_layers\": 1, "
         "\"num_attention_heads\": 2, \"vocab_size\": 4, \"hidden_act\": \"gelu\"}",
         "silu"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 8, \"num_hidden_layers\": 0, "
         "\"num_attention_heads\": 2, \"vocab_size\": 4}",
         "must be positive"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = dp_llama_config_parse(bad[i][0], strlen(bad[i][0]), "bad.json", &c, &err);
        CHECK_MSG(rc != DP_OK && strstr(err.msg, bad[i][1]), "config case %zu: rc %d msg '%s'", i, rc, err.msg);
        if (rc == DP_OK) dp_llama_config_free(&c);
    }
}

int main(void) {
    char root[] = "/tmp/dp_model_XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    test_config_spellings();

    char src[300], out[300];
    snprintf(src, sizeof src, "%s/src", root);
    make_model(src, k_config, NULL, 0);
    write_text(src, "tokenizer.json", "{}");
    dp_llama_config c;
    dp_st_model m;
    dp_err err;
    CHECK_MSG(open_all(src, &c, &m, &err) == DP_OK, "%s", err.msg);
    CHECK(m.n_files > 1); /* 5000-byte shards */
    CHECK_EQ_INT(dp_llama_param_count(&c), 2 * V * C + C + L * dp_llama_block_param_count(&c));

    /* export without blocks 1 and 2, as F32, sharded */
    snprintf(out, sizeof out, "%s/pruned", root);
    int64_t keep[2] = {0, 3};
    dp_export_opts o = {.keep = keep,
                        .n_keep = 2,
                        .dtype = DP_DTYPE_F32,
                        .max_shard_bytes = 4000,
                        .provenance = "{\"removed_blocks\": [1, 2], \"criterion\": \"ppl\"}"};
    CHECK_MSG(dp_export_model(src, &c, &m, out, &o, &err) == DP_OK, "%s", err.msg);
    dp_llama_config c2;
    dp_st_model m2;
    CHECK_MSG(open_all(out, &c2, &m2, &err) == DP_OK, "%s", err.msg);
    CHECK_EQ_INT(c2.n_layers, 2);
    CHECK(strstr(c2.json_text, "\"removed_blocks\"") && strstr(c2.json_text, "\"torch_dtype\":\t\"float32\""));
    CHECK(strstr(c2.json_text, "\"rope_theta\""));
    for (int k = 0; k < 9; k++) {
        char a[96], b[96];
        snprintf(a, sizeof a, "model.layers.3.%s", dp_llama_block_suffix[k]);
        snprintf(b, sizeof b, "model.layers.1.%s", dp_llama_block_suffix[k]);
        const dp_st_tensor *ta = dp_st_model_find(&m, a), *tb = dp_st_model_find(&m2, b);
        CHECK(ta && tb && tb->dtype == DP_DTYPE_F32);
        if (ta && tb) {
            float *fa = dp_st_to_f32(ta, "test"), *fb = dp_st_to_f32(tb, "test");
            CHECK(memcmp(fa, fb, sizeof(float) * (size_t)dp_st_numel(ta)) == 0); /* bf16 -> f32 is exact */
            dp_free(fa);
            dp_free(fb);
        }
    }
    CHECK(dp_st_model_find(&m2, "model.layers.2.mlp.up_proj.weight") == NULL);
    char *tj = dp_path_join(out, "tokenizer.json");
    CHECK(dp_file_exists(tj));
    dp_free(tj);
    dp_st_model_close(&m2);
    dp_llama_config_free(&c2);
    /* never overwrite */
    CHECK(dp_export_model(src, &c, &m, out, &o, &err) == DP_E_IO && strstr(err.msg, "already exists"));
    /* same dtype: the bytes are the source's, untouched */
    snprintf(out, sizeof out, "%s/same", root);
    dp_export_opts o2 = {.dtype = -1};
    CHECK_MSG(dp_export_model(src, &c, &m, out, &o2, &err) == DP_OK, "%s", err.msg);
    CHECK_MSG(open_all(out, &c2, &m2, &err) == DP_OK, "%s", err.msg);
    for (int i = 0; i < m.n_tensors; i++) {
        const dp_st_tensor *tb = dp_st_model_find(&m2, m.tensors[i]->name);
        CHECK(tb && tb->end - tb->begin == m.tensors[i]->end - m.tensors[i]->begin &&
              memcmp(tb->data, m.tensors[i]->data, tb->end - tb->begin) == 0);
    }
    dp_st_model_close(&m2);
    dp_llama_config_free(&c2);
    dp_st_model_close(&m);
    dp_llama_config_free(&c);

    /* weights that do not fit the config */
    expect_model_error(root, "wrong_hidden",
                       replace(k_config, "\"intermediate_size\": 24", "\"intermediate_size\": 32"), NULL, 0,
                       "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [24, 16], config implies [32, 16]");
    expect_model_error(root, "wrong_kv", replace(k_config, "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 4"),
                       NULL, 0, "self_attn.k_proj.weight' has shape [8, 16], config implies [16, 16]");
    expect_model_error(root, "missing", k_config, "model.layers.2.self_attn.o_proj.weight", 0,
                       "tensor 'model.layers.2.self_attn.o_proj.weight' is missing");
    expect_model_error(root, "no_head", k_config, "lm_head.weight", 0, "lm_head.weight' is missing");
    expect_model_error(root, "extra", k_config, NULL, 1, "unexpected tensor 'model.layers.0.mlp.extra_proj.weight'");
    expect_model_error(root, "fewer_layers", replace(k_config, "\"num_hidden_layers\": 4", "\"num_hidden_layers\": 3"),
                       NULL, 0, "belongs to layer 3 but the config has 3 layers");
    expect_model_error(root, "tied_differs",
                       replace(k_config, "\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true"), NULL, 0,
                       "lm_head.weight differs");
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK(system(cmd) == 0);
    TEST_EXIT();
}
