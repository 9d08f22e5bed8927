"""Seeded synthetic classification data: ``synthetic:rows=1000,features=50,classes=2,density=1.0,seed=0``."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .core import DataError, InMemory


def synthetic(spec: str):
    opts = {"rows": 1000, "features": 50, "classes": 2, "density": 1.0, "seed": 0}
    body = spec.split(":", 1)[1]
    for item in filter(None, body.split(",")):
        k, _, v = item.partition("=")
        if k not in opts:
            raise DataError(f"unknown synthetic option '{k}'; valid: {', '.join(opts)}")
        try:
            opts[k] = type(opts[k])(float(v)) if isinstance(opts[k], int) else float(v)
        except ValueError:
            raise DataError(f"bad value for synthetic option '{k}': {v!r}") from None
    rng = np.random.default_rng(opts["seed"])
    n, d, c = opts["rows"], opts["features"], opts["classes"]
    if opts["density"] >= 1.0:
        X = rng.standard_normal((n, d)) / np.sqrt(d)
    else:
        X = sp.random(n, d, density=opts["density"], random_state=rng, format="csr") / np.sqrt(max(1.0, d * opts["density"]))
    W = rng.standard_normal((d, c))
    y = np.asarray(X @ W).argmax(axis=1) if c > 2 else (np.asarray(X @ W[:, 0]) > 0).astype(float)
    return InMemory(spec, X, y)
