#!/usr/bin/env bash
# Shortened LLaMA's 7B setting (LLaMA-2-7B, PPL criterion, 20% = 6 of 32
# blocks, LoRA healing on Alpaca) on one GPU node, one rank per GPU (8 here:
# set --ntasks-per-node and --gpus-per-node to the node's GPU count; each rank
# takes the GPU of its node-local rank and the job log says which). Set the paths:
#   DP_EXTRA="--set model.path=/models/Llama-2-7b-hf --set calib.path=/data/bookcorpus.jsonl
#             --set train.data=/data/alpaca_cleaned.json --set eval.ppl=wikitext2=/data/wiki.test.txt,ptb=/data/ptb.test.txt
#             --set eval.tasks=boolq=/data/boolq.jsonl,piqa=/data/piqa.jsonl" sbatch slurm/prune_7b.sh
#SBATCH --job-name=dp-7b
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --signal=USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -u
. "${DP_ROOT:-${SLURM_SUBMIT_DIR:-.}}/slurm/common.sh"
dp_setup
# shellcheck disable=SC2086
dp_launch run --config "${DP_CONFIG:-configs/llama-7b-20pct.yaml}" --run "$DP_RUN" ${DP_EXTRA:-}
dp_finish $? "$DP_RUN/summary.md"
