"""The ``psmpi`` command: a thin click group; each command lives in its own module
and is imported only when used (so ``psmpi --help`` stays fast)."""
from __future__ import annotations

import importlib

import click

from .. import __version__

COMMANDS = {
    "train": ("psmpi.cli.train", "train", "Run one training run (serial or MPI)."),
    "data": ("psmpi.cli.data", "data", "Convert, inspect and fetch datasets."),
    "plot": ("psmpi.cli.plot", "plot", "Paper-style figures from run outputs."),
    "export": ("psmpi.cli.export", "export", "The metrics of many runs as one CSV (long format)."),
    "sweep": ("psmpi.cli.sweep", "sweep", "Run a grid of configurations and pick the best."),
    "bench": ("psmpi.cli.bench", "bench", "Throughput and bandwidth benchmarks."),
    "info": ("psmpi.cli.info", "info", "Versions, MPI library, GPU, methods and compressors."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="psmpi")
def main():
    """psmpi: a parameter server over MPI for communication-compressed
    distributed optimization (EF21, EF21-SGDM, CLAG, MARINA, DIANA, ...).

    \b
    Serial (n simulated workers):  psmpi train --workers 20 --method ef21
    MPI (rank 0 master + 20):      mpirun -n 21 psmpi train --method ef21-sgdm
    """
