#!/usr/bin/env bash
# Tokenizer throughput: depthprune vs HF tokenizers.js (the peer), same
# machine, same text (the Brown corpus: every document, and every sentence
# separately), same tokenizer.json. Prints tokens/s of each and the ratio.
# usage: bash bench/tokenizer_bench.sh [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-3}
[ -x build/depthprune ] || bash scripts/setup.sh >/dev/null
NM=$(realpath "$(bash scripts/assets.sh build/assets | tail -1)")
W=build/bench_tok; mkdir -p "$W"
cp tests/oracle/gen_expected.mjs build/assets/
(cd build/assets && node gen_expected.mjs "$NM" "$(realpath ../bench_tok 2>/dev/null || realpath "$W")" >/dev/null)
cat > build/assets/bench.mjs <<'JS'
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "fs";
const [dir, input, reps] = process.argv.slice(2);
const tok = new Tokenizer(JSON.parse(fs.readFileSync(dir + "/tokenizer.json", "utf8")), JSON.parse(fs.readFileSync(dir + "/tokenizer_config.json", "utf8")));
const texts = fs.readFileSync(input, "utf8").split("\n").filter((l) => l.length).map((l) => JSON.parse(l));
let best = Infinity, n = 0;
for (let r = 0; r < +reps; r++) {
  const t0 = process.hrtime.bigint(); n = 0;
  for (const s of texts) n += tok.encode(s).ids.length;
  const dt = Number(process.hrtime.bigint() - t0) / 1e9; if (dt < best) best = dt;
}
console.log(`${n} ${best}`);
JS
printf '%-8s %-6s %12s %14s %14s %8s\n' tokenizer input tokens "depthprune t/s" "tokenizers.js" ratio
for tk in llama2 llama3; do
  M=$NM/@lenml/tokenizer-$tk/models
  for set in docs lines; do
    read -r njs tjs < <(cd build/assets && node bench.mjs "$M" "$(realpath "../bench_tok/$set.jsonl")" "$REPEATS")
    best=1e9
    for r in $(seq "$REPEATS"); do
      t0=$(date +%s.%N); build/depthprune tokenize --quiet --model "$M" --jsonl < "$W/$set.jsonl" > "$W/out.ids"; t1=$(date +%s.%N)
      best=$(awk -v a="$t0" -v b="$t1" -v c="$best" 'BEGIN { d = b - a; print (d < c ? d : c) }')
    done
    ndp=$(wc -w < "$W/out.ids")
    awk -v tk=$tk -v set=$set -v n="$ndp" -v t="$best" -v nj="$njs" -v tj="$tjs" \
      'BEGIN { printf "%-8s %-6s %12d %14.0f %14.0f %7.2fx\n", tk, set, n, n / t, nj / tj, (n / t) / (nj / tj) }'
  done
done
echo "(depthprune time includes process start and loading tokenizer.json; tokenizers.js time excludes its load)"
