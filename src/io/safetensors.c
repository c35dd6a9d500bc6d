/* safetensors reader (mmap + strict validation) and writer (aligned,
 * sharded, atomic). The validation rules follow the reference
 * implementation one for one; see safetensors.h for the list. */
#include "depthprune/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "depthprune/strmap.h"
#include "depthprune/utf8.h"

/* Every dtype the reference knows, with its size in bits; depthprune
 * computes in the ones that map to a dp_dtype. */
static const struct {
    const char *name;
    int bits;
    int dtype;
} k_st_dtypes[] = {
    {"BOOL", 8, DP_DTYPE_BOOL},
    {"F4", 4, -1},
    {"F6_E2M3", 6, -1},
    {"F6_E3M2", 6, -1},
    {"U8", 8, DP_DTYPE_U8},
    {"I8", 8, DP_DTYPE_I8},
    {"F8_E5M2", 8, -1},
    {"F8_E4M3", 8, -1},
    {"F8_E8M0", 8, -1},
    {"F8_E4M3FNUZ", 8, -1},
    {"F8_E5M2FNUZ", 8, -1},
    {"I16", 16, DP_DTYPE_I16},
    {"U16", 16, DP_DTYPE_U16},
    {"F16", 16, DP_DTYPE_F16},
    {"BF16", 16, DP_DTYPE_BF16},
    {"I32", 32, DP_DTYPE_I32},
    {"U32", 32, DP_DTYPE_U32},
    {"F32", 32, DP_DTYPE_F32},
    {"C64", 64, -1},
    {"F64", 64, DP_DTYPE_F64},
    {"I64", 64, DP_DTYPE_I64},
    {"U64", 64, DP_DTYPE_U64},
};
#define N_ST_DTYPES ((int)(sizeof k_st_dtypes / sizeof k_st_dtypes[0]))

/* Integers in JSON arrive as doubles; accept exact non-negative integers
 * up to 2^53 (larger values cannot describe a real file anyway). */
static int json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d != floor(d) || d > 9007199254740992.0) return -1;
    *out = (uint64_t)d;
    return 0;
}

static void free_tensors(dp_st_file *f) {
    for (int i = 0; i < f->n_tensors; i++) dp_free(f->tensors[i].name);
    dp_free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        dp_free(f->meta_keys[i]);
        dp_free(f->meta_values[i]);
    }
    dp_free(f->meta_keys);
    dp_free(f->meta_values);
    f->tensors = NULL;
    f->meta_keys = f->meta_values = NULL;
    f->n_tensors = f->n_meta = 0;
}

static int cmp_by_offset(const void *a, const void *b) {
    const dp_st_tensor *x = *(const dp_st_tensor *const *)a, *y = *(const dp_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int parse_entry(const cJSON *item, const char *label, dp_st_tensor *t, dp_err *err) {
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return dp_err_set(err, DP_ST_E_ENTRY_NOT_OBJECT, "%s: tensor '%s': entry is not an object", label, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!dt || !sh || !of)
        return dp_err_set(err, DP_ST_E_MISSING_FIELD, "%s: tensor '%s': missing field '%s'", label, name,
                          !dt   ? "dtype"
                          : !sh ? "shape"
                                : "data_offsets");
    int bits = 0;
    t->dtype = -1;
    t->dtype_name = NULL;
    if (cJSON_IsString(dt))
        for (int i = 0; i < N_ST_DTYPES; i++)
            if (strcmp(k_st_dtypes[i].name, dt->valuestring) == 0) {
                t->dtype_name = k_st_dtypes[i].name;
                t->dtype = k_st_dtypes[i].dtype;
                bits = k_st_dtypes[i].bits;
            }
    if (!t->dtype_name)
        return dp_err_set(err, DP_ST_E_UNKNOWN_DTYPE, "%s: tensor '%s': unknown dtype %s", label, name,
                          cJSON_IsString(dt) ? dt->valuestring : "(not a string)");
    if (!cJSON_IsArray(sh))
        return dp_err_set(err, DP_ST_E_BAD_SHAPE, "%s: tensor '%s': shape is not an array", label, name);
    int ndim = cJSON_GetArraySize(sh);
    if (ndim > DP_MAX_DIMS)
        return dp_err_set(err, DP_ST_E_RANK_TOO_HIGH, "%s: tensor '%s': rank %d exceeds %d", label, name, ndim,
                          DP_MAX_DIMS);
    t->ndim = ndim;
    uint64_t numel = 1;
    int k = 0;
    for (const cJSON *d = sh->child; d; d = d->next, k++) {
        uint64_t v;
        if (json_u64(d, &v))
            return dp_err_set(err, DP_ST_E_BAD_SHAPE, "%s: tensor '%s': shape entry %d is not a non-negative integer",
                              label, name, k);
        if (__builtin_mul_overflow(numel, v, &numel))
            return dp_err_set(err, DP_ST_E_SHAPE_OVERFLOW, "%s: tensor '%s': shape product overflows 64 bits", label,
                              name);
        t->shape[k] = (int64_t)v;
    }
    uint64_t nbits;
    if (__builtin_mul_overflow(numel, (uint64_t)bits, &nbits))
        return dp_err_set(err, DP_ST_E_SHAPE_OVERFLOW, "%s: tensor '%s': size in bytes overflows 64 bits", label, name);
    if (nbits % 8)
        return dp_err_set(err, DP_ST_E_MISALIGNED_SLICE, "%s: tensor '%s': %llu elements of %s do not fill whole bytes",
                          label, name, (unsigned long long)numel, t->dtype_name);
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 || json_u64(of->child, &t->begin) ||
        json_u64(of->child->next, &t->end))
        return dp_err_set(err, DP_ST_E_BAD_OFFSETS,
                          "%s: tensor '%s': data_offsets must be [begin, end] non-negative integers", label, name);
    if (t->end < t->begin)
        return dp_err_set(err, DP_ST_E_OFFSETS_REVERSED, "%s: tensor '%s': data_offsets end %llu < begin %llu", label,
                          name, (unsigned long long)t->end, (unsigned long long)t->begin);
    if (t->end - t->begin != nbits / 8)
        return dp_err_set(err, DP_ST_E_SIZE_MISMATCH,
                          "%s: tensor '%s': data_offsets span %llu bytes but shape x %s needs %llu", label, name,
                          (unsigned long long)(t->end - t->begin), t->dtype_name, (unsigned long long)(nbits / 8));
    return DP_OK;
}

int dp_st_parse(const void *bytes, size_t n_bytes, const char *label, dp_st_file *out, dp_err *err) {
    memset(out, 0, sizeof *out);
    const unsigned char *b = bytes;
    if (n_bytes < 8)
        return dp_err_set(err, DP_ST_E_TOO_SHORT, "%s: %zu bytes: too short for a safetensors header", label, n_bytes);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
    if (n > DP_ST_MAX_HEADER_BYTES)
        return dp_err_set(err, DP_ST_E_HEADER_TOO_LARGE, "%s: header length %llu exceeds 100 MB", label,
                          (unsigned long long)n);
    if (n > n_bytes - 8)
        return dp_err_set(err, DP_ST_E_HEADER_PAST_EOF,
                          "%s: header length %llu runs past the end of the file (%zu bytes)", label,
                          (unsigned long long)n, n_bytes);
    const char *hdr = (const char *)b + 8;
    if (!dp_utf8_valid(hdr, (size_t)n))
        return dp_err_set(err, DP_ST_E_HEADER_NOT_UTF8, "%s: header is not valid UTF-8", label);
    size_t lead = 0;
    while (lead < n && (hdr[lead] == ' ' || hdr[lead] == '\t' || hdr[lead] == '\n' || hdr[lead] == '\r')) lead++;
    if (lead < n && hdr[lead] != '{')
        return dp_err_set(err, DP_ST_E_HEADER_NOT_OBJECT, "%s: header is not a JSON object", label);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)n, &end, 0);
    if (root) {
        /* only whitespace (the writer's padding) may follow the object */
        for (const char *p = end; p < hdr + n; p++)
            if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0') {
                cJSON_Delete(root);
                root = NULL;
                break;
            }
    }
    if (!root) return dp_err_set(err, DP_ST_E_HEADER_NOT_JSON, "%s: header is not valid JSON", label);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dp_err_set(err, DP_ST_E_HEADER_NOT_OBJECT, "%s: header is not a JSON object", label);
    }
    int rc = DP_OK;
    int n_items = cJSON_GetArraySize(root);
    out->tensors = dp_calloc((size_t)(n_items ? n_items : 1), sizeof *out->tensors, "safetensors");
    out->header_bytes = n;
    dp_strmap seen;
    dp_strmap_init(&seen, (size_t)n_items);
    int n_meta_seen = 0;
    for (const cJSON *it = root->child; it && rc == DP_OK; it = it->next) {
        const char *name = it->string;
        if (!dp_strmap_put(&seen, name, strlen(name), 0)) {
            rc = dp_err_set(err, DP_ST_E_DUPLICATE_NAME, "%s: tensor '%s': duplicate name", label, name);
            break;
        }
        if (strcmp(name, "__metadata__") == 0) {
            n_meta_seen++;
            if (!cJSON_IsObject(it)) {
                rc = dp_err_set(err, DP_ST_E_METADATA_NOT_OBJECT, "%s: __metadata__ is not an object", label);
                break;
            }
            int nm = cJSON_GetArraySize(it);
            out->meta_keys = dp_calloc((size_t)(nm ? nm : 1), sizeof(char *), "safetensors");
            out->meta_values = dp_calloc((size_t)(nm ? nm : 1), sizeof(char *), "safetensors");
            for (const cJSON *m = it->child; m; m = m->next) {
                if (!cJSON_IsString(m)) {
                    rc = dp_err_set(err, DP_ST_E_METADATA_NOT_STRING, "%s: __metadata__ value of '%s' is not a string",
                                    label, m->string);
                    break;
                }
                out->meta_keys[out->n_meta] = dp_strdup(m->string, "safetensors");
                out->meta_values[out->n_meta++] = dp_strdup(m->valuestring, "safetensors");
            }
            continue;
        }
        dp_st_tensor *t = &out->tensors[out->n_tensors];
        rc = parse_entry(it, label, t, err);
        if (rc == DP_OK) {
            t->name = dp_strdup(name, "safetensors");
            out->n_tensors++;
        }
    }
    dp_strmap_free(&seen);
    cJSON_Delete(root);

    /* offsets: sorted, contiguous from 0, no gaps or overlaps, ending at EOF */
    if (rc == DP_OK) {
        uint64_t data_bytes = (uint64_t)n_bytes - 8 - n;
        const dp_st_tensor **order =
            dp_malloc(sizeof(*order) * (size_t)(out->n_tensors ? out->n_tensors : 1), "safetensors");
        for (int i = 0; i < out->n_tensors; i++) order[i] = &out->tensors[i];
        qsort(order, (size_t)out->n_tensors, sizeof *order, cmp_by_offset);
        uint64_t pos = 0;
        for (int i = 0; i < out->n_tensors && rc == DP_OK; i++) {
            const dp_st_tensor *t = order[i];
            if (t->begin != pos) {
                if (i == 0)
                    rc = dp_err_set(err, DP_ST_E_NOT_FROM_ZERO, "%s: tensor '%s': data starts at %llu, not 0", label,
                                    t->name, (unsigned long long)t->begin);
                else if (t->begin > pos)
                    rc = dp_err_set(err, DP_ST_E_GAP, "%s: tensor '%s': gap of %llu bytes before its data", label,
                                    t->name, (unsigned long long)(t->begin - pos));
                else
                    rc = dp_err_set(err, DP_ST_E_OVERLAP, "%s: tensor '%s': data overlaps the previous tensor", label,
                                    t->name);
            }
            pos = t->end;
        }
        if (rc == DP_OK && pos > data_bytes)
            rc =
                dp_err_set(err, DP_ST_E_TRUNCATED, "%s: tensors need %llu data bytes but the file has %llu (truncated)",
                           label, (unsigned long long)pos, (unsigned long long)data_bytes);
        if (rc == DP_OK && pos < data_bytes)
            rc = dp_err_set(err, DP_ST_E_TRAILING_BYTES,
                            "%s: %llu bytes after the last tensor (file must end at the last tensor)", label,
                            (unsigned long long)(data_bytes - pos));
        dp_free(order);
    }
    if (rc != DP_OK) {
        free_tensors(out);
        return rc;
    }
    const unsigned char *data = b + 8 + n;
    for (int i = 0; i < out->n_tensors; i++) out->tensors[i].data = data + out->tensors[i].begin;
    return DP_OK;
}

int dp_st_open(const char *path, dp_st_file *f, dp_err *err) {
    memset(f, 0, sizeof *f);
    void *map;
    size_t size;
    int rc = dp_map_file(path, &map, &size, err);
    if (rc) return rc;
    rc = dp_st_parse(size ? map : "", size, path, f, err);
    if (rc != DP_OK) {
        dp_unmap_file(map, size);
        return rc;
    }
    f->map = map;
    f->map_bytes = size;
    f->path = dp_strdup(path, "safetensors");
    return DP_OK;
}

void dp_st_close(dp_st_file *f) {
    free_tensors(f);
    dp_unmap_file(f->map, f->map_bytes);
    dp_free(f->path);
    memset(f, 0, sizeof *f);
}

const dp_st_tensor *dp_st_find(const dp_st_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

int64_t dp_st_numel(const dp_st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

float *dp_st_to_f32(const dp_st_tensor *t, const char *label) {
    int64_t n = dp_st_numel(t);
    float *out = dp_malloc(sizeof(float) * (size_t)(n ? n : 1), label);
    if (dp_convert_to_f32(out, t->data, (dp_dtype)t->dtype, (size_t)n) != 0)
        dp_fatal("tensor %s: dtype %s is not a float type", t->name, t->dtype_name);
    return out;
}

/* ---- sharded checkpoints ---- */

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const dp_st_tensor *const *)a)->name, (*(const dp_st_tensor *const *)b)->name);
}

static int shard_name_ok(const char *s) {
    if (!*s || strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return 0;
    return 1;
}

static int open_index(dp_st_model *m, const char *index_path, dp_err *err) {
    char *text;
    size_t len;
    int rc = dp_read_file(index_path, &text, &len, err);
    if (rc) return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    dp_free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dp_err_set(err, DP_ST_E_INDEX_NOT_JSON, "%s: not a JSON object", index_path);
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return dp_err_set(err, DP_ST_E_INDEX_NO_WEIGHT_MAP, "%s: no \"weight_map\" object", index_path);
    }
    /* distinct shard names, in order of first appearance */
    dp_strmap shards, names;
    dp_strmap_init(&shards, 16);
    dp_strmap_init(&names, (size_t)cJSON_GetArraySize(wm));
    char **shard_list = NULL;
    int n_shards = 0;
    for (const cJSON *e = wm->child; e && rc == DP_OK; e = e->next) {
        if (!cJSON_IsString(e)) {
            rc =
                dp_err_set(err, DP_ST_E_INDEX_BAD_ENTRY, "%s: weight_map['%s'] is not a string", index_path, e->string);
            break;
        }
        if (!dp_strmap_put(&names, e->string, strlen(e->string), 0)) {
            rc = dp_err_set(err, DP_ST_E_INDEX_DUPLICATE, "%s: tensor '%s' listed twice in weight_map", index_path,
                            e->string);
            break;
        }
        if (!shard_name_ok(e->valuestring)) {
            rc = dp_err_set(err, DP_ST_E_INDEX_BAD_SHARD_NAME,
                            "%s: tensor '%s': shard name '%s' is not a plain file name", index_path, e->string,
                            e->valuestring);
            break;
        }
        if (dp_strmap_put(&shards, e->valuestring, strlen(e->valuestring), n_shards)) {
            shard_list = dp_realloc(shard_list, sizeof(char *) * (size_t)(n_shards + 1), "safetensors");
            shard_list[n_shards++] = dp_strdup(e->valuestring, "safetensors");
        }
    }
    if (rc == DP_OK) {
        int opened = 0;
        m->files = dp_calloc((size_t)(n_shards ? n_shards : 1), sizeof *m->files, "safetensors");
        for (int i = 0; i < n_shards && rc == DP_OK; i++) {
            char *p = dp_path_join(m->dir, shard_list[i]);
            if (!dp_file_exists(p))
                rc = dp_err_set(err, DP_ST_E_INDEX_MISSING_SHARD, "%s: shard '%s' does not exist", index_path,
                                shard_list[i]);
            else
                rc = dp_st_open(p, &m->files[i], err);
            if (rc == DP_OK) opened++;
            dp_free(p);
        }
        m->n_files = opened; /* dp_st_model_close closes exactly the opened shards */
    }
    /* every listed tensor is in its shard; every shard tensor is listed there */
    for (const cJSON *e = wm->child; e && rc == DP_OK; e = e->next) {
        int64_t fi = 0;
        dp_strmap_get(&shards, e->valuestring, strlen(e->valuestring), &fi);
        if (!dp_st_find(&m->files[fi], e->string))
            rc = dp_err_set(err, DP_ST_E_INDEX_TENSOR_NOT_IN_SHARD,
                            "%s: tensor '%s' is mapped to '%s' but that shard does not contain it", index_path,
                            e->string, e->valuestring);
    }
    for (int i = 0; i < m->n_files && rc == DP_OK; i++) {
        for (int k = 0; k < m->files[i].n_tensors && rc == DP_OK; k++) {
            const char *tn = m->files[i].tensors[k].name;
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(wm, tn);
            if (!e || strcmp(e->valuestring, shard_list[i]) != 0)
                rc = dp_err_set(err, DP_ST_E_INDEX_TENSOR_NOT_LISTED,
                                "%s: shard '%s' holds tensor '%s' which the index %s", index_path, shard_list[i], tn,
                                e ? "maps to another shard" : "does not list");
        }
    }
    for (size_t i = 0; shard_list && i < shards.count; i++) dp_free(shard_list[i]);
    dp_free(shard_list);
    dp_strmap_free(&shards);
    dp_strmap_free(&names);
    cJSON_Delete(root);
    return rc;
}

int dp_st_model_open(const char *dir, dp_st_model *m, dp_err *err) {
    memset(m, 0, sizeof *m);
    m->dir = dp_strdup(dir, "safetensors");
    char *index = dp_path_join(dir, "model.safetensors.index.json");
    char *single = dp_path_join(dir, "model.safetensors");
    int rc;
    if (dp_file_exists(index)) {
        rc = open_index(m, index, err);
    } else if (dp_file_exists(single)) {
        m->files = dp_calloc(1, sizeof *m->files, "safetensors");
        rc = dp_st_open(single, &m->files[0], err);
        if (rc == DP_OK) m->n_files = 1;
    } else {
        rc = dp_err_set(err, DP_ST_E_NO_CHECKPOINT, "%s: no model.safetensors or model.safetensors.index.json", dir);
    }
    dp_free(index);
    dp_free(single);
    if (rc != DP_OK) {
        dp_st_model_close(m);
        return rc;
    }
    int total = 0;
    for (int i = 0; i < m->n_files; i++) total += m->files[i].n_tensors;
    m->tensors = dp_malloc(sizeof(*m->tensors) * (size_t)(total ? total : 1), "safetensors");
    for (int i = 0; i < m->n_files; i++)
        for (int k = 0; k < m->files[i].n_tensors; k++) {
            m->files[i].tensors[k].file = i;
            m->tensors[m->n_tensors++] = &m->files[i].tensors[k];
        }
    qsort(m->tensors, (size_t)m->n_tensors, sizeof *m->tensors, cmp_tensor_name);
    for (int i = 1; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i - 1]->name, m->tensors[i]->name) == 0) {
            rc = dp_err_set(err, DP_ST_E_DUPLICATE_NAME, "%s: tensor '%s' appears in two shards", dir,
                            m->tensors[i]->name);
            dp_st_model_close(m);
            return rc;
        }
    return DP_OK;
}

void dp_st_model_close(dp_st_model *m) {
    for (int i = 0; i < m->n_files; i++) dp_st_close(&m->files[i]);
    dp_free(m->files);
    dp_free(m->tensors);
    dp_free(m->dir);
    memset(m, 0, sizeof *m);
}

const dp_st_tensor *dp_st_model_find(const dp_st_model *m, const char *name) {
    size_t lo = 0, hi = (size_t)m->n_tensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(m->tensors[mid]->name, name);
        if (c == 0) return m->tensors[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- writer ---- */

static void sb_json_string(dp_buf *s, const char *p) {
    dp_buf_put(s, "\"", 1);
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char tmp[8];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            dp_buf_put(s, tmp, 2);
        } else if (c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            dp_buf_put(s, tmp, 6);
        } else {
            dp_buf_put(s, (const char *)&c, 1);
        }
    }
    dp_buf_put(s, "\"", 1);
}

static size_t entry_bytes(const dp_st_entry *e) {
    size_t n = dp_dtype_size(e->dtype);
    for (int i = 0; i < e->ndim; i++) n *= (size_t)e->shape[i];
    return n;
}

static int cmp_write_order(const void *a, const void *b) {
    const dp_st_entry *x = *(const dp_st_entry *const *)a, *y = *(const dp_st_entry *const *)b;
    size_t ax = dp_dtype_size(x->dtype), ay = dp_dtype_size(y->dtype);
    if (ax != ay) return ax > ay ? -1 : 1; /* larger alignment first */
    return strcmp(x->name, y->name);
}

int dp_st_write(const char *path, const dp_st_entry *entries, int n, dp_err *err) {
    const dp_st_entry **order = dp_malloc(sizeof(*order) * (size_t)(n ? n : 1), "safetensors.writer");
    for (int i = 0; i < n; i++) order[i] = &entries[i];
    qsort(order, (size_t)n, sizeof *order, cmp_write_order);
    dp_buf h = {0};
    dp_buf_puts(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const dp_st_entry *e = order[i];
        char tmp[128];
        dp_buf_puts(&h, ",");
        sb_json_string(&h, e->name);
        dp_buf_puts(&h, ":{\"dtype\":\"");
        dp_buf_puts(&h, dp_dtype_name(e->dtype));
        dp_buf_puts(&h, "\",\"shape\":[");
        for (int k = 0; k < e->ndim; k++) {
            snprintf(tmp, sizeof tmp, "%s%lld", k ? "," : "", (long long)e->shape[k]);
            dp_buf_puts(&h, tmp);
        }
        uint64_t nb = entry_bytes(e);
        snprintf(tmp, sizeof tmp, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + nb));
        dp_buf_puts(&h, tmp);
        off += nb;
    }
    dp_buf_puts(&h, "}");
    while (h.n % 8) dp_buf_puts(&h, " "); /* space padding to 8-byte alignment */

    size_t plen = strlen(path);
    char *tmp_path = dp_malloc(plen + 5, "path");
    snprintf(tmp_path, plen + 5, "%s.tmp", path);
    int rc = DP_OK;
    FILE *f = fopen(tmp_path, "wb");
    if (!f) {
        rc = dp_err_set(err, DP_E_IO, "%s: cannot create: %s", tmp_path, strerror(errno));
    } else {
        unsigned char len8[8];
        uint64_t hl = h.n;
        for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hl >> (8 * i));
        int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.p, 1, h.n, f) == h.n;
        for (int i = 0; ok && i < n; i++) {
            size_t nb = entry_bytes(order[i]);
            ok = nb == 0 || fwrite(order[i]->data, 1, nb, f) == nb;
            dp_heartbeat();
            if (i == n / 2) dp_fault_point("st_write");
        }
        ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
        if (fclose(f) != 0) ok = 0;
        if (!ok)
            rc = dp_err_set(err, DP_E_IO, "%s: write failed: %s", tmp_path, strerror(errno));
        else if (rename(tmp_path, path) != 0)
            rc = dp_err_set(err, DP_E_IO, "%s: rename failed: %s", path, strerror(errno));
        if (rc != DP_OK) unlink(tmp_path);
    }
    dp_free(tmp_path);
    dp_free(h.p);
    dp_free(order);
    return rc;
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp((*(const dp_st_entry *const *)a)->name, (*(const dp_st_entry *const *)b)->name);
}

int dp_st_write_model(const char *dir, const dp_st_entry *entries, int n, uint64_t max_shard_bytes, dp_err *err) {
    const dp_st_entry **order = dp_malloc(sizeof(*order) * (size_t)(n ? n : 1), "safetensors.writer");
    for (int i = 0; i < n; i++) order[i] = &entries[i];
    qsort(order, (size_t)n, sizeof *order, cmp_entry_name);
    /* greedy assignment in name order */
    int *shard_of = dp_malloc(sizeof(int) * (size_t)(n ? n : 1), "safetensors.writer");
    int n_shards = 0;
    uint64_t cur = 0, total = 0;
    for (int i = 0; i < n; i++) {
        uint64_t nb = entry_bytes(order[i]);
        total += nb;
        if (n_shards == 0 || (cur > 0 && cur + nb > max_shard_bytes)) {
            n_shards++;
            cur = 0;
        }
        shard_of[i] = n_shards - 1;
        cur += nb;
    }
    if (n_shards == 0) n_shards = 1;
    int rc = DP_OK;
    if (n_shards == 1) {
        dp_st_entry *flat = dp_malloc(sizeof *flat * (size_t)(n ? n : 1), "safetensors.writer");
        for (int i = 0; i < n; i++) flat[i] = *order[i];
        char *p = dp_path_join(dir, "model.safetensors");
        rc = dp_st_write(p, flat, n, err);
        dp_free(p);
        dp_free(flat);
    } else {
        dp_buf idx = {0};
        char tmp[160];
        snprintf(tmp, sizeof tmp, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {",
                 (unsigned long long)total);
        dp_buf_puts(&idx, tmp);
        dp_st_entry *part = dp_malloc(sizeof *part * (size_t)n, "safetensors.writer");
        for (int s = 0; s < n_shards && rc == DP_OK; s++) {
            int np = 0;
            for (int i = 0; i < n; i++)
                if (shard_of[i] == s) part[np++] = *order[i];
            char name[64];
            snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
            char *p = dp_path_join(dir, name);
            rc = dp_st_write(p, part, np, err);
            dp_free(p);
        }
        for (int i = 0; i < n; i++) {
            char name[64];
            snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", shard_of[i] + 1, n_shards);
            dp_buf_puts(&idx, i ? ",\n    " : "\n    ");
            sb_json_string(&idx, order[i]->name);
            dp_buf_puts(&idx, ": ");
            sb_json_string(&idx, name);
        }
        dp_buf_puts(&idx, "\n  }\n}\n");
        if (rc == DP_OK) {
            char *p = dp_path_join(dir, "model.safetensors.index.json");
            rc = dp_write_file_atomic(p, idx.p, idx.n, err);
            dp_free(p);
        }
        dp_free(part);
        dp_free(idx.p);
    }
    dp_free(shard_of);
    dp_free(order);
    return rc;
}
