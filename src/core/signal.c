/* Stop requests: SIGUSR1 (Slurm's --signal before the time limit) and
 * SIGTERM (scancel, preemption) set a flag that long stages poll at safe
 * points (a training step, a scoring round, a sweep configuration), then
 * checkpoint and leave. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/core.h"

static volatile sig_atomic_t g_stop_signal;

static void on_signal(int sig) {
    g_stop_signal = sig;
}

int dp_stop_requested(void) {
    return g_stop_signal != 0;
}

int dp_stop_signal(void) {
    return (int)g_stop_signal;
}

void dp_stop_install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void dp_stop_mark(void) {
    const char *path = getenv("DP_STOP_MARKER");
    if (!g_stop_signal || !path || !*path) return;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "warning: cannot write the stop marker %s (the job script will not requeue)\n", path);
        return;
    }
    fprintf(f, "%s\n", strsignal((int)g_stop_signal));
    fclose(f);
}
