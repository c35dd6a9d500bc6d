/* HF model directory export (see export.h). */
#include "depthprune/export.h"
#include "depthprune/llama.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const k_tokenizer_files[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "generation_config.json",
};

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = dp_path_join(dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(p); /* the adapter subdirectory */
        else
            unlink(p);
        dp_free(p);
    }
    closedir(d);
    rmdir(dir);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int dp_parse_block_list(const char *s, int64_t n_layers, int64_t **out, int64_t *n_out, dp_err *err) {
    *out = NULL;
    *n_out = 0;
    int64_t *v = dp_malloc(sizeof(int64_t) * (strlen(s) + 1), "blocks");
    int64_t n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long long x = strtoll(p, &end, 10);
        if (end == p || (*end && *end != ',')) {
            dp_free(v);
            return dp_err_set(err, DP_E_USAGE, "block list '%s': expected integers separated by commas", s);
        }
        if (x < 0 || x >= n_layers) {
            dp_free(v);
            return dp_err_set(err, DP_E_RANGE, "block list '%s': block %lld outside [0, %lld)", s, x,
                              (long long)n_layers);
        }
        v[n++] = x;
        p = *end ? end + 1 : end;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if (k == 0 || v[k - 1] != v[i]) v[k++] = v[i];
    *out = v;
    *n_out = k;
    return DP_OK;
}

static char *export_config(const dp_llama_config *c, const int64_t *keep, int64_t n_layers, const char *dtype_name,
                           const char *provenance, dp_err *err) {
    cJSON *root = cJSON_Parse(c->json_text);
    if (!root) {
        dp_err_set(err, DP_E_FORMAT, "config.json could not be re-read");
        return NULL;
    }
    cJSON_ReplaceItemInObjectCaseSensitive(root, "num_hidden_layers", cJSON_CreateNumber((double)n_layers));
    if (!cJSON_GetObjectItemCaseSensitive(root, "num_hidden_layers"))
        cJSON_AddNumberToObject(root, "num_hidden_layers", (double)n_layers);
    /* legacy spelling that transformers 4 and 5 both read */
    cJSON_DeleteItemFromObjectCaseSensitive(root, "rope_parameters");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "rope_scaling");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "rope_theta");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "dtype");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "torch_dtype");
    cJSON_AddNumberToObject(root, "rope_theta", c->rope_theta);
    if (c->rope_type == DP_ROPE_DEFAULT) {
        cJSON_AddNullToObject(root, "rope_scaling");
    } else {
        cJSON *rs = cJSON_AddObjectToObject(root, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", c->rope_type == DP_ROPE_LINEAR ? "linear" : "llama3");
        cJSON_AddNumberToObject(rs, "factor", c->rope_factor);
        if (c->rope_type == DP_ROPE_LLAMA3) {
            cJSON_AddNumberToObject(rs, "low_freq_factor", c->rope_low_freq_factor);
            cJSON_AddNumberToObject(rs, "high_freq_factor", c->rope_high_freq_factor);
            cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
                                    (double)c->rope_original_max_position_embeddings);
        }
    }
    if (!cJSON_GetObjectItemCaseSensitive(root, "num_key_value_heads"))
        cJSON_AddNumberToObject(root, "num_key_value_heads", (double)c->n_kv_heads);
    cJSON_AddStringToObject(root, "torch_dtype", dtype_name);
    cJSON_DeleteItemFromObjectCaseSensitive(root, "depthprune_width");
    if (c->width_varies) { /* the kept blocks' own sizes */
        cJSON *wd = cJSON_AddObjectToObject(root, "depthprune_width");
        const char *keys[3] = {"num_attention_heads", "num_key_value_heads", "intermediate_size"};
        const int64_t *src[3] = {c->layer_heads, c->layer_kv_heads, c->layer_inter};
        for (int k = 0; k < 3; k++) {
            cJSON *a = cJSON_AddArrayToObject(wd, keys[k]);
            for (int64_t i = 0; i < n_layers; i++)
                cJSON_AddItemToArray(a, cJSON_CreateNumber((double)src[k][keep ? keep[i] : i]));
        }
    }
    cJSON_DeleteItemFromObjectCaseSensitive(root, "depthprune");
    cJSON *dpb = NULL;
    if (provenance) {
        dpb = cJSON_Parse(provenance);
        if (!dpb) {
            cJSON_Delete(root);
            dp_err_set(err, DP_E_FORMAT, "provenance is not valid JSON");
            return NULL;
        }
    }
    for (int k = 0; k < 2; k++) { /* the removed sub-layers, by block index of the export */
        int what = k ? DP_SKIP_MLP : DP_SKIP_ATTN, any = 0;
        for (int64_t i = 0; i < n_layers; i++) any |= c->layer_skip[keep ? keep[i] : i] & what;
        if (!any) continue;
        if (!dpb) dpb = cJSON_CreateObject();
        cJSON *a = cJSON_AddArrayToObject(dpb, k ? "skip_mlp" : "skip_attn");
        for (int64_t i = 0; i < n_layers; i++)
            if (c->layer_skip[keep ? keep[i] : i] & what) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)i));
    }
    if (dpb) cJSON_AddItemToObject(root, "depthprune", dpb);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    char *out = dp_strdup(text, "config");
    free(text);
    return out;
}

/* An entry's data replaced by zeros of its dtype and shape (owned by *owned). */
static void zero_entry(dp_st_entry *e, void **owned) {
    int64_t numel = 1;
    for (int d = 0; d < e->ndim; d++) numel *= e->shape[d];
    void *z = dp_calloc((size_t)numel * dp_dtype_size(e->dtype) + 1, 1, "export");
    dp_free(*owned);
    *owned = z;
    e->data = z;
}

static const char *torch_name(int dtype) {
    return dtype == DP_DTYPE_BF16 ? "bfloat16" : dtype == DP_DTYPE_F16 ? "float16" : "float32";
}

int dp_export_model(const char *src_dir, const dp_llama_config *c, const dp_st_model *m, const char *out_dir,
                    const dp_export_opts *o, dp_err *err) {
    struct stat st;
    if (stat(out_dir, &st) == 0)
        return dp_err_set(err, DP_E_IO, "%s: already exists; refusing to overwrite it", out_dir);
    size_t tl = strlen(out_dir) + 32;
    char *tmp = dp_malloc(tl, "path");
    snprintf(tmp, tl, "%s.tmp-%d", out_dir, (int)getpid());
    remove_tree(tmp);
    if (mkdir(tmp, 0755) != 0) {
        int rc = dp_err_set(err, DP_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
        dp_free(tmp);
        return rc;
    }
    int64_t n_keep = o->keep ? o->n_keep : c->n_layers;
    int n_entries = 3 + (int)n_keep * DP_LLAMA_BLOCK_TENSORS;
    dp_st_entry *e = dp_calloc((size_t)n_entries, sizeof *e, "export");
    void **owned = dp_calloc((size_t)n_entries, sizeof(void *), "export");
    char **names = dp_calloc((size_t)n_entries, sizeof(char *), "export");
    int n = 0, rc = DP_OK;
    int out_dtype = o->dtype;
    for (int pass = 0; pass < 3 + (int)n_keep * DP_LLAMA_BLOCK_TENSORS && rc == DP_OK; pass++) {
        char src_name[160], dst_name[160];
        if (pass == 0) {
            snprintf(src_name, sizeof src_name, "model.embed_tokens.weight");
        } else if (pass == 1) {
            snprintf(src_name, sizeof src_name, "model.norm.weight");
        } else if (pass == 2) {
            if (c->tie_word_embeddings) continue;
            snprintf(src_name, sizeof src_name, "lm_head.weight");
        } else {
            int64_t k = (pass - 3) / DP_LLAMA_BLOCK_TENSORS;
            int s = (pass - 3) % DP_LLAMA_BLOCK_TENSORS;
            int64_t orig = o->keep ? o->keep[k] : k;
            snprintf(src_name, sizeof src_name, "model.layers.%lld.%s", (long long)orig, dp_llama_block_suffix[s]);
            snprintf(dst_name, sizeof dst_name, "model.layers.%lld.%s", (long long)k, dp_llama_block_suffix[s]);
        }
        if (pass < 3) snprintf(dst_name, sizeof dst_name, "%s", src_name);
        /* a removed sub-layer: its output projection is written as zeros (the same function) */
        int zeroed = 0;
        if (pass >= 3) {
            int64_t k = (pass - 3) / DP_LLAMA_BLOCK_TENSORS, orig = o->keep ? o->keep[k] : k;
            int s = (pass - 3) % DP_LLAMA_BLOCK_TENSORS;
            zeroed = (s == DP_BT_O && (c->layer_skip[orig] & DP_SKIP_ATTN)) ||
                     (s == DP_BT_DOWN && (c->layer_skip[orig] & DP_SKIP_MLP));
        }
        const dp_st_entry *me = NULL;
        for (int i = 0; i < o->n_mem; i++)
            if (!strcmp(o->mem[i].name, src_name)) me = &o->mem[i];
        if (me) {
            if (out_dtype < 0) out_dtype = me->dtype;
            names[n] = dp_strdup(dst_name, "export");
            e[n] = *me;
            e[n].name = names[n];
            e[n].dtype = o->dtype >= 0 ? (dp_dtype)o->dtype : me->dtype;
            if (e[n].dtype != me->dtype) {
                if (me->dtype != DP_DTYPE_F32) {
                    rc = dp_err_set(err, DP_E_UNSUPPORTED, "export: in-memory tensor %s must be F32", src_name);
                    break;
                }
                int64_t numel = 1;
                for (int d = 0; d < me->ndim; d++) numel *= me->shape[d];
                void *conv = dp_malloc((size_t)numel * dp_dtype_size(e[n].dtype) + 1, "export");
                dp_convert_from_f32(conv, e[n].dtype, me->data, (size_t)numel);
                owned[n] = conv;
                e[n].data = conv;
            }
            if (zeroed) zero_entry(&e[n], &owned[n]);
            n++;
            continue;
        }
        const dp_st_tensor *t = m ? dp_st_model_find(m, src_name) : NULL;
        if (!t) {
            rc = dp_err_set(err, DP_E_MISMATCH, "%s: tensor '%s' is missing", src_dir, src_name);
            break;
        }
        if (out_dtype < 0) out_dtype = t->dtype;
        names[n] = dp_strdup(dst_name, "export");
        e[n].name = names[n];
        e[n].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) e[n].shape[d] = t->shape[d];
        e[n].dtype = (dp_dtype)(o->dtype >= 0 ? o->dtype : t->dtype);
        if (e[n].dtype == (dp_dtype)t->dtype) {
            e[n].data = t->data; /* straight from the mapping: no copy */
        } else {
            float *f32 = dp_st_to_f32(t, "export");
            int64_t numel = dp_st_numel(t);
            void *conv = dp_malloc((size_t)numel * dp_dtype_size(e[n].dtype) + 1, "export");
            dp_convert_from_f32(conv, e[n].dtype, f32, (size_t)numel);
            dp_free(f32);
            owned[n] = conv;
            e[n].data = conv;
        }
        if (zeroed) zero_entry(&e[n], &owned[n]);
        n++;
    }
    if (rc == DP_OK) rc = dp_st_write_model(tmp, e, n, o->max_shard_bytes ? o->max_shard_bytes : 5000000000ull, err);
    if (rc == DP_OK) {
        char *cfg = export_config(c, o->keep, n_keep, torch_name(out_dtype), o->provenance, err);
        if (!cfg) {
            rc = err->code;
        } else {
            char *p = dp_path_join(tmp, "config.json");
            rc = dp_write_file_atomic(p, cfg, strlen(cfg), err);
            dp_free(p);
            dp_free(cfg);
        }
    }
    for (size_t i = 0; rc == DP_OK && i < sizeof k_tokenizer_files / sizeof *k_tokenizer_files; i++) {
        char *src = dp_path_join(src_dir, k_tokenizer_files[i]);
        if (dp_file_exists(src)) {
            char *dst = dp_path_join(tmp, k_tokenizer_files[i]);
            rc = dp_copy_file(src, dst, err);
            dp_free(dst);
        }
        dp_free(src);
    }
    if (rc == DP_OK && o->finish) rc = o->finish(tmp, o->finish_ctx, err);
    if (rc == DP_OK && rename(tmp, out_dir) != 0)
        rc = dp_err_set(err, DP_E_IO, "%s: rename from %s failed: %s", out_dir, tmp, strerror(errno));
    if (rc == DP_OK) {
        char *parent = dp_path_dirname(out_dir);
        rc = dp_fsync_dir(parent, err);
        dp_free(parent);
    } else {
        remove_tree(tmp);
    }
    for (int i = 0; i < n_entries; i++) {
        dp_free(owned[i]);
        dp_free(names[i]);
    }
    dp_free(owned);
    dp_free(names);
    dp_free(e);
    dp_free(tmp);
    return rc;
}
