"""What the Python oracle scripts share: check reporting, running depthprune, the row error."""
import subprocess
import sys

_FAILS = [0]


def ok(msg):
    print("ok   " + msg, flush=True)


def fail(msg):
    _FAILS[0] += 1
    print("FAIL " + msg, flush=True)


def check(cond, msg):
    (ok if cond else fail)(msg)


def finish():
    print("%d failed" % _FAILS[0])
    sys.exit(1 if _FAILS[0] else 0)


def run_dp(dp, *args, mpiexec=None, np_=1):
    """depthprune (under mpirun with np_ > 1); its stdout, or an error with its output."""
    cmd = ([mpiexec, "--bind-to", "none", "-np", str(np_)] if np_ > 1 else []) + [dp] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("depthprune %s: exit %d\n%s%s" % (args[0], r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
    return r.stdout


def row_rel_err(got, ref):
    """max over rows of max|got - ref| / max|ref| (per row: a wrong small row cannot hide)."""
    d = (got - ref).abs().amax(dim=-1)
    s = ref.abs().amax(dim=-1).clamp_min(1e-30)
    return float((d / s).max())
