"""policy/ is pure: it decides, and imports neither the wire layer nor the gateway's I/O."""

from __future__ import annotations

import ast
from pathlib import Path

POLICY = Path(__file__).resolve().parents[2] / "policy"
FORBIDDEN = ("protocols", "proxy")


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_policy_imports_neither_protocols_nor_proxy() -> None:
    sources = sorted(POLICY.rglob("*.py"))
    assert sources, "no policy sources found"
    offending = [
        f"{path.relative_to(POLICY.parent)} imports {name}"
        for path in sources
        for name in _imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert offending == []
