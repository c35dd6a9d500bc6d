#!/usr/bin/env bash
# cuBLAS and NCCL for a CUDA toolkit that ships nvcc and the runtime only
# (no cuBLAS, no NCCL): NVIDIA's PyPI wheels, the release matching the
# toolkit's major.minor, unpacked into a prefix with include/ and lib/
# (plus the unversioned .so links a linker looks for).
#
#   bash scripts/cuda_libs.sh PREFIX     prints PREFIX when it holds cuBLAS
#                                        (already or now), nothing otherwise
# setup.sh passes the prefix to CMake as -DDP_CUDA_LIBS=PREFIX. Exit 0 either
# way: without cuBLAS the build continues without the CUDA backend.
set -uo pipefail
pfx=$(realpath -m "${1:?usage: cuda_libs.sh PREFIX}")
nvcc=$(command -v nvcc || true)
[ -n "$nvcc" ] || { echo "cuda_libs: no nvcc on PATH" >&2; exit 0; }
top=$("$nvcc" --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)
if [ -n "$top" ] && ls "$top"/lib64/libcublas.so* "$top"/targets/*/lib/libcublas.so* >/dev/null 2>&1; then
  exit 0   # the toolkit has cuBLAS: nothing to add
fi
ver=$("$nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1.\2/p')
major=${ver%%.*}
if [ -e "$pfx/lib/libcublas.so" ] && [ "$(cat "$pfx/VERSION" 2>/dev/null)" = "$ver" ]; then
  echo "$pfx"; exit 0
fi
# pinned: cuBLAS follows the toolkit's minor release; NCCL one tested release
case "$ver" in
  13.0) pk=("nvidia-cublas==13.0.2.14" "nvidia-nccl-cu13==2.28.9") ;;
  13.*) pk=("nvidia-cublas==$ver.*" "nvidia-nccl-cu13==2.28.9") ;;
  12.*) pk=("nvidia-cublas-cu12==$ver.*" "nvidia-nccl-cu12==2.28.9") ;;
  *) echo "cuda_libs: CUDA $ver: no wheel mapping (12.x and 13.x known)" >&2; exit 0 ;;
esac
command -v python3 >/dev/null || { echo "cuda_libs: no python3 for pip" >&2; exit 0; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "cuda_libs: CUDA $ver toolkit without cuBLAS; fetching ${pk[*]} (about 600 MB)" >&2
if ! python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp/whl" "${pk[@]}" >&2; then
  echo "cuda_libs: pip download failed; building without CUDA" >&2; exit 0
fi
rm -rf "$pfx.part"; mkdir -p "$pfx.part/include" "$pfx.part/lib"
for w in "$tmp"/whl/*.whl; do
  python3 -m zipfile -e "$w" "$tmp/x" >&2 || { echo "cuda_libs: cannot unpack $w" >&2; exit 0; }
done
# wheel layouts: nvidia/cu13/{include,lib} (CUDA 13), nvidia/<pkg>/{include,lib}
for d in "$tmp"/x/nvidia/*/; do
  [ -d "$d/include" ] && cp -r "$d/include/." "$pfx.part/include/"
  [ -d "$d/lib" ] && cp -r "$d/lib/." "$pfx.part/lib/"
done
for so in "$pfx.part"/lib/lib*.so.*; do
  base=${so%%.so.*}.so; [ -e "$base" ] || ln -s "$(basename "$so")" "$base"
done
echo "$ver" >"$pfx.part/VERSION"
printf '%s\n' "${pk[@]}" >"$pfx.part/PACKAGES"
[ -e "$pfx.part/lib/libcublas.so" ] || { echo "cuda_libs: no libcublas in the wheels" >&2; rm -rf "$pfx.part"; exit 0; }
rm -rf "$pfx"; mv "$pfx.part" "$pfx"
echo "$pfx"
