#!/usr/bin/env bash
# A GPU host has CUDA and Python but not necessarily our Debian
# libraries and no network. The compute core (DP_CORE_ONLY: CPU + CUDA ops,
# the model, the GPU tests and benchmarks) needs OpenBLAS, cJSON and PCRE2:
#   here:  bash scripts/gpu_prefix.sh download build-gpu/debs     (13 MB of .deb)
#   there: bash scripts/gpu_prefix.sh build build-gpu/debs build-gpu
#          -> unpacks the .debs into build-gpu/prefix (no root, no dpkg
#          database), configures build-gpu/core with DP_CORE_ONLY=ON and
#          builds it; then `ctest --test-dir build-gpu/core -L gpu`.
# (carry build-gpu/debs with the run; the full CLI additionally needs Open
# MPI, parallel HDF5 and libyaml, ~60 MB more: `download-full`.)
set -euo pipefail
CORE="libopenblas0 libopenblas0-pthread libopenblas-dev libopenblas-pthread-dev libblas-dev libcjson1 libcjson-dev
      libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libpcre2-dev"
FULL="libyaml-0-2 libyaml-dev libopenmpi3 libopenmpi-dev openmpi-bin openmpi-common libhdf5-openmpi-103-1
      libhdf5-openmpi-dev libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7 libpmix2 libfabric1 libucx0
      libsz2 libaec0 libcurl3-gnutls libmunge2 libpsm2-2 libpsm-infinipath1 librdmacm1 libibverbs1 libnl-3-200
      libnl-route-3-200 libxnvctrl0 libltdl7"
mode=${1:-}
case "$mode" in
  download|download-full)
    out=$2; mkdir -p "$out"; cd "$out"
    pk=$CORE; [ "$mode" = download-full ] && pk="$CORE $FULL"
    # shellcheck disable=SC2086
    apt-get download $pk
    du -sh . ;;
  build)
    debs=$(realpath "$2"); top=$(realpath -m "$3"); pfx=$top/prefix
    mkdir -p "$pfx"
    for d in "$debs"/*.deb; do
      if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$d" "$pfx"
      else (t=$(mktemp -d); cd "$t" && ar x "$d" && tar -xf data.tar.* -C "$pfx"; rm -rf "$t"); fi
    done
    lib=$pfx/usr/lib/x86_64-linux-gnu
    # the links Debian's alternatives system would have made
    ln -sf openblas-pthread/libopenblas.so.0 "$lib/libopenblas.so.0"
    ln -sf openblas-pthread/libopenblas.so "$lib/libopenblas.so"
    export PKG_CONFIG_PATH=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$pfx
    export LD_LIBRARY_PATH=$lib:$lib/openblas-pthread:${LD_LIBRARY_PATH:-}
    cmake -S . -B "$top/core" -DDP_CORE_ONLY=ON -DDP_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
      -DBLAS_LIBRARIES="$lib/openblas-pthread/libopenblas.so" \
      -DCBLAS_INCLUDE_DIR="$pfx/usr/include/x86_64-linux-gnu/openblas-pthread" \
      -DCMAKE_BUILD_RPATH="$lib;$lib/openblas-pthread" ${CUDA_ARCH:+-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH}
    cmake --build "$top/core" -j "$(nproc)"
    echo "built $top/core; run: ctest --test-dir $top/core -L gpu --output-on-failure" ;;
  *) echo "usage: gpu_prefix.sh download DIR | download-full DIR | build DEBDIR TOPDIR" >&2; exit 2 ;;
esac
