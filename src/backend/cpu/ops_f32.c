/* The CPU reference ops in fp32: what the engine runs (see ops.inc). */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "depthprune/ops.h"

#define R float
#define OP(name) dp_##name
#define GEMM cblas_sgemm
#define REXP expf
#define RSQRT sqrtf
#include "ops.inc"
