/* The inputs the stages share: the calibration set and its dense forward,
 * training data and options, perplexity windows, a scores.json's removal
 * order and zero-shot tasks. Each is read on rank 0 and broadcast. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/export.h"
#include "depthprune/safetensors.h"
#include "depthprune/tokenizer.h"
#include "internal.h"

int dp_pipe_stream_weights(const dp_pipe *p) {
    const char *v = dp_config_str(p->cfg, "score.stream_weights");
    return !strcmp(v, "on") ? 1 : !strcmp(v, "off") ? 0 : -1;
}

int dp_pipe_calib_sample(const dp_pipe *p, const char *dir, const char *calib, dp_calib_opts *co, int32_t **ids,
                         int64_t **src, dp_err *err) {
    const dp_mpi *mpi = p->mpi;
    const char *bos_policy = dp_config_str(p->cfg, "tokenizer.add_bos");
    int64_t N = co->samples, T = co->seq_len;
    size_t cl = strlen(calib);
    if (!co->field && cl > 6 && !strcmp(calib + cl - 6, ".jsonl")) co->field = "text";
    co->bos_id = -1;
    *ids = NULL;
    *src = NULL;
    int rc = DP_OK;
    if (mpi->rank == 0) {
        dp_tokenizer *tok = NULL;
        char *text = NULL;
        size_t n = 0;
        rc = dp_tokenizer_load(dir, &tok, err);
        if (!rc) rc = dp_read_file(calib, &text, &n, err);
        if (!rc) {
            co->bos_id = strcmp(bos_policy, "false") && dp_tokenizer_adds_bos(tok) ? dp_tokenizer_bos_id(tok) : -1;
            if (!strcmp(bos_policy, "true")) co->bos_id = dp_tokenizer_bos_id(tok);
            rc = dp_calib_sample(tok, text, n, co, ids, src, err);
            if (rc) dp_err_prefix(err, "%s", calib);
        }
        dp_free(text);
        dp_tokenizer_free(tok);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    if (rc) {
        dp_free(*ids);
        dp_free(*src);
        *ids = NULL;
        *src = NULL;
        return rc;
    }
    int32_t bos = co->bos_id;
    DP_CHECK_MPI(MPI_Bcast(&bos, 1, MPI_INT32_T, 0, mpi->comm));
    co->bos_id = bos;
    if (mpi->rank != 0) {
        *ids = dp_malloc((size_t)(N * T) * sizeof(int32_t), "calib");
        *src = dp_malloc((size_t)(N * 2) * sizeof(int64_t), "calib");
    }
    DP_CHECK_MPI(MPI_Bcast(*ids, (int)(N * T), MPI_INT32_T, 0, mpi->comm));
    DP_CHECK_MPI(MPI_Bcast(*src, (int)(N * 2), MPI_INT64_T, 0, mpi->comm));
    return DP_OK;
}

int dp_pipe_calibrate(const dp_pipe *p, const char *dir, const dp_llama *m, uint64_t mhash, const char *calib,
                      const char *field, int64_t N, int64_t T, uint64_t seed, int64_t batch, const char *run,
                      dp_err *err) {
    dp_calib_opts co = {.samples = N, .seq_len = T, .seed = seed, .field = field};
    int32_t *ids = NULL;
    int64_t *src = NULL;
    int rc = dp_pipe_calib_sample(p, dir, calib, &co, &ids, &src, err);
    if (!rc)
        rc = dp_calibrate(p->mpi, m, mhash, ids, src, &co, run, batch, !dp_config_bool(p->cfg, "run.quiet"), p->device,
                          dp_pipe_stream_weights(p), err);
    dp_free(ids);
    dp_free(src);
    return rc;
}

const char *dp_pipe_data_format(const char *data) {
    size_t n = strlen(data);
    if ((n > 5 && !strcmp(data + n - 5, ".json")) || (n > 6 && !strcmp(data + n - 6, ".jsonl"))) return "alpaca";
    return "text";
}

/* Rank 0 tokenizes; every rank receives the examples. */
int dp_pipe_load_data(const dp_pipe *p, const char *tok_dir, const char *path, const char *format,
                      const dp_data_opts *dopt, dp_train_data *d, dp_err *err) {
    const dp_mpi *mpi = p->mpi;
    int rc = DP_OK;
    memset(d, 0, sizeof *d);
    if (mpi->rank == 0) {
        dp_tokenizer *tok = NULL;
        char *text = NULL;
        size_t n = 0;
        rc = dp_tokenizer_load(tok_dir, &tok, err);
        if (!rc) rc = dp_read_file(path, &text, &n, err);
        if (!rc) {
            rc = dp_data_load(tok, format, text, n, dopt, d, err);
            if (rc) dp_err_prefix(err, "%s", path);
        }
        dp_free(text);
        dp_tokenizer_free(tok);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    if (rc) return rc;
    int64_t hdr[3] = {d->n, d->n ? d->off[d->n] : 0, d->max_len};
    DP_CHECK_MPI(MPI_Bcast(hdr, 3, MPI_INT64_T, 0, mpi->comm));
    if (mpi->rank != 0) {
        d->n = hdr[0];
        d->max_len = hdr[2];
        d->off = dp_malloc((size_t)(hdr[0] + 1) * sizeof(int64_t), "data");
        d->tokens = dp_malloc((size_t)hdr[1] * sizeof(int32_t), "data");
        d->labels = dp_malloc((size_t)hdr[1] * sizeof(int32_t), "data");
    }
    DP_CHECK_MPI(MPI_Bcast(d->off, (int)(hdr[0] + 1), MPI_INT64_T, 0, mpi->comm));
    for (int64_t c = 0; c < hdr[1]; c += 1 << 28) {
        int cnt = (int)(hdr[1] - c < (1 << 28) ? hdr[1] - c : (1 << 28));
        DP_CHECK_MPI(MPI_Bcast(d->tokens + c, cnt, MPI_INT32_T, 0, mpi->comm));
        DP_CHECK_MPI(MPI_Bcast(d->labels + c, cnt, MPI_INT32_T, 0, mpi->comm));
    }
    DP_CHECK_MPI(MPI_Bcast(&d->hash, 1, MPI_UINT64_T, 0, mpi->comm));
    return DP_OK;
}

int dp_pipe_data_opts(const dp_pipe *p, dp_data_opts *o, dp_err *err) {
    memset(o, 0, sizeof *o);
    o->cutoff = dp_config_int(p->cfg, "train.cutoff");
    o->train_on_inputs = dp_config_bool(p->cfg, "train.train_on_inputs");
    o->add_eos = dp_config_bool(p->cfg, "train.add_eos");
    const char *bos = dp_config_str(p->cfg, "tokenizer.add_bos");
    o->add_bos = !strcmp(bos, "true") ? 1 : !strcmp(bos, "false") ? 0 : -1;
    o->field = dp_config_str(p->cfg, "train.text_field");
    if (o->cutoff < 2 || o->cutoff > 1000000) return dp_err_set(err, DP_E_USAGE, "--cutoff must be in [2, 1000000]");
    return DP_OK;
}

int dp_pipe_train_opts(const dp_pipe *p, const char *teacher_dir, const char *cache, int no_kd, dp_train_opts *op,
                       int64_t *val_size, dp_err *err) {
    const dp_config *c = p->cfg;
    dp_train_opts_default(op);
    dp_train_opts o = *op;
    int rc = DP_OK;
    const char *method = dp_config_str(c, "train.method");
    const char *sched = dp_config_str(c, "train.schedule");
    if (strcmp(method, "lora") && strcmp(method, "full"))
        rc = dp_err_set(err, DP_E_USAGE, "--method must be lora or full, got '%s'", method);
    o.method = !strcmp(method, "full") ? DP_TRAIN_FULL : DP_TRAIN_LORA;
    if (!rc) rc = dp_lora_parse_targets(dp_config_str(c, "lora.targets"), &o.lora_targets, err);
    o.lr = dp_config_float(c, "train.lr");
    o.kd_temp = dp_config_float(c, "train.kd_temp");
    /* no schema default: 0.5 with a teacher, else 0 */
    double kd_def = (teacher_dir || cache) && !no_kd ? 0.5 : 0.0;
    o.kd_alpha = dp_config_has(c, "train.kd_alpha") ? dp_config_float(c, "train.kd_alpha") : kd_def;
    if (no_kd) o.kd_alpha = 0;
    if (!rc && o.kd_alpha > 0 && !teacher_dir && !cache)
        rc = dp_err_set(err, DP_E_USAGE, "--kd-alpha > 0 needs --teacher DIR or --teacher-cache FILE (or --no-kd)");
    o.lora_alpha = dp_config_float(c, "lora.alpha");
    o.lora_dropout = dp_config_float(c, "lora.dropout");
    o.min_lr_ratio = dp_config_float(c, "train.min_lr_ratio");
    o.beta1 = dp_config_float(c, "train.beta1");
    o.beta2 = dp_config_float(c, "train.beta2");
    o.eps = dp_config_float(c, "train.eps");
    o.weight_decay = dp_config_float(c, "train.weight_decay");
    o.clip = dp_config_float(c, "train.clip");
    o.kd_topk = dp_config_int(c, "train.kd_topk");
    o.epochs = dp_config_int(c, "train.epochs");
    o.max_steps = dp_config_int(c, "train.max_steps");
    o.pause_after = dp_config_int(c, "train.pause_after");
    o.global_batch = dp_config_int(c, "train.global_batch");
    o.micro_batch = dp_config_int(c, "train.micro_batch");
    o.lora_rank = dp_config_int(c, "lora.r");
    o.warmup = dp_config_int(c, "train.warmup");
    o.log_every = dp_config_int(c, "train.log_every");
    o.val_every = dp_config_int(c, "train.val_every");
    o.ckpt_every = dp_config_int(c, "train.ckpt_every");
    o.keep_ckpt = dp_config_int(c, "train.keep_ckpt");
    o.max_skips = dp_config_int(c, "train.max_skips");
    o.fault_nan_step = -1;
    o.fault_nan_rank = -1;
    o.seed = (uint64_t)dp_config_int(c, "run.seed");
    *val_size = dp_config_int(c, "train.val_size");
    o.teacher_cache = cache;
    o.progress = !dp_config_bool(c, "run.quiet");
    o.device = p->device;
    o.sched = !strcmp(sched, "linear")     ? DP_SCHED_LINEAR
              : !strcmp(sched, "constant") ? DP_SCHED_CONSTANT
                                           : DP_SCHED_COSINE;
    if (!rc && (o.epochs < 1 || o.global_batch < 1 || o.micro_batch < 1 || o.lora_rank < 1 || o.warmup < 0 ||
                o.max_steps < 0 || o.pause_after < 0 || *val_size < 0 || o.kd_topk < 0 || o.max_skips < 0))
        rc = dp_err_set(err, DP_E_USAGE,
                        "--epochs, --global-batch, --micro-batch and --lora-r must be >= 1; warmup, --max-steps, "
                        "--val-size, --kd-topk and max_skips >= 0");
    if (!rc && !(o.lr > 0)) rc = dp_err_set(err, DP_E_USAGE, "--lr must be positive");
    if (!rc && o.kd_topk > 0 && cache)
        rc = dp_err_set(err, DP_E_USAGE, "--kd-topk applies to an online teacher; a cache has its own K");
    *op = o;
    return rc;
}

int dp_pipe_train_setup(const dp_pipe *p, const char *tok_dir, const char *data_path, dp_train_data *d,
                        dp_train_opts *o, dp_err *err) {
    int64_t vs = 0;
    dp_data_opts dopt;
    memset(d, 0, sizeof *d);
    int rc = dp_pipe_train_opts(p, NULL, NULL, 0, o, &vs, err);
    if (!rc) rc = dp_pipe_data_opts(p, &dopt, err);
    rc = dp_mpi_agree(p->mpi, rc, err);
    const char *format = dp_config_str(p->cfg, "train.data_format");
    if (!rc)
        rc = dp_pipe_load_data(p, tok_dir, data_path, format ? format : dp_pipe_data_format(data_path), &dopt, d, err);
    return rc;
}

/* Rank 0: the text's token ids (no special tokens) and the BOS id to use. */
static int read_ids(const char *model_dir, const char *text_path, const char *bos_policy, int32_t **ids, int64_t *n_ids,
                    int32_t *bos, dp_err *err) {
    dp_tokenizer *tok = NULL;
    char *text = NULL;
    size_t n = 0;
    int rc = dp_tokenizer_load(model_dir, &tok, err);
    if (rc == DP_OK) rc = dp_read_file(text_path, &text, &n, err);
    if (rc == DP_OK) rc = dp_tokenizer_encode(tok, text, n, 0, ids, n_ids, err);
    if (rc == DP_OK) {
        *bos = strcmp(bos_policy, "false") ? dp_tokenizer_bos_id(tok) : -1;
        if (!strcmp(bos_policy, "true") && *bos < 0)
            rc = dp_err_set(err, DP_E_CONFIG, "tokenizer.add_bos is true but the tokenizer has no BOS token");
    }
    dp_free(text);
    dp_tokenizer_free(tok);
    return rc;
}

int dp_pipe_ppl_windows(const dp_pipe *p, const char *model_dir, const char *text, const dp_ppl_opts *o, int32_t **win,
                        int64_t *n_win, dp_err *err) {
    const dp_mpi *mpi = p->mpi;
    /* text -> ids on rank 0, then to everyone */
    int32_t *ids = NULL, bos = -1;
    int64_t n_ids = 0;
    int rc = DP_OK;
    if (mpi->rank == 0)
        rc = read_ids(model_dir, text, dp_config_str(p->cfg, "tokenizer.add_bos"), &ids, &n_ids, &bos, err);
    rc = dp_mpi_agree(mpi, rc, err);
    if (rc == DP_OK) {
        int64_t hdr[2] = {n_ids, bos};
        DP_CHECK_MPI(MPI_Bcast(hdr, 2, MPI_INT64_T, 0, mpi->comm));
        n_ids = hdr[0];
        bos = (int32_t)hdr[1];
        if (mpi->rank != 0) ids = dp_malloc((size_t)(n_ids ? n_ids : 1) * sizeof(int32_t), "ppl ids");
        for (int64_t off = 0; off < n_ids; off += 1 << 30) { /* MPI counts are int */
            int cnt = (int)(n_ids - off < (1 << 30) ? n_ids - off : (1 << 30));
            DP_CHECK_MPI(MPI_Bcast(ids + off, cnt, MPI_INT32_T, 0, mpi->comm));
        }
        rc = dp_ppl_windows(ids, n_ids, bos, o, win, n_win, err);
        if (rc) dp_err_prefix(err, "%s", text);
    }
    dp_free(ids);
    return rc;
}

/* The one-shot removal order of crit in scores.json (unprotected blocks,
 * least important first). */
int dp_pipe_read_order(const char *path, const char *crit, const char *want_hash, int L, int *units, int **order,
                       int *n_order, uint64_t *file_hash, dp_err *err) {
    char *text = NULL;
    size_t n = 0;
    int rc = dp_read_file(path, &text, &n, err);
    if (rc) return rc;
    *file_hash = dp_hash_bytes(text, n, 1);
    cJSON *root = cJSON_ParseWithLength(text, n);
    dp_free(text);
    const cJSON *mh = cJSON_GetObjectItemCaseSensitive(root, "model_hash");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "criteria"), crit);
    const cJSON *ord = cJSON_GetObjectItemCaseSensitive(c, "order");
    const cJSON *unit = cJSON_GetObjectItemCaseSensitive(root, "unit");
    int sub = cJSON_IsString(unit) && !strcmp(unit->valuestring, "sublayer"), U = sub ? 2 * L : L;
    if (!root || !cJSON_IsObject(root))
        rc = dp_err_set(err, DP_E_FORMAT, "%s: not a JSON object", path);
    else if (!cJSON_IsString(mh) || !cJSON_IsNumber(layers))
        rc = dp_err_set(err, DP_E_FORMAT, "%s: no model_hash/layers (not a scores.json of this version)", path);
    else if (strcmp(mh->valuestring, want_hash))
        rc = dp_err_set(err, DP_E_MISMATCH, "%s scores a different model (model hash %s, this model %s)", path,
                        mh->valuestring, want_hash);
    else if (layers->valueint != L || layers->valuedouble != (double)L)
        rc = dp_err_set(err, DP_E_MISMATCH, "%s scores %g blocks, the model has %d", path, layers->valuedouble, L);
    else if (!cJSON_IsArray(ord))
        rc = dp_err_set(err, DP_E_USAGE, "%s has no criterion '%s'", path, crit);
    else if (sub && !units)
        rc =
            dp_err_set(err, DP_E_USAGE, "%s scores sub-layers (score --units sublayer); this needs block scores", path);
    if (units) *units = sub;
    if (!rc) {
        *n_order = cJSON_GetArraySize(ord);
        *order = dp_malloc((size_t)(*n_order + 1) * sizeof(int), "order");
        int i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, ord) {
            int b = cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < U ? (int)it->valuedouble : -1;
            if (b < 0 || b >= U)
                rc = dp_err_set(err, DP_E_FORMAT, "%s: order of %s holds a bad block index", path, crit);
            (*order)[i++] = b;
        }
    }
    cJSON_Delete(root);
    return rc;
}

/* One "name=file" item of a comma list into name/path (fresh strings). */
int dp_pipe_split_item(const char *item, char **name, char **path, dp_err *err) {
    const char *eq = strchr(item, '=');
    if (!eq || eq == item || !eq[1]) return dp_err_set(err, DP_E_USAGE, "'%s': expected NAME=FILE", item);
    *name = dp_malloc((size_t)(eq - item) + 1, "eval");
    memcpy(*name, item, (size_t)(eq - item));
    (*name)[eq - item] = 0;
    *path = dp_strdup(eq + 1, "eval");
    return DP_OK;
}

void dp_tasks_free(dp_tasks *t) {
    for (int k = 0; k < t->n; k++) {
        dp_free(t->name[k]);
        dp_free(t->kind[k]);
        dp_free(t->path[k]);
        for (int64_t d = 0; d < t->n_docs[k]; d++) dp_mc_doc_free(&t->docs[k][d]);
        dp_free(t->docs[k]);
        dp_free(t->first[k]);
    }
    for (int64_t i = 0; i < t->n_req; i++) dp_mc_req_free(&t->req[i]);
    dp_free(t->req);
    memset(t, 0, sizeof *t);
}

int dp_tasks_load(const dp_pipe *p, const char *tok_dir, const char *spec, int64_t limit, int skip_bad, int64_t max_len,
                  dp_tasks *t, dp_err *err) {
    memset(t, 0, sizeof *t);
    dp_tokenizer *tok = NULL;
    int rc = dp_tokenizer_load(tok_dir, &tok, err);
    int add_bos = dp_config_bool(p->cfg, "eval.mc_bos");
    char *buf = dp_strdup(spec, "eval");
    int64_t cap = 0;
    for (char *save = NULL, *it = strtok_r(buf, ",", &save); it && !rc; it = strtok_r(NULL, ",", &save)) {
        if (t->n == DP_PIPE_MAX_TASKS) {
            rc = dp_err_set(err, DP_E_USAGE, "at most %d tasks", DP_PIPE_MAX_TASKS);
            break;
        }
        int k = t->n;
        rc = dp_pipe_split_item(it, &t->name[k], &t->path[k], err);
        if (rc) break;
        t->n++;
        /* the task kind: the name, or generic for any other name */
        t->kind[k] = dp_strdup(dp_mc_task_known(t->name[k]) ? t->name[k] : "generic", "eval");
        char *text = NULL;
        size_t n = 0;
        rc = dp_read_file(t->path[k], &text, &n, err);
        if (rc) break;
        t->hash[k] = dp_hash_bytes(text, n, 5);
        int64_t dcap = 64, line = 0;
        t->docs[k] = dp_malloc((size_t)dcap * sizeof(dp_mc_doc), "eval");
        for (size_t pos = 0; pos < n && !rc && (limit <= 0 || t->n_docs[k] < limit);) {
            const char *nl = memchr(text + pos, '\n', n - pos);
            size_t len = nl ? (size_t)(nl - (text + pos)) : n - pos;
            const char *l = text + pos;
            pos += len + 1;
            line++;
            size_t s = 0;
            while (s < len && (l[s] == ' ' || l[s] == '\r' || l[s] == '\t')) s++;
            if (s == len) continue;
            dp_mc_doc doc;
            dp_err e2;
            int r = dp_mc_parse(t->kind[k], l, len, &doc, &e2);
            if (r) {
                if (!skip_bad) {
                    rc = dp_err_set(err, r, "%s line %lld: %s", t->path[k], (long long)line, e2.msg);
                    break;
                }
                dp_log0("eval: %s line %lld skipped: %s", t->path[k], (long long)line, e2.msg);
                t->skipped[k]++;
                continue;
            }
            if (t->n_docs[k] == dcap)
                t->docs[k] = dp_realloc(t->docs[k], (size_t)(dcap *= 2) * sizeof(dp_mc_doc), "eval");
            t->docs[k][t->n_docs[k]++] = doc;
        }
        dp_free(text);
        if (!rc && t->n_docs[k] == 0) rc = dp_err_set(err, DP_E_FORMAT, "%s: no documents", t->path[k]);
        /* requests, doc-major */
        t->first[k] = dp_malloc((size_t)(t->n_docs[k] + 1) * sizeof(int64_t), "eval");
        for (int64_t d = 0; d < t->n_docs[k] && !rc; d++) {
            t->first[k][d] = t->n_req;
            for (int c = 0; c < t->docs[k][d].n && !rc; c++) {
                if (t->n_req == cap)
                    t->req = dp_realloc(t->req, (size_t)(cap = cap ? cap * 2 : 256) * sizeof(dp_mc_req), "eval");
                rc = dp_mc_encode(tok, t->docs[k][d].context[c], t->docs[k][d].cont[c], add_bos, max_len,
                                  &t->req[t->n_req], err);
                if (rc) {
                    dp_err_prefix(err, "%s document %lld choice %d", t->path[k], (long long)d + 1, c);
                    break;
                }
                t->truncated[k] += t->req[t->n_req].truncated;
                t->req[t->n_req].doc = d;
                t->req[t->n_req].choice = c;
                t->n_req++;
            }
        }
    }
    dp_free(buf);
    dp_tokenizer_free(tok);
    if (rc) dp_tasks_free(t);
    return rc;
}

int dp_tasks_run(const dp_mpi *mpi, dp_device dev, const dp_llama *m, const dp_layer_map *map, dp_tasks *t,
                 int64_t batch, dp_err *err) {
    int rc = dp_mc_run(mpi, dev, m, map, t->req, t->n_req, batch, err);
    for (int k = 0; k < t->n && !rc; k++) dp_mc_score(t->docs[k], t->n_docs[k], t->req, t->first[k], &t->metrics[k]);
    return rc;
}

double dp_tasks_average(const dp_tasks *t) {
    double s = 0;
    for (int k = 0; k < t->n; k++)
        s += !strcmp(dp_mc_task_metric(t->kind[k]), "acc_norm") ? t->metrics[k].acc_norm : t->metrics[k].acc;
    return t->n ? s / t->n : NAN;
}

uint64_t dp_pipe_file_hash(const char *dir, const char *name) {
    char *p = dp_path_join(dir, name), *text = NULL;
    size_t n = 0;
    dp_err e;
    uint64_t h = dp_read_file(p, &text, &n, &e) ? 0 : dp_hash_bytes(text, n, 5);
    dp_free(text);
    dp_free(p);
    return h;
}

cJSON *dp_pipe_read_json(const char *path) {
    char *text = NULL;
    size_t n = 0;
    dp_err e;
    if (dp_read_file(path, &text, &n, &e)) return NULL;
    cJSON *o = cJSON_ParseWithLength(text, n);
    dp_free(text);
    return o;
}

int dp_pipe_stop_requested(const dp_mpi *mpi) {
    int s = dp_stop_requested(), any = 0;
    DP_CHECK_MPI(MPI_Allreduce(&s, &any, 1, MPI_INT, MPI_MAX, mpi->comm));
    return any;
}

int dp_pipe_stored_dtype(const char *dir) {
    dp_st_model st;
    dp_err e;
    if (dp_st_model_open(dir, &st, &e)) return DP_DTYPE_F32;
    const dp_st_tensor *t = dp_st_model_find(&st, "model.embed_tokens.weight");
    int dt = t ? t->dtype : DP_DTYPE_F32;
    dp_st_model_close(&st);
    return dt;
}

int dp_pipe_load_frozen(const dp_pipe *p, const char *dir, dp_llama *m, dp_err *err) {
    if (p->device == DP_DEVICE_CPU && !strcmp(dp_config_str(p->cfg, "model.weights"), "stored"))
        return dp_llama_load_stored(dir, m, err);
    return dp_llama_load(dir, m, err);
}

dp_st_entry *dp_pipe_model_entries(const dp_llama *m) {
    dp_st_entry *e = dp_calloc((size_t)m->n_params, sizeof *e, "export");
    for (int i = 0; i < m->n_params; i++) {
        const dp_llama_param *w = &m->params[i];
        e[i] = (dp_st_entry){.name = w->name,
                             .dtype = DP_DTYPE_F32,
                             .ndim = w->cols ? 2 : 1,
                             .shape = {w->rows, w->cols},
                             .data = m->mem + w->offset};
    }
    return e;
}

int dp_pipe_layer_map(const dp_llama_config *c, const char *drop, const char *drop_attn, const char *drop_mlp,
                      dp_layer_map *map, dp_err *err) {
    dp_layer_map_model(map, c);
    const char *lists[3] = {drop, drop_attn, drop_mlp}, *flags[3] = {"--drop", "--drop-attn", "--drop-mlp"};
    int rc = DP_OK;
    for (int k = 0; k < 3 && !rc; k++) {
        if (!lists[k]) continue;
        int64_t *v = NULL, n = 0;
        rc = dp_parse_block_list(lists[k], c->n_layers, &v, &n, err);
        if (!rc && k == 0) rc = dp_layer_map_drop(map, (int)c->n_layers, v, n, err);
        if (!rc && k > 0) rc = dp_layer_map_skip(map, (int)c->n_layers, v, n, k == 1 ? DP_SKIP_ATTN : DP_SKIP_MLP, err);
        if (rc) dp_err_prefix(err, "%s", flags[k]);
        dp_free(v);
    }
    if (!rc && map->n == 0) rc = dp_err_set(err, DP_E_USAGE, "--drop removes every block");
    return rc;
}

int dp_pipe_pick_units(const dp_llama *m, const int *order, int n_order, int64_t K, double ratio, int *removed,
                       int *n_removed, unsigned char *skip, dp_err *err) {
    int L = (int)m->cfg.n_layers, n = 0;
    int64_t target = 0, got = 0;
    for (int b = 0; b < (int)lround(ratio * L) && b < L; b++) target += dp_llama_layer_param_count(&m->cfg, b);
    memset(skip, 0, (size_t)L);
    for (int k = 0; k < n_order && (K > 0 ? n < K : got < target); k++) {
        int u = order[k], b = u / 2;
        int64_t up = 0;
        for (int t = u % 2 ? DP_BT_O + 1 : 0; t < (u % 2 ? DP_LLAMA_BLOCK_TENSORS : DP_BT_O + 1); t++)
            up += m->params[1 + b * DP_LLAMA_BLOCK_TENSORS + t].n_elems;
        if (K <= 0 && got + up - target > target - got) break; /* nearer without it */
        removed[n++] = u;
        got += up;
        skip[b] |= (unsigned char)(u % 2 ? DP_SKIP_MLP : DP_SKIP_ATTN);
    }
    int whole = 0;
    for (int b = 0; b < L; b++) whole += skip[b] == (DP_SKIP_ATTN | DP_SKIP_MLP);
    if (n < 1 || (K > 0 && n < K) || whole >= L)
        return dp_err_set(err, DP_E_USAGE,
                          "removing %lld sub-layers is not possible with %d unprotected candidates (keep at least "
                          "one block)",
                          (long long)(K > 0 ? K : n), n_order);
    *n_removed = n;
    return DP_OK;
}

void dp_pipe_units_json(cJSON *o, const int *units, int n_units, const unsigned char *skip, int L) {
    cJSON_AddStringToObject(o, "unit", "sublayer");
    cJSON *ru = cJSON_AddArrayToObject(o, "removed_units");
    for (int k = 0; k < n_units; k++) {
        char un[32];
        snprintf(un, sizeof un, "%s.%d", units[k] % 2 ? "mlp" : "attn", units[k] / 2);
        cJSON_AddItemToArray(ru, cJSON_CreateString(un));
    }
    for (int k = 0; k < 2; k++) { /* of the blocks that stay */
        cJSON *a = cJSON_AddArrayToObject(o, k ? "skip_mlp" : "skip_attn");
        for (int b = 0; b < L; b++)
            if (skip[b] != (DP_SKIP_ATTN | DP_SKIP_MLP) && (skip[b] & (k ? DP_SKIP_MLP : DP_SKIP_ATTN)))
                cJSON_AddItemToArray(a, cJSON_CreateNumber(b));
    }
}
