/* Config: YAML loading, overrides, and every class of bad input. */
#include <unistd.h>

#include "../test.h"
#include "depthprune/config.h"

static const dp_cfg_spec k_spec[] = {
    {"run.dir", DP_CFG_STRING, "runs/x", NULL, ""},     {"run.seed", DP_CFG_INT, "1234", NULL, ""},
    {"device", DP_CFG_STRING, "cpu", "cpu,cuda", ""},   {"train.lr", DP_CFG_FLOAT, "1e-4", NULL, ""},
    {"train.kd.on", DP_CFG_BOOL, "false", NULL, ""},    {"train.modules", DP_CFG_STRING_LIST, "q,k,v", NULL, ""},
    {"prune.protect", DP_CFG_INT_LIST, NULL, NULL, ""}, {"model.path", DP_CFG_STRING, NULL, NULL, ""},
};
#define N_SPEC ((int)(sizeof k_spec / sizeof k_spec[0]))

static char g_dir[64];

static char *write_yaml(const char *name, const char *text) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads text; returns the status and leaves the message in err. */
static int load(const char *text, dp_config *c, dp_err *err) {
    dp_config_init(c, k_spec, N_SPEC);
    return dp_config_load_yaml(c, write_yaml("c.yaml", text), err);
}

static void expect_error(const char *text, const char *needle1, const char *needle2) {
    dp_config c;
    dp_err err;
    dp_err_clear(&err);
    int rc = load(text, &c, &err);
    CHECK_MSG(rc == DP_E_CONFIG, "expected a config error for:\n%s", text);
    CHECK_MSG(strstr(err.msg, needle1) != NULL, "message '%s' lacks '%s'", err.msg, needle1);
    if (needle2) CHECK_MSG(strstr(err.msg, needle2) != NULL, "message '%s' lacks '%s'", err.msg, needle2);
    CHECK_MSG(strstr(err.msg, "c.yaml") != NULL, "message '%s' lacks the file name", err.msg);
    dp_config_free(&c);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/dp_cfgXXXXXX");
    CHECK(mkdtemp(g_dir) != NULL);
    dp_config c;
    dp_err err;

    /* defaults */
    dp_config_init(&c, k_spec, N_SPEC);
    CHECK(strcmp(dp_config_str(&c, "run.dir"), "runs/x") == 0);
    CHECK_EQ_INT(dp_config_int(&c, "run.seed"), 1234);
    CHECK(dp_config_float(&c, "train.lr") == 1e-4);
    CHECK_EQ_INT(dp_config_list_len(&c, "train.modules"), 3);
    CHECK(!dp_config_has(&c, "model.path"));
    CHECK(dp_config_require(&c, "model.path", &err) == DP_E_CONFIG);
    CHECK(strstr(err.msg, "model.path") != NULL);
    dp_config_free(&c);

    /* a good file, nested and flat spellings, lists both ways */
    CHECK(load("run:\n  seed: 7\n  dir: out/a\ntrain.lr: 3e-4\ntrain:\n  kd:\n    on: yes\n"
               "  modules: [gate, up]\nprune:\n  protect:\n    - 0\n    - -1\nmodel:\n  path:\n",
               &c, &err) == DP_OK);
    CHECK_EQ_INT(dp_config_int(&c, "run.seed"), 7);
    CHECK(strcmp(dp_config_str(&c, "run.dir"), "out/a") == 0);
    CHECK(dp_config_float(&c, "train.lr") == 3e-4);
    CHECK(dp_config_bool(&c, "train.kd.on") == 1);
    CHECK_EQ_INT(dp_config_list_len(&c, "train.modules"), 2);
    CHECK(strcmp(dp_config_list_item(&c, "train.modules", 1), "up") == 0);
    CHECK_EQ_INT(dp_config_list_len(&c, "prune.protect"), 2);
    CHECK(strcmp(dp_config_list_item(&c, "prune.protect", 1), "-1") == 0);
    CHECK(!dp_config_has(&c, "model.path")); /* `path:` with no value keeps unset */

    /* overrides */
    CHECK(dp_config_set(&c, "run.seed=99", "--set", &err) == DP_OK);
    CHECK_EQ_INT(dp_config_int(&c, "run.seed"), 99);
    CHECK(dp_config_set(&c, "prune.protect=[1, 2, 3]", "--set", &err) == DP_OK);
    CHECK_EQ_INT(dp_config_list_len(&c, "prune.protect"), 3);
    CHECK(dp_config_set(&c, "run.seed=abc", "--set", &err) == DP_E_CONFIG);
    CHECK(strstr(err.msg, "run.seed") && strstr(err.msg, "integer"));
    CHECK_EQ_INT(dp_config_int(&c, "run.seed"), 99); /* a failed set changes nothing */
    CHECK(dp_config_set(&c, "nope.key=1", "--set", &err) == DP_E_CONFIG);
    CHECK(strstr(err.msg, "unknown key 'nope.key'"));
    CHECK(dp_config_set(&c, "device=tpu", "--set", &err) == DP_E_CONFIG);
    CHECK(strstr(err.msg, "cpu,cuda"));
    CHECK(dp_config_set(&c, "noequals", "--set", &err) == DP_E_CONFIG);
    CHECK(dp_config_set(&c, "prune.protect=1,x", "--set", &err) == DP_E_CONFIG);
    CHECK_EQ_INT(dp_config_list_len(&c, "prune.protect"), 3);

    /* dump and reload gives the same values */
    char *dump_path = write_yaml("dump.yaml", "");
    FILE *f = fopen(dump_path, "w");
    dp_config_dump(&c, f);
    fclose(f);
    dp_config c2;
    dp_config_init(&c2, k_spec, N_SPEC);
    CHECK_MSG(dp_config_load_yaml(&c2, dump_path, &err) == DP_OK, "%s", err.msg);
    CHECK_EQ_INT(dp_config_int(&c2, "run.seed"), 99);
    CHECK_EQ_INT(dp_config_list_len(&c2, "prune.protect"), 3);
    CHECK(dp_config_bool(&c2, "train.kd.on") == 1);
    dp_config_free(&c2);
    dp_config_free(&c);

    /* bad input: each names the key and the file */
    expect_error("run:\n  sede: 3\n", "unknown key 'run.sede'", ":2");
    expect_error("run:\n  seed: 1.5\n", "run.seed", "integer");
    expect_error("train:\n  lr: fast\n", "train.lr", "number");
    expect_error("train:\n  kd:\n    on: maybe\n", "train.kd.on", "boolean");
    expect_error("device: tpu\n", "device", "cpu,cuda");
    expect_error("run:\n  seed: [1, 2]\n", "run.seed", "list");
    expect_error("run:\n  seed:\n    x: 1\n", "run.seed", "mapping");
    expect_error("prune:\n  protect: [1, a]\n", "prune.protect", "integer");
    expect_error("run: [1, 2\n", "YAML syntax error", NULL);
    expect_error("- a\n- b\n", "top level must be a mapping", NULL);
    expect_error("run:\n  seed: 99999999999999999999999\n", "run.seed", "integer");

    dp_config_init(&c, k_spec, N_SPEC);
    CHECK(dp_config_load_yaml(&c, "/nonexistent/c.yaml", &err) == DP_E_IO);
    CHECK(strstr(err.msg, "/nonexistent/c.yaml"));
    dp_config_free(&c);
    CHECK(load("", &c, &err) == DP_OK); /* empty file: defaults */
    dp_config_free(&c);

    unlink(write_yaml("c.yaml", ""));
    unlink(dump_path);
    rmdir(g_dir);
    TEST_EXIT();
}
