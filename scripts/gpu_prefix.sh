#!/usr/bin/env bash
# A GPU host has CUDA and Python but not necessarily our Debian
# libraries and no network. The compute core (DP_CORE_ONLY: CPU + CUDA ops,
# the model, the GPU tests and benchmarks) needs OpenBLAS, cJSON and PCRE2:
#   here:  bash scripts/gpu_prefix.sh download build-gpu/debs     (13 MB of .deb)
#   there: bash scripts/gpu_prefix.sh build build-gpu/debs build-gpu
#          -> unpacks the .debs into build-gpu/prefix (no root, no dpkg
#          database), configures build-gpu/core with DP_CORE_ONLY=ON and
#          builds it; then `ctest --test-dir build-gpu/core -L gpu`.
# The full CLI (Open MPI, parallel HDF5 and libyaml as well):
#   here:  bash scripts/gpu_prefix.sh download-full build-gpu/debs [build/depthprune]
#          (the packages the depthprune built here links against, found with
#          ldd + dpkg -S, so no versioned name is written down; plus the -dev
#          packages and Open MPI's launcher and plugin libraries)
#   there: bash scripts/gpu_prefix.sh build-full build-gpu/debs build-gpu
#          -> build-gpu/full/depthprune, and build-gpu/env.sh to source
#          before running it (library path, Open MPI relocated to the prefix)
# (carry build-gpu/debs with the run.)
set -euo pipefail
CORE="libopenblas0 libopenblas0-pthread libopenblas-dev libopenblas-pthread-dev libblas-dev libcjson1 libcjson-dev
      libpcre2-8-0 libpcre2-dev"
# the host's own C runtime and compiler libraries are never carried
BASE="libc6 libgcc-s1 libstdc++6 libgomp1 libudev1"
DEV="libopenmpi-dev libhdf5-openmpi-dev libyaml-dev libopenblas-dev libopenblas-pthread-dev libcjson-dev libpcre2-dev
     openmpi-bin openmpi-common"
RUNTIME="libpmix2 libfabric1 libucx0 libpsm2-2 libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200 libltdl7 libmunge2
         libhwloc-plugins"

# full_packages BIN: BIN's shared libraries' packages, the -dev packages,
# Open MPI's plugin package, and what Open MPI dlopens (not in ldd) when
# this Debian has it by that name
full_packages() {
  local bin=$1 mpi_pkg
  {
    ldd "$bin" | awk '$3 ~ /^\// {print $3}' | xargs -r -n1 readlink -f | xargs -r -n1 dpkg -S 2>/dev/null | cut -d: -f1
    mpi_pkg=$(dpkg -S "$(readlink -f "$(ldd "$bin" | awk '/libmpi\.so/ {print $3}')")" | cut -d: -f1)
    echo "$mpi_pkg"
    for p in $DEV $RUNTIME; do apt-cache show "$p" >/dev/null 2>&1 && echo "$p"; done
  } | tr -d ' ' | grep -v '^$' | sort -u | grep -vxF -f <(tr ' ' '\n' <<<"$BASE")
}

unpack() { # DEBDIR PREFIX
  mkdir -p "$2"
  for d in "$1"/*.deb; do
    if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$d" "$2"
    else (t=$(mktemp -d); cd "$t" && ar x "$d" && tar -xf data.tar.* -C "$2"; rm -rf "$t"); fi
  done
  # the links Debian's alternatives system would have made
  ln -sf openblas-pthread/libopenblas.so.0 "$2/usr/lib/x86_64-linux-gnu/libopenblas.so.0"
  ln -sf openblas-pthread/libopenblas.so "$2/usr/lib/x86_64-linux-gnu/libopenblas.so"
}

mode=${1:-}
case "$mode" in
  download)
    out=$2; mkdir -p "$out"; cd "$out"
    # shellcheck disable=SC2086
    apt-get download $CORE
    du -sh . ;;
  download-full)
    out=$2; bin=$(realpath "${3:-build/depthprune}")
    [ -x "$bin" ] || { echo "gpu_prefix: build depthprune here first (no $bin)" >&2; exit 1; }
    pk=$(full_packages "$bin" | tr '\n' ' ')
    echo "packages: $CORE $pk"
    mkdir -p "$out"
    # shellcheck disable=SC2086
    (cd "$out" && apt-get download $CORE $pk)
    du -sh "$out" ;;
  build)
    debs=$(realpath "$2"); top=$(realpath -m "$3"); pfx=$top/prefix
    unpack "$debs" "$pfx"
    lib=$pfx/usr/lib/x86_64-linux-gnu
    export PKG_CONFIG_PATH=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$pfx
    export LD_LIBRARY_PATH=$lib:$lib/openblas-pthread:${LD_LIBRARY_PATH:-}
    cmake -S . -B "$top/core" -DDP_CORE_ONLY=ON -DDP_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
      -DBLAS_LIBRARIES="$lib/openblas-pthread/libopenblas.so" \
      -DCBLAS_INCLUDE_DIR="$pfx/usr/include/x86_64-linux-gnu/openblas-pthread" \
      -DCMAKE_BUILD_RPATH="$lib;$lib/openblas-pthread" ${CUDA_ARCH:+-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH}
    cmake --build "$top/core" -j "$(nproc)"
    echo "built $top/core; run: ctest --test-dir $top/core -L gpu --output-on-failure" ;;
  build-full)
    debs=$(realpath "$2"); top=$(realpath -m "$3"); pfx=$top/prefix
    unpack "$debs" "$pfx"
    lib=$pfx/usr/lib/x86_64-linux-gnu
    h5=$lib/hdf5/openmpi
    mpiinc=$lib/openmpi/include
    libmpi=$(ls "$lib"/libmpi.so.* 2>/dev/null | head -1 || true)
    mpirun=$(ls "$pfx"/usr/bin/mpirun.openmpi "$pfx"/usr/bin/orterun "$pfx"/usr/bin/mpirun 2>/dev/null | head -1 || true)
    # how to run what is built: the prefix's libraries, Open MPI relocated to the prefix
    {
      echo "export LD_LIBRARY_PATH=$lib:$lib/openblas-pthread:$h5/lib:$lib/openmpi/lib:\${LD_LIBRARY_PATH:-}"
      echo "export OPAL_PREFIX=$pfx/usr PATH=$pfx/usr/bin:\$PATH"
      echo "export OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1"
    } >"$top/env.sh"
    # shellcheck disable=SC1091
    . "$top/env.sh"
    export PKG_CONFIG_PATH=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$pfx
    # MPI and HDF5 by their files, not by compiler wrappers that name /usr
    cmake -S . -B "$top/full" -DDP_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON \
      -DBLAS_LIBRARIES="$lib/openblas-pthread/libopenblas.so" \
      -DCBLAS_INCLUDE_DIR="$pfx/usr/include/x86_64-linux-gnu/openblas-pthread" \
      -DMPI_C_COMPILER=MPI_C_COMPILER-NOTFOUND -DMPI_SKIP_COMPILER_WRAPPER=ON -DMPI_C_HEADER_DIR="$mpiinc" \
      -DMPI_C_LIB_NAMES=mpi -DMPI_mpi_LIBRARY="$libmpi" -DMPIEXEC_EXECUTABLE="$mpirun" \
      -DHDF5_C_COMPILER_EXECUTABLE=HDF5_C_COMPILER_EXECUTABLE-NOTFOUND -DHDF5_ROOT="$h5" \
      -DHDF5_PREFER_PARALLEL=ON -DHDF5_C_INCLUDE_DIR="$pfx/usr/include/hdf5/openmpi" \
      -DCMAKE_BUILD_RPATH="$lib;$lib/openblas-pthread;$h5/lib" ${DP_CUDA_LIBS:+-DDP_CUDA_LIBS=$DP_CUDA_LIBS} \
      ${CUDA_ARCH:+-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH}
    cmake --build "$top/full" -j "$(nproc)"
    echo "built $top/full; before running it: . $top/env.sh" ;;
  *) echo "usage: gpu_prefix.sh download DIR | download-full DIR [BIN] | build DEBDIR TOPDIR | build-full DEBDIR TOPDIR" >&2
     exit 2 ;;
esac
