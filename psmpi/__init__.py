"""psmpi: an MPI parameter server for communication-compressed distributed optimization."""
__version__ = "0.1.0"

from .api import train  # noqa: E402

__all__ = ["train", "__version__"]
