/* tokenizer.json in C: added-token splitting, normalizers, pre-tokenizers,
 * the BPE model (with byte fallback, unk fusing, ignore_merges), the
 * post-processor template and the decoders that LLaMA-family tokenizers
 * use. Anything else in a tokenizer.json is refused by name rather than
 * silently mis-tokenized.
 *
 * The Split regex is compiled with PCRE2 after rewriting the two places
 * where Oniguruma (what HF tokenizers uses) and PCRE2 disagree: \s is
 * Unicode White_Space, and (?i:...) folds ASCII letters only. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "depthprune/tokenizer.h"

#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/strmap.h"
#include "depthprune/utf8.h"

typedef enum { NORM_PREPEND, NORM_REPLACE } norm_kind;
typedef struct {
    norm_kind kind;
    char *a, *b;
} norm_step;

typedef enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE } pre_kind;
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
typedef struct {
    pre_kind kind;
    pcre2_code *re;
    int add_prefix_space, use_regex;
    char *replacement; /* Metaspace */
    int prepend_scheme, split;
} pre_step;

typedef enum { DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_BYTELEVEL, DEC_METASPACE } dec_kind;
typedef struct {
    dec_kind kind;
    char *a, *b;
    int start, stop;
    int prepend_scheme;
} dec_step;

typedef struct {
    int32_t id;
    char *content;
    size_t len;
    int lstrip, rstrip, single_word, special;
} added_token;

struct dp_tokenizer {
    dp_strmap vocab;
    char **id_to_token;
    int64_t n_ids; /* one past the largest id */
    uint8_t *is_special;
    dp_pairmap merges;
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id;
    int32_t byte_ids[256];
    int n_norm, n_pre, n_dec;
    norm_step norm[8];
    pre_step pre[8];
    dec_step dec[8];
    int n_added;
    added_token *added;
    uint8_t added_first[256]; /* a token starts with this byte */
    int32_t prefix[8], suffix[8];
    int n_prefix, n_suffix;
    int32_t bos_id, eos_id;
    int clean_up_spaces; /* tokenizer_config clean_up_tokenization_spaces */
    uint32_t byte_to_cp[256];
    int16_t cp_to_byte[512]; /* cps 0..323 used by the ByteLevel map */
};

/* ---- growable id and piece lists ---- */

typedef struct {
    int32_t *v;
    int64_t n, cap;
} ids_t;

static void ids_push(ids_t *a, int32_t id) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->v = dp_realloc(a->v, sizeof(int32_t) * (size_t)a->cap, "tokenizer.ids");
    }
    a->v[a->n++] = id;
}

/* pieces: (offset, length) into one string */
typedef struct {
    size_t *off, *len;
    int n, cap;
} pieces_t;

static void pieces_push(pieces_t *p, size_t off, size_t len) {
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->off = dp_realloc(p->off, sizeof(size_t) * (size_t)p->cap, "tokenizer.pieces");
        p->len = dp_realloc(p->len, sizeof(size_t) * (size_t)p->cap, "tokenizer.pieces");
    }
    p->off[p->n] = off;
    p->len[p->n++] = len;
}

static void pieces_free(pieces_t *p) {
    dp_free(p->off);
    dp_free(p->len);
    memset(p, 0, sizeof *p);
}

/* ---- ByteLevel byte <-> char map (GPT-2's bytes_to_unicode) ---- */
static void init_byte_map(dp_tokenizer *t) {
    int n = 0;
    for (int i = 0; i < 512; i++) t->cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        t->byte_to_cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
    for (int b = 0; b < 256; b++) t->cp_to_byte[t->byte_to_cp[b]] = (int16_t)b;
}

/* ---- regex: rewrite Oniguruma syntax to PCRE2 ---- */
#define WS_CLASS_BODY                                                                                                  \
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

static char *rewrite_regex(const char *src, dp_err *err) {
    dp_buf o = {0};
    int in_class = 0, fold_depth = -1, depth = 0;
    for (size_t i = 0; src[i];) {
        char c = src[i];
        if (c == '\\' && src[i + 1]) {
            char n = src[i + 1];
            if (n == 's' || n == 'S') {
                if (in_class) {
                    if (n == 'S') {
                        dp_free(o.p);
                        dp_err_set(err, DP_E_UNSUPPORTED, "regex: \\S inside a character class is not supported");
                        return NULL;
                    }
                    dp_buf_put(&o, WS_CLASS_BODY, strlen(WS_CLASS_BODY));
                } else {
                    const char *cls = n == 's' ? "[" WS_CLASS_BODY "]" : "[^" WS_CLASS_BODY "]";
                    dp_buf_put(&o, cls, strlen(cls));
                }
            } else {
                dp_buf_put(&o, src + i, 2);
            }
            i += 2;
            continue;
        }
        if (in_class) {
            if (c == ']') in_class = 0;
            dp_buf_put(&o, &c, 1);
            i++;
            continue;
        }
        if (c == '[') {
            in_class = 1;
            dp_buf_put(&o, &c, 1);
            i++;
            if (src[i] == '^') dp_buf_put(&o, &src[i++], 1);
            if (src[i] == ']') dp_buf_put(&o, &src[i++], 1);
            continue;
        }
        if (c == '(') {
            depth++;
            if (strncmp(src + i, "(?i:", 4) == 0) {
                if (fold_depth < 0) fold_depth = depth;
                dp_buf_put(&o, "(?:", 3);
                i += 4;
                continue;
            }
        } else if (c == ')') {
            if (depth == fold_depth) fold_depth = -1;
            depth--;
        } else if (fold_depth >= 0 && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
            char cls[5] = {'[', (char)(c | 0x20), (char)(c & ~0x20), ']', 0};
            dp_buf_put(&o, cls, 4);
            i++;
            continue;
        }
        dp_buf_put(&o, &c, 1);
        i++;
    }
    if (!o.p) dp_buf_put(&o, "", 0);
    return o.p;
}

static pcre2_code *compile_regex(const char *pattern, dp_err *err) {
    char *rw = rewrite_regex(pattern, err);
    if (!rw) return NULL;
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)rw, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        dp_err_set(err, DP_E_UNSUPPORTED, "regex '%s' does not compile at %zu: %s", pattern, (size_t)eo, msg);
    } else {
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: falls back to the interpreter */
    }
    dp_free(rw);
    return re;
}

/* ---- loading ---- */

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int json_true(const cJSON *o, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static int load_normalizer(dp_tokenizer *t, const cJSON *n, const char *label, dp_err *err) {
    if (!n || cJSON_IsNull(n)) return DP_OK;
    const char *type = json_str(n, "type");
    if (!type) return dp_err_set(err, DP_E_FORMAT, "%s: normalizer without a type", label);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        for (const cJSON *it = list ? list->child : NULL; it; it = it->next) {
            int rc = load_normalizer(t, it, label, err);
            if (rc) return rc;
        }
        return DP_OK;
    }
    if (t->n_norm == 8) return dp_err_set(err, DP_E_UNSUPPORTED, "%s: too many normalizers", label);
    norm_step *s = &t->norm[t->n_norm];
    if (!strcmp(type, "Prepend")) {
        const char *p = json_str(n, "prepend");
        if (!p) return dp_err_set(err, DP_E_FORMAT, "%s: Prepend normalizer without 'prepend'", label);
        s->kind = NORM_PREPEND;
        s->a = dp_strdup(p, "tokenizer");
    } else if (!strcmp(type, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *from = json_str(pat, "String"), *to = json_str(n, "content");
        if (!from || !to || !*from)
            return dp_err_set(err, DP_E_UNSUPPORTED, "%s: Replace normalizer needs a String pattern", label);
        s->kind = NORM_REPLACE;
        s->a = dp_strdup(from, "tokenizer");
        s->b = dp_strdup(to, "tokenizer");
    } else {
        return dp_err_set(err, DP_E_UNSUPPORTED, "%s: normalizer '%s' is not supported", label, type);
    }
    t->n_norm++;
    return DP_OK;
}

static int prepend_scheme_of(const cJSON *n) {
    const char *ps = json_str(n, "prepend_scheme");
    if (ps) return !strcmp(ps, "first") ? PREPEND_FIRST : !strcmp(ps, "never") ? PREPEND_NEVER : PREPEND_ALWAYS;
    const cJSON *aps = cJSON_GetObjectItemCaseSensitive(n, "add_prefix_space");
    return aps && cJSON_IsFalse(aps) ? PREPEND_NEVER : PREPEND_ALWAYS;
}

static const char *k_gpt2_regex = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int load_pre(dp_tokenizer *t, const cJSON *n, const char *label, dp_err *err) {
    if (!n || cJSON_IsNull(n)) return DP_OK;
    const char *type = json_str(n, "type");
    if (!type) return dp_err_set(err, DP_E_FORMAT, "%s: pre_tokenizer without a type", label);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "pretokenizers");
        for (const cJSON *it = list ? list->child : NULL; it; it = it->next) {
            int rc = load_pre(t, it, label, err);
            if (rc) return rc;
        }
        return DP_OK;
    }
    if (t->n_pre == 8) return dp_err_set(err, DP_E_UNSUPPORTED, "%s: too many pre-tokenizers", label);
    pre_step *s = &t->pre[t->n_pre];
    memset(s, 0, sizeof *s);
    if (!strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *re = json_str(pat, "Regex");
        const char *behavior = json_str(n, "behavior");
        if (!re) return dp_err_set(err, DP_E_UNSUPPORTED, "%s: Split pre-tokenizer needs a Regex pattern", label);
        if (!behavior || strcmp(behavior, "Isolated") || json_true(n, "invert"))
            return dp_err_set(err, DP_E_UNSUPPORTED, "%s: Split behavior '%s' is not supported (Isolated)", label,
                              behavior ? behavior : "?");
        s->kind = PRE_SPLIT;
        s->re = compile_regex(re, err);
        if (!s->re) return err->code;
    } else if (!strcmp(type, "ByteLevel")) {
        s->kind = PRE_BYTELEVEL;
        s->add_prefix_space = json_true(n, "add_prefix_space");
        s->use_regex = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(n, "use_regex"));
        if (s->use_regex) {
            s->re = compile_regex(k_gpt2_regex, err);
            if (!s->re) return err->code;
        }
    } else if (!strcmp(type, "Metaspace")) {
        const char *r = json_str(n, "replacement");
        s->kind = PRE_METASPACE;
        s->replacement = dp_strdup(r ? r : "\xe2\x96\x81", "tokenizer");
        s->prepend_scheme = prepend_scheme_of(n);
        s->split = !cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(n, "split"));
    } else {
        return dp_err_set(err, DP_E_UNSUPPORTED, "%s: pre-tokenizer '%s' is not supported", label, type);
    }
    t->n_pre++;
    return DP_OK;
}

static int load_decoder(dp_tokenizer *t, const cJSON *n, const char *label, dp_err *err) {
    if (!n || cJSON_IsNull(n)) return DP_OK;
    const char *type = json_str(n, "type");
    if (!type) return dp_err_set(err, DP_E_FORMAT, "%s: decoder without a type", label);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "decoders");
        for (const cJSON *it = list ? list->child : NULL; it; it = it->next) {
            int rc = load_decoder(t, it, label, err);
            if (rc) return rc;
        }
        return DP_OK;
    }
    if (t->n_dec == 8) return dp_err_set(err, DP_E_UNSUPPORTED, "%s: too many decoders", label);
    dec_step *s = &t->dec[t->n_dec];
    memset(s, 0, sizeof *s);
    if (!strcmp(type, "Replace")) {
        const char *from = json_str(cJSON_GetObjectItemCaseSensitive(n, "pattern"), "String");
        const char *to = json_str(n, "content");
        if (!from || !to || !*from)
            return dp_err_set(err, DP_E_UNSUPPORTED, "%s: Replace decoder needs a String pattern", label);
        s->kind = DEC_REPLACE;
        s->a = dp_strdup(from, "tokenizer");
        s->b = dp_strdup(to, "tokenizer");
    } else if (!strcmp(type, "ByteFallback")) {
        s->kind = DEC_BYTEFALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        s->kind = DEC_FUSE;
    } else if (!strcmp(type, "Strip")) {
        const char *content = json_str(n, "content");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(n, "start"),
                    *sp = cJSON_GetObjectItemCaseSensitive(n, "stop");
        s->kind = DEC_STRIP;
        s->a = dp_strdup(content ? content : " ", "tokenizer");
        s->start = cJSON_IsNumber(st) ? st->valueint : 0;
        s->stop = cJSON_IsNumber(sp) ? sp->valueint : 0;
    } else if (!strcmp(type, "ByteLevel")) {
        s->kind = DEC_BYTELEVEL;
    } else if (!strcmp(type, "Metaspace")) {
        const char *r = json_str(n, "replacement");
        s->kind = DEC_METASPACE;
        s->a = dp_strdup(r ? r : "\xe2\x96\x81", "tokenizer");
        s->prepend_scheme = prepend_scheme_of(n);
    } else {
        return dp_err_set(err, DP_E_UNSUPPORTED, "%s: decoder '%s' is not supported", label, type);
    }
    t->n_dec++;
    return DP_OK;
}

static int32_t token_id(const dp_tokenizer *t, const char *s) {
    int64_t id;
    return dp_strmap_get(&t->vocab, s, strlen(s), &id) ? (int32_t)id : -1;
}

static int load_post(dp_tokenizer *t, const cJSON *n, const char *label, dp_err *err) {
    if (!n || cJSON_IsNull(n)) return DP_OK;
    const char *type = json_str(n, "type");
    if (!type) return dp_err_set(err, DP_E_FORMAT, "%s: post_processor without a type", label);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "processors");
        for (const cJSON *it = list ? list->child : NULL; it; it = it->next) {
            int rc = load_post(t, it, label, err);
            if (rc) return rc;
        }
        return DP_OK;
    }
    if (!strcmp(type, "ByteLevel")) return DP_OK; /* offsets only: ids unchanged */
    if (strcmp(type, "TemplateProcessing"))
        return dp_err_set(err, DP_E_UNSUPPORTED, "%s: post_processor '%s' is not supported", label, type);
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(n, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(n, "special_tokens");
    int seen_seq = 0;
    for (const cJSON *it = single ? single->child : NULL; it; it = it->next) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) {
            seen_seq = 1;
            continue;
        }
        const char *name = json_str(sp, "id");
        const cJSON *def = name ? cJSON_GetObjectItemCaseSensitive(specials, name) : NULL;
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
        if (!cJSON_IsArray(ids))
            return dp_err_set(err, DP_E_FORMAT, "%s: template token '%s' has no ids", label, name ? name : "?");
        for (const cJSON *id = ids->child; id; id = id->next) {
            if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= (double)t->n_ids)
                return dp_err_set(err, DP_E_RANGE, "%s: template token '%s' has an id outside the vocabulary", label,
                                  name);
            if (!seen_seq && t->n_prefix < 8) t->prefix[t->n_prefix++] = (int32_t)id->valuedouble;
            if (seen_seq && t->n_suffix < 8) t->suffix[t->n_suffix++] = (int32_t)id->valuedouble;
        }
    }
    return DP_OK;
}

static int load_model(dp_tokenizer *t, const cJSON *m, const char *label, dp_err *err) {
    const char *type = json_str(m, "type");
    if (!m || (type && strcmp(type, "BPE")))
        return dp_err_set(err, DP_E_UNSUPPORTED, "%s: model type '%s' is not supported (BPE)", label,
                          type ? type : "?");
    if (json_str(m, "continuing_subword_prefix") || json_str(m, "end_of_word_suffix"))
        return dp_err_set(err, DP_E_UNSUPPORTED,
                          "%s: BPE continuing_subword_prefix/end_of_word_suffix are not supported", label);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0)
        return dp_err_set(err, DP_E_UNSUPPORTED, "%s: BPE dropout is a training feature; refusing", label);
    t->byte_fallback = json_true(m, "byte_fallback");
    t->fuse_unk = json_true(m, "fuse_unk");
    t->ignore_merges = json_true(m, "ignore_merges");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    if (!cJSON_IsObject(vocab)) return dp_err_set(err, DP_E_FORMAT, "%s: model.vocab is not an object", label);
    int nv = cJSON_GetArraySize(vocab);
    dp_strmap_init(&t->vocab, (size_t)nv + 512);
    for (const cJSON *v = vocab->child; v; v = v->next) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > DP_TOKENIZER_MAX_ID ||
            v->valuedouble != (double)(int64_t)v->valuedouble)
            return dp_err_set(err, DP_E_FORMAT, "%s: vocab entry '%s' has a bad id (an integer 0..%d)", label,
                              v->string, DP_TOKENIZER_MAX_ID);
        int64_t id = (int64_t)v->valuedouble;
        if (!dp_strmap_put(&t->vocab, v->string, strlen(v->string), id))
            return dp_err_set(err, DP_E_FORMAT, "%s: vocab token '%s' appears twice", label, v->string);
        if (id + 1 > t->n_ids) t->n_ids = id + 1;
    }
    return DP_OK;
}

/* merges after ids are known: "a b" strings or ["a","b"] pairs */
static int load_merges(dp_tokenizer *t, const cJSON *m, const char *label, dp_err *err) {
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    int nm = cJSON_IsArray(merges) ? cJSON_GetArraySize(merges) : 0;
    dp_pairmap_init(&t->merges, (size_t)nm + 1);
    int rank = 0;
    dp_buf joined = {0};
    for (const cJSON *it = merges ? merges->child : NULL; it; it = it->next, rank++) {
        const char *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;
        if (cJSON_IsString(it)) {
            const char *sp = strchr(it->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                dp_free(joined.p);
                return dp_err_set(err, DP_E_FORMAT, "%s: merge %d '%s' is not two tokens", label, rank,
                                  it->valuestring);
            }
            a = it->valuestring;
            la = (size_t)(sp - a);
            b = sp + 1;
            lb = strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                   cJSON_IsString(it->child->next)) {
            a = it->child->valuestring;
            la = strlen(a);
            b = it->child->next->valuestring;
            lb = strlen(b);
        } else {
            dp_free(joined.p);
            return dp_err_set(err, DP_E_FORMAT, "%s: merge %d is malformed", label, rank);
        }
        int64_t ia, ib, im;
        joined.n = 0;
        dp_buf_put(&joined, a, la);
        dp_buf_put(&joined, b, lb);
        if (!dp_strmap_get(&t->vocab, a, la, &ia) || !dp_strmap_get(&t->vocab, b, lb, &ib) ||
            !dp_strmap_get(&t->vocab, joined.p, joined.n, &im)) {
            dp_free(joined.p);
            return dp_err_set(err, DP_E_FORMAT, "%s: merge %d refers to a token missing from the vocab", label, rank);
        }
        dp_pairmap_put(&t->merges, ((uint64_t)ia << 32) | (uint64_t)ib, rank, (int32_t)im);
    }
    dp_free(joined.p);
    return DP_OK;
}

static int load_added(dp_tokenizer *t, const cJSON *root, const char *label, dp_err *err) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : 0;
    t->added = dp_calloc((size_t)(n ? n : 1), sizeof *t->added, "tokenizer");
    for (const cJSON *it = list ? list->child : NULL; it; it = it->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const char *content = json_str(it, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > DP_TOKENIZER_MAX_ID ||
            id->valuedouble != (double)(int64_t)id->valuedouble || !content || !*content)
            return dp_err_set(err, DP_E_FORMAT, "%s: malformed added token (id an integer 0..%d, content a string)",
                              label, DP_TOKENIZER_MAX_ID);
        added_token *a = &t->added[t->n_added++];
        a->id = (int32_t)id->valuedouble;
        a->content = dp_strdup(content, "tokenizer");
        a->len = strlen(content);
        a->lstrip = json_true(it, "lstrip");
        a->rstrip = json_true(it, "rstrip");
        a->single_word = json_true(it, "single_word");
        a->special = json_true(it, "special");
        t->added_first[(unsigned char)content[0]] = 1;
        if (a->id + 1 > t->n_ids) t->n_ids = a->id + 1;
        int64_t existing;
        if (!dp_strmap_get(&t->vocab, content, a->len, &existing)) dp_strmap_put(&t->vocab, content, a->len, a->id);
    }
    return DP_OK;
}

static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) return json_str(v, "content");
    return NULL;
}

int dp_tokenizer_from_json(const char *json, size_t json_len, const char *config_json, size_t config_len,
                           const char *label, dp_tokenizer **out, dp_err *err) {
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(json, json_len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dp_err_set(err, DP_E_FORMAT, "%s: not a JSON object", label);
    }
    cJSON *cfg = config_json ? cJSON_ParseWithLength(config_json, config_len) : NULL;
    if (config_json && !cJSON_IsObject(cfg)) {
        cJSON_Delete(root);
        cJSON_Delete(cfg);
        return dp_err_set(err, DP_E_FORMAT, "%s: tokenizer_config.json is not a JSON object", label);
    }
    dp_tokenizer *t = dp_calloc(1, sizeof *t, "tokenizer");
    init_byte_map(t);
    t->bos_id = t->eos_id = t->unk_id = -1;
    int rc = load_model(t, cJSON_GetObjectItemCaseSensitive(root, "model"), label, err);
    if (!rc) rc = load_added(t, root, label, err);
    if (!rc) rc = load_merges(t, cJSON_GetObjectItemCaseSensitive(root, "model"), label, err);
    if (!rc) rc = load_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), label, err);
    if (!rc) rc = load_pre(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), label, err);
    if (!rc) rc = load_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), label, err);
    if (!rc) {
        t->id_to_token = dp_calloc((size_t)t->n_ids, sizeof(char *), "tokenizer");
        t->is_special = dp_calloc((size_t)t->n_ids, 1, "tokenizer");
        for (size_t i = 0; i < t->vocab.cap; i++)
            if (t->vocab.keys[i] && !t->id_to_token[t->vocab.values[i]])
                t->id_to_token[t->vocab.values[i]] = (char *)t->vocab.keys[i];
        for (int i = 0; i < t->n_added; i++) {
            t->id_to_token[t->added[i].id] = t->added[i].content;
            t->is_special[t->added[i].id] = (uint8_t)t->added[i].special;
        }
        rc = load_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), label, err);
    }
    if (!rc) {
        const char *unk = json_str(cJSON_GetObjectItemCaseSensitive(root, "model"), "unk_token");
        if (unk) {
            t->unk_id = token_id(t, unk);
            if (t->unk_id < 0) rc = dp_err_set(err, DP_E_FORMAT, "%s: unk_token '%s' is not in the vocab", label, unk);
        }
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->byte_ids[b] = token_id(t, name);
        }
        const char *bos = config_token(cfg, "bos_token"), *eos = config_token(cfg, "eos_token");
        t->bos_id = t->n_prefix ? t->prefix[0] : bos ? token_id(t, bos) : -1;
        if (eos) t->eos_id = token_id(t, eos);
        /* transformers' LlamaTokenizer(Fast) rebuilds the post-processor from
         * tokenizer_config.json on load: [BOS if add_bos_token (default true)]
         * $A [EOS if add_eos_token (default false)], whatever tokenizer.json says */
        const char *cls = json_str(cfg, "tokenizer_class");
        if (!rc && cls &&
            (!strcmp(cls, "LlamaTokenizer") || !strcmp(cls, "LlamaTokenizerFast") ||
             !strcmp(cls, "CodeLlamaTokenizer") || !strcmp(cls, "CodeLlamaTokenizerFast"))) {
            const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token"),
                        *ae = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
            int add_bos = cJSON_IsBool(ab) ? cJSON_IsTrue(ab) : 1, add_eos = cJSON_IsBool(ae) ? cJSON_IsTrue(ae) : 0;
            int32_t bid = bos ? token_id(t, bos) : t->bos_id;
            if ((add_bos && bid < 0) || (add_eos && t->eos_id < 0))
                rc = dp_err_set(err, DP_E_FORMAT, "%s: tokenizer_config.json asks for a %s token it does not define",
                                label, add_bos && bid < 0 ? "BOS" : "EOS");
            if (!rc) {
                t->n_prefix = t->n_suffix = 0;
                if (add_bos) t->prefix[t->n_prefix++] = bid, t->bos_id = bid;
                if (add_eos) t->suffix[t->n_suffix++] = t->eos_id;
            }
        }
        /* transformers >= 5 skips clean_up_tokenization_spaces for BPE models
         * (the only kind read here: it strips real spaces before punctuation)
         * unless the config insists with the flag below; 4.x applied it */
        t->clean_up_spaces = cfg && json_true(cfg, "clean_up_tokenization_spaces") &&
                             json_true(cfg, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output");
    }
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    if (rc) {
        dp_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return DP_OK;
}

int dp_tokenizer_load(const char *dir, dp_tokenizer **out, dp_err *err) {
    char *path = dp_path_join(dir, "tokenizer.json");
    char *cpath = dp_path_join(dir, "tokenizer_config.json");
    char *json = NULL, *cfg = NULL;
    size_t n = 0, nc = 0;
    int rc = dp_read_file(path, &json, &n, err);
    if (!rc && dp_file_exists(cpath)) rc = dp_read_file(cpath, &cfg, &nc, err);
    if (!rc) rc = dp_tokenizer_from_json(json, n, cfg, nc, path, out, err);
    dp_free(json);
    dp_free(cfg);
    dp_free(path);
    dp_free(cpath);
    return rc;
}

void dp_tokenizer_free(dp_tokenizer *t) {
    if (!t) return;
    dp_strmap_free(&t->vocab);
    dp_pairmap_free(&t->merges);
    dp_free(t->id_to_token);
    dp_free(t->is_special);
    for (int i = 0; i < t->n_norm; i++) {
        dp_free(t->norm[i].a);
        dp_free(t->norm[i].b);
    }
    for (int i = 0; i < t->n_pre; i++) {
        if (t->pre[i].re) pcre2_code_free(t->pre[i].re);
        dp_free(t->pre[i].replacement);
    }
    for (int i = 0; i < t->n_dec; i++) {
        dp_free(t->dec[i].a);
        dp_free(t->dec[i].b);
    }
    for (int i = 0; i < t->n_added; i++) dp_free(t->added[i].content);
    dp_free(t->added);
    dp_free(t);
}

int64_t dp_tokenizer_vocab_size(const dp_tokenizer *t) {
    return t->n_ids;
}
int32_t dp_tokenizer_bos_id(const dp_tokenizer *t) {
    return t->bos_id;
}
int32_t dp_tokenizer_eos_id(const dp_tokenizer *t) {
    return t->eos_id;
}
int dp_tokenizer_adds_bos(const dp_tokenizer *t) {
    return t->n_prefix > 0 && t->prefix[0] == t->bos_id;
}
const char *dp_tokenizer_token(const dp_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids ? t->id_to_token[id] : NULL;
}

/* ---- BPE ---- */

typedef struct {
    int32_t rank, pos;
    int32_t merged;
} merge_ent;

typedef struct {
    merge_ent *v;
    int n, cap;
} heap_t;

static int ent_less(const merge_ent *a, const merge_ent *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(heap_t *h, merge_ent e) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->v = dp_realloc(h->v, sizeof(merge_ent) * (size_t)h->cap, "tokenizer.heap");
    }
    int i = h->n++;
    h->v[i] = e;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!ent_less(&h->v[i], &h->v[p])) break;
        merge_ent tmp = h->v[i];
        h->v[i] = h->v[p];
        h->v[p] = tmp;
        i = p;
    }
}

static merge_ent heap_pop(heap_t *h) {
    merge_ent top = h->v[0];
    h->v[0] = h->v[--h->n];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && ent_less(&h->v[l], &h->v[m])) m = l;
        if (r < h->n && ent_less(&h->v[r], &h->v[m])) m = r;
        if (m == i) break;
        merge_ent tmp = h->v[i];
        h->v[i] = h->v[m];
        h->v[m] = tmp;
        i = m;
    }
    return top;
}

typedef struct {
    int32_t *id, *prev, *next;
    int32_t *len;
    int n, cap;
    heap_t heap;
} word_t;

static void word_add(word_t *w, int32_t id, int32_t len) {
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 64;
        w->id = dp_realloc(w->id, sizeof(int32_t) * (size_t)w->cap, "tokenizer.word");
        w->prev = dp_realloc(w->prev, sizeof(int32_t) * (size_t)w->cap, "tokenizer.word");
        w->next = dp_realloc(w->next, sizeof(int32_t) * (size_t)w->cap, "tokenizer.word");
        w->len = dp_realloc(w->len, sizeof(int32_t) * (size_t)w->cap, "tokenizer.word");
    }
    int i = w->n++;
    w->id[i] = id;
    w->len[i] = len;
    w->prev[i] = i - 1;
    w->next[i] = -1;
    if (i > 0) w->next[i - 1] = i;
}

static void word_free(word_t *w) {
    dp_free(w->id);
    dp_free(w->prev);
    dp_free(w->next);
    dp_free(w->len);
    dp_free(w->heap.v);
}

static void push_pair(const dp_tokenizer *t, word_t *w, int pos) {
    int nx = w->next[pos];
    if (nx < 0) return;
    int32_t rank, merged;
    if (dp_pairmap_get(&t->merges, ((uint64_t)(uint32_t)w->id[pos] << 32) | (uint32_t)w->id[nx], &rank, &merged))
        heap_push(&w->heap, (merge_ent){rank, pos, merged});
}

/* Tokenizes one pre-token (UTF-8) with the BPE model; appends ids. */
static void bpe_word(const dp_tokenizer *t, const char *s, size_t n, word_t *w, ids_t *out) {
    if (n == 0) return;
    int64_t whole;
    if (t->ignore_merges && dp_strmap_get(&t->vocab, s, n, &whole)) {
        ids_push(out, (int32_t)whole);
        return;
    }
    w->n = 0;
    w->heap.n = 0;
    int32_t unk_id = -1, unk_len = 0;
    for (size_t i = 0; i < n;) {
        size_t k = dp_utf8_seq_len((unsigned char)s[i]);
        if (i + k > n) k = n - i;
        int64_t id;
        if (dp_strmap_get(&t->vocab, s + i, k, &id)) {
            if (unk_id >= 0) {
                word_add(w, unk_id, unk_len);
                unk_id = -1;
            }
            word_add(w, (int32_t)id, (int32_t)k);
        } else {
            int all = t->byte_fallback;
            for (size_t j = 0; all && j < k; j++) all = t->byte_ids[(unsigned char)s[i + j]] >= 0;
            if (all) {
                /* as HF: a pending unk is not flushed before byte tokens */
                for (size_t j = 0; j < k; j++) word_add(w, t->byte_ids[(unsigned char)s[i + j]], 1);
            } else if (t->unk_id >= 0) {
                if (unk_id >= 0 && t->fuse_unk) {
                    unk_len += (int32_t)k;
                } else {
                    if (unk_id >= 0) word_add(w, unk_id, unk_len);
                    unk_id = t->unk_id;
                    unk_len = (int32_t)k;
                }
            }
        }
        i += k;
    }
    if (unk_id >= 0) word_add(w, unk_id, unk_len);
    for (int i = 0; i + 1 < w->n; i++) push_pair(t, w, i);
    while (w->heap.n) {
        merge_ent top = heap_pop(&w->heap);
        int pos = top.pos;
        if (w->len[pos] == 0) continue;
        int nx = w->next[pos];
        if (nx < 0) continue;
        int32_t rank, merged;
        if (!dp_pairmap_get(&t->merges, ((uint64_t)(uint32_t)w->id[pos] << 32) | (uint32_t)w->id[nx], &rank, &merged) ||
            merged != top.merged)
            continue; /* stale entry */
        w->id[pos] = merged;
        w->len[pos] += w->len[nx];
        w->len[nx] = 0;
        w->next[pos] = w->next[nx];
        if (w->next[nx] >= 0) w->prev[w->next[nx]] = pos;
        if (w->prev[pos] >= 0) push_pair(t, w, w->prev[pos]);
        push_pair(t, w, pos);
    }
    for (int i = w->n ? 0 : -1; i >= 0; i = w->next[i]) ids_push(out, w->id[i]);
}

/* ---- normalization and pre-tokenization ---- */

static void replace_all(dp_buf *dst, const char *s, size_t n, const char *from, const char *to) {
    size_t lf = strlen(from), lt = strlen(to);
    dst->n = 0;
    dp_buf_put(dst, "", 0);
    for (size_t i = 0; i < n;) {
        if (i + lf <= n && memcmp(s + i, from, lf) == 0) {
            dp_buf_put(dst, to, lt);
            i += lf;
        } else {
            dp_buf_put(dst, s + i, 1);
            i++;
        }
    }
}

/* Splits [off, off+len) of s by re (Isolated: matches and gaps are pieces). */
static void regex_split(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t off, size_t len,
                        pieces_t *out) {
    size_t pos = off, end = off + len, last = off;
    while (pos < end) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, end, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: step one character */
            pos = ms + dp_utf8_seq_len((unsigned char)s[ms]);
            continue;
        }
        if (ms > last) pieces_push(out, last, ms - last);
        pieces_push(out, ms, me - ms);
        last = pos = me;
    }
    if (last < end) pieces_push(out, last, end - last);
}

/* Encodes one segment of raw text (between added tokens). */
static void encode_segment(const dp_tokenizer *t, const char *text, size_t n, int first_segment, pcre2_match_data *md,
                           word_t *w, ids_t *out) {
    dp_buf a = {0}, b = {0};
    dp_buf_put(&a, text, n);
    for (int i = 0; i < t->n_norm; i++) {
        const norm_step *s = &t->norm[i];
        if (s->kind == NORM_PREPEND) {
            if (a.n == 0) continue; /* Prepend leaves an empty string empty */
            b.n = 0;
            dp_buf_put(&b, s->a, strlen(s->a));
            dp_buf_put(&b, a.p, a.n);
        } else {
            replace_all(&b, a.p, a.n, s->a, s->b);
        }
        dp_buf tmp = a;
        a = b;
        b = tmp;
    }
    /* pieces over the current string a; byte-level mapping rewrites a */
    pieces_t p = {0}, q = {0};
    pieces_push(&p, 0, a.n);
    for (int i = 0; i < t->n_pre; i++) {
        const pre_step *s = &t->pre[i];
        q.n = 0;
        if (s->kind == PRE_SPLIT) {
            for (int k = 0; k < p.n; k++) regex_split(s->re, md, a.p, p.off[k], p.len[k], &q);
        } else if (s->kind == PRE_METASPACE) {
            /* replace ' ' by the replacement, prepend it, split before it */
            b.n = 0;
            dp_buf_put(&b, "", 0);
            size_t rl = strlen(s->replacement);
            for (int k = 0; k < p.n; k++) {
                size_t start = b.n;
                int prepend = s->prepend_scheme == PREPEND_ALWAYS ||
                              (s->prepend_scheme == PREPEND_FIRST && first_segment && p.off[k] == 0);
                /* as tokenizers: spaces are replaced first, so a leading space is the replacement */
                if (prepend && p.len[k] && a.p[p.off[k]] != ' ' && strncmp(a.p + p.off[k], s->replacement, rl) != 0)
                    dp_buf_put(&b, s->replacement, rl);
                for (size_t j = 0; j < p.len[k]; j++) {
                    char c = a.p[p.off[k] + j];
                    if (c == ' ')
                        dp_buf_put(&b, s->replacement, rl);
                    else
                        dp_buf_put(&b, &c, 1);
                }
                if (!s->split) {
                    pieces_push(&q, start, b.n - start);
                    continue;
                }
                size_t last = start;
                for (size_t j = start + 1; j + rl <= b.n; j++)
                    if (memcmp(b.p + j, s->replacement, rl) == 0) {
                        pieces_push(&q, last, j - last);
                        last = j;
                    }
                if (b.n > last) pieces_push(&q, last, b.n - last);
            }
            dp_buf tmp = a;
            a = b;
            b = tmp;
        } else { /* ByteLevel */
            pieces_t r = {0};
            for (int k = 0; k < p.n; k++) {
                if (s->use_regex)
                    regex_split(s->re, md, a.p, p.off[k], p.len[k], &r);
                else
                    pieces_push(&r, p.off[k], p.len[k]);
            }
            b.n = 0;
            dp_buf_put(&b, "", 0);
            for (int k = 0; k < r.n; k++) {
                size_t start = b.n;
                if (s->add_prefix_space && k == 0 && r.len[k] && a.p[r.off[k]] != ' ') {
                    char tmp[4];
                    dp_buf_put(&b, tmp, dp_utf8_encode(t->byte_to_cp[' '], tmp));
                }
                for (size_t j = 0; j < r.len[k]; j++) {
                    char tmp[4];
                    dp_buf_put(&b, tmp, dp_utf8_encode(t->byte_to_cp[(unsigned char)a.p[r.off[k] + j]], tmp));
                }
                pieces_push(&q, start, b.n - start);
            }
            pieces_free(&r);
            dp_buf tmp = a;
            a = b;
            b = tmp;
        }
        pieces_t tmp = p;
        p = q;
        q = tmp;
    }
    for (int k = 0; k < p.n; k++) bpe_word(t, a.p + p.off[k], p.len[k], w, out);
    pieces_free(&p);
    pieces_free(&q);
    dp_free(a.p);
    dp_free(b.p);
}

static int is_ws(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
static int is_word_byte(unsigned char c) {
    return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

int dp_tokenizer_encode(const dp_tokenizer *t, const char *text, size_t n_bytes, int add_special, int32_t **ids,
                        int64_t *n_ids, dp_err *err) {
    (void)err;
    size_t n;
    char *s = dp_utf8_sanitize(text, n_bytes, &n);
    ids_t out = {0};
    if (add_special)
        for (int i = 0; i < t->n_prefix; i++) ids_push(&out, t->prefix[i]);
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    word_t w = {0};
    size_t seg = 0, i = 0;
    int first = 1;
    while (i < n) {
        const added_token *best = NULL;
        if (t->added_first[(unsigned char)s[i]]) {
            for (int k = 0; k < t->n_added; k++) {
                const added_token *a = &t->added[k];
                if (a->len > n - i || memcmp(s + i, a->content, a->len) != 0) continue;
                if (a->single_word && ((i > 0 && is_word_byte((unsigned char)s[i - 1])) ||
                                       (i + a->len < n && is_word_byte((unsigned char)s[i + a->len]))))
                    continue;
                if (!best || a->len > best->len) best = a;
            }
        }
        if (!best) {
            i++;
            continue;
        }
        size_t ms = i, me = i + best->len;
        if (best->lstrip)
            while (ms > seg && is_ws((unsigned char)s[ms - 1])) ms--;
        if (best->rstrip)
            while (me < n && is_ws((unsigned char)s[me])) me++;
        if (ms > seg) encode_segment(t, s + seg, ms - seg, first && seg == 0, md, &w, &out);
        ids_push(&out, best->id);
        first = 0;
        seg = i = me;
    }
    if (seg < n) encode_segment(t, s + seg, n - seg, seg == 0, md, &w, &out);
    if (add_special)
        for (int k = 0; k < t->n_suffix; k++) ids_push(&out, t->suffix[k]);
    word_free(&w);
    pcre2_match_data_free(md);
    dp_free(s);
    if (!out.v) out.v = dp_malloc(sizeof(int32_t), "tokenizer.ids");
    *ids = out.v;
    *n_ids = out.n;
    return DP_OK;
}

/* ---- decoding: each decoder maps a list of token strings to another ---- */

/* token strings with explicit lengths: decoded bytes may contain NUL */
typedef struct {
    char **s;
    size_t *len;
    int n, cap;
} strs_t;

static void strs_push(strs_t *l, const char *s, size_t n) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->s = dp_realloc(l->s, sizeof(char *) * (size_t)l->cap, "tokenizer.decode");
        l->len = dp_realloc(l->len, sizeof(size_t) * (size_t)l->cap, "tokenizer.decode");
    }
    char *c = dp_malloc(n + 1, "tokenizer.decode");
    memcpy(c, s, n);
    c[n] = '\0';
    l->len[l->n] = n;
    l->s[l->n++] = c;
}

static void strs_free(strs_t *l) {
    for (int i = 0; i < l->n; i++) dp_free(l->s[i]);
    dp_free(l->s);
    dp_free(l->len);
    memset(l, 0, sizeof *l);
}

static int hex_byte_token(const char *s, unsigned char *b) {
    if (strlen(s) != 6 || strncmp(s, "<0x", 3) || s[5] != '>') return 0;
    unsigned v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else
            return 0;
    }
    *b = (unsigned char)v;
    return 1;
}

char *dp_tokenizer_decode(const dp_tokenizer *t, const int32_t *ids, int64_t n_ids, int skip_special, size_t *n_out) {
    strs_t cur = {0}, nxt = {0};
    for (int64_t i = 0; i < n_ids; i++) {
        const char *tok = dp_tokenizer_token(t, ids[i]);
        if (!tok || (skip_special && t->is_special[ids[i]])) continue;
        strs_push(&cur, tok, strlen(tok));
    }
    dp_buf b = {0};
    for (int d = 0; d < t->n_dec; d++) {
        const dec_step *s = &t->dec[d];
        nxt.n = 0;
        if (s->kind == DEC_REPLACE) {
            for (int i = 0; i < cur.n; i++) {
                replace_all(&b, cur.s[i], cur.len[i], s->a, s->b);
                strs_push(&nxt, b.p, b.n);
            }
        } else if (s->kind == DEC_BYTEFALLBACK) {
            for (int i = 0; i < cur.n;) {
                unsigned char byte;
                if (!hex_byte_token(cur.s[i], &byte)) {
                    strs_push(&nxt, cur.s[i], cur.len[i]);
                    i++;
                    continue;
                }
                b.n = 0;
                int j = i;
                while (j < cur.n && hex_byte_token(cur.s[j], &byte)) {
                    dp_buf_put(&b, (const char *)&byte, 1);
                    j++;
                }
                if (dp_utf8_valid(b.p, b.n)) {
                    strs_push(&nxt, b.p, b.n);
                } else {
                    for (int k = i; k < j; k++) strs_push(&nxt, "\xef\xbf\xbd", 3);
                }
                i = j;
            }
        } else if (s->kind == DEC_FUSE) {
            b.n = 0;
            dp_buf_put(&b, "", 0);
            for (int i = 0; i < cur.n; i++) dp_buf_put(&b, cur.s[i], cur.len[i]);
            strs_push(&nxt, b.p, b.n);
        } else if (s->kind == DEC_STRIP) {
            size_t cl = strlen(s->a);
            for (int i = 0; i < cur.n; i++) {
                const char *p = cur.s[i];
                size_t len = cur.len[i];
                for (int k = 0; k < s->start && len >= cl && strncmp(p, s->a, cl) == 0; k++) {
                    p += cl;
                    len -= cl;
                }
                for (int k = 0; k < s->stop && len >= cl && strncmp(p + len - cl, s->a, cl) == 0; k++) len -= cl;
                strs_push(&nxt, p, len);
            }
        } else if (s->kind == DEC_METASPACE) {
            for (int i = 0; i < cur.n; i++) {
                replace_all(&b, cur.s[i], cur.len[i], s->a, " ");
                const char *p = b.p;
                size_t len = b.n;
                if (i == 0 && s->prepend_scheme != PREPEND_NEVER && len && p[0] == ' ') {
                    p++;
                    len--;
                }
                strs_push(&nxt, p, len);
            }
        } else { /* ByteLevel: chars back to bytes, then lossy UTF-8 */
            b.n = 0;
            dp_buf_put(&b, "", 0);
            for (int i = 0; i < cur.n; i++) {
                const char *p = cur.s[i];
                size_t len = cur.len[i];
                for (size_t k = 0; k < len;) {
                    uint32_t cp;
                    size_t used = dp_utf8_decode(p + k, len - k, &cp);
                    if (cp < 512 && t->cp_to_byte[cp] >= 0) {
                        char c = (char)t->cp_to_byte[cp];
                        dp_buf_put(&b, &c, 1);
                    } else {
                        dp_buf_put(&b, p + k, used);
                    }
                    k += used;
                }
            }
            size_t sn;
            char *clean = dp_utf8_sanitize(b.p, b.n, &sn);
            strs_push(&nxt, clean, sn);
            dp_free(clean);
        }
        strs_t tmp = cur;
        cur = nxt;
        nxt = tmp;
        for (int i = 0; i < nxt.n; i++) dp_free(nxt.s[i]);
        nxt.n = 0;
    }
    b.n = 0;
    dp_buf_put(&b, "", 0);
    for (int i = 0; i < cur.n; i++) dp_buf_put(&b, cur.s[i], cur.len[i]);
    strs_free(&cur);
    strs_free(&nxt);
    if (t->clean_up_spaces) {
        /* transformers' clean_up_tokenization, applied when tokenizer_config insists */
        static const char *const k_pairs[][2] = {{" .", "."},     {" ?", "?"},     {" !", "!"},   {" ,", ","},
                                                 {" ' ", "'"},    {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"},
                                                 {" 've", "'ve"}, {" 're", "'re"}};
        dp_buf c = {0};
        for (size_t k = 0; k < sizeof k_pairs / sizeof *k_pairs; k++) {
            replace_all(&c, b.p, b.n, k_pairs[k][0], k_pairs[k][1]);
            dp_buf tmp = b;
            b = c;
            c = tmp;
        }
        dp_free(c.p);
    }
    if (n_out) *n_out = b.n;
    return b.p;
}
