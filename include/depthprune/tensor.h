/* The tensor struct shared by every layer: a dtype, a shape (row-major,
 * no strides), a device and a data pointer that the tensor may or may not
 * own (weights are usually views into mmapped checkpoint bytes). */
#ifndef DEPTHPRUNE_TENSOR_H
#define DEPTHPRUNE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DP_MAX_DIMS 8

typedef enum {
    DP_DTYPE_F32 = 0,
    DP_DTYPE_F16,
    DP_DTYPE_BF16,
    DP_DTYPE_F64,
    DP_DTYPE_I8,
    DP_DTYPE_U8,
    DP_DTYPE_I16,
    DP_DTYPE_U16,
    DP_DTYPE_I32,
    DP_DTYPE_U32,
    DP_DTYPE_I64,
    DP_DTYPE_U64,
    DP_DTYPE_BOOL,
    DP_DTYPE_COUNT
} dp_dtype;

typedef enum { DP_DEVICE_CPU = 0, DP_DEVICE_CUDA = 1 } dp_device;

typedef struct dp_tensor {
    dp_dtype dtype;
    int ndim;
    int64_t shape[DP_MAX_DIMS];
    dp_device device;
    void *data;
    int owns_data; /* 1: freed by dp_tensor_free */
} dp_tensor;

size_t dp_dtype_size(dp_dtype t);
/* safetensors spelling ("F32", "BF16", ...); NULL for an unknown value. */
const char *dp_dtype_name(dp_dtype t);
/* Parses a safetensors dtype string; returns -1 if unknown. */
int dp_dtype_from_name(const char *name);

int64_t dp_tensor_numel(const dp_tensor *t);
size_t dp_tensor_nbytes(const dp_tensor *t);
/* Allocates an owned, zeroed CPU tensor. */
dp_tensor dp_tensor_new(dp_dtype dtype, int ndim, const int64_t *shape, const char *label);
void dp_tensor_free(dp_tensor *t);

/* Scalar conversions (round-to-nearest-even when narrowing). */
float dp_bf16_to_f32(uint16_t h);
uint16_t dp_f32_to_bf16(float f);
float dp_f16_to_f32(uint16_t h);
uint16_t dp_f32_to_f16(float f);
/* Converts n elements of src (F32/F16/BF16) to f32. Returns 0, or -1 for
 * an unsupported dtype. */
int dp_convert_to_f32(float *dst, const void *src, dp_dtype src_dtype, size_t n_elems);
/* Converts n f32 elements to dst_dtype (F32/F16/BF16). */
int dp_convert_from_f32(void *dst, dp_dtype dst_dtype, const float *src, size_t n_elems);

#ifdef __cplusplus
}
#endif
#endif
