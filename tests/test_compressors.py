"""Compressors: the class each one declares (contractive with alpha, or unbiased
with omega) checked statistically on many random vectors, and the registry.

Only the public API is used: ``make_compressor(spec, d, value_dtype)`` (and
``example_compressor``, which builds a compressor that needs a run setting --
permk's workers, powersgd's parameter blocks -- with its example setting),
``.compress(x, rng) -> payload``, ``payload.to_dense()``, ``.as_contractive()``.

Statistical checks use fixed seeds (so they are deterministic) and one-sided
confidence bounds of Z standard errors: a declared bound that is wrong by more
than the sampling noise fails, a correct one passes for any seed except with
probability ~1e-7 per check.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from psmpi.compressors import (REGISTRY, CompressorError, NoConstant, Setting, all_examples, example_compressor,
                               make_compressor)
from psmpi.compressors.payload import Composed, Dithered, LowRank, Permuted

DTYPES = (np.float32, np.float64)
DIMS = (1, 10, 64, 300)  # 300 > 256: sparse indices that do not fit a byte
Z = 5.5  # standard errors of slack in statistical bounds


def has_alpha(c) -> bool:
    try:
        return c.alpha > 0
    except NoConstant:
        return False


# every registered compressor's example specs (Compressor.examples) and the compositions', by declared class;
# biased ones without a known alpha (PowerSGD) apart
UNBIASED_SPECS = tuple(s for s in all_examples() if example_compressor(s, 300).unbiased)
BIASED_SPECS = tuple(s for s in all_examples() if not example_compressor(s, 300).unbiased
                     and has_alpha(example_compressor(s, 300)))
NO_ALPHA_SPECS = tuple(s for s in all_examples() if s not in UNBIASED_SPECS + BIASED_SPECS)


def rounding(dtype) -> float:
    """Relative slack for values rounded to the wire dtype (and float64 sums)."""
    return 8 * float(np.finfo(dtype).eps) + 1e-13


def test_vectors(d: int, seed: int = 0):
    """Named test vectors of dimension d: Gaussian, heavy-tailed, wide dynamic
    range, sparse, all-ties (equal magnitudes) and one-hot."""
    rng = np.random.default_rng([seed, d])
    signs = rng.choice([-1.0, 1.0], d)
    sparse = np.where(rng.random(d) < 0.1, rng.standard_normal(d), 0.0)
    sparse[rng.integers(d)] = 3.0  # at least one nonzero
    onehot = np.zeros(d)
    onehot[d // 2] = -2.5
    return {
        "gaussian": rng.standard_normal(d),
        "student-t(1.5)": rng.standard_t(1.5, d),
        "lognormal(3)": signs * rng.lognormal(0.0, 3.0, d),
        "sparse": sparse,
        "ties": 0.7 * signs,
        "onehot": onehot,
    }


test_vectors.__test__ = False  # a helper, not a test


def specs_for(specs, d):
    """The specs that are valid at dimension d (K <= d)."""
    out = []
    for s in specs:
        name, _, p = s.partition("+")[0].partition(":")
        if name in ("topk", "randk") and not p.endswith("%") and int(p) > d:
            continue
        out.append(s)
    return out


def samples(comp, x, n, seed):
    """n draws of C(x) as float64 dense vectors, shape (n, d)."""
    rng = np.random.default_rng(seed)
    return np.stack([comp.compress(x, rng).to_dense() for _ in range(n)])


# ------------------------------------------------------------------ classes ---
def test_every_registered_compressor_declares_unbiased_omega_or_contractive_alpha():
    """Every example spec of every registered compressor, and the compositions'."""
    assert {s.partition("+")[0].partition(":")[0] for s in all_examples()} >= set(REGISTRY)
    assert {s.partition(":")[0] for s in NO_ALPHA_SPECS} == {"powersgd"}  # the one declared without a constant
    for name in all_examples():
        c = example_compressor(name, 20)
        if c.unbiased:
            assert c.omega >= 0 and math.isfinite(c.omega), name
            assert not c.as_contractive().unbiased
            assert c.as_contractive().alpha == pytest.approx(1.0 / (c.omega + 1.0))
        elif name in NO_ALPHA_SPECS:
            with pytest.raises(NoConstant, match="no known contraction parameter alpha"):
                c.alpha
            assert c.as_contractive() is c
        else:
            assert 0.0 < c.alpha <= 1.0, name
            assert c.as_contractive() is c  # a biased compressor is used as is


@pytest.mark.parametrize("spec,d,expected", [
    ("topk:5", 100, ("alpha", 0.05)), ("topk:1%", 1000, ("alpha", 0.01)), ("sign", 40, ("alpha", 1 / 40)),
    ("randk:5", 100, ("omega", 19.0)), ("natural", 10, ("omega", 0.125)), ("identity", 10, ("omega", 0.0)),
    ("qsgd:4", 100, ("omega", min(100 / 16, 10 / 4))), ("qsgd:2", 100, ("omega", min(100 / 4, 10 / 2))),
    ("qsgd:1", 4, ("omega", min(4.0, 2.0))),
    ("natural-dithering:4", 100, ("omega", 1 / 8 + min(10 / 8, 100 / 64))),
    ("natural-dithering:1", 4, ("omega", 1 / 8 + min(2.0, 4.0))),
    ("natural-dithering:8", 10**6, ("omega", 1 / 8 + min(1000 / 128, 10**6 / 2**14))),
    ("bernoulli:0.25", 10, ("omega", 3.0)), ("bernoulli:1", 10, ("omega", 0.0)),
    ("terngrad", 100, ("omega", 4.5)), ("terngrad", 1, ("omega", 0.0)),
    ("topk:5+natural", 100, ("alpha", 0.05 / 1.125)),
    ("topk:10+qsgd:2", 100, ("alpha", 0.1 / (1 + min(10 / 4, math.sqrt(10) / 2)))),
    ("randk:5+natural", 100, ("omega", 20 * 1.125 - 1)),
    ("bernoulli:0.5+qsgd:2", 100, ("omega", 2 * (1 + min(100 / 4, 10 / 2)) - 1)),
])
def test_declared_constants_match_the_papers_formulas(spec, d, expected):
    """TopK alpha = K/d, scaled sign 1/d, RandK omega = d/K - 1, natural 1/8,
    QSGD min(d/s^2, sqrt(d)/s), identity 0, natural dithering
    1/8 + min(sqrt(d)/2^(s-1), d/2^(2(s-1))), Bernoulli 1/p - 1, TernGrad
    (sqrt(d) - 1)/2; compositions: contractive A then unbiased B
    alpha_A/(omega_B + 1), unbiased A then B (omega_A + 1)(omega_B + 1) - 1
    (B's omega at dimension K, or d where K is random)."""
    c = make_compressor(spec, d)
    kind, value = expected
    assert c.unbiased == (kind == "omega")
    assert getattr(c, kind) == pytest.approx(value, rel=1e-12)


# ---------------------------------------------------- biased (deterministic) ---
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", BIASED_SPECS)
def test_biased_compressor_error_is_within_declared_contraction_on_every_vector(spec, dtype):
    """||C(x) - x||^2 <= (1 - alpha)||x||^2 holds for each vector (TopK and
    scaled sign are deterministic, so no expectation is needed); ties and
    one-hot vectors hit the bound with equality for TopK / sign.  For a
    random contractive compressor (a composition such as Top-K + natural) the
    mean over many draws, within Z standard errors."""
    for d in DIMS:
        for s in specs_for([spec], d):
            c = example_compressor(s, d, dtype)
            assert not c.unbiased
            for i, (kind, x) in enumerate(test_vectors(d).items()):
                nx = float(x @ x)
                if c.deterministic:
                    cx = c.compress(x, np.random.default_rng(0)).to_dense()
                    err, slack = float(np.sum((cx - x) ** 2)), 0.0
                else:
                    errs = np.sum((samples(c, x, 1000, seed=[d, i, 3]) - x) ** 2, axis=1)
                    err, slack = float(errs.mean()), Z * errs.std(ddof=1) / math.sqrt(errs.shape[0])
                assert err <= (1.0 - c.alpha) * nx + slack + rounding(dtype) * nx, (s, d, kind, err / nx, c.alpha)


@pytest.mark.parametrize("d,k", [(10, 1), (10, 3), (300, 7)])
def test_topk_keeps_exactly_the_k_largest_magnitudes(d, k):
    rng = np.random.default_rng(d + k)
    x = rng.standard_normal(d) * rng.lognormal(0, 2, d)
    cx = make_compressor(f"topk:{k}", d, np.float64).compress(x, rng).to_dense()
    kept = np.flatnonzero(cx)
    assert set(kept) == set(np.argsort(-np.abs(x))[:k])
    np.testing.assert_array_equal(cx[kept], x[kept])  # float64: values travel exactly


@pytest.mark.parametrize("d,k", [(1 << 15, 1), (100_000, 100), (100_000, 5000), (300_000, 3)])
def test_topk_on_long_vectors_is_exact(d, k):
    """Long vectors (where a fast selection path may kick in) still give the
    exact top-k set, also for heavy-tailed entries with a few huge ones."""
    rng = np.random.default_rng(k)
    x = rng.standard_t(1.2, d)
    x[rng.integers(d, size=3)] *= 1e6
    p = make_compressor(f"topk:{k}", d, np.float64).compress(x, rng)
    cx = p.to_dense()
    kept = np.flatnonzero(cx)
    assert set(kept) == set(np.argsort(-np.abs(x), kind="stable")[:k])
    np.testing.assert_array_equal(cx[kept], x[kept])


@pytest.mark.parametrize("d,k", [(20, 5), (1000, 37), (100_000, 999)])
def test_topk_with_ties_keeps_k_entries_none_smaller_than_any_dropped(d, k):
    """With many equal magnitudes any tie-break is allowed, but exactly k
    entries are kept and each is at least as large as every dropped one."""
    rng = np.random.default_rng(d)
    x = rng.integers(-3, 4, d).astype(float)  # magnitudes 0..3, massive ties
    for dtype in (np.float32, np.float64):
        p = make_compressor(f"topk:{k}", d, dtype).compress(x, rng)
        idx = np.asarray(p.indices)
        assert len(idx) == k and np.all(np.diff(idx) > 0)
        dropped = np.delete(np.abs(x), idx)
        assert np.abs(x[idx]).min() >= dropped.max()
        np.testing.assert_array_equal(p.to_dense()[idx], x[idx])


def test_scaled_sign_is_l1_mean_times_sign():
    x = np.array([3.0, -1.0, 0.5, -0.5])
    cx = make_compressor("sign", 4, np.float64).compress(x, np.random.default_rng(0)).to_dense()
    np.testing.assert_allclose(cx, (5.0 / 4) * np.array([1, -1, 1, -1]), rtol=1e-15)


# -------------------------------------------------------- unbiased (random) ---
def n_samples(omega: float) -> int:
    """Enough draws that the rare outcomes of high-variance compressors are seen."""
    return int(min(8000, max(1500, 20 * (omega + 1))))


def bias_ratio(cs: np.ndarray, x: np.ndarray, dtype) -> float:
    """||mean C(x) - x||^2 divided by what unbiasedness predicts for it.

    For an unbiased C, E||mean - x||^2 = E||C(x) - x||^2 / n; a bias b adds
    ||b||^2.  The ratio is a weighted chi-square with mean 1 (<= 1 + sqrt(2) Z
    with overwhelming probability) for an unbiased C and grows like
    n ||b||^2 / E||C(x) - x||^2 for a biased one.  Per-coordinate z-tests would
    misfire on coordinates a sparse compressor never picked.  Wire rounding of
    the values is allowed for.
    """
    n = cs.shape[0]
    dev = cs - x
    t = float(np.sum(dev.mean(axis=0) ** 2))
    v = float(np.mean(np.sum(dev * dev, axis=1)))
    allowance = (rounding(dtype) ** 2) * float(x @ x)
    return t / (v / n + allowance)


BIAS_LIMIT = 1 + math.sqrt(2) * Z + Z  # generous: a chi-square tail with one dominant direction


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", UNBIASED_SPECS)
def test_unbiased_compressor_has_mean_x_and_variance_within_omega(spec, dtype):
    """E[C(x)] = x (the squared distance of the sample mean to x is what
    sampling noise explains) and E||C(x) - x||^2 <= omega ||x||^2 within Z
    standard errors; RandK attains the variance bound with equality, so the
    slack matters there."""
    for d in DIMS:
        for s in specs_for([spec], d):
            c = example_compressor(s, d, dtype)
            assert c.unbiased
            n = n_samples(c.omega)
            for i, (kind, x) in enumerate(test_vectors(d).items()):
                cs = samples(c, x, n, seed=[d, i])
                ratio = bias_ratio(cs, x, dtype)
                assert ratio <= BIAS_LIMIT, (s, d, kind, ratio)
                nx = float(x @ x)
                errs = np.sum((cs - x) ** 2, axis=1)
                bound = c.omega * nx + Z * errs.std(ddof=1) / math.sqrt(n) + rounding(dtype) * (1 + c.omega) * nx
                assert errs.mean() <= bound, (s, d, kind, errs.mean() / nx, c.omega)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", UNBIASED_SPECS)
def test_unbiased_compressor_made_contractive_meets_alpha_bound(spec, dtype):
    """C/(omega+1), what EF-type methods run with, satisfies
    E||C(x) - x||^2 <= (1 - alpha)||x||^2 with alpha = 1/(omega+1)."""
    for d in DIMS:
        for s in specs_for([spec], d):
            c = example_compressor(s, d, dtype).as_contractive()
            assert not c.unbiased
            n = n_samples(1.0 / c.alpha - 1.0) // 2
            for i, (kind, x) in enumerate(test_vectors(d, seed=1).items()):
                errs = np.sum((samples(c, x, n, seed=[d, i, 7]) - x) ** 2, axis=1)
                nx = float(x @ x)
                bound = (1 - c.alpha) * nx + Z * errs.std(ddof=1) / math.sqrt(n) + rounding(dtype) * nx
                assert errs.mean() <= bound, (s, d, kind, errs.mean() / nx, c.alpha)


@pytest.mark.parametrize("spec,d", [("randk:8", 64), ("natural", 64), ("qsgd:4", 64), ("natural-dithering:4", 64),
                                    ("bernoulli:0.5", 64), ("terngrad", 64), ("randk:32+natural", 64), ("permk", 64)])
def test_unbiasedness_check_detects_the_bias_of_a_scaled_compressor(spec, d):
    """The check has power: C/(omega+1) is biased (mean x/(omega+1)) and is
    flagged, even for natural compression where the bias is only 11%."""
    c = example_compressor(spec, d, np.float64)
    x = test_vectors(d)["gaussian"]
    assert bias_ratio(samples(c, x, 1500, seed=3), x, np.float64) <= BIAS_LIMIT
    assert bias_ratio(samples(c.as_contractive(), x, 1500, seed=3), x, np.float64) > 10 * BIAS_LIMIT


@pytest.mark.parametrize("spec", UNBIASED_SPECS + BIASED_SPECS + NO_ALPHA_SPECS)
def test_zero_vector_compresses_to_zero(spec):
    d = 16
    for dtype in DTYPES:
        c = example_compressor(spec, d, dtype)
        for comp in (c, c.as_contractive()):
            out = comp.compress(np.zeros(d), np.random.default_rng(0)).to_dense()
            np.testing.assert_array_equal(out, np.zeros(d))


@pytest.mark.parametrize("spec", ["randk:3", "natural", "qsgd:4", "natural-dithering:3", "bernoulli:0.3", "terngrad",
                                  "topk:5+natural", "bernoulli:0.5+qsgd:2"])
def test_random_compressor_is_reproducible_from_its_rng(spec):
    d = 50
    x = np.random.default_rng(1).standard_normal(d)
    c = make_compressor(spec, d)
    a = c.compress(x, np.random.default_rng(42)).to_dense()
    b = c.compress(x, np.random.default_rng(42)).to_dense()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("spec", [s for s in UNBIASED_SPECS + BIASED_SPECS if "qsgd" not in s])
def test_values_are_rounded_to_the_wire_dtype(spec):
    """A float32 payload carries float32 numbers; float64 keeps more precision.
    (QSGD carries a norm and integer levels, so norm*level/s need not be a float32;
    dithering's norm * 2^(u-s) is one; PowerSGD's P Q^T is a sum of products of float32
    factors, tested on its own.)"""
    d = 32
    x = np.random.default_rng(5).standard_normal(d) / 3.0
    out32 = example_compressor(spec, d, np.float32).compress(x, np.random.default_rng(0)).to_dense()
    np.testing.assert_array_equal(out32.astype(np.float32).astype(np.float64), out32)
    if spec in ("identity", "topk:100%"):
        out64 = make_compressor(spec, d, np.float64).compress(x, np.random.default_rng(0)).to_dense()
        np.testing.assert_array_equal(out64, x)
        assert not np.array_equal(out32, x)


# ------------------------------------------------------------------ registry ---
@pytest.mark.parametrize("spec,d,attr,value", [
    ("topk:5", 100, "k", 5), ("topk:1%", 1000, "k", 10), ("topk:1%", 50, "k", 1), ("topk:100%", 7, "k", 7),
    ("TopK:3", 10, "k", 3), ("randk:2", 10, "k", 2), ("randk:25%", 8, "k", 2), ("qsgd:4", 10, "s", 4),
    ("natural-dithering:4", 10, "s", 4), ("bernoulli:0.25", 10, "p", 0.25),
])
def test_registry_parses_counts_percentages_and_levels(spec, d, attr, value):
    c = make_compressor(spec, d)
    assert getattr(c, attr) == value
    assert c.name == spec.split(":")[0].lower()


@pytest.mark.parametrize("spec", ["foo", "top", "topk5", "rand:3", ""])
def test_unknown_compressor_name_is_one_line_error_listing_valid_names(spec):
    with pytest.raises(CompressorError) as ei:
        make_compressor(spec, 10)
    msg = str(ei.value)
    assert "\n" not in msg
    for name in REGISTRY:
        assert name in msg


@pytest.mark.parametrize("spec", ["topk:0", "topk:-1", "topk:11", "topk:0%", "topk:150%", "topk:abc", "topk",
                                  "topk:", "randk:0", "randk:11", "randk:1.5", "qsgd:0", "qsgd:x", "qsgd",
                                  "sign:3", "identity:1", "natural:2", "natural-dithering", "natural-dithering:0",
                                  "natural-dithering:61", "natural-dithering:x", "bernoulli", "bernoulli:0",
                                  "bernoulli:1.5", "bernoulli:-0.1", "terngrad:2", "topk:1+sign", "natural+natural",
                                  "topk:1+natural+qsgd:2", "topk:1+", "+natural", "topk:11+natural", "topk:1+nope",
                                  "randk:5+randk:6", "permk:3", "permk:", "permk", "powersgd", "powersgd:0",
                                  "powersgd:-1", "powersgd:1.5", "powersgd:x", "powersgd:2", "topk:2+permk",
                                  "permk+natural"])
def test_bad_parameter_is_one_line_compressor_error(spec):
    """K <= 0 or K > d (d = 10), malformed parameters, a parameter for a
    compressor that takes none, and a missing one are all refused; so are
    compositions that are not a sparsifier then an unbiased compressor, or
    whose second part does not fit the K kept values, or that hold a per-worker
    compressor; permk without the number of workers and powersgd without a
    neural network's parameter blocks (no run setting) too."""
    with pytest.raises(CompressorError) as ei:
        make_compressor(spec, 10)
    assert "\n" not in str(ei.value) and str(ei.value)


def test_compressor_error_is_a_value_error():
    assert issubclass(CompressorError, ValueError)


# ------------------------------------------------ dithering and compositions ---
@pytest.mark.parametrize("s", [1, 2, 4, 8])
def test_natural_dithering_rounds_to_the_neighbouring_powers_of_two(s):
    """|C(x)_j| / ||x|| is 0 or 2^(u-s) (u = 1..s), one of the two grid points
    around |x_j| / ||x|| (0 and 2^(1-s) below the grid), with x_j's sign."""
    d = 300
    x = test_vectors(d)["lognormal(3)"]
    c = make_compressor(f"natural-dithering:{s}", d, np.float64)
    grid = np.concatenate([[0.0], 2.0 ** np.arange(1 - s, 1)])
    t = np.abs(x) / np.linalg.norm(x)
    lo = grid[np.searchsorted(grid, t, side="right") - 1]
    hi = grid[np.minimum(np.searchsorted(grid, t, side="right"), s)]
    for seed in range(5):
        p = c.compress(x, np.random.default_rng(seed))
        assert isinstance(p, Dithered)
        r = p.to_dense() / np.linalg.norm(x)
        assert np.all(np.isin(np.abs(r), grid))
        assert np.all((np.abs(r) == lo) | (np.abs(r) == hi))
        assert np.all((r == 0) | (np.sign(r) == np.sign(x)))


def test_terngrad_sends_zero_or_the_signed_largest_magnitude():
    x = test_vectors(300)["student-t(1.5)"]
    out = make_compressor("terngrad", 300, np.float64).compress(x, np.random.default_rng(0)).to_dense()
    s = np.abs(x).max()
    assert np.all((out == 0) | (out == s * np.sign(x)))
    assert out[np.argmax(np.abs(x))] != 0  # kept with probability 1


@pytest.mark.parametrize("spec", ["topk:7+natural", "topk:7+qsgd:2", "topk:7+terngrad"])
def test_composition_keeps_the_support_of_its_sparsifier(spec):
    """B acts on the K values A keeps: the payload carries A's support, and
    nothing outside it is nonzero."""
    d = 300
    x = test_vectors(d)["gaussian"]
    p = make_compressor(spec, d, np.float64).compress(x, np.random.default_rng(0))
    assert isinstance(p, Composed) and p.inner.d == 7
    assert set(p.indices) == set(np.argsort(-np.abs(x))[:7])
    assert set(np.flatnonzero(p.to_dense())) <= set(p.indices)


def test_a_composition_whose_second_part_cannot_take_every_k_is_refused_when_built():
    """Bernoulli keeps a random number of coordinates, down to 1: Rand-5 after it would
    fail in the middle of a run, so building it fails instead."""
    with pytest.raises(CompressorError, match="keeps a random number of coordinates"):
        make_compressor("bernoulli:0.01+randk:5", 100)


def test_a_composition_keeps_a_bounded_number_of_inner_compressors():
    c = make_compressor("bernoulli:0.5+natural", 10_000)
    rng = np.random.default_rng(0)
    for _ in range(50):  # a different K almost every call
        c.compress(rng.standard_normal(10_000), rng)
    assert 0 < len(c._inner) <= c.MAX_CACHED


# -------------------------------------------------------------------- PermK ---
def permk_workers(d, n, dtype=np.float64, seed=0, clock=None, contractive=False):
    """The n workers' bound copies of one permk compressor, as a run makes them."""
    c = make_compressor("permk", d, dtype, Setting(workers=n))
    if contractive:
        c = c.as_contractive()
    return [c.for_worker(i, seed, clock) for i in range(n)]


@pytest.mark.parametrize("d,n", [(12, 4), (300, 20), (64, 8), (10, 4), (301, 20), (3, 6), (2, 8), (5, 5)])
def test_permk_mean_of_the_n_workers_outputs_is_x_exactly(d, n):
    """The correlated property: in one round the blocks of the n workers partition
    range(d) (d = qn, and d not divisible by n, padded), or (n = qd) every coordinate
    goes to q workers; so (1/n) sum_i C_i(x) = x for every permutation.  For n a
    power of two the scaling by n and the division by n are exact in floating
    point, so the mean is x bit for bit; else within one rounding of x * n."""
    x = test_vectors(d)["lognormal(3)"]
    for seed in range(5):
        outs = [c.compress(x, None) for c in permk_workers(d, n, seed=seed)]
        assert all(isinstance(p, Permuted) for p in outs)
        kept = np.concatenate([p.indices for p in outs])
        if d >= n:
            assert np.array_equal(np.sort(kept), np.arange(d))  # a partition of the coordinates
        else:
            assert np.array_equal(np.bincount(kept, minlength=d), np.full(d, n // d))
        acc = np.zeros(d)
        for p in outs:  # the master's aggregation, mean_of
            p.add_to(acc)
        acc /= n
        if n & (n - 1) == 0:
            np.testing.assert_array_equal(acc, x)
        else:
            np.testing.assert_allclose(acc, x, rtol=4 * np.finfo(float).eps, atol=0)
        # each worker's output alone is not x: the exactness is of the mean
        assert not np.array_equal(outs[0].to_dense(), x)


@pytest.mark.parametrize("d,n,omega", [(100, 4, 3.0), (100, 20, 19.0), (101, 20, 19.0), (20, 20, 19.0), (3, 6, 2.0),
                                       (1, 5, 0.0)])
def test_permk_omega_is_n_minus_1_or_d_minus_1_for_n_a_multiple_of_d(d, n, omega):
    c = make_compressor("permk", d, setting=Setting(workers=n))
    assert c.unbiased and c.omega == omega
    assert c.as_contractive().alpha == pytest.approx(1 / (omega + 1))


def test_permk_each_worker_is_unbiased_with_variance_exactly_omega():
    """Over all rounds a worker keeps each coordinate with probability 1/n scaled by n:
    unbiased, E||C_i(x) - x||^2 = (n - 1)||x||^2 (equality, not just a bound), also
    with padding (d = 10, n = 4)."""
    for d, n in ((12, 4), (10, 4)):
        x = test_vectors(d)["gaussian"]
        for i, c in enumerate(permk_workers(d, n)):
            cs = samples(c, x, 6000, seed=0)
            assert bias_ratio(cs, x, np.float64) <= BIAS_LIMIT
            errs = np.sum((cs - x) ** 2, axis=1)
            se = errs.std(ddof=1) / math.sqrt(errs.shape[0])
            assert abs(errs.mean() - (n - 1) * float(x @ x)) <= Z * se, (d, n, i)


def test_permk_permutation_is_shared_per_round_fresh_each_round_and_call_and_survives_skipped_rounds():
    """The key of a compression is a function of (seed, round, call within the round):
    workers agree on it without talking; round after round, and a second call in one
    round, draw new ones; a worker that sat out a round (LAG, partial participation)
    is still in step; another seed is another permutation."""
    d, n = 40, 4
    x = np.arange(1.0, d + 1)
    clock = {"t": 0}
    workers = permk_workers(d, n, seed=3, clock=lambda: clock["t"])
    keys = {}
    for t in range(4):
        clock["t"] = t
        for j, c in enumerate(workers):
            if t == 2 and j == 1:
                continue  # worker 1 sits out round 2
            p = c.compress(x, None)
            keys.setdefault(t, set()).add(p.key)
            if t == 3 and j == 0:
                second = c.compress(x, None)  # a second compression in round 3 (worker 0 only)
    assert all(len(k) == 1 for k in keys.values())  # one permutation per round, shared
    assert len(set().union(*keys.values())) == 4  # a new one each round
    assert second.key not in keys[3]
    fresh = permk_workers(d, n, seed=3, clock=lambda: 3)[2].compress(x, None)
    assert fresh.key in keys[3]  # a function of (seed, round, call) alone: a fresh copy agrees
    assert permk_workers(d, n, seed=4, clock=lambda: 3)[2].compress(x, None).key not in keys[3]


def test_permk_made_contractive_sends_its_block_unscaled_and_keeps_its_binding():
    d, n = 12, 4
    x = test_vectors(d)["gaussian"]
    for c in permk_workers(d, n, contractive=True):
        p = c.compress(x, None)
        np.testing.assert_allclose(p.values, x[p.indices], rtol=1e-15)  # n * 1/(omega + 1) = 1
        assert c.alpha == pytest.approx(1 / n)


@pytest.mark.parametrize("spec,setting,message", [
    ("permk", Setting(workers=4), "d=3 < n=4 workers needs n to be a multiple of d"),
    ("permk:2", Setting(workers=2), "takes no parameter"),
    ("permk", Setting(), "needs the number of workers"),
    ("powersgd:2", Setting(workers=4), "powersgd needs a neural-network problem (--problem mlp|cnn|resnet18"),
    ("powersgd:0", Setting(blocks=((0, (3,)),)), "a rank R >= 1"),
])
def test_permk_and_powersgd_refuse_what_they_cannot_run_in_one_line(spec, setting, message):
    with pytest.raises(CompressorError) as ei:
        make_compressor(spec, 3, setting=setting)
    assert message in str(ei.value) and "\n" not in str(ei.value)


def test_permk_outside_a_worker_and_a_worker_index_out_of_range_are_refused():
    c = make_compressor("permk", 8, setting=Setting(workers=2))
    with pytest.raises(CompressorError, match="worker's own copy"):
        c.compress(np.ones(8), None)
    with pytest.raises(CompressorError, match="outside 0..1"):
        c.for_worker(2, 0)


# ----------------------------------------------------------------- PowerSGD ---
# an MLP-like layout: a 6 x 5 weight, its bias, a conv kernel (4 out, 2 in, 3 x 3) and its bias,
# a 2 x 2 weight (rank 1 is no cheaper there: sent as it is) and a bias
LAYOUT = ((0, (6, 5)), (30, (6,)), (36, (4, 2, 3, 3)), (108, (4,)), (112, (2, 2)), (116, (2,)))
D_LAYOUT = 118


def powersgd(rank, dtype=np.float64, blocks=LAYOUT, d=D_LAYOUT):
    return make_compressor(f"powersgd:{rank}", d, dtype, Setting(blocks=blocks)).for_worker(0, 0)


def power_step(m, q):
    """One step of the paper's power iteration, written out: P = M Q, P = qr(P).Q, Q = M^T P."""
    p, _ = np.linalg.qr(m @ q)
    q = m.T @ p
    return p, q, p @ q.T


def matrices(x, rank):
    """(offset, M) of each parameter with ndim >= 2 as (shape[0], rest) where rank (rows + cols) < rows cols."""
    out = []
    for off, shape in LAYOUT:
        if len(shape) >= 2:
            rows, cols = shape[0], math.prod(shape[1:])
            if rank * (rows + cols) < rows * cols:
                out.append((off, x[off:off + rows * cols].reshape(rows, cols)))
    return out


@pytest.mark.parametrize("rank", [1, 2])
def test_powersgd_rank_r_reconstruction_and_warm_start_equal_the_numpy_formula(rank):
    """Round 1 from Q_0 ~ N(0, 1) drawn from the worker's stream (in block order), then
    round 2 from round 1's Q (the warm start): M_hat = P Q^T with P = qr(M Q).Q and
    Q = M^T P, computed here independently; vectors, biases and blocks where rank r is
    no cheaper travel as they are."""
    c = powersgd(rank)
    rng = np.random.default_rng(7)
    x1, x2 = rng.standard_normal(D_LAYOUT), rng.standard_normal(D_LAYOUT)
    ref_rng = np.random.default_rng(11)
    qs = [ref_rng.standard_normal((m.shape[1], rank)) for _, m in matrices(x1, rank)]
    assert len(qs) == 2  # the 6 x 5 weight and the 4 x 18 kernel; not the 2 x 2 weight
    for x in (x1, x2):
        out = c.compress(x, np.random.default_rng(11)).to_dense()
        expected = x.copy()
        for j, (off, m) in enumerate(matrices(x, rank)):
            _, qs[j], m_hat = power_step(m, qs[j])
            expected[off:off + m.size] = m_hat.ravel()
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
        assert not np.allclose(out, x)  # compressed, not the identity


def test_powersgd_warm_start_matters_and_its_state_round_trips():
    """The second round starts from the first round's Q: a fresh copy (new Q_0) gives
    another result; a copy given the state (what a checkpoint stores) gives the same."""
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal(D_LAYOUT), rng.standard_normal(D_LAYOUT)
    a = powersgd(1)
    a.compress(x1, np.random.default_rng(0))
    saved = {k: v.copy() for k, v in a.state_arrays().items()}
    assert sorted(saved) == ["q0", "q1"] and saved["q1"].shape == (18, 1)
    warm = a.compress(x2, np.random.default_rng(5)).to_dense()
    cold = powersgd(1).compress(x2, np.random.default_rng(5)).to_dense()
    assert not np.allclose(warm, cold)
    b = powersgd(1)
    b.restore_arrays(saved)
    np.testing.assert_array_equal(b.compress(x2, np.random.default_rng(5)).to_dense(), warm)


def test_powersgd_each_worker_gets_its_own_copy_and_state():
    proto = make_compressor("powersgd:1", D_LAYOUT, np.float64, Setting(blocks=LAYOUT))
    w0, w1 = proto.for_worker(0, 0), proto.for_worker(1, 0)
    assert w0 is not w1 and w0 is not proto
    x = np.random.default_rng(2).standard_normal(D_LAYOUT)
    w0.compress(x, np.random.default_rng(0))
    assert w0.state_arrays() and not w1.state_arrays() and not proto.state_arrays()
    stateless = make_compressor("topk:3", D_LAYOUT)
    assert stateless.for_worker(1, 0) is stateless  # shared: nothing per worker to keep


def test_powersgd_sends_factors_not_the_dense_matrices():
    """Its message: P (rows x r) and Q (cols x r) of each compressed block, the rest as it is;
    float32 factors, and their product computed in float64 on decoding."""
    c = powersgd(1, np.float32)
    p = c.compress(np.random.default_rng(3).standard_normal(D_LAYOUT), np.random.default_rng(0))
    assert isinstance(p, LowRank)
    assert p.shapes == ((6, 5, 1), (6, 1, 0), (4, 18, 1), (4 + 4 + 2, 1, 0))  # bias, 2 x 2 weight, bias in one
    sent = sum(a.size for f in p.factors for a in f)
    assert sent == 6 + 5 + 6 + 4 + 18 + 10 and all(a.dtype == np.float32 for f in p.factors for a in f)
