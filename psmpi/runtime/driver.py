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
   tells the workers and gives them x^t, or, for a method with a compressed
   downlink (``method.downlink``, EF21-BC), the master's encoded message of the
   previous round, which each worker decodes and applies to its own copy of the
   model (x^t itself goes down only at round 0 and, uncounted like the
   evaluation traffic, on evaluation rounds);
2. checkpoint: every worker's state blob, written with the master state;
3. evaluate: exact f(x^t) and ||grad f(x^t)||^2 from the workers' (f_i, grad f_i)
   on their evaluation rows (all local rows, or the --eval-rows subset), summed in
   worker order; stop at the last round, at --tol, on divergence or
   after a signal (the stop round is always evaluated);
4. the workers' messages (``Worker.round``: the method's step, encoded), the
   bytes counted;
5. the master decodes each message (validated) and aggregates in worker order:
   mstate.x is x^{t+1}; a downlink method's master also returns its message,
   encoded here and broadcast when round t+1 opens.

``bytes_down`` counts what each round's opening broadcast for the n workers:
x^t (d float64 values), or the downlink message's encoded size (x^0 at round 0);
a checkpoint keeps that count of its round, so a resumed run counts as the
uninterrupted one.

Both transports call the same :class:`Worker` and :func:`master_round`, so for
the same seed the iterates are the same bit for bit.

Worker failure (``--on-worker-failure continue``, MPI with ULFM): a transport
call that finds a worker dead raises :class:`WorkerFailure`, and
:func:`recover` completes round t with the survivors: the transport shrinks
its communicator to them; round t's evaluation is done if it was due and not
yet recorded (the dead workers' shards are evaluated on the master, so f and
||grad f||^2 stay full-data); every survivor makes sure it has taken its step
of round t; each sends its re-synchronisation message (``Method.worker_resync``:
its g_i for gradient tracking, or its round-t message again), counted in
bytes_up; all survivors agree on round t (``Agree``); the master rebuilds its
aggregate from those messages (``Method.master_resync``), which also gives
x^{t+1}.  A failure during recovery starts it again: every part of it can be
repeated.  The run goes on with the survivors; ``n_workers`` and the
``events`` attribute record it.
"""
from __future__ import annotations

import time

import numpy as np

from ..compressors.payload import to_host
from ..errors import Stop
from ..wire import decode, encode
from ..wire.rows import decode_rows
from .checkpoint import pack_worker, restore_worker

CONTINUE, CHECKPOINT, STOP = 0, 1, 2  # what the master decided at the top of a round


class Diverged(RuntimeError):
    """The run diverged (the message says where); metrics up to there are kept."""


class BadMessage(RuntimeError):
    """A message the master cannot decode (a corrupted or malicious worker)."""


class WorkerFailure(Exception):
    """A transport call found a worker process dead (``--on-worker-failure continue``)."""


class Worker:
    """One worker: its context (problem, compressor, streams) and its state."""

    def __init__(self, method, ctx):
        self.method = method
        self.ctx = ctx
        self.state = None
        self.done = -1  # the last round whose step this worker has taken
        self.last = b""  # that round's encoded message (a survivor may send it again)

    def round(self, x, t: int) -> bytes:
        """The worker's part of round t: the method's step at x^t (a downlink method's
        own copy of it after round 0), encoded."""
        ctx = self.ctx
        ctx.round = t
        t0 = time.perf_counter()
        if self.method.downlink and t > 0:
            x = self.method.worker_model(self.state)  # the broadcast x is not there (or only for evaluation)
        x = ctx.at(x, t)  # on the worker's device
        if t == 0:
            self.state, payload = self.method.worker_init(ctx, x)
        else:
            self.state, payload = self.method.worker_step(ctx, self.state, x)
        self.done = t
        ctx.end_round()
        t1 = time.perf_counter()
        ctx.timings["step"] += t1 - t0
        self.last = self._encode(payload)
        ctx.timings["encode"] += time.perf_counter() - t1
        return self.last

    def _encode(self, payload) -> bytes:
        if payload is None:  # the worker sits the round out (partial participation): nothing is sent
            return b""
        return encode(payload if self.ctx.device.on_host else to_host(payload, self.ctx.device.to_host))

    def catch_up(self, x, t: int) -> None:
        """After a failure in round t: take round t's step unless it is taken already."""
        if self.done < t:
            self.round(x, t)

    def resync(self) -> bytes:
        """The re-synchronisation message after a failure (``Method.worker_resync``)."""
        payload = self.method.worker_resync(self.ctx, self.state)
        return self.last if payload is None else self._encode(payload)

    def receive(self, payload, t: int) -> None:
        """A downlink method: the master's message opening round t, applied to this worker's state."""
        self.ctx.round = t
        t0 = time.perf_counter()
        self.state = self.method.worker_receive(self.ctx, self.state, payload)
        self.ctx.timings["step"] += time.perf_counter() - t0

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


def decode_all(messages, ids, t: int, d: int):
    """The payloads of worker ``ids[j]``'s message ``messages[j]`` (validated); an
    empty message (the worker sat the round out) gives None.  A round of sparse
    messages of one layout (Top-K) is read at once (:func:`decode_rows`)."""
    rows = decode_rows(messages, d)
    if rows is not None:
        return rows
    payloads = []
    for i, m in zip(ids, messages):
        if not len(m):
            payloads.append(None)
            continue
        try:
            payloads.append(decode(m, d))
        except ValueError as e:
            if "non-finite" in str(e):  # an honest worker whose iterates blew up
                raise Diverged(f"diverged at round {t}: worker {i} sent non-finite values") from None
            raise BadMessage(f"malformed message from worker {i} in round {t}: {e}") from None
    return payloads


def master_round(method, hp, mstate, x: np.ndarray, messages, ids, t: int, d: int):
    """Decode the messages of workers ``ids`` and aggregate them in worker order;
    -> the master state (a downlink method: the state and the message to broadcast)."""
    payloads = decode_all(messages, ids, t, d)
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
    """The master's side of the link to the workers (see the module docstring).

    ``workers`` is the number of workers the run started with (every one of
    them is evaluated), ``alive`` the ids of those whose messages the master
    aggregates, in order (all of them unless some failed)."""

    workers: int
    alive: list

    @property
    def n(self) -> int:
        return len(self.alive)

    def open_round(self, t: int, x, evaluate: bool, action: int, down: bytes | None = None,
                   send_x: bool = True) -> None:
        """Tell the workers what round t holds and give them x^t (when ``send_x``) and
        the master's encoded downlink message (``down``, a downlink method's; None:
        nothing to apply)."""

    def states(self) -> list:
        """Every live worker's state blob, in worker order."""
        raise NotImplementedError

    def evaluations(self, t: int, x):
        """(f_i(x^t), grad f_i(x^t), samples used so far, rows right or None, rows evaluated)
        for each of the ``workers`` workers, in order."""
        raise NotImplementedError

    def decide(self, go: bool) -> None:
        """After an evaluation: the workers go on with the round, or stop."""

    def messages(self, t: int, x) -> tuple[list, int]:
        """The live workers' encoded messages of round t, in worker order, and their total size."""
        raise NotImplementedError

    def abandon(self) -> None:
        """The round cannot be completed (the run diverged): release the workers."""

    def next_x(self, mstate):
        """Where x^{t+1} lives for the next round (the MPI transport's broadcast buffer)."""
        return mstate.x

    # after a WorkerFailure (only a transport that raises it implements these) ---------
    def shrink(self) -> list:
        """Drop the dead workers; -> the ids of those found dead now."""
        raise NotImplementedError

    def reopen(self, t: int, x, evaluate: bool) -> None:
        """Round t again for the survivors (x^t): they evaluate if asked, then each takes
        its step of round t unless it has."""
        raise NotImplementedError

    def resync(self) -> tuple[list, int]:
        """The survivors' re-synchronisation messages, in worker order, and their total size."""
        raise NotImplementedError

    def commit(self, t: int) -> None:
        """All survivors agree that round t is complete."""
        raise NotImplementedError


class Carry:
    """What one round leaves for the next: a downlink method's encoded message."""

    def __init__(self):
        self.down = None


class RoundState:
    """How far round t got on the master (what a recovery must still do)."""

    def __init__(self, evaluate: bool):
        self.evaluate = evaluate  # the round has an evaluation
        self.recorded = False  # its row is in the metrics
        self.stop = False  # that row ended the run


def drive(plan, transport: Transport, rec, ctl, x, mstate, start: int, iters: int):
    """The rounds start..iters on the master; -> (x, mstate) at the end."""
    carry = Carry()
    for t in range(start, iters + 1):
        action = ctl.action(t, start)
        rs = RoundState(rec.should_eval(t) or action == STOP)
        try:
            stop, mstate = _round(plan, transport, rec, ctl, x, mstate, t, action, rs, carry)
        except WorkerFailure:
            detected = time.time()
            stop, mstate = recover(plan, transport, rec, ctl, x, mstate, t, action, rs)
            rec.recoveries.append({"round": t, "detected": detected, "completed": time.time()})
        if stop:
            break
        x = transport.next_x(mstate)
    return x, mstate


def _round(plan, transport, rec, ctl, x, mstate, t, action, rs, carry):
    """Round t; -> (the run stops here, the master state after the round)."""
    downlink = plan.method.downlink
    send_x = not downlink or t == 0 or rs.evaluate  # a downlink method's x: round 0, evaluations
    transport.open_round(t, x, rs.evaluate, action, carry.down, send_x)
    if not downlink or t == 0:
        rec.opening_down = transport.n * x.nbytes
    elif carry.down is not None:  # (None: the first round after a resume; the checkpoint kept its count)
        rec.opening_down = transport.n * len(carry.down)
    carry.down = None
    if action != CONTINUE:
        ctl.checkpoint(t, x, mstate, transport.states(), rec, transport.alive)
        if action == CHECKPOINT:
            ctl.maybe_flush(x, force=True)
    if rs.evaluate and _evaluate(transport, rec, ctl, x, t, action, rs):
        return True, mstate
    rec.start()
    messages, _ = transport.messages(t, x)
    return _aggregate(plan, transport, rec, mstate, x, messages, t, carry=carry)


def _evaluate(transport, rec, ctl, x, t, action, rs) -> bool:
    """The evaluation of round t: its row, then the go/stop decision; True to stop."""
    t0 = time.perf_counter()
    ev, samples, right, rows = EvalSum(transport.workers), [], [], []
    for loss, grad, used, ok, m in transport.evaluations(t, x):
        ev.add(loss, grad)
        samples.append(used)
        right.append(ok)
        rows.append(m)
    rs.stop = rec.eval_row(t, *ev.result(), samples, right, rows, x, transport.n)
    rs.recorded = True
    rec.last_eval_time = time.perf_counter() - t0
    rec.eval_time += rec.last_eval_time
    if action == STOP:
        rs.stop = True
        if rec.stop in (None, Stop.ITERS):
            rec.set_stop(Stop.SIGNAL, ctl.stop_message(t))
    transport.decide(not rs.stop)
    if not rs.stop:
        ctl.maybe_flush(x)
    return rs.stop


def _aggregate(plan, transport, rec, mstate, x, messages, t, resync=False, carry=None):
    """Count round t's bytes and aggregate its messages (``resync``: rebuild the
    aggregate from re-synchronisation messages instead; ``carry``: where a downlink
    method's next message goes); -> (stop, mstate)."""
    rec.add_round(t, transport.alive, [len(m) for m in messages], rec.opening_down)
    t0 = time.perf_counter()
    try:
        if resync:
            payloads = decode_all(messages, transport.alive, t, x.shape[0])
            mstate = plan.method.master_resync(plan.hp, mstate, x, payloads, t)
        else:
            mstate = master_round(plan.method, plan.hp, mstate, x, messages, transport.alive, t, x.shape[0])
            if plan.method.downlink:
                mstate, msg = mstate
                if not np.all(np.isfinite(mstate.x)):  # a non-finite message would fail on every worker
                    raise Diverged(f"diverged at round {t}: the master's iterate is not finite")
                carry.down = encode(msg)
    except Diverged as e:
        rec.set_stop(Stop.DIVERGED, str(e))
        transport.abandon()
        return True, mstate
    rec.master_time += time.perf_counter() - t0
    return False, mstate


def recover(plan, transport, rec, ctl, x, mstate, t, action, rs):
    """Complete round t with the surviving workers (see the module docstring);
    -> (stop, mstate); the run stops (Stop.NO_WORKERS) when none survives."""
    while True:
        try:
            for i in transport.shrink():
                rec.event(t, i, "failed")
            if not transport.alive:
                rec.set_stop(Stop.NO_WORKERS, f"every worker has failed (the last in round {t})")
                return True, mstate
            if rs.stop:  # the row that ends the run is in: the survivors just stop
                transport.abandon()
                return True, mstate
            evaluate = rs.evaluate and not rs.recorded
            transport.reopen(t, x, evaluate)
            if evaluate and _evaluate(transport, rec, ctl, x, t, action, rs):
                return True, mstate
            messages, _ = transport.resync()
            transport.commit(t)
            break
        except WorkerFailure:
            continue
    rec.start()
    rec.round_workers(t, transport.n)
    rec.opening_down = transport.n * x.nbytes  # the survivors were sent x^t again
    return _aggregate(plan, transport, rec, mstate, x, messages, t, resync=True)
