#!/usr/bin/env bash
# LoRA + KD training throughput on one GPU: `depthprune retrain --device
# cuda` (teacher forward in every step, --kd-topk 64) vs HF transformers +
# PEFT doing the same step (bench/gpu/torch_train_gpu.py), same model,
# micro-batch B x 256 tokens, r 8 on the seven projections. Reports
# tokens/s, the ratio (target >= 2x) and MFU against the measured bf16 GEMM
# ceiling (target >= 40%). Model FLOPs per token: student forward 2P +
# backward to activations 2P (frozen base weights get no weight gradient)
# + teacher forward 2P + attention; block recomputation is not counted.
# Model: LLaMA-7B block shapes with LAYERS blocks, random bf16 weights.
#   bash bench/gpu/train_bench.sh [LAYERS=8] [B=4] [STEPS=12]
set -euo pipefail
cd "$(dirname "$0")/../.."
L=${1:-8} B=${2:-4} S=${3:-12} T=256
DP=${DP_BIN:-build/depthprune} W=build/bench/gpu-train
mkdir -p $W bench/results
CEIL=$(${DP_CEILINGS:-build/bench/cuda_ceilings})
M=$W/llama7b-shapes-$L
[ -d $M ] || $DP synth --quiet --out $M --tokenizer models/tiny-brown --layers $L --hidden 4096 --heads 32 \
  --kv-heads 32 --intermediate 11008 --max-pos 4096 --seed 1 --dtype bf16
python3 - data/brown-cloze.jsonl $W/text.txt <<'PY'
import json, sys
with open(sys.argv[2], "w") as f:
    for _ in range(4):
        for l in open(sys.argv[1]):
            r = json.loads(l)
            f.write(r["context"] + " " + r["choices"][r["label"]] + "\n")
PY
R=$W/run; rm -rf $R $W/out
$DP retrain --device cuda --student $M --teacher $M --kd-topk 64 --kd-alpha 0.5 --kd-temp 2 --data $W/text.txt \
  --data-format text --cutoff $T --micro-batch $B --global-batch $B --epochs 1 --max-steps $S --val-size 0 \
  --run $R --out $W/out
PEER=$(python3 bench/gpu/torch_train_gpu.py $M $M $B $T $S)
echo "peer: $PEER"
python3 - "$CEIL" "$PEER" $R/train_log.jsonl $M/config.json $B $T "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" <<'PY'
import json, sys, datetime
ceil, peer = json.loads(sys.argv[1]), json.loads(sys.argv[2])
log = [json.loads(l) for l in open(sys.argv[3]) if '"loss"' in l]
cfg, B, T, gpu = json.load(open(sys.argv[4])), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
steps = log[2:] if len(log) > 2 else log
dt = steps[-1]["time_s"] - (log[1]["time_s"] if len(log) > 2 else 0)
tok_s = sum(x["tokens"] for x in steps) / dt
C, F, V, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
P = L * (4 * C * C + 3 * C * F) + C * V  # matmul weights (head included, embedding lookup excluded)
attn = L * 2 * 2 * T * C                  # QK^T and PV per token, causal average x2 for fwd+bwd terms
flops_tok = 2 * P + 2 * P + 2 * P + 3 * attn
peak = max(v for k, v in ceil.items() if k.startswith("gemm_bf16_tflops")) * 1e12
res = {"date": datetime.date.today().isoformat(), "device": gpu, "model": "LLaMA-7B block shapes, %d blocks" % L,
       "B": B, "T": T, "depthprune_tok_s": round(tok_s, 1), "peer": peer,
       "ratio_vs_peer": round(tok_s / peer["tok_s"], 2), "model_flops_per_token": flops_tok,
       "mfu_vs_measured_gemm_peak": round(tok_s * flops_tok / peak, 3), "ceilings": ceil}
print(json.dumps(res, indent=1))
out = "bench/results/%s-%s-train.json" % (res["date"], gpu.replace(" ", "_"))
json.dump(res, open(out, "w"), indent=1)
print("written", out)
PY
