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

import datetime
import hashlib
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from policy.classify import Verdict
from protocols.errors import ProtocolViolation
from protocols.mysql.messages import parse_stmt_execute
from protocols.postgres import messages as m

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


# --- PostgreSQL: a Bind's values, exactly and as an approver sees them


def postgres_bound_values(bind: m.Bind, declared_types: tuple[int, ...]) -> tuple[BoundValue, ...]:
    """Exactly what a Bind binds, for its retry key: each value's declared type (0: the
    server infers it), format and bytes."""
    formats = bind.param_formats
    return tuple(
        BoundValue(
            declared_types[index] if index < len(declared_types) else 0,
            formats[0] if len(formats) == 1 else (formats[index] if formats else 0),
            value,
        )
        for index, value in enumerate(bind.params)
    )


_PG_TYPE_NAMES = {
    16: "bool",
    17: "bytea",
    18: "char",
    19: "name",
    20: "int8",
    21: "int2",
    23: "int4",
    25: "text",
    26: "oid",
    114: "json",
    700: "float4",
    701: "float8",
    1042: "bpchar",
    1043: "varchar",
    1082: "date",
    1114: "timestamp",
    1184: "timestamptz",
    1700: "numeric",
    2950: "uuid",
    3802: "jsonb",
}
_TEXTUAL = frozenset((18, 19, 25, 114, 1042, 1043))
_EPOCH_2000 = datetime.datetime(2000, 1, 1)
_DATE_2000 = datetime.date(2000, 1, 1)


def postgres_parameters(bind: m.Bind, types: tuple[int, ...]) -> tuple[Parameter, ...]:
    formats = bind.param_formats
    out: list[Parameter] = []
    for index, value in enumerate(bind.params):
        oid = types[index] if index < len(types) else 0
        name = _PG_TYPE_NAMES.get(oid, "unknown" if oid == 0 else f"oid {oid}")
        fmt = formats[0] if len(formats) == 1 else (formats[index] if formats else 0)
        if value is None:
            out.append(Parameter(name, None))
        elif fmt == 0:
            try:
                out.append(Parameter(name, value.decode()))
            except UnicodeDecodeError:
                out.append(Parameter(name, value.hex(), "hex"))
        else:
            decoded = _decode_binary(oid, value)
            if decoded is None:
                out.append(Parameter(name, value.hex(), "hex"))
            else:
                out.append(Parameter(name, decoded))
    return tuple(out)


def _decode_binary(oid: int, value: bytes) -> str | None:
    """Common binary formats as text; None when shown better as hex."""
    try:
        size = len(value)
        if oid == 16 and size == 1:
            return "true" if value[0] else "false"
        if oid in (21, 23, 20) and size in (2, 4, 8):
            return str(int.from_bytes(value, "big", signed=True))
        if oid == 26 and size == 4:
            return str(int.from_bytes(value, "big"))
        if oid == 700 and size == 4:
            return repr(struct.unpack("!f", value)[0])
        if oid == 701 and size == 8:
            return repr(struct.unpack("!d", value)[0])
        if oid in _TEXTUAL:
            return value.decode()
        if oid == 3802 and size >= 1 and value[0] == 1:
            return value[1:].decode()
        if oid == 2950 and size == 16:
            return str(uuid.UUID(bytes=value))
        if oid == 1082 and size == 4:
            days = int.from_bytes(value, "big", signed=True)
            return (_DATE_2000 + datetime.timedelta(days=days)).isoformat()
        if oid in (1114, 1184) and size == 8:
            micros = int.from_bytes(value, "big", signed=True)
            moment = _EPOCH_2000 + datetime.timedelta(microseconds=micros)
            return moment.isoformat(sep=" ") + ("+00" if oid == 1184 else "")
    except (UnicodeDecodeError, OverflowError, ValueError):
        return None
    return None


# --- MySQL: a COM_STMT_EXECUTE's values, exactly and as an approver sees them

#: The type shown for an execute whose parameters cannot be decoded as the server would.
AMBIGUOUS = "undecodable (types MySQL and MariaDB read differently), raw execute"


def mysql_parameters(
    payload: bytes, num_params: int, types: bytes | None, long_data: dict[int, bytes]
) -> tuple[Parameter, ...]:
    """A COM_STMT_EXECUTE's parameters as an approver or auditor sees them. Never raises:
    what cannot be decoded as the server reads it is shown raw, as hex: a malformed
    packet, and an execute with long data (the server takes no value from the packet
    for a parameter that has long data, so decoding it would show the wrong values)."""
    return mysql_execute(payload, num_params, types, long_data)[0]


def mysql_execute(
    payload: bytes, num_params: int, types: bytes | None, long_data: dict[int, bytes]
) -> tuple[tuple[Parameter, ...], tuple[BoundValue, ...]]:
    """The parameters as shown (`mysql_parameters`), and exactly what is bound: each
    value's type code and bytes, or, where the values are shown raw, the raw execute
    (after the statement id) and each parameter's long data."""
    if long_data:
        shown = [Parameter("raw execute", payload[1:].hex(), "hex")]
        shown += [
            Parameter(f"long data for parameter {index + 1}", data.hex(), "hex")
            for index, data in sorted(long_data.items())
        ]
        return tuple(shown), _raw_bound(payload, long_data)
    previous = (
        tuple(int.from_bytes(types[i : i + 2], "little") for i in range(0, len(types), 2))
        if types is not None
        else None
    )
    try:
        execute = parse_stmt_execute(payload, num_params, previous)
    except ProtocolViolation:
        shown = [Parameter("unknown", payload[1:].hex(), "hex")]
        shown += [
            Parameter("long data", data.hex(), "hex") for _, data in sorted(long_data.items())
        ]
        return tuple(shown), _raw_bound(payload, long_data)
    if execute.ambiguous:
        return (Parameter(AMBIGUOUS, payload[1:].hex(), "hex"),), _raw_bound(payload, {})
    values = execute.values
    codes = [execute.types[i] if i < len(execute.types) else None for i in range(len(values))]
    pairs = list(zip(codes, values, strict=True))
    decoded = tuple(_mysql_parameter(code, value) for code, value in pairs)
    return decoded, tuple(
        BoundValue(-1 if code is None else code, BINARY, _value_bytes(value))
        for code, value in pairs
    )


def _raw_bound(payload: bytes, long_data: dict[int, bytes]) -> tuple[BoundValue, ...]:
    """An execute shown raw, keyed raw: its bytes after the statement id (a retry prepares
    the statement anew, under another id), then each parameter's long data, by number."""
    bound = [BoundValue(-1, BINARY, payload[5:])]
    bound += [BoundValue(index, BINARY, data) for index, data in sorted(long_data.items())]
    return tuple(bound)


def _value_bytes(value: object) -> bytes | None:
    """A decoded binary-protocol value's bytes as the server reads it: text as UTF-8,
    numbers as their decimal text (exact: a float's repr reads back as the same float)."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode()


_MYSQL_TYPE_NAMES = {
    0x00: "decimal",
    0x01: "tiny",
    0x02: "short",
    0x03: "long",
    0x04: "float",
    0x05: "double",
    0x06: "null",
    0x07: "timestamp",
    0x08: "longlong",
    0x09: "int24",
    0x0A: "date",
    0x0B: "time",
    0x0C: "datetime",
    0x0D: "year",
    0x0F: "varchar",
    0x10: "bit",
    0xF5: "json",
    0xF6: "newdecimal",
    0xF7: "enum",
    0xF8: "set",
    0xF9: "tiny_blob",
    0xFA: "medium_blob",
    0xFB: "long_blob",
    0xFC: "blob",
    0xFD: "var_string",
    0xFE: "string",
}


def _mysql_parameter(type_code: int | None, value: object) -> Parameter:
    name = "unknown" if type_code is None else _MYSQL_TYPE_NAMES.get(type_code & 0xFF, "unknown")
    if type_code is not None and type_code & 0x8000:
        name = f"unsigned {name}"
    if value is None:
        return Parameter(name, None)
    if isinstance(value, bytes):
        try:
            return Parameter(name, value.decode())
        except UnicodeDecodeError:
            return Parameter(name, value.hex(), "hex")
    return Parameter(name, str(value))
