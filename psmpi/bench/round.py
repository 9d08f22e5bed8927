"""``psmpi bench round``: time per round of the runtimes, split into phases,
next to a plain numpy simulation and a dense (uncompressed) baseline.

Three things are measured side by side in one run, on the same problem:

* the serial runtime and the MPI runtime (``mpirun -n n+1``, launched as a
  subprocess) running ``--method`` with ``--compressor``; their per-phase
  times come from the runtimes' own timers (``timings`` in the output file);
* the same method with the identity compressor, i.e. an uncompressed Gather of
  d floats per worker and round (the dense baseline; EF21 with the identity
  compressor is gradient descent, up to rounding);
* a plain numpy single-process simulation of EF21 that loops over the n dense
  local data matrices and computes each local gradient (the way the papers'
  experiment code works).  Its iterates are checked against the serial
  runtime run with float64 values, so the comparison is between equal work.

With MPI on the CPU it also reports the MPI floor of :mod:`psmpi.bench.floor`:
the same launch and collectives with no work, and with the local gradients
only, i.e. what scheduling n + 1 processes costs on this machine.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import numpy as np

from .common import bytes_per_round, default_mpirun, run_command, run_training


def naive_ef21(A_blocks, b_blocks, lam, gamma, k, rounds, x0=None):
    """EF21 with Top-k and full gradients, simulated with dense numpy arrays in a
    Python loop over workers. Returns (x, seconds per round)."""
    d = A_blocks[0].shape[1]
    n = len(A_blocks)
    x = np.zeros(d) if x0 is None else x0.copy()

    def grad(A, b, x):
        z = b * (A @ x)
        s = 1.0 / (1.0 + np.exp(z))
        return -(A.T @ (b * s)) / A.shape[0] + 2.0 * lam * x / (1.0 + x * x) ** 2

    g_i = [grad(A, b, x) for A, b in zip(A_blocks, b_blocks)]
    g = sum(g_i) / n
    t0 = time.perf_counter()
    for _ in range(rounds):
        x = x - gamma * g
        for i in range(n):
            diff = grad(A_blocks[i], b_blocks[i], x) - g_i[i]
            idx = np.argpartition(np.abs(diff), d - k)[d - k:]
            c = np.zeros(d)
            c[idx] = diff[idx]
            g_i[i] = g_i[i] + c
            g = g + c / n
    return x, (time.perf_counter() - t0) / rounds


def _train_args(dataset, method, compressor, workers, rounds, value_dtype, device="cpu", model=None):
    args = ["--dataset", dataset, "--method", method, "--compressor", compressor, "--iters", str(rounds),
            "--eval-every", str(rounds), "--value-dtype", value_dtype, "--quiet", "--workers", str(workers),
            "--device", device]
    if model is not None:  # a neural network: its options, and one evaluation row per worker
        args += ["--problem", model.problem, "--gamma", str(model.gamma), "--eval-rows", str(workers)]
        if model.batch_size is not None:
            args += ["--batch-size", str(model.batch_size)]
    return args


@dataclass
class Model:
    """A neural-network problem for the bench: --problem, the step and the batch size
    (None: the method's default)."""

    problem: str
    gamma: float = 0.01
    batch_size: int | str | None = None


def mpi_floor(dataset, workers, rounds, mpirun, ranks=None) -> dict:
    """The same mpirun and collectives with no work, then with the local gradients
    only (:mod:`psmpi.bench.floor`): what no MPI round on this machine can beat."""
    out = run_command(mpirun + ["-n", str(ranks or workers + 1), sys.executable, "-m", "psmpi.bench.floor", dataset,
                                str(workers), str(rounds)])
    return json.loads(out.strip().splitlines()[-1])


def measure(dataset, method, compressor, workers, rounds, backend, value_dtype="float32", mpirun=None, device="cpu",
            ranks=None, model=None):
    """Seconds per round and its phase split for one runtime; bytes per round.
    ``ranks``: under MPI, the world size (default one rank per worker plus the master);
    ``model``: a neural network (:class:`Model`) instead of the dataset's default problem."""
    ranks = ranks or workers + 1
    args = _train_args(dataset, method, compressor, workers, rounds, value_dtype, device, model)
    if backend == "mpi":
        res, tim = run_training(mpirun + ["-n", str(ranks)], args)
    else:
        res, tim = run_training([], args + ["--backend", "serial"])
    m = res.metrics
    r = int(m["iteration"][-1])
    up, down = bytes_per_round(m, tim)
    w, ms = tim["workers_mean"], tim["master"]
    # "forward_backward": the model's passes (for other problems the whole local gradient);
    # "gradient_other": the rest of the local gradient (x into the model, the gradient out);
    # "compression": the method's step without its gradients, i.e. compression plus state updates
    phases = {"forward_backward": w["forward_backward"], "gradient_other": w["gradient"] - w["forward_backward"],
              "compression": w["step"] - w["gradient"], "encode": w["encode"],
              "decode_aggregate": ms.get("decode_aggregate", 0.0)}
    if backend == "mpi":
        phases["broadcast"] = ms["bcast"]
        phases["communication"] = max(0.0, ms["gather"] - w["step"] - w["encode"])
    hosted = workers if backend == "serial" else workers / (ranks - 1)  # workers one process runs in turn
    for key in ("forward_backward", "gradient_other", "compression", "encode"):
        phases[key] *= hosted
    # the rounds' time: the wall time less the last evaluation (the first is not in it)
    wall = float(m["wall_time"][-1]) - ms["evaluate_last"]
    sec = wall / r
    # forward/backward on the round's critical path: every worker in turn (serial), or the
    # slowest worker rank's (MPI: the ranks run at once, the round waits for the last one)
    fb = w["forward_backward"] * workers if backend == "serial" else tim["ranks_max"]["forward_backward"] * hosted
    return {"backend": backend if backend == "serial" else f"mpi -n {ranks}",
            "ranks": ranks if backend == "mpi" else None, "method": method, "compressor": compressor, "rounds": r,
            "dim": int(res.x.shape[0]), "sec_per_round": sec,
            "phases_ms_per_round": {k: 1e3 * v / r for k, v in phases.items()},
            "not_forward_backward": 1.0 - fb / (r * sec),
            "bytes_up_per_round": up, "bytes_down_per_round": down,
            "peak_rss_mb": tim.get("peak_rss_mb", {}), "x": res.x, "gamma": res.gamma}


def naive_on(dataset, workers, rounds, lam, gamma, k, split="contiguous", seed=0):
    from ..config import TrainConfig
    from ..runtime.common import describe_data, local_problem

    cfg = TrainConfig(dataset=dataset, workers=workers, split=split, seed=seed, lam=lam)
    info = describe_data(cfg)
    probs = [local_problem(cfg, info, i) for i in range(workers)]
    A = [p.A.toarray() for p in probs]
    b = [p.b for p in probs]
    return naive_ef21(A, b, lam, gamma, k, rounds)


def run_round_bench(dataset, method, compressor, workers, rounds, mpi=True, sizes=(), mpirun=None, device="cpu",
                    ranks=None, model=None, repeat=1):
    """``ranks``: the MPI world sizes to run (default: one rank per worker plus the
    master, and 3, i.e. the workers hosted by two ranks); ``model``: a neural network
    (:class:`Model`; then no plain numpy loop, MPI floor or synthetic sizes);
    ``repeat``: runs of each runtime row, the fastest kept (``runs`` in the row); under MPI
    each run of the compressed row comes right after a floor job of its own, so that a drift
    of the machine's speed hits the pair alike (:func:`_against_floor`)."""
    if mpi and mpirun is None:
        mpirun = default_mpirun("or use --no-mpi")
    bad = [r for r in ranks or () if not 2 <= r <= workers + 1]
    if bad:
        raise ValueError(f"--ranks: {bad[0]} ranks cannot host {workers} workers (2 to {workers + 1})")
    if model is not None and sizes:
        raise ValueError("--sizes draws synthetic logistic regression problems: not with --problem")
    ranks = sorted({r for r in (ranks or (workers + 1, 3)) if r <= workers + 1}, reverse=True)
    with_floor = mpi and device == "cpu" and model is None
    rows, floors = [], []  # every method accepts the identity compressor: that run is the dense baseline
    for backend, r in [("serial", None)] + ([("mpi", r) for r in ranks] if mpi else []):
        for meth, comp in ((method, compressor), (method, "identity")):
            paired = with_floor and backend == "mpi" and comp == compressor
            runs, fls = [], []
            for _ in range(repeat):  # the floor right before each run: a drift of the machine hits both
                if paired:
                    fls.append(mpi_floor(dataset, workers, rounds, mpirun, r))
                runs.append(measure(dataset, meth, comp, workers, rounds, backend, mpirun=mpirun, device=device,
                                    ranks=r, model=model))
            rows.append(dict(min(runs, key=lambda x: x["sec_per_round"]), runs=repeat))
            if paired:
                floors.append(_against_floor(fls, runs))
    naive = None
    if model is None and method == "ef21" and compressor.startswith("topk:") and not compressor.endswith("%"):
        ref = measure(dataset, method, compressor, workers, rounds, "serial", "float64", mpirun, device)
        x, spr = naive_on(dataset, workers, rounds, 0.1, ref["gamma"], int(compressor.split(":")[1]))
        naive = {"sec_per_round": spr, "max_abs_diff_vs_serial_float64": float(np.max(np.abs(x - ref["x"])))}
    scaling = []
    for d in sizes:
        ds = f"synthetic:rows={workers * 20},features={int(d)},density={min(1.0, 50.0 / d)},seed=1"
        for comp, meth in ((compressor, method), ("identity", method)):
            r = measure(ds, meth, comp, workers, max(5, rounds // 10), "mpi" if mpi else "serial", mpirun=mpirun,
                        device=device)
            scaling.append({"d": int(d), "method": meth, "compressor": comp, "sec_per_round": r["sec_per_round"],
                            "bytes_up_per_round": r["bytes_up_per_round"]})
    for r in rows:
        r.pop("x")
    return {"dataset": dataset, "workers": workers, "rounds": rounds, "device": device, "runs": rows,
            "problem": None if model is None else vars(model), "dim": rows[0]["dim"],
            "naive_numpy_loop": naive, "mpi_floor": floors, "dense_vs_sparse_by_d": scaling}


def _against_floor(floors: list, runs: list) -> dict:
    """The round against its floor from ``repeat`` pairs (a floor job, then a run of the
    round): the lowest floor (its fields) and the fastest run, their ratio, and each
    pair's own ratio (``pair_ratios``, their median ``pair_ratio_median``)."""
    key = "collectives_and_gradients_ms_per_round"
    f = dict(min(floors, key=lambda x: x[key]))
    f["round_ms"] = 1e3 * min(x["sec_per_round"] for x in runs)
    f["round_over_floor"] = f["round_ms"] / f[key]
    f["pair_ratios"] = [1e3 * x["sec_per_round"] / fl[key] for fl, x in zip(floors, runs)]
    f["pair_ratio_median"] = float(np.median(f["pair_ratios"]))
    return f


def _peak(r) -> str:
    m = r.get("peak_rss_mb", {})
    if "master" in m:
        return f"{m['master']:.0f} m/{m['worker_max']:.0f} w"
    return f"{m.get('process', float('nan')):.0f} (1 proc)"


def format_table(res) -> str:
    nn = res.get("problem")
    what = f"{nn['problem']} (d = {res['dim']:,}), " if nn else ""
    runs = res["runs"][0].get("runs", 1)
    best = f", the fastest of {runs} runs of each row" if runs > 1 else ""
    lines = [f"time per round: {what}{res['dataset']}, {res['workers']} workers, {res['rounds']} rounds, "
             f"workers on the {res.get('device', 'cpu')}{best}",
             "phases in ms per round: fwd/bwd = the model's forward and backward passes (for other problems the "
             "local gradient), x/g = the rest of the gradient (x into the model, g out), compr = compression and "
             "state updates, comm = the gather's wait beyond the workers' steps; other = the round's share outside "
             "fwd/bwd",
             f"{'backend':8s} {'method':9s} {'compressor':10s} {'ms/round':>9s} {'B up/round':>11s} "
             f"{'fwd/bwd':>8s} {'x/g':>7s} {'compr':>7s} {'encode':>7s} {'comm':>7s} {'bcast':>7s} {'dec+agg':>7s} "
             f"{'other':>6s} {'peak MB':>16s}"]
    for r in res["runs"]:
        p = r["phases_ms_per_round"]
        lines.append(f"{r['backend']:8s} {r['method']:9s} {r['compressor']:10s} {1e3 * r['sec_per_round']:9.3f} "
                     f"{r['bytes_up_per_round']:11.0f} {p['forward_backward']:8.3f} {p['gradient_other']:7.3f} "
                     f"{p['compression']:7.3f} {p['encode']:7.3f} {p.get('communication', float('nan')):7.3f} "
                     f"{p.get('broadcast', float('nan')):7.3f} {p['decode_aggregate']:7.3f} "
                     f"{100 * r['not_forward_backward']:5.1f}% {_peak(r):>16s}")
    if nn:
        d = res["dim"]
        lines.append(f"memory: the model's flat float32 parameters and gradients {8 * d / 2**20:.1f} MB, "
                     f"each float64 vector of length d (x, g_i, v_i, ...) {8 * d / 2**20:.1f} MB")
    nv = res["naive_numpy_loop"]
    if nv:
        lines.append(f"plain numpy loop (dense local gradients): {1e3 * nv['sec_per_round']:.3f} ms/round "
                     f"(max |x - x_serial| = {nv['max_abs_diff_vs_serial_float64']:.2e})")
        for r in res["runs"]:
            if r["compressor"] != "identity":
                lines.append(f"  {r['backend']} runtime is {nv['sec_per_round'] / r['sec_per_round']:.2f}x "
                             f"the speed of the plain loop")
    for fl in res.get("mpi_floor") or []:
        lines.append(f"mpi floor, mpirun -n {fl['ranks']}, the round's collectives alone: "
                     f"{fl['collectives_ms_per_round']:.3f} ms/round; with each worker's local gradient "
                     f"(nothing else): {fl['collectives_and_gradients_ms_per_round']:.3f} ms/round "
                     f"(a gradient {fl['gradient_cpu_us_in_job']:.0f} us of CPU in the job, "
                     f"{fl['gradient_us_alone']:.0f} us alone; best of 3 repetitions"
                     f"{', the lowest of %d jobs' % runs if runs > 1 else ''}); the {res['runs'][0]['method']} "
                     f"round{' (best of %d runs)' % runs if runs > 1 else ''}: "
                     f"{fl['round_ms']:.3f} ms = {fl['round_over_floor']:.2f}x this floor"
                     + (f"; each run against the floor job just before it: "
                        f"{', '.join(f'{v:.2f}x' for v in fl['pair_ratios'])} (median "
                        f"{fl['pair_ratio_median']:.2f}x)" if runs > 1 else ""))
    if res["dense_vs_sparse_by_d"]:
        lines.append(f"{'d':>10s} {'method':8s} {'compressor':10s} {'ms/round':>9s} {'B up/round':>12s}")
        for s in res["dense_vs_sparse_by_d"]:
            lines.append(f"{s['d']:10d} {s['method']:8s} {s['compressor']:10s} {1e3 * s['sec_per_round']:9.3f} "
                         f"{s['bytes_up_per_round']:12.0f}")
    return "\n".join(lines)
