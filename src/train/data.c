/* Training data (see train.h): Alpaca records with the Alpaca-LoRA prompt
 * template and LLM-Pruner's tokenization rules, or packed plain text. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/prune.h"
#include "depthprune/train.h"

static const char k_with_input[] =
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n%s\n\n### Input:\n%s\n\n"
    "### Response:\n";
static const char k_no_input[] =
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n%s\n\n### Response:\n";

char *dp_alpaca_prompt(const char *instruction, const char *input) {
    int with = input && *input;
    size_t n = strlen(k_with_input) + strlen(instruction) + (with ? strlen(input) : 0) + 1;
    char *s = dp_malloc(n, "prompt");
    if (with)
        snprintf(s, n, k_with_input, instruction, input);
    else
        snprintf(s, n, k_no_input, instruction);
    return s;
}

typedef struct builder {
    dp_train_data *d;
    int64_t cap_tok, cap_ex;
} builder;

static void push_example(builder *b, const int32_t *tok, const int32_t *lab, int64_t n) {
    dp_train_data *d = b->d;
    if (d->n + 2 > b->cap_ex) {
        b->cap_ex = b->cap_ex ? b->cap_ex * 2 : 1024;
        d->off = dp_realloc(d->off, (size_t)b->cap_ex * sizeof(int64_t), "data");
    }
    int64_t at = d->off[d->n];
    if (at + n > b->cap_tok) {
        while (at + n > b->cap_tok) b->cap_tok = b->cap_tok ? b->cap_tok * 2 : 65536;
        d->tokens = dp_realloc(d->tokens, (size_t)b->cap_tok * sizeof(int32_t), "data");
        d->labels = dp_realloc(d->labels, (size_t)b->cap_tok * sizeof(int32_t), "data");
    }
    memcpy(d->tokens + at, tok, (size_t)n * sizeof(int32_t));
    memcpy(d->labels + at, lab, (size_t)n * sizeof(int32_t));
    d->n++;
    d->off[d->n] = at + n;
    if (n > d->max_len) d->max_len = n;
}

/* Tokenizes text with the BOS policy: -1 lets the post-processor decide. */
static int encode(const dp_tokenizer *tok, const char *s, size_t n, int add_bos, int32_t **ids, int64_t *n_ids,
                  dp_err *err) {
    int rc = dp_tokenizer_encode(tok, s, n, add_bos != 0, ids, n_ids, err);
    if (rc || add_bos != 1) return rc;
    int32_t bos = dp_tokenizer_bos_id(tok);
    if (bos >= 0 && (*n_ids == 0 || (*ids)[0] != bos)) {
        int32_t *v = dp_malloc((size_t)(*n_ids + 1) * sizeof(int32_t), "tokens");
        v[0] = bos;
        memcpy(v + 1, *ids, (size_t)*n_ids * sizeof(int32_t));
        dp_free(*ids);
        *ids = v;
        (*n_ids)++;
    }
    return DP_OK;
}

/* One Alpaca record, LLM-Pruner's generate_and_tokenize_prompt. */
static int alpaca_record(builder *b, const dp_tokenizer *tok, const cJSON *o, const dp_data_opts *opt, int64_t rec,
                         dp_err *err) {
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(o, "instruction");
    const cJSON *inp = cJSON_GetObjectItemCaseSensitive(o, "input");
    const cJSON *out = cJSON_GetObjectItemCaseSensitive(o, "output");
    if (!cJSON_IsObject(o) || !cJSON_IsString(ins) || !cJSON_IsString(out) ||
        (inp && !cJSON_IsNull(inp) && !cJSON_IsString(inp)))
        return dp_err_set(
            err, DP_E_FORMAT,
            "record %lld: expected an object with string fields instruction and output (and optional input)",
            (long long)rec + 1);
    char *prompt = dp_alpaca_prompt(ins->valuestring, cJSON_IsString(inp) ? inp->valuestring : "");
    size_t pl = strlen(prompt), ol = strlen(out->valuestring);
    char *full = dp_malloc(pl + ol + 1, "prompt");
    memcpy(full, prompt, pl);
    memcpy(full + pl, out->valuestring, ol + 1);
    int32_t *ids = NULL, *pids = NULL;
    int64_t n = 0, np = 0;
    int rc = encode(tok, full, pl + ol, opt->add_bos, &ids, &n, err);
    if (!rc && !opt->train_on_inputs) rc = encode(tok, prompt, pl, opt->add_bos, &pids, &np, err);
    if (!rc) {
        int64_t cut = opt->cutoff;
        if (n > cut) n = cut;
        int32_t eos = dp_tokenizer_eos_id(tok);
        int32_t *v = dp_malloc((size_t)(n + 1) * sizeof(int32_t), "tokens");
        memcpy(v, ids, (size_t)n * sizeof(int32_t));
        if (opt->add_eos && eos >= 0 && (n == 0 || v[n - 1] != eos) && n < cut) v[n++] = eos;
        int32_t *lab = dp_malloc((size_t)(n + 1) * sizeof(int32_t), "labels");
        memcpy(lab, v, (size_t)n * sizeof(int32_t));
        if (!opt->train_on_inputs) {
            if (np > cut) np = cut;
            for (int64_t i = 0; i < np && i < n; i++) lab[i] = -1;
        }
        if (n >= 2) push_example(b, v, lab, n);
        dp_free(v);
        dp_free(lab);
    }
    if (rc) dp_err_prefix(err, "record %lld", (long long)rec + 1);
    dp_free(ids);
    dp_free(pids);
    dp_free(full);
    dp_free(prompt);
    return rc;
}

static int load_alpaca(builder *b, const dp_tokenizer *tok, const char *text, size_t n_bytes, const dp_data_opts *o,
                       dp_err *err) {
    size_t i = 0;
    while (i < n_bytes && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) i++;
    if (i < n_bytes && text[i] == '[') { /* one JSON array */
        cJSON *arr = cJSON_ParseWithLength(text, n_bytes);
        if (!cJSON_IsArray(arr)) {
            cJSON_Delete(arr);
            return dp_err_set(err, DP_E_FORMAT, "not a valid JSON array of Alpaca records");
        }
        int rc = DP_OK;
        int64_t rec = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, arr) {
            rc = alpaca_record(b, tok, it, o, rec++, err);
            if (rc) break;
        }
        cJSON_Delete(arr);
        return rc;
    }
    int64_t rec = 0; /* JSONL: one object per non-blank line */
    size_t pos = 0;
    while (pos < n_bytes) {
        const char *nl = memchr(text + pos, '\n', n_bytes - pos);
        size_t len = nl ? (size_t)(nl - (text + pos)) : n_bytes - pos;
        size_t k = 0;
        while (k < len && (text[pos + k] == ' ' || text[pos + k] == '\r' || text[pos + k] == '\t')) k++;
        if (k < len) {
            cJSON *obj = cJSON_ParseWithLength(text + pos, len);
            if (!obj) return dp_err_set(err, DP_E_FORMAT, "line %lld: not a JSON object", (long long)rec + 1);
            int rc = alpaca_record(b, tok, obj, o, rec, err);
            cJSON_Delete(obj);
            if (rc) {
                return rc;
            }
        }
        rec++;
        pos += len + 1;
    }
    return DP_OK;
}

/* Plain text (or JSONL text fields): every document tokenized (BOS per the
 * policy, EOS after each when add_eos), concatenated, cut into windows. */
static int load_text(builder *b, const dp_tokenizer *tok, const char *text, size_t n_bytes, const dp_data_opts *o,
                     int jsonl, dp_err *err) {
    int32_t *all = NULL;
    int64_t n_all = 0, cap = 0;
    int32_t eos = dp_tokenizer_eos_id(tok);
    int rc = DP_OK;
    size_t pos = 0;
    int64_t line = 0;
    while (pos < n_bytes && !rc) {
        const char *doc = text + pos;
        size_t len = n_bytes - pos;
        if (jsonl) {
            const char *nl = memchr(text + pos, '\n', n_bytes - pos);
            len = nl ? (size_t)(nl - doc) : n_bytes - pos;
        }
        pos += len + 1;
        line++;
        char *owned = NULL;
        if (jsonl) {
            size_t k = 0;
            while (k < len && (doc[k] == ' ' || doc[k] == '\r' || doc[k] == '\t')) k++;
            if (k == len) continue;
            cJSON *obj = cJSON_ParseWithLength(doc, len);
            const cJSON *f = obj ? cJSON_GetObjectItemCaseSensitive(obj, o->field ? o->field : "text") : NULL;
            if (!cJSON_IsString(f)) {
                cJSON_Delete(obj);
                rc = dp_err_set(err, DP_E_FORMAT, "line %lld: %s", (long long)line,
                                obj ? "the text field is missing or not a string" : "not a JSON object");
                break;
            }
            owned = dp_strdup(f->valuestring, "text");
            cJSON_Delete(obj);
            doc = owned;
            len = strlen(owned);
        }
        int32_t *ids = NULL;
        int64_t n = 0;
        rc = encode(tok, doc, len, o->add_bos, &ids, &n, err);
        dp_free(owned);
        if (rc) break;
        if (n_all + n + 1 > cap) {
            while (n_all + n + 1 > cap) cap = cap ? cap * 2 : 65536;
            all = dp_realloc(all, (size_t)cap * sizeof(int32_t), "tokens");
        }
        memcpy(all + n_all, ids, (size_t)n * sizeof(int32_t));
        n_all += n;
        if (o->add_eos && eos >= 0) all[n_all++] = eos;
        dp_free(ids);
    }
    for (int64_t s = 0; !rc && s + o->cutoff <= n_all; s += o->cutoff) push_example(b, all + s, all + s, o->cutoff);
    dp_free(all);
    return rc;
}

int dp_data_load(const dp_tokenizer *tok, const char *format, const char *text, size_t n_bytes, const dp_data_opts *o,
                 dp_train_data *d, dp_err *err) {
    memset(d, 0, sizeof *d);
    if (o->cutoff < 2) return dp_err_set(err, DP_E_CONFIG, "cutoff length must be at least 2");
    builder b = {d, 0, 0};
    d->off = dp_calloc(1024, sizeof(int64_t), "data");
    b.cap_ex = 1024;
    int rc;
    if (!strcmp(format, "alpaca"))
        rc = load_alpaca(&b, tok, text, n_bytes, o, err);
    else if (!strcmp(format, "text"))
        rc = load_text(&b, tok, text, n_bytes, o, 0, err);
    else if (!strcmp(format, "jsonl-text"))
        rc = load_text(&b, tok, text, n_bytes, o, 1, err);
    else
        rc = dp_err_set(err, DP_E_CONFIG, "data format '%s': expected alpaca, text or jsonl-text", format);
    if (!rc && d->n == 0) rc = dp_err_set(err, DP_E_FORMAT, "no training examples (need at least 2 tokens each)");
    if (rc) {
        dp_data_free(d);
        return rc;
    }
    uint64_t h = dp_hash_bytes(d->off, (size_t)(d->n + 1) * sizeof(int64_t), 7);
    h = dp_hash_bytes(d->tokens, (size_t)d->off[d->n] * sizeof(int32_t), h);
    d->hash = dp_hash_bytes(d->labels, (size_t)d->off[d->n] * sizeof(int32_t), h);
    return DP_OK;
}

void dp_data_free(dp_train_data *d) {
    dp_free(d->off);
    dp_free(d->tokens);
    dp_free(d->labels);
    memset(d, 0, sizeof *d);
}

void dp_permutation(int64_t *perm, int64_t n, uint64_t seed) {
    uint64_t st = seed;
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        int64_t j = (int64_t)(dp_splitmix64(&st) % (uint64_t)(i + 1));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void dp_data_split(int64_t n, int64_t n_val, uint64_t seed, int64_t **val, int64_t **train) {
    if (n_val > n) n_val = n;
    if (n_val < 0) n_val = 0;
    int64_t *perm = dp_malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t), "split");
    dp_permutation(perm, n, seed ^ 0x5eed5eedull);
    *val = dp_malloc((size_t)(n_val > 0 ? n_val : 1) * sizeof(int64_t), "split");
    *train = dp_malloc((size_t)(n - n_val > 0 ? n - n_val : 1) * sizeof(int64_t), "split");
    memcpy(*val, perm, (size_t)n_val * sizeof(int64_t));
    memcpy(*train, perm + n_val, (size_t)(n - n_val) * sizeof(int64_t));
    dp_free(perm);
}
