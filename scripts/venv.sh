#!/usr/bin/env bash
# The test oracles' Python: a virtual environment (default .venv, or $DP_VENV)
# made from the exact pins in tests/requirements.txt (torch 2.13.0 CPU,
# transformers, PEFT, tokenizers, safetensors, lm-eval, gguf, numpy, h5py).
# Idempotent: reinstalls only when the requirements file changed. Prints the
# venv's python on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(realpath -m "${DP_VENV:-.venv}")
req=tests/requirements.txt
stamp=$venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv/bin/python"; exit 0
fi
# one creator at a time (tests started in parallel may all ask for it)
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv/bin/python"; exit 0
fi
py=$(command -v python3) || { echo "venv: no python3 on PATH" >&2; exit 1; }
"$py" -m venv "$venv" >&2 2>/dev/null || {
  echo "venv: $py has no venv module; installing python3-venv" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q python3-venv >&2
  "$py" -m venv "$venv" >&2; }
echo "venv: installing $req into $venv" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2
echo "$want" >"$stamp"
echo "$venv/bin/python"
