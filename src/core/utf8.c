/* UTF-8 validation, decoding with replacement, and encoding. */
#include "depthprune/utf8.h"

#include <string.h>

#include "depthprune/core.h"

size_t dp_utf8_seq_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) return 2;
    if (c >= 0xe0 && c <= 0xef) return 3;
    if (c >= 0xf0 && c <= 0xf4) return 4;
    return 1;
}

size_t dp_utf8_decode(const char *str, size_t n, uint32_t *cp) {
    const unsigned char *s = (const unsigned char *)str;
    if (n == 0) {
        *cp = 0xfffd;
        return 0;
    }
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t need;
    uint32_t v;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
        v = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        v = c & 0x0f;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        v = c & 0x07;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        *cp = 0xfffd;
        return 1;
    }
    size_t i = 1;
    for (; i <= need; i++) {
        if (i >= n) break;
        unsigned char b = s[i];
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xbf;
        if (b < l || b > h) break;
        v = (v << 6) | (b & 0x3f);
    }
    if (i <= need) {
        *cp = 0xfffd;
        return i; /* the maximal subpart: lead plus valid continuations */
    }
    *cp = v;
    return need + 1;
}

int dp_utf8_valid(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = dp_utf8_decode(s + i, n - i, &cp);
        if (cp == 0xfffd) {
            /* a literal U+FFFD is EF BF BD: valid */
            if (!(k == 3 && (unsigned char)s[i] == 0xef && (unsigned char)s[i + 1] == 0xbf &&
                  (unsigned char)s[i + 2] == 0xbd))
                return 0;
        }
        i += k;
    }
    return 1;
}

size_t dp_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xc0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

char *dp_utf8_sanitize(const char *s, size_t n, size_t *out_n) {
    /* each invalid byte becomes at most 3 bytes */
    char *out = dp_malloc(3 * n + 1, "utf8");
    size_t o = 0, i = 0;
    while (i < n) {
        if ((unsigned char)s[i] < 0x80) {
            out[o++] = s[i++];
            continue;
        }
        uint32_t cp;
        size_t k = dp_utf8_decode(s + i, n - i, &cp);
        if (cp == 0xfffd) {
            o += dp_utf8_encode(0xfffd, out + o);
        } else {
            for (size_t j = 0; j < k; j++) out[o++] = s[i + j];
        }
        i += k;
    }
    out[o] = '\0';
    *out_n = o;
    return out;
}

/* ---- Python str semantics (what lm-evaluation-harness' task code does) ---- */

typedef struct {
    uint32_t cp;
    const char *to; /* UTF-8 */
} dp_unicase;
#include "unicase.inc"

static const char *unicase_find(const dp_unicase *t, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && t[lo].cp == cp ? t[lo].to : NULL;
}

int dp_py_isspace(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f ||
           cp == 0x3000;
}

void dp_py_strip(const char *s, size_t n, int left, int right, size_t *start, size_t *end) {
    size_t a = 0, b = n;
    while (left && a < b) {
        uint32_t cp;
        size_t k = dp_utf8_decode(s + a, b - a, &cp);
        if (!dp_py_isspace(cp)) break;
        a += k;
    }
    while (right && b > a) {
        size_t p = b - 1; /* start of the last code point */
        while (p > a && ((unsigned char)s[p] & 0xc0) == 0x80 && b - p < 4) p--;
        uint32_t cp;
        if (dp_utf8_decode(s + p, b - p, &cp) != b - p || !dp_py_isspace(cp)) break;
        b = p;
    }
    *start = a;
    *end = b;
}

static int is_cased(uint32_t cp) {
    return unicase_find(k_lower, sizeof k_lower / sizeof *k_lower, cp) ||
           unicase_find(k_title, sizeof k_title / sizeof *k_title, cp);
}

char *dp_py_capitalize(const char *s, size_t n, size_t *out_n) {
    char *out = dp_malloc(3 * n + 4, "capitalize"); /* a full mapping grows a code point to at most 3 */
    size_t o = 0, i = 0;
    uint32_t prev = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = dp_utf8_decode(s + i, n - i, &cp);
        const char *m = i == 0 ? unicase_find(k_title, sizeof k_title / sizeof *k_title, cp)
                               : unicase_find(k_lower, sizeof k_lower / sizeof *k_lower, cp);
        if (i > 0 && cp == 0x3a3) { /* capital sigma: final form after a cased letter, unless one follows */
            uint32_t next = 0;
            if (i + k < n) dp_utf8_decode(s + i + k, n - i - k, &next);
            m = is_cased(prev) && !(i + k < n && is_cased(next)) ? "\xcf\x82" : "\xcf\x83";
        }
        if (m) {
            size_t ml = strlen(m);
            memcpy(out + o, m, ml);
            o += ml;
        } else {
            o += dp_utf8_encode(cp, out + o);
        }
        prev = cp;
        i += k;
    }
    out[o] = 0;
    if (out_n) *out_n = o;
    return out;
}
