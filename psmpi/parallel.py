"""Threads inside one process: how many a process may use, and one shared pool.

numpy's large elementwise operations and scipy's sparse products release the
GIL, so a few threads over independent pieces of the same work (the serial
runtime's stacked gradients, a long vector's TopK) use the cores a single
process would leave idle.  The count is

* ``PSMPI_THREADS`` when set (a positive integer; 1 turns threading off);
* else, under an MPI launcher, the usable CPUs divided by the ranks on this
  node (at least 1), so that ranks do not oversubscribe the node further;
* else the CPUs this process may run on.

Every user splits its work so that each piece computes the same numbers, in
the same order, as the single-threaded code: results do not depend on the
count (the serial runtime stays equal to the MPI runtime bit for bit).
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import Future, ThreadPoolExecutor

_LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMIX_LOCAL_SIZE")
_WORLD_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")


def _env_int(names) -> int | None:
    for var in names:
        v = os.environ.get(var, "")
        if v.isdigit() and int(v) > 0:
            return int(v)
    return None


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
            from .config import ConfigError

            raise ConfigError(f"PSMPI_THREADS must be a positive integer (got {v!r})")
        return int(v)
    local = _env_int(_LOCAL_SIZE_VARS)
    if local is None and (_env_int(_WORLD_SIZE_VARS) or 1) > 1:
        return 1  # launched by MPI without saying how many ranks share this node
    return max(1, available_cpus() // (local or 1))


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, threads() - 1), thread_name_prefix="psmpi")


def start(fn, items) -> list[Future]:
    """Futures of fn(item) for each item: the others are handed to the shared
    pool first, then the first is computed in this thread (done on return),
    so that the caller can use it while the pool works on the rest.  With one
    thread everything is computed here."""
    items = list(items)
    pooled = threads() > 1 and len(items) > 1
    futures = [_pool().submit(fn, item) for item in items[1:]] if pooled else []
    done = []
    for item in items[:1] if pooled else items:
        f = Future()
        try:
            f.set_result(fn(item))
        except BaseException as e:  # raised where the result is asked for, like the pool's
            f.set_exception(e)
        done.append(f)
    return done + futures


def run_all(fn, items) -> list:
    """[fn(item) for item in items], the first item in this thread and the
    others on the shared pool at the same time; exceptions propagate."""
    return [f.result() for f in start(fn, items)]


def chunks(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, stop) ranges covering range(n), sizes differing by at most one."""
    parts = max(1, min(parts, n))
    q, r = divmod(n, parts)
    bounds = [0]
    for p in range(parts):
        bounds.append(bounds[-1] + q + (p < r))
    return list(zip(bounds[:-1], bounds[1:]))
