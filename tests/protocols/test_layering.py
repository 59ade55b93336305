"""protocols/ is the sans-I/O wire layer: it frames, parses and builds messages, and
raises only its own errors. It imports no I/O and nothing of the gateway or of policy
but the root of the exception tree."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.layering import imported_modules

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"
#: Packages protocols/ must not import (by their top-level name).
FORBIDDEN = ("asyncio", "socket", "ssl", "selectors", "uvloop", "proxy", "policy")
#: What protocols/ may take from those: the root of the exception tree and the error
#: a client login raises (policy/errors.py imports nothing).
ALLOWED = ("policy.errors", "policy.errors.AirlockError", "policy.errors.AuthenticationFailed")


def _sources() -> list[Path]:
    sources = sorted(PROTOCOLS.rglob("*.py"))
    assert sources, "no protocols sources found"
    return sources


def test_protocols_imports_no_io_no_gateway_and_no_policy() -> None:
    offending = [
        f"{path.relative_to(PROTOCOLS.parent)} imports {name}"
        for path in _sources()
        for name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN and name not in ALLOWED
    ]
    assert offending == []


def _raised_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name):
                names.add(exc.id)
    return names


def test_protocols_errors_holds_only_what_the_wire_layer_raises() -> None:
    """A gateway error (a statement denied, a hold timed out) belongs in proxy/errors.py:
    every error class defined in protocols/errors.py is raised somewhere in protocols/."""
    errors = PROTOCOLS / "errors.py"
    defined = {
        node.name
        for node in ast.parse(errors.read_text(encoding="utf-8")).body
        if isinstance(node, ast.ClassDef)
    }
    assert defined, "protocols/errors.py defines no errors"
    raised = set().union(*(_raised_names(path) for path in _sources() if path != errors))
    assert sorted(defined - raised) == []
