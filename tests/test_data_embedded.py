"""The embedded datasets ship as package files: bit for bit what scikit-learn
loads (checked where scikit-learn is installed), read without importing it."""
import os
import subprocess
import sys

import numpy as np
import pytest

from psmpi.data import EMBEDDED, open_dataset
from psmpi.data.core import embedded_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_embedded_files_equal_scikit_learn_bit_for_bit(name):
    skd = pytest.importorskip("sklearn.datasets")
    X, y = getattr(skd, EMBEDDED[name][0])(return_X_y=True)
    with np.load(embedded_path(name)) as f:
        for stored, ref in ((f["X"], X), (f["y"], y)):
            assert stored.dtype == ref.dtype and stored.shape == ref.shape
            assert stored.tobytes() == np.ascontiguousarray(ref).tobytes()
    # and the dataset psmpi opens is what the previous scikit-learn loader gave, scaling included
    X = np.asarray(X, dtype=np.float64)
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    ds = open_dataset(name)
    got = ds.read_rows(np.arange(ds.n_rows)).toarray()
    assert got.tobytes() == (X / scale).tobytes()
    assert ds.labels.dtype == np.float64 and ds.labels.tobytes() == y.astype(np.float64).tobytes()


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_embedded_files_are_in_the_package(name):
    assert os.path.isfile(embedded_path(name))
    assert os.path.dirname(embedded_path(name)) == os.path.join(ROOT, "psmpi", "data", "embedded")
    readme = open(os.path.join(os.path.dirname(embedded_path(name)), "README.md")).read()
    assert f"`{name}.npz`" in readme and "CC BY 4.0" in readme


def test_package_data_lists_the_embedded_files():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    patterns = cfg["options.package_data"]["psmpi.data"].split()
    assert "embedded/*.npz" in patterns and "embedded/README.md" in patterns
    assert "scikit-learn" not in cfg["options"]["install_requires"]


def test_loading_an_embedded_dataset_imports_no_scikit_learn():
    code = ("import sys; from psmpi.data import open_dataset; ds = open_dataset('digits'); "
            "assert ds.n_rows == 1797 and ds.n_features == 64; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'matplotlib', 'yaml', 'tqdm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert out.stdout.strip() == "[]"
