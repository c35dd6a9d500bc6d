/* Schema-checked YAML configuration with command-line overrides.
 * Values are kept as canonical text after validation, so a config can be
 * dumped back exactly and every getter parses text it knows is valid. */
#include "depthprune/config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

static int find_key(const dp_config *c, const char *key) {
    for (int i = 0; i < c->n_spec; i++)
        if (strcmp(c->spec[i].key, key) == 0) return i;
    return -1;
}

static const char *type_name(dp_cfg_type t) {
    switch (t) {
    case DP_CFG_INT: return "an integer";
    case DP_CFG_FLOAT: return "a number";
    case DP_CFG_BOOL: return "a boolean (true/false)";
    case DP_CFG_STRING: return "a string";
    case DP_CFG_INT_LIST: return "a list of integers";
    case DP_CFG_STRING_LIST: return "a list of strings";
    }
    return "?";
}

static int parse_int(const char *s, int64_t *out) {
    if (!*s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, double *out) {
    if (!*s) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, int *out) {
    static const char *t[] = {"true", "True", "TRUE", "yes", "on", "1"};
    static const char *f[] = {"false", "False", "FALSE", "no", "off", "0"};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        if (strcmp(s, t[i]) == 0) return *out = 1, 0;
        if (strcmp(s, f[i]) == 0) return *out = 0, 0;
    }
    return -1;
}

static int in_choices(const char *choices, const char *v) {
    size_t n = strlen(v);
    const char *p = choices;
    while (*p) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0) return 1;
        if (!q) break;
        p = q + 1;
    }
    return 0;
}

/* Checks one scalar against the key's type; the canonical text is the
 * input itself except for booleans ("true"/"false"). */
static int check_scalar(const dp_cfg_spec *s, dp_cfg_type t, const char *v, const char *origin, char **canon,
                        dp_err *err) {
    int64_t iv;
    double dv;
    int bv;
    switch (t) {
    case DP_CFG_INT:
    case DP_CFG_INT_LIST:
        if (parse_int(v, &iv))
            return dp_err_set(err, DP_E_CONFIG, "%s: key '%s' expects %s, got '%s'", origin, s->key, type_name(s->type),
                              v);
        break;
    case DP_CFG_FLOAT:
        if (parse_float(v, &dv))
            return dp_err_set(err, DP_E_CONFIG, "%s: key '%s' expects %s, got '%s'", origin, s->key, type_name(s->type),
                              v);
        break;
    case DP_CFG_BOOL:
        if (parse_bool(v, &bv))
            return dp_err_set(err, DP_E_CONFIG, "%s: key '%s' expects %s, got '%s'", origin, s->key, type_name(s->type),
                              v);
        *canon = dp_strdup(bv ? "true" : "false", "config");
        return DP_OK;
    case DP_CFG_STRING:
    case DP_CFG_STRING_LIST:
        if (s->choices && !in_choices(s->choices, v))
            return dp_err_set(err, DP_E_CONFIG, "%s: key '%s' must be one of {%s}, got '%s'", origin, s->key,
                              s->choices, v);
        break;
    }
    *canon = dp_strdup(v, "config");
    return DP_OK;
}

static void value_clear(dp_cfg_value *v) {
    dp_free(v->text);
    for (int i = 0; i < v->n_items; i++) dp_free(v->items[i]);
    dp_free(v->items);
    dp_free(v->origin);
    memset(v, 0, sizeof *v);
}

static int is_list(dp_cfg_type t) {
    return t == DP_CFG_INT_LIST || t == DP_CFG_STRING_LIST;
}

/* Sets key from a scalar (for lists: a comma-separated string, optionally
 * in brackets) or from an array of items. */
static int set_value(dp_config *c, int idx, const char *scalar, char **items, int n_items, const char *origin,
                     dp_err *err) {
    const dp_cfg_spec *s = &c->spec[idx];
    dp_cfg_value nv;
    memset(&nv, 0, sizeof nv);
    int rc = DP_OK;
    if (!is_list(s->type)) {
        if (!scalar)
            return dp_err_set(err, DP_E_CONFIG, "%s: key '%s' expects %s, got a list", origin, s->key,
                              type_name(s->type));
        rc = check_scalar(s, s->type, scalar, origin, &nv.text, err);
    } else if (scalar) {
        /* "a,b,c" or "[a, b, c]"; "" or "[]" is the empty list */
        char *buf = dp_strdup(scalar, "config");
        char *p = buf;
        size_t n = strlen(p);
        if (n >= 2 && p[0] == '[' && p[n - 1] == ']') {
            p[n - 1] = '\0';
            p++;
        }
        char *save = NULL;
        for (char *tok = strtok_r(p, ",", &save); tok && rc == DP_OK; tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ') tok++;
            char *e = tok + strlen(tok);
            while (e > tok && e[-1] == ' ') *--e = '\0';
            nv.items = dp_realloc(nv.items, sizeof(char *) * (size_t)(nv.n_items + 1), "config");
            rc = check_scalar(s, s->type, tok, origin, &nv.items[nv.n_items], err);
            if (rc == DP_OK) nv.n_items++;
        }
        dp_free(buf);
    } else {
        for (int i = 0; i < n_items && rc == DP_OK; i++) {
            nv.items = dp_realloc(nv.items, sizeof(char *) * (size_t)(nv.n_items + 1), "config");
            rc = check_scalar(s, s->type, items[i], origin, &nv.items[nv.n_items], err);
            if (rc == DP_OK) nv.n_items++;
        }
    }
    if (rc != DP_OK) {
        value_clear(&nv);
        return rc;
    }
    nv.is_set = 1;
    nv.origin = dp_strdup(origin, "config");
    value_clear(&c->values[idx]);
    c->values[idx] = nv;
    return DP_OK;
}

void dp_config_init(dp_config *c, const dp_cfg_spec *spec, int n_spec) {
    c->spec = spec;
    c->n_spec = n_spec;
    c->values = dp_calloc((size_t)n_spec, sizeof *c->values, "config");
    for (int i = 0; i < n_spec; i++) {
        if (!spec[i].default_value) continue;
        dp_err e;
        if (set_value(c, i, spec[i].default_value, NULL, 0, "default", &e) != DP_OK)
            dp_fatal("schema default for %s is invalid: %s", spec[i].key, e.msg);
    }
}

void dp_config_free(dp_config *c) {
    if (!c->values) return;
    for (int i = 0; i < c->n_spec; i++) value_clear(&c->values[i]);
    dp_free(c->values);
    c->values = NULL;
}

int dp_config_set(dp_config *c, const char *assignment, const char *origin, dp_err *err) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return dp_err_set(err, DP_E_CONFIG, "%s: expected key=value, got '%s'", origin, assignment);
    size_t klen = (size_t)(eq - assignment);
    char *key = dp_malloc(klen + 1, "config");
    memcpy(key, assignment, klen);
    key[klen] = '\0';
    int idx = find_key(c, key);
    int rc;
    if (idx < 0)
        rc = dp_err_set(err, DP_E_CONFIG, "%s: unknown key '%s'", origin, key);
    else
        rc = set_value(c, idx, eq + 1, NULL, 0, origin, err);
    dp_free(key);
    return rc;
}

/* ---- YAML ---- */

typedef struct {
    dp_config *c;
    yaml_document_t *doc;
    const char *path;
    dp_err *err;
} yaml_ctx;

static int walk(yaml_ctx *y, yaml_node_t *node, const char *prefix);

static int walk_mapping(yaml_ctx *y, yaml_node_t *node, const char *prefix) {
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(y->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(y->doc, p->value);
        if (!k || k->type != YAML_SCALAR_NODE)
            return dp_err_set(y->err, DP_E_CONFIG, "%s:%zu: mapping keys must be plain scalars", y->path,
                              node->start_mark.line + 1);
        const char *ks = (const char *)k->data.scalar.value;
        size_t n = strlen(prefix) + strlen(ks) + 2;
        char *full = dp_malloc(n, "config");
        snprintf(full, n, "%s%s%s", prefix, *prefix ? "." : "", ks);
        int rc = walk(y, v, full);
        dp_free(full);
        if (rc) return rc;
    }
    return DP_OK;
}

static int is_null_scalar(yaml_node_t *v) {
    if (v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *s = (const char *)v->data.scalar.value;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static int walk(yaml_ctx *y, yaml_node_t *node, const char *key) {
    char origin[600];
    snprintf(origin, sizeof origin, "%s:%zu", y->path, node->start_mark.line + 1);
    if (node->type == YAML_MAPPING_NODE) {
        /* a mapping under a key that is itself a leaf is a type error */
        if (*key && find_key(y->c, key) >= 0)
            return dp_err_set(y->err, DP_E_CONFIG, "%s: key '%s' expects %s, got a mapping", origin, key,
                              type_name(y->c->spec[find_key(y->c, key)].type));
        return walk_mapping(y, node, key);
    }
    int idx = find_key(y->c, key);
    if (idx < 0) return dp_err_set(y->err, DP_E_CONFIG, "%s: unknown key '%s'", origin, key);
    if (node->type == YAML_SCALAR_NODE) {
        if (is_null_scalar(node)) return DP_OK; /* `key:` with no value keeps the default */
        return set_value(y->c, idx, (const char *)node->data.scalar.value, NULL, 0, origin, y->err);
    }
    /* sequence */
    if (!is_list(y->c->spec[idx].type))
        return dp_err_set(y->err, DP_E_CONFIG, "%s: key '%s' expects %s, got a list", origin, key,
                          type_name(y->c->spec[idx].type));
    int n = (int)(node->data.sequence.items.top - node->data.sequence.items.start);
    char **items = dp_calloc((size_t)(n ? n : 1), sizeof(char *), "config");
    int rc = DP_OK;
    for (int i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(y->doc, node->data.sequence.items.start[i]);
        if (!it || it->type != YAML_SCALAR_NODE) {
            rc = dp_err_set(y->err, DP_E_CONFIG, "%s: key '%s' expects %s, got nested data", origin, key,
                            type_name(y->c->spec[idx].type));
            break;
        }
        items[i] = (char *)it->data.scalar.value;
    }
    if (rc == DP_OK) rc = set_value(y->c, idx, NULL, items, n, origin, y->err);
    dp_free(items);
    return rc;
}

int dp_config_load_yaml(dp_config *c, const char *path, dp_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return dp_err_set(err, DP_E_IO, "%s: cannot open config: %s", path, strerror(errno));
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    int rc = DP_OK;
    if (!yaml_parser_load(&parser, &doc)) {
        rc = dp_err_set(err, DP_E_CONFIG, "%s:%zu: YAML syntax error: %s", path, parser.problem_mark.line + 1,
                        parser.problem ? parser.problem : "unknown");
        yaml_parser_delete(&parser);
        fclose(f);
        return rc;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        /* an empty file is an empty config */
    } else if (root->type != YAML_MAPPING_NODE) {
        rc = dp_err_set(err, DP_E_CONFIG, "%s: the top level must be a mapping of keys", path);
    } else {
        yaml_ctx y = {c, &doc, path, err};
        rc = walk_mapping(&y, root, "");
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

/* ---- getters ---- */

static int key_of_type(const dp_config *c, const char *key, dp_cfg_type t) {
    int idx = find_key(c, key);
    if (idx < 0) dp_fatal("config key '%s' is not in the schema", key);
    if (c->spec[idx].type != t) dp_fatal("config key '%s' read as the wrong type", key);
    return idx;
}

int dp_config_has(const dp_config *c, const char *key) {
    int idx = find_key(c, key);
    return idx >= 0 && c->values[idx].is_set;
}

int dp_config_require(const dp_config *c, const char *key, dp_err *err) {
    int idx = find_key(c, key);
    if (idx < 0) dp_fatal("config key '%s' is not in the schema", key);
    if (!c->values[idx].is_set)
        return dp_err_set(err, DP_E_CONFIG,
                          "missing required key '%s' (set it in the config file or with --set %s=...)", key, key);
    return DP_OK;
}

int dp_config_has_value(const dp_config *c, const char *key) {
    int idx = find_key(c, key);
    return idx >= 0 && (c->values[idx].is_set || c->spec[idx].default_value);
}

/* the text of a key's value, else of its schema default (NULL: neither) */
static const char *text_of(const dp_config *c, const char *key, dp_cfg_type t, int need) {
    int idx = key_of_type(c, key, t);
    const char *v = c->values[idx].is_set ? c->values[idx].text : c->spec[idx].default_value;
    if (!v && need) dp_fatal("config key '%s' has no value and no default (check dp_config_has_value)", key);
    return v;
}

int64_t dp_config_int(const dp_config *c, const char *key) {
    int64_t v = 0;
    if (parse_int(text_of(c, key, DP_CFG_INT, 1), &v)) dp_fatal("config key '%s': bad default", key);
    return v;
}

double dp_config_float(const dp_config *c, const char *key) {
    double v = 0;
    if (parse_float(text_of(c, key, DP_CFG_FLOAT, 1), &v)) dp_fatal("config key '%s': bad default", key);
    return v;
}

int dp_config_bool(const dp_config *c, const char *key) {
    int v = 0;
    if (parse_bool(text_of(c, key, DP_CFG_BOOL, 1), &v)) dp_fatal("config key '%s': bad default", key);
    return v;
}

const char *dp_config_str(const dp_config *c, const char *key) {
    return text_of(c, key, DP_CFG_STRING, 0);
}

int dp_config_list_len(const dp_config *c, const char *key) {
    int idx = find_key(c, key);
    if (idx < 0 || !is_list(c->spec[idx].type)) dp_fatal("config key '%s' is not a list", key);
    return c->values[idx].is_set ? c->values[idx].n_items : 0;
}

const char *dp_config_list_item(const dp_config *c, const char *key, int i) {
    int idx = find_key(c, key);
    if (idx < 0 || !is_list(c->spec[idx].type)) dp_fatal("config key '%s' is not a list", key);
    if (i < 0 || i >= c->values[idx].n_items) dp_fatal("config key '%s': item %d out of range", key, i);
    return c->values[idx].items[i];
}

static void dump_scalar(FILE *out, const char *s, dp_cfg_type t) {
    if (t == DP_CFG_STRING || t == DP_CFG_STRING_LIST) {
        fputc('"', out);
        for (const char *p = s; *p; p++) {
            if (*p == '"' || *p == '\\') fputc('\\', out);
            fputc(*p, out);
        }
        fputc('"', out);
    } else {
        fputs(s, out);
    }
}

void dp_config_dump(const dp_config *c, FILE *out) {
    /* keys are grouped by their first component, in schema order */
    const char *group = "";
    size_t glen = 0;
    for (int i = 0; i < c->n_spec; i++) {
        const char *key = c->spec[i].key;
        const char *dot = strchr(key, '.');
        size_t len = dot ? (size_t)(dot - key) : 0;
        if (len != glen || strncmp(group, key, len) != 0) {
            group = key;
            glen = len;
            if (len) fprintf(out, "%.*s:\n", (int)len, key);
        }
        const dp_cfg_value *v = &c->values[i];
        const char *leaf = dot ? dot + 1 : key;
        fprintf(out, "%s%s: ", len ? "  " : "", leaf);
        if (!v->is_set) {
            fputs("null", out);
        } else if (is_list(c->spec[i].type)) {
            fputc('[', out);
            for (int k = 0; k < v->n_items; k++) {
                if (k) fputs(", ", out);
                dump_scalar(out, v->items[k], c->spec[i].type);
            }
            fputc(']', out);
        } else {
            dump_scalar(out, v->text, c->spec[i].type);
        }
        fprintf(out, "  # %s\n", v->is_set ? v->origin : "unset");
    }
}
