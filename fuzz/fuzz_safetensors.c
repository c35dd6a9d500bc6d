/* libFuzzer target: the safetensors header parser and validator on
 * arbitrary bytes. Any input must be accepted or rejected with a status;
 * never a crash, a leak or an out-of-bounds read (built with ASan+UBSan). */
#include <stddef.h>
#include <stdint.h>

#include "depthprune/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dp_st_file f;
    dp_err err;
    if (dp_st_parse(data, size, "fuzz", &f, &err) == DP_OK) {
        /* touch every tensor's bytes: they must lie inside the input */
        volatile uint8_t sink = 0;
        for (int i = 0; i < f.n_tensors; i++) {
            const uint8_t *p = f.tensors[i].data;
            size_t n = f.tensors[i].end - f.tensors[i].begin;
            if (n) sink ^= p[0] ^ p[n - 1];
        }
        (void)sink;
        dp_st_close(&f);
    }
    return 0;
}
