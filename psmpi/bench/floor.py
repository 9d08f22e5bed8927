"""The MPI runtime's floor on this machine: the same launch and the same
collectives as a training round (``Bcast`` of the control word and x, then the
messages with two ``Gatherv``, per-worker sizes then the bytes, the runtime's
own ``Blocks``), first with no work between them, then with each worker
computing its exact local gradient as the runtime does (a rank hosting several
logistic regression workers: one stacked product for all of them,
:class:`psmpi.problems.logreg.LogRegBatch`) and nothing else: no compression,
no encoding, no aggregation.  A training round cannot be faster than the second.

Run under the launcher; the workers are spread over ranks 1.. as in training
(one each, or several per rank)::

    mpirun -n 21 python -m psmpi.bench.floor a9a 20 300
    mpirun -n 3 python -m psmpi.bench.floor a9a 20 300

Rank 0 prints one JSON object: ms per round of each variant (best of three
repetitions after a warm-up) and the workers' mean CPU time per gradient in
the job (``thread_time``), next to the same gradients computed by rank 0
alone, one after another, in a quiet moment after the job's rounds.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(dataset: str, workers: int, rounds: int) -> None:
    from ..compressors.payload import Sparse
    from ..config import TrainConfig, validate
    from ..runtime.common import describe_data, hosted, local_problem
    from ..runtime.mpi import NCTRL, Blocks, _comm, _layout, _mine
    from ..wire import encode

    MPI, comm = _comm()
    if not 2 <= comm.size <= workers + 1:
        raise SystemExit(f"run with 2 to {workers + 1} ranks (got {comm.size})")
    cfg = validate(TrainConfig(dataset=dataset, workers=workers, quiet=True))
    info = describe_data(cfg)
    problems = [local_problem(cfg, info, i) for i in _mine(cfg, comm)]
    gradients = _gradients(problems)
    blocks = Blocks(MPI, comm, _layout(workers, comm.size))
    buf = np.zeros(NCTRL + info.dim)
    x = buf[NCTRL:]
    msg = encode(Sparse(info.dim, np.zeros(1, np.int64), np.zeros(1, np.float32)))  # a Top-1 message's size
    best, cpu = {}, 0.0
    t = 0
    for work in (False, True):
        times = []
        for rep in range(4):  # a warm-up, then three
            comm.Barrier()
            t0, c = time.perf_counter(), 0.0
            for _ in range(rounds):
                comm.Bcast(buf, root=0)
                if work:
                    c0 = time.thread_time()
                    gradients(x, t)
                    t += 1
                    c += time.thread_time() - c0
                blocks.gather(None if comm.rank == 0 else [msg] * len(problems))
            times.append(time.perf_counter() - t0)
            if work and rep:
                cpu += c
        best["gradient" if work else "collectives"] = 1e3 * min(times[1:]) / rounds
    cpus = comm.gather(cpu / (3 * rounds * max(1, len(problems))), root=0)
    done = comm.Ibarrier()  # the workers sleep (not spin in MPI) while rank 0 times alone
    if comm.rank != 0:
        while not done.Test():
            time.sleep(0.01)
        return
    try:
        ranks = [_gradients([local_problem(cfg, info, i) for i in hosted(workers, comm.size - 1, r)])
                 for r in range(comm.size - 1)]  # each worker rank's gradients, as that rank computes them
        reps = max(1, rounds // 10)
        for g in ranks:
            g(x, -1)
        t0 = time.perf_counter()
        for t in range(reps):
            for g in ranks:
                g(x, t)
        alone = (time.perf_counter() - t0) / (reps * workers)
        print(json.dumps({"ranks": comm.size, "rounds": rounds, "collectives_ms_per_round": best["collectives"],
                          "collectives_and_gradients_ms_per_round": best["gradient"],
                          "gradient_cpu_us_in_job": 1e6 * float(np.mean(cpus[1:])),
                          "gradient_us_alone": 1e6 * alone}))
    finally:
        done.Wait()


def _gradients(problems):
    """gradients(x, t): the exact local gradients of a rank's workers at x (round t), as the
    runtime computes them (:func:`psmpi.runtime.common.make_workers`): one stacked product
    for the logistic regression workers one process hosts, else one call per worker."""
    from ..problems.logreg import LogRegBatch

    if LogRegBatch.applies(problems):
        oracle = LogRegBatch(problems)
        return lambda x, t: [oracle.grad_aux(j, x, t) for j in range(len(problems))]
    return lambda x, t: [p.grad_aux(x) for p in problems]


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
