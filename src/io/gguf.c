/* GGUF reader (see gguf.h) and ggml's reference dequantizers. */
#include "depthprune/gguf.h"

#include <stdlib.h>
#include <string.h>

#include "depthprune/strmap.h"
#include "depthprune/tensor.h"
#include "depthprune/utf8.h"

/* ---------------- types ---------------- */

static const struct {
    int type;
    const char *name;
    int64_t block, bytes;
} k_types[] = {
    {DP_GGML_F32, "F32", 1, 4},       {DP_GGML_F16, "F16", 1, 2},       {DP_GGML_BF16, "BF16", 1, 2},
    {DP_GGML_Q4_0, "Q4_0", 32, 18},   {DP_GGML_Q4_1, "Q4_1", 32, 20},   {DP_GGML_Q5_0, "Q5_0", 32, 22},
    {DP_GGML_Q5_1, "Q5_1", 32, 24},   {DP_GGML_Q8_0, "Q8_0", 32, 34},   {DP_GGML_Q4_K, "Q4_K", 256, 144},
    {DP_GGML_Q5_K, "Q5_K", 256, 176}, {DP_GGML_Q6_K, "Q6_K", 256, 210},
};

const char *dp_ggml_type_name(int type) {
    for (size_t i = 0; i < sizeof k_types / sizeof *k_types; i++)
        if (k_types[i].type == type) return k_types[i].name;
    return NULL;
}

int dp_ggml_block(int type, int64_t *block_elems, int64_t *block_bytes) {
    for (size_t i = 0; i < sizeof k_types / sizeof *k_types; i++)
        if (k_types[i].type == type) {
            *block_elems = k_types[i].block;
            *block_bytes = k_types[i].bytes;
            return 1;
        }
    *block_elems = *block_bytes = 0;
    return 0;
}

static const int k_value_size[DP_GGUF_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

/* ---------------- parsing ---------------- */

typedef struct {
    const uint8_t *p;
    size_t n, at;
    const char *label;
    dp_err *err;
} cursor;

static int need(cursor *c, uint64_t k, const char *what) {
    if (k > c->n - c->at)
        return dp_err_set(c->err, DP_GGUF_E_TRUNCATED, "%s: %s runs past the end of the file (offset %zu)", c->label,
                          what, c->at);
    return DP_OK;
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) {
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static int get_u32(cursor *c, uint32_t *v, const char *what) {
    int rc = need(c, 4, what);
    if (!rc) *v = rd32(c->p + c->at), c->at += 4;
    return rc;
}

static int get_u64(cursor *c, uint64_t *v, const char *what) {
    int rc = need(c, 8, what);
    if (!rc) *v = rd64(c->p + c->at), c->at += 8;
    return rc;
}

/* A string: u64 length + bytes, valid UTF-8; *s points into the file. */
static int get_str(cursor *c, const uint8_t **s, uint64_t *len, const char *what) {
    int rc = get_u64(c, len, what);
    if (!rc && *len > c->n - c->at)
        rc = dp_err_set(c->err, DP_GGUF_E_BAD_STRING, "%s: %s: string length %llu runs past the end of the file",
                        c->label, what, (unsigned long long)*len);
    if (!rc && !dp_utf8_valid((const char *)c->p + c->at, (size_t)*len))
        rc = dp_err_set(c->err, DP_GGUF_E_BAD_STRING, "%s: %s: string is not valid UTF-8", c->label, what);
    if (!rc) *s = c->p + c->at, c->at += (size_t)*len;
    return rc;
}

/* Skips one value of type t (arrays nested at most depth levels more). */
static int skip_value(cursor *c, uint32_t t, int depth, const char *key) {
    if (t >= DP_GGUF_NTYPES)
        return dp_err_set(c->err, DP_GGUF_E_BAD_VALUE_TYPE, "%s: key '%s': unknown value type %u", c->label, key, t);
    if (t == DP_GGUF_STRING) {
        const uint8_t *s;
        uint64_t len;
        return get_str(c, &s, &len, key);
    }
    if (t == DP_GGUF_ARRAY) {
        if (depth >= 2)
            return dp_err_set(c->err, DP_GGUF_E_ARRAY_TOO_DEEP, "%s: key '%s': arrays nested more than 2 deep",
                              c->label, key);
        uint32_t et;
        uint64_t n;
        int rc = get_u32(c, &et, key);
        if (!rc) rc = get_u64(c, &n, key);
        if (rc) return rc;
        if (et >= DP_GGUF_NTYPES)
            return dp_err_set(c->err, DP_GGUF_E_BAD_VALUE_TYPE, "%s: key '%s': unknown array element type %u", c->label,
                              key, et);
        if (et != DP_GGUF_STRING && et != DP_GGUF_ARRAY) {
            if (n > (c->n - c->at) / (uint64_t)k_value_size[et])
                return dp_err_set(c->err, DP_GGUF_E_TRUNCATED,
                                  "%s: key '%s': array of %llu elements runs past the end "
                                  "of the file",
                                  c->label, key, (unsigned long long)n);
            c->at += (size_t)(n * (uint64_t)k_value_size[et]);
            return DP_OK;
        }
        /* each string or array element takes at least 8 bytes */
        if (n > (c->n - c->at) / 8)
            return dp_err_set(c->err, DP_GGUF_E_TRUNCATED,
                              "%s: key '%s': array of %llu elements runs past the end of "
                              "the file",
                              c->label, key, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++) {
            int rc2 = skip_value(c, et, depth + 1, key);
            if (rc2) return rc2;
        }
        return DP_OK;
    }
    int rc = need(c, (uint64_t)k_value_size[t], key);
    if (!rc) c->at += (size_t)k_value_size[t];
    return rc;
}

static void free_all(dp_gguf *f) {
    for (int64_t i = 0; f->kv && i < f->n_kv; i++) dp_free((void *)f->kv[i].key);
    for (int64_t i = 0; f->tensors && i < f->n_tensors; i++) dp_free((void *)f->tensors[i].name);
    dp_free(f->kv);
    dp_free(f->tensors);
    dp_free(f->path);
}

typedef struct {
    uint64_t lo, hi;
    int64_t i;
} span;

static int by_lo(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

int dp_gguf_parse(const void *bytes, size_t n, const char *label, dp_gguf *f, dp_err *err) {
    memset(f, 0, sizeof *f);
    cursor c = {bytes, n, 0, label, err};
    if (n < 24) return dp_err_set(err, DP_GGUF_E_TOO_SHORT, "%s: %zu bytes: shorter than a GGUF header", label, n);
    if (memcmp(bytes, "GGUF", 4))
        return dp_err_set(err, DP_GGUF_E_BAD_MAGIC, "%s: not a GGUF file (magic is not 'GGUF')", label);
    c.at = 4;
    uint32_t ver;
    uint64_t nt, nkv;
    get_u32(&c, &ver, "version");
    if (ver != 2 && ver != 3)
        return dp_err_set(err, DP_GGUF_E_BAD_VERSION, "%s: GGUF version %u (2 and 3 are read)", label, ver);
    get_u64(&c, &nt, "tensor count");
    get_u64(&c, &nkv, "metadata count");
    /* a key-value takes at least 8 + 1 + 4 + 1 bytes, a tensor info 8 + 1 + 4 + 8 + 4 + 8 */
    if (nkv > (n - c.at) / 14)
        return dp_err_set(err, DP_GGUF_E_TOO_MANY_KV, "%s: %llu metadata entries cannot fit in the file", label,
                          (unsigned long long)nkv);
    if (nt > (n - c.at) / 33)
        return dp_err_set(err, DP_GGUF_E_TOO_MANY_TENSORS, "%s: %llu tensors cannot fit in the file", label,
                          (unsigned long long)nt);
    f->version = ver;
    f->alignment = 32;
    f->n_kv = (int64_t)nkv;
    f->n_tensors = (int64_t)nt;
    f->kv = dp_calloc((size_t)(nkv ? nkv : 1), sizeof *f->kv, "gguf");
    f->tensors = dp_calloc((size_t)(nt ? nt : 1), sizeof *f->tensors, "gguf");
    int rc = DP_OK;
    dp_strmap keys;
    dp_strmap_init(&keys, (size_t)nkv + 1);
    for (uint64_t i = 0; i < nkv && !rc; i++) {
        const uint8_t *k;
        uint64_t kl;
        uint32_t t;
        rc = get_str(&c, &k, &kl, "metadata key");
        if (!rc && kl == 0)
            rc = dp_err_set(err, DP_GGUF_E_BAD_STRING, "%s: metadata key %llu is empty", label, (unsigned long long)i);
        if (rc) break;
        dp_gguf_kv *e = &f->kv[i];
        e->key = dp_strndup((const char *)k, (size_t)kl, "gguf");
        if (!dp_strmap_put(&keys, e->key, (size_t)kl, (int64_t)i)) {
            rc = dp_err_set(err, DP_GGUF_E_DUPLICATE_KEY, "%s: metadata key '%s' appears twice", label, e->key);
            break;
        }
        rc = get_u32(&c, &t, e->key);
        if (rc) break;
        e->type = (int)t;
        e->n = 1;
        size_t start = c.at;
        if (t == DP_GGUF_ARRAY) {
            uint32_t et = 0;
            uint64_t cnt = 0;
            if (!need(&c, 12, e->key)) et = rd32(c.p + c.at), cnt = rd64(c.p + c.at + 4);
            e->elem_type = (int)et;
            e->n = cnt;
            rc = skip_value(&c, t, 0, e->key);
            e->data = c.p + start + 12;
        } else {
            rc = skip_value(&c, t, 0, e->key);
            e->data = c.p + start;
        }
        e->n_bytes = c.at - start;
        if (!rc && !strcmp(e->key, "general.alignment")) {
            uint32_t a = t == DP_GGUF_U32 ? rd32(e->data) : 0;
            if (t != DP_GGUF_U32 || a == 0 || (a & (a - 1)))
                rc =
                    dp_err_set(err, DP_GGUF_E_BAD_ALIGNMENT, "%s: general.alignment must be a u32 power of two", label);
            else
                f->alignment = a;
        }
    }
    dp_strmap_free(&keys);
    if (rc) {
        f->n_kv = f->n_tensors = 0;
        for (uint64_t i = 0; i < nkv; i++) dp_free((void *)f->kv[i].key);
        free_all(f);
        memset(f, 0, sizeof *f);
        return rc;
    }
    dp_strmap names;
    dp_strmap_init(&names, (size_t)nt + 1);
    for (uint64_t i = 0; i < nt && !rc; i++) {
        const uint8_t *s;
        uint64_t sl;
        uint32_t nd = 0, type = 0;
        rc = get_str(&c, &s, &sl, "tensor name");
        if (!rc && (sl == 0 || sl > 255))
            rc = dp_err_set(err, DP_GGUF_E_BAD_TENSOR_NAME, "%s: tensor %llu: name of %llu bytes (1..255 allowed)",
                            label, (unsigned long long)i, (unsigned long long)sl);
        if (rc) break;
        dp_gguf_tensor *t = &f->tensors[i];
        t->name = dp_strndup((const char *)s, (size_t)sl, "gguf");
        if (!dp_strmap_put(&names, t->name, (size_t)sl, (int64_t)i)) {
            rc = dp_err_set(err, DP_GGUF_E_DUPLICATE_TENSOR, "%s: tensor '%s' appears twice", label, t->name);
            break;
        }
        rc = get_u32(&c, &nd, t->name);
        if (!rc && (nd < 1 || nd > 4))
            rc = dp_err_set(err, DP_GGUF_E_BAD_DIMS, "%s: tensor '%s': %u dimensions (1..4 allowed)", label, t->name,
                            nd);
        t->n_dims = (int)nd;
        int64_t ne = 1;
        for (uint32_t d = 0; d < 4 && !rc; d++) {
            uint64_t v = 1;
            if (d < nd) rc = get_u64(&c, &v, t->name);
            if (!rc && (v == 0 || v > (1ull << 40) || (uint64_t)ne > (1ull << 48) / v))
                rc = dp_err_set(err, DP_GGUF_E_BAD_DIMS,
                                "%s: tensor '%s': extent %llu of dimension %u is zero or too large", label, t->name,
                                (unsigned long long)v, d);
            if (!rc) {
                t->ne[d] = (int64_t)v;
                ne *= (int64_t)v;
            }
        }
        if (!rc) rc = get_u32(&c, &type, t->name);
        int64_t be = 1, bb = 0;
        if (!rc && !dp_ggml_block((int)type, &be, &bb))
            rc = dp_err_set(err, DP_GGUF_E_BAD_TENSOR_TYPE,
                            "%s: tensor '%s': ggml type %u is not one that is read "
                            "(F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)",
                            label, t->name, type);
        if (!rc && t->ne[0] % be)
            rc = dp_err_set(err, DP_GGUF_E_BAD_ROW,
                            "%s: tensor '%s': row of %lld elements is not a multiple of the %s "
                            "block (%lld)",
                            label, t->name, (long long)t->ne[0], dp_ggml_type_name((int)type), (long long)be);
        if (!rc) rc = get_u64(&c, &t->offset, t->name);
        if (!rc && t->offset % f->alignment)
            rc = dp_err_set(err, DP_GGUF_E_MISALIGNED_TENSOR,
                            "%s: tensor '%s': offset %llu is not a multiple of the "
                            "alignment %llu",
                            label, t->name, (unsigned long long)t->offset, (unsigned long long)f->alignment);
        t->type = (int)type;
        t->n_elems = ne;
        if (!rc) t->n_bytes = (uint64_t)(ne / be) * (uint64_t)bb;
    }
    dp_strmap_free(&names);
    if (!rc) {
        /* the data section starts at the next multiple of the alignment */
        uint64_t data = ((uint64_t)c.at + f->alignment - 1) / f->alignment * f->alignment;
        span *sp = dp_calloc((size_t)(nt ? nt : 1), sizeof *sp, "gguf");
        for (uint64_t i = 0; i < nt && !rc; i++) {
            dp_gguf_tensor *t = &f->tensors[i];
            if (data > n || t->offset > n - data || t->n_bytes > n - data - t->offset)
                rc = dp_err_set(err, DP_GGUF_E_TENSOR_PAST_EOF,
                                "%s: tensor '%s': bytes [%llu, %llu) of the data section "
                                "run past the end of the file",
                                label, t->name, (unsigned long long)t->offset,
                                (unsigned long long)(t->offset + t->n_bytes));
            else
                t->data = c.p + data + t->offset;
            sp[i] = (span){t->offset, t->offset + t->n_bytes, (int64_t)i};
        }
        if (!rc) {
            qsort(sp, (size_t)nt, sizeof *sp, by_lo);
            for (uint64_t i = 1; i < nt && !rc; i++)
                if (sp[i].lo < sp[i - 1].hi)
                    rc = dp_err_set(err, DP_GGUF_E_OVERLAP, "%s: tensors '%s' and '%s' overlap in the data section",
                                    label, f->tensors[sp[i - 1].i].name, f->tensors[sp[i].i].name);
        }
        dp_free(sp);
    }
    if (rc) {
        free_all(f);
        memset(f, 0, sizeof *f);
        return rc;
    }
    f->map = bytes;
    f->map_size = n;
    return DP_OK;
}

int dp_gguf_open(const char *path, dp_gguf *f, dp_err *err) {
    memset(f, 0, sizeof *f);
    void *map;
    size_t size;
    int rc = dp_map_file(path, &map, &size, err);
    if (rc) return rc;
    rc = dp_gguf_parse(size ? map : "", size, path, f, err);
    if (rc) {
        dp_unmap_file(map, size);
        return rc;
    }
    f->mapped = map != NULL;
    f->path = dp_strdup(path, "gguf");
    return DP_OK;
}

void dp_gguf_close(dp_gguf *f) {
    if (f->mapped) dp_unmap_file((void *)f->map, f->map_size);
    free_all(f);
    memset(f, 0, sizeof *f);
}

const dp_gguf_kv *dp_gguf_find(const dp_gguf *f, const char *key) {
    for (int64_t i = 0; i < f->n_kv; i++)
        if (!strcmp(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

const dp_gguf_tensor *dp_gguf_find_tensor(const dp_gguf *f, const char *name) {
    for (int64_t i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

static const char *label_of(const dp_gguf *f) {
    return f->path ? f->path : "gguf";
}

int dp_gguf_get_int(const dp_gguf *f, const char *key, int64_t *out, int required, dp_err *err) {
    const dp_gguf_kv *e = dp_gguf_find(f, key);
    if (!e) return required ? dp_err_set(err, DP_E_FORMAT, "%s: metadata '%s' is missing", label_of(f), key) : DP_OK;
    const uint8_t *p = e->data;
    switch (e->type) {
    case DP_GGUF_U8: *out = p[0]; break;
    case DP_GGUF_I8: *out = (int8_t)p[0]; break;
    case DP_GGUF_U16: *out = (uint16_t)(p[0] | p[1] << 8); break;
    case DP_GGUF_I16: *out = (int16_t)(p[0] | p[1] << 8); break;
    case DP_GGUF_U32: *out = rd32(p); break;
    case DP_GGUF_I32: *out = (int32_t)rd32(p); break;
    case DP_GGUF_U64:
        if (rd64(p) > (uint64_t)INT64_MAX)
            return dp_err_set(err, DP_E_FORMAT, "%s: metadata '%s' is out of range", label_of(f), key);
        *out = (int64_t)rd64(p);
        break;
    case DP_GGUF_I64: *out = (int64_t)rd64(p); break;
    case DP_GGUF_BOOL: *out = p[0] != 0; break;
    default: return dp_err_set(err, DP_E_FORMAT, "%s: metadata '%s' is not an integer", label_of(f), key);
    }
    return DP_OK;
}

int dp_gguf_get_float(const dp_gguf *f, const char *key, double *out, int required, dp_err *err) {
    const dp_gguf_kv *e = dp_gguf_find(f, key);
    if (!e) return required ? dp_err_set(err, DP_E_FORMAT, "%s: metadata '%s' is missing", label_of(f), key) : DP_OK;
    if (e->type == DP_GGUF_F32) {
        uint32_t u = rd32(e->data);
        float x;
        memcpy(&x, &u, 4);
        *out = x;
    } else if (e->type == DP_GGUF_F64) {
        uint64_t u = rd64(e->data);
        memcpy(out, &u, 8);
    } else {
        int64_t v;
        int rc = dp_gguf_get_int(f, key, &v, 1, err);
        if (rc) return dp_err_set(err, DP_E_FORMAT, "%s: metadata '%s' is not a number", label_of(f), key);
        *out = (double)v;
    }
    return DP_OK;
}

int dp_gguf_get_str(const dp_gguf *f, const char *key, const char **s, uint64_t *len, dp_err *err) {
    const dp_gguf_kv *e = dp_gguf_find(f, key);
    if (!e || e->type != DP_GGUF_STRING)
        return dp_err_set(err, DP_E_FORMAT, "%s: metadata '%s' is %s", label_of(f), key,
                          e ? "not a string" : "missing");
    *len = rd64(e->data);
    *s = (const char *)e->data + 8;
    return DP_OK;
}

int dp_gguf_str_array(const dp_gguf *f, const char *key, const char ***ptrs, uint64_t **lens, uint64_t *n,
                      dp_err *err) {
    const dp_gguf_kv *e = dp_gguf_find(f, key);
    if (!e || e->type != DP_GGUF_ARRAY || e->elem_type != DP_GGUF_STRING)
        return dp_err_set(err, DP_E_FORMAT, "%s: metadata '%s' is %s", label_of(f), key,
                          e ? "not an array of strings" : "missing");
    *n = e->n;
    *ptrs = dp_malloc((size_t)(e->n ? e->n : 1) * sizeof **ptrs, "gguf");
    *lens = dp_malloc((size_t)(e->n ? e->n : 1) * sizeof **lens, "gguf");
    const uint8_t *p = e->data; /* validated by the parser */
    for (uint64_t i = 0; i < e->n; i++) {
        (*lens)[i] = rd64(p);
        (*ptrs)[i] = (const char *)p + 8;
        p += 8 + (*lens)[i];
    }
    return DP_OK;
}

/* ---------------- dequantization (ggml-quants.c, dequantize_row_*) ---------------- */

static float h2f(const uint8_t *p) {
    return dp_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

static void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

void dp_ggml_dequantize(int type, const void *src, float *y, int64_t n) {
    const uint8_t *b = src;
    switch (type) {
    case DP_GGML_F32: memcpy(y, src, (size_t)n * 4); return;
    case DP_GGML_F16:
        for (int64_t i = 0; i < n; i++) y[i] = h2f(b + 2 * i);
        return;
    case DP_GGML_BF16:
        for (int64_t i = 0; i < n; i++) y[i] = dp_bf16_to_f32((uint16_t)(b[2 * i] | b[2 * i + 1] << 8));
        return;
    case DP_GGML_Q4_0:
        for (int64_t i = 0; i < n / 32; i++, b += 18, y += 32) {
            const float d = h2f(b);
            for (int j = 0; j < 16; j++) {
                const int x0 = (b[2 + j] & 0x0F) - 8, x1 = (b[2 + j] >> 4) - 8;
                y[j] = (float)x0 * d;
                y[j + 16] = (float)x1 * d;
            }
        }
        return;
    case DP_GGML_Q4_1:
        for (int64_t i = 0; i < n / 32; i++, b += 20, y += 32) {
            const float d = h2f(b), m = h2f(b + 2);
            for (int j = 0; j < 16; j++) {
                const int x0 = b[4 + j] & 0x0F, x1 = b[4 + j] >> 4;
                y[j] = (float)x0 * d + m;
                y[j + 16] = (float)x1 * d + m;
            }
        }
        return;
    case DP_GGML_Q5_0:
        for (int64_t i = 0; i < n / 32; i++, b += 22, y += 32) {
            const float d = h2f(b);
            const uint32_t qh = rd32(b + 2);
            for (int j = 0; j < 16; j++) {
                const uint8_t xh0 = (uint8_t)(((qh >> (j + 0)) << 4) & 0x10), xh1 = (uint8_t)((qh >> (j + 12)) & 0x10);
                const int x0 = ((b[6 + j] & 0x0F) | xh0) - 16, x1 = ((b[6 + j] >> 4) | xh1) - 16;
                y[j] = (float)x0 * d;
                y[j + 16] = (float)x1 * d;
            }
        }
        return;
    case DP_GGML_Q5_1:
        for (int64_t i = 0; i < n / 32; i++, b += 24, y += 32) {
            const float d = h2f(b), m = h2f(b + 2);
            const uint32_t qh = rd32(b + 4);
            for (int j = 0; j < 16; j++) {
                const uint8_t xh0 = (uint8_t)(((qh >> (j + 0)) << 4) & 0x10), xh1 = (uint8_t)((qh >> (j + 12)) & 0x10);
                const int x0 = (b[8 + j] & 0x0F) | xh0, x1 = (b[8 + j] >> 4) | xh1;
                y[j] = (float)x0 * d + m;
                y[j + 16] = (float)x1 * d + m;
            }
        }
        return;
    case DP_GGML_Q8_0:
        for (int64_t i = 0; i < n / 32; i++, b += 34, y += 32) {
            const float d = h2f(b);
            for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
        }
        return;
    case DP_GGML_Q4_K:
        for (int64_t i = 0; i < n / 256; i++, b += 144) {
            const float d = h2f(b), min = h2f(b + 2);
            const uint8_t *scales = b + 4, *q = b + 16;
            int is = 0;
            uint8_t sc, m;
            for (int j = 0; j < 256; j += 64) {
                get_scale_min_k4(is + 0, scales, &sc, &m);
                const float d1 = d * sc, m1 = min * m;
                get_scale_min_k4(is + 1, scales, &sc, &m);
                const float d2 = d * sc, m2 = min * m;
                for (int l = 0; l < 32; ++l) *y++ = d1 * (float)(q[l] & 0xF) - m1;
                for (int l = 0; l < 32; ++l) *y++ = d2 * (float)(q[l] >> 4) - m2;
                q += 32;
                is += 2;
            }
        }
        return;
    case DP_GGML_Q5_K:
        for (int64_t i = 0; i < n / 256; i++, b += 176) {
            const float d = h2f(b), min = h2f(b + 2);
            const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
            int is = 0;
            uint8_t sc, m, u1 = 1, u2 = 2;
            for (int j = 0; j < 256; j += 64) {
                get_scale_min_k4(is + 0, scales, &sc, &m);
                const float d1 = d * sc, m1 = min * m;
                get_scale_min_k4(is + 1, scales, &sc, &m);
                const float d2 = d * sc, m2 = min * m;
                for (int l = 0; l < 32; ++l) *y++ = d1 * (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
                for (int l = 0; l < 32; ++l) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
                ql += 32;
                is += 2;
                u1 = (uint8_t)(u1 << 2);
                u2 = (uint8_t)(u2 << 2);
            }
        }
        return;
    case DP_GGML_Q6_K:
        for (int64_t i = 0; i < n / 256; i++, b += 210) {
            const float d = h2f(b + 208);
            const uint8_t *ql = b, *qh = b + 128;
            const int8_t *sc = (const int8_t *)(b + 192);
            for (int k = 0; k < 256; k += 128) {
                for (int l = 0; l < 32; ++l) {
                    const int is = l / 16;
                    const int8_t q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    const int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l + 0] = d * (float)sc[is + 0] * (float)q1;
                    y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                    y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                    y[l + 96] = d * (float)sc[is + 6] * (float)q4;
                }
                y += 128;
                ql += 64;
                qh += 32;
                sc += 8;
            }
        }
        return;
    default: dp_fatal("dp_ggml_dequantize: type %d is not read", type);
    }
}
