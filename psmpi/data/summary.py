"""What ``psmpi data info`` reports about a dataset and a split of it."""
from __future__ import annotations

import os

import numpy as np

from .core import Dataset, open_dataset
from .splits import split_rows


def _label(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def summarize(spec: str, workers: int | None = None, split: str = "contiguous", seed: int = 0) -> dict:
    ds: Dataset = open_dataset(spec)
    classes, counts = np.unique(ds.labels, return_counts=True)
    nnz = ds.nnz
    out = {
        "dataset": ds.name,
        "source": getattr(ds, "path", spec),
        "rows": ds.n_rows,
        "features": ds.n_features,
        "nonzeros": nnz,
        "density": None if nnz is None else nnz / max(1, ds.n_rows * ds.n_features),
        "labels": {_label(c): int(k) for c, k in zip(classes, counts)},
    }
    if nnz is None and hasattr(ds, "expected_nnz"):
        out["nonzeros_expected"] = ds.expected_nnz()
        out["density"] = ds.opts["density"]
    path = getattr(ds, "path", None)
    if path and os.path.exists(path):
        out["file_bytes"] = os.path.getsize(path)
    if workers:
        parts = split_rows(ds.n_rows, workers, split, seed, ds.labels)
        cls_index = np.searchsorted(classes, ds.labels)
        out["split"] = split
        out["workers"] = [
            {"worker": i, "rows": int(len(p)),
             "labels": {_label(c): int(k) for c, k in zip(classes, np.bincount(cls_index[p], minlength=len(classes)))}}
            for i, p in enumerate(parts)]
    return out


def format_summary(s: dict) -> list[str]:
    lines = [f"dataset    {s['dataset']}" + (f"  ({s['source']})" if s["source"] != s["dataset"] else "")]
    lines.append(f"rows       {s['rows']}")
    lines.append(f"features   {s['features']}")
    if s["nonzeros"] is not None:
        lines.append(f"nonzeros   {s['nonzeros']}")
        lines.append(f"density    {s['density']:.6g}")
    elif "nonzeros_expected" in s:
        lines.append(f"nonzeros   ~{s['nonzeros_expected']:.6g} (expected; generated on demand)")
        lines.append(f"density    {s['density']:.6g}")
    total = max(1, s["rows"])
    labs = ", ".join(f"{k}: {v} ({100.0 * v / total:.1f}%)" for k, v in s["labels"].items())
    lines.append(f"labels     {len(s['labels'])} values; {labs}")
    if "file_bytes" in s:
        lines.append(f"file size  {s['file_bytes']} bytes")
    if "workers" in s:
        names = list(s["labels"])
        w = max([6] + [len(n) + 2 for n in names])
        lines.append("")
        lines.append(f"split {s['split']} across {len(s['workers'])} workers:")
        lines.append(f"{'worker':>6} {'rows':>8} " + " ".join(f"{'y=' + n:>{w}}" for n in names))
        for r in s["workers"]:
            lines.append(f"{r['worker']:>6} {r['rows']:>8} " + " ".join(f"{r['labels'][n]:>{w}}" for n in names))
        sizes = [r["rows"] for r in s["workers"]]
        lines.append(f"rows per worker: min {min(sizes)}, max {max(sizes)}")
    return lines
