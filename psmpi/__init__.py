"""psmpi: an MPI parameter server for communication-compressed distributed optimization."""
__version__ = "0.1.0"

from .api import train  # noqa: E402
from .results import read_result  # noqa: E402

__all__ = ["train", "read_result", "__version__"]
