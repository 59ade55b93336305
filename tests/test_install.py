"""`pip install .` works on a machine without a C compiler: the package installs as pure
Python, and runs.

A fresh virtualenv, a copy of the tree with nothing built (scripts/pure-tree), and a PATH
with no C compiler on it: pip builds the package as it would anywhere (build isolation,
setuptools and Cython from the index), setup.py finds it cannot compile, and installs the
pure-Python modules (with the `demo` extra, psycopg). The installed `airlock` then says
it runs pure Python, classifies a statement, and runs `airlock demo` against the local
PostgreSQL (a held write approved, the transcript verified); the two modules written for
Cython import as their Python twins.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.builds import COMPILED, NATIVE, ROOT

COMPILERS = ("cc", "gcc", "clang", "x86_64-linux-gnu-gcc")


def _clean_env(path: str) -> dict[str, str]:
    """This process's environment without what would point the venv back at this tree
    (PYTHONPATH) or at a compiler; pip's and the network's settings kept."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if name.startswith(("PIP_", "LC_", "LANG"))
        or name.lower() in ("home", "tmpdir", "http_proxy", "https_proxy", "no_proxy")
    }
    return kept | {"PATH": path}


@pytest.mark.timeout(600)
def test_pip_install_without_a_c_compiler_installs_the_pure_package(tmp_path: Path) -> None:
    tree, venv, bin_dir = tmp_path / "tree", tmp_path / "venv", tmp_path / "bin"
    subprocess.run([ROOT / "scripts" / "pure-tree", tree], check=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    bin_dir.mkdir()  # the only other directory on PATH: no compiler in it
    path = f"{venv / 'bin'}{os.pathsep}{bin_dir}"
    assert not [c for c in COMPILERS if shutil.which(c, path=path)]
    env = _clean_env(path)

    install = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-v", f"{tree}[demo]"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    assert "the C extensions could not be built" in install.stdout + install.stderr

    classified = subprocess.run(
        [venv / "bin" / "airlock", "classify", "--dialect", "postgres", "select 1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (classified.returncode, classified.stderr) == (0, "")
    assert classified.stdout.splitlines()[0] == "read"

    version = subprocess.run(
        [venv / "bin" / "airlock", "--version"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    release = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert (version.returncode, version.stdout) == (0, f"airlock {release} (pure Python)\n")

    demo = subprocess.run(
        [venv / "bin" / "airlock", "demo"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "Traceback" not in demo.stdout + demo.stderr
    story = demo.stdout
    assert "NOTICE: statement held for approval" in story
    assert "agent-1's write ran: UPDATE 1" in story
    assert "-- verified: sealed" in story

    modules = [*COMPILED, *NATIVE]
    probe = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    print(importlib.import_module(name).__file__)\n"
        "from proxy.recording.event_chain import EventChain\n"
        "chain = EventChain(lambda: 1.5)\n"
        "chain.result_tag('SELECT 1')\n"
        "print(chain.prev)\n"
    )
    imported = subprocess.run(
        [venv / "bin" / "python", "-c", probe, *modules],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    *files, prev = imported.stdout.splitlines()
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert files == [str(site / (name.replace(".", "/") + ".py")) for name in modules]
    assert len(prev) == 64
    assert not [
        p for package in ("proxy", "policy", "protocols") for p in (site / package).rglob("*.so")
    ]
    # The web page's own stylesheet and script are package data.
    assert (site / "proxy" / "static" / "desk.css").is_file()
    assert (site / "proxy" / "static" / "desk.js").is_file()
