"""The workers one process hosts, and their part of a round.

The serial runtime hosts all n workers, an MPI worker rank its contiguous
block of them (:func:`psmpi.runtime.common.hosted`).  :class:`Hosted` takes
the round of the live ones (those whose messages the master aggregates) and
gives their encoded messages in worker order.
"""
from __future__ import annotations


class Hosted:
    """The :class:`psmpi.runtime.driver.Worker` objects of one process, in worker order."""

    def __init__(self, workers):
        self.workers = list(workers)
        self.live = self.workers

    def keep(self, alive) -> None:
        """Only the workers ``alive`` (ids) send messages from now on."""
        alive = set(alive)
        self.live = [w for w in self.workers if w.ctx.index in alive]

    def round(self, x, t: int) -> list[bytes]:
        """Round t's step of every live worker at x^t, encoded, in worker order."""
        return [w.round(x, t) for w in self.live]
