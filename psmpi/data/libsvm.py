"""LIBSVM / svmlight text reader: a vectorised numpy parser.

The file is read in blocks of whole lines (plain, gzip, bzip2 or xz, told apart
by their magic bytes).  Each block is tokenised on the byte array at once:
token boundaries, the line of every token and the ``:`` of every feature come
from array operations, indices are parsed as digit columns, and values with
at most 19 significant digits and a small exponent take an exact fast path
(an integer mantissa times or divided by an exact power of ten, one correctly
rounded operation, so the result equals Python's ``float``); anything else
goes to numpy's string-to-float conversion.  No Python loop runs per token.

The matrix equals what ``sklearn.datasets.load_svmlight_file`` gives for the
same file (indices 1-based, explicit zeros kept, comments after ``#`` and a
leading ``qid:N`` ignored).  Bad input raises :class:`DataError` with one
line ``FILE:LINE: what is wrong``.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .core import DataError

BLOCK_BYTES = 16 << 20  # text parsed per block (bounded memory for any file size)

_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\n\r\x0b\x0c")] = True
_POW10 = np.array([10.0 ** k for k in range(23)])  # exact doubles
_MANT_EXACT = float(2 ** 53)


@dataclass
class Block:
    """Rows parsed from one block of lines."""

    labels: np.ndarray  # float64 (rows,)
    row_nnz: np.ndarray  # int64 (rows,)
    indices: np.ndarray  # int64, 0-based column of each value
    data: np.ndarray  # float64
    row_lines: np.ndarray  # 1-based line number of each row
    n_lines: int  # newlines in the block


class _Bad(Exception):
    def __init__(self, line, message):
        super().__init__(message)
        self.line = line
        self.message = message


# ------------------------------------------------------------ opening files ---
def open_text(path: str):
    """(binary stream of the text, raw file) for a plain or compressed file."""
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a LIBSVM file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw, mode="rb"), raw
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, mode="rb"), raw
    if magic.startswith(b"\x89HDF"):
        raw.close()
        raise DataError(f"{path}: is an HDF5 file, not LIBSVM text")
    return raw, raw


def iter_blocks(path: str, block_bytes: int | None = None, progress=None):
    """Yield :class:`Block` s of whole lines; ``progress(raw_bytes_read)`` after each."""
    block_bytes = block_bytes or BLOCK_BYTES
    f, raw = open_text(path)
    try:
        carry = b""
        line0 = 0
        while True:
            try:
                chunk = f.read(block_bytes)
            except (OSError, EOFError, lzma.LZMAError) as e:
                raise DataError(f"{path}: cannot decompress ({e})") from None
            if not chunk:
                if carry.strip():
                    yield _parse(path, carry, line0)
                if progress is not None:
                    progress(raw.tell())
                break
            buf = carry + chunk if carry else chunk
            cut = buf.rfind(b"\n")
            if cut < 0:
                carry = buf
                continue
            head, carry = buf[:cut + 1], buf[cut + 1:]
            blk = _parse(path, head, line0)
            line0 += blk.n_lines
            if progress is not None:
                progress(raw.tell())
            yield blk
    finally:
        f.close()
        raw.close()


def _parse(path, buf, line0):
    try:
        return parse_block(buf, line0)
    except _Bad as e:
        raise DataError(f"{path}:{e.line}: {e.message}") from None


# ------------------------------------------------------------ number parsing ---
def _gather(b: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """(n, width) bytes of each token, zero-padded after its length."""
    M = np.zeros((len(starts), width), dtype=np.uint8)
    last = len(b) - 1
    for c in range(width):
        inside = lengths > c
        M[inside, c] = b[np.minimum(starts[inside] + c, last)]
    return M


def _parse_uint(M: np.ndarray, lengths: np.ndarray):
    """Unsigned decimal integers from digit columns -> (values int64, ok)."""
    n, width = M.shape
    val = np.zeros(n, dtype=np.int64)
    ok = (lengths >= 1) & (lengths <= 18)
    for c in range(width):
        inside = lengths > c
        d = M[:, c].astype(np.int64) - 48
        ok &= ~inside | ((d >= 0) & (d <= 9))
        val = np.where(inside, val * 10 + d, val)
    return val, ok


def _fast_float(M: np.ndarray, lengths: np.ndarray):
    """Exact decimal parsing for short plain numbers -> (values, done).

    ``[+-]?D*[.D*]([eE][+-]?D+)?`` with at most 19 digits, a mantissa below
    2**53 and a decimal exponent within +-22: one exact integer and one
    correctly rounded multiplication or division, i.e. Python's float().
    Tokens not handled (``done`` False) go to the general conversion.
    """
    n, width = M.shape
    mant = np.zeros(n, dtype=np.uint64)
    ndig = np.zeros(n, dtype=np.int64)
    frac = np.zeros(n, dtype=np.int64)
    dot = np.zeros(n, dtype=bool)
    in_exp = np.zeros(n, dtype=bool)
    exp_pos = np.full(n, -10, dtype=np.int64)
    exp = np.zeros(n, dtype=np.int64)
    exp_dig = np.zeros(n, dtype=np.int64)
    exp_neg = np.zeros(n, dtype=bool)
    ok = lengths >= 1
    ch0 = M[:, 0]
    neg = ch0 == 45
    for c in range(width):
        ch = M[:, c]
        inside = lengths > c
        d = ch.astype(np.int64) - 48
        isdig = inside & (d >= 0) & (d <= 9)
        is_sign = inside & ((ch == 43) | (ch == 45))
        is_dot = inside & (ch == 46)
        is_e = inside & ((ch == 101) | (ch == 69))
        m_dig = isdig & ~in_exp
        mant = np.where(m_dig, mant * np.uint64(10) + d.astype(np.uint64), mant)
        ndig += m_dig
        frac += m_dig & dot
        e_dig = isdig & in_exp
        exp = np.where(e_dig, exp * 10 + d, exp)
        exp_dig += e_dig
        ok &= ~(is_dot & (dot | in_exp))
        dot |= is_dot & ~in_exp
        sign_ok = (c == 0) | (in_exp & (exp_pos == c - 1))
        ok &= ~is_sign | sign_ok
        exp_neg |= is_sign & in_exp & (ch == 45)
        ok &= ~(is_e & in_exp)
        exp_pos = np.where(is_e & ~in_exp, c, exp_pos)
        in_exp |= is_e
        ok &= ~inside | isdig | is_sign | is_dot | is_e
    ok &= (ndig >= 1) & (ndig <= 19) & (~in_exp | ((exp_dig >= 1) & (exp_dig <= 4)))
    e10 = np.where(exp_neg, -exp, exp) - frac
    mf = mant.astype(np.float64)
    done = ok & (mf <= _MANT_EXACT) & (np.abs(e10) <= 22)
    k = np.clip(np.abs(e10), 0, 22)
    val = np.where(e10 >= 0, mf * _POW10[k], mf / _POW10[k])
    val = np.where(neg, -val, val)
    return val, done


def _general_float(b: np.ndarray, starts: np.ndarray, lengths: np.ndarray):
    """numpy's string-to-float for the remaining tokens -> (values, ok)."""
    vals = np.empty(len(starts))
    ok = np.ones(len(starts), dtype=bool)
    if not len(starts):
        return vals, ok
    width = 32
    remaining = np.arange(len(starts))
    while len(remaining):
        sel = remaining[lengths[remaining] <= width]
        if len(sel):
            M = _gather(b, starts[sel], lengths[sel], width)
            S = M.view(f"S{width}").ravel()
            try:
                vals[sel] = S.astype(np.float64)
            except ValueError:  # find which ones (error path only)
                for j, s in zip(sel, S):
                    try:
                        vals[j] = float(s)
                    except ValueError:
                        ok[j] = False
        remaining = remaining[lengths[remaining] > width]
        width *= 4
    return vals, ok


def parse_floats(b: np.ndarray, starts: np.ndarray, lengths: np.ndarray):
    """Decimal numbers at (starts, lengths) of the byte array -> (values, ok)."""
    vals = np.empty(len(starts))
    ok = np.ones(len(starts), dtype=bool)
    rest = np.ones(len(starts), dtype=bool)
    one = np.flatnonzero(lengths == 1)  # "1", "0": most values of binary-feature data
    digit = b[starts[one]].astype(np.int64) - 48
    single = (digit >= 0) & (digit <= 9)
    vals[one[single]] = digit[single]
    rest[one[single]] = False
    lo = 1
    for width in (4, 8, 16, 24):
        sel = np.flatnonzero((lengths > lo) & (lengths <= width))
        lo = width
        if not len(sel):
            continue
        v, done = _fast_float(_gather(b, starts[sel], lengths[sel], width), lengths[sel])
        vals[sel[done]] = v[done]
        rest[sel[done]] = False
    idx = np.flatnonzero(rest)
    v, good = _general_float(b, starts[idx], lengths[idx])
    vals[idx] = v
    ok[idx] = good
    return vals, ok


# ------------------------------------------------------------ tokenising ---
def _text(buf, start, end, limit=40):
    s = buf[start:end].decode("utf-8", "replace")
    return s if len(s) <= limit else s[:limit] + "..."


def parse_block(buf: bytes, line0: int = 0) -> Block:
    """Parse whole lines of LIBSVM text; errors raise _Bad(line, message)."""
    b = np.frombuffer(buf, dtype=np.uint8)
    if b"#" in buf:  # blank out comments: from '#' to the end of its line
        b = b.copy()
        hashes = np.flatnonzero(b == 35)
        nl_all = np.flatnonzero(b == 10)
        hline = np.searchsorted(nl_all, hashes)
        first_hash = np.full(len(nl_all) + 1, len(b), dtype=np.int64)
        np.minimum.at(first_hash, hline, hashes)
        cut = first_hash[np.searchsorted(nl_all, np.arange(len(b)))]
        b[(np.arange(len(b)) >= cut) & (b != 10)] = 32
    nl = np.flatnonzero(b == 10)
    tok = ~_SPACE[b]
    edge = np.diff(tok.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edge == 1)
    ends = np.flatnonzero(edge == -1)
    ntok = len(starts)
    errors = []  # (line, token number, message); the first one is raised

    tline = np.searchsorted(nl, starts)  # line of each token within the block (0-based)
    first = np.ones(ntok, dtype=bool)
    first[1:] = tline[1:] != tline[:-1]
    row_of = np.cumsum(first) - 1
    label_tok = np.flatnonzero(first)
    row_lines = line0 + tline[label_tok] + 1
    n_rows = len(label_tok)

    colons = np.flatnonzero(b == 58)
    tok_of_colon = np.searchsorted(starts, colons, side="right") - 1
    ncolon = np.bincount(tok_of_colon, minlength=ntok)
    colon_at = np.zeros(ntok, dtype=np.int64)
    colon_at[tok_of_colon[::-1]] = colons[::-1]  # the first ':' of each token

    def report(mask_idx, message_of):
        if len(mask_idx):
            t = int(mask_idx[0])
            errors.append((line0 + int(tline[t]) + 1, t, len(errors), message_of(t)))

    # labels
    bad = label_tok[ncolon[label_tok] > 0]
    report(bad, lambda t: f"expected a label at the start of the line, found '{_text(buf, starts[t], ends[t])}'")
    lab_ok_tok = label_tok[ncolon[label_tok] == 0]
    labels = np.zeros(n_rows)
    lv, lok = parse_floats(b, starts[lab_ok_tok], ends[lab_ok_tok] - starts[lab_ok_tok])
    labels[row_of[lab_ok_tok]] = lv
    report(lab_ok_tok[~lok], lambda t: f"label '{_text(buf, starts[t], ends[t])}' is not a number")
    fin = lok & ~np.isfinite(lv)
    report(lab_ok_tok[fin], lambda t: f"label '{_text(buf, starts[t], ends[t])}' is not finite")

    # features (a leading qid:N is skipped, as svmlight readers do)
    feat = np.flatnonzero(~first)
    if len(feat):
        after_label = first[feat - 1]
        s = starts[feat]
        is_qid = after_label & (ends[feat] - s > 4)
        for k, ch in enumerate(b"qid:"):
            is_qid &= b[np.minimum(s + k, len(b) - 1)] == ch
        feat = feat[~is_qid]
    report(feat[ncolon[feat] != 1],
           lambda t: f"malformed token '{_text(buf, starts[t], ends[t])}' (expected INDEX:VALUE)")
    feat = feat[ncolon[feat] == 1]
    c = colon_at[feat]
    ilen = c - starts[feat]
    vstart = c + 1
    vlen = ends[feat] - vstart
    report(feat[(ilen == 0) | (vlen == 0)],
           lambda t: f"malformed token '{_text(buf, starts[t], ends[t])}' (expected INDEX:VALUE)")
    ok = (ilen > 0) & (vlen > 0)
    width = int(min(ilen.max(initial=1), 19))
    idx, iok = _parse_uint(_gather(b, starts[feat], np.minimum(ilen, 19), width), ilen)
    iok &= ok

    def bad_index(t):
        s = _text(buf, starts[t], colon_at[t])
        if s.startswith("-") and s[1:].isdigit():
            return f"feature index {s} is below 1 (LIBSVM indices start at 1)"
        if s.isdigit():
            return f"feature index {s} is too large"
        return f"feature index '{s}' is not an integer (in '{_text(buf, starts[t], ends[t])}')"

    report(feat[ok & ~iok], bad_index)
    report(feat[iok & (idx < 1)], lambda t: "feature index 0 is below 1 (LIBSVM indices start at 1)")
    vals = np.zeros(len(feat))
    vok = np.zeros(len(feat), dtype=bool)
    okv = np.flatnonzero(ok)
    vals[okv], vok[okv] = parse_floats(b, vstart[okv], vlen[okv])
    report(feat[ok & ~vok],
           lambda t: f"value '{_text(buf, colon_at[t] + 1, ends[t])}' is not a number (in '{_text(buf, starts[t], ends[t])}')")
    report(feat[ok & vok & ~np.isfinite(vals)],
           lambda t: f"value '{_text(buf, colon_at[t] + 1, ends[t])}' is not finite (in '{_text(buf, starts[t], ends[t])}')")
    good = iok & (idx >= 1)
    rows = row_of[feat]
    same_row = rows[1:] == rows[:-1]
    both = good[1:] & good[:-1]
    disorder = np.flatnonzero(same_row & both & (idx[1:] <= idx[:-1]))
    if len(disorder):
        j = int(disorder[0])
        report(feat[j + 1:j + 2], lambda t: f"feature indices must increase: {idx[j + 1]} after {idx[j]}")
    if errors:
        line, _, _, message = min(errors)
        raise _Bad(line, message)
    return Block(labels, np.bincount(rows, minlength=n_rows).astype(np.int64), idx - 1, vals, row_lines, len(nl))


# ------------------------------------------------------------ whole files ---
def read_libsvm(path: str, n_features: int | None = None, progress=None):
    """The whole file -> (CSR matrix float64, labels float64)."""
    blocks = list(iter_blocks(str(path), progress=progress))
    labels = np.concatenate([k.labels for k in blocks]) if blocks else np.zeros(0)
    if not len(labels):
        raise DataError(f"{path}: empty file (no data lines)")
    indices = np.concatenate([k.indices for k in blocks])
    data = np.concatenate([k.data for k in blocks])
    indptr = np.concatenate([[0], np.cumsum(np.concatenate([k.row_nnz for k in blocks]))])
    d = check_features(path, blocks, n_features)
    X = sp.csr_matrix((data, indices, indptr), shape=(len(labels), d))
    return X, labels


def check_features(path, blocks, n_features):
    """The number of features: given (and checked) or the largest index."""
    top = max((int(k.indices.max()) + 1 for k in blocks if len(k.indices)), default=0)
    if n_features is None:
        if top == 0:
            raise DataError(f"{path}: no feature values in the file")
        return top
    n_features = int(n_features)
    if top > n_features:
        for k in blocks:
            over = np.flatnonzero(k.indices >= n_features)
            if len(over):
                row = np.searchsorted(np.cumsum(k.row_nnz), over[0], side="right")
                raise DataError(f"{path}:{k.row_lines[row]}: feature index {k.indices[over[0]] + 1} "
                                f"exceeds --n-features {n_features}")
    return n_features


def exact_text(v: float) -> str:
    """The shortest text that reads back as exactly ``v``: Python's shortest
    round-trip digits without a trailing '.0' or exponent padding
    (1.0 -> '1', -0.0 -> '-0', 1e-05 -> '1e-5', 1e+16 -> '1e16', 0.1 -> '0.1')."""
    s = repr(float(v))
    if s.endswith(".0"):
        s = s[:-2]
    mant, e, exp = s.partition("e")
    if e:
        s = f"{mant.removesuffix('.0')}e{int(exp)}"
    return s


def write_libsvm(path: str, X, labels) -> None:
    """LIBSVM text with values written exactly in their shortest form (:func:`exact_text`), atomically."""
    X = sp.csr_matrix(X)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            for i in range(X.shape[0]):
                a, z = X.indptr[i], X.indptr[i + 1]
                head = exact_text(labels[i])
                f.write(" ".join([head] + [f"{j + 1}:{exact_text(v)}" for j, v in zip(X.indices[a:z], X.data[a:z])]))
                f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
