"""The message codec: every worker message becomes bytes here and back.

Layout (little endian), wire version 5 (version 4 with the natural,
quantized and dithered bodies replaced by the levelled body below and the
subset section's head folded into one varint; version 4 added the kinds 8 and
9, version 3 added 6 and 7 to version 2)::

    byte 0      magic 0xEF
    byte 1      version (5)
    byte 2      kind: 0 empty, 1 dense, 2 sparse, 3 signs, 4 natural, 5 quantized,
                6 dithered, 7 composed, 8 permk, 9 lowrank
    byte 3      value dtype code (bits 0-3: 1 float32, 2 float64; 0 for composed)
                | index encoding << 4 (bits 4-6, sparse only, else 0)
                | method flag << 7
    varint      d, the dimension
    varint      count: nonzeros K (sparse, composed), levels s (quantized,
                dithered), values K (permk), segments (lowrank), else 0
    body        kind specific, below

Sparse body: the support (indices, strictly increasing, in [0, d)) in one of
three encodings, then the K values in the value dtype (lossless).  The encoder
picks, per message, the encoding with the fewest bytes; every size below is a
function of (d, K) only, so the choice is exact and cheap:

* 1 ``absolute``: K fields of w = bit_length(d - 1) bits (at least 1);
* 2 ``bitmap``: d bits, bit i set iff i is in the support;
* 3 ``elias-fano``: index i = h << l | r.  The l low bits r of each index,
  then a bit vector of K + ((d-1) >> l) + 1 bits with a one at position
  h_j + j for the j-th index (the high parts in unary).  l is the smallest
  value minimising the size, a function of (d, K); it is not sent.  The size,
  about K (l + 1) + (d >> l) bits, exceeds the information bound
  log2 C(d, K) by about half a bit per index (0.47 to 0.56, plus byte
  rounding), for any support.

Groups of w-bit fields are stored as bit planes: plane 0 holds the most
significant bit of every field, plane w-1 the least; the planes are
concatenated.  Every bit string is packed eight bits per byte, most
significant bit first, and starts on a byte boundary; unused trailing bits are
zero.  Sign bits are packed the same way, one per coordinate.

Subset of m members of a set of n, as bits (:func:`subset_bits`): a code (0
bitmap: n bits, bit i set iff i is a member; 1 Rice of the members; 2 Rice of
the non-members) and its bits.  Rice of c positions with parameter k (a
function of n and c: the Golomb-Rice choice k = max(0, ceil(log2(log(phi - 1)
/ log(1 - c/n))))) codes the gaps g (positions minus the previous one minus 1,
the first: the position) as c fields of their k low bits (bit planes), then
the high parts g >> k in unary (a one at (sum of the high parts so far) + i
for the i-th gap); its length is not sent: the decoder reads up to the c-th
one, which lies within c + ((n - c) >> k) bits (k = 0 is the bitmap of the
coded set cut after its last member).  The encoder takes the smallest
(Rice codes the minority: the non-members when m > n/2); within about 3% of
log2 C(n, m) bits for large n.  A *subset section* (the composed support) is
a varint m << 2 | code, then the bits, padded to a byte.

Levelled body (kinds 4 natural, 5 quantized, 6 dithered): each coordinate is
a zero or one of A symbols: natural compression 2^e the exponent e of a
normal number of the value dtype, symbol e - minexp (A = 254 for float32,
2046 for float64); quantized (QSGD, header count s <= 65535) and dithered
(natural dithering and TernGrad, s <= 60) the level u in 1..s, symbol u - 1
(A = s).  The classes are 0 the zeros, then j = 1..m the m symbols that
occur, in increasing order, with c_j coordinates each.  The body:

    value       the scale (natural) or the norm (the others), value dtype
    varint      m, the number of symbols that occur
    varints     c_0, ..., c_(m-1) (c_m = d - their sum >= 1 is implied;
                nothing more when m = 0, the zero vector)
    bit string  2 code bits + the subset bits of the m symbols among [0, A);
                then the classes that occur, the largest first (ties: the
                smaller class first), each but the last as 2 code bits + the
                subset bits of its coordinates among the coordinates of the
                classes not yet placed (the last class is what is left);
                then one sign bit per nonzero coordinate (classes 1..m), in
                increasing coordinate order; zero padded to a byte

Its information content (:func:`information_bound_levels_bits`) is
value_bits + log2 C(A, m) + log2 multinomial(d; c_0, ..., c_m) + K bits (K =
d - c_0 nonzeros): which symbols occur, where each class lies given the
counts, and the signs (the counts are not counted: a varint each).  The
sections split the multinomial into binomials, log2 multinomial = sum of
log2 C(n_t, c_t), each coded within a few percent; the message is within
1.1x of the content plus 16 bytes on Gaussian, heavy-tailed and tied
vectors, d = 10^3 ... 10^6 (tests/test_codec_size.py), except where many
symbols hold a few coordinates each (QSGD with 256 levels at d = 1000: then
the counts add about a byte per symbol).  Taking the largest class first
keeps the work small: a coordinate takes part in the sections up to its own
class's (about 3 passes over d for natural compression of a Gaussian vector).

Composed body (``A+B``: a sparsifier's support, then a second compressor's
message on the K kept values): the support as a subset section of [0, d)
(the K indices; within about 3% of log2 C(d, K) bits, where the sparse
message's encodings take about half a bit more per index), then a complete
message of dimension K (any kind but composed; method flag 0).  Information
content: log2 C(d, K) + the inner message's.

PermK body: varint n (workers), varint the worker index, the 64-bit key of
the round's permutation (uint64), then the K values of the worker's block in
increasing order of coordinate; no indices: the decoder rebuilds the block
from (d, n, index, key) as the compressor did
(:func:`psmpi.compressors.permk.permk_block`) and checks that it has K
coordinates.  Information content 32 K bits; the rest is about 20 bytes.

Lowrank body (PowerSGD): for each of the count segments, in order, varints
rows, cols and rank (the segments' rows x cols sum to d; rank 0: sent as it
is; else 1 <= rank <= min(rows, cols)); then, segment by segment, the values:
rows x cols of them for rank 0, else P (rows x rank) and Q (cols x rank),
row-major.  Information content 32 (sum rank (rows + cols) + dense values)
bits; the segment heads add a few bytes each.

``decode`` validates everything it reads: magic, version, kind, dtype,
encoding, sizes against the buffer length, indices in [0, d) and strictly
increasing, the number of set bits, zero padding, finite values.  A malformed
message raises :class:`WireError`, never a wrong vector.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..compressors.payload import (
    MAX_DITHER_LEVELS,
    MAX_QSGD_LEVELS,
    Composed,
    Dense,
    Dithered,
    Empty,
    LowRank,
    Natural,
    Payload,
    Permuted,
    Quantized,
    Signs,
    Sparse,
)
from ..compressors.permk import MAX_WORKERS as MAX_PERMK_WORKERS
from ..compressors.permk import permk_block
from ..errors import PsmpiError

MAGIC = 0xEF
VERSION = 5
EMPTY, DENSE, SPARSE, SIGNS, NATURAL, QUANTIZED, DITHERED, COMPOSED, PERMK, LOWRANK = range(10)
SUBSET_BITMAP, SUBSET_RICE, SUBSET_RICE_COMPLEMENT = range(3)
_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f8")}
_DTYPE_CODES = {np.dtype(np.float32): 1, np.dtype(np.float64): 2}
ABSOLUTE, BITMAP, ELIAS_FANO = 1, 2, 3
ENCODINGS = {"absolute": ABSOLUTE, "bitmap": BITMAP, "elias-fano": ELIAS_FANO}
ENCODING_NAMES = {v: k for k, v in ENCODINGS.items()}
MAX_D = 1 << 62


class WireError(PsmpiError, ValueError):
    """A message that does not decode to a valid payload."""


# ------------------------------------------------------------ primitives ---
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf, pos):
    n = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated or overlong varint in header")
        b = int(buf[pos])
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def _uint_dtype(bits: int) -> np.dtype:
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if bits <= 8 * np.dtype(dt).itemsize:
            return np.dtype(dt)
    raise WireError(f"{bits}-bit fields are not supported")


def _nbytes(bits: int) -> int:
    return (bits + 7) >> 3


def pack_planes(v: np.ndarray, w: int) -> bytes:
    """Non-negative integers below 2**w as w bit planes (most significant first)."""
    k = v.shape[0]
    if w == 0 or k == 0:
        return b""
    dt = _uint_dtype(w)
    if w <= 8:  # one masked AND per plane, on bytes
        bit = (np.ones(1, dt) << np.arange(w - 1, -1, -1, dtype=dt))[:, None]
        return np.packbits(v.astype(dt, copy=False)[None, :] & bit).tobytes()
    # wide fields: big-endian bytes, unpacked along the value axis = bit planes
    be = v.astype(dt.newbyteorder(">"))
    planes = np.unpackbits(be.view(np.uint8).reshape(k, dt.itemsize).T, axis=0)
    return np.packbits(planes[8 * dt.itemsize - w:]).tobytes()


def unpack_planes(buf: np.ndarray, count: int, w: int) -> np.ndarray:
    """Inverse of :func:`pack_planes` on exactly ``_nbytes(count * w)`` bytes."""
    if w == 0 or count == 0:
        return np.zeros(count, np.uint64)
    _check_padding(buf, count * w)
    dt = _uint_dtype(w)
    planes = np.unpackbits(buf, count=count * w).reshape(w, count).astype(dt)
    planes <<= np.arange(w - 1, -1, -1, dtype=dt)[:, None]
    return np.bitwise_or.reduce(planes, axis=0)


def _check_padding(buf: np.ndarray, nbits: int):
    pad = 8 * buf.shape[0] - nbits
    if pad and int(buf[-1]) & ((1 << pad) - 1):
        raise WireError("nonzero padding bits")


# ------------------------------------------------------ index encodings ---
def index_width(d: int) -> int:
    """Bits of one absolute index in [0, d)."""
    return max(1, (d - 1).bit_length())


@functools.lru_cache(maxsize=256)
def ef_low_bits(d: int, k: int) -> int:
    """The Elias-Fano split l for K indices in [0, d): the smallest l that
    minimises the encoded size (byte-rounded sections)."""
    if k == 0:
        return 0
    l0 = max(0, (d // k).bit_length() - 1)  # floor(log2(d / K))
    return min(range(max(0, l0 - 1), min(index_width(d), l0 + 1) + 1), key=lambda l: _ef_size(d, k, l))


def _ef_size(d: int, k: int, l: int) -> int:
    return _nbytes(k * l) + _nbytes(k + ((d - 1) >> l) + 1)


def index_sizes(d: int, k: int) -> dict[int, int]:
    """Bytes of the support of K indices in [0, d) in each encoding."""
    return {ABSOLUTE: _nbytes(k * index_width(d)), BITMAP: _nbytes(d),
            ELIAS_FANO: _ef_size(d, k, ef_low_bits(d, k)) if k else 0}


@functools.lru_cache(maxsize=256)
def best_encoding(d: int, k: int) -> int:
    sizes = index_sizes(d, k)
    return min((ABSOLUTE, ELIAS_FANO, BITMAP), key=lambda e: sizes[e])


def information_bound_bits(d: int, k: int, value_bits: int = 32) -> float:
    """value_bits * K + log2 C(d, K): the fewest bits any encoding of a K-sparse
    vector with arbitrary values and uniformly random support can average."""
    return value_bits * k + _log2_binomial(d, k)


def encode_indices(idx: np.ndarray, d: int, enc: int) -> bytes:
    k = idx.shape[0]
    if enc == ABSOLUTE:
        w = index_width(d)
        if k == 1:  # one field: its w bits, most significant first (the Top-1 message)
            return (int(idx[0]) << (-w % 8)).to_bytes(_nbytes(w), "big")
        return pack_planes(idx, w)
    if enc == BITMAP:
        bits = np.zeros(d, np.bool_)
        bits[idx] = True
        return np.packbits(bits).tobytes()
    if enc == ELIAS_FANO:
        if k == 0:
            return b""
        l = ef_low_bits(d, k)
        idx = idx.astype(np.int64, copy=False)
        low = pack_planes(idx & ((1 << l) - 1), l) if l else b""
        bits = np.zeros(k + ((d - 1) >> l) + 1, np.bool_)
        pos = idx >> l
        pos += np.arange(k)
        bits[pos] = True
        return low + np.packbits(bits).tobytes()
    raise WireError(f"unknown index encoding {enc}")


def _one_index(field: int, d: int) -> np.ndarray:
    """The index of a one-field absolute section read as one big-endian integer: its
    w bits, then zero padding to the byte."""
    pad = -index_width(d) % 8
    if field & ((1 << pad) - 1):
        raise WireError("nonzero padding bits")
    if field >> pad >= d:
        raise WireError("sparse indices out of range or not strictly increasing")
    return np.array((field >> pad,), np.int64)


def decode_indices(buf: np.ndarray, d: int, k: int, enc: int) -> np.ndarray:
    """Indices from exactly the bytes of their section; validated."""
    if enc == ABSOLUTE:
        w = index_width(d)
        if buf.shape[0] != _nbytes(k * w):
            raise WireError("absolute index section has the wrong length")
        if k == 1:
            return _one_index(int.from_bytes(buf.tobytes(), "big"), d)
        else:
            idx = unpack_planes(buf, k, w).astype(np.int64)
    elif enc == BITMAP:
        if buf.shape[0] != _nbytes(d):
            raise WireError("bitmap section has the wrong length")
        _check_padding(buf, d)
        idx = np.flatnonzero(np.unpackbits(buf, count=d).view(np.bool_))
        if idx.shape[0] != k:
            raise WireError(f"bitmap has {idx.shape[0]} set bits, header says {k}")
    elif enc == ELIAS_FANO:
        if k == 0:
            if buf.shape[0]:
                raise WireError("elias-fano section of an empty support is not empty")
            return np.empty(0, np.int64)
        l = ef_low_bits(d, k)
        nlow, nhigh = _nbytes(k * l), k + ((d - 1) >> l) + 1
        if buf.shape[0] != nlow + _nbytes(nhigh):
            raise WireError("elias-fano section has the wrong length")
        hb = buf[nlow:]
        _check_padding(hb, nhigh)
        ones = np.flatnonzero(np.unpackbits(hb, count=nhigh).view(np.bool_))
        if ones.shape[0] != k:
            raise WireError(f"elias-fano high bits have {ones.shape[0]} ones, header says {k}")
        ones -= np.arange(k)
        idx = ones
        if l:
            idx <<= l
            idx |= unpack_planes(buf[:nlow], k, l).astype(np.int64)
    else:
        raise WireError(f"unknown index encoding {enc}")
    if not _valid_support(idx, d):
        raise WireError("sparse indices out of range or not strictly increasing")
    return idx


def _valid_support(idx: np.ndarray, d: int) -> bool:
    """Indices strictly increasing, in [0, d)."""
    if idx.shape[0] == 1:
        return 0 <= idx[0] < d
    return idx.shape[0] == 0 or (0 <= idx[0] and idx[-1] < d and bool(np.greater(idx[1:], idx[:-1]).all()))


# ------------------------------------------------------ subset sections ---
_LOG_GOLDEN = math.log((math.sqrt(5.0) - 1.0) / 2.0)


@functools.lru_cache(maxsize=4096)
def rice_k(n: int, c: int) -> int:
    """The Rice parameter for c members of a set of n (Golomb-Rice rule for
    geometric gaps of density c/n)."""
    if c == 0 or c >= n:
        return 0
    return max(0, math.ceil(math.log2(_LOG_GOLDEN / math.log1p(-c / n))))


def _rice_max_bits(n: int, c: int, k: int) -> int:
    """The most bits a Rice section of c members of a set of n can take: the c
    low fields, then at most c + ((n - c) >> k) unary bits (the gaps sum to at
    most n - c)."""
    return c * k + c + ((n - c) >> k)


def _mask_of(pos: np.ndarray, n: int) -> np.ndarray:
    mask = np.zeros(n, np.bool_)
    mask[pos] = True
    return mask


def subset_bits(n: int, pos: np.ndarray | None = None, mask: np.ndarray | None = None):
    """(code, bits) of a subset of [0, n), given by its increasing member
    positions ``pos`` or by a boolean ``mask``: the smallest of the bitmap (n
    bits) and Rice of the members, or of the non-members when they are fewer
    (c low fields of k bits as bit planes, then the c high parts in unary).
    ``bits`` is a bool array, to be concatenated into a bit string."""
    m = pos.shape[0] if mask is None else int(np.count_nonzero(mask))
    code = SUBSET_RICE_COMPLEMENT if 2 * m > n else SUBSET_RICE
    c = n - m if code == SUBSET_RICE_COMPLEMENT else m
    k = rice_k(n, c)
    if mask is None and (k == 0 or code == SUBSET_RICE_COMPLEMENT):
        mask = _mask_of(pos, n)
    if k == 0:  # no low bits, gaps in unary: the bitmap of the coded set, cut after its last member (<= n bits)
        coded = mask if code == SUBSET_RICE else ~mask
        return code, coded[:n - int(np.argmax(coded[::-1])) if c else 0]
    p = pos if mask is None else (mask if code == SUBSET_RICE else ~mask).nonzero()[0]
    g = p.copy()  # the gaps: p_0, then p_i - p_(i-1) - 1
    g[1:] -= p[:-1] + 1
    high = g >> k
    nlow = c * k
    nbits = nlow + c + int(high.sum())
    if nbits > n:
        return SUBSET_BITMAP, _mask_of(pos, n) if mask is None else mask
    bits = np.zeros(nbits, np.bool_)
    g &= (1 << k) - 1
    bits[:nlow] = ((g >> _plane_shifts(k)) & 1).ravel()  # bit planes (k x c), most significant first
    np.cumsum(high, out=high)
    high += np.arange(nlow, nlow + c)
    bits[high] = True
    return code, bits


@functools.lru_cache(maxsize=64)
def _plane_shifts(k: int) -> np.ndarray:
    return np.arange(k - 1, -1, -1, dtype=np.int64)[:, None]


@functools.lru_cache(maxsize=64)
def _plane_weights(k: int) -> np.ndarray:
    return (np.int64(1) << _plane_shifts(k))


def read_subset_bits(bits: np.ndarray, off: int, n: int, m: int, code: int, as_mask: bool = False):
    """(the m members of a set of n coded with ``code`` at bit ``off`` of the
    bool array ``bits``, the offset after them); validated.  The members as
    increasing int64 positions in [0, n), or with ``as_mask`` as a bool mask
    of length n (for a bitmap, a view of ``bits``)."""
    if code == SUBSET_BITMAP:
        if off + n > bits.shape[0]:
            raise WireError("truncated subset bitmap")
        seg = bits[off:off + n]
        found = int(np.count_nonzero(seg))
        if found != m:
            raise WireError(f"subset bitmap has {found} members, header says {m}")
        return seg if as_mask else np.flatnonzero(seg), off + n
    if code not in (SUBSET_RICE, SUBSET_RICE_COMPLEMENT):
        raise WireError(f"unknown subset code {code}")
    c = m if code == SUBSET_RICE else n - m
    k = rice_k(n, c)
    u0 = off + c * k
    if u0 > bits.shape[0]:
        raise WireError("truncated rice subset section")
    ones = bits[u0:u0 + _rice_max_bits(n, c, k) - c * k].nonzero()[0][:c]
    if ones.shape[0] != c:
        raise WireError("rice subset section: too few ones (truncated, or positions past the set)")
    end = u0 + (int(ones[-1]) + 1 if c else 0)
    if k == 0:  # the ones are the positions (at most n bits were searched)
        p = ones
    else:  # p_i = sum of (g + 1) to i, minus 1 = (ones_i - i) << k + (sum of the low fields to i) + i
        low = (bits[off:u0].reshape(k, c) * _plane_weights(k)).sum(axis=0)
        p = ones << k
        p += np.cumsum(low)
        p -= np.arange(c) * ((1 << k) - 1)
        if p[-1] >= n:  # (strictly increasing by construction)
            raise WireError("rice subset positions out of range")
    if code == SUBSET_RICE and not as_mask:
        return p, end
    if k == 0:  # the coded set's bitmap up to its last member
        mask = np.zeros(n, np.bool_)
        mask[:end - u0] = bits[u0:end]
    else:
        mask = _mask_of(p, n)
    if code == SUBSET_RICE_COMPLEMENT:
        np.logical_not(mask, out=mask)
    return (mask if as_mask else np.flatnonzero(mask)), end


def encode_subset(pos: np.ndarray, n: int) -> bytes:
    """The subset section of the members ``pos`` (increasing, in [0, n)) of a
    set of n: a varint m << 2 | code, then the bits of :func:`subset_bits`,
    zero padded to a byte."""
    code, bits = subset_bits(n, pos)
    return _varint(pos.shape[0] << 2 | code) + np.packbits(bits).tobytes()


def decode_subset(buf, pos: int, n: int):
    """(member positions, int64, increasing, in [0, n); the next position) of
    the subset section at ``buf[pos:]``; validated."""
    h, pos = _read_varint(buf, pos)
    m, code = h >> 2, h & 3
    if m > n:
        raise WireError(f"subset of {m} members of a set of {n}")
    c = m if code != SUBSET_RICE_COMPLEMENT else n - m
    most = n if code == SUBSET_BITMAP else _rice_max_bits(n, c, rice_k(n, c))
    bits = np.unpackbits(np.asarray(buf[pos:pos + _nbytes(most)], np.uint8)).view(np.bool_)
    members, used = read_subset_bits(bits, 0, n, m, code)
    if bits[used:8 * _nbytes(used)].any():
        raise WireError("nonzero padding bits")
    return members, pos + _nbytes(used)


def _log2_binomial(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def information_bound_levels_bits(symbols: np.ndarray, alphabet: int, value_bits: int = 32) -> float:
    """The information content of a levelled message (natural compression,
    QSGD, natural dithering, TernGrad): ``symbols`` holds, per coordinate, -1
    for a zero and else its symbol in [0, alphabet) (a level minus one, or an
    exponent minus the dtype's smallest).  It is

        value_bits + log2 C(alphabet, m) + log2 multinomial(d; c_0, c_1, ..., c_m) + K

    bits: the value (norm or scale), which m symbols occur, where each class
    (c_0 zeros, c_j coordinates with the j-th symbol that occurs) lies given
    the counts, and one sign per nonzero (K = d - c_0).  The fewest bits any
    encoding can average when the counts are known and the coordinates are
    exchangeable; the counts themselves (a few bytes per symbol) are not
    included."""
    sym = np.asarray(symbols, np.int64)
    counts = np.bincount(sym + 1, minlength=1)
    d, zeros = int(counts.sum()), int(counts[0])
    present = counts[1:][counts[1:] > 0]
    lg = math.lgamma(d + 1) - math.lgamma(zeros + 1) - sum(math.lgamma(int(c) + 1) for c in present)
    return value_bits + _log2_binomial(alphabet, present.shape[0]) + lg / math.log(2) + (d - zeros)


def natural_alphabet(vdt) -> tuple[int, int]:
    """(smallest exponent, number of exponents) of a natural-compression
    payload in the value dtype: the normal numbers' exponents."""
    info = np.finfo(vdt)
    return int(info.minexp), int(info.maxexp - info.minexp)


def _symbols(p) -> tuple[np.ndarray, int]:
    """(symbols, alphabet) of a levelled payload (see :func:`information_bound_levels_bits`)."""
    if isinstance(p, Natural):
        low, n = natural_alphabet(np.asarray(p.scale).dtype)
        e = np.asarray(p.exponents).astype(np.int64)
        return np.where(e == Natural.ZERO, -1, e - low), n
    return np.asarray(p.levels).astype(np.int64) - 1, p.s


def information_content_bits(p: Payload) -> float:
    """The information content of a payload's message, in bits (the yardstick
    of the wire sizes; ``value_bits`` is the width of the value dtype):

    * sparse (K values): value_bits K + log2 C(d, K);
    * natural, quantized, dithered: :func:`information_bound_levels_bits`;
    * composed: log2 C(d, K) for the support plus the inner message's;
    * dense: value_bits d; signs: value_bits + d; empty: 0;
    * permk: value_bits K; lowrank: value_bits times the values of the factors
      and of the segments sent as they are.
    """
    if isinstance(p, Composed):
        return _log2_binomial(p.d, len(p.indices)) + information_content_bits(p.inner)
    if isinstance(p, Empty):
        return 0.0
    if isinstance(p, Dense):
        return 8.0 * p.values.dtype.itemsize * p.d
    if isinstance(p, Sparse):
        return information_bound_bits(p.d, len(p.indices), 8 * p.values.dtype.itemsize)
    if isinstance(p, Signs):
        return 8.0 * np.asarray(p.scale).dtype.itemsize + p.d
    if isinstance(p, (Natural, Quantized, Dithered)):
        value = p.scale if isinstance(p, Natural) else p.norm
        sym, n = _symbols(p)
        return information_bound_levels_bits(sym, n, 8 * np.asarray(value).dtype.itemsize)
    if isinstance(p, Permuted):
        return 8.0 * p.values.dtype.itemsize * p.values.shape[0]
    if isinstance(p, LowRank):
        vals = [np.asarray(a) for f in p.factors for a in f]
        return 8.0 * sum(a.size * a.dtype.itemsize for a in vals)
    raise WireError(f"no information content defined for {type(p).__name__}")


# -------------------------------------------------------- levelled body ---
def _code_bits(code: int) -> np.ndarray:
    return np.array((code >> 1, code & 1), np.bool_)


def _code_at(bits: np.ndarray, off: int) -> int:
    if off + 2 > bits.shape[0]:
        raise WireError("truncated levelled message")
    return int(bits[off]) << 1 | int(bits[off + 1])


def _peel_order(counts) -> list[int]:
    """The classes that occur, largest first (ties: the smaller class first)."""
    return sorted((j for j in range(len(counts)) if counts[j]), key=lambda j: (-int(counts[j]), j))


def _encode_levelled(kind: int, count: int, vc: int, value, idx: np.ndarray, nsym: int, negative,
                     flag: bool) -> bytes:
    """The body of natural, quantized and dithered messages (see the module
    docstring), from per-coordinate indices in [0, nsym] (0: a zero, i:
    symbol i - 1)."""
    d = idx.shape[0]
    hist = np.bincount(idx, minlength=nsym + 1)
    symbols = np.flatnonzero(hist[1:])
    m = symbols.shape[0]
    values = np.concatenate(([0], symbols + 1))  # the index of each class: 0 the zeros, j the j-th symbol
    counts = hist[values]
    parts = [_header(kind, vc, d, count, flag), np.asarray(value, _DTYPES[vc]).tobytes(), _varint(m)]
    parts += [_varint(int(c)) for c in counts[:m]]
    if not m:
        return b"".join(parts)
    code, sym_bits = subset_bits(nsym, symbols)
    bits = [_code_bits(code), sym_bits]
    order = _peel_order(counts)
    cur = idx
    for i, j in enumerate(order[:-1]):
        mask = cur == values[j]
        code, sec = subset_bits(cur.shape[0], mask=mask)
        bits += [_code_bits(code), sec]
        if i < len(order) - 2:
            cur = np.compress(~mask, cur)  # (faster than cur[~mask])
    negative = np.asarray(negative, np.bool_)
    bits.append(negative[idx != 0] if counts[0] else negative)
    parts.append(np.packbits(np.concatenate(bits)).tobytes())
    return b"".join(parts)


def _decode_levelled(body, d: int, nsym: int, vdt):
    """(value, classes, symbols, negative) of a levelled body, validated:
    ``classes`` (uint8 or uint16, length d) 0 for a zero, j for the j-th of
    the increasing ``symbols``."""
    nv = vdt.itemsize
    if body.shape[0] < nv:
        raise WireError("truncated message")
    value = _finite(body[:nv].view(vdt), "value").astype(vdt.newbyteorder("="))[0]
    m, pos = _read_varint(body, nv)
    if m > nsym or m > d:
        raise WireError(f"{m} distinct levels, at most {min(nsym, d)} possible")
    counts = []
    for _ in range(m):
        c, pos = _read_varint(body, pos)
        counts.append(c)
    if not m:
        if pos != body.shape[0]:
            raise WireError("bytes after an all-zero message")
        return value, np.zeros(d, np.uint8), np.empty(0, np.int64), np.zeros(d, np.bool_)
    rest = d - sum(counts)
    if rest < 1 or min(counts[1:], default=1) < 1:
        raise WireError("level counts that do not add up to d")
    counts.append(rest)
    bits = np.unpackbits(body[pos:]).view(np.bool_)
    symbols, off = read_subset_bits(bits, 2, nsym, m, _code_at(bits, 0))
    order = _peel_order(counts)
    masks, n = [], d
    for j in order[:-1]:  # each class among the coordinates not in an earlier one
        mask, off = read_subset_bits(bits, off + 2, n, counts[j], _code_at(bits, off), as_mask=True)
        masks.append(mask)
        n -= counts[j]
    k = d - counts[0]
    if off + k > bits.shape[0] or bits.shape[0] - (off + k) >= 8 or bits[off + k:].any():
        raise WireError("levelled message: wrong length or nonzero padding bits")
    dt = np.uint8 if m < 256 else np.uint16
    cls = np.full(n, order[-1], dt)  # the last class: the coordinates left
    for j, mask in zip(reversed(order[:-1]), reversed(masks)):  # put each class back among the later ones
        out = np.full(mask.shape[0], j, dt)
        out[np.flatnonzero(~mask)] = cls  # (faster than out[~mask] = cls)
        cls = out
    if counts[0]:
        negative = np.zeros(d, np.bool_)
        negative[cls != 0] = bits[off:off + k]
    else:
        negative = bits[off:off + k].copy()
    return value, cls, symbols, negative


def _check_levels(p, d: int, s_max: int):
    lv = np.asarray(p.levels)
    if lv.shape != (d,) or np.asarray(p.negative).shape != (d,) or not 1 <= p.s <= s_max:
        raise WireError(f"{type(p).__name__.lower()} payload: d levels and signs, 1 <= s <= {s_max}")
    if lv.dtype.kind not in "iu" or (d and (int(lv.min()) < 0 or int(lv.max()) > p.s)):
        raise WireError(f"{type(p).__name__.lower()} payload: levels in [0, s]")
    return lv


def _encode_natural(p: Natural, vc: int, flag: bool) -> bytes:
    d = p.d
    low, nsym = natural_alphabet(_DTYPES[vc])
    e = np.asarray(p.exponents)
    if e.shape != (d,) or np.asarray(p.negative).shape != (d,) or e.dtype.kind not in "iu":
        raise WireError("natural payload: d integer exponents and signs")
    idx = e + np.int16(1 - low) if e.dtype == np.int16 else e.astype(np.int64) + (1 - low)  # 1..nsym: normal
    bad = d and int(idx.max()) > nsym
    if d and int(idx.min()) < 1:
        zero = e == Natural.ZERO
        bad = bad or bool(np.any(idx[~zero] < 1))
        idx[zero] = 0
    if bad:
        raise WireError("natural payload: an exponent outside the normal range of the value dtype")
    return _encode_levelled(NATURAL, 0, vc, p.scale, idx, nsym, p.negative, flag)


def _decode_natural(body, d: int, count: int, vdt, flag: bool) -> Natural:
    if count:
        raise WireError(f"nonzero count {count} on a natural message")
    low, nsym = natural_alphabet(vdt)
    scale, cls, symbols, negative = _decode_levelled(body, d, nsym, vdt)
    lut = np.concatenate(([Natural.ZERO], symbols + low)).astype(np.int16)
    return Natural(d, scale, negative, lut[cls], flag)


def _decode_levelled_kind(kind: int, body, d: int, count: int, vdt, flag: bool) -> Payload:
    if kind == NATURAL:
        return _decode_natural(body, d, count, vdt, flag)
    s_max, cls = (MAX_QSGD_LEVELS, Quantized) if kind == QUANTIZED else (MAX_DITHER_LEVELS, Dithered)
    if not 1 <= count <= s_max:
        raise WireError(f"bad number of levels {count}")
    norm, levels, negative = _decode_levels(body, d, count, vdt, np.uint8 if count < 256 else np.uint16)
    return cls(d, norm, count, negative, levels, flag)


def _decode_levels(body, d: int, s: int, vdt, dtype):
    """(norm, levels, negative) of a quantized or dithered body with s levels."""
    norm, cls, symbols, negative = _decode_levelled(body, d, s, vdt)
    if norm < 0:
        raise WireError("negative norm")
    lut = np.concatenate(([0], symbols + 1)).astype(dtype)
    return norm, lut[cls], negative


def _encode_composed(p: Composed, flag: bool) -> bytes:
    idx = np.asarray(p.indices)
    k = idx.shape[0]
    if isinstance(p.inner, Composed) or p.inner.d != k or p.inner.flag or idx.ndim != 1 or not k \
            or idx.dtype.kind not in "iu" or not _valid_support(idx, p.d):
        raise WireError("composed payload: strictly increasing indices in [0, d), an inner payload of "
                        "dimension K (not composed, no flag)")
    return b"".join((_header(COMPOSED, 0, p.d, k, flag), encode_subset(idx, p.d), encode(p.inner)))


def _valid_permk(d: int, n: int, index: int) -> bool:
    return 1 <= n <= MAX_PERMK_WORKERS and 0 <= index < n and (d >= n or n % d == 0)


def _encode_permk(p: Permuted, vc: int, flag: bool) -> bytes:
    vals = np.asarray(p.values)
    if not _valid_permk(p.d, p.n, p.index) or not 0 <= p.key < 1 << 64 or vals.shape != np.shape(p.indices) \
            or vals.ndim != 1:
        raise WireError("permk payload: 1 <= n, index < n, d >= n or n a multiple of d, a 64-bit key, one value per "
                        "coordinate of the block")
    return b"".join((_header(PERMK, vc, p.d, vals.shape[0], flag), _varint(p.n), _varint(p.index),
                     int(p.key).to_bytes(8, "little"), vals.astype(_DTYPES[vc], copy=False).tobytes()))


def _decode_permk(body, d: int, count: int, vdt, flag: bool) -> Permuted:
    n, pos = _read_varint(body, 0)
    index, pos = _read_varint(body, pos)
    if not _valid_permk(d, n, index):
        raise WireError(f"bad permk message: worker {index} of {n}, d={d}")
    _need(body.shape[0] - pos, 8 + count * vdt.itemsize)
    key = int.from_bytes(body[pos:pos + 8].tobytes(), "little")
    idx = permk_block(d, n, index, key)[0]
    if idx.shape[0] != count:
        raise WireError(f"permk block of {idx.shape[0]} coordinates, header says {count} values")
    vals = _finite(body[pos + 8:].view(vdt), "value").astype(vdt.newbyteorder("="))
    return Permuted(d, n, index, key, idx, vals, flag)


def _encode_lowrank(p: LowRank, vc: int, flag: bool) -> bytes:
    heads, values, total = [], [], 0
    for (rows, cols, rank), f in zip(p.shapes, p.factors):
        shapes = [(rows * cols,)] if rank == 0 else [(rows, rank), (cols, rank)]
        if rows < 1 or cols < 1 or not 0 <= rank <= min(rows, cols) or len(f) != len(shapes) \
                or any(np.shape(a) != s for a, s in zip(f, shapes)):
            raise WireError("lowrank payload: segments (rows, cols, rank) with rank <= min(rows, cols) and factors "
                            "of their shapes")
        heads.append(_varint(rows) + _varint(cols) + _varint(rank))
        values += [np.asarray(a).astype(_DTYPES[vc], copy=False).tobytes() for a in f]
        total += rows * cols
    if total != p.d or len(p.shapes) != len(p.factors) or not p.shapes:
        raise WireError(f"lowrank payload: segments cover {total} of d={p.d} coordinates")
    return b"".join([_header(LOWRANK, vc, p.d, len(p.shapes), flag)] + heads + values)


def _decode_lowrank(body, d: int, count: int, vdt, flag: bool) -> LowRank:
    if not 1 <= count <= d:
        raise WireError(f"lowrank message with {count} segments, d={d}")
    shapes, pos, total, nvals = [], 0, 0, 0
    for _ in range(count):
        rows, pos = _read_varint(body, pos)
        cols, pos = _read_varint(body, pos)
        rank, pos = _read_varint(body, pos)
        total += rows * cols
        if rows < 1 or cols < 1 or rank > min(rows, cols) or total > d:
            raise WireError(f"bad lowrank segment {rows} x {cols} of rank {rank}")
        shapes.append((rows, cols, rank))
        nvals += rows * cols if rank == 0 else rank * (rows + cols)
    if total != d:
        raise WireError(f"lowrank segments cover {total} of d={d} coordinates")
    _need(body.shape[0] - pos, nvals * vdt.itemsize)
    vals = _finite(body[pos:].view(vdt), "value").astype(vdt.newbyteorder("="))
    factors, at = [], 0
    for rows, cols, rank in shapes:
        if rank == 0:
            factors.append((vals[at:at + rows * cols],))
            at += rows * cols
        else:
            p = vals[at:at + rows * rank].reshape(rows, rank)
            at += rows * rank
            factors.append((p, vals[at:at + cols * rank].reshape(cols, rank)))
            at += cols * rank
    return LowRank(d, tuple(shapes), tuple(factors), flag)


def _index_encoding(index_encoding, d: int, k: int) -> int:
    if index_encoding is None:
        return best_encoding(d, k)
    enc = ENCODINGS.get(index_encoding, index_encoding)
    if enc not in ENCODING_NAMES:
        raise WireError(f"unknown index encoding {index_encoding!r}; valid: {', '.join(ENCODINGS)}")
    return enc


# ---------------------------------------------------------------- encode ---
def _value_code(arr_or_scalar) -> int:
    dt = np.asarray(arr_or_scalar).dtype
    code = _DTYPE_CODES.get(np.dtype(dt))
    if code is None:
        raise WireError(f"values of dtype {dt} cannot go on the wire (float32 or float64)")
    return code


@functools.lru_cache(maxsize=1024)
def _header(kind: int, flags: int, d: int, count: int, flag: bool) -> bytes:
    return bytes((MAGIC, VERSION, kind, flags | (0x80 if flag else 0))) + _varint(d) + _varint(count)


def encode(p: Payload, index_encoding: str | int | None = None) -> bytes:
    """Bytes of a payload (the exact bytes handed to MPI).

    ``index_encoding`` forces the support encoding of a sparse payload
    ('absolute', 'bitmap' or 'elias-fano'); by default the smallest is used.
    """
    d = p.d
    if not 1 <= d < MAX_D:
        raise WireError(f"dimension {d} cannot go on the wire")
    flag = bool(p.flag)
    if isinstance(p, Empty):
        return _header(EMPTY, 0, d, 0, flag)
    if isinstance(p, Dense):
        vc = _value_code(p.values)
        return _header(DENSE, vc, d, 0, flag) + p.values.astype(_DTYPES[vc], copy=False).tobytes()
    if isinstance(p, Sparse):
        vc = _value_code(p.values)
        idx = np.asarray(p.indices)
        k = idx.shape[0]
        if idx.ndim != 1 or p.values.shape != (k,) or idx.dtype.kind not in "iu" \
                or not _valid_support(idx, d):
            raise WireError("sparse payload: indices must be strictly increasing integers in [0, d), "
                            "one value each")
        enc = _index_encoding(index_encoding, d, k)
        return b"".join((_header(SPARSE, vc | enc << 4, d, k, flag), encode_indices(idx, d, enc),
                         p.values.astype(_DTYPES[vc], copy=False).tobytes()))
    if isinstance(p, Signs):
        vc = _value_code(p.scale)
        return (_header(SIGNS, vc, d, 0, flag) + np.asarray(p.scale, _DTYPES[vc]).tobytes()
                + np.packbits(p.negative).tobytes())
    if isinstance(p, Natural):
        return _encode_natural(p, _value_code(p.scale), flag)
    if isinstance(p, (Quantized, Dithered)):
        kind, s_max = (QUANTIZED, MAX_QSGD_LEVELS) if isinstance(p, Quantized) else (DITHERED, MAX_DITHER_LEVELS)
        lv = _check_levels(p, d, s_max)
        return _encode_levelled(kind, p.s, _value_code(p.norm), p.norm, lv, p.s, p.negative, flag)
    if isinstance(p, Composed):
        return _encode_composed(p, flag)
    if isinstance(p, Permuted):
        return _encode_permk(p, _value_code(p.values), flag)
    if isinstance(p, LowRank):
        return _encode_lowrank(p, _value_code(p.factors[0][0]) if p.factors else 1, flag)
    raise WireError(f"cannot encode {type(p).__name__}")


# ---------------------------------------------------------------- decode ---
def _finite(v, what):
    # a few values: Python's isfinite on the list beats numpy's per-call cost
    if not (all(map(math.isfinite, v.tolist())) if v.shape[0] <= 16 else np.isfinite(v).all()):
        raise WireError(f"non-finite {what} in message")
    return v


def _need(have: int, nbytes: int):
    if have != nbytes:
        raise WireError(f"body has {have} bytes, header implies {nbytes}")


def _signs(buf: np.ndarray, d: int) -> np.ndarray:
    _check_padding(buf, d)
    return np.unpackbits(buf, count=d).view(np.bool_)


def decode(buf, d_expected: int | None = None) -> Payload:
    """Payload of a message; raises WireError on anything malformed."""
    try:
        raw = memoryview(buf).cast("B")  # bytes, bytearray, a contiguous numpy buffer
    except (TypeError, ValueError) as e:
        raise WireError(f"not a contiguous byte buffer: {e}") from None
    if len(raw) < 6:
        raise WireError(f"message of {len(raw)} bytes is shorter than a header")
    if raw[0] != MAGIC:
        raise WireError("bad magic byte")
    if raw[1] != VERSION:
        raise WireError(f"unsupported wire version {raw[1]} (this is version {VERSION})")
    kind, b3 = raw[2], raw[3]
    flag, enc, vc = bool(b3 & 0x80), (b3 >> 4) & 0x7, b3 & 0x0F
    d, pos = _read_varint(raw, 4)
    count, pos = _read_varint(raw, pos)
    if not 1 <= d < MAX_D or (d_expected is not None and d != d_expected):
        raise WireError(f"message dimension {d} != expected {d_expected}")
    if kind == SPARSE and enc == ABSOLUTE and count == 1 and vc in _DTYPES:  # Top-1: straight from the bytes
        vdt = _DTYPES[vc]
        nb = _nbytes(index_width(d))
        _need(len(raw) - pos, nb + vdt.itemsize)
        idx = _one_index(int.from_bytes(raw[pos:pos + nb], "big"), d)
        vals = np.frombuffer(raw, vdt, 1, pos + nb).astype(vdt.newbyteorder("="))
        return Sparse(d, idx, _finite(vals, "value"), flag)
    mv = np.frombuffer(raw, dtype=np.uint8)
    if enc and kind != SPARSE:
        raise WireError(f"index encoding bits set on a message of kind {kind}")
    body = mv[pos:]
    if kind == EMPTY:
        if vc or count or body.shape[0]:
            raise WireError("bad empty message")
        return Empty(d, flag)
    if kind == COMPOSED:
        if vc or not 1 <= count <= d:
            raise WireError("bad composed message header")
        idx, nidx = decode_subset(body, 0, d)
        if idx.shape[0] != count:
            raise WireError(f"composed support has {idx.shape[0]} indices, header says {count}")
        if body.shape[0] > nidx + 2 and body[nidx + 2] == COMPOSED:
            raise WireError("a composed message inside a composed message")
        inner = decode(body[nidx:], count)
        if inner.flag:
            raise WireError("method flag set on the inner message of a composed message")
        return Composed(d, idx, inner, flag)
    if vc not in _DTYPES:
        raise WireError(f"bad value dtype code {vc}")
    vdt = _DTYPES[vc]
    native = vdt.newbyteorder("=")

    if kind in (NATURAL, QUANTIZED, DITHERED, PERMK):
        try:  # compact messages: one can claim any d, and its payload (or PermK's permutation) has d entries
            if kind == PERMK:
                return _decode_permk(body, d, count, vdt, flag)
            return _decode_levelled_kind(kind, body, d, count, vdt, flag)
        except MemoryError:
            raise WireError(f"a message of dimension {d} does not fit in memory") from None
    if kind == LOWRANK:
        return _decode_lowrank(body, d, count, vdt, flag)
    if kind != SPARSE and count:
        raise WireError(f"nonzero count {count} on a message of kind {kind}")
    if kind == DENSE:
        _need(body.shape[0], d * vdt.itemsize)
        return Dense(_finite(body.view(vdt).astype(native), "value"), flag)
    if kind == SPARSE:
        if enc not in ENCODING_NAMES:
            raise WireError(f"unknown index encoding {enc}")
        if count > d:
            raise WireError(f"sparse message with {count} > d={d} entries")
        nidx = body.shape[0] - count * vdt.itemsize
        if nidx < 0:
            raise WireError(f"body has {body.shape[0]} bytes, too few for {count} values")
        idx = decode_indices(body[:nidx], d, count, enc)
        vals = body[nidx:].view(vdt).astype(native)
        return Sparse(d, idx, _finite(vals, "value"), flag)
    if kind == SIGNS:
        nsign = _nbytes(d)
        _need(body.shape[0], vdt.itemsize + nsign)
        scale = _finite(body[: vdt.itemsize].view(vdt), "scale").astype(native)[0]
        return Signs(d, scale, _signs(body[vdt.itemsize:], d), flag)
    raise WireError(f"unknown message kind {kind}")
