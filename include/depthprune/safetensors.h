/* safetensors: strict reader (mmap) and writer, and sharded checkpoints
 * through model.safetensors.index.json.
 *
 * The reader validates as strictly as the reference implementation
 * (huggingface/safetensors tensor.rs): header length bounds, UTF-8 JSON
 * object, known dtypes, non-negative integer shapes with checked
 * arithmetic, offsets contiguous from 0 with no gaps or overlaps, sizes
 * that match shape x dtype, the last tensor ending exactly at EOF, unique
 * names, string-valued __metadata__. Every violation has its own error code
 * (DP_ST_E_*) and a message naming the file, the tensor and the rule.
 * Values are not checked (NaN scanning is a separate pass). */
#ifndef DEPTHPRUNE_SAFETENSORS_H
#define DEPTHPRUNE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "depthprune/core.h"
#include "depthprune/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DP_ST_MAX_HEADER_BYTES 100000000ull

enum {
    DP_ST_E_TOO_SHORT = DP_E_MODULE_BASE, /* fewer than 8 bytes */
    DP_ST_E_HEADER_TOO_LARGE,             /* N > 100 MB */
    DP_ST_E_HEADER_PAST_EOF,              /* 8 + N > file size */
    DP_ST_E_HEADER_NOT_UTF8,
    DP_ST_E_HEADER_NOT_JSON,
    DP_ST_E_HEADER_NOT_OBJECT,
    DP_ST_E_DUPLICATE_NAME,
    DP_ST_E_METADATA_NOT_OBJECT,
    DP_ST_E_METADATA_NOT_STRING,
    DP_ST_E_ENTRY_NOT_OBJECT,
    DP_ST_E_MISSING_FIELD,
    DP_ST_E_UNKNOWN_DTYPE,
    DP_ST_E_BAD_SHAPE,
    DP_ST_E_RANK_TOO_HIGH,
    DP_ST_E_SHAPE_OVERFLOW,
    DP_ST_E_BAD_OFFSETS,
    DP_ST_E_OFFSETS_REVERSED,
    DP_ST_E_SIZE_MISMATCH,
    DP_ST_E_MISALIGNED_SLICE, /* sub-byte dtype whose bit count is not a multiple of 8 */
    DP_ST_E_NOT_FROM_ZERO,
    DP_ST_E_GAP,
    DP_ST_E_OVERLAP,
    DP_ST_E_TRUNCATED,      /* tensors extend past the end of the file */
    DP_ST_E_TRAILING_BYTES, /* bytes after the last tensor */
    DP_ST_E_INDEX_NOT_JSON,
    DP_ST_E_INDEX_NO_WEIGHT_MAP,
    DP_ST_E_INDEX_BAD_ENTRY,
    DP_ST_E_INDEX_BAD_SHARD_NAME,
    DP_ST_E_INDEX_MISSING_SHARD,
    DP_ST_E_INDEX_TENSOR_NOT_IN_SHARD,
    DP_ST_E_INDEX_TENSOR_NOT_LISTED, /* a shard holds a tensor the index maps elsewhere or not at all */
    DP_ST_E_INDEX_DUPLICATE,
    DP_ST_E_NO_CHECKPOINT,
    DP_ST_E_LAST
};

typedef struct dp_st_tensor {
    char *name;
    const char *dtype_name; /* safetensors spelling */
    int dtype;              /* dp_dtype, or -1 for a valid dtype depthprune does not compute in */
    int ndim;
    int64_t shape[DP_MAX_DIMS];
    uint64_t begin, end; /* offsets in the data section */
    const void *data;    /* into the mapping; may be unaligned */
    int file;            /* index of the shard in a dp_st_model */
} dp_st_tensor;

typedef struct dp_st_file {
    char *path;
    void *map;
    size_t map_bytes;
    uint64_t header_bytes;
    int n_tensors;
    dp_st_tensor *tensors; /* in header order */
    int n_meta;
    char **meta_keys, **meta_values;
} dp_st_file;

/* Parses and validates a complete safetensors image held in memory. label
 * names the file in errors. Tensor data pointers point into bytes. */
int dp_st_parse(const void *bytes, size_t n_bytes, const char *label, dp_st_file *out, dp_err *err);
/* Opens a file by mmap and validates it. */
int dp_st_open(const char *path, dp_st_file *f, dp_err *err);
void dp_st_close(dp_st_file *f);
const dp_st_tensor *dp_st_find(const dp_st_file *f, const char *name);

/* A checkpoint directory: model.safetensors, or shards listed by
 * model.safetensors.index.json. Tensors are sorted by name. */
typedef struct dp_st_model {
    char *dir;
    int n_files;
    dp_st_file *files;
    int n_tensors;
    const dp_st_tensor **tensors; /* sorted by name */
} dp_st_model;

int dp_st_model_open(const char *dir, dp_st_model *m, dp_err *err);
void dp_st_model_close(dp_st_model *m);
const dp_st_tensor *dp_st_model_find(const dp_st_model *m, const char *name);
/* Converts a tensor (F32/F16/BF16) to a new f32 buffer (dp_free). */
float *dp_st_to_f32(const dp_st_tensor *t, const char *label);
int64_t dp_st_numel(const dp_st_tensor *t);

/* ---- writer ---- */
typedef struct dp_st_entry {
    const char *name;
    dp_dtype dtype;
    int ndim;
    int64_t shape[DP_MAX_DIMS];
    const void *data;
} dp_st_entry;

/* Writes one file (tmp + fsync + rename): 8-byte aligned space-padded
 * header with __metadata__ {"format": "pt"}, tensors contiguous in the
 * reference order (descending dtype alignment, then name). */
int dp_st_write(const char *path, const dp_st_entry *entries, int n, dp_err *err);
/* Writes model.safetensors, or model-0000i-of-0000n.safetensors shards
 * plus model.safetensors.index.json when the total exceeds
 * max_shard_bytes (greedy in name order; a tensor larger than the limit
 * gets its own shard). */
int dp_st_write_model(const char *dir, const dp_st_entry *entries, int n, uint64_t max_shard_bytes, dp_err *err);

#ifdef __cplusplus
}
#endif
#endif
