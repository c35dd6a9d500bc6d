/* Zero-shot multiple choice (see mc.h): task converters reproducing the
 * lm-evaluation-harness prompts, harness tokenization, batched scoring. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/mc.h"
#include "depthprune/utf8.h"

static const char *const k_tasks[] = {"generic",    "boolq",    "piqa",          "hellaswag",
                                      "winogrande", "arc_easy", "arc_challenge", "openbookqa"};

int dp_mc_task_known(const char *task) {
    for (size_t i = 0; i < sizeof k_tasks / sizeof *k_tasks; i++)
        if (!strcmp(task, k_tasks[i])) return 1;
    return 0;
}

const char *dp_mc_task_metric(const char *task) {
    return !strcmp(task, "hellaswag") || !strcmp(task, "arc_challenge") || !strcmp(task, "openbookqa") ? "acc_norm"
                                                                                                       : "acc";
}

int dp_mc_task_has_acc_norm(const char *task) {
    return strcmp(task, "boolq") && strcmp(task, "winogrande");
}

static double utf8_chars(const char *s) {
    double n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static char *cat(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = dp_malloc(la + lb + 1, "mc");
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

char *dp_mc_hellaswag_pre(const char *in) {
    /* text.strip() (Python's: Unicode whitespace) */
    size_t a0, n;
    dp_py_strip(in, strlen(in), 1, 1, &a0, &n);
    in += a0;
    n -= a0;
    char *a = dp_malloc(2 * n + 1, "mc"), *b = dp_malloc(2 * n + 1, "mc");
    /* .replace(" [title]", ". ") */
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (n - i >= 8 && !memcmp(in + i, " [title]", 8)) {
            a[k++] = '.';
            a[k++] = ' ';
            i += 8;
        } else {
            a[k++] = in[i++];
        }
    }
    a[k] = 0;
    /* re.sub("\\[.*?\\]", "", text): each '[' up to the next ']' on the same line ('.' does not match '\n') */
    size_t j = 0;
    for (size_t i = 0; i < k;) {
        if (a[i] == '[') {
            const char *close = memchr(a + i, ']', k - i), *nl = memchr(a + i, '\n', k - i);
            if (close && (!nl || nl > close)) {
                i = (size_t)(close - a) + 1;
                continue;
            }
        }
        b[j++] = a[i++];
    }
    b[j] = 0;
    /* .replace("  ", " "): non-overlapping, left to right, one pass */
    k = 0;
    for (size_t i = 0; i < j;) {
        if (i + 1 < j && b[i] == ' ' && b[i + 1] == ' ') {
            a[k++] = ' ';
            i += 2;
        } else {
            a[k++] = b[i++];
        }
    }
    a[k] = 0;
    dp_free(b);
    return a;
}

static void doc_alloc(dp_mc_doc *d, int n) {
    d->n = n;
    d->context = dp_calloc((size_t)n, sizeof(char *), "mc");
    d->cont = dp_calloc((size_t)n, sizeof(char *), "mc");
    d->norm_len = dp_calloc((size_t)n, sizeof(double), "mc");
}

void dp_mc_doc_free(dp_mc_doc *d) {
    for (int i = 0; i < d->n; i++) {
        dp_free(d->context[i]);
        dp_free(d->cont[i]);
    }
    dp_free(d->context);
    dp_free(d->cont);
    dp_free(d->norm_len);
    memset(d, 0, sizeof *d);
}

static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* shared context, continuations " " + choice */
static int shared(dp_mc_doc *d, const char *context, const cJSON *choices, int label, dp_err *err) {
    int n = cJSON_GetArraySize(choices);
    if (n < 1) return dp_err_set(err, DP_E_FORMAT, "empty choices");
    if (label < 0 || label >= n) return dp_err_set(err, DP_E_RANGE, "label %d outside the %d choices", label, n);
    const cJSON *c;
    cJSON_ArrayForEach(c, choices) if (!cJSON_IsString(c)) return dp_err_set(err, DP_E_FORMAT,
                                                                             "a choice is not a string");
    doc_alloc(d, n);
    int i = 0;
    cJSON_ArrayForEach(c, choices) {
        d->context[i] = dp_strdup(context, "mc");
        d->cont[i] = cat(" ", c->valuestring);
        d->norm_len[i] = utf8_chars(c->valuestring);
        i++;
    }
    d->label = label;
    return DP_OK;
}

/* A label as an int; anything outside +-1e6 (where the cast would be
 * undefined, a fuzzer finding) becomes -1, which the range checks reject. */
static int small_int(double v) {
    return v >= -1e6 && v <= 1e6 ? (int)v : -1;
}

static int label_of(const cJSON *o, const char *key, int *label, dp_err *err) {
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsNumber(l))
        *label = small_int(l->valuedouble);
    else if (cJSON_IsString(l) && *l->valuestring)
        *label = small_int(strtod(l->valuestring, NULL));
    else if (cJSON_IsBool(l))
        *label = cJSON_IsTrue(l);
    else
        return dp_err_set(err, DP_E_FORMAT, "missing %s", key);
    return DP_OK;
}

int dp_mc_parse(const char *task, const char *json, size_t len, dp_mc_doc *d, dp_err *err) {
    memset(d, 0, sizeof *d);
    cJSON *o = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return dp_err_set(err, DP_E_FORMAT, "not a JSON object");
    }
    int rc = DP_OK, label = 0;
    if (!strcmp(task, "generic")) {
        const cJSON *ctxs = cJSON_GetObjectItemCaseSensitive(o, "contexts");
        if (cJSON_IsArray(ctxs)) { /* one context per option, a shared continuation */
            const char *cont = str(o, "continuation");
            int n = cJSON_GetArraySize(ctxs);
            if (!cont)
                rc = dp_err_set(err, DP_E_FORMAT, "contexts without a continuation");
            else if (n < 1)
                rc = dp_err_set(err, DP_E_FORMAT, "empty contexts");
            if (!rc) rc = label_of(o, "label", &label, err);
            if (!rc && (label < 0 || label >= n))
                rc = dp_err_set(err, DP_E_RANGE, "label %d outside the %d contexts", label, n);
            const cJSON *c;
            cJSON_ArrayForEach(c, ctxs) if (!rc && !cJSON_IsString(c)) rc =
                dp_err_set(err, DP_E_FORMAT, "a context is not a string");
            if (!rc) {
                doc_alloc(d, n);
                int i = 0;
                cJSON_ArrayForEach(c, ctxs) {
                    d->context[i] = dp_strdup(c->valuestring, "mc");
                    d->cont[i] = cat(" ", cont);
                    d->norm_len[i] = utf8_chars(cont);
                    i++;
                }
                d->label = label;
            }
        } else {
            const char *ctx = str(o, "context");
            const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "choices");
            if (!ctx || !cJSON_IsArray(ch))
                rc = dp_err_set(err, DP_E_FORMAT, "expected context (string) and choices (array)");
            if (!rc) rc = label_of(o, "label", &label, err);
            if (!rc) rc = shared(d, ctx, ch, label, err);
        }
    } else if (!strcmp(task, "boolq")) {
        const char *p = str(o, "passage"), *q = str(o, "question");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "answer"); /* google/boolq: true/false */
        if (!a) a = cJSON_GetObjectItemCaseSensitive(o, "label");       /* super_glue/boolq (the harness's): 0/1 */
        if (!p || !q || !(cJSON_IsBool(a) || cJSON_IsNumber(a)))
            rc = dp_err_set(err, DP_E_FORMAT, "boolq: expected passage, question, answer (or label)");
        if (!rc) {
            size_t n = strlen(p) + strlen(q) + 32;
            char *ctx = dp_malloc(n, "mc");
            snprintf(ctx, n, "%s\nQuestion: %s?\nAnswer:", p, q);
            cJSON *ch = cJSON_CreateArray();
            cJSON_AddItemToArray(ch, cJSON_CreateString("no"));
            cJSON_AddItemToArray(ch, cJSON_CreateString("yes"));
            rc = shared(d, ctx, ch, cJSON_IsBool(a) ? cJSON_IsTrue(a) : small_int(a->valuedouble), err);
            cJSON_Delete(ch);
            dp_free(ctx);
        }
    } else if (!strcmp(task, "piqa")) {
        const char *g = str(o, "goal"), *s1 = str(o, "sol1"), *s2 = str(o, "sol2");
        if (!g || !s1 || !s2) rc = dp_err_set(err, DP_E_FORMAT, "piqa: expected goal, sol1, sol2, label");
        if (!rc) rc = label_of(o, "label", &label, err);
        if (!rc) {
            size_t n = strlen(g) + 32;
            char *ctx = dp_malloc(n, "mc");
            snprintf(ctx, n, "Question: %s\nAnswer:", g);
            cJSON *ch = cJSON_CreateArray();
            cJSON_AddItemToArray(ch, cJSON_CreateString(s1));
            cJSON_AddItemToArray(ch, cJSON_CreateString(s2));
            rc = shared(d, ctx, ch, label, err);
            cJSON_Delete(ch);
            dp_free(ctx);
        }
    } else if (!strcmp(task, "hellaswag")) {
        const char *al = str(o, "activity_label"), *ca = str(o, "ctx_a"), *cb = str(o, "ctx_b");
        const cJSON *ends = cJSON_GetObjectItemCaseSensitive(o, "endings");
        if (!al || !ca || !cb || !cJSON_IsArray(ends))
            rc = dp_err_set(err, DP_E_FORMAT, "hellaswag: expected activity_label, ctx_a, ctx_b, endings, label");
        if (!rc) rc = label_of(o, "label", &label, err);
        if (!rc) {
            /* ctx = ctx_a + " " + ctx_b.capitalize() (Python's: full Unicode case mappings) */
            char *cbc = dp_py_capitalize(cb, strlen(cb), NULL);
            size_t n = strlen(al) + strlen(ca) + strlen(cbc) + 8;
            char *raw = dp_malloc(n, "mc");
            snprintf(raw, n, "%s: %s %s", al, ca, cbc);
            char *ctx = dp_mc_hellaswag_pre(raw);
            cJSON *ch = cJSON_CreateArray();
            const cJSON *e;
            cJSON_ArrayForEach(e, ends) {
                if (!cJSON_IsString(e)) {
                    rc = dp_err_set(err, DP_E_FORMAT, "an ending is not a string");
                    break;
                }
                char *pe = dp_mc_hellaswag_pre(e->valuestring);
                cJSON_AddItemToArray(ch, cJSON_CreateString(pe));
                dp_free(pe);
            }
            if (!rc) rc = shared(d, ctx, ch, label, err);
            cJSON_Delete(ch);
            dp_free(ctx);
            dp_free(raw);
            dp_free(cbc);
        }
    } else if (!strcmp(task, "winogrande")) {
        const char *s = str(o, "sentence"), *o1 = str(o, "option1"), *o2 = str(o, "option2");
        const cJSON *ans = cJSON_GetObjectItemCaseSensitive(o, "answer");
        const char *us = s ? strchr(s, '_') : NULL;
        if (!s || !o1 || !o2 || !ans)
            rc = dp_err_set(err, DP_E_FORMAT, "winogrande: expected sentence, option1, option2, answer");
        else if (!us)
            rc = dp_err_set(err, DP_E_FORMAT, "winogrande: the sentence has no '_'");
        if (!rc) {
            rc = label_of(o, "answer", &label, err);
            label -= 1; /* answer "1" / "2" */
            if (!rc && (label < 0 || label > 1)) rc = dp_err_set(err, DP_E_RANGE, "winogrande: answer must be 1 or 2");
        }
        if (!rc) {
            /* partial evaluation: contexts sentence[:idx] + option, target sentence[idx+1:].strip() */
            size_t idx = (size_t)(us - s);
            size_t r0, r1;
            dp_py_strip(us + 1, strlen(us + 1), 1, 1, &r0, &r1);
            const char *rest = us + 1 + r0;
            size_t rl = r1 - r0;
            char *target = dp_malloc(rl + 2, "mc");
            target[0] = ' ';
            memcpy(target + 1, rest, rl);
            target[rl + 1] = 0;
            doc_alloc(d, 2);
            const char *opt[2] = {o1, o2};
            for (int i = 0; i < 2; i++) {
                d->context[i] = dp_malloc(idx + strlen(opt[i]) + 1, "mc");
                memcpy(d->context[i], s, idx);
                strcpy(d->context[i] + idx, opt[i]);
                d->cont[i] = dp_strdup(target, "mc");
                d->norm_len[i] = utf8_chars(target + 1);
            }
            d->label = label;
            dp_free(target);
        }
    } else if (!strcmp(task, "arc_easy") || !strcmp(task, "arc_challenge") || !strcmp(task, "openbookqa")) {
        int obqa = !strcmp(task, "openbookqa");
        const char *q = str(o, obqa ? "question_stem" : "question"), *key = str(o, "answerKey");
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "choices");
        const cJSON *txt = cJSON_GetObjectItemCaseSensitive(ch, "text"),
                    *lab = cJSON_GetObjectItemCaseSensitive(ch, "label");
        if (!q || !key || !cJSON_IsArray(txt) || !cJSON_IsArray(lab))
            rc = dp_err_set(err, DP_E_FORMAT, "%s: expected %s, choices {text, label}, answerKey", task,
                            obqa ? "question_stem" : "question");
        if (!rc) {
            while (*key == ' ') key++; /* answerKey.lstrip() */
            label = -1;
            int i = 0;
            const cJSON *l;
            cJSON_ArrayForEach(l, lab) {
                if (cJSON_IsString(l) && !strcmp(l->valuestring, key)) label = i;
                i++;
            }
            if (label < 0) rc = dp_err_set(err, DP_E_RANGE, "answerKey '%s' is not among the choice labels", key);
        }
        if (!rc) {
            size_t n = strlen(q) + 32;
            char *ctx = dp_malloc(n, "mc");
            if (obqa)
                snprintf(ctx, n, "%s", q);
            else
                snprintf(ctx, n, "Question: %s\nAnswer:", q);
            rc = shared(d, ctx, txt, label, err);
            dp_free(ctx);
        }
    } else {
        rc = dp_err_set(err, DP_E_USAGE, "unknown task '%s'", task);
    }
    cJSON_Delete(o);
    if (rc) dp_mc_doc_free(d);
    return rc;
}

int dp_mc_encode(const dp_tokenizer *tok, const char *context, const char *cont, int add_bos, int64_t max_len,
                 dp_mc_req *r, dp_err *err) {
    memset(r, 0, sizeof *r);
    /* trailing whitespace of the context (Python's rstrip(): Unicode) belongs to the continuation */
    size_t cl = strlen(context), ns, z;
    dp_py_strip(context, cl, 0, 1, &z, &ns);
    ns = cl - ns;
    char *ctx = dp_malloc(cl - ns + 1, "mc");
    memcpy(ctx, context, cl - ns);
    ctx[cl - ns] = 0;
    char *c2 = dp_malloc(ns + strlen(cont) + 1, "mc");
    memcpy(c2, context + cl - ns, ns);
    strcpy(c2 + ns, cont);
    char *whole = cat(ctx, c2);
    int32_t *we = NULL, *ce = NULL;
    int64_t nw = 0, nc = 0;
    int rc = dp_tokenizer_encode(tok, whole, strlen(whole), 0, &we, &nw, err);
    if (!rc) rc = dp_tokenizer_encode(tok, ctx, strlen(ctx), 0, &ce, &nc, err);
    int32_t lead = add_bos ? dp_tokenizer_bos_id(tok) : -1;
    if (!rc && cl - ns == 0) {
        /* empty context: the harness's prefix token (BOS; EOS if there is none; since v0.4.2),
         * or, when the continuation already starts with it, that first token as the context */
        lead = dp_tokenizer_bos_id(tok) >= 0 ? dp_tokenizer_bos_id(tok) : dp_tokenizer_eos_id(tok);
        nc = 0;
        if (nw > 0 && we[0] == lead) lead = -1, nc = 1;
    }
    /* the continuation is whole[len(encode(context)):] even where the two
     * encodings disagree at the boundary, as in the harness */
    if (!rc && nw - nc < 1) rc = dp_err_set(err, DP_E_FORMAT, "the continuation encodes to no tokens");
    if (!rc) {
        int64_t n_cont = nw - nc, total = (lead >= 0) + nw; /* tokens of lead + context + continuation */
        int32_t *all = dp_malloc((size_t)total * sizeof(int32_t), "mc");
        int64_t k = 0;
        if (lead >= 0) all[k++] = lead;
        memcpy(all + k, we, (size_t)nw * sizeof(int32_t));
        /* inp = all[-(max_len + 1):][:-1] */
        int64_t start = total - (max_len + 1) > 0 ? total - (max_len + 1) : 0;
        r->truncated = start > 0;
        if (n_cont > max_len) {
            rc = dp_err_set(err, DP_E_RANGE, "the continuation alone (%lld tokens) exceeds the model's window %lld",
                            (long long)n_cont, (long long)max_len);
        } else {
            r->n = total - start - 1;
            r->ids = dp_malloc((size_t)(r->n > 0 ? r->n : 1) * sizeof(int32_t), "mc");
            memcpy(r->ids, all + start, (size_t)r->n * sizeof(int32_t));
            r->n_cont = n_cont;
            r->cont = dp_malloc((size_t)n_cont * sizeof(int32_t), "mc");
            memcpy(r->cont, all + total - n_cont, (size_t)n_cont * sizeof(int32_t));
        }
        dp_free(all);
    }
    dp_free(we);
    dp_free(ce);
    dp_free(ctx);
    dp_free(c2);
    dp_free(whole);
    return rc;
}

void dp_mc_req_free(dp_mc_req *r) {
    dp_free(r->ids);
    dp_free(r->cont);
    memset(r, 0, sizeof *r);
}

typedef struct len_idx {
    int64_t len, i;
} len_idx;

static int by_len_desc(const void *a, const void *b) {
    const len_idx *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

int dp_mc_run(const dp_mpi *mpi, dp_device dev, const dp_llama *m, const dp_layer_map *map, dp_mc_req *reqs, int64_t n,
              int64_t batch, dp_err *err) {
    if (batch < 1) return dp_err_set(err, DP_E_USAGE, "batch must be at least 1");
    len_idx *ord = dp_malloc((size_t)(n > 0 ? n : 1) * sizeof *ord, "mc");
    for (int64_t i = 0; i < n; i++) ord[i] = (len_idx){reqs[i].n, i};
    qsort(ord, (size_t)n, sizeof *ord, by_len_desc);
    double *ll = dp_calloc((size_t)(n > 0 ? n : 1), sizeof(double), "mc");
    int64_t n_batches = (n + batch - 1) / batch, tmax = n ? ord[0].len : 1;
    int32_t *tok = dp_malloc((size_t)(batch * tmax) * sizeof(int32_t), "mc");
    int32_t *tgt = dp_malloc((size_t)(batch * tmax) * sizeof(int32_t), "mc");
    float *nll = dp_malloc((size_t)(batch * tmax) * sizeof(float), "mc");
    dp_engine e;
    dp_engine_plan plan = {.B = batch, .T = tmax, .n_blocks = map->n, .local_rank = mpi->local_rank};
    int rc = dp_engine_open(&e, dev, m, &plan, err);
    for (int64_t b = mpi->rank; b < n_batches && !rc; b += mpi->size) {
        int64_t first = b * batch, nb = first + batch <= n ? batch : n - first;
        int64_t T = ord[first].len; /* the longest of this batch */
        /* every batch row is padded to T (rows past nb are all padding) */
        for (int64_t i = 0; i < batch; i++) {
            const dp_mc_req *r = i < nb ? &reqs[ord[first + i].i] : NULL;
            for (int64_t t = 0; t < T; t++) {
                tok[i * T + t] = r && t < r->n ? r->ids[t] : 0;
                tgt[i * T + t] = -1;
            }
            if (r) /* input position n - n_cont + j predicts continuation token j */
                for (int64_t j = 0; j < r->n_cont; j++) tgt[i * T + r->n - r->n_cont + j] = r->cont[j];
        }
        if ((rc = dp_engine_embed(&e, tok, batch, T, err))) break;
        dp_engine_blocks(&e, map, 0, map->n, batch);
        dp_engine_head_nll(&e, tgt, nll, batch);
        for (int64_t i = 0; i < nb; i++) {
            const dp_mc_req *r = &reqs[ord[first + i].i];
            double s = 0;
            for (int64_t j = 0; j < r->n_cont; j++) s -= (double)nll[i * T + r->n - r->n_cont + j];
            ll[ord[first + i].i] = s;
        }
    }
    rc = dp_mpi_agree(mpi, rc, err);
    if (!rc) {
        for (int64_t off = 0; off < n; off += 1 << 28) { /* only the owner adds a non-zero */
            int c = (int)(n - off < (1 << 28) ? n - off : (1 << 28));
            DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, ll + off, c, MPI_DOUBLE, MPI_SUM, mpi->comm));
        }
        for (int64_t i = 0; i < n; i++) reqs[i].loglik = ll[i];
    }
    dp_engine_close(&e);
    dp_free(nll);
    dp_free(tok);
    dp_free(tgt);
    dp_free(ll);
    dp_free(ord);
    return rc;
}

static void mean_stderr(const double *x, int64_t n, double *mean, double *se) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    *mean = n ? s / (double)n : NAN;
    double v = 0;
    for (int64_t i = 0; i < n; i++) v += (x[i] - *mean) * (x[i] - *mean);
    *se = n > 1 ? sqrt(v / (double)(n - 1)) / sqrt((double)n) : NAN;
}

void dp_mc_score(const dp_mc_doc *docs, int64_t n_docs, const dp_mc_req *reqs, const int64_t *first,
                 dp_mc_metrics *out) {
    double *a = dp_malloc((size_t)(n_docs + 1) * sizeof(double), "mc"),
           *an = dp_malloc((size_t)(n_docs + 1) * sizeof(double), "mc");
    for (int64_t d = 0; d < n_docs; d++) {
        int best = 0, bestn = 0;
        for (int c = 1; c < docs[d].n; c++) { /* argmax: the first maximum, as numpy */
            const dp_mc_req *r = &reqs[first[d] + c];
            if (r->loglik > reqs[first[d] + best].loglik) best = c;
            double nl = docs[d].norm_len[c] > 0 ? docs[d].norm_len[c] : 1;
            double nb = docs[d].norm_len[bestn] > 0 ? docs[d].norm_len[bestn] : 1;
            if (r->loglik / nl > reqs[first[d] + bestn].loglik / nb) bestn = c;
        }
        a[d] = best == docs[d].label;
        an[d] = bestn == docs[d].label;
    }
    out->docs = n_docs;
    mean_stderr(a, n_docs, &out->acc, &out->acc_stderr);
    mean_stderr(an, n_docs, &out->acc_norm, &out->acc_norm_stderr);
    dp_free(a);
    dp_free(an);
}
