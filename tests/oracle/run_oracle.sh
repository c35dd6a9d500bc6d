#!/usr/bin/env bash
# Tokenizer oracle test: depthprune's token ids must equal, token for token,
# those of HF's tokenizers for two real tokenizer.json files, over every
# Brown corpus sentence, every Brown document, and the hard cases; decoding
# must round-trip as theirs does. Two oracles: the Rust `tokenizers` library
# (Python binding, pinned in tests/requirements.txt, run with PYTHON) and
# tokenizers.js (npm, pinned by package-lock.json, installed into WORK).
# usage: run_oracle.sh DEPTHPRUNE SRC_DIR WORK_DIR PYTHON
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); WORK=$(realpath -m "$3"); PY=${4:?usage: run_oracle.sh DP SRC WORK PYTHON}
. "$SRC/../cli/lib.sh"
mkdir -p "$WORK"
if [ ! -d "$WORK/node_modules/@huggingface/tokenizers" ] || ! cmp -s "$SRC/package-lock.json" "$WORK/package-lock.json"; then
  cp "$SRC/package.json" "$SRC/package-lock.json" "$WORK/"
  (cd "$WORK" && npm ci --no-audit --no-fund --loglevel=error) || { echo "npm ci failed" >&2; exit 1; }
fi
cp "$SRC/gen_expected.mjs" "$WORK/"
OUT="$WORK/out"; mkdir -p "$OUT"
(cd "$WORK" && node gen_expected.mjs "$WORK/node_modules" "$OUT" "$SRC/hard_cases.jsonl") || { echo "oracle generation failed" >&2; exit 1; }
"$PY" "$SRC/rust_tokenizers.py" "$WORK/node_modules" "$OUT" || { echo "Rust tokenizers oracle failed" >&2; exit 1; }

for tk in llama2 llama3; do
  MODEL="$WORK/node_modules/@lenml/tokenizer-$tk/models"
  for set in lines docs hard; do
    got="$OUT/$tk.$set.got"
    t0=$(date +%s.%N)
    "$DP" tokenize --quiet --model "$MODEL" --jsonl < "$OUT/$set.jsonl" > "$got" || { fail "$tk/$set: depthprune exited non-zero"; continue; }
    t1=$(date +%s.%N)
    n=$(wc -l < "$OUT/$set.jsonl")
    for ref in "$OUT/$tk.$set.rs.ids:tokenizers (Rust)" "$OUT/$tk.$set.ids:tokenizers.js"; do
      file=${ref%%:*} who=${ref#*:}
      if cmp -s "$got" "$file"; then
        printf 'ok   %-7s %-5s %6d inputs identical to %s (%.2fs)\n' "$tk" "$set" "$n" "$who" "$(echo "$t1 - $t0" | bc)"
      else
        line=$(diff <(cat "$got") "$file" | head -1 | sed 's/[^0-9].*//')
        fail "$tk/$set vs $who: first difference at input $line: $(sed -n "${line}p" "$OUT/$set.jsonl" | cut -c1-200)"
        echo "  depthprune: $(sed -n "${line}p" "$got" | cut -c1-300)" >&2
        echo "  oracle:     $(sed -n "${line}p" "$file" | cut -c1-300)" >&2
      fi
    done
  done
  # decoding: ids (without special tokens) back to text, as the JS port decodes them
  "$DP" tokenize --quiet --model "$MODEL" --jsonl --no-bos < "$OUT/hard.jsonl" |
    "$DP" tokenize --quiet --model "$MODEL" --decode --jsonl > "$OUT/$tk.hard.decoded.got"
  # decode: transformers (pinned) is the oracle. tokenizers.js still applies
  # clean_up_tokenization_spaces to BPE tokenizers as transformers 4.x did
  # (" 's" -> "'s"); transformers 5 skips it, so the JS decode is a second
  # oracle only for tokenizers whose config does not ask for it (llama2).
  refs=("$OUT/$tk.hard.decoded.rs.jsonl:transformers")
  grep -q '"clean_up_tokenization_spaces": *true' "$MODEL/tokenizer_config.json" ||
    refs+=("$OUT/$tk.hard.decoded.jsonl:tokenizers.js")
  for ref in "${refs[@]}"; do
    file=${ref%%:*} who=${ref#*:}
    if cmp -s "$OUT/$tk.hard.decoded.got" "$file"; then echo "ok   $tk decode of the hard cases == $who"
    else fail "$tk decode differs from $who: $(diff "$OUT/$tk.hard.decoded.got" "$file" | head -4)"; fi
  done
  # invalid UTF-8 bytes are replaced by U+FFFD exactly as a JS/Python caller's decode does
  "$DP" tokenize --quiet --model "$MODEL" < "$OUT/invalid_utf8.bin" > "$OUT/$tk.invalid_utf8.got"
  for f in "$OUT/$tk.invalid_utf8.rs.ids" "$OUT/$tk.invalid_utf8.ids"; do
    cmp -s "$OUT/$tk.invalid_utf8.got" "$f" && echo "ok   $tk invalid-utf8 == $(basename "$f")" ||
      fail "$tk invalid UTF-8: got $(cat "$OUT/$tk.invalid_utf8.got") want $(cat "$f") ($(basename "$f"))"
  done
done
finish
