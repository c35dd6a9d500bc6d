#!/usr/bin/env bash
# The depthprune command: help, version, config resolution, clear errors for
# bad flags and configs, and the same behaviour under mpirun.
set -u
DP=$1; SRC=$2
. "$SRC/cli/lib.sh"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT

expect_exit 0 "depthprune" "$DP" --version
expect_exit 0 "commands:" "$DP" --help
expect_exit 2 "commands:" "$DP"
expect_exit 2 "unknown command 'frobnicate'" "$DP" frobnicate
for c in $("$DP" --help | awk '/^commands:/{f=1;next} f && /^  [a-z]/ {print $1}'); do
  expect_exit 0 "usage: depthprune $c" "$DP" "$c" --help
done

# the same flag sets the same config key in every command ([key] in --help), and every
# command that samples calibration data takes --seed for run.seed
for c in $("$DP" --help | awk '/^commands:/{f=1;next} f && /^  [a-z]/ {print $1}'); do
  "$DP" "$c" --help | sed -n "s/^  \(--[a-z0-9-]*\) .*\[\([a-z_.]*\)\]\$/\1 \2 $c/p"
done | sort >"$T/flag_keys"
awk '{ if (($1 in k) && k[$1] != $2) { print "FAIL: " $1 " is " k[$1] " in " c[$1] " but " $2 " in " $3; bad = 1 }
       k[$1] = $2; c[$1] = $3 } END { exit bad }' "$T/flag_keys" || fail "one flag, several config keys"
for c in score prune width-prune retrain generate; do
  grep -q "^--seed run.seed $c\$" "$T/flag_keys" || fail "$c: no --seed bound to run.seed"
done
[ "$(wc -l <"$T/flag_keys")" -ge 20 ] || fail "only $(wc -l <"$T/flag_keys") bound flags"
# a flag overrides --set and the file, and a bad value is a usage error naming the flag
expect_exit 2 "--samples: key 'calib.samples' expects an integer" "$DP" score --model x --calib y --samples many

expect_exit 0 "seed: 1234  # default" "$DP" config
cat > "$T/good.yaml" <<'Y'
run:
  seed: 7
eval:
  seq_len: 256
Y
expect_exit 0 "seq_len: 256  # $T/good.yaml:4" "$DP" config --config "$T/good.yaml"
expect_exit 0 "seed: 9  # --set" "$DP" config --config "$T/good.yaml" --set run.seed=9
expect_exit 0 "seed: 9  # --set" "$DP" config --set=run.seed=9

printf 'eval:\n  seq_lenn: 3\n' > "$T/bad1.yaml"
expect_exit 1 "unknown key 'eval.seq_lenn'" "$DP" config --config "$T/bad1.yaml"
printf 'eval:\n  seq_len: long\n' > "$T/bad2.yaml"
expect_exit 1 "bad2.yaml:2: key 'eval.seq_len' expects an integer" "$DP" config --config "$T/bad2.yaml"
expect_exit 1 "cannot open config" "$DP" config --config "$T/missing.yaml"
expect_exit 1 "unknown key 'foo'" "$DP" config --set foo=1
expect_exit 2 "unknown option '--bogus'" "$DP" config --bogus
expect_exit 2 "--config needs a value" "$DP" config --config
expect_exit 1 "must be one of {cpu,cuda}" "$DP" config --device tpu
# no GPU here: a clear message, never a crash
if ! nvidia-smi >/dev/null 2>&1; then
  expect_exit 1 "--device cuda" "$DP" config --device cuda
  # every computing command takes --device cuda and names what is missing, before any work
  for c in run sweep prune eval teacher-cache width-prune score retrain ppl generate bench-generate; do
    expect_exit 1 "--device cuda: " "$DP" "$c" --device cuda
  done
  # logits is the CPU reference by design; plan reads --device without a GPU
  if "$DP" --version | grep -q "CUDA backend: built"; then
    expect_exit 2 "computes on the CPU reference engine" "$DP" logits --device cuda --model x --ids 1 --out y
  fi
  expect_exit 2 "--model DIR (or model.path) is required" "$DP" plan --device cuda
fi

# model commands: bad input gives one clear error
expect_exit 2 "--model DIR is required" "$DP" info
expect_exit 1 "config.json: cannot open" "$DP" info --model "$T/nomodel"
mkdir -p "$T/m"; echo '{"architectures": ["BertModel"]}' > "$T/m/config.json"
expect_exit 1 "'BertModel' is not supported" "$DP" info --model "$T/m"
expect_exit 1 "tokenizer.json: cannot open" "$DP" tokenize --model "$T/m"
echo '{"model": {"type": "WordPiece"}}' > "$T/m/tokenizer.json"
expect_exit 1 "'WordPiece' is not supported" "$DP" tokenize --model "$T/m"
expect_exit 2 "--model DIR (or --from-gguf FILE) and --out DIR are required" "$DP" export --model "$T/m"
expect_exit 1 "'BertModel' is not supported" "$DP" export --model "$T/m" --out "$T/out"
[ ! -e "$T/out" ] || fail "a failed export left $T/out behind"
expect_exit 2 "--dtype must be F32, F16 or BF16" "$DP" export --model "$T/m" --out "$T/out" --dtype F8
# GGUF: a file that is not one, conflicting flags, a bad output type; nothing left behind
echo "not a gguf file, just text" > "$T/x.gguf"
expect_exit 1 "not a GGUF file (magic is not 'GGUF')" "$DP" export --from-gguf "$T/x.gguf" --out "$T/out"
expect_exit 1 "cannot open" "$DP" export --from-gguf "$T/missing.gguf" --out "$T/out"
expect_exit 2 "give either --model DIR or --from-gguf FILE" "$DP" export --model "$T/m" --from-gguf "$T/x.gguf" --out "$T/out"
expect_exit 2 "--drop, --drop-attn and --drop-mlp apply to --model" "$DP" export --from-gguf "$T/x.gguf" --out "$T/out" --drop 1
expect_exit 2 "--format must be hf or gguf" "$DP" export --model "$T/m" --out "$T/out" --format onnx
expect_exit 2 "--dtype for GGUF must be F32, F16, BF16 or Q8_0" "$DP" export --model "$T/m" --out "$T/o.gguf" --format gguf --dtype Q4_0
[ ! -e "$T/out" ] && [ ! -e "$T/o.gguf" ] || fail "a failed GGUF export left an output behind"

# under mpirun: one error message (rank 0 only), same exit code
if command -v mpirun >/dev/null; then
  out=$(mpirun -np 2 "$DP" config --set run.seed=abc 2>&1); rc=$?
  [ "$rc" != 0 ] || fail "mpirun config with a bad value exited 0"
  n=$(grep -c "expects an integer" <<<"$out")
  [ "$n" = 1 ] || fail "expected one error line under mpirun, got $n: $out"
  expect_exit 0 "seed: 5" mpirun -np 2 "$DP" config --set run.seed=5
fi
finish
