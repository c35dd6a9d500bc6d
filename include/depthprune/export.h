/* Export of a (possibly depth-pruned) model as a Hugging Face directory
 * that transformers and vLLM load: surviving blocks renumbered
 * contiguously, num_hidden_layers updated, legacy-compatible config fields,
 * a "depthprune" provenance block, tokenizer files copied. The directory
 * is built under a temporary name and renamed at the end, so a failed
 * export never leaves an output that looks complete, and an existing
 * output is never overwritten. */
#ifndef DEPTHPRUNE_EXPORT_H
#define DEPTHPRUNE_EXPORT_H

#include "depthprune/hfconfig.h"
#include "depthprune/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dp_export_opts {
    const int64_t *keep; /* original indices of the kept blocks, ascending; NULL: all */
    int64_t n_keep;
    int dtype;                /* dp_dtype of the output weights; -1: as stored */
    uint64_t max_shard_bytes; /* 0: 5 GB */
    const char *provenance;   /* JSON object text for config["depthprune"]; NULL: none */
    /* in-memory tensors (source names) used instead of the checkpoint's,
     * e.g. retrained weights; with every tensor here, m may be NULL */
    const dp_st_entry *mem;
    int n_mem;
    /* called with the temporary directory before it is renamed into place,
     * to add files (a PEFT adapter) that must appear atomically with it */
    int (*finish)(const char *tmp_dir, void *ctx, dp_err *err);
    void *finish_ctx;
} dp_export_opts;

int dp_export_model(const char *src_dir, const dp_llama_config *c, const dp_st_model *m, const char *out_dir,
                    const dp_export_opts *o, dp_err *err);

/* Parses "3,7,12" into sorted unique block indices in [0, n_layers). */
int dp_parse_block_list(const char *s, int64_t n_layers, int64_t **out, int64_t *n_out, dp_err *err);

#ifdef __cplusplus
}
#endif
#endif
