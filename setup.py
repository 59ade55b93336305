"""Compiles the relay's hot path with Cython; everything else about the package is in
pyproject.toml.

The compiled modules are ordinary Python files: each `.py` is the one source, and the
`.pxd` beside it only declares C types for its classes and hot loops (Cython's
"augmenting" declarations), so the same file runs, slower, when it is not compiled.
"""

import tomllib
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

_BUILD = tomllib.loads(Path(__file__).with_name("pyproject.toml").read_text())["tool"]["airlock"]
#: Python modules compiled as they are, typed by the .pxd beside each.
COMPILED: list[str] = _BUILD["compiled"]
#: Modules written for Cython (.pyx), with the C libraries they link.
NATIVE: dict[str, list[str]] = _BUILD["native"]


def _source(module: str, suffix: str) -> str:
    return module.replace(".", "/") + suffix


setup(
    ext_modules=cythonize(
        [Extension(name, [_source(name, ".py")]) for name in COMPILED]
        + [
            Extension(name, [_source(name, ".pyx")], libraries=libs)
            for name, libs in NATIVE.items()
        ],
        compiler_directives={"language_level": "3", "annotation_typing": False},
        quiet=True,
    ),
)
