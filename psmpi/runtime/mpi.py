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

A method with a compressed downlink (EF21-BC) opens its rounds differently
(:class:`MPIDownlinkTransport`, :func:`_open_downlink`): a longer control word
carrying the size of the master's encoded message, then the message's bytes
(``bytes_down`` counts them for the n workers), then x only at round 0 (counted)
and on evaluation rounds (not counted); both arrive in host buffers (--cuda-aware
does not change that path).

Failure: set-up errors are agreed on collectively (one line from the lowest
failing rank, exit code 2); an exception on any rank during the run prints one
line from that rank and aborts the whole world (``MPI_Abort``), so no rank is
left hanging.
"""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import time
import traceback

import numpy as np

from ..config import TrainConfig, checkpoint_path
from ..errors import ConfigError, Stop
from ..problems.base import DENSE_EIG_MAX
from ..wire import decode
from .checkpoint import read_checkpoint
from .common import (UNKNOWN, WORKER_PHASES, Control, constants_from, describe_data, global_smoothness, hosted,
                     initial_point, local_problem, make_recorder, make_result, make_workers, peak_rss_mb, plan_run,
                     sum_in_order)
from .driver import CONTINUE, Transport, WorkerFailure, drive
from .hosted import Hosted

TAG_EVAL, TAG_CURV = 11, 12
T, EVAL, ACTION, NCTRL = 0, 1, 2, 3  # control word fields: round, evaluate?, action (exact in float64)
END = 3  # ACTION: stop now, the round is abandoned (the run diverged)
RECOVER = 4  # ACTION: round T again after a worker failure (driver.recover)
SIZE, SEND_X, NCTRL_DOWN = 3, 4, 5  # a downlink method's control word adds: message bytes, x follows?
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
    if cfg.on_worker_failure == "continue":
        _agree(MPI, comm, _ulfm_missing(MPI))
    ctl = Control(cfg)
    ctl.install(ignore=comm.rank != 0)  # the master decides what a signal means
    try:
        setup = _setup(MPI, comm, cfg)
        try:
            if comm.rank == 0:
                return _master(MPI, comm, cfg, ctl, *setup)
            info, problems, _, plan = setup
            WorkerLoop(MPI, comm, cfg, info, problems, plan).run()
            return None
        except Exception as e:  # noqa: BLE001 - any failure must take the whole world down
            if comm.rank and cfg.on_worker_failure == "continue":
                _die(comm, e, _mine(cfg, comm))
            _abort(MPI, comm, e, _mine(cfg, comm))
    finally:
        ctl.uninstall()


def _ulfm_missing(MPI) -> ConfigError | None:
    """Why --on-worker-failure continue cannot work here (None: it can): the MPI
    library must have ULFM and the job must have been launched with it enabled."""
    how = "launch with mpirun --with-ft ulfm -n N+1 psmpi train ... (Open MPI 5; srun cannot enable it)"
    if not all(hasattr(MPI.Comm, f) for f in ("Revoke", "Shrink", "Agree")) or not hasattr(MPI, "ERR_PROC_FAILED"):
        return ConfigError(f"--on-worker-failure continue needs an MPI library with ULFM (mpi4py >= 4 on Open MPI 5): "
                           f"{how}")
    if "Open MPI" not in _library(MPI):
        return ConfigError(f"--on-worker-failure continue is supported on Open MPI 5 with ULFM, not on "
                           f"{_library(MPI)}: {how}")
    if os.environ.get("OMPI_MCA_mpi_ft_enable", "").lower() not in ("1", "true", "yes", "on", "enabled"):
        return ConfigError(f"--on-worker-failure continue needs ULFM enabled at launch: {how}")
    return None


def _error_line(comm, e, hosts) -> str:
    """'psmpi: error on rank R (WHO): TYPE: first line of the message'."""
    if comm.rank == 0:
        who = "master"
    else:
        who = f"worker {hosts[0]}" if len(hosts) == 1 else f"workers {hosts[0]}-{hosts[-1]}"
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"psmpi: error on rank {comm.rank} ({who}): {type(e).__name__}: {msg}"


def _die(comm, e, hosts):
    """A worker that fails under --on-worker-failure continue: its one line, then
    SIGKILL of itself, so that ULFM reports it to the others (a process that only
    exits is not reported, and they would wait for it)."""
    sys.stderr.write(f"{_error_line(comm, e, hosts)}; this rank stops, the others go on\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _abort(MPI, comm, e, hosts=range(0)):
    sys.stderr.write(_error_line(comm, e, hosts) + "\n")
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


def _layout(n: int, size: int, alive=None) -> np.ndarray:
    """How many workers each rank of a world of ``size`` hosts (none on the master);
    with ``alive``, how many of those live workers."""
    alive = range(n) if alive is None else set(alive)
    return np.array([0] + [sum(i in alive for i in hosted(n, size - 1, r)) for r in range(size - 1)])


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
        plan = plan_run(cfg, info.dim, consts, None if info.model is None else info.model.blocks)
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
    per-worker sizes and the bytes, each in one collective (``Gatherv``/``Scatterv``).
    ``counts``: the strings each rank sends (none from rank 0)."""

    def __init__(self, MPI, comm, counts):
        self.MPI, self.comm = MPI, comm
        self.counts = np.asarray(counts, dtype=np.int64)
        self.displs = _starts(self.counts)
        self.sizes = np.empty(int(self.counts.sum()), dtype=np.int64)
        self.scratch = np.empty(1 << 16, dtype=np.uint8)

    def gather(self, mine=None):
        """Worker ranks pass their workers' strings; rank 0 gets (all strings in worker order, total bytes)."""
        MPI, comm = self.MPI, self.comm
        if comm.rank != 0:
            _send_strings(comm, mine)
            return None, 0
        sizes = self.sizes
        comm.Gatherv(np.zeros(0, dtype=np.int64), [sizes, self.counts, self.displs, MPI.INT64_T], root=0)
        ends = np.cumsum(sizes)
        total = int(ends[-1]) if len(ends) else 0
        if self.scratch.size < total:
            self.scratch = np.empty(total, dtype=np.uint8)
        rank_bytes = self._rank_bytes()
        comm.Gatherv(np.zeros(0, dtype=np.uint8), [self.scratch, rank_bytes, _starts(rank_bytes), MPI.BYTE], root=0)
        return [self.scratch[e - s:e].tobytes() for s, e in zip(sizes, ends)], total

    def _rank_bytes(self) -> np.ndarray:
        """Bytes of each rank's block, from the per-worker sizes."""
        ends = np.concatenate([[0], np.cumsum(self.sizes)])
        return ends[self.displs + self.counts] - ends[self.displs]

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


def _send_strings(comm, strings):
    """A worker rank's part of :meth:`Blocks.gather`."""
    comm.Gatherv(np.array([len(b) for b in strings], dtype=np.int64), None, root=0)
    comm.Gatherv(np.frombuffer(b"".join(strings), dtype=np.uint8), None, root=0)


@contextlib.contextmanager
def _failure_of(transport):
    """Under --on-worker-failure continue, an MPI error in the block becomes
    WorkerFailure (the driver then recovers)."""
    try:
        yield
    except transport.MPI.Exception as e:
        if not transport.ft:
            raise
        transport.error = e
        raise WorkerFailure(str(e)) from None


def _failures(fn):
    """A transport call whose MPI errors are :func:`_failure_of`'s."""
    @functools.wraps(fn)
    def call(self, *args):
        with _failure_of(self):
            return fn(self, *args)

    return call


class MPITransport(Transport):
    """Rank 0's side: one Bcast of [control word, x] opens each round.

    ``hosts``: for each live worker rank (by its COMM_WORLD rank) the workers it
    evaluates; ``live`` of those, the ones whose messages it sends (a worker that
    had failed before a resumed checkpoint is evaluated, not aggregated).  The
    workers of a rank that died are evaluated here, on the master (``adopted``)."""

    def __init__(self, MPI, comm, n, d, buf, alive, ft: bool, adopt):
        self.MPI, self.comm, self.ft, self.adopt = MPI, comm, ft, adopt
        self.workers = n
        self.alive = list(alive)
        self.buf, self.ctrl, self.x = buf, buf[:NCTRL], buf[NCTRL:]
        self.d = d
        self.ranks = list(range(comm.size))  # COMM_WORLD rank of each rank of comm
        self.hosts = {r + 1: list(hosted(n, comm.size - 1, r)) for r in range(comm.size - 1)}
        self.adopted = {}  # worker id -> a Worker on the master, for evaluations only
        self.last_samples = np.zeros(n, dtype=np.int64)  # what a dead worker had used
        self.go = np.zeros(1, dtype=np.int64)
        self.error = None
        self.timing = {"bcast": 0.0, "eval": 0.0, "gather": 0.0}
        self._lay_out()

    def _lay_out(self):
        alive = set(self.alive)
        self.live = [[i for i in self.hosts.get(r, []) if i in alive] for r in self.ranks]
        self.blocks = Blocks(self.MPI, self.comm, [len(ids) for ids in self.live])
        # one rank's evaluation rows at a time: O(d) per worker of the largest rank, not O(n d)
        most = max((len(self.hosts[r]) for r in self.ranks if r in self.hosts), default=0)
        self.evalbuf = np.empty((most, self.d + NEVAL))

    @_failures
    def open_round(self, t, x, evaluate, action, down=None, send_x=True):
        t0 = time.perf_counter()
        self.ctrl[T], self.ctrl[EVAL], self.ctrl[ACTION] = t, evaluate, action
        self.comm.Bcast(self.buf, root=0)
        self.timing["bcast"] += time.perf_counter() - t0

    @_failures
    def states(self):
        return self.blocks.gather()[0]

    def evaluations(self, t, x):
        """Each worker's evaluation, in worker order: the live ranks' rows (received one rank
        at a time into one buffer, each row used before the next rank's arrive) and, where
        a rank died, its workers evaluated here (a generator: _failures cannot wrap it)."""
        with _failure_of(self):
            t0 = time.perf_counter()
            sources = [(self.hosts[r][0], q) for q, r in enumerate(self.ranks) if q and self.hosts[r]]
            sources += [(i, None) for i in self.adopted]
            for first, q in sorted(sources):
                if q is None:
                    loss, grad, _, ok, rows = self.adopted[first].evaluate(x, t)
                    yield loss, grad, int(self.last_samples[first]), ok, rows
                    continue
                ids = self.hosts[self.ranks[q]]
                buf = self.evalbuf[:len(ids)]
                self.comm.Recv(buf, source=q, tag=TAG_EVAL)
                for i, row in zip(ids, buf):
                    self.last_samples[i] = int(row[1])
                    yield float(row[0]), row[NEVAL:], int(row[1]), (None if row[2] < 0 else int(row[2])), int(row[3])
            self.timing["eval"] += time.perf_counter() - t0

    @_failures
    def decide(self, go):
        self.go[0] = go
        self.comm.Bcast(self.go, root=0)

    @_failures
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

    # after a failure -----------------------------------------------------------
    @_failures
    def shrink(self):
        MPI = self.MPI
        self.comm = _shrunk(MPI, self.comm)
        ranks = np.empty(self.comm.size, dtype=np.int64)
        self.comm.Gather(np.array([MPI.COMM_WORLD.rank], dtype=np.int64), ranks, root=0)
        survivors = set(ranks.tolist())
        gone = [r for r in self.ranks if r not in survivors]
        if not gone:  # (shrinking after a WorkerFailure, whose error is set)
            raise RuntimeError(f"MPI error without a failed process: {self.error}")
        lost = sorted(i for r in gone for i in self.hosts.pop(r))
        self.ranks = ranks.tolist()
        for i in lost:
            self.adopted[i] = self.adopt(i)
        self.alive = [i for i in self.alive if i not in self.adopted]
        self._lay_out()
        return lost

    @_failures
    def reopen(self, t, x, evaluate):
        self.ctrl[T], self.ctrl[EVAL], self.ctrl[ACTION] = t, evaluate, RECOVER
        self.comm.Bcast(self.buf, root=0)

    @_failures
    def resync(self):
        return self.blocks.gather()

    @_failures
    def commit(self, t):
        if self.comm.Agree(int(t)) != int(t):
            raise RuntimeError(f"the survivors disagree on the round being completed ({t})")


class MPIDownlinkTransport(MPITransport):
    """Rank 0's side for a method with a compressed downlink: each round opens with a
    Bcast of [control word, message size, x follows?], then one of the message's
    bytes (when there is one), then one of x (round 0 and evaluation rounds)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.dctrl = np.zeros(NCTRL_DOWN)

    @_failures
    def open_round(self, t, x, evaluate, action, down=None, send_x=True):
        t0 = time.perf_counter()
        c = self.dctrl
        c[T], c[EVAL], c[ACTION], c[SIZE], c[SEND_X] = t, evaluate, action, 0 if down is None else len(down), send_x
        self.comm.Bcast(c, root=0)
        if down is not None:
            self.comm.Bcast(np.frombuffer(bytearray(down), dtype=np.uint8), root=0)  # (a writable copy)
        t1 = time.perf_counter()
        self.timing["bcast"] += t1 - t0
        if send_x:
            self.comm.Bcast(self.x, root=0)
            # x^0 is round 0's downlink; later x goes down for the evaluation only (its time is the evaluation's)
            self.timing["bcast" if t == 0 else "eval"] += time.perf_counter() - t1

    def abandon(self):
        self.dctrl[ACTION], self.dctrl[SIZE], self.dctrl[SEND_X] = END, 0, 0
        self.comm.Bcast(self.dctrl, root=0)


def _open_downlink(comm, dctrl, ctrl, x, workers, d):
    """A worker rank's side of :meth:`MPIDownlinkTransport.open_round`: the control
    word into ``ctrl``; the master's message, decoded once, applied by each hosted
    worker; x received into ``x`` when it is sent."""
    comm.Bcast(dctrl, root=0)
    ctrl[:] = dctrl[:NCTRL]
    if int(dctrl[ACTION]) == END:
        return
    if dctrl[SIZE]:
        raw = np.empty(int(dctrl[SIZE]), dtype=np.uint8)
        comm.Bcast(raw, root=0)
        payload = decode(raw, d)
        for w in workers:
            w.receive(payload, int(dctrl[T]))
    if dctrl[SEND_X]:
        comm.Bcast(x, root=0)


def _master(MPI, comm, cfg, ctl, info, _problems, consts, plan):
    n, d = cfg.workers, info.dim
    buf = np.empty(NCTRL + d)  # control word + x, one Bcast a round
    buf[NCTRL:] = initial_point(cfg, d, info)  # (fills cfg.x0's default, which the checkpoint check compares)
    rec = make_recorder(cfg, n, info, info.classifier)
    mstate, start, error, ck = None, 0, None, None
    if cfg.resume:
        try:
            ck = read_checkpoint(cfg.resume, cfg)
        except ValueError as e:
            error = e
    _agree(MPI, comm, error)
    alive = range(n) if ck is None else ck.alive
    kind = MPIDownlinkTransport if plan.method.downlink else MPITransport
    transport = kind(MPI, comm, n, d, buf, alive, cfg.on_worker_failure == "continue",
                             lambda i: make_workers(cfg, plan, {i: local_problem(cfg, info, i)})[0])
    x = transport.x
    if ck is not None:
        comm.bcast(list(alive), root=0)  # the workers of the checkpoint's live set, then their state blobs
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
    comm = transport.comm
    worker_times = np.zeros((comm.size, len(WORKER_PHASES) + 1))
    if rec.stop != Stop.NO_WORKERS:
        _last_words(MPI, comm, transport.ft, np.zeros(len(WORKER_PHASES) + 1), worker_times)
    per_worker = worker_times[1:][transport.blocks.counts[1:] > 0]
    if not len(per_worker):
        per_worker = np.zeros((1, len(WORKER_PHASES) + 1))
    return result(x, {"workers_mean": dict(zip(WORKER_PHASES, per_worker[:, :-1].mean(axis=0))),
                      "ranks_max": dict(zip(WORKER_PHASES, per_worker[:, :-1].max(axis=0))),
                      "peak_rss_mb": {"master": peak_rss_mb(), "worker_max": float(per_worker[:, -1].max())}})


def _last_words(MPI, comm, ft: bool, mine, out):
    """The workers' timings to the master, the run's last collective.  Under
    --on-worker-failure continue all ranks then agree that it is over, so no rank
    leaves (perhaps without MPI_Finalize, see ``finalize_would_hang``) while
    another still communicates; a failure this late only loses the timings."""
    try:
        comm.Gather(mine, out, root=0)
        if ft:
            comm.Agree(1)
    except MPI.Exception:
        if not ft:
            raise


class WorkerLoop:
    """A worker rank: its workers, and the round loop that answers the master."""

    def __init__(self, MPI, comm, cfg, info, problems, plan):
        self.MPI, self.comm, self.cfg = MPI, comm, cfg
        self.workers = make_workers(cfg, plan, problems)
        self.hosted = Hosted(self.workers)
        self.ft = cfg.on_worker_failure == "continue"
        d = info.dim
        self.buf = np.empty(NCTRL + d)
        self.ctrl, self.x = self.buf[:NCTRL], self.buf[NCTRL:]
        self.dev_buf = None
        self.go = np.zeros(1, dtype=np.int64)
        # per worker: f_i, samples used, rows right (-1: none), rows evaluated, grad f_i
        self.evalbuf = np.empty((len(self.workers), d + NEVAL))
        self.live = self.hosted.live  # those whose messages this rank sends
        self.downlink = plan.method.downlink
        self.dctrl = np.zeros(NCTRL_DOWN)  # (a downlink method's control word)
        self.faults = _injected_faults(w.ctx.index for w in self.workers)

    def run(self):
        MPI, comm, cfg = self.MPI, self.comm, self.cfg
        _agree(MPI, comm, None)  # the master's checkpoint check
        if cfg.resume:
            alive = comm.bcast(None, root=0)
            self.hosted.keep(alive)
            self.live = self.hosted.live
            for w, blob in zip(self.live, Blocks(MPI, comm, _layout(cfg.workers, comm.size, alive)).scatter()):
                w.restore(blob)
        if cfg.cuda_aware and not self.downlink:  # MPI writes [control + x] straight into device memory
            self.dev = self.workers[0].ctx.device
            self.dev_buf = self.dev.asarray(self.buf)
            self.x = self.dev_buf[NCTRL:]
        while True:
            try:
                if not self._round():
                    break
            except MPI.Exception:
                if not self.ft:
                    raise
                if not self._recover():
                    break
        timings = [sum(w.ctx.phase_seconds()[k] for w in self.workers) / len(self.workers) for k in WORKER_PHASES]
        _last_words(MPI, self.comm, self.ft, np.array(timings + [peak_rss_mb()]), None)

    def _receive(self):
        """The control word and x^t (a downlink method: the master's message, applied,
        and x^t when it is sent); -> (action, round)."""
        if self.downlink:
            _open_downlink(self.comm, self.dctrl, self.ctrl, self.x, self.live, self.x.shape[0])
        elif self.dev_buf is None:
            self.comm.Bcast(self.buf, root=0)
        else:
            self.dev.synchronize()  # no kernel may still be reading x
            self.comm.Bcast(self.dev_buf, root=0)
            self.ctrl[:] = self.dev.to_host(self.dev_buf[:NCTRL])
        return int(self.ctrl[ACTION]), int(self.ctrl[T])

    def _evaluate(self, t) -> bool:
        """Send every hosted worker's f_i, grad f_i at x^t; -> the master's go."""
        for j, w in enumerate(self.workers):
            loss, grad, used, ok, rows = w.evaluate(self.x, t)
            self.evalbuf[j, :NEVAL] = loss, used, -1 if ok is None else ok, rows  # counts: exact below 2^53
            self.evalbuf[j, NEVAL:] = grad
        self.comm.Send(self.evalbuf, dest=0, tag=TAG_EVAL)
        self.comm.Bcast(self.go, root=0)
        return bool(self.go[0])

    def _round(self) -> bool:
        """One round; False when the run is over."""
        action, t = self._receive()
        if action == END:
            return False
        if action != CONTINUE:
            _send_strings(self.comm, [w.pack() for w in self.live])
        if self.ctrl[EVAL] and not self._evaluate(t):
            return False
        if t in self.faults:
            _fail_now(self.faults.pop(t), t)
        _send_strings(self.comm, self.hosted.round(self.x, t))
        return True

    def _recover(self) -> bool:
        """The worker's side of the driver's ``recover``; False when the run is over."""
        MPI = self.MPI
        while True:
            try:
                self.comm = _shrunk(MPI, self.comm)
                if MPI.Group.Translate_ranks(self.comm.Get_group(), [0], MPI.COMM_WORLD.Get_group())[0] != 0:
                    _master_lost(self.cfg)
                self.comm.Gather(np.array([MPI.COMM_WORLD.rank], dtype=np.int64), None, root=0)
                action, t = self._receive()
                if action == END:
                    return False
                if self.ctrl[EVAL] and not self._evaluate(t):
                    return False
                for w in self.live:
                    w.catch_up(self.x, t)
                _send_strings(self.comm, [w.resync() for w in self.live])
                if self.comm.Agree(t) != t:
                    raise RuntimeError(f"the survivors disagree on the round being completed ({t})")
                return True
            except MPI.Exception:
                continue


_peers_lost = False  # this process survived a failure: MPI_Finalize may then wait forever


def finalize_would_hang() -> bool:
    """True after this rank survived another's failure: Open MPI 5's MPI_Finalize then
    sometimes waits forever on the dead process (its closing PMIx fence; seen about once
    in 15 runs here, cf. open-mpi/ompi#9434), so the ``psmpi`` command ends such a process
    with ``os._exit`` once its output is written, without MPI_Finalize."""
    return _peers_lost


def _shrunk(MPI, comm):
    """After a failure: ``comm`` revoked (every survivor's pending call on it returns an
    error) and shrunk to the survivors, which errors return from too."""
    global _peers_lost
    _peers_lost = True
    comm.Revoke()
    comm = comm.Shrink()
    comm.Set_errhandler(MPI.ERRORS_RETURN)
    return comm


FAULTS_ENV = "PSMPI_INJECT_FAILURE"


def _injected_faults(hosted_ids) -> dict:
    """Failures to inject, for testing the recovery: ``PSMPI_INJECT_FAILURE`` holds
    ``kill:W@T`` (the rank hosting worker W kills itself with SIGKILL before its step
    of round T) or ``raise:W@T`` (it raises an error there), comma-separated;
    -> {round: kind} for this rank's workers."""
    out = {}
    mine = set(hosted_ids)
    for item in filter(None, os.environ.get(FAULTS_ENV, "").split(",")):
        kind, _, where = item.partition(":")
        w, _, t = where.partition("@")
        if kind not in ("kill", "raise") or not (w.isdigit() and t.isdigit()):
            raise ConfigError(f"{FAULTS_ENV}: '{item}' is not kill:W@T or raise:W@T")
        if int(w) in mine:
            out[int(t)] = kind
    return out


def _fail_now(kind: str, t: int):
    sys.stderr.write(f"psmpi: injected failure ({kind}) on rank {os.environ.get('OMPI_COMM_WORLD_RANK', '?')} "
                     f"in round {t} at {time.time():.6f}\n")
    sys.stderr.flush()
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected failure in round {t}")


def _master_lost(cfg):
    """The master died: this worker cannot go on (a checkpoint resumes the run)."""
    note = f"; resume with --resume {checkpoint_path(cfg.out)}" if cfg.checkpoint_every and cfg.out else ""
    sys.stderr.write(f"psmpi: error: the master (rank 0) failed; the run cannot go on{note}\n")
    sys.stderr.flush()
    os._exit(1)


def _library(MPI) -> str:
    return MPI.Get_library_version().replace("\x00", "").splitlines()[0].strip()
