/* libFuzzer target: the tokenizer.json loader. Input = tokenizer.json
 * bytes; a tokenizer that loads must also encode and decode a fixed text
 * without crashing, and every id it produces must be inside its vocabulary. */
#include <stddef.h>
#include <stdint.h>

#include "depthprune/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dp_tokenizer *t = NULL;
    dp_err err;
    if (dp_tokenizer_from_json((const char *)data, size, NULL, 0, "fuzz", &t, &err) != DP_OK) return 0;
    static const char text[] =
        "Hello world, it's 2026: na\xc3\xafve caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x98\x80 \xff end.";
    int32_t *ids = NULL;
    int64_t n = 0;
    if (dp_tokenizer_encode(t, text, sizeof text - 1, 1, &ids, &n, &err) == DP_OK) {
        int64_t v = dp_tokenizer_vocab_size(t);
        for (int64_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= v) __builtin_trap();
        size_t m = 0;
        char *s = dp_tokenizer_decode(t, ids, n, 0, &m);
        dp_free(s);
        dp_free(ids);
    }
    dp_tokenizer_free(t);
    return 0;
}
