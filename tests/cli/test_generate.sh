#!/usr/bin/env bash
# `depthprune generate` and `bench-generate` on the embedded model:
# deterministic greedy and seeded sampling, a depth-pruned export, the
# benchmark's JSON (every point, floors, speedups) and plot; bad input.
# usage: test_generate.sh DEPTHPRUNE SRC_DIR MPIEXEC
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); MPIEXEC=$3
. "$SRC/cli/lib.sh"
export OMP_NUM_THREADS=1
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
M=$SRC/../models/tiny-brown
G=(generate --model "$M" --prompt "The jury said that" --max-new 24 --quiet)
a=$("$DP" "${G[@]}") || fail "greedy generate failed"
b=$("$DP" "${G[@]}") || fail "greedy generate failed"
[ "$a" = "$b" ] || fail "greedy generation is not deterministic"
case $a in "The jury said that"?*) echo "ok   greedy: $a";; *) fail "output does not continue the prompt: $a";; esac
s1=$("$DP" "${G[@]}" --temperature 0.9 --top-p 0.95 --seed 5)
s2=$("$DP" "${G[@]}" --temperature 0.9 --top-p 0.95 --seed 5)
s3=$("$DP" "${G[@]}" --temperature 0.9 --top-p 0.95 --seed 6)
[ "$s1" = "$s2" ] || fail "a seed does not fix the sample"
[ "$s1" != "$s3" ] || fail "two seeds gave the same sample"
g1=$("$DP" "${G[@]}" --temperature 1 --top-k 1)
[ "$g1" = "$a" ] || fail "top-k 1 differs from greedy"

expect_exit 0 "exported 6 of 8 blocks" "$DP" export --model "$M" --drop 3,4 --out "$T/pruned"
expect_exit 0 "bench-generate: $T/b.json" "$DP" bench-generate --model "$M,$T/pruned" --batch 1,4 --gen-len 8,12 \
  --prompt-len 8 --warmup 0 --runs 2 --out "$T/b.json"
python3 - "$T/b.json" <<'PY' || fail "bench-generate JSON incomplete"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["bandwidth_GBps"] > 0 and r["gemm_GFLOPs"] > 0
res = r["results"]
assert len(res) == 8, len(res)
for x in res:
    assert x["latency_min_s"] <= x["latency_s"] <= x["latency_max_s"]
    assert x["tokens_per_s"] > 0 and x["floor_step_ms"] > 0 and 0 < x["floor_fraction"]
    assert x["floor_kind"] in ("bandwidth", "compute") and "speedup_vs_first" in x
assert sorted({x["blocks"] for x in res}) == [6, 8]
assert all(x["speedup_vs_first"] == 1 for x in res if x["blocks"] == 8)
PY
command -v gnuplot >/dev/null && { [ -f "$T/b.png" ] || fail "no latency-throughput plot"; }

expect_exit 2 "--prompt TEXT is required" "$DP" generate --model "$M"
expect_exit 2 "--top-p" "$DP" "${G[@]}" --top-p 2
expect_exit 2 "--temperature expects a number" "$DP" "${G[@]}" --temperature hot
expect_exit 1 "exceed max_position_embeddings" "$DP" generate --model "$M" --prompt "a" --max-new 100000
expect_exit 1 "cannot open" "$DP" generate --model "$T/none" --prompt "a"
expect_exit 2 "--batch expects" "$DP" bench-generate --model "$M" --batch 0,4 --out "$T/x.json"
expect_exit 2 "--gen-len expects" "$DP" bench-generate --model "$M" --gen-len 8x --out "$T/x.json"
expect_exit 1 "" "$DP" bench-generate --model "$M,$T/none" --batch 1 --gen-len 4 --runs 1 --warmup 0 --out "$T/x.json"
[ ! -e "$T/x.json" ] || fail "a failed benchmark wrote its results"
expect_exit 2 "one process" "$MPIEXEC" --bind-to none -np 2 "$DP" "${G[@]}"
finish
