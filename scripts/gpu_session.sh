#!/usr/bin/env bash
# One run on a GPU host without our Debian libraries, in one
# go: build the compute core from the carried .debs (scripts/gpu_prefix.sh),
# record the GPU, run the GPU tests, compute-sanitizer over the op test and
# the ceilings benchmark; everything lands in $OUT for bench/results/.
#   here:  bash scripts/gpu_prefix.sh download build-gpu/debs
#   there (build-gpu/debs copied over): OUT=DIR bash scripts/gpu_session.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-build-gpu/out}
mkdir -p "$OUT"
{ date -u; nvidia-smi; nvcc --version; } >"$OUT/machine.txt" 2>&1
bash scripts/gpu_prefix.sh build build-gpu/debs build-gpu >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
B=build-gpu/core
ctest --test-dir $B -L gpu --output-on-failure >"$OUT/ctest_gpu.log" 2>&1; echo "ctest -L gpu: rc $?"
for t in test_cuda_ops test_cuda_model; do $B/tests/$t >"$OUT/$t.log" 2>&1; echo "$t: rc $?"; done
if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck --error-exitcode 9 $B/tests/test_cuda_ops >"$OUT/memcheck.log" 2>&1
  echo "compute-sanitizer memcheck: rc $?"
fi
$B/bench/cuda_ceilings >"$OUT/ceilings.json" 2>"$OUT/ceilings.err"; echo "ceilings: $(cat "$OUT/ceilings.json")"
tail -5 "$OUT/ctest_gpu.log"
