"""The message codec: every worker message becomes bytes here and back.

Layout (little endian), wire version 4 (version 3 plus the kinds 8 and 9;
version 3 added 6 and 7 to version 2)::

    byte 0      magic 0xEF
    byte 1      version (4)
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
zero.  Sign bits are packed the same way, one per coordinate;
natural-compression exponents are one byte (float32) or two (float64);
quantisation levels use max(1, bit_length(s)) bits each, packed as contiguous
fields.

Dithered body (natural dithering, TernGrad): the norm (value dtype); a varint
``top``, the highest level present (<= s); for j = 1..top the subset
{u >= j} of the coordinates with u >= j - 1, as the positions of its members
among them (a *subset section*, below); then one sign bit per nonzero (the
members of {u >= 1}), packed.  Subset section of m members of a set of n:
one byte, the code (0 bitmap: n bits; 1 Rice: the members; 2 Rice: the
non-members), a varint m, and for Rice a varint with the byte length of the
unary part, then the bits.  Rice with parameter k (a function of n and the
count c coded: the Golomb-Rice choice k = max(0, ceil(log2(log(phi - 1) /
log(1 - c/n))))) codes the gaps g (positions minus the previous one minus 1)
as c fields of their k low bits (bit planes), then the high parts g >> k in
unary (a one at (sum of the high parts so far) + i for the i-th gap).  The
encoder takes the smallest code; a section is within about 3% of log2 C(n, m)
bits for large n, and the whole message within a few percent of its
information content 32 + log2 multinomial(d; level counts) + K bits.

Composed body (``A+B``: a sparsifier's support, then a second compressor's
message on the K kept values): the support as a subset section of [0, d)
(the K indices; within about 3% of log2 C(d, K) bits, where the sparse
message's encodings take about half a bit more per index), then a complete
message of dimension K (any kind but composed; method flag 0).

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
VERSION = 4
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


def _level_bits(s: int) -> int:
    return max(1, int(s).bit_length())


def pack_uint(a: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers below 2**bits, ``bits`` each, MSB first."""
    if bits == 8:
        return a.astype(np.uint8).tobytes()
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    m = (a.astype(np.uint32)[:, None] >> shifts) & 1
    return np.packbits(m.astype(np.uint8), axis=None).tobytes()


def unpack_uint(buf: np.ndarray, count: int, bits: int) -> np.ndarray:
    if bits == 8:
        return buf[:count].astype(np.uint16)
    m = np.unpackbits(buf, count=count * bits).reshape(count, bits).astype(np.uint32)
    return (m << np.arange(bits - 1, -1, -1, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)


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
    return value_bits * k + (math.lgamma(d + 1) - math.lgamma(k + 1) - math.lgamma(d - k + 1)) / math.log(2)


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


def rice_k(n: int, c: int) -> int:
    """The Rice parameter for c members of a set of n (Golomb-Rice rule for
    geometric gaps of density c/n)."""
    if c == 0 or c >= n:
        return 0
    return max(0, math.ceil(math.log2(_LOG_GOLDEN / math.log1p(-c / n))))


def _rice_parts(pos: np.ndarray, n: int):
    """(k, low-bit planes, unary bytes) of increasing positions in [0, n)."""
    c = pos.shape[0]
    k = rice_k(n, c)
    g = np.diff(pos, prepend=-1) - 1
    high = g >> k
    bits = np.zeros(c + int(high.sum()), np.bool_)
    if c:
        bits[np.cumsum(high) + np.arange(c)] = True
    return pack_planes(g & ((1 << k) - 1), k) if k else b"", np.packbits(bits).tobytes()


def encode_subset(pos: np.ndarray, n: int) -> bytes:
    """The subset section of the members ``pos`` (increasing, in [0, n)) of a
    set of n: the smallest of Rice (of the members, or of the non-members when
    they are fewer) and the bitmap."""
    m = pos.shape[0]
    code, p = SUBSET_RICE, pos
    if m > n // 2:
        keep = np.ones(n, np.bool_)
        keep[pos] = False
        code, p = SUBSET_RICE_COMPLEMENT, np.flatnonzero(keep)
    low, unary = _rice_parts(p, n)
    rice = bytes((code,)) + _varint(m) + _varint(len(unary)) + low + unary
    if len(rice) <= 1 + len(_varint(m)) + _nbytes(n):
        return rice
    bits = np.zeros(n, np.bool_)
    bits[pos] = True
    return bytes((SUBSET_BITMAP,)) + _varint(m) + np.packbits(bits).tobytes()


def decode_subset(buf, pos: int, n: int):
    """(member positions, int64, increasing, in [0, n); the next position) of
    the subset section at ``buf[pos:]``; validated."""
    if pos >= len(buf):
        raise WireError("truncated subset section")
    code = int(buf[pos])
    m, pos = _read_varint(buf, pos + 1)
    if m > n:
        raise WireError(f"subset of {m} members of a set of {n}")
    if code == SUBSET_BITMAP:
        end = pos + _nbytes(n)
        if end > len(buf):
            raise WireError("truncated subset bitmap")
        members = np.flatnonzero(_signs(buf[pos:end], n))
        if members.shape[0] != m:
            raise WireError(f"subset bitmap has {members.shape[0]} members, header says {m}")
        return members, end
    if code not in (SUBSET_RICE, SUBSET_RICE_COMPLEMENT):
        raise WireError(f"unknown subset code {code}")
    nu, pos = _read_varint(buf, pos)
    c = m if code == SUBSET_RICE else n - m
    k = rice_k(n, c)
    nlow = _nbytes(c * k)
    end = pos + nlow + nu
    if end > len(buf):
        raise WireError("truncated rice subset section")
    ones = np.flatnonzero(np.unpackbits(buf[pos + nlow:end]).view(np.bool_))
    if ones.shape[0] != c or (c and _nbytes(int(ones[-1]) + 1) != nu) or (not c and nu):
        raise WireError("rice subset section: wrong number of ones or length")
    g = np.diff(ones - np.arange(c), prepend=0)  # the high parts (>= 0: ones increase)
    if k:
        g <<= k
        g |= unpack_planes(buf[pos:pos + nlow], c, k).astype(np.int64)
    p = np.cumsum(g + 1) - 1
    if not _valid_support(p, n):  # (a huge gap could wrap the sum around)
        raise WireError("rice subset positions out of range or not increasing")
    if code == SUBSET_RICE_COMPLEMENT:
        keep = np.ones(n, np.bool_)
        keep[p] = False
        p = np.flatnonzero(keep)
    return p.astype(np.int64, copy=False), end


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


def _encode_dithered(p: Dithered, vc: int, flag: bool) -> bytes:
    d, lv = p.d, np.asarray(p.levels)
    if lv.shape != (d,) or np.asarray(p.negative).shape != (d,) or not 1 <= p.s <= MAX_DITHER_LEVELS:
        raise WireError(f"dithered payload: d levels and signs, 1 <= s <= {MAX_DITHER_LEVELS}")
    top = int(lv.max())
    if top > p.s:
        raise WireError("dithered payload: a level above s")
    parts = [_header(DITHERED, vc, d, p.s, flag), np.asarray(p.norm, _DTYPES[vc]).tobytes(), _varint(top)]
    cur = np.arange(d)
    for j in range(1, top + 1):
        members = np.flatnonzero(lv[cur] >= j)
        parts.append(encode_subset(members, cur.shape[0]))
        cur = cur[members]
        if j == 1:
            signs = np.packbits(np.asarray(p.negative)[cur]).tobytes()
    parts.append(signs if top else b"")
    return b"".join(parts)


def _decode_dithered(body, d: int, s: int, vdt, flag: bool) -> Dithered:
    if not 1 <= s <= MAX_DITHER_LEVELS:
        raise WireError(f"bad number of levels {s}")
    nv = vdt.itemsize
    if body.shape[0] < nv:
        raise WireError("truncated dithered message")
    norm = _finite(body[:nv].view(vdt), "norm").astype(vdt.newbyteorder("="))[0]
    if norm < 0:
        raise WireError("negative norm")
    top, pos = _read_varint(body, nv)
    if top > s:
        raise WireError("dithered level above s")
    levels = np.zeros(d, np.uint8)
    negative = np.zeros(d, np.bool_)
    cur = np.arange(d)
    nonzero = cur[:0]
    for j in range(1, top + 1):
        members, pos = decode_subset(body, pos, cur.shape[0])
        cur = cur[members]
        levels[cur] = j
        if j == 1:
            nonzero = cur
    _need(body.shape[0] - pos, _nbytes(nonzero.shape[0]))
    negative[nonzero] = _signs(body[pos:], nonzero.shape[0])
    return Dithered(d, norm, s, negative, levels, flag)


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
        vc = _value_code(p.scale)
        ed = np.dtype("<i1") if vc == 1 else np.dtype("<i2")
        exps = p.exponents
        if vc == 1:
            exps = np.where(exps == Natural.ZERO, -128, exps)
        return (_header(NATURAL, vc, d, 0, flag) + np.asarray(p.scale, _DTYPES[vc]).tobytes()
                + np.packbits(p.negative).tobytes() + exps.astype(ed).tobytes())
    if isinstance(p, Quantized):
        vc = _value_code(p.norm)
        return (_header(QUANTIZED, vc, d, p.s, flag) + np.asarray(p.norm, _DTYPES[vc]).tobytes()
                + np.packbits(p.negative).tobytes() + pack_uint(p.levels, _level_bits(p.s)))
    if isinstance(p, Dithered):
        return _encode_dithered(p, _value_code(p.norm), flag)
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

    if kind == DITHERED:
        return _decode_dithered(body, d, count, vdt, flag)
    if kind == PERMK:
        return _decode_permk(body, d, count, vdt, flag)
    if kind == LOWRANK:
        return _decode_lowrank(body, d, count, vdt, flag)
    if kind != QUANTIZED and kind != SPARSE and count:
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
    nsign = _nbytes(d)
    if kind == SIGNS:
        _need(body.shape[0], vdt.itemsize + nsign)
        scale = _finite(body[: vdt.itemsize].view(vdt), "scale").astype(native)[0]
        return Signs(d, scale, _signs(body[vdt.itemsize:], d), flag)
    if kind == NATURAL:
        ed = np.dtype("<i1") if vc == 1 else np.dtype("<i2")
        _need(body.shape[0], vdt.itemsize + nsign + d * ed.itemsize)
        scale = _finite(body[: vdt.itemsize].view(vdt), "scale").astype(native)[0]
        neg = _signs(body[vdt.itemsize: vdt.itemsize + nsign], d)
        exps = body[vdt.itemsize + nsign:].view(ed).astype(np.int16)
        info = np.finfo(vdt)
        zero = exps == (-128 if vc == 1 else Natural.ZERO)
        if np.any((exps[~zero] < info.minexp) | (exps[~zero] >= info.maxexp)):
            raise WireError("natural-compression exponent out of range")
        exps[zero] = Natural.ZERO
        return Natural(d, scale, neg, exps, flag)
    if kind == QUANTIZED:
        s = count
        if not 1 <= s <= 65535:
            raise WireError(f"bad number of levels {s}")
        bits = _level_bits(s)
        _need(body.shape[0], vdt.itemsize + nsign + _nbytes(d * bits))
        norm = _finite(body[: vdt.itemsize].view(vdt), "norm").astype(native)[0]
        if norm < 0:
            raise WireError("negative norm")
        neg = _signs(body[vdt.itemsize: vdt.itemsize + nsign], d)
        lv = body[vdt.itemsize + nsign:]
        if bits != 8:
            _check_padding(lv, d * bits)
        levels = unpack_uint(lv, d, bits)
        if np.any(levels > s):
            raise WireError("quantisation level above s")
        return Quantized(d, norm, s, neg, levels.astype(np.uint8 if s < 256 else np.uint16), flag)
    raise WireError(f"unknown message kind {kind}")
