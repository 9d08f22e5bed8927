"""The docs match the program: every name the shipped configs use is documented, no
machine-specific paths, and the help texts name what the commands do."""
from __future__ import annotations

import re

import pytest
import yaml
from click.testing import CliRunner

from conftest import ROOT
from psmpi.cli import main

NAMED = ("dataset", "problem", "method", "compressor")


def docs_text() -> str:
    return "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def used_values(node, found=None) -> dict:
    """{key: {values}} of the NAMED keys anywhere in a config (base, sweep axes, unions, smoke)."""
    found = found if found is not None else {k: set() for k in NAMED}
    if isinstance(node, dict):
        for k, v in node.items():
            key = str(k).replace("-", "_")
            if key in NAMED:
                for item in v if isinstance(v, list) else [v]:
                    found[key].add(str(item))
            else:
                used_values(v, found)
    elif isinstance(node, list):
        for item in node:
            used_values(item, found)
    return found


def doc_name(key: str, value: str) -> str:
    """The part of a value the docs must name: topk:4 -> topk, quad:skewed,d=2 -> quad:skewed."""
    if key == "compressor":
        return value.partition(":")[0]
    return value.split(",")[0]


CASES = sorted({(key, doc_name(key, v), cfg.name)
                for cfg in (ROOT / "configs").glob("*.yaml")
                for key, values in used_values(yaml.safe_load(cfg.read_text())).items() for v in values})


def test_the_configs_use_every_kind_of_name():
    assert {key for key, _, _ in CASES} == set(NAMED)


@pytest.mark.parametrize("key,name,config", CASES)
def test_every_name_a_config_uses_is_documented(key, name, config):
    pattern = rf"(?<![\w:.-]){re.escape(name)}(?![\w-])"
    assert re.search(pattern, docs_text()), f"{config}: --{key} {name} is documented nowhere in README.md or docs/"


def test_quad_skewed_is_explained_in_the_data_docs():
    text = (ROOT / "docs" / "data.md").read_text()
    assert "`quad:skewed,d=2,noise=1`" in text and "biased" in text


def test_docs_hold_no_machine_specific_paths():
    for path in [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for bad in ("../shared", "/work/", "/tmp/meas", "/root/"):
            assert bad not in text, f"{path.name} names the machine-specific path {bad}"


def test_readme_lists_every_root_attribute_a_run_writes():
    readme = (ROOT / "README.md").read_text()
    for attr in ("config", "gamma", "psmpi_version", "backend", "n_workers", "mpi_library", "stop_reason", "L_i",
                 "timings"):
        assert f"`{attr}`" in readme, attr


def test_readme_quick_start_says_mpirun_may_need_oversubscribe():
    readme = (ROOT / "README.md").read_text()
    quick = readme[readme.index("## Quick start"):readme.index("## Methods")]
    assert "--oversubscribe" in quick


def test_bench_round_help_names_the_dense_baseline_it_runs():
    out = CliRunner().invoke(main, ["bench", "round", "--help"], terminal_width=200).output
    text = " ".join(out.split())
    assert "the same --method with the identity compressor" in text and "gd with the identity" not in text
