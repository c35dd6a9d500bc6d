#!/usr/bin/env bash
# `depthprune width-prune` end to end with the real Llama-2 tokenizer and
# Brown text: parameter-matched to a depth-pruned export (the papers'
# comparison), the width-pruned model loads, evaluates, retrains with LoRA,
# generates and benchmarks like any other; MPI ranks give the same model as
# one (param_first: within float summation order -> the same kept groups);
# bad input.
# usage: test_width.sh DEPTHPRUNE SRC_DIR ASSETS_DIR MPIEXEC
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); ASSETS=$(realpath -m "$3"); MPIEXEC=$4
. "$SRC/cli/lib.sh"
setup_assets
bash "$SRC/../scripts/brown_text.sh" "$NM" "$T/brown.txt" '^ca0[1-6]$' || exit 1
bash "$SRC/../scripts/brown_alpaca.sh" "$NM" "$T/alpaca.json" '^ca0[1-9]$' 60 || exit 1
M="$T/m"
expect_exit 0 "" "$DP" synth --out "$M" --tokenizer "$TOK" --layers 8 --hidden 64 --heads 4 --kv-heads 2 \
  --intermediate 176 --max-pos 256 --seed 5
expect_exit 0 "exported 6 of 8 blocks" "$DP" export --model "$M" --drop 3,4 --out "$T/depth"
W=(width-prune --model "$M" --calib "$T/brown.txt" --samples 6 --seq-len 32 --protect-first 2 --protect-last 1)
expect_exit 0 "width-pruned (param_first" "$MPIEXEC" --bind-to none -np 2 "$DP" "${W[@]}" --match-model "$T/depth" \
  --out "$T/w2"
expect_exit 0 "width-pruned (param_first" "$DP" "${W[@]}" --match-model "$T/depth" --out "$T/w1"
python3 - "$T" <<'PY' || fail "width.json / config.json incomplete"
import json, sys
t = sys.argv[1]
w = json.load(open(t + "/w1/width.json"))
c = json.load(open(t + "/w1/config.json"))["depthprune_width"]
assert abs(w["params_after"] - w["params_target"]) / w["params_target"] < 0.01, w
assert c["num_key_value_heads"][:2] == [2, 2] and c["num_key_value_heads"][-1] == 2
assert all(x < 176 for x in c["intermediate_size"][2:7])
assert [b["kept_kv_groups"] for b in w["blocks"]] == [b["kept_kv_groups"] for b in json.load(open(t + "/w2/width.json"))["blocks"]]
PY
cmp -s "$T/w1/model.safetensors" "$T/w2/model.safetensors" || fail "2 ranks pruned other groups than 1 rank"
expect_exit 0 '"ppl":' "$DP" ppl --model "$T/w1" --text "$T/brown.txt" --seq-len 64 --json
expect_exit 0 "retrained model" "$MPIEXEC" --bind-to none -np 2 "$DP" retrain --student "$T/w1" --data "$T/alpaca.json" \
  --global-batch 4 --micro-batch 2 --epochs 1 --val-size 8 --lr 1e-3 --run "$T/r" --out "$T/w1.lora" --no-kd
expect_exit 0 '"ppl":' "$DP" ppl --model "$T/w1.lora" --text "$T/brown.txt" --seq-len 64 --json
expect_exit 0 "" "$DP" generate --model "$T/w1" --prompt "The jury" --max-new 8
expect_exit 0 "bench-generate:" "$DP" bench-generate --model "$M,$T/depth,$T/w1" --batch 1 --gen-len 4 --prompt-len 4 \
  --warmup 0 --runs 1 --out "$T/b.json"
for c in param_second param_mix l1 l2 random; do
  expect_exit 0 "width-pruned ($c" "$DP" "${W[@]}" --criterion $c --ratio 0.3 --out "$T/w_$c"
done
expect_exit 0 "width-pruned (l1" "$DP" width-prune --model "$M" --criterion l1 --ratio 0.5 --protect-first 0 --protect-last 0 \
  --out "$T/w_nocalib"

# width.protect_first/last from the config (and --seq-len/--samples as calib.*) are honoured
expect_exit 0 "width-pruned (l1" "$DP" width-prune --model "$M" --criterion l1 --ratio 0.5 --set width.protect_first=3 \
  --set width.protect_last=2 --out "$T/w_cfg"
python3 - "$T/w_cfg/config.json" <<'PY' || fail "width.protect_first/last from the config were ignored"
import json, sys
c = json.load(open(sys.argv[1]))["depthprune_width"]["intermediate_size"]
assert c[:3] == [176] * 3 and c[-2:] == [176] * 2 and all(x < 176 for x in c[3:6]), c
PY
expect_exit 2 "exactly one of --ratio" "$DP" "${W[@]}" --out "$T/x"
expect_exit 2 "exactly one of --ratio" "$DP" "${W[@]}" --ratio 0.2 --match-params 1000 --out "$T/x"
expect_exit 2 "--ratio must be in [0, 1)" "$DP" "${W[@]}" --ratio 1.5 --out "$T/x"
expect_exit 2 "unknown --criterion" "$DP" "${W[@]}" --criterion taylor --ratio 0.2 --out "$T/x"
expect_exit 2 "--calib FILE is required" "$DP" width-prune --model "$M" --ratio 0.2 --out "$T/x"
expect_exit 2 "leaves none to prune" "$DP" "${W[@]}" --ratio 0.2 --protect-first 4 --protect-last 4 --out "$T/x"
expect_exit 2 "needs no width pruning" "$DP" "${W[@]}" --match-params 999999999 --out "$T/x"
expect_exit 1 "already exists" "$DP" "${W[@]}" --ratio 0.2 --out "$T/w1"
[ ! -e "$T/x" ] || fail "a failed run left an output"
# a config whose per-block sizes are inconsistent is refused on load
cp -r "$T/w1" "$T/bad"
python3 - "$T/bad/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["depthprune_width"]["num_attention_heads"][3] = 3
json.dump(c, open(sys.argv[1], "w"))
PY
expect_exit 1 "query heads per kv head" "$DP" ppl --model "$T/bad" --text "$T/brown.txt" --seq-len 64
finish
