"""PgGate with no sockets: which client messages reach the server without a decision."""

from __future__ import annotations

import struct
import uuid

import pytest

from policy.classify import StatementClass
from policy.fingerprint import CachedClassifier
from policy.rules import Action, Rule, effective_policy
from protocols.errors import ProtocolViolation
from protocols.postgres import messages as m
from proxy.parameters import (
    NO_PARAMETERS_KEY,
    parameters_key,
    postgres_bound_values,
    postgres_parameters,
)
from proxy.postgres.gate import (
    ADMIT,
    DECIDE,
    PORTAL_BY_SQL,
    WAIT,
    PgGate,
)

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
    return g.admit(raw[0], raw, 0, len(raw)) == ADMIT


def outcome(g: PgGate, raw: bytes) -> int:
    return g.admit(raw[0], raw, 0, len(raw))


def sync(g: PgGate) -> None:
    """The relay forwarded a Sync (or a simple Query): one unit more for the server."""
    g.unit_sent()


def server(g: PgGate, *answers: str) -> None:
    """The server's answers, as the relay hands them to the gate: "1", "2", "3" for
    ParseComplete, BindComplete, CloseComplete, "E" for an ErrorResponse, "Z" plus the
    transaction status for ReadyForQuery."""
    for answer in answers:
        if answer in ("1", "2", "3"):
            g.answered(ord(answer))
        elif answer == "E":
            g.failed()
        else:
            assert answer[0] == "Z"
            g.ready(answer[1])


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
    sync(g)
    server(g, "1", "ZI")
    assert admit(g, query(sql))
    sync(g)
    admit(g, bind("s", "p"))
    assert not admit(g, execute("p"))


def test_a_simple_query_destroys_the_unnamed_statement() -> None:
    g = gate()
    known(g, "select 1", "select 2")
    admit(g, parse("select 1"))
    sync(g)
    server(g, "1", "ZI")
    assert admit(g, query("select 2"))
    sync(g)
    admit(g, bind("", ""))
    assert not admit(g, execute(""))


def test_a_simple_query_waits_until_every_change_is_confirmed() -> None:
    g = gate()
    known(g, "select 1", "select 2")
    assert admit(g, parse("select 1"))
    sync(g)
    assert outcome(g, query("select 2")) == WAIT  # the Parse may yet fail
    assert not g.drained
    server(g, "1", "ZI")
    assert g.drained
    assert admit(g, query("select 2"))


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
    shown = postgres_parameters(decoded, (0, 23))
    assert [(p.type, p.value, p.format) for p in shown] == [
        ("unknown", "0102", "hex"),
        ("int4", None, "text"),
    ]


def test_the_retry_key_depends_on_every_bound_byte() -> None:
    def key(*values: bytes | None) -> str:
        decoded = m.decode_frontend(bind("", "", *values))
        assert isinstance(decoded, m.Bind)
        return parameters_key(postgres_bound_values(decoded, ()))

    assert key(b"1", b"2") == key(b"1", b"2")
    assert key(b"1", b"2") != key(b"12", b"")
    assert key(b"1", None) != key(b"1", b"")
    assert key() == NO_PARAMETERS_KEY


def test_the_issues_repro_a_batch_the_server_failed_changes_no_name() -> None:
    # Issue 14: Parse s = INSERT; then a batch whose Bind fails, so the server skips its
    # Close and Parse of s; then Bind s, Execute: the server runs the INSERT.
    g = gate()
    known(g, "INSERT INTO t VALUES (666, 'unapproved')", "SELECT 1")
    assert admit(g, parse("INSERT INTO t VALUES (666, 'unapproved')", "s"))
    sync(g)
    server(g, "1", "ZI")
    assert admit(g, bind("no_such_stmt", ""))
    assert admit(g, close("S", "s"))
    assert admit(g, parse("SELECT 1", "s"))
    sync(g)
    server(g, "E", "ZI")  # the Bind failed: the Close and the Parse never happened
    assert g.known_statements() == {b"s": "INSERT INTO t VALUES (666, 'unapproved')"}
    assert admit(g, bind("s", ""))
    assert outcome(g, execute("")) == DECIDE
    assert g.execution(m.Execute("", 0, execute(""))).verdict.statement_class.value == "write"


def test_the_issues_repro_pipelined_waits_for_the_servers_answer() -> None:
    g = gate()
    known(g, "INSERT INTO t VALUES (666, 'unapproved')", "SELECT 1")
    admit(g, parse("INSERT INTO t VALUES (666, 'unapproved')", "s"))
    sync(g)
    admit(g, bind("no_such_stmt", ""))
    admit(g, close("S", "s"))
    admit(g, parse("SELECT 1", "s"))
    sync(g)
    # Sent before any answer: whether the Close and Parse of s happen is not known yet.
    assert outcome(g, bind("s", "")) == WAIT
    server(g, "1", "ZI", "E", "ZI")
    assert admit(g, bind("s", ""))
    assert outcome(g, execute("")) == DECIDE


@pytest.mark.parametrize("fails_at", ["parse", "bind", "execute"])
def test_an_error_undoes_the_changes_the_server_did_not_confirm(fails_at: str) -> None:
    g = gate()
    known(g, "select 1", "delete from accounts")
    admit(g, parse("delete from accounts", "w"))
    admit(g, parse("select 1", "r"))
    sync(g)
    server(g, "1", "1", "ZI")
    # One batch: unnamed statement and portal, then the names swapped.
    admit(g, parse("select 1", ""))
    admit(g, bind("", "p"))
    admit(g, execute("p"))
    admit(g, close("S", "w"))
    admit(g, close("S", "r"))
    admit(g, parse("delete from accounts", "r"))
    admit(g, parse("select 1", "w"))
    sync(g)
    confirmed = {"parse": [], "bind": ["1"], "execute": ["1", "2"]}[fails_at]
    server(g, *confirmed, "E", "ZI")
    assert g.known_statements()[b"w"] == "delete from accounts"
    assert g.known_statements()[b"r"] == "select 1"
    assert (b"" in g.statements) == (fails_at != "parse")
    assert not g.portals  # the implicit transaction ended


def test_after_its_own_batch_fails_the_gate_passes_the_rest_unexamined() -> None:
    g = gate()
    known(g, "select 1")
    admit(g, parse("select 1", "s"))
    server(g, "E")  # before the client's Sync: the server now skips to it
    # None of this runs on the server, so none of it names anything.
    assert admit(g, parse("delete from accounts", "s"))
    assert admit(g, bind("s", ""))
    assert admit(g, execute(""))
    sync(g)
    server(g, "ZI")
    assert g.known_statements() == {}
    assert outcome(g, query("delete from accounts")) == DECIDE


def test_a_server_confirming_what_was_not_sent_is_out_of_step() -> None:
    g = gate()
    with pytest.raises(ProtocolViolation):
        server(g, "1")
    known(g, "select 1")
    admit(g, parse("select 1", "s"))
    with pytest.raises(ProtocolViolation):
        server(g, "2")


def test_a_portal_pipelined_behind_a_transactions_end_outlives_it() -> None:
    g = gate()
    known(g, "select 1")
    admit(g, parse("select 1", "s"))
    sync(g)
    server(g, "1", "ZI")
    assert admit(g, bind("s", "a"))
    sync(g)
    assert admit(g, bind("s", "b"))  # the next batch, before the first is answered
    server(g, "2", "ZI")
    assert set(g.portals) == {b"b"}
    assert admit(g, execute("b"))
    server(g, "2")
    assert set(g.portals) == {b"b"}


@pytest.mark.parametrize("sql", ["FETCH ALL FROM p", "fetch 1 in p", "MOVE ALL IN p"])
def test_sql_fetch_of_a_portal_that_writes_needs_a_decision(sql: str) -> None:
    # FETCH and MOVE run a protocol-level portal: one bound to a DELETE ... RETURNING
    # deletes, though the FETCH alone reads as a read.
    g = gate()
    known(g, "BEGIN", "delete from accounts returning id", sql)
    assert admit(g, query("BEGIN"))
    sync(g)
    server(g, "ZT")
    admit(g, parse("delete from accounts returning id", "d"))
    admit(g, bind("d", "p"))
    sync(g)
    server(g, "1", "2", "ZT")
    assert outcome(g, query(sql)) == DECIDE
    verdict = g.classifier.lookup(sql)
    assert verdict is not None
    assert g.query_verdict(sql, verdict) is PORTAL_BY_SQL
    g.ready("I")  # the transaction ended: no portal is left to run
    assert admit(g, query(sql))


def test_the_same_statement_parsed_again_keeps_its_verdict() -> None:
    g = gate()
    known(g, "select $1")
    for _ in range(3):
        assert admit(g, parse("select $1"))
        assert admit(g, bind("", ""))
        assert admit(g, execute(""))


def test_a_parse_that_differs_by_a_byte_is_a_new_statement() -> None:
    """A Parse identical to the one that made a statement is that statement again; any
    other under the same name (SQL, declared types) is judged afresh, and undone with
    its batch when the server fails it."""
    g = gate()
    known(g, "select $1", "delete from accounts where id = $1")
    for raw in (parse("select $1"), parse("select $1", types=(23,))):
        for _ in range(2):
            assert admit(g, raw)
            assert admit(g, bind())
            assert admit(g, execute())
            sync(g)
            server(g, "1", "2", "ZI")
    assert g.statements[b""].declared_types == (23,)
    assert admit(g, parse("delete from accounts where id = $1"))
    assert admit(g, bind())
    assert not admit(g, execute())  # the write's verdict, not the select's
    sync(g)
    server(g, "E", "ZI")  # the server failed the batch: the select is back
    statement = g.statements[b""]
    assert (statement.sql, statement.declared_types) == ("select $1", (23,))
    assert admit(g, parse("select $1", types=(23,)))
    assert g.statements[b""] is statement


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


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        # A parameter count beyond the message, a declared type cut short, bytes after
        # Execute's row count, a name that is not UTF-8, a Describe of neither S nor P.
        (bind("s1"), bind("s1")[:-2]),
        (parse("select 1", "s2", (23,)), parse("select 1", "s2", (23,))[:-1]),
        (execute(), execute() + b"\0"),
        (close("S", "s1"), m.frame(b"C", b"S\xff\0")),
        (m.frame(b"D", b"Ss1\0"), m.frame(b"D", b"Xs1\0")),
    ],
    ids=["bind", "parse", "execute", "close", "describe"],
)
def test_a_message_the_decoder_refuses_is_never_admitted_on_the_hot_path(
    good: bytes, bad: bytes
) -> None:
    # The hot path admits exactly what decode_frontend accepts: a malformed message goes
    # to the slow path (which refuses it), whatever the gate knows of its names.
    g = gate()
    known(g, "select 1")
    assert admit(g, parse("select 1", "s1"))
    assert admit(g, bind("s1"))
    assert admit(g, good)
    m.decode_frontend(good)
    with pytest.raises(ProtocolViolation):
        m.decode_frontend(bad)
    assert outcome(g, bad) == DECIDE


def test_after_a_write_under_the_write_role_the_next_unit_waits_for_the_server() -> None:
    # The relay sent its own Query (unit 0), the client's (1) and its return to the read
    # role (2): what the client sends next waits until the server has answered unit 2.
    g = gate()
    known(g, "select 1")
    for _ in range(3):
        sync(g)
    g.wait_after(2)
    assert outcome(g, query("select 1")) == WAIT
    assert outcome(g, parse("select 1", "s")) == WAIT
    server(g, "ZI", "ZI")
    assert outcome(g, query("select 1")) == WAIT
    server(g, "ZI")
    assert admit(g, query("select 1"))


def test_cold_classes_never_pass_on_the_hot_path_even_when_allowed() -> None:
    # Under roles (or durable recording), an allowed write still goes to the session.
    policy = effective_policy(
        [Rule(groups=frozenset({"agents"}), targets=frozenset({"orders"}), write=Action.ALLOW)],
        ["agents"],
        "orders",
    )
    assert policy is not None
    cold = frozenset({StatementClass.WRITE})
    g = PgGate(CachedClassifier("postgres"), policy, lambda: 1000.0, cold_classes=cold)
    known(g, "update t set a = 1", "select 1")
    assert outcome(g, query("update t set a = 1")) == DECIDE
    assert g.allowed(g.classifier.classify("update t set a = 1"))  # the policy allows it
    assert admit(g, query("select 1"))
