"""Compressor.fused_ef_step: the fused EF21 update is a capability a
compressor declares, not a name the methods test.  None (compress target - g,
then add) on the host below MIN_FAST_D and for every compressor without a kernel; TopK's on a
device equals compress(target - g) followed by add_to(g), bit for bit."""
import numpy as np
import pytest

from psmpi import backend
from psmpi.backend import Device, EmulatedArray, EmulatedDevice
from psmpi.compressors import REGISTRY, example_compressor, example_specs, make_compressor

D = 20_000


def states(d=D, seed=0):
    rng = np.random.default_rng(seed)
    target, g = rng.standard_normal(d), rng.standard_normal(d)
    target[:60] = g[:60] + 2.5  # ties at the top
    return target, g


def reference(c, dev, target, g):
    """compress(target - g), then add_to(g): the unfused step, on ``dev``'s arrays."""
    gd = dev.asarray(g)
    p = c.compress(dev.asarray(target) - gd, np.random.default_rng(1))
    p.add_to(gd)
    return p, gd


@pytest.mark.parametrize("spec", ["topk:1", "topk:1%", "topk:100%"])
def test_topk_fused_step_is_none_on_the_host_below_the_sampled_size(spec):
    """(From MIN_FAST_D on the host has one too: tests/test_select_difference.py.)"""
    target, g = states()
    g0 = g.copy()
    assert make_compressor(spec, D).fused_ef_step(Device(), target, g, np.float32) is None
    assert np.array_equal(g, g0)  # nothing done


@pytest.mark.parametrize("spec", sorted(set(REGISTRY) - {"topk"}))
def test_compressors_without_a_kernel_have_no_fused_step(spec):
    name = example_specs(REGISTRY[spec])[0]
    dev = EmulatedDevice()
    target, g = states()
    for c in (example_compressor(name, D), example_compressor(name, D).as_contractive()):
        for device in (Device(), dev):
            gd = device.asarray(g)
            assert c.fused_ef_step(device, device.asarray(target), gd, np.float32) is None
            assert np.array_equal(device.to_host(gd), g)


@pytest.mark.parametrize("vdt", [np.float32, np.float64])
@pytest.mark.parametrize("spec", ["topk:1", "topk:7", "topk:1%", "topk:100%"])
def test_topk_fused_step_on_the_emulated_device_equals_compress_then_add(spec, vdt):
    dev = EmulatedDevice()
    target, g = states()
    c = make_compressor(spec, D, vdt)
    p, g_ref = reference(c, dev, target, g)
    gd = dev.asarray(g)
    q = c.fused_ef_step(dev, dev.asarray(target), gd, vdt)
    assert q is not None and isinstance(q.indices, EmulatedArray) and isinstance(q.values, EmulatedArray)
    assert q.d == D and q.values.dtype == vdt
    assert np.array_equal(dev.to_host(q.indices), dev.to_host(p.indices))
    assert np.array_equal(dev.to_host(q.values), dev.to_host(p.values))
    assert np.array_equal(dev.to_host(gd), dev.to_host(g_ref))
    host = make_compressor(spec, D, vdt).compress(target - g, np.random.default_rng(1))  # the CPU path: same set
    assert np.array_equal(dev.to_host(q.indices), host.indices) and np.array_equal(dev.to_host(q.values), host.values)


def test_topk_fused_step_only_for_float64_states_and_no_scaling():
    dev = EmulatedDevice()
    target, g = states()
    c = make_compressor("topk:5", D)
    scaled = type(c)(D, "5", np.float32, scale=0.5)
    assert scaled.fused_ef_step(dev, dev.asarray(target), dev.asarray(g), np.float32) is None
    for t, gg in ((target.astype(np.float32), g), (target, g.astype(np.float32))):
        gd = dev.asarray(gg)
        assert c.fused_ef_step(dev, dev.asarray(t), gd, np.float32) is None
        assert np.array_equal(dev.to_host(gd), gg)


@pytest.mark.skipif(not backend.has_gpu(), reason="no CuPy or no CUDA device")
@pytest.mark.parametrize("spec", ["topk:1", "topk:1%"])
def test_topk_fused_step_on_a_gpu_equals_compress_then_add(spec):
    dev = backend.CupyDevice()
    target, g = states()
    c = make_compressor(spec, D)
    p, g_ref = reference(c, dev, target, g)
    gd = dev.asarray(g)
    q = c.fused_ef_step(dev, dev.asarray(target), gd, np.float32)
    assert np.array_equal(dev.to_host(q.indices), dev.to_host(p.indices))
    assert np.array_equal(dev.to_host(q.values), dev.to_host(p.values))
    assert np.array_equal(dev.to_host(gd), dev.to_host(g_ref))
