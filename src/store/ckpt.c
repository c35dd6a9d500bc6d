/* Training checkpoints (see store.h): one serial HDF5 file per rank under
 * RUNDIR/ckpt/step-NNNNNNNNN/, each with a manifest, written under a
 * temporary name and renamed when durable; resume takes the newest one
 * that verifies, with any rank count. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "depthprune/store.h"

#define CKPT_VERSION "2"

static char *ckpt_dir(const char *run) {
    return dp_path_join(run, "ckpt");
}

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
            rc = dp_err_set(err, DP_E_FORMAT, "%s: block %lld (bytes from %lld) does not match its hash (corrupted)",
                            base, (long long)i, (long long)(i * m.block_bytes));
    }
    dp_manifest_free(&m);
    return rc;
}

int dp_ckpt_write(const dp_ckpt_vec *v, const dp_ckpt_state *cs, dp_err *err) {
    const dp_mpi *mpi = v->mpi;
    const char *run = v->run_dir;
    char *tmp = ckpt_path(run, cs->it, ".tmp");
    char *fin = ckpt_path(run, cs->it, "");
    char *dir = ckpt_dir(run);
    int rc = DP_OK;
    if (mpi->rank == 0) {
        if (mkdir(dir, 0755) && errno != EEXIST)
            rc = dp_err_set(err, DP_E_IO, "cannot create %s: %s", dir, strerror(errno));
        if (!rc) remove_ckpt_dir(tmp); /* a leftover of an interrupted write */
        if (!rc && mkdir(tmp, 0755)) rc = dp_err_set(err, DP_E_IO, "cannot create %s: %s", tmp, strerror(errno));
    }
    rc = dp_mpi_agree(mpi, rc, err);
    char *file = shard_path(tmp, mpi->rank, "");
    dp_h5 h;
    if (!rc) rc = dp_h5_create(&h, file, MPI_COMM_SELF, err);
    if (!rc) {
        int64_t cnt = v->s1 - v->s0, gs[1] = {cnt}, chunk = 1 << 20;
        rc = dp_h5_write_rows(&h, "param", DP_DTYPE_F32, 1, gs, chunk, 0, cnt, v->p + v->s0, err);
        if (!rc) rc = dp_h5_write_rows(&h, "adam_m", DP_DTYPE_F32, 1, gs, chunk, 0, cnt, v->m, err);
        if (!rc) rc = dp_h5_write_rows(&h, "adam_v", DP_DTYPE_F32, 1, gs, chunk, 0, cnt, v->v, err);
        if (!rc) rc = dp_h5_set_attr(&h, "version", CKPT_VERSION, err);
        if (!rc) rc = set_attr_i64(&h, "shard_begin", v->s0, err);
        if (!rc) rc = set_attr_i64(&h, "shard_end", v->s1, err);
        if (!rc) rc = set_attr_i64(&h, "trainable", v->n, err);
        if (!rc) rc = set_attr_i64(&h, "rank", mpi->rank, err);
        if (!rc) rc = set_attr_i64(&h, "iteration", cs->it, err);
        if (!rc) rc = set_attr_i64(&h, "opt_step", cs->opt_step, err);
        if (!rc) rc = set_attr_i64(&h, "skipped", cs->skipped, err);
        if (!rc) rc = set_attr_i64(&h, "consecutive_skips", cs->consec, err);
        if (!rc) rc = set_attr_i64(&h, "seed", (int64_t)v->seed, err);
        if (!rc) rc = set_attr_i64(&h, "ranks", mpi->size, err);
        if (!rc) rc = set_attr_u64(&h, "config_hash", v->cfg_hash, err);
        if (!rc) rc = set_attr_u64(&h, "model_hash", v->model_hash, err);
        if (!rc) rc = set_attr_u64(&h, "param_hash", dp_hash_bytes(v->p, (size_t)v->n * sizeof(float), 3), err);
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
            int64_t keep = v->keep > 1 ? v->keep : 2;
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
static int ckpt_try(dp_ckpt_vec *v, int64_t it, dp_ckpt_state *cs, dp_err *err) {
    const dp_mpi *mpi = v->mpi;
    char *dir = ckpt_path(v->run_dir, it, "");
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
        if (!rc && (nfiles < 1 || nfiles > 1 << 20))
            rc = dp_err_set(err, DP_E_FORMAT, "bad shard count %lld", (long long)nfiles);
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
            rc =
                dp_err_set(err, DP_E_FORMAT, "shard %lld does not continue shard %lld", (long long)f, (long long)f - 1);
    }
    if (!rc && nfiles > 0 && sh[nfiles - 1].s1 != v->n)
        rc = dp_err_set(err, DP_E_MISMATCH, "%s holds %lld trainable values, this run has %lld", dir,
                        (long long)sh[nfiles - 1].s1, (long long)v->n);
    char *a = NULL;
    char want[32];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)v->cfg_hash);
    if (!rc && (dp_h5_get_attr(&sh[0].h, "config_hash", &a, err) || strcmp(a, want)))
        rc = dp_err_set(err, DP_E_MISMATCH,
                        "%s was written by a run with a different configuration or data (config hash %s, this run %s); "
                        "use a fresh --run directory",
                        dir, a ? a : "?", want);
    dp_free(a);
    a = NULL;
    snprintf(want, sizeof want, "%016llx", (unsigned long long)v->model_hash);
    if (!rc && (dp_h5_get_attr(&sh[0].h, "model_hash", &a, err) || strcmp(a, want)))
        rc = dp_err_set(err, DP_E_MISMATCH, "%s was written for a different student model; use a fresh --run directory",
                        dir);
    dp_free(a);
    a = NULL;
    rc = dp_mpi_agree(mpi, rc, err);
    /* read into scratch, so that a damaged file leaves the state untouched */
    int64_t cnt = v->s1 - v->s0;
    float *tp = NULL, *tm = NULL, *tv = NULL;
    if (!rc) {
        tp = dp_malloc((size_t)v->n * sizeof(float) + 1, "ckpt");
        tm = dp_malloc((size_t)(cnt + 1) * sizeof(float), "ckpt");
        tv = dp_malloc((size_t)(cnt + 1) * sizeof(float), "ckpt");
    }
    for (int64_t f = 0; f < nfiles && !rc; f++) {
        rc = dp_h5_read_rows(&sh[f].h, "param", DP_DTYPE_F32, 0, sh[f].s1 - sh[f].s0, tp + sh[f].s0, err);
        int64_t lo = sh[f].s0 > v->s0 ? sh[f].s0 : v->s0, hi = sh[f].s1 < v->s1 ? sh[f].s1 : v->s1;
        if (!rc && lo < hi)
            rc = dp_h5_read_rows(&sh[f].h, "adam_m", DP_DTYPE_F32, lo - sh[f].s0, hi - lo, tm + (lo - v->s0), err);
        if (!rc && lo < hi)
            rc = dp_h5_read_rows(&sh[f].h, "adam_v", DP_DTYPE_F32, lo - sh[f].s0, hi - lo, tv + (lo - v->s0), err);
    }
    if (!rc) {
        snprintf(want, sizeof want, "%016llx", (unsigned long long)dp_hash_bytes(tp, (size_t)v->n * sizeof(float), 3));
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
        memcpy(v->p, tp, (size_t)v->n * sizeof(float));
        memcpy(v->m, tm, (size_t)cnt * sizeof(float));
        memcpy(v->v, tv, (size_t)cnt * sizeof(float));
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
int dp_ckpt_resume(dp_ckpt_vec *v, dp_ckpt_state *cs, int *resumed, dp_err *err) {
    const dp_mpi *mpi = v->mpi;
    int64_t *its = NULL, n = 0;
    if (mpi->rank == 0) n = list_ckpts(v->run_dir, &its);
    DP_CHECK_MPI(MPI_Bcast(&n, 1, MPI_INT64_T, 0, mpi->comm));
    if (mpi->rank != 0) its = dp_malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t), "ckpt");
    if (n > 0) DP_CHECK_MPI(MPI_Bcast(its, (int)n, MPI_INT64_T, 0, mpi->comm));
    *resumed = 0;
    int rc = DP_OK;
    for (int64_t i = 0; i < n; i++) {
        dp_err e;
        dp_err_clear(&e);
        rc = ckpt_try(v, its[i], cs, &e);
        if (rc == DP_OK) {
            *resumed = 1;
            if (mpi->rank == 0)
                dp_log("resuming from checkpoint step-%09lld (iteration %lld)", (long long)its[i], (long long)cs->it);
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
