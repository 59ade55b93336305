"""The compiled modules' two implementations: the build, and the pure Python beside it.

pyproject.toml [tool.airlock] lists the modules setup.py compiles. Each has a `.py` that
runs where nothing was built; a build of the same name (an extension module) shadows it.
`implementations` gives a test both, to hold them to each other where both exist; in a
pure tree (scripts/test runs the unit tests in one, with AIRLOCK_PURE=1) only the `.py`.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import tomllib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
BUILD = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["airlock"]
#: Modules compiled as they are (.py typed by a .pxd), and modules written for Cython
#: (.pyx, their pure twin in the .py).
COMPILED: list[str] = BUILD["compiled"]
NATIVE: list[str] = list(BUILD["native"])
#: scripts/test's run of the unit tests in a copy of the tree with nothing built.
PURE = os.environ.get("AIRLOCK_PURE") == "1"


def source_path(name: str) -> Path:
    return ROOT / (name.replace(".", "/") + ".py")


def is_built(module: ModuleType) -> bool:
    return (module.__file__ or "").endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def pure_module(name: str) -> ModuleType:
    """The `.py` of `name`, run as Python even where a build shadows it (as `name`_pure)."""
    module = importlib.import_module(name)
    if not is_built(module):
        return module
    pure_name = f"{name}_pure"
    if pure_name in sys.modules:
        return sys.modules[pure_name]
    spec = importlib.util.spec_from_file_location(pure_name, source_path(name))
    assert spec is not None
    assert spec.loader is not None
    pure = importlib.util.module_from_spec(spec)
    sys.modules[pure_name] = pure
    spec.loader.exec_module(pure)
    return pure


def implementations(name: str) -> dict[str, ModuleType]:
    """{"pure": the .py, "compiled": the build if there is one}."""
    module = importlib.import_module(name)
    found = {"pure": pure_module(name)}
    if is_built(module):
        found["compiled"] = module
    return found
