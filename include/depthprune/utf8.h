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

#ifdef __cplusplus
}
#endif
#endif
