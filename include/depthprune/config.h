/* Run configuration: YAML files (parsed with libyaml) checked against a
 * schema of dotted keys, every key overridable from the command line with
 * `--set key=value`. An unknown key, a value of the wrong type or a missing
 * required key is an error that names the key and where it came from. */
#ifndef DEPTHPRUNE_CONFIG_H
#define DEPTHPRUNE_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "depthprune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DP_CFG_INT,
    DP_CFG_FLOAT,
    DP_CFG_BOOL,
    DP_CFG_STRING,
    DP_CFG_INT_LIST,
    DP_CFG_STRING_LIST,
} dp_cfg_type;

typedef struct dp_cfg_spec {
    const char *key; /* dotted: "train.lr" */
    dp_cfg_type type;
    const char *default_value; /* canonical text; lists as "a,b,c"; NULL: unset */
    const char *choices;       /* strings only: "cpu,cuda"; NULL: any */
    const char *help;
} dp_cfg_spec;

typedef struct dp_cfg_value {
    int is_set;
    char *text;  /* scalar value */
    int n_items; /* lists */
    char **items;
    char *origin; /* "default", "FILE:LINE", "--set" */
} dp_cfg_value;

typedef struct dp_config {
    const dp_cfg_spec *spec;
    int n_spec;
    dp_cfg_value *values; /* parallel to spec */
} dp_config;

/* The schema of depthprune run configs (the files in configs/). */
extern const dp_cfg_spec dp_config_schema[];
extern const int dp_config_schema_len;

void dp_config_init(dp_config *c, const dp_cfg_spec *spec, int n_spec);
void dp_config_free(dp_config *c);
/* Merges a YAML file (nested mappings flatten to dotted keys). */
int dp_config_load_yaml(dp_config *c, const char *path, dp_err *err);
/* Applies "key=value" (lists: "a,b,c" or "[a, b, c]"). */
int dp_config_set(dp_config *c, const char *assignment, const char *origin, dp_err *err);
/* Error naming the key if it has no value. */
int dp_config_require(const dp_config *c, const char *key, dp_err *err);

/* 1 when the key was set (config file, --set or a flag bound to it). */
int dp_config_has(const dp_config *c, const char *key);
/* 1 when the key is set or the schema gives it a default. */
int dp_config_has_value(const dp_config *c, const char *key);
/* Getters: the value, else the schema's default: the schema is the one
 * source of defaults (no call site repeats one). The key must exist with
 * that type; a number or flag read with neither value nor default is a
 * programming error (fatal: check dp_config_has_value first). A string
 * without either is NULL. */
int64_t dp_config_int(const dp_config *c, const char *key);
double dp_config_float(const dp_config *c, const char *key);
int dp_config_bool(const dp_config *c, const char *key);
const char *dp_config_str(const dp_config *c, const char *key);
/* Lists: number of items, and item i as text. */
int dp_config_list_len(const dp_config *c, const char *key);
const char *dp_config_list_item(const dp_config *c, const char *key, int i);
/* Writes the resolved configuration as YAML, one comment per key with its
 * origin. */
void dp_config_dump(const dp_config *c, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
