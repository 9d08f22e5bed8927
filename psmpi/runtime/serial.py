"""The serial runtime: n workers simulated in one process.

Every message is encoded to bytes and decoded again exactly as under MPI, and
the same functions of :mod:`psmpi.runtime.common` run in the same order, so
the iterates equal the MPI runtime's bit for bit.
"""
from __future__ import annotations

import json
import time

from ..config import TrainConfig
from ..problems.logreg import LogRegBatch
from .checkpoint import pack_worker, read_checkpoint, restore_worker
from .common import (WORKER_PHASES, Control, Diverged, EvalSum, Recorder, constants_from, describe_data,
                     global_smoothness, initial_point, local_problem, make_context, make_result, master_round,
                     peak_rss_mb, plan_run, sum_in_order, worker_round)


def run_serial(cfg: TrainConfig, problems=None):
    ctl = Control(cfg)
    ctl.install()
    try:
        return _run(cfg, problems, ctl)
    finally:
        ctl.uninstall()


def _run(cfg, problems, ctl):
    n = cfg.workers
    if problems is None:
        info = describe_data(cfg)
        problems = [local_problem(cfg, info, i) for i in range(n)]
    d = problems[0].dim
    hdim = problems[0].hbound_dim()
    L = global_smoothness(hdim, problems[0].reg_curvature,
                          lambda: sum_in_order((p.hbound_dense() for p in problems), n),
                          lambda v: sum_in_order((p.hbound_matvec(v) for p in problems), n))
    consts = constants_from(L, [p.local_smoothness() for p in problems])
    plan = plan_run(cfg, d, consts)
    ctxs = [make_context(cfg, plan, i, p) for i, p in enumerate(problems)]
    if cfg.device == "cpu" and LogRegBatch.applies(problems):
        oracle = LogRegBatch(problems)  # one stacked product per round instead of n small ones
        for i, c in enumerate(ctxs):
            c.batch = (oracle, i)
    states = [None] * n
    rec = Recorder(cfg, n)
    mstate, start = None, 0
    x = initial_point(cfg, d)
    if cfg.resume:
        ck = read_checkpoint(cfg.resume, cfg)
        start, mstate = ck.round, ck.master
        x = ck.x.copy() if mstate is None else mstate.x
        states = [restore_worker(c, b) for c, b in zip(ctxs, ck.worker_blobs)]
        rec.restore(ck)
    master_time = 0.0

    def result():
        res = make_result(cfg, plan, consts, rec, x, "serial", "", d)
        rounds = int(rec.rows["iteration"][-1]) if rec.rows["iteration"] else 0
        res.attrs["timings"] = json.dumps({
            "master": {"decode_aggregate": master_time}, "bytes_up_round0": rec.bytes_up_round0, "rounds": rounds,
            "workers_mean": {k: sum(c.timings[k] for c in ctxs) / n for k in WORKER_PHASES},
            "peak_rss_mb": {"process": peak_rss_mb()}})
        return res

    try:
        for t in range(start, cfg.iters + 1):
            action = ctl.action(t, start)
            if action != ctl.CONTINUE:
                ctl.checkpoint(t, x, mstate, [pack_worker(c, s) for c, s in zip(ctxs, states)], rec)
                if action == ctl.STOP:
                    rec.stop_reason = ctl.stop_message(t)
                    break
                ctl.maybe_flush(result, force=True)
            if rec.should_eval(t):
                ev = EvalSum(n)
                for ctx in ctxs:
                    ctx.round = t
                    ev.add(*ctx.value_and_grad(x))
                if rec.eval_row(t, *ev.result()):
                    break
                ctl.maybe_flush(result)
            rec.start()
            messages = []
            for i, ctx in enumerate(ctxs):
                states[i], msg = worker_round(plan.method, ctx, states[i], x, t)
                messages.append(msg)
            rec.add_round(t, sum(len(m) for m in messages), n * x.nbytes)
            t0 = time.perf_counter()
            try:
                mstate = master_round(plan.method, plan.hp, mstate, x, messages, t, d)
            except Diverged as e:
                rec.stop_reason = str(e)
                break
            master_time += time.perf_counter() - t0
            x = mstate.x
    finally:
        rec.close()
    return result()
