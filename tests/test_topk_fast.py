"""The fast TopK (sample, threshold, exact fix-up) returns exactly the canonical
top-k set: the k largest magnitudes, ties broken towards lower indices, NaN
ranked above everything -- for every input, whichever internal path runs."""
import numpy as np
import pytest

from psmpi.compressors import make_compressor
from psmpi.compressors import topk as T
from psmpi.compressors.topk import top_k, top_k_indices


def canonical(x, k):
    """Reference: a stable sort of the magnitudes, descending."""
    m = np.abs(np.asarray(x, dtype=np.float64))
    m[np.isnan(m)] = np.inf
    return np.sort(np.argsort(-m, kind="stable")[:k])


def vectors(d, rng):
    """Named inputs of dimension d, adversarial ones included."""
    n = rng.standard_normal(d)
    sparse = np.where(rng.random(d) < 0.002, rng.standard_normal(d), 0.0)
    return {
        "normal": n,
        "ties": rng.integers(-3, 4, d).astype(np.float64),  # 7 values, massive ties
        "all-equal": np.full(d, -1.5),
        "zeros": np.zeros(d),
        "signed-zeros": np.where(rng.random(d) < 0.5, -0.0, 0.0),
        "sparse": sparse,  # fewer nonzeros than many k: the rest are zero ties
        "cauchy": rng.standard_cauchy(d),  # heavy tails
        "sorted": np.sort(n),  # monotone: defeats a contiguous sample
        "periodic": np.tile([9.0, 1.0, 1.0, 1.0, -9.0, 1.0, 1.0], d // 7 + 1)[:d],
        "tiny": n * 1e-300,  # subnormal range
        "infinities": np.where(rng.random(d) < 0.01, np.inf * np.sign(n), n),
        "float32": n.astype(np.float32),
    }


def ks(d):
    return sorted({1, 2, max(1, d // 1000), max(1, d // 100), max(1, d // 10), max(1, d // 2), max(1, d - 1), d})


@pytest.mark.parametrize("d", [1, 2, 7, 1000, T.MIN_FAST_D - 1, T.MIN_FAST_D, 100_003, 2 * T.CHUNK + 17])
def test_topk_equals_the_canonical_set_for_every_input_kind(d):
    rng = np.random.default_rng(d)
    for name, x in vectors(d, rng).items():
        for k in ks(d):
            got = top_k_indices(x, k)
            assert np.array_equal(got, canonical(x, k)), (name, d, k)


def test_topk_matches_argpartition_set_on_tie_free_vectors():
    rng = np.random.default_rng(3)
    d = 300_000
    x = rng.standard_normal(d)
    for k in (1, 300, 3000, 30_000):
        ref = np.argpartition(np.abs(x), d - k)[d - k:]
        assert set(top_k_indices(x, k).tolist()) == set(ref.tolist())


def test_topk_output_is_sorted_distinct_intp_and_values_match():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(200_000)
    idx, vals = top_k(x, 2000)
    assert idx.dtype == np.intp and idx.shape == (2000,)
    assert np.all(np.diff(idx) > 0)
    assert np.array_equal(vals, x[idx])


def test_nan_ranks_above_every_number():
    rng = np.random.default_rng(5)
    for d in (500, 100_000):
        x = rng.standard_normal(d)
        nan_at = rng.choice(d, 7, replace=False)
        x[nan_at] = np.nan
        x[0] = np.inf
        assert np.array_equal(top_k_indices(x, 7), canonical(x, 7))  # NaN ties with inf
        assert set(nan_at.tolist()) <= set(top_k_indices(x, 8).tolist())
        assert np.array_equal(top_k_indices(x, 50), canonical(x, 50))


def test_zero_ties_break_towards_the_lowest_indices():
    d = 100_000
    x = np.zeros(d)
    x[[5, 70_000]] = [1.0, -2.0]
    assert np.array_equal(top_k_indices(x, 4), [0, 1, 5, 70_000])
    assert np.array_equal(top_k_indices(-np.zeros(d), 3), [0, 1, 2])


def test_k_edges():
    x = np.array([3.0, -1.0, 2.0])
    assert np.array_equal(top_k_indices(x, 3), [0, 1, 2])
    assert np.array_equal(top_k_indices(x, 5), [0, 1, 2])
    assert top_k_indices(x, 0).shape == (0,)
    assert np.array_equal(top_k_indices(x, 1), [0])


def test_non_contiguous_and_integer_inputs():
    rng = np.random.default_rng(6)
    x = rng.standard_normal(400_000)
    view = x[::3]
    assert np.array_equal(top_k_indices(view, 1234), canonical(view, 1234))
    ints = rng.integers(-1000, 1000, 70_000)
    assert np.array_equal(top_k_indices(ints, 700), canonical(ints, 700))
    with pytest.raises(ValueError):
        top_k_indices(np.zeros((3, 3)), 2)


class Spy:
    """Records the magnitude-array sizes ``_exact`` is called with."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = T._exact

        def spy(mag, k, t_hi=None):
            self.calls.append((mag.shape[0], t_hi is not None))
            return real(mag, k, t_hi)

        monkeypatch.setattr(T, "_exact", spy)


def test_sample_missing_low_falls_back_exactly(monkeypatch):
    """Sampled positions hold the largest magnitudes, so the sample puts the
    threshold too high: fewer than k candidates, the exact full path runs."""
    d = 1 << 20
    rng = np.random.default_rng(7)
    x = rng.standard_normal(d)
    pos = T.sample_positions(d, T.sample_size(d))
    x[pos] = 100.0 + rng.random(pos.shape[0])
    k = d // 10  # more than the sampled positions
    spy = Spy(monkeypatch)
    got = top_k_indices(x, k)
    assert spy.calls == [(d, False)]  # the direct exact selection over all of x
    assert np.array_equal(got, canonical(x, k))


def test_sample_missing_low_once_retries_with_a_lower_threshold(monkeypatch):
    """Sampled magnitudes inflated a little: the first threshold leaves fewer
    than k candidates, the retry with a lower sampled threshold suffices."""
    d = 1 << 20
    rng = np.random.default_rng(13)
    x = rng.standard_normal(d)
    pos = T.sample_positions(d, T.sample_size(d))
    x[pos] *= 1.3
    k = d // 100
    passes = []
    real = T._candidates
    monkeypatch.setattr(T, "_candidates", lambda *a: passes.append(real(*a)) or passes[-1])
    spy = Spy(monkeypatch)
    got = top_k_indices(x, k)
    assert len(passes) == 2 and passes[0] < k <= passes[1]
    assert spy.calls == [(passes[1], True)]
    assert np.array_equal(got, canonical(x, k))


def test_sample_missing_high_partitions_all_candidates_exactly(monkeypatch):
    """Sampled positions hold the smallest magnitudes: the upper threshold is
    too low (more than k 'sure' entries); the fix-up partitions all candidates."""
    d = 1 << 20
    rng = np.random.default_rng(8)
    x = 10.0 + rng.random(d)
    pos = T.sample_positions(d, T.sample_size(d))
    x[pos] = rng.random(pos.shape[0])
    k = d // 100
    spy = Spy(monkeypatch)
    got = top_k_indices(x, k)
    assert len(spy.calls) == 1 and spy.calls[0][0] > k  # the candidate path ran
    assert np.array_equal(got, canonical(x, k))


def test_fast_path_examines_few_candidates(monkeypatch):
    """On a generic vector the exact fix-up sees only slightly more than k entries."""
    d = 1 << 20
    x = np.random.default_rng(9).standard_normal(d)
    spy = Spy(monkeypatch)
    for k in (d // 1000, d // 100, d // 10):
        spy.calls.clear()
        top_k_indices(x, k)
        (n, bracketed), = spy.calls
        assert k <= n < 1.5 * k + 2000, (k, n)
    assert bracketed


def test_deterministic_and_independent_of_the_callers_random_state():
    d = 200_000
    x = np.random.default_rng(10).standard_normal(d)
    np.random.seed(1)
    a = top_k_indices(x, 999)
    np.random.seed(2)
    np.random.random(10)
    b = top_k_indices(x, 999)
    assert np.array_equal(a, b)
    rng = np.random.default_rng(11)
    before = rng.bit_generator.state
    make_compressor("topk:1%", d).compress(x, rng)
    assert rng.bit_generator.state == before  # TopK draws nothing from the worker stream


def test_sample_positions_are_distinct_sorted_cached_runs():
    for d in (T.MIN_FAST_D, 100_003, 1_000_003):
        s = T.sample_size(d)
        p = T.sample_positions(d, s)
        assert s % T.RUN == 0 and p.shape == (s,) and np.all(np.diff(p) > 0) and p[-1] < d
        runs = p.reshape(-1, T.RUN)
        assert np.all(runs[:, 0] % 8 == 0) and np.all(np.diff(runs, axis=1) == 1)
        assert T.sample_positions(d, s) is p
        assert not p.flags.writeable


@pytest.mark.parametrize("spec,d", [("topk:1%", 100_000), ("topk:7", 50), ("topk:100%", 40_000)])
def test_topk_compressor_sends_the_canonical_set_with_wire_values(spec, d):
    rng = np.random.default_rng(12)
    x = rng.integers(-50, 50, d) * 0.25  # ties everywhere
    c = make_compressor(spec, d)
    p = c.compress(x, rng)
    assert np.array_equal(p.indices, canonical(x, c.k))
    assert p.values.dtype == np.float32
    assert np.array_equal(p.values, x[p.indices].astype(np.float32))
