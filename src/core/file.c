/* Whole-file helpers: read, atomic write (tmp + fsync + rename + dir fsync),
 * path joining. Used by every loader and writer so that no output is ever
 * half-written under its final name. */
#define _POSIX_C_SOURCE 200809L
#include "depthprune/core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int dp_read_file(const char *path, char **data, size_t *n_bytes, dp_err *err) {
    *data = NULL;
    *n_bytes = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return dp_err_set(err, DP_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return dp_err_set(err, DP_E_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    char *buf = dp_malloc(n + 1, "file");
    if (n && fread(buf, 1, n, f) != n) {
        int e = errno;
        fclose(f);
        dp_free(buf);
        return dp_err_set(err, DP_E_IO, "%s: read failed: %s", path, e ? strerror(e) : "short read");
    }
    fclose(f);
    buf[n] = '\0';
    *data = buf;
    *n_bytes = n;
    return DP_OK;
}

int dp_fsync_dir(const char *dir, dp_err *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return dp_err_set(err, DP_E_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0 && errno != EINVAL) return dp_err_set(err, DP_E_IO, "%s: fsync failed: %s", dir, strerror(errno));
    return DP_OK;
}

int dp_write_file_atomic(const char *path, const void *data, size_t n_bytes, dp_err *err) {
    size_t plen = strlen(path);
    char *tmp = dp_malloc(plen + 8, "path");
    snprintf(tmp, plen + 8, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int rc = dp_err_set(err, DP_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
        dp_free(tmp);
        return rc;
    }
    const char *p = data;
    size_t left = n_bytes;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int rc = dp_err_set(err, DP_E_IO, "%s: write failed: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            dp_free(tmp);
            return rc;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int rc = dp_err_set(err, DP_E_IO, "%s: fsync/close failed: %s", tmp, strerror(errno));
        unlink(tmp);
        dp_free(tmp);
        return rc;
    }
    if (rename(tmp, path) != 0) {
        int rc = dp_err_set(err, DP_E_IO, "%s: rename failed: %s", path, strerror(errno));
        unlink(tmp);
        dp_free(tmp);
        return rc;
    }
    dp_free(tmp);
    char *dir = dp_path_dirname(path);
    int rc = dp_fsync_dir(dir, err);
    dp_free(dir);
    return rc;
}

char *dp_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = dp_malloc(a + b + 2, "path");
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

int dp_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

double dp_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void dp_buf_put(dp_buf *b, const void *bytes, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2 + 64;
        b->p = dp_realloc(b->p, b->cap, "buf");
    }
    if (n) memcpy(b->p + b->n, bytes, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void dp_buf_puts(dp_buf *b, const char *s) {
    dp_buf_put(b, s, strlen(s));
}

int dp_copy_file(const char *src, const char *dst, dp_err *err) {
    char *data;
    size_t n;
    int rc = dp_read_file(src, &data, &n, err);
    if (rc) return rc;
    rc = dp_write_file_atomic(dst, data, n, err);
    dp_free(data);
    return rc;
}

uint64_t dp_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t dp_xorshift64s_53(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    *state = x;
    return (x * 2685821657736338717ull) >> 11;
}

int dp_map_file(const char *path, void **map, size_t *size, dp_err *err) {
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return dp_err_set(err, DP_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return dp_err_set(err, DP_E_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    if (n > 0) {
        void *m = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return dp_err_set(err, DP_E_IO, "%s: mmap failed: %s", path, strerror(e));
        }
        *map = m;
    }
    close(fd);
    *size = n;
    return DP_OK;
}

void dp_unmap_file(void *map, size_t size) {
    if (map) munmap(map, size);
}

char *dp_path_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return dp_strdup(".", "path");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = dp_malloc(n + 1, "path");
    memcpy(d, path, n);
    d[n] = 0;
    return d;
}

int dp_mkdir_p(const char *path, dp_err *err) {
    char buf[4096];
    if (strlen(path) >= sizeof buf) return dp_err_set(err, DP_E_IO, "path too long: %s", path);
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0755) && errno != EEXIST)
                return dp_err_set(err, DP_E_IO, "cannot create %s: %s", buf, strerror(errno));
            *p = '/';
        }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return dp_err_set(err, DP_E_IO, "cannot create %s: %s", buf, strerror(errno));
    return DP_OK;
}

int dp_gnuplot(const char *script, const char *png) {
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        dp_log("gnuplot not found: no plot (the numbers are in the JSON/log files)");
        return 1;
    }
    /* gnuplot's messages (e.g. "empty x range" for a one-point plot, which it
     * widens and draws) go to PNG.log, not to the user's console */
    size_t n = strlen(png);
    char *logp = dp_malloc(n + 5, "gnuplot");
    snprintf(logp, n + 5, "%s.log", png);
    int fd[2];
    if (pipe(fd) != 0) {
        dp_free(logp);
        return 1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int lf = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd[0], 0);
        if (lf >= 0) dup2(lf, 1), dup2(lf, 2);
        close(fd[0]);
        close(fd[1]);
        execlp("gnuplot", "gnuplot", (char *)NULL);
        _exit(127);
    }
    close(fd[0]);
    int ok = pid > 0;
    for (size_t off = 0, len = strlen(script); ok && off < len;) {
        ssize_t w = write(fd[1], script + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            ok = 0;
        else
            off += (size_t)w;
    }
    close(fd[1]);
    int st = 0;
    if (pid > 0)
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (!ok || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        dp_log("gnuplot failed: no plot (see %s)", logp);
        dp_free(logp);
        return 1;
    }
    struct stat ls;
    if (stat(logp, &ls) == 0 && ls.st_size == 0) unlink(logp); /* nothing said: no log */
    dp_free(logp);
    return 0;
}
