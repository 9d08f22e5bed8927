"""The error types of psmpi and the reasons a run stops.

Every error a user can cause derives from :class:`PsmpiError`; its message is
one line, printed as ``psmpi: error: MESSAGE`` with exit code 2 by the command
line.  Each layer has its own subclass (configuration, data, method,
compressor, wire); they also derive from ``ValueError`` so that code catching
bad values keeps working.

A run's end is a :class:`Stop` value, not a message to be parsed.
"""
from __future__ import annotations

import enum


class PsmpiError(Exception):
    """A problem the user can fix; the message is one line."""


class ConfigError(PsmpiError, ValueError):
    """A configuration that cannot run."""


class MethodError(PsmpiError, ValueError):
    """A method that cannot run as configured (e.g. with this compressor or option)."""


def did_you_mean(name: str, known, show=lambda s: s) -> str:
    """' (did you mean 'X'?)' for the closest of ``known`` to ``name`` (as ``show`` writes it), or ''."""
    import difflib

    near = difflib.get_close_matches(str(name), sorted(known), n=1)
    return f" (did you mean '{show(near[0])}'?)" if near else ""


class Stop(str, enum.Enum):
    """Why a run ended; stored as the ``stop_reason`` attribute of the output file."""

    ITERS = "iters"  # the last round was reached
    TOL = "tol"  # ||grad f||^2 <= --tol at an evaluation
    DIVERGED = "diverged"  # non-finite values or ||grad f||^2 above the divergence bound
    SIGNAL = "signal"  # SIGTERM/SIGINT: a checkpoint was written
    NO_WORKERS = "no_workers"  # every worker failed (--on-worker-failure continue)
    RUNNING = "running"  # a file flushed during the run: not finished yet

    def __str__(self) -> str:
        return self.value
