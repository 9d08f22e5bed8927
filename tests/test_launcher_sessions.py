"""The suite's Open MPI launchers keep their session directories apart, and the directories that
killed launchers leave behind are removed (a stale one makes the launcher given the same pid
fail before any rank starts: "The PMIx server's listener thread failed to start", exit 213)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import conftest
from conftest import mpirun


@pytest.mark.mpi
def test_a_launcher_keeps_its_session_directory_in_the_suites_folder():
    proc = subprocess.Popen(mpirun() + ["-n", "1", sys.executable, "-c",
                                        "import os; print(os.environ['PMIX_SERVER_TMPDIR'])"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == os.path.join(conftest.OMPI_SESSION_BASE, f"ompi.{proc.pid}")
    assert not os.path.exists(out.strip())  # a launcher that exits removes it itself


def test_the_sessions_of_dead_launchers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getpid()
    for name in (f"ompi.{dead.pid}", f"ompi.{live}", "ompi.notapid", "other.1"):
        os.makedirs(tmp_path / name / "1")
        (tmp_path / name / f"pmix.vm.tool.{dead.pid}").write_text("stale\n")
    assert conftest.remove_dead_launchers_sessions(str(tmp_path)) == [f"ompi.{dead.pid}"]
    assert sorted(os.listdir(tmp_path)) == sorted([f"ompi.{live}", "ompi.notapid", "other.1"])
