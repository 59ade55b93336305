"""What a package's sources import, read from their syntax trees (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_modules(path: Path) -> list[str]:
    """Every absolute module a source names in an import; `from a import b` counts as
    both `a` and `a.b`, since b may be a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names
