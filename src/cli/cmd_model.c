/* Model-directory commands: `info` (JSON summary), `tokenize` (ids from
 * stdin) and `export` (an HF directory, optionally without some blocks).
 * They run on rank 0; other ranks only agree on the outcome. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "depthprune/export.h"
#include "depthprune/gguf.h"
#include "depthprune/hfconfig.h"
#include "depthprune/llama.h"
#include "depthprune/safetensors.h"
#include "depthprune/tokenizer.h"

/* Everything a command needs from a model directory. */
typedef struct {
    dp_llama_config cfg;
    dp_st_model st;
    dp_tokenizer *tok;
    int have_cfg, have_st;
} model_dir;

static void model_dir_close(model_dir *m) {
    if (m->have_cfg) dp_llama_config_free(&m->cfg);
    if (m->have_st) dp_st_model_close(&m->st);
    dp_tokenizer_free(m->tok);
    memset(m, 0, sizeof *m);
}

/* Opens config + weights (validated against each other) and, if present,
 * the tokenizer, checking that its ids fit the embedding. */
static int model_dir_open(const char *dir, int need_tokenizer, model_dir *m, dp_err *err) {
    memset(m, 0, sizeof *m);
    int rc = dp_llama_config_load(dir, &m->cfg, err);
    if (rc) return rc;
    m->have_cfg = 1;
    if ((rc = dp_st_model_open(dir, &m->st, err))) return rc;
    m->have_st = 1;
    if ((rc = dp_llama_check_weights(&m->cfg, &m->st, err))) return rc;
    char *tj = dp_path_join(dir, "tokenizer.json");
    int has_tok = dp_file_exists(tj);
    dp_free(tj);
    if (has_tok || need_tokenizer) {
        if ((rc = dp_tokenizer_load(dir, &m->tok, err))) return rc;
        if (dp_tokenizer_vocab_size(m->tok) > m->cfg.vocab_size)
            return dp_err_set(err, DP_E_MISMATCH,
                              "%s: the tokenizer has ids up to %lld but the embedding has %lld rows", dir,
                              (long long)dp_tokenizer_vocab_size(m->tok) - 1, (long long)m->cfg.vocab_size);
    }
    return DP_OK;
}

/* ---- info ---- */
static const dp_cli_opt k_info_opts[] = {{"--model", "DIR", "HF model directory", NULL}, {NULL, NULL, NULL, NULL}};

static int run_info(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_info;
    dp_err err;
    dp_err_clear(&err);
    const char *dir = dp_cli_model_path(app, cmd);
    if (!dir) {
        dp_err_set(&err, DP_E_USAGE, "--model DIR is required");
        return dp_cli_fail(app, &err);
    }
    model_dir m;
    int rc = dp_mpi_agree(&app->mpi, model_dir_open(dir, 0, &m, &err), &err);
    if (rc) {
        model_dir_close(&m);
        return dp_cli_fail(app, &err);
    }
    if (app->mpi.rank == 0) {
        const dp_llama_config *c = &m.cfg;
        const char *dtype = m.st.n_tensors ? m.st.tensors[0]->dtype_name : "?";
        printf("{\"architecture\": \"%s\", \"layers\": %lld, \"hidden_size\": %lld, "
               "\"intermediate_size\": %lld, \"heads\": %lld, \"kv_heads\": %lld, \"head_dim\": %lld, "
               "\"vocab_size\": %lld, \"params\": %lld, \"params_per_block\": %lld, \"dtype\": \"%s\", "
               "\"tie_word_embeddings\": %s, \"rope_theta\": %g, \"rope_type\": \"%s\", "
               "\"max_position_embeddings\": %lld, \"shards\": %d, \"tokenizer_vocab\": %lld}\n",
               c->architecture, (long long)c->n_layers, (long long)c->hidden_size, (long long)c->intermediate_size,
               (long long)c->n_heads, (long long)c->n_kv_heads, (long long)c->head_dim, (long long)c->vocab_size,
               (long long)dp_llama_param_count(c), (long long)dp_llama_block_param_count(c), dtype,
               c->tie_word_embeddings ? "true" : "false", c->rope_theta,
               c->rope_type == DP_ROPE_LLAMA3   ? "llama3"
               : c->rope_type == DP_ROPE_LINEAR ? "linear"
                                                : "default",
               (long long)c->max_position_embeddings, m.st.n_files,
               m.tok ? (long long)dp_tokenizer_vocab_size(m.tok) : -1LL);
    }
    model_dir_close(&m);
    return 0;
}

const dp_cmd dp_cmd_info = {
    "info", "print a JSON summary of an HF model directory", "--model DIR", k_info_opts, 1, run_info, 0, 0};

/* ---- tokenize ---- */
static const dp_cli_opt k_tok_opts[] = {
    {"--model", "DIR", "directory with tokenizer.json (and tokenizer_config.json)", NULL},
    {"--lines", NULL, "encode every input line separately, one output line each", NULL},
    {"--jsonl", NULL, "each input line is a JSON string; one output line each", NULL},
    {"--no-bos", NULL, "do not add the post-processor's special tokens (BOS)", NULL},
    {"--decode", NULL, "read ids (spaces/newlines) and print the decoded text", NULL},
    {NULL, NULL, NULL, NULL},
};

static void print_ids(const int32_t *ids, int64_t n) {
    for (int64_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
}

static int read_stdin(char **data, size_t *n) {
    size_t cap = 1 << 16, len = 0;
    char *buf = dp_malloc(cap, "stdin");
    size_t got;
    while ((got = fread(buf + len, 1, cap - len, stdin)) > 0) {
        len += got;
        if (len == cap) {
            cap *= 2;
            buf = dp_realloc(buf, cap, "stdin");
        }
    }
    buf[len < cap ? len : cap - 1] = '\0';
    *data = buf;
    *n = len;
    return 0;
}

/* Decodes one JSON string literal (a line of --jsonl input) into a fresh
 * buffer; unlike a general JSON library it keeps \u0000 as a byte. */
#include "depthprune/utf8.h"
static int hex4(const char *p, const char *end, uint32_t *v) {
    *v = 0;
    if (end - p < 4) return -1;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        *v <<= 4;
        if (c >= '0' && c <= '9')
            *v |= (uint32_t)(c - '0');
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            *v |= (uint32_t)((c | 0x20) - 'a' + 10);
        else
            return -1;
    }
    return 0;
}

static char *json_line(const char *line, size_t n, size_t *out_n, dp_err *err) {
    const char *p = line, *end = line + n;
    while (end > p && (end[-1] == ' ' || end[-1] == '\r' || end[-1] == '\t')) end--;
    if (end - p < 2 || *p != '"' || end[-1] != '"') {
        dp_err_set(err, DP_E_FORMAT, "--jsonl: a line is not a JSON string");
        return NULL;
    }
    p++;
    end--;
    char *out = dp_malloc((size_t)(end - p) + 1, "stdin");
    size_t o = 0;
    while (p < end) {
        if (*p != '\\') {
            out[o++] = *p++;
            continue;
        }
        if (++p >= end) break;
        char c = *p++;
        uint32_t cp = 0;
        switch (c) {
        case '"':
        case '\\':
        case '/': out[o++] = c; continue;
        case 'b': out[o++] = '\b'; continue;
        case 'f': out[o++] = '\f'; continue;
        case 'n': out[o++] = '\n'; continue;
        case 'r': out[o++] = '\r'; continue;
        case 't': out[o++] = '\t'; continue;
        case 'u':
            if (hex4(p, end, &cp)) break;
            p += 4;
            if (cp >= 0xd800 && cp < 0xdc00) { /* surrogate pair */
                uint32_t lo;
                if (end - p >= 6 && p[0] == '\\' && p[1] == 'u' && !hex4(p + 2, end, &lo) && lo >= 0xdc00 &&
                    lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    p += 6;
                } else {
                    cp = 0xfffd; /* lone surrogate, as a JS string would decode to text */
                }
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                cp = 0xfffd;
            }
            o += dp_utf8_encode(cp, out + o);
            continue;
        default: break;
        }
        dp_free(out);
        dp_err_set(err, DP_E_FORMAT, "--jsonl: bad escape in a JSON string");
        return NULL;
    }
    out[o] = '\0';
    *out_n = o;
    return out;
}

/* Parses whitespace-separated ids, each checked against the vocabulary. */
static int parse_ids(const char *p, const dp_tokenizer *tok, int32_t **ids, int64_t *n_ids, dp_err *err) {
    int64_t cap = 1024, n = 0;
    int32_t *v = dp_malloc(sizeof(int32_t) * (size_t)cap, "ids");
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        long long x = strtoll(p, &end, 10);
        if (end == p) {
            dp_free(v);
            return dp_err_set(err, DP_E_FORMAT, "--decode: input must be integers");
        }
        if (x < 0 || x >= dp_tokenizer_vocab_size(tok)) {
            dp_free(v);
            return dp_err_set(err, DP_E_RANGE, "token id %lld outside [0, %lld)", x,
                              (long long)dp_tokenizer_vocab_size(tok));
        }
        if (n == cap) v = dp_realloc(v, sizeof(int32_t) * (size_t)(cap *= 2), "ids");
        v[n++] = (int32_t)x;
        p = end;
    }
    *ids = v;
    *n_ids = n;
    return DP_OK;
}

static void print_json_string(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\b')
            fputs("\\b", stdout);
        else if (c == '\f')
            fputs("\\f", stdout);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    fputs("\"\n", stdout);
}

static int run_tokenize(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_tokenize;
    dp_err err;
    dp_err_clear(&err);
    const char *dir = dp_cli_model_path(app, cmd);
    if (!dir) {
        dp_err_set(&err, DP_E_USAGE, "--model DIR is required");
        return dp_cli_fail(app, &err);
    }
    dp_tokenizer *tok = NULL;
    int rc = dp_mpi_agree(&app->mpi, dp_tokenizer_load(dir, &tok, &err), &err);
    if (rc) {
        dp_tokenizer_free(tok);
        return dp_cli_fail(app, &err);
    }
    if (app->mpi.rank != 0) {
        dp_tokenizer_free(tok);
        return 0;
    }
    const char *bos_policy = dp_config_str(&app->cfg, "tokenizer.add_bos");
    int add = strcmp(bos_policy, "false") != 0 && !dp_cli_get(app, cmd, "--no-bos");
    char *in;
    size_t n;
    read_stdin(&in, &n);
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    if (dp_cli_get(app, cmd, "--decode")) {
        /* whole input is one id list; with --jsonl each line is one list and
         * each output line a JSON string */
        int per_line = dp_cli_get(app, cmd, "--jsonl") != NULL;
        size_t start = 0;
        while (rc == DP_OK && start <= n) {
            char *nl = per_line ? memchr(in + start, '\n', n - start) : NULL;
            size_t len = nl ? (size_t)(nl - (in + start)) : n - start;
            if (per_line && !nl && len == 0) break;
            char saved = in[start + len];
            in[start + len] = '\0';
            rc = parse_ids(in + start, tok, &ids, &n_ids, &err);
            in[start + len] = saved;
            if (rc == DP_OK) {
                size_t tn;
                char *text = dp_tokenizer_decode(tok, ids, n_ids, 0, &tn);
                if (per_line)
                    print_json_string(text, tn);
                else {
                    fwrite(text, 1, tn, stdout);
                    putchar('\n');
                }
                dp_free(text);
            }
            dp_free(ids);
            ids = NULL;
            if (!per_line) break;
            start += len + 1;
        }
    } else if (dp_cli_get(app, cmd, "--lines") || dp_cli_get(app, cmd, "--jsonl")) {
        int jsonl = dp_cli_get(app, cmd, "--jsonl") != NULL;
        size_t start = 0;
        while (start < n && rc == DP_OK) {
            char *nl = memchr(in + start, '\n', n - start);
            size_t len = nl ? (size_t)(nl - (in + start)) : n - start;
            if (jsonl) {
                size_t ln;
                char *s = json_line(in + start, len, &ln, &err);
                if (!s) {
                    rc = err.code;
                    break;
                }
                dp_tokenizer_encode(tok, s, ln, add, &ids, &n_ids, &err);
                dp_free(s);
            } else {
                dp_tokenizer_encode(tok, in + start, len, add, &ids, &n_ids, &err);
            }
            print_ids(ids, n_ids);
            dp_free(ids);
            start += len + 1;
        }
    } else {
        dp_tokenizer_encode(tok, in, n, add, &ids, &n_ids, &err);
        print_ids(ids, n_ids);
        dp_free(ids);
    }
    dp_free(in);
    dp_tokenizer_free(tok);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_tokenize = {"tokenize",
                                "read UTF-8 text on stdin and print token ids (or decode ids with --decode)",
                                "--model DIR [--lines | --jsonl] [--no-bos] [--decode]",
                                k_tok_opts,
                                1,
                                run_tokenize,
                                0,
                                0};

/* ---- export ---- */
static const dp_cli_opt k_export_opts[] = {
    {"--model", "DIR", "source HF model directory", NULL},
    {"--from-gguf", "FILE", "instead of --model: convert a LLaMA GGUF (llama.cpp) file to an HF directory", NULL},
    {"--out", "DIR", "output directory (must not exist)", NULL},
    {"--drop", "I,J,..", "blocks to remove (original indices)", NULL},
    {"--drop-attn", "I,J,..", "blocks whose attention is removed: o_proj written as zeros, listed in config.json",
     NULL},
    {"--drop-mlp", "I,J,..", "blocks whose MLP is removed: down_proj written as zeros, listed in config.json", NULL},
    {"--dtype", "F32|F16|BF16|Q8_0", "dtype of the written weights (default: as stored; Q8_0 for GGUF only)", NULL},
    {"--format", "hf|gguf", "hf: an HF directory (default); gguf: one llama.cpp GGUF file at --out", NULL},
    {"--max-shard-bytes", "N", "shard size limit (default 5000000000)", NULL},
    {NULL, NULL, NULL, NULL},
};

/* export --format gguf: the model (through the layer map of --drop) as one GGUF file */
static int export_gguf(dp_app *app, const dp_cmd *cmd, const char *dir, const char *out, const char *dtype_s) {
    dp_err err;
    dp_err_clear(&err);
    int type = !strcmp(dtype_s, "auto") || !strcmp(dtype_s, "F32") ? DP_GGML_F32
               : !strcmp(dtype_s, "F16")                           ? DP_GGML_F16
               : !strcmp(dtype_s, "BF16")                          ? DP_GGML_BF16
               : !strcmp(dtype_s, "Q8_0")                          ? DP_GGML_Q8_0
                                                                   : -1;
    int rc = type < 0
                 ? dp_err_set(&err, DP_E_USAGE, "--dtype for GGUF must be F32, F16, BF16 or Q8_0, got '%s'", dtype_s)
                 : DP_OK;
    if (!rc && app->mpi.rank == 0) {
        if (dp_file_exists(out)) rc = dp_err_set(&err, DP_E_IO, "%s: already exists; refusing to overwrite it", out);
        dp_llama m;
        memset(&m, 0, sizeof m);
        if (!rc) rc = dp_llama_load(dir, &m, &err);
        int64_t *drop = NULL, n_drop = 0;
        const char *drop_s = dp_cli_get(app, cmd, "--drop");
        if (!rc && drop_s) rc = dp_parse_block_list(drop_s, m.cfg.n_layers, &drop, &n_drop, &err);
        if (!rc && n_drop >= m.cfg.n_layers) rc = dp_err_set(&err, DP_E_RANGE, "--drop removes every block");
        char *tj = NULL, *tp = dp_path_join(dir, "tokenizer.json");
        size_t tl = 0;
        if (!rc) rc = dp_read_file(tp, &tj, &tl, &err);
        dp_layer_map skips; /* removed sub-layers (config.json's lists and the flags): zero projections */
        if (!rc)
            rc = dp_pipe_layer_map(&m.cfg, NULL, dp_cli_get(app, cmd, "--drop-attn"),
                                   dp_cli_get(app, cmd, "--drop-mlp"), &skips, &err);
        float *zeros = NULL;
        const char **names = dp_calloc((size_t)m.n_params + 1, sizeof *names, "export");
        char **owned = dp_calloc((size_t)m.n_params + 1, sizeof *owned, "export");
        const float **data = dp_calloc((size_t)m.n_params + 1, sizeof *data, "export");
        int64_t(*shape)[2] = dp_calloc((size_t)m.n_params + 1, sizeof *shape, "export");
        int n = 0;
        for (int i = 0; !rc && i < m.n_params; i++) {
            const dp_llama_param *p = &m.params[i];
            if (p->block >= 0) {
                int64_t newi = p->block, dropped = 0;
                for (int64_t k = 0; k < n_drop; k++) {
                    if (drop[k] == p->block) dropped = 1;
                    if (drop[k] < p->block) newi--;
                }
                if (dropped) continue;
                const char *sfx = strchr(p->name + strlen("model.layers."), '.') + 1;
                owned[n] = dp_malloc(160, "export");
                snprintf(owned[n], 160, "model.layers.%lld.%s", (long long)newi, sfx);
                names[n] = owned[n];
            } else {
                names[n] = p->name;
            }
            data[n] = m.mem + p->offset;
            if (p->block >= 0 && (((skips.skip[p->block] & DP_SKIP_ATTN) && strstr(p->name, "self_attn.o_proj")) ||
                                  ((skips.skip[p->block] & DP_SKIP_MLP) && strstr(p->name, "mlp.down_proj")))) {
                if (!zeros)
                    zeros = dp_calloc((size_t)(m.cfg.hidden_size * m.cfg.intermediate_size +
                                               m.cfg.hidden_size * m.cfg.n_heads * m.cfg.head_dim),
                                      sizeof(float), "export");
                data[n] = zeros;
            }
            shape[n][0] = p->rows;
            shape[n][1] = p->cols;
            n++;
        }
        if (!rc) {
            dp_llama_config c = m.cfg;
            c.n_layers -= n_drop;
            const char *base = strrchr(dir, '/');
            rc = dp_gguf_write_llama(out, &c, tj, tl, names, data, (const int64_t(*)[2])shape, n, type,
                                     base && base[1] ? base + 1 : dir, &err);
            if (!rc)
                dp_log0("wrote %s (%d tensors, %lld of %lld blocks, %s)", out, n, (long long)c.n_layers,
                        (long long)m.cfg.n_layers, dp_ggml_type_name(type));
        }
        for (int i = 0; i < n; i++) dp_free(owned[i]);
        dp_free(owned);
        dp_free(names);
        dp_free(data);
        dp_free(shape);
        dp_free(tj);
        dp_free(tp);
        dp_free(drop);
        dp_free(zeros);
        if (m.mem) dp_llama_free(&m);
    }
    rc = dp_mpi_agree(&app->mpi, rc, &err);
    return rc ? dp_cli_fail(app, &err) : 0;
}

static int run_export(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_export;
    dp_err err;
    dp_err_clear(&err);
    const char *dir = dp_cli_model_path(app, cmd), *gguf = dp_cli_get(app, cmd, "--from-gguf");
    const char *out = dp_cli_get(app, cmd, "--out");
    if ((!dir && !gguf) || !out) {
        dp_err_set(&err, DP_E_USAGE, "--model DIR (or --from-gguf FILE) and --out DIR are required");
        return dp_cli_fail(app, &err);
    }
    if (gguf && dp_cli_get(app, cmd, "--model")) {
        dp_err_set(&err, DP_E_USAGE, "give either --model DIR or --from-gguf FILE");
        return dp_cli_fail(app, &err);
    }
    long long shard = 0;
    int rc =
        dp_cli_opt_int(app, cmd, "--max-shard-bytes", dp_config_int(&app->cfg, "export.max_shard_bytes"), &shard, &err);
    if (!rc && shard <= 0) rc = dp_err_set(&err, DP_E_USAGE, "--max-shard-bytes must be positive");
    const char *dtype_s = dp_cli_get(app, cmd, "--dtype");
    if (!dtype_s) dtype_s = dp_config_str(&app->cfg, "export.dtype");
    const char *format = dp_cli_get(app, cmd, "--format");
    int as_gguf = format && !strcmp(format, "gguf");
    if (!rc && format && !as_gguf && strcmp(format, "hf"))
        rc = dp_err_set(&err, DP_E_USAGE, "--format must be hf or gguf, got '%s'", format);
    if (!rc && as_gguf && gguf)
        rc = dp_err_set(&err, DP_E_USAGE, "--from-gguf writes an HF directory (no --format gguf)");
    if (!rc && as_gguf) return export_gguf(app, cmd, dir, out, dtype_s);
    int dtype = -1;
    if (!rc && strcmp(dtype_s, "auto")) {
        dtype = dp_dtype_from_name(dtype_s);
        if (dtype != DP_DTYPE_F32 && dtype != DP_DTYPE_F16 && dtype != DP_DTYPE_BF16)
            rc = dp_err_set(&err, DP_E_USAGE, "--dtype must be F32, F16 or BF16, got '%s'", dtype_s);
    }
    if (!rc && gguf &&
        (dp_cli_get(app, cmd, "--drop") || dp_cli_get(app, cmd, "--drop-attn") || dp_cli_get(app, cmd, "--drop-mlp")))
        rc = dp_err_set(&err, DP_E_USAGE,
                        "--drop, --drop-attn and --drop-mlp apply to --model; convert the GGUF first, then export");
    if (rc) return dp_cli_fail(app, &err);
    if (gguf) {
        if (app->mpi.rank == 0) {
            rc = dp_gguf_export_hf(gguf, out, dtype, (uint64_t)shard, &err);
            if (!rc) dp_log0("converted %s to %s", gguf, out);
        }
        rc = dp_mpi_agree(&app->mpi, rc, &err);
        return rc ? dp_cli_fail(app, &err) : 0;
    }
    model_dir m;
    int64_t *drop = NULL, n_drop = 0, *keep = NULL;
    rc = model_dir_open(dir, 0, &m, &err);
    const char *drop_s = dp_cli_get(app, cmd, "--drop");
    if (!rc && drop_s) rc = dp_parse_block_list(drop_s, m.cfg.n_layers, &drop, &n_drop, &err);
    if (!rc && n_drop >= m.cfg.n_layers) rc = dp_err_set(&err, DP_E_RANGE, "--drop removes every block");
    if (!rc) { /* removed sub-layers: zero projections + skip lists (dp_export_model) */
        dp_layer_map map;
        rc = dp_pipe_layer_map(&m.cfg, NULL, dp_cli_get(app, cmd, "--drop-attn"), dp_cli_get(app, cmd, "--drop-mlp"),
                               &map, &err);
        for (int64_t l = 0; !rc && l < m.cfg.n_layers; l++) m.cfg.layer_skip[l] = map.skip[l];
    }
    if (app->mpi.rank == 0 && !rc) {
        keep = dp_malloc(sizeof(int64_t) * (size_t)m.cfg.n_layers, "export");
        int64_t nk = 0, di = 0;
        for (int64_t l = 0; l < m.cfg.n_layers; l++) {
            if (di < n_drop && drop[di] == l) {
                di++;
                continue;
            }
            keep[nk++] = l;
        }
        char prov[4096];
        int p = snprintf(prov, sizeof prov, "{\"source_model\": \"%s\", \"source_layers\": %lld, \"removed_blocks\": [",
                         dir, (long long)m.cfg.n_layers);
        for (int64_t i = 0; i < n_drop && p < (int)sizeof prov - 32; i++)
            p += snprintf(prov + p, sizeof prov - (size_t)p, "%s%lld", i ? ", " : "", (long long)drop[i]);
        snprintf(prov + p, sizeof prov - (size_t)p, "], \"criterion\": %s, \"version\": \"%s\"}", "null",
                 DP_VERSION_STRING);
        dp_export_opts o = {
            .keep = keep, .n_keep = nk, .dtype = dtype, .max_shard_bytes = (uint64_t)shard, .provenance = prov};
        rc = dp_export_model(dir, &m.cfg, &m.st, out, &o, &err);
        if (!rc) dp_log0("exported %lld of %lld blocks to %s", (long long)nk, (long long)m.cfg.n_layers, out);
    }
    rc = dp_mpi_agree(&app->mpi, rc, &err);
    dp_free(keep);
    dp_free(drop);
    model_dir_close(&m);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_export = {
    "export",
    "write an HF model directory (safetensors + config + tokenizer), optionally without some blocks",
    "--model DIR --out DIR [--drop I,J,..] [--dtype BF16] [--max-shard-bytes N]  |  --from-gguf FILE --out DIR "
    "[--dtype F32]",
    k_export_opts,
    1,
    run_export,
    0,
    0};
