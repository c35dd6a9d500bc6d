/* libFuzzer target: the YAML run-config loader (libyaml + the schema:
 * unknown keys, wrong types, bad enums). The input is written to a file
 * because the loader reads paths, as users give them. */
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "depthprune/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/dp-fuzz-config-%d.yaml", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    dp_config c;
    dp_config_init(&c, dp_config_schema, dp_config_schema_len);
    dp_err err;
    if (dp_config_load_yaml(&c, path, &err) == DP_OK) {
        (void)dp_config_str(&c, "run.dir");
        (void)dp_config_int(&c, "calib.samples");
    }
    dp_config_free(&c);
    unlink(path);
    return 0;
}
