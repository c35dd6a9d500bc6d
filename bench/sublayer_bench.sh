#!/usr/bin/env bash
# Sub-layer pruning vs whole-block pruning at equal parameters, on one model:
# both scored by PPL on the same calibration set (`score` and `score --units
# sublayer`), both pruned to the parameters of round(RATIO x L) blocks
# (`prune --ratio`), then perplexity on a held-out text and decode speed
# (bench-generate, the same protocol for the three models) side by side.
#   bash bench/sublayer_bench.sh [MODEL=models/tiny-brown] [RATIO=0.25] [THREADS=2] [OUTDIR=build/sublayer-bench]
# Calibration and test text: the Brown splits of scripts/demo_data.sh
# (runs/demo-data/brown-train.txt, brown-test.txt; DP_TEST_TEXT=FILE for another test text).
set -euo pipefail
cd "$(dirname "$0")/.."
M=${1:-models/tiny-brown} R=${2:-0.25} TH=${3:-2} W=${4:-build/sublayer-bench}
DP=${DP_BIN:-build/depthprune}
[ -x "$DP" ] || bash scripts/setup.sh >/dev/null
[ -f runs/demo-data/brown-test.txt ] || bash scripts/demo_data.sh >/dev/null
TEXT=${DP_TEST_TEXT:-runs/demo-data/brown-test.txt}
rm -rf "$W" && mkdir -p "$W"
export OMP_NUM_THREADS=$TH
C=(--calib runs/demo-data/brown-train.txt --samples 10 --seq-len 128 --batch 10 --criterion ppl --quiet)
"$DP" score --model "$M" "${C[@]}" --run "$W/blocks" >/dev/null
"$DP" score --model "$M" "${C[@]}" --units sublayer --run "$W/sub" >/dev/null
"$DP" prune --model "$M" --scores "$W/blocks/scores.json" --ratio "$R" --out "$W/block-pruned" --quiet
"$DP" prune --model "$M" --scores "$W/sub/scores.json" --ratio "$R" --out "$W/sub-pruned" --quiet
for m in "$M" "$W/block-pruned" "$W/sub-pruned"; do
  "$DP" ppl --model "$m" --text "$TEXT" --seq-len 128 --batch 8 --json --quiet
done >"$W/ppl.jsonl"
"$DP" bench-generate --model "$M,$W/block-pruned,$W/sub-pruned" --batch 1,16 --prompt-len 32 --gen-len 64 \
  --warmup 1 --runs 3 --out "$W/bench.json" --quiet >/dev/null
python3 - "$W" "$M" "$R" "$TEXT" <<'PY'
import json, os, sys
w, m, r, text = sys.argv[1:5]
ppl = [json.loads(l) for l in open(os.path.join(w, "ppl.jsonl"))]
b = json.load(open(os.path.join(w, "bench.json")))
pb = json.load(open(os.path.join(w, "block-pruned", "prune.json")))
ps = json.load(open(os.path.join(w, "sub-pruned", "prune.json")))
print("model %s, ratio %s (the parameters of %d of %d blocks); test text %s; %d threads, %s" % (
    m, r, len(pb["removed"]), pb["layers_before"], text, b["threads"], b.get("device", "cpu")))
print("| model | removed | params (M) | test PPL | decode tok/s batch 1 | batch 16 | speedup batch 1 | batch 16 |")
print("|---|---|---|---|---|---|---|---|")
rows = [("dense", "-", pb["params_before"]), ("blocks", ", ".join(map(str, pb["removed"])), pb["params_after"]),
        ("sub-layers", ", ".join(ps["removed_units"]), ps["params_after"])]
tps = {}
for x in b["results"]:
    tps.setdefault(x["model"], {})[x["batch"]] = x["tokens_per_s"]
names = list(tps)
for i, (name, rem, params) in enumerate(rows):
    t = tps[names[i]]
    d = tps[names[0]]
    print("| %s | %s | %.2f | %.2f | %.0f | %.0f | %.2fx | %.2fx |" % (
        name, rem, params / 1e6, ppl[i]["ppl"], t[1], t[16], t[1] / d[1], t[16] / d[16]))
PY
