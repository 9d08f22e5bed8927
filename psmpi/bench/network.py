"""``psmpi bench network``: the MPI runtime over a rate-limited TCP link.

On one machine the ranks talk through shared memory and compression cannot
show what it buys.  Here every ``mpirun`` runs inside a private network
namespace (``unshare -n``) whose loopback is brought up and shaped with a token
bucket (``tc qdisc add dev lo root tbf rate RATE``); Open MPI is told to use the
ob1 point-to-point layer over TCP on ``lo`` only (no shared memory, no UCX, no
shared-memory collectives), and the broadcast is the linear one (rank 0 sends
x to each worker, as a parameter server does).  All ranks share the one shaped
loopback, so the link models the master's network port: every byte of x going
down and of every message coming up crosses it once.  The queue is short (tbf
``latency 5ms``) and the TCP socket buffers small (128 kB), so that a send
completes when its bytes have nearly crossed the link: with the defaults the
tail of the broadcast sat in buffers and was counted in the next phase.

For each rate the link is checked first by timing a known-size ``Bcast`` and
``Gatherv`` in the same setup (:mod:`psmpi.bench.linkprobe`).  Then for each d:
GD (dense, the identity compressor), then each compressed method at each K/d,
each one ``psmpi train`` under ``mpirun -n workers+1``.  GD runs ``--iters``
rounds and sets the target: ``--target`` times ||grad f(x^0)||^2; the other
runs stop there (``--tol``).  From each run's metrics and ``timings``:

* ms per round: the wall time between the second and the last evaluation rows
  less the evaluations' share (master ``eval`` time), over the rounds between
  them (so round 0, with its often dense initial messages, is left out);
* downlink: the master's ``Bcast`` of x per round (the linear broadcast
  returns once x has been sent to every worker);
* uplink side: the rest of the round, i.e. the workers' step and encoding,
  their messages crossing the link and the master's decoding and aggregation;
  ``uplink comm`` is that less the workers' compute and the master's decoding;
* time to target: the wall time at the first evaluation row at or below the
  target, less the evaluations' share; ``-`` when not reached in ``--iters``;
* bytes up and down per round from the metrics ``bytes_up``/``bytes_down``.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np

from .common import (Column, bytes_per_round, default_mpirun, format_rows, k_of, machine_info, machine_line,
                     percent, run_command, run_training)

# TCP on lo only, through ob1 (not UCX, not the shared-memory btl), no shared-memory collectives
# (han, adapt, sm), and the linear broadcast: every byte between ranks crosses the shaped loopback.
MCA = ["--mca", "pml", "ob1", "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo",
       "--mca", "coll", "^han,adapt,sm", "--mca", "coll_tuned_use_dynamic_rules", "1",
       "--mca", "coll_tuned_bcast_algorithm", "1", "--mca", "btl_tcp_sndbuf", "131072", "--mca", "btl_tcp_rcvbuf", "131072"]
SHAPE = ('burst=$1; shift; ip link set lo up && tc qdisc add dev lo root tbf rate "$0" burst "$burst" latency 5ms '
         '&& exec "$@"')  # sh -c SHAPE RATE BURST CMD...
UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}
COMPRESSED = ("ef21", "ef21-sgdm", "ef21-bc")  # a method of these missing from the registry is skipped with a note


def parse_rates(text: str) -> list[tuple[str, float]]:
    """'1gbit,100mbit' -> [('1gbit', 1e9), ('100mbit', 1e8)] (tc's bit-rate units)."""
    out = []
    for tok in str(text).split(","):
        tok = tok.strip().lower()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|tbit)", tok)
        if not m or float(m.group(1)) <= 0:
            raise ValueError(f"bad rate {tok!r}: use tc units, e.g. 100mbit, 1gbit or 10gbit")
        out.append((tok, float(m.group(1)) * UNITS[m.group(2)]))
    return out


def shaped(rate: str, bits_per_s: float, cmd: list[str]) -> list[str]:
    """``cmd`` run in a fresh network namespace whose loopback is shaped to ``rate``.
    The bucket holds 4 ms of traffic, at least 1 MB (tbf needs more than a timer tick's worth)."""
    burst = max(2**20, int(bits_per_s / 8 * 4e-3))
    return ["unshare", "-n", "sh", "-c", SHAPE, rate, str(burst), *cmd]


def check_namespace() -> None:
    """RuntimeError (one line) when a shaped network namespace cannot be made here."""
    try:
        proc = subprocess.run(shaped("1gbit", 1e9, ["true"]), capture_output=True, text=True)
    except OSError as e:
        raise RuntimeError(f"cannot create a network namespace: {e}") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise RuntimeError(f"cannot create a shaped network namespace (unshare -n, ip, tc tbf; needs root or "
                           f"user namespaces): {why}")


def problem_args(problem: str, d: int, workers: int, rows_per_worker: int) -> list[str]:
    """train options for a problem of about d parameters."""
    if problem == "mlp":  # digits: 64 inputs, 10 classes; mlp:H has 64H + H + 10H + 10 parameters
        return ["--problem", f"mlp:{max(1, round((d - 10) / 75))}", "--dataset", "digits"]
    rows = workers * rows_per_worker
    return ["--dataset", f"synthetic:rows={rows},features={d},density={min(1.0, 100.0 / d):.3g},seed=1"]


def measure(cmd_prefix: list[str], train: list[str], target_abs: float | None, target: float) -> dict:
    """One training run; its per-round times, phases and time to target (see the module docstring).
    Without ``target_abs`` the run goes its --iters rounds and its target is ``target`` x its
    ||grad f(x0)||^2; with it, the run stops there (--tol)."""
    tol = [] if target_abs is None else ["--tol", repr(target_abs)]
    res, tim = run_training(cmd_prefix, [*train, *tol, "--quiet"])
    m = res.metrics
    it, wall, gns = (np.asarray(m[k], dtype=float) for k in ("iteration", "wall_time", "grad_norm_sq"))
    up, down = bytes_per_round(m, tim)
    ms, w = tim["master"], tim["workers_mean"]
    rounds = int(it[-1])
    eval_row = ms["eval"] / len(it)  # each evaluation row's share of the master's evaluation time
    row = {"rounds": rounds, "dim": int(np.size(res.x)), "gamma": float(res.gamma), "gns0": float(gns[0]),
           "gns_final": float(gns[-1]), "eval_ms_per_row": 1e3 * eval_row,
           "bytes_up_per_round": up, "bytes_down_per_round": down,
           "ms_per_round": None, "downlink_ms": 1e3 * ms["bcast"] / (rounds + 1)}
    if len(it) >= 3:
        per_round = (wall[-1] - wall[1] - eval_row * (len(it) - 2)) / (it[-1] - it[1])
        compute = (w["step"] + w["encode"] + ms.get("decode_aggregate", 0.0)) / max(1, rounds)
        row["ms_per_round"] = 1e3 * per_round
        row["uplink_ms"] = row["ms_per_round"] - row["downlink_ms"]
        row["compute_ms"] = 1e3 * compute
        row["uplink_comm_ms"] = max(0.0, row["uplink_ms"] - row["compute_ms"])
    row["target_abs"] = target * float(gns[0]) if target_abs is None else target_abs
    hit = np.flatnonzero(gns <= row["target_abs"])
    row["target_hit"] = int(it[hit[0]]) if hit.size else None
    if hit.size:
        row["time_to_target_s"] = max(0.0, float(wall[hit[0]] - eval_row * (hit[0] + 1)))
    return row


def run_network_bench(rates, sizes, fractions, workers: int = 8, iters: int = 30, target: float = 0.1,
                      eval_every: int | None = None, methods=("gd", "ef21", "ef21-sgdm"),
                      problem: str = "synthetic", rows_per_worker: int = 50, gamma_factor: float = 1.0,
                      mpirun=None) -> dict:
    from ..methods import REGISTRY

    if workers < 1 or iters < 2:
        raise ValueError("--workers must be at least 1 and --iters at least 2")
    if not 0 < target < 1:
        raise ValueError("--target is a fraction of ||grad f(x0)||^2 in (0, 1)")
    unknown = [m for m in methods if m != "gd" and m not in COMPRESSED]
    if unknown:
        raise ValueError(f"--methods: {', '.join(unknown)} not benchmarked here (gd, {', '.join(COMPRESSED)})")
    if problem == "mlp":
        import importlib.util
        if importlib.util.find_spec("torch") is None:
            raise RuntimeError("--problem mlp needs torch (pip install 'psmpi[torch]')")
    notes = [f"{m}: not in the method registry yet, skipped" for m in methods if m != "gd" and m not in REGISTRY]
    methods = [m for m in methods if m == "gd" or m in REGISTRY]
    check_namespace()
    mpirun = mpirun or default_mpirun()
    every = eval_every or max(1, iters // 10)
    links, rows = [], []
    for rate, bps in rates:
        launch = shaped(rate, bps, mpirun + ["-n", str(workers + 1), *MCA])
        probe_bytes = max(2**20, int(bps / 8 * 0.05))  # about 50 ms of the link per worker
        links.append({"rate": rate, "bits_per_s": bps, **json.loads(run_command(
            launch + [sys.executable, "-m", "psmpi.bench.linkprobe", str(probe_bytes), str(probe_bytes)]
        ).strip().splitlines()[-1])})
        for d in sizes:
            base = problem_args(problem, d, workers, rows_per_worker) + [
                "--workers", str(workers), "--iters", str(iters), "--eval-every", str(every),
                "--gamma-factor", repr(gamma_factor)]
            configs = [("gd", "identity", None)] if "gd" in methods else []
            configs += [(m, f"topk:{percent(f)}", f) for m in methods if m != "gd" for f in fractions]
            target_abs = None
            for method, comp, frac in configs:
                step = []
                if method in REGISTRY and not REGISTRY[method].has_theory and problem != "mlp":
                    # EF21-BC: no theoretical step here; EF21's for the same compressor, as B&W's experiments
                    ef = next((g for g in rows if (g["rate"], g["d"], g["method"], g["compressor"]) ==
                               (rate, d, "ef21", comp)), None)
                    if ef is None:
                        notes.append(f"{method} {comp}: skipped, its step is EF21's (add ef21 to --methods)")
                        continue
                    step = ["--gamma", repr(ef["gamma"] / gamma_factor)]
                r = measure(launch, base + ["--method", method, "--compressor", comp, *step], target_abs, target)
                target_abs = r["target_abs"]  # the first run (GD when asked for) sets the target
                k = None if frac is None else k_of(frac, r["dim"])
                rows.append({"rate": rate, "d": d, "method": method, "compressor": comp, "k": k, **r})
    for r in rows:
        dense = next((g for g in rows if g["rate"] == r["rate"] and g["d"] == r["d"] and g["method"] == "gd"), None)
        if dense is not None and r.get("uplink_ms") and dense.get("uplink_ms"):
            r["uplink_x_dense"] = dense["uplink_ms"] / r["uplink_ms"]
            r["uplink_comm_x_dense"] = dense["uplink_comm_ms"] / max(r["uplink_comm_ms"], 1e-3)
            r["round_x_dense"] = dense["ms_per_round"] / r["ms_per_round"]
    return {"machine": machine_info(),
            "params": {"rates": [r for r, _ in rates], "sizes": list(sizes), "fractions": list(fractions),
                       "workers": workers, "iters": iters, "eval_every": every, "target": target,
                       "methods": list(methods), "problem": problem, "rows_per_worker": rows_per_worker,
                       "gamma_factor": gamma_factor, "mca": " ".join(MCA)},
            "links": links, "rows": rows, "notes": notes}


LINK_COLUMNS = [Column("rate", "rate", "<7s"), Column("ranks", "ranks", ">5d"),
                Column("bcast_mbit", "Bcast Mbit/s", ">12.0f"), Column("gather_mbit", "Gatherv Mbit/s", ">14.0f"),
                Column("of_rate", "Bcast/rate", ">10.2f")]
COLUMNS = [Column("rate", "rate", "<7s"), Column("d", "d", ">8d"), Column("method", "method", "<9s"),
           Column("compressor", "compressor", "<10s"), Column("ms_per_round", "ms/round", ">9.1f"),
           Column("downlink_ms", "down ms", ">8.1f"), Column("uplink_ms", "up-side ms", ">10.1f"),
           Column("compute_ms", "compute ms", ">10.1f"), Column("uplink_comm_ms", "up comm ms", ">10.1f"),
           Column("uplink_x_dense", "up-side x", ">9.1f"), Column("uplink_comm_x_dense", "up comm x", ">9.1f"),
           Column("round_x_dense", "round x", ">7.2f"), Column("kb_up", "kB up/rd", ">9.1f"),
           Column("kb_down", "kB down/rd", ">10.1f"), Column("target_hit", "rounds", ">6d"),
           Column("time_to_target_s", "to target s", ">11.2f")]


def format_table(res: dict) -> str:
    p = res["params"]
    links = [dict(r, bcast_mbit=r["bcast_bits_per_s"] / 1e6, gather_mbit=r["gather_bits_per_s"] / 1e6,
                  of_rate=r["bcast_bits_per_s"] / r["bits_per_s"]) for r in res["links"]]
    rows = [dict(r, kb_up=r["bytes_up_per_round"] / 1e3, kb_down=r["bytes_down_per_round"] / 1e3)
            for r in res["rows"]]
    lines = [f"network: {p['workers']} workers over a tbf-shaped loopback (mpirun {p['mca']}), problem "
             f"{p['problem']}, GD {p['iters']} rounds sets the target {p['target']:g} x ||grad f(x0)||^2, "
             f"evaluations every {p['eval_every']} rounds (their time left out)",
             machine_line(res["machine"]), "link check (known-size collectives, every byte counted once):",
             format_rows(LINK_COLUMNS, links), format_rows(COLUMNS, rows),
             "down: the master's Bcast of x; up-side: the rest of the round (workers' compute, messages, "
             "aggregation); up comm: up-side less compute; x: GD's time / this row's", *res["notes"]]
    return "\n".join(lines)
