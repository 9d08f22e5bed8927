"""The link check of ``psmpi bench network``: time known-size collectives over the
link the training runs use, under the same launcher and MCA settings::

    mpirun -n 9 python -m psmpi.bench.linkprobe 8000000 4000000

Rank 0 broadcasts a buffer of DOWN bytes (as the runtime broadcasts x), then
gathers UP bytes from every worker (as a dense message), three times each
after a warm-up.  Rank 0 prints one JSON object: the best seconds of each and
the throughput in bits/s counting every byte that crosses the link (each of the
R - 1 workers receives DOWN bytes and sends UP bytes).
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def _best(comm, fn, reps: int = 3) -> float:
    times = []
    for _ in range(reps + 1):  # a warm-up, then reps
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        comm.Barrier()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def main(down: int, up: int) -> None:
    from ..runtime.mpi import _comm, _starts

    MPI, comm = _comm()
    workers = comm.size - 1
    buf = np.zeros(down, dtype=np.uint8)
    mine = np.zeros(0 if comm.rank == 0 else up, dtype=np.uint8)
    counts = np.array([0] + [up] * workers)
    recv = [np.empty(up * workers, dtype=np.uint8), counts, _starts(counts), MPI.BYTE]
    t_bcast = _best(comm, lambda: comm.Bcast(buf, root=0))
    t_gather = _best(comm, lambda: comm.Gatherv(mine, recv if comm.rank == 0 else None, root=0))
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "bcast_bytes": down, "gather_bytes_per_worker": up,
                          "bcast_s": t_bcast, "gather_s": t_gather,
                          "bcast_bits_per_s": 8.0 * down * workers / t_bcast,
                          "gather_bits_per_s": 8.0 * up * workers / t_gather}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
