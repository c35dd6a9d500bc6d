/* Hugging Face config.json for LlamaForCausalLM / MistralForCausalLM, and
 * the check that a checkpoint holds exactly the tensors the config implies.
 * Accepts both the transformers-4 spelling (rope_theta, rope_scaling,
 * torch_dtype) and the transformers-5 one (rope_parameters, dtype). */
#ifndef DEPTHPRUNE_HFCONFIG_H
#define DEPTHPRUNE_HFCONFIG_H

#include <stdint.h>

#include "depthprune/core.h"
#include "depthprune/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { DP_ROPE_DEFAULT = 0, DP_ROPE_LINEAR, DP_ROPE_LLAMA3 } dp_rope_type;

#define DP_MAX_EOS 8

#define DP_MAX_LAYERS 256

/* A sub-layer left out of a kept block: its attention and/or its MLP adds nothing to the
 * residual stream (x + attn(ln(x)) becomes x). */
enum { DP_SKIP_ATTN = 1, DP_SKIP_MLP = 2 };

typedef struct dp_llama_config {
    char architecture[64]; /* "LlamaForCausalLM" */
    char model_type[32];   /* "llama", "mistral" */
    int64_t hidden_size, intermediate_size, n_layers, n_heads, n_kv_heads, head_dim;
    int64_t vocab_size, max_position_embeddings;
    double rms_norm_eps;
    double rope_theta;
    dp_rope_type rope_type;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int64_t rope_original_max_position_embeddings;
    int tie_word_embeddings;
    int64_t bos_token_id; /* -1 if absent */
    int n_eos;
    int64_t eos_token_ids[DP_MAX_EOS];
    char torch_dtype[16];   /* "bfloat16", "float16", "float32" or "" */
    int64_t sliding_window; /* Mistral; 0 if none */
    /* Per-block sizes: equal to the global ones, except in width-pruned
     * models, whose config.json holds "depthprune_width": {
     * "num_attention_heads": [..], "num_key_value_heads": [..],
     * "intermediate_size": [..]} (one entry per block, at most the global
     * value, the same query heads per kv head). transformers cannot load
     * such a model; depthprune can. */
    int width_varies;
    int64_t layer_heads[DP_MAX_LAYERS], layer_kv_heads[DP_MAX_LAYERS], layer_inter[DP_MAX_LAYERS];
    /* Sub-layers removed from a block (DP_SKIP_ATTN | DP_SKIP_MLP): a sub-layer-pruned export
     * keeps the block with that sub-layer's output projection (o_proj / down_proj) zero, so
     * it loads anywhere, and lists it in config.json's "depthprune": {"skip_attn": [..],
     * "skip_mlp": [..]} so depthprune skips the compute. */
    unsigned char layer_skip[DP_MAX_LAYERS];
    char *json_text; /* the file as read, for export */
} dp_llama_config;

/* Parses config.json text; path names the file in errors. */
int dp_llama_config_parse(const char *text, size_t len, const char *path, dp_llama_config *c, dp_err *err);
int dp_llama_config_load(const char *model_dir, dp_llama_config *c, dp_err *err);
void dp_llama_config_free(dp_llama_config *c);
/* Total parameter count implied by the config. */
int64_t dp_llama_param_count(const dp_llama_config *c);
int64_t dp_llama_block_param_count(const dp_llama_config *c);
/* Parameters of block l (its own sizes). */
int64_t dp_llama_layer_param_count(const dp_llama_config *c, int l);

/* Checks that the checkpoint has every tensor the config implies with the
 * right shape and a float dtype, nothing unexpected (rotary inv_freq is
 * ignored), and a consistent lm_head for tied/untied embeddings. */
int dp_llama_check_weights(const dp_llama_config *c, const dp_st_model *m, dp_err *err);

/* Names of the tensors of block i, in a fixed order (9 of them). */
#define DP_LLAMA_BLOCK_TENSORS 9
extern const char *const dp_llama_block_suffix[DP_LLAMA_BLOCK_TENSORS];

#ifdef __cplusplus
}
#endif
#endif
