"""The message codec: every worker message becomes bytes here and back.

Layout (little endian)::

    byte 0      magic 0xEF
    byte 1      version (1)
    byte 2      kind: 0 empty, 1 dense, 2 sparse, 3 signs, 4 natural, 5 quantized
    byte 3      value dtype code (1 float32, 2 float64) | index width code << 4
                | method flag << 7
    varint      d, the dimension
    varint      count: nonzeros (sparse), levels s (quantized), else 0
    body        kind specific, see ``_BODY``

Sparse indices are strictly increasing and written with the narrowest unsigned
integer width that holds d - 1 (1, 2, 4 or 8 bytes).  Sign bits are packed
eight per byte; natural-compression exponents are one byte (float32) or two
(float64); quantisation levels use ceil(log2(s+1)) bits each, packed.

``decode`` validates everything it reads: magic, version, kind, dtype, sizes
against the buffer length, indices in [0, d) and increasing, finite values.
A malformed message raises :class:`WireError`, never a wrong vector.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..compressors.payload import Dense, Empty, Natural, Payload, Quantized, Signs, Sparse

MAGIC = 0xEF
VERSION = 1
EMPTY, DENSE, SPARSE, SIGNS, NATURAL, QUANTIZED = range(6)
_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f8")}
_DTYPE_CODES = {np.dtype(np.float32): 1, np.dtype(np.float64): 2}
_IDX = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 3: np.dtype("<u4"), 4: np.dtype("<u8")}


class WireError(ValueError):
    """A message that does not decode to a valid payload."""


def index_code(d: int) -> int:
    for code, dt in _IDX.items():
        if d - 1 <= np.iinfo(dt).max:
            return code
    raise WireError(f"dimension {d} too large")


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


def _value_code(arr_or_scalar) -> int:
    dt = np.asarray(arr_or_scalar).dtype
    code = _DTYPE_CODES.get(np.dtype(dt))
    if code is None:
        raise WireError(f"values of dtype {dt} cannot go on the wire (float32 or float64)")
    return code


def encode(p: Payload) -> bytes:
    """Bytes of a payload (the exact bytes handed to MPI)."""
    out = bytearray(_encode(p))
    if p.flag:
        out[3] |= 0x80
    return bytes(out)


def _encode(p: Payload) -> bytes:
    d = p.d
    if isinstance(p, Empty):
        return bytes((MAGIC, VERSION, EMPTY, 0)) + _varint(d) + _varint(0)
    if isinstance(p, Dense):
        vc = _value_code(p.values)
        return bytes((MAGIC, VERSION, DENSE, vc)) + _varint(d) + _varint(0) + p.values.astype(_DTYPES[vc]).tobytes()
    if isinstance(p, Sparse):
        vc = _value_code(p.values)
        ic = index_code(d)
        k = len(p.indices)
        return (bytes((MAGIC, VERSION, SPARSE, vc | ic << 4)) + _varint(d) + _varint(k)
                + p.indices.astype(_IDX[ic]).tobytes() + p.values.astype(_DTYPES[vc]).tobytes())
    if isinstance(p, Signs):
        vc = _value_code(p.scale)
        return (bytes((MAGIC, VERSION, SIGNS, vc)) + _varint(d) + _varint(0)
                + np.asarray(p.scale, _DTYPES[vc]).tobytes() + np.packbits(p.negative).tobytes())
    if isinstance(p, Natural):
        vc = _value_code(p.scale)
        ed = np.dtype("<i1") if vc == 1 else np.dtype("<i2")
        exps = p.exponents
        if vc == 1:
            exps = np.where(exps == Natural.ZERO, -128, exps)
        return (bytes((MAGIC, VERSION, NATURAL, vc)) + _varint(d) + _varint(0)
                + np.asarray(p.scale, _DTYPES[vc]).tobytes() + np.packbits(p.negative).tobytes()
                + exps.astype(ed).tobytes())
    if isinstance(p, Quantized):
        vc = _value_code(p.norm)
        return (bytes((MAGIC, VERSION, QUANTIZED, vc)) + _varint(d) + _varint(p.s)
                + np.asarray(p.norm, _DTYPES[vc]).tobytes() + np.packbits(p.negative).tobytes()
                + pack_uint(p.levels, _level_bits(p.s)))
    raise WireError(f"cannot encode {type(p).__name__}")


def _finite(v, what):
    if not np.all(np.isfinite(v)):
        raise WireError(f"non-finite {what} in message")
    return v


def decode(buf, d_expected: int | None = None) -> Payload:
    """Payload of a message; raises WireError on anything malformed."""
    p = _decode(buf, d_expected)
    flag = bool(np.frombuffer(buf, np.uint8, count=4)[3] & 0x80)
    return dataclasses.replace(p, flag=True) if flag else p


def _decode(buf, d_expected):
    mv = np.frombuffer(buf, dtype=np.uint8)
    if len(mv) < 6:
        raise WireError(f"message of {len(mv)} bytes is shorter than a header")
    if mv[0] != MAGIC:
        raise WireError("bad magic byte")
    if mv[1] != VERSION:
        raise WireError(f"unsupported wire version {mv[1]}")
    kind, flags = int(mv[2]), int(mv[3]) & 0x7F
    d, pos = _read_varint(mv, 4)
    count, pos = _read_varint(mv, pos)
    if d < 1 or (d_expected is not None and d != d_expected):
        raise WireError(f"message dimension {d} != expected {d_expected}")
    body = mv[pos:]
    vc, ic = flags & 0x0F, flags >> 4
    if kind != EMPTY and vc not in _DTYPES:
        raise WireError(f"bad value dtype code {vc}")
    vdt = _DTYPES.get(vc)

    def need(nbytes):
        if len(body) != nbytes:
            raise WireError(f"body has {len(body)} bytes, header implies {nbytes}")

    if kind == EMPTY:
        need(0)
        if flags or count:
            raise WireError("bad empty message header")
        return Empty(d)
    if kind == DENSE:
        need(d * vdt.itemsize)
        return Dense(_finite(body.view(vdt).astype(vdt.newbyteorder("=")), "value"))
    if kind == SPARSE:
        if ic not in _IDX or ic != index_code(d):
            raise WireError(f"bad index width code {ic} for d={d}")
        idt = _IDX[ic]
        if count > d:
            raise WireError(f"sparse message with {count} > d={d} entries")
        need(count * (idt.itemsize + vdt.itemsize))
        idx = body[: count * idt.itemsize].view(idt).astype(np.int64)
        vals = body[count * idt.itemsize:].view(vdt).astype(vdt.newbyteorder("="))
        if count and (idx[-1] >= d or np.any(np.diff(idx) <= 0)):
            raise WireError("sparse indices out of range or not strictly increasing")
        return Sparse(d, idx, _finite(vals, "value"))
    nsign = (d + 7) // 8
    if kind == SIGNS:
        need(vdt.itemsize + nsign)
        scale = _finite(body[: vdt.itemsize].view(vdt), "scale")[0]
        neg = np.unpackbits(body[vdt.itemsize:], count=d).astype(bool)
        return Signs(d, scale, neg)
    if kind == NATURAL:
        ed = np.dtype("<i1") if vc == 1 else np.dtype("<i2")
        need(vdt.itemsize + nsign + d * ed.itemsize)
        scale = _finite(body[: vdt.itemsize].view(vdt), "scale")[0]
        neg = np.unpackbits(body[vdt.itemsize: vdt.itemsize + nsign], count=d).astype(bool)
        exps = body[vdt.itemsize + nsign:].view(ed).astype(np.int16)
        info = np.finfo(vdt)
        zero = exps == (-128 if vc == 1 else Natural.ZERO)
        if np.any((exps[~zero] < info.minexp) | (exps[~zero] >= info.maxexp)):
            raise WireError("natural-compression exponent out of range")
        exps[zero] = Natural.ZERO
        return Natural(d, scale, neg, exps)
    if kind == QUANTIZED:
        s = count
        if not 1 <= s <= 65535:
            raise WireError(f"bad number of levels {s}")
        bits = _level_bits(s)
        need(vdt.itemsize + nsign + (d * bits + 7) // 8)
        norm = _finite(body[: vdt.itemsize].view(vdt), "norm")[0]
        if norm < 0:
            raise WireError("negative norm")
        neg = np.unpackbits(body[vdt.itemsize: vdt.itemsize + nsign], count=d).astype(bool)
        levels = unpack_uint(body[vdt.itemsize + nsign:], d, bits)
        if np.any(levels > s):
            raise WireError("quantisation level above s")
        return Quantized(d, norm, s, neg, levels.astype(np.uint8 if s < 256 else np.uint16))
    raise WireError(f"unknown message kind {kind}")
