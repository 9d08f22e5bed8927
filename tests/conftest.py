"""Shared test fixtures: where the real LIBSVM files are, MPI launch settings."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_LIBSVM = ROOT.parent / "shared" / "data" / "libsvm"

# Open MPI as root and with more ranks than cores (CI runs as root on 2 cores).
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
os.environ.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
os.environ.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")


def libsvm_file(name: str) -> Path | None:
    """../shared/data/libsvm/NAME.txt when present (CI and developer machines), else None."""
    p = SHARED_LIBSVM / f"{name}.txt"
    return p if p.exists() else None


@pytest.fixture
def a9a_path():
    p = libsvm_file("a9a")
    if p is None:
        pytest.skip("../shared/data/libsvm/a9a.txt not present")
    return p


def mpirun() -> list[str]:
    """The mpirun of this environment, oversubscribing (more ranks than cores)."""
    exe = Path(sys.executable).parent / "mpirun"
    exe = str(exe) if exe.exists() else shutil.which("mpirun")
    if exe is None:
        pytest.skip("mpirun not found (pip install 'psmpi[mpi]')")
    return [exe, "--oversubscribe"]


def psmpi_cmd() -> list[str]:
    return [sys.executable, "-m", "psmpi"]
