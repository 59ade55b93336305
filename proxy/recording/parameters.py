"""A statement's bound parameters, decoded from however the transcript holds them.

The relay records parameters raw (a PostgreSQL Bind message, a MySQL COM_STMT_EXECUTE)
so as to spend nothing on them while it forwards; the protocols' own decoders read them
back here, for replay, export and the API.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, TypeGuard

from protocols.errors import ProtocolViolation
from protocols.postgres import messages as pg
from proxy.parameters import mysql_parameters, postgres_parameters


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    return None


def decoded_parameters(data: Mapping[str, Any]) -> list[Any] | None:
    """A statement's bound parameters as [{type, value, format}]: as recorded, or decoded
    from the raw PostgreSQL Bind message (`bind`, with the parameter type OIDs in `types`)
    that the relay records to spend nothing on decoding while it forwards."""
    params = _first(data, "params", "parameters")
    if isinstance(params, list):
        return params
    execute = data.get("execute")
    if isinstance(execute, bytes):
        return _mysql_parameters(data, execute)
    bind = data.get("bind")
    if not isinstance(bind, bytes):
        return None
    types = data.get("types")
    oids = tuple(t for t in types if _is_int(t)) if isinstance(types, list) else ()
    try:
        message = pg.decode_frontend(bind)
    except (ProtocolViolation, ValueError, IndexError, struct.error):
        message = None
    if not isinstance(message, pg.Bind):
        return [{"type": "raw Bind message, hex", "value": bind.hex(), "format": "hex"}]
    return [parameter.to_json() for parameter in postgres_parameters(message, oids)]


def _mysql_parameters(data: Mapping[str, Any], execute: bytes) -> list[Any]:
    """Decoded from a raw COM_STMT_EXECUTE (`execute`, with `num_params`, the types an
    earlier execute bound, `param_types`, and any `long_data`)."""
    count = data.get("num_params")
    types = data.get("param_types")
    long_data = data.get("long_data")
    chunks = (
        {int(k): v for k, v in long_data.items() if str(k).isdigit() and isinstance(v, bytes)}
        if isinstance(long_data, dict)
        else {}
    )
    parameters = mysql_parameters(
        execute,
        count if _is_int(count) else 0,
        types if isinstance(types, bytes) else None,
        chunks,
    )
    return [parameter.to_json() for parameter in parameters]
