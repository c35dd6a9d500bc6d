/* depthprune core: error values, rank-tagged logging, fatal errors and
 * labelled allocation accounting.
 *
 * Two kinds of failure exist. Bad external input (files, configs, flags,
 * data) is reported through a dp_err filled by the function that found it,
 * and the caller decides (usually: print it on rank 0 and exit non-zero).
 * Runtime faults (out of memory, CUDA/MPI errors) go to dp_fatal(), which
 * prints `[rank/world] file:line func: message` and aborts the whole job
 * through the hook the distribution layer installs (MPI_Abort), or exit(1)
 * when none is installed.
 *
 * The core knows nothing of MPI: the rank used in log tags is set by the
 * layer above with dp_log_set_rank(). */
#ifndef DEPTHPRUNE_CORE_H
#define DEPTHPRUNE_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DP_VERSION_STRING "0.1.0"

#ifdef __cplusplus
#define DP_NORETURN [[noreturn]]
#else
#define DP_NORETURN _Noreturn
#endif

/* Status codes. 0 is success; every other value names a class of failure.
 * Modules with many distinct rules (safetensors validation) add their own
 * codes above DP_E_MODULE_BASE so that tests can tell the rules apart. */
enum {
    DP_OK = 0,
    DP_E_IO = 1,       /* open/read/write/mmap/rename failed */
    DP_E_FORMAT = 2,   /* malformed input file */
    DP_E_CONFIG = 3,   /* bad configuration key, type or value */
    DP_E_USAGE = 4,    /* bad command line */
    DP_E_MISMATCH = 5, /* inputs inconsistent with each other */
    DP_E_RANGE = 6,    /* value out of range (token id, sequence length) */
    DP_E_UNSUPPORTED = 7,
    DP_E_NOMEM = 8,
    DP_E_DEVICE = 9,     /* requested device not available */
    DP_E_NONFINITE = 10, /* training stopped: too many consecutive non-finite steps */
    DP_E_STOPPED = 11,   /* stopped by SIGUSR1/SIGTERM at a safe point; the rerun continues */
    DP_E_MODULE_BASE = 100,
};

/* An error slot filled by the function that detects bad input. */
typedef struct dp_err {
    int code;
    char msg[1024];
} dp_err;

/* Sets err (if not NULL) and returns code, so `return dp_err_set(...)` works. */
int dp_err_set(dp_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prepends "context: " to an existing message (e.g. the file name). */
void dp_err_prefix(dp_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dp_err_clear(dp_err *err);

/* ---- logging ---- */
void dp_log_set_rank(int rank, int world);
void dp_log_set_quiet(int quiet);
int dp_log_rank(void);
/* Rank-tagged line to stderr: "[rank/world] message". */
void dp_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same, rank 0 only. Both are silenced by --quiet. */
void dp_log0(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Error line that --quiet does not silence. */
void dp_log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- fatal errors ---- */
typedef void (*dp_abort_hook)(int exit_code);
void dp_set_abort_hook(dp_abort_hook hook);
DP_NORETURN void dp_fatal_impl(const char *file, int line, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define dp_fatal(...) dp_fatal_impl(__FILE__, __LINE__, __func__, __VA_ARGS__)

/* ---- labelled allocations ----
 * Every large buffer carries a label ("weights", "activations", "adam.m")
 * so that an out-of-memory report says who holds what on which rank.
 * Allocation failure is fatal (a runtime fault, not bad input). */
void *dp_malloc(size_t n_bytes, const char *label);
void *dp_calloc(size_t n_elems, size_t elem_bytes, const char *label);
void *dp_realloc(void *ptr, size_t n_bytes, const char *label);
void dp_free(void *ptr);
char *dp_strdup(const char *s, const char *label);
/* The first n bytes of s (which need not be NUL-terminated) as a fresh string. */
char *dp_strndup(const char *s, size_t n, const char *label);
/* Bytes currently held under label (NULL: all labels). */
size_t dp_alloc_bytes(const char *label);
size_t dp_alloc_peak_bytes(void);
/* Writes one line per label: label, current bytes, peak bytes. */
void dp_alloc_report(FILE *out);

/* ---- small helpers shared across modules ---- */
/* Reads a whole file; on success *data is NUL-terminated (not counted in
 * *n_bytes) and owned by the caller (dp_free). */
int dp_read_file(const char *path, char **data, size_t *n_bytes, dp_err *err);
/* Writes a whole file atomically: path.tmp, fsync, rename. */
int dp_write_file_atomic(const char *path, const void *data, size_t n_bytes, dp_err *err);
/* Joins a directory and a file name into a freshly allocated path. */
char *dp_path_join(const char *dir, const char *name);
/* Maps a regular file read-only (*map NULL for an empty file); DP_E_IO
 * naming the path otherwise. Unmap with dp_unmap_file. */
int dp_map_file(const char *path, void **map, size_t *size, dp_err *err);
void dp_unmap_file(void *map, size_t size);
/* The directory part of path as a fresh string (dp_free): "." without a
 * slash (or for ""), "/" for a file in the root. */
char *dp_path_dirname(const char *path);
/* Copies a file (read whole, then dp_write_file_atomic). */
int dp_copy_file(const char *src, const char *dst, dp_err *err);
int dp_file_exists(const char *path);
/* fsync a directory so a rename inside it is durable. */
int dp_fsync_dir(const char *dir, dp_err *err);
/* mkdir -p. */
int dp_mkdir_p(const char *path, dp_err *err);
/* Runs a gnuplot script that writes png (0); gnuplot's own messages go to
 * png + ".log". 1 with a log line if gnuplot is missing or fails. */
int dp_gnuplot(const char *script, const char *png);
/* A growable byte buffer, always NUL-terminated after its n bytes. */
typedef struct dp_buf {
    char *p;
    size_t n, cap;
} dp_buf;
void dp_buf_put(dp_buf *b, const void *bytes, size_t n);
void dp_buf_puts(dp_buf *b, const char *s);
/* Monotonic seconds. */
double dp_time_s(void);

/* Stop requests (src/core/signal.c): SIGUSR1 (Slurm's --signal before the
 * time limit) and SIGTERM set a flag that long stages poll at safe points
 * (a training step, a scoring round, a sweep configuration) to checkpoint
 * and leave. */
void dp_stop_install_signals(void);
int dp_stop_requested(void); /* 1 once such a signal arrived (this process) */
int dp_stop_signal(void);    /* that signal's number, 0 before */
/* After a command that a signal stopped returned 0 (checkpointed): write the file named by
 * $DP_STOP_MARKER, if set, so a job script tells "stopped, requeue me" from "never ran". */
void dp_stop_mark(void);

/* Small deterministic generators (not for cryptography). splitmix64 returns
 * the next 64-bit value of *state; xorshift64* advances *state (non-zero)
 * and returns its 53-bit output as an integer in [0, 2^53). */
uint64_t dp_splitmix64(uint64_t *state);
uint64_t dp_xorshift64s_53(uint64_t *state);

/* 64-bit content hash of bytes (murmur-style mixing; not cryptographic). */
uint64_t dp_hash_bytes(const void *p, size_t n, uint64_t seed);

/* ---- reliability: heartbeat watchdog, checkpoint manifests, fault points ---- */
/* Marks progress (a block computed, a batch read, a log line): cheap, any
 * thread. */
void dp_heartbeat(void);
/* Starts a thread that ends the process (exit code 4, one line naming the
 * rank) when no heartbeat came for `seconds`: a rank waiting forever on a
 * stopped or unreachable peer exits by itself, and mpirun/srun then end the
 * whole job. seconds <= 0: no watchdog. Idempotent. */
int dp_watchdog_start(double seconds, dp_err *err);
/* Suspends / resumes the watchdog's clock around a wait that may be long
 * for a good reason (another rank group finishing its work). */
void dp_watchdog_pause(int paused);

/* A manifest describes a file by its size and one hash per block, so that
 * any changed byte is found before the file is parsed, and the blocks can
 * be verified by different ranks in parallel. */
#define DP_MANIFEST_MAX_BLOCKS (1 << 22)
typedef struct dp_manifest {
    char file[256];      /* the file's base name */
    int64_t bytes;       /* its size */
    int64_t block_bytes; /* block size (the last block may be shorter) */
    int64_t n_blocks;
    uint64_t *blocks;  /* n_blocks hashes (dp_hash_bytes, seed = block index) */
    int64_t iteration; /* free field for the writer (checkpoint iteration; -1 if none) */
} dp_manifest;
int64_t dp_manifest_n_blocks(int64_t bytes, int64_t block_bytes);
/* Hashes block i of path (block_bytes per block) into *h. */
int dp_file_block_hash(const char *path, int64_t bytes, int64_t block_bytes, int64_t i, uint64_t *h, dp_err *err);
/* JSON text of m (fresh string). */
char *dp_manifest_json(const dp_manifest *m);
/* Parses and validates manifest JSON (strict: every field present, typed and
 * consistent); on success m->blocks is owned by m (dp_manifest_free). */
int dp_manifest_parse(const char *json, size_t n, dp_manifest *m, dp_err *err);
void dp_manifest_free(dp_manifest *m);

/* Test-only fault injection (tests/faults): the environment variable
 * DP_FAULT="POINT[#N][@RANK]=ACTION[,...]" makes the N-th (default 1st)
 * pass of rank RANK (default 0) through dp_fault_point(POINT) act: kill
 * (SIGKILL), stop (SIGSTOP), term (SIGTERM), usr1 (SIGUSR1) or exit (exit
 * code 1 without cleanup). Unset: a string compare per call, nothing else. */
void dp_fault_point(const char *point);

#ifdef __cplusplus
}
#endif
#endif
