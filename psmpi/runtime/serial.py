"""The serial runtime: n workers simulated in one process.

The round driver (:mod:`psmpi.runtime.driver`) runs over an in-process
transport: every message is still encoded to bytes and decoded again exactly
as under MPI, so the iterates equal the MPI runtime's bit for bit.
"""
from __future__ import annotations

from ..config import DEFAULT_WORKERS, TrainConfig
from .checkpoint import read_checkpoint
from ..problems import LocalProblem
from .common import (UNKNOWN, WORKER_PHASES, Control, constants_from, describe_data, global_smoothness,
                     initial_point, local_problem, make_recorder, make_result, make_workers, peak_rss_mb, plan_run,
                     sum_in_order)
from .driver import Transport, drive


class InProcess(Transport):
    """The workers are objects of this process, called in worker order."""

    def __init__(self, workers):
        self.workers = workers
        self.n = len(workers)

    def states(self):
        return [w.pack() for w in self.workers]

    def evaluations(self, t, x):
        return (w.evaluate(x, t) for w in self.workers)

    def messages(self, t, x):
        msgs = [w.round(x, t) for w in self.workers]
        return msgs, sum(len(m) for m in msgs)


def run_serial(cfg: TrainConfig, problems=None):
    if cfg.workers is None:
        cfg.workers = DEFAULT_WORKERS
    ctl = Control(cfg)
    ctl.install()
    try:
        return _run(cfg, problems, ctl)
    finally:
        ctl.uninstall()


def _run(cfg, problems, ctl):
    n = cfg.workers
    kind, info = "user", None
    if problems is None:
        info = describe_data(cfg)
        kind = info.problem
        problems = [local_problem(cfg, info, i) for i in range(n)]
    d = problems[0].dim
    consts = UNKNOWN if info is not None and info.hdim == 0 else constants_from(
        global_smoothness(problems[0].hbound_dim(), problems[0].reg_curvature,
                          lambda: sum_in_order((p.hbound_dense() for p in problems), n),
                          lambda v: sum_in_order((p.hbound_matvec(v) for p in problems), n)),
        [p.local_smoothness() for p in problems])
    plan = plan_run(cfg, d, consts)
    workers = make_workers(cfg, plan, dict(enumerate(problems)))
    classifier = all(type(p).correct is not LocalProblem.correct for p in problems)
    rec = make_recorder(cfg, n, info, classifier)
    mstate, start = None, 0
    x = initial_point(cfg, d, info)
    if cfg.resume:
        ck = read_checkpoint(cfg.resume, cfg)
        start, mstate = ck.round, ck.master
        x = ck.x.copy() if mstate is None else mstate.x
        for w, blob in zip(workers, ck.worker_blobs):
            w.restore(blob)
        rec.restore(ck)

    def result(x):
        return make_result(cfg, plan, consts, rec, x, "serial", "", d, kind, {
            "master": {"decode_aggregate": rec.master_time, "evaluate": rec.eval_time,
                       "evaluate_last": rec.last_eval_time},
            "bytes_up_round0": rec.bytes_up_round0,
            "rounds": rec.last_round(),
            "workers_mean": {k: sum(w.ctx.phase_seconds()[k] for w in workers) / n for k in WORKER_PHASES},
            "peak_rss_mb": {"process": peak_rss_mb()}})

    ctl.make_result = result
    try:
        x, mstate = drive(plan, InProcess(workers), rec, ctl, x, mstate, start, cfg.iters)
    finally:
        rec.close()
    return result(x)
