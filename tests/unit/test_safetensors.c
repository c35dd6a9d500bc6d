/* safetensors: a handcrafted corpus of malformed files, one per validation
 * rule (in the spirit of llama.cpp's test-gguf), each rejected with its own
 * error code; files that the reference accepts are accepted; write -> read
 * round trips are bit-identical, single-file and sharded.
 *
 * With --write-corpus DIR the corpus is also written to DIR (the fuzzer's
 * seeds). */
#include <sys/stat.h>
#include <unistd.h>

#include "../test.h"
#include "depthprune/safetensors.h"

typedef struct {
    const char *name;
    int want; /* DP_OK or the DP_ST_E_* code */
    unsigned char *bytes;
    size_t n;
} case_t;

static case_t g_cases[64];
static int g_n = 0;

/* header text + data bytes; hlen_override != 0 replaces the length prefix */
static void add_case(const char *name, int want, const char *header, size_t data_bytes, uint64_t hlen_override) {
    size_t hl = strlen(header);
    case_t *c = &g_cases[g_n++];
    c->name = name;
    c->want = want;
    c->n = 8 + hl + data_bytes;
    c->bytes = calloc(1, c->n + 1);
    uint64_t v = hlen_override ? hlen_override : hl;
    for (int i = 0; i < 8; i++) c->bytes[i] = (unsigned char)(v >> (8 * i));
    memcpy(c->bytes + 8, header, hl);
    for (size_t i = 0; i < data_bytes; i++) c->bytes[8 + hl + i] = (unsigned char)(i * 7 + 1);
}

static void add_raw(const char *name, int want, const unsigned char *b, size_t n) {
    case_t *c = &g_cases[g_n++];
    c->name = name;
    c->want = want;
    c->n = n;
    c->bytes = calloc(1, n + 1);
    memcpy(c->bytes, b, n);
}

#define T1 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
#define T2 "\"b\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[8,16]}"

static void build_corpus(void) {
    /* accepted */
    add_case("ok_two_tensors", DP_OK, "{" T1 "," T2 "}", 16, 0);
    add_case("ok_metadata", DP_OK, "{\"__metadata__\":{\"format\":\"pt\"}," T1 "}", 8, 0);
    add_case("ok_trailing_spaces", DP_OK, "{" T1 "}    ", 8, 0);
    add_case("ok_leading_spaces", DP_OK, "   {" T1 "}", 8, 0);
    add_case("ok_empty_header", DP_OK, "{}", 0, 0);
    add_case("ok_zero_size_tensor", DP_OK, "{\"z\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[0,0]}}", 0, 0);
    add_case("ok_scalar", DP_OK, "{\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}", 8, 0);
    add_case("ok_f8_dtype", DP_OK, "{\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[3],\"data_offsets\":[0,3]}}", 3, 0);
    add_case("ok_f4_even", DP_OK, "{\"q\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,2]}}", 2, 0);
    /* header length and framing */
    add_raw("too_short_0", DP_ST_E_TOO_SHORT, (const unsigned char *)"", 0);
    add_raw("too_short_7", DP_ST_E_TOO_SHORT, (const unsigned char *)"\x02\0\0\0\0\0\0", 7);
    add_case("header_len_max_u64", DP_ST_E_HEADER_TOO_LARGE, "{}", 0, UINT64_MAX);
    add_case("header_len_100MB_plus_1", DP_ST_E_HEADER_TOO_LARGE, "{}", 0, 100000001ull);
    add_case("header_len_past_eof", DP_ST_E_HEADER_PAST_EOF, "{}", 0, 50);
    add_case("header_not_utf8", DP_ST_E_HEADER_NOT_UTF8, "{\"\xff\xfe\":1}", 0, 0);
    add_case("header_overlong_utf8", DP_ST_E_HEADER_NOT_UTF8, "{\"\xc0\xaf\":1}", 0, 0);
    add_case("header_not_json", DP_ST_E_HEADER_NOT_JSON, "{\"a\":", 0, 0);
    add_case("header_trailing_garbage", DP_ST_E_HEADER_NOT_JSON, "{" T1 "}x", 8, 0);
    add_case("header_array", DP_ST_E_HEADER_NOT_OBJECT, "[1,2]", 0, 0);
    add_case("header_number", DP_ST_E_HEADER_NOT_OBJECT, "42", 0, 0);
    add_case("duplicate_name", DP_ST_E_DUPLICATE_NAME,
             "{" T1 ",\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, 0);
    add_case("metadata_not_object", DP_ST_E_METADATA_NOT_OBJECT, "{\"__metadata__\":[1]," T1 "}", 8, 0);
    add_case("metadata_value_not_string", DP_ST_E_METADATA_NOT_STRING, "{\"__metadata__\":{\"format\":1}," T1 "}", 8,
             0);
    add_case("entry_not_object", DP_ST_E_ENTRY_NOT_OBJECT, "{\"a\":[1,2]}", 0, 0);
    add_case("missing_dtype", DP_ST_E_MISSING_FIELD, "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0);
    add_case("missing_shape", DP_ST_E_MISSING_FIELD, "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, 0);
    add_case("missing_offsets", DP_ST_E_MISSING_FIELD, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, 0);
    add_case("unknown_dtype", DP_ST_E_UNKNOWN_DTYPE, "{\"a\":{\"dtype\":\"F31\",\"shape\":[2],\"data_offsets\":[0,8]}}",
             8, 0);
    add_case("dtype_not_string", DP_ST_E_UNKNOWN_DTYPE, "{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}",
             8, 0);
    add_case("shape_negative", DP_ST_E_BAD_SHAPE, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}",
             8, 0);
    add_case("shape_float", DP_ST_E_BAD_SHAPE, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8,
             0);
    add_case("shape_string", DP_ST_E_BAD_SHAPE, "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}",
             8, 0);
    add_case("shape_not_array", DP_ST_E_BAD_SHAPE, "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8,
             0);
    add_case("rank_too_high", DP_ST_E_RANK_TOO_HIGH,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, 0);
    add_case("shape_product_overflow", DP_ST_E_SHAPE_OVERFLOW,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[0,8]}}", 8, 0);
    add_case("shape_bytes_overflow", DP_ST_E_SHAPE_OVERFLOW,
             "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,1073741824],\"data_offsets\":[0,8]}}", 8, 0);
    add_case("offsets_one_value", DP_ST_E_BAD_OFFSETS, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8]}}",
             8, 0);
    add_case("offsets_negative", DP_ST_E_BAD_OFFSETS,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-1,7]}}", 8, 0);
    add_case("offsets_reversed", DP_ST_E_OFFSETS_REVERSED,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, 0);
    add_case("size_mismatch", DP_ST_E_SIZE_MISMATCH, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
             8, 0);
    add_case("sub_byte_odd_numel", DP_ST_E_MISALIGNED_SLICE,
             "{\"q\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2, 0);
    add_case("not_from_zero", DP_ST_E_NOT_FROM_ZERO,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, 0);
    add_case("gap", DP_ST_E_GAP, "{" T1 ",\"b\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[12,20]}}", 20, 0);
    add_case("overlap", DP_ST_E_OVERLAP, "{" T1 ",\"b\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[4,12]}}",
             12, 0);
    add_case("truncated_data", DP_ST_E_TRUNCATED, "{" T1 "," T2 "}", 12, 0);
    add_case("trailing_bytes_polyglot", DP_ST_E_TRAILING_BYTES, "{" T1 "}", 9, 0);
}

static void test_corpus(const char *write_dir) {
    build_corpus();
    int n_bad = 0;
    for (int i = 0; i < g_n; i++) {
        case_t *c = &g_cases[i];
        dp_st_file f;
        dp_err err;
        dp_err_clear(&err);
        int rc = dp_st_parse(c->bytes, c->n, c->name, &f, &err);
        CHECK_MSG(rc == c->want, "case %s: got %d (%s), want %d", c->name, rc, err.msg, c->want);
        if (rc != DP_OK) {
            n_bad++;
            CHECK_MSG(strstr(err.msg, c->name) != NULL, "case %s: message lacks the file: %s", c->name, err.msg);
        } else {
            dp_st_close(&f);
        }
        if (write_dir) {
            char p[512];
            snprintf(p, sizeof p, "%s/%s.safetensors", write_dir, c->name);
            FILE *o = fopen(p, "wb");
            if (o) {
                fwrite(c->bytes, 1, c->n, o);
                fclose(o);
            }
        }
    }
    CHECK_MSG(n_bad >= 30, "only %d malformed cases", n_bad);
    /* every rejection code is distinct per rule: all DP_ST_E_ codes up to TRAILING_BYTES used */
    for (int code = DP_ST_E_TOO_SHORT; code <= DP_ST_E_TRAILING_BYTES; code++) {
        int used = 0;
        for (int i = 0; i < g_n; i++) used |= g_cases[i].want == code;
        CHECK_MSG(used, "rule %d has no malformed file", code);
    }
    printf("safetensors corpus: %d files, %d malformed, all classified\n", g_n, n_bad);
}

static void fill(float *v, int n, int seed) {
    for (int i = 0; i < n; i++) v[i] = (float)((i * 37 + seed * 11) % 97) / 7.0f - 6.0f;
}

static void test_roundtrip(void) {
    char dir[] = "/tmp/dp_st_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    float a[6], c[5];
    uint16_t b[12];
    int32_t d[3] = {1, -2, 3};
    fill(a, 6, 1);
    fill(c, 5, 2);
    for (int i = 0; i < 12; i++) b[i] = (uint16_t)(0x3c00 + i * 3);
    dp_st_entry e[4] = {
        {"layer.b", DP_DTYPE_BF16, 2, {3, 4}, b},
        {"layer.a \"quoted\"", DP_DTYPE_F32, 2, {2, 3}, a},
        {"c", DP_DTYPE_F32, 1, {5}, c},
        {"d", DP_DTYPE_I32, 1, {3}, d},
    };
    char path[128];
    snprintf(path, sizeof path, "%s/one.safetensors", dir);
    dp_err err;
    CHECK_MSG(dp_st_write(path, e, 4, &err) == DP_OK, "%s", err.msg);
    dp_st_file f;
    CHECK_MSG(dp_st_open(path, &f, &err) == DP_OK, "%s", err.msg);
    CHECK_EQ_INT(f.n_tensors, 4);
    CHECK_EQ_INT(f.header_bytes % 8, 0);
    CHECK(f.n_meta == 1 && !strcmp(f.meta_keys[0], "format") && !strcmp(f.meta_values[0], "pt"));
    for (int i = 0; i < 4; i++) {
        const dp_st_tensor *t = dp_st_find(&f, e[i].name);
        CHECK(t != NULL);
        if (!t) continue;
        CHECK_EQ_INT(t->dtype, e[i].dtype);
        CHECK_EQ_INT(t->ndim, e[i].ndim);
        CHECK(memcmp(t->data, e[i].data, t->end - t->begin) == 0);
        /* naturally aligned within the data section */
        CHECK_EQ_INT(t->begin % dp_dtype_size(e[i].dtype), 0);
    }
    /* reference order: 4-byte dtypes first (by name), then 2-byte */
    CHECK(dp_st_find(&f, "layer.b")->begin > dp_st_find(&f, "layer.a \"quoted\"")->begin);
    dp_st_close(&f);

    /* sharded: a tiny shard limit gives one shard per tensor, plus an index */
    char sdir[160];
    snprintf(sdir, sizeof sdir, "%s/sharded", dir);
    mkdir(sdir, 0755);
    CHECK_MSG(dp_st_write_model(sdir, e, 4, 30, &err) == DP_OK, "%s", err.msg);
    dp_st_model m;
    CHECK_MSG(dp_st_model_open(sdir, &m, &err) == DP_OK, "%s", err.msg);
    /* greedy in name order: c (20 B) | d (12 B) | layer.a (24 B) | layer.b (24 B) */
    CHECK_EQ_INT(m.n_files, 4);
    CHECK_EQ_INT(m.n_tensors, 4);
    for (int i = 0; i < 4; i++) {
        const dp_st_tensor *t = dp_st_model_find(&m, e[i].name);
        CHECK(t && memcmp(t->data, e[i].data, t->end - t->begin) == 0);
    }
    dp_st_model_close(&m);

    /* index rules */
    char ip[200];
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", sdir);
    const char *bad_index[][2] = {
        {"{\"weight_map\": {\"c\": \"missing.safetensors\"}}", "does not exist"},
        {"{\"weight_map\": {\"c\": \"../x.safetensors\"}}", "not a plain file name"},
        {"{\"weight_map\": {\"c\": 3}}", "is not a string"},
        {"{\"metadata\": {}}", "weight_map"},
        {"not json", "not a JSON object"},
        {"{\"weight_map\": {\"c\": \"model-00002-of-00004.safetensors\"}}", "does not contain"},
        {"{\"weight_map\": {\"c\": \"model-00001-of-00004.safetensors\", \"c\": \"x\"}}", "listed twice"},
    };
    for (size_t k = 0; k < sizeof bad_index / sizeof *bad_index; k++) {
        FILE *o = fopen(ip, "w");
        fputs(bad_index[k][0], o);
        fclose(o);
        int rc = dp_st_model_open(sdir, &m, &err);
        CHECK_MSG(rc != DP_OK && strstr(err.msg, bad_index[k][1]), "index case %zu: rc %d msg %s", k, rc, err.msg);
    }
    /* a shard holding a tensor the index does not list */
    char extra[200];
    snprintf(extra, sizeof extra, "%s/extra.safetensors", sdir);
    CHECK(dp_st_write(extra, e + 2, 2, &err) == DP_OK); /* c and d */
    FILE *o = fopen(ip, "w");
    fputs("{\"weight_map\": {\"c\": \"extra.safetensors\"}}", o);
    fclose(o);
    int rc = dp_st_model_open(sdir, &m, &err);
    CHECK_MSG(rc == DP_ST_E_INDEX_TENSOR_NOT_LISTED, "rc %d %s", rc, err.msg);
    /* the same tensor in two shards */
    o = fopen(ip, "w");
    fputs("{\"weight_map\": {\"c\": \"extra.safetensors\", \"d\": \"model-00002-of-00004.safetensors\"}}", o);
    fclose(o);
    rc = dp_st_model_open(sdir, &m, &err);
    CHECK_MSG(rc == DP_ST_E_INDEX_TENSOR_NOT_LISTED, "rc %d %s", rc, err.msg);
    CHECK(dp_st_model_open(dir, &m, &err) == DP_ST_E_NO_CHECKPOINT);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

int main(int argc, char **argv) {
    const char *write_dir = argc > 2 && !strcmp(argv[1], "--write-corpus") ? argv[2] : NULL;
    test_corpus(write_dir);
    test_roundtrip();
    for (int i = 0; i < g_n; i++) free(g_cases[i].bytes);
    TEST_EXIT();
}
