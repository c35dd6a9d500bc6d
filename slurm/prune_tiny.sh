#!/usr/bin/env bash
# The embedded default on CPU: the whole pipeline (score, prune, retrain,
# eval) on the bundled tiny Brown-corpus LLaMA, 2 ranks, a few minutes.
# Prepare the demo data once: bash scripts/demo_data.sh
#SBATCH --job-name=dp-tiny
#SBATCH --nodes=1
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --time=00:30:00
#SBATCH --signal=USR1@60
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -u
. "${DP_ROOT:-${SLURM_SUBMIT_DIR:-.}}/slurm/common.sh"
dp_setup
# shellcheck disable=SC2086
dp_launch run --config "${DP_CONFIG:-configs/tiny.yaml}" --run "$DP_RUN" ${DP_EXTRA:-}
dp_finish $? "$DP_RUN/summary.md"
