"""One exception tree, one place per protocol that puts it on the wire.

Every error the gateway reports is a class in proxy/errors.py (or, for the wire
layer's own, protocols/errors.py) under `AirlockError`; `error_message` and
`error_packet` turn each one into what a PostgreSQL or MySQL client reads.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import protocols.errors
import proxy.errors
from policy.errors import AirlockError
from protocols.mysql.messages import ErrPacket
from protocols.postgres import messages as pg
from proxy.mysql.relay import error_packet
from proxy.postgres.relay import error_message

ROOT = Path(__file__).resolve().parents[2]


def _tree() -> list[type[AirlockError]]:
    classes = {
        value
        for module in (proxy.errors, protocols.errors)
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, AirlockError)
    }
    return sorted(classes, key=lambda cls: cls.__name__)


@pytest.mark.parametrize("cls", _tree(), ids=lambda cls: cls.__name__)
def test_every_error_reaches_a_postgresql_client_with_its_sqlstate(
    cls: type[AirlockError],
) -> None:
    error = cls.__new__(cls)
    AirlockError.__init__(error, "refused", detail="the detail", hint="the hint")
    message = pg.decode_backend(error_message(error))
    assert isinstance(message, pg.ErrorResponse)
    assert len(cls.sqlstate) == 5
    assert message.code == cls.sqlstate
    assert message.severity == ("FATAL" if cls.fatal else "ERROR")
    assert (message.message, message.fields["D"], message.fields["H"]) == (
        "refused",
        "the detail",
        "the hint",
    )


@pytest.mark.parametrize("cls", _tree(), ids=lambda cls: cls.__name__)
def test_every_error_reaches_a_mysql_client_with_its_error_number(
    cls: type[AirlockError],
) -> None:
    error = cls.__new__(cls)
    AirlockError.__init__(error, "refused", detail="the detail", hint="the hint")
    wire = error_packet(error, 3)
    assert wire[3] == 3
    packet = ErrPacket.parse(wire[4:])
    assert len(cls.mysql_sqlstate) == 5
    assert (packet.code, packet.sqlstate) == (cls.mysql_errno, cls.mysql_sqlstate)
    assert packet.message == "refused (the detail); the hint"


def _error_classes_outside_errors_modules(package: str) -> list[str]:
    """Classes under `package` that derive (by name, through any chain) from a class of
    the tree, other than in the errors modules themselves."""
    known = {cls.__name__ for cls in _tree()} | {"AirlockError", "AuthenticationFailed"}
    found: list[str] = []
    parsed = [
        (path, ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "errors.py"
    ]
    grew = True
    while grew:
        grew = False
        for path, tree in parsed:
            for node in ast.walk(tree):
                if not isinstance(node, ast.ClassDef) or node.name in known:
                    continue
                bases = {base.id for base in node.bases if isinstance(base, ast.Name)}
                if bases & known:
                    known.add(node.name)
                    found.append(f"{path.relative_to(ROOT)}: {node.name}")
                    grew = True
    return sorted(found)


def test_the_gateway_defines_its_errors_in_proxy_errors() -> None:
    assert _error_classes_outside_errors_modules("proxy") == []
