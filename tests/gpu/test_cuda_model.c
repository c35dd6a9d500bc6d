/* Whole-model cross-backend test: the GPU inference engine (llama_cuda.h)
 * against the CPU engine on the three fixture models (GQA + untied, tied +
 * llama3 RoPE, MQA + linear RoPE), dense and with blocks dropped through a
 * layer map. The weights are rounded to bf16 on both sides first, so what
 * differs is the GPU's bf16 activations. Checked: the final hidden states
 * (max |diff| / max |cpu| <= 2e-2: bf16 activations through every block),
 * per-position NLL (max |diff| <= 2e-2 nats) and the perplexity, within
 * 1e-3 relative as the CUDA issue requires. LoRA training: one
 * micro-batch's CE (+ top-k KD, + LoRA dropout) loss and every adapter
 * gradient vs dp_llama_backward (losses 1e-3 relative; gradients
 * max |diff| / max |cpu| <= 3e-2 per adapter tensor: bf16 activations and
 * bf16 gradients between the GEMMs, as PyTorch autocast has them).
 * Exits 77 without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/backend.h"
#include "depthprune/engine.h"
#include "depthprune/generate.h"
#include "depthprune/llama_cuda.h"
#include "depthprune/ops.h"
#include "depthprune/tensor.h"
#include "gpu_test.h"

static int g_fail = 0;

/* a fixture model with its weights rounded to bf16 (what the GPU holds), all blocks mapped */
static void load_bf16(const char *name, dp_llama *m, dp_layer_map *map, dp_err *err) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", DP_TEST_DATA, name);
    dp_err_clear(err);
    if (dp_llama_load(dir, m, err)) dp_fatal("%s", err->msg);
    for (int64_t i = 0; i < m->n_elems; i++) m->mem[i] = dp_bf16_to_f32(dp_f32_to_bf16(m->mem[i]));
    dp_layer_map_all(map, (int)m->cfg.n_layers);
}

/* forward on both engines; skip_attn / skip_mlp: a block whose sub-layer is skipped (-1: none) */
static void run(const char *name, const int64_t *drop, int64_t n_drop, int skip_attn, int skip_mlp) {
    dp_llama m;
    dp_err err;
    dp_layer_map map;
    load_bf16(name, &m, &map, &err);
    if (n_drop && dp_layer_map_drop(&map, (int)m.cfg.n_layers, drop, n_drop, &err)) dp_fatal("%s", err.msg);
    if (skip_attn >= 0) map.skip[skip_attn] |= DP_SKIP_ATTN;
    if (skip_mlp >= 0) map.skip[skip_mlp] |= DP_SKIP_MLP;
    const int64_t B = 3, T = m.cfg.max_position_embeddings < 24 ? m.cfg.max_position_embeddings : 24, N = B * T;
    const int64_t C = m.cfg.hidden_size;
    int32_t *tok = malloc((size_t)N * 4), *tgt = malloc((size_t)N * 4);
    uint64_t st = 77;
    for (int64_t i = 0; i < N; i++) tok[i] = (int32_t)(dp_splitmix64(&st) % (uint64_t)m.cfg.vocab_size);
    dp_llama_next_targets(tgt, tok, B, T);
    /* CPU */
    dp_llama_state s;
    if (dp_llama_state_init(&s, &m, NULL, B, T, map.n, DP_STATE_NLL_ONLY, 0, &err) ||
        dp_llama_forward(&m, NULL, &map, &s, tok, &err))
        dp_fatal("%s", err.msg);
    double cpu_sum = dp_llama_head_nll(&m, &s, map.n, tgt);
    const float *cpu_x = s.x + (int64_t)map.n * N * C;
    /* GPU */
    dp_cuda_llama g;
    if (dp_cuda_llama_init(&g, &m, B, T, 0, &err) || dp_cuda_llama_embed(&g, tok, B, &err)) dp_fatal("%s", err.msg);
    dp_cuda_llama_blocks(&g, &map, 0, map.n, B);
    float *gx = malloc((size_t)(N * C) * 4), *gnll = malloc((size_t)N * 4);
    dp_cuda_llama_get_hidden(&g, gx, B);
    double gpu_sum = dp_cuda_llama_head_nll(&g, tgt, gnll, B);
    double dx = 0, xm = 0, dn = 0;
    for (int64_t i = 0; i < N * C; i++) {
        dx = fmax(dx, fabs((double)gx[i] - (double)cpu_x[i]));
        xm = fmax(xm, fabs((double)cpu_x[i]));
    }
    for (int64_t i = 0; i < N; i++) dn = fmax(dn, fabs((double)gnll[i] - (double)s.nll[i]));
    int64_t cnt = B * (T - 1);
    double ppl_c = exp(cpu_sum / (double)cnt), ppl_g = exp(gpu_sum / (double)cnt);
    double rel = fabs(ppl_g - ppl_c) / ppl_c;
    int ok = dx / xm <= 2e-2 && dn <= 2e-2 && rel <= 1e-3 && isfinite(gpu_sum);
    printf("%-12s %d blocks: hidden %.2e (tol 2e-2), nll max|diff| %.2e (tol 2e-2), ppl cpu %.6f gpu %.6f rel %.2e "
           "(tol 1e-3)%s\n",
           name, map.n, dx / xm, dn, ppl_c, ppl_g, rel, ok ? "" : "  FAILED");
    if (!ok) g_fail = 1;
    dp_cuda_llama_free(&g);
    dp_llama_state_free(&s);
    dp_llama_free(&m);
    free(tok), free(tgt), free(gx), free(gnll);
}

/* one LoRA micro-step on both engines; kd: teacher top-k; dropout: PEFT dropout */
static void train_case(const char *name, int kd, double dropout) {
    dp_llama m;
    dp_err err;
    dp_layer_map map;
    load_bf16(name, &m, &map, &err);
    dp_lora lora, lg;
    unsigned all = 0;
    if (dp_lora_parse_targets("all", &all, &err) || dp_lora_init(&lora, &m, &map, 4, 8.0, all, &err))
        dp_fatal("%s", err.msg);
    dp_lora_init_random(&lora, &m, 3);
    uint64_t st = 11; /* B random too (PEFT starts it at 0, which would leave A's gradient 0) */
    for (int64_t i = 0; i < lora.n_elems; i++)
        if (lora.mem[i] == 0.0f)
            lora.mem[i] = (float)(0.05 * ((double)dp_xorshift64s_53(&st) / 9007199254740992.0 - 0.5));
    for (int64_t i = 0; i < lora.n_elems; i++) lora.mem[i] = dp_bf16_to_f32(dp_f32_to_bf16(lora.mem[i]));
    lora.dropout = dropout;
    dp_lora_like(&lg, &lora, "lora grads");
    const int64_t B = 2, T = 16, N = B * T, V = m.cfg.vocab_size, K = 8;
    const double alpha = kd ? 0.5 : 0.0, temp = 2.0;
    int32_t tok[32], tgt[32], tidx[32 * 8];
    uint64_t keys[32];
    float tval[32 * 8], tlse[32];
    for (int64_t i = 0; i < N; i++) {
        tok[i] = (int32_t)(dp_splitmix64(&st) % (uint64_t)V);
        keys[i] = dp_splitmix64(&st);
    }
    dp_llama_next_targets(tgt, tok, B, T);
    tgt[3] = -1;                      /* a masked prompt position */
    for (int64_t n = 0; n < N; n++) { /* a teacher: K distinct tokens with decreasing logits */
        double mx = 4.0, s = 0;
        for (int64_t j = 0; j < K; j++) {
            tidx[n * K + j] = (int32_t)((n * 7 + j * 13) % V);
            tval[n * K + j] = (float)(mx - 0.5 * (double)j);
            s += exp((double)tval[n * K + j] / temp);
        }
        s += (double)(V - K) * exp(0.0 / temp); /* the others at logit 0 */
        tlse[n] = (float)log(s);
    }
    int64_t D = 0;
    for (int64_t n = 0; n < N; n++) D += tgt[n] >= 0;
    double gscale = 1.0 / (double)D;
    /* CPU */
    dp_llama_state s;
    if (dp_llama_state_init(&s, &m, &lora, B, T, map.n, DP_STATE_TRAIN, 0, &err)) dp_fatal("%s", err.msg);
    lora.drop_key = dropout > 0 ? keys : NULL;
    if (dp_llama_forward(&m, &lora, &map, &s, tok, &err)) dp_fatal("%s", err.msg);
    dp_llama_zero_dlogits(&s, &m);
    double ce = dp_llama_loss_ce(&s, &m, tgt, NULL, (1.0 - alpha) * gscale), kdl = 0;
    if (kd) {
        float *krow = calloc((size_t)N, sizeof(float));
        kdl = dp_kd_topk_forward(krow, s.logits, tidx, tval, tlse, tgt, temp, N, V, K);
        dp_kd_topk_backward(s.dlogits, s.logits, tidx, tval, tlse, tgt, temp, alpha * gscale, N, V, K);
        free(krow);
    }
    dp_llama_backward(&m, &lora, &map, &s, tok, NULL, &lg);
    lora.drop_key = NULL;
    /* GPU */
    dp_cuda_llama g;
    if (dp_cuda_llama_init(&g, &m, B, T, 0, &err) || dp_cuda_llama_train_init(&g, &lora, map.n, kd ? K : 0, 0, &err))
        dp_fatal("%s", err.msg);
    dp_cuda_micro mb = {.tokens = tok,
                        .targets = tgt,
                        .keys = dropout > 0 ? keys : NULL,
                        .B = B,
                        .T = T,
                        .tidx = kd ? tidx : NULL,
                        .tval = tval,
                        .tlse = tlse,
                        .alpha = alpha,
                        .temp = temp,
                        .gscale = gscale,
                        .backward = 1};
    double gce = 0, gkd = 0;
    if (dp_cuda_llama_train_micro(&g, &map, &mb, &gce, &gkd, &err)) dp_fatal("%s", err.msg);
    float *gg = malloc((size_t)lora.n_elems * sizeof(float));
    dp_cuda_llama_lora_grad(&g, gg);
    double worst = 0;
    int worst_l = -1, worst_k = -1;
    for (int l = 0; l < DP_MAX_LAYERS; l++)
        for (int k = 0; k < DP_LLAMA_BLOCK_TENSORS; k++) {
            if (!lora.a[l][k]) continue;
            for (int ab = 0; ab < 2; ab++) { /* A (r, IN) then B (OUT, r), PEFT's layout */
                const float *c = ab ? lg.b[l][k] : lg.a[l][k];
                int64_t off = c - lg.mem;
                int64_t len = ab ? m.params[1 + k].rows * lora.rank : lora.b[l][k] - lora.a[l][k];
                double dmax = 0, rmax = 0;
                for (int64_t i = 0; i < len; i++) {
                    dmax = fmax(dmax, fabs((double)gg[off + i] - (double)c[i]));
                    rmax = fmax(rmax, fabs((double)c[i]));
                }
                double rel = dmax / (rmax > 0 ? rmax : 1);
                if (!(rel <= worst)) worst = rel, worst_l = l, worst_k = k;
            }
        }
    double rce = fabs(gce - ce) / ce, rkd = kd ? fabs(gkd - kdl) / kdl : 0;
    int ok = rce <= 1e-3 && rkd <= 1e-3 && worst <= 3e-2;
    printf("%-12s LoRA%s%s: CE cpu %.6f gpu %.6f (rel %.1e)%s, worst adapter gradient %.2e (block %d tensor %d; tol "
           "3e-2)%s\n",
           name, kd ? " + KD" : "", dropout > 0 ? " + dropout" : "", ce, gce, rce, kd ? "" : "", worst, worst_l,
           worst_k, ok ? "" : "  FAILED");
    if (kd) printf("%-12s KD cpu %.6f gpu %.6f (rel %.1e)\n", name, kdl, gkd, rkd);
    if (!ok) g_fail = 1;
    free(gg);
    dp_cuda_llama_free(&g);
    dp_llama_state_free(&s);
    dp_lora_free(&lg);
    dp_lora_free(&lora);
    dp_llama_free(&m);
}

/* full-parameter: every weight's gradient (embedding, blocks, norms, head)
 * vs dp_llama_backward, per tensor max |diff| / max |cpu| <= 3e-2 */
static void full_case(const char *name) {
    dp_llama m;
    dp_err err;
    dp_layer_map map;
    load_bf16(name, &m, &map, &err);
    const int64_t B = 2, T = 16, N = B * T, V = m.cfg.vocab_size;
    int32_t tok[32], tgt[32];
    uint64_t st = 21;
    for (int64_t i = 0; i < N; i++) tok[i] = (int32_t)(dp_splitmix64(&st) % (uint64_t)V);
    dp_llama_next_targets(tgt, tok, B, T);
    double gscale = 1.0 / (double)(B * (T - 1));
    float *gc = calloc((size_t)m.n_elems, sizeof(float)), *gg = malloc((size_t)m.n_elems * sizeof(float));
    dp_llama_view gv;
    dp_llama_view_of(&m, gc, &gv);
    dp_llama_state s;
    if (dp_llama_state_init(&s, &m, NULL, B, T, map.n, DP_STATE_TRAIN, 0, &err) ||
        dp_llama_forward(&m, NULL, &map, &s, tok, &err))
        dp_fatal("%s", err.msg);
    dp_llama_zero_dlogits(&s, &m);
    double ce = dp_llama_loss_ce(&s, &m, tgt, NULL, gscale);
    dp_llama_backward(&m, NULL, &map, &s, tok, &gv, NULL);
    dp_cuda_llama g;
    if (dp_cuda_llama_init(&g, &m, B, T, 0, &err) || dp_cuda_llama_train_init(&g, NULL, map.n, 0, 0, &err) ||
        dp_cuda_llama_full_init(&g, &err))
        dp_fatal("%s", err.msg);
    dp_cuda_micro x = {.tokens = tok, .targets = tgt, .B = B, .T = T, .temp = 1.0, .gscale = gscale, .backward = 1};
    double gce = 0, gkd = 0;
    if (dp_cuda_llama_train_micro(&g, &map, &x, &gce, &gkd, &err)) dp_fatal("%s", err.msg);
    dp_cuda_llama_full_grad(&g, gg);
    double worst = 0;
    const char *wname = "";
    for (int i = 0; i < m.n_params; i++) {
        const dp_llama_param *p = &m.params[i];
        double d = 0, r = 0;
        for (int64_t j = 0; j < p->n_elems; j++) {
            d = fmax(d, fabs((double)gg[p->offset + j] - (double)gc[p->offset + j]));
            r = fmax(r, fabs((double)gc[p->offset + j]));
        }
        double rel = d / (r > 0 ? r : 1);
        if (!(rel <= worst)) worst = rel, wname = p->name;
    }
    double rce = fabs(gce - ce) / ce;
    int ok = rce <= 1e-3 && worst <= 3e-2;
    printf("%-12s full-parameter: CE rel %.1e, worst weight gradient %.2e (%s; tol 3e-2)%s\n", name, rce, worst, wname,
           ok ? "" : "  FAILED");
    if (!ok) g_fail = 1;
    dp_cuda_llama_free(&g);
    dp_llama_state_free(&s);
    free(gc), free(gg);
    dp_llama_free(&m);
}

/* greedy generation, GPU vs CPU (dp_generate): the logits of every step up
 * to the first differing token within 2e-2 of max |logit|, and a differing
 * token only where the CPU's top two logits are within that tolerance (a
 * bf16 near-tie), never elsewhere */
static void gen_case(const char *name) {
    dp_llama m;
    dp_err err;
    dp_layer_map map;
    load_bf16(name, &m, &map, &err);
    const int64_t B = 3, P = 5, G = 12, V = m.cfg.vocab_size;
    int32_t prompts[15], oc[36], og[36];
    uint64_t st = 5;
    for (int i = 0; i < B * P; i++) prompts[i] = (int32_t)(dp_splitmix64(&st) % (uint64_t)V);
    dp_gen_opts o = {.max_new = G, .temperature = 0, .top_p = 1, .seed = 1, .eos_id = -1};
    float *lc = malloc((size_t)(B * G * V) * 4), *lgp = malloc((size_t)(B * G * V) * 4);
    dp_gen cpu;
    if (dp_gen_init(&cpu, &m, &map, B, P, P + G, &err) || dp_generate(&cpu, prompts, B, P, &o, oc, lc, NULL, &err))
        dp_fatal("%s", err.msg);
    dp_cuda_gen gpu;
    if (dp_cuda_gen_init(&gpu, &m, &map, B, P, P + G, 0, &err) ||
        dp_cuda_generate(&gpu, prompts, B, P, &o, og, lgp, NULL, &err))
        dp_fatal("%s", err.msg);
    int ok = 1, same = 0, ties = 0;
    double worst = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < G; t++) {
            const float *a = lc + (b * G + t) * V, *c = lgp + (b * G + t) * V;
            double mx = 0, d = 0, top1 = -INFINITY, top2 = -INFINITY;
            for (int64_t i = 0; i < V; i++) {
                mx = fmax(mx, fabs((double)a[i]));
                d = fmax(d, fabs((double)a[i] - (double)c[i]));
                if (a[i] > top1)
                    top2 = top1, top1 = a[i];
                else if (a[i] > top2)
                    top2 = a[i];
            }
            worst = fmax(worst, d / mx);
            if (d / mx > 2e-2) ok = 0;
            if (oc[b * G + t] == og[b * G + t]) {
                same++;
                continue;
            }
            if (top1 - top2 > 2e-2 * mx) ok = 0; /* a clear winner chosen differently */
            ties++;
            break; /* later steps continue from different tokens */
        }
    printf("%-12s greedy generation: %d tokens equal, %d near-tie divergences, logits %.2e (tol 2e-2)%s\n", name, same,
           ties, worst, ok ? "" : "  FAILED");
    if (!ok) g_fail = 1;
    dp_cuda_gen_free(&gpu);
    dp_gen_free(&cpu);
    free(lc), free(lgp);
    dp_llama_free(&m);
}

/* Several optimizer steps through dp_engine on both devices, as the trainer
 * runs them: 2 micro-batches per step (accumulation; the second shorter, as
 * T < Tmax and B < Bmax come from the trainer), KD on top-k rows of a peaked
 * teacher, LoRA dropout, gradients flushed, AdamW on the host, parameters
 * changed. After every step: the losses (3e-3 relative) and every trainable
 * value (max |diff| / max |cpu| <= 5e-2: bf16 activations compound over
 * steps). LoRA: 5 steps; full-parameter: 3. */
static void engine_steps(const char *name, int full, int steps) {
    dp_llama m, mg;
    dp_err err;
    dp_layer_map map;
    load_bf16(name, &m, &map, &err);
    dp_llama_clone(&mg, &m);
    const int64_t B = 2, T = 16, K = 8, V = m.cfg.vocab_size;
    dp_lora lc, lg;
    memset(&lc, 0, sizeof lc), memset(&lg, 0, sizeof lg);
    if (!full) {
        unsigned all = 0;
        if (dp_lora_parse_targets("all", &all, &err) || dp_lora_init(&lc, &m, &map, 4, 8, all, &err) ||
            dp_lora_init(&lg, &mg, &map, 4, 8, all, &err))
            dp_fatal("%s", err.msg);
        dp_lora_init_random(&lc, &m, 5);
        dp_lora_init_random(&lg, &mg, 5);
        lc.dropout = lg.dropout = 0.1;
    }
    dp_engine_plan p = {.B = B, .T = T, .allow_long = 1, .train = 1, .lora = full ? NULL : &lc, .full = full, .K = K};
    dp_engine ec, eg;
    if (dp_engine_open(&ec, DP_DEVICE_CPU, &m, &p, &err)) dp_fatal("%s", err.msg);
    p.lora = full ? NULL : &lg;
    if (dp_engine_open(&eg, DP_DEVICE_CUDA, &mg, &p, &err)) dp_fatal("%s", err.msg);
    float *pc = full ? m.mem : lc.mem, *pg = full ? mg.mem : lg.mem;
    int64_t n = full ? m.n_elems : lc.n_elems;
    float *mc = calloc((size_t)n, 4), *vc = calloc((size_t)n, 4), *mgm = calloc((size_t)n, 4),
          *vg = calloc((size_t)n, 4);
    int32_t *tok = malloc((size_t)(B * T) * 4), *tgt = malloc((size_t)(B * T) * 4),
            *tidx = malloc((size_t)(B * T * K) * 4);
    float *tval = malloc((size_t)(B * T * K) * 4), *tlse = malloc((size_t)(B * T) * 4);
    uint64_t *keys = malloc((size_t)(B * T) * 8), st = 99;
    double worst_loss = 0, worst_w = 0;
    for (int step = 1; step <= steps; step++) {
        dp_engine_zero_grad(&ec), dp_engine_zero_grad(&eg);
        double ce[2] = {0, 0}, kd[2] = {0, 0};
        for (int mi = 0; mi < 2; mi++) {
            int64_t b = mi ? 1 : B, t = mi ? T - 5 : T; /* the second micro-batch shorter and narrower */
            for (int64_t i = 0; i < b * t; i++) {
                tok[i] = (int32_t)(dp_splitmix64(&st) % (uint64_t)V);
                keys[i] = dp_splitmix64(&st);
            }
            dp_llama_next_targets(tgt, tok, b, t);
            for (int64_t r = 0; r < b * t; r++) { /* a peaked teacher: row r's first entry holds most of the mass */
                double s = 0;
                for (int64_t j = 0; j < K; j++) {
                    tidx[r * K + j] = (int32_t)((r * 7 + j * 13) % V);
                    tval[r * K + j] = j ? (float)(1.0 - 0.1 * j) : 12.0f;
                    s += exp(tval[r * K + j] / 2.0);
                }
                tlse[r] = (float)log(s + 1.0); /* plus the mass outside the kept set */
            }
            dp_micro x = {.tokens = tok,
                          .targets = tgt,
                          .keys = full ? NULL : keys,
                          .B = b,
                          .T = t,
                          .tidx = tidx,
                          .tval = tval,
                          .tlse = tlse,
                          .alpha = 0.5,
                          .temp = 2.0,
                          .gscale = 1.0 / 40,
                          .backward = 1};
            if (dp_engine_micro(&ec, &map, &x, &ce[0], &kd[0], &err) ||
                dp_engine_micro(&eg, &map, &x, &ce[1], &kd[1], &err))
                dp_fatal("%s", err.msg);
        }
        dp_engine_grad_flush(&ec), dp_engine_grad_flush(&eg);
        dp_adamw_update(pc, ec.grad, mc, vc, n, 1e-3, 0.9, 0.999, 1e-8, 0.0, step);
        dp_adamw_update(pg, eg.grad, mgm, vg, n, 1e-3, 0.9, 0.999, 1e-8, 0.0, step);
        dp_engine_params_changed(&ec), dp_engine_params_changed(&eg);
        double rl = fmax(fabs(ce[1] - ce[0]) / fabs(ce[0]), fabs(kd[1] - kd[0]) / fabs(kd[0]));
        double mx = 0, ref = 0;
        for (int64_t i = 0; i < n; i++) {
            mx = fmax(mx, fabs((double)pg[i] - pc[i]));
            ref = fmax(ref, fabs((double)pc[i]));
        }
        worst_loss = fmax(worst_loss, rl);
        worst_w = fmax(worst_w, mx / ref);
        if (!(rl <= 3e-3) || !(mx / ref <= 5e-2) || !isfinite(ce[1] + kd[1])) {
            printf("%-12s %s step %d: losses rel %.2e, trainable values %.2e  FAILED\n", name, full ? "full" : "LoRA",
                   step, rl, mx / ref);
            g_fail = 1;
        }
    }
    printf("%-12s %s %d engine steps: losses within %.2e (tol 3e-3), trainable values within %.2e (tol 5e-2)\n", name,
           full ? "full" : "LoRA", steps, worst_loss, worst_w);
    dp_engine_close(&ec), dp_engine_close(&eg);
    free(mc), free(vc), free(mgm), free(vg), free(tok), free(tgt), free(tidx), free(tval), free(tlse), free(keys);
    if (!full) dp_lora_free(&lc), dp_lora_free(&lg);
    dp_llama_free(&m), dp_llama_free(&mg);
}

int main(void) {
    dp_err err;
    dp_err_clear(&err);
    dp_gpu_test_require();
    dp_cuda_set_device(0);
    const int64_t drop1[] = {1};
    run("llama_gqa", NULL, 0, -1, -1);
    run("llama_gqa", drop1, 1, -1, -1);
    run("llama_gqa", NULL, 0, 0, 2); /* sub-layers skipped through the layer map */
    run("llama_tied", NULL, 0, -1, -1);
    run("llama_linear", NULL, 0, -1, -1);
    train_case("llama_gqa", 0, 0.0);
    train_case("llama_gqa", 1, 0.0);
    train_case("llama_tied", 1, 0.1);
    train_case("llama_linear", 0, 0.1);
    full_case("llama_gqa");
    full_case("llama_tied");
    gen_case("llama_gqa");
    gen_case("llama_tied");
    engine_steps("llama_gqa", 0, 5);
    engine_steps("llama_tied", 1, 3);
    printf(g_fail ? "test_cuda_model: FAILED\n" : "test_cuda_model: GPU engine matches the CPU engine\n");
    return g_fail;
}
