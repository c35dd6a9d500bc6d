/* CPU reference ops of the LLaMA engine: a forward and a hand-written
 * backward per op, llm.c style: op_forward(out, ..., inp, ..., sizes).
 *
 * Every backward ADDS into the gradients it writes (callers zero them), so
 * residual branches, tied embeddings and GQA's shared key/value heads
 * accumulate without extra buffers; a NULL gradient skips that gradient
 * (frozen weights). N counts rows (tokens, B*T); other sizes: C hidden, IN/OUT
 * linear sizes (weights are (OUT, IN) as in PyTorch), NH/NKV heads, HD head
 * dim, V vocabulary, RK LoRA rank, K teacher top-k.
 *
 * The fp32 functions (dp_*) are the engine; the fp64 twins (dp_*_f64) are
 * compiled from the same source for finite-difference gradient checks. */
#ifndef DEPTHPRUNE_OPS_H
#define DEPTHPRUNE_OPS_H

#include <stdint.h>

#include "depthprune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DP_OPS_DECLARE(R, OP)                                                                                          \
    void OP(embed_forward)(R * out, const int32_t *tok, const R *wte, int64_t N, int64_t C);                           \
    void OP(embed_backward)(R * dwte, const R *dout, const int32_t *tok, int64_t N, int64_t C);                        \
    /* rstd (N) saved for the backward; may be NULL in inference */                                                    \
    void OP(rmsnorm_forward)(R * out, R * rstd, const R *inp, const R *w, int64_t N, int64_t C, double eps);           \
    void OP(rmsnorm_backward)(R * dinp, R * dw, const R *dout, const R *inp, const R *w, const R *rstd, int64_t N,     \
                              int64_t C);                                                                              \
    /* out (N, OUT) = inp (N, IN) @ w^T */                                                                             \
    void OP(matmul_forward)(R * out, const R *inp, const R *w, int64_t N, int64_t IN, int64_t OUT);                    \
    /* the same, threads splitting OUT: for few rows (decoding) */                                                     \
    void OP(matmul_forward_cols)(R * out, const R *inp, const R *w, int64_t N, int64_t IN, int64_t OUT);               \
    void OP(matmul_backward)(R * dinp, R * dw, const R *dout, const R *inp, const R *w, int64_t N, int64_t IN,         \
                             int64_t OUT);                                                                             \
    /* out += scale * (inp @ a^T) @ b^T; a (RK, IN), b (OUT, RK), xa (N, RK) saved */                                  \
    void OP(lora_forward)(R * out, R * xa, const R *inp, const R *a, const R *b, double scale, int64_t N, int64_t IN,  \
                          int64_t OUT, int64_t RK);                                                                    \
    /* scratch: N*RK elements */                                                                                       \
    void OP(lora_backward)(R * dinp, R * da, R * db, R * scratch, const R *dout, const R *inp, const R *xa,            \
                           const R *a, const R *b, double scale, int64_t N, int64_t IN, int64_t OUT, int64_t RK);      \
    /* in place on x (B*T, NH, HD); cos/sin (T, HD/2) */                                                               \
    void OP(rope_forward)(R * x, const R *cosb, const R *sinb, int64_t B, int64_t T, int64_t NH, int64_t HD);          \
    void OP(rope_backward)(R * dx, const R *cosb, const R *sinb, int64_t B, int64_t T, int64_t NH, int64_t HD);        \
    /* q (B,T,NH,HD), k/v (B,T,NKV,HD), out (B,T,NH,HD), att (B,NH,T,T) */                                             \
    void OP(attention_forward)(R * out, R * att, const R *q, const R *k, const R *v, int64_t B, int64_t T, int64_t NH, \
                               int64_t NKV, int64_t HD);                                                               \
    void OP(attention_backward)(R * dq, R * dk, R * dv, const R *dout, const R *att, const R *q, const R *k,           \
                                const R *v, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HD);                \
    void OP(swiglu_forward)(R * out, const R *gate, const R *up, int64_t n);                                           \
    void OP(swiglu_backward)(R * dgate, R * dup, const R *dout, const R *gate, const R *up, int64_t n);                \
    void OP(add_forward)(R * out, const R *a, const R *b, int64_t n);                                                  \
    /* nll (N); targets < 0 are ignored; returns the sum, *n_counted the rows */                                       \
    double OP(crossentropy_forward)(R * nll, const R *logits, const int32_t *targets, int64_t N, int64_t V,            \
                                    int64_t *n_counted);                                                               \
    void OP(crossentropy_backward)(R * dlogits, const R *logits, const int32_t *targets, double scale, int64_t N,      \
                                   int64_t V);                                                                         \
    /* kd (N) = T^2 KL(softmax(t/T) || softmax(s/T)); mask < 0 skips a row */                                          \
    double OP(kd_forward)(R * kd, const R *student, const R *teacher, const int32_t *mask, double temp, int64_t N,     \
                          int64_t V);                                                                                  \
    void OP(kd_backward)(R * dstudent, const R *student, const R *teacher, const int32_t *mask, double temp,           \
                         double scale, int64_t N, int64_t V);                                                          \
    /* teacher as top-k: idx/tval (N, K), tlse (N) = logsumexp(teacher / T) */                                         \
    double OP(kd_topk_forward)(R * kd, const R *student, const int32_t *idx, const R *tval, const R *tlse,             \
                               const int32_t *mask, double temp, int64_t N, int64_t V, int64_t K);                     \
    void OP(kd_topk_backward)(R * dstudent, const R *student, const int32_t *idx, const R *tval, const R *tlse,        \
                              const int32_t *mask, double temp, double scale, int64_t N, int64_t V, int64_t K);        \
    /* PyTorch AdamW; step counts from 1 */                                                                            \
    void OP(adamw_update)(R * p, const R *g, R *m, R *v, int64_t n, double lr, double beta1, double beta2, double eps, \
                          double wd, int64_t step);

/* Makes BLAS single-threaded per call (the ops thread over GEMM rows with
 * OpenMP); called by the ops themselves, idempotent and thread-safe. */
void dp_cpu_blas_init(void);

#define DP_OPS_NAME_F32(name) dp_##name
#define DP_OPS_NAME_F64(name) dp_##name##_f64
DP_OPS_DECLARE(float, DP_OPS_NAME_F32)
DP_OPS_DECLARE(double, DP_OPS_NAME_F64)

#ifdef __cplusplus
}
#endif
#endif
