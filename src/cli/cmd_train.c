/* `depthprune retrain` (heal a pruned model: LoRA or full-parameter, with
 * or without KD) and `depthprune teacher-cache` (the dense teacher's top-k
 * logits over the training set, once, for every student of a sweep). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "depthprune/export.h"
#include "depthprune/prune.h"
#include "depthprune/safetensors.h"
#include "depthprune/train.h"

static const dp_cli_opt k_retrain_opts[] = {
    {"--student", "DIR", "the model to retrain (HF directory, e.g. a pruned export)", "model.path"},
    {"--teacher", "DIR", "dense teacher for online KD", "train.teacher"},
    {"--teacher-cache", "FILE", "teacher cache from `depthprune teacher-cache` (instead of --teacher)",
     "train.teacher_cache"},
    {"--data", "FILE", "training data: Alpaca JSON/JSONL, or text", "train.data"},
    {"--data-format", "F", "alpaca | text | jsonl-text (default: alpaca for .json/.jsonl, else text)",
     "train.data_format"},
    {"--method", "M", "lora | full", "train.method"},
    {"--kd-alpha", "A", "KD weight: A * T^2 KL + (1 - A) CE (default 0.5 with a teacher)", "train.kd_alpha"},
    {"--kd-temp", "T", "KD temperature", "train.kd_temp"},
    {"--kd-topk", "K", "online KD on the teacher's top-K tokens (default 0: full vocabulary)", "train.kd_topk"},
    {"--no-kd", NULL, "plain cross-entropy even with a teacher", NULL},
    {"--run", "DIR", "run directory: log, checkpoints, plots (default run.dir)", "run.dir"},
    {"--out", "DIR", "output: merged HF model (+ adapter/ for LoRA); must not exist", "train.out"},
    {"--lr", "X", "peak learning rate", "train.lr"},
    {"--epochs", "N", "epochs", "train.epochs"},
    {"--max-steps", "N", "train for N optimizer steps in total, overriding --epochs (as HF's max_steps)",
     "train.max_steps"},
    {"--pause-after", "N", "checkpoint and stop after N steps in total, writing no output (a rerun continues)",
     "train.pause_after"},
    {"--global-batch", "N", "examples per optimizer step", "train.global_batch"},
    {"--micro-batch", "N", "examples per forward on each rank", "train.micro_batch"},
    {"--cutoff", "N", "max tokens per example", "train.cutoff"},
    {"--val-size", "N", "held-out validation examples", "train.val_size"},
    {"--seed", "S", "seed (default run.seed)", "run.seed"},
    {"--lora-r", "R", "LoRA rank", "lora.r"},
    {"--fault-nan-step", "K", "testing: inject a NaN gradient at iteration K", NULL},
    {"--fault-nan-rank", "R", "testing: the rank that injects it (default 0)", NULL},
    {NULL, NULL, NULL, NULL},
};

/* An option bound to a config key: the flag's value is already the key's
 * (main.c applies it after --config/--set), so these read the key, whose
 * default is the schema's; opt without a key (testing flags) parses the flag
 * with def. */
static int get_float(const dp_app *app, const char *key, double *out) {
    *out = dp_config_float(&app->cfg, key);
    return DP_OK;
}

static int get_int(const dp_app *app, const dp_cmd *cmd, const char *opt, const char *key, long long def,
                   long long *out, dp_err *err) {
    *out = key ? dp_config_int(&app->cfg, key) : def;
    if (key || !opt || !cmd) return DP_OK; /* without cmd: the config alone (healing inside other commands) */
    return dp_cli_opt_int(app, cmd, opt, def, out, err);
}

static const char *str_opt(const dp_app *app, const dp_cmd *cmd, const char *opt, const char *key) {
    const char *s = opt && cmd ? dp_cli_get(app, cmd, opt) : NULL;
    return s ? s : dp_config_str(&app->cfg, key);
}

static const char *default_format(const char *data) {
    size_t n = strlen(data);
    if ((n > 5 && !strcmp(data + n - 5, ".json")) || (n > 6 && !strcmp(data + n - 6, ".jsonl"))) return "alpaca";
    return "text";
}

/* Rank 0 tokenizes; every rank receives the examples. */
static int load_data(const dp_app *app, const char *tok_dir, const char *path, const char *format,
                     const dp_data_opts *dopt, dp_train_data *d, dp_err *err) {
    const dp_mpi *mpi = &app->mpi;
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

static int data_opts(const dp_app *app, const dp_cmd *cmd, dp_data_opts *o, dp_err *err) {
    long long cut = 0;
    int rc = get_int(app, cmd, "--cutoff", "train.cutoff", 256, &cut, err);
    o->cutoff = cut;
    o->train_on_inputs = dp_config_bool(&app->cfg, "train.train_on_inputs");
    o->add_eos = dp_config_bool(&app->cfg, "train.add_eos");
    const char *bos = dp_config_str(&app->cfg, "tokenizer.add_bos");
    o->add_bos = !strcmp(bos, "true") ? 1 : !strcmp(bos, "false") ? 0 : -1;
    o->field = dp_config_str(&app->cfg, "train.text_field");
    if (!rc && (cut < 2 || cut > 1000000)) rc = dp_err_set(err, DP_E_USAGE, "--cutoff must be in [2, 1000000]");
    return rc;
}

/* The dtype the student is stored in (export "auto"). */
static int stored_dtype(const char *dir) {
    dp_st_model st;
    dp_err e;
    if (dp_st_model_open(dir, &st, &e)) return DP_DTYPE_F32;
    const dp_st_tensor *t = dp_st_model_find(&st, "model.embed_tokens.weight");
    int dt = t ? t->dtype : DP_DTYPE_F32;
    dp_st_model_close(&st);
    return dt;
}

typedef struct adapter_ctx {
    const dp_lora *lora;
    const dp_llama *m;
    const dp_layer_map *map;
    const char *base;
    double dropout;
} adapter_ctx;

static int write_adapter(const char *tmp_dir, void *ctx, dp_err *err) {
    adapter_ctx *a = ctx;
    char *dir = dp_path_join(tmp_dir, "adapter");
    int rc = dp_lora_save_peft(dir, a->lora, a->m, a->map, a->base, a->dropout, err);
    dp_free(dir);
    return rc;
}

/* Training options from the command's flags (cmd; NULL: the config only)
 * and the config (train.*, lora.*). */
static int train_opts(const dp_app *app, const dp_cmd *cmd, const char *teacher_dir, const char *cache,
                      dp_train_opts *op, long long *val_size, dp_err *err) {
    dp_train_opts_default(op);
    dp_train_opts o = *op;
    long long li = 0;
    int rc = DP_OK;
    const char *method = str_opt(app, cmd, "--method", "train.method");
    const char *sched = dp_config_str(&app->cfg, "train.schedule");
    const char *targets = dp_config_str(&app->cfg, "lora.targets");
    int no_kd = cmd && dp_cli_get(app, cmd, "--no-kd") != NULL;
    if (!rc && strcmp(method, "lora") && strcmp(method, "full"))
        rc = dp_err_set(err, DP_E_USAGE, "--method must be lora or full, got '%s'", method);
    o.method = !strcmp(method, "full") ? DP_TRAIN_FULL : DP_TRAIN_LORA;
    if (!rc) rc = dp_lora_parse_targets(targets, &o.lora_targets, err);
    if (!rc) rc = get_float(app, "train.lr", &o.lr);
    if (!rc) rc = get_float(app, "train.kd_temp", &o.kd_temp);
    double kd_def = (teacher_dir || cache) && !no_kd ? 0.5 : 0.0;
    /* no schema default: 0.5 with a teacher, else 0 */
    o.kd_alpha = dp_config_has(&app->cfg, "train.kd_alpha") ? dp_config_float(&app->cfg, "train.kd_alpha") : kd_def;
    if (no_kd) o.kd_alpha = 0;
    if (!rc && o.kd_alpha > 0 && !teacher_dir && !cache)
        rc = dp_err_set(err, DP_E_USAGE, "--kd-alpha > 0 needs --teacher DIR or --teacher-cache FILE (or --no-kd)");
    if (!rc) rc = get_float(app, "lora.alpha", &o.lora_alpha);
    if (!rc) rc = get_float(app, "lora.dropout", &o.lora_dropout);
    if (!rc) rc = get_float(app, "train.min_lr_ratio", &o.min_lr_ratio);
    if (!rc) rc = get_float(app, "train.beta1", &o.beta1);
    if (!rc) rc = get_float(app, "train.beta2", &o.beta2);
    if (!rc) rc = get_float(app, "train.eps", &o.eps);
    if (!rc) rc = get_float(app, "train.weight_decay", &o.weight_decay);
    if (!rc) rc = get_float(app, "train.clip", &o.clip);
#define INT_OPT(opt, key, def, field)                                                                                  \
    if (!rc) {                                                                                                         \
        rc = get_int(app, cmd, opt, key, def, &li, err);                                                               \
        o.field = li;                                                                                                  \
    }
    INT_OPT("--kd-topk", "train.kd_topk", 0, kd_topk)
    INT_OPT("--epochs", "train.epochs", 2, epochs)
    INT_OPT("--max-steps", "train.max_steps", 0, max_steps)
    INT_OPT("--pause-after", "train.pause_after", 0, pause_after)
    INT_OPT("--global-batch", "train.global_batch", 64, global_batch)
    INT_OPT("--micro-batch", "train.micro_batch", 4, micro_batch)
    INT_OPT("--lora-r", "lora.r", 8, lora_rank)
    INT_OPT(NULL, "train.warmup", 100, warmup)
    INT_OPT(NULL, "train.log_every", 10, log_every)
    INT_OPT(NULL, "train.val_every", 100, val_every)
    INT_OPT(NULL, "train.ckpt_every", 200, ckpt_every)
    INT_OPT(NULL, "train.keep_ckpt", 2, keep_ckpt)
    INT_OPT(NULL, "train.max_skips", 10, max_skips)
    INT_OPT("--fault-nan-step", NULL, -1, fault_nan_step)
    INT_OPT("--fault-nan-rank", NULL, 0, fault_nan_rank)
#undef INT_OPT
    long long seed = 0;
    if (!rc) rc = get_int(app, cmd, "--seed", "run.seed", 1234, &seed, err);
    if (!rc) rc = get_int(app, cmd, "--val-size", "train.val_size", 2000, val_size, err);
    o.seed = (uint64_t)seed;
    o.teacher_cache = cache;
    o.progress = !dp_config_bool(&app->cfg, "run.quiet");
    o.device = app->device;
    o.sched = !strcmp(sched, "linear")     ? DP_SCHED_LINEAR
              : !strcmp(sched, "constant") ? DP_SCHED_CONSTANT
                                           : DP_SCHED_COSINE;
    if (o.fault_nan_step < 0) o.fault_nan_rank = -1;
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

int dp_cli_train_setup(const dp_app *app, const char *tok_dir, const char *data_path, dp_train_data *d,
                       dp_train_opts *o, dp_err *err) {
    long long vs = 0;
    dp_data_opts dopt;
    memset(&dopt, 0, sizeof dopt);
    memset(d, 0, sizeof *d);
    int rc = train_opts(app, NULL, NULL, NULL, o, &vs, err);
    if (!rc) rc = data_opts(app, NULL, &dopt, err);
    rc = dp_mpi_agree(&app->mpi, rc, err);
    const char *format = dp_config_str(&app->cfg, "train.data_format");
    if (!rc) rc = load_data(app, tok_dir, data_path, format ? format : default_format(data_path), &dopt, d, err);
    return rc;
}

static int run_retrain(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_retrain;
    const dp_mpi *mpi = &app->mpi;
    dp_err err;
    dp_err_clear(&err);
    int rc = DP_OK;
    const char *student_dir = str_opt(app, cmd, "--student", "model.path");
    const char *teacher_dir = str_opt(app, cmd, "--teacher", "train.teacher");
    const char *cache = str_opt(app, cmd, "--teacher-cache", "train.teacher_cache");
    const char *data_path = str_opt(app, cmd, "--data", "train.data");
    const char *run = str_opt(app, cmd, "--run", "run.dir");
    const char *out = str_opt(app, cmd, "--out", "train.out");
    const char *method = str_opt(app, cmd, "--method", "train.method");
    if (!student_dir)
        rc = dp_err_set(&err, DP_E_USAGE, "--student DIR is required");
    else if (!data_path)
        rc = dp_err_set(&err, DP_E_USAGE, "--data FILE is required");
    else if (!out)
        rc = dp_err_set(&err, DP_E_USAGE, "--out DIR is required");
    else if (teacher_dir && cache)
        rc = dp_err_set(&err, DP_E_USAGE, "give --teacher or --teacher-cache, not both");
    const char *format = str_opt(app, cmd, "--data-format", "train.data_format");
    if (!rc && !format) format = default_format(data_path);

    dp_train_opts o;
    long long val_size = 0;
    if (!rc) rc = train_opts(app, cmd, teacher_dir, cache, &o, &val_size, &err);
    o.run_dir = run;
    if (!rc && dp_file_exists(out)) rc = dp_err_set(&err, DP_E_IO, "%s already exists; refusing to overwrite it", out);
    dp_data_opts dopt;
    memset(&dopt, 0, sizeof dopt);
    if (!rc) rc = data_opts(app, cmd, &dopt, &err);
    rc = dp_mpi_agree(mpi, rc, &err);
    if (!rc && mpi->rank == 0) rc = dp_mkdir_p(run, &err);
    rc = dp_mpi_agree(mpi, rc, &err);

    dp_llama student, teacher;
    memset(&student, 0, sizeof student);
    memset(&teacher, 0, sizeof teacher);
    int kd_online = o.kd_alpha > 0 && teacher_dir;
    if (!rc) rc = dp_mpi_agree(mpi, dp_llama_load(student_dir, &student, &err), &err);
    if (!rc && kd_online) {
        rc = dp_mpi_agree(mpi, dp_llama_load(teacher_dir, &teacher, &err), &err);
        if (rc) dp_err_prefix(&err, "teacher");
    }
    if (!rc && dopt.cutoff > student.cfg.max_position_embeddings)
        rc = dp_err_set(&err, DP_E_RANGE, "--cutoff %lld exceeds the student's max_position_embeddings %lld",
                        (long long)dopt.cutoff, (long long)student.cfg.max_position_embeddings);
    dp_train_data d;
    memset(&d, 0, sizeof d);
    if (!rc) rc = load_data(app, student_dir, data_path, format, &dopt, &d, &err);
    if (!rc && kd_online) {
        o.teacher_hash = dp_llama_hash(&teacher);
    }
    if (!rc) o.model_hash = dp_llama_hash(&student);
    int64_t *val = NULL, *train = NULL;
    if (!rc) {
        if (val_size >= d.n)
            rc = dp_err_set(&err, DP_E_CONFIG, "--val-size %lld leaves no training examples (%lld in all)", val_size,
                            (long long)d.n);
        else
            dp_data_split(d.n, val_size, o.seed, &val, &train);
    }
    dp_layer_map map;
    dp_layer_map_all(&map, (int)student.cfg.n_layers);
    dp_lora lora;
    memset(&lora, 0, sizeof lora);
    dp_train_result res;
    memset(&res, 0, sizeof res);
    if (!rc) {
        dp_stop_install_signals();
        rc = dp_train(mpi, &student, &map, kd_online ? &teacher : NULL, &d, train, d.n - val_size, val, val_size, &o,
                      &lora, &res, &err);
    }
    if (!rc && res.stopped && mpi->rank == 0)
        printf("stopped at step %lld with a checkpoint in %s/ckpt; run the same command again to continue\n",
               (long long)res.steps, run);
    if (!rc && !res.stopped) {
        /* the output: merged model (+ PEFT adapter), written by rank 0 */
        if (mpi->rank == 0) {
            if (o.method == DP_TRAIN_LORA) dp_lora_merge(&student, &lora);
            const char *dtype_s = dp_config_str(&app->cfg, "export.dtype");
            int dtype = strcmp(dtype_s, "auto") ? dp_dtype_from_name(dtype_s) : stored_dtype(student_dir);
            dp_st_entry *e = dp_calloc((size_t)student.n_params, sizeof *e, "export");
            for (int i = 0; i < student.n_params; i++) {
                const dp_llama_param *p = &student.params[i];
                e[i].name = p->name;
                e[i].dtype = DP_DTYPE_F32;
                e[i].ndim = p->cols ? 2 : 1;
                e[i].shape[0] = p->rows;
                e[i].shape[1] = p->cols;
                e[i].data = student.mem + p->offset;
            }
            cJSON *pj = cJSON_CreateObject();
            cJSON_AddStringToObject(pj, "retrained_from", student_dir);
            cJSON_AddStringToObject(pj, "method", method);
            cJSON_AddNumberToObject(pj, "kd_alpha", o.kd_alpha);
            cJSON_AddNumberToObject(pj, "kd_temp", o.kd_temp);
            cJSON_AddNumberToObject(pj, "steps", (double)res.steps);
            if (isfinite(res.val_loss)) cJSON_AddNumberToObject(pj, "final_val_loss", res.val_loss);
            cJSON_AddStringToObject(pj, "version", DP_VERSION_STRING);
            char *prov = cJSON_PrintUnformatted(pj);
            cJSON_Delete(pj);
            adapter_ctx ac = {&lora, &student, &map, student_dir, o.lora_dropout};
            dp_export_opts eo = {.keep = NULL,
                                 .dtype = dtype,
                                 .max_shard_bytes = (uint64_t)dp_config_int(&app->cfg, "export.max_shard_bytes"),
                                 .provenance = prov,
                                 .mem = e,
                                 .n_mem = student.n_params,
                                 .finish = o.method == DP_TRAIN_LORA ? write_adapter : NULL,
                                 .finish_ctx = &ac};
            rc = dp_export_model(student_dir, &student.cfg, NULL, out, &eo, &err);
            if (!rc && isfinite(res.val_loss))
                printf("retrained model: %s (%lld steps, final validation loss %.4f)\n", out, (long long)res.steps,
                       res.val_loss);
            else if (!rc)
                printf("retrained model: %s (%lld steps, no validation set: --val-size 0)\n", out,
                       (long long)res.steps);
            dp_free(e);
            free(prov);
        }
        rc = dp_mpi_agree(mpi, rc, &err);
    }
    if (o.method == DP_TRAIN_LORA && lora.mem) dp_lora_free(&lora);
    dp_free(val);
    dp_free(train);
    dp_data_free(&d);
    dp_llama_free(&student);
    if (kd_online) dp_llama_free(&teacher);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_retrain = {
    "retrain",
    "heal a pruned model: data-parallel LoRA or full-parameter training, optional KD from the dense teacher",
    "--student DIR --data FILE [--teacher DIR | --teacher-cache FILE] [--method lora|full] --run RUNDIR --out OUTDIR",
    k_retrain_opts,
    1,
    run_retrain,
    0,
    0};

static const dp_cli_opt k_tc_opts[] = {
    {"--teacher", "DIR", "the dense teacher (HF directory)", "train.teacher"},
    {"--data", "FILE", "training data, as for retrain", "train.data"},
    {"--data-format", "F", "alpaca | text | jsonl-text", "train.data_format"},
    {"--cutoff", "N", "max tokens per example (default 256; must match retrain)", "train.cutoff"},
    {"--topk", "K", "teacher logits kept per token", "train.cache_topk"},
    {"--kd-temp", "T", "temperature of the stored log-sum-exp (default 1; must match retrain)", "train.kd_temp"},
    {"--batch", "N", "examples per forward (default 4)", NULL},
    {"--out", "FILE", "the cache (HDF5); default RUNDIR/teacher.h5", NULL},
    {"--run", "DIR", "run directory (default run.dir)", "run.dir"},
    {NULL, NULL, NULL, NULL},
};

static int run_teacher_cache(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_teacher_cache;
    const dp_mpi *mpi = &app->mpi;
    dp_err err;
    dp_err_clear(&err);
    int rc = DP_OK;
    const char *tdir = str_opt(app, cmd, "--teacher", "train.teacher");
    const char *data_path = str_opt(app, cmd, "--data", "train.data");
    const char *run = str_opt(app, cmd, "--run", "run.dir");
    const char *format = str_opt(app, cmd, "--data-format", "train.data_format");
    if (!tdir)
        rc = dp_err_set(&err, DP_E_USAGE, "--teacher DIR is required");
    else if (!data_path)
        rc = dp_err_set(&err, DP_E_USAGE, "--data FILE is required");
    if (!rc && !format) format = default_format(data_path);
    long long K = 0, batch = 0;
    double temp = 1;
    if (!rc) rc = get_int(app, cmd, "--topk", "train.cache_topk", 64, &K, &err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--batch", dp_config_int(&app->cfg, "train.micro_batch"), &batch, &err);
    if (!rc) rc = get_float(app, "train.kd_temp", &temp);
    if (!rc && (K < 1 || batch < 1)) rc = dp_err_set(&err, DP_E_USAGE, "--topk and --batch must be >= 1");
    dp_data_opts dopt;
    memset(&dopt, 0, sizeof dopt);
    if (!rc) rc = data_opts(app, cmd, &dopt, &err);
    rc = dp_mpi_agree(mpi, rc, &err);
    if (!rc && mpi->rank == 0) rc = dp_mkdir_p(run, &err);
    rc = dp_mpi_agree(mpi, rc, &err);
    char *path = NULL;
    const char *outp = dp_cli_get(app, cmd, "--out");
    path = outp ? dp_strdup(outp, "path") : dp_path_join(run, "teacher.h5");
    dp_llama t;
    memset(&t, 0, sizeof t);
    dp_train_data d;
    memset(&d, 0, sizeof d);
    if (!rc) rc = dp_mpi_agree(mpi, dp_llama_load(tdir, &t, &err), &err);
    if (!rc) rc = load_data(app, tdir, data_path, format, &dopt, &d, &err);
    if (!rc)
        rc = dp_teacher_cache_build(mpi, app->device, &t, dp_llama_hash(&t), &d, K, temp, batch, path,
                                    !dp_config_bool(&app->cfg, "run.quiet"), &err);
    if (!rc && mpi->rank == 0)
        printf("teacher cache: %s (%lld examples, %lld tokens, top-%lld)\n", path, (long long)d.n,
               (long long)d.off[d.n], K);
    dp_free(path);
    dp_data_free(&d);
    dp_llama_free(&t);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_teacher_cache = {
    "teacher-cache",
    "run the dense teacher once over the training data and store its top-k logits (HDF5)",
    "--teacher DIR --data FILE [--topk 64 --kd-temp T --cutoff 256] [--out FILE | --run RUNDIR]",
    k_tc_opts,
    1,
    run_teacher_cache,
    0,
    0};
