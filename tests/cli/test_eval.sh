#!/usr/bin/env bash
# `depthprune eval` end to end with the real Llama-2 tokenizer: the shipped
# Brown cloze task equals its generator's output; results identical for 1,
# 2 and 3 ranks; request tokenization as lm-evaluation-harness (context
# trailing spaces moved to the continuation, continuation = encode(whole)
# beyond encode(context)), checked against `depthprune tokenize`; each of the
# seven task converters runs; bad task files.
# usage: test_eval.sh DEPTHPRUNE SRC_DIR ASSETS_DIR MPIEXEC
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); ASSETS=$(realpath -m "$3"); MPIEXEC=$4
. "$SRC/cli/lib.sh"
setup_assets
bash "$SRC/../scripts/brown_text.sh" "$NM" "$T/brown.txt" '^ca0[1-3]$' || exit 1
bash "$SRC/../scripts/brown_cloze.sh" "$NM" "$T/cloze.jsonl" '^c[a-r]\d\d$' 500 || exit 1
cmp -s "$T/cloze.jsonl" "$SRC/../data/brown-cloze.jsonl" || fail "data/brown-cloze.jsonl differs from its generator's output"
M="$T/tiny"
expect_exit 0 "" "$DP" synth --out "$M" --tokenizer "$TOK" --layers 4 --hidden 64 --heads 4 --kv-heads 2 \
  --intermediate 176 --max-pos 64 --seed 5
ARGS=(eval --model "$M" --ppl "brown=$T/brown.txt" --task "cloze=$T/cloze.jsonl" --limit 60 --batch 8 --set eval.seq_len=64)

# rank-count invariance
for np in 1 2 3; do
  expect_exit 0 "| cloze (acc) |" "$MPIEXEC" --oversubscribe --bind-to none -np $np "$DP" "${ARGS[@]}" --out "$T/r$np.json"
done
strip() { grep -v '"date"\|"ranks"' "$1"; }
diff <(strip "$T/r1.json") <(strip "$T/r2.json") >/dev/null || fail "2 ranks differ from 1"
diff <(strip "$T/r1.json") <(strip "$T/r3.json") >/dev/null || fail "3 ranks differ from 1"
grep -qE '"docs":\s*60' "$T/r1.json" || fail "--limit 60 not applied"
for k in model_hash tokenizer_hash file_hash protocol acc_norm_stderr average version; do
  grep -q "\"$k\"" "$T/r1.json" || fail "results.json lacks $k"
done

# tokenization as the harness, against the tokenize command
cat >"$T/g.jsonl" <<'J'
{"context": "The jury said  ", "choices": ["it was over.", "no"], "label": 0}
{"context": "Caf\u00e9 society", "choices": ["thrived in 1961 .", "\u00e9t\u00e9"], "label": 1}
{"contexts": ["The trophy", "The suitcase"], "continuation": "was too big.", "label": 0}
J
expect_exit 0 "results:" "$DP" eval --model "$M" --task "g=$T/g.jsonl" --out "$T/g.json" --dump-requests "$T/req.jsonl"
node -e '
const fs=require("fs"),cp=require("child_process");
const [dp,model,gfile,rfile]=process.argv.slice(1);
const docs=fs.readFileSync(gfile,"utf8").trim().split("\n").map(JSON.parse);
const reqs=fs.readFileSync(rfile,"utf8").trim().split("\n").map(JSON.parse);
const enc=s=>cp.execFileSync(dp,["tokenize","--model",model,"--jsonl","--no-bos"],{input:JSON.stringify(s)+"\n"}).toString().trim().split(/\s+/).filter(x=>x).map(Number);
let bad=0;
for(const r of reqs){const d=docs[r.doc];
 let ctx=d.contexts?d.contexts[r.choice]:d.context, cont=" "+(d.contexts?d.continuation:d.choices[r.choice]);
 const t=ctx.replace(/\s+$/,""); cont=ctx.slice(t.length)+cont; ctx=t;
 const whole=enc(ctx+cont), ce=enc(ctx), want=whole.slice(ce.length), inp=whole.slice(0,-1);
 if(JSON.stringify(want)!==JSON.stringify(r.cont)||JSON.stringify(inp)!==JSON.stringify(r.ids)){bad++;console.error("request",r.doc,r.choice,"got",r.ids,r.cont,"want",inp,want);}}
process.exit(bad?1:0);' "$DP" "$M" "$T/g.jsonl" "$T/req.jsonl" && echo "ok   request tokens match the harness rule" ||
  fail "request tokenization differs from the harness rule"

# the seven task converters on handcrafted rows
printf '%s\n' '{"passage": "Cats purr.", "question": "do cats purr", "answer": true}' >"$T/boolq.jsonl"
printf '%s\n' '{"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Eat the lid.", "label": 0}' >"$T/piqa.jsonl"
printf '%s\n' '{"activity_label": "Home", "ctx_a": "[header] Grow [title] Pick a spot.", "ctx_b": "you water", "endings": ["daily.", "never [x] at all."], "label": "0"}' >"$T/hellaswag.jsonl"
printf '%s\n' '{"sentence": "The trophy did not fit because the _ was too big.", "option1": "trophy", "option2": "case", "answer": "1"}' >"$T/winogrande.jsonl"
printf '%s\n' '{"question": "Which is a gas?", "choices": {"text": ["ice", "steam"], "label": ["A", "B"]}, "answerKey": "B"}' >"$T/arc.jsonl"
printf '%s\n' '{"question_stem": "The sun is a", "choices": {"text": ["star", "moon"], "label": ["A", "B"]}, "answerKey": "A"}' >"$T/obqa.jsonl"
expect_exit 0 "| average |" "$DP" eval --model "$M" --out "$T/seven.json" --task \
  "boolq=$T/boolq.jsonl,piqa=$T/piqa.jsonl,hellaswag=$T/hellaswag.jsonl,winogrande=$T/winogrande.jsonl,arc_easy=$T/arc.jsonl,arc_challenge=$T/arc.jsonl,openbookqa=$T/obqa.jsonl"
[ "$(grep -c '"reported"' "$T/seven.json")" = 7 ] || fail "not all seven tasks in the results"

# bad task files
printf '%s\n%s\n%s\n' '{"context": "a", "choices": ["b", "c"], "label": 0}' '{oops' '{"context": "d", "choices": ["e"], "label": 0}' >"$T/bad.jsonl"
expect_exit 1 "bad.jsonl line 2: not a JSON object" "$DP" eval --model "$M" --task "x=$T/bad.jsonl" --out "$T/x.json"
[ ! -e "$T/x.json" ] || fail "a refused eval wrote results"
expect_exit 0 "results:" "$DP" eval --model "$M" --task "x=$T/bad.jsonl" --skip-bad --out "$T/skip.json"
grep -qE '"skipped_lines":\s*1' "$T/skip.json" || fail "skipped line not counted"
printf '%s\n' '{"context": "a", "choices": ["b", "c"], "label": 2}' >"$T/lab.jsonl"
expect_exit 1 "line 1: label 2 outside the 2 choices" "$DP" eval --model "$M" --task "x=$T/lab.jsonl" --out "$T/x.json"
printf '%s\n' '{"context": "a", "choices": [], "label": 0}' >"$T/empty.jsonl"
expect_exit 1 "line 1: empty choices" "$DP" eval --model "$M" --task "x=$T/empty.jsonl" --out "$T/x.json"
long=$(printf 'word %.0s' $(seq 200))
printf '{"context": "%s", "choices": ["end", "stop"], "label": 0}\n' "$long" >"$T/long.jsonl"
expect_exit 0 "results:" "$DP" eval --model "$M" --task "x=$T/long.jsonl" --out "$T/long.json"
grep -qE '"truncated_requests":\s*2' "$T/long.json" || fail "long contexts were not counted as truncated"
expect_exit 2 "give --ppl NAME=FILE and/or --task" "$DP" eval --model "$M"
expect_exit 2 "expected NAME=FILE" "$DP" eval --model "$M" --task "$T/lab.jsonl"
finish
