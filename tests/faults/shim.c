/* LD_PRELOAD shim for the fault harness: makes writes to matching files
 * fail with ENOSPC or EIO on one rank, the way a full or failing disk does.
 *
 *   DP_SHIM_MATCH  substring of the path (required; nothing happens without it)
 *   DP_SHIM_RANK   rank to hit (OMPI_COMM_WORLD_RANK / PMIX_RANK / SLURM_PROCID; -1: every process; default 0)
 *   DP_SHIM_ERRNO  ENOSPC (default) or EIO
 *   DP_SHIM_AFTER  bytes that still succeed before the writes start failing (default 0)
 *
 * Every write path an output can take is covered: write/pwrite/writev/
 * pwritev (HDF5's sec2 and MPI-IO drivers, our own writers), fwrite, and
 * fflush/fclose/fsync of a stream or descriptor that has failed (buffered
 * stdio data reaches the disk there). The first injected failure prints one
 * line to stderr so the harness can tell that the fault really happened. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 65536
static unsigned char g_tracked[MAX_FD];
static int g_init, g_active, g_errno = ENOSPC, g_announced;
static long long g_after, g_written;
static const char *g_match;

static void init(void) {
    if (g_init) return;
    g_init = 1;
    g_match = getenv("DP_SHIM_MATCH");
    if (!g_match || !*g_match) return;
    const char *want = getenv("DP_SHIM_RANK");
    int rank_want = want ? atoi(want) : 0;
    const char *r = getenv("OMPI_COMM_WORLD_RANK");
    if (!r) r = getenv("PMIX_RANK");
    if (!r) r = getenv("SLURM_PROCID");
    int rank = r ? atoi(r) : 0;
    if (rank_want >= 0 && rank != rank_want) return;
    const char *e = getenv("DP_SHIM_ERRNO");
    g_errno = e && !strcmp(e, "EIO") ? EIO : ENOSPC;
    const char *a = getenv("DP_SHIM_AFTER");
    g_after = a ? atoll(a) : 0;
    g_active = 1;
}

static int matches(const char *path) {
    init();
    return g_active && path && strstr(path, g_match) != NULL;
}

static void track(int fd, const char *path, int flags) {
    if (fd >= 0 && fd < MAX_FD) g_tracked[fd] = matches(path) && (flags & (O_WRONLY | O_RDWR | O_CREAT)) ? 1 : 0;
}

/* 1: this write must fail (and errno is set) */
static int hit(int fd, size_t n) {
    if (fd < 0 || fd >= MAX_FD || !g_tracked[fd]) return 0;
    if (g_written + (long long)n <= g_after) {
        g_written += (long long)n;
        return 0;
    }
    g_tracked[fd] = 2; /* failed: its flush/close/fsync fail too */
    if (!g_announced) {
        g_announced = 1;
        const char *r = getenv("OMPI_COMM_WORLD_RANK");
        char line[256];
        int len = snprintf(line, sizeof line, "dp-shim: rank %s: injecting %s on a write to a file matching '%s'\n",
                           r ? r : "0", g_errno == EIO ? "EIO" : "ENOSPC", g_match);
        ssize_t (*w)(int, const void *, size_t) = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
        if (len > 0 && w) (void)!w(2, line, (size_t)len);
    }
    errno = g_errno;
    return 1;
}

#define REAL(name)                                                                                                     \
    static __typeof__(&name) real_##name;                                                                              \
    if (!real_##name) real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

static int open_common(const char *name, int dirfd, const char *path, int flags, mode_t mode, int at) {
    int fd;
    if (at) {
        int (*f)(int, const char *, int, ...) = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, name);
        fd = f(dirfd, path, flags, mode);
    } else {
        int (*f)(const char *, int, ...) = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, name);
        fd = f(path, flags, mode);
    }
    track(fd, path, flags);
    return fd;
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return open_common("open", 0, path, flags, mode, 0);
}
int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return open_common("open64", 0, path, flags, mode, 0);
}
int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return open_common("openat", dirfd, path, flags, mode, 1);
}
int openat64(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return open_common("openat64", dirfd, path, flags, mode, 1);
}
int creat(const char *path, mode_t mode) {
    return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}
int creat64(const char *path, mode_t mode) {
    return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

int close(int fd) {
    REAL(close);
    if (fd >= 0 && fd < MAX_FD) {
        int failed = g_tracked[fd] == 2;
        g_tracked[fd] = 0;
        int rc = real_close(fd);
        if (failed && rc == 0) {
            errno = g_errno;
            return -1;
        }
        return rc;
    }
    return real_close(fd);
}

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write);
    if (hit(fd, n)) return -1;
    return real_write(fd, buf, n);
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite);
    if (hit(fd, n)) return -1;
    return real_pwrite(fd, buf, n, off);
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite64);
    if (hit(fd, n)) return -1;
    return real_pwrite64(fd, buf, n, off);
}
static size_t iov_bytes(const struct iovec *iov, int cnt) {
    size_t n = 0;
    for (int i = 0; i < cnt; i++) n += iov[i].iov_len;
    return n;
}
ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL(writev);
    if (hit(fd, iov_bytes(iov, cnt))) return -1;
    return real_writev(fd, iov, cnt);
}
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL(pwritev);
    if (hit(fd, iov_bytes(iov, cnt))) return -1;
    return real_pwritev(fd, iov, cnt, off);
}
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL(pwritev64);
    if (hit(fd, iov_bytes(iov, cnt))) return -1;
    return real_pwritev64(fd, iov, cnt, off);
}
int fsync(int fd) {
    REAL(fsync);
    if (fd >= 0 && fd < MAX_FD && g_tracked[fd] == 2) {
        errno = g_errno;
        return -1;
    }
    return real_fsync(fd);
}
int fdatasync(int fd) {
    REAL(fdatasync);
    if (fd >= 0 && fd < MAX_FD && g_tracked[fd] == 2) {
        errno = g_errno;
        return -1;
    }
    return real_fdatasync(fd);
}

/* stdio: fopen tracks the descriptor; fwrite counts; a failed stream's
 * fflush/fclose fail (its buffered bytes would not fit either) */
static int mode_writes(const char *mode) {
    return strpbrk(mode, "wa+") != NULL;
}
FILE *fopen(const char *path, const char *mode) {
    REAL(fopen);
    FILE *f = real_fopen(path, mode);
    if (f) track(fileno(f), path, mode_writes(mode) ? O_WRONLY : O_RDONLY);
    return f;
}
FILE *fopen64(const char *path, const char *mode) {
    REAL(fopen64);
    FILE *f = real_fopen64(path, mode);
    if (f) track(fileno(f), path, mode_writes(mode) ? O_WRONLY : O_RDONLY);
    return f;
}
size_t fwrite(const void *p, size_t size, size_t n, FILE *f) {
    REAL(fwrite);
    if (f && hit(fileno(f), size * n)) return 0;
    return real_fwrite(p, size, n, f);
}
int fflush(FILE *f) {
    REAL(fflush);
    int rc = real_fflush(f);
    if (f && fileno(f) >= 0 && fileno(f) < MAX_FD && g_tracked[fileno(f)] == 2) {
        errno = g_errno;
        return EOF;
    }
    return rc;
}
int fclose(FILE *f) {
    REAL(fclose);
    int fd = f ? fileno(f) : -1;
    int failed = fd >= 0 && fd < MAX_FD && g_tracked[fd] == 2;
    if (fd >= 0 && fd < MAX_FD) g_tracked[fd] = 0;
    int rc = real_fclose(f);
    if (failed) {
        errno = g_errno;
        return EOF;
    }
    return rc;
}
