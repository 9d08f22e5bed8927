"""``psmpi info``: what this installation has."""
from __future__ import annotations

import platform

import click


def collect() -> dict:
    import numpy
    import scipy

    from .. import __version__
    from ..compressors import REGISTRY as C
    from ..methods import REGISTRY as M

    info = {"psmpi": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__}
    try:
        import h5py

        info["h5py"] = h5py.__version__
    except ImportError:
        info["h5py"] = "missing"
    try:
        import mpi4py

        info["mpi4py"] = mpi4py.__version__
        from mpi4py import MPI

        info["mpi_library"] = MPI.Get_library_version().replace("\x00", "").splitlines()[0].strip()
    except ImportError:
        info["mpi4py"] = "missing (pip install 'psmpi[mpi]')"
    from ..backend import gpu_status

    info["gpu"] = gpu_status()
    info["methods"] = ", ".join(M)
    info["compressors"] = ", ".join(C)
    return info


@click.command()
def info():
    """Versions, the MPI library, the GPU, and the methods and compressors."""
    for k, v in collect().items():
        click.echo(f"{k:12s} {v}")
