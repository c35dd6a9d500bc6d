/* The heartbeat watchdog and the test-only fault points.
 *
 * Watchdog: the compute loops call dp_heartbeat() (a relaxed atomic
 * increment); a thread wakes once a second and, when the count has not
 * moved for the configured time, prints one line and ends the process with
 * _exit(4). A rank blocked in a collective on a stopped (SIGSTOP) or
 * unreachable peer has no heartbeat, so it leaves; the launcher (mpirun,
 * srun) then tears the job down, and the job can be requeued. The time must
 * exceed the longest stretch a rank legitimately waits without computing. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "depthprune/core.h"

static atomic_ullong g_beats;
static atomic_int g_paused;
static double g_limit_s;
static int g_started;

void dp_heartbeat(void) {
    atomic_fetch_add_explicit(&g_beats, 1, memory_order_relaxed);
}

void dp_watchdog_pause(int paused) {
    atomic_store(&g_paused, paused);
    dp_heartbeat();
}

static void *watchdog_main(void *arg) {
    (void)arg;
    unsigned long long seen = atomic_load(&g_beats);
    double quiet_since = dp_time_s();
    for (;;) {
        struct timespec ts = {0, 250 * 1000 * 1000};
        nanosleep(&ts, NULL);
        unsigned long long now_beats = atomic_load(&g_beats);
        double now = dp_time_s();
        if (now_beats != seen || atomic_load(&g_paused)) {
            seen = now_beats;
            quiet_since = now;
            continue;
        }
        if (now - quiet_since >= g_limit_s) {
            char line[400];
            int n =
                snprintf(line, sizeof line,
                         "depthprune: rank %d: no progress for %.0f s: a peer rank is stopped, hung or unreachable; "
                         "ending this rank so that the job ends (exit 4). Rerun the same command to resume; raise "
                         "run.watchdog (now %.0f s, 0 = off) if one step legitimately takes longer.\n",
                         dp_log_rank(), now - quiet_since, g_limit_s);
            if (n > 0) {
                ssize_t w = write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
                (void)w;
            }
            _exit(4);
        }
    }
    return NULL;
}

int dp_watchdog_start(double seconds, dp_err *err) {
    if (!(seconds > 0) || g_started) return DP_OK;
    g_limit_s = seconds;
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    /* the thread must not take the process's signals (SIGUSR1/SIGTERM go to the main thread) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = pthread_create(&t, &at, watchdog_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&at);
    if (e) return dp_err_set(err, DP_E_IO, "cannot start the watchdog thread: %s", strerror(e));
    g_started = 1;
    return DP_OK;
}

/* ---------------- fault points ---------------- */

#define MAX_FAULTS 8
typedef struct fault {
    char point[48];
    int nth, rank, sig; /* sig 0: exit(1) */
    int hits;
} fault;
static fault g_faults[MAX_FAULTS];
static int g_n_faults = -1; /* -1: DP_FAULT not parsed yet */

static void parse_faults(void) {
    g_n_faults = 0;
    const char *env = getenv("DP_FAULT");
    if (!env || !*env) return;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", env);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok && g_n_faults < MAX_FAULTS; tok = strtok_r(NULL, ",", &save)) {
        fault f = {.nth = 1, .rank = 0, .sig = -1};
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = '\0';
        const char *act = eq + 1;
        char *at = strchr(tok, '@');
        if (at) {
            *at = '\0';
            f.rank = atoi(at + 1);
        }
        char *hash = strchr(tok, '#');
        if (hash) {
            *hash = '\0';
            f.nth = atoi(hash + 1);
        }
        snprintf(f.point, sizeof f.point, "%s", tok);
        f.sig = !strcmp(act, "kill")   ? SIGKILL
                : !strcmp(act, "stop") ? SIGSTOP
                : !strcmp(act, "term") ? SIGTERM
                : !strcmp(act, "usr1") ? SIGUSR1
                : !strcmp(act, "exit") ? 0
                                       : -1;
        if (f.sig < 0) {
            fprintf(stderr, "depthprune: DP_FAULT: unknown action '%s' (kill, stop, term, usr1, exit)\n", act);
            continue;
        }
        g_faults[g_n_faults++] = f;
    }
}

void dp_fault_point(const char *point) {
    dp_heartbeat();
    if (g_n_faults < 0) parse_faults();
    for (int i = 0; i < g_n_faults; i++) {
        fault *f = &g_faults[i];
        if (strcmp(f->point, point) || f->rank != dp_log_rank()) continue;
        if (++f->hits != f->nth) continue;
        fprintf(stderr, "depthprune: rank %d: fault injection at %s #%d: %s\n", f->rank, point, f->nth,
                f->sig == 0 ? "exit" : strsignal(f->sig));
        fflush(stderr);
        if (f->sig == 0) _exit(1);
        raise(f->sig);
    }
}
