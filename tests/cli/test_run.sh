#!/usr/bin/env bash
# `depthprune run` end to end under mpirun -np 2 (real tokenizer, Brown
# text, Brown-derived Alpaca records, the bundled cloze task): the pipeline
# completes and the retrained model's PPL is below the pruned model's; a
# rerun finds every stage complete and does nothing; a rank SIGKILLed at a
# random point ends the job, and the rerun's final outputs equal an
# uninterrupted run's.
# usage: test_run.sh DEPTHPRUNE SRC_DIR ASSETS_DIR MPIEXEC
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); ASSETS=$(realpath -m "$3"); MPIEXEC=$4
. "$SRC/cli/lib.sh"
setup_assets
bash "$SRC/../scripts/brown_text.sh" "$NM" "$T/brown.txt" '^ca0[1-4]$' || exit 1
bash "$SRC/../scripts/brown_alpaca.sh" "$NM" "$T/alpaca.json" '^ca0[1-9]$' 72 || exit 1
expect_exit 0 "" "$DP" synth --out "$T/tiny" --tokenizer "$TOK" --layers 8 --hidden 64 --heads 4 --kv-heads 2 \
  --intermediate 176 --max-pos 128 --seed 5
cat >"$T/pipe.yaml" <<YAML
model: {path: $T/tiny}
calib: {path: $T/brown.txt, samples: 8, seq_len: 64}
score: {batch: 4}
prune: {criterion: ppl, ratio: 0.25}
eval: {ppl: "brown=$T/brown.txt", tasks: "cloze=$SRC/../data/brown-cloze.jsonl", limit: 30, seq_len: 64, batch: 8}
train: {data: $T/alpaca.json, cutoff: 128, val_size: 8, global_batch: 8, micro_batch: 4, epochs: 2, warmup: 1, lr: 1.0e-3, ckpt_every: 2}
YAML
MPI=("$MPIEXEC" --bind-to none -np 2)
expect_exit 0 "summary: $T/a/summary.md" "${MPI[@]}" "$DP" run --config "$T/pipe.yaml" --run "$T/a"
for f in pruned/prune.json retrained/model.safetensors retrained/adapter/adapter_config.json eval/dense.json \
         eval/pruned.json eval/retrained.json summary.md ledger.json; do
  [ -e "$T/a/$f" ] || fail "the pipeline did not write $f"
done
ppl() { node -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log(j.ppl.brown.ppl)' "$1"; }
p=$(ppl "$T/a/eval/pruned.json"); r=$(ppl "$T/a/eval/retrained.json")
node -e "process.exit($r < $p ? 0 : 1)" && echo "ok   retrained PPL $r < pruned $p" || fail "retraining did not lower PPL: $r vs $p"
grep -q "| retrained | 6 |" "$T/a/summary.md" || fail "summary table lacks the retrained row"
# the cost ledger: every stage's seconds, rank-seconds (2 ranks x threads), tokens and FLOPs
python3 - "$T/a/ledger.json" <<'PY' || fail "ledger.json is incomplete"
import json, sys
l = json.load(open(sys.argv[1]))
assert l["ranks"] == 2 and l["device"] == "cpu", l
assert {"score", "prune", "retrain", "eval"} <= set(l["stages"]), l["stages"].keys()
for st, e in l["stages"].items():
    assert e["seconds"] > 0 and abs(e["rank_seconds"] - e["seconds"] * 2 * l["threads_per_rank"]) < 1e-6 * e["rank_seconds"], (st, e)
    assert e["flops"] > 0 and e["tokens"] > 0, (st, e)
print("ok   cost ledger: %s" % ", ".join("%s %.2f TFLOP" % (k, v["flops"] / 1e12) for k, v in l["stages"].items()))
PY
grep -q "^| retrain | " "$T/a/summary.md" && grep -q "core-seconds" "$T/a/summary.md" || fail "summary.md lacks the cost table"
out=$("${MPI[@]}" "$DP" run --config "$T/pipe.yaml" --run "$T/a" 2>&1) || fail "rerun failed: $out"
[ "$(grep -c 'complete, skipped' <<<"$out")" = 4 ] || fail "rerun redid a stage: $(grep 'run:' <<<"$out")"

# SIGKILL one rank at a random point, rerun until done
delay=$(( (RANDOM % 40) + 5 ))
"${MPI[@]}" "$DP" run --config "$T/pipe.yaml" --run "$T/b" >"$T/b.log" 2>&1 &
pid=$!
sleep "$(awk "BEGIN{print $delay/10}")"
kill -KILL "$(pgrep -P $pid | tail -1)" 2>/dev/null || echo "note: the run finished before the kill (${delay}00 ms)"
for _ in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
kill -0 $pid 2>/dev/null && { fail "the job hung after a rank was killed"; kill -KILL $pid; }
wait $pid
expect_exit 0 "summary:" "${MPI[@]}" "$DP" run --config "$T/pipe.yaml" --run "$T/b"
cmp -s "$T/a/retrained/model.safetensors" "$T/b/retrained/model.safetensors" || fail "retrained weights differ after the kill (${delay}00 ms)"
# (model_hash covers config.json, whose provenance block names the run directory)
for m in dense pruned retrained; do
  diff <(grep -v '"date"\|"model_hash"' "$T/a/eval/$m.json" | sed "s|$T/[ab]/||") \
       <(grep -v '"date"\|"model_hash"' "$T/b/eval/$m.json" | sed "s|$T/[ab]/||") >/dev/null ||
    { fail "eval of $m differs after the kill"; diff <(grep -v "\"date\"" "$T/a/eval/$m.json") <(grep -v "\"date\"" "$T/b/eval/$m.json") >&2; }
done
[ "$FAILS" -eq 0 ] && echo "ok   killed after ${delay}00 ms, resumed: outputs identical to the uninterrupted run"
expect_exit 1 "calib.path" "$DP" run --model "$T/tiny" --run "$T/x"
finish
