/* The LLaMA model on the GPU for inference: perplexity, calibration and
 * block scoring (`--device cuda`). The CPU model (llama.h) is the source:
 * its flat fp32 layout is copied to the GPU once as bf16 (exact for bf16
 * checkpoints) and read in place; a layer map drops blocks without copying.
 * Activations are planned once for B x T (B may shrink per call).
 * The residual stream is fp32 on the device; hidden states cross to the
 * host as fp32 (N, C), the layout of the CPU run state and of calib.h5. */
#ifndef DEPTHPRUNE_LLAMA_CUDA_H
#define DEPTHPRUNE_LLAMA_CUDA_H

#include "depthprune/cuda_ops.h"
#include "depthprune/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dp_cuda_llama {
    const dp_llama *m;
    int64_t Bmax, T, chunk;
    dp_bf16 *w;             /* (m->n_elems) the weights, bf16 */
    float *cosb, *sinb;     /* (T, HD/2) */
    float *x, *x2;          /* (Bmax*T, C) residual stream, ping-pong */
    dp_bf16 *ln, *q, *k, *v, *ao, *gate, *up, *h;
    float *lse, *nll;       /* (Bmax*NH*T), (Bmax*T) */
    int32_t *tok, *tgt;     /* (Bmax*T) */
    void *head_scratch;
    dp_blas blas;
    size_t n_bytes;         /* device bytes held (weights + activations) */
} dp_cuda_llama;

/* Uploads m's weights and plans activations for Bmax x T. Collective over
 * nothing; the device must be selected first. Errors: T above the model's
 * max positions (unless allow_long), head dim above 256. */
int dp_cuda_llama_init(dp_cuda_llama *g, const dp_llama *m, int64_t Bmax, int64_t T, int allow_long, dp_err *err);
void dp_cuda_llama_free(dp_cuda_llama *g);
/* Selects this rank's GPU (node-local rank modulo the visible devices), then
 * dp_cuda_llama_init. Errors: no usable GPU, as dp_cuda_llama_init. */
int dp_cuda_llama_open(dp_cuda_llama *g, const dp_llama *m, int64_t Bmax, int64_t T, int allow_long, int local_rank,
                       dp_err *err);
/* tokens (B, T) host -> embedded residual stream; ids checked first */
int dp_cuda_llama_embed(dp_cuda_llama *g, const int32_t *tokens, int64_t B, dp_err *err);
/* host fp32 (B*T, C) <-> the current residual stream */
void dp_cuda_llama_set_hidden(dp_cuda_llama *g, const float *x, int64_t B);
void dp_cuda_llama_get_hidden(const dp_cuda_llama *g, float *x, int64_t B);
/* kept blocks [from, to) of map on the residual stream */
void dp_cuda_llama_blocks(dp_cuda_llama *g, const dp_layer_map *map, int from, int to, int64_t B);
/* final norm + head + CE on the residual stream; nll (B*T, host, may be
 * NULL) gets every position's NLL (0 where targets < 0); returns the sum
 * in position order (double). */
double dp_cuda_llama_head_nll(dp_cuda_llama *g, const int32_t *targets, float *nll, int64_t B);

#ifdef __cplusplus
}
#endif
#endif
