"""The relay's hot path runs compiled, and from builds of the sources as they are now; in a
pure tree, it runs as the Python beside them.

The modules listed under [tool.airlock] in pyproject.toml are built in place by setup.py
(scripts/setup and scripts/test run it). A source edited after its build would be
shadowed by the stale build, which Python imports first: this test says so, rather than
letting the suite pass against code that is not the code in the tree.

scripts/test also runs the unit tests in a copy of the tree with nothing built
(AIRLOCK_PURE=1): there this test holds every one of those modules to its `.py`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.support.builds import COMPILED, NATIVE, PURE, ROOT, is_built, pure_module, source_path

# The sources a build is made from: a compiled module's .py and its .pxd; a native one's
# .pyx and its .pxd (its .py is the pure twin, not part of the build).
MODULES = [(name, (".py", ".pxd")) for name in COMPILED] + [
    (name, (".pyx", ".pxd")) for name in NATIVE
]
IDS = [name for name, _ in MODULES]


@pytest.mark.parametrize(("name", "suffixes"), MODULES, ids=IDS)
def test_module_runs_from_its_current_source(name: str, suffixes: tuple[str, ...]) -> None:
    module = importlib.import_module(name)
    built = Path(module.__file__ or "")
    if PURE:
        assert built == source_path(name), f"AIRLOCK_PURE=1, yet {name} runs from {built}"
        return
    assert is_built(module), f"{name} runs from {built}, not a compiled build: run scripts/setup"
    base = ROOT / name.replace(".", "/")
    sources = [base.with_suffix(suffix) for suffix in suffixes]
    assert sources[0].exists(), f"no source for {name}"
    stale = [s.name for s in sources if s.exists() and s.stat().st_mtime > built.stat().st_mtime]
    assert not stale, f"{built.name} is older than {', '.join(stale)}: run scripts/setup"


@pytest.mark.parametrize("name", NATIVE)
def test_every_native_module_has_a_pure_twin_with_its_public_names(name: str) -> None:
    """The .py beside each .pyx defines every public name the .pyx does (so whatever
    imports the module finds them either way)."""
    source = (ROOT / name.replace(".", "/")).with_suffix(".pyx").read_text()
    module = importlib.import_module(name)
    declared = {
        line.split()[2 if line.startswith("cdef class") else 1].split("(")[0].rstrip(":")
        for line in source.splitlines()
        if line.startswith(("def ", "cdef class "))
    }
    assert declared
    assert declared <= set(dir(module))
    if is_built(module):
        assert declared <= set(dir(pure_module(name)))
