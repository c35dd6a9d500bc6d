#!/usr/bin/env bash
# The house format (.clang-format) with a pinned clang-format (tests/requirements.txt:
# clang-format==18.1.8 in .venv, so Debian 12 and 13 format alike).
#   bash scripts/format.sh           reformat every C/CUDA source in place
#   bash scripts/format.sh --check   list the files that differ; exit 1 if any (the test suite runs this)
# Generated files (src/core/unicase.inc) are left alone.
set -uo pipefail
cd "$(dirname "$0")/.."
CF=${CLANG_FORMAT:-.venv/bin/clang-format}
[ -x "$CF" ] || { echo "format.sh: no $CF (bash scripts/venv.sh makes it)" >&2; exit 77; }
mapfile -t files < <(git ls-files 'src/*.c' 'src/*.h' 'src/*.cu' 'src/*.cuh' 'src/*.inc' 'include/*.h' 'tests/*.c' \
  'tests/*.h' 'bench/*.c' 'fuzz/*.c' | grep -v '^src/core/unicase.inc$')
if [ "${1:-}" = --check ]; then
  bad=0
  for f in "${files[@]}"; do
    if ! "$CF" --dry-run --Werror "$f" >/dev/null 2>&1; then echo "not formatted: $f"; bad=1; fi
  done
  [ $bad = 0 ] && echo "format: ${#files[@]} files match .clang-format ($("$CF" --version))"
  exit $bad
fi
"$CF" -i "${files[@]}"
