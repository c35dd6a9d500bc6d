/* LM head + cross-entropy + knowledge distillation, fused and chunked:
 * `chunk` rows of fp32 logits at a time (one cuBLAS GEMM), a row kernel
 * that computes the row's losses and overwrites a bf16 buffer with the
 * gradient of gscale * ((1-alpha) ce + alpha kd) w.r.t. the logits, then
 * the two backward GEMMs of the chunk. The full (N, V) logits never exist.
 * KD from the teacher's top-k follows ops.h's kd_topk exactly: the
 * teacher's K kept probabilities plus a tail bucket, the student bucketed
 * the same way. Row sums are accumulated in double. */
#include "common.cuh"
#include "depthprune/numerics.h"

#define HEAD_THREADS 1024
/* the kept-token bitmap of a KD row lives in shared memory: V/8 bytes */
#define KEEP_MAX_WORDS ((40 * 1024) / 4)

static __global__ void __launch_bounds__(HEAD_THREADS)
    head_row_kernel(float *ce, float *kd, bf16 *dlog, const float *logits, const int32_t *targets, const int32_t *tidx,
                    const float *tval, const float *tlse, int64_t K, float alpha, float temp, float gscale, int64_t V,
                    int64_t r0) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    int64_t rr = blockIdx.x, n = r0 + rr;
    const float *z = logits + rr * V;
    bf16 *g = dlog ? dlog + rr * V : NULL;
    int32_t t = targets[n];
    if (t < 0) {
        if (threadIdx.x == 0) {
            ce[n] = 0.0f;
            if (kd) kd[n] = 0.0f;
        }
        if (g)
            for (int64_t i = threadIdx.x; i < V; i += blockDim.x) g[i] = __float2bfloat16_rn(0.0f);
        return;
    }
    int has_kd = tidx != NULL;
    float a = has_kd ? alpha : 0.0f;
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, z[i]);
    mx = block_max(mx, shf);
    double S = 0.0;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) S += exp((double)z[i] - (double)mx);
    S = block_sum_d(S, shd);
    double lse = (double)mx + log(S);
    if (threadIdx.x == 0) ce[n] = (float)(lse - (double)z[t]);

    double invT = 1.0 / (double)temp, ls = 0.0, log_qtail = -INFINITY, f = 0.0;
    const int32_t *ix = has_kd ? tidx + n * K : NULL;
    const float *tv = has_kd ? tval + n * K : NULL;
    extern __shared__ unsigned int keep[]; /* (V + 31) / 32 words: the teacher's kept tokens */
    __shared__ int dup;                    /* an index appears twice among them */
    if (has_kd) {
        int64_t W = (V + 31) / 32;
        for (int64_t w = threadIdx.x; w < W; w += blockDim.x) keep[w] = 0u;
        if (threadIdx.x == 0) dup = 0;
        __syncthreads();
        for (int64_t j = threadIdx.x; j < K; j += blockDim.x) {
            unsigned int bit = 1u << (ix[j] & 31);
            if (atomicOr(&keep[ix[j] >> 5], bit) & bit) dup = 1;
        }
        __syncthreads();
        double mxs = (double)mx * invT, Ss = 0.0;
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x) Ss += exp((double)z[i] * invT - mxs);
        Ss = block_sum_d(Ss, shd);
        ls = mxs + log(Ss);
        /* the tail from the tokens outside the set themselves, as the CPU does */
        float tmx = -INFINITY;
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
            if (!(keep[i >> 5] & (1u << (i & 31)))) tmx = fmaxf(tmx, z[i]);
        tmx = block_max(tmx, shf);
        double tmxs = (double)tmx * invT, tsum = 0.0;
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
            if (!(keep[i >> 5] & (1u << (i & 31)))) tsum += exp((double)z[i] * invT - tmxs);
        tsum = block_sum_d(tsum, shd);
        if (K < V) log_qtail = log(tsum) + tmxs - ls;
        double pk = 0.0, acc = 0.0, tl = (double)tlse[n];
        for (int64_t j = threadIdx.x; j < K; j += blockDim.x) {
            double lp = (double)tv[j] * invT - tl, lq = (double)z[ix[j]] * invT - ls, p = exp(lp);
            pk += p;
            acc += p * (lp - lq);
        }
        pk = block_sum_d(pk, shd);
        acc = block_sum_d(acc, shd);
        acc = dp_kd_topk_combine(acc, pk, log_qtail, K < V, &f);
        if (threadIdx.x == 0 && kd) kd[n] = (float)(acc * (double)temp * (double)temp);
    } else if (threadIdx.x == 0 && kd) {
        kd[n] = 0.0f;
    }
    if (!g) return;
    /* the tokens outside the teacher's set (all of them without KD) */
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
        if (has_kd && (keep[i >> 5] & (1u << (i & 31)))) continue;
        double sm = exp((double)z[i] - lse), val = (1.0 - a) * sm;
        if (has_kd) val += (double)a * (double)temp * exp((double)z[i] * invT - ls) * f;
        if (i == t) val -= (1.0 - a);
        g[i] = __float2bfloat16_rn((float)(val * gscale));
    }
    if (!has_kd) return;
    /* the kept ones: T (q_i - p_j) for every entry j naming token i (summed
     * over duplicate entries, as the CPU accumulates them) */
    double tl = (double)tlse[n];
    if (!dup) {
        for (int64_t j = threadIdx.x; j < K; j += blockDim.x) {
            int64_t i = ix[j];
            double sm = exp((double)z[i] - lse), q = exp((double)z[i] * invT - ls), p = exp((double)tv[j] * invT - tl);
            double val = (1.0 - a) * sm + (double)a * (double)temp * (q - p);
            if (i == t) val -= (1.0 - a);
            g[i] = __float2bfloat16_rn((float)(val * gscale));
        }
    } else if (threadIdx.x == 0) { /* rare (a hand-made or damaged cache): serial, O(K^2) */
        for (int64_t j = 0; j < K; j++) {
            int64_t i = ix[j], first = 1;
            for (int64_t j2 = 0; j2 < j && first; j2++) first = ix[j2] != i;
            if (!first) continue;
            double sm = exp((double)z[i] - lse), q = exp((double)z[i] * invT - ls), sum = 0.0;
            for (int64_t j2 = j; j2 < K; j2++)
                if (ix[j2] == i) sum += q - exp((double)tv[j2] * invT - tl);
            double val = (1.0 - a) * sm + (double)a * (double)temp * sum;
            if (i == t) val -= (1.0 - a);
            g[i] = __float2bfloat16_rn((float)(val * gscale));
        }
    }
}

static size_t align256(size_t x) {
    return (x + 255) & ~(size_t)255;
}

extern "C" size_t dp_cuda_head_scratch_bytes(int64_t chunk, int64_t V) {
    return align256((size_t)(chunk * V) * sizeof(float)) + align256((size_t)(chunk * V) * sizeof(dp_bf16));
}

extern "C" void dp_cuda_head_loss(dp_blas h, float *ce, float *kd, float *dh, float *dw, void *scratch,
                                  const dp_bf16 *hid, const dp_bf16 *w, const dp_cuda_head_args *a, int64_t N,
                                  int64_t C, int64_t V, dp_stream s) {
    if (a->chunk <= 0) dp_fatal("head loss: chunk must be positive");
    if (a->tidx && (a->K <= 0 || a->K > V || a->temp <= 0))
        dp_fatal("head loss: teacher top-k K=%lld (V=%lld), temperature %g", (long long)a->K, (long long)V,
                 (double)a->temp);
    size_t keep_bytes = a->tidx ? (size_t)((V + 31) / 32) * sizeof(unsigned int) : 0;
    if (keep_bytes > (size_t)KEEP_MAX_WORDS * sizeof(unsigned int))
        dp_fatal("head loss: KD over a vocabulary of %lld needs %zu bytes of shared memory (at most %d)", (long long)V,
                 keep_bytes, KEEP_MAX_WORDS * 4);
    float *logits = (float *)scratch;
    dp_bf16 *dlog = (dp_bf16 *)((char *)scratch + align256((size_t)(a->chunk * V) * sizeof(float)));
    for (int64_t r0 = 0; r0 < N; r0 += a->chunk) {
        int64_t rows = N - r0 < a->chunk ? N - r0 : a->chunk;
        dp_cuda_matmul_forward(h, logits, 1, hid + r0 * C, w, rows, C, V, 1.0f, 0.0f);
        head_row_kernel<<<(unsigned)rows, HEAD_THREADS, keep_bytes, s>>>(ce, kd, dh ? (bf16 *)dlog : NULL, logits,
                                                                         a->targets, a->tidx, a->tval, a->tlse, a->K,
                                                                         a->alpha, a->temp, a->gscale, V, r0);
        DP_CHECK_LAUNCH();
        if (dh) dp_cuda_matmul_backward(h, dh + r0 * C, 0.0f, dw, dlog, hid + r0 * C, w, rows, C, V, 1.0f);
    }
}

/* ---- the teacher's side of KD: top-k logits per row (descending value,
 * ties to the lower index, as dp_teacher_topk) and lse(z / temp), chunked
 * like the loss. K rounds of a block-wide argmax; each winner is then
 * marked taken (NaN) in the (scratch) logits, whose own NaNs were made
 * -inf first, so every round finds a valid index. */
static __device__ void block_argmax(float *v, int64_t *i, float *shv, int64_t *shi) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, *v, o);
        int64_t i2 = __shfl_xor_sync(0xffffffffu, *i, o);
        if (dp_topk_before(v2, i2, *v, *i)) *v = v2, *i = i2;
    }
    __syncthreads();
    if (lane == 0) shv[w] = *v, shi[w] = *i;
    __syncthreads();
    *v = lane < nw ? shv[lane] : -INFINITY;
    *i = lane < nw ? shi[lane] : INT64_MAX;
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, *v, o);
        int64_t i2 = __shfl_xor_sync(0xffffffffu, *i, o);
        if (dp_topk_before(v2, i2, *v, *i)) *v = v2, *i = i2;
    }
}

static __global__ void __launch_bounds__(HEAD_THREADS)
    topk_row_kernel(int32_t *tidx, float *tval, float *tlse, float *logits, int64_t K, float temp, int64_t V,
                    int64_t r0) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    __shared__ int64_t shi[32];
    int64_t n = r0 + blockIdx.x;
    float *z = logits + (int64_t)blockIdx.x * V;
    double invT = 1.0 / (double)temp;
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
        z[i] = dp_topk_key(z[i]); /* NaN -> -inf: NaN below marks a taken entry */
        mx = fmaxf(mx, z[i]);
    }
    mx = block_max(mx, shf);
    double mxs = (double)mx * invT, S = 0.0;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) S += exp((double)z[i] * invT - mxs);
    S = block_sum_d(S, shd);
    if (threadIdx.x == 0) tlse[n] = (float)(log(S) + mxs);
    for (int64_t j = 0; j < K; j++) {
        float bv = -INFINITY;
        int64_t bi = INT64_MAX;
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
            if (z[i] == z[i] && dp_topk_before(z[i], i, bv, bi)) bv = z[i], bi = i;
        block_argmax(&bv, &bi, shf, shi);
        if (threadIdx.x == 0) { /* K <= V untaken entries exist: bi is a valid index */
            tidx[n * K + j] = (int32_t)bi;
            tval[n * K + j] = bv;
            z[bi] = NAN;
        }
        __syncthreads();
    }
}

extern "C" void dp_cuda_head_topk(dp_blas h, int32_t *tidx, float *tval, float *tlse, void *scratch, const dp_bf16 *hid,
                                  const dp_bf16 *w, int64_t N, int64_t C, int64_t V, int64_t K, float temp,
                                  int64_t chunk, dp_stream s) {
    if (K < 1 || K > V || !(temp > 0) || chunk < 1)
        dp_fatal("teacher top-k: K=%lld (V=%lld), temperature %g, chunk %lld", (long long)K, (long long)V, (double)temp,
                 (long long)chunk);
    float *logits = (float *)scratch;
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
        int64_t rows = N - r0 < chunk ? N - r0 : chunk;
        dp_cuda_matmul_forward(h, logits, 1, hid + r0 * C, w, rows, C, V, 1.0f, 0.0f);
        topk_row_kernel<<<(unsigned)rows, HEAD_THREADS, 0, s>>>(tidx, tval, tlse, logits, K, temp, V, r0);
        DP_CHECK_LAUNCH();
    }
}
