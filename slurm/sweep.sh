#!/usr/bin/env bash
# The ablation grid as one job: groups of sweep.group_size ranks (one node
# per group with group_size = ntasks-per-node) take whole configurations.
#   DP_EXTRA="--set model.path=... --set calib.path=... --set train.data=..." sbatch slurm/sweep.sh
#SBATCH --job-name=dp-sweep
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --signal=USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -u
. "${DP_ROOT:-${SLURM_SUBMIT_DIR:-.}}/slurm/common.sh"
dp_setup
# shellcheck disable=SC2086
dp_launch sweep --config "${DP_CONFIG:-configs/sweep-tiny.yaml}" --run "$DP_RUN" ${DP_EXTRA:-}
dp_finish $? "$DP_RUN/sweep.json"
