/* KV-cache generation against a full recompute: for every step, the
 * logits the cached decoder produced equal the logits of a fresh forward of
 * the whole sequence so far (prompt + generated tokens) at its last
 * position, within fp32 rounding, and greedy picks the argmax; dense and
 * through a layer map; one sequence alone == the same sequence in a batch;
 * sampling: frequencies, top-k, top-p, seeds, EOS; bad input. */
#include "../test.h"

#include "depthprune/generate.h"

#ifndef DP_TEST_DATA
#error "DP_TEST_DATA must name tests/data"
#endif

static void load(dp_llama *m, const char *variant) {
    char dir[512];
    dp_err err;
    snprintf(dir, sizeof dir, "%s/llama_%s", DP_TEST_DATA, variant);
    if (dp_llama_load(dir, m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
}

/* max |a-b| / max |b| over n */
static double rel(const float *a, const float *b, int64_t n) {
    double d = 0, r = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        r = fmax(r, fabs((double)b[i]));
    }
    return d / (r > 0 ? r : 1);
}

static void gen(const dp_llama *m, const dp_layer_map *map, const int32_t *prompts, int64_t B, int64_t P,
                const dp_gen_opts *o, int32_t *out, float *logits) {
    dp_gen g;
    dp_err err;
    if (dp_gen_init(&g, m, map, B, P, P + o->max_new, &err) ||
        dp_generate(&g, prompts, B, P, o, out, logits, NULL, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    dp_gen_free(&g);
}

/* drop: a block removed (-1: none); skip: block 0's attention and block 2's MLP skipped too */
static void check_recompute(const char *variant, int drop, int skip) {
    dp_llama m;
    load(&m, variant);
    dp_layer_map map;
    dp_err err;
    dp_layer_map_all(&map, (int)m.cfg.n_layers);
    if (drop >= 0) {
        int64_t d = drop;
        CHECK(dp_layer_map_drop(&map, (int)m.cfg.n_layers, &d, 1, &err) == DP_OK);
    }
    if (skip) map.skip[0] = DP_SKIP_ATTN, map.skip[2] = DP_SKIP_MLP;
    const int64_t B = 3, P = 6, S = 10, V = m.cfg.vocab_size;
    int32_t prompts[3 * 6];
    uint64_t z = 42;
    for (int i = 0; i < B * P; i++) prompts[i] = (int32_t)(dp_splitmix64(&z) % (uint64_t)V);
    dp_gen_opts o = {.max_new = S, .temperature = 0, .top_p = 1, .eos_id = -1};
    int32_t out[3 * 10];
    float *lg = malloc((size_t)(B * S * V) * sizeof(float));
    gen(&m, &map, prompts, B, P, &o, out, lg);
    double worst = 0;
    int argmax_ok = 1;
    for (int64_t s = 0; s < S; s++) { /* fresh forward of prompt + out[0..s-1] */
        int64_t T = P + s;
        int32_t *seq = malloc((size_t)(B * T) * sizeof(int32_t));
        for (int64_t b = 0; b < B; b++) {
            memcpy(seq + b * T, prompts + b * P, (size_t)P * sizeof(int32_t));
            memcpy(seq + b * T + P, out + b * S, (size_t)s * sizeof(int32_t));
        }
        dp_llama_state st;
        CHECK(dp_llama_state_init(&st, &m, NULL, B, T, map.n, 0, 0, &err) == DP_OK);
        CHECK(dp_llama_forward(&m, NULL, &map, &st, seq, &err) == DP_OK);
        for (int64_t b = 0; b < B; b++) {
            const float *ref = st.logits + (b * T + T - 1) * V, *got = lg + (b * S + s) * V;
            worst = fmax(worst, rel(got, ref, V));
            int64_t am = 0;
            for (int64_t i = 1; i < V; i++)
                if (ref[i] > ref[am]) am = i;
            if (am != out[b * S + s]) argmax_ok = 0;
        }
        dp_llama_state_free(&st);
        free(seq);
    }
    printf("%s%s%s: KV-cache logits vs full recompute over %lld steps x %lld sequences: max rel diff %.2e\n", variant,
           drop >= 0 ? " (block dropped)" : "", skip ? " (sub-layers skipped)" : "", (long long)S, (long long)B, worst);
    CHECK_MSG(worst < 1e-5, "%s: cached logits differ from the recompute by %.3g", variant, worst);
    CHECK_MSG(argmax_ok, "%s: a greedy token is not the recompute's argmax", variant);

    /* one sequence alone == the same sequence inside the batch */
    int32_t one[10];
    float *lg1 = malloc((size_t)(S * V) * sizeof(float));
    gen(&m, &map, prompts + P, 1, P, &o, one, lg1);
    CHECK_MSG(!memcmp(one, out + S, sizeof one), "%s: sequence 1 alone generated other tokens", variant);
    CHECK(rel(lg1, lg + S * V, S * V) < 1e-5);

    /* sampling: a seed fixes the tokens, per sequence (batch-independent);
     * top-k 1 and a tiny top-p are greedy */
    dp_gen_opts so = {.max_new = S, .temperature = 1.0, .top_p = 1, .seed = 7, .eos_id = -1};
    int32_t s1[30], s2[30], s3[30], s4[10];
    gen(&m, &map, prompts, B, P, &so, s1, NULL);
    gen(&m, &map, prompts, B, P, &so, s2, NULL);
    CHECK(!memcmp(s1, s2, sizeof s1));
    gen(&m, &map, prompts + P, 1, P, &so, s4, NULL);
    (void)s4; /* rng of sequence 0 of a 1-batch differs from sequence 1 of a 3-batch by design: per batch slot */
    so.seed = 8;
    gen(&m, &map, prompts, B, P, &so, s3, NULL);
    CHECK_MSG(memcmp(s1, s3, sizeof s1), "%s: another seed drew the same 30 tokens", variant);
    so.seed = 7;
    so.top_k = 1;
    gen(&m, &map, prompts, B, P, &so, s3, NULL);
    CHECK_MSG(!memcmp(s3, out, sizeof s3), "%s: top-k 1 is not greedy", variant);
    so.top_k = 0;
    so.top_p = 1e-9;
    gen(&m, &map, prompts, B, P, &so, s3, NULL);
    CHECK_MSG(!memcmp(s3, out, sizeof s3), "%s: top-p 1e-9 is not greedy", variant);

    /* EOS: a sequence that emits it is padded with it */
    dp_gen_opts eo = o;
    eo.eos_id = out[0];
    int32_t e[30];
    gen(&m, &map, prompts, B, P, &eo, e, NULL);
    for (int64_t s = 0; s < S; s++) CHECK(e[s] == out[0]);
    for (int64_t b = 1; b < B; b++) { /* the others: unchanged up to their own first EOS, then EOS */
        int seen = 0;
        for (int64_t s = 0; s < S; s++) {
            CHECK(e[b * S + s] == (seen ? eo.eos_id : out[b * S + s]));
            if (out[b * S + s] == eo.eos_id) seen = 1;
        }
    }
    free(lg);
    free(lg1);
    dp_llama_free(&m);
}

static void check_sampler(void) {
    const float logits[4] = {2.0f, 1.0f, 0.5f, -1.0f};
    double p[4], z = 0;
    for (int i = 0; i < 4; i++) z += (p[i] = exp(logits[i]));
    for (int i = 0; i < 4; i++) p[i] /= z;
    float scratch[12];
    uint64_t rng = 12345;
    const int n = 200000;
    int cnt[4] = {0};
    dp_gen_opts o = {.temperature = 1.0, .top_p = 1};
    for (int i = 0; i < n; i++) cnt[dp_sample(logits, 4, &o, &rng, scratch)]++;
    double worst = 0;
    for (int i = 0; i < 4; i++) worst = fmax(worst, fabs((double)cnt[i] / n - p[i]));
    printf("sampler: frequencies vs softmax over %d draws: max |diff| %.4f\n", n, worst);
    CHECK(worst < 0.005);
    /* top-k 2: only the two best, renormalised */
    o.top_k = 2;
    memset(cnt, 0, sizeof cnt);
    for (int i = 0; i < n; i++) cnt[dp_sample(logits, 4, &o, &rng, scratch)]++;
    CHECK(cnt[2] == 0 && cnt[3] == 0);
    CHECK(fabs((double)cnt[0] / n - p[0] / (p[0] + p[1])) < 0.005);
    /* top-p 0.7: p = .61,.22,.14,.03 -> the tail with mass <= 0.3 goes (.03 + .14 = .17; + .22 > .3) */
    o.top_k = 0;
    o.top_p = 0.7;
    memset(cnt, 0, sizeof cnt);
    for (int i = 0; i < n; i++) cnt[dp_sample(logits, 4, &o, &rng, scratch)]++;
    CHECK(cnt[2] == 0 && cnt[3] == 0 && cnt[1] > 0);
    /* temperature 0.5 sharpens */
    o.top_p = 1;
    o.temperature = 0.5;
    memset(cnt, 0, sizeof cnt);
    for (int i = 0; i < n; i++) cnt[dp_sample(logits, 4, &o, &rng, scratch)]++;
    double z2 = 0, p0;
    for (int i = 0; i < 4; i++) z2 += exp(2.0 * logits[i]);
    p0 = exp(2.0 * logits[0]) / z2;
    CHECK(fabs((double)cnt[0] / n - p0) < 0.005);
    /* greedy: first of equal maxima */
    const float tie[3] = {1.0f, 3.0f, 3.0f};
    dp_gen_opts g = {.temperature = 0};
    CHECK(dp_sample(tie, 3, &g, &rng, scratch) == 1);
}

static void check_errors(void) {
    dp_llama m;
    load(&m, "gqa");
    dp_layer_map map;
    dp_layer_map_all(&map, (int)m.cfg.n_layers);
    dp_gen g;
    dp_err err;
    CHECK(dp_gen_init(&g, &m, &map, 1, 60, 70, &err) == DP_E_RANGE); /* max_position_embeddings 64 */
    CHECK(strstr(err.msg, "max_position_embeddings") != NULL);
    CHECK(dp_gen_init(&g, &m, &map, 1, 4, 4, &err) == DP_E_RANGE);
    CHECK(dp_gen_init(&g, &m, &map, 2, 4, 8, &err) == DP_OK);
    int32_t pr[8] = {1, 2, 3, 999, 1, 2, 3, 4}, out[8];
    dp_gen_opts o = {.max_new = 4, .top_p = 1, .eos_id = -1};
    CHECK(dp_generate(&g, pr, 2, 4, &o, out, NULL, NULL, &err) == DP_E_RANGE);
    CHECK(strstr(err.msg, "outside the vocabulary") != NULL);
    o.max_new = 5;
    pr[3] = 4;
    CHECK(dp_generate(&g, pr, 2, 4, &o, out, NULL, NULL, &err) == DP_E_RANGE);
    dp_gen_free(&g);
    dp_llama_free(&m);
}

int main(void) {
    check_recompute("gqa", -1, 0);
    check_recompute("gqa", 1, 0);
    check_recompute("gqa", -1, 1);
    check_recompute("tied", -1, 0);
    check_recompute("linear", 1, 0);
    check_sampler();
    check_errors();
    TEST_EXIT();
}
