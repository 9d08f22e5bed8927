"""Conversions: LIBSVM text (or any dataset) -> HDF5, and back to LIBSVM text."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from .core import DataError, _is_hdf5, open_dataset, stem

ROWS_PER_COPY = 1 << 16  # rows per block when copying from a non-text source


@dataclass
class Converted:
    path: str
    n_rows: int
    n_features: int
    nnz: int
    seconds: float
    in_bytes: int | None
    out_bytes: int


def _bar(total, desc):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False, disable=not sys.stderr.isatty())


def is_h5_name(path: str) -> bool:
    return str(path).lower().endswith((".h5", ".hdf5"))


def convert(src: str, out: str, n_features: int | None = None, name: str | None = None,
            source: str | None = None) -> Converted:
    """``src`` (LIBSVM text, optionally compressed, or any dataset spec) to ``out``:
    HDF5 when ``out`` ends in .h5/.hdf5, LIBSVM text otherwise.  Atomic."""
    src, out = str(src), str(out)
    if os.path.exists(src) and os.path.exists(out) and os.path.samefile(src, out):
        raise DataError(f"{out}: output and input are the same file")
    t0 = time.perf_counter()
    try:
        rows, d, nnz = _convert(src, out, n_features, name, source)
    except OSError as e:  # disk full, permissions, ...: still one line
        raise DataError(f"cannot convert {src} to {out}: {e.strerror or e}") from None
    return Converted(out, rows, d, nnz, time.perf_counter() - t0,
                     os.path.getsize(src) if os.path.isfile(src) else None, os.path.getsize(out))


def _convert(src, out, n_features, name, source):
    text_input = os.path.isfile(src) and not _is_hdf5(src)
    if is_h5_name(out):
        if text_input:
            rows, d, nnz = _text_to_h5(src, out, n_features, name or stem(src), source or os.path.basename(src))
        else:
            rows, d, nnz = _dataset_to_h5(src, out, n_features, name, source)
    else:
        from .libsvm import read_libsvm, write_libsvm

        if text_input:
            X, y = read_libsvm(src, n_features)
        else:
            ds = open_dataset(src)
            X, y = ds.read_rows(np.arange(ds.n_rows)), ds.labels
        write_libsvm(out, X, y)
        rows, d, nnz = X.shape[0], X.shape[1], X.nnz
    return rows, d, nnz


def _text_to_h5(src, out, n_features, name, source):
    from .libsvm import iter_blocks
    from .store import H5Writer

    with H5Writer(out, name=name, source=source) as w, _bar(os.path.getsize(src), os.path.basename(src)) as bar:
        def progress(pos):
            bar.update(pos - bar.n)

        top = -1
        for blk in iter_blocks(src, progress=progress):
            if n_features is not None and len(blk.indices) and blk.indices.max() >= n_features:
                over = np.flatnonzero(blk.indices >= n_features)[0]
                row = np.searchsorted(np.cumsum(blk.row_nnz), over, side="right")
                raise DataError(f"{src}:{blk.row_lines[row]}: feature index {blk.indices[over] + 1} "
                                f"exceeds --n-features {n_features}")
            if len(blk.indices):
                top = max(top, int(blk.indices.max()))
            w.append(blk.labels, blk.row_nnz, blk.indices, blk.data)
        if w.n_rows == 0:
            raise DataError(f"{src}: empty file (no data lines)")
        if n_features is None and top < 0:
            raise DataError(f"{src}: no feature values in the file")
        d = top + 1 if n_features is None else int(n_features)
        rows, nnz = w.n_rows, w.nnz
        w.close(d)
    return rows, d, nnz


def _dataset_to_h5(src, out, n_features, name, source):
    from .store import H5Writer

    ds = open_dataset(src)
    d = ds.n_features if n_features is None else int(n_features)
    if d < ds.n_features:
        raise DataError(f"{src} has {ds.n_features} features, more than --n-features {d}")
    with H5Writer(out, name=name or ds.name, source=source or src) as w:
        for a in range(0, ds.n_rows, ROWS_PER_COPY):
            rows = np.arange(a, min(ds.n_rows, a + ROWS_PER_COPY))
            w.append_csr(ds.read_rows(rows), ds.labels[rows])
        n, nnz = w.n_rows, w.nnz
        w.close(d)
    return n, d, nnz
