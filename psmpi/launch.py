"""What MPI launchers put in each rank's environment, read without initialising MPI.

Open MPI's mpirun, MPICH's Hydra and PMI-2, PMIx and Slurm's srun each set
some of these variables; every reader takes the first one present.  Where a
launcher sets none of the size variables, ``--backend mpi`` says so explicitly.
"""
from __future__ import annotations

import os

_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")
_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")
_LOCAL_RANK_VARS = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMIX_LOCAL_RANK", "SLURM_LOCALID")
_LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")  # Open MPI's mpirun, MPICH's Hydra


def env_int(names, default: int | None = None) -> int | None:
    """The first of the variables ``names`` that holds a non-negative integer, else ``default``."""
    for var in names:
        v = os.environ.get(var, "")
        if v.isdigit():
            return int(v)
    return default


def mpi_world_size() -> int:
    """The launcher's world size (1 when not launched by an MPI launcher)."""
    return env_int(_SIZE_VARS, 1)


def launch_rank() -> int:
    """This process's rank in the launch (0 when not launched by an MPI launcher)."""
    return env_int(_RANK_VARS, 0)


def local_rank() -> int:
    """This process's rank among the launch's processes on this node (0 outside a launcher)."""
    return env_int(_LOCAL_RANK_VARS, 0)


def local_size() -> int | None:
    """How many of the launch's processes share this node, when the launcher says."""
    n = env_int(_LOCAL_SIZE_VARS)
    return n if n else None


def launched() -> bool:
    """True when an MPI launcher started this process (it set a world-size variable)."""
    return env_int(_SIZE_VARS) is not None


LAUNCHERS = ("prterun", "mpirun", "mpiexec", "orterun")


def launcher_stderr_path() -> str | None:
    """The standard error of the ``mpirun`` that started this process, when it runs
    on this node (Linux): on Ctrl-C Open MPI's launcher stops forwarding the ranks'
    output at once, so a last message must be written there directly to be seen."""
    pid = os.getppid()
    for _ in range(8):
        try:
            with open(f"/proc/{pid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
        if name in LAUNCHERS:
            path = f"/proc/{pid}/fd/2"
            return path if os.path.exists(path) else None
        if pid <= 1:
            return None
        pid = ppid
    return None
