#!/usr/bin/env bash
# GGUF against the gguf package and transformers (gguf_conformance.py), and a
# short slice of the real pretrained model, SmolLM2-135M-Instruct (fetched by
# scripts/smollm2.sh): load, PPL on a small Brown text, one PPL scoring pass on
# 2 calibration samples, and a greedy continuation that names Paris.
# usage: run_gguf.sh DEPTHPRUNE SRC_DIR ASSETS_DIR WORK_DIR   (under venv_run.sh)
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); ASSETS=$(realpath -m "$3"); WORK=$(realpath -m "$4")
. "$SRC/cli/lib.sh"
setup_assets
SMOL=$(bash "$SRC/../scripts/smollm2.sh" "$ASSETS/../smollm2" "$DP" | tail -1) || { echo "SmolLM2 unavailable" >&2; exit 1; }
python "$SRC/oracle/gguf_conformance.py" "$DP" "$ASSETS" "$SMOL" "$WORK" || fail "gguf_conformance.py"
M="$SMOL/hf"
bash "$SRC/../scripts/brown_text.sh" "$NM" "$T/brown.txt" '^ca1[0-1]$' || exit 1
out=$("$DP" ppl --quiet --model "$M" --text "$T/brown.txt" --seq-len 128 --batch 4 --json) || fail "ppl on SmolLM2: $out"
python - "$out" <<'PY' || fail "SmolLM2 PPL on Brown out of the plausible range: $out"
import json, sys
p = json.loads(sys.argv[1])["ppl"]
print("ok   SmolLM2-135M-Instruct PPL on Brown ca10-ca11: %.2f" % p)
assert 10 < p < 300, p
PY
expect_exit 0 "" "$DP" score --model "$M" --calib "$T/brown.txt" --criterion ppl --samples 2 --seq-len 32 --run "$T/score"
python - "$T/score/scores.json" <<'PY' || fail "SmolLM2 block scores incomplete"
import json, sys
s = json.load(open(sys.argv[1]))["criteria"]["ppl"]["scores"]
assert len(s) == 30 and all(x > 0 for x in s), s
print("ok   SmolLM2 PPL block scores: first block %.1f, median %.1f (removing block 0 is the costliest: %s)" % (
    s[0], sorted(s)[15], max(range(30), key=lambda i: s[i]) == 0))
PY
expect_exit 0 "Paris" "$DP" generate --model "$M" --prompt "The capital of France is" --max-new 8
finish
