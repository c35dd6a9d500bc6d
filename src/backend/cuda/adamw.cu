/* AdamW with PyTorch's arithmetic (torch.optim.AdamW, single-tensor path)
 * in fp32, as ops.h's CPU update; optionally refreshes the bf16 copy of
 * the weights that the GEMMs read. */
#include <math.h>

#include "common.cuh"
#include "depthprune/numerics.h"

static __global__ void adamw_kernel(float *p, bf16 *p16, const float *g, float *m, float *v, int64_t n, float step_size,
                                    float bc2_sqrt, float decay, float b1, float b2, float e) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float mi = m[i], vi = v[i];
    float pi = dp_adamw_elem(p[i], g[i], &mi, &vi, step_size, bc2_sqrt, decay, b1, b2, e);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    if (p16) p16[i] = __float2bfloat16_rn(pi);
}

extern "C" void dp_cuda_adamw_update(float *p, dp_bf16 *p_bf16, const float *g, float *m, float *v, int64_t n,
                                     double lr, double beta1, double beta2, double eps, double wd, int64_t step,
                                     dp_stream s) {
    if (n <= 0) return;
    double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
    adamw_kernel<<<dp_grid(n, 256), 256, 0, s>>>(p, (bf16 *)p_bf16, g, m, v, n, (float)(lr / bc1), (float)sqrt(bc2),
                                                 (float)(1.0 - lr * wd), (float)beta1, (float)beta2, (float)eps);
    DP_CHECK_LAUNCH();
}
