"""Benchmarks behind ``psmpi bench``.

One module per benchmark (``compress``, ``wire``, ``round``, ``startup``), each exposing
``run_*(...) -> dict`` (JSON-ready: ``machine``, ``params``, ``rows``) and
``format_table(result) -> str``; :mod:`.common` holds the timer (warm-up,
timed repetitions, interleaving for side-by-side ratios), the machine
description, size parsing, launching (mpirun, a command with its error line) and
the fixed-width table.  The click commands in
:mod:`psmpi.cli.bench` only wire options to these functions.
"""
