/* Tensor bookkeeping and the float16/bfloat16 conversions used when weights
 * are upcast at load and written back at export. */
#include "depthprune/tensor.h"

#include <math.h>
#include <string.h>

#include "depthprune/core.h"

static const struct {
    const char *name;
    size_t size;
} k_dtypes[DP_DTYPE_COUNT] = {
    [DP_DTYPE_F32] = {"F32", 4},   [DP_DTYPE_F16] = {"F16", 2}, [DP_DTYPE_BF16] = {"BF16", 2},
    [DP_DTYPE_F64] = {"F64", 8},   [DP_DTYPE_I8] = {"I8", 1},   [DP_DTYPE_U8] = {"U8", 1},
    [DP_DTYPE_I16] = {"I16", 2},   [DP_DTYPE_U16] = {"U16", 2}, [DP_DTYPE_I32] = {"I32", 4},
    [DP_DTYPE_U32] = {"U32", 4},   [DP_DTYPE_I64] = {"I64", 8}, [DP_DTYPE_U64] = {"U64", 8},
    [DP_DTYPE_BOOL] = {"BOOL", 1},
};

size_t dp_dtype_size(dp_dtype t) {
    return (unsigned)t < DP_DTYPE_COUNT ? k_dtypes[t].size : 0;
}

const char *dp_dtype_name(dp_dtype t) {
    return (unsigned)t < DP_DTYPE_COUNT ? k_dtypes[t].name : NULL;
}

int dp_dtype_from_name(const char *name) {
    for (int i = 0; i < DP_DTYPE_COUNT; i++)
        if (strcmp(k_dtypes[i].name, name) == 0) return i;
    return -1;
}

int64_t dp_tensor_numel(const dp_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t dp_tensor_nbytes(const dp_tensor *t) {
    return (size_t)dp_tensor_numel(t) * dp_dtype_size(t->dtype);
}

dp_tensor dp_tensor_new(dp_dtype dtype, int ndim, const int64_t *shape, const char *label) {
    dp_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dtype;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    t.device = DP_DEVICE_CPU;
    t.data = dp_calloc((size_t)dp_tensor_numel(&t), dp_dtype_size(dtype), label);
    t.owns_data = 1;
    return t;
}

void dp_tensor_free(dp_tensor *t) {
    if (t->owns_data) dp_free(t->data);
    t->data = NULL;
    t->owns_data = 0;
}

float dp_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t dp_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* RNE */
    return (uint16_t)(u >> 16);
}

float dp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t dp_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t au = u & 0x7fffffffu;
    if (au > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (au >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to inf */
    if (au < 0x38800000u) {                                   /* subnormal or zero in f16 */
        if (au < 0x33000000u) return (uint16_t)sign;          /* below half the smallest */
        uint32_t exp = au >> 23;
        uint32_t man = (au & 0x7fffffu) | 0x800000u;
        /* value = man * 2^(exp-150); the f16 subnormal unit is 2^-24, so the
         * subnormal mantissa is man >> (126 - exp), shift in [14, 24]. */
        uint32_t shift = 126 - exp;
        uint32_t res = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (res & 1u))) res++;
        return (uint16_t)(sign | res);
    }
    uint32_t res = ((au >> 13) - ((127 - 15) << 10));
    uint32_t rem = au & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (res & 1u))) res++;
    return (uint16_t)(sign | res);
}

int dp_convert_to_f32(float *dst, const void *src, dp_dtype src_dtype, size_t n_elems) {
    switch (src_dtype) {
    case DP_DTYPE_F32: memcpy(dst, src, n_elems * 4); return 0;
    /* checkpoint bytes need not be aligned: load through memcpy */
    case DP_DTYPE_BF16: { /* dp_bf16_to_f32 inline, so the loop vectorises (block upcasts run per pass) */
        const unsigned char *s = src;
        for (size_t i = 0; i < n_elems; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            uint32_t u = (uint32_t)h << 16;
            memcpy(dst + i, &u, 4);
        }
        return 0;
    }
    case DP_DTYPE_F16: {
        const unsigned char *s = src;
        for (size_t i = 0; i < n_elems; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = dp_f16_to_f32(h);
        }
        return 0;
    }
    default: return -1;
    }
}

int dp_convert_from_f32(void *dst, dp_dtype dst_dtype, const float *src, size_t n_elems) {
    switch (dst_dtype) {
    case DP_DTYPE_F32: memcpy(dst, src, n_elems * 4); return 0;
    case DP_DTYPE_BF16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n_elems; i++) d[i] = dp_f32_to_bf16(src[i]);
        return 0;
    }
    case DP_DTYPE_F16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n_elems; i++) d[i] = dp_f32_to_f16(src[i]);
        return 0;
    }
    default: return -1;
    }
}
