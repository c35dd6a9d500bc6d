#!/usr/bin/env bash
# Runs a command with the test oracles' Python first on PATH (scripts/venv.sh
# makes .venv from tests/requirements.txt when missing or stale) and the HF
# libraries offline (no hub at run time).
# usage: venv_run.sh COMMAND [ARGS...]     (COMMAND finds `python` on PATH)
set -euo pipefail
py=$(bash "$(dirname "$0")/../../scripts/venv.sh") || { echo "venv_run: no oracle venv" >&2; exit 1; }
export PATH="$(dirname "$py"):$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error \
  HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1 \
  PYTHONWARNINGS=ignore::FutureWarning TQDM_DISABLE=1
exec "$@"
