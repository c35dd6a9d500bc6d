/* Rank-tagged logging, error slots and the fatal-error path.
 * The rank and world size are plain globals set once by the distribution
 * layer; logging is the one place where process-wide state is the point. */
#include "depthprune/core.h"

#include <stdlib.h>
#include <string.h>

static int g_rank = 0;
static int g_world = 1;
static int g_quiet = 0;
static dp_abort_hook g_abort_hook = NULL;

void dp_log_set_rank(int rank, int world) {
    g_rank = rank;
    g_world = world;
}
void dp_log_set_quiet(int quiet) {
    g_quiet = quiet;
}
int dp_log_rank(void) {
    return g_rank;
}

static void vlog(const char *fmt, va_list ap) {
    dp_heartbeat();
    char line[2048];
    int n = snprintf(line, sizeof line, "[%d/%d] ", g_rank, g_world);
    if (n < 0) n = 0;
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    size_t len = strlen(line);
    if (len == 0 || line[len - 1] != '\n') {
        if (len + 1 < sizeof line) {
            line[len] = '\n';
            line[len + 1] = '\0';
        }
    }
    fputs(line, stderr); /* one call per line keeps ranks' lines whole */
    fflush(stderr);
}

void dp_log(const char *fmt, ...) {
    if (g_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

void dp_log0(const char *fmt, ...) {
    if (g_quiet || g_rank != 0) return;
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

void dp_log_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

void dp_set_abort_hook(dp_abort_hook hook) {
    g_abort_hook = hook;
}

_Noreturn void dp_fatal_impl(const char *file, int line, const char *func, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "[%d/%d] %s:%d %s: fatal: %s\n", g_rank, g_world, file, line, func, msg);
    fflush(stderr);
    if (g_abort_hook) g_abort_hook(1);
    exit(1);
}

int dp_err_set(dp_err *err, int code, const char *fmt, ...) {
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void dp_err_prefix(dp_err *err, const char *fmt, ...) {
    if (!err) return;
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n + 2 < sizeof err->msg) {
        memcpy(err->msg + n, ": ", 3);
        size_t room = sizeof err->msg - (size_t)n - 2;
        size_t len = strnlen(old, room - 1);
        memcpy(err->msg + n + 2, old, len);
        err->msg[n + 2 + len] = '\0';
    }
}

void dp_err_clear(dp_err *err) {
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}
