"""The message codec: every payload survives encode/decode exactly, and any
malformed message is refused with WireError (never a wrong vector, never
another exception).

Only the public API is used (``encode(payload) -> bytes``,
``decode(bytes, d) -> payload``); no byte layout is assumed.  Bad messages are
made from valid ones: truncated, extended, bytes mutated, header bytes
altered, or payloads that break the payload invariants.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psmpi.compressors import (COMPOSITION_EXAMPLES, Composed, Dense, Dithered, Empty, LowRank, Natural, Permuted,
                               Quantized, Sparse, example_compressor, make_compressor)
from psmpi.wire import WireError, decode, encode

DTYPES = (np.float32, np.float64)
SPECS = ("identity", "topk:1", "topk:10%", "topk:100%", "randk:3", "randk:50%", "sign", "natural", "qsgd:1",
         "qsgd:4", "qsgd:255", "qsgd:256", "qsgd:65535", "natural-dithering:1", "natural-dithering:4",
         "natural-dithering:60", "bernoulli:0.01", "bernoulli:0.5", "bernoulli:1", "terngrad", "permk", "powersgd:1",
         "powersgd:3") + COMPOSITION_EXAMPLES
DIMS = (1, 3, 8, 255, 256, 257, 70000)  # around every index-width boundary the codec may use


def vector(d, seed=0):
    rng = np.random.default_rng([seed, d])
    return rng.standard_normal(d) * rng.lognormal(0, 2, d)


def payload(spec, d, dtype, seed=0, contractive=False):
    first, plus, second = spec.partition("+")
    name, _, p = first.partition(":")
    if name in ("topk", "randk") and not p.endswith("%") and int(p) > d:
        spec = f"{name}:{d}{plus}{second}"
    c = example_compressor(spec, d, dtype)  # permk: worker 0 of 4; powersgd: a sqrt(d) x sqrt(d) matrix and a bias
    if contractive:
        c = c.as_contractive()
    return c.compress(vector(d, seed), np.random.default_rng(seed))


def assert_valid(p, d):
    """What any decoded payload must satisfy."""
    assert p.d == d
    dense = p.to_dense()
    assert dense.shape == (d,) and np.all(np.isfinite(dense))
    idx = getattr(p, "indices", None)
    if idx is not None and len(idx):
        idx = np.asarray(idx)
        assert idx[0] >= 0 and idx[-1] < d and np.all(np.diff(idx) > 0)


# ------------------------------------------------------------- round trips ---
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", SPECS)
def test_round_trip_reproduces_every_compressor_payload_exactly(spec, dtype):
    for d in DIMS:
        for contractive in (False, True):
            p = payload(spec, d, dtype, seed=d, contractive=contractive)
            q = decode(encode(p), d)
            assert type(q) is type(p)
            np.testing.assert_array_equal(q.to_dense(), p.to_dense(), err_msg=f"{spec} d={d}")
            assert q.flag is False
            # also without telling decode the dimension
            np.testing.assert_array_equal(decode(encode(p)).to_dense(), p.to_dense())


@pytest.mark.parametrize("spec", ["identity", "topk:2", "sign", "natural", "qsgd:4", "natural-dithering:3", "terngrad",
                                  "bernoulli:0.5", "topk:4+natural", "permk", "powersgd:1"])
def test_method_flag_bit_survives_the_round_trip(spec):
    p = dataclasses.replace(payload(spec, 20, np.float32), flag=True)
    q = decode(encode(p), 20)
    assert q.flag is True
    np.testing.assert_array_equal(q.to_dense(), p.to_dense())


@pytest.mark.parametrize("d", [1, 300, 70000])
def test_empty_message_decodes_to_zero_vector(d):
    for flag in (False, True):
        q = decode(encode(Empty(d, flag)), d)
        assert q.flag is flag
        np.testing.assert_array_equal(q.to_dense(), np.zeros(d))


@pytest.mark.parametrize("dtype", DTYPES)
def test_float64_values_travel_without_rounding(dtype):
    x = vector(50) / 3.0
    q = decode(encode(Dense(x.astype(dtype))), 50).to_dense()
    if dtype == np.float64:
        np.testing.assert_array_equal(q, x)
    else:
        np.testing.assert_array_equal(q, x.astype(np.float32))
        assert not np.array_equal(q, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d,k", [(100, 1), (100, 10), (1000, 10), (70000, 700)])
def test_sparse_message_carries_its_indices_not_just_values(d, k, dtype):
    """A TopK message costs more than its K values: the indices travel too."""
    p = make_compressor(f"topk:{k}", d, dtype).compress(vector(d), np.random.default_rng(0))
    assert len(encode(p)) > k * np.dtype(dtype).itemsize


def test_dense_message_costs_at_least_its_values():
    for dtype in DTYPES:
        assert len(encode(Dense(np.zeros(100, dtype)))) >= 100 * np.dtype(dtype).itemsize


# --------------------------------------------------------- malformed input ---
def valid_messages():
    out = []
    for spec in ("identity", "topk:1", "topk:3", "randk:2", "sign", "natural", "qsgd:4",  # topk:1: its own decoder path
                 "natural-dithering:3", "terngrad", "bernoulli:0.5", "topk:5+natural", "topk:5+natural-dithering:2",
                 "permk", "powersgd:1"):
        for dtype in DTYPES:
            out.append((spec, dtype, 20, encode(payload(spec, 20, dtype))))
    out.append(("empty", np.float32, 20, encode(Empty(20))))
    return out


MESSAGES = valid_messages()
IDS = [f"{m[0]}-{np.dtype(m[1]).name}" for m in MESSAGES]


@pytest.mark.parametrize("msg", [m[3] for m in MESSAGES], ids=IDS)
def test_every_truncation_is_rejected(msg):
    for n in range(len(msg)):
        with pytest.raises(WireError):
            decode(msg[:n], 20)


@pytest.mark.parametrize("msg", [m[3] for m in MESSAGES], ids=IDS)
def test_trailing_bytes_are_rejected(msg):
    for extra in (b"\x00", b"\xff" * 3, msg):
        with pytest.raises(WireError):
            decode(msg + extra, 20)


@pytest.mark.parametrize("msg", [m[3] for m in MESSAGES], ids=IDS)
def test_message_for_another_dimension_is_rejected(msg):
    for d in (19, 21, 1, 10**6):
        with pytest.raises(WireError):
            decode(msg, d)


@pytest.mark.parametrize("msg", [m[3] for m in MESSAGES], ids=IDS)
def test_first_bytes_altered_are_rejected_or_decode_validly(msg):
    """Every value of each of the first three bytes (magic, version, kind in
    any sane header) either fails with WireError or, for the one original
    value, decodes validly; at most a few alternatives may decode (another
    valid kind of the same size is improbable but allowed)."""
    for pos in range(3):
        accepted = list(decoded_byte_variants(msg, pos))
        assert len(accepted) <= 3, pos


def decoded_byte_variants(msg, pos):
    """The payloads (each checked valid) of ``msg`` with byte ``pos`` set to
    each value 0..255, where the decoder accepts it (else WireError)."""
    for v in range(256):
        bad = bytearray(msg)
        bad[pos] = v
        try:
            p = decode(bytes(bad), 20)
        except WireError:
            continue
        assert_valid(p, 20)
        yield p


def test_garbage_and_empty_buffers_are_rejected():
    for buf in (b"", b"\x00", b"\x00" * 64, b"\xff" * 64, b"hello world, this is not a message"):
        with pytest.raises(WireError):
            decode(buf, 20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(MESSAGES) - 1), data=st.data())
def test_any_mutated_message_is_rejected_or_decodes_to_a_valid_payload(which, data):
    """Fuzz: flip bytes anywhere.  The decoder may accept a message that is
    still well formed (e.g. a changed value), but then the payload is valid:
    dimension d, finite values, indices in range and strictly increasing.
    Anything else must be a WireError, not some other exception."""
    msg = bytearray(MESSAGES[which][3])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(msg) - 1))
        msg[pos] = data.draw(st.integers(0, 255))
    try:
        p = decode(bytes(msg), 20)
    except WireError:
        return
    assert_valid(p, 20)


@pytest.mark.parametrize("spec", ["natural-dithering:3", "terngrad", "topk:5+natural-dithering:2", "natural", "qsgd:4",
                                  "qsgd:300", "topk:5+qsgd:2"])
def test_every_single_byte_change_of_a_levelled_message_is_rejected_or_decodes_validly(spec):
    """Exhaustive over positions and values of one byte (the number of symbols,
    counts, subset codes, Rice bits, signs): a WireError or a valid payload,
    never another exception."""
    for dtype in DTYPES:
        msg = encode(payload(spec, 20, dtype))
        for pos in range(len(msg)):
            for p in decoded_byte_variants(msg, pos):
                p = p.inner if isinstance(p, Composed) else p
                if isinstance(p, (Dithered, Quantized)):
                    assert p.levels.max() <= p.s and p.levels.shape == (p.d,)
                if isinstance(p, Natural):
                    info = np.finfo(np.asarray(p.scale).dtype)
                    e = p.exponents[p.exponents != Natural.ZERO]
                    assert p.exponents.shape == (p.d,) and np.all((e >= info.minexp) & (e < info.maxexp))


# ---------------------------------------------- payloads that break the rules ---
def _refused(p, d):
    """encode may refuse, else decode must: either way a WireError."""
    with pytest.raises(WireError):
        decode(encode(p), d)


@pytest.mark.parametrize("indices", [[2, 12], [2, 10], [5, 3], [4, 4], [0, 0, 1], [9, 8]])
def test_out_of_range_or_non_increasing_sparse_indices_are_rejected(indices):
    d = 10
    _refused(Sparse(d, np.array(indices), np.ones(len(indices), np.float32)), d)


@pytest.mark.parametrize("d,indices", [(256, [3, 300]), (256, [3, 256]), (65536, [1, 65536 + 44]), (10, [-1, 3])])
def test_index_beyond_the_dimension_is_rejected_even_where_a_narrow_width_would_wrap_it(d, indices):
    """An encoder that casts indices to the narrowest width for d would turn
    300 into 44 for d = 256: a valid-looking wrong vector."""
    _refused(Sparse(d, np.array(indices), np.ones(2, np.float32)), d)


def test_top1_message_with_its_index_field_past_d_or_padding_set_is_rejected():
    """The one-index message is read straight from the bytes: d = 100 needs 7 bits,
    so the field can say 100..127 (past d), and its eighth bit is padding."""
    d = 100
    msg = bytearray(encode(Sparse(d, np.array([99]), np.ones(1, np.float32))))
    pos = len(msg) - 4 - 1  # the index byte, before the float32 value
    assert decode(bytes(msg), d).indices.tolist() == [99]
    for field, pad in ((100, 0), (127, 0), (5, 1)):
        msg[pos] = field << 1 | pad
        with pytest.raises(WireError):
            decode(bytes(msg), d)
    msg[pos] = 5 << 1
    assert decode(bytes(msg), d).indices.tolist() == [5]
    for bad in (np.nan, np.inf):
        _refused(Sparse(d, np.array([3]), np.array([bad], np.float32)), d)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_values_are_rejected(bad, dtype):
    v = np.ones(5, dtype)
    v[2] = bad
    _refused(Dense(v), 5)
    _refused(Sparse(10, np.array([1, 3, 4, 6, 9]), v), 10)
    for spec in ("sign", "natural", "qsgd:4", "natural-dithering:2", "terngrad"):
        p = make_compressor(spec, 5, dtype).compress(np.ones(5), np.random.default_rng(0))
        field = "scale" if spec in ("sign", "natural") else "norm"
        _refused(dataclasses.replace(p, **{field: np.asarray(bad, dtype)[()]}), 5)


def test_wire_error_is_a_value_error():
    assert issubclass(WireError, ValueError)


def test_dithered_payloads_that_break_the_rules_are_refused():
    neg = np.zeros(6, bool)
    for s_, levels in ((2, [0, 1, 3, 0, 0, 0]), (0, [0] * 6), (65, [0] * 6)):  # a level above s, s out of range
        _refused(Dithered(6, np.float32(1.0), s_, neg, np.array(levels, np.uint8)), 6)
    _refused(Dithered(6, np.float32(-1.0), 2, neg, np.ones(6, np.uint8)), 6)  # negative norm


def test_composed_payloads_that_break_the_rules_are_refused():
    inner = Dense(np.ones(2, np.float32))
    for idx in ([3, 3], [4, 2], [2, 10]):
        _refused(Composed(10, np.array(idx), inner), 10)
    _refused(Composed(10, np.array([1, 2, 3]), inner), 10)  # inner of another dimension
    _refused(Composed(10, np.array([1, 2]), Dense(np.ones(2, np.float32), True)), 10)  # inner flag
    nested = Composed(2, np.array([0, 1]), inner)
    _refused(Composed(10, np.array([1, 2]), nested), 10)  # composed inside composed


def test_permk_payloads_that_break_the_rules_are_refused():
    """n = 0, an index outside 0..n-1, d < n with n not a multiple of d, a key beyond 64 bits,
    or a number of values that is not the block's."""
    v4 = np.ones(4, np.float32)
    for d, n, index, key, vals in ((8, 0, 0, 5, v4), (8, 2, 2, 5, v4), (3, 4, 0, 5, np.ones(1, np.float32)),
                                   (8, 2, 0, 1 << 64, v4), (8, 2, 0, 5, np.ones(3, np.float32))):
        _refused(Permuted(d, n, index, key, np.arange(vals.shape[0]), vals), d)
    for bad in (np.nan, np.inf):
        _refused(Permuted(8, 2, 1, 5, np.arange(4), np.array([1, 2, bad, 4], np.float32)), 8)


def test_permk_message_whose_header_miscounts_the_block_is_rejected():
    """d = 10 among n = 4 workers: blocks of 1 to 3 coordinates (padding to 12); the count
    in the header must be the block's, so moving a value between messages cannot pass."""
    msgs = [encode(example_compressor("permk", 10, np.float32, index=i).compress(vector(10), None))
            for i in range(4)]
    assert sum(decode(m, 10).values.shape[0] for m in msgs) == 10
    for m in msgs:
        k = m[5]  # count: one-byte varints d=10 at byte 4, then K
        assert 1 <= k <= 3
        for wrong in {1, 2, 3} - {k}:
            bad = bytearray(m)
            bad[5] = wrong
            with pytest.raises(WireError):
                decode(bytes(bad + b"\0" * 4 * (wrong - k)) if wrong > k else bytes(bad[:len(bad) - 4 * (k - wrong)]),
                       10)  # the body holds as many values as the header says: only the block size can tell


def test_lowrank_payloads_that_break_the_rules_are_refused():
    """Segments that do not cover d, a rank above min(rows, cols), factors of the wrong shape,
    no segment at all, non-finite values."""
    f32 = np.float32
    p = np.ones((3, 1), f32)
    q = np.ones((4, 1), f32)
    _refused(LowRank(13, ((3, 4, 1),), ((p, q),)), 13)  # covers 12 of 13
    _refused(LowRank(12, ((3, 4, 4),), ((np.ones((3, 4), f32), np.ones((4, 4), f32)),)), 12)  # rank > 3
    _refused(LowRank(12, ((3, 4, 1),), ((p, np.ones((5, 1), f32)),)), 12)  # Q of 5 rows
    _refused(LowRank(12, ((3, 4, 1),), ((p,),)), 12)  # one factor for a low-rank segment
    _refused(LowRank(12, (), ()), 12)
    _refused(LowRank(12, ((3, 4, 1),), ((p, np.full((4, 1), np.nan, f32)),)), 12)
    ok = LowRank(14, ((3, 4, 1), (2, 1, 0)), ((p, q), (np.ones(2, f32),)))
    np.testing.assert_array_equal(decode(encode(ok), 14).to_dense(), np.ones(14))


def test_permk_message_claiming_a_dimension_beyond_memory_is_a_wire_error():
    """Like a levelled message, a PermK message is compact whatever its d, and decoding it
    draws a permutation of d entries: a d that cannot fit is refused as a WireError."""
    from psmpi.wire import codec as C

    msg = encode(example_compressor("permk", 10, np.float32, index=0).compress(vector(10), None))
    head = msg[:6]  # magic, version, kind, dtype, then one-byte varints d = 10 and K
    huge = C._header(C.PERMK, head[3], 1 << 40, head[5], False) + msg[6:]
    with pytest.raises(WireError, match="memory"):
        decode(huge)
