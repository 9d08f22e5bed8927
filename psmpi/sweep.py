"""Grids of runs: expand a config's ``sweep:`` section, run every point through
:func:`psmpi.train`, summarise, and name the best setting by the final
||grad f(x^T)||^2 (the way the papers tune step sizes).

The ``sweep:`` section of a config (``psmpi train`` ignores it)::

    sweep:
      dataset: [phishing, a9a]          # an axis: a list of values of any option
      gamma_factor: [1, 2, 4, 8]
      union:                            # optional: sub-grids whose points are joined,
        - {method: [ef21-sgdm, ef21-sgd2m], batch_size: 1}   # each crossed with the
        - {method: [ef14, ef21-sgd], batch_size: [1, 16]}     # axes above
      best_by: [dataset, method]        # name the best point within each group
      smoke:                            # applied by --smoke (CI size): scalars override
        iters: 20                       # options, lists replace axes
        gamma_factor: [1, 8]

Points are ordered as the axes are written (the first axis varies slowest).
A scalar in the grid is an axis of one value.

``--smoke`` runs go to ``results/sweep-NAME-smoke`` (the full sweep to
``results/sweep-NAME``), so the two never share a folder by default.  With
``--resume`` a point's existing output is reused only when it finished (it
stopped at ``iters``, ``tol`` or diverged) and its stored ``config`` equals
the configuration the sweep would run now in every option except
:data:`REUSE_IGNORES`; any other output is run again (and replaced).
"""
from __future__ import annotations

import csv
import itertools
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field

from .api import make_config
from .config import FIELDS, ITERATE_NEUTRAL, ConfigError, TrainConfig, config_diff, load_yaml
from .errors import PsmpiError, did_you_mean
from .methods import all_params, relevant, users_of

RESERVED = ("union", "best_by", "smoke")
SMOKE_ITERS = 20  # --smoke without a smoke section: at most this many rounds
FORBIDDEN_AXES = ("out", "sweep", "quiet", "label")
# Options that change neither the iterates nor the recorded metrics: a stored
# output that differs from the sweep's point only in these is still that point.
# (backend: the serial and MPI runtimes give the same iterates bit for bit.
# eval_every and tol are NOT here: they change the rows recorded and where a run stops.)
REUSE_IGNORES = ITERATE_NEUTRAL
FINISHED = ("iters", "tol")  # stop reasons of a complete run (and 'diverged ...')


@dataclass
class Point:
    index: int
    values: dict  # the settings of this point that vary across the sweep
    config: dict  # every option, for psmpi.train
    out: str
    resolved: dict = field(default_factory=dict)  # the validated configuration (what the output stores)


@dataclass
class Row:
    point: Point
    status: str  # ok, tol, diverged, error: ..., missing, skipped
    gamma: float = math.nan
    rounds: int = 0
    final: float = math.nan  # final ||grad f||^2
    best: float = math.nan  # smallest ||grad f||^2 logged
    bits: float = math.nan  # bits sent per worker
    wall: float = math.nan
    seconds: float = math.nan  # the point's whole time, set-up included

    @property
    def score(self) -> float:
        """What the best setting is chosen by: the final ||grad f||^2 (inf when unusable)."""
        if self.status not in ("ok", "tol") or not math.isfinite(self.final):
            return math.inf
        return self.final


@dataclass
class Sweep:
    name: str
    base: dict
    keys: list  # the varying keys, in order
    points: list
    out_dir: str
    best_by: list = field(default_factory=list)


# ------------------------------------------------------------- parsing ---
def parse_value(text: str):
    """A command-line value: int, float, or the string itself."""
    text = text.strip()
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text.lower() in ("none", "null"):
        return None
    return text


def parse_grid(items) -> dict:
    """``["key=v1,v2", ...]`` -> {key: [v1, v2]} (keys may use '-' or '_')."""
    grid = {}
    for item in items or ():
        key, eq, values = str(item).partition("=")
        if not eq or not key.strip() or not values.strip():
            raise ConfigError(f"--grid expects KEY=V1,V2,... (got {item!r})")
        grid[_field(key.strip(), "--grid")] = [parse_value(v) for v in values.split(",") if v.strip()]
    return grid


def _field(key: str, source: str) -> str:
    name = str(key).replace("-", "_")
    if name in RESERVED:
        return name
    if name not in FIELDS and name not in all_params():
        raise ConfigError(f"{source}: unknown key '{key}'"
                          f"{did_you_mean(name, FIELDS + list(all_params()), lambda s: s.replace('_', '-'))}")
    if name in FORBIDDEN_AXES:
        raise ConfigError(f"{source}: '{key}' cannot be swept (each point gets its own output file)")
    return name


def _axes(spec: dict, source: str) -> dict:
    out = {}
    for k, v in spec.items():
        name = _field(k, source)
        if name in RESERVED:
            continue
        values = list(v) if isinstance(v, (list, tuple)) else [v]
        if not values:
            raise ConfigError(f"{source}: '{k}' has no values")
        out[name] = values
    return out


def _check_section(spec, source) -> dict:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: 'sweep' must be a mapping of option: [values]")
    return spec


def expand(spec: dict, source: str = "sweep") -> tuple[list, list]:
    """The points of a grid section -> (keys in order, list of {key: value})."""
    spec = _check_section(spec, source)
    top = _axes(spec, source)
    union = spec.get("union") or [{}]
    if not isinstance(union, list) or not all(isinstance(u, dict) for u in union):
        raise ConfigError(f"{source}: 'union' must be a list of mappings of option: [values]")
    keys = list(top)
    combos, seen = [], set()
    for i, sub in enumerate(union):
        axes = dict(top)
        for k, v in _axes(sub, f"{source}.union[{i}]").items():
            if k in top:
                raise ConfigError(f"{source}: '{k}' is both an axis and in union[{i}]")
            axes[k] = v
            if k not in keys:
                keys.append(k)
        names = list(axes)
        for values in itertools.product(*(axes[k] for k in names)):
            point = dict(zip(names, values))
            sig = tuple(sorted((k, repr(v)) for k, v in point.items()))
            if sig not in seen:
                seen.add(sig)
                combos.append(point)
    return keys, combos


def _replace_axes(spec: dict, grid: dict) -> dict:
    """Axes given in ``grid`` replace the section's axes of that name, in unions too."""
    new = {}
    for name, v in spec.items():  # an axis keeps its place; new axes go last
        key = name.replace("-", "_")
        new[key if key in grid else name] = grid.get(key, v)
    for k, v in grid.items():
        new.setdefault(k, v)
    spec = new
    if "union" in spec:
        new_union = []
        for sub in spec["union"] or []:
            sub = {k: v for k, v in sub.items() if k.replace("-", "_") not in grid}
            new_union.append(sub)
        spec["union"] = new_union
    return spec


def smoke_enabled(flag: bool) -> bool:
    return bool(flag) or os.environ.get("PSMPI_SMOKE", "").strip().lower() not in ("", "0", "no", "false")


# ------------------------------------------------------------- building ---
def build(config, grid: dict | None = None, smoke: bool = False, iters: int | None = None,
          out_dir: str | None = None, best_by=None, overrides: dict | None = None) -> Sweep:
    """A Sweep from a config file (or mapping) and the command line's changes.

    Order of precedence, lowest first: the config, its ``smoke:`` section (when
    ``smoke``), ``grid`` (replaces whole axes), ``overrides`` and ``iters``.
    """
    if isinstance(config, (str, os.PathLike)):
        source = str(config)
        data = load_yaml(source)
        name = os.path.splitext(os.path.basename(source))[0]
    else:
        source, data, name = "config", dict(config or {}), "sweep"
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    spec = _check_section(data.pop("sweep", None), f"{source}: sweep")
    base = dict(data)
    if smoke:
        sm = spec.get("smoke") or {}
        if not isinstance(sm, dict):
            raise ConfigError(f"{source}: sweep.smoke must be a mapping")
        axes = {}
        for k, v in sm.items():
            key = _field(k, f"{source}: sweep.smoke")
            if key == "union":
                spec = {**spec, "union": v}
            elif isinstance(v, list):
                axes[key] = v
            else:
                base[key] = v
        spec = _replace_axes(spec, axes)
        if "iters" not in sm:
            base["iters"] = min(int(base.get("iters", 1000)), SMOKE_ITERS)
    spec = _replace_axes(spec, dict(grid or {}))
    for k, v in (overrides or {}).items():
        base[_field(k, "option")] = v
    if iters is not None:
        base["iters"] = iters
        spec = {k: v for k, v in spec.items() if k.replace("-", "_") != "iters"}
    keys, combos = expand(spec, f"{source}: sweep")
    varying = [k for k in keys if len({repr(c.get(k, base.get(k))) for c in combos}) > 1]
    out_dir = out_dir or os.path.join("results", f"sweep-{name}" + ("-smoke" if smoke else ""))
    points, used, runs = [], set(), set()
    for combo in combos:
        merged = {**base, **combo}
        method = str(merged.get("method", TrainConfig.method)).lower()
        # a sweep's shared settings reach only the points whose method uses them
        cfg = {k: v for k, v in merged.items() if relevant(k, method)}
        values = {k: cfg[k] for k in varying if k in cfg}
        i = len(points)
        try:
            resolved = make_config(dict(cfg), source).to_dict()
        except PsmpiError as e:
            where = ", ".join(f"{k}={v}" for k, v in values.items())
            raise ConfigError(f"sweep point {i} ({where}): {e}" if where else str(e)) from None
        run = repr(sorted((k, repr(v)) for k, v in resolved.items() if k != "out"))
        if run in runs:  # the same run as an earlier point (an axis this method does not use)
            continue
        runs.add(run)
        stem = slug(values) or name
        if stem in used:
            stem = f"{stem}_{i}"
        used.add(stem)
        cfg["out"] = resolved["out"] = os.path.join(out_dir, f"{stem}.h5")
        points.append(Point(i, values, cfg, cfg["out"], resolved))
    for k in set(base) | set(keys):
        param = str(k).replace("-", "_")
        if param in all_params() and not any(param in p.config for p in points):
            raise ConfigError(f"{source}: '{k}' is used by {', '.join(users_of(param))}; no point's method uses it")
    by = best_by if best_by is not None else spec.get("best_by") or []
    if isinstance(by, str):
        by = [by]
    by = [_field(k, f"{source}: best_by") for k in by]
    return Sweep(name, base, varying, points, out_dir, [k for k in by if k in varying])


def _short(v) -> str:
    """A config value as a file-name fragment (the plot label, sanitised)."""
    from .plotting import value_label

    s = value_label(v)
    return re.sub(r"[^A-Za-z0-9.+-]+", "", s.replace(":", "").replace("%", "pct")) or "x"


def slug(values: dict) -> str:
    """A file stem naming a point by its varying settings, e.g. method-ef21_gamma_factor-2."""
    return "_".join(f"{k}-{_short(v)}" for k, v in values.items())


def describe(values: dict) -> str:
    return " ".join(f"{k}={_short(v) if os.sep in str(v) else v}" for k, v in values.items()) or "(single run)"


# ------------------------------------------------------------- running ---
def row_from_result(point: Point, res, seconds=math.nan) -> Row:
    m = res.metrics
    g = m["grad_norm_sq"]
    status = "diverged" if res.diverged else ("tol" if res.stop_reason == "tol" else "ok")
    finite = g[[math.isfinite(v) for v in g]] if len(g) else g
    return Row(point, status, float(res.gamma), int(m["iteration"][-1]) if len(g) else 0,
               float(g[-1]) if len(g) else math.nan, float(finite.min()) if len(finite) else math.nan,
               float(m["bits_up_per_worker"][-1]) if len(g) else math.nan,
               float(m["wall_time"][-1]) if len(g) else math.nan, seconds)


def run_point(point: Point, quiet: bool = False) -> Row | None:
    """Run one point and write its output; None on an MPI worker rank."""
    from .api import train

    t0 = time.perf_counter()
    try:  # a point the sweep runs replaces what its file held (see read_row for what --resume keeps)
        res = train({**point.config, "quiet": quiet or point.config.get("quiet", False), "overwrite": True},
                    write=True)
    except PsmpiError as e:
        return Row(point, f"error: {e}")
    if res is None:
        return None
    return row_from_result(point, res, time.perf_counter() - t0)


def config_differences(point: Point, stored: dict) -> list:
    """The options in which a stored output's ``config`` differs from the point's
    configuration, as 'key: stored -> now' (REUSE_IGNORES left out).  An option
    the point leaves unset (None: derived at run time from the others, e.g. the
    problem or MARINA's p) is not compared."""
    return [f"{k}: {old!r} -> {now!r}" for k, old, now in config_diff(stored, point.resolved, skip_unset=True)]


def read_row(point: Point) -> Row:
    """The row of a point whose output already exists (or 'missing'); an output
    of another configuration, or of a run that did not finish, is 'stale: ...'."""
    from .results import read_result

    if not os.path.exists(point.out):
        return Row(point, "missing")
    try:
        res = read_result(point.out)
    except (OSError, KeyError, ValueError) as e:
        return Row(point, f"error: unreadable output ({e})")
    if res.stop_reason not in FINISHED and not res.diverged:
        return Row(point, f"stale: unfinished ({res.stop_reason})")
    diffs = config_differences(point, res.config)
    if diffs:
        return Row(point, "stale: " + ", ".join(diffs))
    return row_from_result(point, res)


def run(sweep: Sweep, only: int | None = None, resume: bool = False, quiet: bool = False, log=None) -> list:
    """Run the points in sequence (or only point ``only``); returns the rows.

    With ``resume`` a point whose finished output exists with the same
    configuration (:func:`config_differences`) is read instead of run; any
    other output of that point is run again.  On an MPI worker rank the rows
    of points run here are absent (rank 0 reports).
    """
    log = log or (lambda s: None)
    points = sweep.points if only is None else [sweep.points[only]]
    rows = []
    for p in points:
        where = f"[{p.index + 1}/{len(sweep.points)}] {describe(p.values)}"
        if resume and os.path.exists(p.out):
            row = read_row(p)
            if row.status in ("ok", "tol", "diverged"):
                log(f"{where}: exists, skipped ({p.out})")
                rows.append(row)
                continue
            log(f"{where}: {p.out} is not this point ({row.status.removeprefix('stale: ')}); running it again")
        row = run_point(p, quiet)
        if row is None:
            continue
        rows.append(row)
        if row.status.startswith("error"):
            log(f"{where}: {row.status}")
        else:
            log(f"{where}: {row.rounds} rounds, "
                f"||grad f||^2 {row.final:.3e} ({row.status}), gamma {row.gamma:.4g}, {row.seconds:.1f} s")
    return rows


# ------------------------------------------------------------- summary ---
def best_rows(rows: list, by: list) -> list:
    """The best row (smallest final ||grad f||^2) within each group of ``by`` values."""
    groups: dict = {}
    for r in rows:
        key = tuple(repr(r.point.values.get(k)) for k in by)
        groups.setdefault(key, []).append(r)
    out = []
    for members in groups.values():
        cand = min(members, key=lambda r: (r.score, r.point.index))
        if math.isfinite(cand.score):
            out.append(cand)
    return out


COLUMNS = ("gamma", "status", "rounds", "final_grad_norm_sq", "min_grad_norm_sq", "bits_per_worker", "wall_time_s",
           "file")


def table(sweep: Sweep, rows: list, precise: bool = False) -> tuple[list, list]:
    """Header and rows of text; ``precise`` writes every float in full (CSV)."""
    header = ["#"] + list(sweep.keys) + list(COLUMNS)
    body = []
    for r in rows:
        ran = r.status in ("ok", "tol", "diverged")
        vals = [str(r.point.index)] + [_cell(r.point.values.get(k)) for k in sweep.keys]
        vals += [_num(r.gamma, ".4g", precise), r.status, str(r.rounds) if ran else "",
                 _num(r.final, ".3e", precise), _num(r.best, ".3e", precise), _num(r.bits, ".0f", precise),
                 _num(r.wall, ".2f", precise), r.point.out]
        body.append(vals)
    return header, body


def _cell(v) -> str:
    if v is None:
        return ""
    return _short(v) if os.sep in str(v) else str(v)


def _num(v, fmt, precise=False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return repr(float(v)) if precise else format(v, fmt)


def best_lines(sweep: Sweep, rows: list) -> list:
    lines = []
    for r in best_rows(rows, sweep.best_by):
        group = " ".join(f"{k}={_cell(r.point.values[k])}" for k in sweep.best_by if k in r.point.values)
        rest = " ".join(f"{k}={_cell(v)}" for k, v in r.point.values.items() if k not in sweep.best_by)
        head = f"best for {group}: " if group else "best: "
        what = f"{rest} " if rest else ("" if group else f"{describe(r.point.values)} ")
        lines.append(f"{head}{what}(final ||grad f||^2 = {r.final:.3e}, gamma = {r.gamma:.4g}) -> {r.point.out}")
    if not lines:
        lines.append("best: none (every point diverged, failed or is missing)")
    return lines


def format_table(header, body) -> str:
    width = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]
    shown = range(len(header) - 1)  # the file column goes to the CSV/markdown only
    lines = ["  ".join(header[i].ljust(width[i]) for i in shown)]
    lines += ["  ".join(row[i].ljust(width[i]) for i in shown) for row in body]
    return "\n".join(line.rstrip() for line in lines)


def write_summary(sweep: Sweep, rows: list) -> tuple[str, str]:
    """summary.csv and summary.md in the output folder; returns their paths."""
    os.makedirs(sweep.out_dir, exist_ok=True)
    header, body = table(sweep, rows, precise=True)
    csv_path = os.path.join(sweep.out_dir, "summary.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(body)
    header, body = table(sweep, rows)
    md_path = os.path.join(sweep.out_dir, "summary.md")
    with open(md_path, "w") as f:
        f.write(f"# Sweep {sweep.name}: {len(sweep.points)} points\n\n")
        f.write("| " + " | ".join(header) + " |\n")
        f.write("|" + "|".join("---" for _ in header) + "|\n")
        for row in body:
            f.write("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |\n")
        f.write("\nSelected by the final ||grad f(x^T)||^2 (diverged runs excluded):\n\n")
        for line in best_lines(sweep, rows):
            f.write(f"- {line}\n")
    return csv_path, md_path


# ------------------------------------------------------------- batch jobs ---
def command_line(config_path: str, grid: dict, smoke: bool, iters, out_dir: str, best_by, overrides) -> list:
    """The ``psmpi sweep`` arguments that rebuild the same sweep (for batch scripts)."""
    args = ["psmpi", "sweep", "--config", os.path.abspath(config_path), "--out-dir", os.path.abspath(out_dir)]
    for k, v in (grid or {}).items():
        args += ["--grid", f"{k}=" + ",".join(str(x) for x in v)]
    for k, v in (overrides or {}).items():
        args += ["--set", f"{k}={v}"]
    if smoke:
        args.append("--smoke")
    if iters is not None:
        args += ["--iters", str(iters)]
    if best_by:
        args += ["--best-by", ",".join(best_by)]
    return args


# The generated batch scripts: an array script (one task per point) and a separate
# summary script with no array directive, so that the summary runs once (a summary
# submitted from the array script would inherit its --array / -J and run N times).
SLURM_HEAD = """#!/bin/bash
# {what}
# Written by: {written_by}
#   submit:    JOB=$(sbatch --parsable {array_path})
#   when done: sbatch --dependency=afterany:$JOB {summary_path}
#SBATCH --job-name=psmpi-{name}{job_suffix}
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output={out_dir}/slurm-{log}.out
##SBATCH --partition=compute
##SBATCH --account=myproject
"""

PBS_HEAD = """#!/bin/bash
# {what}
# Written by: {written_by}
#   submit:    JOB=$(qsub {array_path})
#   when done: qsub -W depend=afterany:$JOB {summary_path}
#PBS -N psmpi-{name}{job_suffix}
#PBS -l select=1:ncpus=1:mem=4gb
#PBS -l walltime=01:00:00
#PBS -j oe
#PBS -o {out_dir}/
##PBS -q workq
##PBS -A myproject
"""

SITE = """set -euo pipefail

# --- site set-up: edit -----------------------------------------------------
# module load python/3.11 openmpi/4.1       # the site's modules, if any
VENV="${{PSMPI_VENV:-{venv}}}"   # a venv with psmpi installed
export PSMPI_DATA="${{PSMPI_DATA:-$HOME/.cache/psmpi/data}}"
export OMP_NUM_THREADS=1                     # one core per point: no BLAS oversubscription
# ---------------------------------------------------------------------------
source "$VENV/bin/activate"
cd {cwd}
"""

SLURM_ARRAY_BODY = """# Each point uses the serial backend (simulated workers) on one core.  To run
# every point under MPI instead, set --ntasks to WORKERS+1 and prefix the
# command with: srun --mpi=pmix
{command} --point "$SLURM_ARRAY_TASK_ID"
"""

PBS_ARRAY_BODY = """# (Torque uses '#PBS -t 0-{last}' and $PBS_ARRAYID instead of -J and $PBS_ARRAY_INDEX.)
{command} --point "${{PBS_ARRAY_INDEX:-${{PBS_ARRAYID:-0}}}}"
"""

SUMMARY_BODY = """{command} --summary-only
psmpi plot {out_dir} -o {out_dir}/sweep.png
"""

ARRAY_DIRECTIVE = {"slurm": "#SBATCH --array=0-{last}%{parallel}\n", "pbs": "#PBS -J 0-{last}\n"}


def array_script(sweep: Sweep, kind: str, args: list, parallel: int = 16) -> list:
    """[(path, text), (path, text)]: a job-array batch script running one point
    per array task, and the summary script (not an array) to submit after it."""
    if kind not in ("slurm", "pbs"):
        raise ConfigError(f"--array-script must be slurm or pbs (got {kind!r})")
    ext = {"slurm": "sbatch", "pbs": "pbs"}[kind]
    folder = os.path.abspath(sweep.out_dir)
    array_path = os.path.join(folder, f"{sweep.name}.{ext}")
    summary_path = os.path.join(folder, f"{sweep.name}-summary.{ext}")
    command = " ".join(shlex.quote(a) for a in args)
    venv = os.environ.get("VIRTUAL_ENV") or os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
    fields = dict(name=sweep.name, last=len(sweep.points) - 1, parallel=parallel, out_dir=folder, venv=venv,
                  cwd=shlex.quote(os.getcwd()), command=command, written_by=command, array_path=array_path,
                  summary_path=summary_path)
    head = SLURM_HEAD if kind == "slurm" else PBS_HEAD
    body = SLURM_ARRAY_BODY if kind == "slurm" else PBS_ARRAY_BODY
    array = head.format(what=f"psmpi sweep '{sweep.name}' as a job array: one array task per grid point.",
                        job_suffix="", log="%A_%a", **fields)
    array += ARRAY_DIRECTIVE[kind].format(**fields) + SITE.format(**fields) + body.format(**fields)
    summary = head.format(what=f"psmpi sweep '{sweep.name}': the summary, once every array task has finished "
                               "(one job, not an array).", job_suffix="-summary", log="%j", **fields)
    summary += SITE.format(**fields) + SUMMARY_BODY.format(**fields)
    return [(array_path, array), (summary_path, summary)]
