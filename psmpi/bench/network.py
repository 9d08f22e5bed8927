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
GD (dense, the identity compressor), then each compressed method at each K/d.
Each of these runs at every ``--gamma-factors`` multiple of its own theoretical
step (EF21-BC, which has none, at EF21's for the same compressor, as the B&W
experiments), as the EF21 papers tune the step:

* trajectories: every factor runs in the serial runtime (no link) for ``--iters``
  rounds, evaluated every round; the target is ``--target`` times
  ||grad f(x^0)||^2 (x^0 is the same for every run), fixed by the first run (GD
  at the first factor when GD is asked for).  Its status: ``diverged`` (train
  stopped it: non-finite or exploding ||grad f||^2), ``reached`` (at or below the
  target at round N and still at the end, f below f(x^0)), ``f rose`` (the same
  but f above f(x^0) at the end: a huge step throwing x where f is flat, e.g. the
  logistic loss saturated, is no convergence), ``left`` (at or below the target at
  some round, above it at the end), ``growing`` (never reached, its last
  ||grad f||^2 above its first) or ``not reached``.  The serial and MPI runtimes
  give the same iterates bit for bit, so the MPI run over the link reaches the
  target at the same round (checked: its ||grad f(x^N)||^2 is compared with the
  serial run's, ``same_as_serial``);
* the best factor is the ``reached`` one with the fewest rounds N (a round costs
  the same at every step: the same compute and, up to the index encoding, the
  same bytes);
* time to target: ``psmpi train --iters N --eval-every N`` of that factor over the
  link, evaluated at x^0 and x^N only: the wall time at x^N (the run's clock
  starts after the evaluation at x^0, which waited for x^0 to reach the workers:
  round 0's broadcast, the same for every method, is not in it) less the master's
  time in the evaluation at x^N (the workers' dense gradients going up and, for a
  downlink method, the x sent for it);
* per round (a run over the link at the same factor, ``--iters`` rounds,
  evaluations every ``--eval-every``): ms per round, the wall time between the
  second and the last evaluation rows less the evaluations between them (each
  counted as the last one took, :func:`evaluation_s`), over the rounds between
  them (so round 0, with its often dense initial messages, is left out).  An
  evaluation waits for the round's x to reach the workers, so when evaluations
  are frequent part of the downlink is counted as evaluation time: use a large
  ``--eval-every`` here;
* downlink: the master's ``Bcast`` of x per round (the linear broadcast
  returns once x has been handed to TCP for every worker; when x for one worker
  fits in the socket buffer, that is before it crossed the link, and the rest of
  its time falls in the next phase);
* uplink side: the rest of the round, i.e. the workers' step and encoding,
  their messages crossing the link and the master's decoding and aggregation;
  ``uplink comm`` is that less the workers' compute and the master's decoding;
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
COMPRESSED = ("ef21", "ef21-sgdm", "ef21-bc")  # the compressed methods benchmarked (with Top-K)
MLP_STEP = 0.01  # --problem mlp: the base step the --gamma-factors multiply (a network has no theoretical one)


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
    The bucket holds 4 ms of traffic, at least 1 MB (tbf needs more than a timer tick's worth;
    with 256 KiB at 100 Mbit/s tbf dropped packets, 237 in 15 rounds of 8 workers, and a round
    took 2.5x its bytes' time, TCP waiting for retransmissions)."""
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


def problem_args(problem: str, d: int, workers: int, rows_per_worker: int, lam: float | None = None) -> list[str]:
    """train options for a problem of about d parameters (``lam``: the synthetic problem's
    regulariser weight, None for train's default)."""
    if problem == "mlp":  # digits: 64 inputs, 10 classes; mlp:H has 64H + H + 10H + 10 parameters
        return ["--problem", f"mlp:{max(1, round((d - 10) / 75))}", "--dataset", "digits", "--gamma", repr(MLP_STEP)]
    rows = workers * rows_per_worker
    return ["--dataset", f"synthetic:rows={rows},features={d},density={min(1.0, 100.0 / d):.3g},seed=1",
            *([] if lam is None else ["--lam", repr(lam)])]


def measure(cmd_prefix: list[str], train: list[str]) -> dict:
    """One training run over the link: its per-round times and phases, bytes per round
    (see the module docstring)."""
    res, tim = run_training(cmd_prefix, [*train, "--quiet"], diverged_ok=True)
    m = res.metrics
    it, wall = (np.asarray(m[k], dtype=float) for k in ("iteration", "wall_time"))
    up, down = bytes_per_round(m, tim)
    ms, w = tim["master"], tim["workers_mean"]
    rounds = int(it[-1])
    eval_row = evaluation_s(ms, len(it))
    row = {"rounds": rounds, "dim": int(np.size(res.x)), "eval_ms_per_row": 1e3 * eval_row,
           "bytes_up_per_round": up, "bytes_down_per_round": down,
           "ms_per_round": None, "downlink_ms": 1e3 * ms["bcast"] / (rounds + 1)}
    if len(it) >= 3:
        per_round = (wall[-1] - wall[1] - eval_row * (len(it) - 2)) / (it[-1] - it[1])
        compute = (w["step"] + w["encode"] + ms.get("decode_aggregate", 0.0)) / max(1, rounds)
        row["ms_per_round"] = 1e3 * per_round
        row["uplink_ms"] = row["ms_per_round"] - row["downlink_ms"]
        row["compute_ms"] = 1e3 * compute
        row["uplink_comm_ms"] = max(0.0, row["uplink_ms"] - row["compute_ms"])
    return row


def trajectory(train: list[str], target_abs: float | None, target: float) -> dict:
    """One run of the serial runtime (no link), evaluated every round for all its --iters
    rounds: the step, the first round at or below the target and the status.  Without
    ``target_abs`` the target is ``target`` x this run's ||grad f(x0)||^2."""
    res, _ = run_training([], [*train, "--backend", "serial", "--eval-every", "1", "--quiet"], diverged_ok=True)
    it, gns, loss = (np.asarray(res.metrics[k], dtype=float) for k in ("iteration", "grad_norm_sq", "loss"))
    target_abs = target * float(gns[0]) if target_abs is None else target_abs
    hit = np.flatnonzero(gns <= target_abs)
    cfg = res.config
    base = cfg["gamma_theory"] if cfg["gamma"] == "theory" else float(cfg["gamma"])  # the step before --gamma-factor
    return {"gamma": float(res.gamma), "gamma_x1": base, "rounds": int(it[-1]), "gns0": float(gns[0]), "gns_final": float(gns[-1]),
            "target_abs": target_abs, "target_hit": int(it[hit[0]]) if hit.size else None,
            "gns_at_target": float(gns[hit[0]]) if hit.size else None, "f0": float(loss[0]),
            "f_final": float(loss[-1]), "status": run_status(gns, target_abs, res.diverged, loss),
            "stop": res.stop_reason}


def time_to_target(cmd_prefix: list[str], train: list[str], rounds: int) -> dict:
    """The wall time of ``rounds`` rounds over the link, evaluated at x^0 and x^rounds only,
    less the last evaluation (the run's clock starts after the first); ||grad f||^2 at
    x^rounds, to check against the serial run."""
    res, tim = run_training(cmd_prefix, [*train, "--iters", str(rounds), "--eval-every", str(rounds), "--quiet"])
    wall, gns = (np.asarray(res.metrics[k], dtype=float) for k in ("wall_time", "grad_norm_sq"))
    return {"time_to_target_s": max(0.0, float(wall[-1]) - evaluation_s(tim["master"], 2)),
            "gns_at_target_mpi": float(gns[-1])}


def evaluation_s(ms: dict, rows: int) -> float:
    """Seconds of one evaluation after the first, from the master's timings ``ms`` of a run
    with ``rows`` evaluation rows: the last one's (``evaluate_last``: the workers' rows going
    up; the first, before the run's clock starts, also waits for x^0 and for the TCP
    connections to open) plus, for a downlink method, its share of the x sent for the
    evaluations alone (in the transport's ``eval`` time, not in the evaluations' own)."""
    return ms["evaluate_last"] + max(0.0, ms["eval"] - ms["evaluate"]) / max(1, rows - 1)


def run_status(gns, target_abs: float, diverged: bool, loss=None) -> str:
    """What a run did, from its ||grad f||^2 and f (``loss``), one value per round:
    'diverged' (train stopped the run on divergence, or a value is not finite); 'reached'
    (||grad f||^2 at or below the target at some round and at the end, f below f(x^0));
    'f rose' (the same, but f at the end above f(x^0): x thrown where f is flat, e.g. the
    logistic loss saturated by a huge step); 'left' (at or below the target at some round,
    above it at the end); 'growing' (never reached, the last value above the first); else
    'not reached'."""
    gns = np.asarray(gns, dtype=float)
    if diverged or not np.all(np.isfinite(gns)):
        return "diverged"
    if np.any(gns <= target_abs):
        if gns[-1] > target_abs:
            return "left"
        return "f rose" if loss is not None and loss[-1] > loss[0] else "reached"
    return "growing" if gns[-1] > gns[0] else "not reached"


def best_run(runs: list[dict]) -> dict | None:
    """Of the runs that reached the target and stayed there, the one that reached it in the
    fewest rounds (a round costs the same at every step; ties: the smaller factor); None
    when there is none."""
    reached = [r for r in runs if r["status"] == "reached"]
    return min(reached, key=lambda r: (r["target_hit"], r["factor"]), default=None)


def parse_factors(text: str) -> list[float]:
    """'1,4,16,64' -> [1.0, 4.0, 16.0, 64.0]: multiples of each method's theoretical step."""
    out = []
    for tok in str(text).split(","):
        try:
            out.append(float(tok))
        except ValueError:
            raise ValueError(f"bad --gamma-factors value {tok.strip()!r}: use positive numbers, "
                             f"e.g. 1,4,16,64") from None
    return out  # checked by run_network_bench


def check_factors(factors) -> list[float]:
    """The factors as floats: positive, finite and distinct (ValueError, one line)."""
    out = []
    for f in map(float, factors):
        if not (np.isfinite(f) and f > 0):
            raise ValueError(f"bad --gamma-factors value {f:g}: use positive numbers, e.g. 1,4,16,64")
        if f in out:
            raise ValueError(f"--gamma-factors: {f:g} is given twice")
        out.append(f)
    if not out:
        raise ValueError("--gamma-factors needs at least one value, e.g. 1,4,16,64")
    return out


def run_network_bench(rates, sizes, fractions, workers: int = 8, iters: int = 30, target: float = 0.1,
                      eval_every: int | None = None, methods=("gd", "ef21", "ef21-sgdm"),
                      problem: str = "synthetic", rows_per_worker: int = 50, gamma_factors=(1.0,),
                      lam: float | None = None, mpirun=None) -> dict:
    from ..methods import REGISTRY

    if workers < 1 or iters < 2:
        raise ValueError("--workers must be at least 1 and --iters at least 2")
    if not 0 < target < 1:
        raise ValueError("--target is a fraction of ||grad f(x0)||^2 in (0, 1)")
    factors = check_factors(gamma_factors)
    unknown = [m for m in methods if m != "gd" and m not in COMPRESSED]
    if unknown:
        raise ValueError(f"--methods: {', '.join(unknown)} not benchmarked here (gd, {', '.join(COMPRESSED)})")
    borrows = problem != "mlp"  # a method without a theoretical step runs at EF21's (ef21-bc, as B&W's experiments)
    if borrows and "ef21" not in methods and any(not REGISTRY[m].has_theory for m in methods if m != "gd"):
        raise ValueError("--methods: ef21-bc runs at EF21's theoretical step for the same compressor: add ef21")
    if problem == "mlp":
        if lam is not None:
            raise ValueError("--lam is the synthetic problem's regulariser weight; --problem mlp has none")
        import importlib.util
        if importlib.util.find_spec("torch") is None:
            raise RuntimeError("--problem mlp needs torch (pip install 'psmpi[torch]')")
    elif lam is not None and not (lam >= 0 and np.isfinite(lam)):
        raise ValueError(f"--lam must be a non-negative number (got {lam})")
    notes = []
    check_namespace()
    mpirun = mpirun or default_mpirun()
    every = eval_every or max(1, iters // 10)
    links, rows, serial = [], [], {}
    for rate, bps in rates:
        launch = shaped(rate, bps, mpirun + ["-n", str(workers + 1), *MCA])
        probe_bytes = max(2**20, int(bps / 8 * 0.05))  # about 50 ms of the link per worker
        links.append({"rate": rate, "bits_per_s": bps, **json.loads(run_command(
            launch + [sys.executable, "-m", "psmpi.bench.linkprobe", str(probe_bytes), str(probe_bytes)]
        ).strip().splitlines()[-1])})
        for d in sizes:
            base = problem_args(problem, d, workers, rows_per_worker, lam) + ["--workers", str(workers)]
            configs = [("gd", "identity", None)] if "gd" in methods else []
            compressed = sorted((m for m in methods if m != "gd"), key=lambda m: not REGISTRY[m].has_theory)
            configs += [(m, f"topk:{percent(f)}", f) for m in compressed for f in fractions]  # EF21 before EF21-BC
            target_abs = None
            for method, comp, frac in configs:
                step = []
                if borrows and not REGISTRY[method].has_theory:
                    # EF21-BC: no theoretical step here; EF21's for the same compressor, as B&W's experiments
                    ef = next(g for g in rows if (g["rate"], g["d"], g["method"], g["compressor"]) ==
                              (rate, d, "ef21", comp))
                    step = ["--gamma", repr(ef["gamma_x1"])]
                train = base + ["--method", method, "--compressor", comp, *step]
                runs = []
                for factor in factors:  # the serial runs do not depend on the rate: run once per d
                    args = train + ["--gamma-factor", repr(factor), "--iters", str(iters)]
                    if tuple(args) not in serial:
                        serial[tuple(args)] = {"factor": factor, **trajectory(args, target_abs, target)}
                    runs.append(dict(serial[tuple(args)]))
                    target_abs = runs[-1]["target_abs"]  # the first run (GD when asked for) fixes the target
                best = best_run(runs)
                timed = train + ["--gamma-factor", repr((best or runs[0])["factor"])]  # a round costs the same
                row = {"rate": rate, "d": d, "method": method, "compressor": comp, "target_abs": target_abs,
                       "gamma_x1": runs[0]["gamma_x1"], "timed_factor": (best or runs[0])["factor"],
                       **measure(launch, timed + ["--iters", str(iters), "--eval-every", str(every)]),
                       "factor": None, "gamma": None, "target_hit": None, "time_to_target_s": None, "runs": runs}
                row["k"] = None if frac is None else k_of(frac, row["dim"])
                if best is not None:
                    row.update(factor=best["factor"], gamma=best["gamma"], target_hit=best["target_hit"],
                               **time_to_target(launch, timed, max(1, best["target_hit"])))
                    row["same_as_serial"] = row["gns_at_target_mpi"] == best["gns_at_target"]
                rows.append(row)
    for r in rows:
        dense = next((g for g in rows if g["rate"] == r["rate"] and g["d"] == r["d"] and g["method"] == "gd"), None)
        if dense is not None and r.get("uplink_ms") and dense.get("uplink_ms"):
            r["uplink_x_dense"] = dense["uplink_ms"] / r["uplink_ms"]
            r["uplink_comm_x_dense"] = dense["uplink_comm_ms"] / max(r["uplink_comm_ms"], 1e-3)
            r["round_x_dense"] = dense["ms_per_round"] / r["ms_per_round"]
        if dense is not None and dense["time_to_target_s"] is not None and r["time_to_target_s"]:
            r["target_x_dense"] = dense["time_to_target_s"] / r["time_to_target_s"]
    return {"machine": machine_info(),
            "params": {"rates": [r for r, _ in rates], "sizes": list(sizes), "fractions": list(fractions),
                       "workers": workers, "iters": iters, "eval_every": every, "target": target,
                       "methods": list(methods), "problem": problem, "rows_per_worker": rows_per_worker,
                       "gamma_factors": factors, "lam": lam, "mca": " ".join(MCA)},
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
           Column("kb_down", "kB down/rd", ">10.1f"), Column("factor", "best x", ">6g"),
           Column("target_hit", "rounds", ">6d"), Column("time_to_target_s", "to target s", ">11.3f"),
           Column("target_x_dense", "vs GD", ">6.2f")]
RUN_COLUMNS = [Column("d", "d", ">8d"), Column("method", "method", "<9s"),
               Column("compressor", "compressor", "<10s"), Column("factor", "x step", ">6g"),
               Column("gamma", "gamma", ">10.4g"), Column("rounds", "ran", ">5d"), Column("status", "status", "<11s"),
               Column("target_hit", "rounds", ">6d"), Column("final_x_target", "final/target", ">12.3g"),
               Column("f_final", "f final", ">9.4g")]


def format_table(res: dict) -> str:
    p = res["params"]
    links = [dict(r, bcast_mbit=r["bcast_bits_per_s"] / 1e6, gather_mbit=r["gather_bits_per_s"] / 1e6,
                  of_rate=r["bcast_bits_per_s"] / r["bits_per_s"]) for r in res["links"]]
    rows = [dict(r, kb_up=r["bytes_up_per_round"] / 1e3, kb_down=r["bytes_down_per_round"] / 1e3)
            for r in res["rows"]]
    runs, seen = [], set()  # every serial run once (they are the same at every rate)
    for r in res["rows"]:
        if (r["d"], r["method"], r["compressor"]) not in seen:
            seen.add((r["d"], r["method"], r["compressor"]))
            runs += [dict(run, **{k: r[k] for k in ("d", "method", "compressor")},
                          final_x_target=run["gns_final"] / run["target_abs"]) for run in r["runs"]]
    first = "GD" if "gd" in p["methods"] else p["methods"][0] if p["methods"] else "-"
    lam = "" if p.get("lam") is None else f" (lam {p['lam']:g})"
    factors = ",".join(f"{f:g}" for f in p["gamma_factors"])
    lines = [f"network: {p['workers']} workers over a tbf-shaped loopback (mpirun {p['mca']}), problem "
             f"{p['problem']}{lam}; steps {factors} x each method's theoretical step (EF21-BC: EF21's), each "
             f"run serially for {p['iters']} rounds, evaluated every round; target {p['target']:g} x "
             f"||grad f(x0)||^2 (fixed by the first run, {first} at x{p['gamma_factors'][0]:g}); the best factor's "
             f"rounds to target then timed over the link; per-round times from {p['iters']} rounds over the link, "
             f"evaluations every {p['eval_every']} rounds (their time left out)",
             machine_line(res["machine"]), "link check (known-size collectives, every byte counted once):",
             format_rows(LINK_COLUMNS, links), format_rows(COLUMNS, rows),
             "down: the master's Bcast of x; up-side: the rest of the round (workers' compute, messages, "
             "aggregation); up comm: up-side less compute; x: GD's time / this row's; best x: the step factor "
             "reaching the target in the fewest rounds and staying there; to target s: the wall time of those "
             "rounds over the link; vs GD: GD's time to target / this row's (above 1: ahead of GD)",
             "every serial run (status: reached = at the target at round N and at the end, f below f(x0); "
             "f rose = the same with f above f(x0); left = at the target at round N, above it at the end; "
             "growing = never reached, last ||grad f||^2 above the first; not reached; diverged = stopped by "
             "train):", format_rows(RUN_COLUMNS, runs)]
    lines += [f"{r['rate']} d={r['d']} {r['method']} {r['compressor']}: the run over the link ended at ||grad f||^2 "
              f"{r['gns_at_target_mpi']:.17g}, not the serial run's" for r in res["rows"]
              if r.get("same_as_serial") is False]
    return "\n".join(lines + res["notes"])
