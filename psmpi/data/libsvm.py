"""LIBSVM / svmlight text reader."""
from __future__ import annotations

import numpy as np


def read_libsvm(path: str, n_features: int | None = None):
    from sklearn.datasets import load_svmlight_file

    from .core import DataError

    try:
        X, y = load_svmlight_file(path, n_features=n_features, dtype=np.float64)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: {e}") from None
    return X.tocsr(), y
