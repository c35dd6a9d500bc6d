/* UTF-8 helpers shared by the safetensors validator and the tokenizer. */
#ifndef DEPTHPRUNE_UTF8_H
#define DEPTHPRUNE_UTF8_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if s[0..n) is valid UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int dp_utf8_valid(const char *s, size_t n);
/* Decodes one code point at s (n bytes left). Invalid input yields U+FFFD
 * and consumes the maximal invalid subpart (the WHATWG / Unicode "best
 * practice" rule that TextDecoder and Python's decode(errors="replace")
 * follow). Returns the number of bytes consumed (>= 1 when n >= 1). */
size_t dp_utf8_decode(const char *s, size_t n, uint32_t *cp);
/* Encodes cp into out (>= 4 bytes); returns the byte count. */
size_t dp_utf8_encode(uint32_t cp, char *out);
/* Length in bytes of the UTF-8 sequence starting with lead byte c (1 for
 * continuation or invalid bytes). */
size_t dp_utf8_seq_len(unsigned char c);
/* Copies s replacing every invalid sequence with U+FFFD; returns a fresh
 * NUL-terminated buffer (dp_free) and its length in *out_n. */
char *dp_utf8_sanitize(const char *s, size_t n, size_t *out_n);

/* Python's str semantics, for the lm-evaluation-harness' task code. */
/* str.isspace() of one code point (Unicode whitespace, including NBSP,
 * U+2000..U+200A, U+3000 and the ASCII separators 0x1C..0x1F). */
int dp_py_isspace(uint32_t cp);
/* str.strip() / lstrip() / rstrip(): [*start, *end) of s[0..n) without the
 * leading (left) and/or trailing (right) whitespace. */
void dp_py_strip(const char *s, size_t n, int left, int right, size_t *start, size_t *end);
/* str.capitalize(): the first code point to its full title-case mapping,
 * the rest to their full lower-case mappings (capital sigma to its final
 * form after a cased letter when no cased letter follows: Python also skips
 * case-ignorable characters there, which this does not); tables generated
 * from Python's unicodedata (scripts/gen_unicase.py). Fresh buffer (dp_free),
 * its length in *out_n (may be NULL). Invalid UTF-8 becomes U+FFFD. */
char *dp_py_capitalize(const char *s, size_t n, size_t *out_n);

#ifdef __cplusplus
}
#endif
#endif
