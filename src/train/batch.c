/* Micro-batches of training examples (see internal.h). */
#include <string.h>

#include "internal.h"

int64_t dp_example_len(const dp_train_data *d, int64_t e) {
    return d->off[e + 1] - d->off[e];
}

int64_t dp_counted_tokens(const dp_train_data *d, const int64_t *ex, int64_t n) {
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) {
        const int32_t *lab = d->labels + d->off[ex[i]];
        for (int64_t t = 1; t < dp_example_len(d, ex[i]); t++) c += lab[t] >= 0;
    }
    return c;
}

void dp_build_batch(batch *b, const dp_train_data *d, const int64_t *ex, int64_t n, int64_t tmax, uint64_t seed,
                    int64_t it) {
    int64_t T = 1;
    for (int64_t i = 0; i < n; i++)
        if (dp_example_len(d, ex[i]) > T) T = dp_example_len(d, ex[i]);
    T = (T + 7) / 8 * 8;
    if (T > tmax) T = tmax;
    b->T = T;
    b->n_real = 0;
    for (int64_t i = 0; i < b->B; i++) {
        int64_t len = i < n ? dp_example_len(d, ex[i]) : 0;
        const int32_t *tok = i < n ? d->tokens + d->off[ex[i]] : NULL;
        const int32_t *lab = i < n ? d->labels + d->off[ex[i]] : NULL;
        b->n_real += len;
        for (int64_t t = 0; t < T; t++) {
            int64_t r = i * T + t;
            b->tokens[r] = t < len ? tok[t] : 0;
            b->targets[r] = t + 1 < len ? lab[t + 1] : -1;
            uint64_t st =
                seed ^ ((uint64_t)it * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)(i < n ? ex[i] : 0) << 20) ^ (uint64_t)t;
            b->keys[r] = dp_splitmix64(&st);
        }
    }
}
