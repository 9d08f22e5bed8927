"""The serial runtime: n workers simulated in one process.

The round driver (:mod:`psmpi.runtime.driver`) runs over an in-process
transport: every message is still encoded to bytes and decoded again exactly
as under MPI, so the iterates equal the MPI runtime's bit for bit.
"""
from __future__ import annotations

from ..config import DEFAULT_WORKERS, TrainConfig
from .checkpoint import read_checkpoint
from ..problems import LocalProblem
from ..wire import decode
from .common import (UNKNOWN, WORKER_PHASES, Control, constants_from, describe_data, global_smoothness,
                     initial_point, local_problem, make_recorder, make_result, make_workers, peak_rss_mb, plan_run,
                     sum_in_order)
from .driver import Transport, drive
from .hosted import Hosted


class InProcess(Transport):
    """The workers are objects of this process, called in worker order."""

    def __init__(self, workers, alive=None):
        """``workers``: all the run's workers; ``alive``: the ids of those that take part
        (a checkpoint taken after a failure under MPI has fewer), all by default."""
        self.all = workers
        self.workers = len(workers)
        self.alive = list(range(self.workers)) if alive is None else list(alive)
        self.hosted = Hosted(workers)
        self.hosted.keep(self.alive)
        self.live = self.hosted.live

    def open_round(self, t, x, evaluate, action, down=None, send_x=True):
        """A downlink method's message: decoded once, applied by every worker (x needs no
        copy: the workers are called with it)."""
        if down is not None:
            payload = decode(down, x.shape[0])
            for w in self.live:
                w.receive(payload, t)

    def states(self):
        return [w.pack() for w in self.live]

    def evaluations(self, t, x):
        return (w.evaluate(x, t) for w in self.all)

    def messages(self, t, x):
        msgs = self.hosted.round(x, t)
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
    plan = plan_run(cfg, d, consts, getattr(problems[0], "param_blocks", None))
    workers = make_workers(cfg, plan, dict(enumerate(problems)))
    classifier = all(type(p).correct is not LocalProblem.correct for p in problems)
    rec = make_recorder(cfg, n, info, classifier)
    mstate, start, alive = None, 0, None
    x = initial_point(cfg, d, info)
    if cfg.resume:
        ck = read_checkpoint(cfg.resume, cfg)
        start, mstate, alive = ck.round, ck.master, ck.alive
        x = ck.x.copy() if mstate is None else mstate.x
        for i, blob in zip(alive, ck.worker_blobs):
            workers[i].restore(blob)
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
        x, mstate = drive(plan, InProcess(workers, alive), rec, ctl, x, mstate, start, cfg.iters)
    finally:
        rec.close()
    return result(x)
