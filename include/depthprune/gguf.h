/* GGUF (llama.cpp's model file, versions 2 and 3): a strict reader, ggml's
 * reference dequantizers, and the LLaMA mapping to an HF model directory.
 *
 * The reader validates as strictly as the safetensors reader: magic and
 * version, counts and string lengths bounded by the file, known metadata
 * value types (nested arrays bounded), general.alignment a power of two,
 * every tensor's name unique and non-empty, 1..4 dims with checked
 * products, a known type whose block size divides the row, an offset that
 * is aligned and whose bytes lie inside the data section, and no two
 * tensors overlapping. Each broken rule is its own error code (DP_GGUF_E_*)
 * with a message naming the file, the key or tensor and the rule. */
#ifndef DEPTHPRUNE_GGUF_H
#define DEPTHPRUNE_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "depthprune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    DP_GGUF_E_TOO_SHORT = DP_E_MODULE_BASE + 100, /* smaller than the fixed header */
    DP_GGUF_E_BAD_MAGIC,
    DP_GGUF_E_BAD_VERSION,      /* not 2 or 3 */
    DP_GGUF_E_TOO_MANY_TENSORS, /* count beyond what the file could hold */
    DP_GGUF_E_TOO_MANY_KV,
    DP_GGUF_E_TRUNCATED,      /* a header item runs past the end of the file */
    DP_GGUF_E_BAD_STRING,     /* length past EOF or not UTF-8 */
    DP_GGUF_E_BAD_VALUE_TYPE, /* unknown metadata value type */
    DP_GGUF_E_ARRAY_TOO_DEEP, /* nested arrays beyond 2 levels */
    DP_GGUF_E_DUPLICATE_KEY,
    DP_GGUF_E_BAD_ALIGNMENT, /* general.alignment not a u32 power of two */
    DP_GGUF_E_DUPLICATE_TENSOR,
    DP_GGUF_E_BAD_TENSOR_NAME,   /* empty or longer than 255 bytes */
    DP_GGUF_E_BAD_DIMS,          /* 0 or more than 4 dims, or a zero/overflowing extent */
    DP_GGUF_E_BAD_TENSOR_TYPE,   /* unknown ggml type */
    DP_GGUF_E_BAD_ROW,           /* ne[0] not a multiple of the type's block size */
    DP_GGUF_E_MISALIGNED_TENSOR, /* offset not a multiple of the alignment */
    DP_GGUF_E_TENSOR_PAST_EOF,   /* data beyond the end of the file */
    DP_GGUF_E_OVERLAP,           /* two tensors share bytes */
    DP_GGUF_E_LAST
};

/* metadata value types (gguf.h) */
enum {
    DP_GGUF_U8 = 0,
    DP_GGUF_I8,
    DP_GGUF_U16,
    DP_GGUF_I16,
    DP_GGUF_U32,
    DP_GGUF_I32,
    DP_GGUF_F32,
    DP_GGUF_BOOL,
    DP_GGUF_STRING,
    DP_GGUF_ARRAY,
    DP_GGUF_U64,
    DP_GGUF_I64,
    DP_GGUF_F64,
    DP_GGUF_NTYPES
};

/* ggml tensor types that are read (their ggml numbers) */
enum {
    DP_GGML_F32 = 0,
    DP_GGML_F16 = 1,
    DP_GGML_Q4_0 = 2,
    DP_GGML_Q4_1 = 3,
    DP_GGML_Q5_0 = 6,
    DP_GGML_Q5_1 = 7,
    DP_GGML_Q8_0 = 8,
    DP_GGML_Q4_K = 12,
    DP_GGML_Q5_K = 13,
    DP_GGML_Q6_K = 14,
    DP_GGML_BF16 = 30
};

typedef struct dp_gguf_kv {
    const char *key;     /* NUL-terminated copy */
    int type;            /* DP_GGUF_*; for arrays: DP_GGUF_ARRAY */
    int elem_type;       /* arrays: the element type */
    uint64_t n;          /* arrays: element count; 1 otherwise */
    const uint8_t *data; /* the value's bytes in the file (arrays: the first element) */
    uint64_t n_bytes;
} dp_gguf_kv;

typedef struct dp_gguf_tensor {
    const char *name;
    int type; /* DP_GGML_* */
    int n_dims;
    int64_t ne[4]; /* ggml order: ne[0] is the row (fastest) */
    int64_t n_elems;
    uint64_t offset; /* from the start of the data section */
    uint64_t n_bytes;
    const uint8_t *data;
} dp_gguf_tensor;

typedef struct dp_gguf {
    char *path;
    uint32_t version;
    uint64_t alignment;
    int64_t n_kv, n_tensors;
    dp_gguf_kv *kv;
    dp_gguf_tensor *tensors;
    const uint8_t *map;
    size_t map_size;
    int mapped; /* 1: map is an mmap to unmap on close */
} dp_gguf;

/* Validates bytes[0..n) (kept by the caller while f is used). */
int dp_gguf_parse(const void *bytes, size_t n, const char *label, dp_gguf *f, dp_err *err);
/* Opens and validates a file (mmap). */
int dp_gguf_open(const char *path, dp_gguf *f, dp_err *err);
void dp_gguf_close(dp_gguf *f);

const dp_gguf_kv *dp_gguf_find(const dp_gguf *f, const char *key);
const dp_gguf_tensor *dp_gguf_find_tensor(const dp_gguf *f, const char *name);
/* A scalar integer / float / bool value (any integer type, any float type);
 * DP_E_FORMAT naming the key if it is of another type, or absent while required
 * (absent and not required: *out is left as it was). */
int dp_gguf_get_int(const dp_gguf *f, const char *key, int64_t *out, int required, dp_err *err);
int dp_gguf_get_float(const dp_gguf *f, const char *key, double *out, int required, dp_err *err);
/* A string value: pointer + length (not NUL-terminated). */
int dp_gguf_get_str(const dp_gguf *f, const char *key, const char **s, uint64_t *len, dp_err *err);
/* All elements of a string array: ptrs[i], lens[i] (arrays allocated with dp_malloc). */
int dp_gguf_str_array(const dp_gguf *f, const char *key, const char ***ptrs, uint64_t **lens, uint64_t *n, dp_err *err);

/* Converts a LLaMA GGUF into an HF model directory out_dir (which must not
 * exist; built under a temporary name and renamed): config.json from the
 * llama.* metadata, every tensor dequantized and written as dtype (a
 * dp_dtype; -1: F32) under its HF name with llama.cpp's Q/K row permutation
 * undone, and tokenizer.json + tokenizer_config.json rebuilt from the
 * tokenizer.ggml.* metadata as transformers' GGUF loader builds them
 * (byte-level BPE files; SentencePiece-style "llama" ones are refused). */
int dp_gguf_export_hf(const char *gguf_path, const char *out_dir, int dtype, uint64_t max_shard_bytes, dp_err *err);

struct dp_llama_config;
/* Writes a LLaMA model as GGUF v3 at path (tmp + rename): the llama.* and
 * tokenizer.ggml.* metadata llama.cpp reads (byte-level BPE tokenizers as its
 * "gpt2" model), n fp32 tensors under their HF names (names[i], data[i],
 * shape[i] = {rows, cols}, cols 0 for vectors) renamed, Q/K rows permuted as
 * llama.cpp's converter does, 2-D tensors stored as type (DP_GGML_F32, F16,
 * BF16 or Q8_0 by ggml's reference quantizer), vectors as F32. */
int dp_gguf_write_llama(const char *path, const struct dp_llama_config *c, const char *tokenizer_json, size_t tok_len,
                        const char *const *names, const float *const *data, const int64_t (*shape)[2], int n, int type,
                        const char *model_name, dp_err *err);

/* Name of a ggml type ("Q4_1"), or NULL if it is not one the reader knows. */
const char *dp_ggml_type_name(int type);
/* Elements per block and bytes per block of a type (0 if unknown). */
int dp_ggml_block(int type, int64_t *block_elems, int64_t *block_bytes);
/* Dequantizes n elements (a multiple of the block size) of type from src
 * into fp32, exactly as ggml's reference dequantize_row_* functions. */
void dp_ggml_dequantize(int type, const void *src, float *dst, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
