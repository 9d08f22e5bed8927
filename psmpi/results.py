"""HDF5 run outputs: ``/metrics/<name>``, ``/x`` and root attributes (SPEC.md).

:func:`read_result` (``psmpi.read_result``) reads one back as a :class:`Result`.
h5py is imported when a file is read or written, so ``import psmpi`` stays light.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Result:
    """One run: ``metrics`` {name: array, one row per evaluation}, the final
    iterate ``x``, the step size ``gamma``, the resolved ``config`` (dict), the
    other root attributes ``attrs`` (backend, n_workers, L_i, ...), the file
    ``out`` and ``stop_reason``."""
    metrics: dict
    x: np.ndarray
    gamma: float
    config: dict
    attrs: dict = field(default_factory=dict)
    out: str | None = None
    stop_reason: str = "iters"

    @property
    def diverged(self) -> bool:
        return self.stop_reason.startswith("diverged")

    def columns(self) -> dict:
        """The metrics as 1-D columns of equal length: a per-worker metric
        (rows x n) becomes the columns NAME[0], ..., NAME[n-1]."""
        out = {}
        for name, v in self.metrics.items():
            v = np.asarray(v)
            if v.ndim == 2:
                out.update({f"{name}[{i}]": v[:, i] for i in range(v.shape[1])})
            else:
                out[name] = v
        return out

    def to_pandas(self):
        """The metrics as a pandas DataFrame, one row per evaluation (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Result.to_pandas() needs pandas: pip install pandas") from None
        return pd.DataFrame(self.columns())


def write_result(path: str, res: Result) -> None:
    """Write atomically: a temporary file in the same folder, then rename."""
    import h5py  # here, not at the top: an MPI worker imports this module but writes nothing

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            g = f.create_group("metrics")
            for k, v in res.metrics.items():
                g.create_dataset(k, data=v)
            f.create_dataset("x", data=res.x)
            f.attrs["config"] = json.dumps(res.config, sort_keys=True)
            f.attrs["gamma"] = res.gamma
            f.attrs["stop_reason"] = res.stop_reason
            for k, v in res.attrs.items():
                f.attrs[k] = v
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_result(path: str) -> Result:
    """A run output written by ``psmpi train`` (or psmpi.train(..., out=...)) as a
    :class:`Result`: ``.metrics`` arrays, ``.config``, ``.attrs``, ``.x``,
    ``.gamma``, ``.stop_reason``, ``.to_pandas()``."""
    import h5py

    with h5py.File(path, "r") as f:
        metrics = {k: f["metrics"][k][()] for k in f["metrics"]}
        attrs = {k: (v.item() if getattr(v, "size", 0) == 1 else v) for k, v in f.attrs.items()}
        x = f["x"][()]
    cfg = json.loads(attrs.pop("config"))
    return Result(metrics, x, float(attrs.pop("gamma")), cfg, attrs, path, str(attrs.pop("stop_reason", "iters")))


def _cell(v):
    """A config value for a CSV cell: scalars as they are, anything else as JSON."""
    return v if v is None or isinstance(v, (str, int, float, bool)) else json.dumps(v, sort_keys=True)


def export_csv(runs: list, path: str) -> int:
    """Write the metrics of many runs to one CSV in long format: one row per run and
    evaluation, with the columns run (the file's stem), file, every scalar config
    key (a union over the runs; 'config.' prefixed where a metric has the same
    name) and the metrics.  ``runs`` is a list of (file, Result); returns the rows written."""
    import csv

    metric_names = list(dict.fromkeys(k for _, r in runs for k in r.columns()))
    config_keys = sorted({k for _, r in runs for k in r.config if k != "sweep"})
    config_cols = [f"config.{k}" if k in metric_names or k in ("run", "file") else k for k in config_keys]
    n = 0
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "file", *config_cols, *metric_names])
        for file, r in runs:
            cols = r.columns()
            fixed = [os.path.splitext(os.path.basename(file))[0], file, *(_cell(r.config.get(k)) for k in config_keys)]
            length = len(next(iter(cols.values()))) if cols else 0
            for i in range(length):
                w.writerow(fixed + [repr(float(cols[m][i])) if m in cols else "" for m in metric_names])
            n += length
    return n
