"""The fast host paths of natural compression, QSGD and RandK return what the
original whole-vector code returned, bit for bit, and use the random stream
exactly as it did: for the same x and the same Generator state, the same
payload (every array and scalar, dtypes included) and the same Generator
state afterwards -- also when natural compression raises on an overflow.

The original ``compress`` methods are kept below, verbatim, as the reference.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from psmpi.backend import device_of, is_device_array
from psmpi.compressors import make_compressor
from psmpi.compressors import natural as N
from psmpi.compressors import randk as R
from psmpi.compressors.payload import Natural, Quantized, Sparse


# ------------------------------------------------ the original implementations ---
def natural_compress_original(self, x, rng):
    info = np.finfo(self.value_dtype)
    mag = np.abs(x)
    mant, e = np.frexp(mag)  # mag = mant * 2^e, mant in [0.5, 1)  # noqa: RUF059 (verbatim)
    e = e - 1  # mag in [2^e, 2^(e+1))
    low = np.ldexp(1.0, e)
    p_up = np.where(mag > 0, (mag - low) / np.where(mag > 0, low, 1.0), 0.0)
    e = e + (rng.random(x.shape[0]) < p_up)
    exps = e.astype(np.int16)
    exps[(mag == 0) | (e < info.minexp)] = Natural.ZERO
    if np.any(e[mag > 0] > info.maxexp - 1):
        raise FloatingPointError("natural compression: value overflows the wire dtype")
    scale = self.value_dtype.type(self.scale)
    return Natural(self.d, scale, np.signbit(x), exps)


def qsgd_compress_original(self, x, rng):
    dt = np.uint8 if self.s < 256 else np.uint16
    norm = float(np.linalg.norm(x))
    sent = self.wire_values(np.array([norm]))[0]  # the norm on the wire, times scale (1/(omega+1) if contractive)
    if norm == 0:
        return Quantized(self.d, sent, self.s, np.zeros(self.d, bool), np.zeros(self.d, dt))
    r = np.abs(x) * (self.s / norm)
    lo = np.floor(r)
    levels = lo + (rng.random(self.d) < (r - lo))
    np.minimum(levels, self.s, out=levels)
    return Quantized(self.d, sent, self.s, np.signbit(x), levels.astype(dt))


def randk_compress_original(self, x, rng):
    idx = np.sort(rng.choice(self.d, self.k, replace=False))  # drawn on the host: the same stream everywhere
    vals = x[device_of(x).asarray(idx) if is_device_array(x) else idx]
    return Sparse(self.d, idx, self.wire_values(vals * (self.d / self.k)))


ORIGINAL = {"natural": natural_compress_original, "qsgd": qsgd_compress_original, "randk": randk_compress_original}


# ------------------------------------------------------------------ helpers ---
def bits(v):
    """A field as (type, dtype, shape, bytes): equal exactly when bit-identical (NaN included)."""
    if isinstance(v, (np.ndarray, np.generic)):
        a = np.asarray(v)
        return type(v), a.dtype, a.shape, a.tobytes()
    return type(v), v


def same_state(a, b) -> bool:
    """Two ``bit_generator.state`` dicts are equal (MT19937's holds an array)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b) and np.asarray(a).dtype == np.asarray(b).dtype
    return type(a) is type(b) and a == b


def outcome(fn, comp, x, seed):
    """(payload fields or the exception, the Generator's state afterwards)."""
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN -> integer casts, in both versions alike
        try:
            p = fn(comp, x, rng)
            got = (type(p).__name__, [(f.name, bits(getattr(p, f.name))) for f in dataclasses.fields(p)])
        except FloatingPointError as e:
            got = ("raised", type(e), str(e))
    return got, rng.bit_generator.state


def assert_same_as_original(comp, x, seed, what=""):
    name = comp.name
    new = outcome(lambda c, x, rng: c.compress(x, rng), comp, x, seed)
    old = outcome(ORIGINAL[name], comp, x, seed)
    assert new[0] == old[0], (name, comp.spec, what, x.dtype, x.shape)
    assert same_state(new[1], old[1]), ("generator state", name, comp.spec, what)
    return new[0]


B = N.BLOCK
DIMS = (1, 2, 7, 1000, B - 1, B, B + 1, 2 * B + 17)
F32 = np.finfo(np.float32)


def vectors(d, seed=0):
    """Named inputs of dimension d, the edge cases of both wire dtypes included."""
    rng = np.random.default_rng([seed, d])
    n = rng.standard_normal(d)
    signs = rng.choice([-1.0, 1.0], d)
    out = {
        "normal": n,
        "wide": signs * rng.lognormal(0.0, 20.0, d),  # 1e-9 .. 1e9 and beyond
        "zeros": np.zeros(d),
        "signed-zeros": np.where(rng.random(d) < 0.5, -0.0, 0.0),
        "sparse": np.where(rng.random(d) < 0.05, n, 0.0),
        "powers-of-two": signs * np.ldexp(1.0, rng.integers(-30, 30, d)),  # p_up = 0 exactly
        "ties": 0.7 * signs,
        "float64-subnormal": n * 1e-310,
        "below-float32-normal": n * 1e-39,  # normal float64, below float32's smallest normal
        "around-float32-minexp": signs * np.ldexp(rng.uniform(1, 2, d), rng.integers(-129, -123, d)),
        "float32-huge-no-overflow": signs * np.ldexp(1.0, 127),  # exactly 2^127: never rounds up
        "float32-near-overflow": signs * rng.uniform(2.0**127, float(F32.max), d),  # rounds up to 2^128 -> raises
        "float64-near-overflow": signs * rng.uniform(2.0**1023, 1.7e308, d),
        "float64-max": signs * np.finfo(np.float64).max,
        "one-hot": np.where(np.arange(d) == d // 2, -2.5, 0.0),
        "with-inf": np.where(rng.random(d) < 0.01, np.inf * signs, n),
        "with-nan": np.where(rng.random(d) < 0.01, np.nan, n),
        "float32": n.astype(np.float32),
        "float32-subnormal": (n * 1e-42).astype(np.float32),
        "float32-wide": (signs * rng.lognormal(0.0, 15.0, d)).astype(np.float32),
        "float32-max": (signs * F32.max).astype(np.float32),
    }
    out["one-huge"] = n.copy()
    out["one-huge"][d // 3] = 3.0e38  # only a coordinate in one block can overflow float32
    return out


def compressors(spec, d):
    for dt in (np.float32, np.float64):
        c = make_compressor(spec, d, dt)
        yield c
        yield c.as_contractive()


# ----------------------------------------------------- the random stream ---
@pytest.mark.parametrize("bitgen", [np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox,
                                    np.random.SFC64])
def test_uniforms_drawn_in_blocks_equal_one_draw_and_leave_the_same_state(bitgen):
    for d in (1, 5, 1000, 3 * 4096 + 7):
        for n in (1, 3, 64, 4096, 10**6):
            one = np.random.Generator(bitgen(11))
            one.integers(0, 2**32, 3, dtype=np.uint32)  # a half-used 32-bit buffer in the state
            blocks = np.random.Generator(bitgen(11))
            blocks.integers(0, 2**32, 3, dtype=np.uint32)
            want = one.random(d)
            got = np.empty(d)
            seen = []

            def fn(s, u, got=got, seen=seen):
                seen.append((s, u.shape[0]))
                got[s:s + u.shape[0]] = u

            N.for_uniform_blocks(blocks, d, min(n, d), fn)
            assert np.array_equal(got, want)
            assert same_state(one.bit_generator.state, blocks.bit_generator.state)
            assert [s for s, _ in seen] == list(range(0, d, min(n, d))) and sum(m for _, m in seen) == d
            assert one.random() == blocks.random()


# ---------------------------------------------------------------- natural ---
@pytest.mark.parametrize("d", DIMS)
def test_natural_equals_the_original_bit_for_bit(d):
    raised = kept = 0
    for name, x in vectors(d).items():
        for comp in compressors("natural", d):
            for seed in (0, 1):
                got = assert_same_as_original(comp, x, seed, name)
                raised += got[0] == "raised"
                kept += got[0] != "raised"
    assert raised and kept  # both outcomes were compared


def test_natural_overflow_is_raised_after_every_uniform_is_drawn():
    d = 2 * B + 5
    x = np.full(d, 0.5)
    x[B + 3] = 3.0e38  # in [2^127, 2^128): rounds up to 2^128 with probability ~0.76
    comp = make_compressor("natural", d, np.float32)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        ref = np.random.default_rng(seed)
        u = ref.random(d)
        overflows = u[B + 3] < (3.0e38 - 2.0**127) / 2.0**127
        if overflows:
            with pytest.raises(FloatingPointError):
                comp.compress(x, rng)
        else:
            comp.compress(x, rng)
        assert same_state(rng.bit_generator.state, ref.bit_generator.state)
        assert_same_as_original(comp, x, seed)


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1000])
def test_natural_blocked_is_the_same_for_any_block_size(block):
    d = 1001
    for name, x in vectors(d, seed=3).items():
        for dt in (np.float32, np.float64):
            r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
            a = N._natural_blocked(x, r1, np.dtype(dt), block)
            b = N._natural_reference(x, r2, np.dtype(dt))
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2], (name, dt)
            assert a[1].dtype == np.int16 and a[0].dtype == bool
            assert same_state(r1.bit_generator.state, r2.bit_generator.state)


class Sub(np.ndarray):
    """An ndarray subclass: takes the whole-vector path."""


def test_natural_strided_and_subclass_inputs():
    d = B + 100
    x = np.random.default_rng(1).standard_normal(2 * d)
    comp = make_compressor("natural", d)
    assert_same_as_original(comp, x[::2], 0, "strided")
    assert_same_as_original(comp, x[:d].view(Sub), 0, "subclass")


# ------------------------------------------------------------------- qsgd ---
QSGD_SPECS = ("qsgd:1", "qsgd:2", "qsgd:4", "qsgd:255", "qsgd:256", "qsgd:300", "qsgd:65535")


@pytest.mark.parametrize("d", DIMS)
def test_qsgd_equals_the_original_bit_for_bit(d):
    vs = vectors(d)
    vs["tiny-norm"] = np.where(np.arange(d) == 0, 5e-324, 0.0)  # s / norm overflows to inf
    vs["float32-tiny-norm"] = np.where(np.arange(d) == 0, 1e-44, 0.0).astype(np.float32)
    vs["float32-norm-overflows"] = np.full(d, 1e20, np.float32)  # the float32 dot overflows: norm = inf
    vs["level-s"] = np.where(np.arange(d) == d - 1, 1.0, 1e-9)  # one coordinate at the norm: r ~ s
    for spec in QSGD_SPECS:
        for name, x in vs.items():
            for comp in compressors(spec, d):
                assert_same_as_original(comp, x, d + len(name), name)


@pytest.mark.parametrize("block", [1, 3, 64, 1000])
def test_qsgd_blocked_is_the_same_for_any_block_size(block):
    from psmpi.compressors import qsgd as Q

    d = 1001
    for name, x in vectors(d, seed=4).items():
        for s, dt in ((1, np.uint8), (4, np.uint8), (255, np.uint8), (300, np.uint16)):
            r1, r2 = np.random.default_rng(6), np.random.default_rng(6)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                norm = float(np.linalg.norm(x))
                if norm == 0:
                    continue
                c = s / norm
                a = Q._levels_blocked(x, r1, s, c, dt, block)
                b = Q._levels_reference(x, r2, s, c, dt)
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[1].dtype == dt, (name, s)
            assert same_state(r1.bit_generator.state, r2.bit_generator.state)


def test_qsgd_blocked_clips_at_s_like_the_original():
    """r = |x| c above s (a c larger than s / norm): the clipping branch, and
    blocks holding level s with a round-up bit, are compared too."""
    from psmpi.compressors import qsgd as Q

    d = 3000
    x = np.random.default_rng(8).standard_normal(d)
    for xx in (x, x.astype(np.float32)):
        for s, dt in ((1, np.uint8), (4, np.uint8), (255, np.uint8), (300, np.uint16), (65535, np.uint16)):
            for inflate in (1.0 + 1e-7, 1.3, 2.0, 5.0):
                c = s / float(np.abs(xx).max()) * inflate
                r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
                a = Q._levels_blocked(xx, r1, s, c, dt, 64)
                b = Q._levels_reference(xx, r2, s, c, dt)
                assert np.array_equal(a[1], b[1]) and a[1].dtype == dt, (s, inflate)
                assert np.array_equal(a[0], b[0]) and same_state(r1.bit_generator.state, r2.bit_generator.state)
                assert (a[1] == s).any()


# ------------------------------------------------------------------ randk ---
def ks(d):
    return sorted({1, 2, max(1, d // 1000), d // 100 - 1, d // 100, d // 100 + 1, d // 25 - 1, d // 25,
                   d // 25 + 1, d // 10 - 1, d // 10, d // 10 + 1, d // 4, d // 2, d - 1, d} & set(range(1, d + 1)))


@pytest.mark.parametrize("d", [1, 2, 10, 1000, 100_003, R.PAD_MIN_D - 1, R.PAD_MIN_D, 1_000_003])
def test_randk_equals_the_original_bit_for_bit(d):
    x64 = np.random.default_rng(d).standard_normal(d)
    inputs = {"float64": x64, "float32": x64.astype(np.float32)}
    if d < 200_000:
        inputs["with-nan-inf"] = np.where(np.arange(d) % 7 == 0, np.nan, np.where(np.arange(d) % 11 == 0, -np.inf,
                                                                                   x64))
    for k in ks(d):
        for name, x in inputs.items():
            for dt in (np.float32, np.float64):
                comp = make_compressor(f"randk:{k}", d, dt)
                for c in (comp, comp.as_contractive()):
                    got = assert_same_as_original(c, x, k, name)
                    fields = dict(got[1])
                    assert fields["indices"][1] == np.dtype(np.int64)


def test_sorted_distinct_equals_numpy_sort_on_every_path():
    rng = np.random.default_rng(9)
    for d in (1, 5, 64, 1000, R.PAD_MIN_D, R.PAD_MIN_D + 12_345, 2_000_000):
        for k in ks(d):
            idx = rng.choice(d, k, replace=False)
            got, want = R.sorted_distinct(idx, d), np.sort(idx)
            assert np.array_equal(got, want) and got.dtype == want.dtype and got.shape == (k,), (d, k)
            assert got.flags.c_contiguous
            held = got.nbytes if got.base is None else got.base.nbytes
            assert held == got.nbytes, (d, k)  # the padded path keeps no tail alive
    # indices of another integer type: sorted as before
    idx = rng.choice(10**6, 10**5, replace=False).astype(np.int32)
    got = R.sorted_distinct(idx, 10**6)
    assert np.array_equal(got, np.sort(idx)) and got.dtype == np.int32


def test_randk_on_an_emulated_device_array_takes_the_original_path(monkeypatch):
    from psmpi.backend import EmulatedArray, to_numpy

    monkeypatch.setenv("PSMPI_EMULATE_GPU", "1")
    d = 10_000
    x = np.random.default_rng(2).standard_normal(d)
    comp = make_compressor("randk:10%", d)
    dev = x.view(EmulatedArray)
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    p = comp.compress(dev, r1)
    q = randk_compress_original(comp, dev, r2)
    assert is_device_array(p.values) == is_device_array(q.values)
    assert np.array_equal(p.indices, q.indices) and np.array_equal(to_numpy(p.values), to_numpy(q.values))
    assert same_state(r1.bit_generator.state, r2.bit_generator.state)
