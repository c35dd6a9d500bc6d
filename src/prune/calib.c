/* The calibration set: documents from plain text (blank-line-separated
 * paragraphs) or JSONL (one field per line), the paper's sampling rule (a
 * random document long enough, then a random window), and content hashes
 * that tie run files to the model and data they came from. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/prune.h"

typedef struct {
    int64_t n;
    const char **start;
    size_t *len;
    char **owned; /* JSONL field strings */
} docs;

static void docs_free(docs *d) {
    for (int64_t i = 0; i < d->n; i++) dp_free(d->owned ? d->owned[i] : NULL);
    dp_free(d->owned);
    dp_free(d->start);
    dp_free(d->len);
    memset(d, 0, sizeof *d);
}

static void docs_push(docs *d, int64_t *cap, const char *s, size_t len, char *owned) {
    if (d->n == *cap) {
        *cap = *cap ? 2 * *cap : 1024;
        d->start = dp_realloc(d->start, (size_t)*cap * sizeof(char *), "calib");
        d->len = dp_realloc(d->len, (size_t)*cap * sizeof(size_t), "calib");
        d->owned = dp_realloc(d->owned, (size_t)*cap * sizeof(char *), "calib");
    }
    d->start[d->n] = s;
    d->len[d->n] = len;
    d->owned[d->n] = owned;
    d->n++;
}

static int split_docs(const char *text, size_t n, const char *field, docs *d, dp_err *err) {
    int64_t cap = 0;
    memset(d, 0, sizeof *d);
    size_t pos = 0;
    int64_t line_no = 0;
    if (field) {
        while (pos < n) {
            const char *nl = memchr(text + pos, '\n', n - pos);
            size_t len = nl ? (size_t)(nl - (text + pos)) : n - pos;
            line_no++;
            size_t k = 0;
            while (k < len && (text[pos + k] == ' ' || text[pos + k] == '\t' || text[pos + k] == '\r')) k++;
            if (k < len) {
                cJSON *o = cJSON_ParseWithLength(text + pos, len);
                const cJSON *f = o ? cJSON_GetObjectItemCaseSensitive(o, field) : NULL;
                if (!o || !cJSON_IsString(f)) {
                    cJSON_Delete(o);
                    docs_free(d);
                    return dp_err_set(err, DP_E_FORMAT, "line %lld: %s", (long long)line_no,
                                      o ? "the field is missing or not a string" : "not a JSON object");
                }
                char *s = dp_strdup(f->valuestring, "calib");
                docs_push(d, &cap, s, strlen(s), s);
                cJSON_Delete(o);
            }
            pos += len + 1;
        }
        return DP_OK;
    }
    /* paragraphs: runs of non-blank lines, separated by blank lines */
    size_t para = 0, para_end = 0;
    int in_para = 0;
    while (pos <= n) {
        const char *nl = pos < n ? memchr(text + pos, '\n', n - pos) : NULL;
        size_t e = nl ? (size_t)(nl - text) : n, k = pos;
        while (k < e && (text[k] == ' ' || text[k] == '\t' || text[k] == '\r')) k++;
        int blank = k == e;
        if (!blank && !in_para) para = pos, in_para = 1;
        if (!blank) para_end = e;
        if ((blank || !nl) && in_para) {
            while (para_end > para && text[para_end - 1] == '\r') para_end--;
            docs_push(d, &cap, text + para, para_end - para, NULL);
            in_para = 0;
        }
        if (!nl) break;
        pos = e + 1;
    }
    return DP_OK;
}

static int64_t rng_below(uint64_t *s, int64_t n) {
    return (int64_t)(dp_splitmix64(s) % (uint64_t)n);
}

int dp_calib_sample(const dp_tokenizer *tok, const char *text, size_t n_bytes, const dp_calib_opts *o, int32_t **ids,
                    int64_t **src, dp_err *err) {
    *ids = NULL;
    *src = NULL;
    int64_t N = o->samples, T = o->seq_len;
    if (N < 1 || T < 2)
        return dp_err_set(err, DP_E_USAGE, "need at least 1 sample of at least 2 tokens (got %lld x %lld)",
                          (long long)N, (long long)T);
    int64_t body = o->bos_id >= 0 ? T - 1 : T;
    docs d;
    int rc = split_docs(text, n_bytes, o->field, &d, err);
    if (rc) return rc;
    /* candidates: documents with at least `body` bytes (a token spans at
     * least one byte); a drawn document shorter in tokens is struck off */
    int64_t *cand = dp_malloc((size_t)(d.n ? d.n : 1) * sizeof(int64_t), "calib");
    int64_t n_cand = 0;
    for (int64_t i = 0; i < d.n; i++)
        if ((int64_t)d.len[i] >= body) cand[n_cand++] = i;
    int32_t *out = dp_malloc((size_t)(N * T) * sizeof(int32_t), "calib");
    int64_t *where = dp_malloc((size_t)(N * 2) * sizeof(int64_t), "calib");
    uint64_t st = o->seed;
    for (int64_t s = 0; s < N && rc == DP_OK;) {
        if (n_cand == 0) {
            rc = dp_err_set(err, DP_E_FORMAT,
                            "the calibration text has no document with %lld tokens (%lld documents); "
                            "%lld samples x %lld tokens need longer documents or a smaller --seq-len",
                            (long long)body, (long long)d.n, (long long)N, (long long)T);
            break;
        }
        int64_t ci = rng_below(&st, n_cand), doc = cand[ci];
        int32_t *t = NULL;
        int64_t nt = 0;
        if ((rc = dp_tokenizer_encode(tok, d.start[doc], d.len[doc], 0, &t, &nt, err))) break;
        if (nt < body) {
            cand[ci] = cand[--n_cand]; /* too short in tokens: never draw it again */
            dp_free(t);
            continue;
        }
        int64_t off = rng_below(&st, nt - body + 1);
        int32_t *row = out + s * T;
        if (o->bos_id >= 0) row[0] = o->bos_id;
        memcpy(row + (T - body), t + off, (size_t)body * sizeof(int32_t));
        where[2 * s] = doc;
        where[2 * s + 1] = off;
        dp_free(t);
        s++;
    }
    dp_free(cand);
    docs_free(&d);
    if (rc) {
        dp_free(out);
        dp_free(where);
        return rc;
    }
    *ids = out;
    *src = where;
    return DP_OK;
}

/* ---------------- calib.h5 ---------------- */

int dp_calib_open(const dp_mpi *mpi, const char *run_dir, uint64_t model_hash, int need_complete, dp_calib_file *c,
                  dp_err *err) {
    memset(c, 0, sizeof *c);
    c->h.file = -1;
    char *path = dp_path_join(run_dir, "calib.h5");
    snprintf(c->path, sizeof c->path, "%s", path);
    dp_free(path);
    int rc = dp_mpi_agree(mpi, dp_h5_open(&c->h, c->path, mpi->comm, 0, err), err);
    if (rc) {
        c->h.file = -1;
        return rc;
    }
    char *a[8] = {0}, want[17];
    const char *names[8] = {"model_hash", "calib_hash", "samples", "seq_len", "seed", "device", "complete", NULL};
    snprintf(want, sizeof want, "%016llx", (unsigned long long)model_hash);
    for (int i = 0; i < 5 && !rc; i++)
        if (dp_h5_get_attr(&c->h, names[i], &a[i], err))
            rc = dp_err_set(err, DP_E_FORMAT, "%s: not a depthprune calibration file (no %s)", c->path, names[i]);
    if (!rc) { /* optional: files before the GPU engine have no device; a file being written has no complete */
        if (dp_h5_get_attr(&c->h, "device", &a[5], err)) a[5] = dp_strdup("cpu", "calib");
        if (dp_h5_get_attr(&c->h, "complete", &a[6], err)) a[6] = NULL;
        dp_err_clear(err);
        c->N = atoll(a[2]);
        c->T = atoll(a[3]);
        snprintf(c->calib_hash, sizeof c->calib_hash, "%s", a[1]);
        snprintf(c->seed, sizeof c->seed, "%s", a[4]);
        snprintf(c->device, sizeof c->device, "%s", a[5]);
        c->complete = a[6] && !strcmp(a[6], "1");
        if (strcmp(a[0], want))
            rc = dp_err_set(err, DP_E_MISMATCH, "%s was made for a different model (model hash %s, this model %s)",
                            c->path, a[0], want);
        else if (c->N < 1 || c->T < 2)
            rc = dp_err_set(err, DP_E_FORMAT, "%s: %lld samples of %lld tokens", c->path, (long long)c->N,
                            (long long)c->T);
        else if (need_complete && !c->complete)
            rc = dp_err_set(err, DP_E_FORMAT, "%s is incomplete (a calibration was interrupted); run `score` again",
                            c->path);
    }
    for (int i = 0; i < 8; i++) dp_free(a[i]);
    rc = dp_mpi_agree(mpi, rc, err);
    if (!rc && c->complete) {
        c->ids = dp_malloc((size_t)(c->N * c->T) * sizeof(int32_t), "calib");
        c->dense_nll = dp_malloc((size_t)c->N * sizeof(double), "calib");
        rc = dp_h5_read_rows(&c->h, "ids", DP_DTYPE_I32, 0, c->N, c->ids, err);
        if (!rc) rc = dp_h5_read_rows(&c->h, "dense_nll", DP_DTYPE_F64, 0, c->N, c->dense_nll, err);
        rc = dp_mpi_agree(mpi, rc, err);
        double s = 0;
        for (int64_t i = 0; !rc && i < c->N; i++) s += c->dense_nll[i];
        c->dense_ppl = exp(s / (double)(c->N * (c->T - 1)));
    }
    if (rc) dp_calib_close(c);
    return rc;
}

void dp_calib_close(dp_calib_file *c) {
    if (c->h.file >= 0) dp_h5_close(&c->h);
    dp_free(c->ids);
    dp_free(c->dense_nll);
    memset(c, 0, sizeof *c);
    c->h.file = -1;
}
