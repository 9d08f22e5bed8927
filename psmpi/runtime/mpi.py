"""The MPI runtime: rank 0 is the master (parameter server), ranks 1..R-1 host the workers.

The n workers are spread over the R-1 worker ranks in contiguous blocks
(``hosted``: the first n mod (R-1) ranks host one more), so ``mpirun -n 21``
gives one worker per rank and ``mpirun -n 3 --workers 20`` ten per rank; each
worker keeps its own shard, state and random stream, so the iterates do not
depend on the placement.

The round driver (:mod:`psmpi.runtime.driver`) runs on rank 0 over the
:class:`MPITransport`.  Each round the master broadcasts one float64 buffer
holding a control word (round, evaluate?, checkpoint/stop/end) followed by x^t
(``Bcast``); on evaluation rounds each worker rank sends its workers' exact
f_i(x^t) and grad f_i(x^t) (``Send``, received in rank order so the sum is the
serial one) and the master answers go/stop; each worker rank runs its workers'
steps and the master collects the encoded messages with two ``Gatherv``
(per-worker sizes, then the bytes), then decodes and aggregates them in worker
order.  No pickle is used: every call is an uppercase mpi4py call on a buffer.

``bytes_up`` counts the message bytes of every worker (one message per worker
even when a rank hosts several), ``bytes_down`` the bytes of x for the n
workers; control words, evaluation and set-up traffic are not counted, as in
the serial runtime.

Failure: set-up errors are agreed on collectively (one line from the lowest
failing rank, exit code 2); an exception on any rank during the run prints one
line from that rank and aborts the whole world (``MPI_Abort``), so no rank is
left hanging.
"""
from __future__ import annotations

import sys
import time
import traceback

import numpy as np

from ..config import TrainConfig
from ..errors import ConfigError
from ..problems.base import DENSE_EIG_MAX
from .checkpoint import read_checkpoint
from .common import (UNKNOWN, WORKER_PHASES, Control, constants_from, describe_data, global_smoothness, hosted,
                     initial_point, local_problem, make_recorder, make_result, make_workers, peak_rss_mb, plan_run,
                     sum_in_order)
from .driver import CONTINUE, Transport, drive

TAG_EVAL, TAG_CURV = 11, 12
T, EVAL, ACTION, NCTRL = 0, 1, 2, 3  # control word fields: round, evaluate?, action (exact in float64)
END = 3  # ACTION: stop now, the round is abandoned (the run diverged)
NEVAL = 4  # an evaluation row: f_i, samples used, rows right (-1: none), rows evaluated, then grad f_i


class SetupFailed(SystemExit):
    """Raised on every rank when set-up failed on some rank (message already printed)."""

    def __init__(self):
        super().__init__(2)


def _comm():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ConfigError("--backend mpi needs mpi4py: pip install 'psmpi[mpi]'") from None
    return MPI, MPI.COMM_WORLD


def run_mpi(cfg: TrainConfig):
    """Run under MPI; returns the Result on rank 0 and None on workers."""
    MPI, comm = _comm()
    if comm.size < 2:
        raise ConfigError("--backend mpi needs at least 2 ranks (rank 0 is the master): mpirun -n N+1 psmpi train ...")
    if cfg.workers is None:
        cfg.workers = comm.size - 1
    elif cfg.workers < comm.size - 1:
        _agree(MPI, comm, ConfigError(f"--workers {cfg.workers} is fewer than the {comm.size - 1} worker ranks "
                                      f"(each hosts at least one worker): launch at most {cfg.workers + 1} ranks"))
    ctl = Control(cfg)
    ctl.install(ignore=comm.rank != 0)  # the master decides what a signal means
    try:
        setup = _setup(MPI, comm, cfg)
        try:
            if comm.rank == 0:
                return _master(MPI, comm, cfg, ctl, *setup)
            _worker(MPI, comm, cfg, *setup)
            return None
        except Exception as e:  # noqa: BLE001 - any failure must take the whole world down
            _abort(MPI, comm, e, _mine(cfg, comm))
    finally:
        ctl.uninstall()


def _abort(MPI, comm, e, hosts=range(0)):
    if comm.rank == 0:
        who = "master"
    else:
        who = f"worker {hosts[0]}" if len(hosts) == 1 else f"workers {hosts[0]}-{hosts[-1]}"
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    sys.stderr.write(f"psmpi: error on rank {comm.rank} ({who}): {type(e).__name__}: {msg}\n")
    if not isinstance(e, (ValueError, RuntimeError)):
        traceback.print_exc(file=sys.stderr)
    sys.stderr.flush()
    comm.Abort(1)


def _agree(MPI, comm, error: Exception | None):
    """Collective: if any rank failed, the lowest failing rank prints and all exit 2."""
    first = comm.allreduce(comm.rank if error is not None else comm.size, op=MPI.MIN)
    if first < comm.size:
        if comm.rank == first:
            sys.stderr.write(f"psmpi: error: {error}\n")
            sys.stderr.flush()
        raise SetupFailed()


def _layout(n: int, size: int) -> np.ndarray:
    """How many workers each rank of a world of ``size`` hosts (none on the master)."""
    return np.array([0] + [len(hosted(n, size - 1, r)) for r in range(size - 1)])


def _starts(counts) -> np.ndarray:
    """Where each rank's block starts in the concatenation (MPI displacements)."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]])


def _mine(cfg, comm) -> range:
    """The workers this rank hosts (none on the master)."""
    return range(0) if comm.rank == 0 else hosted(cfg.workers, comm.size - 1, comm.rank - 1)


def _setup(MPI, comm, cfg):
    """Data, constants and the plan, identically on every rank."""
    n = cfg.workers
    problems, info, error = {}, None, None
    try:
        info = describe_data(cfg)
        problems = {i: local_problem(cfg, info, i) for i in _mine(cfg, comm)}
    except (ValueError, OSError) as e:
        error = e
    _agree(MPI, comm, error)
    if info.hdim == 0:  # a neural network: no smoothness constants
        return info, problems, UNKNOWN, _plan(MPI, comm, cfg, info, UNKNOWN)
    # L_i of every worker, in worker order
    counts = _layout(n, comm.size)
    Li = np.array([problems[i].local_smoothness() for i in sorted(problems)], dtype=np.float64)
    all_Li = np.empty(n) if comm.rank == 0 else None
    comm.Gatherv(Li, [all_Li, counts, _starts(counts), MPI.DOUBLE] if comm.rank == 0 else None, root=0)
    # L from the mean curvature bound, reduced in worker order on the master
    hdim = info.hdim
    if comm.rank == 0:
        L = global_smoothness(hdim, info.reg, lambda: sum_in_order(_recv_each(comm, counts, (hdim, hdim)), n),
                              lambda v: _remote_matvec(comm, counts, v, n))
        if hdim > DENSE_EIG_MAX:
            comm.Bcast(np.zeros(1, dtype=np.int64), root=0)  # end of matvec service
        consts_buf = np.concatenate([[L], all_Li])
    else:
        if hdim <= DENSE_EIG_MAX:
            for i in sorted(problems):
                comm.Send(np.ascontiguousarray(problems[i].hbound_dense(), dtype=np.float64), dest=0, tag=TAG_CURV)
        else:
            _serve_matvec(comm, problems, hdim)
        consts_buf = np.empty(n + 1)
    comm.Bcast(consts_buf, root=0)
    consts = constants_from(consts_buf[0], consts_buf[1:])
    return info, problems, consts, _plan(MPI, comm, cfg, info, consts)


def _plan(MPI, comm, cfg, info, consts):
    error = plan = None
    try:
        plan = plan_run(cfg, info.dim, consts)
    except ValueError as e:
        error = e
    _agree(MPI, comm, error)
    return plan


def _recv_each(comm, counts, shape):
    """One array per worker, in worker order."""
    buf = np.empty(shape)
    for src in range(1, comm.size):
        for _ in range(counts[src]):
            comm.Recv(buf, source=src, tag=TAG_CURV)
            yield buf


def _remote_matvec(comm, counts, v, n):
    comm.Bcast(np.ones(1, dtype=np.int64), root=0)
    comm.Bcast(np.ascontiguousarray(v, dtype=np.float64), root=0)
    return sum_in_order(_recv_each(comm, counts, v.shape), n)


def _serve_matvec(comm, problems, hdim):
    flag = np.empty(1, dtype=np.int64)
    v = np.empty(hdim)
    while True:
        comm.Bcast(flag, root=0)
        if not flag[0]:
            return
        comm.Bcast(v, root=0)
        for i in sorted(problems):
            comm.Send(np.ascontiguousarray(problems[i].hbound_matvec(v), dtype=np.float64), dest=0, tag=TAG_CURV)


class Blocks:
    """Variable-size byte strings, one per worker, between the worker ranks and rank 0:
    per-worker sizes and the bytes, each in one collective (``Gatherv``/``Scatterv``)."""

    def __init__(self, MPI, comm, n):
        self.MPI, self.comm = MPI, comm
        self.counts = _layout(n, comm.size)
        self.displs = _starts(self.counts)
        self.sizes = np.empty(n, dtype=np.int64)
        self.scratch = np.empty(1 << 16, dtype=np.uint8)

    def gather(self, mine=None):
        """Worker ranks pass their workers' strings; rank 0 gets (all strings in worker order, total bytes)."""
        MPI, comm = self.MPI, self.comm
        if comm.rank != 0:
            comm.Gatherv(np.array([len(b) for b in mine], dtype=np.int64), None, root=0)
            comm.Gatherv(np.frombuffer(b"".join(mine), dtype=np.uint8), None, root=0)
            return None, 0
        sizes = self.sizes
        comm.Gatherv(np.zeros(0, dtype=np.int64), [sizes, self.counts, self.displs, MPI.INT64_T], root=0)
        ends = np.cumsum(sizes)
        total = int(ends[-1])
        if self.scratch.size < total:
            self.scratch = np.empty(total, dtype=np.uint8)
        rank_bytes = self._rank_bytes()
        comm.Gatherv(np.zeros(0, dtype=np.uint8), [self.scratch, rank_bytes, _starts(rank_bytes), MPI.BYTE], root=0)
        return [self.scratch[e - s:e].tobytes() for s, e in zip(sizes, ends)], total

    def _rank_bytes(self) -> np.ndarray:
        """Bytes of each rank's block, from the per-worker sizes."""
        return np.concatenate([[0], np.add.reduceat(self.sizes, self.displs[1:])])

    def scatter(self, blobs=None):
        """Rank 0 passes one string per worker; each worker rank gets its workers' strings."""
        MPI, comm = self.MPI, self.comm
        sizes = self.sizes
        if comm.rank == 0:
            sizes[:] = [len(b) for b in blobs]
        comm.Bcast(sizes, root=0)
        rank_bytes = self._rank_bytes()
        if comm.rank == 0:
            buf = np.frombuffer(b"".join(blobs), dtype=np.uint8)
            comm.Scatterv([buf, rank_bytes, _starts(rank_bytes), MPI.BYTE], np.zeros(0, dtype=np.uint8), root=0)
            return None
        out = np.empty(int(rank_bytes[comm.rank]), dtype=np.uint8)
        comm.Scatterv(None, out, root=0)
        mine = sizes[self.displs[comm.rank]:self.displs[comm.rank] + self.counts[comm.rank]]
        cuts = np.concatenate([[0], np.cumsum(mine)])
        return [out[a:b].tobytes() for a, b in zip(cuts[:-1], cuts[1:])]


class MPITransport(Transport):
    """Rank 0's side: one Bcast of [control word, x] opens each round."""

    def __init__(self, MPI, comm, n, d, buf):
        self.comm, self.n = comm, n
        self.buf, self.ctrl, self.x = buf, buf[:NCTRL], buf[NCTRL:]
        self.blocks = Blocks(MPI, comm, n)
        self.go = np.zeros(1, dtype=np.int64)
        # one rank's evaluation rows at a time (received in rank order and summed before the next):
        # O(d) per hosted worker of the largest rank, not O(n d)
        self.evalbuf = np.empty((int(self.blocks.counts.max()), d + NEVAL))
        self.timing = {"bcast": 0.0, "eval": 0.0, "gather": 0.0}

    def open_round(self, t, x, evaluate, action):
        t0 = time.perf_counter()
        self.ctrl[T], self.ctrl[EVAL], self.ctrl[ACTION] = t, evaluate, action
        self.comm.Bcast(self.buf, root=0)
        self.timing["bcast"] += time.perf_counter() - t0

    def states(self):
        return self.blocks.gather()[0]

    def evaluations(self, t, x):
        t0 = time.perf_counter()
        for r, c in enumerate(self.blocks.counts):
            if not c:
                continue
            buf = self.evalbuf[:c]
            self.comm.Recv(buf, source=r, tag=TAG_EVAL)
            for row in buf:
                yield float(row[0]), row[NEVAL:], int(row[1]), (None if row[2] < 0 else int(row[2])), int(row[3])
        self.timing["eval"] += time.perf_counter() - t0

    def decide(self, go):
        self.go[0] = go
        self.comm.Bcast(self.go, root=0)

    def messages(self, t, x):
        t0 = time.perf_counter()
        out = self.blocks.gather()
        self.timing["gather"] += time.perf_counter() - t0
        return out

    def abandon(self):
        self.ctrl[ACTION] = END
        self.comm.Bcast(self.buf, root=0)

    def next_x(self, mstate):
        if mstate.x is not self.x:
            self.x[:] = mstate.x
            mstate.x = self.x
        return self.x


def _master(MPI, comm, cfg, ctl, info, _problems, consts, plan):
    n, d = cfg.workers, info.dim
    buf = np.empty(NCTRL + d)  # control word + x, one Bcast a round
    transport = MPITransport(MPI, comm, n, d, buf)
    x = transport.x
    x[:] = initial_point(cfg, d, info)
    rec = make_recorder(cfg, n, info, info.classifier)
    mstate, start, error, ck = None, 0, None, None
    if cfg.resume:
        try:
            ck = read_checkpoint(cfg.resume, cfg)
        except ValueError as e:
            error = e
    _agree(MPI, comm, error)
    if ck is not None:
        transport.blocks.scatter(ck.worker_blobs)
        start, mstate = ck.round, ck.master
        x[:] = ck.x
        if mstate is not None:
            mstate.x = x
        rec.restore(ck)
    library = _library(MPI)

    def result(x, extra=None):
        return make_result(cfg, plan, consts, rec, x, "mpi", library, d, info.problem, {
            "master": dict(transport.timing, decode_aggregate=rec.master_time, evaluate=rec.eval_time,
                           evaluate_last=rec.last_eval_time),
            "bytes_up_round0": rec.bytes_up_round0, "rounds": rec.last_round(), **(extra or {})})

    ctl.make_result = result
    try:
        x, mstate = drive(plan, transport, rec, ctl, x, mstate, start, cfg.iters)
    finally:
        rec.close()
    worker_times = np.zeros((comm.size, len(WORKER_PHASES) + 1))
    comm.Gather(np.zeros(len(WORKER_PHASES) + 1), worker_times, root=0)
    per_worker = worker_times[1:][transport.blocks.counts[1:] > 0]
    return result(x, {"workers_mean": dict(zip(WORKER_PHASES, per_worker[:, :-1].mean(axis=0))),
                      "ranks_max": dict(zip(WORKER_PHASES, per_worker[:, :-1].max(axis=0))),
                      "peak_rss_mb": {"master": peak_rss_mb(), "worker_max": float(per_worker[:, -1].max())}})


def _worker(MPI, comm, cfg, info, problems, consts, plan):
    d = info.dim
    workers = make_workers(cfg, plan, problems)
    blocks = Blocks(MPI, comm, cfg.workers)
    _agree(MPI, comm, None)  # the master's checkpoint check
    if cfg.resume:
        for w, blob in zip(workers, blocks.scatter()):
            w.restore(blob)
    buf = np.empty(NCTRL + d)
    ctrl, x = buf[:NCTRL], buf[NCTRL:]
    dev_buf = None
    if cfg.cuda_aware:  # MPI writes [control + x] straight into device memory
        dev = workers[0].ctx.device
        dev_buf = dev.asarray(buf)
        x = dev_buf[NCTRL:]
    go = np.zeros(1, dtype=np.int64)
    # per worker: f_i, samples used, rows right (-1: none), rows evaluated, grad f_i
    evalbuf = np.empty((len(workers), d + NEVAL))
    while True:
        if dev_buf is None:
            comm.Bcast(buf, root=0)
        else:
            dev.synchronize()  # no kernel may still be reading x
            comm.Bcast(dev_buf, root=0)
            ctrl[:] = dev.to_host(dev_buf[:NCTRL])
        action, t = int(ctrl[ACTION]), int(ctrl[T])
        if action == END:
            break
        if action != CONTINUE:
            blocks.gather([w.pack() for w in workers])
        if ctrl[EVAL]:
            for j, w in enumerate(workers):
                loss, grad, used, ok, rows = w.evaluate(x, t)
                evalbuf[j, :NEVAL] = loss, used, -1 if ok is None else ok, rows  # counts: exact in float64 below 2^53
                evalbuf[j, NEVAL:] = grad
            comm.Send(evalbuf, dest=0, tag=TAG_EVAL)
            comm.Bcast(go, root=0)
            if not go[0]:
                break
        blocks.gather([w.round(x, t) for w in workers])
    timings = [sum(w.ctx.phase_seconds()[k] for w in workers) / len(workers) for k in WORKER_PHASES]
    comm.Gather(np.array(timings + [peak_rss_mb()]), None, root=0)


def _library(MPI) -> str:
    return MPI.Get_library_version().replace("\x00", "").splitlines()[0].strip()
