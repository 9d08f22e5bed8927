"""Datasets: open by spec, split across workers, read one worker's rows.

``open_dataset(spec)`` accepts an embedded name (see ``EMBEDDED``), a ``.h5``
file written by ``psmpi data convert``, a LIBSVM/svmlight text file (plain or
.gz/.bz2/.xz), a well-known name found in the data directory (``$PSMPI_DATA``,
default ``~/.cache/psmpi/data``: NAME.h5, NAME or NAME.txt), or
``synthetic:...``.  A :class:`Dataset` knows its shape and labels without
holding the matrix; ``read_rows`` returns only the requested rows (CSR).
"""
from .core import (DATA_ENV, EMBEDDED, DataError, Dataset, RowSubset, Shard, class_labels, data_dir, hold_out,
                   load_shard, open_dataset)
from .splits import SPLITS, check_split, split_rows

__all__ = ["RowSubset", "hold_out", "DataError", "Dataset", "Shard", "open_dataset", "load_shard", "split_rows", "SPLITS", "check_split",
           "class_labels", "data_dir", "DATA_ENV", "EMBEDDED"]
