/* The retraining stages: heal a pruned model (LoRA or full-parameter, with
 * or without KD, online or from a cache) into a merged HF model (+ a PEFT
 * adapter for LoRA), and the teacher cache (the dense teacher's top-k
 * logits over the training set, once, for every student of a sweep). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/export.h"
#include "depthprune/safetensors.h"
#include "internal.h"

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

void dp_retrain_job_init(const dp_config *c, dp_retrain_job *j) {
    *j = (dp_retrain_job){.student = dp_config_str(c, "model.path"),
                          .teacher = dp_config_str(c, "train.teacher"),
                          .teacher_cache = dp_config_str(c, "train.teacher_cache"),
                          .data = dp_config_str(c, "train.data"),
                          .data_format = dp_config_str(c, "train.data_format"),
                          .run = dp_config_str(c, "run.dir"),
                          .out = dp_config_str(c, "train.out"),
                          .fault_nan_step = -1,
                          .fault_nan_rank = -1};
}

/* The merged tensors of a stored-dtype student (LoRA over frozen stored weights): each adapted
 * tensor upcast, merged and converted to the output dtype, the same operations in the same
 * order as merging an fp32 copy and exporting it, so the files are bit-identical; only the
 * adapted tensors are held, in the output dtype. The rest leave the mapping as they are. */
static dp_st_entry *merged_entries(const dp_llama *m, const dp_lora *l, int dtype, int *n_out, void ***owned) {
    int n = 0, cap = (int)m->cfg.n_layers * DP_LLAMA_BLOCK_TENSORS;
    dp_st_entry *e = dp_calloc((size_t)(cap ? cap : 1), sizeof *e, "export");
    void **own = dp_calloc((size_t)(cap ? cap : 1), sizeof(void *), "export");
    for (int i = 0; i < m->cfg.n_layers; i++)
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
            if (!l->a[i][k]) continue;
            const dp_llama_param *w = dp_llama_block_param(m, i, k);
            float *f = dp_malloc((size_t)w->n_elems * sizeof(float), "export");
            dp_llama_read_f32(m, w->offset, w->n_elems, f);
            dp_lora_merge_tensor(l, i, k, f, w->rows, w->cols);
            if (dtype != DP_DTYPE_F32) {
                void *conv = dp_malloc((size_t)w->n_elems * dp_dtype_size((dp_dtype)dtype) + 1, "export");
                dp_convert_from_f32(conv, (dp_dtype)dtype, f, (size_t)w->n_elems);
                dp_free(f);
                f = conv;
            }
            own[n] = f;
            e[n] = (dp_st_entry){
                .name = w->name, .dtype = (dp_dtype)dtype, .ndim = 2, .shape = {w->rows, w->cols}, .data = f};
            n++;
        }
    *n_out = n;
    *owned = own;
    return e;
}

int dp_pipe_retrain(const dp_pipe *p, const dp_retrain_job *j, int *stopped, dp_err *err) {
    const dp_mpi *mpi = p->mpi;
    int rc = DP_OK;
    const char *student_dir = j->student, *teacher_dir = j->teacher, *cache = j->teacher_cache;
    const char *data_path = j->data, *run = j->run, *out = j->out;
    const char *method = dp_config_str(p->cfg, "train.method");
    *stopped = 0;
    if (!student_dir)
        rc = dp_err_set(err, DP_E_USAGE, "--student DIR is required");
    else if (!data_path)
        rc = dp_err_set(err, DP_E_USAGE, "--data FILE is required");
    else if (!out)
        rc = dp_err_set(err, DP_E_USAGE, "--out DIR is required");
    else if (teacher_dir && cache)
        rc = dp_err_set(err, DP_E_USAGE, "give --teacher or --teacher-cache, not both");
    const char *format = j->data_format;
    if (!rc && !format) format = dp_pipe_data_format(data_path);

    dp_train_opts o;
    int64_t val_size = 0;
    if (!rc) rc = dp_pipe_train_opts(p, teacher_dir, cache, j->no_kd, &o, &val_size, err);
    o.fault_nan_step = j->fault_nan_step;
    o.fault_nan_rank = j->fault_nan_step < 0 ? -1 : j->fault_nan_rank < 0 ? 0 : j->fault_nan_rank;
    o.run_dir = run;
    if (!rc && dp_file_exists(out)) rc = dp_err_set(err, DP_E_IO, "%s already exists; refusing to overwrite it", out);
    dp_data_opts dopt;
    memset(&dopt, 0, sizeof dopt);
    if (!rc) rc = dp_pipe_data_opts(p, &dopt, err);
    rc = dp_mpi_agree(mpi, rc, err);
    if (!rc && mpi->rank == 0) rc = dp_mkdir_p(run, err);
    rc = dp_mpi_agree(mpi, rc, err);

    dp_llama student, teacher;
    memset(&student, 0, sizeof student);
    memset(&teacher, 0, sizeof teacher);
    int kd_online = o.kd_alpha > 0 && teacher_dir;
    /* LoRA leaves the base frozen: its weights can stay as stored (model.weights); full
     * training updates them in fp32 */
    if (!rc)
        rc = dp_mpi_agree(mpi,
                          o.method == DP_TRAIN_LORA ? dp_pipe_load_frozen(p, student_dir, &student, err)
                                                    : dp_llama_load(student_dir, &student, err),
                          err);
    if (!rc && kd_online) {
        rc = dp_mpi_agree(mpi, dp_pipe_load_frozen(p, teacher_dir, &teacher, err), err);
        if (rc) dp_err_prefix(err, "teacher");
    }
    if (!rc && dopt.cutoff > student.cfg.max_position_embeddings)
        rc = dp_err_set(err, DP_E_RANGE, "--cutoff %lld exceeds the student's max_position_embeddings %lld",
                        (long long)dopt.cutoff, (long long)student.cfg.max_position_embeddings);
    dp_train_data d;
    memset(&d, 0, sizeof d);
    if (!rc) rc = dp_pipe_load_data(p, student_dir, data_path, format, &dopt, &d, err);
    if (!rc && kd_online) {
        o.teacher_hash = dp_llama_hash(&teacher);
    }
    if (!rc) o.model_hash = dp_llama_hash(&student);
    int64_t *val = NULL, *train = NULL;
    if (!rc) {
        if (val_size >= d.n)
            rc = dp_err_set(err, DP_E_CONFIG, "--val-size %lld leaves no training examples (%lld in all)",
                            (long long)val_size, (long long)d.n);
        else
            dp_data_split(d.n, val_size, o.seed, &val, &train);
    }
    dp_layer_map map;
    dp_layer_map_model(&map, &student.cfg);
    dp_lora lora;
    memset(&lora, 0, sizeof lora);
    dp_train_result res;
    memset(&res, 0, sizeof res);
    if (!rc) {
        dp_stop_install_signals();
        rc = dp_train(mpi, &student, &map, kd_online ? &teacher : NULL, &d, train, d.n - val_size, val, val_size, &o,
                      &lora, &res, err);
    }
    if (!rc) *stopped = res.stopped;
    if (!rc && res.stopped && mpi->rank == 0)
        printf("stopped at step %lld with a checkpoint in %s/ckpt; run the same command again to continue\n",
               (long long)res.steps, run);
    if (!rc && !res.stopped) {
        /* the output: merged model (+ PEFT adapter), written by rank 0 */
        if (mpi->rank == 0) {
            const char *dtype_s = dp_config_str(p->cfg, "export.dtype");
            int dtype = strcmp(dtype_s, "auto") ? dp_dtype_from_name(dtype_s) : dp_pipe_stored_dtype(student_dir);
            dp_st_entry *e;
            int n_e = student.n_params;
            void **merged = NULL;
            if (student.store) {
                e = merged_entries(&student, &lora, dtype, &n_e, &merged);
            } else {
                if (o.method == DP_TRAIN_LORA) dp_lora_merge(&student, &lora);
                e = dp_pipe_model_entries(&student);
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
                                 .max_shard_bytes = (uint64_t)dp_config_int(p->cfg, "export.max_shard_bytes"),
                                 .provenance = prov,
                                 .mem = e,
                                 .n_mem = n_e,
                                 .finish = o.method == DP_TRAIN_LORA ? write_adapter : NULL,
                                 .finish_ctx = &ac};
            rc = dp_export_model(student_dir, &student.cfg, student.store, out, &eo, err);
            if (!rc && isfinite(res.val_loss))
                printf("retrained model: %s (%lld steps, final validation loss %.4f)\n", out, (long long)res.steps,
                       res.val_loss);
            else if (!rc)
                printf("retrained model: %s (%lld steps, no validation set: --val-size 0)\n", out,
                       (long long)res.steps);
            for (int i = 0; merged && i < n_e; i++) dp_free(merged[i]);
            dp_free(merged);
            dp_free(e);
            free(prov);
        }
        rc = dp_mpi_agree(mpi, rc, err);
    }
    if (o.method == DP_TRAIN_LORA && lora.mem) dp_lora_free(&lora);
    dp_free(val);
    dp_free(train);
    dp_data_free(&d);
    dp_llama_free(&student);
    if (kd_online) dp_llama_free(&teacher);
    return rc;
}

void dp_teacher_job_init(const dp_config *c, dp_teacher_job *j) {
    *j = (dp_teacher_job){.teacher = dp_config_str(c, "train.teacher"),
                          .data = dp_config_str(c, "train.data"),
                          .data_format = dp_config_str(c, "train.data_format"),
                          .topk = dp_config_int(c, "train.cache_topk"),
                          .batch = dp_config_int(c, "train.micro_batch")};
}

int dp_pipe_teacher_cache(const dp_pipe *p, const dp_teacher_job *j, dp_err *err) {
    const dp_mpi *mpi = p->mpi;
    int rc = DP_OK;
    const char *tdir = j->teacher, *data_path = j->data, *format = j->data_format, *path = j->out;
    if (!tdir)
        rc = dp_err_set(err, DP_E_USAGE, "--teacher DIR is required");
    else if (!data_path)
        rc = dp_err_set(err, DP_E_USAGE, "--data FILE is required");
    else if (!path)
        rc = dp_err_set(err, DP_E_USAGE, "--out FILE is required");
    if (!rc && !format) format = dp_pipe_data_format(data_path);
    int64_t K = j->topk, batch = j->batch;
    double temp = dp_config_float(p->cfg, "train.kd_temp");
    if (!rc && (K < 1 || batch < 1)) rc = dp_err_set(err, DP_E_USAGE, "--topk and --batch must be >= 1");
    dp_data_opts dopt;
    memset(&dopt, 0, sizeof dopt);
    if (!rc) rc = dp_pipe_data_opts(p, &dopt, err);
    rc = dp_mpi_agree(mpi, rc, err);
    char *dir = rc ? NULL : dp_path_dirname(path);
    if (!rc && mpi->rank == 0) rc = dp_mkdir_p(dir, err);
    dp_free(dir);
    rc = dp_mpi_agree(mpi, rc, err);
    dp_llama t;
    memset(&t, 0, sizeof t);
    dp_train_data d;
    memset(&d, 0, sizeof d);
    if (!rc) rc = dp_mpi_agree(mpi, dp_pipe_load_frozen(p, tdir, &t, err), err);
    if (!rc) rc = dp_pipe_load_data(p, tdir, data_path, format, &dopt, &d, err);
    if (!rc)
        rc = dp_teacher_cache_build(mpi, p->device, &t, dp_llama_hash(&t), &d, K, temp, batch, path,
                                    !dp_config_bool(p->cfg, "run.quiet"), err);
    if (!rc && mpi->rank == 0)
        printf("teacher cache: %s (%lld examples, %lld tokens, top-%lld)\n", path, (long long)d.n,
               (long long)d.off[d.n], (long long)K);
    dp_data_free(&d);
    dp_llama_free(&t);
    return rc;
}
