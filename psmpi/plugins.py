"""Methods and compressors from other packages, found through entry points.

A package registers its own classes in its packaging metadata, e.g. in
``pyproject.toml``::

    [project.entry-points."psmpi.methods"]
    my-ef = "mypkg.methods:MyEF"

    [project.entry-points."psmpi.compressors"]
    my-topk = "mypkg.compressors:MyTopK"

Each entry point names a subclass of :class:`psmpi.methods.Method` or
:class:`psmpi.compressors.Compressor` with its ``name`` set; once the package
is installed, ``--method NAME`` / ``--compressor NAME`` find it, with its
declared options, in ``psmpi train --help`` too.
"""
from __future__ import annotations

import sys

GROUPS = ("psmpi.methods", "psmpi.compressors")


def load_plugins(group: str, registry: dict, base: type) -> list:
    """Register every class declared under the entry-point ``group`` by its
    ``name``.  A plugin that cannot be loaded is reported in one line on stderr
    and left out (a broken package must not break psmpi). -> the names added"""
    from importlib.metadata import entry_points

    added = []
    for ep in entry_points(group=group):
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(f"{ep.value} is not a subclass of {base.__module__}.{base.__name__}")
        except Exception as e:  # noqa: BLE001 - see the docstring
            sys.stderr.write(f"psmpi: warning: plugin {ep.name} ({group}) not loaded: {type(e).__name__}: {e}\n")
            continue
        registry[cls.name] = cls
        added.append(cls.name)
    return added
