# Shared by the slurm/*.sh job scripts (sourced): site modules, resolved
# paths, the environment log, the launcher (srun --mpi=pmix, or mpirun when
# PMIx is absent), and requeue-on-signal.
#
# Variables (all optional, with defaults):
#   DP_ROOT      the depthprune checkout (default: the directory above this script)
#   DP_BIN       the depthprune binary (default: $DP_ROOT/build/depthprune)
#   DP_MODULES   site modules to load, e.g. "gcc openmpi hdf5/parallel openblas cuda"
#   DP_RUN       the run directory (default: runs/$SLURM_JOB_NAME)
#   DP_EXTRA     extra depthprune arguments, e.g. "--set model.path=/models/llama-2-13b"

dp_die() { echo "$(basename "$0"): $*" >&2; exit 1; }

dp_setup() {
  if [ -z "${SLURM_JOB_ID:-}" ]; then
    dp_die "not inside a Slurm allocation. Submit it with 'sbatch $0', or run the same command
  without Slurm: mpirun -np N $DP_BIN run --config CONFIG (see README.md)"
  fi
  DP_ROOT=${DP_ROOT:-${SLURM_SUBMIT_DIR:-$(pwd)}}
  DP_BIN=${DP_BIN:-$DP_ROOT/build/depthprune}
  DP_RUN=${DP_RUN:-runs/${SLURM_JOB_NAME:-depthprune}}
  if [ -n "${DP_MODULES:-}" ] && command -v module >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    module load $DP_MODULES || dp_die "module load $DP_MODULES failed"
  fi
  [ -x "$DP_BIN" ] || dp_die "no depthprune binary at $DP_BIN (build it: bash scripts/setup.sh, or set DP_BIN)"
  cd "$DP_ROOT" || dp_die "cannot cd to $DP_ROOT"
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
  # root in containers/CI: Open MPI refuses without these
  [ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  echo "== $(date -u +%FT%TZ) job $SLURM_JOB_ID ($SLURM_JOB_NAME) restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST:-?}"
  echo "   tasks ${SLURM_NTASKS:-?}, cpus/task ${SLURM_CPUS_PER_TASK:-1}, OMP_NUM_THREADS $OMP_NUM_THREADS, gpus ${SLURM_GPUS_ON_NODE:-0}"
  echo "   depthprune $("$DP_BIN" --version 2>&1), run dir $DP_RUN, root $DP_ROOT"
}

# dp_launch ARGS...: one rank per task (per GPU on GPU partitions). A run that a signal
# stopped (checkpointed, exit 0) leaves $DP_STOP_MARKER; dp_finish requeues only then.
dp_launch() {
  mkdir -p "$DP_RUN" || dp_die "cannot create the run directory $DP_RUN"
  export DP_STOP_MARKER="$DP_RUN/.stopped-$SLURM_JOB_ID"
  rm -f "$DP_STOP_MARKER"
  if srun --mpi=list 2>/dev/null | grep -q pmix; then
    srun --mpi=pmix --kill-on-bad-exit=1 "$DP_BIN" "$@"
  else
    echo "   (no PMIx in this Slurm: launching with mpirun)"
    mpirun --bind-to none -np "${SLURM_NTASKS:-1}" "$DP_BIN" "$@"
  fi
}

# dp_finish RC DONE_FILE: requeue when a signal stopped the run (before the time limit,
# or a preemption) before its final output, so --requeue continues it. A run that ended
# without its output and without a stop (srun could not launch it: srun then may still
# return 0) fails instead of requeueing forever.
dp_finish() {
  local rc=$1 done_file=$2
  if [ "$rc" = 0 ] && [ ! -e "$done_file" ]; then
    if [ -e "${DP_STOP_MARKER:-}" ]; then
      echo "== stopped before the end ($(cat "$DP_STOP_MARKER")); requeueing job $SLURM_JOB_ID"
      rm -f "$DP_STOP_MARKER"
      scontrol requeue "$SLURM_JOB_ID"
    else
      echo "== the run ended without $done_file and without being stopped by a signal (a failed launch? see above); not requeued" >&2
      rc=1
    fi
  fi
  exit "$rc"
}
