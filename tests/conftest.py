"""Shared test fixtures: where the real LIBSVM files are, MPI launch settings."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_LIBSVM = ROOT.parent / "shared" / "data" / "libsvm"

# Open MPI as root and with more ranks than cores (CI runs as root on 2 cores).
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
os.environ.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
os.environ.setdefault("PRTE_MCA_rmaps_default_mapping_policy", ":oversubscribe")

# Open MPI's launcher keeps a session directory, TMPDIR/ompi.<launcher pid>, and removes it when it
# exits.  A launcher killed with SIGKILL (the failure and timeout tests do that) leaves it behind,
# and a later launcher that is given the same pid then cannot write its PMIx rendezvous file into
# it: "The PMIx server's listener thread failed to start" (exit 213), before any rank starts.  So
# the suite's launchers keep their session directories in a folder of their own (not the ranks'
# TMPDIR), from which the directories of dead launchers are removed after every test.
OMPI_SESSION_BASE = tempfile.mkdtemp(prefix="psmpi-ompi-")
os.environ["PRTE_MCA_prte_tmpdir_base"] = OMPI_SESSION_BASE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_dead_launchers_sessions(base: str = OMPI_SESSION_BASE) -> list[str]:
    """Remove BASE/ompi.<pid> of every launcher pid no longer running; the names removed."""
    gone = []
    for entry in os.scandir(base):
        prefix, _, pid = entry.name.partition(".")
        if prefix == "ompi" and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)
            gone.append(entry.name)
    return gone


@pytest.fixture(autouse=True)
def _no_stale_open_mpi_sessions():
    yield
    remove_dead_launchers_sessions()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(OMPI_SESSION_BASE, ignore_errors=True)


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


def psmpi_here(args):
    """``psmpi ARGS`` in this process (click's CliRunner: no interpreter start-up): the click
    Result (exit_code, output, stderr, exception)."""
    from click.testing import CliRunner

    from psmpi.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=True)


class SweepPair:
    """Many runs, each once on the serial runtime in this process and once under MPI, with
    ONE launch: the runs are the points of a sweep (``union`` of one mapping per run, on
    top of ``base``) that ``psmpi sweep`` runs here with backend=serial and under a single
    ``mpirun -n RANKS psmpi sweep`` (every point an MPI run).  A launch costs seconds of
    interpreter and import start-up per rank; a point costs only its rounds.

    ``runs`` maps a label to its options; ``pair(label)`` gives that run's two Results
    (``mpi(label)`` the MPI one alone; with ``serial=False`` only the MPI runs are made).
    An MPI run that failed (or never ran because an earlier point aborted the job) makes
    ``pair`` fail naming the label, with the launcher's stderr."""

    def __init__(self, folder: Path, base: dict, runs: dict, ranks: int, env: dict | None = None,
                 timeout: int = 600, serial: bool = True):
        import subprocess

        import yaml
        from click.testing import CliRunner

        from psmpi import sweep as sw
        from psmpi.cli import main

        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "runs.yaml"
        config.write_text(yaml.safe_dump({**base, "sweep": {"union": [dict(o) for o in runs.values()]}},
                                         sort_keys=False))
        serial_dir, mpi_dir = folder / "serial", folder / "mpi"
        self.serial_output = "(not run)"
        with pytest.MonkeyPatch.context() as mp:  # env: for the checks of the points here, the launch's too
            for k, v in (env or {}).items():
                mp.setenv(k, v)
            points = sw.build(str(config), out_dir=str(serial_dir)).points
            # the points come in the order of the union; a run equal to an earlier one would be dropped
            assert len(points) == len(runs), "two runs of a SweepPair are the same run"
            if serial:
                res = CliRunner().invoke(main, ["sweep", "--config", str(config), "--out-dir", str(serial_dir), "-q",
                                                "--set", "backend=serial"], catch_exceptions=False)
                self.serial_output = res.output
        self.files = {label: (p.out, str(mpi_dir / os.path.basename(p.out))) for label, p in zip(runs, points)}
        self.proc = subprocess.run(mpirun() + ["-n", str(ranks), sys.executable, "-m", "psmpi", "sweep", "--config",
                                               str(config), "--out-dir", str(mpi_dir), "-q"],
                                   capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})

    def pair(self, label):
        """(serial Result, MPI Result) of the run ``label``."""
        from psmpi.results import read_result

        serial = self.files[label][0]
        assert os.path.exists(serial), f"{label}: the serial run failed\n{self.serial_output[-3000:]}"
        return read_result(serial), self.mpi(label)

    def mpi(self, label):
        """The MPI Result of the run ``label``."""
        from psmpi.results import read_result

        mpi = self.files[label][1]
        assert os.path.exists(mpi), (f"{label}: the MPI run failed (mpirun exit {self.proc.returncode})\n"
                                     f"{self.proc.stderr[-3000:]}")
        return read_result(mpi)
