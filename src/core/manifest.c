/* Content hashes and file manifests: a manifest records a file's size and
 * one hash per block, is written next to the file after the file is
 * complete, and is checked before the file is parsed, so a truncated or
 * bit-flipped checkpoint is never read. Blocks are independent so ranks
 * can hash and verify them in parallel. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "depthprune/core.h"

uint64_t dp_hash_bytes(const void *p, size_t n, uint64_t seed) {
    /* 8 bytes per step, murmur-style mixing; not cryptographic */
    const unsigned char *b = p;
    uint64_t h = seed ^ (n * 0x9E3779B97F4A7C15ull);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t k;
        memcpy(&k, b + i, 8);
        k *= 0x87C37B91114253D5ull;
        k = (k << 31) | (k >> 33);
        h ^= k * 0x4CF5AD432745937Full;
        h = ((h << 27) | (h >> 37)) * 5 + 0x52DCE729;
    }
    uint64_t k = 0;
    for (size_t j = 0; i + j < n; j++) k |= (uint64_t)b[i + j] << (8 * j);
    h ^= k * 0x87C37B91114253D5ull;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    return h;
}

int64_t dp_manifest_n_blocks(int64_t bytes, int64_t block_bytes) {
    if (bytes <= 0 || block_bytes <= 0) return bytes == 0 ? 0 : -1;
    return bytes / block_bytes + (bytes % block_bytes != 0);
}

int dp_file_block_hash(const char *path, int64_t bytes, int64_t block_bytes, int64_t i, uint64_t *h, dp_err *err) {
    int64_t off = i * block_bytes, len = bytes - off < block_bytes ? bytes - off : block_bytes;
    if (i < 0 || len <= 0) return dp_err_set(err, DP_E_RANGE, "%s: block %" PRId64 " out of range", path, i);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return dp_err_set(err, DP_E_IO, "%s: cannot open: %s", path, strerror(errno));
    char *buf = dp_malloc((size_t)len, "manifest");
    int64_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, buf + got, (size_t)(len - got), (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += r;
        dp_heartbeat();
    }
    close(fd);
    int rc = DP_OK;
    if (got != len)
        rc = dp_err_set(err, DP_E_IO, "%s: short read in block %" PRId64 " (%" PRId64 " of %" PRId64 " bytes)", path, i,
                        got, len);
    else
        *h = dp_hash_bytes(buf, (size_t)len, (uint64_t)i);
    dp_free(buf);
    return rc;
}

char *dp_manifest_json(const dp_manifest *m) {
    dp_buf b = {0};
    char line[128];
    dp_buf_puts(&b, "{\n  \"format\": \"depthprune-manifest\",\n  \"version\": 1,\n  \"file\": ");
    cJSON *name = cJSON_CreateString(m->file);
    char *q = cJSON_PrintUnformatted(name);
    dp_buf_puts(&b, q);
    cJSON_free(q);
    cJSON_Delete(name);
    snprintf(line, sizeof line,
             ",\n  \"bytes\": %" PRId64 ",\n  \"block_bytes\": %" PRId64 ",\n  \"iteration\": %" PRId64
             ",\n  \"hash\": \"dp64\",\n  \"blocks\": [",
             m->bytes, m->block_bytes, m->iteration);
    dp_buf_puts(&b, line);
    for (int64_t i = 0; i < m->n_blocks; i++) {
        snprintf(line, sizeof line, "%s\"%016" PRIx64 "\"", i ? ", " : "", m->blocks[i]);
        dp_buf_puts(&b, line);
    }
    dp_buf_puts(&b, "]\n}\n");
    return b.p;
}

void dp_manifest_free(dp_manifest *m) {
    dp_free(m->blocks);
    m->blocks = NULL;
}

/* an exact non-negative integer (JSON numbers are doubles: <= 2^53) */
static int get_count(const cJSON *o, const char *key, int64_t lo, int64_t *out, dp_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return dp_err_set(err, DP_E_FORMAT, "manifest: \"%s\" must be a number", key);
    double d = v->valuedouble;
    if (!(d >= (double)lo && d <= 9007199254740992.0) || d != (double)(int64_t)d)
        return dp_err_set(err, DP_E_FORMAT, "manifest: \"%s\" must be an integer >= %" PRId64, key, lo);
    *out = (int64_t)d;
    return DP_OK;
}

int dp_manifest_parse(const char *json, size_t n, dp_manifest *m, dp_err *err) {
    memset(m, 0, sizeof *m);
    cJSON *root = cJSON_ParseWithLength(json, n);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dp_err_set(err, DP_E_FORMAT, "manifest: not a JSON object");
    }
    int rc = DP_OK;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *file = cJSON_GetObjectItemCaseSensitive(root, "file");
    const cJSON *hash = cJSON_GetObjectItemCaseSensitive(root, "hash");
    const cJSON *blocks = cJSON_GetObjectItemCaseSensitive(root, "blocks");
    int64_t version = 0;
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "depthprune-manifest"))
        rc = dp_err_set(err, DP_E_FORMAT, "manifest: \"format\" must be \"depthprune-manifest\"");
    if (!rc) rc = get_count(root, "version", 0, &version, err);
    if (!rc && version != 1)
        rc = dp_err_set(err, DP_E_FORMAT, "manifest: version %" PRId64 " is not supported (1)", version);
    if (!rc && (!cJSON_IsString(file) || !file->valuestring[0] || strchr(file->valuestring, '/') ||
                strlen(file->valuestring) >= sizeof m->file))
        rc = dp_err_set(err, DP_E_FORMAT, "manifest: \"file\" must be a base name");
    if (!rc) snprintf(m->file, sizeof m->file, "%s", file->valuestring);
    if (!rc && (!cJSON_IsString(hash) || strcmp(hash->valuestring, "dp64")))
        rc = dp_err_set(err, DP_E_FORMAT, "manifest: \"hash\" must be \"dp64\"");
    if (!rc) rc = get_count(root, "bytes", 0, &m->bytes, err);
    if (!rc) rc = get_count(root, "block_bytes", 4096, &m->block_bytes, err);
    if (!rc) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, "iteration");
        if (cJSON_IsNumber(it) && it->valuedouble == -1)
            m->iteration = -1;
        else
            rc = get_count(root, "iteration", 0, &m->iteration, err);
    }
    if (!rc) {
        m->n_blocks = dp_manifest_n_blocks(m->bytes, m->block_bytes);
        if (m->n_blocks < 0 || m->n_blocks > DP_MANIFEST_MAX_BLOCKS)
            rc = dp_err_set(err, DP_E_FORMAT, "manifest: %" PRId64 " bytes in blocks of %" PRId64 " is out of range",
                            m->bytes, m->block_bytes);
    }
    if (!rc && (!cJSON_IsArray(blocks) || cJSON_GetArraySize(blocks) != m->n_blocks))
        rc = dp_err_set(err, DP_E_FORMAT, "manifest: \"blocks\" must list %" PRId64 " hashes", m->n_blocks);
    if (!rc) {
        m->blocks = dp_calloc((size_t)(m->n_blocks ? m->n_blocks : 1), sizeof(uint64_t), "manifest");
        int64_t i = 0;
        for (const cJSON *b = blocks->child; b && !rc; b = b->next, i++) {
            const char *s = cJSON_IsString(b) ? b->valuestring : NULL;
            int ok = s && strlen(s) == 16;
            uint64_t h = 0;
            for (int k = 0; ok && k < 16; k++) {
                char c = s[k];
                int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
                if (d < 0) ok = 0;
                h = h << 4 | (uint64_t)(d & 15);
            }
            if (!ok)
                rc = dp_err_set(err, DP_E_FORMAT, "manifest: block %" PRId64 ": not 16 lowercase hex digits", i);
            else
                m->blocks[i] = h;
        }
    }
    cJSON_Delete(root);
    if (rc) dp_manifest_free(m);
    return rc;
}
