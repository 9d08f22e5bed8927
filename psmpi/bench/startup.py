"""``psmpi bench startup``: what launching a training run costs before its first round.

Three jobs of ``mpirun -n N`` are timed side by side (alternating in every
repetition, so they see the same machine load), wall time from launch to exit:

* ``mpi``: every rank imports mpi4py and meets at a barrier;
* ``floor``: the same after ``import numpy, scipy.sparse, h5py``, the modules a
  training run cannot do without (the import floor);
* ``train``: ``psmpi train --iters 1 --quiet`` on the embedded default data
  (one round, one evaluation, the output file written by rank 0).

The table gives each job's best and median time and its ratio to the floor;
``train / floor`` is what start-up work beyond the unavoidable imports costs.
It also gives the CPU seconds of all the job's processes together (the least
over the timed repetitions): with more ranks than cores the wall time follows
them, and they vary less than the wall time on a shared machine.
"""
from __future__ import annotations

import functools
import os
import resource
import shlex
import sys
import tempfile

from .common import Column, default_mpirun, format_rows, interleaved, machine_info, machine_line, run_command

MPI_ONLY = "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"
FLOOR = "import numpy, scipy.sparse, h5py; " + MPI_ONLY


def startup_commands(ranks: int, mpirun: list[str], out: str, train_args=()) -> dict:
    """The three jobs, by name: the MPI barrier, the import floor, one training round."""
    launch = mpirun + ["-n", str(ranks), sys.executable]
    return {"mpi": launch + ["-c", MPI_ONLY],
            "floor": launch + ["-c", FLOOR],
            "train": launch + ["-m", "psmpi", "train", "--iters", "1", "--quiet", "--out", out, "--overwrite",
                                 *train_args]}


def _run_counting_cpu(cmd: list[str], cpu: list[float]) -> None:
    """Run ``cmd``; append the CPU seconds (user + system) of it and its descendants to ``cpu``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run_command(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


def run_startup_bench(ranks: int = 21, repeat: int = 3, warmup: int = 1, dataset: str | None = None,
                      method: str | None = None, mpirun: list[str] | None = None) -> dict:
    if ranks < 2:
        raise ValueError("--ranks must be at least 2 (the master and one worker)")
    mpirun = mpirun or default_mpirun()
    train_args = [*(["--dataset", dataset] if dataset else []), *(["--method", method] if method else [])]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "startup.h5")
        cmds = startup_commands(ranks, mpirun, out, train_args)
        cpu = {name: [] for name in cmds}
        jobs = {name: functools.partial(_run_counting_cpu, cmd, cpu[name]) for name, cmd in cmds.items()}
        times = interleaved(jobs, repeat=repeat, warmup=warmup)
        wrote = os.path.exists(out)
    floor = times["floor"]
    cpu_s = {name: min(c[warmup:]) for name, c in cpu.items()}
    rows = [{"job": name, "command": shlex.join(cmd).replace(out, "TMP.h5"), "best_s": times[name].best,
             "median_s": times[name].median, "reps": times[name].reps, "x_floor": times[name].best / floor.best,
             "x_floor_median": times[name].median / floor.median, "cpu_s": cpu_s[name],
             "cpu_x_floor": cpu_s[name] / cpu_s["floor"]} for name, cmd in cmds.items()]
    train = next(r for r in rows if r["job"] == "train")
    return {"machine": machine_info(),
            "params": {"ranks": ranks, "repeat": repeat, "warmup": warmup, "dataset": dataset, "method": method},
            "rows": rows, "train_over_floor": train["x_floor"], "train_over_floor_median": train["x_floor_median"],
            "train_over_floor_cpu": train["cpu_x_floor"], "train_wrote_output": wrote}


COLUMNS = [Column("job", "job", "<5s"), Column("best_s", "best s", ">7.2f"), Column("median_s", "median s", ">8.2f"),
           Column("x_floor", "x floor", ">7.2f"), Column("x_floor_median", "x floor (median)", ">7.2f"),
           Column("cpu_s", "CPU s", ">6.2f"), Column("cpu_x_floor", "CPU x floor", ">6.2f")]


def format_table(res: dict) -> str:
    p = res["params"]
    lines = [f"start-up: mpirun -n {p['ranks']}, best and median of {res['rows'][0]['reps']} (after {p['warmup']} "
             f"untimed), the three jobs alternating", machine_line(res["machine"]),
             format_rows(COLUMNS, res["rows"]),
             *(f"{r['job']}: {r['command']}" for r in res["rows"]),
             f"train / floor: {res['train_over_floor']:.2f}x (best), {res['train_over_floor_median']:.2f}x (median), "
             f"{res['train_over_floor_cpu']:.2f}x (CPU)"]
    return "\n".join(lines)
