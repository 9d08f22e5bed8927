"""EF21-BC (bidirectional compression) and PP-MARINA (MARINA with partial
participation): theory steps against the formulas computed here, what goes down
and up the wire, the worker's own model, serial == MPI, exact resume, refusals.

The convergence of each with each compressor of the shared table is checked by
tests/test_methods.py (its table iterates the registry), serial == MPI for the
registry's layouts by tests/test_mpi.py."""
from __future__ import annotations

import math
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import psmpi
from psmpi.cli import main
from psmpi.compressors import Dense, Sparse, make_compressor
from psmpi.methods import Hyper, WorkerContext, get_method
from psmpi.results import read_result
from psmpi.runtime.checkpoint import unpack_state
from psmpi.runtime.common import common_rng, worker_rng
from psmpi.wire import encode

from conftest import mpirun

SMALL = dict(dataset="synthetic:rows=200,features=20", workers=4, lam=0.1, quiet=True, seed=3)  # d = 20
D, N = 20, 4
PSMPI = [sys.executable, "-m", "psmpi", "train"]
EXACT = ("iteration", "grad_norm_sq", "loss", "bits_up_per_worker", "bits_down_per_worker", "bytes_up", "bytes_down")


def run(theory=False, **kw):
    """A small run; ef21-bc has no theoretical step, so it gets 0.05 unless ``theory``."""
    if kw.get("method") == "ef21-bc" and "gamma" not in kw and not theory:
        kw["gamma"] = 0.05
    return psmpi.train(None, **{**SMALL, **kw})


def theta_beta(alpha):
    """EF21's theta = 1 - sqrt(1 - alpha), beta = (1 - alpha)/theta (0 at alpha = 1)."""
    theta = 1 - math.sqrt(1 - alpha)
    return theta, (1 - alpha) / theta


def same_run(a, b):
    assert np.array_equal(a.x, b.x)
    for k in EXACT:
        assert np.array_equal(a.metrics[k], b.metrics[k]), k


# ----------------------------------------------------------------- theory ---
def test_ef21_bc_implements_no_theory_step_and_says_so():
    """B&W's EF21-BC theorem could not be checked, so --gamma theory is refused (one line)."""
    from psmpi.methods import REGISTRY, NoTheory

    assert not REGISTRY["ef21-bc"].has_theory
    with pytest.raises(NoTheory, match="pass --gamma"):
        run(method="ef21-bc", compressor="topk:2", iters=1, theory=True)
    r = run(method="ef21-bc", compressor="topk:2", iters=1, gamma=0.01)
    assert r.gamma == 0.01 and r.config["gamma_theory"] is None


def test_ef21_bc_default_downlink_is_topk_with_the_uplink_k_else_the_uplink_itself():
    assert run(method="ef21-bc", compressor="topk:10%", iters=1).config["downlink_compressor"] == "topk:2"
    assert run(method="ef21-bc", compressor="randk:3", iters=1).config["downlink_compressor"] == "topk:3"
    assert run(method="ef21-bc", compressor="sign", iters=1).config["downlink_compressor"] == "sign"


@pytest.mark.parametrize("comp,p,r_", [("randk:2", None, None), ("randk:2", 0.3, 2), ("natural", 0.5, 7),
                                       ("qsgd:4", None, 1)])
def test_pp_marina_step_is_theorem_4_1_with_the_quadratic_mean_of_the_l_i(comp, p, r_):
    """MARINA Theorem 4.1: gamma = 1/(L (1 + sqrt((1 - p)(1 + omega)/(p r)))) with MARINA's
    L = sqrt((1/n) sum L_i^2), computed here from the run's L_i (not its L_tilde)."""
    kw = {k: v for k, v in (("p", p), ("participation", r_)) if v is not None}
    r = run(method="pp-marina", compressor=comp, iters=1, **kw)
    omega = {"randk:2": 20 / 2 - 1, "natural": 1 / 8, "qsgd:4": min(20 / 16, math.sqrt(20) / 4)}[comp]
    p_ = 1 / (omega + 1) if p is None else p
    rr = 5 if r_ is None else r_
    assert r.config["p"] == pytest.approx(p_) and r.config["participation"] == rr
    L_i = np.asarray(r.attrs["L_i"], dtype=float)
    assert len(L_i) == N and np.ptp(L_i) > 0  # heterogeneous: the quadratic mean, max and mean differ
    L = math.sqrt(float(np.mean(L_i ** 2)))
    assert r.gamma == pytest.approx(1 / (L * (1 + math.sqrt((1 - p_) * (1 + omega) / (p_ * rr)))), rel=1e-12)


# ------------------------------------------------------------- the downlink ---
def test_ef21_bc_sends_x0_then_g0_dense_then_only_the_compressed_broadcast():
    """bytes_down per round (every round evaluated, so x^t also goes down, uncounted):
    round 0 x^0 (d float64), round 1 g^0 (d float32 with its header), then one Top-1
    message (index and value) for each of the n workers; EF21 sends x every round."""
    r = run(method="ef21-bc", compressor="topk:1", iters=12, eval_every=1)
    inc = np.diff(r.metrics["bytes_down"])
    top1 = len(encode(Sparse(D, np.array([7]), np.array([1.0], np.float32))))
    assert inc[0] == N * 8 * D
    assert inc[1] == N * len(encode(Dense(np.zeros(D, np.float32))))
    assert np.all(inc[2:] == N * top1) and top1 < 8 * D / 10
    np.testing.assert_array_equal(r.metrics["bits_down_per_worker"], 8.0 * r.metrics["bytes_down"] / N)
    ef = run(method="ef21", compressor="topk:1", iters=12, eval_every=1)
    assert np.all(np.diff(ef.metrics["bytes_down"]) == N * 8 * D)


def test_ef21_bc_workers_keep_a_model_equal_to_the_master_iterate_bit_for_bit(tmp_path):
    """The checkpoint at round 30 holds every worker's w and g^t and the master's x, g^t:
    equal bit for bit, though x never went down after round 0 except for evaluations
    (eval_every 7 does not divide 30)."""
    out = tmp_path / "bc.h5"
    run(method="ef21-bc", compressor="topk:1", downlink_compressor="randk:3", iters=35, eval_every=7,
        checkpoint_every=30, out=str(out))
    with h5py.File(f"{out}.ckpt", "r") as f:
        assert int(f.attrs["round"]) == 30
        x = f["x"][()]
        master, _ = unpack_state(f["master"][()].tobytes())
        workers = [unpack_state(f["workers"][str(i)][()].tobytes())[0] for i in range(N)]
    assert np.array_equal(master.x, x) and master.t == 29
    for w in workers:
        assert np.array_equal(w.w, x) and np.array_equal(w.gb, master.g)
    assert not np.allclose(x, 0.0)


def test_ef21_bc_with_an_exact_downlink_is_ef21_to_rounding():
    """C_M = identity at float64: b = g~ - g, so g^t = g~^t up to rounding: EF21's iterates."""
    common = dict(compressor="topk:2", gamma=0.5, iters=60, value_dtype="float64")
    ef21 = run(method="ef21", **common)
    bc = run(method="ef21-bc", downlink_compressor="identity", **common)
    np.testing.assert_allclose(bc.x, ef21.x, rtol=1e-9, atol=1e-13)
    assert not np.array_equal(run(method="ef21-bc", downlink_compressor="topk:1", **common).x, bc.x)


@pytest.mark.parametrize("comp", ["topk:1", "topk:10%", "sign"])
def test_ef21_bc_converges_at_ef21s_step_the_papers_experimental_choice(comp):
    ef21 = run(method="ef21", compressor=comp, iters=1)
    r = run(method="ef21-bc", compressor=comp, gamma=ef21.gamma, iters=300, eval_every=30)
    g = r.metrics["grad_norm_sq"]
    assert g[-1] < 1e-3 * g[0], g


def test_ef21_bc_checkpoint_and_resume_is_exact_with_a_random_downlink(tmp_path):
    args = ["--method", "ef21-bc", "--gamma", "0.05", "--compressor", "topk:1", "--downlink-compressor", "randk:3",
            "--iters", "60",
            "--eval-every", "7", "--quiet", "--workers", "4", "--seed", "1", "--dataset", "synthetic:rows=200,features=20"]
    subprocess.run(PSMPI + args + ["--out", str(tmp_path / "full.h5")], check=True)
    part = tmp_path / "part.h5"
    subprocess.run(PSMPI + args + ["--iters", "25", "--checkpoint-every", "10", "--out", str(part)], check=True)
    subprocess.run(PSMPI + args + ["--out", str(part), "--resume", f"{part}.ckpt"], check=True)
    same_run(read_result(str(tmp_path / "full.h5")), read_result(str(part)))


@pytest.mark.mpi
def test_ef21_bc_under_mpi_3_ranks_4_workers_equals_serial_and_resumes_exactly(tmp_path):
    """Two workers per rank (one message decoded, applied by both), a random downlink
    compressor (the master's stream), then a checkpoint at round 20 resumed under MPI."""
    args = ["--method", "ef21-bc", "--gamma", "0.05", "--compressor", "sign", "--downlink-compressor", "randk:5",
            "--iters", "50",
            "--eval-every", "6", "--quiet", "--workers", "4", "--seed", "2", "--dataset", "breast-cancer"]
    serial, mpi, part = tmp_path / "s.h5", tmp_path / "m.h5", tmp_path / "p.h5"
    subprocess.run(PSMPI + args + ["--backend", "serial", "--out", str(serial)], check=True)
    for extra, out in (([], mpi), (["--iters", "25", "--checkpoint-every", "20"], part),
                       (["--resume", f"{part}.ckpt"], part)):
        proc = subprocess.run(mpirun() + ["-n", "3"] + PSMPI + args + extra + ["--out", str(out)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    a = read_result(str(serial))
    same_run(a, read_result(str(mpi)))
    same_run(a, read_result(str(part)))
    assert read_result(str(mpi)).attrs["backend"] == "mpi"


# ---------------------------------------------------------------- PP-MARINA ---
def _pp_context(index, n, r, p, seed=4):
    from psmpi.problems import LogReg

    rng = np.random.default_rng(index)
    A, b = rng.standard_normal((30, 6)), np.where(rng.random(30) < 0.5, -1.0, 1.0)
    m = get_method("pp-marina")
    comp = m.prepare_compressor(make_compressor("randk:2", 6, "float64"))
    hp = Hyper(n, 0.05, **m.resolve({"p": p, "participation": r}, comp))
    return m, LogReg(A, b, 0.1), WorkerContext(index, LogReg(A, b, 0.1), comp, worker_rng(seed, index),
                                                common_rng(seed), hp, "float64")


def test_pp_marina_worker_sends_the_sum_of_one_compression_per_draw_or_nothing():
    """Rounds of one worker (index 1 of n = 3, r = 4 draws with replacement, p = 0.3), replayed
    from copies of its streams: the shared coin, then r i.i.d. uniform draws; drawn m times it
    sends the sum of m independent Rand-K compressions of grad f_i(x^t) - grad f_i(x^{t-1}),
    the latter recomputed when its last gradient is older; not drawn: None."""
    m, prob, ctx = _pp_context(1, 3, 4, 0.3)
    common, wrng = common_rng(4), worker_rng(4, 1)
    comp = ctx.compressor
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal(6) for _ in range(40)]
    ctx.round = 0
    st, msg = m.worker_init(ctx, xs[0])
    assert msg.flag and np.array_equal(msg.values, prob.grad_aux(xs[0])[0])
    seen = set()
    for t in range(1, 40):
        ctx.round = t
        st, msg = m.worker_step(ctx, st, xs[t])
        if common.random() < 0.3:
            assert msg.flag and np.array_equal(msg.values, prob.grad_aux(xs[t])[0])
            seen.add("sync")
            continue
        drawn = int(np.sum(common.integers(0, 3, size=4) == 1))
        if not drawn:
            assert msg is None
            seen.add("out")
            continue
        diff = prob.grad_aux(xs[t])[0] - prob.grad_aux(xs[t - 1])[0]
        expect = np.zeros(6)
        for _ in range(drawn):
            comp.compress(diff, wrng).add_to(expect)
        assert not msg.flag
        np.testing.assert_allclose(msg.to_dense(), expect, rtol=1e-12, atol=1e-15)
        seen.add(drawn)
    assert {"sync", "out", 1, 2} <= seen, seen


def test_pp_marina_master_adds_the_messages_over_r_or_takes_the_mean_on_a_sync_round():
    from psmpi.methods.base import MasterG
    from psmpi.methods.pp_marina import pp_master_step

    hp = Hyper(4, 0.5, p=0.1, participation=3)
    a, b, g0 = np.arange(5.0), np.ones(5), np.full(5, 2.0)
    ms = pp_master_step(hp, MasterG(np.zeros(5), g0.copy()), [None, Dense(a), None, Dense(b)])
    np.testing.assert_array_equal(ms.g, g0 + (a + b) / 3)  # over r = 3 draws, not over n or the senders
    np.testing.assert_array_equal(ms.x, -0.5 * ms.g)
    ms = pp_master_step(hp, ms, [Dense(a, True), Dense(b, True), Dense(a, True), Dense(b, True)])
    np.testing.assert_array_equal(ms.g, (a + b + a + b) / 4)
    with pytest.raises(ValueError, match="coin"):
        pp_master_step(hp, ms, [Dense(a, True), Dense(b), None, None])


def test_pp_marina_master_averages_over_the_r_draws_and_non_participants_send_nothing():
    """n = 6, r = 2, p = 0.2, every round evaluated: each round either every worker sends
    (a synchronisation) or one or two workers do, the others 0 bytes."""
    r = run(method="pp-marina", compressor="randk:2", workers=6, participation=2, p=0.2, iters=60, eval_every=1)
    sent = np.diff(r.metrics["bits_up_by_worker"], axis=0) > 0
    per_round = sent.sum(axis=1)
    assert set(per_round) <= {1, 2, 6} and {6} < set(per_round) and len(set(per_round)) >= 2
    g = r.metrics["grad_norm_sq"]
    assert g[-1] < 1e-2 * g[0]


def test_pp_marina_syncing_every_round_is_gd_bit_for_bit():
    common = dict(iters=20, value_dtype="float64", compressor="identity", gamma=2.0)
    gd = run(method="gd", **common)
    np.testing.assert_array_equal(run(method="pp-marina", p=1.0, participation=1, **common).x, gd.x)


# --------------------------------------------------------------- refusals ---
@pytest.mark.parametrize("args,words", [
    (["--method", "ef21", "--downlink-compressor", "topk:1"], ["ef21", "does not use --downlink-compressor",
                                                                "ef21-bc"]),
    (["--method", "ef21-pp", "--downlink-compressor", "topk:1"], ["ef21-pp", "does not use --downlink-compressor"]),
    (["--method", "ef21-bc", "--downlink-compressor", "nope"], ["unknown compressor 'nope'"]),
    (["--method", "pp-marina", "--participation", "0"], ["--participation must be"]),
    (["--method", "pp-marina", "--participation", "0.5"], ["pp-marina", "number of workers", "0.5"]),
    (["--method", "pp-marina", "--compressor", "topk:1"], ["pp-marina", "unbiased", "topk:1"]),
    (["--method", "marina", "--participation", "2"], ["marina", "does not use --participation"]),
])
def test_bad_combinations_are_one_line_errors_with_exit_2(args, words):
    r = CliRunner().invoke(main, ["train", "--iters", "2", "--workers", "2", "-q", *args])
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert "\n" not in line and all(w in line for w in words), line
