/* The data-parallel trainer (see train.h): micro-batches, CE + KD losses,
 * owner-sharded gradient reduction and AdamW (ZeRO-1), clipping, the
 * schedule, non-finite step skipping, signals, checkpoints and the log. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "depthprune/ddp.h"
#include "depthprune/engine.h"
#include "depthprune/ops.h"
#include "depthprune/prune.h"
#include "depthprune/store.h"
#include "depthprune/train.h"

#define CKPT_VERSION "2"
#define MPI_CHUNK ((int64_t)1 << 24) /* floats per MPI call */

static volatile sig_atomic_t g_stop_signal;

static void on_signal(int sig) { g_stop_signal = sig; }

int dp_train_stop_requested(void) { return g_stop_signal != 0; }

void dp_train_install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void dp_train_opts_default(dp_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->method = DP_TRAIN_LORA;
    o->lora_rank = 8;
    o->lora_alpha = 16;
    o->lora_dropout = 0.05;
    o->lora_targets = (1u << DP_BT_Q) | (1u << DP_BT_K) | (1u << DP_BT_V) | (1u << DP_BT_O) |
                      (1u << DP_BT_GATE) | (1u << DP_BT_UP) | (1u << DP_BT_DOWN);
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
                     o->sched, (long long)o->global_batch, (long long)o->micro_batch, (long long)o->epochs,
                     o->kd_alpha, o->kd_temp, (long long)o->kd_topk, o->teacher_cache != NULL,
                     (unsigned long long)o->seed, (unsigned long long)data_hash,
                     (unsigned long long)o->teacher_hash);
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
    if (o->sched == DP_SCHED_COSINE) f = 0.5 * (1.0 + cos(M_PI * p));
    else if (o->sched == DP_SCHED_LINEAR) f = 1.0 - p;
    return o->lr * (o->min_lr_ratio + (1.0 - o->min_lr_ratio) * f);
}

/* ---------------- micro-batches ---------------- */

typedef struct batch {
    int64_t B, T;
    int32_t *tokens, *targets; /* (B, T) */
    uint64_t *keys;            /* (B, T) dropout row keys */
    int64_t n_real;            /* real (non-padding) tokens */
} batch;

static int64_t example_len(const dp_train_data *d, int64_t e) { return d->off[e + 1] - d->off[e]; }

/* Tokens of the global batch that carry a loss. */
static int64_t counted_tokens(const dp_train_data *d, const int64_t *ex, int64_t n) {
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) {
        const int32_t *lab = d->labels + d->off[ex[i]];
        for (int64_t t = 1; t < example_len(d, ex[i]); t++) c += lab[t] >= 0;
    }
    return c;
}

/* Right-padded micro-batch of examples ex[0..n) (n <= b->B rows; missing
 * rows are all padding); T rounded up to 8 within tmax. */
static void build_batch(batch *b, const dp_train_data *d, const int64_t *ex, int64_t n, int64_t tmax,
                        uint64_t seed, int64_t it) {
    int64_t T = 1;
    for (int64_t i = 0; i < n; i++)
        if (example_len(d, ex[i]) > T) T = example_len(d, ex[i]);
    T = (T + 7) / 8 * 8;
    if (T > tmax) T = tmax;
    b->T = T;
    b->n_real = 0;
    for (int64_t i = 0; i < b->B; i++) {
        int64_t len = i < n ? example_len(d, ex[i]) : 0;
        const int32_t *tok = i < n ? d->tokens + d->off[ex[i]] : NULL;
        const int32_t *lab = i < n ? d->labels + d->off[ex[i]] : NULL;
        b->n_real += len;
        for (int64_t t = 0; t < T; t++) {
            int64_t r = i * T + t;
            b->tokens[r] = t < len ? tok[t] : 0;
            b->targets[r] = t + 1 < len ? lab[t + 1] : -1;
            uint64_t st = seed ^ ((uint64_t)it * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)(i < n ? ex[i] : 0) << 20) ^
                          (uint64_t)t;
            b->keys[r] = dp_splitmix64(&st);
        }
    }
}

/* ---------------- teacher cache ---------------- */

typedef struct tcache {
    dp_h5 h;
    int open;
    int64_t K;
} tcache;

static int tcache_open(tcache *c, const char *path, const dp_train_data *d, double temp, dp_err *err) {
    memset(c, 0, sizeof *c);
    int rc = dp_h5_open(&c->h, path, MPI_COMM_SELF, 0, err);
    if (rc) return rc;
    c->open = 1;
    char *a = NULL;
    char want[64];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)d->hash);
    rc = dp_h5_get_attr(&c->h, "data_hash", &a, err);
    if (!rc && strcmp(a, want))
        rc = dp_err_set(err, DP_E_MISMATCH, "%s was built from different training data (hash %s, data %s)", path, a, want);
    dp_free(a);
    a = NULL;
    if (!rc) rc = dp_h5_get_attr(&c->h, "temperature", &a, err);
    if (!rc && fabs(strtod(a, NULL) - temp) > 1e-12)
        rc = dp_err_set(err, DP_E_MISMATCH, "%s was built at temperature %s, the run uses %g", path, a, temp);
    dp_free(a);
    int nd = 0;
    int64_t sh[DP_MAX_DIMS];
    if (!rc) rc = dp_h5_shape(&c->h, "idx", &nd, sh, err);
    if (!rc && (nd != 2 || sh[0] != d->off[d->n]))
        rc = dp_err_set(err, DP_E_MISMATCH, "%s: idx has %lld rows, the data has %lld tokens", path, (long long)sh[0],
                        (long long)d->off[d->n]);
    if (!rc) c->K = sh[1];
    if (rc) {
        dp_h5_close(&c->h);
        c->open = 0;
    }
    return rc;
}

static int tcache_fill(tcache *c, const dp_train_data *d, const int64_t *ex, int64_t n, int64_t T, int32_t *idx,
                       float *val, float *lse, dp_err *err) {
    int64_t K = c->K;
    for (int64_t i = 0; i < n; i++) {
        int64_t len = example_len(d, ex[i]), r0 = d->off[ex[i]];
        if (len > T) len = T;
        int rc = dp_h5_read_rows(&c->h, "idx", DP_DTYPE_I32, r0, len, idx + i * T * K, err);
        if (!rc) rc = dp_h5_read_rows(&c->h, "val", DP_DTYPE_F32, r0, len, val + i * T * K, err);
        if (!rc) rc = dp_h5_read_rows(&c->h, "lse", DP_DTYPE_F32, r0, len, lse + i * T, err);
        if (rc) return rc;
        for (int64_t t = 0; t < len * K; t++)
            if (idx[i * T * K + t] < 0) return dp_err_set(err, DP_E_FORMAT, "teacher cache: negative token index");
    }
    return DP_OK;
}

int dp_teacher_cache_build(const dp_mpi *mpi, dp_device dev, const dp_llama *teacher, uint64_t teacher_hash,
                           const dp_train_data *d, int64_t topk, double temp, int64_t bsz, const char *path,
                           int progress, dp_err *err) {
    int64_t V = teacher->cfg.vocab_size;
    if (topk < 1 || topk > V) return dp_err_set(err, DP_E_CONFIG, "top-k %lld outside [1, %lld]", (long long)topk, (long long)V);
    if (!(temp > 0)) return dp_err_set(err, DP_E_CONFIG, "KD temperature must be positive");
    /* ranks take contiguous example ranges */
    int64_t e0 = d->n * mpi->rank / mpi->size, e1 = d->n * (mpi->rank + 1) / mpi->size;
    int64_t tmax = d->max_len, ntok = d->off[d->n];
    int64_t r0 = d->off[e0], nrows = d->off[e1] - r0;
    int32_t *idx = dp_malloc((size_t)((nrows > 0 ? nrows : 1) * topk) * sizeof(int32_t), "teacher cache");
    float *val = dp_malloc((size_t)((nrows > 0 ? nrows : 1) * topk) * sizeof(float), "teacher cache");
    float *lse = dp_malloc((size_t)(nrows > 0 ? nrows : 1) * sizeof(float), "teacher cache");
    dp_engine eng;
    dp_layer_map map;
    dp_layer_map_all(&map, (int)teacher->cfg.n_layers);
    dp_engine_plan plan = {.B = bsz, .T = tmax, .logits = 1, .local_rank = mpi->local_rank};
    int rc = dp_mpi_agree(mpi, dp_engine_open(&eng, dev, teacher, &plan, err), err);
    if (rc) {
        dp_free(idx);
        dp_free(val);
        dp_free(lse);
        return rc;
    }
    batch b = {.B = bsz};
    b.tokens = dp_malloc((size_t)(bsz * tmax) * sizeof(int32_t), "batch");
    b.targets = dp_malloc((size_t)(bsz * tmax) * sizeof(int32_t), "batch");
    b.keys = dp_malloc((size_t)(bsz * tmax) * sizeof(uint64_t), "batch");
    int32_t *bi = dp_malloc((size_t)(bsz * tmax * topk) * sizeof(int32_t), "batch");
    float *bv = dp_malloc((size_t)(bsz * tmax * topk) * sizeof(float), "batch");
    float *bl = dp_malloc((size_t)(bsz * tmax) * sizeof(float), "batch");
    int64_t *ex = dp_malloc((size_t)bsz * sizeof(int64_t), "batch");
    double t0 = dp_time_s();
    for (int64_t e = e0; e < e1 && !rc; e += bsz) {
        int64_t n = e1 - e < bsz ? e1 - e : bsz;
        for (int64_t i = 0; i < n; i++) ex[i] = e + i;
        build_batch(&b, d, ex, n, tmax, 0, 0);
        if ((rc = dp_engine_topk(&eng, &map, b.tokens, bsz, b.T, topk, temp, bi, bv, bl, err))) break;
        for (int64_t i = 0; i < n; i++) {
            int64_t len = example_len(d, e + i), at = d->off[e + i] - r0;
            memcpy(idx + at * topk, bi + i * b.T * topk, (size_t)(len * topk) * sizeof(int32_t));
            memcpy(val + at * topk, bv + i * b.T * topk, (size_t)(len * topk) * sizeof(float));
            memcpy(lse + at, bl + i * b.T, (size_t)len * sizeof(float));
        }
        if (progress && mpi->rank == 0)
            dp_log("teacher cache: %lld/%lld examples on rank 0, %.1f s", (long long)(e + n - e0),
                   (long long)(e1 - e0), dp_time_s() - t0);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    size_t tl = strlen(path) + 16;
    char *tmp = dp_malloc(tl, "path");
    snprintf(tmp, tl, "%s.tmp", path);
    dp_h5 h;
    if (!rc) rc = dp_h5_create(&h, tmp, mpi->comm, err);
    if (!rc) {
        int64_t g2[2] = {ntok, topk}, g1[1] = {ntok};
        char v[64];
        rc = dp_h5_write_rows(&h, "idx", DP_DTYPE_I32, 2, g2, 4096, r0, nrows, idx, err);
        if (!rc) rc = dp_h5_write_rows(&h, "val", DP_DTYPE_F32, 2, g2, 4096, r0, nrows, val, err);
        if (!rc) rc = dp_h5_write_rows(&h, "lse", DP_DTYPE_F32, 1, g1, 4096, r0, nrows, lse, err);
        snprintf(v, sizeof v, "%016llx", (unsigned long long)d->hash);
        if (!rc) rc = dp_h5_set_attr(&h, "data_hash", v, err);
        snprintf(v, sizeof v, "%016llx", (unsigned long long)teacher_hash);
        if (!rc) rc = dp_h5_set_attr(&h, "model_hash", v, err);
        snprintf(v, sizeof v, "%lld", (long long)topk);
        if (!rc) rc = dp_h5_set_attr(&h, "topk", v, err);
        snprintf(v, sizeof v, "%.17g", temp);
        if (!rc) rc = dp_h5_set_attr(&h, "temperature", v, err);
        int fr = dp_h5_finish(&h, rc ? NULL : err);
        if (!rc) rc = fr;
    }
    rc = dp_mpi_agree(mpi, rc, err);
    if (!rc && mpi->rank == 0 && rename(tmp, path)) rc = dp_err_set(err, DP_E_IO, "cannot rename %s to %s", tmp, path);
    rc = dp_mpi_agree(mpi, rc, err);
    dp_free(tmp);
    dp_free(ex);
    dp_free(bi);
    dp_free(bv);
    dp_free(bl);
    dp_free(b.tokens);
    dp_free(b.targets);
    dp_free(b.keys);
    dp_free(idx);
    dp_free(val);
    dp_free(lse);
    dp_engine_close(&eng);
    return rc;
}

/* ---------------- shards ---------------- */

static void shard_range(int64_t n, int rank, int size, int64_t *s0, int64_t *s1) {
    *s0 = n * rank / size;
    *s1 = n * (rank + 1) / size;
}

/* g's shard of every owner becomes the sum over ranks (at the owner). */
static void reduce_to_owners(const dp_mpi *mpi, float *g, int64_t n) {
    if (mpi->size == 1) return;
    for (int r = 0; r < mpi->size; r++) {
        int64_t s0, s1;
        shard_range(n, r, mpi->size, &s0, &s1);
        for (int64_t c = s0; c < s1; c += MPI_CHUNK) {
            int cnt = (int)(s1 - c < MPI_CHUNK ? s1 - c : MPI_CHUNK);
            if (mpi->rank == r) DP_CHECK_MPI(MPI_Reduce(MPI_IN_PLACE, g + c, cnt, MPI_FLOAT, MPI_SUM, r, mpi->comm));
            else DP_CHECK_MPI(MPI_Reduce(g + c, NULL, cnt, MPI_FLOAT, MPI_SUM, r, mpi->comm));
        }
    }
}

static void bcast_from_owners(const dp_mpi *mpi, float *p, int64_t n) {
    if (mpi->size == 1) return;
    for (int r = 0; r < mpi->size; r++) {
        int64_t s0, s1;
        shard_range(n, r, mpi->size, &s0, &s1);
        for (int64_t c = s0; c < s1; c += MPI_CHUNK) {
            int cnt = (int)(s1 - c < MPI_CHUNK ? s1 - c : MPI_CHUNK);
            DP_CHECK_MPI(MPI_Bcast(p + c, cnt, MPI_FLOAT, r, mpi->comm));
        }
    }
}

/* ---------------- checkpoints ---------------- */

typedef struct ckpt_state {
    int64_t it, opt_step, skipped, consec;
} ckpt_state;

static char *ckpt_dir(const char *run) { return dp_path_join(run, "ckpt"); }

/* A checkpoint is a directory RUNDIR/ckpt/step-NNNNNNNNN/ holding one
 * serial HDF5 file per rank (rank-RRRRR.h5: that rank's shard of the
 * parameters and the Adam moments, rows [shard_begin, shard_end)) and a
 * manifest per file (size + block hashes). Each rank writes only its own
 * file, so a full disk or an I/O error on one rank is a local error the
 * ranks agree on (a shared parallel-HDF5 file cannot be closed safely after
 * one rank's write failed). It is written as step-N.tmp/ and renamed when
 * every file and manifest is durable; any rank count can resume it. */
static char *ckpt_path(const char *run, int64_t it, const char *suffix) {
    char name[64];
    snprintf(name, sizeof name, "step-%09lld%s", (long long)it, suffix);
    char *dir = ckpt_dir(run);
    char *p = dp_path_join(dir, name);
    dp_free(dir);
    return p;
}

static char *shard_path(const char *dir, int rank, const char *suffix) {
    char name[64];
    snprintf(name, sizeof name, "rank-%05d.h5%s", rank, suffix);
    return dp_path_join(dir, name);
}

/* Removes a checkpoint directory (flat: files only). */
static void remove_ckpt_dir(const char *dir) {
    DIR *dd = opendir(dir);
    struct dirent *e;
    while (dd && (e = readdir(dd))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = dp_path_join(dir, e->d_name);
        unlink(p);
        dp_free(p);
    }
    if (dd) closedir(dd);
    rmdir(dir);
}

/* Checkpoint iterations present in RUNDIR/ckpt, descending (rank 0). */
static int64_t list_ckpts(const char *run, int64_t **out) {
    char *dir = ckpt_dir(run);
    DIR *dd = opendir(dir);
    dp_free(dir);
    int64_t n = 0, cap = 16;
    int64_t *v = dp_malloc((size_t)cap * sizeof(int64_t), "ckpt");
    struct dirent *e;
    while (dd && (e = readdir(dd))) {
        long long it;
        int end = 0;
        if (sscanf(e->d_name, "step-%lld%n", &it, &end) == 1 && !e->d_name[end] && it >= 0) {
            if (n == cap) v = dp_realloc(v, (size_t)(cap *= 2) * sizeof(int64_t), "ckpt");
            v[n++] = it;
        }
    }
    if (dd) closedir(dd);
    for (int64_t i = 1; i < n; i++) /* descending */
        for (int64_t j = i; j > 0 && v[j] > v[j - 1]; j--) {
            int64_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    *out = v;
    return n;
}

static int set_attr_u64(dp_h5 *h, const char *name, uint64_t x, dp_err *err) {
    char v[32];
    snprintf(v, sizeof v, "%016llx", (unsigned long long)x);
    return dp_h5_set_attr(h, name, v, err);
}

static int set_attr_i64(dp_h5 *h, const char *name, int64_t x, dp_err *err) {
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)x);
    return dp_h5_set_attr(h, name, v, err);
}

static int get_attr_i64(dp_h5 *h, const char *name, int64_t *x, dp_err *err) {
    char *a = NULL;
    int rc = dp_h5_get_attr(h, name, &a, err);
    if (!rc) {
        char *end;
        long long v = strtoll(a, &end, 10);
        if (end == a || *end) rc = dp_err_set(err, DP_E_FORMAT, "attribute %s is not an integer", name);
        *x = v;
    }
    dp_free(a);
    return rc;
}

static int fsync_path(const char *path, dp_err *err) {
    FILE *f = fopen(path, "rb+");
    if (!f) return dp_err_set(err, DP_E_IO, "%s: cannot reopen to flush: %s", path, strerror(errno));
    int rc = fsync(fileno(f)) ? dp_err_set(err, DP_E_IO, "%s: fsync failed: %s", path, strerror(errno)) : DP_OK;
    fclose(f);
    return rc;
}

typedef struct trainer {
    const dp_mpi *mpi;
    const dp_train_opts *o;
    int64_t n;        /* trainable floats */
    float *p, *g;     /* params (all), gradients (all, local then reduced at the owner's shard) */
    float *m, *v;     /* moments of this rank's shard */
    int64_t s0, s1;   /* this rank's shard */
    uint64_t cfg_hash;
} trainer;

/* Writes path's manifest (size + block hashes) next to it as
 * path.manifest, atomically. Local. */
static int write_manifest(const char *path, int64_t it, dp_err *err) {
    struct stat st;
    if (stat(path, &st)) return dp_err_set(err, DP_E_IO, "%s: cannot stat: %s", path, strerror(errno));
    int64_t bytes = (int64_t)st.st_size, block = (int64_t)16 << 20;
    dp_manifest m = {.bytes = bytes, .block_bytes = block, .iteration = it};
    m.n_blocks = dp_manifest_n_blocks(bytes, block);
    const char *base = strrchr(path, '/');
    snprintf(m.file, sizeof m.file, "%s", base ? base + 1 : path);
    m.blocks = dp_malloc((size_t)(m.n_blocks + 1) * sizeof(uint64_t), "ckpt");
    int rc = DP_OK;
    for (int64_t i = 0; i < m.n_blocks && !rc; i++) rc = dp_file_block_hash(path, bytes, block, i, &m.blocks[i], err);
    if (!rc) {
        size_t pl = strlen(path) + 16;
        char *mp = dp_malloc(pl, "path");
        snprintf(mp, pl, "%s.manifest", path);
        char *js = dp_manifest_json(&m);
        rc = dp_write_file_atomic(mp, js, strlen(js), err);
        dp_free(js);
        dp_free(mp);
    }
    dp_manifest_free(&m);
    return rc;
}

/* Checks path against path.manifest before HDF5 parses it: size and every
 * block's hash. Local. */
static int verify_manifest(const char *path, int64_t it, dp_err *err) {
    size_t pl = strlen(path) + 16;
    char *mp = dp_malloc(pl, "path");
    snprintf(mp, pl, "%s.manifest", path);
    char *js = NULL;
    size_t n = 0;
    dp_manifest m;
    memset(&m, 0, sizeof m);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    int rc = dp_read_file(mp, &js, &n, err);
    dp_free(mp);
    if (rc) rc = dp_err_set(err, DP_E_FORMAT, "%s: no manifest (the write did not finish)", base);
    if (!rc && (rc = dp_manifest_parse(js, n, &m, err))) dp_err_prefix(err, "%s: ", base);
    dp_free(js);
    if (!rc && (strcmp(m.file, base) || m.iteration != it))
        rc = dp_err_set(err, DP_E_FORMAT, "%s: its manifest describes %s at iteration %lld", base, m.file,
                        (long long)m.iteration);
    struct stat st;
    if (!rc && stat(path, &st)) rc = dp_err_set(err, DP_E_FORMAT, "%s: cannot stat: %s", base, strerror(errno));
    if (!rc && (int64_t)st.st_size != m.bytes)
        rc = dp_err_set(err, DP_E_FORMAT, "%s: %lld bytes, its manifest says %lld (truncated or extended)", base,
                        (long long)st.st_size, (long long)m.bytes);
    for (int64_t i = 0; i < m.n_blocks && !rc; i++) {
        uint64_t h = 0;
        rc = dp_file_block_hash(path, m.bytes, m.block_bytes, i, &h, err);
        if (!rc && h != m.blocks[i])
            rc = dp_err_set(err, DP_E_FORMAT, "%s: block %lld (bytes from %lld) does not match its hash (corrupted)", base,
                            (long long)i, (long long)(i * m.block_bytes));
    }
    dp_manifest_free(&m);
    return rc;
}

static int ckpt_write(trainer *tr, const ckpt_state *cs, dp_err *err) {
    const dp_mpi *mpi = tr->mpi;
    const char *run = tr->o->run_dir;
    char *tmp = ckpt_path(run, cs->it, ".tmp");
    char *fin = ckpt_path(run, cs->it, "");
    char *dir = ckpt_dir(run);
    int rc = DP_OK;
    if (mpi->rank == 0) {
        if (mkdir(dir, 0755) && errno != EEXIST) rc = dp_err_set(err, DP_E_IO, "cannot create %s: %s", dir, strerror(errno));
        if (!rc) remove_ckpt_dir(tmp); /* a leftover of an interrupted write */
        if (!rc && mkdir(tmp, 0755)) rc = dp_err_set(err, DP_E_IO, "cannot create %s: %s", tmp, strerror(errno));
    }
    rc = dp_mpi_agree(mpi, rc, err);
    char *file = shard_path(tmp, mpi->rank, "");
    dp_h5 h;
    if (!rc) rc = dp_h5_create(&h, file, MPI_COMM_SELF, err);
    if (!rc) {
        int64_t cnt = tr->s1 - tr->s0, gs[1] = {cnt}, chunk = 1 << 20;
        rc = dp_h5_write_rows(&h, "param", DP_DTYPE_F32, 1, gs, chunk, 0, cnt, tr->p + tr->s0, err);
        if (!rc) rc = dp_h5_write_rows(&h, "adam_m", DP_DTYPE_F32, 1, gs, chunk, 0, cnt, tr->m, err);
        if (!rc) rc = dp_h5_write_rows(&h, "adam_v", DP_DTYPE_F32, 1, gs, chunk, 0, cnt, tr->v, err);
        if (!rc) rc = dp_h5_set_attr(&h, "version", CKPT_VERSION, err);
        if (!rc) rc = set_attr_i64(&h, "shard_begin", tr->s0, err);
        if (!rc) rc = set_attr_i64(&h, "shard_end", tr->s1, err);
        if (!rc) rc = set_attr_i64(&h, "trainable", tr->n, err);
        if (!rc) rc = set_attr_i64(&h, "rank", mpi->rank, err);
        if (!rc) rc = set_attr_i64(&h, "iteration", cs->it, err);
        if (!rc) rc = set_attr_i64(&h, "opt_step", cs->opt_step, err);
        if (!rc) rc = set_attr_i64(&h, "skipped", cs->skipped, err);
        if (!rc) rc = set_attr_i64(&h, "consecutive_skips", cs->consec, err);
        if (!rc) rc = set_attr_i64(&h, "seed", (int64_t)tr->o->seed, err);
        if (!rc) rc = set_attr_i64(&h, "ranks", mpi->size, err);
        if (!rc) rc = set_attr_u64(&h, "config_hash", tr->cfg_hash, err);
        if (!rc) rc = set_attr_u64(&h, "model_hash", tr->o->model_hash, err);
        if (!rc) rc = set_attr_u64(&h, "param_hash", dp_hash_bytes(tr->p, (size_t)tr->n * sizeof(float), 3), err);
        if (!rc) rc = dp_h5_set_attr(&h, "complete", "1", err); /* last */
        dp_fault_point("ckpt_write");
        int fr = dp_h5_finish(&h, rc ? NULL : err);
        if (!rc) rc = fr;
    }
    if (!rc) rc = fsync_path(file, err);
    if (!rc) rc = write_manifest(file, cs->it, err);
    dp_free(file);
    rc = dp_mpi_agree(mpi, rc, err);
    if (!rc) dp_fault_point("ckpt_commit");
    if (!rc && mpi->rank == 0) {
        rc = dp_fsync_dir(tmp, err);
        /* the same iteration again (a resumed run redoing steps after a
         * damaged checkpoint): the old one goes only once the new one is in */
        char *old = ckpt_path(run, cs->it, ".old");
        remove_ckpt_dir(old);
        if (!rc && dp_file_exists(fin) && rename(fin, old))
            rc = dp_err_set(err, DP_E_IO, "cannot rename %s: %s", fin, strerror(errno));
        if (!rc && rename(tmp, fin)) rc = dp_err_set(err, DP_E_IO, "cannot rename %s: %s", tmp, strerror(errno));
        if (!rc) remove_ckpt_dir(old);
        dp_free(old);
        if (!rc) rc = dp_fsync_dir(dir, err);
        if (!rc) { /* keep the newest keep_ckpt complete ones */
            int64_t *its = NULL, n = list_ckpts(run, &its);
            int64_t keep = tr->o->keep_ckpt > 1 ? tr->o->keep_ckpt : 2;
            for (int64_t i = keep; i < n; i++) {
                char *gone = ckpt_path(run, its[i], "");
                remove_ckpt_dir(gone);
                dp_free(gone);
            }
            dp_free(its);
        }
    }
    rc = dp_mpi_agree(mpi, rc, err);
    dp_free(dir);
    dp_free(tmp);
    dp_free(fin);
    return rc;
}

/* One shard file of a checkpoint, opened serially after its manifest checked. */
typedef struct shard {
    dp_h5 h;
    int64_t s0, s1;
} shard;

/* Tries one checkpoint; DP_E_MISMATCH (a different run) is fatal, other
 * errors mean "damaged, try an older one". Any rank count can resume a
 * checkpoint written by any other: each rank reads every shard's
 * parameters and the moments of its own new shard. */
static int ckpt_try(trainer *tr, int64_t it, ckpt_state *cs, dp_err *err) {
    const dp_mpi *mpi = tr->mpi;
    char *dir = ckpt_path(tr->o->run_dir, it, "");
    int64_t nfiles = 0;
    int rc = DP_OK;
    if (mpi->rank == 0) { /* the shard count, from file 0 */
        char *f0 = shard_path(dir, 0, "");
        dp_h5 h;
        rc = verify_manifest(f0, it, err);
        if (!rc) rc = dp_h5_open(&h, f0, MPI_COMM_SELF, 0, err);
        if (!rc) {
            rc = get_attr_i64(&h, "ranks", &nfiles, err);
            dp_h5_close(&h);
        }
        if (!rc && (nfiles < 1 || nfiles > 1 << 20)) rc = dp_err_set(err, DP_E_FORMAT, "bad shard count %lld", (long long)nfiles);
        dp_free(f0);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    DP_CHECK_MPI(MPI_Bcast(&nfiles, 1, MPI_INT64_T, 0, mpi->comm));
    /* every file's manifest, files dealt over ranks */
    for (int64_t f = mpi->rank; f < nfiles && !rc; f += mpi->size) {
        char *p = shard_path(dir, (int)f, "");
        rc = verify_manifest(p, it, err);
        dp_free(p);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    shard *sh = dp_calloc((size_t)(nfiles > 0 ? nfiles : 1), sizeof(shard), "ckpt");
    int64_t opened = 0;
    for (int64_t f = 0; f < nfiles && !rc; f++, opened++) {
        char *p = shard_path(dir, (int)f, "");
        rc = dp_h5_open(&sh[f].h, p, MPI_COMM_SELF, 0, err);
        dp_free(p);
        if (rc) break;
        char *a = NULL;
        if (dp_h5_get_attr(&sh[f].h, "complete", &a, err) || strcmp(a, "1"))
            rc = dp_err_set(err, DP_E_FORMAT, "shard %lld not marked complete", (long long)f);
        dp_free(a);
        if (!rc) rc = get_attr_i64(&sh[f].h, "shard_begin", &sh[f].s0, err);
        if (!rc) rc = get_attr_i64(&sh[f].h, "shard_end", &sh[f].s1, err);
        if (!rc && sh[f].s0 != (f ? sh[f - 1].s1 : 0))
            rc = dp_err_set(err, DP_E_FORMAT, "shard %lld does not continue shard %lld", (long long)f, (long long)f - 1);
    }
    if (!rc && nfiles > 0 && sh[nfiles - 1].s1 != tr->n)
        rc = dp_err_set(err, DP_E_MISMATCH, "%s holds %lld trainable values, this run has %lld", dir,
                        (long long)sh[nfiles - 1].s1, (long long)tr->n);
    char *a = NULL;
    char want[32];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)tr->cfg_hash);
    if (!rc && (dp_h5_get_attr(&sh[0].h, "config_hash", &a, err) || strcmp(a, want)))
        rc = dp_err_set(err, DP_E_MISMATCH,
                        "%s was written by a run with a different configuration or data (config hash %s, this run %s); "
                        "use a fresh --run directory", dir, a ? a : "?", want);
    dp_free(a);
    a = NULL;
    snprintf(want, sizeof want, "%016llx", (unsigned long long)tr->o->model_hash);
    if (!rc && (dp_h5_get_attr(&sh[0].h, "model_hash", &a, err) || strcmp(a, want)))
        rc = dp_err_set(err, DP_E_MISMATCH, "%s was written for a different student model; use a fresh --run directory",
                        dir);
    dp_free(a);
    a = NULL;
    rc = dp_mpi_agree(mpi, rc, err);
    /* read into scratch, so that a damaged file leaves the state untouched */
    int64_t cnt = tr->s1 - tr->s0;
    float *tp = NULL, *tm = NULL, *tv = NULL;
    if (!rc) {
        tp = dp_malloc((size_t)tr->n * sizeof(float) + 1, "ckpt");
        tm = dp_malloc((size_t)(cnt + 1) * sizeof(float), "ckpt");
        tv = dp_malloc((size_t)(cnt + 1) * sizeof(float), "ckpt");
    }
    for (int64_t f = 0; f < nfiles && !rc; f++) {
        rc = dp_h5_read_rows(&sh[f].h, "param", DP_DTYPE_F32, 0, sh[f].s1 - sh[f].s0, tp + sh[f].s0, err);
        int64_t lo = sh[f].s0 > tr->s0 ? sh[f].s0 : tr->s0, hi = sh[f].s1 < tr->s1 ? sh[f].s1 : tr->s1;
        if (!rc && lo < hi) rc = dp_h5_read_rows(&sh[f].h, "adam_m", DP_DTYPE_F32, lo - sh[f].s0, hi - lo, tm + (lo - tr->s0), err);
        if (!rc && lo < hi) rc = dp_h5_read_rows(&sh[f].h, "adam_v", DP_DTYPE_F32, lo - sh[f].s0, hi - lo, tv + (lo - tr->s0), err);
    }
    if (!rc) {
        snprintf(want, sizeof want, "%016llx", (unsigned long long)dp_hash_bytes(tp, (size_t)tr->n * sizeof(float), 3));
        if (dp_h5_get_attr(&sh[0].h, "param_hash", &a, err) || strcmp(a, want))
            rc = dp_err_set(err, DP_E_FORMAT, "parameter hash does not verify");
        dp_free(a);
    }
    if (!rc) rc = get_attr_i64(&sh[0].h, "iteration", &cs->it, err);
    if (!rc) rc = get_attr_i64(&sh[0].h, "opt_step", &cs->opt_step, err);
    if (!rc) rc = get_attr_i64(&sh[0].h, "skipped", &cs->skipped, err);
    if (!rc) rc = get_attr_i64(&sh[0].h, "consecutive_skips", &cs->consec, err);
    for (int64_t f = 0; f < opened; f++) dp_h5_close(&sh[f].h);
    dp_free(sh);
    rc = dp_mpi_agree(mpi, rc, err);
    if (!rc) {
        memcpy(tr->p, tp, (size_t)tr->n * sizeof(float));
        memcpy(tr->m, tm, (size_t)cnt * sizeof(float));
        memcpy(tr->v, tv, (size_t)cnt * sizeof(float));
    }
    dp_free(tp);
    dp_free(tm);
    dp_free(tv);
    if (rc && rc != DP_E_MISMATCH) rc = DP_E_FORMAT;
    dp_free(dir);
    return rc;
}

/* Resumes from the newest usable checkpoint (*resumed = 1), else leaves the
 * state as initialised; a checkpoint of another run is an error. */
static int ckpt_resume(trainer *tr, ckpt_state *cs, int *resumed, dp_err *err) {
    const dp_mpi *mpi = tr->mpi;
    int64_t *its = NULL, n = 0;
    if (mpi->rank == 0) n = list_ckpts(tr->o->run_dir, &its);
    DP_CHECK_MPI(MPI_Bcast(&n, 1, MPI_INT64_T, 0, mpi->comm));
    if (mpi->rank != 0) its = dp_malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t), "ckpt");
    if (n > 0) DP_CHECK_MPI(MPI_Bcast(its, (int)n, MPI_INT64_T, 0, mpi->comm));
    *resumed = 0;
    int rc = DP_OK;
    for (int64_t i = 0; i < n; i++) {
        dp_err e;
        dp_err_clear(&e);
        rc = ckpt_try(tr, its[i], cs, &e);
        if (rc == DP_OK) {
            *resumed = 1;
            if (mpi->rank == 0) dp_log("resuming from checkpoint step-%09lld (iteration %lld)", (long long)its[i],
                                       (long long)cs->it);
            break;
        }
        if (rc == DP_E_MISMATCH) {
            *err = e;
            break;
        }
        if (mpi->rank == 0)
            dp_log("checkpoint step-%09lld is damaged or incomplete (%s); trying the previous one", (long long)its[i],
                   e.msg[0] ? e.msg : "cannot be opened");
        rc = DP_OK;
    }
    dp_free(its);
    return rc;
}

/* ---------------- the log ---------------- */

/* Keeps the lines of RUNDIR/train_log.jsonl up to iteration it (rank 0). */
static void log_truncate(const char *run, int64_t it) {
    char *p = dp_path_join(run, "train_log.jsonl");
    char *text = NULL;
    size_t n = 0;
    dp_err e;
    if (dp_read_file(p, &text, &n, &e) == DP_OK) {
        dp_buf out = {0};
        size_t pos = 0;
        while (pos < n) {
            char *nl = memchr(text + pos, '\n', n - pos);
            size_t len = nl ? (size_t)(nl - (text + pos)) + 1 : n - pos;
            long long step = -1;
            if (nl && sscanf(text + pos, "{\"step\":%lld", &step) == 1 && step <= it) dp_buf_put(&out, text + pos, len);
            pos += len;
        }
        dp_write_file_atomic(p, out.p ? out.p : "", out.n, &e);
        dp_free(out.p);
    }
    dp_free(text);
    dp_free(p);
}

static void log_line(const char *run, const char *line) {
    char *p = dp_path_join(run, "train_log.jsonl");
    FILE *f = fopen(p, "a");
    if (f) {
        fputs(line, f);
        fclose(f);
    }
    dp_free(p);
}

/* loss.png from the log (gnuplot, when installed). */
static void plot_losses(const char *run) {
    char *logp = dp_path_join(run, "train_log.jsonl"), *dat = dp_path_join(run, "loss.dat"),
         *vdat = dp_path_join(run, "val_loss.dat"), *png = dp_path_join(run, "loss.png");
    char *text = NULL;
    size_t n = 0;
    dp_err e;
    FILE *f = fopen(dat, "w"), *fv = fopen(vdat, "w");
    int n_val = 0;
    if (f && fv && dp_read_file(logp, &text, &n, &e) == DP_OK) {
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            long long s;
            double x;
            if (sscanf(line, "{\"step\":%lld,\"val_loss\":%lf", &s, &x) == 2) fprintf(fv, "%lld %.9g\n", s, x), n_val++;
            else if (sscanf(line, "{\"step\":%lld,\"epoch\":%*f,\"loss\":%lf", &s, &x) == 2) fprintf(f, "%lld %.9g\n", s, x);
        }
    }
    if (f) fclose(f);
    if (fv) fclose(fv);
    dp_free(text);
    char script[8192];
    snprintf(script, sizeof script,
             "set terminal pngcairo size 900,540\nset output '%s'\nset xlabel 'step'\nset ylabel 'loss'\n"
             "set grid\nplot '%s' using 1:2 with lines title 'train loss'%s%s%s\n",
             png, dat, n_val ? ", '" : "", n_val ? vdat : "", n_val ? "' using 1:2 with linespoints title 'validation loss'" : "");
    dp_gnuplot(script, png);
    dp_free(logp);
    dp_free(dat);
    dp_free(vdat);
    dp_free(png);
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
        build_batch(&b, d, idx + i, k, d->max_len, 0, 0);
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

static void ddp_sum(void *ctx, float *dev, int64_t n) { dp_ddp_allreduce_sum(ctx, dev, n); }

/* ---------------- training ---------------- */

/* AdamW over this rank's shard; norm vectors of full training without decay
 * (HF Trainer's no-decay set: RMSNorm weights). */
static void shard_update(trainer *tr, const dp_llama *m, double lr, int64_t step) {
    const dp_train_opts *o = tr->o;
    if (o->method == DP_TRAIN_LORA) {
        dp_adamw_update(tr->p + tr->s0, tr->g + tr->s0, tr->m, tr->v, tr->s1 - tr->s0, lr, o->beta1, o->beta2, o->eps,
                        o->weight_decay, step);
        return;
    }
    for (int i = 0; i < m->n_params; i++) {
        const dp_llama_param *pp = &m->params[i];
        int64_t a = pp->offset > tr->s0 ? pp->offset : tr->s0;
        int64_t b = pp->offset + pp->n_elems < tr->s1 ? pp->offset + pp->n_elems : tr->s1;
        if (a >= b) continue;
        dp_adamw_update(tr->p + a, tr->g + a, tr->m + (a - tr->s0), tr->v + (a - tr->s0), b - a, lr, o->beta1,
                        o->beta2, o->eps, pp->cols == 0 ? 0.0 : o->weight_decay, step);
    }
}

static int all_finite(const float *x, int64_t n) {
    int ok = 1;
#pragma omp parallel for reduction(&& : ok) schedule(static)
    for (int64_t i = 0; i < n; i++) ok = ok && isfinite(x[i]);
    return ok;
}

int dp_train(const dp_mpi *mpi, dp_llama *student, const dp_layer_map *map, const dp_llama *teacher,
             const dp_train_data *d, const int64_t *train_idx, int64_t n_train, const int64_t *val_idx,
             int64_t n_val, const dp_train_opts *o, dp_lora *lora, dp_train_result *res, dp_err *err) {
    memset(res, 0, sizeof *res);
    res->val_loss = NAN; /* stays NaN without a validation set */
    memset(lora, 0, sizeof *lora);
    int P = mpi->size;
    int64_t G = o->global_batch, mb = o->micro_batch, V = student->cfg.vocab_size;
    if (G < 1 || mb < 1 || G % ((int64_t)P * mb))
        return dp_err_set(err, DP_E_CONFIG,
                          "global batch %lld must be a multiple of ranks (%d) x micro batch (%lld)", (long long)G, P,
                          (long long)mb);
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
    if (o->lora_dropout < 0 || o->lora_dropout >= 1) return dp_err_set(err, DP_E_CONFIG, "LoRA dropout must be in [0, 1)");
    if (o->device == DP_DEVICE_CUDA && kd && teacher && o->kd_topk < 1)
        return dp_err_set(err, DP_E_UNSUPPORTED, "online KD over the full vocabulary is not implemented on --device cuda; "
                                                 "use the teacher's top-k (--kd-topk K) or a teacher cache");
    int64_t per_rank = G / P, n_micro = per_rank / mb, tmax = d->max_len;
    int rc = DP_OK;

    /* the trainable vector */
    trainer tr = {.mpi = mpi, .o = o, .cfg_hash = dp_train_opts_hash(o, d->hash)};
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
    shard_range(tr.n, mpi->rank, P, &tr.s0, &tr.s1);
    tr.m = dp_calloc((size_t)(tr.s1 - tr.s0 + 1), sizeof(float), "adam m");
    tr.v = dp_calloc((size_t)(tr.s1 - tr.s0 + 1), sizeof(float), "adam v");

    dp_lora *L = o->method == DP_TRAIN_LORA ? lora : NULL;
    dp_layer_map tmap;
    if (kd && teacher) dp_layer_map_all(&tmap, (int)teacher->cfg.n_layers);
    tcache tc;
    memset(&tc, 0, sizeof tc);
    if (!rc && kd && !teacher) rc = tcache_open(&tc, o->teacher_cache, d, o->kd_temp, err);
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

    ckpt_state cs = {0, 0, 0, 0};
    int resumed = 0;
    if (!rc) rc = ckpt_resume(&tr, &cs, &resumed, err);
    if (!rc && mpi->rank == 0) {
        if (resumed) log_truncate(o->run_dir, cs.it);
        else log_truncate(o->run_dir, -1);
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
    dp_engine_plan plan = {.B = mb, .T = tmax, .n_blocks = map->n, .allow_long = 1, .local_rank = mpi->local_rank,
                           .train = 1, .lora = L, .full = !L, .K = K};
    if (!rc) rc = dp_engine_open(&e, o->device, student, &plan, err);
    if (!rc && kd && teacher) {
        dp_engine_plan tp = {.B = mb, .T = tmax, .allow_long = 1, .local_rank = mpi->local_rank, .logits = 1};
        rc = dp_engine_open(&te, o->device, teacher, &tp, err);
    }
    rc = dp_mpi_agree(mpi, rc, err);
    tr.g = e.grad;
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
        double D = (double)counted_tokens(d, gex, G);
        dp_engine_zero_grad(&e);
        double ce_sum = 0, kd_sum = 0, real = 0;
        for (int64_t mi = 0; mi < n_micro && !rc; mi++) {
            const int64_t *ex = gex + mpi->rank * per_rank + mi * mb;
            build_batch(&b, d, ex, mb, tmax, o->seed, it);
            real += (double)b.n_real;
            int64_t Nr = mb * b.T;
            if (cached) {
                memset(kidx, 0, (size_t)(Nr * K) * sizeof(int32_t));
                rc = tcache_fill(&tc, d, ex, mb, b.T, kidx, kval, klse, err);
                for (int64_t r = 0; !rc && r < Nr * K; r++)
                    if (kidx[r] >= V) rc = dp_err_set(err, DP_E_FORMAT, "teacher cache: token index outside the vocabulary");
                if (rc) break;
            }
            dp_micro x = {.tokens = b.tokens, .targets = b.targets, .keys = L && L->dropout > 0 ? b.keys : NULL,
                          .B = mb, .T = b.T, .tidx = kidx, .tval = kval, .tlse = klse,
                          .teacher = kd && teacher ? &te : NULL, .teacher_map = &tmap, .alpha = o->kd_alpha,
                          .temp = o->kd_temp, .gscale = 1.0 / (D > 0 ? D : 1), .backward = 1};
            rc = dp_engine_micro(&e, map, &x, &ce_sum, &kd_sum, err);
        }
        if (!rc) dp_engine_grad_flush(&e);
        rc = dp_mpi_agree(mpi, rc, err);
        if (rc) break;
        dp_fault_point("train_step");
        if (it == o->fault_nan_step && mpi->rank == o->fault_nan_rank) {
            tr.g[0] = NAN;
            dp_log("fault injection: NaN gradient at iteration %lld", (long long)it);
        }
        double local_bad = !(isfinite(ce_sum) && isfinite(kd_sum) && all_finite(tr.g, tr.n));
        if (!e.grad_summed) reduce_to_owners(mpi, tr.g, tr.n); /* else NCCL summed them on every rank */
        double sq = 0;
        for (int64_t i = tr.s0; i < tr.s1; i++) sq += (double)tr.g[i] * tr.g[i];
        double mine[6] = {local_bad, sq, ce_sum, kd_sum, real, (double)g_stop_signal};
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
                dp_log("step %lld: non-finite %s (first seen on rank %d); step skipped, weights and optimizer unchanged "
                       "(%lld consecutive, %lld in total)",
                       (long long)it + 1, first_bad >= 0 ? "loss or gradient" : "gradient norm",
                       first_bad >= 0 ? first_bad : 0, (long long)cs.consec, (long long)cs.skipped);
            if (cs.consec > o->max_skips) {
                rc = dp_err_set(err, DP_E_NONFINITE,
                                "%lld consecutive non-finite steps (limit %lld); stopping. The last good checkpoint "
                                "is in %s/ckpt", (long long)cs.consec, (long long)o->max_skips, o->run_dir);
                break;
            }
        } else {
            cs.consec = 0;
            if (o->clip > 0 && gnorm > 0) {
                double coef = o->clip / (gnorm + 1e-6);
                if (coef < 1.0) {
                    float c = (float)coef;
                    for (int64_t i = tr.s0; i < tr.s1; i++) tr.g[i] *= c;
                }
            }
            cs.opt_step++;
            shard_update(&tr, student, lr, cs.opt_step);
            bcast_from_owners(mpi, tr.p, tr.n);
            dp_engine_params_changed(&e);
            last_loss = loss;
        }
        cs.it = it + 1;
        double el = dp_time_s() - t_start;
        if (mpi->rank == 0) {
            char line[512];
            double rate = el > 0 ? tot[4] / (el / (double)(cs.it - it0)) : 0;
            snprintf(line, sizeof line,
                     "{\"step\":%lld,\"epoch\":%.6f,\"loss\":%.9g,\"ce\":%.9g,\"kd\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,"
                     "\"skipped\":%d,\"tokens\":%.0f,\"time_s\":%.3f,\"tok_s\":%.1f}\n",
                     (long long)cs.it, (double)cs.it / (double)spe, loss, ce, kdl, lr, gnorm, bad, tot[4], el, rate);
            log_line(o->run_dir, line);
            if (o->progress && (cs.it % (o->log_every > 0 ? o->log_every : 1) == 0 || cs.it == total))
                dp_log("step %lld/%lld epoch %.2f loss %.4f (ce %.4f kd %.4f) lr %.3g grad-norm %.3f %.0f tok/s ETA %.0f s",
                       (long long)cs.it, (long long)total, (double)cs.it / (double)spe, loss, ce, kdl, lr, gnorm, rate,
                       el / (double)(cs.it - it0) * (double)(total - cs.it));
        }
        if (n_val > 0 && o->val_every > 0 && cs.it % o->val_every == 0 && cs.it < total) {
            double vl = eval_loss(mpi, &e, map, d, val_idx, n_val, mb);
            if (mpi->rank == 0) {
                char line[128];
                snprintf(line, sizeof line, "{\"step\":%lld,\"val_loss\":%.9g}\n", (long long)cs.it, vl);
                log_line(o->run_dir, line);
                if (o->progress) dp_log("step %lld: validation loss %.4f", (long long)cs.it, vl);
            }
        }
        int stop = tot[5] > 0;
        if ((o->ckpt_every > 0 && cs.it % o->ckpt_every == 0) || stop || cs.it == total ||
            (o->pause_after > 0 && cs.it == o->pause_after))
            rc = ckpt_write(&tr, &cs, err);
        if (!rc && stop) {
            if (mpi->rank == 0) dp_log("stop requested by a signal: checkpoint at iteration %lld written, exiting", (long long)cs.it);
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
                log_line(o->run_dir, line);
                dp_log("final validation loss %.4f", res->val_loss);
            }
        }
        if (mpi->rank == 0) plot_losses(o->run_dir);
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
