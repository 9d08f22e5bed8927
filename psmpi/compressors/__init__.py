"""Compression operators. ``make_compressor("topk:1%", d)`` builds one by spec."""
import numpy as np

from . import (  # noqa: F401  (register)
    bernoulli, identity, natural, natural_dithering, permk, powersgd, qsgd, randk, sign, terngrad, topk)
from ..plugins import load_plugins
from .base import REGISTRY, Compressor, CompressorError, NoConstant, Setting, build, compressor_class, example_specs
from .compose import EXAMPLES as COMPOSITION_EXAMPLES
from .compose import Composition, split_spec
from .payload import (Composed, Dense, Dithered, Empty, LowRank, Natural, Payload, Permuted, Quantized, Signs,
                      Sparse)

__all__ = ["check_spec", "REGISTRY", "Compressor", "CompressorError", "NoConstant", "Setting", "make_compressor",
           "example_compressor", "Payload", "Composition", "Dense", "Sparse", "Empty", "Signs", "Natural", "Quantized",
           "Dithered", "Composed", "Permuted", "LowRank", "all_examples", "example_specs", "COMPOSITION_EXAMPLES"]


def make_compressor(spec: str, d: int, value_dtype=np.float32, setting: Setting | None = None) -> Compressor:
    """Build a compressor from ``NAME[:PARAM]`` (``topk:5``, ``topk:1%``,
    ``qsgd:4``) or a composition ``A+B`` (``topk:1%+natural``: B applied to
    the values A keeps, :class:`~psmpi.compressors.compose.Composition`).
    ``setting``: what the run tells the compressor (the number of workers for
    permk, the parameter blocks of a neural network for powersgd)."""
    if "+" in str(spec):
        return Composition(d, str(spec).strip(), value_dtype)
    return build(spec, d, value_dtype, setting=setting)


def example_compressor(spec: str, d: int, value_dtype=np.float32, index: int = 0, seed: int = 0) -> Compressor:
    """``spec`` as the test tables and ``psmpi bench compress`` run it: built with its
    class's example setting (:meth:`Compressor.example_setting`, e.g. permk among 4
    workers) and, for a per-worker compressor, the copy of worker ``index``."""
    setting = None if "+" in str(spec) else compressor_class(spec).example_setting(d)
    return make_compressor(spec, d, value_dtype, setting).for_worker(index, seed)


def check_spec(spec: str) -> None:
    """CompressorError unless ``spec`` names a registered compressor or a
    valid composition ``A+B`` (parameters are checked when the compressor is
    built for a dimension)."""
    if "+" in str(spec):
        split_spec(spec)
    else:
        compressor_class(spec)


def all_examples() -> tuple[str, ...]:
    """Every registered compressor's example specs, then the compositions'."""
    return tuple(s for cls in REGISTRY.values() for s in example_specs(cls)) + COMPOSITION_EXAMPLES


load_plugins("psmpi.compressors", REGISTRY, Compressor)  # compressors other packages register (psmpi/plugins.py)
