"""The round, written once.

:func:`drive` runs on the master (rank 0, or the serial runtime's process) and
holds the order of a round; a *transport* moves what the round needs between
the master and the workers:

* in-process (:mod:`psmpi.runtime.serial`): the workers are objects in this
  process, called directly;
* MPI (:mod:`psmpi.runtime.mpi`): the workers live on other ranks; the
  transport broadcasts a control word with x and gathers the encoded messages.

Round t (x = x^t):

1. decide: checkpoint now? stop on a signal? evaluate?  ``transport.open_round``
   tells the workers;
2. checkpoint: every worker's state blob, written with the master state;
3. evaluate: exact f(x^t) and ||grad f(x^t)||^2 from the workers' (f_i, grad f_i)
   on their evaluation rows (all local rows, or the --eval-rows subset), summed in
   worker order; stop at the last round, at --tol, on divergence or
   after a signal (the stop round is always evaluated);
4. the workers' messages (``Worker.round``: the method's step, encoded), the
   bytes counted;
5. the master decodes each message (validated) and aggregates in worker order:
   mstate.x is x^{t+1}.

Both transports call the same :class:`Worker` and :func:`master_round`, so for
the same seed the iterates are the same bit for bit.
"""
from __future__ import annotations

import time

import numpy as np

from ..compressors.payload import to_host
from ..errors import Stop
from ..wire import decode, encode
from .checkpoint import pack_worker, restore_worker

CONTINUE, CHECKPOINT, STOP = 0, 1, 2  # what the master decided at the top of a round


class Diverged(RuntimeError):
    """The run diverged (the message says where); metrics up to there are kept."""


class BadMessage(RuntimeError):
    """A message the master cannot decode (a corrupted or malicious worker)."""


class Worker:
    """One worker: its context (problem, compressor, streams) and its state."""

    def __init__(self, method, ctx):
        self.method = method
        self.ctx = ctx
        self.state = None

    def round(self, x, t: int) -> bytes:
        """The worker's part of round t: the method's step at x^t, encoded."""
        ctx = self.ctx
        ctx.round = t
        t0 = time.perf_counter()
        x = ctx.at(x, t)  # on the worker's device
        if t == 0:
            self.state, payload = self.method.worker_init(ctx, x)
        else:
            self.state, payload = self.method.worker_step(ctx, self.state, x)
        ctx.end_round()
        t1 = time.perf_counter()
        ctx.timings["step"] += t1 - t0
        if payload is None:  # the worker sits the round out (partial participation): nothing is sent
            return b""
        msg = encode(payload if ctx.device.on_host else to_host(payload, ctx.device.to_host))
        ctx.timings["encode"] += time.perf_counter() - t1
        return msg

    def evaluate(self, x, t: int):
        """(f_i(x^t), grad f_i(x^t) on the host, exact on the evaluation rows; the samples the
        steps used so far; the evaluation rows x^t classifies correctly, or None; those rows)."""
        self.ctx.round = t
        loss, grad, right, rows = self.ctx.evaluate(x)
        return loss, grad, self.ctx.samples, right, rows

    def pack(self) -> bytes:
        return pack_worker(self.ctx, self.state)

    def restore(self, blob: bytes) -> None:
        self.state = restore_worker(self.ctx, blob)


def master_round(method, hp, mstate, x: np.ndarray, messages, t: int, d: int):
    """Decode the n messages (validated) and aggregate in worker order; a worker
    that sent nothing (it sat the round out) gives None."""
    payloads = []
    for i, m in enumerate(messages):
        if not len(m):
            payloads.append(None)
            continue
        try:
            payloads.append(decode(m, d))
        except ValueError as e:
            if "non-finite" in str(e):  # an honest worker whose iterates blew up
                raise Diverged(f"diverged at round {t}: worker {i} sent non-finite values") from None
            raise BadMessage(f"malformed message from worker {i} in round {t}: {e}") from None
    if t == 0:
        return method.master_init(hp, x, payloads)
    return method.master_step(hp, mstate, payloads)


class EvalSum:
    """f(x) and grad f(x) as (1/n) sums of the workers' exact values, in order."""

    def __init__(self, n):
        self.n = n
        self.loss = 0.0
        self.grad = None

    def add(self, loss: float, grad: np.ndarray):
        self.loss += loss
        if self.grad is None:
            self.grad = np.array(grad, dtype=np.float64)
        else:
            self.grad += grad

    def result(self):
        g = self.grad / self.n
        return self.loss / self.n, float(g @ g)


class Transport:
    """The master's side of the link to the workers (see the module docstring)."""

    n: int

    def open_round(self, t: int, x, evaluate: bool, action: int) -> None:
        """Tell the workers what round t holds (and give them x^t)."""

    def states(self) -> list:
        """Every worker's state blob, in worker order."""
        raise NotImplementedError

    def evaluations(self, t: int, x):
        """(f_i(x^t), grad f_i(x^t), samples used so far, rows right or None, rows evaluated)
        for each worker, in order."""
        raise NotImplementedError

    def decide(self, go: bool) -> None:
        """After an evaluation: the workers go on with the round, or stop."""

    def messages(self, t: int, x) -> tuple[list, int]:
        """The workers' encoded messages of round t, in worker order, and their total size."""
        raise NotImplementedError

    def abandon(self) -> None:
        """The round cannot be completed (the run diverged): release the workers."""

    def next_x(self, mstate):
        """Where x^{t+1} lives for the next round (the MPI transport's broadcast buffer)."""
        return mstate.x


def drive(plan, transport: Transport, rec, ctl, x, mstate, start: int, iters: int):
    """The rounds start..iters on the master; -> (x, mstate) at the end."""
    hp, method, d = plan.hp, plan.method, x.shape[0]
    for t in range(start, iters + 1):
        action = ctl.action(t, start)
        evaluate = rec.should_eval(t) or action == STOP
        transport.open_round(t, x, evaluate, action)
        if action != CONTINUE:
            ctl.checkpoint(t, x, mstate, transport.states(), rec)
            if action == CHECKPOINT:
                ctl.maybe_flush(x, force=True)
        if evaluate:
            t0 = time.perf_counter()
            ev, samples, right, rows = EvalSum(transport.n), [], [], []
            for loss, grad, used, ok, m in transport.evaluations(t, x):
                ev.add(loss, grad)
                samples.append(used)
                right.append(ok)
                rows.append(m)
            stop = rec.eval_row(t, *ev.result(), samples, right, rows, x)
            rec.last_eval_time = time.perf_counter() - t0
            rec.eval_time += rec.last_eval_time
            if action == STOP:
                stop = True
                if rec.stop in (None, Stop.ITERS):
                    rec.set_stop(Stop.SIGNAL, ctl.stop_message(t))
            transport.decide(not stop)
            if stop:
                break
            ctl.maybe_flush(x)
        rec.start()
        messages, total = transport.messages(t, x)
        rec.add_round(t, [len(m) for m in messages], transport.n * x.nbytes)
        t0 = time.perf_counter()
        try:
            mstate = master_round(method, hp, mstate, x, messages, t, d)
        except Diverged as e:
            rec.set_stop(Stop.DIVERGED, str(e))
            transport.abandon()
            break
        rec.master_time += time.perf_counter() - t0
        x = transport.next_x(mstate)
    return x, mstate
