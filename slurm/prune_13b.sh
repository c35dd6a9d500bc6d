#!/usr/bin/env bash
# The paper's 13B setting (Vicuna-13B, PPL criterion, 21% = 8 of 40 blocks,
# LoRA r8/alpha16 on Alpaca, KD switchable in the config) at cluster scale:
# one rank per GPU over 2 nodes x 4 GPUs (each rank takes the GPU of its
# node-local rank; the job log names it). Set the paths (see prune_7b.sh):
#   DP_EXTRA="--set model.path=/models/vicuna-13b-v1.3 ..." sbatch slurm/prune_13b.sh
# Site modules: DP_MODULES="gcc openmpi hdf5/parallel openblas cuda".
#SBATCH --job-name=dp-13b
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -u
. "${DP_ROOT:-${SLURM_SUBMIT_DIR:-.}}/slurm/common.sh"
dp_setup
# shellcheck disable=SC2086
dp_launch run --config "${DP_CONFIG:-configs/vicuna-13b-21pct.yaml}" --run "$DP_RUN" ${DP_EXTRA:-}
dp_finish $? "$DP_RUN/summary.md"
