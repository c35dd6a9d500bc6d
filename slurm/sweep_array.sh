#!/usr/bin/env bash
# The ablation grid as a Slurm job array, the alternative to rank groups in one job:
#   1. prepare: the shared inputs (calibration, one-shot scores, training data, teacher
#      cache) into DP_RUN, and DP_RUN/cells.txt, a configuration per line; then it submits
#   2. the array: task i runs configuration i (`sweep --cell i`), DP_ARRAY_LIMIT at a time,
#      each in its own allocation (sweep.group_size ranks);
#   3. the summary (after every task succeeded): decode speeds measured alone, sweep.md/csv/json.
# The result files, the resume (a finished configuration is never redone, a signalled task
# requeues itself) and the final table are those of `slurm/sweep.sh`.
#   DP_CONFIG=configs/sweep-tiny.yaml DP_RUN=runs/sweep DP_EXTRA="--set model.path=..." \
#     sbatch [options] slurm/sweep_array.sh
# Options given to sbatch (partition, time, tasks per job) are passed on to the jobs it submits.
#SBATCH --job-name=dp-sweep-array
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --time=12:00:00
#SBATCH --signal=USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -u
. "${DP_ROOT:-${SLURM_SUBMIT_DIR:-.}}/slurm/common.sh"
dp_setup
CONFIG=${DP_CONFIG:-configs/sweep-tiny.yaml}
SELF="$DP_ROOT/slurm/sweep_array.sh"
case "${DP_PHASE:-prepare}" in
prepare)
  # shellcheck disable=SC2086
  dp_launch sweep --config "$CONFIG" --run "$DP_RUN" --prepare ${DP_EXTRA:-}
  rc=$?
  if [ "$rc" = 0 ] && [ -s "$DP_RUN/cells.txt" ]; then
    n=$(wc -l <"$DP_RUN/cells.txt")
    limit=${DP_ARRAY_LIMIT:+%$DP_ARRAY_LIMIT}
    common=(--ntasks="${SLURM_NTASKS:-1}" --open-mode=append)
    arr=$(sbatch --parsable "${common[@]}" --job-name=dp-sweep-cell --array="0-$((n - 1))$limit" \
      --export=ALL,DP_PHASE=cell,DP_ROOT="$DP_ROOT",DP_BIN="$DP_BIN",DP_RUN="$DP_RUN",DP_CONFIG="$CONFIG" \
      --output="$DP_RUN/cell-%a.out" "$SELF") || dp_die "could not submit the array"
    sum=$(sbatch --parsable "${common[@]}" --job-name=dp-sweep-summary --dependency="afterok:$arr" \
      --export=ALL,DP_PHASE=summary,DP_ROOT="$DP_ROOT",DP_BIN="$DP_BIN",DP_RUN="$DP_RUN",DP_CONFIG="$CONFIG" \
      --output="$DP_RUN/summary.out" "$SELF") || dp_die "could not submit the summary job"
    echo "== submitted the array $arr ($n configurations) and the summary $sum"
  fi
  dp_finish "$rc" "$DP_RUN/cells.txt"
  ;;
cell)
  i=${SLURM_ARRAY_TASK_ID:?not an array task}
  name=$(sed -n "$((i + 1))p" "$DP_RUN/cells.txt")
  # shellcheck disable=SC2086
  dp_launch sweep --config "$CONFIG" --run "$DP_RUN" --cell "$i" ${DP_EXTRA:-}
  dp_finish $? "$DP_RUN/configs/$name/result.json"
  ;;
summary)
  # shellcheck disable=SC2086
  dp_launch sweep --config "$CONFIG" --run "$DP_RUN" ${DP_EXTRA:-}
  dp_finish $? "$DP_RUN/sweep.json"
  ;;
*) dp_die "DP_PHASE must be prepare, cell or summary, got '$DP_PHASE'" ;;
esac
