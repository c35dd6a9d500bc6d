#!/usr/bin/env bash
# `depthprune sweep` under mpirun -np 4 with 2 groups of 2 ranks, real
# tokenizer and Brown text: 6 configurations (ppl/magnitude one-shot, ppl
# iterative, each without and with LoRA retraining) give the same results
# as each configuration run alone on 2 ranks; a rank SIGKILLed after its
# group's first configuration ends the job, and the rerun runs only the
# missing configurations and ends with the same table; bad sweep configs
# get clear errors.
# usage: test_sweep.sh DEPTHPRUNE SRC_DIR ASSETS_DIR MPIEXEC
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); ASSETS=$(realpath -m "$3"); MPIEXEC=$4
. "$SRC/cli/lib.sh"
setup_assets
bash "$SRC/../scripts/brown_text.sh" "$NM" "$T/brown.txt" '^ca0[1-4]$' || exit 1
bash "$SRC/../scripts/brown_alpaca.sh" "$NM" "$T/alpaca.json" '^ca0[1-9]$' 40 || exit 1
expect_exit 0 "" "$DP" synth --out "$T/tiny" --tokenizer "$TOK" --layers 8 --hidden 64 --heads 4 --kv-heads 2 \
  --intermediate 176 --max-pos 256 --seed 5
cat >"$T/sweep.yaml" <<YAML
model: {path: $T/tiny}
calib: {path: $T/brown.txt, samples: 8, seq_len: 64}
score: {batch: 4}
eval: {text: $T/brown.txt, seq_len: 64, batch: 8, tasks: "cloze=$SRC/../data/brown-cloze.jsonl", limit: 20}
train: {data: $T/alpaca.json, val_size: 8, global_batch: 8, micro_batch: 2, epochs: 1, warmup: 1, lr: 1.0e-3}
sweep:
  criteria: [ppl, magnitude]
  ratios: [0.25]
  schedules: [one-shot, iterative]
  retrain: [none, lora]
  group_size: 2
YAML
MPI4=("$MPIEXEC" --oversubscribe --bind-to none -np 4)
MPI2=("$MPIEXEC" --bind-to none -np 2)
cols() { sed -E 's/(,[^,]*){4}$//' "$1"; } # every column but time and cost (retrain s, TFLOP, rank-s, decode tokens/s):
# a configuration resumed from a checkpoint counts the work of the run that finished it

expect_exit 0 "| ppl-r0.25-iterative-lora-s1234 | 6 |" "${MPI4[@]}" "$DP" sweep --config "$T/sweep.yaml" --run "$T/a"
[ "$(ls "$T/a/configs" | wc -l)" = 6 ] || fail "expected 6 configurations: $(ls "$T/a/configs")"
[ "$(tail -n +2 "$T/a/sweep.csv" | wc -l)" = 6 ] || fail "sweep.csv should have 6 rows"
grep -q '"group":[[:space:]]*1' "$T"/a/configs/*/result.json || fail "group 1 ran nothing"
grep -q 'cloze (acc)' "$T/a/sweep.md" || fail "no zero-shot column in sweep.md"
grep -q "^| ppl | 1 | " "$T/a/sweep.md" && grep -q "^## Agreement between the criteria" "$T/a/sweep.md" ||
  fail "no agreement table of the criteria in sweep.md"
# the cost ledger: every configuration's seconds, rank-seconds, tokens and FLOPs; the Pareto fronts
python3 - "$T"/a/configs/*/result.json <<'PY' || fail "a configuration lacks its cost"
import json, sys
for f in sys.argv[1:]:
    c = json.load(open(f))["cost"]
    assert c["flops"] > 0 and c["tokens"] > 0 and c["rank_seconds"] >= c["seconds"] > 0, (f, c)
print("ok   cost ledger in all %d configurations" % (len(sys.argv) - 1))
PY
grep -q "^Pareto front, PPL eval against cost (rank-seconds) " "$T/a/sweep.md" &&
  grep -q "^Pareto front, PPL eval against decode speed " "$T/a/sweep.md" || fail "no Pareto fronts in sweep.md"
command -v gnuplot >/dev/null && { [ -s "$T/a/sweep_pareto.png" ] || fail "no Pareto plot"; }
[ "$(grep -l '"zeroshot_average"' "$T"/a/configs/*/result.json | wc -l)" = 6 ] || fail "zero-shot missing from results"
command -v gnuplot >/dev/null && { [ -f "$T/a/sweep_ppl.png" ] || fail "no sweep plot"; }
# the grid cell that is not run (magnitude x iterative) is listed with the reason
grep -q "^- magnitude x iterative: not run: iterative pruning re-scores" "$T/a/sweep.md" || fail "skipped grid cell not listed in sweep.md"
# decode speed: measured after the grid, alone, 5 runs with their spread, for every configuration
for f in "$T"/a/configs/*/result.json; do
  ! grep -q decode_tokens "$f" || fail "$f: a speed measured inside the grid (under the other groups' load)"
  node -e 'const s=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));
    process.exit(s.measured==="after the grid, alone"&&s.runs===5&&s.min<=s.decode_tokens_per_s&&s.decode_tokens_per_s<=s.max?0:1)' \
    "${f%result.json}speed.json" 2>/dev/null || fail "$(dirname "$f"): no speed.json measured alone"
done
grep -q "decode tok/s (batch 1, measured alone" "$T/a/sweep.md" || fail "sweep.md does not say how speed was measured"

# each configuration alone (2 ranks, as in a group) gives the same numbers
for c in ppl-r0.25-oneshot-lora-s1234 ppl-r0.25-iterative-none-s1234; do
  expect_exit 0 "| $c |" "${MPI2[@]}" "$DP" sweep --config "$T/sweep.yaml" --run "$T/alone" --only "$c"
  node -e '
const fs=require("fs");const [a,b]=process.argv.slice(1).map(f=>JSON.parse(fs.readFileSync(f,"utf8")));
let bad=0;for(const k of ["removed","ppl","val_loss","zeroshot","zeroshot_average","params"]){
 if(JSON.stringify(a[k])!==JSON.stringify(b[k])){console.error(k,JSON.stringify(a[k]),"vs",JSON.stringify(b[k]));bad++;}}
process.exit(bad?1:0);' "$T/a/configs/$c/result.json" "$T/alone/configs/$c/result.json" ||
    fail "$c: the sweep's result differs from a run alone"
done
[ "$FAILS" -eq 0 ] && echo "ok   configurations alone equal the sweep's"

# killed after the first configuration of group 0, then resumed
out=$(timeout 300 "${MPI4[@]}" "$DP" sweep --config "$T/sweep.yaml" --run "$T/b" --fault-kill-after 1 2>&1); rc=$?
[ $rc -ne 0 ] || fail "the killed sweep exited 0"
[ $rc -ne 124 ] || fail "the sweep hung after a rank was killed"
n_done=$(ls "$T"/b/configs/*/result.json 2>/dev/null | wc -l)
[ "$n_done" -ge 1 ] && [ "$n_done" -lt 6 ] || fail "expected some but not all configurations done, got $n_done"
mkdir "$T/keep"; for f in "$T"/b/configs/*/result.json; do cp "$f" "$T/keep/$(basename "$(dirname "$f")").json"; done
out=$("${MPI4[@]}" "$DP" sweep --config "$T/sweep.yaml" --run "$T/b" 2>&1) || fail "resume failed: $out"
grep -q "$n_done of 6 configurations already done" <<<"$out" || fail "the rerun did not skip the finished ones: $(grep sweep: <<<"$out" | head -3)"
for f in "$T"/keep/*.json; do
  cmp -s "$f" "$T/b/configs/$(basename "$f" .json)/result.json" || fail "a finished configuration was redone: $f"
done
diff <(cols "$T/a/sweep.csv") <(cols "$T/b/sweep.csv") >/dev/null && echo "ok   resumed sweep table equals the uninterrupted one" ||
  fail "resumed sweep.csv differs from the uninterrupted one"

# the papers' width-vs-depth comparison: a width-pruned configuration
# (LLM-Pruner style) parameter-matched to the depth-pruned one, equal to
# `width-prune --match-params` + `ppl` run alone
expect_exit 0 "| param_first-r0.25-width-none-s1234 | 8 |" "${MPI2[@]}" "$DP" sweep --config "$T/sweep.yaml" --run "$T/w" \
  --set 'sweep.schedules=[one-shot,width]' --set 'sweep.criteria=[ppl]' --set 'sweep.retrain=[none]' \
  --set width.protect_first=2 --set width.protect_last=1 --set sweep.dense=true
grep -q "^| dense | 8 |" "$T/w/sweep.md" || fail "no dense reference row in sweep.md"
node -e '
const fs=require("fs");const [d,w]=process.argv.slice(1,3).map(f=>JSON.parse(fs.readFileSync(f,"utf8")));
if(!(w.width_ratio>0&&w.blocks_kept===8&&d.blocks_kept===6))process.exit(1);
if(Math.abs(w.params-d.params)/d.params>0.01)process.exit(2);
const sp=f=>JSON.parse(fs.readFileSync(f.replace("result.json","speed.json"),"utf8"));
if(!(sp(process.argv[1]).decode_tokens_per_s>0&&sp(process.argv[2]).decode_tokens_per_s>0))process.exit(3);
fs.writeFileSync(process.argv[3]+"/target",String(d.params));fs.writeFileSync(process.argv[3]+"/wppl",String(w.ppl[Object.keys(w.ppl)[0]]));
' "$T/w/configs/ppl-r0.25-oneshot-none-s1234/result.json" "$T/w/configs/param_first-r0.25-width-none-s1234/result.json" "$T" ||
  fail "width configuration: not parameter-matched or incomplete"
expect_exit 0 "width-pruned" "${MPI2[@]}" "$DP" width-prune --model "$T/tiny" --calib "$T/brown.txt" --samples 8 --seq-len 64 \
  --seed 1234 --protect-first 2 --protect-last 1 --match-params "$(cat "$T/target")" --out "$T/walone"
alone=$("$DP" ppl --model "$T/walone" --text "$T/brown.txt" --seq-len 64 --batch 8 --json --quiet | node -e '
let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).ppl))')
node -e 'const [a,b]=process.argv.slice(1).map(Number);process.exit(Math.abs(a-b)/b<1e-9?0:1)' "$alone" "$(cat "$T/wppl")" ||
  fail "width configuration PPL $(cat "$T/wppl") differs from width-prune + ppl alone ($alone)"
[ "$FAILS" -eq 0 ] && echo "ok   width configuration parameter-matched, equal to width-prune alone"

# sub-layer units in the grid: the sub-layer configuration equals `score --units sublayer` +
# `prune` (the same parameter rule) + `ppl` with those sub-layers skipped, run alone
expect_exit 0 "| ppl-r0.25-oneshot-sub-none-s1234 |" "${MPI2[@]}" "$DP" sweep --config "$T/sweep.yaml" --run "$T/u" \
  --set 'sweep.schedules=[one-shot]' --set 'sweep.criteria=[ppl]' --set 'sweep.retrain=[none]' \
  --set 'sweep.units=[block,sublayer]'
expect_exit 0 "removed sub-layers" "$DP" prune --model "$T/tiny" --scores "$T/u/sublayer/scores.json" --ratio 0.25 \
  --out "$T/ualone"
python3 - "$T/u/configs/ppl-r0.25-oneshot-sub-none-s1234/result.json" "$T/ualone/prune.json" "$T" <<'PY' || fail "the sweep's sub-layer configuration differs from prune alone"
import json, sys
r, p = (json.load(open(f)) for f in sys.argv[1:3])
assert r["removed_units"] == p["removed_units"] and r["removed"] == p["removed"], (r["removed_units"], p["removed_units"])
args = []
for flag, key in (("--drop", "removed"), ("--drop-attn", "skip_attn"), ("--drop-mlp", "skip_mlp")):
    if r[key]: args += [flag, ",".join(map(str, r[key]))]
open(sys.argv[3] + "/uflags", "w").write("\n".join(args) + "\n")
open(sys.argv[3] + "/uppl", "w").write(repr(r["ppl"][list(r["ppl"])[0]]))
PY
mapfile -t uf <"$T/uflags"
alone=$("$DP" ppl --model "$T/tiny" "${uf[@]}" --text "$T/brown.txt" --seq-len 64 --batch 8 --json --quiet | python3 -c \
  'import json,sys; print(json.load(sys.stdin)["ppl"])')
python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(abs(a - b) / b > 1e-9)' "$alone" "$(cat "$T/uppl")" &&
  echo "ok   sub-layer configuration equals score --units sublayer + prune + ppl alone (${uf[*]})" ||
  fail "sub-layer configuration PPL $(cat "$T/uppl") differs from the run alone ($alone)"

# bad sweep configurations
expect_exit 1 "must divide the 2 ranks" "${MPI2[@]}" "$DP" sweep --config "$T/sweep.yaml" --run "$T/x" --set sweep.group_size=3
expect_exit 1 "not a number in (0, 1)" "$DP" sweep --config "$T/sweep.yaml" --run "$T/x" --set sweep.group_size=1 \
  --set 'sweep.ratios=[0.2,1.5]'
expect_exit 1 "removes 0 of 8 blocks" "$DP" sweep --config "$T/sweep.yaml" --run "$T/x" --set sweep.group_size=1 \
  --set 'sweep.ratios=[0.01]'
expect_exit 1 "is not none, lora or full" "$DP" sweep --config "$T/sweep.yaml" --run "$T/x" --set sweep.group_size=1 \
  --set 'sweep.retrain=[qlora]'
expect_exit 1 "the sweep grid is empty" "$DP" sweep --config "$T/sweep.yaml" --run "$T/x" --set sweep.group_size=1 \
  --set 'sweep.criteria=[magnitude]' --set 'sweep.schedules=[iterative]'
expect_exit 1 "sweep.width_criteria" "$DP" sweep --config "$T/sweep.yaml" --run "$T/x" --set sweep.group_size=1 \
  --set 'sweep.schedules=[width]' --set 'sweep.width_criteria=[taylor]'
expect_exit 2 "matches no configuration" "$DP" sweep --config "$T/sweep.yaml" --run "$T/x" --set sweep.group_size=1 --only nope
[ ! -e "$T/x/configs" ] || fail "a refused sweep started configurations"
finish
