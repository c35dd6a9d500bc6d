#!/usr/bin/env bash
# `depthprune prune` end to end with the real Llama-2 tokenizer and Brown
# text: one-shot removes the first K blocks of the scores' order and the
# exported model's perplexity equals the dense model run with those blocks
# dropped; iterative (2 ranks) matches its first step with the one-shot PPL
# score and heals between removals; bad input gets one clear error and no
# output directory.
# usage: test_prune.sh DEPTHPRUNE SRC_DIR ASSETS_DIR MPIEXEC
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); ASSETS=$(realpath -m "$3"); MPIEXEC=$4
. "$SRC/cli/lib.sh"
setup_assets
bash "$SRC/../scripts/brown_text.sh" "$NM" "$T/brown.txt" '^ca0[1-6]$' || exit 1
bash "$SRC/../scripts/brown_alpaca.sh" "$NM" "$T/alpaca.json" '^ca0[1-9]$' 64 || exit 1
M="$T/tiny"
expect_exit 0 "" "$DP" synth --out "$M" --tokenizer "$TOK" --layers 8 --hidden 64 --heads 4 --kv-heads 2 \
  --intermediate 176 --max-pos 256 --seed 5
expect_exit 0 "" "$DP" synth --out "$T/other" --tokenizer "$TOK" --layers 8 --hidden 64 --heads 4 --kv-heads 2 \
  --intermediate 176 --max-pos 256 --seed 6
MPI=("$MPIEXEC" --bind-to none -np 2)
C=(--samples 8 --seq-len 64 --batch 4)
expect_exit 0 "scores:" "${MPI[@]}" "$DP" score --model "$M" --calib "$T/brown.txt" --criterion ppl,ppl+,magnitude "${C[@]}" --run "$T/s"
order=$(grep -o '"ppl": {"scores": \[[^]]*\], "order": \[[^]]*\]' "$T/s/scores.json" | sed 's/.*"order": \[\([^]]*\)\]/\1/')
first2=$(cut -d, -f1-2 <<<"$order" | tr -d ' ')

# ---- one-shot ----
expect_exit 0 "(one-shot, ppl): 6 of 8 blocks kept" "$DP" prune --model "$M" --scores "$T/s/scores.json" --ratio 0.25 \
  --out "$T/p1" --batch 4
grep -qE "\"removed\":\s*\[$(sed 's/,/, /' <<<"$first2")\]" "$T/p1/prune.json" || fail "one-shot did not remove the first two of the order ($first2)"
grep -qE '"layers_after":\s*6' "$T/p1/prune.json" || fail "prune.json layers_after"
grep -qE '"num_hidden_layers":\s*6,' "$T/p1/config.json" || fail "exported config has the wrong layer count"
grep -qE '"ppl_after":\s*\[' "$T/p1/prune.json" || fail "no PPL curve in prune.json"
sorted=$(tr ',' '\n' <<<"$first2" | sort -n | paste -sd,)
a=$("$DP" ppl --model "$T/p1" --text "$T/brown.txt" --seq-len 64 --json 2>/dev/null | grep -o '"ppl": [0-9.e+-]*')
b=$("$DP" ppl --model "$M" --drop "$sorted" --text "$T/brown.txt" --seq-len 64 --json 2>/dev/null | grep -o '"ppl": [0-9.e+-]*')
[ -n "$a" ] && [ "$a" = "$b" ] && echo "ok   exported model PPL equals the layer-map run ($a)" ||
  fail "exported PPL '$a' differs from the layer-map run '$b'"
expect_exit 0 "2 of 8 blocks kept" "$DP" prune --model "$M" --scores "$T/s/scores.json" --criterion magnitude --remove 6 \
  --out "$T/p2"

# ---- iterative, 2 ranks: step 1 = the one-shot PPL score's minimum ----
expect_exit 0 "(iterative, ppl)" "${MPI[@]}" "$DP" prune --model "$M" --schedule iterative --run "$T/s" --remove 3 \
  --out "$T/p3" --batch 4
first=$(cut -d, -f1 <<<"$order" | tr -d ' ')
grep -qE "\"removed\":\s*\[$first," "$T/p3/prune.json" || fail "iterative step 1 is not the one-shot PPL minimum ($first)"
[ -f "$T/s/prune_ppl.dat" ] && [ "$(wc -l <"$T/s/prune_ppl.dat")" = 4 ] || fail "no PPL-vs-removed data"
command -v gnuplot >/dev/null && { [ -f "$T/s/prune_ppl.png" ] || fail "no PPL plot"; }
# with healing (LoRA, 2 steps after each removal) and its own calibration
expect_exit 0 "(iterative, ppl)" "${MPI[@]}" "$DP" prune --model "$M" --schedule iterative --run "$T/h" \
  --calib "$T/brown.txt" "${C[@]}" --remove 2 --out "$T/p4" --heal-steps 2 --heal-data "$T/alpaca.json" \
  --set train.global_batch=4 --set train.micro_batch=2 --set train.val_size=0 --set train.warmup=0
[ -d "$T/h/heal-01/ckpt" ] || fail "no healing run"
grep -qE '"heal_steps":\s*2' "$T/p4/prune.json" || fail "prune.json lacks heal_steps"
expect_exit 0 '"ppl":' "$DP" ppl --model "$T/p4" --text "$T/brown.txt" --seq-len 64 --json

# ---- sub-layers: attention and MLP of each block as separate candidates ----
expect_exit 0 "scores:" "${MPI[@]}" "$DP" score --model "$M" --calib "$T/brown.txt" --criterion ppl,taylor --units sublayer \
  "${C[@]}" --run "$T/su"
expect_exit 0 "removed sub-layers" "$DP" prune --model "$M" --scores "$T/su/scores.json" --remove 5 --out "$T/ps" --batch 4
python3 - "$T/su/scores.json" "$T/ps/prune.json" "$T/ps/config.json" <<'PY' || fail "sub-layer pruning output is wrong"
import json, sys
s, p, c = (json.load(open(f)) for f in sys.argv[1:4])
assert s["unit"] == "sublayer" and s["units"][:4] == ["attn.0", "mlp.0", "attn.1", "mlp.1"], s.get("units")
o = s["criteria"]["ppl"]["order"]
assert p["removed_units"] == [s["units"][u] for u in o[:5]], (p["removed_units"], o[:5])
# the first removal's calibration PPL (from the embedding, through the layer map) == its score (from the cached input)
assert p["ppl_after"][0] == s["criteria"]["ppl"]["scores"][o[0]], (p["ppl_after"][0], s["criteria"]["ppl"]["scores"][o[0]])
whole = [b for b in range(8) if 2 * b in o[:5] and 2 * b + 1 in o[:5]]
assert p["removed"] == whole and c["num_hidden_layers"] == 8 - len(whole)
keep = [b for b in range(8) if b not in whole]
sa = sorted(keep.index(u // 2) for u in o[:5] if u % 2 == 0 and u // 2 not in whole)
sm = sorted(keep.index(u // 2) for u in o[:5] if u % 2 == 1 and u // 2 not in whole)
assert c["depthprune"].get("skip_attn", []) == sa and c["depthprune"].get("skip_mlp", []) == sm, (c["depthprune"], sa, sm)
print("ok   sub-layer pruning: 5 units removed in score order (%s); export skips %s / %s" % (
    ", ".join(p["removed_units"]), sa, sm))
PY
# the export (zeroed projections, skip lists) == the dense model through the layer map == the export computed
# through its zeroed weights (skip lists removed): bit for bit
da=$(python3 -c "import json;p=json.load(open('$T/ps/prune.json'));print(','.join(str(b) for b in p['skip_attn']))")
dm=$(python3 -c "import json;p=json.load(open('$T/ps/prune.json'));print(','.join(str(b) for b in p['skip_mlp']))")
dr=$(python3 -c "import json;p=json.load(open('$T/ps/prune.json'));print(','.join(str(b) for b in p['removed']))")
a=$("$DP" ppl --model "$T/ps" --text "$T/brown.txt" --seq-len 64 --json 2>/dev/null | grep -o '"ppl": [0-9.e+-]*')
b=$("$DP" ppl --model "$M" ${dr:+--drop $dr} ${da:+--drop-attn $da} ${dm:+--drop-mlp $dm} --text "$T/brown.txt" \
  --seq-len 64 --json 2>/dev/null | grep -o '"ppl": [0-9.e+-]*')
cp -r "$T/ps" "$T/psz" && python3 -c "
import json; f='$T/psz/config.json'; c=json.load(open(f)); c['depthprune'].pop('skip_attn', None)
c['depthprune'].pop('skip_mlp', None); json.dump(c, open(f, 'w'))"
z=$("$DP" ppl --model "$T/psz" --text "$T/brown.txt" --seq-len 64 --json 2>/dev/null | grep -o '"ppl": [0-9.e+-]*')
[ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" = "$z" ] && echo "ok   sub-layer export PPL == layer-map run == zeroed weights ($a)" ||
  fail "sub-layer export PPL '$a', layer-map run '$b', zeroed weights '$z' differ"
# iterative over sub-layers (2 ranks): its first step is the one-shot sub-layer PPL minimum
expect_exit 0 "removed sub-layers" "${MPI[@]}" "$DP" prune --model "$M" --schedule iterative --units sublayer \
  --run "$T/su" --remove 3 --out "$T/pis" --batch 4
python3 - "$T/su/scores.json" "$T/pis/prune.json" <<'PY' || fail "iterative sub-layer pruning output is wrong"
import json, sys
s, p = (json.load(open(f)) for f in sys.argv[1:3])
assert p["unit"] == "sublayer" and len(p["removed_units"]) == 3 and len(p["ppl_after"]) == 3, p
first = s["units"][s["criteria"]["ppl"]["order"][0]]
assert p["removed_units"][0] == first, (p["removed_units"], first)
assert p["ppl_after"][0] == s["criteria"]["ppl"]["scores"][s["criteria"]["ppl"]["order"][0]]
print("ok   iterative sub-layer pruning: %s, step 1 = the one-shot minimum (%s)" % (", ".join(p["removed_units"]), first))
PY
expect_exit 2 "takes --remove K" "$DP" prune --model "$M" --schedule iterative --units sublayer --run "$T/su" \
  --ratio 0.25 --out "$T/x"
expect_exit 0 "" "$DP" export --model "$M" --drop-attn 2 --drop-mlp 2,5 --out "$T/ex"
grep -q '"skip_mlp"' "$T/ex/config.json" || fail "export --drop-mlp wrote no skip list"
expect_exit 1 "--drop-attn: block list '9': block 9 outside" "$DP" ppl --model "$M" --text "$T/brown.txt" --drop-attn 9

# ---- bad input ----
expect_exit 2 "keep at least 1" "$DP" prune --model "$M" --scores "$T/s/scores.json" --ratio 0.99 --out "$T/x"
expect_exit 2 "only 2 unprotected candidates" "$DP" prune --model "$M" --scores "$T/s/scores.json" --criterion ppl+ \
  --remove 3 --out "$T/x"
expect_exit 1 "scores a different model" "$DP" prune --model "$T/other" --scores "$T/s/scores.json" --remove 2 --out "$T/x"
expect_exit 1 "cannot open" "$DP" prune --model "$M" --scores "" --remove 1 --out "$T/x"  # an empty path: an error, no overflow (ASan build)
expect_exit 2 "exactly one of --ratio R and --remove K" "$DP" prune --model "$M" --scores "$T/s/scores.json" --ratio 0.25 \
  --remove 2 --out "$T/x"
expect_exit 2 "--scores is for one-shot" "$DP" prune --model "$M" --schedule iterative --scores "$T/s/scores.json" \
  --remove 2 --out "$T/x"
expect_exit 2 "has no criterion 'bi'" "$DP" prune --model "$M" --scores "$T/s/scores.json" --criterion bi --remove 2 --out "$T/x"
expect_exit 2 "has no calib.h5" "$DP" prune --model "$M" --schedule iterative --run "$T/empty" --remove 2 --out "$T/x"
expect_exit 1 "made for a different model" "$DP" prune --model "$T/other" --schedule iterative --run "$T/s" --remove 2 --out "$T/x"
expect_exit 1 "already exists" "$DP" prune --model "$M" --scores "$T/s/scores.json" --remove 2 --out "$T/p1"
printf '{"criteria": ' >"$T/bad.json"
expect_exit 1 "not a JSON object" "$DP" prune --model "$M" --scores "$T/bad.json" --remove 2 --out "$T/x"
[ ! -e "$T/x" ] || fail "a failed prune left an output directory"
finish
