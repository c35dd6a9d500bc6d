/* Labelled allocation accounting. Each block carries a small header with
 * its size and label slot so that dp_free can update the per-label totals
 * and an out-of-memory report can say who holds what on this rank. */
#include "depthprune/core.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define DP_MAX_LABELS 128

typedef struct {
    const char *label; /* interned copy */
    size_t cur_bytes, peak_bytes;
} label_slot;

typedef struct {
    size_t n_bytes;
    int slot;
    int pad_; /* keeps the user pointer 16-byte aligned */
} block_header;

static label_slot g_slots[DP_MAX_LABELS];
static int g_n_slots = 0;
static size_t g_cur = 0, g_peak = 0;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

_Static_assert(sizeof(block_header) == 16, "header keeps 16-byte alignment");

static int slot_for(const char *label) {
    if (!label) label = "unlabelled";
    for (int i = 0; i < g_n_slots; i++)
        if (strcmp(g_slots[i].label, label) == 0) return i;
    if (g_n_slots == DP_MAX_LABELS) return DP_MAX_LABELS - 1; /* shares the last slot */
    char *copy = strdup(label);
    if (!copy) return DP_MAX_LABELS - 1;
    g_slots[g_n_slots].label = copy;
    return g_n_slots++;
}

static void account(int slot, long long delta) {
    label_slot *s = &g_slots[slot];
    s->cur_bytes = (size_t)((long long)s->cur_bytes + delta);
    if (s->cur_bytes > s->peak_bytes) s->peak_bytes = s->cur_bytes;
    g_cur = (size_t)((long long)g_cur + delta);
    if (g_cur > g_peak) g_peak = g_cur;
}

static _Noreturn void oom(size_t n_bytes, const char *label) {
    dp_log_error("out of memory allocating %zu bytes for '%s'; held on this rank:", n_bytes,
                 label ? label : "unlabelled");
    dp_alloc_report(stderr);
    dp_fatal("out of memory (%zu bytes for %s)", n_bytes, label ? label : "unlabelled");
}

void *dp_malloc(size_t n_bytes, const char *label) {
    if (n_bytes > SIZE_MAX - sizeof(block_header)) oom(n_bytes, label);
    block_header *h = malloc(sizeof *h + (n_bytes ? n_bytes : 1));
    if (!h) oom(n_bytes, label);
    pthread_mutex_lock(&g_lock);
    h->n_bytes = n_bytes;
    h->slot = slot_for(label);
    account(h->slot, (long long)n_bytes);
    pthread_mutex_unlock(&g_lock);
    return h + 1;
}

void *dp_calloc(size_t n_elems, size_t elem_bytes, const char *label) {
    if (elem_bytes && n_elems > SIZE_MAX / elem_bytes) oom(SIZE_MAX, label);
    void *p = dp_malloc(n_elems * elem_bytes, label);
    memset(p, 0, n_elems * elem_bytes);
    return p;
}

void *dp_realloc(void *ptr, size_t n_bytes, const char *label) {
    if (!ptr) return dp_malloc(n_bytes, label);
    block_header *h = (block_header *)ptr - 1;
    size_t old = h->n_bytes;
    int slot = h->slot;
    block_header *nh = realloc(h, sizeof *nh + (n_bytes ? n_bytes : 1));
    if (!nh) oom(n_bytes, label);
    pthread_mutex_lock(&g_lock);
    nh->n_bytes = n_bytes;
    account(slot, (long long)n_bytes - (long long)old);
    pthread_mutex_unlock(&g_lock);
    return nh + 1;
}

void dp_free(void *ptr) {
    if (!ptr) return;
    block_header *h = (block_header *)ptr - 1;
    pthread_mutex_lock(&g_lock);
    account(h->slot, -(long long)h->n_bytes);
    pthread_mutex_unlock(&g_lock);
    free(h);
}

char *dp_strdup(const char *s, const char *label) {
    size_t n = strlen(s) + 1;
    char *p = dp_malloc(n, label);
    memcpy(p, s, n);
    return p;
}

char *dp_strndup(const char *s, size_t n, const char *label) {
    char *p = dp_malloc(n + 1, label);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

size_t dp_alloc_bytes(const char *label) {
    pthread_mutex_lock(&g_lock);
    size_t n = 0;
    if (!label) {
        n = g_cur;
    } else {
        for (int i = 0; i < g_n_slots; i++)
            if (strcmp(g_slots[i].label, label) == 0) n = g_slots[i].cur_bytes;
    }
    pthread_mutex_unlock(&g_lock);
    return n;
}

size_t dp_alloc_peak_bytes(void) {
    return g_peak;
}

void dp_alloc_report(FILE *out) {
    for (int i = 0; i < g_n_slots; i++) {
        if (g_slots[i].peak_bytes == 0) continue;
        fprintf(out, "[%d] alloc %-24s %14zu bytes now %14zu peak\n", dp_log_rank(), g_slots[i].label,
                g_slots[i].cur_bytes, g_slots[i].peak_bytes);
    }
    fprintf(out, "[%d] alloc %-24s %14zu bytes now %14zu peak\n", dp_log_rank(), "TOTAL", g_cur, g_peak);
}
