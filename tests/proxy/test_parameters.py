"""One parameters key for both protocols: a digest of each bound value's type, format
and bytes, so that a retried statement finds the grant approved for exactly its values."""

from __future__ import annotations

import struct

from protocols.mysql.messages import FieldType
from protocols.postgres import messages as m
from proxy.parameters import (
    BINARY,
    NO_PARAMETERS_KEY,
    TEXT,
    BoundValue,
    parameters_key,
    postgres_bound_values,
)
from tests.proxy import test_mysql_relay as my
from tests.proxy import test_pg_gate as pg


def key(*values: tuple[int, int, bytes | None]) -> str:
    return parameters_key(BoundValue(*value) for value in values)


def test_the_key_differs_exactly_when_a_type_format_or_byte_differs() -> None:
    base = key((23, TEXT, b"1"), (25, TEXT, b"ab"))
    assert base == key((23, TEXT, b"1"), (25, TEXT, b"ab"))
    assert base != key((20, TEXT, b"1"), (25, TEXT, b"ab"))  # type
    assert base != key((23, BINARY, b"1"), (25, TEXT, b"ab"))  # format
    assert base != key((23, TEXT, b"2"), (25, TEXT, b"ab"))  # a byte
    assert base != key((23, TEXT, b"1a"), (25, TEXT, b"b"))  # where values split
    assert base != key((25, TEXT, b"ab"), (23, TEXT, b"1"))  # the order
    assert base != key((23, TEXT, b"1"), (25, TEXT, b"ab"), (25, TEXT, None))  # one more
    assert key((25, TEXT, None)) != key((25, TEXT, b""))  # NULL is not empty
    assert key() == NO_PARAMETERS_KEY != key((25, TEXT, None))


def test_postgresql_keys_a_bind_by_declared_type_format_and_bytes() -> None:
    g = pg.gate()
    pg.known(g, "update t set a = $1, b = $2")
    assert pg.admit(g, pg.parse("update t set a = $1, b = $2", "s", (23, 0)))
    assert pg.admit(g, pg.bind("s", "p", struct.pack("!i", 7), b"hi", fmt=1))
    run = g.execution(m.Execute("p", 0, pg.execute("p")))
    assert run.key == key((23, BINARY, struct.pack("!i", 7)), (0, BINARY, b"hi"))
    decoded = m.decode_frontend(pg.bind("s", "p", b"7", None))
    assert isinstance(decoded, m.Bind)
    assert postgres_bound_values(decoded, (23,)) == (
        BoundValue(23, TEXT, b"7"),
        BoundValue(0, TEXT, None),
    )


def test_mysql_keys_an_execute_by_type_code_and_the_values_bytes() -> None:
    relay = my.make_relay(my.CLASSIC, my.INSERT_PAIR)
    relay.client_data(my.prepare(my.INSERT_PAIR))
    relay.server_data(my.answer(*my.prepare_ok(my.CLASSIC, 2, params=2, columns=0)))
    payload = my.execute_payload(
        2, (my.VAR_STRING, my.text("a")), (my.LONGLONG | my.UNSIGNED, my.longlong(1))
    )
    run = relay.gate.execution(payload)
    assert run.key == key(
        (int(FieldType.VAR_STRING), BINARY, b"a"), (my.LONGLONG | my.UNSIGNED, BINARY, b"1")
    )
    null = relay.gate.execution(my.execute_payload(2, (my.VAR_STRING, None), (my.LONGLONG, None)))
    assert null.key == key((my.VAR_STRING, BINARY, None), (my.LONGLONG, BINARY, None))


def test_a_mysql_execute_shown_raw_is_keyed_by_its_bytes_whatever_its_statement_id() -> None:
    def long_data_key(statement_id: int, data: bytes) -> str:
        relay = my.make_relay(my.CLASSIC, my.INSERT_ONE)
        relay.client_data(my.prepare(my.INSERT_ONE))
        relay.server_data(my.answer(*my.prepare_ok(my.CLASSIC, statement_id, params=1, columns=0)))
        relay.gate.statements[statement_id].long_data[0] = bytearray(data)
        return relay.gate.execution(my.execute_payload(statement_id, (my.BLOB, None))).key

    # A retry prepares the statement anew, under another id: its grant is still found.
    assert long_data_key(1, b"long") == long_data_key(2, b"long")
    assert long_data_key(1, b"long") != long_data_key(1, b"lung")
