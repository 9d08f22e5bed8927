"""Paper-style figures from run outputs: ||grad f(x^t)||^2 on a log scale
(or any other metric) against #bits/n (payload bits sent per worker), rounds
and wall time; one curve per run, labelled from its config.  Each method keeps
one colour and marker in every panel; the settings of a method (step, batch,
...) differ by line style.  With a single method each setting has its own
colour.  Uses matplotlib's Agg backend (no display).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import numpy as np

from .errors import PsmpiError, did_you_mean
from .methods import all_params, relevant

X_AXES = {
    "bits": ("bits_up_per_worker", "#bits/n"),
    "bits-down": ("bits_down_per_worker", "#bits/n down"),
    "bits-total": ("bits_total_per_worker", "#bits/n up + down"),
    "rounds": ("iteration", "rounds t"),
    "time": ("wall_time", "wall time (s)"),
}


Y_AXES = {  # short names of --y; any other metric in /metrics is drawn under its own name
    "grad": ("grad_norm_sq", r"$\|\nabla f(x^t)\|^2$", True),
    "loss": ("loss", r"$f(x^t)$", False),
}
# line styles of one method's settings: 12 distinct patterns before they repeat
LINE_STYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2, 2, 2)),
               (0, (10, 3)), (0, (3, 5, 1, 5)), (0, (6, 2, 1, 2, 1, 2)), (0, (2, 1))]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]
FORMATS = (".png", ".pdf", ".svg")

# Config keys that tell runs apart, in the order they appear in a label: the run's
# fields, with every method's declared hyper-parameters after the workers.
# iters tells a smoke run from the full run of the same point.
RUN_KEYS = ("method", "compressor", "dataset", "workers", "lam", "gamma", "gamma_factor", "split", "seed",
            "value_dtype", "x0", "backend", "device", "iters")
GAMMA_KEYS = ("gamma", "gamma_factor")


def label_keys() -> tuple:
    after = RUN_KEYS.index("workers") + 1  # the methods' parameters follow the workers
    return RUN_KEYS[:after] + tuple(all_params()) + RUN_KEYS[after:]


def x_values(m: dict, xkey: str, n_workers) -> np.ndarray:
    """The x metric of a run; the downlink bits per worker of files written before
    that metric existed follow from bytes_down and the number of workers."""
    if xkey not in ("bits_down_per_worker", "bits_total_per_worker"):
        return np.asarray(m[xkey], dtype=float)
    down = m.get("bits_down_per_worker")
    if down is None:
        down = 8.0 * np.asarray(m["bytes_down"], dtype=float) / float(n_workers or 1)
    down = np.asarray(down, dtype=float)
    return down if xkey == "bits_down_per_worker" else np.asarray(m["bits_up_per_worker"], dtype=float) + down


class PlotError(PsmpiError, ValueError):
    """A run file or option the plot cannot use; the message is one line."""


@dataclass
class Run:
    path: str
    result: object  # psmpi.results.Result

    @property
    def config(self) -> dict:
        return self.result.config


# ------------------------------------------------------------- inputs ---
def expand_paths(paths) -> list:
    """Files as given; a directory contributes its ``*.h5`` files (sorted)."""
    out = []
    for p in paths:
        p = str(p)
        if os.path.isdir(p):
            found = sorted((os.path.join(p, f) for f in os.listdir(p) if f.endswith((".h5", ".hdf5"))),
                           key=natural_key)
            if not found:
                raise PlotError(f"{p}: no .h5 run outputs in this directory")
            out.extend(found)
        elif not os.path.exists(p):
            raise PlotError(f"{p}: no such file or directory")
        else:
            out.append(p)
    if not out:
        raise PlotError("no run outputs given")
    return out


def natural_key(path: str) -> list:
    """Sort key with numbers compared as numbers: gamma_factor-2 before gamma_factor-16."""
    parts = re.split(r"(\d+(?:\.\d+)?)", os.path.basename(path))
    return [(0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts)]


def load_run(path: str) -> Run:
    import h5py

    from .results import read_result

    try:
        with h5py.File(path, "r") as f:
            if "metrics" not in f or "config" not in f.attrs:
                raise PlotError(f"{path}: not a psmpi run output (no /metrics or config attribute)")
        res = read_result(path)
    except PlotError:
        raise
    except OSError:
        raise PlotError(f"{path}: not an HDF5 file (or unreadable)") from None
    except (KeyError, ValueError, TypeError) as e:
        raise PlotError(f"{path}: not a valid psmpi run output ({e})") from None
    m = res.metrics
    missing = [k for k in ("iteration", "grad_norm_sq", "bits_up_per_worker", "wall_time") if k not in m]
    if missing:
        raise PlotError(f"{path}: not a valid psmpi run output (missing metrics: {', '.join(missing)})")
    return Run(path, res)


def load_runs(paths) -> list:
    return [load_run(p) for p in expand_paths(paths)]


def parse_select(items) -> dict:
    """``["method=ef21,ef14", ...]`` -> {"method": ["ef21", "ef14"]}."""
    sel = {}
    for item in items or ():
        key, eq, values = str(item).partition("=")
        if not eq or not key.strip():
            raise PlotError(f"--select expects KEY=V1,V2 (got {item!r})")
        sel[key.strip().replace("-", "_")] = [v.strip() for v in values.split(",")]
    return sel


def check_key(key: str, runs: list, option: str) -> str:
    """``key`` as a config key of the runs ('-' read as '_'), or a PlotError with a
    'did you mean' hint (a misspelt --panels would otherwise group by None)."""
    name = str(key).strip().replace("-", "_")
    from .config import FIELDS

    known = set(FIELDS).union(*(r.config for r in runs))
    if name not in known:
        raise PlotError(f"{option}: unknown config key '{key}'{did_you_mean(name, known)}")
    return name


def _matches(value, wanted: list) -> bool:
    for w in wanted:
        if value_label(value) == w or str(value) == w:
            return True
        try:
            if float(value) == float(w):
                return True
        except (TypeError, ValueError):
            pass
    return False


def select(runs: list, sel: dict) -> list:
    sel = {check_key(k, runs, "--select"): v for k, v in sel.items()}
    out = [r for r in runs if all(_matches(r.config.get(k), v) for k, v in sel.items())]
    if not out:
        raise PlotError("no run matches " + " ".join(f"{k}={','.join(v)}" for k, v in sel.items()))
    return out


def final_grad(run: Run) -> float:
    g = run.result.metrics["grad_norm_sq"]
    if run.result.diverged or not len(g) or not math.isfinite(float(g[-1])):
        return math.inf
    return float(g[-1])


def best_gamma(runs: list) -> list:
    """Of runs that differ only in the step size, keep the one with the smallest
    final ||grad f||^2 (the papers' tuned step sizes)."""
    groups: dict = {}
    for r in runs:
        key = tuple(value_label(r.config.get(k)) for k in label_keys() if k not in GAMMA_KEYS)
        groups.setdefault(key, []).append(r)
    return [min(g, key=final_grad) for g in groups.values()]


# ------------------------------------------------------------- labels ---
def value_label(v) -> str:
    """A config value as a short label: whole floats as ints, file paths as their stem."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    s = str(v)
    if os.sep in s or s.endswith((".txt", ".h5", ".libsvm", ".svm")):
        s = os.path.splitext(os.path.basename(s))[0]
    return s


def _fmt(key: str, v) -> str:
    t = value_label(v)
    return {
        "method": t.upper(),
        "compressor": t.replace("topk:", "Top-").replace("randk:", "Rand-"),
        "gamma_factor": f"{t}x",
        "gamma": f"γ={t}",
        "workers": f"n={t}",
        "lam": f"λ={t}",
        "seed": f"seed {t}",
        "iters": f"T={t}",
    }.get(key) or (all_params()[key].label(t) if key in all_params() else t)


def _shown(key: str, run: Run) -> bool:
    if key == "init_batch_size" and value_label(run.config.get(key)) == value_label(run.config.get("batch_size")):
        return False
    return relevant(key, value_label(run.config.get("method")))


def _varying(runs: list, skip=()) -> list:
    return [k for k in label_keys() if k not in skip and len({value_label(r.config.get(k)) for r in runs}) > 1]


def _settings(runs: list, skip=()) -> list:
    """Per run, its settings apart from the method: [(key, value), ...] of the
    label keys that differ between the runs (a lone run: compressor and step)."""
    vary = _varying(runs, skip)
    if len(runs) == 1:
        vary = ["compressor", "gamma_factor"]
    return [[(k, r.config.get(k)) for k in vary if k != "method" and _shown(k, r)] for r in runs]


def labels(runs: list, skip=()) -> list:
    """One legend label per run: its ``label`` if set, else the method and the
    settings that differ between the runs (a lone run: method, compressor, step)."""
    settings = [", ".join(_fmt(k, v) for k, v in kv) for kv in _settings(runs, skip)]
    given = [r.config.get("label") for r in runs]
    out = []
    for r, lab, extra in zip(runs, given, settings):
        if lab:
            dup = sum(1 for g in given if g == lab) > 1
            out.append(f"{lab} ({extra})" if dup and extra else str(lab))
        else:
            out.append(", ".join([_fmt("method", r.config.get("method"))] + ([extra] if extra else [])))
    return out


def styles(runs: list, skip=()) -> list:
    """Per run, (colour, marker, line style): colour and marker by method, line style
    by the other settings, the same in every panel; with a single method the
    colour goes by setting.  No two legend entries get the same three."""
    import matplotlib.pyplot as plt

    methods = [value_label(r.config.get("method")) for r in runs]
    settings = [repr(kv) for kv in _settings(runs, skip)]
    one_method = len(set(methods)) == 1
    colour_keys = list(dict.fromkeys(settings if one_method else methods))
    n = len(colour_keys)
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    colours = [cmap(i) for i in range(n)] if n <= 20 else [plt.get_cmap("hsv")(i / n) for i in range(n)]
    colour = dict(zip(colour_keys, colours))
    marker = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(dict.fromkeys(methods))}
    dashes: dict = {}
    out = []
    for m, st in zip(methods, settings):
        ck = st if one_method else m
        per = dashes.setdefault(ck, {})
        ls = per.setdefault(st, LINE_STYLES[len(per) % len(LINE_STYLES)])
        out.append((colour[ck], marker[m], ls))
    return out


# ------------------------------------------------------------- figure ---
def parse_x(x: str) -> list:
    names = ["bits", "rounds", "time"] if x == "all" else [v.strip() for v in str(x).split(",") if v.strip()]
    bad = [v for v in names if v not in X_AXES]
    if bad or not names:
        raise PlotError(f"--x must be bits, bits-down, bits-total, rounds, time, all or a comma list of them "
                        f"(got {x!r})")
    return names


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Running mean over the last ``window`` rows (the first rows average what there is)."""
    if window <= 1 or len(values) == 0:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def y_axis(y: str, runs: list, yscale: str = "auto") -> tuple[str, str, bool]:
    """(metric, axis label, log scale) for --y: grad, loss or any metric all runs store."""
    if yscale not in ("auto", "log", "linear"):
        raise PlotError(f"--yscale must be auto, log or linear (got {yscale!r})")
    if y in Y_AXES:
        key, label, log = Y_AXES[y]
    else:
        key, label, log = y, y.replace("_", " "), y.endswith("_sq")
    # one column per worker of a rows x n metric: samples[0], samples[1], ...
    stored = set.intersection(*(set(r.result.columns()) for r in runs)) if runs else set()
    if key not in stored:
        hint = did_you_mean(y, stored | set(Y_AXES))
        raise PlotError(f"--y: no metric '{y}' in every run{hint}; stored: {', '.join(sorted(stored))}")
    return key, label, log if yscale == "auto" else yscale == "log"


def parse_figsize(text) -> tuple[float, float] | None:
    """'W,H' in inches -> (W, H)."""
    if text is None:
        return None
    try:
        w, h = (float(v) for v in str(text).replace("x", ",").split(","))
        if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
            raise ValueError
    except ValueError:
        raise PlotError(f"--figsize expects WIDTH,HEIGHT in inches, e.g. 8,3 (got {text!r})") from None
    return w, h


def figure(runs: list, out: str, x="all", y="grad", panels: str | None = None, title: str | None = None,
           dpi: int = 110, smooth_window: int = 1, sharey: bool = False, figsize=None, font_size=None,
           yscale: str = "auto") -> str:
    """Draw the runs and save to ``out`` (.png, .pdf or .svg); returns ``out``.

    ``y`` is grad, loss or the name of any metric the runs store; ``smooth_window``
    > 1 draws the running mean of that many logged rows (for noisy stochastic runs);
    ``sharey`` gives the panels one y scale; ``figsize`` (W, H) in inches is the
    whole figure; ``font_size`` the base font size in points."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ext = os.path.splitext(out)[1].lower()
    if ext not in FORMATS:
        raise PlotError(f"-o {out}: the figure must be .png, .pdf or .svg")
    xs = parse_x(x)
    ykey, ylabel, log = y_axis(y, runs, yscale)
    if panels:
        panels = check_key(panels, runs, "--panels")
    rc = {"font.size": font_size, "legend.fontsize": font_size} if font_size else {"legend.fontsize": 8}
    with plt.rc_context(rc):
        fig = _draw(plt, runs, xs, ykey, ylabel, log, panels, sharey, smooth_window, figsize, title)
        fig.tight_layout()
        folder = os.path.dirname(os.path.abspath(out))
        os.makedirs(folder, exist_ok=True)
        fig.savefig(out, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
    return out


def _draw(plt, runs, xs, ykey, ylabel, log, panels, sharey, smooth_window, figsize, title):
    from matplotlib.ticker import MaxNLocator

    groups: dict = {}
    for r in runs:
        groups.setdefault(value_label(r.config.get(panels)) if panels else None, []).append(r)
    skip = (panels,) if panels else ()
    # one label, colour, marker and line style per run, shared by every panel
    label_of = {id(r): lab for r, lab in zip(runs, labels(runs, skip))}
    style_of = {id(r): st for r, st in zip(runs, styles(runs, skip))}

    # rows: x axes, columns: panels; a single panel puts its x axes side by side,
    # and one x axis with more than three panels wraps them two per row
    single = len(groups) == 1
    wrap = not single and len(xs) == 1 and len(groups) > 3
    if single:
        nrow, ncol = 1, len(xs)
    elif wrap:
        nrow, ncol = (len(groups) + 1) // 2, 2
    else:
        nrow, ncol = len(xs), len(groups)
    fig, axes = plt.subplots(nrow, ncol, figsize=figsize or (4.4 * ncol, 3.3 * nrow), squeeze=False,
                             sharey=("all" if wrap else "row") if sharey and not single else False)
    for ax in axes.ravel()[len(groups):] if wrap else ():
        ax.set_visible(False)
    for j, (gname, members) in enumerate(groups.items()):
        for i, xname in enumerate(xs):
            ax = axes[0][i] if single else (axes[j // 2][j % 2] if wrap else axes[i][j])
            xkey, xlabel = X_AXES[xname]
            for r in members:
                m = r.result.metrics
                xv = x_values(m, xkey, r.result.attrs.get("n_workers"))
                yv = np.asarray(r.result.columns()[ykey], dtype=float)
                ok = np.isfinite(xv) & np.isfinite(yv) & ((yv > 0) if log else True)
                if smooth_window > 1:
                    xv, yv = xv[ok], smooth(yv[ok], smooth_window)
                    ok = np.ones(len(xv), dtype=bool)
                lab = label_of[id(r)]
                if r.result.diverged:
                    lab += " (diverged)"
                colour, marker, ls = style_of[id(r)]
                line, = ax.plot(xv[ok], yv[ok], linestyle=ls, color=colour, marker=marker, ms=4,
                                markevery=max(1, int(ok.sum()) // 8), lw=1.4, label=lab)
                if r.result.diverged and ok.any():
                    ax.plot(xv[ok][-1:], yv[ok][-1:], "x", color=line.get_color(), ms=7)
                rows = event_rows(r.result, ok)
                if rows:  # a worker's failure: a triangle at the first row after it
                    ax.plot(xv[rows], yv[rows], "v", color=line.get_color(), ms=9, mec="black")
            if log:
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
            ax.set_ylabel(ylabel)
            ax.grid(True, which="major", alpha=0.3)
            if (single or wrap or i == 0) and gname is not None:
                ax.set_title(f"{panels}: {gname}" if panels not in ("dataset",) else gname)
    handles, labs = [], []
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labs:
                handles.append(h)
                labs.append(lab)
    if len(labs) <= 6 and nrow * ncol == 1:
        axes[0][0].legend(handles, labs)
    else:
        fig.legend(handles, labs, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def event_rows(result, ok) -> list:
    """The plotted rows (among ``ok``) where each of the run's events (a worker's
    failure) shows: the first row at or after its round."""
    import json

    its = np.asarray(result.metrics["iteration"])
    rows = []
    for e in json.loads(result.attrs.get("events", "[]") or "[]"):
        after = np.flatnonzero((its >= e["round"]) & ok)
        if len(after) and after[0] not in rows:
            rows.append(int(after[0]))
    return rows


def differing_iters(runs: list) -> list:
    """The distinct --iters of the runs when they differ (e.g. smoke and full runs mixed), else []."""
    found = sorted({r.config.get("iters") for r in runs if r.config.get("iters") is not None})
    return found if len(found) > 1 else []
