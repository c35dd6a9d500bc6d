/* Zero-shot multiple choice with lm-evaluation-harness semantics.
 *
 * A document has n choices, each a (context, continuation) request: either
 * one shared context and continuations " " + choice (boolq, piqa,
 * hellaswag, arc, openbookqa, generic), or one context per option and a
 * shared continuation (winogrande's partial evaluation). Tokenization as
 * the harness: trailing spaces of the context move to the continuation;
 * whole = encode(context + continuation), continuation tokens = whole
 * beyond len(encode(context)); no special tokens (optionally a BOS); an
 * empty context becomes [EOS]; inputs longer than the model's window
 * are left-truncated. log-likelihood = sum of log-softmax of the
 * continuation tokens; acc = argmax; acc_norm = argmax of loglik divided by
 * the choice's length in Unicode characters. */
#ifndef DEPTHPRUNE_MC_H
#define DEPTHPRUNE_MC_H

#include <stdint.h>

#include "depthprune/dist.h"
#include "depthprune/engine.h"
#include "depthprune/llama.h"
#include "depthprune/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dp_mc_doc {
    int n;            /* choices */
    char **context;   /* n contexts (the same string repeated when shared) */
    char **cont;      /* n continuations, delimiter included */
    double *norm_len; /* n: characters of each choice, for acc_norm */
    int label;
} dp_mc_doc;

/* Tasks: generic ({"context", "choices", "label"} or {"contexts",
 * "continuation", "label"}), boolq, piqa, hellaswag, winogrande, arc_easy,
 * arc_challenge, openbookqa (the HF dataset rows). */
int dp_mc_task_known(const char *task);
/* Whether the harness reports acc_norm for a task (not for boolq, whose
 * choices are one word, nor winogrande, whose choices share one continuation). */
int dp_mc_task_has_acc_norm(const char *task);
/* The metric the papers report for a task: "acc" or "acc_norm". */
const char *dp_mc_task_metric(const char *task);
/* Converts one JSON row; errors name the rule (label out of range, empty
 * choices, missing field). */
int dp_mc_parse(const char *task, const char *json, size_t len, dp_mc_doc *doc, dp_err *err);
void dp_mc_doc_free(dp_mc_doc *doc);
/* HellaSwag's preprocessing: strip, " [title]" -> ". ", drop [..], "  " -> " ". */
char *dp_mc_hellaswag_pre(const char *s);

typedef struct dp_mc_req {
    int32_t *ids;  /* model input (context + continuation minus its last token) */
    int64_t n;     /* input length */
    int32_t *cont; /* continuation tokens: predicted by the last n_cont input positions */
    int64_t n_cont;
    int64_t doc;
    int choice;
    int truncated; /* left-truncated to the model's window */
    double loglik;
} dp_mc_req;

/* Tokenizes one request (see above); max_len: the model's window. */
int dp_mc_encode(const dp_tokenizer *tok, const char *context, const char *cont, int add_bos, int64_t max_len,
                 dp_mc_req *r, dp_err *err);
void dp_mc_req_free(dp_mc_req *r);

/* Collective: fills every request's loglik. Requests are sorted by length
 * (longest first) into fixed global batches dealt round-robin to ranks, so
 * the results are identical for any rank count. */
int dp_mc_run(const dp_mpi *mpi, dp_device dev, const dp_llama *m, const dp_layer_map *map, dp_mc_req *reqs, int64_t n,
              int64_t batch, dp_err *err);

typedef struct dp_mc_metrics {
    int64_t docs;
    double acc, acc_stderr, acc_norm, acc_norm_stderr;
} dp_mc_metrics;

/* acc/acc_norm of docs whose requests are reqs (doc-major: doc d's choices
 * at first[d] .. first[d] + docs[d].n - 1); stderr = sample std / sqrt(n). */
void dp_mc_score(const dp_mc_doc *docs, int64_t n_docs, const dp_mc_req *reqs, const int64_t *first,
                 dp_mc_metrics *out);

#ifdef __cplusplus
}
#endif
#endif
