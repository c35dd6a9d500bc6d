/* config.json parsing for LLaMA-family models and the weights-vs-config
 * check. Everything a later stage relies on is validated here, once. */
#include "depthprune/hfconfig.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const dp_llama_block_suffix[DP_LLAMA_BLOCK_TENSORS] = {
    "input_layernorm.weight",  "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",    "mlp.up_proj.weight",      "mlp.down_proj.weight",
};

static int get_int(const cJSON *root, const char *key, int64_t *out, int required, const char *path, dp_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return dp_err_set(err, DP_E_FORMAT, "%s: missing required field '%s'", path, key);
        return 1; /* absent */
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 9e15)
        return dp_err_set(err, DP_E_FORMAT, "%s: field '%s' must be an integer", path, key);
    *out = (int64_t)v->valuedouble;
    return 0;
}

static int get_num(const cJSON *root, const char *key, double *out, const char *path, dp_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 1;
    if (!cJSON_IsNumber(v)) return dp_err_set(err, DP_E_FORMAT, "%s: field '%s' must be a number", path, key);
    *out = v->valuedouble;
    return 0;
}

static int parse_rope(const cJSON *rs, const char *path, dp_llama_config *c, dp_err *err) {
    if (!rs || cJSON_IsNull(rs)) return DP_OK;
    if (!cJSON_IsObject(rs)) return dp_err_set(err, DP_E_FORMAT, "%s: rope scaling must be an object", path);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!t) t = cJSON_GetObjectItemCaseSensitive(rs, "type"); /* legacy spelling */
    double theta = 0.0;
    if (get_num(rs, "rope_theta", &theta, path, err) == 0) c->rope_theta = theta; /* transformers 5 */
    if (err && err->code) return err->code;
    const char *type = cJSON_IsString(t) ? t->valuestring : "default";
    if (!strcmp(type, "default")) {
        c->rope_type = DP_ROPE_DEFAULT;
        return DP_OK;
    }
    if (get_num(rs, "factor", &c->rope_factor, path, err) != 0)
        return dp_err_set(err, DP_E_FORMAT, "%s: rope scaling '%s' needs a numeric 'factor'", path, type);
    if (!(c->rope_factor > 0)) return dp_err_set(err, DP_E_FORMAT, "%s: rope scaling factor must be positive", path);
    if (!strcmp(type, "linear")) {
        c->rope_type = DP_ROPE_LINEAR;
        return DP_OK;
    }
    if (!strcmp(type, "llama3")) {
        c->rope_type = DP_ROPE_LLAMA3;
        if (get_num(rs, "low_freq_factor", &c->rope_low_freq_factor, path, err) ||
            get_num(rs, "high_freq_factor", &c->rope_high_freq_factor, path, err) ||
            get_int(rs, "original_max_position_embeddings", &c->rope_original_max_position_embeddings, 1, path, err))
            return dp_err_set(err, DP_E_FORMAT,
                              "%s: llama3 rope scaling needs factor, low_freq_factor, "
                              "high_freq_factor and original_max_position_embeddings",
                              path);
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return dp_err_set(err, DP_E_FORMAT, "%s: llama3 rope: high_freq_factor must exceed low_freq_factor", path);
        return DP_OK;
    }
    return dp_err_set(err, DP_E_UNSUPPORTED, "%s: rope scaling type '%s' is not supported (default, linear, llama3)",
                      path, type);
}

int dp_llama_config_parse(const char *text, size_t len, const char *path, dp_llama_config *c, dp_err *err) {
    memset(c, 0, sizeof *c);
    dp_err_clear(err);
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dp_err_set(err, DP_E_FORMAT, "%s: not a JSON object", path);
    }
    int rc = DP_OK;
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const char *a = cJSON_IsArray(arch) && cJSON_IsString(arch->child) ? arch->child->valuestring : NULL;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (cJSON_IsString(mt)) snprintf(c->model_type, sizeof c->model_type, "%s", mt->valuestring);
    if (!a) {
        if (!strcmp(c->model_type, "llama"))
            a = "LlamaForCausalLM";
        else if (!strcmp(c->model_type, "mistral"))
            a = "MistralForCausalLM";
    }
    if (!a) {
        rc = dp_err_set(err, DP_E_UNSUPPORTED, "%s: no 'architectures' or known 'model_type'", path);
        goto done;
    }
    snprintf(c->architecture, sizeof c->architecture, "%s", a);
    if (strcmp(a, "LlamaForCausalLM") && strcmp(a, "MistralForCausalLM")) {
        rc = dp_err_set(err, DP_E_UNSUPPORTED,
                        "%s: architecture '%s' is not supported (LlamaForCausalLM, MistralForCausalLM)", path, a);
        goto done;
    }
    if ((rc = get_int(root, "hidden_size", &c->hidden_size, 1, path, err)) ||
        (rc = get_int(root, "intermediate_size", &c->intermediate_size, 1, path, err)) ||
        (rc = get_int(root, "num_hidden_layers", &c->n_layers, 1, path, err)) ||
        (rc = get_int(root, "num_attention_heads", &c->n_heads, 1, path, err)) ||
        (rc = get_int(root, "vocab_size", &c->vocab_size, 1, path, err)))
        goto done;
    c->n_kv_heads = c->n_heads;
    if ((rc = get_int(root, "num_key_value_heads", &c->n_kv_heads, 0, path, err)) > 1) goto done;
    c->head_dim = c->n_heads > 0 ? c->hidden_size / c->n_heads : 0;
    if ((rc = get_int(root, "head_dim", &c->head_dim, 0, path, err)) > 1) goto done;
    c->max_position_embeddings = 2048;
    if ((rc = get_int(root, "max_position_embeddings", &c->max_position_embeddings, 0, path, err)) > 1) goto done;
    c->rms_norm_eps = 1e-6;
    if ((rc = get_num(root, "rms_norm_eps", &c->rms_norm_eps, path, err)) > 1) goto done;
    c->rope_theta = 10000.0;
    if ((rc = get_num(root, "rope_theta", &c->rope_theta, path, err)) > 1) goto done;
    rc = DP_OK;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (!rs || cJSON_IsNull(rs)) rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if ((rc = parse_rope(rs, path, c, err))) goto done;
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    c->tie_word_embeddings = cJSON_IsTrue(tie);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu"))) {
        rc = dp_err_set(err, DP_E_UNSUPPORTED, "%s: hidden_act must be \"silu\"", path);
        goto done;
    }
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(root, "attention_bias");
    const cJSON *mb = cJSON_GetObjectItemCaseSensitive(root, "mlp_bias");
    if (cJSON_IsTrue(ab) || cJSON_IsTrue(mb)) {
        rc = dp_err_set(err, DP_E_UNSUPPORTED, "%s: attention_bias/mlp_bias are not supported", path);
        goto done;
    }
    c->bos_token_id = -1;
    if ((rc = get_int(root, "bos_token_id", &c->bos_token_id, 0, path, err)) > 1) goto done;
    rc = DP_OK;
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (cJSON_IsNumber(eos)) {
        if (fabs(eos->valuedouble) > 9e15) {
            rc = dp_err_set(err, DP_E_FORMAT, "%s: eos_token_id must be an integer", path);
            goto done;
        }
        c->eos_token_ids[c->n_eos++] = (int64_t)eos->valuedouble;
    } else if (cJSON_IsArray(eos)) {
        for (const cJSON *e = eos->child; e && c->n_eos < DP_MAX_EOS; e = e->next) {
            if (!cJSON_IsNumber(e) || fabs(e->valuedouble) > 9e15) {
                rc = dp_err_set(err, DP_E_FORMAT, "%s: eos_token_id list must hold integers", path);
                goto done;
            }
            c->eos_token_ids[c->n_eos++] = (int64_t)e->valuedouble;
        }
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
    if (!cJSON_IsString(dt)) dt = cJSON_GetObjectItemCaseSensitive(root, "dtype");
    if (cJSON_IsString(dt)) snprintf(c->torch_dtype, sizeof c->torch_dtype, "%s", dt->valuestring);
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
    if (cJSON_IsNumber(sw) && fabs(sw->valuedouble) <= 9e15) c->sliding_window = (int64_t)sw->valuedouble;

    /* sanity of the shape-defining fields */
    if (c->hidden_size <= 0 || c->intermediate_size <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->vocab_size <= 0) {
        rc = dp_err_set(err, DP_E_FORMAT, "%s: sizes must be positive", path);
        goto done;
    }
    if (c->n_heads % c->n_kv_heads) {
        rc = dp_err_set(err, DP_E_FORMAT,
                        "%s: num_attention_heads (%lld) must be a multiple of num_key_value_heads (%lld)", path,
                        (long long)c->n_heads, (long long)c->n_kv_heads);
        goto done;
    }
    if (c->head_dim % 2) {
        rc = dp_err_set(err, DP_E_FORMAT, "%s: head_dim (%lld) must be even for RoPE", path, (long long)c->head_dim);
        goto done;
    }
    if (!(c->rms_norm_eps > 0) || !(c->rope_theta > 0)) {
        rc = dp_err_set(err, DP_E_FORMAT, "%s: rms_norm_eps and rope_theta must be positive", path);
        goto done;
    }
    if (c->n_layers > DP_MAX_LAYERS) {
        rc = dp_err_set(err, DP_E_UNSUPPORTED, "%s: num_hidden_layers %lld is above %d", path, (long long)c->n_layers,
                        DP_MAX_LAYERS);
        goto done;
    }
    for (int64_t l = 0; l < c->n_layers; l++) {
        c->layer_heads[l] = c->n_heads;
        c->layer_kv_heads[l] = c->n_kv_heads;
        c->layer_inter[l] = c->intermediate_size;
    }
    const cJSON *wd = cJSON_GetObjectItemCaseSensitive(root, "depthprune_width");
    if (wd && !cJSON_IsNull(wd)) {
        const char *keys[3] = {"num_attention_heads", "num_key_value_heads", "intermediate_size"};
        int64_t *dst[3] = {c->layer_heads, c->layer_kv_heads, c->layer_inter};
        const int64_t max[3] = {c->n_heads, c->n_kv_heads, c->intermediate_size};
        if (!cJSON_IsObject(wd)) rc = dp_err_set(err, DP_E_FORMAT, "%s: depthprune_width must be an object", path);
        for (int k = 0; k < 3 && !rc; k++) {
            const cJSON *arr = cJSON_GetObjectItemCaseSensitive(wd, keys[k]);
            if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != c->n_layers) {
                rc = dp_err_set(err, DP_E_FORMAT, "%s: depthprune_width.%s must list %lld integers (one per block)",
                                path, keys[k], (long long)c->n_layers);
                break;
            }
            int64_t l = 0;
            for (const cJSON *e = arr->child; e && !rc; e = e->next, l++) {
                if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 1 ||
                    e->valuedouble > (double)max[k])
                    rc = dp_err_set(err, DP_E_FORMAT, "%s: depthprune_width.%s[%lld] must be an integer in 1..%lld",
                                    path, keys[k], (long long)l, (long long)max[k]);
                else
                    dst[k][l] = (int64_t)e->valuedouble;
            }
        }
        for (int64_t l = 0; l < c->n_layers && !rc; l++)
            if (c->layer_heads[l] * c->n_kv_heads != c->layer_kv_heads[l] * c->n_heads)
                rc = dp_err_set(err, DP_E_FORMAT,
                                "%s: depthprune_width: block %lld has %lld query heads for %lld kv heads; every block "
                                "keeps %lld query heads per kv head",
                                path, (long long)l, (long long)c->layer_heads[l], (long long)c->layer_kv_heads[l],
                                (long long)(c->n_heads / c->n_kv_heads));
        if (rc) goto done;
        c->width_varies = 1;
    }
    const cJSON *dpb = cJSON_GetObjectItemCaseSensitive(root, "depthprune");
    for (int k = 0; k < 2 && cJSON_IsObject(dpb); k++) { /* sub-layers a pruned export left out */
        const char *key = k ? "skip_mlp" : "skip_attn";
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(dpb, key);
        if (!arr || cJSON_IsNull(arr)) continue;
        if (!cJSON_IsArray(arr)) {
            rc = dp_err_set(err, DP_E_FORMAT, "%s: depthprune.%s must be a list of block indices", path, key);
            goto done;
        }
        for (const cJSON *e = arr->child; e; e = e->next) {
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
                e->valuedouble >= (double)c->n_layers) {
                rc = dp_err_set(err, DP_E_FORMAT, "%s: depthprune.%s holds %s, not a block index in 0..%lld", path, key,
                                cJSON_IsNumber(e) ? "a number out of range" : "a non-number",
                                (long long)c->n_layers - 1);
                goto done;
            }
            c->layer_skip[(int64_t)e->valuedouble] |= (unsigned char)(k ? DP_SKIP_MLP : DP_SKIP_ATTN);
        }
    }
    c->json_text = dp_malloc(len + 1, "config");
    memcpy(c->json_text, text, len);
    c->json_text[len] = '\0';
done:
    cJSON_Delete(root);
    return rc;
}

int dp_llama_config_load(const char *model_dir, dp_llama_config *c, dp_err *err) {
    char *path = dp_path_join(model_dir, "config.json");
    char *text;
    size_t len;
    int rc = dp_read_file(path, &text, &len, err);
    if (rc == DP_OK) {
        rc = dp_llama_config_parse(text, len, path, c, err);
        dp_free(text);
    }
    dp_free(path);
    return rc;
}

void dp_llama_config_free(dp_llama_config *c) {
    dp_free(c->json_text);
    c->json_text = NULL;
}

int64_t dp_llama_block_param_count(const dp_llama_config *c) {
    int64_t C = c->hidden_size, q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    return 2 * C + C * q + 2 * C * kv + q * C + 3 * C * c->intermediate_size;
}

int64_t dp_llama_layer_param_count(const dp_llama_config *c, int l) {
    int64_t C = c->hidden_size, q = c->layer_heads[l] * c->head_dim, kv = c->layer_kv_heads[l] * c->head_dim;
    return 2 * C + C * q + 2 * C * kv + q * C + 3 * C * c->layer_inter[l];
}

int64_t dp_llama_param_count(const dp_llama_config *c) {
    int64_t emb = c->vocab_size * c->hidden_size, n = emb * (c->tie_word_embeddings ? 1 : 2) + c->hidden_size;
    for (int l = 0; l < c->n_layers; l++) n += dp_llama_layer_param_count(c, l);
    return n;
}

static int check_one(const dp_st_model *m, const char *name, int ndim, int64_t d0, int64_t d1, dp_err *err) {
    const dp_st_tensor *t = dp_st_model_find(m, name);
    if (!t) return dp_err_set(err, DP_E_MISMATCH, "%s: tensor '%s' is missing", m->dir, name);
    int same = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!same) {
        char got[128] = "[";
        for (int i = 0; i < t->ndim; i++) {
            char b[32];
            snprintf(b, sizeof b, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
            strncat(got, b, sizeof got - strlen(got) - 2);
        }
        strcat(got, "]");
        if (ndim == 1)
            return dp_err_set(err, DP_E_MISMATCH, "%s: tensor '%s' has shape %s, config implies [%lld]", m->dir, name,
                              got, (long long)d0);
        return dp_err_set(err, DP_E_MISMATCH, "%s: tensor '%s' has shape %s, config implies [%lld, %lld]", m->dir, name,
                          got, (long long)d0, (long long)d1);
    }
    if (t->dtype != DP_DTYPE_F32 && t->dtype != DP_DTYPE_F16 && t->dtype != DP_DTYPE_BF16)
        return dp_err_set(err, DP_E_UNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, F16, BF16 supported)", m->dir,
                          name, t->dtype_name);
    return DP_OK;
}

int dp_llama_check_weights(const dp_llama_config *c, const dp_st_model *m, dp_err *err) {
    int64_t C = c->hidden_size;
    int rc;
    if ((rc = check_one(m, "model.embed_tokens.weight", 2, c->vocab_size, C, err))) return rc;
    if ((rc = check_one(m, "model.norm.weight", 1, C, 0, err))) return rc;
    char name[160];
    for (int64_t l = 0; l < c->n_layers; l++)
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
            int64_t q = c->layer_heads[l] * c->head_dim, kv = c->layer_kv_heads[l] * c->head_dim, F = c->layer_inter[l];
            const int64_t dims[DP_LLAMA_BLOCK_TENSORS][3] = {
                {1, C, 0}, {2, q, C}, {2, kv, C}, {2, kv, C}, {2, C, q}, {1, C, 0}, {2, F, C}, {2, F, C}, {2, C, F},
            };
            snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, dp_llama_block_suffix[k]);
            if ((rc = check_one(m, name, (int)dims[k][0], dims[k][1], dims[k][2], err))) return rc;
        }
    const dp_st_tensor *head = dp_st_model_find(m, "lm_head.weight");
    if (!c->tie_word_embeddings) {
        if (!head)
            return dp_err_set(err, DP_E_MISMATCH,
                              "%s: tensor 'lm_head.weight' is missing (tie_word_embeddings is false)", m->dir);
        if ((rc = check_one(m, "lm_head.weight", 2, c->vocab_size, C, err))) return rc;
    } else if (head) {
        const dp_st_tensor *emb = dp_st_model_find(m, "model.embed_tokens.weight");
        if (head->dtype != emb->dtype || dp_st_numel(head) != dp_st_numel(emb) ||
            memcmp(head->data, emb->data, head->end - head->begin) != 0)
            return dp_err_set(err, DP_E_MISMATCH,
                              "%s: tie_word_embeddings is true but lm_head.weight differs from "
                              "model.embed_tokens.weight",
                              m->dir);
    }
    /* nothing unexpected */
    for (int i = 0; i < m->n_tensors; i++) {
        const char *n = m->tensors[i]->name;
        if (!strcmp(n, "model.embed_tokens.weight") || !strcmp(n, "model.norm.weight") || !strcmp(n, "lm_head.weight"))
            continue;
        long long l;
        int off = 0;
        if (sscanf(n, "model.layers.%lld.%n", &l, &off) == 1 && off > 0) {
            const char *suffix = n + off;
            int known = l >= 0 && l < c->n_layers;
            int ok = 0;
            for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS && known; k++)
                if (!strcmp(suffix, dp_llama_block_suffix[k])) ok = 1;
            if (!strcmp(suffix, "self_attn.rotary_emb.inv_freq")) ok = 1; /* old converters' leftover */
            if (ok) continue;
            if (!known)
                return dp_err_set(err, DP_E_MISMATCH,
                                  "%s: tensor '%s' belongs to layer %lld but the config has %lld layers", m->dir, n, l,
                                  (long long)c->n_layers);
        }
        return dp_err_set(err, DP_E_MISMATCH, "%s: unexpected tensor '%s' for %s", m->dir, n, c->architecture);
    }
    return DP_OK;
}
