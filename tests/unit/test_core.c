/* Core: allocation accounting, dtype conversions, atomic file writes. */
#include <stdint.h>
#include <unistd.h>

#include "../test.h"
#include "depthprune/core.h"
#include "depthprune/tensor.h"

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
    CHECK(dp_f32_to_f16(65520.0f) == 0x7c00);  /* rounds to inf */
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

int main(void) {
    test_alloc();
    test_bf16_f16();
    test_atomic_write();
    TEST_EXIT();
}
