"""``psmpi bench wire``: bytes of a TopK message against the information bound.

For each size d and K/d, a TopK message of a float64 normal vector (float32
values on the wire) is encoded with each support encoding of the codec
(absolute, bitmap, Elias-Fano) and with the automatic choice.  Reported: bytes
on the wire (header included), the information bound 32 K + log2 C(d, K) bits,
their ratio, encode and decode times and throughput (MB/s of message), and,
for the automatic choice, the TopK compression time of the same vector with
the ratio (encode + decode) / compression.  Two reference rows give the size
with plain int32 and int64 absolute indices (not encodings of this codec).

Other compressors (``compressors``, e.g. natural, qsgd:4) give one row per d: the
message of the same vector (float32 values), its size against its information
content (:func:`psmpi.wire.codec.information_content_bits`), bytes per
coordinate, encode and decode times and the compression time with the ratio
(encode + decode) / compression.
"""
from __future__ import annotations

import numpy as np

from ..compressors import example_compressor, make_compressor
from ..wire import codec
from .common import (
    Column,
    format_rows,
    interleaved,
    k_of,
    machine_info,
    machine_line,
    percent,
)


def _message_rows(x, specs, repeat, warmup, budget_s, seed):
    """One row per compressor spec: its message of x against its information content."""
    d = x.shape[0]
    rows = []
    for spec in specs:
        comp = example_compressor(spec, d)
        rng = np.random.default_rng(seed)
        p = comp.compress(x, rng)
        msg = codec.encode(p)
        bound = codec.information_content_bits(p) / 8
        t = interleaved({"encode": lambda: codec.encode(p), "decode": lambda: codec.decode(msg, d),
                         "compress": lambda: comp.compress(x, rng)}, repeat, warmup, budget_s)
        q = codec.decode(msg, d)
        rows.append({"d": d, "compressor": spec, "bytes": len(msg), "bound_bytes": bound, "x_bound": len(msg) / bound,
                     "bytes_per_coord": len(msg) / d, "encode_ms": 1e3 * t["encode"].best,
                     "decode_ms": 1e3 * t["decode"].best, "encode_mbps": len(msg) / t["encode"].best / 1e6,
                     "decode_mbps": len(msg) / t["decode"].best / 1e6, "compress_ms": 1e3 * t["compress"].best,
                     "codec_over_compress": (t["encode"].best + t["decode"].best) / t["compress"].best,
                     "lossless": bool(np.array_equal(q.to_dense(), p.to_dense()))})
    return rows


def run_wire_bench(sizes=(10**5, 10**6, 10**7), fractions=(0.001, 0.01, 0.1), encodings=None,
                   repeat: int = 5, warmup: int = 1, budget_s: float = 10.0, seed: int = 0,
                   compressors=("topk",)) -> dict:
    """``compressors``: 'topk' for the TopK rows (each support encoding at each
    K/d), any other spec for one message row per d."""
    if encodings and "topk" not in compressors:
        raise ValueError("--encodings applies to the topk rows: add topk to --compressors")
    encodings = list(encodings) if encodings else list(codec.ENCODINGS)
    for e in encodings:
        if e not in codec.ENCODINGS:
            raise ValueError(f"unknown encoding {e!r}; valid: {', '.join(codec.ENCODINGS)}")
    compressors = list(compressors)
    others = [c for c in compressors if c != "topk"]
    for spec in others:
        for d in sizes:
            example_compressor(spec, d)  # an unknown or bad spec: refused before any measurement
    rows, messages = [], []
    for d in sizes:
        x = np.random.default_rng(seed).standard_normal(d)
        messages += _message_rows(x, others, repeat, warmup, budget_s, seed)
        for frac in fractions if "topk" in compressors else ():
            k = k_of(frac, d)
            comp = make_compressor(f"topk:{k}", d)
            p = comp.compress(x, None)
            bound = codec.information_bound_bits(d, k) / 8
            header = len(codec._header(codec.SPARSE, 1, d, k, False))
            base = {"d": d, "frac": frac, "k": k, "bound_bytes": bound}
            for enc in encodings + ["auto"]:
                force = None if enc == "auto" else enc
                msg = codec.encode(p, force)
                fns = {"encode": lambda: codec.encode(p, force), "decode": lambda: codec.decode(msg, d)}
                if enc == "auto":
                    fns["compress"] = lambda: comp.compress(x, None)
                t = interleaved(fns, repeat, warmup, budget_s)
                q = codec.decode(msg, d)
                row = dict(base, encoding=enc if enc != "auto" else f"auto={codec.ENCODING_NAMES[(msg[3] >> 4) & 7]}",
                           bytes=len(msg), x_bound=len(msg) / bound, encode_ms=1e3 * t["encode"].best,
                           decode_ms=1e3 * t["decode"].best, encode_mbps=len(msg) / t["encode"].best / 1e6,
                           decode_mbps=len(msg) / t["decode"].best / 1e6,
                           lossless=bool(np.array_equal(q.indices, p.indices) and np.array_equal(q.values, p.values)))
                if enc == "auto":
                    row.update(compress_ms=1e3 * t["compress"].best,
                               codec_over_compress=(t["encode"].best + t["decode"].best) / t["compress"].best)
                rows.append(row)
            for name, width in (("int32 (ref)", 4), ("int64 (ref)", 8)):
                size = header + k * (width + 4)
                rows.append(dict(base, encoding=name, bytes=size, x_bound=size / bound))
    return {"benchmark": "wire", "machine": machine_info(),
            "params": {"sizes": list(sizes), "fractions": list(fractions), "encodings": encodings,
                       "repeat": repeat, "warmup": warmup, "budget_s": budget_s, "seed": seed,
                       "values": "float32", "wire_version": codec.VERSION, "compressors": compressors},
            "rows": rows, "messages": messages}


COLUMNS = [Column("d", "d", ">10d"), Column("frac_s", "K/d", ">5s"), Column("k", "K", ">8d"),
           Column("encoding", "encoding", ">16s"), Column("bytes", "bytes", ">10d"),
           Column("bound_bytes", "bound", ">12.1f"), Column("x_bound", "x bound", ">7.4f"),
           Column("encode_ms", "enc ms", ">8.3f"), Column("decode_ms", "dec ms", ">8.3f"),
           Column("encode_mbps", "enc MB/s", ">8.0f"), Column("decode_mbps", "dec MB/s", ">8.0f"),
           Column("compress_ms", "topk ms", ">8.3f"), Column("codec_over_compress", "(e+d)/topk", ">10.3f")]


MESSAGE_COLUMNS = [Column("d", "d", ">10d"), Column("compressor", "compressor", ">12s"),
                   Column("bytes", "bytes", ">10d"), Column("bound_bytes", "content", ">12.1f"),
                   Column("x_bound", "x content", ">9.4f"), Column("bytes_per_coord", "B/coord", ">7.4f"),
                   Column("encode_ms", "enc ms", ">8.3f"), Column("decode_ms", "dec ms", ">8.3f"),
                   Column("encode_mbps", "enc MB/s", ">8.0f"), Column("decode_mbps", "dec MB/s", ">8.0f"),
                   Column("compress_ms", "compr ms", ">8.3f"), Column("codec_over_compress", "(e+d)/compr", ">11.3f")]


def format_table(res: dict) -> str:
    p = res["params"]
    rows = [dict(r, frac_s=percent(r["frac"])) for r in res["rows"]]
    head = f"best of {p['repeat']} after {p['warmup']} warm-up"
    out = []
    if rows:
        out += [f"wire: TopK messages of float64 normal vectors, float32 values, wire version {p['wire_version']}; "
                f"bound = 32 K + log2 C(d, K) bits; {head}", machine_line(res["machine"]), format_rows(COLUMNS, rows)]
    if res.get("messages"):
        out += [f"wire: messages of float64 normal vectors, float32 values, wire version {p['wire_version']}; "
                f"content = the message's information content (psmpi.wire.codec.information_content_bits), "
                f"in bytes; {head}", machine_line(res["machine"]), format_rows(MESSAGE_COLUMNS, res["messages"])]
    return "\n".join(out)
