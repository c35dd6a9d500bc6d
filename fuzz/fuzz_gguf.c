/* libFuzzer target: the GGUF reader on arbitrary bytes. Any input must be
 * accepted or rejected with a status; never a crash, a leak or an
 * out-of-bounds read (ASan+UBSan); an accepted file's tensors and string
 * arrays lie inside the input and dequantize without faults. */
#include <stddef.h>
#include <stdint.h>

#include "depthprune/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dp_gguf f;
    dp_err err;
    if (dp_gguf_parse(data, size, "fuzz", &f, &err) == DP_OK) {
        volatile float sink = 0;
        for (int64_t i = 0; i < f.n_tensors; i++) {
            const dp_gguf_tensor *t = &f.tensors[i];
            int64_t be, bb;
            dp_ggml_block(t->type, &be, &bb);
            float y[256];
            if (t->n_elems >= be && be <= 256) { /* the first block */
                dp_ggml_dequantize(t->type, t->data, y, be);
                sink += y[0];
            }
        }
        for (int64_t i = 0; i < f.n_kv; i++) {
            const char **p;
            uint64_t *l, n;
            if (dp_gguf_str_array(&f, f.kv[i].key, &p, &l, &n, &err) == DP_OK) {
                for (uint64_t k = 0; k < n; k++)
                    if (l[k]) sink += (float)(unsigned char)p[k][l[k] - 1];
                dp_free(p);
                dp_free(l);
            }
        }
        (void)sink;
        dp_gguf_close(&f);
    }
    return 0;
}
