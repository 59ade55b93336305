"""PgGate with no sockets: which client messages reach the server without a decision."""

from __future__ import annotations

import struct
import uuid

import pytest

from policy.fingerprint import CachedClassifier
from policy.rules import Rule, effective_policy
from protocols.postgres import messages as m
from proxy.pg_gate import PgGate, describe_parameters, parameters_key

Q, P, B, E, C, D = (ord(c) for c in "QPBECD")


def gate(now: float = 1000.0) -> PgGate:
    policy = effective_policy(
        [
            Rule(
                groups=frozenset({"agents"}),
                targets=frozenset({"orders"}),
                approvers=frozenset({"dba"}),
            )
        ],
        ["agents"],
        "orders",
    )
    assert policy is not None
    return PgGate(CachedClassifier("postgres"), policy, lambda: now)


def admit(g: PgGate, raw: bytes) -> bool:
    return g.admit(raw[0], raw, 0, len(raw))


def query(sql: str) -> bytes:
    return m.Query.build(sql).raw


def parse(sql: str, name: str = "", types: tuple[int, ...] = ()) -> bytes:
    body = m.cstring(name) + m.cstring(sql) + struct.pack("!h", len(types))
    body += b"".join(struct.pack("!I", t) for t in types)
    return m.frame(b"P", body)


def bind(statement: str = "", portal: str = "", *values: bytes | None, fmt: int = 0) -> bytes:
    body = m.cstring(portal) + m.cstring(statement) + struct.pack("!hh", 1, fmt)
    body += struct.pack("!h", len(values))
    for value in values:
        body += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    return m.frame(b"B", body + struct.pack("!h", 0))


def execute(portal: str = "") -> bytes:
    return m.frame(b"E", m.cstring(portal) + b"\0\0\0\0")


def close(kind: str, name: str) -> bytes:
    return m.frame(b"C", kind.encode() + m.cstring(name))


def known(g: PgGate, *sql: str) -> None:
    for text in sql:
        g.classifier.classify(text)


def test_a_cached_read_passes_and_an_unknown_text_waits_for_classification() -> None:
    g = gate()
    assert not admit(g, query("select * from accounts where id = 1"))  # not cached yet
    known(g, "select * from accounts where id = 1")
    assert admit(g, query("select * from accounts where id = 1"))
    assert admit(g, query("select * from accounts where id = 2"))  # same fingerprint


def test_a_cached_write_still_waits() -> None:
    g = gate()
    known(g, "update accounts set balance = 0")
    assert not admit(g, query("update accounts set balance = 0"))


def test_a_parse_passes_once_classified_and_its_execute_follows_the_verdict() -> None:
    g = gate()
    known(g, "select $1", "delete from accounts where id = $1")
    assert admit(g, parse("select $1", "s_read"))
    assert admit(g, parse("delete from accounts where id = $1", "s_write"))
    assert admit(g, bind("s_read", "p1", b"1"))
    assert admit(g, execute("p1"))
    assert admit(g, bind("s_write", "p2", b"1"))
    assert not admit(g, execute("p2"))
    g.note_execute("p2")  # approved: a suspended portal's later Executes go on
    assert admit(g, execute("p2"))


def test_an_execute_of_a_statement_the_gateway_never_saw_waits() -> None:
    g = gate()
    assert admit(g, bind("made_by_sql_prepare", "p"))
    assert not admit(g, execute("p"))
    assert not admit(g, execute("no_such_portal"))
    unseen = g.execution(m.Execute("no_such_portal", 0, execute("no_such_portal")))
    assert (unseen.sql, unseen.verdict.statement_class.value) == ("", "unknown")


def test_a_portal_keeps_the_statement_it_was_bound_to() -> None:
    # Bind p to a write, then replace the statement's name with a read: p still writes.
    g = gate()
    known(g, "select 1", "delete from accounts")
    admit(g, parse("delete from accounts", "s"))
    admit(g, bind("s", "p"))
    admit(g, close("S", "s"))
    admit(g, parse("select 1", "s"))
    assert not admit(g, execute("p"))


@pytest.mark.parametrize(
    "sql",
    ["deallocate s", "DEALLOCATE ALL", "DeAllocate s", "Prepare q AS select 1"],
)
def test_sql_level_prepare_and_deallocate_forget_every_statement(sql: str) -> None:
    g = gate()
    known(g, "select 1", sql)
    admit(g, parse("select 1", "s"))
    assert admit(g, query(sql))
    admit(g, bind("s", "p"))
    assert not admit(g, execute("p"))


def test_a_simple_query_destroys_the_unnamed_statement() -> None:
    g = gate()
    known(g, "select 1", "select 2")
    admit(g, parse("select 1"))
    admit(g, query("select 2"))
    admit(g, bind("", ""))
    assert not admit(g, execute(""))


def test_a_session_grant_lets_writes_through_until_it_expires() -> None:
    now = [1000.0]
    g = gate()
    g.clock = lambda: now[0]
    known(g, "update accounts set balance = 0", "drop table accounts")
    g.session_grant_until = 1060.0
    assert admit(g, query("update accounts set balance = 0"))
    assert not admit(g, query("drop table accounts"))  # denied classes stay denied
    now[0] = 1061.0
    assert not admit(g, query("update accounts set balance = 0"))


def test_the_servers_parameter_description_types_a_statement() -> None:
    g = gate()
    known(g, "update t set a = $1, b = $2, c = $3")
    admit(g, parse("update t set a = $1, b = $2, c = $3", "s"))
    admit(g, m.frame(b"D", b"S" + m.cstring("s")))
    g.described((23, 25, 2950))
    admit(g, bind("s", "p", struct.pack("!i", -7), b"hi", uuid.UUID(int=1).bytes, fmt=1))
    execution = g.execution(m.Execute("p", 0, execute("p")))
    assert execution.types == (23, 25, 2950)
    assert [(p.type, p.value) for p in execution.parameters] == [
        ("int4", "-7"),
        ("text", "hi"),
        ("uuid", "00000000-0000-0000-0000-000000000001"),
    ]
    assert len(execution.key) == 64


def test_parameters_undecodable_as_typed_are_shown_in_hex() -> None:
    decoded = m.decode_frontend(bind("", "", b"\x01\x02", None, fmt=1))
    assert isinstance(decoded, m.Bind)
    shown = describe_parameters(decoded, (0, 23))
    assert [(p.type, p.value, p.format) for p in shown] == [
        ("unknown", "0102", "hex"),
        ("int4", None, "text"),
    ]


def test_the_retry_key_depends_on_every_bound_byte() -> None:
    def key(*values: bytes | None) -> str:
        decoded = m.decode_frontend(bind("", "", *values))
        assert isinstance(decoded, m.Bind)
        return parameters_key(decoded)

    assert key(b"1", b"2") == key(b"1", b"2")
    assert key(b"1", b"2") != key(b"12", b"")
    assert key(b"1", None) != key(b"1", b"")
    assert parameters_key(None) == parameters_key(None)


def test_parsing_over_a_named_statement_leaves_its_verdict_uncertain() -> None:
    # The server keeps the first statement (it refuses the second Parse), unless the first
    # failed on the server: the gateway cannot tell which, so the name runs nothing unheld.
    g = gate()
    known(g, "select 1", "delete from accounts")
    admit(g, parse("delete from accounts", "s"))
    admit(g, parse("select 1", "s"))
    admit(g, bind("s", "p"))
    assert not admit(g, execute("p"))
    assert g.statements[b"s"].verdict.statement_class.value == "unknown"


def test_binding_over_a_named_portal_leaves_its_verdict_uncertain() -> None:
    g = gate()
    known(g, "select 1", "delete from accounts")
    admit(g, parse("delete from accounts", "w"))
    admit(g, parse("select 1", "r"))
    admit(g, bind("w", "p"))
    admit(g, bind("r", "p"))  # refused by the server: p still deletes
    assert not admit(g, execute("p"))
    g.ready("I")  # the transaction ended: its portals are gone, the name is free again
    admit(g, bind("r", "p"))
    assert admit(g, execute("p"))


def test_the_same_statement_parsed_again_keeps_its_verdict() -> None:
    g = gate()
    known(g, "select $1")
    for _ in range(3):
        assert admit(g, parse("select $1"))
        assert admit(g, bind("", ""))
        assert admit(g, execute(""))


@pytest.mark.parametrize("kind", [b"B", b"P"])
def test_a_bind_or_parse_whose_first_name_lacks_its_nul_is_left_to_the_slow_path(
    kind: bytes,
) -> None:
    # Earlier bytes of the same read hold NULs: the name's end must not be looked for
    # there (a search from the start of the buffer), and nothing may be noted.
    g = gate()
    known(g, "select 1")
    admit(g, parse("select 1", "s1"))
    before = parse("select 1", "x")
    malformed = m.frame(kind, b"portal-without-nul")
    raw = before + malformed
    assert not g.admit(kind[0], raw, len(before), len(raw))
    assert set(g.portals) == set()
    assert set(g.statements) == {b"s1"}
