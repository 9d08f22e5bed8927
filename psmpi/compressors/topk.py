"""TopK: keep the K entries of largest magnitude, exactly (the selection: :mod:`psmpi.select`)."""
from __future__ import annotations

import numpy as np

from ..select import MIN_FAST_D, Difference, Workspace, top1, top_k
from .base import Compressor, parse_count, register
from .payload import Sparse


@register
class TopK(Compressor):
    """Greedy sparsification: keep the K largest |x_j| (the canonical set of
    :func:`psmpi.select.top_k`: ties to the lowest indices, NaN first).
    Contractive, alpha = K/d.  On a device, with its fused kernel, it runs
    the whole EF21 step (:meth:`fused_ef_step`)."""

    name = "topk"
    constant = "contractive, alpha = K/d"
    examples = ("topk:1", "topk:10%", "topk:50%", "topk:100%")
    sparsifier = True
    takes_param = True
    device_native = True

    def setup(self, param):
        self.k = parse_count(self.name, param, self.d)
        self._ws = None  # buffers reused from round to round
        vdt = self.value_dtype
        self._lim = float(np.finfo(vdt).max) if self.k == 1 and vdt.kind == "f" else None  # Top-1: see top1

    @property
    def alpha(self):
        return self.k / self.d

    def compress(self, x, rng):
        if (self._lim is not None and type(x) is np.ndarray and x.ndim == 1 and 0 < x.shape[0] < MIN_FAST_D
                and x.dtype.kind == "f" and self.scale == 1.0):
            out = top1(x, self.value_dtype, self._lim)
            if out is not None:
                return Sparse(self.d, *out)
        if self._ws is None:
            self._ws = Workspace()
        direct = self.scale == 1.0  # values straight into the wire dtype, no extra copy
        idx, vals = top_k(x, self.k, self._ws, self.value_dtype if direct else None)  # on x's device
        return Sparse(self.d, idx, vals if direct else self.wire_values(vals))

    def fuses_ef_step(self, device) -> bool:
        return self.scale == 1.0 and (not device.on_host or self.d >= MIN_FAST_D)

    def fused_ef_step(self, device, target, g, value_dtype):
        """For float64 ``g`` and no scaling: c = Top-K(target - g) with values
        as ``value_dtype``, g += c in place, without writing target - g.  On a
        device (float64 ``target``), one kernel pass (``device.ef_step``, i.e.
        :func:`psmpi.kernels.ef21_step_device`), and only the K indices and
        values of c leave the device; on the host, from d = MIN_FAST_D on, the
        selection computes the difference chunk by chunk where it reads it
        (:class:`psmpi.select.Difference`), the same c bit for bit.  Otherwise
        None (see :meth:`Compressor.fused_ef_step`)."""
        if not self.fuses_ef_step(device) or g.dtype != np.float64:
            return None
        if device.on_host:
            if not (type(target) is np.ndarray and type(g) is np.ndarray and target.dtype.kind == "f"
                    and target.shape == g.shape == (self.d,)):
                return None
            if self._ws is None:
                self._ws = Workspace()
            c = Sparse(self.d, *top_k(Difference(target, g), self.k, self._ws, self.value_dtype))
            c.add_to(g)
            return c
        if target.dtype != np.float64:
            return None
        idx, vals = device.ef_step(target, g, self.k, value_dtype)
        return Sparse(g.shape[0], idx, vals)
