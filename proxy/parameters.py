"""Bound parameters, whatever the protocol: what an approver sees of them (`Parameter`),
what was bound exactly (`BoundValue`), and the one key a retry must match
(`parameters_key`).

A statement grant (scope `statement`) lets the same text with the same bound values
run once: the session asks the store for a grant whose key is this statement's. The
key is a digest of every bound value's type, format and bytes, in order:

- PostgreSQL: the type OID the Parse declared (0 when the server infers it), the
  Bind's format code (0 text, 1 binary) and the value's bytes as bound. The server's
  types follow from the statement text and the declared types, so the same text bound
  with the same bytes runs the same.
- MySQL: the COM_STMT_EXECUTE's type code (the unsigned flag included), format 1 (the
  binary protocol), and the value's bytes as the server reads them (integers and
  floats as their decimal text, text as UTF-8, blobs as sent). An execute the gateway
  shows raw (long data, types the servers read differently, a malformed packet) is
  keyed by its raw bytes.

NULL is not the empty value: it has no bytes at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from policy.classify import Verdict

TEXT, BINARY = 0, 1


@dataclass(frozen=True, slots=True)
class Parameter:
    """A bound parameter as the approver sees it."""

    type: str  # type name (int4, text, ...) or "unknown"
    value: str | None  # decoded text, hex for undecodable binary; None for NULL
    format: str = "text"  # "text", or "hex" when the value is binary shown as hex

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "value": self.value, "format": self.format}


class BoundValue(NamedTuple):
    """One bound value, exactly: the protocol's type code, format, and bytes."""

    type: int
    format: int
    data: bytes | None  # None for NULL


def parameters_key(values: Iterable[BoundValue]) -> str:
    """The digest a retry under a statement grant must match: every value's type, format
    and bytes, in order (no values: the digest of nothing)."""
    digest = hashlib.sha256()
    for value in values:
        data = value.data
        if data is None:
            digest.update(b"%d:%d:N;" % (value.type, value.format))
        else:
            digest.update(b"%d:%d:%d:" % (value.type, value.format, len(data)))
            digest.update(data)
    return digest.hexdigest()


#: The key of a statement that binds nothing (a simple query, COM_QUERY).
NO_PARAMETERS_KEY = parameters_key(())


class Execution(NamedTuple):
    """What a held execution of a prepared statement runs, as the session judges it: the
    statement, its parameters as an approver sees them, the key a retry must match, and
    what the protocol records of it."""

    sql: str
    verdict: Verdict
    parameters: tuple[Parameter, ...]
    key: str
    #: PostgreSQL: the Bind message and the parameter types, recorded raw.
    bind: bytes | None = None
    types: tuple[int, ...] = ()
    #: MySQL: parameter types that MySQL and MariaDB read differently, so the values
    #: shown may not be those the server would use: no approver is asked to judge them.
    ambiguous: bool = False
