"""TopK of a difference a - b that is never written (psmpi.select.Difference), the
host form of the EF21 step: the same indices and values as TopK of the written
a - b, bit for bit, for every input kind and on every internal path (the sample
missing, the brackets missing, the threaded pass); TopK.fused_ef_step on the host
equals compress(target - g) then add_to(g); and an EF21 run is unchanged by it."""
import numpy as np
import pytest
from test_topk_fast import CALLED_IN, Calls, canonical, set_threads, vectors  # noqa: F401 (a fixture)

import psmpi
from psmpi import backend
from psmpi import parallel
from psmpi.compressors import make_compressor
from psmpi.compressors.topk import TopK
from psmpi.select import Difference, Workspace, top_k
from psmpi.select import candidates as C
from psmpi.select import fast as F
from psmpi.select import sample as SM


def same(p, q):
    """Equal indices, and values equal bit for bit (NaN included)."""
    assert p[0].dtype == q[0].dtype and p[1].dtype == q[1].dtype
    assert np.array_equal(p[0], q[0])
    assert p[1].tobytes() == q[1].tobytes()


def subtrahends(d, rng):
    """b of a - b: zeros (a - b is a), small integers (exact subtractions keep a's ties), a normal vector."""
    return {"zeros": np.zeros(d), "ints": rng.integers(-2, 3, d).astype(np.float64), "normal": rng.standard_normal(d)}


@pytest.mark.parametrize("d", [SM.MIN_FAST_D - 1, SM.MIN_FAST_D, 100_003, 2 * C.CHUNK + 17])
def test_topk_of_a_difference_is_topk_of_the_written_difference(d):
    rng = np.random.default_rng(d)
    ws1, ws2 = Workspace(), Workspace()
    for an, a in vectors(d, rng).items():
        for bn, b in subtrahends(d, rng).items():
            with np.errstate(invalid="ignore", over="ignore"):
                written = a - b
            for k in sorted({1, 2, d // 1000 + 1, d // 100, d // 10, d // 2, d - 1, d}):
                for vdt in (None, np.float32):
                    got = top_k(Difference(a, b), k, ws1, vdt)
                    same(got, top_k(written, k, ws2, vdt))
            assert np.array_equal(got[0], canonical(written, k)), (an, bn)


def test_a_difference_of_strided_views_and_of_float32_minus_float64():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(600_000), rng.standard_normal(600_000)
    a32 = rng.standard_normal(200_000).astype(np.float32)
    for x, y in ((a[::3], b[::3]), (a[::-3], b[1::3]), (a32, b[:200_000])):
        assert Difference(x, y).dtype == np.result_type(x, y)
        for k in (1, 2000, 20_000):
            same(top_k(Difference(x, y), k, None, np.float32), top_k(x - y, k, None, np.float32))
    with pytest.raises(ValueError):
        Difference(a, b[:10])


def test_the_pass_writes_nothing_of_size_d(monkeypatch):
    """On the sampled path the difference is computed a chunk at a time: no
    array of length d is made (checked by what the pass and the sample see)."""
    d = 3 * C.CHUNK + 5
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal(d), rng.standard_normal(d)
    calls = Calls(monkeypatch, "_pass", "exact")
    monkeypatch.setattr(Difference, "written", lambda self: pytest.fail("the difference was written"))
    got = top_k(Difference(a, b), d // 100)
    assert calls.count("_pass") == 1 and calls.count("exact") == 0
    assert isinstance(calls.log["_pass"][0][0][0], Difference)
    assert np.array_equal(got[0], canonical(a - b, d // 100))


def test_a_sample_that_misses_low_writes_the_difference_and_selects_exactly(monkeypatch):
    d = 1 << 20
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal(d), rng.standard_normal(d)
    pos = SM.sample_positions(d, SM.sample_size(d))
    a[pos] = b[pos] + 100.0 + rng.random(pos.shape[0])
    k = d // 10
    calls = Calls(monkeypatch, "exact")
    got = top_k(Difference(a, b), k, None, np.float32)
    assert [x[0].shape[0] for x, _ in calls.log["exact"]] == [d]  # the direct selection over all of a - b
    same(got, top_k(a - b, k, None, np.float32))


@pytest.mark.parametrize("wrong", ["above", "below"])
def test_brackets_that_miss_m_k_on_a_difference(monkeypatch, wrong):
    d = 1 << 20
    rng = np.random.default_rng(14)
    a, b = rng.standard_normal(d), rng.standard_normal(d)
    a[[5, 77, 4000]] = [np.nan, np.inf, -np.inf]
    k = d // 10
    real, zs = SM.bracket, []

    def bracket(top, n, k_, z):
        zs.append(z)
        if len(zs) > 2:
            return real(top, n, k_, z)
        u = np.float64(0.01 if wrong == "above" else 3.0)
        return u, u + 0.001

    ref = top_k(a - b, k, None, np.float32)
    monkeypatch.setattr(F, "bracket", bracket)
    same(top_k(Difference(a, b), k, None, np.float32), ref)
    assert zs == [SM.ZB, 2 * SM.ZB]  # both missed: the partition of all candidates


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_difference_equals_one_thread_and_the_written_one(set_threads, monkeypatch, threads):  # noqa: F811
    d = threads * C.PAR_MIN_PART + 12_345
    rng = np.random.default_rng(31 + threads)
    a, b = rng.standard_normal(d), rng.standard_normal(d)
    a[rng.integers(0, d, 50)] = np.nan
    calls = Calls(monkeypatch, "_pass")
    for k in (1, 300, d // 100, d // 10):
        set_threads(1)
        one = top_k(Difference(a, b), k, Workspace(), np.float32)
        set_threads(threads)
        calls.log["_pass"].clear()
        many = top_k(Difference(a, b), k, Workspace(), np.float32)
        assert sorted({x[1:3] for x, _ in calls.log["_pass"]}) == parallel.chunks(d, threads)
        same(one, many)
        same(many, top_k(a - b, k, Workspace(), np.float32))


@pytest.mark.parametrize("tdt", [np.float32, np.float64])
@pytest.mark.parametrize("vdt", [np.float32, np.float64])
@pytest.mark.parametrize("spec", ["topk:7", "topk:1%", "topk:30%", "topk:100%"])
def test_topk_fused_step_on_the_host_equals_compress_then_add(spec, vdt, tdt):
    d = 70_001
    rng = np.random.default_rng(2)
    target, g = rng.standard_normal(d).astype(tdt), rng.standard_normal(d)
    target[:60] = g[:60] + 2.5  # ties at the top
    c = make_compressor(spec, d, vdt)
    g_ref = g.copy()
    p = c.compress(target - g_ref, np.random.default_rng(1))
    p.add_to(g_ref)
    for _ in range(2):  # the second call reuses the workspace
        g2 = g.copy()
        q = c.fused_ef_step(backend.Device(), target, g2, vdt)
        assert q is not None and q.d == d and q.values.dtype == vdt
        same((q.indices, q.values), (p.indices, p.values))
        assert g2.tobytes() == g_ref.tobytes()


def test_topk_fused_step_on_the_host_declines_what_it_does_not_fuse():
    """None (nothing done) below MIN_FAST_D, for a float32 g, a scaled TopK or a 2-D target."""
    rng = np.random.default_rng(5)
    small = SM.MIN_FAST_D - 1
    c = make_compressor("topk:1%", small)
    t, g = rng.standard_normal(small), rng.standard_normal(small)
    g0 = g.copy()
    assert c.fused_ef_step(backend.Device(), t, g, np.float32) is None and np.array_equal(g, g0)
    d = 40_000
    c = make_compressor("topk:1%", d)
    t = rng.standard_normal(d)
    assert c.fused_ef_step(backend.Device(), t, rng.standard_normal(d).astype(np.float32), np.float32) is None
    assert c.fused_ef_step(backend.Device(), t.reshape(200, 200), rng.standard_normal(d), np.float32) is None
    scaled = make_compressor("topk:1%", d)
    scaled.scale = 0.5
    assert scaled.fused_ef_step(backend.Device(), t, rng.standard_normal(d), np.float32) is None


def test_an_ef21_run_is_the_same_with_and_without_the_host_fused_step(monkeypatch):
    """EF21 / Top-1 % on a problem with d >= MIN_FAST_D: the fused step runs
    (counted) and the iterates equal those of compress-then-add bit for bit."""
    cfg = dict(dataset="synthetic:rows=120,features=40000,density=0.002,seed=3", method="ef21",
               compressor="topk:1%", iters=6, workers=3, backend="serial", quiet=True)
    real, calls = TopK.fused_ef_step, []

    def counted(self, *a):
        out = real(self, *a)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(TopK, "fused_ef_step", counted)
    fused = psmpi.train(cfg)
    assert calls and all(calls)
    monkeypatch.setattr(TopK, "fused_ef_step", lambda self, *a: None)
    plain = psmpi.train(cfg)
    assert fused.x.tobytes() == plain.x.tobytes()
    assert np.array_equal(fused.metrics["grad_norm_sq"], plain.metrics["grad_norm_sq"])


def test_a_context_calls_the_fused_step_only_where_the_compressor_says_it_fuses():
    """fuses_ef_step: TopK on a device, or on the host from MIN_FAST_D on; no other compressor."""
    host, dev = backend.Device(), backend.EmulatedDevice()
    assert make_compressor("topk:1%", SM.MIN_FAST_D).fuses_ef_step(host)
    assert not make_compressor("topk:1", SM.MIN_FAST_D - 1).fuses_ef_step(host)
    assert make_compressor("topk:1", SM.MIN_FAST_D - 1).fuses_ef_step(dev)
    assert not make_compressor("randk:1%", SM.MIN_FAST_D).fuses_ef_step(host)
    assert not make_compressor("randk:1%", SM.MIN_FAST_D).fuses_ef_step(dev)
