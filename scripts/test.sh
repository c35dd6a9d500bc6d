#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh: Debian packages, cuBLAS/NCCL wheels
# when nvcc lacks them, the build; scripts/venv.sh: the pinned Python oracles
# in .venv), and runs the whole test suite with ctest; then rebuilds with ASan+UBSan and runs the unit,
# bad-input and CLI tests again under the sanitizers. Exits non-zero on
# any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

bash scripts/setup.sh
bash scripts/venv.sh >/dev/null
echo "== test suite (build/) =="
ctest --test-dir build --output-on-failure -j 2 --timeout 1200

echo "== sanitizer build (build-asan/: ASan + UBSan) =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DDP_SANITIZE=ON -DDP_CUDA=OFF >/dev/null
cmake --build build-asan -j "$(nproc)"
# MPI's own allocations are not ours to report; leaks in our code are
# caught by the unit tests, which run without MPI.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j 2 -L "unit|badinput|sanitize" -LE slow
echo "test.sh: all tests passed"
