/* Width pruning, the baseline of the depth-pruning papers (LLM-Pruner):
 * remove whole attention heads (with GQA, whole key-value groups with their
 * query heads: q/k/v rows and o_proj columns) and MLP channels (gate/up
 * rows, down_proj columns), the same fraction in every pruned block, by
 * group importance: first-order Taylor |w * dL/dw| summed over the group
 * ("param_first"), the diagonal-Fisher second-order term w^2 * sum_j g_j^2/N
 * ("param_second"), their combination |w g - w^2 F / 2| ("param_mix"),
 * L1/L2 magnitude and random as controls. */
#ifndef DEPTHPRUNE_WIDTH_H
#define DEPTHPRUNE_WIDTH_H

#include "depthprune/dist.h"
#include "depthprune/engine.h"
#include "depthprune/llama.h"
#include "depthprune/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DP_WIDTH_TAYLOR1,
    DP_WIDTH_TAYLOR2,
    DP_WIDTH_MIX,
    DP_WIDTH_L1,
    DP_WIDTH_L2,
    DP_WIDTH_RANDOM
} dp_width_crit;

/* Parses "param_first", "param_second", "param_mix", "l1", "l2", "random"; -1 if unknown. */
int dp_width_crit_parse(const char *s);

typedef struct dp_width_scores {
    int L;
    int64_t n_groups[DP_MAX_LAYERS]; /* kv groups of block l */
    int64_t n_chan[DP_MAX_LAYERS];   /* MLP channels of block l */
    double *attn[DP_MAX_LAYERS];     /* (n_groups) */
    double *mlp[DP_MAX_LAYERS];      /* (n_chan) */
} dp_width_scores;
void dp_width_scores_free(dp_width_scores *s);

/* Group importance on calibration ids (N, T); samples split over ranks,
 * gradients summed over ranks (collective). seed: the random criterion. */
int dp_width_importance(const dp_mpi *mpi, dp_device dev, const dp_llama *m, const int32_t *ids, int64_t N, int64_t T,
                        int crit, uint64_t seed, dp_width_scores *s, dp_err *err);

/* Which groups stay: blocks [first, L - last) lose round(ratio * count) of
 * their least important kv groups and MLP channels (at least one of each
 * stays); other blocks keep everything. keep_g[l] / keep_c[l] are fresh
 * ascending index lists of n_keep_g[l] / n_keep_c[l] entries. */
typedef struct dp_width_plan {
    int L;
    int64_t n_keep_g[DP_MAX_LAYERS], n_keep_c[DP_MAX_LAYERS];
    int64_t *keep_g[DP_MAX_LAYERS], *keep_c[DP_MAX_LAYERS];
} dp_width_plan;
int dp_width_plan_make(const dp_llama *m, const dp_width_scores *s, double ratio, int first, int last, dp_width_plan *p,
                       dp_err *err);
void dp_width_plan_free(dp_width_plan *p);
/* Parameters of the model after the plan (for any ratio: no scores needed). */
int64_t dp_width_params(const dp_llama_config *c, double ratio, int first, int last);
/* The ratio (a multiple of 1e-4 below 0.95) whose parameter count is
 * closest to target. */
double dp_width_match_ratio(const dp_llama_config *c, int64_t target, int first, int last);

/* The pruned blocks' tensors as F32 entries with HF names (for
 * dp_export_model's in-memory tensors; dp_width_entries_free), and the
 * pruned config (per-block sizes; json_text copied: dp_llama_config_free). */
int dp_width_apply(const dp_llama *m, const dp_width_plan *p, dp_st_entry **entries, int *n_entries,
                   dp_llama_config *out_cfg, dp_err *err);
void dp_width_entries_free(dp_st_entry *e, int n);

#ifdef __cplusplus
}
#endif
#endif
