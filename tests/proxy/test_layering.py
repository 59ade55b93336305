"""Library modules do not import the command-line modules: the transcript code, the API
and the web page share their formatting through proxy/rendering.py instead."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROXY = Path(__file__).parents[2] / "proxy"
CLIS = {"proxy.approvals_cli", "proxy.audit_cli", "proxy.classify_cli", "proxy.cli"}
LIBRARY = [
    *sorted((PROXY / "recording").glob("*.py")),
    PROXY / "api.py",
    PROXY / "web.py",
    PROXY / "rendering.py",
]


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PROXY.parent)))
def test_no_library_module_imports_a_cli(path: Path) -> None:
    assert imported(path) & CLIS == set()
