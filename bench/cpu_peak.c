/* One core's fp32 FMA ceiling: 12 independent FMA chains, so the loop is
 * bound by the FMA pipes, not by latency; AVX-512 where the CPU has it, else
 * AVX2 + FMA (checked at run time: no illegal instruction on either). Used to
 * bound what any GEMM (ours, OpenBLAS, oneDNN) can reach on this CPU.
 *   gcc -O2 bench/cpu_peak.c -o build/cpu_peak && build/cpu_peak */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static const long k_iters = 200000000L;

__attribute__((target("avx512f"))) static double peak512(float *check) {
    __m512 acc[12];
    const __m512 b = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t = now();
        for (long it = 0; it < k_iters; it++) {
#pragma GCC unroll 12
            for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
        }
        t = now() - t;
        double g = (double)k_iters * 12.0 * 16 * 2 / t / 1e9;
        if (g > best) best = g;
    }
    float s = 0;
    for (int i = 0; i < 12; i++) s += _mm512_reduce_add_ps(acc[i]);
    *check = s;
    return best;
}

__attribute__((target("avx2,fma"))) static double peak256(float *check) {
    __m256 acc[12];
    const __m256 b = _mm256_set1_ps(1.0000001f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t = now();
        for (long it = 0; it < k_iters; it++) {
#pragma GCC unroll 12
            for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
        }
        t = now() - t;
        double g = (double)k_iters * 12.0 * 8 * 2 / t / 1e9;
        if (g > best) best = g;
    }
    float lanes[8], s = 0;
    for (int i = 0; i < 12; i++) {
        _mm256_storeu_ps(lanes, acc[i]);
        for (int j = 0; j < 8; j++) s += lanes[j];
    }
    *check = s;
    return best;
}

int main(void) {
    __builtin_cpu_init();
    float s = 0;
    if (__builtin_cpu_supports("avx512f")) {
        double g = peak512(&s);
        printf("peak fp32 FMA, one core, AVX-512: %.1f GFLOP/s (checksum %g)\n", g, (double)s);
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        double g = peak256(&s);
        printf("peak fp32 FMA, one core, AVX2 (no AVX-512 on this CPU): %.1f GFLOP/s (checksum %g)\n", g, (double)s);
    } else {
        fprintf(stderr, "cpu_peak: this CPU has neither AVX-512 nor AVX2 + FMA\n");
        return 1;
    }
    return 0;
}
