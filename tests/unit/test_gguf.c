/* The GGUF reader: a valid file reads back, and each of 30 handcrafted
 * malformed files is refused with the error code of the rule it breaks;
 * dequantization of known blocks. `test_gguf --write-corpus DIR` writes the
 * valid file and the malformed ones as the fuzz seed corpus. */
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "../test.h"
#include "depthprune/gguf.h"
#include "depthprune/tensor.h"

typedef struct {
    uint8_t b[4096];
    size_t n;
} buf;

static void u8(buf *x, uint8_t v) {
    x->b[x->n++] = v;
}
static void u32(buf *x, uint32_t v) {
    for (int i = 0; i < 4; i++) u8(x, (uint8_t)(v >> (8 * i)));
}
static void u64(buf *x, uint64_t v) {
    for (int i = 0; i < 8; i++) u8(x, (uint8_t)(v >> (8 * i)));
}
static void str(buf *x, const char *s) {
    u64(x, strlen(s));
    memcpy(x->b + x->n, s, strlen(s));
    x->n += strlen(s);
}

enum {
    OK_V3,
    OK_V2,
    SHORT,
    MAGIC,
    VER1,
    VER4,
    MANY_T,
    MANY_KV,
    KEY_PAST_EOF,
    KEY_NOT_UTF8,
    KEY_EMPTY,
    VALUE_TYPE,
    ARRAY_ELEM_TYPE,
    ARRAY_HUGE,
    ARRAY_DEEP,
    DUP_KEY,
    ALIGN_48,
    ALIGN_U64,
    ALIGN_0,
    DUP_TENSOR,
    EMPTY_NAME,
    DIMS_0,
    DIMS_5,
    EXTENT_0,
    TTYPE,
    ROW,
    MISALIGNED,
    PAST_EOF,
    OVERLAP,
    TRUNC_INFO,
    VALUE_NOT_UTF8,
    VALUE_TRUNC,
    N_VARIANTS
};

static const struct {
    const char *name;
    int code;
} k_expect[N_VARIANTS] = {
    [OK_V3] = {"ok_v3", DP_OK},
    [OK_V2] = {"ok_v2", DP_OK},
    [SHORT] = {"too_short", DP_GGUF_E_TOO_SHORT},
    [MAGIC] = {"bad_magic", DP_GGUF_E_BAD_MAGIC},
    [VER1] = {"version_1", DP_GGUF_E_BAD_VERSION},
    [VER4] = {"version_4", DP_GGUF_E_BAD_VERSION},
    [MANY_T] = {"too_many_tensors", DP_GGUF_E_TOO_MANY_TENSORS},
    [MANY_KV] = {"too_many_kv", DP_GGUF_E_TOO_MANY_KV},
    [KEY_PAST_EOF] = {"key_past_eof", DP_GGUF_E_BAD_STRING},
    [KEY_NOT_UTF8] = {"key_not_utf8", DP_GGUF_E_BAD_STRING},
    [KEY_EMPTY] = {"key_empty", DP_GGUF_E_BAD_STRING},
    [VALUE_TYPE] = {"value_type", DP_GGUF_E_BAD_VALUE_TYPE},
    [ARRAY_ELEM_TYPE] = {"array_elem_type", DP_GGUF_E_BAD_VALUE_TYPE},
    [ARRAY_HUGE] = {"array_huge", DP_GGUF_E_TRUNCATED},
    [ARRAY_DEEP] = {"array_deep", DP_GGUF_E_ARRAY_TOO_DEEP},
    [DUP_KEY] = {"duplicate_key", DP_GGUF_E_DUPLICATE_KEY},
    [ALIGN_48] = {"alignment_48", DP_GGUF_E_BAD_ALIGNMENT},
    [ALIGN_U64] = {"alignment_u64", DP_GGUF_E_BAD_ALIGNMENT},
    [ALIGN_0] = {"alignment_0", DP_GGUF_E_BAD_ALIGNMENT},
    [DUP_TENSOR] = {"duplicate_tensor", DP_GGUF_E_DUPLICATE_TENSOR},
    [EMPTY_NAME] = {"empty_tensor_name", DP_GGUF_E_BAD_TENSOR_NAME},
    [DIMS_0] = {"dims_0", DP_GGUF_E_BAD_DIMS},
    [DIMS_5] = {"dims_5", DP_GGUF_E_BAD_DIMS},
    [EXTENT_0] = {"extent_0", DP_GGUF_E_BAD_DIMS},
    [TTYPE] = {"tensor_type", DP_GGUF_E_BAD_TENSOR_TYPE},
    [ROW] = {"row_not_block_multiple", DP_GGUF_E_BAD_ROW},
    [MISALIGNED] = {"misaligned_offset", DP_GGUF_E_MISALIGNED_TENSOR},
    [PAST_EOF] = {"tensor_past_eof", DP_GGUF_E_TENSOR_PAST_EOF},
    [OVERLAP] = {"overlap", DP_GGUF_E_OVERLAP},
    [TRUNC_INFO] = {"truncated_tensor_info", DP_GGUF_E_TRUNCATED},
    [VALUE_NOT_UTF8] = {"value_not_utf8", DP_GGUF_E_BAD_STRING},
    [VALUE_TRUNC] = {"value_truncated", DP_GGUF_E_TRUNCATED},
};

/* The file: 4 metadata entries (architecture, alignment, a u32 array, a
 * nested string array), tensors "norm" F32 [4] at 0 and "w" Q8_0 [32, 2]
 * at 32, data section padded to 32 bytes. Variant v breaks one rule. */
static void build(int v, buf *x) {
    memset(x, 0, sizeof *x);
    if (v == SHORT) {
        memcpy(x->b, "GGUF\3\0\0", 7);
        x->n = 10;
        return;
    }
    memcpy(x->b, v == MAGIC ? "GGUG" : "GGUF", 4);
    x->n = 4;
    u32(x, v == VER1 ? 1 : v == VER4 ? 4 : v == OK_V2 ? 2 : 3);
    u64(x, v == MANY_T ? (1ull << 40) : 2);
    u64(x, v == MANY_KV ? (1ull << 40) : 4u + (unsigned)(v == DUP_KEY || v == VALUE_TRUNC));
    /* kv 0: general.architecture = "llama" */
    if (v == KEY_PAST_EOF) {
        u64(x, 1ull << 30);
        x->n += 200; /* zeros: the counts fit, the key does not */
        return;
    }
    if (v == KEY_NOT_UTF8) {
        u64(x, 3);
        u8(x, 0xff), u8(x, 'a'), u8(x, 'b');
    } else if (v == KEY_EMPTY) {
        str(x, "");
    } else {
        str(x, "general.architecture");
    }
    u32(x, v == VALUE_TYPE ? 13 : 8);
    if (v == VALUE_NOT_UTF8) {
        u64(x, 2);
        u8(x, 0xc3), u8(x, 0x28);
    } else {
        str(x, "llama");
    }
    /* kv 1: general.alignment */
    str(x, "general.alignment");
    if (v == ALIGN_U64) {
        u32(x, 10);
        u64(x, 32);
    } else {
        u32(x, 4);
        u32(x, v == ALIGN_48 ? 48 : v == ALIGN_0 ? 0 : 32);
    }
    /* kv 2: a u32 array */
    str(x, "test.numbers");
    u32(x, 9);
    u32(x, v == ARRAY_ELEM_TYPE ? 77 : 4);
    u64(x, v == ARRAY_HUGE ? (1ull << 50) : 3);
    u32(x, 7), u32(x, 8), u32(x, 9);
    /* kv 3: an array of arrays of strings (depth 2), or depth 3 */
    str(x, "test.nested");
    u32(x, 9);
    u32(x, 9);
    u64(x, 1);
    if (v == ARRAY_DEEP) {
        u32(x, 9);
        u64(x, 1);
        u32(x, 8);
        u64(x, 1);
        str(x, "deep");
    } else {
        u32(x, 8);
        u64(x, 2);
        str(x, "a");
        str(x, "bc");
    }
    if (v == DUP_KEY) {
        str(x, "test.numbers");
        u32(x, 4);
        u32(x, 1);
    }
    if (v == VALUE_TRUNC) {
        str(x, "test.big");
        u32(x, 10);
        u32(x, 1); /* 4 of the 8 bytes, then the file ends */
        return;
    }
    /* tensor 0: norm, F32 [4] at 0 */
    str(x, v == EMPTY_NAME ? "" : "norm");
    u32(x, v == DIMS_0 ? 0 : v == DIMS_5 ? 5 : 1);
    if (v == DIMS_5)
        for (int i = 0; i < 5; i++) u64(x, 1);
    else
        u64(x, v == EXTENT_0 ? 0 : 4);
    u32(x, v == TTYPE ? 99 : 0);
    u64(x, 0);
    if (v == TRUNC_INFO) {
        str(x, "w");
        u32(x, 2);
        return;
    }
    /* tensor 1: w, Q8_0 [32, 2] (two blocks of 34 bytes) at 32 */
    str(x, v == DUP_TENSOR ? "norm" : "w");
    u32(x, 2);
    u64(x, v == ROW ? 16 : 32);
    u64(x, v == ROW ? 4 : 2);
    u32(x, 8);
    u64(x, v == MISALIGNED ? 40 : v == PAST_EOF ? 4096 : v == OVERLAP ? 0 : 32);
    while (x->n % 32) u8(x, 0);
    size_t data = x->n;
    float norm[4] = {1.0f, -2.0f, 0.5f, 3.0f};
    memcpy(x->b + x->n, norm, sizeof norm);
    x->n += 32;
    for (int blk = 0; blk < 2; blk++) { /* d = 0.5 (fp16 0x3800), q = blk * 32 + j - 16 */
        u8(x, 0x00), u8(x, 0x38);
        for (int j = 0; j < 32; j++) u8(x, (uint8_t)(int8_t)(blk * 32 + j - 40));
    }
    (void)data;
}

static void test_variants(void) {
    for (int v = 0; v < N_VARIANTS; v++) {
        buf x;
        build(v, &x);
        dp_gguf f;
        dp_err err;
        dp_err_clear(&err);
        int rc = dp_gguf_parse(x.b, x.n, k_expect[v].name, &f, &err);
        CHECK_MSG(rc == k_expect[v].code, "%s: got %d (%s), want %d", k_expect[v].name, rc, err.msg, k_expect[v].code);
        if (rc == DP_OK) {
            CHECK_EQ_INT(f.n_tensors, 2);
            CHECK_EQ_INT(f.alignment, 32);
            const char *s;
            uint64_t len;
            CHECK(dp_gguf_get_str(&f, "general.architecture", &s, &len, &err) == DP_OK && len == 5 &&
                  !memcmp(s, "llama", 5));
            const dp_gguf_tensor *w = dp_gguf_find_tensor(&f, "w");
            CHECK(w && w->type == DP_GGML_Q8_0 && w->ne[0] == 32 && w->ne[1] == 2 && w->n_bytes == 68);
            float y[64];
            dp_ggml_dequantize(w->type, w->data, y, 64);
            for (int i = 0; i < 64; i++) CHECK(y[i] == 0.5f * (float)(i - 40));
            const dp_gguf_tensor *nt = dp_gguf_find_tensor(&f, "norm");
            float z[4];
            dp_ggml_dequantize(nt->type, nt->data, z, 4);
            CHECK(z[0] == 1.0f && z[1] == -2.0f && z[3] == 3.0f);
            const char **ptrs;
            uint64_t *lens, n;
            CHECK(dp_gguf_str_array(&f, "test.numbers", &ptrs, &lens, &n, &err) != DP_OK); /* not strings */
            dp_gguf_close(&f);
        } else {
            CHECK_MSG(strstr(err.msg, k_expect[v].name) != NULL, "%s: message does not name the file: %s",
                      k_expect[v].name, err.msg);
        }
    }
}

/* known blocks of the other block types, values by hand from ggml's formulas */
static void test_dequant(void) {
    uint8_t q41[20] = {0x00, 0x3c, 0x00, 0xc0}; /* d = 1, m = -2 */
    for (int j = 0; j < 16; j++) q41[4 + j] = (uint8_t)(j | (15 - j) << 4);
    float y[32];
    dp_ggml_dequantize(DP_GGML_Q4_1, q41, y, 32);
    for (int j = 0; j < 16; j++) {
        CHECK(y[j] == (float)j - 2.0f);
        CHECK(y[j + 16] == (float)(15 - j) - 2.0f);
    }
    uint8_t q40[18] = {0x00, 0x40}; /* d = 2 */
    for (int j = 0; j < 16; j++) q40[2 + j] = (uint8_t)(j | j << 4);
    dp_ggml_dequantize(DP_GGML_Q4_0, q40, y, 32);
    for (int j = 0; j < 16; j++) CHECK(y[j] == 2.0f * (float)(j - 8) && y[j + 16] == y[j]);
    uint8_t q50[22] = {0x00, 0x3c, 0xff, 0xff, 0x00, 0x00}; /* d = 1; high bits set for elements 0..15 */
    dp_ggml_dequantize(DP_GGML_Q5_0, q50, y, 32);
    for (int j = 0; j < 16; j++) CHECK(y[j] == 0.0f && y[j + 16] == -16.0f);
    uint16_t bf[2] = {0x3f80, 0xc040};
    dp_ggml_dequantize(DP_GGML_BF16, bf, y, 2);
    CHECK(y[0] == 1.0f && y[1] == -3.0f);
    CHECK(dp_ggml_type_name(DP_GGML_Q6_K) && !strcmp(dp_ggml_type_name(DP_GGML_Q6_K), "Q6_K"));
    CHECK(dp_ggml_type_name(9) == NULL); /* Q8_1: not read */
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-corpus")) {
        mkdir(argv[2], 0755);
        for (int v = 0; v < N_VARIANTS; v++) {
            buf x;
            build(v, &x);
            char p[4096];
            snprintf(p, sizeof p, "%s/%s.gguf", argv[2], k_expect[v].name);
            FILE *f = fopen(p, "wb");
            if (!f || fwrite(x.b, 1, x.n, f) != x.n) return 1;
            fclose(f);
        }
        return 0;
    }
    test_variants();
    test_dequant();
    TEST_EXIT();
}
