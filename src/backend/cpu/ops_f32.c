/* The CPU reference ops in fp32: what the engine runs (see ops.inc). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "depthprune/numerics.h"
#include "depthprune/ops.h"

/* glibc declares its vector math (libmvec) only under -ffast-math; declare
 * expf's SIMD variants so `omp simd` loops call them (libmvec: < 4 ulp). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((simd("notinbranch"))) float expf(float);
#endif

#define R float
#define OP(name) dp_##name
#define GEMM cblas_sgemm
#define GEMV cblas_sgemv
#define REXP expf
#define RSQRT sqrtf
#include "ops.inc"
