/* Open-addressing hash maps for strings and id pairs. */
#include "depthprune/strmap.h"

#include <string.h>

#include "depthprune/core.h"

static uint32_t fnv1a(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

void dp_strmap_init(dp_strmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expected * 2 + 1);
    m->hashes = dp_calloc(m->cap, sizeof *m->hashes, "strmap");
    m->keys = dp_calloc(m->cap, sizeof *m->keys, "strmap");
    m->lens = dp_calloc(m->cap, sizeof *m->lens, "strmap");
    m->values = dp_calloc(m->cap, sizeof *m->values, "strmap");
}

void dp_strmap_free(dp_strmap *m) {
    for (size_t i = 0; i < m->n_chunks; i++) dp_free(m->chunks[i]);
    dp_free(m->chunks);
    dp_free(m->hashes);
    dp_free(m->keys);
    dp_free(m->lens);
    dp_free(m->values);
    memset(m, 0, sizeof *m);
}

static const char *store_key(dp_strmap *m, const char *key, size_t len) {
    if (m->n_chunks == 0 || m->chunk_used + len + 1 > m->chunk_cap) {
        size_t cap = len + 1 > 65536 ? len + 1 : 65536;
        m->chunks = dp_realloc(m->chunks, sizeof(char *) * (m->n_chunks + 1), "strmap");
        m->chunks[m->n_chunks++] = dp_malloc(cap, "strmap");
        m->chunk_cap = cap;
        m->chunk_used = 0;
    }
    char *p = m->chunks[m->n_chunks - 1] + m->chunk_used;
    memcpy(p, key, len);
    p[len] = '\0';
    m->chunk_used += len + 1;
    return p;
}

static void grow(dp_strmap *m) {
    dp_strmap old = *m;
    m->cap *= 2;
    m->hashes = dp_calloc(m->cap, sizeof *m->hashes, "strmap");
    m->keys = dp_calloc(m->cap, sizeof *m->keys, "strmap");
    m->lens = dp_calloc(m->cap, sizeof *m->lens, "strmap");
    m->values = dp_calloc(m->cap, sizeof *m->values, "strmap");
    for (size_t i = 0; i < old.cap; i++) {
        if (!old.keys[i]) continue;
        size_t j = old.hashes[i] & (m->cap - 1);
        while (m->keys[j]) j = (j + 1) & (m->cap - 1);
        m->hashes[j] = old.hashes[i];
        m->keys[j] = old.keys[i];
        m->lens[j] = old.lens[i];
        m->values[j] = old.values[i];
    }
    dp_free(old.hashes);
    dp_free(old.keys);
    dp_free(old.lens);
    dp_free(old.values);
}

int dp_strmap_put(dp_strmap *m, const char *key, size_t len, int64_t value) {
    if ((m->count + 1) * 2 > m->cap) grow(m);
    uint32_t h = fnv1a(key, len);
    size_t j = h & (m->cap - 1);
    while (m->keys[j]) {
        if (m->hashes[j] == h && m->lens[j] == len && memcmp(m->keys[j], key, len) == 0) return 0;
        j = (j + 1) & (m->cap - 1);
    }
    m->hashes[j] = h;
    m->keys[j] = store_key(m, key, len);
    m->lens[j] = (uint32_t)len;
    m->values[j] = value;
    m->count++;
    return 1;
}

int dp_strmap_get(const dp_strmap *m, const char *key, size_t len, int64_t *value) {
    if (!m->cap) return 0;
    uint32_t h = fnv1a(key, len);
    size_t j = h & (m->cap - 1);
    while (m->keys[j]) {
        if (m->hashes[j] == h && m->lens[j] == len && memcmp(m->keys[j], key, len) == 0) {
            *value = m->values[j];
            return 1;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return 0;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

void dp_pairmap_init(dp_pairmap *m, size_t expected) {
    m->cap = pow2_at_least(expected * 2 + 1);
    m->count = 0;
    m->keys = dp_malloc(m->cap * sizeof *m->keys, "pairmap");
    memset(m->keys, 0xff, m->cap * sizeof *m->keys);
    m->rank = dp_malloc(m->cap * sizeof *m->rank, "pairmap");
    m->merged = dp_malloc(m->cap * sizeof *m->merged, "pairmap");
}

void dp_pairmap_free(dp_pairmap *m) {
    dp_free(m->keys);
    dp_free(m->rank);
    dp_free(m->merged);
    memset(m, 0, sizeof *m);
}

int dp_pairmap_put(dp_pairmap *m, uint64_t key, int32_t rank, int32_t merged) {
    if ((m->count + 1) * 2 > m->cap) {
        dp_pairmap old = *m;
        dp_pairmap_init(m, old.cap);
        for (size_t i = 0; i < old.cap; i++)
            if (old.keys[i] != UINT64_MAX) dp_pairmap_put(m, old.keys[i], old.rank[i], old.merged[i]);
        dp_pairmap_free(&old);
    }
    size_t j = mix64(key) & (m->cap - 1);
    while (m->keys[j] != UINT64_MAX) {
        if (m->keys[j] == key) return 0;
        j = (j + 1) & (m->cap - 1);
    }
    m->keys[j] = key;
    m->rank[j] = rank;
    m->merged[j] = merged;
    m->count++;
    return 1;
}

int dp_pairmap_get(const dp_pairmap *m, uint64_t key, int32_t *rank, int32_t *merged) {
    size_t j = mix64(key) & (m->cap - 1);
    while (m->keys[j] != UINT64_MAX) {
        if (m->keys[j] == key) {
            *rank = m->rank[j];
            *merged = m->merged[j];
            return 1;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return 0;
}
