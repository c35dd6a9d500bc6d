#!/usr/bin/env bash
# The GPU check, in one go on a GPU host (one H100/H200 with CUDA and nvcc, no
# network, none of our Debian libraries installed): builds the full CLI from
# the carried .debs, runs `ctest -L gpu` (and compute-sanitizer where it
# works), then the embedded pipeline `run --config configs/tiny.yaml` on
# cuda and on cpu and compares them (the same removed blocks; every PPL
# within 1e-2 relative: bf16 weights on the GPU), then the GPU benchmarks.
# Every log and figure lands in OUTDIR; the last lines are a verdict table.
#
#   on a machine with network, once:
#     bash scripts/setup.sh && bash scripts/demo_data.sh
#     bash scripts/gpu_prefix.sh download-full build-gpu/debs
#   copy the checkout with build-gpu/debs and runs/demo-data to the GPU host, there:
#     bash scripts/gpu_check.sh OUTDIR [DEBDIR]
# Where the host already has the libraries (pkg-config finds yaml-0.1 and
# mpicc exists) it builds against them instead. Without a usable GPU it stops
# after the build with the engine's own error (exit 1).
set -u
OUT=$(realpath -m "${1:?usage: gpu_check.sh OUTDIR [DEBDIR]}")
cd "$(dirname "$0")/.."
DEBS=${2:-build-gpu/debs}
mkdir -p "$OUT"
t0=$(date +%s)
deadline=$((t0 + ${GPU_CHECK_SECONDS:-450})) # the whole check fits one 8-minute call
verdict=()
# tmo N: N seconds, or what is left before the deadline (0: skip the step)
tmo() { local left=$((deadline - $(date +%s) - 15)); [ $left -lt 20 ] && echo 0 || echo $(($1 < left ? $1 : left)); }
step() { echo "[$(($(date +%s) - t0)) s] $*" | tee -a "$OUT/steps.log"; }
record() { verdict+=("$(printf '%-34s %s' "$1" "$2")"); step "$1: $2"; }
finish() {
  echo "== gpu_check $(date -u +%FT%TZ), $(($(date +%s) - t0)) s, logs in $OUT" | tee "$OUT/verdict.txt"
  printf '%s\n' "${verdict[@]}" | tee -a "$OUT/verdict.txt"
  exit "$1"
}
{ date -u; uname -a; nvidia-smi 2>&1; nvcc --version 2>&1; } >"$OUT/machine.txt"

# 1. the full CLI. cuBLAS/NCCL: the toolkit's, else DP_CUDA_LIBS, else the
# host Python's NVIDIA wheels (linked into a prefix with include/ and lib/)
step "build"
if [ -z "${DP_CUDA_LIBS:-}" ]; then
  site=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null)
  if [ -n "$site" ]; then
    p=$PWD/build-gpu/cudalibs
    mkdir -p "$p/include" "$p/lib"
    for d in "$site"/*/; do
      [ -d "$d/include" ] && cp -rsf "$d/include/." "$p/include/" 2>/dev/null
      [ -d "$d/lib" ] && cp -rsf "$d/lib/." "$p/lib/" 2>/dev/null
    done
    for so in "$p"/lib/lib*.so.*; do base=${so%%.so.*}.so; [ -e "$base" ] || ln -s "$(basename "$so")" "$base"; done
    [ -e "$p/lib/libcublas.so" ] && export DP_CUDA_LIBS=$p
  fi
fi
if pkg-config --exists yaml-0.1 2>/dev/null && command -v mpicc >/dev/null && command -v h5pcc >/dev/null; then
  B=build-gpu/full-system
  { cmake -S . -B $B -DDP_CUDA=ON -DCMAKE_BUILD_TYPE=Release ${DP_CUDA_LIBS:+-DDP_CUDA_LIBS=$DP_CUDA_LIBS} &&
    cmake --build $B -j "$(nproc)"; } >"$OUT/build.log" 2>&1
  brc=$?
else
  [ -d "$DEBS" ] || { record build "FAIL: no $DEBS (make it with scripts/gpu_prefix.sh download-full)"; finish 1; }
  B=build-gpu/full
  bash scripts/gpu_prefix.sh build-full "$DEBS" build-gpu >"$OUT/build.log" 2>&1
  brc=$?
  # shellcheck disable=SC1091
  [ -f build-gpu/env.sh ] && . build-gpu/env.sh
fi
if [ $brc != 0 ] || [ ! -x $B/depthprune ]; then
  tail -20 "$OUT/build.log"
  record build "FAIL (see build.log)"
  finish 1
fi
DP=$B/depthprune
record build "ok ($("$DP" --version 2>&1 | head -1))"

# 2. a usable GPU, named by the engine's own check
if ! probe=$("$DP" config --device cuda 2>&1 >/dev/null); then
  echo "$probe" >"$OUT/no_gpu.txt"
  record "GPU" "NONE: ${probe##*error: }"
  finish 1
fi
record "GPU" "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"

# 3. the GPU tests
step "ctest -L gpu"
ctest --test-dir $B -L gpu --output-on-failure --timeout "$(tmo 150)" >"$OUT/ctest_gpu.log" 2>&1 # first: time is left
record "ctest -L gpu" "$(grep -E 'tests passed|tests failed' "$OUT/ctest_gpu.log" | tail -1)"
# 4. the embedded pipeline on both devices
if [ ! -s runs/demo-data/brown-train.txt ]; then
  record "pipeline" "SKIPPED: no runs/demo-data (run scripts/demo_data.sh where there is network; carry it)"
else
  for dev in cuda cpu; do
    s=$(tmo 150)
    [ "$s" = 0 ] && { record "run device=$dev" "FAIL: no time left"; continue; }
    step "run --config configs/tiny.yaml --set device=$dev"
    rm -rf "$OUT/run-$dev"
    (time timeout "$s" "$DP" run --config configs/tiny.yaml --set device=$dev --run "$OUT/run-$dev") \
      >"$OUT/run-$dev.log" 2>&1
    record "run device=$dev" "rc $? ($(grep real "$OUT/run-$dev.log" | awk '{print $2}'))"
  done
  python3 - "$OUT/run-cpu" "$OUT/run-cuda" >"$OUT/compare.txt" 2>&1 <<'PY'
import glob, json, os, sys
cpu, gpu = sys.argv[1:]
def removed(d): return json.load(open(os.path.join(d, "pruned/prune.json")))["removed"]
def ppls(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "eval/*.json"))):
        for name, v in json.load(open(f)).get("ppl", {}).items():
            out[os.path.basename(f)[:-5] + "/" + name] = v["ppl"]
    return out
ok = removed(cpu) == removed(gpu)
print("removed blocks: cpu %s cuda %s%s" % (removed(cpu), removed(gpu), "" if ok else "  DIFFER"))
a, b = ppls(cpu), ppls(gpu)
ok = ok and a.keys() == b.keys() and len(a) > 0
for k in a:
    rel = abs(b.get(k, float("nan")) - a[k]) / a[k]
    ok = ok and rel <= 1e-2
    print("%-28s cpu %10.4f cuda %10.4f rel %.2e (tol 1e-2)" % (k, a[k], b.get(k, float("nan")), rel))
sys.exit(0 if ok else 1)
PY
  prc=$?
  cat "$OUT/compare.txt"
  record "pipeline cuda vs cpu" "$([ $prc = 0 ] && echo ok || echo FAIL) (compare.txt)"
fi

# 5. compute-sanitizer over the op and model tests: every carved buffer its own
# allocation (an overrun into the next buffer is seen),
# every launch synchronised (a fault is named at its kernel)
if command -v compute-sanitizer >/dev/null; then
  for run in "memcheck test_cuda_ops 45" "memcheck test_cuda_model 60" "racecheck test_cuda_ops 30" \
             "initcheck test_cuda_ops 30" "synccheck test_cuda_ops 30"; do
    set -- $run
    tool=$1 t=$2 s=$(tmo "$3")
    [ "$s" = 0 ] && { record "$tool $t" "SKIPPED (time)"; continue; }
    DP_CUDA_SEPARATE=1 DP_CUDA_SYNC=1 timeout "$s" compute-sanitizer --tool "$tool" --error-exitcode 9 \
      "$B/tests/$t" >"$OUT/${tool}_$t.log" 2>&1
    r=$?
    record "$tool $t" "$([ $r = 124 ] && echo "timeout (partial: ${tool}_$t.log)" || echo "rc $r")"
  done
fi
# 6. the stage tests through the engine on the GPU (their CPU tolerances: informational)
s=$(tmo 60)
if [ "$s" != 0 ]; then
  DP_TEST_DEVICE=cuda timeout "$s" ctest --test-dir $B -L mpi -R "test_(ppl|score|prune|train|width|mc)" \
    >"$OUT/ctest_stages_cuda.log" 2>&1
  record "stage tests on cuda (info)" "$(grep -E 'tests passed|tests failed' "$OUT/ctest_stages_cuda.log" | tail -1)"
fi

# 7. benchmarks (each prints its ratio against the peer; logs kept)
for b in bench/gpu/score_bench.sh bench/gpu/train_bench.sh bench/gpu/generate_bench.sh; do
  [ -f "$b" ] || continue
  s=$(tmo 90)
  [ "$s" = 0 ] && { record "$(basename "$b")" "SKIPPED (time)"; continue; }
  step "$b"
  DP_BIN=$DP DP_CEILINGS=$B/bench/cuda_ceilings timeout "$s" bash "$b" >"$OUT/$(basename "$b" .sh).log" 2>&1
  record "$(basename "$b")" "rc $?"
done
cp bench/results/"$(date -u +%F)"-* "$OUT"/ 2>/dev/null
[ -x $B/bench/cuda_ceilings ] && $B/bench/cuda_ceilings >"$OUT/ceilings.json" 2>"$OUT/ceilings.err"
fails=$(printf '%s\n' "${verdict[@]}" | grep -v "(info)" | grep -c "FAIL\|rc [1-9]")
finish $((fails > 0))
