#!/usr/bin/env bash
# Installs depthprune's system dependencies on Debian 12 or 13 (idempotent: only
# missing packages are installed, and the list is printed first), then
# configures and builds into ./build.
#
#   bash scripts/setup.sh            dependencies + build
#   bash scripts/setup.sh --deps     dependencies only
#
# On a cluster without apt, load the equivalent modules instead, e.g.
#   module load gcc cmake openmpi hdf5/parallel openblas   (names vary by site)
# and install cJSON, libyaml and PCRE2 (or point PKG_CONFIG_PATH at them).
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config git
      libopenmpi-dev openmpi-bin
      libhdf5-openmpi-dev hdf5-tools
      libopenblas-dev libcjson-dev libyaml-dev libpcre2-dev
      clang libomp-dev
      gnuplot-nox slurm-wlm munge)
command -v node >/dev/null && command -v npm >/dev/null || PKGS+=(nodejs npm)
# clang's sanitizer/fuzzer runtime: Debian 12 and 13 name it after the LLVM
# version (libclang-rt-14-dev, libclang-rt-19-dev); the unversioned
# libclang-rt-dev follows the default clang where the release has it.
clang_rt() {
  local v
  for v in libclang-rt-dev; do
    apt-cache show "$v" >/dev/null 2>&1 && { echo "$v"; return; }
  done
  v=$(apt-cache depends clang 2>/dev/null | sed -n 's/.*Depends: clang-\([0-9][0-9]*\)$/\1/p' | head -1)
  [ -n "$v" ] && echo "libclang-rt-$v-dev"
}

if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  apt-cache show clang >/dev/null 2>&1 || $SUDO apt-get update -q
  rt=$(clang_rt); [ -n "$rt" ] && PKGS+=("$rt") || echo "setup: no clang runtime package found; the sanitizer build may fail" >&2
  missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing: ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "setup: all system packages present"
  fi
else
  echo "setup: no apt-get here; on a cluster load the module equivalents:" >&2
  echo "  module load gcc cmake openmpi hdf5/parallel openblas  (plus cjson, libyaml, pcre2)" >&2
  for t in cmake mpicc h5pcc pkg-config; do
    command -v $t >/dev/null || { echo "setup: missing $t" >&2; exit 1; }
  done
fi

[ "${1:-}" = "--deps" ] && exit 0

# nvcc without cuBLAS/NCCL in its toolkit: NVIDIA's wheels into .deps/cuda
cuda_libs=""
command -v nvcc >/dev/null && cuda_libs=$(bash scripts/cuda_libs.sh .deps/cuda)
BUILD=${BUILD_DIR:-build}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${cuda_libs:+-DDP_CUDA_LIBS="$cuda_libs"} ${CMAKE_ARGS:-}
cmake --build "$BUILD" -j "$(nproc)"
echo "setup: built $BUILD/depthprune"
