/* libFuzzer target: the checkpoint manifest reader (JSON -> validated
 * dp_manifest). A manifest is read before any checkpoint byte is parsed,
 * so it must reject anything malformed without crashing. */
#include <stddef.h>
#include <stdint.h>

#include "depthprune/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dp_manifest m;
    dp_err err;
    if (dp_manifest_parse((const char *)data, size, &m, &err) == DP_OK) {
        /* a parsed manifest round-trips through its own JSON */
        char *js = dp_manifest_json(&m);
        dp_manifest m2;
        if (dp_manifest_parse(js, __builtin_strlen(js), &m2, &err) != DP_OK || m2.n_blocks != m.n_blocks ||
            m2.bytes != m.bytes)
            __builtin_trap();
        for (int64_t i = 0; i < m.n_blocks; i++)
            if (m.blocks[i] != m2.blocks[i]) __builtin_trap();
        dp_manifest_free(&m2);
        dp_free(js);
        dp_manifest_free(&m);
    }
    return 0;
}
