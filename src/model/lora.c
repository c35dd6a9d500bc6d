/* LoRA adapters in PEFT's layout and initialisation: for a targeted linear
 * W (OUT, IN), A (r, IN) and B (OUT, r), output W x + (alpha/r) B A x.
 * Adapters exist only for the blocks of the layer map they were made for. */
#include <math.h>
#include <string.h>

#include "depthprune/llama.h"

static const char *const k_target_names[DP_LLAMA_BLOCK_TENSORS] = {NULL, "q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                                   NULL, "gate_proj", "up_proj", "down_proj"};

int dp_lora_parse_targets(const char *s, unsigned *targets, dp_err *err) {
    *targets = 0;
    if (!strcmp(s, "all")) {
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++)
            if (k_target_names[k]) *targets |= 1u << k;
        return DP_OK;
    }
    const char *p = s;
    while (*p) {
        size_t len = strcspn(p, ",");
        int found = -1;
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++)
            if (k_target_names[k] && strlen(k_target_names[k]) == len && !strncmp(p, k_target_names[k], len)) found = k;
        if (found < 0)
            return dp_err_set(err, DP_E_CONFIG,
                              "unknown LoRA target '%.*s' (expected q_proj, k_proj, v_proj, o_proj, "
                              "gate_proj, up_proj, down_proj or all)",
                              (int)len, p);
        *targets |= 1u << found;
        p += len;
        if (*p == ',') p++;
    }
    if (!*targets) return dp_err_set(err, DP_E_CONFIG, "no LoRA targets given");
    return DP_OK;
}

/* Shapes of block tensor k's adapter from the model's parameter table. */
static void target_shape(const dp_llama *m, int k, int64_t *out_f, int64_t *in_f) {
    const dp_llama_param *p = &m->params[1 + k]; /* block 0's tensors follow the embedding */
    *out_f = p->rows;
    *in_f = p->cols;
}

static void assign(dp_lora *l, const dp_llama *m, const int *layers, int n_layers) {
    int64_t off = 0;
    for (int i = 0; i < n_layers; i++)
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
            if (!(l->targets >> k & 1u)) continue;
            int64_t of, inf;
            target_shape(m, k, &of, &inf);
            l->a[layers[i]][k] = l->mem ? l->mem + off : NULL;
            off += l->rank * inf;
            l->b[layers[i]][k] = l->mem ? l->mem + off : NULL;
            off += of * l->rank;
        }
    l->n_elems = off;
}

int dp_lora_init(dp_lora *l, const dp_llama *m, const dp_layer_map *map, int64_t rank, double alpha, unsigned targets,
                 dp_err *err) {
    memset(l, 0, sizeof *l);
    if (rank < 1) return dp_err_set(err, DP_E_CONFIG, "LoRA rank must be at least 1, got %lld", (long long)rank);
    if (!(alpha > 0)) return dp_err_set(err, DP_E_CONFIG, "LoRA alpha must be positive");
    for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++)
        if ((targets >> k & 1u) && !k_target_names[k])
            return dp_err_set(err, DP_E_CONFIG, "LoRA can only target linear layers");
    l->rank = rank;
    l->alpha = alpha;
    l->scale = alpha / (double)rank;
    l->targets = targets;
    assign(l, m, map->layer, map->n);
    l->mem = dp_calloc((size_t)l->n_elems, sizeof(float), "lora");
    assign(l, m, map->layer, map->n);
    return DP_OK;
}

void dp_lora_like(dp_lora *out, const dp_lora *l, const char *label) {
    *out = *l;
    out->mem = dp_calloc((size_t)l->n_elems, sizeof(float), label);
    for (int i = 0; i < DP_MAX_LAYERS; i++)
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
            if (l->a[i][k]) out->a[i][k] = out->mem + (l->a[i][k] - l->mem);
            if (l->b[i][k]) out->b[i][k] = out->mem + (l->b[i][k] - l->mem);
        }
}

void dp_lora_init_random(dp_lora *l, const dp_llama *m, uint64_t seed) {
    uint64_t st = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < DP_MAX_LAYERS; i++)
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
            if (!l->a[i][k]) continue;
            int64_t of, inf;
            target_shape(m, k, &of, &inf);
            float bound = (float)(1.0 / sqrt((double)inf));
            for (int64_t j = 0; j < l->rank * inf; j++) {
                double u = (double)dp_xorshift64s_53(&st) / 9007199254740992.0;
                l->a[i][k][j] = (float)(2.0 * u - 1.0) * bound;
            }
            memset(l->b[i][k], 0, (size_t)(of * l->rank) * sizeof(float));
        }
}

void dp_lora_free(dp_lora *l) {
    dp_free(l->mem);
    memset(l, 0, sizeof *l);
}
