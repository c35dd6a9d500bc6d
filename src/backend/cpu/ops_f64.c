/* The CPU reference ops in fp64, for finite-difference gradient checks
 * (tests/unit/test_ops.c); same source as the fp32 engine (ops.inc). */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "depthprune/ops.h"

#define R double
#define OP(name) dp_##name##_f64
#define GEMM cblas_dgemm
#define REXP exp
#define RSQRT sqrt
#include "ops.inc"
