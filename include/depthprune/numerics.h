/* The numerics that decide correctness, written once for the CPU and the
 * GPU: `__host__ __device__` under nvcc, plain static inline in C. The CUDA
 * kernels call these, and tests/unit/test_numerics.c checks them against
 * the CPU reference ops on every commit, so the exact formulas a GPU runs
 * are tested where there is no GPU. */
#ifndef DEPTHPRUNE_NUMERICS_H
#define DEPTHPRUNE_NUMERICS_H

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define DP_HD static __host__ __device__ __forceinline__
#else
#define DP_HD static inline
#endif

/* Teacher top-k order (dp_teacher_topk): (v, i) before (bv, bi) when its
 * value is larger, ties to the lower index. Selection maps a NaN logit to
 * -inf first, so a NaN row still yields K distinct valid indices. */
DP_HD int dp_topk_before(float v, int64_t i, float bv, int64_t bi) {
    return v > bv || (v == bv && i < bi);
}
DP_HD float dp_topk_key(float v) {
    return v != v ? -INFINITY : v;
}

/* KD against the teacher's top-k, one row (ops.h kd_topk): from
 *   acc = sum_j p_j (log p_j - log q_j) over the kept entries j,
 *   pk = sum_j p_j, log_qtail = log of the student's softmax(z/T) mass on
 *   the tokens outside the kept set, computed from those tokens directly
 *   (never as 1 - kept mass: for a peaked student that difference is 0 or
 *   noise), tail = 1 when K < V;
 * returns the row's KL / T^2 (the caller multiplies by T^2) and sets *f:
 * the gradient w.r.t. a logit outside the set is T * q_i * f. */
DP_HD double dp_kd_topk_combine(double acc, double pk, double log_qtail, int tail, double *f) {
    double r = 1.0 - pk;
    if (r < 0) r = 0;
    if (r > 0 && tail) acc += r * (log(r) - log_qtail);
    double qtail = exp(log_qtail);
    *f = (tail && qtail > 0) ? 1.0 - r / qtail : 0.0;
    return acc;
}

/* One step of the online softmax over a row of scores: running max *m and
 * sum *l (of exp(score - *m)); returns the factor the accumulator is
 * rescaled by, and *p = exp(sc - new max). Start with *m = -inf, *l = 0;
 * at the end lse = m + log(l). */
DP_HD float dp_online_softmax_step(float *m, float *l, float sc, float *p) {
    float mn = fmaxf(*m, sc), corr = expf(*m - mn);
    *p = expf(sc - mn);
    *l = *l * corr + *p;
    *m = mn;
    return corr;
}

/* AdamW on one fp32 element with PyTorch's arithmetic (ops.h adamw_update):
 * step_size = lr / (1 - b1^t), bc2_sqrt = sqrt(1 - b2^t), decay = 1 - lr*wd. */
DP_HD float dp_adamw_elem(float p, float g, float *m, float *v, float step_size, float bc2_sqrt, float decay, float b1,
                          float b2, float e) {
    p *= decay;
    *m = *m * b1 + g * (1.0f - b1);
    *v = *v * b2 + g * g * (1.0f - b2);
    return p - step_size * (*m / (sqrtf(*v) / bc2_sqrt + e));
}

#endif
