/* Minimal test helpers: every failed check prints where and why, and the
 * test's exit status is non-zero if any check failed. Exit 77 means the
 * test could not run here (ctest reports it skipped, never passed). */
#ifndef DP_TEST_H
#define DP_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int dp_test_failures = 0;

/* The device the stage tests run their engine on: the CPU reference unless
 * DP_TEST_DEVICE=cuda (on a GPU host; see tests/README.md). */
#define DP_TEST_DEVICE                                                                                                 \
    (getenv("DP_TEST_DEVICE") && !strcmp(getenv("DP_TEST_DEVICE"), "cuda") ? DP_DEVICE_CUDA : DP_DEVICE_CPU)

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                                   \
            dp_test_failures++;                                                                                        \
        }                                                                                                              \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                                           \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);                                   \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
            dp_test_failures++;                                                                                        \
        }                                                                                                              \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                                             \
    do {                                                                                                               \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                                          \
        if (va_ != vb_) {                                                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld vs %lld)\n", __FILE__, __LINE__, #a, #b, va_, vb_);   \
            dp_test_failures++;                                                                                        \
        }                                                                                                              \
    } while (0)

/* |a-b| <= atol + rtol*|ref| elementwise; reports the worst element. */
static inline int dp_test_allclose(const char *what, const float *got, const float *ref, size_t n, double atol,
                                   double rtol) {
    size_t worst = 0;
    double worst_excess = -1e300;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        double lim = atol + rtol * fabs((double)ref[i]);
        if (!(d <= lim)) bad++;
        if (d - lim > worst_excess || isnan(d)) {
            worst_excess = d - lim;
            worst = i;
        }
    }
    if (bad) {
        fprintf(stderr, "%s: %d of %zu elements out of tolerance; worst at %zu: got %.9g ref %.9g\n", what, bad, n,
                worst, (double)got[worst], (double)ref[worst]);
        dp_test_failures++;
    }
    return bad;
}

#define TEST_EXIT()                                                                                                    \
    do {                                                                                                               \
        if (dp_test_failures) {                                                                                        \
            fprintf(stderr, "%d check(s) failed\n", dp_test_failures);                                                 \
            return 1;                                                                                                  \
        }                                                                                                              \
        return 0;                                                                                                      \
    } while (0)

#endif
