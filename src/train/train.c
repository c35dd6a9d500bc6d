/* The data-parallel trainer (see train.h): per step, micro-steps on the
 * engine (CE + KD), gradients reduced to their shard's owner, non-finite
 * steps skipped, clipping, the schedule, AdamW on the owner's shard (ZeRO-1,
 * zero1.c), checkpoints (src/store/ckpt.c) and the log (trainlog.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/ddp.h"
#include "depthprune/engine.h"
#include "depthprune/ops.h"
#include "depthprune/prune.h"
#include "depthprune/store.h"
#include "depthprune/train.h"
#include "internal.h"

void dp_train_opts_default(dp_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->method = DP_TRAIN_LORA;
    o->lora_rank = 8;
    o->lora_alpha = 16;
    o->lora_dropout = 0.05;
    o->lora_targets = (1u << DP_BT_Q) | (1u << DP_BT_K) | (1u << DP_BT_V) | (1u << DP_BT_O) | (1u << DP_BT_GATE) |
                      (1u << DP_BT_UP) | (1u << DP_BT_DOWN);
    o->lr = 1e-4;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    o->clip = 1.0;
    o->warmup = 100;
    o->sched = DP_SCHED_COSINE;
    o->global_batch = 64;
    o->micro_batch = 4;
    o->epochs = 2;
    o->kd_temp = 1.0;
    o->seed = 1234;
    o->log_every = 10;
    o->val_every = 100;
    o->ckpt_every = 200;
    o->keep_ckpt = 2;
    o->max_skips = 10;
    o->fault_nan_rank = -1;
}

uint64_t dp_train_opts_hash(const dp_train_opts *o, uint64_t data_hash) {
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "m%d r%lld a%.17g d%.17g t%u lr%.17g min%.17g b%.17g,%.17g e%.17g wd%.17g c%.17g w%lld s%d "
                     "gb%lld mb%lld ep%lld kd%.17g,%.17g,%lld,%d seed%llu data%llu teacher%llu",
                     o->method, (long long)o->lora_rank, o->lora_alpha, o->lora_dropout, o->lora_targets, o->lr,
                     o->min_lr_ratio, o->beta1, o->beta2, o->eps, o->weight_decay, o->clip, (long long)o->warmup,
                     o->sched, (long long)o->global_batch, (long long)o->micro_batch, (long long)o->epochs, o->kd_alpha,
                     o->kd_temp, (long long)o->kd_topk, o->teacher_cache != NULL, (unsigned long long)o->seed,
                     (unsigned long long)data_hash, (unsigned long long)o->teacher_hash);
    if (o->max_steps > 0) /* the schedule's length; absent (as before) when the epochs decide */
        n += snprintf(buf + n, sizeof buf - (size_t)n, " ms%lld", (long long)o->max_steps);
    return dp_hash_bytes(buf, (size_t)n, 11);
}

/* HF's schedules: the multiplier for 0-based step i (the first optimizer
 * step uses i = 0, so warmup starts from 0). */
static double lr_at(const dp_train_opts *o, int64_t i, int64_t total) {
    if (i < o->warmup) return o->lr * (double)i / (double)(o->warmup > 0 ? o->warmup : 1);
    double span = (double)(total - o->warmup > 1 ? total - o->warmup : 1);
    double p = (double)(i - o->warmup) / span;
    if (p > 1) p = 1;
    double f = 1.0;
    if (o->sched == DP_SCHED_COSINE)
        f = 0.5 * (1.0 + cos(M_PI * p));
    else if (o->sched == DP_SCHED_LINEAR)
        f = 1.0 - p;
    return o->lr * (o->min_lr_ratio + (1.0 - o->min_lr_ratio) * f);
}

/* ---------------- evaluation ---------------- */

/* Mean validation loss with the engine's current weights and adapters;
 * ranks take contiguous example ranges, sums combined in rank order. */
static double eval_loss(const dp_mpi *mpi, dp_engine *e, const dp_layer_map *map, const dp_train_data *d,
                        const int64_t *idx, int64_t n, int64_t mb) {
    int64_t e0 = n * mpi->rank / mpi->size, e1 = n * (mpi->rank + 1) / mpi->size;
    double part[2] = {0, 0}; /* nll sum, count */
    dp_err err;
    batch b = {.B = mb};
    b.tokens = dp_malloc((size_t)(mb * d->max_len) * sizeof(int32_t), "batch");
    b.targets = dp_malloc((size_t)(mb * d->max_len) * sizeof(int32_t), "batch");
    b.keys = dp_malloc((size_t)(mb * d->max_len) * sizeof(uint64_t), "batch");
    for (int64_t i = e0; i < e1; i += mb) {
        int64_t k = e1 - i < mb ? e1 - i : mb;
        dp_build_batch(&b, d, idx + i, k, d->max_len, 0, 0);
        double unused = 0;
        dp_micro x = {.tokens = b.tokens, .targets = b.targets, .B = mb, .T = b.T, .temp = 1.0, .gscale = 1.0};
        if (dp_engine_micro(e, map, &x, &part[0], &unused, &err)) dp_fatal("evaluation: %s", err.msg);
        for (int64_t r = 0; r < b.B * b.T; r++) part[1] += b.targets[r] >= 0;
    }
    double *all = dp_malloc((size_t)mpi->size * 2 * sizeof(double), "eval");
    DP_CHECK_MPI(MPI_Allgather(part, 2, MPI_DOUBLE, all, 2, MPI_DOUBLE, mpi->comm));
    double nll = 0, cnt = 0;
    for (int r = 0; r < mpi->size; r++) { /* rank order: the same sum everywhere */
        nll += all[2 * r];
        cnt += all[2 * r + 1];
    }
    dp_free(all);
    dp_free(b.tokens);
    dp_free(b.targets);
    dp_free(b.keys);
    return cnt > 0 ? nll / cnt : NAN;
}

static void ddp_sum(void *ctx, float *dev, int64_t n) {
    dp_ddp_allreduce_sum(ctx, dev, n);
}

/* ---------------- training ---------------- */

static int all_finite(const float *x, int64_t n) {
    int ok = 1;
#pragma omp parallel for reduction(&& : ok) schedule(static)
    for (int64_t i = 0; i < n; i++) ok = ok && isfinite(x[i]);
    return ok;
}

int dp_train(const dp_mpi *mpi, dp_llama *student, const dp_layer_map *map, const dp_llama *teacher,
             const dp_train_data *d, const int64_t *train_idx, int64_t n_train, const int64_t *val_idx, int64_t n_val,
             const dp_train_opts *o, dp_lora *lora, dp_train_result *res, dp_err *err) {
    memset(res, 0, sizeof *res);
    res->val_loss = NAN; /* stays NaN without a validation set */
    memset(lora, 0, sizeof *lora);
    int P = mpi->size;
    int64_t G = o->global_batch, mb = o->micro_batch, V = student->cfg.vocab_size;
    if (G < 1 || mb < 1 || G % ((int64_t)P * mb))
        return dp_err_set(err, DP_E_CONFIG, "global batch %lld must be a multiple of ranks (%d) x micro batch (%lld)",
                          (long long)G, P, (long long)mb);
    int64_t spe = n_train / G, total = o->max_steps > 0 ? o->max_steps : spe * o->epochs;
    if (spe < 1)
        return dp_err_set(err, DP_E_CONFIG, "%lld training examples do not fill one global batch of %lld",
                          (long long)n_train, (long long)G);
    if (o->epochs < 1) return dp_err_set(err, DP_E_CONFIG, "epochs must be at least 1");
    if (!(o->kd_alpha >= 0 && o->kd_alpha <= 1)) return dp_err_set(err, DP_E_CONFIG, "KD alpha must be in [0, 1]");
    if (!(o->kd_temp > 0)) return dp_err_set(err, DP_E_CONFIG, "KD temperature must be positive");
    int kd = o->kd_alpha > 0;
    if (kd && !teacher && !o->teacher_cache)
        return dp_err_set(err, DP_E_CONFIG, "KD needs a teacher model or a teacher cache");
    if (kd && teacher && teacher->cfg.vocab_size != V)
        return dp_err_set(err, DP_E_MISMATCH, "teacher vocabulary %lld differs from the student's %lld",
                          (long long)teacher->cfg.vocab_size, (long long)V);
    if (o->lora_dropout < 0 || o->lora_dropout >= 1)
        return dp_err_set(err, DP_E_CONFIG, "LoRA dropout must be in [0, 1)");
    if (o->device == DP_DEVICE_CUDA && kd && teacher && o->kd_topk < 1)
        return dp_err_set(err, DP_E_UNSUPPORTED,
                          "online KD over the full vocabulary is not implemented on --device cuda; "
                          "use the teacher's top-k (--kd-topk K) or a teacher cache");
    int64_t per_rank = G / P, n_micro = per_rank / mb, tmax = d->max_len;
    int rc = DP_OK;

    /* the trainable vector */
    /* the trainable vector, sharded (ZeRO-1), and its gradients (the engine's) */
    dp_ckpt_vec tr = {.mpi = mpi,
                      .run_dir = o->run_dir,
                      .cfg_hash = dp_train_opts_hash(o, d->hash),
                      .model_hash = o->model_hash,
                      .seed = o->seed,
                      .keep = o->keep_ckpt};
    float *grad = NULL;
    if (o->method == DP_TRAIN_LORA) {
        rc = dp_lora_init(lora, student, map, o->lora_rank, o->lora_alpha, o->lora_targets, err);
        if (rc) return rc;
        dp_lora_init_random(lora, student, o->seed);
        lora->dropout = o->lora_dropout;
        tr.n = lora->n_elems;
        tr.p = lora->mem;
    } else {
        tr.n = student->n_elems;
        tr.p = student->mem;
    }
    dp_shard_range(tr.n, mpi->rank, P, &tr.s0, &tr.s1);
    tr.m = dp_calloc((size_t)(tr.s1 - tr.s0 + 1), sizeof(float), "adam m");
    tr.v = dp_calloc((size_t)(tr.s1 - tr.s0 + 1), sizeof(float), "adam v");

    dp_lora *L = o->method == DP_TRAIN_LORA ? lora : NULL;
    dp_layer_map tmap;
    if (kd && teacher) dp_layer_map_model(&tmap, &teacher->cfg);
    tcache tc;
    memset(&tc, 0, sizeof tc);
    if (!rc && kd && !teacher) rc = dp_tcache_open(&tc, o->teacher_cache, d, o->kd_temp, err);
    int64_t K = kd ? (teacher ? o->kd_topk : tc.K) : 0;
    if (!rc && K > V) rc = dp_err_set(err, DP_E_CONFIG, "KD top-k %lld exceeds the vocabulary", (long long)K);
    rc = dp_mpi_agree(mpi, rc, err);

    batch b = {.B = mb};
    b.tokens = dp_malloc((size_t)(mb * tmax) * sizeof(int32_t), "batch");
    b.targets = dp_malloc((size_t)(mb * tmax) * sizeof(int32_t), "batch");
    b.keys = dp_malloc((size_t)(mb * tmax) * sizeof(uint64_t), "batch");
    int cached = kd && !teacher; /* KD rows from the teacher cache */
    int32_t *kidx = cached ? dp_calloc((size_t)(mb * tmax * K), sizeof(int32_t), "kd") : NULL;
    float *kval = cached ? dp_calloc((size_t)(mb * tmax * K), sizeof(float), "kd") : NULL;
    float *klse = cached ? dp_calloc((size_t)(mb * tmax), sizeof(float), "kd") : NULL;
    int64_t *perm = dp_malloc((size_t)n_train * sizeof(int64_t), "perm");
    int64_t *gex = dp_malloc((size_t)G * sizeof(int64_t), "batch");
    double *gath = dp_malloc((size_t)P * 6 * sizeof(double), "gather");

    dp_ckpt_state cs = {0, 0, 0, 0};
    int resumed = 0;
    if (!rc) rc = dp_ckpt_resume(&tr, &cs, &resumed, err);
    if (!rc && mpi->rank == 0) {
        dp_trainlog_truncate(o->run_dir, resumed ? cs.it : -1);
    }
    if (!rc && mpi->rank == 0)
        dp_log("training: %s, %lld trainable values, %lld examples (%lld validation), %lld steps/epoch x %lld epochs, "
               "global batch %lld = %d ranks x %lld micro x %lld accumulation%s",
               o->method == DP_TRAIN_LORA ? "LoRA" : "full", (long long)tr.n, (long long)n_train, (long long)n_val,
               (long long)spe, (long long)o->epochs, (long long)G, P, (long long)mb, (long long)n_micro,
               kd ? (teacher ? (K ? ", KD online top-k" : ", KD online") : ", KD from teacher cache") : "");
    /* the engines, opened after the resume so they hold the resumed values */
    dp_engine e, te;
    memset(&e, 0, sizeof e);
    memset(&te, 0, sizeof te);
    dp_engine_plan plan = {.B = mb,
                           .T = tmax,
                           .n_blocks = map->n,
                           .allow_long = 1,
                           .local_rank = mpi->local_rank,
                           .train = 1,
                           .lora = L,
                           .full = !L,
                           .K = K};
    if (!rc) rc = dp_engine_open(&e, o->device, student, &plan, err);
    if (!rc && kd && teacher) {
        dp_engine_plan tp = {.B = mb, .T = tmax, .allow_long = 1, .local_rank = mpi->local_rank, .logits = 1};
        rc = dp_engine_open(&te, o->device, teacher, &tp, err);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    grad = e.grad;
    if (!rc && mpi->rank == 0 && o->device == DP_DEVICE_CUDA)
        dp_log("training on the GPU: %.2f GiB of device memory",
               (double)(dp_engine_device_bytes(&e) + dp_engine_device_bytes(&te)) / 1073741824.0);
    /* gradients summed on the GPUs over NCCL, not through the host */
    dp_ddp ddp;
    memset(&ddp, 0, sizeof ddp);
    int use_nccl = 0;
    if (!rc && o->device == DP_DEVICE_CUDA && P > 1 && dp_ddp_available()) {
        rc = dp_ddp_init(&ddp, mpi, 600.0, err);
        use_nccl = rc == DP_OK;
        e.allreduce = use_nccl ? ddp_sum : NULL;
        e.allreduce_ctx = &ddp;
    }
    int64_t cur_epoch = -1;
    double t_start = dp_time_s();
    int64_t it0 = cs.it;
    double last_loss = NAN;
    for (int64_t it = cs.it; !rc && it < total; it++) {
        if (o->pause_after > 0 && it >= o->pause_after) {
            res->stopped = 1;
            break;
        }
        int64_t epoch = it / spe, pos = it % spe;
        if (epoch != cur_epoch) {
            dp_permutation(perm, n_train, o->seed * 1000003ull + (uint64_t)epoch);
            cur_epoch = epoch;
        }
        for (int64_t i = 0; i < G; i++) gex[i] = train_idx[perm[pos * G + i]];
        double D = (double)dp_counted_tokens(d, gex, G);
        dp_engine_zero_grad(&e);
        double ce_sum = 0, kd_sum = 0, real = 0;
        for (int64_t mi = 0; mi < n_micro && !rc; mi++) {
            const int64_t *ex = gex + mpi->rank * per_rank + mi * mb;
            dp_build_batch(&b, d, ex, mb, tmax, o->seed, it);
            real += (double)b.n_real;
            int64_t Nr = mb * b.T;
            if (cached) {
                memset(kidx, 0, (size_t)(Nr * K) * sizeof(int32_t));
                rc = dp_tcache_fill(&tc, d, ex, mb, b.T, kidx, kval, klse, err);
                for (int64_t r = 0; !rc && r < Nr * K; r++)
                    if (kidx[r] >= V)
                        rc = dp_err_set(err, DP_E_FORMAT, "teacher cache: token index outside the vocabulary");
                if (rc) break;
            }
            dp_micro x = {.tokens = b.tokens,
                          .targets = b.targets,
                          .keys = L && L->dropout > 0 ? b.keys : NULL,
                          .B = mb,
                          .T = b.T,
                          .tidx = kidx,
                          .tval = kval,
                          .tlse = klse,
                          .teacher = kd && teacher ? &te : NULL,
                          .teacher_map = &tmap,
                          .alpha = o->kd_alpha,
                          .temp = o->kd_temp,
                          .gscale = 1.0 / (D > 0 ? D : 1),
                          .backward = 1};
            rc = dp_engine_micro(&e, map, &x, &ce_sum, &kd_sum, err);
        }
        /* every rank's verdict before the flush: it may be a collective (NCCL) a failed rank would skip */
        rc = dp_mpi_agree(mpi, rc, err);
        if (rc) break;
        dp_engine_grad_flush(&e);
        dp_fault_point("train_step");
        int injected = it == o->fault_nan_step && mpi->rank == o->fault_nan_rank;
        if (injected) {
            grad[0] = NAN;
            dp_log("fault injection: NaN gradient at iteration %lld", (long long)it);
        }
        /* this rank's gradients before any sum (a summed NaN is everyone's) */
        int grad_ok = e.grad_summed ? e.grad_nonfinite == 0 && !injected : all_finite(grad, tr.n);
        double local_bad = !(isfinite(ce_sum) && isfinite(kd_sum) && grad_ok);
        if (!e.grad_summed) dp_reduce_to_owners(mpi, grad, tr.n); /* else NCCL summed them on every rank */
        double sq = 0;
        for (int64_t i = tr.s0; i < tr.s1; i++) sq += (double)grad[i] * grad[i];
        double mine[6] = {local_bad, sq, ce_sum, kd_sum, real, (double)dp_stop_signal()};
        DP_CHECK_MPI(MPI_Allgather(mine, 6, MPI_DOUBLE, gath, 6, MPI_DOUBLE, mpi->comm));
        double tot[6] = {0, 0, 0, 0, 0, 0};
        int first_bad = -1;
        for (int r = 0; r < P; r++) {
            for (int k = 0; k < 6; k++) tot[k] += gath[6 * r + k];
            if (gath[6 * r] > 0 && first_bad < 0) first_bad = r;
        }
        double gnorm = sqrt(tot[1]);
        int bad = first_bad >= 0 || !isfinite(gnorm);
        double lr = lr_at(o, it, total);
        double ce = tot[2] / (D > 0 ? D : 1), kdl = tot[3] / (D > 0 ? D : 1);
        double loss = kd ? (1 - o->kd_alpha) * ce + o->kd_alpha * kdl : ce;
        if (bad) {
            cs.skipped++;
            cs.consec++;
            if (mpi->rank == 0)
                dp_log(
                    "step %lld: non-finite %s (first seen on rank %d); step skipped, weights and optimizer unchanged "
                    "(%lld consecutive, %lld in total)",
                    (long long)it + 1, first_bad >= 0 ? "loss or gradient" : "gradient norm",
                    first_bad >= 0 ? first_bad : 0, (long long)cs.consec, (long long)cs.skipped);
            if (cs.consec > o->max_skips) {
                rc = dp_err_set(err, DP_E_NONFINITE,
                                "%lld consecutive non-finite steps (limit %lld); stopping. The last good checkpoint "
                                "is in %s/ckpt",
                                (long long)cs.consec, (long long)o->max_skips, o->run_dir);
                break;
            }
        } else {
            cs.consec = 0;
            if (o->clip > 0 && gnorm > 0) {
                double coef = o->clip / (gnorm + 1e-6);
                if (coef < 1.0) {
                    float c = (float)coef;
                    for (int64_t i = tr.s0; i < tr.s1; i++) grad[i] *= c;
                }
            }
            cs.opt_step++;
            dp_shard_update(&tr, grad, student, o, lr, cs.opt_step);
            dp_bcast_from_owners(mpi, tr.p, tr.n);
            dp_engine_params_changed(&e);
            last_loss = loss;
        }
        cs.it = it + 1;
        double el = dp_time_s() - t_start;
        if (mpi->rank == 0) {
            char line[512];
            double rate = el > 0 ? tot[4] / (el / (double)(cs.it - it0)) : 0;
            snprintf(
                line, sizeof line,
                "{\"step\":%lld,\"epoch\":%.6f,\"loss\":%.9g,\"ce\":%.9g,\"kd\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,"
                "\"skipped\":%d,\"tokens\":%.0f,\"time_s\":%.3f,\"tok_s\":%.1f}\n",
                (long long)cs.it, (double)cs.it / (double)spe, loss, ce, kdl, lr, gnorm, bad, tot[4], el, rate);
            dp_trainlog_line(o->run_dir, line);
            if (o->progress && (cs.it % (o->log_every > 0 ? o->log_every : 1) == 0 || cs.it == total))
                dp_log("step %lld/%lld epoch %.2f loss %.4f (ce %.4f kd %.4f) lr %.3g grad-norm %.3f %.0f tok/s ETA "
                       "%.0f s",
                       (long long)cs.it, (long long)total, (double)cs.it / (double)spe, loss, ce, kdl, lr, gnorm, rate,
                       el / (double)(cs.it - it0) * (double)(total - cs.it));
        }
        if (n_val > 0 && o->val_every > 0 && cs.it % o->val_every == 0 && cs.it < total) {
            double vl = eval_loss(mpi, &e, map, d, val_idx, n_val, mb);
            if (mpi->rank == 0) {
                char line[128];
                snprintf(line, sizeof line, "{\"step\":%lld,\"val_loss\":%.9g}\n", (long long)cs.it, vl);
                dp_trainlog_line(o->run_dir, line);
                if (o->progress) dp_log("step %lld: validation loss %.4f", (long long)cs.it, vl);
            }
        }
        int stop = tot[5] > 0;
        if ((o->ckpt_every > 0 && cs.it % o->ckpt_every == 0) || stop || cs.it == total ||
            (o->pause_after > 0 && cs.it == o->pause_after))
            rc = dp_ckpt_write(&tr, &cs, err);
        if (!rc && stop) {
            if (mpi->rank == 0)
                dp_log("stop requested by a signal: checkpoint at iteration %lld written, exiting", (long long)cs.it);
            res->stopped = 1;
            break;
        }
        if (!rc && o->pause_after > 0 && cs.it == o->pause_after && cs.it < total) {
            res->stopped = 1;
            break;
        }
    }
    if (!rc && !res->stopped && cs.it < total) res->stopped = 1;
    if (!rc && !res->stopped) {
        if (n_val > 0) {
            res->val_loss = eval_loss(mpi, &e, map, d, val_idx, n_val, mb);
            if (mpi->rank == 0) {
                char line[128];
                snprintf(line, sizeof line, "{\"step\":%lld,\"val_loss\":%.9g}\n", (long long)cs.it, res->val_loss);
                dp_trainlog_line(o->run_dir, line);
                dp_log("final validation loss %.4f", res->val_loss);
            }
        }
        if (mpi->rank == 0) dp_trainlog_plot(o->run_dir);
    }
    res->steps = cs.it;
    res->skipped = cs.skipped;
    res->last_loss = last_loss;
    if (tc.open) dp_h5_close(&tc.h);
    dp_free(gath);
    dp_free(gex);
    dp_free(perm);
    dp_free(kidx);
    dp_free(kval);
    dp_free(klse);
    dp_free(b.tokens);
    dp_free(b.targets);
    dp_free(b.keys);
    if (use_nccl) dp_ddp_free(&ddp);
    dp_engine_close(&e);
    dp_engine_close(&te);
    dp_free(tr.m);
    dp_free(tr.v);
    return rc;
}
