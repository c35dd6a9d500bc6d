/* CUDA ops of the LLaMA engine: the CPU op set (ops.h) on the GPU, one op
 * per src/backend/cuda/OP.cu with static kernels and one exported launcher
 * that takes a stream. Plain C: no CUDA type crosses this header (streams
 * and cuBLAS handles are opaque pointers, bf16 values are their 16 bits).
 *
 * Precision (the mixed-precision recipe of the issue): weights and every
 * activation that enters a GEMM are bf16; GEMMs accumulate in fp32 through
 * cuBLAS; the residual stream and its gradient, norms, softmax, losses,
 * weight gradients, master weights and AdamW moments are fp32.
 * Element-wise ops read bf16, compute in fp32, round once on output.
 *
 * Gradient convention: a backward WRITES the gradient of its activation
 * inputs and ADDS into fp32 weight gradients (callers zero those once per
 * step), except where a comment says it accumulates (RMSNorm's input
 * gradient is added into the residual gradient). Sizes as in ops.h: N rows
 * (B*T), C hidden, NH/NKV heads, HD head dim, V vocabulary.
 *
 * Available only in builds with DP_HAVE_CUDA; a runtime CUDA or cuBLAS
 * failure is a fault: dp_fatal with CUDA's own message. */
#ifndef DEPTHPRUNE_CUDA_OPS_H
#define DEPTHPRUNE_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *dp_stream; /* == cudaStream_t */
typedef struct cublasContext *dp_blas; /* == cublasHandle_t */
typedef uint16_t dp_bf16;              /* bits of a bfloat16 */

/* ---- device, memory, streams (device.cu) ---- */
void dp_cuda_set_device(int dev);
void *dp_cuda_malloc(size_t n_bytes, const char *label); /* fatal with the label on OOM */
void dp_cuda_free(void *p);
void dp_cuda_h2d(void *dst, const void *src, size_t n_bytes);
void dp_cuda_d2h(void *dst, const void *src, size_t n_bytes);
void dp_cuda_d2d(void *dst, const void *src, size_t n_bytes, dp_stream s);
void dp_cuda_memset0(void *p, size_t n_bytes, dp_stream s);
void dp_cuda_sync(dp_stream s); /* NULL = the whole device */
/* "NVIDIA H200 (bus 0000:19:00.0, 139.8 GiB)" for device dev, into buf */
void dp_cuda_describe(int dev, char *buf, size_t n);
size_t dp_cuda_mem_free(void); /* free bytes on the current device */
dp_blas dp_cuda_blas_create(dp_stream s);
void dp_cuda_blas_destroy(dp_blas h);

/* ---- conversions (convert.cu) ---- */
void dp_cuda_f32_to_bf16(dp_bf16 *out, const float *in, int64_t n, dp_stream s);
void dp_cuda_bf16_to_f32(float *out, const dp_bf16 *in, int64_t n, dp_stream s);
/* elements of x (device) that are NaN or infinite; synchronises s */
int64_t dp_cuda_count_nonfinite(const float *x, int64_t n, dp_stream s);

/* ---- GEMMs through cuBLAS (gemm.cu): W is (OUT, IN) row-major, bf16.
 * out (N, OUT) = beta * out + alpha * inp (N, IN) @ W^T; out is fp32 when
 * out_f32 (beta = 1 adds into the residual stream), else bf16. */
void dp_cuda_matmul_forward(dp_blas h, void *out, int out_f32, const dp_bf16 *inp, const dp_bf16 *w, int64_t N,
                            int64_t IN, int64_t OUT, float alpha, float beta);
/* dinp (N, IN, fp32) = beta_inp * dinp + alpha * dout @ W   (skipped when NULL)
 * dw (OUT, IN, fp32) += alpha * dout^T @ inp                 (skipped when NULL) */
void dp_cuda_matmul_backward(dp_blas h, float *dinp, float beta_inp, float *dw, const dp_bf16 *dout, const dp_bf16 *inp,
                             const dp_bf16 *w, int64_t N, int64_t IN, int64_t OUT, float alpha);
/* LoRA branch (PEFT): out += scale * (inp @ a^T) @ b^T with a (RK, IN), b
 * (OUT, RK) bf16 copies of the fp32 adapters; xa (N, RK) bf16 saved.
 * Backward: da (RK, IN) and db (OUT, RK) fp32 accumulate, dinp (fp32) ADDS
 * the branch's input gradient; dxa scratch (N, RK) fp32 + (N, RK) bf16 =
 * dp_cuda_lora_scratch_bytes. */
void dp_cuda_lora_forward(dp_blas h, void *out, int out_f32, dp_bf16 *xa, const dp_bf16 *inp, const dp_bf16 *a,
                          const dp_bf16 *b, float scale, int64_t N, int64_t IN, int64_t OUT, int64_t RK);
size_t dp_cuda_lora_scratch_bytes(int64_t N, int64_t RK);
void dp_cuda_lora_backward(dp_blas h, float *dinp, float *da, float *db, void *scratch, const dp_bf16 *dout,
                           const dp_bf16 *inp, const dp_bf16 *xa, const dp_bf16 *a, const dp_bf16 *b, float scale,
                           int64_t N, int64_t IN, int64_t OUT, int64_t RK, dp_stream s);

/* ---- LoRA dropout (dropout.cu), the CPU engine's hash mask (llama.h):
 * dst = src * keep / (1 - p) with keys (N) per row on the device; the
 * backward ADDS g * keep / (1 - p) into dinp. */
void dp_cuda_lora_dropout(dp_bf16 *dst, const dp_bf16 *src, const uint64_t *keys, int l, int k, int64_t N, int64_t IN,
                          double p, dp_stream s);
void dp_cuda_lora_dropout_backward(float *dinp, const float *g, const uint64_t *keys, int l, int k, int64_t N,
                                   int64_t IN, double p, dp_stream s);

/* ---- embedding (embed.cu): out (N, C) fp32 = wte[tok]; dwte += rows of dout
 * (atomics: the order of additions into a repeated token's row varies). */
void dp_cuda_embed_forward(float *out, const int32_t *tok, const dp_bf16 *wte, int64_t N, int64_t C, dp_stream s);
void dp_cuda_embed_backward(float *dwte, const float *dout, const int32_t *tok, int64_t N, int64_t C, dp_stream s);

/* ---- RMSNorm (rmsnorm.cu), HF's order in fp32: out = bf16(w * x * rstd).
 * rstd (N) may be NULL in inference. Backward ADDS into dinp (the residual
 * gradient) and into dw; dw is reduced in a fixed order through
 * `scratch` (dp_cuda_rmsnorm_scratch_bytes), so it is deterministic. */
void dp_cuda_rmsnorm_forward(dp_bf16 *out, float *rstd, const float *inp, const dp_bf16 *w, int64_t N, int64_t C,
                             float eps, dp_stream s);
size_t dp_cuda_rmsnorm_scratch_bytes(int64_t N, int64_t C);
void dp_cuda_rmsnorm_backward(float *dinp, float *dw, float *scratch, const float *dout, const float *inp,
                              const dp_bf16 *w, const float *rstd, int64_t N, int64_t C, dp_stream s);

/* ---- RoPE rotate-half in place on x (B*T, NH, HD); cos/sin (T, HD/2) fp32
 * at positions pos0 .. pos0+T-1 of the table (pos0 > 0 when decoding). */
void dp_cuda_rope_forward(dp_bf16 *x, const float *cosb, const float *sinb, int64_t B, int64_t T, int64_t NH,
                          int64_t HD, int64_t pos0, dp_stream s);
void dp_cuda_rope_backward(dp_bf16 *dx, const float *cosb, const float *sinb, int64_t B, int64_t T, int64_t NH,
                           int64_t HD, dp_stream s);

/* ---- causal GQA attention, memory-efficient (attention.cu): online
 * softmax over the keys, only lse (B, NH, T) saved, never a T x T matrix.
 * q (B,T,NH,HD), k/v (B,T,NKV,HD), out (B,T,NH,HD); HD <= 256.
 * Backward recomputes the probabilities from lse; `dsum` (B, NH, T) fp32
 * scratch; dq, dk, dv written (deterministic: no atomics). */
void dp_cuda_attention_forward(dp_bf16 *out, float *lse, const dp_bf16 *q, const dp_bf16 *k, const dp_bf16 *v,
                               int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD, dp_stream s);
void dp_cuda_attention_backward(dp_bf16 *dq, dp_bf16 *dk, dp_bf16 *dv, float *dsum, const dp_bf16 *dout,
                                const dp_bf16 *out, const float *lse, const dp_bf16 *q, const dp_bf16 *k,
                                const dp_bf16 *v, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD,
                                dp_stream s);

/* Generation: k/v (B, T, NKV, HD) into the cache (B, NKV, Tcap, HD) at
 * positions pos0..pos0+T-1; one query per sequence, q (B, NH, HD), against
 * cache positions 0..len-1 -> out (B, NH, HD). */
void dp_cuda_kv_store(dp_bf16 *kc, dp_bf16 *vc, const dp_bf16 *k, const dp_bf16 *v, int64_t B, int64_t T, int64_t NKV,
                      int64_t HD, int64_t Tcap, int64_t pos0, dp_stream s);
void dp_cuda_attention_decode(dp_bf16 *out, const dp_bf16 *q, const dp_bf16 *kc, const dp_bf16 *vc, int64_t B,
                              int64_t NH, int64_t NKV, int64_t HD, int64_t Tcap, int64_t len, dp_stream s);

/* ---- SwiGLU (swiglu.cu): out = silu(gate) * up */
void dp_cuda_swiglu_forward(dp_bf16 *out, const dp_bf16 *gate, const dp_bf16 *up, int64_t n, dp_stream s);
void dp_cuda_swiglu_backward(dp_bf16 *dgate, dp_bf16 *dup, const dp_bf16 *dout, const dp_bf16 *gate, const dp_bf16 *up,
                             int64_t n, dp_stream s);

/* ---- LM head with fused cross-entropy and KD (head_loss.cu), chunked so
 * that only `chunk` rows of fp32 logits exist at a time.
 * h (N, C) bf16 = final-norm output, w (V, C) bf16 (the embedding when tied).
 * Per row n with targets[n] >= 0: ce[n] = lse(z) - z[target];
 * with a teacher top-k (tidx/tval (N, K), tlse (N) = lse(teacher / temp);
 * NULL = no KD): kd[n] = T^2 KL over the K kept tokens + a tail bucket
 * (ops.h's kd_topk; exact at K = V). Loss per row = (1-alpha) ce + alpha kd.
 * With dh != NULL, dh (N, C, fp32) is WRITTEN and dw (V, C, fp32; NULL =
 * frozen) accumulated with the gradient of gscale * sum of row losses.
 * Scratch: dp_cuda_head_scratch_bytes(chunk, V). ce/kd (N) fp32 outputs
 * (kd may be NULL). */
typedef struct {
    const int32_t *targets;
    const int32_t *tidx;
    const float *tval, *tlse;
    int64_t K;
    float alpha, temp, gscale;
    int64_t chunk;
} dp_cuda_head_args;
size_t dp_cuda_head_scratch_bytes(int64_t chunk, int64_t V);
void dp_cuda_head_loss(dp_blas h, float *ce, float *kd, float *dh, float *dw, void *scratch, const dp_bf16 *hid,
                       const dp_bf16 *w, const dp_cuda_head_args *a, int64_t N, int64_t C, int64_t V, dp_stream s);

/* The teacher's side: per row of h @ w^T, the top-K logits (tidx/tval (N,
 * K), descending, ties to the lower index, as dp_teacher_topk) and tlse (N)
 * = lse(logits / temp); `chunk` rows of logits at a time in scratch
 * (dp_cuda_head_scratch_bytes(chunk, V)). */
void dp_cuda_head_topk(dp_blas h, int32_t *tidx, float *tval, float *tlse, void *scratch, const dp_bf16 *hid,
                       const dp_bf16 *w, int64_t N, int64_t C, int64_t V, int64_t K, float temp, int64_t chunk,
                       dp_stream s);

/* ---- AdamW (adamw.cu), PyTorch's arithmetic in fp32 (ops.h); step from 1;
 * p_bf16 (may be NULL) receives the updated weights rounded to bf16. */
void dp_cuda_adamw_update(float *p, dp_bf16 *p_bf16, const float *g, float *m, float *v, int64_t n, double lr,
                          double beta1, double beta2, double eps, double wd, int64_t step, dp_stream s);

#ifdef __cplusplus
}
#endif
#endif
