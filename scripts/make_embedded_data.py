"""Write psmpi/data/embedded/NAME.npz: the embedded datasets exactly as scikit-learn loads them.

psmpi ships the four small datasets that scikit-learn bundles (breast-cancer,
digits, iris, wine) so that no rank imports scikit-learn at run time.  Each
file holds ``X`` (float64) and ``y`` (int64) as ``sklearn.datasets.load_*``
returns them, bit for bit; psmpi scales the features when it loads them.
Run once, from the repository root, where scikit-learn is installed::

    python scripts/make_embedded_data.py          # writes the files
    python scripts/make_embedded_data.py --check  # compares them, writes nothing

Origin and licence of each dataset: psmpi/data/embedded/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from psmpi.data.core import EMBEDDED, embedded_path  # noqa: E402


def from_sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets as skd

    X, y = getattr(skd, EMBEDDED[name][0])(return_X_y=True)
    return np.ascontiguousarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare the stored files with scikit-learn, write nothing")
    args = ap.parse_args()
    import sklearn

    bad = 0
    for name in EMBEDDED:
        X, y = from_sklearn(name)
        path = embedded_path(name)
        if args.check:
            with np.load(path) as f:
                same = all(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
                           for a, b in ((f["X"], X), (f["y"], y)))
            bad += not same
            print(f"{name}: {'identical' if same else 'DIFFERENT'} to scikit-learn {sklearn.__version__}")
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez_compressed(path, X=X, y=y)
        print(f"wrote {os.path.relpath(path, ROOT)}: X {X.shape}, y {y.shape}, {os.path.getsize(path)} bytes "
              f"(scikit-learn {sklearn.__version__})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
