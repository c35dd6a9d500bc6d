/* `depthprune sweep`: the ablation study as one job. A grid of criterion x
 * ratio x schedule x retraining x KD x seed; the world's ranks are split into
 * groups (MPI_Comm_split) that take whole configurations, assigned by
 * estimated cost (longest first, to the least loaded group), and run each
 * data-parallel inside the group. Calibration, scores and the teacher cache
 * are computed once for all; the dense weights are loaded once per rank.
 * Each configuration writes RUNDIR/configs/NAME/result.json when done and is
 * never redone; the end result is RUNDIR/sweep.json, sweep.md, sweep.csv and
 * a PPL-vs-ratio plot. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "depthprune/engine.h"
#include "depthprune/eval.h"
#include "depthprune/generate.h"
#include "depthprune/prune.h"
#include "depthprune/store.h"
#include "depthprune/train.h"
#include "depthprune/width.h"
#include "internal.h"

typedef struct sweep_cfg {
    char name[128];
    char crit[32];
    double ratio;
    dp_prune_schedule schedule;
    dp_retrain_kind retrain;
    int kd;
    int units; /* 1: sub-layers (one-shot, from RUN/sublayer/scores.json) */
    long long seed;
    double cost;
    int group;
} sweep_cfg;

static const char *const k_retrain[] = {"none", "lora", "full"};
static const char *const k_sched[] = {"one-shot", "iterative", "width", "dense"};
static const char *const k_sched_short[] = {"oneshot", "iterative", "width", "dense"};

static int list_str(const dp_pipe *p, const char *key, int i, const char **out) {
    if (i >= dp_config_list_len(p->cfg, key)) return 0;
    *out = dp_config_list_item(p->cfg, key, i);
    return 1;
}

/* Records a grid cell that is not run, once (skipped: "- cell: why\n" lines). */
static void skip_cell(dp_buf *skipped, const char *cell, const char *why) {
    char line[512];
    snprintf(line, sizeof line, "- %s: %s\n", cell, why);
    if (!skipped->p || !strstr(skipped->p, line)) dp_buf_puts(skipped, line);
}

/* The grid, deduplicated: iterative uses ppl only; KD only with retraining.
 * The cells of the configured lists that are not run are listed in skipped. */
static int build_grid(const dp_pipe *p, int L, sweep_cfg **out, int *n_out, dp_buf *skipped, dp_err *err) {
    int cap = 64, n = 0;
    sweep_cfg *v = dp_calloc((size_t)cap, sizeof *v, "sweep");
    const char *sched, *crit, *rs, *rt, *kds;
    for (int is = 0; list_str(p, "sweep.schedules", is, &sched); is++) {
        dp_prune_schedule iter = !strcmp(sched, "iterative") ? DP_PRUNE_ITERATIVE
                                 : !strcmp(sched, "width")   ? DP_PRUNE_WIDTH
                                                             : DP_PRUNE_ONE_SHOT;
        if (!iter && strcmp(sched, "one-shot")) {
            dp_free(v);
            return dp_err_set(err, DP_E_CONFIG, "sweep.schedules: '%s' is not one-shot, iterative or width", sched);
        }
        /* width: the LLM-Pruner baseline, parameter-matched to removing round(ratio * L) blocks */
        const char *crit_key = iter == 2 ? "sweep.width_criteria" : "sweep.criteria";
        for (int ic = 0; list_str(p, crit_key, ic, &crit); ic++) {
            if (iter == DP_PRUNE_ITERATIVE && strcmp(crit, "ppl")) { /* iterative scores by PPL as it goes */
                char cell[96];
                snprintf(cell, sizeof cell, "%s x iterative", crit);
                skip_cell(skipped, cell,
                          "not run: iterative pruning re-scores the remaining blocks by PPL after every "
                          "removal (ppl x iterative is that cell); iterative re-scoring by other "
                          "criteria is not implemented");
                continue;
            }
            if (iter == 2 && dp_width_crit_parse(crit) < 0) {
                dp_free(v);
                return dp_err_set(err, DP_E_CONFIG,
                                  "sweep.width_criteria: '%s' is not param_first, param_second, "
                                  "param_mix, l1, l2 or random",
                                  crit);
            }
            for (int ir = 0; list_str(p, "sweep.ratios", ir, &rs); ir++) {
                char *end;
                double ratio = strtod(rs, &end);
                if (!*rs || *end || !(ratio > 0 && ratio < 1)) {
                    dp_free(v);
                    return dp_err_set(err, DP_E_CONFIG, "sweep.ratios: '%s' is not a number in (0, 1)", rs);
                }
                int K = (int)lround(ratio * L);
                if (K < 1 || K >= L) {
                    dp_free(v);
                    return dp_err_set(err, DP_E_CONFIG, "sweep.ratios: %s removes %d of %d blocks", rs, K, L);
                }
                for (int it = 0; list_str(p, "sweep.retrain", it, &rt); it++) {
                    int r = !strcmp(rt, "none")   ? DP_RETRAIN_NONE
                            : !strcmp(rt, "lora") ? DP_RETRAIN_LORA
                            : !strcmp(rt, "full") ? DP_RETRAIN_FULL
                                                  : -1;
                    if (r < 0) {
                        dp_free(v);
                        return dp_err_set(err, DP_E_CONFIG, "sweep.retrain: '%s' is not none, lora or full", rt);
                    }
                    for (int ik = 0; list_str(p, "sweep.kd", ik, &kds); ik++) {
                        int kd = !strcmp(kds, "on") || !strcmp(kds, "true");
                        if (!kd && strcmp(kds, "off") && strcmp(kds, "false")) {
                            dp_free(v);
                            return dp_err_set(err, DP_E_CONFIG, "sweep.kd: '%s' is not on or off", kds);
                        }
                        if (kd && r == 0) {
                            skip_cell(skipped, "kd on x retrain none",
                                      "not run: distillation happens while retraining "
                                      "(the kd off x retrain none cells are the same models)");
                            continue;
                        }
                        const char *un;
                        for (int iu = 0; list_str(p, "sweep.units", iu, &un); iu++) {
                            int sub = !strcmp(un, "sublayer");
                            if (!sub && strcmp(un, "block")) {
                                dp_free(v);
                                return dp_err_set(err, DP_E_CONFIG, "sweep.units: '%s' is not block or sublayer", un);
                            }
                            if (sub && iter != DP_PRUNE_ONE_SHOT) {
                                char cell[96];
                                snprintf(cell, sizeof cell, "sublayer x %s", sched);
                                skip_cell(skipped, cell,
                                          "not run: sub-layer units are one-shot in the sweep (prune --schedule "
                                          "iterative --units sublayer runs the sub-layer greedy alone)");
                                continue;
                            }
                            for (int sd = 0; sd < dp_config_list_len(p->cfg, "sweep.seeds"); sd++) {
                                if (n == cap) v = dp_realloc(v, (size_t)(cap *= 2) * sizeof *v, "sweep");
                                sweep_cfg *c = &v[n++];
                                memset(c, 0, sizeof *c);
                                snprintf(c->crit, sizeof c->crit, "%s", crit);
                                c->ratio = ratio;
                                c->schedule = iter;
                                c->retrain = (dp_retrain_kind)r;
                                c->kd = kd;
                                c->units = sub;
                                c->seed = atoll(dp_config_list_item(p->cfg, "sweep.seeds", sd));
                                snprintf(c->name, sizeof c->name, "%s-r%g-%s%s-%s%s-s%lld", crit, ratio,
                                         k_sched_short[iter], sub ? "-sub" : "", k_retrain[r], kd ? "-kd" : "",
                                         c->seed);
                                /* rough cost: prune passes + retraining (the dominant part) */
                                c->cost = 1.0 + (iter ? K : 0) + (r ? 20.0 : 0) + (kd ? 5.0 : 0);
                            }
                        }
                    }
                }
            }
        }
    }
    if (n > 0 && dp_config_bool(p->cfg, "sweep.dense")) { /* the unpruned reference row */
        if (n == cap) v = dp_realloc(v, (size_t)(cap *= 2) * sizeof *v, "sweep");
        sweep_cfg *c = &v[n++];
        memset(c, 0, sizeof *c);
        snprintf(c->crit, sizeof c->crit, "dense");
        c->schedule = DP_PRUNE_DENSE;
        c->seed = atoll(dp_config_list_item(p->cfg, "sweep.seeds", 0));
        snprintf(c->name, sizeof c->name, "dense");
        c->cost = 1.0;
    }
    if (n == 0) {
        dp_free(v);
        return dp_err_set(err, DP_E_CONFIG,
                          "the sweep grid is empty (sweep.criteria/ratios/schedules/retrain/kd/seeds)");
    }
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (!strcmp(v[i].name, v[j].name)) {
                dp_free(v);
                return dp_err_set(err, DP_E_CONFIG, "configuration %s appears twice in the grid", v[i].name);
            }
    *out = v;
    *n_out = n;
    return DP_OK;
}

/* Longest processing time first: each configuration to the least loaded group. */
static void assign_groups(sweep_cfg *v, int n, int n_groups) {
    int *idx = dp_malloc((size_t)n * sizeof(int), "sweep");
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = 1; i < n; i++) /* stable: by cost descending, then grid order */
        for (int j = i; j > 0 && v[idx[j]].cost > v[idx[j - 1]].cost; j--) {
            int t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    double *load = dp_calloc((size_t)n_groups, sizeof(double), "sweep");
    for (int i = 0; i < n; i++) {
        int g = 0;
        for (int k = 1; k < n_groups; k++)
            if (load[k] < load[g]) g = k;
        v[idx[i]].group = g;
        load[g] += v[idx[i]].cost;
    }
    dp_free(load);
    dp_free(idx);
}

static char *cfg_dir(const char *run, const char *name) {
    char *c = dp_path_join(run, "configs");
    char *d = dp_path_join(c, name);
    dp_free(c);
    return d;
}

typedef struct eval_set {
    char name[64];
    int32_t *win;
    int64_t n_win;
} eval_set;

typedef struct sweep_ctx {
    const dp_pipe *p;
    const char *run, *model_dir;
    const dp_llama *dense;
    dp_llama *work;
    uint64_t mhash;
    char mh[17];
    dp_ppl_opts po;
    eval_set *ev;
    int n_ev;
    dp_train_data *data;
    int64_t *val, *train, n_val, n_train;
    const dp_train_opts *to;
    int have_cache;
    int64_t batch;
    const char *skipped; /* grid cells not run and why ("- cell: why" lines), or NULL */
    dp_tasks *tasks;     /* zero-shot tasks (eval.tasks), n == 0 if none */
} sweep_ctx;

/* The width-pruned model of configuration c (in wm): importance on the
 * shared calibration set (RUNDIR/calib.h5), the width ratio whose parameter
 * count is closest to removing K blocks, the plan applied. Collective over g. */
static int width_model(sweep_ctx *x, const dp_mpi *g, const sweep_cfg *c, int K, dp_llama *wm, double *wratio,
                       dp_err *err) {
    const dp_llama *m = x->dense;
    int L = (int)m->cfg.n_layers;
    int pf = (int)dp_config_int(x->p->cfg, "width.protect_first"),
        pl = (int)dp_config_int(x->p->cfg, "width.protect_last");
    if (pf + pl >= L)
        return dp_err_set(err, DP_E_CONFIG, "width.protect_first %d + width.protect_last %d leave none of %d blocks",
                          pf, pl, L);
    int64_t target = m->n_elems;
    for (int k = 0; k < K; k++) target -= dp_llama_layer_param_count(&m->cfg, L / 2); /* uniform dense blocks */
    *wratio = dp_width_match_ratio(&m->cfg, target, pf, pl);
    dp_calib_file cf;
    int rc = dp_calib_open(g, x->run, x->mhash, 1, &cf, err);
    const int32_t *ids = rc ? NULL : cf.ids;
    int64_t sh[2] = {rc ? 0 : cf.N, rc ? 0 : cf.T};
    dp_width_scores sc;
    memset(&sc, 0, sizeof sc);
    dp_width_plan p;
    memset(&p, 0, sizeof p);
    if (!rc)
        rc = dp_width_importance(g, x->p->device, m, ids, sh[0], sh[1], dp_width_crit_parse(c->crit), (uint64_t)c->seed,
                                 &sc, err);
    if (!rc) rc = dp_width_plan_make(m, &sc, *wratio, pf, pl, &p, err);
    dp_st_entry *ent = NULL;
    int n_ent = 0;
    dp_llama_config pc;
    memset(&pc, 0, sizeof pc);
    if (!rc) rc = dp_width_apply(m, &p, &ent, &n_ent, &pc, err);
    if (!rc) rc = dp_llama_init(wm, &pc, err);
    for (int i = 0; !rc && i < wm->n_params; i++) { /* pruned blocks from the plan, the rest from the dense model */
        const dp_llama_param *q = &wm->params[i];
        const float *src = NULL;
        for (int k = 0; k < n_ent && !src; k++)
            if (!strcmp(ent[k].name, q->name)) src = ent[k].data;
        for (int k = 0; k < m->n_params && !src; k++)
            if (!strcmp(m->params[k].name, q->name)) src = m->mem + m->params[k].offset;
        memcpy(wm->mem + q->offset, src, (size_t)q->n_elems * sizeof(float));
    }
    dp_llama_config_free(&pc);
    dp_width_entries_free(ent, n_ent);
    dp_width_plan_free(&p);
    dp_width_scores_free(&sc);
    dp_calib_close(&cf);
    return dp_mpi_agree(g, rc, err);
}

/* One configuration inside group g: prune, retrain, evaluate, result.json. */
static int run_config(sweep_ctx *x, const dp_mpi *g, const sweep_cfg *c, int *stopped, dp_err *err) {
    int L = (int)x->dense->cfg.n_layers, K = c->schedule == DP_PRUNE_DENSE ? 0 : (int)lround(c->ratio * L);
    char *dir = cfg_dir(x->run, c->name);
    int rc = DP_OK;
    if (g->rank == 0) rc = dp_mkdir_p(dir, err);
    rc = dp_mpi_agree(g, rc, err);
    memcpy(x->work->mem, x->dense->mem, (size_t)x->dense->n_elems * sizeof(float));
    int *removed = dp_calloc((size_t)L, sizeof(int), "sweep"), units_removed[2 * DP_MAX_LAYERS], n_units = 0;
    unsigned char skip[DP_MAX_LAYERS] = {0};
    double *ppl_after = dp_calloc((size_t)L, sizeof(double), "sweep"), dense_ppl = NAN;
    double t0 = dp_time_s(), wratio = 0, f0 = 0;
    int64_t k0 = 0;
    dp_engine_work(&f0, &k0); /* the configuration's cost: this group's work from here */
    dp_llama wm;              /* the width-pruned model (schedule width) */
    memset(&wm, 0, sizeof wm);
    dp_llama *wk = x->work;
    if (!rc && c->schedule == DP_PRUNE_WIDTH) {
        rc = width_model(x, g, c, K, &wm, &wratio, err);
        if (!rc) wk = &wm;
        K = 0; /* no block removed */
    } else if (!rc && c->schedule == DP_PRUNE_DENSE) {
        /* dense: nothing removed */
    } else if (!rc && c->schedule == DP_PRUNE_ONE_SHOT && c->units) { /* sub-layers at the parameters of K blocks */
        int *order = NULL, n_order = 0, uu = 0;
        uint64_t fh;
        char *sp = dp_path_join(x->run, "sublayer/scores.json");
        rc = dp_pipe_read_order(sp, c->crit, x->mh, L, &uu, &order, &n_order, &fh, err);
        dp_free(sp);
        if (!rc) rc = dp_pipe_pick_units(x->dense, order, n_order, 0, c->ratio, units_removed, &n_units, skip, err);
        dp_free(order);
        K = 0;
        for (int b = 0; !rc && b < L; b++)
            if (skip[b] == (DP_SKIP_ATTN | DP_SKIP_MLP)) removed[K++] = b; /* both sub-layers: the block goes */
    } else if (!rc && c->schedule == DP_PRUNE_ONE_SHOT) {
        int *order = NULL, n_order = 0;
        uint64_t fh;
        char *sp = dp_path_join(x->run, "scores.json");
        rc = dp_pipe_read_order(sp, c->crit, x->mh, L, NULL, &order, &n_order, &fh, err);
        dp_free(sp);
        if (!rc && K > n_order)
            rc = dp_err_set(err, DP_E_CONFIG, "%s: %d blocks to remove, %s ranks %d", c->name, K, c->crit, n_order);
        for (int k = 0; !rc && k < K; k++) removed[k] = order[k];
        dp_free(order);
    } else if (!rc) {
        dp_iter_opts io = {.device = x->p->device,
                           .run_dir = x->run,
                           .model_hash = x->mhash,
                           .batch = x->batch,
                           .remove = K,
                           .protect_first = (int)dp_config_int(x->p->cfg, "score.protect_first"),
                           .protect_last = (int)dp_config_int(x->p->cfg, "score.protect_last")};
        rc = dp_prune_iterative(g, x->work, &io, removed, ppl_after, &dense_ppl, err);
    }
    rc = dp_mpi_agree(g, rc, err);
    double t_prune = dp_time_s() - t0;
    dp_layer_map map;
    dp_layer_map_all(&map, L);
    int64_t params_now = wk->n_elems;
    for (int k = 0; !rc && k < K; k++) params_now -= dp_llama_layer_param_count(&x->dense->cfg, removed[k]);
    for (int k = 0; !rc && k < K; k++) {
        int64_t d = removed[k];
        rc = dp_layer_map_drop(&map, L, &d, 1, err);
    }
    for (int b = 0; !rc && b < L; b++) /* removed sub-layers of kept blocks: skipped, their weights gone */
        if (skip[b] && skip[b] != (DP_SKIP_ATTN | DP_SKIP_MLP)) {
            map.skip[b] = skip[b];
            for (int t = 0; t < DP_LLAMA_BLOCK_TENSORS; t++)
                if ((t <= DP_BT_O && (skip[b] & DP_SKIP_ATTN)) || (t > DP_BT_O && (skip[b] & DP_SKIP_MLP)))
                    params_now -= x->dense->params[1 + b * DP_LLAMA_BLOCK_TENSORS + t].n_elems;
        }
    dp_train_result tr;
    memset(&tr, 0, sizeof tr);
    tr.val_loss = NAN;
    double t1 = dp_time_s();
    if (!rc && c->retrain != DP_RETRAIN_NONE) {
        dp_train_opts to = *x->to;
        to.method = c->retrain == DP_RETRAIN_FULL ? DP_TRAIN_FULL : DP_TRAIN_LORA;
        to.seed = (uint64_t)c->seed;
        to.run_dir = dir;
        to.model_hash = x->mhash ^ 0x9e3779b97f4a7c15ull * (uint64_t)(K + 1);
        to.progress = 0;
        char *tc = dp_path_join(x->run, "teacher.h5");
        to.kd_alpha = c->kd ? (to.kd_alpha > 0 ? to.kd_alpha : 0.5) : 0.0;
        to.teacher_cache = c->kd ? tc : NULL;
        to.kd_topk = 0;
        dp_lora lora;
        if (c->schedule == DP_PRUNE_WIDTH) to.model_hash ^= (uint64_t)llround(wratio * 1e6) * 0xbf58476d1ce4e5b9ull;
        rc = dp_train(g, wk, &map, NULL, x->data, x->train, x->n_train, x->val, x->n_val, &to, &lora, &tr, err);
        if (!rc && tr.stopped) *stopped = 1; /* a signal: checkpointed, the rerun continues it */
        if (!rc && to.method == DP_TRAIN_LORA) dp_lora_merge(wk, &lora);
        if (lora.mem) dp_lora_free(&lora);
        dp_free(tc);
    }
    double t_train = dp_time_s() - t1;
    if (*stopped) {
        dp_free(removed);
        dp_free(ppl_after);
        dp_free(dir);
        if (wm.mem) dp_llama_free(&wm);
        return rc;
    }
    double *ppl = dp_calloc((size_t)(x->n_ev + 1), sizeof(double), "sweep");
    for (int e = 0; e < x->n_ev && !rc; e++) {
        dp_ppl_result r;
        rc = dp_ppl_run(g, wk, &map, x->ev[e].win, x->ev[e].n_win, &x->po, &r, NULL, err);
        ppl[e] = r.ppl;
    }
    if (!rc && x->tasks->n) rc = dp_tasks_run(g, x->p->device, wk, &map, x->tasks, x->po.batch, err);
    rc = dp_mpi_agree(g, rc, err);
    double work[3] = {0, 0, dp_time_s() - t0}, f1 = 0;
    int64_t k1 = 0;
    dp_engine_work(&f1, &k1);
    work[0] = f1 - f0, work[1] = (double)(k1 - k0);
    DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, work, 2, MPI_DOUBLE, MPI_SUM, g->comm));
    DP_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, work + 2, 1, MPI_DOUBLE, MPI_MAX, g->comm));
    if (!rc && g->rank == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", c->name);
        cJSON_AddStringToObject(o, "criterion", c->crit);
        cJSON_AddNumberToObject(o, "ratio", c->ratio);
        cJSON_AddStringToObject(o, "schedule", k_sched[c->schedule]);
        cJSON_AddStringToObject(o, "retrain", k_retrain[c->retrain]);
        cJSON_AddBoolToObject(o, "kd", c->kd);
        cJSON_AddNumberToObject(o, "seed", (double)c->seed);
        cJSON *rem = cJSON_AddArrayToObject(o, "removed");
        for (int k = 0; k < K; k++) cJSON_AddItemToArray(rem, cJSON_CreateNumber(removed[k]));
        if (c->units) dp_pipe_units_json(o, units_removed, n_units, skip, L);
        cJSON_AddNumberToObject(o, "blocks_kept", map.n);
        cJSON_AddNumberToObject(o, "params", (double)params_now);
        cJSON_AddNumberToObject(o, "fraction_removed", 1.0 - (double)params_now / (double)x->dense->n_elems);
        if (c->schedule == DP_PRUNE_WIDTH) {
            cJSON_AddNumberToObject(o, "width_ratio", wratio);
            /* the per-block sizes: the speed phase rebuilds this architecture */
            const char *keys[3] = {"layer_heads", "layer_kv_heads", "layer_inter"};
            const int64_t *vals[3] = {wk->cfg.layer_heads, wk->cfg.layer_kv_heads, wk->cfg.layer_inter};
            for (int a = 0; a < 3; a++) {
                cJSON *arr = cJSON_AddArrayToObject(o, keys[a]);
                for (int l = 0; l < L; l++) cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)vals[a][l]));
            }
        }
        cJSON *pp = cJSON_AddObjectToObject(o, "ppl");
        for (int e = 0; e < x->n_ev; e++) cJSON_AddNumberToObject(pp, x->ev[e].name, ppl[e]);
        if (x->tasks->n) {
            cJSON *zs = cJSON_AddObjectToObject(o, "zeroshot");
            for (int k = 0; k < x->tasks->n; k++) {
                const dp_mc_metrics *mt = &x->tasks->metrics[k];
                int norm = !strcmp(dp_mc_task_metric(x->tasks->kind[k]), "acc_norm");
                cJSON_AddNumberToObject(zs, x->tasks->name[k], norm ? mt->acc_norm : mt->acc);
            }
            cJSON_AddNumberToObject(o, "zeroshot_average", dp_tasks_average(x->tasks));
        }
        if (c->schedule != DP_PRUNE_ONE_SHOT) {
            cJSON *pa = cJSON_AddArrayToObject(o, "calib_ppl_after");
            for (int k = 0; k < K; k++) cJSON_AddItemToArray(pa, cJSON_CreateNumber(ppl_after[k]));
        }
        if (c->retrain != DP_RETRAIN_NONE) {
            cJSON_AddNumberToObject(o, "train_steps", (double)tr.steps);
            if (isfinite(tr.val_loss)) cJSON_AddNumberToObject(o, "val_loss", tr.val_loss);
        }
        cJSON_AddNumberToObject(o, "prune_s", t_prune);
        cJSON_AddNumberToObject(o, "retrain_s", t_train);
        cJSON_AddNumberToObject(o, "group", c->group);
        cJSON_AddNumberToObject(o, "group_ranks", g->size);
        /* the cost ledger of this configuration (see engine.c for the FLOPs formula) */
        int threads = x->p->device == DP_DEVICE_CPU ? omp_get_max_threads() : 1;
        cJSON *cost = cJSON_AddObjectToObject(o, "cost");
        cJSON_AddNumberToObject(cost, "seconds", work[2]);
        cJSON_AddNumberToObject(cost, "rank_seconds", work[2] * g->size * threads);
        cJSON_AddNumberToObject(cost, "tokens", work[1]);
        cJSON_AddNumberToObject(cost, "flops", work[0]);
        char *text = cJSON_Print(o);
        cJSON_Delete(o);
        char *rp = dp_path_join(dir, "result.json");
        rc = dp_write_file_atomic(rp, text, strlen(text), err); /* last: marks the configuration done */
        free(text);
        dp_free(rp);
        if (!rc) {
            dp_log("sweep: %s done (group %d): %d of %d blocks kept, PPL %s %.4f, prune %.1f s, retrain %.1f s",
                   c->name, c->group, map.n, L, x->n_ev ? x->ev[0].name : "-", x->n_ev ? ppl[0] : NAN, t_prune,
                   t_train);
        }
    }
    rc = dp_mpi_agree(g, rc, err);
    dp_free(ppl);
    dp_free(removed);
    dp_free(ppl_after);
    dp_free(dir);
    if (wm.mem) dp_llama_free(&wm);
    return rc;
}

static int by_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Batch-1 decode speed of every finished configuration, measured after the grid, one
 * configuration at a time on world rank 0 while every other rank waits idle: a figure
 * measured while other groups compute is not a speed. The weights' values do not change
 * the speed, so each configuration's architecture is rebuilt from its result.json: the
 * dense weights under its layer map, or (width) a model of its per-block sizes. 16 prompt
 * + 32 new tokens, 1 warm-up + DP_SPEED_RUNS timed runs: median, min and max tokens/s into
 * configs/NAME/speed.json (kept on a rerun). Returns the configurations measured. */
#define DP_SPEED_RUNS 5
static int measure_speed(const sweep_ctx *x, const sweep_cfg *v, int n, const int *sel) {
    const dp_llama *dense = x->dense;
    int L = (int)dense->cfg.n_layers, measured = 0;
    if (48 > dense->cfg.max_position_embeddings) return 0;
    for (int i = 0; i < n; i++) {
        if (!sel[i]) continue;
        char *d = cfg_dir(x->run, v[i].name), *rp = dp_path_join(d, "result.json"), *sp = dp_path_join(d, "speed.json");
        char *text = NULL;
        size_t len = 0;
        dp_err e;
        cJSON *o = NULL;
        if (!dp_file_exists(sp) && dp_read_file(rp, &text, &len, &e) == DP_OK) o = cJSON_ParseWithLength(text, len);
        dp_free(text);
        dp_llama wm;
        memset(&wm, 0, sizeof wm);
        const dp_llama *m = dense;
        dp_layer_map map;
        dp_layer_map_all(&map, L);
        int ok = o != NULL;
        const cJSON *rem = o ? cJSON_GetObjectItem(o, "removed") : NULL, *r;
        cJSON_ArrayForEach(r, rem) {
            int64_t b = (int64_t)r->valueint;
            if (dp_layer_map_drop(&map, L, &b, 1, &e)) ok = 0;
        }
        for (int k2 = 0; k2 < 2 && o; k2++) /* sub-layer configurations: the skipped sub-layers */
            cJSON_ArrayForEach(r, cJSON_GetObjectItem(o, k2 ? "skip_mlp" : "skip_attn")) if (r->valueint >= 0 &&
                                                                                             r->valueint < L)
                map.skip[r->valueint] |= (unsigned char)(k2 ? DP_SKIP_MLP : DP_SKIP_ATTN);
        const cJSON *lh = o ? cJSON_GetObjectItem(o, "layer_heads") : NULL;
        if (ok && lh) { /* width: the per-block sizes, zero weights */
            dp_llama_config c = dense->cfg;
            c.json_text = NULL;
            c.width_varies = 1;
            const char *keys[3] = {"layer_heads", "layer_kv_heads", "layer_inter"};
            int64_t *dst[3] = {c.layer_heads, c.layer_kv_heads, c.layer_inter};
            for (int a = 0; a < 3 && ok; a++) {
                const cJSON *arr = cJSON_GetObjectItem(o, keys[a]);
                if (cJSON_GetArraySize(arr) != L) ok = 0;
                for (int l = 0; l < L && ok; l++) dst[a][l] = (int64_t)cJSON_GetArrayItem(arr, l)->valuedouble;
            }
            if (ok && dp_llama_init(&wm, &c, &e) == DP_OK)
                m = &wm;
            else
                ok = 0;
        }
        cJSON_Delete(o);
        dp_gen gs;
        if (ok && dp_gen_init(&gs, m, &map, 1, 16, 48, &e) == DP_OK) {
            int32_t pr[16], out[32];
            for (int t = 0; t < 16; t++) pr[t] = (int32_t)(3 + t % (m->cfg.vocab_size - 3));
            dp_gen_opts go = {.max_new = 32, .top_p = 1, .eos_id = -1};
            dp_gen_stats gst;
            double tps[DP_SPEED_RUNS];
            int got = 0;
            for (int run = 0; run < 1 + DP_SPEED_RUNS; run++)
                if (dp_generate(&gs, pr, 1, 16, &go, out, NULL, &gst, &e) == DP_OK && run > 0 && gst.decode_s > 0)
                    tps[got++] = (double)gst.steps / gst.decode_s;
            dp_gen_free(&gs);
            if (got == DP_SPEED_RUNS) {
                qsort(tps, (size_t)got, sizeof *tps, by_double);
                char js[512];
                snprintf(js, sizeof js,
                         "{\"decode_tokens_per_s\": %.6g, \"min\": %.6g, \"max\": %.6g, \"runs\": %d, \"warmup\": 1, "
                         "\"batch\": 1, \"prompt_tokens\": 16, \"new_tokens\": 32, \"threads\": %d, "
                         "\"measured\": \"after the grid, alone\"}\n",
                         tps[got / 2], tps[0], tps[got - 1], got, omp_get_max_threads());
                if (dp_write_file_atomic(sp, js, strlen(js), &e) == DP_OK) measured++;
            }
        }
        if (wm.mem) dp_llama_free(&wm);
        dp_free(sp);
        dp_free(rp);
        dp_free(d);
    }
    return measured;
}

/* sweep.json, sweep.md, sweep.csv and the plot, from every result.json (rank 0). */
static int summarize(const sweep_ctx *x, const sweep_cfg *v, int n, const int *sel, dp_err *err) {
    cJSON *all = cJSON_CreateArray();
    dp_buf md = {0}, csv = {0};
    char t[2048];
    dp_buf_puts(&md, "| configuration | blocks | params (M) |");
    dp_buf_puts(&csv, "name,criterion,ratio,schedule,retrain,kd,seed,blocks_kept,params");
    for (int e = 0; e < x->n_ev; e++) {
        snprintf(t, sizeof t, " PPL %s |", x->ev[e].name);
        dp_buf_puts(&md, t);
        snprintf(t, sizeof t, ",ppl_%s", x->ev[e].name);
        dp_buf_puts(&csv, t);
    }
    for (int k = 0; k < x->tasks->n; k++) {
        snprintf(t, sizeof t, " %s (%s) |", x->tasks->name[k], dp_mc_task_metric(x->tasks->kind[k]));
        dp_buf_puts(&md, t);
        snprintf(t, sizeof t, ",%s", x->tasks->name[k]);
        dp_buf_puts(&csv, t);
    }
    if (x->tasks->n) {
        dp_buf_puts(&md, " average |");
        dp_buf_puts(&csv, ",zeroshot_average");
    }
    dp_buf_puts(&md, " val loss | TFLOP | retrain s | cost (rank-s) | decode tok/s (batch 1, measured alone: median "
                     "(min-max)) |\n|---|---|---|");
    for (int e = 0; e < x->n_ev + x->tasks->n + (x->tasks->n > 0); e++) dp_buf_puts(&md, "---|");
    dp_buf_puts(&md, "---|---|---|---|---|\n");
    dp_buf_puts(&csv, ",val_loss,retrain_s,tflop,cost_rank_s,decode_tokens_per_s\n"); /* the last four: cost */
    int rc = DP_OK;
    double *p0 = dp_malloc((size_t)(n + 1) * 4 * sizeof(double), "sweep"), *cost = p0 + n + 1, *tps = cost + n + 1,
           *avg = tps + n + 1;
    for (int i = 0; i < n && !rc; i++) {
        p0[i] = cost[i] = tps[i] = avg[i] = NAN;
        if (!sel[i]) continue;
        char *d = cfg_dir(x->run, v[i].name), *rp = dp_path_join(d, "result.json"), *text = NULL;
        size_t len = 0;
        rc = dp_read_file(rp, &text, &len, err);
        cJSON *o = rc ? NULL : cJSON_ParseWithLength(text, len);
        if (!rc && !o) rc = dp_err_set(err, DP_E_FORMAT, "%s: not valid JSON", rp);
        if (!rc) { /* the speed phase's figure, when measured */
            char *spp = dp_path_join(d, "speed.json"), *st = NULL;
            size_t sl = 0;
            dp_err e2;
            cJSON *so = dp_read_file(spp, &st, &sl, &e2) == DP_OK ? cJSON_ParseWithLength(st, sl) : NULL;
            if (cJSON_IsObject(so))
                cJSON_AddItemToObject(o, "decode_speed", so);
            else
                cJSON_Delete(so);
            dp_free(st);
            dp_free(spp);
        }
        if (!rc) {
            double params = cJSON_GetObjectItem(o, "params")->valuedouble;
            const cJSON *vl = cJSON_GetObjectItem(o, "val_loss");
            snprintf(t, sizeof t, "| %s | %d | %.3f |", v[i].name,
                     (int)cJSON_GetObjectItem(o, "blocks_kept")->valuedouble, params / 1e6);
            dp_buf_puts(&md, t);
            snprintf(t, sizeof t, "%s,%s,%g,%s,%s,%d,%lld,%d,%.0f", v[i].name, v[i].crit, v[i].ratio,
                     k_sched[v[i].schedule], k_retrain[v[i].retrain], v[i].kd, v[i].seed,
                     (int)cJSON_GetObjectItem(o, "blocks_kept")->valuedouble, params);
            dp_buf_puts(&csv, t);
            const cJSON *pp = cJSON_GetObjectItem(o, "ppl");
            for (int e = 0; e < x->n_ev; e++) {
                double p = cJSON_GetObjectItem(pp, x->ev[e].name)->valuedouble;
                if (e == 0) p0[i] = p;
                snprintf(t, sizeof t, " %.4f |", p);
                dp_buf_puts(&md, t);
                snprintf(t, sizeof t, ",%.17g", p);
                dp_buf_puts(&csv, t);
            }
            const cJSON *zs = cJSON_GetObjectItem(o, "zeroshot");
            for (int k = 0; k < x->tasks->n; k++) {
                const cJSON *it = zs ? cJSON_GetObjectItem(zs, x->tasks->name[k]) : NULL;
                double a = it ? it->valuedouble : NAN;
                snprintf(t, sizeof t, " %.2f |", 100 * a);
                dp_buf_puts(&md, t);
                snprintf(t, sizeof t, ",%.17g", a);
                dp_buf_puts(&csv, t);
            }
            if (x->tasks->n) {
                const cJSON *it = cJSON_GetObjectItem(o, "zeroshot_average");
                double a = it ? it->valuedouble : NAN;
                avg[i] = a;
                snprintf(t, sizeof t, " %.2f |", 100 * a);
                dp_buf_puts(&md, t);
                snprintf(t, sizeof t, ",%.17g", a);
                dp_buf_puts(&csv, t);
            }
            char vls[32] = "-";
            if (vl) snprintf(vls, sizeof vls, "%.4f", vl->valuedouble);
            const cJSON *sp = cJSON_GetObjectItem(o, "decode_speed");
            const cJSON *dt = cJSON_GetObjectItem(sp, "decode_tokens_per_s");
            char dts[64] = "-";
            if (dt)
                snprintf(dts, sizeof dts, "%.1f (%.1f-%.1f)", dt->valuedouble,
                         cJSON_GetObjectItem(sp, "min")->valuedouble, cJSON_GetObjectItem(sp, "max")->valuedouble);
            const cJSON *co = cJSON_GetObjectItem(o, "cost");
            double fl = cJSON_IsObject(co) ? cJSON_GetObjectItem(co, "flops")->valuedouble / 1e12 : NAN;
            cost[i] = cJSON_IsObject(co) ? cJSON_GetObjectItem(co, "rank_seconds")->valuedouble : NAN;
            tps[i] = dt ? dt->valuedouble : NAN;
            snprintf(t, sizeof t, " %s | %.3f | %.1f | %.1f | %s |\n", vls, fl,
                     cJSON_GetObjectItem(o, "retrain_s")->valuedouble, cost[i], dts);
            dp_buf_puts(&md, t);
            snprintf(t, sizeof t, ",%.17g,%.3f,%.6f,%.3f,%.3f\n", vl ? vl->valuedouble : NAN,
                     cJSON_GetObjectItem(o, "retrain_s")->valuedouble, fl, cost[i], tps[i]);
            dp_buf_puts(&csv, t);
            cJSON_AddItemToArray(all, o);
        }
        dp_free(text);
        dp_free(rp);
        dp_free(d);
    }
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", x->model_dir);
    cJSON_AddStringToObject(root, "model_hash", x->mh);
    if (x->tasks->n) {
        cJSON *tl = cJSON_AddObjectToObject(root, "tasks");
        for (int k = 0; k < x->tasks->n; k++) {
            char h[32];
            cJSON *e = cJSON_AddObjectToObject(tl, x->tasks->name[k]);
            cJSON_AddStringToObject(e, "file", x->tasks->path[k]);
            snprintf(h, sizeof h, "%016llx", (unsigned long long)x->tasks->hash[k]);
            cJSON_AddStringToObject(e, "file_hash", h);
            cJSON_AddNumberToObject(e, "docs", (double)x->tasks->n_docs[k]);
            cJSON_AddStringToObject(e, "metric", dp_mc_task_metric(x->tasks->kind[k]));
        }
    }
    cJSON_AddItemToObject(root, "configurations", all);
    char *js = cJSON_Print(root);
    cJSON_Delete(root);
    /* the quality / cost and quality / speed frontiers: quality is the first PPL set's (lower is
     * better), else the zero-shot average (higher); a plot of both beside sweep.md */
    int have_q = x->n_ev || x->tasks->n;
    char qname[160];
    snprintf(qname, sizeof qname, x->n_ev ? "PPL %s" : "zero-shot average", x->n_ev ? x->ev[0].name : "");
    int *front = dp_calloc((size_t)(2 * n + 2), sizeof(int), "sweep");
    for (int f = 0; f < 2 && have_q; f++) {
        const double *by = f ? tps : cost; /* cost: lower is better; speed: higher */
        int first = 1;
        for (int i = 0; i < n; i++) {
            double qi = x->n_ev ? p0[i] : -avg[i];
            if (!sel[i] || !isfinite(qi) || !isfinite(by[i])) continue;
            int dominated = 0;
            for (int j = 0; j < n && !dominated; j++) {
                double qj = x->n_ev ? p0[j] : -avg[j];
                if (j == i || !sel[j] || !isfinite(qj) || !isfinite(by[j])) continue;
                int no_worse = qj <= qi && (f ? by[j] >= by[i] : by[j] <= by[i]);
                int better = qj < qi || (f ? by[j] > by[i] : by[j] < by[i]);
                dominated = no_worse && better;
            }
            if (dominated) continue;
            front[f * (n + 1) + i] = 1;
            if (first) {
                snprintf(t, sizeof t, "\nPareto front, %s against %s (no configuration is better in both):", qname,
                         f ? "decode speed" : "cost (rank-seconds)");
                dp_buf_puts(&md, t);
            }
            snprintf(t, sizeof t, "%s %s (%.4f, %.1f)", first ? "" : ",", v[i].name, x->n_ev ? p0[i] : 100 * avg[i],
                     by[i]);
            dp_buf_puts(&md, t);
            first = 0;
        }
        if (!first) dp_buf_puts(&md, ".\n");
    }
    if (have_q) { /* sweep_pareto.png: quality against cost and against decode speed, fronts marked */
        char *dat = dp_path_join(x->run, "sweep_pareto.dat"), *png = dp_path_join(x->run, "sweep_pareto.png");
        FILE *f = fopen(dat, "w");
        for (int i = 0; f && i < n; i++)
            if (sel[i])
                fprintf(f, "%.9g %.9g %.9g %d %d\n", x->n_ev ? p0[i] : 100 * avg[i], cost[i], tps[i], front[i],
                        front[n + 1 + i]);
        if (f) {
            fclose(f);
            snprintf(t, sizeof t,
                     "set terminal pngcairo size 1100,450\nset output '%s'\nset multiplot layout 1,2\nset grid\n"
                     "set ylabel '%s'\nset xlabel 'cost (rank-seconds)'\nplot '%s' using 2:1 with points pt 7 lc "
                     "rgb 'gray' title 'configuration', '' using ($4 > 0 ? $2 : 1/0):1 with points pt 7 ps 1.5 lc rgb "
                     "'red' title 'Pareto front'\nset xlabel 'decode tokens/s (batch 1)'\nplot '%s' using 3:1 with "
                     "points pt 7 lc rgb 'gray' title 'configuration', '' using ($5 > 0 ? $3 : 1/0):1 with points pt 7 "
                     "ps 1.5 lc rgb 'red' title 'Pareto front'\nunset multiplot\n",
                     png, qname, dat, dat);
            dp_gnuplot(t, png);
        }
        dp_free(dat);
        dp_free(png);
    }
    dp_free(front);
    if (x->skipped) {
        dp_buf_puts(&md, "\nGrid cells not run:\n");
        dp_buf_puts(&md, x->skipped);
    }
    { /* how much the one-shot criteria agree (score's agreement.md) */
        char *sj = dp_path_join(x->run, "scores.json"), *ap = dp_path_join(x->run, "agreement.md"), *text = NULL;
        size_t tn = 0;
        dp_err e;
        if (dp_file_exists(sj)) dp_pipe_report_agreement(x->run, sj);
        if (!dp_read_file(ap, &text, &tn, &e)) {
            dp_buf_puts(&md, "\n## Agreement between the criteria\n\n");
            dp_buf_puts(&md, text);
        }
        dp_free(text);
        dp_free(ap);
        dp_free(sj);
    }
    const char *names[3] = {"sweep.json", "sweep.md", "sweep.csv"};
    const char *bodies[3] = {js, md.p, csv.p};
    for (int f = 0; f < 3 && !rc; f++) {
        char *p = dp_path_join(x->run, names[f]);
        rc = dp_write_file_atomic(p, bodies[f], strlen(bodies[f]), err);
        dp_free(p);
    }
    if (!rc) {
        fputs(md.p, stdout);
        fflush(stdout);
    }
    /* PPL (first eval set) vs ratio, one curve per criterion/schedule/retrain/KD */
    if (!rc && x->n_ev > 0) {
        char *dat = dp_path_join(x->run, "sweep_ppl.dat"), *png = dp_path_join(x->run, "sweep_ppl.png");
        FILE *f = fopen(dat, "w");
        dp_buf plot = {0};
        int idx = 0;
        char *done = dp_calloc((size_t)n, 1, "sweep");
        for (int i = 0; f && i < n; i++) {
            if (!sel[i] || done[i]) continue;
            fprintf(f, "\"%s %s %s%s\"\n", v[i].crit, k_sched[v[i].schedule], k_retrain[v[i].retrain],
                    v[i].kd ? "+kd" : "");
            for (int j = i; j < n; j++) {
                if (!sel[j] || done[j] || strcmp(v[j].crit, v[i].crit) || v[j].schedule != v[i].schedule ||
                    v[j].retrain != v[i].retrain || v[j].kd != v[i].kd || v[j].seed != v[i].seed)
                    continue;
                done[j] = 1;
                fprintf(f, "%g %.9g\n", v[j].ratio, p0[j]);
            }
            fprintf(f, "\n\n");
            idx++;
        }
        if (f) fclose(f);
        dp_free(done);
        if (idx > 0) {
            snprintf(
                t, sizeof t,
                "set terminal pngcairo size 900,560\nset output '%s'\nset xlabel 'pruning ratio'\nset ylabel 'PPL "
                "(%s)'\n"
                "set logscale y\nset grid\nset key outside\nplot for [i=0:%d] '%s' index i using 1:2 with linespoints "
                "title columnheader(1)\n",
                png, x->ev[0].name, idx - 1, dat);
            dp_buf_puts(&plot, t);
            dp_gnuplot(plot.p, png);
        }
        dp_free(plot.p);
        dp_free(dat);
        dp_free(png);
    }
    free(js);
    dp_free(p0);
    dp_free(md.p);
    dp_free(csv.p);
    return rc;
}

int dp_pipe_sweep(const dp_pipe *p, const dp_sweep_job *j, int *stopped_out, dp_err *err) {
    const dp_mpi *mpi = p->mpi;
    int rc = DP_OK;
    const char *dir = j->model, *run = j->run, *only = j->only;
    long long kill_after = j->kill_after, gsize = dp_config_int(p->cfg, "sweep.group_size");
    int listing = j->list;
    *stopped_out = 0;
    if (!dir) rc = dp_err_set(err, DP_E_USAGE, "--model DIR (or model.path) is required");
    if (!rc && (gsize < 1 || (!listing && mpi->size % gsize)))
        rc = dp_err_set(err, DP_E_CONFIG, "sweep.group_size %lld must divide the %d ranks", gsize, mpi->size);
    const char *calib = dp_config_str(p->cfg, "calib.path");
    if (!rc && !calib && !listing) rc = dp_err_set(err, DP_E_CONFIG, "calib.path (calibration text) is required");
    rc = dp_mpi_agree(mpi, rc, err);
    dp_llama dense, work;
    memset(&dense, 0, sizeof dense);
    memset(&work, 0, sizeof work);
    if (!rc) rc = dp_mpi_agree(mpi, dp_llama_load(dir, &dense, err), err);
    int L = rc ? 0 : (int)dense.cfg.n_layers;
    sweep_cfg *v = NULL;
    int n = 0;
    dp_buf skipped = {0};
    if (!rc) rc = build_grid(p, L, &v, &n, &skipped, err);
    if (!rc && skipped.p && mpi->rank == 0) {
        dp_log("sweep: grid cells not run:");
        fputs(skipped.p, stderr);
    }
    int n_groups = rc || mpi->size < gsize ? 1 : mpi->size / (int)gsize;
    int *sel = dp_calloc((size_t)(n + 1), sizeof(int), "sweep");
    if (!rc) {
        assign_groups(v, n, n_groups);
        for (int i = 0; i < n; i++) {
            sel[i] = 1;
            if (only) {
                char pat[160];
                snprintf(pat, sizeof pat, ",%s,", v[i].name);
                size_t ol = strlen(only);
                char *o2 = dp_malloc(ol + 3, "sweep");
                snprintf(o2, ol + 3, ",%s,", only);
                sel[i] = strstr(o2, pat) != NULL;
                dp_free(o2);
            }
        }
        if (j->cell >= n)
            rc = dp_err_set(err, DP_E_USAGE, "--cell %d: the grid has %d configurations (0..%d)", j->cell, n, n - 1);
        for (int i = 0; i < n && j->cell >= 0; i++) sel[i] = i == j->cell; /* one array task's configuration */
        int any = 0;
        for (int i = 0; i < n; i++) any |= sel[i];
        if (!rc && !any) rc = dp_err_set(err, DP_E_USAGE, "--only %s matches no configuration of the grid", only);
    }
    if (!rc && listing) {
        if (mpi->rank == 0)
            for (int i = 0; i < n; i++)
                if (sel[i]) printf("%s\tgroup %d\tcost %.0f\n", v[i].name, v[i].group, v[i].cost);
        dp_free(v);
        dp_free(skipped.p);
        dp_free(sel);
        dp_llama_free(&dense);
        return 0;
    }
    if (!rc && mpi->rank == 0) rc = dp_mkdir_p(run, err);
    rc = dp_mpi_agree(mpi, rc, err);

    /* shared once: calibration + one-shot scores, training data, teacher cache, eval windows */
    sweep_ctx x = {.p = p, .run = run, .model_dir = dir, .dense = &dense, .work = &work, .skipped = skipped.p};
    x.mhash = rc ? 0 : dp_llama_hash(&dense);
    snprintf(x.mh, sizeof x.mh, "%016llx", (unsigned long long)x.mhash);
    x.batch = dp_config_int(p->cfg, "score.batch");
    int64_t N = dp_config_int(p->cfg, "calib.samples"), T = dp_config_int(p->cfg, "calib.seq_len");
    if (!rc)
        rc = dp_pipe_calibrate(p, dir, &dense, x.mhash, calib, dp_config_str(p->cfg, "calib.field"), N, T,
                               (uint64_t)dp_config_int(p->cfg, "run.seed"), x.batch, run, err);
    int need_train = 0, need_cache = 0;
    for (int i = 0; i < n; i++) {
        if (!sel[i]) continue;
        need_train |= v[i].retrain != 0;
        need_cache |= v[i].kd;
    }
    /* one-shot scores: blocks in RUN/scores.json, sub-layers in RUN/sublayer/scores.json (its
     * calib.h5 a link to RUN's) */
    char *subdir = dp_path_join(run, "sublayer");
    for (int un = 0; un < 2 && !rc; un++) {
        const char *crit[32];
        int n_crit = 0;
        for (int i = 0; i < n; i++) {
            if (!sel[i] || v[i].schedule != DP_PRUNE_ONE_SHOT || v[i].units != un) continue;
            int seen = 0;
            for (int k = 0; k < n_crit; k++) seen |= !strcmp(crit[k], v[i].crit);
            if (!seen && n_crit < 32) crit[n_crit++] = v[i].crit;
        }
        if (!n_crit) continue;
        const char *rd = un ? subdir : run;
        if (un && mpi->rank == 0) {
            char *link = dp_path_join(subdir, "calib.h5");
            rc = dp_mkdir_p(subdir, err);
            if (!rc && !dp_file_exists(link) && symlink("../calib.h5", link))
                rc = dp_err_set(err, DP_E_IO, "%s: cannot link the calibration: %s", link, strerror(errno));
            dp_free(link);
        }
        rc = dp_mpi_agree(mpi, rc, err);
        char *sp = dp_path_join(rd, "scores.json");
        int have_scores = 0;
        if (!rc && mpi->rank == 0 && dp_file_exists(sp)) { /* reuse when it has every criterion */
            have_scores = 1;
            for (int k = 0; k < n_crit && have_scores; k++) {
                int *o = NULL, no = 0, uu = 0;
                uint64_t fh;
                dp_err e2;
                if (dp_pipe_read_order(sp, crit[k], x.mh, L, &uu, &o, &no, &fh, &e2) || uu != un) have_scores = 0;
                dp_free(o);
            }
        }
        DP_CHECK_MPI(MPI_Bcast(&have_scores, 1, MPI_INT, 0, mpi->comm));
        if (!rc && !have_scores) {
            dp_score_opts so = {.device = p->device,
                                .run_dir = rd,
                                .model_hash = x.mhash,
                                .batch = x.batch,
                                .stream_weights = un ? 0 : dp_pipe_stream_weights(p),
                                .protect_first = (int)dp_config_int(p->cfg, "score.protect_first"),
                                .protect_last = (int)dp_config_int(p->cfg, "score.protect_last"),
                                .ratio = 0.2,
                                .progress = !dp_config_bool(p->cfg, "run.quiet"),
                                .units = un};
            rc = dp_score(mpi, &dense, crit, n_crit, &so, err);
        } else if (!rc) {
            dp_log0("sweep: reusing %s", sp);
        }
        dp_free(sp);
    }
    dp_free(subdir);
    dp_train_data data;
    memset(&data, 0, sizeof data);
    dp_train_opts to;
    dp_train_opts_default(&to);
    if (!rc && need_train) {
        const char *dp = dp_config_str(p->cfg, "train.data");
        if (!dp) rc = dp_err_set(err, DP_E_CONFIG, "train.data is required for retraining configurations");
        rc = dp_mpi_agree(mpi, rc, err);
        if (!rc) rc = dp_pipe_train_setup(p, dir, dp, &data, &to, err);
        long long vs = dp_config_int(p->cfg, "train.val_size");
        if (!rc && vs >= data.n)
            rc = dp_err_set(err, DP_E_CONFIG, "train.val_size %lld leaves no training examples", vs);
        if (!rc) {
            dp_data_split(data.n, vs, to.seed, &x.val, &x.train);
            x.n_val = vs;
            x.n_train = data.n - vs;
        }
    }
    x.data = &data;
    x.to = &to;
    if (!rc && need_cache) {
        char *tc = dp_path_join(run, "teacher.h5");
        if (!dp_file_exists(tc))
            rc = dp_teacher_cache_build(mpi, p->device, &dense, x.mhash, &data,
                                        dp_config_int(p->cfg, "train.cache_topk"), to.kd_temp, to.micro_batch, tc, 0,
                                        err);
        else
            dp_log0("sweep: reusing %s", tc);
        dp_free(tc);
    }
    /* evaluation sets: eval.text as "eval" */
    const char *et = dp_config_str(p->cfg, "eval.text");
    x.po = (dp_ppl_opts){.device = p->device,
                         .seq_len = dp_config_int(p->cfg, "eval.seq_len"),
                         .batch = dp_config_int(p->cfg, "eval.batch"),
                         .bos_per_window = dp_config_bool(p->cfg, "eval.bos_per_window")};
    eval_set ev[1];
    memset(ev, 0, sizeof ev);
    if (!rc && et) {
        snprintf(ev[0].name, sizeof ev[0].name, "%s", dp_config_str(p->cfg, "sweep.eval_name"));
        rc = dp_pipe_ppl_windows(p, dir, et, &x.po, &ev[0].win, &ev[0].n_win, err);
        x.ev = ev;
        x.n_ev = rc ? 0 : 1;
    }
    dp_tasks tasks;
    memset(&tasks, 0, sizeof tasks);
    x.tasks = &tasks;
    const char *tspec = dp_config_str(p->cfg, "eval.tasks");
    if (!rc && tspec) {
        rc = dp_tasks_load(p, dir, tspec, dp_config_int(p->cfg, "eval.limit"), 0, dense.cfg.max_position_embeddings,
                           &tasks, err);
        rc = dp_mpi_agree(mpi, rc, err);
    }
    if (!rc) dp_llama_clone(&work, &dense);
    if (j->prepare) { /* the shared inputs are in RUN; the configurations, one per line, for a job array */
        if (!rc && mpi->rank == 0) {
            dp_buf cells = {0};
            for (int i = 0; i < n; i++)
                if (sel[i]) dp_buf_puts(&cells, v[i].name), dp_buf_puts(&cells, "\n");
            char *cp = dp_path_join(run, "cells.txt");
            rc = dp_write_file_atomic(cp, cells.p ? cells.p : "", cells.n, err);
            if (!rc) printf("sweep: shared inputs ready; %d configurations in %s (one per --cell)\n", n, cp);
            dp_free(cp);
            dp_free(cells.p);
        }
        rc = dp_mpi_agree(mpi, rc, err);
        goto done;
    }

    /* the groups and their configurations */
    int done_before = 0, todo = 0;
    int *done_cfg = dp_calloc((size_t)(n + 1), sizeof(int), "sweep");
    if (!rc && mpi->rank == 0)
        for (int i = 0; i < n; i++) {
            if (!sel[i]) continue;
            char *d = cfg_dir(run, v[i].name), *rp = dp_path_join(d, "result.json");
            done_cfg[i] = dp_file_exists(rp);
            done_before += done_cfg[i];
            todo++;
            dp_free(rp);
            dp_free(d);
        }
    DP_CHECK_MPI(MPI_Bcast(done_cfg, n + 1, MPI_INT, 0, mpi->comm));
    if (!rc && done_before) dp_log0("sweep: %d of %d configurations already done; running the rest", done_before, todo);
    if (!rc) dp_log0("sweep: %d configurations, %d groups of %lld ranks", todo, n_groups, gsize);
    MPI_Comm gc;
    int color = rc ? 0 : mpi->rank / (int)gsize;
    DP_CHECK_MPI(MPI_Comm_split(mpi->comm, color, mpi->rank, &gc));
    dp_mpi g;
    dp_mpi_from_comm(gc, &g);
    MPI_Comm_free(&gc);
    int finished = 0, stopped = 0;
    int grc = rc;
    dp_stop_install_signals();
    for (int i = 0; i < n && !grc && !stopped; i++) {
        if (!sel[i] || done_cfg[i] || v[i].group != color) continue;
        grc = run_config(&x, &g, &v[i], &stopped, err);
        int s = dp_stop_requested(), any = 0; /* between configurations */
        DP_CHECK_MPI(MPI_Allreduce(&s, &any, 1, MPI_INT, MPI_MAX, g.comm));
        stopped |= any;
        finished++;
        if (kill_after > 0 && finished == kill_after && mpi->rank == 1) {
            dp_log("fault injection: SIGKILL after %d configurations", finished);
            raise(SIGKILL);
        }
    }
    dp_mpi_finalize(&g);
    dp_mpi_wait_peers(mpi);           /* the other groups may still be busy */
    rc = dp_mpi_agree(mpi, grc, err); /* every group's outcome */
    int any_stop = 0;
    DP_CHECK_MPI(MPI_Allreduce(&stopped, &any_stop, 1, MPI_INT, MPI_MAX, mpi->comm));
    *stopped_out = any_stop;
    if (!rc && any_stop) {
        if (mpi->rank == 0)
            printf("sweep: stopped by a signal; finished configurations are kept, run the same command to continue\n");
    } else if (!rc && j->cell >= 0) { /* an array task: the speed and the table are the last job's */
        if (mpi->rank == 0) printf("sweep: configuration %d (%s) done\n", j->cell, v[j->cell].name);
    } else if (!rc) {
        /* the speed phase: rank 0 measures alone, the other ranks wait without spinning */
        if (mpi->rank == 0) {
            int k = measure_speed(&x, v, n, sel);
            if (k)
                dp_log("sweep: decode speed of %d configuration(s) measured alone (batch 1, median of %d runs)", k,
                       DP_SPEED_RUNS);
        }
        dp_mpi_wait_peers(mpi);
        if (mpi->rank == 0) rc = summarize(&x, v, n, sel, err);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    dp_free(done_cfg);
done:
    dp_tasks_free(&tasks);
    dp_free(ev[0].win);
    dp_free(x.val);
    dp_free(x.train);
    dp_data_free(&data);
    if (work.mem) dp_llama_free(&work);
    dp_llama_free(&dense);
    dp_free(v);
    dp_free(sel);
    dp_free(skipped.p);
    return rc;
}
