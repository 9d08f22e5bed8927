"""A round of same-layout sparse messages read at once (psmpi.wire.rows) gives what
decoding them one by one gives, value for value, and refuses (hands back to the
one-by-one path) everything ``decode`` refuses; the master's mean over those
payloads is the worker-order loop's, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from psmpi.compressors import Sparse, make_compressor
from psmpi.methods.base import mean_of
from psmpi.runtime.driver import BadMessage, Diverged, decode_all
from psmpi.wire import decode, encode
from psmpi.wire.rows import Rows, decode_rows


def round_of(spec, d, n, seed=0, flags=None, dtype=None):
    rng = np.random.default_rng(seed)
    comp = make_compressor(spec, d)
    out = []
    for j in range(n):
        p = comp.compress(rng.standard_normal(d), rng)
        if dtype is not None or flags is not None:
            p = Sparse(d, p.indices, p.values.astype(dtype or p.values.dtype), bool(flags and flags[j]))
        out.append(encode(p))
    return out


@pytest.mark.parametrize("spec,d", [("topk:1", 123), ("topk:1", 300), ("topk:1", 256), ("topk:5", 123),
                                    ("randk:7", 1000), ("topk:2", 2), ("topk:3", 1 << 20)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_round_read_at_once_equals_the_messages_decoded_one_by_one(spec, d, dtype):
    msgs = round_of(spec, d, 17, seed=d, flags=[j % 3 == 0 for j in range(17)], dtype=dtype)
    rows = decode_rows(msgs, d)
    assert isinstance(rows, Rows) and len(rows) == 17
    for j, (a, b) in enumerate(zip(rows, [decode(m, d) for m in msgs])):
        assert type(a) is type(b) is Sparse
        assert a.indices.dtype == b.indices.dtype and np.array_equal(a.indices, b.indices), j
        assert a.values.dtype == b.values.dtype and np.array_equal(a.values, b.values), j
        assert a.flag == b.flag == (j % 3 == 0)
    assert np.array_equal(rows.indices, np.stack([p.indices for p in rows]))


def test_the_mean_of_a_round_read_at_once_is_the_worker_order_loop_bit_for_bit():
    d = 50
    rng = np.random.default_rng(3)
    # many workers on few coordinates: every coordinate sums many values, so the order shows
    msgs = [encode(Sparse(d, np.sort(rng.choice(d, 4, replace=False)), rng.standard_normal(4) * 10.0 ** rng.integers(-8, 8, 4)))
            for _ in range(200)]
    rows = decode_rows(msgs, d)
    assert isinstance(rows, Rows)
    one_by_one = mean_of([decode(m, d) for m in msgs], d)
    assert np.array_equal(mean_of(rows, d), one_by_one)
    shuffled = mean_of([decode(m, d) for m in msgs[::-1]], d)
    assert not np.array_equal(shuffled, one_by_one)  # the check can see an order change


def test_rounds_without_one_sparse_layout_are_left_to_the_one_by_one_path():
    d = 1000
    top1 = round_of("topk:1", d, 4)
    assert decode_rows(top1[:1], d) is None  # one message: nothing to gain
    assert decode_rows(top1 + round_of("topk:2", d, 1), d) is None  # lengths differ
    assert decode_rows(top1 + [b""], d) is None  # a worker sat the round out
    assert decode_rows(round_of("identity", d, 3), d) is None  # dense
    assert decode_rows(round_of("topk:30%", d, 3), d) is None  # a bitmap / elias-fano support
    mixed = round_of("topk:1", d, 3, dtype="float64")[:1] + round_of("topk:1", d, 3, dtype="float32")[:1]
    assert decode_rows(mixed, d) is None  # dtypes differ (and so do lengths)
    assert decode_rows(top1, d + 1) is None  # another dimension


def _corrupt(msg: bytes, at: int, value: int) -> bytes:
    b = bytearray(msg)
    b[at] = value
    return bytes(b)


@pytest.mark.parametrize("fault", ["index past d", "not increasing", "padding", "nan", "magic", "version"])
def test_a_faulty_message_in_the_round_is_refused_and_named_by_the_one_by_one_path(fault):
    d, k = 123, 3  # w = 7 bits: 21 bits of planes in 3 bytes, 3 bits of padding
    msgs = round_of(f"topk:{k}", d, 6, seed=1)
    good = decode(msgs[4], d)
    head = len(msgs[4]) - 3 - 4 * k  # the header's bytes
    if fault in ("index past d", "not increasing"):
        idx = good.indices.copy()
        if fault == "index past d":
            idx[-1] = 125  # fits the 7-bit field, past d = 123
        else:
            idx[0], idx[1] = idx[1], idx[0]
        planes = np.packbits(((idx[None, :] >> np.arange(6, -1, -1)[:, None]) & 1).astype(np.uint8).ravel())
        bad = msgs[4][:head] + planes.tobytes() + msgs[4][head + 3:]
    elif fault == "padding":
        bad = _corrupt(msgs[4], head + 2, msgs[4][head + 2] | 0x01)
    elif fault == "nan":
        bad = encode(Sparse(d, good.indices, np.array([1.0, np.nan, 2.0], np.float32)))
    else:
        bad = _corrupt(msgs[4], 0 if fault == "magic" else 1, 0x00)
    msgs[4] = bad
    assert len(bad) == len(msgs[0])
    with pytest.raises(ValueError):
        decode(bad, d)
    assert decode_rows(msgs, d) is None
    err = Diverged if fault == "nan" else BadMessage
    with pytest.raises(err, match="worker 14" if err is BadMessage else "worker 14 sent non-finite"):
        decode_all(msgs, list(range(10, 16)), 7, d)
