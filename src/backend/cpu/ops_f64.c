/* The CPU reference ops in fp64, for finite-difference gradient checks
 * (tests/unit/test_ops.c); same source as the fp32 engine (ops.inc). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "depthprune/numerics.h"
#include "depthprune/ops.h"

/* glibc declares its vector math (libmvec) only under -ffast-math; declare
 * exp's SIMD variants so `omp simd` loops call them (libmvec: < 4 ulp). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((simd("notinbranch"))) double exp(double);
#endif

#define R double
#define OP(name) dp_##name##_f64
#define GEMM cblas_dgemm
#define GEMV cblas_dgemv
#define REXP exp
#define RSQRT sqrt
#include "ops.inc"
