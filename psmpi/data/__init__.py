"""Datasets: open by spec, split across workers, read one worker's rows.

``open_dataset(spec)`` accepts an embedded name (see ``EMBEDDED``), a ``.h5``
file written by ``psmpi data convert``, a LIBSVM/svmlight text file, or
``synthetic:...``.  A :class:`Dataset` knows its shape and labels without
holding the matrix; ``read_rows`` returns only the requested rows (CSR).
"""
from .core import DataError, Dataset, Shard, class_labels, load_shard, open_dataset
from .splits import SPLITS, check_split, split_rows

__all__ = ["DataError", "Dataset", "Shard", "open_dataset", "load_shard", "split_rows", "SPLITS", "check_split", "class_labels"]
