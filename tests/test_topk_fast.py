"""The fast TopK (sample, threshold, exact fix-up) returns exactly the canonical
top-k set: the k largest magnitudes, ties broken towards lower indices, NaN
ranked above everything -- for every input, whichever internal path runs."""
import numpy as np
import pytest

from psmpi import parallel
from psmpi import select as S
from psmpi.compressors import make_compressor
from psmpi.select import candidates as C
from psmpi.select import fast as F
from psmpi.select import order as O
from psmpi.select import sample as SM
from psmpi.select import top_k, top_k_indices


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


@pytest.mark.parametrize("d", [1, 2, 7, 1000, SM.MIN_FAST_D - 1, SM.MIN_FAST_D, 100_003, 2 * C.CHUNK + 17])
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
    for view in (x[::3], x[::-2]):
        for k in (1234, view.shape[0] // 10):
            assert np.array_equal(top_k_indices(view, k), canonical(view, k))
    ints = rng.integers(-1000, 1000, 70_000)
    assert np.array_equal(top_k_indices(ints, 700), canonical(ints, 700))
    with pytest.raises(ValueError):
        top_k_indices(np.zeros((3, 3)), 2)


# the module of psmpi.select in which each internal function is looked up when called (the one to patch)
CALLED_IN = {"exact": S, "collect": F, "_keep": F, "_in_bracket": F, "rth_largest": F, "_pass": C}


class Calls:
    """Records the calls of internal functions of psmpi.select: for each
    name, a list of (args, result)."""

    def __init__(self, monkeypatch, *names):
        self.log = {n: [] for n in names}
        for n in names:
            real = getattr(CALLED_IN[n], n)

            def wrap(*a, _real=real, _n=n):
                out = _real(*a)
                self.log[_n].append((a, out))
                return out

            monkeypatch.setattr(CALLED_IN[n], n, wrap)

    def count(self, name):
        return len(self.log[name])


def test_sample_missing_low_falls_back_exactly(monkeypatch):
    """Sampled positions hold the largest magnitudes, so the sample puts the
    threshold too high: fewer than k candidates, the exact full path runs."""
    d = 1 << 20
    rng = np.random.default_rng(7)
    x = rng.standard_normal(d)
    pos = SM.sample_positions(d, SM.sample_size(d))
    x[pos] = 100.0 + rng.random(pos.shape[0])
    k = d // 10  # more than the sampled positions
    calls = Calls(monkeypatch, "exact", "_keep")
    got = top_k_indices(x, k)
    assert [a[0].shape[0] for a, _ in calls.log["exact"]] == [d]  # the direct exact selection over all of x
    assert calls.count("_keep") == 0
    assert np.array_equal(got, canonical(x, k))


def test_sample_missing_low_once_retries_with_a_lower_threshold(monkeypatch):
    """Sampled magnitudes inflated a little: the first threshold leaves fewer
    than k candidates, the retry with a lower sampled threshold suffices."""
    d = 1 << 20
    rng = np.random.default_rng(13)
    x = rng.standard_normal(d)
    pos = SM.sample_positions(d, SM.sample_size(d))
    x[pos] *= 1.3
    k = d // 100
    calls = Calls(monkeypatch, "collect", "_keep", "exact")
    got = top_k_indices(x, k)
    passes = [n for _, n in calls.log["collect"]]
    assert len(passes) == 2 and passes[0] < k <= passes[1]
    assert [a[0].shape[0] for a, _ in calls.log["_keep"]] == [passes[1]]
    assert calls.count("exact") == 0  # (the inflated sample may miss the bracket once too)
    assert np.array_equal(got, canonical(x, k))


def test_sample_missing_high_still_selects_exactly(monkeypatch):
    """Sampled positions hold the smallest magnitudes: the threshold lets
    almost all of x through and the sampled magnitudes say nothing about the
    candidates (the bracket of m_k is most of them); still exact."""
    d = 1 << 20
    rng = np.random.default_rng(8)
    x = 10.0 + rng.random(d)
    pos = SM.sample_positions(d, SM.sample_size(d))
    x[pos] = rng.random(pos.shape[0])
    k = d // 100
    calls = Calls(monkeypatch, "_keep", "exact")
    got = top_k_indices(x, k)
    assert calls.count("_keep") == 1 and calls.log["_keep"][0][0][0].shape[0] > d // 2  # the candidate path ran
    assert calls.count("exact") == 0
    assert np.array_equal(got, canonical(x, k))


@pytest.mark.parametrize("misses", [1, 2])
@pytest.mark.parametrize("wrong", ["above", "below"])
def test_a_bracket_that_misses_m_k_is_followed_by_a_wider_one_then_a_partition(monkeypatch, wrong, misses):
    """The brackets are wrong (made so here): all above m_k (more than k
    candidates above it) or all below (fewer than needed inside).  The counts
    show it: the second, wider bracket is used, and when that misses too, a
    partition of all candidates."""
    d = 1 << 20
    x = np.random.default_rng(14).standard_normal(d)
    x[[5, 77, 4000]] = [np.nan, np.inf, -np.inf]
    k = d // 10
    real = SM.bracket
    zs = []

    def bracket(top, n, k_, z):
        zs.append(z)
        if len(zs) > misses:
            return real(top, n, k_, z)
        u = x.dtype.type(0.01 if wrong == "above" else 3.0)
        return u, u + 0.001

    monkeypatch.setattr(F, "bracket", bracket)
    calls = Calls(monkeypatch, "_in_bracket", "rth_largest", "exact")
    got = top_k(x, k, value_dtype=np.float32)
    assert zs == [SM.ZB, 2 * SM.ZB] and calls.count("_in_bracket") == 2
    assert calls.count("rth_largest") == (1 if misses == 1 else 0) and calls.count("exact") == 0
    assert np.array_equal(got[0], canonical(x, k))
    assert np.array_equal(got[1], x[got[0]].astype(np.float32), equal_nan=True)


def test_fast_path_examines_few_candidates(monkeypatch):
    """On a generic vector the candidates are only slightly more than k, and
    the bracket of m_k holds a small fraction of them."""
    d = 1 << 20
    x = np.random.default_rng(9).standard_normal(d)
    calls = Calls(monkeypatch, "_keep", "_in_bracket", "exact")
    for k in (d // 1000, d // 100, d // 10):
        for log in calls.log.values():
            log.clear()
        top_k_indices(x, k)
        ((val, *_), _), = calls.log["_keep"]
        n = val.shape[0]
        assert k <= n < 1.5 * k + 2000, (k, n)
        (_, (_, mid, *_)), = calls.log["_in_bracket"]  # the first bracket held m_k
        assert mid.shape[0] < 0.1 * n + 1000, (k, n, mid.shape[0])
        assert calls.count("exact") == 0


def test_rth_largest_is_exact_whatever_its_sub_sample_says():
    rng = np.random.default_rng(15)
    for trial in range(200):
        m = int(rng.integers(1, 60_000))
        kind = trial % 5
        if kind == 0:
            a = rng.random(m)
        elif kind == 1:
            a = np.sort(rng.random(m))  # the strided sub-sample is exact here
        elif kind == 2:
            a = rng.integers(0, 5, m).astype(np.float64)  # ties
        elif kind == 3:
            a = np.tile(rng.random(16), m // 16 + 1)[:m]  # period of the stride: a biased sub-sample
        else:
            a = np.where(np.arange(m) % 16 == 0, 1e9, rng.random(m))  # the sub-sample sees only the top
        r = int(rng.integers(1, m + 1))
        assert O.rth_largest(a.copy(), r) == np.sort(a)[m - r], (trial, m, r)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_sample_is_the_magnitudes_at_the_sample_positions(dtype):
    rng = np.random.default_rng(16)
    for d in (SM.MIN_FAST_D, 100_003, 1_000_003):
        s = SM.sample_size(d)
        base = rng.standard_normal(3 * d).astype(dtype)
        base[rng.integers(0, 3 * d, 50)] = np.nan
        for x in (base[:d], base[::3], base[::-2][:d]):  # contiguous, strided, reversed
            got = SM.gather(x, s, np.empty(s, dtype))
            ref = np.abs(x[SM.sample_positions(d, s)])
            ref[np.isnan(ref)] = np.inf
            assert np.array_equal(np.sort(got), np.sort(ref))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_pass_collects_exactly_the_entries_not_below_the_threshold(dtype):
    """All i with not(|x_i| < t) (NaN included), in order, with x_i, however
    small the lists start (they grow mid-pass, keeping what they hold) and
    whether or not the chunk masks are padded for ``nonzero``."""
    rng = np.random.default_rng(21)
    d = 3 * C.CHUNK + 123
    base = rng.standard_normal(2 * d).astype(dtype)
    base[rng.integers(0, 2 * d, 40)] = np.nan
    base[rng.integers(0, 2 * d, 40)] = np.inf
    base[rng.integers(0, 2 * d, 40)] = -np.inf
    base[rng.integers(0, 2 * d, 4000)] = 0.0
    for x in (base[:d], base[::2]):
        for t in (0.0, 1.0, 1.64, 3.5, np.inf):
            ref = np.flatnonzero(~(np.abs(x) < dtype(t)))
            for cap, q in ((1, 0.0), (1000, 0.05), (2 * d, 0.1)):  # q > 0.04: masks padded for nonzero
                ws = S.Workspace()
                n = C.collect(x, t, ws, cap, q)
                assert np.array_equal(ws.idx[:n], ref), (t, cap, q)
                assert np.array_equal(ws.val[:n], x[ref], equal_nan=True), (t, cap, q)


def test_largest_is_exact_whatever_its_sub_sample_says():
    rng = np.random.default_rng(22)
    for trial in range(120):
        m = int(rng.integers(1, 70_000))
        kind = trial % 4
        if kind == 0:
            a = rng.random(m)
        elif kind == 1:
            a = np.where(np.arange(m) % 8 == 0, 1e9 + rng.random(m), rng.random(m))  # the sub-sample sees only the top
        elif kind == 2:
            a = np.where(np.arange(m) % 8 == 0, rng.random(m), 1e9 + rng.random(m))  # ... only the bottom
        else:
            a = rng.integers(0, 3, m).astype(np.float64)  # ties
        r = int(rng.integers(1, m // 2 + 2)) if m > 1 else 1
        top = O.largest(a.copy(), r)
        assert np.array_equal(np.sort(top), np.sort(a)[m - r:]) and top[0] == top.min(), (trial, m, r)


def test_exactly_k_candidates_are_returned_as_new_arrays(monkeypatch):
    """The sample holds only entries of the top k, so the threshold is m_k and
    the candidates are exactly the top k: returned as copies, not as the
    workspace's buffers (which the next call overwrites)."""
    d = 1 << 20
    rng = np.random.default_rng(23)
    x = rng.uniform(-1.0, 1.0, d)
    pos = SM.sample_positions(d, SM.sample_size(d))
    top = np.union1d(pos, rng.choice(d, 40_000, replace=False))
    x[top] = 5.0 * np.sign(rng.standard_normal(top.shape[0]))
    k = top.shape[0]
    c = make_compressor(f"topk:{k}", d)
    calls = Calls(monkeypatch, "collect", "_keep")
    p = c.compress(x, rng)
    assert [n for _, n in calls.log["collect"]] == [k] and calls.count("_keep") == 0
    assert np.array_equal(p.indices, top) and np.array_equal(p.values, x[top].astype(np.float32))
    c.compress(rng.standard_normal(d), rng)
    assert np.array_equal(p.indices, top) and np.array_equal(p.values, x[top].astype(np.float32))


def spy_growth(monkeypatch) -> list:
    """The ``keep`` argument of every Workspace.lists call (> 0: a list grew mid-pass)."""
    grown = []
    real = S.Workspace.lists

    def lists(self, dtype, cap, keep=0):
        grown.append(keep)
        return real(self, dtype, cap, keep)

    monkeypatch.setattr(S.Workspace, "lists", lists)
    return grown


def test_candidate_lists_grow_during_the_pass(monkeypatch):
    """Sampled magnitudes made small: the threshold is low, there are far more
    candidates than the lists were sized for, and they grow mid-pass."""
    d = 1 << 20
    rng = np.random.default_rng(17)
    x = rng.standard_normal(d)
    pos = SM.sample_positions(d, SM.sample_size(d))
    x[pos] *= 0.05
    grown = spy_growth(monkeypatch)
    for k in (d // 100, d // 10):
        assert np.array_equal(top_k_indices(x, k), canonical(x, k))
    assert max(grown) > 0


def test_nan_and_infinities_tied_at_the_kth_magnitude():
    """m_k is +inf with more NaN and infinite entries than k: the lowest
    indices among them, NaN and infinities alike."""
    d = 200_000
    rng = np.random.default_rng(18)
    x = rng.standard_normal(d)
    u = rng.random(d)
    x[u < 0.03] = np.inf
    x[(u >= 0.03) & (u < 0.06)] = -np.inf
    x[(u >= 0.06) & (u < 0.09)] = np.nan
    for k in (d // 100, d // 20, d // 10):
        assert np.array_equal(top_k_indices(x, k), canonical(x, k)), k


@pytest.mark.parametrize("xdt,vdt", [(np.float64, np.float32), (np.float64, np.float64), (np.float64, np.float16),
                                     (np.float32, np.float32), (np.float32, np.float64)])
def test_values_are_x_at_the_indices_in_the_wire_dtype(xdt, vdt):
    import warnings

    d = 300_000
    rng = np.random.default_rng(19)
    x = (rng.standard_normal(d) * 3e4).astype(xdt)  # beyond float16's range: inf, silently
    for k in (d // 1000, d // 10, d // 2):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            idx, vals = top_k(x, k, value_dtype=vdt)
        assert np.array_equal(idx, canonical(x, k))
        with np.errstate(over="ignore"):
            assert vals.dtype == vdt and np.array_equal(vals, x[idx].astype(vdt))


def test_returned_arrays_are_not_reused_by_later_calls_while_held():
    d = 1 << 18
    rng = np.random.default_rng(20)
    c = make_compressor("topk:10%", d)
    x = rng.standard_normal(d)
    p = c.compress(x, rng)
    idx, vals = p.indices.copy(), p.values.copy()
    for _ in range(3):
        c.compress(rng.standard_normal(d), rng)
    assert np.array_equal(p.indices, idx) and np.array_equal(p.values, vals)


@pytest.mark.parametrize("hold", ["view", "memoryview", "read-only"])
def test_a_dropped_result_is_reused_only_when_nothing_refers_to_it(hold):
    """The next call writes into the previous result's arrays only when the
    caller dropped them for good: not while a view or a buffer export of them
    lives (nor when they were made read-only)."""
    import weakref

    d = 1 << 18
    rng = np.random.default_rng(24)
    c = make_compressor("topk:5%", d)
    p = c.compress(rng.standard_normal(d), rng)
    refs = weakref.ref(p.indices), weakref.ref(p.values)
    del p
    p = c.compress(rng.standard_normal(d), rng)
    assert refs[0]() is p.indices and refs[1]() is p.values  # dropped: reused
    old_idx, old_vals = p.indices.copy(), p.values.copy()
    if hold == "view":
        kept = (p.indices[5:], p.values[::2])
    elif hold == "memoryview":
        kept = (memoryview(p.indices), memoryview(p.values))
    else:
        p.indices.flags.writeable = p.values.flags.writeable = False
        kept = ()
    del p
    x = rng.standard_normal(d)
    q = c.compress(x, rng)
    assert refs[0]() is not q.indices and refs[1]() is not q.values
    assert np.array_equal(q.indices, canonical(x, c.k)) and np.array_equal(q.values, x[q.indices].astype(np.float32))
    if hold == "view":
        assert np.array_equal(kept[0], old_idx[5:]) and np.array_equal(kept[1], old_vals[::2])
    elif hold == "memoryview":
        assert np.array_equal(np.asarray(kept[0]), old_idx) and np.array_equal(np.asarray(kept[1]), old_vals)


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
    for d in (SM.MIN_FAST_D, 100_003, 1_000_003):
        s = SM.sample_size(d)
        p = SM.sample_positions(d, s)
        assert s % SM.RUN == 0 and p.shape == (s,) and np.all(np.diff(p) > 0) and p[-1] < d
        runs = p.reshape(-1, SM.RUN)
        assert np.all(runs[:, 0] % 8 == 0) and np.all(np.diff(runs, axis=1) == 1)
        assert SM.sample_positions(d, s) is p
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


# ------------------------------------------------ threads (psmpi.parallel) ---
@pytest.fixture
def set_threads(monkeypatch):
    """set_threads(n): PSMPI_THREADS=n for this test, through the caches of
    psmpi.parallel (its count and its pool); they are cleared again after."""
    def clear():
        parallel.threads.cache_clear()
        parallel._pool.cache_clear()

    def set_(n):
        monkeypatch.setenv("PSMPI_THREADS", str(n))
        clear()
        assert parallel.threads() == n

    yield set_
    clear()


def threaded_vectors(d, rng):
    """Inputs for the threaded path, adversarial ones included (one half of
    x without any candidate, NaN and infinities, ties across the parts)."""
    n = rng.standard_normal(d)
    u = rng.random(d)
    left = np.where(np.arange(d) < d // 2, 0.0, n)  # the first part has no candidate
    nan_inf = n.copy()
    nan_inf[rng.choice(d, 300, replace=False)] = np.nan
    nan_inf[rng.choice(d, 300, replace=False)] = np.inf
    nan_inf[rng.choice(d, 300, replace=False)] = -np.inf
    return {
        "normal": n,
        "right-half-only": left,
        "nan-inf": nan_inf,
        "ties": rng.integers(-3, 4, d).astype(np.float64),
        "sorted": np.sort(n),
        "float32": n.astype(np.float32),
        "nan-inf-at-m_k": np.where(u < 0.03, np.inf, np.where(u < 0.06, -np.inf, np.where(u < 0.09, np.nan, n))),
    }


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_topk_is_bit_identical_to_one_thread(set_threads, monkeypatch, threads):
    """PSMPI_THREADS=1 and PSMPI_THREADS=2 (3) give the same indices and the
    same values, and both the canonical set; the threaded call really makes
    one pass per thread, over its own part of x."""
    d = threads * C.PAR_MIN_PART + 12_345
    assert d >= C.PAR_MIN_D
    rng = np.random.default_rng(31 + threads)
    calls = Calls(monkeypatch, "_pass")
    ws = S.Workspace()  # reused by both counts, as a compressor's would be
    for name, x in threaded_vectors(d, rng).items():
        m = np.abs(x.astype(np.float64))
        m[np.isnan(m)] = np.inf
        order = np.argsort(-m, kind="stable")
        for k in (1, 300, d // 1000, d // 100, d // 10):
            set_threads(1)
            calls.log["_pass"].clear()
            one = top_k(x, k, ws, np.float32)
            assert all(a[1:3] == (0, d) for a, _ in calls.log["_pass"]), (name, k)  # one part: all of x
            set_threads(threads)
            calls.log["_pass"].clear()
            many = top_k(x, k, ws, np.float32)
            parts = sorted(a[1:3] for a, _ in calls.log["_pass"])
            assert sorted(set(parts)) == parallel.chunks(d, threads), (name, k, parts)  # one pass per part ...
            assert len(parts) in (threads, 2 * threads), (name, k, parts)  # ... (twice when the sample missed)
            assert np.array_equal(one[0], many[0]), (name, k)
            assert np.array_equal(one[1], many[1], equal_nan=True) and one[1].dtype == many[1].dtype == np.float32
            assert np.array_equal(many[0], np.sort(order[:k])), (name, k)


@pytest.mark.parametrize("misses", [1, 2])
def test_threaded_brackets_that_miss_m_k_still_select_exactly(set_threads, monkeypatch, misses):
    """The wider bracket and the partition of all candidates (joined from the
    threads' lists) on the threaded path: the same result as one thread."""
    d = C.PAR_MIN_D + 999
    x = np.random.default_rng(32).standard_normal(d)
    x[[5, 77, d - 3]] = [np.nan, np.inf, -np.inf]
    k = d // 10
    real = SM.bracket
    zs = []

    def bracket(top, n, k_, z):
        zs.append(z)
        if len(zs) <= misses:
            u = x.dtype.type(0.01)
            return u, u + 0.001  # all of it above m_k: more than k candidates above the bracket
        return real(top, n, k_, z)

    monkeypatch.setattr(F, "bracket", bracket)
    calls = Calls(monkeypatch, "_pass", "rth_largest")
    got = {}
    for threads in (1, 2):
        set_threads(threads)
        zs.clear()
        for log in calls.log.values():
            log.clear()
        got[threads] = top_k(x, k, value_dtype=np.float32)
        assert zs == [SM.ZB, 2 * SM.ZB] and calls.count("rth_largest") == (1 if misses == 1 else 0)
        assert calls.count("_pass") == threads
    assert np.array_equal(got[1][0], got[2][0]) and np.array_equal(got[1][1], got[2][1], equal_nan=True)
    assert np.array_equal(got[2][0], canonical(x, k))
    assert np.array_equal(got[2][1], x[got[2][0]].astype(np.float32), equal_nan=True)


def test_threaded_exactly_k_candidates_and_growing_lists(set_threads, monkeypatch):
    """Two cases of the threaded pass: the candidates are exactly the top k
    (each thread's list copied into its range of the result), and far more
    candidates than the lists were sized for (they grow mid-pass, per thread)."""
    d = C.PAR_MIN_D + 4321
    rng = np.random.default_rng(33)
    x = rng.uniform(-1.0, 1.0, d)
    pos = SM.sample_positions(d, SM.sample_size(d))
    top = np.union1d(pos, rng.choice(d, 40_000, replace=False))
    x[top] = 5.0 * np.sign(rng.standard_normal(top.shape[0]))
    y = rng.standard_normal(d)
    y[pos] *= 0.05  # a low threshold: many more candidates than expected
    grown = spy_growth(monkeypatch)
    calls = Calls(monkeypatch, "_keep")
    results = {}
    for threads in (1, 2):
        set_threads(threads)
        calls.log["_keep"].clear()
        c = make_compressor(f"topk:{top.shape[0]}", d)
        p = c.compress(x, rng)
        assert calls.count("_keep") == 0 and np.array_equal(p.indices, top)
        grown.clear()
        q = top_k(y, d // 10, S.Workspace(), np.float32)
        assert max(grown) > 0
        results[threads] = p, q
    (p1, q1), (p2, q2) = results[1], results[2]
    assert np.array_equal(p1.values, p2.values) and np.array_equal(p2.values, x[top].astype(np.float32))
    assert np.array_equal(q1[0], q2[0]) and np.array_equal(q1[1], q2[1])
    assert np.array_equal(q2[0], canonical(y, d // 10))


def test_threaded_values_overflow_to_inf_without_a_warning(set_threads):
    """The compaction on the other threads converts to the wire dtype like
    the calling thread: an overflow becomes inf, silently (numpy's error
    state is per thread)."""
    import warnings

    set_threads(2)
    d = C.PAR_MIN_D + 77
    x = np.random.default_rng(34).standard_normal(d) * 1.5e38  # |x| > 3.4e38, beyond float32: inf
    for k in (d // 100, d // 10):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            idx, vals = top_k(x, k, value_dtype=np.float32)
        assert np.array_equal(idx, canonical(x, k))
        with np.errstate(over="ignore"):
            assert np.array_equal(vals, x[idx].astype(np.float32))
        assert np.isinf(vals[idx < d // 2]).any() and np.isinf(vals[idx >= d // 2]).any()  # on both threads


def test_topk_called_on_the_pool_threads_runs_there_in_one_thread(set_threads, monkeypatch):
    """TopK inside parallel.run_all (several workers' vectors at once) does not
    wait for the pool it runs on (which could deadlock): one pass over all
    of x there, the same result."""
    set_threads(2)
    d = C.PAR_MIN_D + 5
    rng = np.random.default_rng(35)
    xs = [rng.standard_normal(d) for _ in range(3)]
    calls = Calls(monkeypatch, "_pass")
    got = parallel.run_all(lambda x: top_k(x, d // 100, value_dtype=np.float32), xs)
    ranges = sorted(a[1:3] for a, _ in calls.log["_pass"])
    assert ranges.count((0, d)) == 2 and len(ranges) == 4  # on the pool: one pass; here: one per part
    for x, (idx, vals) in zip(xs, got):
        assert np.array_equal(idx, canonical(x, d // 100)) and np.array_equal(vals, x[idx].astype(np.float32))


# ----------------------------------------------------------- tiny Top-1 ---
@pytest.mark.parametrize("vdt", [np.float32, np.float64, np.float16])
def test_top1_of_a_short_vector_is_the_canonical_one(vdt):
    """The short path of TopK(k=1).compress: the first index of the largest
    magnitude, NaN tied with infinities (the first of them), the value in the
    wire dtype, overflowing to inf silently -- the same as top_k."""
    import warnings

    rng = np.random.default_rng(36)
    d = 123
    c = make_compressor("topk:1", d, vdt)
    cases = []
    for trial in range(60):
        x = rng.standard_normal(d) * 10.0 ** rng.integers(-3, 4)
        kind = trial % 10
        if kind == 1:
            x = rng.integers(-2, 3, d).astype(np.float64)  # ties: the first index
        elif kind == 2:
            x[rng.integers(d)] = np.nan
        elif kind == 3:
            i, j = sorted(rng.choice(d, 2, replace=False))
            x[i], x[j] = -np.inf, np.nan  # an infinity before the first NaN: it wins
        elif kind == 4:
            i, j = sorted(rng.choice(d, 2, replace=False))
            x[i], x[j] = np.nan, np.inf
        elif kind == 5:
            x[rng.integers(d)] = -3e38 * rng.choice([1.0, 10.0])  # near or beyond float32's range
        elif kind == 6:
            x = x.astype(np.float32)
        elif kind == 7:
            x = np.zeros(d) * rng.choice([1.0, -1.0])
        elif kind == 8:
            x = x[:-20]  # shorter than the compressor's d (as top_k allows)
        elif kind == 9:
            x = rng.standard_normal(2 * d)[::2]  # strided
        cases.append(x)
    cases.append(np.array([-7.0]))
    for x in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            p = c.compress(x, rng)
            ref = top_k(x, 1, value_dtype=vdt)
        assert p.d == d and p.indices.dtype == np.intp and p.values.dtype == vdt
        assert np.array_equal(p.indices, canonical(x, 1)) and np.array_equal(p.indices, ref[0])
        assert np.array_equal(p.values, ref[1], equal_nan=True)
        with np.errstate(over="ignore"):
            assert np.array_equal(p.values, x[p.indices].astype(vdt), equal_nan=True)
