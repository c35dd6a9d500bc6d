/* One core's fp32 FMA ceiling (AVX-512): 12 independent FMA chains, so
 * the loop is bound by the FMA pipes, not by latency. Used to bound what
 * any GEMM (ours, OpenBLAS, oneDNN) can reach on this CPU.
 *   gcc -O2 -mavx512f bench/cpu_peak.c -o build/cpu_peak && build/cpu_peak */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(void) {
    __m512 acc[12];
    const __m512 b = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
    const long iters = 200000000L;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t = now();
        for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
            for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
        }
        t = now() - t;
        double g = (double)iters * 12.0 * 16 * 2 / t / 1e9;
        if (g > best) best = g;
    }
    float s = 0;
    for (int i = 0; i < 12; i++) s += _mm512_reduce_add_ps(acc[i]);
    printf("peak fp32 FMA, one core: %.1f GFLOP/s (checksum %g)\n", best, (double)s);
    return 0;
}
