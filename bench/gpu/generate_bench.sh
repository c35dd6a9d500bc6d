#!/usr/bin/env bash
# Generation on one GPU: `depthprune bench-generate --device cuda` vs HF
# transformers' generate() (bench/gpu/torch_generate_gpu.py), dense and
# depth-pruned 20% / 35%, same model files, prompts and protocol (forced
# length, greedy, median of runs). Targets: batch-1 decode step >= 80% of
# the bandwidth floor; >= 3x HF generate. Model: LLaMA-7B block shapes with
# LAYERS blocks, random bf16 weights; pruned = the middle blocks removed.
#   bash bench/gpu/generate_bench.sh [LAYERS=20] [BATCHES=1,8,32] [GEN=128] [PROMPT=32]
set -euo pipefail
cd "$(dirname "$0")/../.."
L=${1:-20} BATCHES=${2:-1,8,32} G=${3:-128} P=${4:-32}
DP=${DP_BIN:-build/depthprune} W=build/bench/gpu-generate
mkdir -p $W bench/results
D=$W/dense$L
[ -d $D ] || $DP synth --quiet --out $D --tokenizer models/tiny-brown --layers $L --hidden 4096 --heads 32 \
  --kv-heads 32 --intermediate 11008 --max-pos 4096 --seed 3 --dtype bf16
k20=$(( (L * 20 + 50) / 100 )); k35=$(( (L * 35 + 50) / 100 ))
mid() { local k=$1 s=$(( (L - $1) / 2 )); seq -s, $s $(( s + k - 1 )); }
[ -d $W/pruned20 ] || $DP export --quiet --model $D --drop "$(mid $k20)" --out $W/pruned20
[ -d $W/pruned35 ] || $DP export --quiet --model $D --drop "$(mid $k35)" --out $W/pruned35
$DP bench-generate --device cuda --model $D,$W/pruned20,$W/pruned35 --batch $BATCHES --prompt-len $P --gen-len $G \
  --warmup 1 --runs 3 --out $W/depthprune.json
for m in $D $W/pruned20 $W/pruned35; do python3 bench/gpu/torch_generate_gpu.py $m $BATCHES $P $G 1 3; done >$W/hf.jsonl
python3 - $W "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" <<'PY'
import json, os, sys, datetime
w, gpu = sys.argv[1], sys.argv[2]
d = json.load(open(os.path.join(w, "depthprune.json")))
hf = {(x["model"], x["batch"], x["gen_len"]): x for x in map(json.loads, open(os.path.join(w, "hf.jsonl")))}
rows = []
for x in d["results"]:
    name = os.path.basename(x["model"].rstrip("/"))
    p = hf.get((name, x["batch"], x["gen_len"]))
    rows.append({"model": name, "blocks": x["blocks"], "batch": x["batch"], "gen_len": x["gen_len"],
                 "latency_s": round(x["latency_s"], 4), "tokens_per_s": round(x["tokens_per_s"], 1),
                 "step_vs_floor": round(x["floor_fraction"], 3), "floor_kind": x["floor_kind"],
                 "hf_latency_s": p and round(p["latency_s"], 4), "ratio_vs_hf": p and round(p["latency_s"] / x["latency_s"], 2),
                 "speedup_vs_dense": x.get("speedup_vs_first")})
res = {"date": datetime.date.today().isoformat(), "device": gpu, "bandwidth_GBps": d["bandwidth_GBps"],
       "gemm_GFLOPs": d.get("gemm_GFLOPs"), "rows": rows}
print(json.dumps(res, indent=1))
out = "bench/results/%s-%s-generate.json" % (res["date"], gpu.replace(" ", "_"))
json.dump(res, open(out, "w"), indent=1)
print("written", out)
PY
