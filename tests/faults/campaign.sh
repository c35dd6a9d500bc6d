#!/usr/bin/env bash
# Fault-injection campaign: runs the real binary under mpirun (2 ranks),
# injects faults at fixed and random points of each stage, restarts the job
# and compares the outcome with an uninterrupted reference run; then tries
# bad inputs. Every scenario is one row of OUT/results.tsv; --report writes
# the Markdown summary (tests/faults/REPORT.md comes from the full campaign).
#
#   bash tests/faults/campaign.sh --full --report tests/faults/REPORT.md   (~10 min, 2 cores)
#   ctest -L faults                                                        (the --quick slice)
#
# Faults: SIGKILL of one rank; SIGSTOP of one rank (a hang: the job must end
# by itself through the watchdog, DP_WATCHDOG seconds); SIGUSR1 to mpirun and
# SIGTERM to one rank (graceful: exit 0, no step lost); ENOSPC/EIO on one
# rank's writes (LD_PRELOAD shim: a clean error naming the rank, the previous
# checkpoint intact); truncation and single-byte corruption of the newest
# checkpoint (detected, the previous one used); NaN in the gradient (step
# skipped, state bit-unchanged). Stages: calibrate, score, retrain,
# checkpoint write, export. Exit 1 if any scenario failed.
set -u
MODE=full SEED=1 REPORT=""
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../.." && pwd)
DP=$ROOT/build/depthprune SHIM=$ROOT/build/tests/libdpfaultshim.so MPIEXEC=mpirun ASSETS=$ROOT/build/assets
OUT=$ROOT/build/faults
while [ $# -gt 0 ]; do
  case $1 in
    --quick) MODE=quick;; --full) MODE=full;;
    --seed) SEED=$2; shift;; --report) REPORT=$(realpath -m "$2"); shift;;
    --dp) DP=$2; shift;; --shim) SHIM=$2; shift;; --mpiexec) MPIEXEC=$2; shift;;
    --assets) ASSETS=$2; shift;; --out) OUT=$2; shift;;
    *) echo "campaign.sh: unknown option $1" >&2; exit 2;;
  esac
  shift
done
DP=$(realpath "$DP"); SHIM=$(realpath "$SHIM"); ASSETS=$(realpath -m "$ASSETS")
[ -x "$DP" ] && [ -f "$SHIM" ] || { echo "campaign.sh: build first (cmake --build build): $DP, $SHIM" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
SRC=$HERE/..
. "$SRC/cli/lib.sh"
setup_assets
mkdir -p "$OUT"; RES=$OUT/results.tsv
COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')
printf 'class\tstage\tdetail\tended_by_itself\tclean_exit\tidentical\tsteps_lost\tcorrupt_accepted\tmanual_kill\tok\tseconds\n' >"$RES"
RANDOM=$SEED
WD=6 # watchdog seconds for every job here
export DP_WATCHDOG=$WD
LIMIT=$((WD + 90)) # the harness kills a job only past this: a "manual kill"

bash "$SRC/../scripts/brown_alpaca.sh" "$NM" "$T/alpaca.json" '^ca0[1-9]$' 200 || exit 1
bash "$SRC/../scripts/brown_text.sh" "$NM" "$T/brown.txt" '^ca1[0-2]$' || exit 1
M=$T/m
"$DP" synth --out "$M" --tokenizer "$TOK" --layers 6 --hidden 64 --heads 4 --kv-heads 2 --intermediate 176 \
  --max-pos 256 --seed 5 >/dev/null || exit 1
MPI=("$MPIEXEC" --bind-to none -np 2)
SARGS=(score --model "$M" --calib "$T/brown.txt" --criterion ppl,bi --samples 8 --seq-len 32 --batch 2)
TARGS=(retrain --student "$M" --data "$T/alpaca.json" --global-batch 8 --micro-batch 2 --epochs 1 --val-size 16
       --lr 1e-3 --set train.warmup=3 --set train.ckpt_every=5 --set train.val_every=20)
EARGS=(export --model "$M" --drop 1,2)

# ---- references ----
"${MPI[@]}" "$DP" "${SARGS[@]}" --run "$T/ref_s" --quiet >/dev/null || { echo "reference score failed" >&2; exit 1; }
"${MPI[@]}" "$DP" "${TARGS[@]}" --run "$T/ref_t" --out "$T/ref_t.out" --quiet >/dev/null ||
  { echo "reference retrain failed" >&2; exit 1; }
"$DP" "${EARGS[@]}" --out "$T/ref_e" >/dev/null || { echo "reference export failed" >&2; exit 1; }
STEPS=$(grep -c '"epoch"' "$T/ref_t/train_log.jsonl")
echo "references: scores, retraining ($STEPS steps), export"

# ---- helpers ----
N=0
# job LOG CMD...: runs CMD with the harness's hard limit; sets RC, MANUAL
job() {
  local log=$1; shift
  local t0=$SECONDS
  timeout -k 5 $LIMIT "$@" >"$log" 2>&1; RC=$?
  MANUAL=0; [ $((SECONDS - t0)) -ge $LIMIT ] && MANUAL=1
}
# leftovers of a job (a stopped rank the launcher did not reap) are a manual kill
reap() {
  if pgrep -f -- "$1" >/dev/null; then pkill -CONT -f -- "$1"; pkill -KILL -f -- "$1"; MANUAL=1; sleep 0.5; fi
}
crash() { grep -qE "Segmentation|AddressSanitizer|runtime error|core dumped|infinite loop" "$1"; }
# row CLASS STAGE DETAIL ENDED CLEAN IDENT LOST CORRUPT: appends a result
row() {
  local ok=1
  [ "$4" = 1 ] && [ "$5" = 1 ] && [ "$6" != 0 ] && [ "$8" != 1 ] && [ "$MANUAL" = 0 ] || ok=0
  case $7 in ''|na) ;; *) [ "$2" != retrain ] || [ "$3" = "${3#graceful}" ] || [ "$7" = 0 ] || ok=0;; esac
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$MANUAL" "$ok" \
    "$SECONDS" >>"$RES"
  N=$((N + 1))
  if [ $ok = 1 ]; then echo "ok   $1/$2: $3"; else fail "$1/$2: $3 (ended $4 clean $5 identical $6 lost $7 corrupt $8 manual $MANUAL)"; fi
}
same_scores() { cmp -s "$T/ref_s/scores.json" "$1/scores.json" && echo 1 || echo 0; }
strip() { sed 's/,"time_s".*//' "$1"; }
same_train() {
  cmp -s "$T/ref_t.out/model.safetensors" "$2/model.safetensors" &&
    cmp -s "$T/ref_t.out/adapter/adapter_model.safetensors" "$2/adapter/adapter_model.safetensors" &&
    diff -q <(strip "$T/ref_t/train_log.jsonl") <(strip "$1/train_log.jsonl") >/dev/null && echo 1 || echo 0
}
last_step() { grep -o '"step":[0-9]*' "$1/train_log.jsonl" 2>/dev/null | tail -1 | cut -d: -f2; }

# score_fault NAME CLASS STAGE ENV... : a faulted score run, then the rerun
score_fault() {
  local name=$1 class=$2 stage=$3 want=$4; shift 4
  local d=$T/s_$name; SECONDS=0
  job "$d.log" env "$@" "${MPI[@]}" "$DP" "${SARGS[@]}" --run "$d"; reap "$d"
  local ended=$((1 - MANUAL)) clean=1
  crash "$d.log" && clean=0
  case $want in
    fail) [ $RC != 0 ] && [ ! -e "$d/scores.json" ] || clean=0;;
    zero) [ $RC = 0 ] && [ ! -e "$d/scores.json" ] && grep -q "stopped by a signal" "$d.log" || clean=0;;
    error) [ $RC != 0 ] && grep -q "error: rank 1: " "$d.log" && grep -q "dp-shim" "$d.log" || clean=0;;
  esac
  "${MPI[@]}" "$DP" "${SARGS[@]}" --run "$d" >"$d.rerun.log" 2>&1 || clean=0
  row "$class" "$stage" "$name (exit $RC)" $ended $clean "$(same_scores "$d")" na na
}
# train_fault NAME CLASS STAGE WANT ENV... : a faulted retrain run, then the rerun
train_fault() {
  local name=$1 class=$2 stage=$3 want=$4; shift 4
  local d=$T/t_$name; SECONDS=0
  job "$d.log" env "$@" "${MPI[@]}" "$DP" "${TARGS[@]}" --run "$d" --out "$d.out"; reap "$d"
  train_check "$name" "$class" "$stage" "$want"
}
train_check() {
  local name=$1 class=$2 stage=$3 want=$4 d=$T/t_$1
  local ended=$((1 - MANUAL)) clean=1 last
  last=$(last_step "$d"); last=${last:-0}
  crash "$d.log" && clean=0
  case $want in
    fail) [ $RC != 0 ] && [ ! -e "$d.out" ] || clean=0;;
    zero) [ $RC = 0 ] && [ ! -e "$d.out" ] && grep -q "stopped at step" "$d.log" || clean=0;;
    error) [ $RC != 0 ] && [ ! -e "$d.out" ] && grep -qE "error: rank [01]: " "$d.log" && grep -q "dp-shim" "$d.log" || clean=0;;
  esac
  "${MPI[@]}" "$DP" "${TARGS[@]}" --run "$d" --out "$d.out" >"$d.rerun.log" 2>&1 || clean=0
  local from
  from=$(grep -o "resuming from checkpoint step-[0-9]* (iteration [0-9]*" "$d.rerun.log" | grep -o '[0-9]*$')
  from=${from:-0}
  [ "$want" = error ] && { grep -q "damaged" "$d.rerun.log" && clean=0; [ "$from" -gt 0 ] || clean=0; }
  row "$class" "$stage" "$name (exit $RC, resumed at $from)" $ended $clean "$(same_train "$d" "$d.out")" \
    $((last > from ? last - from : 0)) na
}

# ---- calibrate and score ----
score_fault kill-calib kill calibrate fail DP_FAULT="calib_batch#2@1=kill"
score_fault stop-calib hang calibrate fail DP_FAULT="calib_batch#2@1=stop"
score_fault enospc-calib-h5 disk calibrate error DP_SHIM_MATCH=calib.h5.tmp DP_SHIM_RANK=1 DP_SHIM_AFTER=3000 LD_PRELOAD="$SHIM"
score_fault kill-round kill score fail DP_FAULT="score_round#1@1=kill"
score_fault stop-round hang score fail DP_FAULT="score_round#1@0=stop"
score_fault graceful-term-round signal score zero DP_FAULT="score_round#1@1=term"
# in the block-major sweep of a stored-dtype model (before any round is complete)
score_fault graceful-term-sweep signal score zero DP_FAULT="score_block#2@1=term"

# ---- retraining ----
train_fault kill-step kill retrain fail DP_FAULT="train_step#12@1=kill"
train_fault stop-step hang retrain fail DP_FAULT="train_step#9@1=stop"
train_fault graceful-term-step signal retrain zero DP_FAULT="train_step#8@1=term"
train_fault graceful-usr1-step signal retrain zero DP_FAULT="train_step#14@0=usr1"
train_fault kill-ckpt-write kill checkpoint fail DP_FAULT="ckpt_write#2@1=kill"
train_fault kill-ckpt-commit kill checkpoint fail DP_FAULT="ckpt_commit#2@0=kill"
train_fault enospc-ckpt-create disk checkpoint error DP_SHIM_MATCH=step-000000010.tmp DP_SHIM_RANK=1 LD_PRELOAD="$SHIM"
train_fault enospc-ckpt-midfile disk checkpoint error DP_SHIM_MATCH=step-000000015.tmp DP_SHIM_RANK=1 DP_SHIM_AFTER=5000 LD_PRELOAD="$SHIM"
train_fault eio-ckpt disk checkpoint error DP_SHIM_MATCH=step-000000010.tmp DP_SHIM_RANK=0 DP_SHIM_ERRNO=EIO DP_SHIM_AFTER=2000 LD_PRELOAD="$SHIM"

# random kills (one rank, random step) and random SIGUSR1 to mpirun
n_rand=1; [ $MODE = full ] && n_rand=5
for i in $(seq $n_rand); do
  s=$((2 + RANDOM % (STEPS - 3))) r=$((RANDOM % 2))
  train_fault "kill-random-$i-step$s-rank$r" kill retrain fail DP_FAULT="train_step#$s@$r=kill"
done
for i in $(seq $n_rand); do
  s=$((2 + RANDOM % (STEPS - 3)))
  d=$T/t_usr1-random-$i; SECONDS=0
  "${MPI[@]}" "$DP" "${TARGS[@]}" --run "$d" --out "$d.out" >"$d.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    c=$(grep -c '"epoch"' "$d/train_log.jsonl" 2>/dev/null); [ "${c:-0}" -ge $s ] && break; sleep 0.05
  done
  kill -USR1 $pid 2>/dev/null
  for _ in $(seq $((LIMIT * 10))); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
  MANUAL=0; kill -0 $pid 2>/dev/null && { kill -KILL $pid; MANUAL=1; }
  wait $pid; RC=$?; reap "$d"
  if [ -e "$d.out" ]; then # the signal came after the last step: nothing to check but the result
    "${MPI[@]}" "$DP" "${TARGS[@]}" --run "$d" --out "$d.out" >"$d.rerun.log" 2>&1
    row signal retrain "graceful-usr1-random-$i after the end" 1 1 "$(same_train "$d" "$d.out")" 0 na
  else train_check "usr1-random-$i" signal retrain zero
  fi
done

# ---- damaged newest checkpoint: truncation, single-byte corruption ----
base=$T/t_damage; "${MPI[@]}" "$DP" "${TARGS[@]}" --run "$base" --out "$base.out" --pause-after 15 --quiet >/dev/null 2>&1
n_trunc=1 n_flip=3; [ $MODE = full ] && { n_trunc=4; n_flip=20; }
damage() { # NAME HOW: copy the stopped run, damage step 15, rerun
  local name=$1 how=$2 d=$T/t_$1
  rm -rf "$d"; cp -r "$base" "$d"; SECONDS=0; MANUAL=0
  local files=("$d"/ckpt/step-000000015/*) f
  f=${files[$((RANDOM % ${#files[@]}))]}
  local size; size=$(stat -c %s "$f")
  if [ "$how" = trunc ]; then truncate -s $((RANDOM * 32768 % size)) "$f"
  else
    local off=$(((RANDOM * 32768 + RANDOM) % size)) old new
    old=$(od -An -tu1 -j $off -N1 "$f" | tr -d ' '); new=$(((old + 1 + RANDOM % 255) % 256))
    printf "$(printf '\\%03o' $new)" | dd of="$f" bs=1 seek=$off conv=notrunc status=none
  fi
  job "$d.rerun.log" "${MPI[@]}" "$DP" "${TARGS[@]}" --run "$d" --out "$d.out"; reap "$d"
  local used=0 clean=1
  grep -q "resuming from checkpoint step-000000015 " "$d.rerun.log" && used=1
  grep -q "step-000000015 is damaged" "$d.rerun.log" || clean=0
  [ $RC = 0 ] || clean=0
  crash "$d.rerun.log" && clean=0
  row corrupt checkpoint "$name: ${f##*/}" 1 $clean "$(same_train "$d" "$d.out")" na $used
}
for i in $(seq $n_trunc); do damage "truncate-$i" trunc; done
for i in $(seq $n_flip); do damage "byteflip-$i" flip; done

# ---- NaN: the step is skipped and the state is bit-unchanged ----
SECONDS=0; MANUAL=0
"${MPI[@]}" "$DP" "${TARGS[@]}" --run "$T/nan_a" --out "$T/nan_a.out" --pause-after 7 --set train.ckpt_every=1 --quiet \
  >/dev/null 2>&1
job "$T/nan_b.log" "${MPI[@]}" "$DP" "${TARGS[@]}" --run "$T/nan_b" --out "$T/nan_b.out" --pause-after 8 \
  --set train.ckpt_every=1 --fault-nan-step 7 --fault-nan-rank 1
same=1
for r in 0 1; do
  for ds in param adam_m adam_v; do
    diff -q <(h5dump -d $ds "$T/nan_a/ckpt/step-000000007/rank-0000$r.h5" | sed -n '/DATA {/,$p') \
      <(h5dump -d $ds "$T/nan_b/ckpt/step-000000008/rank-0000$r.h5" | sed -n '/DATA {/,$p') >/dev/null || same=0
  done
done
clean=1; [ $RC = 0 ] && grep -q '"skipped":1' "$T/nan_b/train_log.jsonl" || clean=0
row nan retrain "NaN gradient at step 8 on rank 1: params and moments after the skip == before it" 1 $clean $same 0 na

# ---- export ----
export_fault() { # NAME WANT CLASS ENV...
  local name=$1 want=$2 class=$3; shift 3
  local d=$T/e_$name; SECONDS=0
  job "$d.log" env "$@" "$DP" "${EARGS[@]}" --out "$d"; reap "$d"
  local clean=1
  [ $RC != 0 ] && [ ! -e "$d" ] || clean=0
  crash "$d.log" && clean=0
  [ "$want" = error ] && { grep -q "dp-shim" "$d.log" && grep -q "error:" "$d.log" || clean=0; }
  "$DP" "${EARGS[@]}" --out "$d" >/dev/null 2>&1 || clean=0
  local same=0; diff -r -q "$T/ref_e" "$d" >/dev/null && same=1
  row "$class" export "$name (exit $RC)" 1 $clean $same na na
}
export_fault kill-mid-write fail kill DP_FAULT="st_write=kill"
export_fault enospc-weights error disk DP_SHIM_MATCH=model.safetensors DP_SHIM_RANK=-1 DP_SHIM_AFTER=20000 \
  LD_PRELOAD="$SHIM"
export_fault eio-config error disk DP_SHIM_MATCH=config.json DP_SHIM_RANK=-1 DP_SHIM_ERRNO=EIO LD_PRELOAD="$SHIM"

# ---- bad inputs: each must be one clear error, exit 1 or 2, no crash, no output ----
BAD=$T/bad; mkdir -p "$BAD"
bad_case() { # NAME CMD... (an --out/--run path inside $BAD/out-NAME must not appear)
  local name=$1; shift
  SECONDS=0; MANUAL=0
  job "$BAD/$name.log" "$@"
  local clean=1
  { [ $RC = 1 ] || [ $RC = 2 ]; } && grep -q "error" "$BAD/$name.log" || clean=0
  crash "$BAD/$name.log" && clean=0
  [ ! -e "$BAD/out-$name" ] || clean=0
  row badinput cli "$name (exit $RC)" 1 $clean na na na
}
mk_model() { rm -rf "$BAD/$1"; cp -r "$M" "$BAD/$1"; }
sz=$(stat -c %s "$M/config.json")
for cut in 0 1 $((sz / 2)) $((sz - 2)); do
  mk_model cfg$cut; truncate -s $cut "$BAD/cfg$cut/config.json"
  bad_case "config.json cut at $cut" "$DP" export --model "$BAD/cfg$cut" --drop 1 --out "$BAD/out-config.json cut at $cut"
done
for kv in '"num_hidden_layers": -3' '"hidden_size": 0' '"num_attention_heads": 5' '"rms_norm_eps": "x"' \
  '"vocab_size": 1e30' '"rope_theta": "fast"'; do
  k=${kv%%:*}; mk_model cfgv; python3 - "$BAD/cfgv/config.json" "$kv" <<'EOF' 2>/dev/null || sed -i "s/$k: [^,}]*/$kv/" "$BAD/cfgv/config.json"
import json, sys
p, kv = sys.argv[1], sys.argv[2]
d = json.load(open(p)); k, v = kv.split(":", 1); d[json.loads(k)] = json.loads(v)
json.dump(d, open(p, "w"))
EOF
  bad_case "config.json $kv" "$DP" ppl --model "$BAD/cfgv" --text "$T/brown.txt" --seq-len 32
done
st=$(stat -c %s "$M/model.safetensors")
for cut in 0 7 100 $((st / 2)) $((st - 1)); do
  mk_model st$cut; truncate -s $cut "$BAD/st$cut/model.safetensors"
  bad_case "model.safetensors cut at $cut" "$DP" export --model "$BAD/st$cut" --drop 1 --out "$BAD/out-st$cut"
done
mk_model sthdr; printf '\xff\xff\xff\xff\xff\xff\xff\x7f' | dd of="$BAD/sthdr/model.safetensors" conv=notrunc status=none
bad_case "safetensors header length 2^63" "$DP" export --model "$BAD/sthdr" --drop 1 --out "$BAD/out-sthdr"
mk_model sthj; printf '{"a":' | dd of="$BAD/sthj/model.safetensors" bs=1 seek=8 conv=notrunc status=none
bad_case "safetensors header not JSON" "$DP" export --model "$BAD/sthj" --drop 1 --out "$BAD/out-sthj"
tk=$(stat -c %s "$M/tokenizer.json")
for cut in 0 $((tk / 3)) $((tk - 3)); do
  mk_model tok$cut; truncate -s $cut "$BAD/tok$cut/tokenizer.json"
  bad_case "tokenizer.json cut at $cut" "$DP" ppl --model "$BAD/tok$cut" --text "$T/brown.txt" --seq-len 32
done
printf 'run: {dir: [unclosed\n' >"$BAD/a.yaml"
bad_case "YAML syntax" "$DP" run --config "$BAD/a.yaml"
printf 'run:\n  dir: x\nscore:\n  samples: ten\n' >"$BAD/b.yaml"
bad_case "YAML wrong type" "$DP" run --config "$BAD/b.yaml"
printf 'nosuchsection:\n  key: 1\n' >"$BAD/c.yaml"
bad_case "YAML unknown key" "$DP" run --config "$BAD/c.yaml"
printf '\t- a\n: :\n' >"$BAD/d.yaml"
bad_case "YAML garbage" "$DP" run --config "$BAD/d.yaml"
printf '{"instruction": "a", "output": "b"}\n{"instruction": \n' >"$BAD/e.jsonl"
bad_case "Alpaca JSONL torn line" "$DP" retrain --student "$M" --data "$BAD/e.jsonl" --run "$BAD/out-alp1" --out "$BAD/out-alp1"
printf '[{"instruction": 5, "output": "b"}]' >"$BAD/f.json"
bad_case "Alpaca wrong type" "$DP" retrain --student "$M" --data "$BAD/f.json" --run "$BAD/out-alp2" --out "$BAD/out-alp2"
printf '\xff\xfe{"instruction": "a", "output": "b"}\n' >"$BAD/g.jsonl"
bad_case "Alpaca invalid UTF-8" "$DP" retrain --student "$M" --data "$BAD/g.jsonl" --run "$BAD/out-alp3" --out "$BAD/out-alp3"
printf '{"query": "q", "choices": ["a"], "gold": 3}\n' >"$BAD/h.jsonl"
bad_case "task label out of range" "$DP" eval --model "$M" --task "generic=$BAD/h.jsonl" --out "$BAD/out-task1"
printf '{"question": "q", "passage": "p", "label": true}\nnot json\n' >"$BAD/i.jsonl"
bad_case "task torn line" "$DP" eval --model "$M" --task "boolq=$BAD/i.jsonl" --out "$BAD/out-task2"
bad_case "negative ratio" "$DP" prune --model "$M" --scores "$T/ref_s/scores.json" --ratio -0.2 --out "$BAD/out-r1"
bad_case "non-numeric samples" "$DP" score --model "$M" --calib "$T/brown.txt" --samples 1x --run "$BAD/out-s1"
bad_case "seq-len beyond max positions" "$DP" ppl --model "$M" --text "$T/brown.txt" --seq-len 100000
bad_case "missing model dir" "$DP" ppl --model "$BAD/nope" --text "$T/brown.txt"
bad_case "drop every block" "$DP" export --model "$M" --drop 0,1,2,3,4,5 --out "$BAD/out-drop"
printf '{"criteria": {"ppl": {"order": [9, 9]}}}' >"$BAD/scores.json"
bad_case "scores.json of nothing" "$DP" prune --model "$M" --scores "$BAD/scores.json" --remove 1 --out "$BAD/out-p2"

# ---- report ----
echo "$N scenarios, $FAILS failed; results in $RES"
if [ -n "$REPORT" ]; then
  DP_REPORT_COMMIT=$COMMIT bash "$HERE/report.sh" "$RES" "${FUZZ_SUMMARY:-$ROOT/build-fuzz/fuzz_summary.tsv}" "$MODE" "$SEED" >"$REPORT.tmp" &&
    mv "$REPORT.tmp" "$REPORT" && echo "report: $REPORT"
fi
finish
