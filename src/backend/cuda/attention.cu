/* Causal GQA attention, memory-efficient: a warp owns one query row, walks
 * the keys 0..t with an online softmax (running max and sum, rescaled
 * accumulator) and keeps only lse = log sum exp of the row's scores for the
 * backward, which recomputes each probability as exp(score - lse). Nothing
 * of size T x T exists. Query head h reads kv head h / (NH / NKV).
 * The backward is two passes without atomics (deterministic): one warp per
 * query row for dq (and D = dout . out), then one warp per key row for dk
 * and dv, summing over the query rows t >= s of every query head of its
 * group. Each lane holds head-dimension elements lane, lane+32, ... (HD <=
 * 256). This is the straightforward form: correct and O(T) memory; the
 * shared-memory tiled form is the speed work of the benchmarks. */
#include "common.cuh"
#include "depthprune/numerics.h"

#define MAXE 8 /* HD / 32 */
#define WARPS 4

static __device__ __forceinline__ void load_row(float *r, const bf16 *p, int64_t HD, int lane) {
#pragma unroll
    for (int j = 0; j < MAXE; j++) {
        int64_t d = lane + 32 * j;
        r[j] = d < HD ? __bfloat162float(p[d]) : 0.0f;
    }
}
static __device__ __forceinline__ float dot_row(const float *r, const bf16 *p, int64_t HD, int lane) {
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < MAXE; j++) {
        int64_t d = lane + 32 * j;
        if (d < HD) s += r[j] * __bfloat162float(p[d]);
    }
    return warp_sum(s);
}

static __global__ void attention_forward_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                                                int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD) {
    int64_t row = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5); /* (b*NH + h)*T + t */
    int lane = threadIdx.x & 31;
    if (row >= B * NH * T) return;
    int64_t t = row % T, h = (row / T) % NH, b = row / (T * NH), kh = h / (NH / NKV);
    float scale = rsqrtf((float)HD);
    float qr[MAXE], acc[MAXE];
    load_row(qr, q + ((b * T + t) * NH + h) * HD, HD, lane);
#pragma unroll
    for (int j = 0; j < MAXE; j++) acc[j] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int64_t s = 0; s <= t; s++) {
        float sc = dot_row(qr, k + ((b * T + s) * NKV + kh) * HD, HD, lane) * scale, p;
        float corr = dp_online_softmax_step(&m, &l, sc, &p);
        const bf16 *vs = v + ((b * T + s) * NKV + kh) * HD;
#pragma unroll
        for (int j = 0; j < MAXE; j++) {
            int64_t d = lane + 32 * j;
            acc[j] = acc[j] * corr + (d < HD ? p * __bfloat162float(vs[d]) : 0.0f);
        }
    }
    bf16 *o = out + ((b * T + t) * NH + h) * HD;
#pragma unroll
    for (int j = 0; j < MAXE; j++) {
        int64_t d = lane + 32 * j;
        if (d < HD) o[d] = __float2bfloat16_rn(acc[j] / l);
    }
    if (lane == 0) lse[row] = m + logf(l);
}

/* dq_t = scale * sum_s p_ts (dout_t . v_s - D_t) k_s,  D_t = dout_t . out_t */
static __global__ void attention_dq_kernel(bf16 *dq, float *dsum, const bf16 *dout, const bf16 *out, const float *lse,
                                           const bf16 *q, const bf16 *k, const bf16 *v, int64_t B, int64_t T,
                                           int64_t NH, int64_t NKV, int64_t HD) {
    int64_t row = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= B * NH * T) return;
    int64_t t = row % T, h = (row / T) % NH, b = row / (T * NH), kh = h / (NH / NKV);
    float scale = rsqrtf((float)HD);
    int64_t qoff = ((b * T + t) * NH + h) * HD;
    float qr[MAXE], dor[MAXE], acc[MAXE];
    load_row(qr, q + qoff, HD, lane);
    load_row(dor, dout + qoff, HD, lane);
    float D = dot_row(dor, out + qoff, HD, lane), L = lse[row];
#pragma unroll
    for (int j = 0; j < MAXE; j++) acc[j] = 0.0f;
    for (int64_t s = 0; s <= t; s++) {
        const bf16 *ks = k + ((b * T + s) * NKV + kh) * HD, *vs = v + ((b * T + s) * NKV + kh) * HD;
        float p = expf(dot_row(qr, ks, HD, lane) * scale - L);
        float ds = p * (dot_row(dor, vs, HD, lane) - D) * scale;
#pragma unroll
        for (int j = 0; j < MAXE; j++) {
            int64_t d = lane + 32 * j;
            if (d < HD) acc[j] += ds * __bfloat162float(ks[d]);
        }
    }
#pragma unroll
    for (int j = 0; j < MAXE; j++) {
        int64_t d = lane + 32 * j;
        if (d < HD) dq[qoff + d] = __float2bfloat16_rn(acc[j]);
    }
    if (lane == 0) dsum[row] = D;
}

/* dv_s = sum_{h in group, t >= s} p_ts dout_t;  dk_s = scale * sum p_ts (dout_t . v_s - D_t) q_t */
static __global__ void attention_dkv_kernel(bf16 *dk, bf16 *dv, const float *dsum, const bf16 *dout, const float *lse,
                                            const bf16 *q, const bf16 *k, const bf16 *v, int64_t B, int64_t T,
                                            int64_t NH, int64_t NKV, int64_t HD) {
    int64_t row = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5); /* (b*NKV + kh)*T + s */
    int lane = threadIdx.x & 31;
    if (row >= B * NKV * T) return;
    int64_t s = row % T, kh = (row / T) % NKV, b = row / (T * NKV), rep = NH / NKV;
    float scale = rsqrtf((float)HD);
    int64_t koff = ((b * T + s) * NKV + kh) * HD;
    float kr[MAXE], vr[MAXE], ak[MAXE], av[MAXE];
    load_row(kr, k + koff, HD, lane);
    load_row(vr, v + koff, HD, lane);
#pragma unroll
    for (int j = 0; j < MAXE; j++) ak[j] = av[j] = 0.0f;
    for (int64_t h = kh * rep; h < (kh + 1) * rep; h++)
        for (int64_t t = s; t < T; t++) {
            int64_t qoff = ((b * T + t) * NH + h) * HD, r = (b * NH + h) * T + t;
            const bf16 *qt = q + qoff, *dot_ = dout + qoff;
            float p = expf(dot_row(kr, qt, HD, lane) * scale - lse[r]);
            float ds = p * (dot_row(vr, dot_, HD, lane) - dsum[r]) * scale;
#pragma unroll
            for (int j = 0; j < MAXE; j++) {
                int64_t d = lane + 32 * j;
                if (d < HD) {
                    av[j] += p * __bfloat162float(dot_[d]);
                    ak[j] += ds * __bfloat162float(qt[d]);
                }
            }
        }
#pragma unroll
    for (int j = 0; j < MAXE; j++) {
        int64_t d = lane + 32 * j;
        if (d < HD) {
            dk[koff + d] = __float2bfloat16_rn(ak[j]);
            dv[koff + d] = __float2bfloat16_rn(av[j]);
        }
    }
}

static void check_shapes(int64_t NH, int64_t NKV, int64_t HD) {
    if (HD > 32 * MAXE || HD <= 0) dp_fatal("attention: head dim %lld outside 1..%d", (long long)HD, 32 * MAXE);
    if (NKV <= 0 || NH % NKV)
        dp_fatal("attention: %lld heads not a multiple of %lld kv heads", (long long)NH, (long long)NKV);
}

extern "C" void dp_cuda_attention_forward(dp_bf16 *out, float *lse, const dp_bf16 *q, const dp_bf16 *k,
                                          const dp_bf16 *v, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                                          dp_stream s) {
    check_shapes(NH, NKV, HD);
    int64_t rows = B * NH * T;
    if (rows <= 0) return;
    attention_forward_kernel<<<dp_grid(rows, WARPS), 32 * WARPS, 0, s>>>(
        (bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, B, T, NH, NKV, HD);
    DP_CHECK_LAUNCH();
}

extern "C" void dp_cuda_attention_backward(dp_bf16 *dq, dp_bf16 *dk, dp_bf16 *dv, float *dsum, const dp_bf16 *dout,
                                           const dp_bf16 *out, const float *lse, const dp_bf16 *q, const dp_bf16 *k,
                                           const dp_bf16 *v, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                                           dp_stream s) {
    check_shapes(NH, NKV, HD);
    int64_t rows = B * NH * T, krows = B * NKV * T;
    if (rows <= 0) return;
    attention_dq_kernel<<<dp_grid(rows, WARPS), 32 * WARPS, 0, s>>>(
        (bf16 *)dq, dsum, (const bf16 *)dout, (const bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v,
        B, T, NH, NKV, HD);
    DP_CHECK_LAUNCH();
    attention_dkv_kernel<<<dp_grid(krows, WARPS), 32 * WARPS, 0, s>>>((bf16 *)dk, (bf16 *)dv, dsum, (const bf16 *)dout,
                                                                      lse, (const bf16 *)q, (const bf16 *)k,
                                                                      (const bf16 *)v, B, T, NH, NKV, HD);
    DP_CHECK_LAUNCH();
}

/* ---- the KV cache for generation: (B, NKV, Tcap, HD) per block ---- */
static __global__ void cache_store_kernel(bf16 *kc, bf16 *vc, const bf16 *k, const bf16 *v, int64_t B, int64_t T,
                                          int64_t NKV, int64_t HD, int64_t Tcap, int64_t pos0) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * T * NKV * HD) return;
    int64_t d = i % HD, kh = (i / HD) % NKV, t = (i / (HD * NKV)) % T, b = i / (HD * NKV * T);
    int64_t o = ((b * NKV + kh) * Tcap + pos0 + t) * HD + d;
    kc[o] = k[i];
    vc[o] = v[i];
}

/* one query per sequence (decoding) against cache positions 0..len-1 */
static __global__ void attention_decode_kernel(bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc, int64_t B,
                                               int64_t NH, int64_t NKV, int64_t HD, int64_t Tcap, int64_t len) {
    int64_t row = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5); /* b*NH + h */
    int lane = threadIdx.x & 31;
    if (row >= B * NH) return;
    int64_t h = row % NH, b = row / NH, kh = h / (NH / NKV);
    float scale = rsqrtf((float)HD);
    float qr[MAXE], acc[MAXE];
    load_row(qr, q + row * HD, HD, lane);
#pragma unroll
    for (int j = 0; j < MAXE; j++) acc[j] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const bf16 *kb = kc + (b * NKV + kh) * Tcap * HD, *vb = vc + (b * NKV + kh) * Tcap * HD;
    for (int64_t s = 0; s < len; s++) {
        float sc = dot_row(qr, kb + s * HD, HD, lane) * scale, p;
        float corr = dp_online_softmax_step(&m, &l, sc, &p);
#pragma unroll
        for (int j = 0; j < MAXE; j++) {
            int64_t d = lane + 32 * j;
            acc[j] = acc[j] * corr + (d < HD ? p * __bfloat162float(vb[s * HD + d]) : 0.0f);
        }
    }
#pragma unroll
    for (int j = 0; j < MAXE; j++) {
        int64_t d = lane + 32 * j;
        if (d < HD) out[row * HD + d] = __float2bfloat16_rn(acc[j] / l);
    }
}

extern "C" void dp_cuda_kv_store(dp_bf16 *kc, dp_bf16 *vc, const dp_bf16 *k, const dp_bf16 *v, int64_t B, int64_t T,
                                 int64_t NKV, int64_t HD, int64_t Tcap, int64_t pos0, dp_stream s) {
    int64_t n = B * T * NKV * HD;
    if (n <= 0) return;
    if (pos0 + T > Tcap)
        dp_fatal("KV cache: positions %lld..%lld beyond its %lld", (long long)pos0, (long long)(pos0 + T),
                 (long long)Tcap);
    cache_store_kernel<<<dp_grid(n, 256), 256, 0, s>>>((bf16 *)kc, (bf16 *)vc, (const bf16 *)k, (const bf16 *)v, B, T,
                                                       NKV, HD, Tcap, pos0);
    DP_CHECK_LAUNCH();
}

extern "C" void dp_cuda_attention_decode(dp_bf16 *out, const dp_bf16 *q, const dp_bf16 *kc, const dp_bf16 *vc,
                                         int64_t B, int64_t NH, int64_t NKV, int64_t HD, int64_t Tcap, int64_t len,
                                         dp_stream s) {
    check_shapes(NH, NKV, HD);
    if (len < 1 || len > Tcap)
        dp_fatal("decode attention: length %lld outside 1..%lld", (long long)len, (long long)Tcap);
    attention_decode_kernel<<<dp_grid(B * NH, WARPS), 32 * WARPS, 0, s>>>(
        (bf16 *)out, (const bf16 *)q, (const bf16 *)kc, (const bf16 *)vc, B, NH, NKV, HD, Tcap, len);
    DP_CHECK_LAUNCH();
}
