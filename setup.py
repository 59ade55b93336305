"""Compiles the relay's hot path with Cython, where it can; everything else about the
package is in pyproject.toml.

Every compiled module has a pure-Python version that runs where it is not built. Most are
ordinary Python files: the `.py` is the one source, and the `.pxd` beside it only
declares C types for its classes and hot loops (Cython's "augmenting" declarations). The
two written for Cython (`native`: proxy/recording/event_chain.pyx, policy/sqlscan.pyx) have a twin
`.py` of the same name, held to them by their tests. A build is an extension module of
the same name, which Python imports before the `.py`.

The build is optional: with AIRLOCK_PURE=1 in the environment, or without Cython, nothing
is compiled; where a C compiler, the Python headers or OpenSSL's libcrypto are missing,
the build says so and the package installs pure Python (all of it: a compiled module
calls into event_chain's C type, so they are built together or not at all). Set
AIRLOCK_COMPILED=1 to make a failed build an error instead (scripts/setup does).
"""

import os
import sys
import tomllib
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_BUILD = tomllib.loads(Path(__file__).with_name("pyproject.toml").read_text())["tool"]["airlock"]
#: Python modules compiled as they are, typed by the .pxd beside each.
COMPILED: list[str] = _BUILD["compiled"]
#: Modules written for Cython (.pyx), with the C libraries they link.
NATIVE: dict[str, list[str]] = _BUILD["native"]
PURE = os.environ.get("AIRLOCK_PURE") == "1"
REQUIRED = os.environ.get("AIRLOCK_COMPILED") == "1"


def _source(module: str, suffix: str) -> str:
    return module.replace(".", "/") + suffix


def _say(message: str) -> None:
    print(f"airlock setup.py: {message}", file=sys.stderr, flush=True)


def _extensions() -> list[Extension]:
    if PURE:
        _say("AIRLOCK_PURE=1: nothing compiled, the package runs as pure Python")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if REQUIRED:
            raise
        _say("Cython is not installed: nothing compiled, the package runs as pure Python")
        return []
    return cythonize(  # type: ignore[no-any-return]
        [Extension(name, [_source(name, ".py")]) for name in COMPILED]
        + [
            Extension(name, [_source(name, ".pyx")], libraries=libs)
            for name, libs in NATIVE.items()
        ],
        compiler_directives={"language_level": "3", "annotation_typing": False},
        quiet=True,
    )


class OptionalBuildExt(build_ext):
    """build_ext, all or nothing: where one extension fails to compile or link, none is
    kept (the package then runs as pure Python), unless AIRLOCK_COMPILED=1."""

    def initialize_options(self) -> None:
        super().initialize_options()
        self._failures: list[str] = []

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # no compiler at all (DistutilsPlatformError, ...)
            if REQUIRED:
                raise
            self._failures.append(f"{type(error).__name__}: {error}")
        if self._failures:
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            _say(
                "the C extensions could not be built ("
                + "; ".join(self._failures[:3])
                + "): nothing compiled, the package runs as pure Python"
            )

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:  # CompileError, LinkError, a missing compiler
            if REQUIRED:
                raise
            self._failures.append(f"{ext.name}: {type(error).__name__}: {error}")


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
