"""One-line errors for the user: a known error class becomes 'psmpi: error: ...'
on stderr and a non-zero exit, never a traceback."""
from __future__ import annotations

import functools
import sys

import click

EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_NO_WORKERS = 4  # every worker failed (--on-worker-failure continue)


def user_errors():
    from ..errors import PsmpiError

    return (PsmpiError,)


def is_rank0() -> bool:
    """True unless launched as a non-zero MPI rank (only rank 0 reports errors)."""
    from ..launch import launch_rank

    return launch_rank() == 0


def fail(message: str, code: int = EXIT_USAGE):
    if is_rank0():
        click.echo(f"psmpi: error: {message}", err=True)
        sys.stderr.flush()
    else:
        # Every rank finds the same bad option; the launcher ends the job at the first exit,
        # so the other ranks wait a moment for rank 0's line to get out.
        import time

        time.sleep(1.0)
    sys.exit(code)


def friendly(fn):
    """Decorator for commands: user errors become one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except user_errors() as e:
            fail(str(e))

    return wrapper
