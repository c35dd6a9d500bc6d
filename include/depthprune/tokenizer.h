/* Tokenizer read from a Hugging Face tokenizer.json (+ tokenizer_config.json):
 * BPE with merges ranked by index (heap-based, lowest rank first, ties
 * leftmost), SentencePiece-style models (Llama-1/2, Mistral: Prepend/Replace
 * normalizer or Metaspace, byte fallback to <0xHH>, unk fusing) and
 * byte-level models (Llama-3: Split regex pre-tokenizer through PCRE2,
 * ByteLevel byte-to-char map, ignore_merges). Added/special tokens are
 * matched in the raw text first; BOS/EOS come from the post-processor
 * template. Ids equal those of HF tokenizers (tested against tokenizers.js
 * over the Brown corpus). */
#ifndef DEPTHPRUNE_TOKENIZER_H
#define DEPTHPRUNE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "depthprune/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dp_tokenizer dp_tokenizer;

/* Loads DIR/tokenizer.json and, if present, DIR/tokenizer_config.json. */
/* Largest token id accepted (real vocabularies are below 2^18; the bound
 * keeps a malformed file from sizing the id tables). */
#define DP_TOKENIZER_MAX_ID ((1 << 24) - 1)
int dp_tokenizer_load(const char *dir, dp_tokenizer **out, dp_err *err);
/* From in-memory JSON texts (config may be NULL). */
int dp_tokenizer_from_json(const char *json, size_t json_len, const char *config_json, size_t config_len,
                           const char *label, dp_tokenizer **out, dp_err *err);
void dp_tokenizer_free(dp_tokenizer *t);

/* One past the largest token id (vocab and added tokens). */
int64_t dp_tokenizer_vocab_size(const dp_tokenizer *t);
int32_t dp_tokenizer_bos_id(const dp_tokenizer *t); /* -1 if none */
int32_t dp_tokenizer_eos_id(const dp_tokenizer *t); /* -1 if none */
/* 1 if encoding with add_special adds a BOS in front. */
int dp_tokenizer_adds_bos(const dp_tokenizer *t);

/* Encodes UTF-8 text (invalid sequences become U+FFFD first). With
 * add_special, the post-processor's template tokens are added. *ids is a
 * fresh array (dp_free). */
int dp_tokenizer_encode(const dp_tokenizer *t, const char *text, size_t n_bytes, int add_special, int32_t **ids,
                        int64_t *n_ids, dp_err *err);
/* Decodes ids to a fresh NUL-terminated UTF-8 string (dp_free); its length
 * in bytes goes to *n_out (if not NULL), since the text may contain NUL. */
char *dp_tokenizer_decode(const dp_tokenizer *t, const int32_t *ids, int64_t n_ids, int skip_special, size_t *n_out);
/* Token string of id (NULL if out of range). */
const char *dp_tokenizer_token(const dp_tokenizer *t, int32_t id);

#ifdef __cplusplus
}
#endif
#endif
