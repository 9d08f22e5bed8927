"""``psmpi sweep``: run a grid of configurations and name the best one."""
from __future__ import annotations

import os
import click

from .errors import fail, friendly, is_rank0


def _csv(ctx, param, value):
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command()
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False),
              help="YAML config; its 'sweep:' section is the grid")
@click.option("--gamma-factors", help="step-size multipliers to try, e.g. 1,2,4,8 (replaces the gamma_factor axis)")
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2,...",
              help="an axis over any option (repeatable); replaces the config's axis of that name")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="set an option for every point (repeatable)")
@click.option("--iters", type=int, help="rounds per point (overrides the config and --smoke)")
@click.option("--smoke", is_flag=True, help="reduced size for CI: the config's sweep.smoke section "
                                             "(or at most 20 rounds); also PSMPI_SMOKE=1")
@click.option("--out-dir", type=click.Path(file_okay=False),
              help="[default: results/sweep-CONFIGNAME, with --smoke results/sweep-CONFIGNAME-smoke]")
@click.option("--best-by", callback=_csv, metavar="KEY,...",
              help="name the best point within each group of these keys (e.g. dataset,method)")
@click.option("--resume", is_flag=True, help="reuse a point's output when it finished with the same configuration "
                                              "(any option but out, label, quiet, checkpoints, backend); "
                                              "run the other points")
@click.option("--point", "only", type=int, metavar="I", help="run only point I (0-based; for job arrays)")
@click.option("--summary-only", is_flag=True, help="run nothing: summarise the outputs already in --out-dir "
                                                    "(an output of another configuration counts as failed)")
@click.option("--list", "list_only", is_flag=True, help="print the points and exit")
@click.option("--count", is_flag=True, help="print the number of points and exit (for --array=0-$((N-1)))")
@click.option("--array-script", type=click.Choice(["slurm", "pbs"]),
              help="write a job-array batch script (one task per point) instead of running")
@click.option("--quiet", "-q", is_flag=True, help="no progress bars or per-point lines; the summary is still printed")
@friendly
def sweep(config_file, gamma_factors, grid, sets, iters, smoke, out_dir, best_by, resume, only, summary_only,
          list_only, count, array_script, quiet):
    """Run every point of a grid through psmpi.train, one HDF5 output per point,
    then print a summary table (also summary.csv and summary.md in the output
    folder) and name the best setting by the final ||grad f(x^T)||^2.

    \b
    Examples:
      psmpi sweep --config configs/ef21_vs_ef14.yaml
      psmpi sweep --config configs/ef21_vs_ef14.yaml --gamma-factors 1,4,16 --grid dataset=a9a
      psmpi sweep --config configs/beznosikov.yaml --smoke --out-dir /tmp/smoke
      psmpi sweep --config configs/ef21_vs_ef14.yaml --array-script slurm   # then sbatch it
    """
    from .. import sweep as sw
    from ..config import ConfigError

    axes = sw.parse_grid(grid)
    if gamma_factors:
        if "gamma_factor" in axes:
            raise ConfigError("give the step-size multipliers either with --gamma-factors or --grid gamma_factor=...")
        axes["gamma_factor"] = [sw.parse_value(v) for v in gamma_factors.split(",") if v.strip()]
        if not axes["gamma_factor"]:
            raise ConfigError("--gamma-factors needs at least one value, e.g. 1,2,4")
    overrides = {}
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (got {item!r})")
        overrides[key.strip()] = sw.parse_value(value)
    smoke = sw.smoke_enabled(smoke)
    s = sw.build(config_file, axes, smoke, iters, out_dir, best_by, overrides)
    n = len(s.points)
    if count:
        click.echo(n)
        return
    if list_only:
        for p in s.points:
            click.echo(f"{p.index:4d}  {sw.describe(p.values)}  -> {p.out}")
        return
    if array_script:
        args = sw.command_line(config_file, axes, smoke, iters, s.out_dir, best_by, overrides)
        scripts = sw.array_script(s, array_script, args)
        for path, text in scripts:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        (path, _), (summary, _) = scripts
        if array_script == "slurm":
            submit, after = "JOB=$(sbatch --parsable", "sbatch --dependency=afterany:$JOB"
        else:
            submit, after = "JOB=$(qsub", "qsub -W depend=afterany:$JOB"
        click.echo(f"wrote {path} ({n} array tasks) and {summary} (the summary, one job)")
        click.echo(f"submit with: {submit} {path}) && {after} {summary}")
        return
    if only is not None and not 0 <= only < n:
        fail(f"--point {only} is out of range: the sweep has {n} points (0..{n - 1})")

    rank0 = is_rank0()
    log = (lambda line: click.echo(line)) if (rank0 and not quiet) else None
    if summary_only:
        rows = [sw.read_row(p) for p in s.points]
    else:
        if log:
            click.echo(f"sweep {s.name}: {n if only is None else 1} of {n} points -> {s.out_dir}")
        rows = sw.run(s, only=only, resume=resume, quiet=quiet, log=log)
    if not rank0:
        return
    if only is not None:
        return  # one point of an array: the summary comes from --summary-only
    header, body = sw.table(s, rows)
    click.echo(sw.format_table(header, body))
    csv_path, md_path = sw.write_summary(s, rows)
    for line in sw.best_lines(s, rows):
        click.echo(line)
    click.echo(f"wrote {csv_path} and {md_path}")
    failed = [r for r in rows if r.status.startswith(("error", "stale")) or r.status == "missing"]
    if failed:
        fail(f"{len(failed)} of {n} points failed or are missing (see the summary)")

