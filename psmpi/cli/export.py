"""``psmpi export``: the metrics of many runs as one CSV table."""
from __future__ import annotations

import click

from .errors import fail


@click.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN.h5|DIR ...")
@click.option("--csv", "csv_path", required=True, type=click.Path(dir_okay=False), metavar="OUT.csv",
              help="the CSV file to write")
def export(runs, csv_path):
    """Write the metrics of run outputs (files, or folders of them such as a
    sweep's) to one CSV in long format: one row per run and evaluation, with the
    columns run, file, every config key, then the metrics (iteration,
    grad_norm_sq, loss, bits_up_per_worker, ...).

    \b
    Examples:
      psmpi export results/sweep-beznosikov --csv beznosikov.csv
      psmpi export results/ef21_a9a_topk1.h5 results/ef14_a9a_topk1.h5 --csv runs.csv
    """
    from ..plotting import PlotError, load_runs
    from ..results import export_csv

    try:
        loaded = load_runs(runs)
    except PlotError as e:
        fail(str(e))
    try:
        rows = export_csv([(r.path, r.result) for r in loaded], csv_path)
    except OSError as e:
        fail(f"cannot write {csv_path}: {e.strerror or e}")
    click.echo(f"wrote {csv_path} ({len(loaded)} runs, {rows} rows)")
