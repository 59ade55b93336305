"""proxy/'s packages form layers, and every import points down (or within a package).

From the bottom: the foundations every part shares (errors, the one parameters type, text
made safe to show, addresses, log formats); approvals (store, hub, credentials, webhooks);
config; recording (transcripts, ledger, signing); the session core; the two protocols'
sessions, which never import each other; the HTTP surface (API, web page, issuers); the
server that wires them together (and the supervisor of its worker processes); the command
line. A CLI's formatting that a library needs lives below both, in proxy/rendering.py; a
protocol's parameter decoding, in proxy/parameters.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PROXY = ROOT / "proxy"
LAYERS: list[set[str]] = [
    {"errors", "parameters", "rendering", "addresses", "logs"},
    {"approvals"},
    {"config"},
    {"recording"},
    {"core"},
    {"postgres", "mysql"},
    {"http"},
    {"server", "workers"},
    {"cli"},
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}
MODULES = sorted(p for p in PROXY.rglob("*.py") if p.name != "__init__.py" or p.parent != PROXY)


def unit_of(module: str) -> str:
    """proxy.postgres.gate -> postgres; proxy.errors -> errors."""
    return module.split(".")[1]


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
    return {name for name in names if name.startswith("proxy.")}


def test_every_package_has_a_layer() -> None:
    units = {unit_of(module_of(path)) for path in MODULES}
    assert units <= set(LEVEL), f"give these a layer: {sorted(units - set(LEVEL))}"


def upward(unit: str, names: set[str]) -> list[str]:
    """The imports of a module in `unit` that point to its own layer or above."""
    return sorted(
        name for name in names if unit_of(name) != unit and LEVEL[unit_of(name)] >= LEVEL[unit]
    )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    unit = unit_of(module_of(path))
    assert upward(unit, imported(path)) == [], f"{unit} imports from its layer or above"


def test_the_rule_catches_what_used_to_run_back_up() -> None:
    """Recording importing a CLI's formatting and a protocol's decoder, the API importing
    the audit CLI, one protocol importing the other."""
    assert upward("recording", {"proxy.cli.approvals", "proxy.postgres.gate"}) == [
        "proxy.cli.approvals",
        "proxy.postgres.gate",
    ]
    assert upward("http", {"proxy.cli.audit", "proxy.core.listener"}) == ["proxy.cli.audit"]
    assert upward("mysql", {"proxy.postgres.gate"}) == ["proxy.postgres.gate"]
