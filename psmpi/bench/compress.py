"""``psmpi bench compress``: every compressor on one vector per size.

For each size d (10^5 ... 10^8 as memory allows) one float64 vector is drawn;
every compressor compresses it (TopK and RandK at each K/d), and in the same
repetitions -- alternating, so they see the same machine load -- the same
vector is copied with ``numpy.copy`` (the yardstick: one read and one write of
x) and, for TopK, selected with ``numpy.argpartition(numpy.abs(x), d - K)``
(the usual exact TopK).  Reported: best time, GB/s of input read, the ratio
to the copy, the speed-up over argpartition and whether both return the same
set.  With CuPy and a device the GPU path is measured too (TopK by radix
select, scaled sign by the sign-packing kernel; copy = ``cupy.copy``).
Compressors that need a run setting run with their example one
(:func:`psmpi.compressors.example_compressor`): permk as worker 0 of 4 (it
keeps d/4 coordinates; each of the n workers draws the round's permutation),
powersgd:1 on the vector as one matrix of about sqrt(d) x sqrt(d).
"""
from __future__ import annotations

import numpy as np

from ..compressors import REGISTRY, example_compressor, example_specs
from ..select import MIN_FAST_D
from .common import (
    Column,
    available_memory,
    format_rows,
    interleaved,
    k_of,
    machine_info,
    machine_line,
    percent,
)

SPARSE = ("topk", "randk")  # compressors run at every K/d
COMPOSITIONS = ("topk:1%+natural",)  # measured besides every registered compressor
BYTES_PER_ENTRY_PEAK = 96  # peak memory per coordinate of the most memory-hungry compressor (natural, qsgd)


def default_specs(qsgd_levels: int = 4) -> list[str]:
    """Every registered compressor (its first example spec; topk and randk by
    name, run at every K/d), then :data:`COMPOSITIONS`."""
    def spec(name):
        if name == "qsgd":
            return f"qsgd:{qsgd_levels}"
        return name if name in SPARSE else example_specs(REGISTRY[name])[0]

    return [spec(n) for n in sorted(REGISTRY)] + list(COMPOSITIONS)


def _at_every_fraction(spec: str) -> bool:
    return "+" not in spec and spec.partition(":")[0] in SPARSE


def _vector(d: int, dist: str, rng) -> np.ndarray:
    if dist == "normal":
        return rng.standard_normal(d)
    if dist == "laplace":
        return rng.laplace(size=d)
    if dist == "cauchy":
        return rng.standard_cauchy(d)
    raise ValueError(f"unknown distribution {dist!r} (normal, laplace, cauchy)")


def _cpu_rows(x, specs, fractions, repeat, warmup, budget_s, seed):
    d = x.shape[0]
    rows = []
    for spec in specs:
        name = spec.partition(":")[0] if "+" not in spec else spec
        for frac in fractions if _at_every_fraction(spec) else [None]:
            full = f"{name}:{percent(frac)}" if frac is not None else spec
            comp = example_compressor(full, d)  # permk: worker 0 of 4; powersgd: one sqrt(d) x sqrt(d) matrix
            rng = np.random.default_rng(seed)
            fns = {"copy": lambda: np.copy(x), "compress": lambda: comp.compress(x, rng)}
            k = getattr(comp, "k", None)
            if name == "topk":
                fns["argpartition"] = lambda: np.argpartition(np.abs(x), d - k)
                fused = _ef_steps(comp, x, fns, seed)
            t = interleaved(fns, repeat, warmup, budget_s)
            row = {"device": "cpu", "compressor": full, "d": d, "frac": frac, "k": k,
                   "ms": 1e3 * t["compress"].best, "median_ms": 1e3 * t["compress"].median,
                   "gbps": x.nbytes / t["compress"].best / 1e9, "copy_ms": 1e3 * t["copy"].best,
                   "x_copy": t["compress"].best / t["copy"].best, "reps": t["compress"].reps}
            if name == "topk":
                ref = np.sort(np.argpartition(np.abs(x), d - k)[d - k:])
                row.update(argpartition_ms=1e3 * t["argpartition"].best,
                           speedup=t["argpartition"].best / t["compress"].best,
                           same_set=bool(np.array_equal(ref, comp.compress(x, rng).indices)),
                           ef_written_ms=1e3 * t["ef_written"].best,
                           ef_fused_ms=1e3 * t["ef_fused"].best if fused else None)
            rows.append(row)
    return rows


def _ef_steps(comp, target, fns, seed) -> bool:
    """The EF21 step c = TopK(target - g), g += c, for a drawn g: written (the difference
    made, then compressed) and, where TopK has it on the host (d >= MIN_FAST_D), fused
    (:meth:`psmpi.compressors.topk.TopK.fused_ef_step`); into ``fns``.  True when fused."""
    from ..backend import Device

    g = np.random.default_rng(seed + 1).standard_normal(target.shape[0])  # each call moves K entries of g

    def written():
        comp.compress(target - g, None).add_to(g)

    fns["ef_written"] = written
    if not comp.fuses_ef_step(Device()):
        return False
    fns["ef_fused"] = lambda: comp.fused_ef_step(Device(), target, g, comp.value_dtype)
    return True


def _gpu_rows(x, specs, fractions, repeat, warmup, budget_s):
    from ..backend import cupy_or_none, synchronize
    from ..kernels import pack_signs_device, top_k_device
    from ..select import top_k_indices

    cp = cupy_or_none()
    d = x.shape[0]
    xg = cp.asarray(x)
    rows = []
    names = {s.partition(":")[0] for s in specs}
    jobs = []
    if "topk" in names:
        jobs += [(f"topk:{percent(f)}", k_of(f, d), f) for f in fractions]
    if "sign" in names:
        jobs.append(("sign", None, None))
    for label, k, frac in jobs:
        if k is not None:
            fn = (lambda k=k: top_k_device(xg, k))
        else:
            fn = (lambda: (pack_signs_device(xg), cp.abs(xg).sum()))
        t = interleaved({"copy": lambda: cp.copy(xg), "compress": fn}, repeat, warmup, budget_s, sync=synchronize)
        row = {"device": "gpu", "compressor": label, "d": d, "frac": frac, "k": k,
               "ms": 1e3 * t["compress"].best, "median_ms": 1e3 * t["compress"].median,
               "gbps": x.nbytes / t["compress"].best / 1e9, "copy_ms": 1e3 * t["copy"].best,
               "x_copy": t["compress"].best / t["copy"].best, "reps": t["compress"].reps}
        if k is not None:
            row["same_set"] = bool(np.array_equal(cp.asnumpy(top_k_device(xg, k)), top_k_indices(x, k)))
        rows.append(row)
    return rows


def run_compress_bench(sizes=(10**5, 10**6, 10**7, 10**8), fractions=(0.001, 0.01, 0.1), specs=None,
                       repeat: int = 5, warmup: int = 1, budget_s: float = 20.0, device: str = "auto",
                       dist: str = "normal", seed: int = 0) -> dict:
    """Time every compressor (``specs``: names or NAME:PARAM) at every size."""
    from ..backend import has_gpu

    specs = list(specs) if specs else default_specs()
    for s in specs:
        example_compressor(f"{s.partition(':')[0]}:1" if _at_every_fraction(s) else s, 10)  # validate
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"unknown device {device!r} (auto, cpu, gpu)")
    if device == "gpu" and not has_gpu():
        raise ValueError("--device gpu: no CuPy or no CUDA device (psmpi info)")
    gpu = device == "gpu" or (device == "auto" and has_gpu())
    rows, skipped = [], []
    for d in sizes:
        avail = available_memory()
        need = BYTES_PER_ENTRY_PEAK * d
        if avail is not None and need > 0.8 * avail:
            skipped.append({"d": d, "reason": f"needs about {need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"})
            continue
        x = _vector(d, dist, np.random.default_rng(seed))
        if device in ("auto", "cpu"):
            rows += _cpu_rows(x, specs, fractions, repeat, warmup, budget_s, seed)
        if gpu:
            rows += _gpu_rows(x, specs, fractions, repeat, warmup, budget_s)
        del x
    return {"benchmark": "compress", "machine": machine_info(),
            "params": {"sizes": list(sizes), "fractions": list(fractions), "specs": specs, "repeat": repeat,
                       "warmup": warmup, "budget_s": budget_s, "device": device, "dist": dist, "seed": seed,
                       "dtype": "float64"},
            "rows": rows, "skipped": skipped}


COLUMNS = [Column("device", "dev", ">4s"), Column("compressor", "compressor", ">12s"), Column("d", "d", ">10d"),
           Column("k", "K", ">9d"), Column("ms", "ms", ">9.3f"), Column("gbps", "GB/s", ">7.2f"),
           Column("copy_ms", "copy ms", ">8.3f"), Column("x_copy", "x copy", ">7.2f"),
           Column("argpartition_ms", "argpart ms", ">10.2f"), Column("speedup", "x faster", ">8.1f"),
           Column("same_set", "same set", ">8"), Column("ef_written_ms", "EF step ms", ">10.2f"),
           Column("ef_fused_ms", "fused ms", ">8.2f")]


def format_table(res: dict) -> str:
    p = res["params"]
    rows = [dict(r, same_set=None if "same_set" not in r else ("yes" if r["same_set"] else "NO")) for r in res["rows"]]
    lines = [f"compress: {p['dtype']} {p['dist']} vectors, best of {p['repeat']} after {p['warmup']} warm-up; "
             f"'x copy' = time / numpy.copy of the same vector, 'x faster' = argpartition(|x|) time / TopK time; "
             f"TopK rows: the EF21 step c = TopK(x - g), g += c, with x - g written ('EF step') and fused "
             f"(the difference computed where the selection reads it; from d = {MIN_FAST_D})",
             machine_line(res["machine"]), format_rows(COLUMNS, rows)]
    for s in res["skipped"]:
        lines.append(f"skipped d={s['d']}: {s['reason']}")
    return "\n".join(lines)
