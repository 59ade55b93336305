"""The relay's hot path runs compiled, and from builds of the sources as they are now.

The modules listed under [tool.airlock] in pyproject.toml are built in place by setup.py
(scripts/setup and scripts/test run it). A Python file edited after its build would be
shadowed by the stale build, which Python imports first: this test says so, rather than
letting the suite pass against code that is not the code in the tree.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["airlock"]
MODULES = [(name, (".py", ".pxd")) for name in BUILD["compiled"]] + [
    (name, (".pyx",)) for name in BUILD["native"]
]


@pytest.mark.parametrize(("name", "suffixes"), MODULES, ids=[name for name, _ in MODULES])
def test_module_runs_compiled_from_its_current_source(name: str, suffixes: tuple[str, ...]) -> None:
    module = importlib.import_module(name)
    built = Path(module.__file__ or "")
    assert built.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (
        f"{name} runs from {built}, not a compiled build: run scripts/setup"
    )
    base = ROOT / name.replace(".", "/")
    sources = [base.with_suffix(suffix) for suffix in suffixes]
    assert any(source.exists() for source in sources), f"no source for {name}"
    stale = [s.name for s in sources if s.exists() and s.stat().st_mtime > built.stat().st_mtime]
    assert not stale, f"{built.name} is older than {', '.join(stale)}: run scripts/setup"
