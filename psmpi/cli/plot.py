"""``psmpi plot``: paper-style figures from run outputs."""
from __future__ import annotations

import click

from .errors import fail


@click.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN.h5|DIR ...")
@click.option("-o", "--out", required=True, metavar="FIG.png|pdf|svg", help="the figure file to write")
@click.option("--x", "x_axis", default="all", show_default=True, metavar="bits|bits-down|bits-total|rounds|time|all",
              help="x axis: #bits/n sent up (bits), received down (bits-down) or both (bits-total), rounds, "
                   "wall time, all (bits, rounds, time: rows), or a comma list")
@click.option("--y", "y_axis", default="grad", show_default=True, metavar="grad|loss|METRIC",
              help="||grad f(x^t)||^2, f(x^t), or any metric stored in /metrics (e.g. bytes_up)")
@click.option("--yscale", type=click.Choice(["auto", "log", "linear"]), default="auto", show_default=True,
              help="auto: log for ||grad f||^2 and other squared norms (*_sq), linear otherwise")
@click.option("--panels", metavar="KEY", help="one column per value of this config key (e.g. dataset, workers)")
@click.option("--select", "selects", multiple=True, metavar="KEY=V1,V2",
              help="only runs whose config has one of these values (repeatable)")
@click.option("--best-gamma", is_flag=True,
              help="of runs differing only in the step size, draw the one with the smallest final ||grad f||^2")
@click.option("--smooth", "smooth_window", type=click.IntRange(min=1), default=1, metavar="N",
              help="draw the running mean of N logged rows (noisy stochastic runs)  [default: 1]")
@click.option("--sharey", is_flag=True, help="one y scale for all panels")
@click.option("--title", help="figure title")
@click.option("--figsize", metavar="W,H", help="size of the whole figure in inches  [default: 4.4 x 3.3 per panel]")
@click.option("--font-size", type=click.FloatRange(min=1), metavar="PT", help="base font size in points")
def plot(runs, out, x_axis, y_axis, yscale, panels, selects, best_gamma, smooth_window, sharey, title, figsize,
         font_size):
    """Plot ||grad f(x^t)||^2 (or --y) against #bits/n, rounds and wall time, one
    curve per run (labelled from its config), from run outputs or folders of them.
    Each method keeps one colour and marker in every panel; its settings differ
    by line style.

    \b
    Examples:
      psmpi plot results/ef21_a9a_topk1.h5 -o fig.png
      psmpi plot results/sweep-ef21_vs_ef14 --panels dataset --x bits -o fig1.pdf
      psmpi plot results/sweep-ef21_sgdm_batch --best-gamma --select batch_size=1 -o fig.png
      psmpi plot results/sweep-beznosikov --y loss --figsize 8,3 --font-size 12 -o fig.pdf
    """
    from ..plotting import (PlotError, best_gamma as pick_best, differing_iters, figure, load_runs, parse_figsize,
                            parse_select, select)

    try:
        loaded = load_runs(runs)
        sel = parse_select(selects)
        if sel:
            loaded = select(loaded, sel)
        if best_gamma:
            loaded = pick_best(loaded)
        size = parse_figsize(figsize)
        path = figure(loaded, out, x=x_axis, y=y_axis, panels=panels, title=title, smooth_window=smooth_window,
                      sharey=sharey, figsize=size, font_size=font_size, yscale=yscale)
    except PlotError as e:
        fail(str(e))
    mixed = differing_iters(loaded)
    if mixed:
        click.echo(f"psmpi: note: the runs have different --iters ({', '.join(map(str, mixed))}), e.g. smoke and "
                   f"full runs of a sweep; their labels say T=...; --select iters=N keeps one", err=True)
    click.echo(f"wrote {path} ({len(loaded)} runs)")
