#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan + UBSan and runs each for
# SECONDS (default 600) on a copy of the committed seed corpus.
#   bash scripts/fuzz.sh [SECONDS]      (the test suite runs a short slice)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DDP_FUZZ=ON -DDP_SANITIZE=ON \
  -DDP_CORE_ONLY=ON -DDP_CUDA=OFF -DBUILD_TESTING=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target fuzz_safetensors
for t in safetensors; do
  work=$(mktemp -d); cp fuzz/corpus/$t/* "$work/"
  echo "fuzz_$t: ${SECS}s"
  status=0
  build-fuzz/fuzz/fuzz_$t "$work" -max_total_time="$SECS" -print_final_stats=1 \
    -artifact_prefix=build-fuzz/ > build-fuzz/fuzz_$t.log 2>&1 || status=$?
  grep -E "stat::number_of_executed_units|ERROR|SUMMARY|crash-" build-fuzz/fuzz_$t.log || true
  rm -rf "$work"
  [ "$status" = 0 ] || { echo "fuzz_$t found a failure" >&2; exit 1; }
done
