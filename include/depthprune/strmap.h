/* A string -> int64 hash map (open addressing, FNV-1a) with keys given as
 * (pointer, length), so substrings can be looked up without copying. Keys
 * are copied into the map. Used for tokenizer vocabularies and duplicate
 * detection in file headers. */
#ifndef DEPTHPRUNE_STRMAP_H
#define DEPTHPRUNE_STRMAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dp_strmap {
    size_t cap; /* power of two */
    size_t count;
    uint32_t *hashes;
    const char **keys;
    uint32_t *lens;
    int64_t *values;
    char **chunks; /* key storage */
    size_t n_chunks, chunk_used, chunk_cap;
} dp_strmap;

void dp_strmap_init(dp_strmap *m, size_t expected);
void dp_strmap_free(dp_strmap *m);
/* Inserts; returns 1 if inserted, 0 if the key existed (value unchanged). */
int dp_strmap_put(dp_strmap *m, const char *key, size_t len, int64_t value);
/* Returns 1 and sets *value if found. */
int dp_strmap_get(const dp_strmap *m, const char *key, size_t len, int64_t *value);

/* A u64 -> (i32, i32) map for BPE merges: key = (left id << 32 | right id). */
typedef struct dp_pairmap {
    size_t cap, count;
    uint64_t *keys; /* UINT64_MAX: empty */
    int32_t *rank, *merged;
} dp_pairmap;

void dp_pairmap_init(dp_pairmap *m, size_t expected);
void dp_pairmap_free(dp_pairmap *m);
/* Returns 1 if inserted, 0 if present (first insertion wins). */
int dp_pairmap_put(dp_pairmap *m, uint64_t key, int32_t rank, int32_t merged);
int dp_pairmap_get(const dp_pairmap *m, uint64_t key, int32_t *rank, int32_t *merged);

#ifdef __cplusplus
}
#endif
#endif
