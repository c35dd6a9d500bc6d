/* Core: allocation accounting, dtype conversions, atomic file writes. */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "../test.h"
#include "depthprune/core.h"
#include "depthprune/tensor.h"
#include "depthprune/utf8.h"

static void test_alloc(void) {
    size_t before = dp_alloc_bytes(NULL);
    char *a = dp_malloc(1000, "test.a");
    float *b = dp_calloc(10, sizeof(float), "test.b");
    CHECK_EQ_INT(dp_alloc_bytes("test.a"), 1000);
    CHECK_EQ_INT(dp_alloc_bytes("test.b"), 40);
    CHECK_EQ_INT(dp_alloc_bytes(NULL), before + 1040);
    for (int i = 0; i < 10; i++) CHECK(b[i] == 0.0f);
    a = dp_realloc(a, 3000, "test.a");
    CHECK_EQ_INT(dp_alloc_bytes("test.a"), 3000);
    CHECK(((uintptr_t)a % 16) == 0);
    dp_free(a);
    dp_free(b);
    CHECK_EQ_INT(dp_alloc_bytes("test.a"), 0);
    CHECK_EQ_INT(dp_alloc_bytes(NULL), before);
    CHECK(dp_alloc_peak_bytes() >= 3040);
}

static void test_bf16_f16(void) {
    /* exhaustive round trip of every finite half/bfloat16 bit pattern */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = dp_bf16_to_f32((uint16_t)h);
        if (isnan(f)) {
            CHECK(isnan(dp_bf16_to_f32(dp_f32_to_bf16(f))));
            continue;
        }
        uint16_t back = dp_f32_to_bf16(f);
        if (back != h) {
            CHECK_MSG(back == h, "bf16 round trip of 0x%04x gave 0x%04x", h, back);
            break;
        }
    }
    for (uint32_t h = 0; h < 65536; h++) {
        float f = dp_f16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        uint16_t back = dp_f32_to_f16(f);
        if (back != h) {
            CHECK_MSG(back == h, "f16 round trip of 0x%04x (%g) gave 0x%04x", h, f, back);
            break;
        }
    }
    CHECK(dp_f16_to_f32(0x3c00) == 1.0f);
    CHECK(dp_f16_to_f32(0x0001) == 5.9604644775390625e-08f);
    CHECK(dp_f32_to_f16(65520.0f) == 0x7c00); /* rounds to inf */
    CHECK(dp_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(dp_f32_to_bf16(1.00390625f) == 0x3f80); /* tie to even */
    CHECK(dp_f32_to_bf16(1.01171875f) == 0x3f82);
    CHECK(dp_f32_to_f16(2.98023223876953125e-08f) == 0x0000); /* half of min subnormal: to even */
    CHECK(dp_f32_to_f16(4.4703483581542969e-08f) == 0x0001);
    CHECK_EQ_INT(dp_dtype_from_name("BF16"), DP_DTYPE_BF16);
    CHECK_EQ_INT(dp_dtype_from_name("bf16"), -1);
}

static void test_atomic_write(void) {
    char dir[] = "/tmp/dp_test_coreXXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char *path = dp_path_join(dir, "out.txt");
    dp_err err;
    CHECK(dp_write_file_atomic(path, "hello", 5, &err) == DP_OK);
    char *data;
    size_t n;
    CHECK(dp_read_file(path, &data, &n, &err) == DP_OK);
    CHECK(n == 5 && memcmp(data, "hello", 5) == 0);
    dp_free(data);
    char *tmp = dp_path_join(dir, "out.txt.tmp");
    CHECK(!dp_file_exists(tmp));
    CHECK(dp_read_file("/nonexistent/x", &data, &n, &err) == DP_E_IO);
    CHECK(strstr(err.msg, "/nonexistent/x") != NULL);
    unlink(path);
    rmdir(dir);
    dp_free(tmp);
    dp_free(path);
}

/* Python's str.capitalize() and strip() (expected values printed by CPython 3.11) */
static void test_py_str(void) {
    static const char *const cases[][2] = {
        {"\xc7\x86ungla then", "\xc7\x85ungla then"}, /* dz digraph: title case, not upper */
        {"\xc3\xa9"
         "CLAIRS AND \xc3\x96L",
         "\xc3\x89"
         "clairs and \xc3\xb6l"}, /* Latin-1 */
        {"\xce\xa3\xce\x9f\xce\xa6\xce\x9f\xce\xa3  said",
         "\xce\xa3\xce\xbf\xcf\x86\xce\xbf\xcf\x82  said"}, /* final sigma */
        {"\xc3\x9ftra\xc3\x9f"
         "e",
         "Sstra\xc3\x9f"
         "e"}, /* sharp s titles to "Ss" */
        {"\xc4\xb0STANBUL", "\xc4\xb0stanbul"},
        {"the LADY Stands Up", "The lady stands up"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *c = dp_py_capitalize(cases[i][0], strlen(cases[i][0]), NULL);
        CHECK(!strcmp(c, cases[i][1]));
        dp_free(c);
    }
    const char *s = "\xc2\xa0 \x1cx y\xe3\x80\x80\xe2\x80\x8a\t"; /* NBSP, 0x1C, ideographic space, hair space */
    size_t a, b;
    dp_py_strip(s, strlen(s), 1, 1, &a, &b);
    CHECK(b - a == 3 && !memcmp(s + a, "x y", 3));
    dp_py_strip(s, strlen(s), 0, 1, &a, &b);
    CHECK(a == 0 && b == strlen(s) - 7);
    CHECK(!dp_py_isspace(0x200b)); /* zero-width space is not whitespace in Python */
}

int main(void) {
    test_py_str();
    test_alloc();
    test_bf16_f16();
    test_atomic_write();
    TEST_EXIT();
}
