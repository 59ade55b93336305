"""policy/ is pure: it decides, and imports neither the wire layer nor the gateway's I/O."""

from __future__ import annotations

from pathlib import Path

from tests.support.layering import imported_modules

POLICY = Path(__file__).resolve().parents[2] / "policy"
FORBIDDEN = ("protocols", "proxy")


def test_policy_imports_neither_protocols_nor_proxy() -> None:
    sources = sorted(POLICY.rglob("*.py"))
    assert sources, "no policy sources found"
    offending = [
        f"{path.relative_to(POLICY.parent)} imports {name}"
        for path in sources
        for name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert offending == []
