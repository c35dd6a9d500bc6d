#!/usr/bin/env bash
# PPL block scoring on one GPU: `depthprune score --device cuda` vs
# (a) the FLOP floor with cached block inputs (calibration forward + the
# L(L-1)/2 block passes + L heads, at the measured bf16 GEMM ceiling;
# target: within 2x) and (b) the reference method in PyTorch on the same GPU
# (bench/gpu/torch_score_gpu.py: HF model without block j, every sample at
# batch 1; target: >= 20x). Model: LLaMA-7B block shapes (hidden 4096, 32
# heads, MLP 11008, vocab 32000, bf16) with LAYERS blocks, random weights.
# Needs a CUDA build (build/depthprune, build/bench/cuda_ceilings; or DP_BIN, DP_CEILINGS) and
# transformers on the GPU machine. Writes bench/results/DATE-DEVICE-score.json.
#   bash bench/gpu/score_bench.sh [LAYERS=8] [SAMPLES=10] [SEQ=128]
set -euo pipefail
cd "$(dirname "$0")/../.."
L=${1:-8} N=${2:-10} S=${3:-128}
DP=${DP_BIN:-build/depthprune} W=build/bench/gpu-score
mkdir -p $W bench/results
CEIL=$(${DP_CEILINGS:-build/bench/cuda_ceilings})
echo "ceilings: $CEIL"
M=$W/llama7b-shapes-$L
[ -d $M ] || $DP synth --quiet --out $M --tokenizer models/tiny-brown --layers $L --hidden 4096 --heads 32 \
  --kv-heads 32 --intermediate 11008 --max-pos 4096 --seed 1 --dtype bf16
python3 - data/brown-cloze.jsonl $W/text.txt <<'PY'
import json, sys
with open(sys.argv[2], "w") as f:
    for l in open(sys.argv[1]):
        r = json.loads(l)
        f.write(r["context"] + " " + r["choices"][r["label"]] + "\n\n")
PY
R=$W/run; rm -rf $R
t0=$(date +%s.%N)
$DP score --device cuda --model $M --calib $W/text.txt --criterion ppl --samples $N --seq-len $S --batch $N --run $R
t1=$(date +%s.%N)
PEER=$(python3 bench/gpu/torch_score_gpu.py $M $R)
echo "peer: $PEER"
python3 - "$CEIL" "$PEER" "$(echo "$t1 - $t0" | bc -l)" $M/config.json $N $S "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" <<'PY'
import json, sys, datetime
ceil, peer, dt, cfg = json.loads(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3]), json.load(open(sys.argv[4]))
N, T, gpu = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
C, F, V, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
HD = C // H
blk = 2 * (C * H * HD + 2 * C * KV * HD + H * HD * C + 3 * C * F) + 2 * 2 * (T / 2) * H * HD  # per token
head = 2 * C * V
flops = N * T * ((L * blk + head) + (L * (L - 1) / 2) * blk + L * head)
peak = max(v for k, v in ceil.items() if k.startswith("gemm_bf16_tflops")) * 1e12
floor = flops / peak
res = {"date": datetime.date.today().isoformat(), "device": gpu, "model": "LLaMA-7B block shapes, %d blocks" % L,
       "samples": N, "seq_len": T, "depthprune_s": round(dt, 3), "floor_s": round(floor, 4),
       "depthprune_vs_floor": round(dt / floor, 2), "peer": peer, "speedup_vs_peer": round(peer["seconds"] / dt, 2),
       "ceilings": ceil}
print(json.dumps(res, indent=1))
out = "bench/results/%s-%s-score.json" % (res["date"], gpu.replace(" ", "_"))
json.dump(res, open(out, "w"), indent=1)
print("written", out)
PY
