/* A LLaMA GGUF as a Hugging Face model directory: the metadata as config.json, every
 * tensor dequantized (ggml's reference formulas) under its HF name with llama.cpp's
 * Q/K row permutation undone, and the tokenizer rebuilt from the GGUF metadata as
 * transformers' GGUF loader builds it (tokenizer.json + tokenizer_config.json). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "depthprune/export.h"
#include "depthprune/gguf.h"
#include "depthprune/hfconfig.h"
#include "depthprune/strmap.h"
#include "depthprune/tensor.h"

/* GGUF tensor name suffix -> HF name suffix, for block tensors */
static const char *const k_blk_map[][2] = {
    {"attn_norm.weight", "input_layernorm.weight"},    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},      {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"}, {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},       {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

static int hf_name(const char *g, char *out, size_t n) {
    if (!strcmp(g, "token_embd.weight")) return snprintf(out, n, "model.embed_tokens.weight"), 1;
    if (!strcmp(g, "output_norm.weight")) return snprintf(out, n, "model.norm.weight"), 1;
    if (!strcmp(g, "output.weight")) return snprintf(out, n, "lm_head.weight"), 1;
    int l, k;
    if (sscanf(g, "blk.%d.%n", &l, &k) == 1 && l >= 0)
        for (size_t i = 0; i < sizeof k_blk_map / sizeof *k_blk_map; i++)
            if (!strcmp(g + k, k_blk_map[i][0])) return snprintf(out, n, "model.layers.%d.%s", l, k_blk_map[i][1]), 1;
    return 0;
}

/* llama.cpp's convert permutes the rows of q and k within each head (HF's
 * rotate-half pairs (i, i + HD/2) become adjacent rows 2i, 2i + 1):
 * gguf[h*HD + 2i + j] = hf[h*HD + j*HD/2 + i]. to_gguf applies it, else undoes it. */
static void permute_rows(float *w, int64_t rows, int64_t cols, int64_t n_head, int to_gguf) {
    int64_t hd = rows / n_head;
    float *tmp = dp_malloc((size_t)(rows * cols) * sizeof(float), "gguf");
    for (int64_t h = 0; h < n_head; h++)
        for (int64_t i = 0; i < hd / 2; i++)
            for (int j = 0; j < 2; j++) {
                int64_t g = h * hd + 2 * i + j, f = h * hd + j * (hd / 2) + i;
                memcpy(tmp + (to_gguf ? g : f) * cols, w + (to_gguf ? f : g) * cols, (size_t)cols * sizeof(float));
            }
    memcpy(w, tmp, (size_t)(rows * cols) * sizeof(float));
    dp_free(tmp);
}

/* GPT-2's byte-level alphabet: byte b -> code point */
/* Llama-3.1-style RoPE scaling ("llama3") travels in GGUF as a tensor,
 * rope_freqs.weight: one divisor per rotary pair, as llama.cpp's converter
 * computes it (convert_hf_to_gguf.py, LlamaModel.generate_extra_tensors):
 * 1 for short wavelengths, factor for long ones, 1 / ((1 - s) / factor + s)
 * in between, over fp32 base frequencies. */
static void rope_llama3_factors(int64_t hd, double theta, double factor, double lo, double hi, double old, double *r) {
    for (int64_t j = 0; j < hd / 2; j++) {
        float f = 1.0f / powf((float)theta, (float)(2 * j) / (float)hd);
        double wavelen = 2 * M_PI / f;
        if (wavelen < old / hi)
            r[j] = 1;
        else if (wavelen > old / lo)
            r[j] = factor;
        else {
            double smooth = (old / wavelen - lo) / (hi - lo);
            r[j] = 1 / ((1 - smooth) / factor + smooth);
        }
    }
}

/* The llama3 parameters behind stored divisors r. They are defined up to
 * one common scale of (original context, low, high), so low_freq_factor is
 * taken as 1 (Llama 3.1 and 3.2's value); the interpolated pairs (at least
 * two) fix the rest: 1/r = (1 - s)/factor + s with s linear in 1/wavelength.
 * The result must reproduce every stored divisor. */
static int rope_llama3_params(const dp_gguf *f, const float *r, int64_t hd, double theta, double *factor, double *hi,
                              double *old, dp_err *err) {
    int64_t half = hd / 2, n_mid = 0;
    double fac = 1, sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int64_t j = 0; j < half; j++) {
        if (!(r[j] >= 1 && isfinite(r[j])))
            return dp_err_set(err, DP_E_FORMAT, "%s: rope_freqs.weight[%lld] = %g (RoPE divisors are >= 1)", f->path,
                              (long long)j, (double)r[j]);
        fac = r[j] > fac ? r[j] : fac;
    }
    *factor = fac;
    if (fac == 1) return DP_OK; /* no scaling */
    for (int64_t j = 0; j < half; j++) {
        if (fabs(r[j] - 1) <= 1e-6 || fabs(r[j] - fac) <= 1e-6 * fac) continue;
        float fr = 1.0f / powf((float)theta, (float)(2 * j) / (float)hd);
        double x = fr / (2 * M_PI), y = (1 / r[j] - 1 / fac) / (1 - 1 / fac); /* y = s = a x + b */
        sx += x, sy += y, sxx += x * x, sxy += x * y, n_mid++;
    }
    double det = n_mid * sxx - sx * sx;
    if (n_mid < 2 || !(fabs(det) > 0))
        return dp_err_set(err, DP_E_UNSUPPORTED,
                          "%s: rope_freqs.weight has %lld interpolated pairs; the llama3 scaling parameters need 2",
                          f->path, (long long)n_mid);
    double a = (n_mid * sxy - sx * sy) / det, b = (sy - a * sx) / n_mid; /* s = (old x - 1) / (hi - 1) */
    *hi = 1 - 1 / b;
    *old = round(-a / b);
    *hi = round(*hi * 1e6) / 1e6;
    double *chk = dp_malloc((size_t)half * sizeof(double), "gguf"), worst = 0;
    rope_llama3_factors(hd, theta, fac, 1, *hi, *old, chk);
    for (int64_t j = 0; j < half; j++) worst = fmax(worst, fabs(chk[j] - r[j]) / r[j]);
    dp_free(chk);
    if (!(*hi > 1) || !(*old >= 1) || !(worst <= 1e-5))
        return dp_err_set(err, DP_E_UNSUPPORTED,
                          "%s: rope_freqs.weight is not llama3 RoPE scaling (best fit: factor %g, high_freq_factor %g, "
                          "original context %g, off by %.2g)",
                          f->path, fac, *hi, *old, worst);
    return DP_OK;
}

static uint32_t byte_char(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return (uint32_t)b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    return (uint32_t)(256 + n);
}

#include "depthprune/utf8.h"

/* A token as the vocabulary spells it: kept when every character is in the
 * byte-level alphabet, else its UTF-8 bytes spelled in that alphabet. */
static char *byte_level_spelling(const char *s, uint64_t n) {
    int in_alphabet = 1;
    for (uint64_t i = 0; i < n && in_alphabet;) {
        uint32_t cp;
        size_t k = dp_utf8_decode(s + i, (size_t)(n - i), &cp);
        int ok = 0;
        for (int b = 0; b < 256 && !ok; b++) ok = byte_char(b) == cp;
        in_alphabet = ok;
        i += k;
    }
    char *o = dp_malloc((size_t)n * 2 + 1, "gguf");
    size_t w = 0;
    if (in_alphabet) {
        memcpy(o, s, (size_t)n);
        w = (size_t)n;
    } else {
        for (uint64_t i = 0; i < n; i++) w += dp_utf8_encode(byte_char((unsigned char)s[i]), o + w);
    }
    o[w] = 0;
    return o;
}

/* ---- SentencePiece vocabularies ("llama"): merges recovered from the scores ---- */

typedef struct {
    int32_t l, r, ll, lr; /* ids and lengths in code points */
    float score;
    int64_t seq;
} spm_merge;

static int64_t cp_len(const char *s, uint64_t n) {
    int64_t k = 0;
    for (uint64_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

static int by_ids(const void *a, const void *b) {
    const spm_merge *x = a, *y = b;
    return x->l != y->l ? (x->l < y->l ? -1 : 1) : x->r != y->r ? (x->r < y->r ? -1 : 1) : 0;
}

/* best first: score, then longer left, then longer right, then as listed (a stable reverse sort) */
static int by_priority(const void *a, const void *b) {
    const spm_merge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->ll != y->ll) return x->ll > y->ll ? -1 : 1;
    if (x->lr != y->lr) return x->lr > y->lr ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* transformers' generate_merges(vocab, vocab_scores) (tokenization_utils_base.py), which its
 * GGUF loader applies to a SentencePiece vocabulary: every split of a token into two
 * tokens, the splits of one token ordered by (left id, right id), then all of them best
 * first by (score, left length, right length). */
static spm_merge *spm_merges(const char **tok, const uint64_t *tl, const float *score, uint64_t nt, int64_t *n_out) {
    dp_strmap map;
    dp_strmap_init(&map, (size_t)nt);
    for (uint64_t i = 0; i < nt; i++) dp_strmap_put(&map, tok[i], (size_t)tl[i], (int64_t)i);
    int64_t n = 0, cap = 1024;
    spm_merge *m = dp_malloc((size_t)cap * sizeof *m, "gguf");
    for (uint64_t i = 0; i < nt; i++) {
        int64_t first = 0;
        if (!dp_strmap_get(&map, tok[i], (size_t)tl[i], &first) || (uint64_t)first != i) continue; /* a repeat */
        int64_t start = n;
        for (uint64_t k = 1; k < tl[i]; k++) {
            if (((unsigned char)tok[i][k] & 0xC0) == 0x80) continue; /* inside a code point */
            int64_t a, b;
            if (!dp_strmap_get(&map, tok[i], (size_t)k, &a) ||
                !dp_strmap_get(&map, tok[i] + k, (size_t)(tl[i] - k), &b))
                continue;
            if (n == cap) m = dp_realloc(m, (size_t)(cap *= 2) * sizeof *m, "gguf");
            m[n++] = (spm_merge){.l = (int32_t)a,
                                 .r = (int32_t)b,
                                 .ll = (int32_t)cp_len(tok[i], k),
                                 .lr = (int32_t)cp_len(tok[i] + k, tl[i] - k),
                                 .score = score[i]};
        }
        qsort(m + start, (size_t)(n - start), sizeof *m, by_ids);
    }
    for (int64_t k = 0; k < n; k++) m[k].seq = k;
    qsort(m, (size_t)n, sizeof *m, by_priority);
    dp_strmap_free(&map);
    *n_out = n;
    return m;
}

/* tokenizer.json (+ tokenizer_config.json) as transformers builds them from a GGUF
 * (integrations/gguf: byte-level BPE for "gpt2", LlamaTokenizer with merges recovered from
 * the scores for "llama", then add_gguf_special_tokens). */
static int build_tokenizer(const dp_gguf *f, char **tok_json, char **tok_cfg, dp_err *err) {
    const char *model;
    uint64_t ml;
    int rc = dp_gguf_get_str(f, "tokenizer.ggml.model", &model, &ml, err);
    if (rc) return rc;
    int spm = ml == 5 && !memcmp(model, "llama", 5);
    if (!spm && (ml != 4 || memcmp(model, "gpt2", 4)))
        return dp_err_set(err, DP_E_UNSUPPORTED,
                          "%s: tokenizer.ggml.model '%.*s': byte-level BPE ('gpt2') and SentencePiece ('llama') GGUF "
                          "tokenizers are converted",
                          f->path, (int)ml, model);
    const char **tok = NULL, **mer = NULL;
    uint64_t *tl = NULL, *mlen = NULL, nt = 0, nm = 0;
    rc = dp_gguf_str_array(f, "tokenizer.ggml.tokens", &tok, &tl, &nt, err);
    if (!rc && !spm) rc = dp_gguf_str_array(f, "tokenizer.ggml.merges", &mer, &mlen, &nm, err);
    const dp_gguf_kv *tt = dp_gguf_find(f, "tokenizer.ggml.token_type");
    const dp_gguf_kv *sc = dp_gguf_find(f, "tokenizer.ggml.scores");
    if (!rc && tt && (tt->type != DP_GGUF_ARRAY || tt->elem_type != DP_GGUF_I32 || tt->n != nt))
        rc = dp_err_set(err, DP_E_FORMAT, "%s: tokenizer.ggml.token_type is not an i32 array of one entry per token",
                        f->path);
    if (!rc && spm && (!sc || sc->type != DP_GGUF_ARRAY || sc->elem_type != DP_GGUF_F32 || sc->n != nt))
        rc = dp_err_set(err, DP_E_FORMAT,
                        "%s: a SentencePiece ('llama') tokenizer needs tokenizer.ggml.scores, an f32 array of one "
                        "entry per token",
                        f->path);
    if (rc) {
        dp_free(tok), dp_free(tl), dp_free(mer), dp_free(mlen);
        return rc;
    }
    float *scores = NULL;
    if (spm) {
        scores = dp_malloc((size_t)(nt ? nt : 1) * sizeof(float), "gguf");
        memcpy(scores, sc->data, (size_t)nt * sizeof(float)); /* little-endian f32, as the file */
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    cJSON_AddNullToObject(root, "normalizer");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    if (spm) { /* transformers' LlamaTokenizer: Metaspace, prefix on the first segment, no split */
        cJSON_AddStringToObject(pre, "type", "Metaspace");
        cJSON_AddStringToObject(pre, "replacement", "\xe2\x96\x81");
        cJSON_AddStringToObject(pre, "prepend_scheme", "first");
        cJSON_AddBoolToObject(pre, "split", 0);
    } else {
        cJSON_AddStringToObject(pre, "type", "ByteLevel");
        cJSON_AddBoolToObject(pre, "add_prefix_space", 0);
        cJSON_AddBoolToObject(pre, "trim_offsets", 1);
        cJSON_AddBoolToObject(pre, "use_regex", 1);
    }
    int64_t add_bos = spm, bos = -1, eos = -1, unk = -1; /* a SentencePiece vocabulary adds BOS unless it says not */
    dp_gguf_get_int(f, "tokenizer.ggml.add_bos_token", &add_bos, 0, err);
    dp_gguf_get_int(f, "tokenizer.ggml.bos_token_id", &bos, 0, err);
    dp_gguf_get_int(f, "tokenizer.ggml.eos_token_id", &eos, 0, err);
    dp_gguf_get_int(f, "tokenizer.ggml.unknown_token_id", &unk, 0, err);
    if (bos >= (int64_t)nt) bos = -1;
    if (eos >= (int64_t)nt) eos = -1;
    if (unk >= (int64_t)nt) unk = -1;
    cJSON *post = cJSON_AddObjectToObject(root, "post_processor");
    cJSON_AddStringToObject(post, "type", "TemplateProcessing");
    cJSON *single = cJSON_AddArrayToObject(post, "single");
    char *bos_s = bos >= 0 ? dp_strndup(tok[bos], (size_t)tl[bos], "gguf") : NULL;
    if (add_bos && bos_s) {
        cJSON *sp = cJSON_CreateObject(), *st = cJSON_AddObjectToObject(sp, "SpecialToken");
        cJSON_AddStringToObject(st, "id", bos_s);
        cJSON_AddNumberToObject(st, "type_id", 0);
        cJSON_AddItemToArray(single, sp);
    }
    cJSON *sa = cJSON_CreateObject(), *sq = cJSON_AddObjectToObject(sa, "Sequence");
    cJSON_AddStringToObject(sq, "id", "A");
    cJSON_AddNumberToObject(sq, "type_id", 0);
    cJSON_AddItemToArray(single, sa);
    cJSON *specials = cJSON_AddObjectToObject(post, "special_tokens");
    if (add_bos && bos_s) {
        cJSON *e = cJSON_AddObjectToObject(specials, bos_s);
        cJSON_AddStringToObject(e, "id", bos_s);
        cJSON *ids = cJSON_AddArrayToObject(e, "ids");
        cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)bos));
        cJSON *tks = cJSON_AddArrayToObject(e, "tokens");
        cJSON_AddItemToArray(tks, cJSON_CreateString(bos_s));
    }
    cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
    if (spm) { /* "\u2581" -> " ", byte pieces -> bytes, fuse, strip the first space */
        cJSON_AddStringToObject(dec, "type", "Sequence");
        cJSON *ds = cJSON_AddArrayToObject(dec, "decoders"), *d;
        cJSON_AddItemToArray(ds, d = cJSON_CreateObject());
        cJSON_AddStringToObject(d, "type", "Replace");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(d, "pattern"), "String", "\xe2\x96\x81");
        cJSON_AddStringToObject(d, "content", " ");
        cJSON_AddItemToArray(ds, d = cJSON_CreateObject());
        cJSON_AddStringToObject(d, "type", "ByteFallback");
        cJSON_AddItemToArray(ds, d = cJSON_CreateObject());
        cJSON_AddStringToObject(d, "type", "Fuse");
        cJSON_AddItemToArray(ds, d = cJSON_CreateObject());
        cJSON_AddStringToObject(d, "type", "Strip");
        cJSON_AddStringToObject(d, "content", " ");
        cJSON_AddNumberToObject(d, "start", 1);
        cJSON_AddNumberToObject(d, "stop", 0);
    } else {
        cJSON_AddStringToObject(dec, "type", "ByteLevel");
        cJSON_AddBoolToObject(dec, "add_prefix_space", 1);
        cJSON_AddBoolToObject(dec, "trim_offsets", 1);
        cJSON_AddBoolToObject(dec, "use_regex", 1);
    }
    cJSON *m = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(m, "type", "BPE");
    cJSON_AddNullToObject(m, "dropout");
    char *unk_s = NULL; /* SentencePiece: LlamaTokenizer's "<unk>" when the vocabulary has it */
    for (uint64_t i = 0; spm && i < nt && !unk_s; i++)
        if (tl[i] == 5 && !memcmp(tok[i], "<unk>", 5)) unk_s = dp_strdup("<unk>", "gguf");
    if (unk_s)
        cJSON_AddStringToObject(m, "unk_token", unk_s);
    else
        cJSON_AddNullToObject(m, "unk_token");
    cJSON_AddNullToObject(m, "continuing_subword_prefix"); /* "" in transformers: the same */
    cJSON_AddNullToObject(m, "end_of_word_suffix");
    cJSON_AddBoolToObject(m, "fuse_unk", spm);
    cJSON_AddBoolToObject(m, "byte_fallback", spm);
    cJSON_AddBoolToObject(m, "ignore_merges", 0);
    cJSON *vocab = cJSON_AddObjectToObject(m, "vocab");
    for (uint64_t i = 0; i < nt; i++) {
        char *sp = spm ? dp_strndup(tok[i], (size_t)tl[i], "gguf") : byte_level_spelling(tok[i], tl[i]);
        if (!cJSON_GetObjectItemCaseSensitive(vocab, sp)) cJSON_AddNumberToObject(vocab, sp, (double)i);
        dp_free(sp);
        int32_t type = tt ? (int32_t)((uint32_t)tt->data[4 * i] | (uint32_t)tt->data[4 * i + 1] << 8 |
                                      (uint32_t)tt->data[4 * i + 2] << 16 | (uint32_t)tt->data[4 * i + 3] << 24)
                          : 1;
        /* 3 = control: special (if spelled in the byte alphabet); 4 = user-defined: added, not special */
        if (type == 3 || type == 4) {
            char *raw = dp_strndup(tok[i], (size_t)tl[i], "gguf"), *s2 = byte_level_spelling(tok[i], tl[i]);
            int spelled = spm || !strcmp(raw, s2);
            if (type == 4 || spelled) {
                cJSON *a = cJSON_CreateObject();
                cJSON_AddNumberToObject(a, "id", (double)i);
                cJSON_AddStringToObject(a, "content", raw);
                cJSON_AddBoolToObject(a, "single_word", 0);
                cJSON_AddBoolToObject(a, "lstrip", 0);
                cJSON_AddBoolToObject(a, "rstrip", 0);
                cJSON_AddBoolToObject(a, "normalized", 0);
                cJSON_AddBoolToObject(a, "special", type == 3);
                cJSON_AddItemToArray(added, a);
            }
            dp_free(raw);
            dp_free(s2);
        }
    }
    cJSON *merges = cJSON_AddArrayToObject(m, "merges");
    for (uint64_t i = 0; i < nm; i++) {
        char *s = dp_strndup(mer[i], (size_t)mlen[i], "gguf");
        cJSON_AddItemToArray(merges, cJSON_CreateString(s));
        dp_free(s);
    }
    if (spm) { /* ["left", "right"]: SentencePiece pieces may hold spaces */
        int64_t n_sm = 0;
        spm_merge *sm = spm_merges(tok, tl, scores, nt, &n_sm);
        for (int64_t k = 0; k < n_sm; k++) {
            cJSON *pair = cJSON_CreateArray();
            char *a = dp_strndup(tok[sm[k].l], (size_t)tl[sm[k].l], "gguf"),
                 *b = dp_strndup(tok[sm[k].r], (size_t)tl[sm[k].r], "gguf");
            cJSON_AddItemToArray(pair, cJSON_CreateString(a));
            cJSON_AddItemToArray(pair, cJSON_CreateString(b));
            cJSON_AddItemToArray(merges, pair);
            dp_free(a);
            dp_free(b);
        }
        dp_free(sm);
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    *tok_json = dp_strdup(text, "gguf");
    free(text);
    cJSON *c = cJSON_CreateObject();
    cJSON_AddBoolToObject(c, "add_bos_token", add_bos != 0);
    cJSON_AddBoolToObject(c, "add_eos_token", 0);
    if (bos_s) cJSON_AddStringToObject(c, "bos_token", bos_s);
    if (eos >= 0) {
        char *s = dp_strndup(tok[eos], (size_t)tl[eos], "gguf");
        cJSON_AddStringToObject(c, "eos_token", s);
        dp_free(s);
    }
    if (unk >= 0) {
        char *s = dp_strndup(tok[unk], (size_t)tl[unk], "gguf");
        cJSON_AddStringToObject(c, "unk_token", s);
        dp_free(s);
    }
    cJSON_AddBoolToObject(c, "clean_up_tokenization_spaces", 0);
    cJSON_AddStringToObject(c, "tokenizer_class", spm ? "LlamaTokenizer" : "PreTrainedTokenizerFast");
    text = cJSON_Print(c);
    cJSON_Delete(c);
    *tok_cfg = dp_strdup(text, "gguf");
    free(text);
    dp_free(bos_s);
    dp_free(unk_s);
    dp_free(scores);
    dp_free(tok), dp_free(tl), dp_free(mer), dp_free(mlen);
    return DP_OK;
}

/* config.json text (HF LlamaForCausalLM) from the llama.* metadata */
static int build_config(const dp_gguf *f, int64_t vocab, int tied, const char *torch_dtype, char **out, dp_err *err) {
    const char *arch;
    uint64_t al;
    int rc = dp_gguf_get_str(f, "general.architecture", &arch, &al, err);
    if (!rc && (al != 5 || memcmp(arch, "llama", 5)))
        rc = dp_err_set(err, DP_E_UNSUPPORTED, "%s: general.architecture '%.*s' (only llama is converted)", f->path,
                        (int)al, arch);
    int64_t L = 0, C = 0, F = 0, NH = 0, NKV = 0, ctx = 2048, HD = 0, bos = -1, eos = -1;
    double eps = 1e-5, theta = 10000.0, factor = 0;
    if (!rc) rc = dp_gguf_get_int(f, "llama.block_count", &L, 1, err);
    if (!rc) rc = dp_gguf_get_int(f, "llama.embedding_length", &C, 1, err);
    if (!rc) rc = dp_gguf_get_int(f, "llama.feed_forward_length", &F, 1, err);
    if (!rc) rc = dp_gguf_get_int(f, "llama.attention.head_count", &NH, 1, err);
    NKV = NH;
    if (!rc) rc = dp_gguf_get_int(f, "llama.attention.head_count_kv", &NKV, 0, err);
    if (!rc) rc = dp_gguf_get_int(f, "llama.context_length", &ctx, 0, err);
    if (!rc) rc = dp_gguf_get_float(f, "llama.attention.layer_norm_rms_epsilon", &eps, 1, err);
    if (!rc) rc = dp_gguf_get_float(f, "llama.rope.freq_base", &theta, 0, err);
    if (!rc && NH > 0) HD = C / NH;
    if (!rc) rc = dp_gguf_get_int(f, "llama.attention.key_length", &HD, 0, err);
    if (!rc) rc = dp_gguf_get_int(f, "llama.rope.dimension_count", &HD, 0, err);
    if (!rc) dp_gguf_get_int(f, "tokenizer.ggml.bos_token_id", &bos, 0, err);
    if (!rc) dp_gguf_get_int(f, "tokenizer.ggml.eos_token_id", &eos, 0, err);
    const dp_gguf_kv *st = dp_gguf_find(f, "llama.rope.scaling.type");
    if (!rc && st) {
        const char *s;
        uint64_t sl;
        rc = dp_gguf_get_str(f, "llama.rope.scaling.type", &s, &sl, err);
        if (!rc && sl == 6 && !memcmp(s, "linear", 6))
            rc = dp_gguf_get_float(f, "llama.rope.scaling.factor", &factor, 1, err);
        else if (!rc && !(sl == 4 && !memcmp(s, "none", 4)))
            rc = dp_err_set(err, DP_E_UNSUPPORTED, "%s: llama.rope.scaling.type '%.*s' (none and linear are converted)",
                            f->path, (int)sl, s);
    }
    const dp_gguf_tensor *rf = rc ? NULL : dp_gguf_find_tensor(f, "rope_freqs.weight");
    double l3_factor = 1, l3_hi = 0, l3_old = 0;
    if (rf && factor > 0)
        rc = dp_err_set(err, DP_E_FORMAT, "%s: both linear RoPE scaling and rope_freqs.weight", f->path);
    else if (rf && (rf->n_dims != 1 || rf->ne[0] != HD / 2 || HD % 2))
        rc = dp_err_set(err, DP_E_FORMAT, "%s: rope_freqs.weight has %lld values, head_dim %lld needs %lld", f->path,
                        (long long)rf->n_elems, (long long)HD, (long long)(HD / 2));
    if (!rc && rf) {
        float *r = dp_malloc((size_t)rf->n_elems * sizeof(float), "gguf");
        dp_ggml_dequantize(rf->type, rf->data, r, rf->n_elems);
        rc = rope_llama3_params(f, r, HD, theta, &l3_factor, &l3_hi, &l3_old, err);
        dp_free(r);
    }
    if (rc) return rc;
    cJSON *c = cJSON_CreateObject();
    cJSON *a = cJSON_AddArrayToObject(c, "architectures");
    cJSON_AddItemToArray(a, cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddStringToObject(c, "model_type", "llama");
    cJSON_AddNumberToObject(c, "hidden_size", (double)C);
    cJSON_AddNumberToObject(c, "intermediate_size", (double)F);
    cJSON_AddNumberToObject(c, "num_hidden_layers", (double)L);
    cJSON_AddNumberToObject(c, "num_attention_heads", (double)NH);
    cJSON_AddNumberToObject(c, "num_key_value_heads", (double)NKV);
    cJSON_AddNumberToObject(c, "head_dim", (double)HD);
    cJSON_AddNumberToObject(c, "max_position_embeddings", (double)ctx);
    cJSON_AddNumberToObject(c, "rms_norm_eps", eps);
    cJSON_AddNumberToObject(c, "rope_theta", theta);
    if (factor > 0) {
        cJSON *rs = cJSON_AddObjectToObject(c, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", "linear");
        cJSON_AddNumberToObject(rs, "factor", factor);
    } else if (l3_factor > 1) {
        cJSON *rs = cJSON_AddObjectToObject(c, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type", "llama3");
        cJSON_AddNumberToObject(rs, "factor", l3_factor);
        cJSON_AddNumberToObject(rs, "low_freq_factor", 1.0);
        cJSON_AddNumberToObject(rs, "high_freq_factor", l3_hi);
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings", l3_old);
    }
    cJSON_AddNumberToObject(c, "vocab_size", (double)vocab);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", tied);
    if (bos >= 0) cJSON_AddNumberToObject(c, "bos_token_id", (double)bos);
    if (eos >= 0) cJSON_AddNumberToObject(c, "eos_token_id", (double)eos);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddBoolToObject(c, "attention_bias", 0);
    cJSON_AddBoolToObject(c, "mlp_bias", 0);
    cJSON_AddStringToObject(c, "torch_dtype", torch_dtype);
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    *out = dp_strdup(text, "gguf");
    free(text);
    return DP_OK;
}

typedef struct {
    const char *tok_json, *tok_cfg;
} tok_files;

static int write_tokenizer(const char *dir, void *ctx, dp_err *err) {
    const tok_files *t = ctx;
    char *p = dp_path_join(dir, "tokenizer.json");
    int rc = dp_write_file_atomic(p, t->tok_json, strlen(t->tok_json), err);
    dp_free(p);
    p = dp_path_join(dir, "tokenizer_config.json");
    if (!rc) rc = dp_write_file_atomic(p, t->tok_cfg, strlen(t->tok_cfg), err);
    dp_free(p);
    return rc;
}

int dp_gguf_export_hf(const char *gguf_path, const char *out_dir, int dtype, uint64_t max_shard_bytes, dp_err *err) {
    dp_gguf f;
    int rc = dp_gguf_open(gguf_path, &f, err);
    if (rc) return rc;
    if (dtype < 0) dtype = DP_DTYPE_F32;
    const dp_gguf_tensor *emb = dp_gguf_find_tensor(&f, "token_embd.weight");
    if (!emb || emb->n_dims != 2) rc = dp_err_set(err, DP_E_FORMAT, "%s: no 2-D token_embd.weight", gguf_path);
    int64_t NH = 0, NKV = 0;
    if (!rc) rc = dp_gguf_get_int(&f, "llama.attention.head_count", &NH, 1, err);
    NKV = NH;
    if (!rc) rc = dp_gguf_get_int(&f, "llama.attention.head_count_kv", &NKV, 0, err);
    int tied = dp_gguf_find_tensor(&f, "output.weight") == NULL;
    char *cfg_text = NULL, *tok_json = NULL, *tok_cfg = NULL;
    if (!rc)
        rc = build_config(&f, emb->ne[1], tied,
                          dtype == DP_DTYPE_BF16  ? "bfloat16"
                          : dtype == DP_DTYPE_F16 ? "float16"
                                                  : "float32",
                          &cfg_text, err);
    if (!rc) rc = build_tokenizer(&f, &tok_json, &tok_cfg, err);
    dp_llama_config cfg;
    memset(&cfg, 0, sizeof cfg);
    int have_cfg = 0;
    if (!rc) {
        rc = dp_llama_config_parse(cfg_text, strlen(cfg_text), gguf_path, &cfg, err);
        have_cfg = rc == DP_OK;
    }
    dp_st_entry *e = dp_calloc((size_t)(f.n_tensors ? f.n_tensors : 1), sizeof *e, "gguf");
    char **names = dp_calloc((size_t)(f.n_tensors ? f.n_tensors : 1), sizeof *names, "gguf");
    int n = 0;
    for (int64_t i = 0; i < f.n_tensors && !rc; i++) {
        const dp_gguf_tensor *t = &f.tensors[i];
        char name[160];
        if (!strcmp(t->name, "rope_freqs.weight")) continue; /* in config.json's rope_scaling */
        if (!hf_name(t->name, name, sizeof name)) {
            rc = dp_err_set(err, DP_E_UNSUPPORTED, "%s: tensor '%s' has no LLaMA counterpart", gguf_path, t->name);
            break;
        }
        float *w = dp_malloc((size_t)t->n_elems * sizeof(float), "gguf");
        dp_ggml_dequantize(t->type, t->data, w, t->n_elems);
        int64_t rows = t->n_dims >= 2 ? t->ne[1] : t->ne[0], cols = t->n_dims >= 2 ? t->ne[0] : 0;
        if (strstr(name, "self_attn.q_proj")) permute_rows(w, rows, cols, NH, 0);
        if (strstr(name, "self_attn.k_proj")) permute_rows(w, rows, cols, NKV, 0);
        names[n] = dp_strdup(name, "gguf");
        e[n].name = names[n];
        e[n].dtype = DP_DTYPE_F32;
        e[n].ndim = t->n_dims >= 2 ? 2 : 1;
        e[n].shape[0] = rows;
        e[n].shape[1] = cols;
        e[n].data = w;
        n++;
    }
    if (!rc) {
        tok_files tf = {tok_json, tok_cfg};
        cJSON *pj = cJSON_CreateObject();
        cJSON_AddStringToObject(pj, "converted_from_gguf", gguf_path);
        char *pt = cJSON_PrintUnformatted(pj);
        cJSON_Delete(pj);
        char *prov = dp_strdup(pt, "gguf");
        free(pt);
        dp_export_opts eo = {.keep = NULL,
                             .dtype = dtype,
                             .max_shard_bytes = max_shard_bytes,
                             .provenance = prov,
                             .mem = e,
                             .n_mem = n,
                             .finish = write_tokenizer,
                             .finish_ctx = &tf};
        rc = dp_export_model(gguf_path, &cfg, NULL, out_dir, &eo, err);
        dp_free(prov);
    }
    for (int i = 0; i < n; i++) {
        dp_free((void *)e[i].data);
        dp_free(names[i]);
    }
    dp_free(e);
    dp_free(names);
    if (have_cfg) dp_llama_config_free(&cfg);
    dp_free(cfg_text);
    dp_free(tok_json);
    dp_free(tok_cfg);
    dp_gguf_close(&f);
    return rc;
}

/* ---------------- writing GGUF ---------------- */

typedef struct {
    FILE *f;
    uint64_t n; /* bytes written */
    int bad;
} gw;

static void w_bytes(gw *w, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, w->f) != n) w->bad = 1;
    w->n += n;
}
static void w_u32(gw *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    w_bytes(w, b, 4);
}
static void w_u64(gw *w, uint64_t v) {
    w_u32(w, (uint32_t)v);
    w_u32(w, (uint32_t)(v >> 32));
}
static void w_str(gw *w, const char *s) {
    w_u64(w, strlen(s));
    w_bytes(w, s, strlen(s));
}
static void kv_str(gw *w, const char *k, const char *v) {
    w_str(w, k);
    w_u32(w, DP_GGUF_STRING);
    w_str(w, v);
}
static void kv_u32(gw *w, const char *k, uint32_t v) {
    w_str(w, k);
    w_u32(w, DP_GGUF_U32);
    w_u32(w, v);
}
static void kv_f32(gw *w, const char *k, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    w_str(w, k);
    w_u32(w, DP_GGUF_F32);
    w_u32(w, u);
}
static void kv_bool(gw *w, const char *k, int v) {
    w_str(w, k);
    w_u32(w, DP_GGUF_BOOL);
    uint8_t b = (uint8_t)(v != 0);
    w_bytes(w, &b, 1);
}

/* ggml's quantize_row_q8_0_ref */
static void quantize_q8_0(const float *x, uint8_t *y, int64_t n) {
    for (int64_t i = 0; i < n / 32; i++, y += 34) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            const float v = x[i * 32 + j];
            amax = amax > fabsf(v) ? amax : fabsf(v);
        }
        const float d = amax / ((1 << 7) - 1), id = d ? 1.0f / d : 0.0f;
        uint16_t h = dp_f32_to_f16(d);
        y[0] = (uint8_t)h, y[1] = (uint8_t)(h >> 8);
        for (int j = 0; j < 32; ++j) y[2 + j] = (uint8_t)(int8_t)roundf(x[i * 32 + j] * id);
    }
}

/* HF name -> GGUF name (inverse of hf_name) */
static int gguf_name(const char *hf, char *out, size_t n) {
    if (!strcmp(hf, "rope_freqs.weight")) return snprintf(out, n, "rope_freqs.weight"), 1;
    if (!strcmp(hf, "model.embed_tokens.weight")) return snprintf(out, n, "token_embd.weight"), 1;
    if (!strcmp(hf, "model.norm.weight")) return snprintf(out, n, "output_norm.weight"), 1;
    if (!strcmp(hf, "lm_head.weight")) return snprintf(out, n, "output.weight"), 1;
    int l, k;
    if (sscanf(hf, "model.layers.%d.%n", &l, &k) == 1)
        for (size_t i = 0; i < sizeof k_blk_map / sizeof *k_blk_map; i++)
            if (!strcmp(hf + k, k_blk_map[i][1])) return snprintf(out, n, "blk.%d.%s", l, k_blk_map[i][0]), 1;
    return 0;
}

/* A SentencePiece-style BPE vocabulary as llama.cpp's "llama" model: a token's score is
 * minus the rank of the first merge that makes it, so recovering merges from the scores
 * best first (what llama.cpp's and transformers' readers do) gives back the merge order;
 * tokens no merge makes score -1e9 (single characters have no split and never merge into
 * anything by score). Byte pieces <0xXX> are BYTE tokens (6), as in gguf's LlamaHfVocab. */
static int spm_scores(const cJSON *model, const char **tok, int32_t *ttype, int64_t V, float **score_out,
                      int64_t *unk_id, dp_err *err) {
    dp_strmap map;
    dp_strmap_init(&map, (size_t)V);
    for (int64_t i = 0; i < V; i++) dp_strmap_put(&map, tok[i], strlen(tok[i]), i);
    float *score = dp_malloc((size_t)V * sizeof(float), "gguf");
    for (int64_t i = 0; i < V; i++) {
        score[i] = -1e9f;
        unsigned hx;
        char tail;
        if (ttype[i] == 1 && strlen(tok[i]) == 6 && sscanf(tok[i], "<0x%2X%c", &hx, &tail) == 2 && tail == '>')
            ttype[i] = 6;
    }
    const cJSON *m;
    int64_t rank = 0;
    char buf[1024];
    int rc = DP_OK;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(model, "merges")) {
        const char *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;
        if (cJSON_IsString(m)) { /* "a b" */
            const char *sp = strchr(m->valuestring, ' ');
            if (sp) a = m->valuestring, la = (size_t)(sp - a), b = sp + 1, lb = strlen(b);
        } else if (cJSON_IsString(cJSON_GetArrayItem(m, 0)) && cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
            a = cJSON_GetArrayItem(m, 0)->valuestring, b = cJSON_GetArrayItem(m, 1)->valuestring;
            la = strlen(a), lb = strlen(b);
        }
        if (!a || la + lb >= sizeof buf) {
            rc = dp_err_set(err, DP_E_FORMAT, "tokenizer.json: merge %lld is not a pair of tokens", (long long)rank);
            break;
        }
        memcpy(buf, a, la);
        memcpy(buf + la, b, lb);
        int64_t id;
        if (dp_strmap_get(&map, buf, la + lb, &id) && score[id] == -1e9f) score[id] = (float)-rank;
        rank++;
    }
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    int64_t id;
    if (cJSON_IsString(u) && dp_strmap_get(&map, u->valuestring, strlen(u->valuestring), &id)) *unk_id = id;
    dp_strmap_free(&map);
    if (rc) dp_free(score), score = NULL;
    *score_out = score;
    return rc;
}

int dp_gguf_write_llama(const char *path, const dp_llama_config *c, const char *tokenizer_json, size_t tok_len,
                        const char *const *names, const float *const *data, const int64_t (*shape)[2], int n, int type,
                        const char *model_name, dp_err *err) {
    if (type != DP_GGML_F32 && type != DP_GGML_F16 && type != DP_GGML_BF16 && type != DP_GGML_Q8_0)
        return dp_err_set(err, DP_E_USAGE, "GGUF output type must be F32, F16, BF16 or Q8_0");
    if (c->width_varies)
        return dp_err_set(err, DP_E_UNSUPPORTED, "a width-pruned model (per-block sizes) cannot be written as GGUF");
    /* llama3 RoPE scaling: one more tensor, rope_freqs.weight, as llama.cpp's converter writes it */
    const char **names2 = NULL;
    const float **data2 = NULL;
    int64_t(*shape2)[2] = NULL;
    float *freqs = NULL;
    if (c->rope_type == DP_ROPE_LLAMA3) {
        int64_t half = c->head_dim / 2;
        double *r = dp_malloc((size_t)half * sizeof(double), "gguf");
        freqs = dp_malloc((size_t)half * sizeof(float), "gguf");
        rope_llama3_factors(c->head_dim, c->rope_theta, c->rope_factor, c->rope_low_freq_factor,
                            c->rope_high_freq_factor, (double)c->rope_original_max_position_embeddings, r);
        for (int64_t j = 0; j < half; j++) freqs[j] = (float)r[j];
        dp_free(r);
        names2 = dp_malloc((size_t)(n + 1) * sizeof *names2, "gguf");
        data2 = dp_malloc((size_t)(n + 1) * sizeof *data2, "gguf");
        shape2 = dp_malloc((size_t)(n + 1) * sizeof *shape2, "gguf");
        memcpy(names2, names, (size_t)n * sizeof *names2);
        memcpy(data2, data, (size_t)n * sizeof *data2);
        memcpy(shape2, shape, (size_t)n * sizeof *shape2);
        names2[n] = "rope_freqs.weight";
        data2[n] = freqs;
        shape2[n][0] = half;
        shape2[n][1] = 0;
        names = names2, data = data2, shape = (const int64_t(*)[2])shape2, n++;
    }
    /* the tokenizer: byte-level BPE vocabularies are written as llama.cpp's "gpt2" model */
    cJSON *tj = cJSON_ParseWithLength(tokenizer_json, tok_len);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab"),
                *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(tj, "pre_tokenizer");
    char *pre_text = pre ? cJSON_PrintUnformatted(pre) : NULL;
    int byte_level = pre_text && strstr(pre_text, "\"ByteLevel\"") != NULL;
    free(pre_text);
    /* SentencePiece-style BPE (byte fallback, Llama 2): llama.cpp's "llama" model, which has
     * scores instead of merges */
    int spm = !byte_level && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    int rc = DP_OK;
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        rc = dp_err_set(err, DP_E_FORMAT, "tokenizer.json: no BPE model with vocab and merges");
    else if (!byte_level && !spm)
        rc = dp_err_set(err, DP_E_UNSUPPORTED,
                        "tokenizer.json is neither byte-level BPE nor SentencePiece-style BPE (byte_fallback): "
                        "no GGUF tokenizer model for it");
    int64_t V = c->vocab_size, unk_id = -1;
    const char **tok = NULL;
    int32_t *ttype = NULL;
    char **pads = NULL;
    float *score = NULL;
    if (!rc) {
        tok = dp_calloc((size_t)V, sizeof *tok, "gguf");
        ttype = dp_calloc((size_t)V, sizeof *ttype, "gguf");
        pads = dp_calloc((size_t)V, sizeof *pads, "gguf");
        const cJSON *e;
        cJSON_ArrayForEach(e, vocab) {
            int64_t id = cJSON_IsNumber(e) ? (int64_t)e->valuedouble : -1;
            if (id >= 0 && id < V) tok[id] = e->string, ttype[id] = 1;
        }
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(tj, "added_tokens")) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id"),
                        *ct = cJSON_GetObjectItemCaseSensitive(e, "content");
            if (cJSON_IsNumber(id) && cJSON_IsString(ct) && id->valuedouble >= 0 && id->valuedouble < (double)V) {
                int64_t i = (int64_t)id->valuedouble;
                tok[i] = ct->valuestring;
                ttype[i] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special")) ? 3 : 4;
            }
        }
        for (int64_t i = 0; i < V; i++)
            if (!tok[i]) { /* embedding rows beyond the tokenizer: llama.cpp's padding tokens */
                pads[i] = dp_malloc(32, "gguf");
                snprintf(pads[i], 32, "[PAD%lld]", (long long)i);
                tok[i] = pads[i];
                ttype[i] = 5;
            }
        if (spm) rc = spm_scores(model, tok, ttype, V, &score, &unk_id, err);
    }
    char *tmp = NULL;
    FILE *fp = NULL;
    if (!rc) {
        size_t pl = strlen(path) + 32;
        tmp = dp_malloc(pl, "gguf");
        snprintf(tmp, pl, "%s.tmp-%d", path, (int)getpid());
        fp = fopen(tmp, "wb");
        if (!fp) rc = dp_err_set(err, DP_E_IO, "%s: cannot create", tmp);
    }
    if (!rc) {
        gw w = {fp, 0, 0};
        int64_t n_merges = cJSON_GetArraySize(merges);
        w_bytes(&w, "GGUF", 4);
        w_u32(&w, 3);
        w_u64(&w, (uint64_t)n);
        int n_kv =
            22 + (c->rope_type == DP_ROPE_LINEAR ? 2 : 0) + (c->bos_token_id >= 0) + (c->n_eos > 0) + (unk_id >= 0);
        w_u64(&w, (uint64_t)n_kv);
        kv_str(&w, "general.architecture", "llama");
        kv_str(&w, "general.name", model_name ? model_name : "depthprune");
        kv_u32(&w, "general.alignment", 32);
        kv_u32(&w, "general.file_type",
               type == DP_GGML_F32    ? 0
               : type == DP_GGML_F16  ? 1
               : type == DP_GGML_Q8_0 ? 7
                                      : 32);
        kv_u32(&w, "general.quantization_version", 2);
        kv_u32(&w, "llama.block_count", (uint32_t)c->n_layers);
        kv_u32(&w, "llama.context_length", (uint32_t)c->max_position_embeddings);
        kv_u32(&w, "llama.embedding_length", (uint32_t)c->hidden_size);
        kv_u32(&w, "llama.feed_forward_length", (uint32_t)c->intermediate_size);
        kv_u32(&w, "llama.attention.head_count", (uint32_t)c->n_heads);
        kv_u32(&w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
        kv_u32(&w, "llama.attention.key_length", (uint32_t)c->head_dim);
        kv_u32(&w, "llama.attention.value_length", (uint32_t)c->head_dim);
        kv_u32(&w, "llama.rope.dimension_count", (uint32_t)c->head_dim);
        kv_f32(&w, "llama.rope.freq_base", (float)c->rope_theta);
        kv_f32(&w, "llama.attention.layer_norm_rms_epsilon", (float)c->rms_norm_eps);
        kv_u32(&w, "llama.vocab_size", (uint32_t)V);
        if (c->rope_type == DP_ROPE_LINEAR) {
            kv_str(&w, "llama.rope.scaling.type", "linear");
            kv_f32(&w, "llama.rope.scaling.factor", (float)c->rope_factor);
        }
        kv_str(&w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
        /* tokens, token types, merges */
        w_str(&w, "tokenizer.ggml.tokens");
        w_u32(&w, DP_GGUF_ARRAY);
        w_u32(&w, DP_GGUF_STRING);
        w_u64(&w, (uint64_t)V);
        for (int64_t i = 0; i < V; i++) w_str(&w, tok[i]);
        w_str(&w, "tokenizer.ggml.token_type");
        w_u32(&w, DP_GGUF_ARRAY);
        w_u32(&w, DP_GGUF_I32);
        w_u64(&w, (uint64_t)V);
        for (int64_t i = 0; i < V; i++) w_u32(&w, (uint32_t)ttype[i]);
        if (spm) {
            w_str(&w, "tokenizer.ggml.scores");
            w_u32(&w, DP_GGUF_ARRAY);
            w_u32(&w, DP_GGUF_F32);
            w_u64(&w, (uint64_t)V);
            w_bytes(&w, score, (size_t)V * sizeof(float)); /* little-endian hosts only, as the rest */
            if (unk_id >= 0) kv_u32(&w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk_id);
        } else {
            w_str(&w, "tokenizer.ggml.merges");
            w_u32(&w, DP_GGUF_ARRAY);
            w_u32(&w, DP_GGUF_STRING);
            w_u64(&w, (uint64_t)n_merges);
        }
        const cJSON *m, *bpe_merges = spm ? NULL : merges;
        cJSON_ArrayForEach(m, bpe_merges) {
            if (cJSON_IsString(m)) {
                w_str(&w, m->valuestring);
            } else { /* ["a", "b"] */
                const cJSON *a = cJSON_GetArrayItem(m, 0), *b = cJSON_GetArrayItem(m, 1);
                const char *as = cJSON_IsString(a) ? a->valuestring : "", *bs = cJSON_IsString(b) ? b->valuestring : "";
                w_u64(&w, strlen(as) + 1 + strlen(bs));
                w_bytes(&w, as, strlen(as));
                w_bytes(&w, " ", 1);
                w_bytes(&w, bs, strlen(bs));
            }
        }
        if (c->bos_token_id >= 0) kv_u32(&w, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos_token_id);
        if (c->n_eos > 0) kv_u32(&w, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_token_ids[0]);
        const cJSON *pp = cJSON_GetObjectItemCaseSensitive(tj, "post_processor");
        char *pp_text = pp ? cJSON_PrintUnformatted(pp) : NULL;
        kv_bool(&w, "tokenizer.ggml.add_bos_token", pp_text && strstr(pp_text, "SpecialToken") != NULL);
        free(pp_text);
        /* tensor infos, then the data section */
        int *ttypes = dp_calloc((size_t)n, sizeof *ttypes, "gguf");
        uint64_t off = 0;
        for (int i = 0; i < n && !rc; i++) {
            char gname[160];
            if (!gguf_name(names[i], gname, sizeof gname)) {
                rc = dp_err_set(err, DP_E_UNSUPPORTED, "tensor %s has no GGUF name", names[i]);
                break;
            }
            int two_d = shape[i][1] > 0;
            ttypes[i] = !two_d ? DP_GGML_F32 : (type == DP_GGML_Q8_0 && shape[i][1] % 32) ? DP_GGML_F16 : type;
            int64_t be, bb, ne = shape[i][0] * (two_d ? shape[i][1] : 1);
            dp_ggml_block(ttypes[i], &be, &bb);
            w_str(&w, gname);
            w_u32(&w, two_d ? 2 : 1);
            if (two_d) {
                w_u64(&w, (uint64_t)shape[i][1]);
                w_u64(&w, (uint64_t)shape[i][0]);
            } else {
                w_u64(&w, (uint64_t)shape[i][0]);
            }
            w_u32(&w, (uint32_t)ttypes[i]);
            w_u64(&w, off);
            off += (uint64_t)(ne / be * bb);
            off = (off + 31) / 32 * 32;
        }
        static const uint8_t zeros[32];
        if (w.n % 32) w_bytes(&w, zeros, 32 - w.n % 32);
        uint64_t data0 = w.n;
        for (int i = 0; i < n && !rc; i++) {
            int two_d = shape[i][1] > 0;
            int64_t rows = shape[i][0], cols = two_d ? shape[i][1] : 1, ne = rows * cols;
            float *x = dp_malloc((size_t)ne * sizeof(float), "gguf");
            memcpy(x, data[i], (size_t)ne * sizeof(float));
            if (strstr(names[i], "self_attn.q_proj")) permute_rows(x, rows, cols, c->n_heads, 1);
            if (strstr(names[i], "self_attn.k_proj")) permute_rows(x, rows, cols, c->n_kv_heads, 1);
            int64_t be, bb;
            dp_ggml_block(ttypes[i], &be, &bb);
            size_t nb = (size_t)(ne / be * bb);
            uint8_t *out = dp_malloc(nb + 1, "gguf");
            if (ttypes[i] == DP_GGML_F32)
                memcpy(out, x, nb);
            else if (ttypes[i] == DP_GGML_Q8_0)
                quantize_q8_0(x, out, ne);
            else
                for (int64_t k = 0; k < ne; k++) {
                    uint16_t h = ttypes[i] == DP_GGML_F16 ? dp_f32_to_f16(x[k]) : dp_f32_to_bf16(x[k]);
                    out[2 * k] = (uint8_t)h, out[2 * k + 1] = (uint8_t)(h >> 8);
                }
            w_bytes(&w, out, nb);
            if ((w.n - data0) % 32) w_bytes(&w, zeros, 32 - (w.n - data0) % 32);
            dp_free(out);
            dp_free(x);
        }
        dp_free(ttypes);
        if (!rc && (w.bad || fflush(fp) != 0 || fsync(fileno(fp)) != 0))
            rc = dp_err_set(err, DP_E_IO, "%s: write failed", tmp);
        if (fclose(fp) != 0 && !rc) rc = dp_err_set(err, DP_E_IO, "%s: write failed", tmp);
        if (!rc && rename(tmp, path) != 0) rc = dp_err_set(err, DP_E_IO, "%s: rename failed", path);
        if (rc) remove(tmp);
    }
    for (int64_t i = 0; pads && i < V; i++) dp_free(pads[i]);
    dp_free(pads);
    dp_free(tok);
    dp_free(ttype);
    dp_free(tmp);
    dp_free(names2);
    dp_free(data2);
    dp_free(shape2);
    dp_free(freqs);
    dp_free(score);
    cJSON_Delete(tj);
    return rc;
}
