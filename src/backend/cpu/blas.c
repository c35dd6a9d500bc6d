/* BLAS set-up for the CPU backend: OpenBLAS runs single-threaded inside
 * each call, and the ops split GEMMs over OpenMP threads themselves (see
 * ops.inc), so OpenMP's and OpenBLAS's thread pools never compete for the
 * cores (with both active, 2 cores ran the engine 2x slower than 1). */
#include <cblas.h>
#include <pthread.h>

#include "depthprune/ops.h"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void blas_init_once(void) {
    openblas_set_num_threads(1);
}

void dp_cpu_blas_init(void) {
    pthread_once(&g_once, blas_init_once);
}
