/* GEMMs of the engine on cuBLAS: bf16 inputs, fp32 accumulation, fp32 or
 * bf16 outputs, for row-major (PyTorch-layout) operands. cuBLAS is
 * column-major, so every call computes the transposed product: a
 * row-major (R, C) matrix is a column-major (C, R) one. Also the LoRA
 * branch, composed from the same GEMMs. */
#include "common.cuh"

static int checked_int(int64_t x, const char *what) {
    if (x < 0 || x > 2147483647) dp_fatal("GEMM dimension %s = %lld exceeds cuBLAS's int range", what, (long long)x);
    return (int)x;
}

/* C (m, n col-major, ld ldc) = alpha op(A) op(B) + beta C */
static void gemm(dp_blas h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, float alpha,
                 const void *A, int64_t lda, const void *B, int64_t ldb, float beta, void *C, cudaDataType_t ctype,
                 int64_t ldc) {
    if (m == 0 || n == 0) return;
    DP_CHECK_CUBLAS(cublasGemmEx(h, ta, tb, checked_int(m, "m"), checked_int(n, "n"), checked_int(k, "k"), &alpha, A,
                                 CUDA_R_16BF, checked_int(lda, "lda"), B, CUDA_R_16BF, checked_int(ldb, "ldb"), &beta,
                                 C, ctype, checked_int(ldc, "ldc"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

extern "C" void dp_cuda_matmul_forward(dp_blas h, void *out, int out_f32, const dp_bf16 *inp, const dp_bf16 *w,
                                       int64_t N, int64_t IN, int64_t OUT, float alpha, float beta) {
    /* out^T (OUT, N) = W (OUT, IN) @ inp^T (IN, N) */
    gemm(h, CUBLAS_OP_T, CUBLAS_OP_N, OUT, N, IN, alpha, w, IN, inp, IN, beta, out, out_f32 ? CUDA_R_32F : CUDA_R_16BF,
         OUT);
}

extern "C" void dp_cuda_matmul_backward(dp_blas h, float *dinp, float beta_inp, float *dw, const dp_bf16 *dout,
                                        const dp_bf16 *inp, const dp_bf16 *w, int64_t N, int64_t IN, int64_t OUT,
                                        float alpha) {
    /* dinp^T (IN, N) = W^T (IN, OUT) @ dout^T (OUT, N) */
    if (dinp) gemm(h, CUBLAS_OP_N, CUBLAS_OP_N, IN, N, OUT, alpha, w, IN, dout, OUT, beta_inp, dinp, CUDA_R_32F, IN);
    /* dw^T (IN, OUT) += inp^T (IN, N) @ dout (N, OUT) */
    if (dw) gemm(h, CUBLAS_OP_N, CUBLAS_OP_T, IN, OUT, N, alpha, inp, IN, dout, OUT, 1.0f, dw, CUDA_R_32F, IN);
}

extern "C" void dp_cuda_lora_forward(dp_blas h, void *out, int out_f32, dp_bf16 *xa, const dp_bf16 *inp,
                                     const dp_bf16 *a, const dp_bf16 *b, float scale, int64_t N, int64_t IN,
                                     int64_t OUT, int64_t RK) {
    dp_cuda_matmul_forward(h, xa, 0, inp, a, N, IN, RK, 1.0f, 0.0f);
    dp_cuda_matmul_forward(h, out, out_f32, xa, b, N, RK, OUT, scale, 1.0f);
}

extern "C" size_t dp_cuda_lora_scratch_bytes(int64_t N, int64_t RK) {
    return (size_t)(N * RK) * (sizeof(float) + sizeof(dp_bf16)) + 256;
}

extern "C" void dp_cuda_lora_backward(dp_blas h, float *dinp, float *da, float *db, void *scratch, const dp_bf16 *dout,
                                      const dp_bf16 *inp, const dp_bf16 *xa, const dp_bf16 *a, const dp_bf16 *b,
                                      float scale, int64_t N, int64_t IN, int64_t OUT, int64_t RK, dp_stream s) {
    float *dxa = (float *)scratch;
    dp_bf16 *dxa16 = (dp_bf16 *)((char *)scratch + (((size_t)(N * RK) * sizeof(float) + 255) & ~(size_t)255));
    /* db += scale dout^T xa; dxa = scale dout b */
    dp_cuda_matmul_backward(h, dxa, 0.0f, db, dout, xa, b, N, RK, OUT, scale);
    dp_cuda_f32_to_bf16(dxa16, dxa, N * RK, s);
    /* da += dxa^T inp; dinp += dxa a */
    dp_cuda_matmul_backward(h, dinp, 1.0f, da, dxa16, inp, a, N, IN, RK, 1.0f);
}
