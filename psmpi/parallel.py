"""Threads inside one process: how many a process may use, and one shared pool.

numpy's large elementwise operations and scipy's sparse products release the
GIL, so a few threads over independent pieces of the same work (the serial
runtime's stacked gradients, a long vector's TopK) use the cores a single
process would leave idle.  The count is

* ``PSMPI_THREADS`` when set (a positive integer; 1 turns threading off);
* else, under an MPI launcher, the usable CPUs divided by the ranks on this
  node (at least 1), so that ranks do not oversubscribe the node further;
  under srun, which does not say, ``--cpus-per-task`` (else 1);
* else the CPUs this process may run on.

Every user splits its work so that each piece computes the same numbers, in
the same order, as the single-threaded code: results do not depend on the
count (the serial runtime stays equal to the MPI runtime bit for bit).
"""
from __future__ import annotations

import functools
import os
import queue
import threading

from . import launch
from .errors import ConfigError

def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def threads() -> int:
    """How many threads this process uses for splittable work (see the module docstring)."""
    v = os.environ.get("PSMPI_THREADS")
    if v is not None:
        if not v.strip().isdigit() or int(v) < 1:
            raise ConfigError(f"PSMPI_THREADS must be a positive integer (got {v!r})")
        return int(v)
    local = launch.local_size()
    if local is None and launch.mpi_world_size() > 1:
        # launched by MPI without saying how many ranks share this node: srun's
        # --cpus-per-task if given, else one
        return launch.env_int(("SLURM_CPUS_PER_TASK",)) or 1
    return max(1, available_cpus() // (local or 1))


class _Pool:
    """Daemon threads named psmpi-N serving (fn, item, slot, done) tasks from
    one C-level queue (cheaper to hand work to than concurrent.futures)."""

    def __init__(self, n: int):
        self.tasks = queue.SimpleQueue()
        for i in range(n):
            threading.Thread(target=self._serve, name=f"psmpi-{i}", daemon=True).start()

    def _serve(self):
        _local.on_pool = True
        while True:
            fn, item, slot, done = self.tasks.get()
            try:
                slot.append((True, fn(item)))
            except BaseException as e:  # handed back to the caller of run_all
                slot.append((False, e))
            done.put(None)


_local = threading.local()


def on_pool_thread() -> bool:
    """True on a thread of the shared pool, where :func:`run_all` runs everything
    itself: waiting there for the pool could wait for this very thread."""
    return getattr(_local, "on_pool", False)


@functools.lru_cache(maxsize=1)
def _pool() -> _Pool:
    return _Pool(max(1, threads() - 1))


def run_all(fn, items) -> list:
    """[fn(item) for item in items]: the others are handed to the shared pool
    first, then the first is computed in this thread; exceptions propagate
    (the first in item order).  On a pool thread, all in this thread."""
    items = list(items)
    if len(items) <= 1 or threads() == 1 or on_pool_thread():
        return [fn(item) for item in items]
    pool, done = _pool(), queue.SimpleQueue()
    slots = [[] for _ in items[1:]]
    for item, slot in zip(items[1:], slots):
        pool.tasks.put((fn, item, slot, done))
    try:
        first = fn(items[0])
    finally:
        for _ in slots:  # (the pool's tasks read the caller's data: wait for them either way)
            done.get()
    out = [first]
    for ok, v in (slot[0] for slot in slots):
        if not ok:
            raise v
        out.append(v)
    return out


def chunks(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, stop) ranges covering range(n), sizes differing by at most one."""
    parts = max(1, min(parts, n))
    q, r = divmod(n, parts)
    bounds = [0]
    for p in range(parts):
        bounds.append(bounds[-1] + q + (p < r))
    return list(zip(bounds[:-1], bounds[1:]))
