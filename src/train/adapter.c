/* LoRA after training: merged into the base weights (PEFT's merge,
 * W += (alpha/r) B A) and saved as a PEFT adapter directory. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "depthprune/safetensors.h"
#include "depthprune/train.h"

void dp_lora_merge_tensor(const dp_lora *l, int block, int k, float *w, int64_t OUT, int64_t IN) {
    int64_t R = l->rank;
    const float *A = l->a[block][k], *B = l->b[block][k];
    float sc = (float)l->scale;
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < OUT; o++)
        for (int64_t r = 0; r < R; r++) {
            float bo = B[o * R + r] * sc;
            if (bo == 0.0f) continue;
            for (int64_t c = 0; c < IN; c++) w[o * IN + c] += bo * A[r * IN + c];
        }
}

void dp_lora_merge(dp_llama *m, const dp_lora *l) {
    for (int i = 0; i < m->cfg.n_layers; i++)
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
            if (!l->a[i][k]) continue;
            const dp_llama_param *pp = dp_llama_block_param(m, i, k);
            dp_lora_merge_tensor(l, i, k, m->w.blk[i][k], pp->rows, pp->cols);
        }
}

/* "self_attn.q_proj.weight" -> "q_proj" */
static void module_name(int k, char *out, size_t n) {
    const char *s = dp_llama_block_suffix[k], *dot = strchr(s, '.');
    snprintf(out, n, "%s", dot ? dot + 1 : s);
    char *w = strstr(out, ".weight");
    if (w) *w = '\0';
}

int dp_lora_save_peft(const char *dir, const dp_lora *l, const dp_llama *m, const dp_layer_map *map,
                      const char *base_model, double dropout, dp_err *err) {
    if (mkdir(dir, 0755) && errno != EEXIST)
        return dp_err_set(err, DP_E_IO, "cannot create %s: %s", dir, strerror(errno));
    int n = 0;
    dp_st_entry *e = dp_calloc((size_t)(map->n * DP_LLAMA_BLOCK_TENSORS * 2 + 1), sizeof *e, "adapter");
    char **names = dp_calloc((size_t)(map->n * DP_LLAMA_BLOCK_TENSORS * 2 + 1), sizeof(char *), "adapter");
    cJSON *targets = cJSON_CreateArray();
    for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++)
        if (l->targets >> k & 1u) {
            char mod[64];
            module_name(k, mod, sizeof mod);
            cJSON_AddItemToArray(targets, cJSON_CreateString(mod));
        }
    for (int i = 0; i < map->n; i++) {
        int L = map->layer[i];
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
            if (!l->a[L][k]) continue;
            const char *suf = dp_llama_block_suffix[k];
            char path[128];
            snprintf(path, sizeof path, "%s", suf);
            char *w = strstr(path, ".weight");
            if (w) *w = '\0';
            int64_t OUT = dp_llama_block_param(m, L, k)->rows, IN = dp_llama_block_param(m, L, k)->cols;
            for (int ab = 0; ab < 2; ab++) {
                char name[192];
                snprintf(name, sizeof name, "base_model.model.model.layers.%d.%s.lora_%c.weight", i, path,
                         ab ? 'B' : 'A');
                names[n] = dp_strdup(name, "adapter");
                e[n].name = names[n];
                e[n].dtype = DP_DTYPE_F32;
                e[n].ndim = 2;
                e[n].shape[0] = ab ? OUT : l->rank;
                e[n].shape[1] = ab ? l->rank : IN;
                e[n].data = ab ? l->b[L][k] : l->a[L][k];
                n++;
            }
        }
    }
    char *st = dp_path_join(dir, "adapter_model.safetensors");
    int rc = dp_st_write(st, e, n, err);
    dp_free(st);
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "base_model_name_or_path", base_model ? base_model : "");
    cJSON_AddStringToObject(c, "bias", "none");
    cJSON_AddBoolToObject(c, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(c, "inference_mode", 1);
    cJSON_AddBoolToObject(c, "init_lora_weights", 1);
    cJSON_AddNullToObject(c, "layers_pattern");
    cJSON_AddNullToObject(c, "layers_to_transform");
    cJSON_AddNumberToObject(c, "lora_alpha", l->alpha);
    cJSON_AddNumberToObject(c, "lora_dropout", dropout);
    cJSON_AddNullToObject(c, "modules_to_save");
    cJSON_AddStringToObject(c, "peft_type", "LORA");
    cJSON_AddNumberToObject(c, "r", (double)l->rank);
    cJSON_AddNullToObject(c, "revision");
    cJSON_AddItemToObject(c, "target_modules", targets);
    cJSON_AddStringToObject(c, "task_type", "CAUSAL_LM");
    cJSON_AddBoolToObject(c, "use_rslora", 0);
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    if (!rc) {
        char *p = dp_path_join(dir, "adapter_config.json");
        rc = dp_write_file_atomic(p, text, strlen(text), err);
        dp_free(p);
    }
    free(text);
    for (int i = 0; i < n; i++) dp_free(names[i]);
    dp_free(names);
    dp_free(e);
    return rc;
}
