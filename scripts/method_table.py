"""Rewrite the method table of README.md from the methods' declarations.

    python scripts/method_table.py          # rewrite README.md in place
    python scripts/method_table.py --check  # exit 1 if README.md is out of date

tests/test_method_layer.py runs the check, so the README and `psmpi train
--help` (made from the same declarations) cannot drift apart.
"""
from __future__ import annotations

import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = "| `--method` | method | compressor | options | step `--gamma theory` |\n|---|---|---|---|---|"


def table() -> str:
    from psmpi.methods import REGISTRY

    return "\n".join([HEADER] + [cls.table_row() for cls in REGISTRY.values()])


def rewritten(text: str) -> str:
    start = text.index(HEADER.splitlines()[0], text.index("## Methods"))
    end = text.index("\n\n", start)
    return text[:start] + table() + text[end:]


if __name__ == "__main__":
    text = README.read_text()
    new = rewritten(text)
    if "--check" in sys.argv[1:]:
        sys.exit(0 if new == text else 1)
    README.write_text(new)
