"""The MPI runtime: rank 0 is the master (parameter server), ranks 1..n are workers.

Each round t the master broadcasts one float64 buffer holding a control word
(round, evaluate?, checkpoint/stop) followed by x^t (``Bcast``). On evaluation
rounds every worker sends its exact f_i(x^t) and grad f_i(x^t) (``Send``,
received in rank order so the sum is the serial one). Every worker runs the
same ``worker_round`` as the serial runtime; the master collects the encoded
messages with ``Gather`` (sizes) + ``Gatherv`` (bytes), then decodes and
aggregates them in worker order with ``master_round``.
No pickle is used: every call is an uppercase mpi4py call on a numpy buffer.

``bytes_up`` counts the message bytes handed to Gatherv, ``bytes_down`` the
bytes of x broadcast to the n workers; control words, evaluation traffic and
set-up traffic (smoothness constants) are not counted, as in the serial runtime.

Failure: set-up errors are agreed on collectively (one line from the lowest
failing rank, exit code 2); an exception on any rank during the run prints one
line from that rank and aborts the whole world (``MPI_Abort``), so no rank is
left hanging.
"""
from __future__ import annotations

import json
import sys
import time
import traceback

import numpy as np

from ..config import ConfigError, TrainConfig
from ..problems.base import DENSE_EIG_MAX
from .checkpoint import pack_worker, read_checkpoint, restore_worker
from .common import (WORKER_PHASES, Control, Diverged, EvalSum, Recorder, constants_from, describe_data,
                     global_smoothness, initial_point, local_problem, make_context, make_result, master_round,
                     peak_rss_mb, plan_run, sum_in_order, worker_round)

TAG_EVAL, TAG_CURV = 11, 12
T, EVAL, ACTION, NCTRL = 0, 1, 2, 3  # control word fields: round, evaluate?, checkpoint/stop (exact in float64)
END = 3  # ACTION: stop now without a checkpoint (the run diverged)


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
    cfg.workers = comm.size - 1
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
            _abort(MPI, comm, e)
    finally:
        ctl.uninstall()


def _abort(MPI, comm, e):
    who = "master" if comm.rank == 0 else f"worker {comm.rank - 1}"
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


def _setup(MPI, comm, cfg):
    """Data, constants and the plan, identically on every rank."""
    n, rank = cfg.workers, comm.rank
    problem = info = error = None
    try:
        info = describe_data(cfg)
        if rank > 0:
            problem = local_problem(cfg, info, rank - 1)
    except (ValueError, OSError) as e:
        error = e
    _agree(MPI, comm, error)
    # L_i from every worker
    Li = np.zeros(1) if rank == 0 else np.array([problem.local_smoothness()])
    all_Li = np.zeros(comm.size) if rank == 0 else None
    comm.Gather(Li, all_Li, root=0)
    # L from the mean curvature bound, reduced in worker order on the master
    hdim = info.hdim
    if rank == 0:
        L = global_smoothness(hdim, info.reg, lambda: sum_in_order(_recv_each(comm, (hdim, hdim)), n),
                              lambda v: _remote_matvec(comm, v, n))
        if hdim > DENSE_EIG_MAX:
            comm.Bcast(np.zeros(1, dtype=np.int64), root=0)  # end of matvec service
        consts_buf = np.concatenate([[L], all_Li[1:]])
    else:
        if hdim <= DENSE_EIG_MAX:
            comm.Send(np.ascontiguousarray(problem.hbound_dense(), dtype=np.float64), dest=0, tag=TAG_CURV)
        else:
            _serve_matvec(comm, problem, hdim)
        consts_buf = np.empty(n + 1)
    comm.Bcast(consts_buf, root=0)
    consts = constants_from(consts_buf[0], consts_buf[1:])
    error = plan = None
    try:
        plan = plan_run(cfg, info.dim, consts)
    except ValueError as e:
        error = e
    _agree(MPI, comm, error)
    return info, problem, consts, plan


def _recv_each(comm, shape):
    buf = np.empty(shape)
    for src in range(1, comm.size):
        comm.Recv(buf, source=src, tag=TAG_CURV)
        yield buf


def _remote_matvec(comm, v, n):
    comm.Bcast(np.ones(1, dtype=np.int64), root=0)
    comm.Bcast(np.ascontiguousarray(v, dtype=np.float64), root=0)
    return sum_in_order(_recv_each(comm, v.shape), n)


def _serve_matvec(comm, problem, hdim):
    flag = np.empty(1, dtype=np.int64)
    v = np.empty(hdim)
    while True:
        comm.Bcast(flag, root=0)
        if not flag[0]:
            return
        comm.Bcast(v, root=0)
        comm.Send(np.ascontiguousarray(problem.hbound_matvec(v), dtype=np.float64), dest=0, tag=TAG_CURV)


def _resume_blobs(MPI, comm, cfg):
    """On resume: the master reads the checkpoint (errors agreed on) and hands
    each worker its state blob. -> (checkpoint on rank 0 / None, blob or None, start)"""
    ck, error = None, None
    if comm.rank == 0:
        try:
            ck = read_checkpoint(cfg.resume, cfg)
        except ValueError as e:
            error = e
    _agree(MPI, comm, error)
    blob = _scatter_bytes(MPI, comm, ck.worker_blobs if ck else None)
    start = np.array([ck.round if ck else 0], dtype=np.int64)
    comm.Bcast(start, root=0)
    return ck, blob, int(start[0])


def _scatter_bytes(MPI, comm, blobs):
    sizes = np.zeros(comm.size, dtype=np.int64)
    if comm.rank == 0:
        sizes[1:] = [len(b) for b in blobs]
    comm.Bcast(sizes, root=0)
    if comm.rank == 0:
        buf = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        comm.Scatterv([buf, sizes, displs, MPI.BYTE], np.zeros(0, dtype=np.uint8), root=0)
        return None
    out = np.empty(int(sizes[comm.rank]), dtype=np.uint8)
    comm.Scatterv(None, out, root=0)
    return out.tobytes()


def _gather_bytes(MPI, comm, mine: bytes | None, scratch=None):
    """Gather variable-size byte strings on rank 0 (sizes, then Gatherv).
    -> (list of the workers' bytes in rank order, total bytes) on rank 0."""
    size = np.array([0 if mine is None else len(mine)], dtype=np.int64)
    if comm.rank != 0:
        comm.Gather(size, None, root=0)
        comm.Gatherv(np.frombuffer(mine, dtype=np.uint8), None, root=0)
        return None, 0
    sizes = np.zeros(comm.size, dtype=np.int64)
    comm.Gather(size, sizes, root=0)
    total = int(sizes.sum())
    recv = scratch if scratch is not None and scratch.size >= total else np.empty(total, dtype=np.uint8)
    displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    comm.Gatherv(np.zeros(0, dtype=np.uint8), [recv, sizes, displs, MPI.BYTE], root=0)
    return [recv[displs[i]:displs[i] + sizes[i]].tobytes() for i in range(1, comm.size)], total


def _master(MPI, comm, cfg, ctl, info, _problem, consts, plan):
    n, d = cfg.workers, info.dim
    buf = np.empty(NCTRL + d)  # control word + x, one Bcast a round
    ctrl, x = buf[:NCTRL], buf[NCTRL:]
    x[:] = initial_point(cfg, d)
    rec = Recorder(cfg, n)
    go = np.zeros(1, dtype=np.int64)
    evalbuf = np.empty(d + 1)
    scratch = np.empty(1 << 16, dtype=np.uint8)
    mstate, start = None, 0
    if cfg.resume:
        ck, _, start = _resume_blobs(MPI, comm, cfg)
        mstate = ck.master
        x[:] = ck.x
        if mstate is not None:
            mstate.x = x
        rec.restore(ck)
    timing = {"bcast": 0.0, "eval": 0.0, "gather": 0.0, "decode_aggregate": 0.0}
    library = _library(MPI)

    def result():
        res = make_result(cfg, plan, consts, rec, x, "mpi", library, d)
        rounds = int(rec.rows["iteration"][-1]) if rec.rows["iteration"] else 0
        res.attrs["timings"] = json.dumps({"master": timing, "bytes_up_round0": rec.bytes_up_round0, "rounds": rounds})
        return res

    try:
        for t in range(start, cfg.iters + 1):
            ctrl[T], ctrl[EVAL], ctrl[ACTION] = t, rec.should_eval(t), ctl.action(t, start)
            t0 = time.perf_counter()
            comm.Bcast(buf, root=0)
            if ctrl[ACTION] != ctl.CONTINUE:
                blobs, _ = _gather_bytes(MPI, comm, None)
                ctl.checkpoint(t, x, mstate, blobs, rec)
                if ctrl[ACTION] == ctl.STOP:
                    rec.stop_reason = ctl.stop_message(t)
                    break
                ctl.maybe_flush(result, force=True)
            t1 = time.perf_counter()
            timing["bcast"] += t1 - t0
            if ctrl[EVAL]:
                ev = EvalSum(n)
                for src in range(1, comm.size):
                    comm.Recv(evalbuf, source=src, tag=TAG_EVAL)
                    ev.add(float(evalbuf[0]), evalbuf[1:])
                stop = rec.eval_row(t, *ev.result())
                go[0] = not stop
                comm.Bcast(go, root=0)
                timing["eval"] += time.perf_counter() - t1
                if stop:
                    break
                ctl.maybe_flush(result)
            rec.start()
            t2 = time.perf_counter()
            messages, total = _gather_bytes(MPI, comm, None, scratch)
            t3 = time.perf_counter()
            rec.add_round(t, total, n * x.nbytes)
            try:
                mstate = master_round(plan.method, plan.hp, mstate, x, messages, t, d)
            except Diverged as e:
                rec.stop_reason = str(e)
                ctrl[ACTION] = END
                comm.Bcast(buf, root=0)
                break
            if mstate.x is not x:
                x[:] = mstate.x
                mstate.x = x
            timing["decode_aggregate"] += time.perf_counter() - t3
            timing["gather"] += t3 - t2
    finally:
        rec.close()
    worker_times = np.zeros((comm.size, len(WORKER_PHASES) + 1))
    comm.Gather(np.zeros(len(WORKER_PHASES) + 1), worker_times, root=0)
    res = result()
    tim = json.loads(res.attrs["timings"])
    tim["workers_mean"] = dict(zip(WORKER_PHASES, worker_times[1:, :-1].mean(axis=0)))
    tim["peak_rss_mb"] = {"master": peak_rss_mb(), "worker_max": float(worker_times[1:, -1].max())}
    res.attrs["timings"] = json.dumps(tim)
    return res


def _worker(MPI, comm, cfg, info, problem, consts, plan):
    d = info.dim
    ctx = make_context(cfg, plan, comm.rank - 1, problem)
    state = None
    if cfg.resume:
        _, blob, _ = _resume_blobs(MPI, comm, cfg)
        state = restore_worker(ctx, blob)
    buf = np.empty(NCTRL + d)
    ctrl, x = buf[:NCTRL], buf[NCTRL:]
    dev_buf = None
    if cfg.cuda_aware:  # MPI writes [control + x] straight into device memory
        dev_buf = ctx.device.asarray(buf)
        x = dev_buf[NCTRL:]
    go = np.zeros(1, dtype=np.int64)
    evalbuf = np.empty(d + 1)
    while True:
        if dev_buf is None:
            comm.Bcast(buf, root=0)
        else:
            ctx.device.synchronize()  # no kernel may still be reading x
            comm.Bcast(dev_buf, root=0)
            ctrl[:] = ctx.device.to_host(dev_buf[:NCTRL])
        if ctrl[ACTION] == END:
            break
        if ctrl[ACTION] != Control.CONTINUE:
            _gather_bytes(MPI, comm, pack_worker(ctx, state))
            if ctrl[ACTION] == Control.STOP:
                break
        t = int(ctrl[T])
        if ctrl[EVAL]:
            ctx.round = t
            loss, grad = ctx.value_and_grad(x)
            evalbuf[0] = loss
            evalbuf[1:] = grad
            comm.Send(evalbuf, dest=0, tag=TAG_EVAL)
            comm.Bcast(go, root=0)
            if not go[0]:
                break
        state, msg = worker_round(plan.method, ctx, state, x, t)
        _gather_bytes(MPI, comm, msg)
    comm.Gather(np.array([ctx.timings[k] for k in WORKER_PHASES] + [peak_rss_mb()]), None, root=0)


def _library(MPI) -> str:
    return MPI.Get_library_version().replace("\x00", "").splitlines()[0].strip()
