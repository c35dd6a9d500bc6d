#!/usr/bin/env bash
# `depthprune retrain` and `teacher-cache` end to end under mpirun (2 ranks)
# with the real Llama-2 tokenizer and Alpaca-format records built from the
# Brown corpus:
# - the output (merged HF model + PEFT adapter) loads back (ppl) and the loss falls;
# - LoRA over the base kept as stored (bf16, model.weights=stored) and over an
#   fp32 copy: identical weights, adapter and loss log;
# - SIGUSR1 to mpirun / SIGTERM to one rank: checkpoint, exit 0, the rerun
#   finishes with weights and loss log identical to an uninterrupted run;
# - SIGKILL of one rank: the job ends (no hang), the rerun resumes from the
#   last complete checkpoint, identical again; a truncated newest checkpoint
#   falls back to the previous one, identical again;
# - NaN injection with no skips allowed: exit code 3;
# - KD from an online teacher and from a teacher cache; bad input.
# usage: test_retrain.sh DEPTHPRUNE SRC_DIR ASSETS_DIR MPIEXEC
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); ASSETS=$(realpath -m "$3"); MPIEXEC=$4
. "$SRC/cli/lib.sh"
setup_assets
bash "$SRC/../scripts/brown_alpaca.sh" "$NM" "$T/alpaca.json" '^ca0[1-9]$' 200 || exit 1
bash "$SRC/../scripts/brown_text.sh" "$NM" "$T/brown.txt" '^ca1[0-2]$' || exit 1
M="$T/tiny"
expect_exit 0 "" "$DP" synth --out "$M" --tokenizer "$TOK" --layers 4 --hidden 64 --heads 4 --kv-heads 2 \
  --intermediate 176 --max-pos 256 --seed 5
MPI=("$MPIEXEC" --bind-to none -np 2)
ARGS=(retrain --student "$M" --data "$T/alpaca.json" --global-batch 8 --micro-batch 2 --epochs 2 --val-size 16
      --lr 1e-3 --set train.warmup=3 --set train.ckpt_every=5 --set train.val_every=20)
strip() { sed 's/,"time_s".*//' "$1"; }
same_as_a() { # $1: run dir, $2: out dir, $3: what
  cmp -s "$T/a.out/model.safetensors" "$2/model.safetensors" || fail "$3: merged weights differ from the uninterrupted run"
  cmp -s "$T/a.out/adapter/adapter_model.safetensors" "$2/adapter/adapter_model.safetensors" ||
    fail "$3: adapter differs from the uninterrupted run"
  diff <(strip "$T/a/train_log.jsonl") <(strip "$1/train_log.jsonl") >/dev/null ||
    fail "$3: loss log differs from the uninterrupted run"
  [ "$FAILS" -eq 0 ] && echo "ok   $3: weights, adapter and loss log identical to the uninterrupted run"
}
wait_steps() { # $1: log, $2: steps; returns when the log has that many lines
  for _ in $(seq 600); do
    [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

# ---- uninterrupted ----
expect_exit 0 "retrained model: $T/a.out" "${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/a" --out "$T/a.out"
for f in config.json model.safetensors tokenizer.json adapter/adapter_config.json adapter/adapter_model.safetensors; do
  [ -f "$T/a.out/$f" ] || fail "output lacks $f"
done
AC="$T/a.out/adapter/adapter_config.json"
grep -qE '"peft_type":\s*"LORA"' "$AC" || fail "adapter_config lacks peft_type"
grep -qE '"r":\s*8,' "$AC" || fail "adapter_config lacks r 8"
grep -qE '"lora_alpha":\s*16,' "$AC" || fail "adapter_config lacks lora_alpha 16"
grep -qE '"task_type":\s*"CAUSAL_LM"' "$AC" || fail "adapter_config lacks task_type"
head -c 20000 "$T/a.out/adapter/adapter_model.safetensors" |
  grep -aq '"base_model.model.model.layers.3.mlp.down_proj.lora_B.weight":{"dtype":"F32","shape":\[64,8\]' ||
  fail "PEFT tensor names or shapes missing"
[ "$(ls "$T/a/ckpt" | wc -l)" = 2 ] || fail "expected the 2 newest checkpoints kept: $(ls "$T/a/ckpt")"
[ -f "$T/a/loss.png" ] || command -v gnuplot >/dev/null || echo "note: no gnuplot, no loss.png"
[ -f "$T/a/loss.png" ] || ! command -v gnuplot >/dev/null || fail "no loss.png although gnuplot is installed"
# the loss falls: epoch 2 (the same examples) below epoch 1
awk -F'"loss":' '/"loss":/ {split($2, a, ","); s[NR <= 23 ? 1 : 2] += a[1]} END {exit !(s[2] < s[1])}' \
  <(grep '"epoch"' "$T/a/train_log.jsonl") || fail "training loss did not fall"
expect_exit 0 '"ppl":' "$DP" ppl --model "$T/a.out" --text "$T/brown.txt" --seq-len 64 --json

# ---- the frozen base as stored (bf16, the default) or as an fp32 copy: identical runs ----
# (release build only: the sanitizer build runs the stored path in every other run here)
if [ "${DP_SANITIZED:-0}" != 1 ]; then
  expect_exit 0 "retrained model" "${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/a32" --out "$T/a32.out" --set model.weights=fp32
  same_as_a "$T/a32" "$T/a32.out" "LoRA over an fp32 copy of the base (model.weights=fp32) vs the stored bf16 base"
fi

# ---- SIGUSR1 to mpirun: checkpoint + exit 0, then resume ----
"${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/b" --out "$T/b.out" >"$T/b.log" 2>&1 &
pid=$!
wait_steps "$T/b/train_log.jsonl" 8 || fail "run b never reached step 8"
kill -USR1 $pid
wait $pid; rc=$?
[ $rc = 0 ] || { fail "SIGUSR1: exit $rc"; cat "$T/b.log" >&2; }
grep -q "stopped at step" "$T/b.log" || fail "SIGUSR1 did not stop the run: $(tail -3 "$T/b.log")"
[ ! -e "$T/b.out" ] || fail "a stopped run wrote its output"
expect_exit 0 "retrained model" "${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/b" --out "$T/b.out"
same_as_a "$T/b" "$T/b.out" "SIGUSR1 + resume"

# ---- SIGTERM to one rank ----
"${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/c" --out "$T/c.out" >"$T/c.log" 2>&1 &
pid=$!
wait_steps "$T/c/train_log.jsonl" 6 || fail "run c never reached step 6"
kill -TERM "$(pgrep -P $pid | tail -1)"
wait $pid; rc=$?
[ $rc = 0 ] || { fail "SIGTERM to a rank: exit $rc"; tail -5 "$T/c.log" >&2; }
grep -q "stopped at step" "$T/c.log" || fail "SIGTERM did not stop the run"
expect_exit 0 "retrained model" "${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/c" --out "$T/c.out"
same_as_a "$T/c" "$T/c.out" "SIGTERM + resume"

# ---- SIGKILL of one rank mid-run ----
"${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/d" --out "$T/d.out" >"$T/d.log" 2>&1 &
pid=$!
wait_steps "$T/d/train_log.jsonl" 12 || fail "run d never reached step 12"
kill -KILL "$(pgrep -P $pid | tail -1)"
for _ in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $pid 2>/dev/null; then fail "the job hung after a rank was SIGKILLed"; kill -KILL $pid; fi
wait $pid; rc=$?
[ $rc != 0 ] || fail "the killed job exited 0"
out=$("${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/d" --out "$T/d.out" --quiet 2>&1) || fail "resume after SIGKILL: $out"
same_as_a "$T/d" "$T/d.out" "SIGKILL + resume"

# ---- damaged newest checkpoint ----
expect_exit 0 "stopped at step 10" "${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/e" --out "$T/e.out" --pause-after 10
truncate -s 2000 "$T/e/ckpt/step-000000010/rank-00001.h5"
out=$("${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/e" --out "$T/e.out" 2>&1) || fail "resume with a damaged checkpoint: $out"
grep -q "step-000000010 is damaged or incomplete" <<<"$out" || fail "the damaged checkpoint was not reported: $out"
grep -q "resuming from checkpoint step-000000005 " <<<"$out" || fail "did not fall back to step 5"
same_as_a "$T/e" "$T/e.out" "damaged checkpoint fallback"

# ---- --max-steps ends the run with its output (HF's max_steps); one-point plots stay quiet ----
out=$("${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/ms" --out "$T/ms.out" --max-steps 1 2>&1) || fail "--max-steps 1: $out"
[ -f "$T/ms.out/model.safetensors" ] || fail "--max-steps 1 wrote no model"
[ "$(grep -c '"loss"' "$T/ms/train_log.jsonl")" = 1 ] || fail "--max-steps 1 ran $(grep -c '"loss"' "$T/ms/train_log.jsonl") steps"
grep -q "retrained model: .*(1 steps, final validation loss [0-9]" <<<"$out" || fail "--max-steps 1 output line: $out"
! grep -qi "warning" <<<"$out" || fail "plotting chatter on the console: $(grep -i warning <<<"$out" | head -2)"
[ -f "$T/ms/loss.png" ] || ! command -v gnuplot >/dev/null || fail "no loss.png for a one-step run"
# no validation set: said so, not printed as a loss of 0
out=$("${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/nv" --out "$T/nv.out" --max-steps 2 --val-size 0 2>&1) || fail "--val-size 0: $out"
grep -q "no validation set" <<<"$out" || fail "--val-size 0 does not say there is no validation set: $out"
! grep -q "validation loss 0.0000" <<<"$out" || fail "--val-size 0 printed a validation loss of 0"
[ "${FAILS:-0}" -eq 0 ] && echo "ok   --max-steps ends the run with its output; --val-size 0 reported as such; no gnuplot chatter"

# ---- NaN: skipped, or fatal with exit 3 when no skip is allowed ----
expect_exit 0 "non-finite loss or gradient (first seen on rank 1)" "${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/f" \
  --out "$T/f.out" --max-steps 4 --fault-nan-step 2 --fault-nan-rank 1
grep -q '"step":3,.*"skipped":1' "$T/f/train_log.jsonl" || fail "the skipped step is not in the log"
expect_exit 3 "consecutive non-finite steps" "${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/g" --out "$T/g.out" \
  --fault-nan-step 2 --set train.max_skips=0
[ ! -e "$T/g.out" ] || fail "a failed run wrote its output"

# ---- KD: online teacher, teacher cache, full-parameter ----
expect_exit 0 "exported 3 of 4 blocks" "$DP" export --model "$M" --out "$T/pruned" --drop 2
expect_exit 0 "retrained model" "${MPI[@]}" "$DP" "${ARGS[@]}" --student "$T/pruned" --teacher "$M" --kd-alpha 0.5 \
  --kd-temp 2 --run "$T/h" --out "$T/h.out" --max-steps 0 --epochs 1
grep -q '"kd":[1-9]' "$T/h/train_log.jsonl" || grep -q '"kd":0\.[0-9]*[1-9]' "$T/h/train_log.jsonl" ||
  fail "online KD loss missing from the log"
expect_exit 0 "teacher cache: $T/tc.h5" "${MPI[@]}" "$DP" teacher-cache --teacher "$M" --data "$T/alpaca.json" \
  --topk 16 --kd-temp 2 --out "$T/tc.h5" --quiet
expect_exit 0 "retrained model" "${MPI[@]}" "$DP" "${ARGS[@]}" --student "$T/pruned" --teacher-cache "$T/tc.h5" \
  --kd-temp 2 --run "$T/i" --out "$T/i.out" --epochs 1 --method full
[ ! -d "$T/i.out/adapter" ] || fail "full-parameter output has an adapter"
expect_exit 0 '"ppl":' "$DP" ppl --model "$T/i.out" --text "$T/brown.txt" --seq-len 64 --json

# ---- bad input ----
expect_exit 2 "--data FILE is required" "$DP" retrain --student "$M" --out "$T/x"
expect_exit 1 "$T/missing.json" "$DP" retrain --student "$M" --data "$T/missing.json" --out "$T/x" --run "$T/x.run"
printf '[{"instruction": "a", "output": 3}]' >"$T/bad.json"
expect_exit 1 "record 1: expected an object" "$DP" retrain --student "$M" --data "$T/bad.json" --out "$T/x" --run "$T/x.run"
printf '{"instruction": "a", "output": "b"}\n{not json\n' >"$T/bad.jsonl"
expect_exit 1 "line 2: not a JSON object" "$DP" retrain --student "$M" --data "$T/bad.jsonl" --out "$T/x" --run "$T/x.run"
expect_exit 1 "already exists" "$DP" "${ARGS[@]}" --run "$T/x.run" --out "$T/a.out"
expect_exit 1 "must be a multiple of ranks" "$DP" "${ARGS[@]}" --global-batch 7 --run "$T/x.run" --out "$T/x"
expect_exit 1 "leaves no training examples" "$DP" "${ARGS[@]}" --val-size 500 --run "$T/x.run" --out "$T/x"
expect_exit 2 "--method: key 'train.method' must be one of {lora,full}" "$DP" "${ARGS[@]}" --method qlora --run "$T/x.run" --out "$T/x"
expect_exit 2 "needs --teacher DIR or --teacher-cache" "$DP" "${ARGS[@]}" --kd-alpha 0.5 --run "$T/x.run" --out "$T/x"
expect_exit 1 "built at temperature 2" "$DP" "${ARGS[@]}" --teacher-cache "$T/tc.h5" --run "$T/x.run2" --out "$T/x"
expect_exit 1 "different configuration" "$DP" "${ARGS[@]}" --lr 5e-4 --run "$T/a" --out "$T/x"
[ ! -e "$T/x" ] || fail "a failed run left an output directory"
finish
