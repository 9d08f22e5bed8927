"""A round's sparse messages read at once: the master's hot path with many workers.

In a round of Top-K (or Rand-K, or any fixed-K sparsifier) messages whose
support uses the ``absolute`` index encoding, every worker's message has the
same layout: the same header bytes (magic, version, kind, value dtype and index
encoding, d, K; only the method flag may differ) and the same length.
:func:`decode_rows` reads such a round as the rows of one byte matrix and
checks, for all rows at once, everything :func:`psmpi.wire.codec.decode`
checks for one: the header, the index range and order, the zero padding,
finite values.  Messages that do not share one layout, or any row that fails a
check, give None: the caller then decodes message by message, and ``decode``
names the worker and the fault.  The payloads are the ones ``decode`` returns,
value for value.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..compressors.payload import Sparse
from .codec import _DTYPES, ABSOLUTE, MAGIC, SPARSE, VERSION, WireError, _nbytes, _plane_weights, _read_varint, index_width


class Rows(Sequence):
    """A round's payloads in worker order, held as ``indices`` and ``values``, n x K
    arrays (row j is payload j's), and ``flags``: an aggregation adds all of them in
    one call; the :class:`Sparse` payloads are made when first asked for."""

    def __init__(self, d: int, indices: np.ndarray, values: np.ndarray, flags: np.ndarray):
        self.d, self.indices, self.values, self.flags = d, indices, values, flags
        self._items = None

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __getitem__(self, j):
        if self._items is None:
            self._items = [Sparse(self.d, i, v, bool(f)) for i, v, f in zip(self.indices, self.values, self.flags)]
        return self._items[j]


def _layout(first, length: int, d: int):
    """(header length, K, value dtype) when ``first``, the first bytes of a message
    of ``length`` bytes, starts a sparse message with absolute indices of dimension d;
    else None."""
    if length < 6 or first[0] != MAGIC or first[1] != VERSION or first[2] != SPARSE:
        return None
    b3 = first[3]
    if (b3 >> 4) & 0x7 != ABSOLUTE or b3 & 0x0F not in _DTYPES:
        return None
    try:
        dd, pos = _read_varint(first, 4)
        k, pos = _read_varint(first, pos)
    except WireError:
        return None
    if dd != d or not 1 <= k <= d:
        return None
    vdt = _DTYPES[b3 & 0x0F]
    if length != pos + _nbytes(k * index_width(d)) + k * vdt.itemsize:
        return None
    return pos, k, vdt


def decode_rows(messages, d: int) -> Rows | None:
    """The payloads of ``messages`` (at least two) when they share one sparse layout
    and every one is valid; else None (decode them one by one)."""
    n = len(messages)
    if n < 2:
        return None
    length = len(messages[0])
    if any(len(m) != length for m in messages):
        return None
    lay = _layout(bytes(messages[0][:24]), length, d)
    if lay is None:
        return None
    pos, k, vdt = lay
    w = index_width(d)
    nidx = _nbytes(k * w)
    rows = np.frombuffer(b"".join(messages), np.uint8).reshape(n, length)
    head = rows[:, :pos].copy()
    flags = head[:, 3] >> 7
    head[:, 3] &= 0x7F
    if not (head == head[0]).all():
        return None
    bits = np.unpackbits(rows[:, pos:pos + nidx], axis=1)
    if bits[:, k * w:].any():  # padding after the planes
        return None
    idx = (bits[:, :k * w].reshape(n, w, k) * _plane_weights(w)).sum(axis=1)  # the w bit planes of each row
    if (idx >= d).any() or (k > 1 and not (idx[:, 1:] > idx[:, :-1]).all()):
        return None
    vals = np.ascontiguousarray(rows[:, pos + nidx:]).view(vdt).astype(vdt.newbyteorder("="))
    if not np.isfinite(vals).all():
        return None
    return Rows(d, idx, vals, flags)
