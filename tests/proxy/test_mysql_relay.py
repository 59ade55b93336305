"""MySqlRelay with no sockets: client and server bytes in, actions out.

Each test is a check a user of the gateway would care about: what reaches the server
(verbatim, in order, never ahead of a held command), what reaches the client (the
server's answer byte for byte, or one ERR numbered as the client expects), what the
approver is shown for a prepared statement's execute, and when the session must end.
The last tests replay sessions captured from a real MariaDB
(tests/protocols/mysql/vectors) through the relay.
"""

from __future__ import annotations

import itertools
import json
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from policy.classify import StatementClass, Verdict, classify
from policy.fingerprint import CachedClassifier
from policy.rules import Action as RuleAction
from policy.rules import EffectivePolicy, Rule, effective_policy
from protocols.errors import MessageTooLarge, ProtocolViolation
from protocols.mysql.messages import Capability as C
from protocols.mysql.messages import (
    ColumnDefinition,
    Command,
    EofPacket,
    ErrPacket,
    FieldType,
    LocalInfileRequest,
    OkPacket,
    StmtPrepareOk,
)
from protocols.mysql.messages import ServerStatus as S
from protocols.mysql.packets import MAX_CHUNK, PacketReader, frame, lenenc_bytes, lenenc_int
from protocols.mysql.responses import ResponseTracker
from proxy.approvals.store import Parameter
from proxy.errors import (
    AirlockError,
    FeatureNotSupported,
    RoleNotRestored,
    StatementDenied,
    WriteRoleRefused,
)
from proxy.mysql.relay import (
    UNPREPARED,
    EndSession,
    HoldCommand,
    MySqlGate,
    MySqlRelay,
    PreparedStatement,
    SendToClient,
    SendToServer,
    error_packet,
    is_kill,
    note_bound_types,
    parse_kill,
)
from proxy.parameters import mysql_parameters

CLASSIC = int(
    C.PROTOCOL_41
    | C.TRANSACTIONS
    | C.SECURE_CONNECTION
    | C.PLUGIN_AUTH
    | C.MULTI_RESULTS
    | C.PS_MULTI_RESULTS
)
DEPRECATE = CLASSIC | int(C.DEPRECATE_EOF | C.SESSION_TRACK)
CAPS = [pytest.param(CLASSIC, id="eof"), pytest.param(DEPRECATE, id="deprecate_eof")]
MAX = 1 << 20
NOW = 1000.0

AUTOCOMMIT = int(S.AUTOCOMMIT)
MORE = int(S.AUTOCOMMIT | S.MORE_RESULTS_EXISTS)
NO_BACKSLASH_ESCAPES = int(S.AUTOCOMMIT | S.NO_BACKSLASH_ESCAPES)

LONGLONG = int(FieldType.LONGLONG)
VAR_STRING = int(FieldType.VAR_STRING)
BLOB = int(FieldType.BLOB)
UNSIGNED = 0x8000

READ_SQL = "SELECT id, name FROM accounts WHERE id = 1"
WRITE_SQL = "UPDATE accounts SET name = 'x' WHERE id = 1"
DDL_SQL = "DROP TABLE accounts"
SELECT_PAIR = "SELECT ? AS n, ? AS s"
INSERT_ONE = "INSERT INTO accounts (name) VALUES (?)"
INSERT_PAIR = "INSERT INTO accounts (name, note) VALUES (?, ?)"


# --- the gate and the relay


def policy(allow: Sequence[str] = ()) -> EffectivePolicy:
    """The default rule (read allow, write approve, ddl and admin deny, unknown approve),
    with the classes in `allow` allowed."""

    def action(cls: str, default: RuleAction) -> RuleAction:
        return RuleAction.ALLOW if cls in allow else default

    rule = Rule(
        groups=frozenset({"agents"}),
        targets=frozenset({"orders"}),
        approvers=frozenset({"dba"}),
        write=action("write", RuleAction.APPROVE),
        ddl=action("ddl", RuleAction.DENY),
        admin=action("admin", RuleAction.DENY),
        unknown=action("unknown", RuleAction.APPROVE),
    )
    effective = effective_policy([rule], ["agents"], "orders")
    assert effective is not None
    return effective


ALLOW_EVERYTHING = ("read", "write", "ddl", "admin", "unknown")


def make_gate(
    *known: str, clock: Callable[[], float] = lambda: NOW, allow: Sequence[str] = ()
) -> MySqlGate:
    gate = MySqlGate(CachedClassifier("mysql"), policy(allow), clock, frozenset({"test"}))
    for sql in known:
        gate.classifier.classify(sql)  # classify and cache, as the session does on a miss
    return gate


def make_relay(
    caps: int = CLASSIC,
    *known: str,
    results: Results | None = None,
    capture_rows: bool = False,
    max_packet_bytes: int = MAX,
    gate: MySqlGate | None = None,
    allow: Sequence[str] = (),
) -> MySqlRelay:
    return MySqlRelay(
        capabilities=caps,
        gate=gate if gate is not None else make_gate(*known, allow=allow),
        max_packet_bytes=max_packet_bytes,
        results=results,
        capture_rows=capture_rows,
    )


@dataclass(frozen=True)
class Answer:
    """What the ResultListener was told of one statement's answer."""

    rows: int
    result_sets: int
    affected_rows: int
    error: int | None
    cursor: bool = False


class Results:
    """A ResultListener that remembers every call."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.rows: list[bytes] = []

    def result(self, tracker: ResponseTracker) -> None:
        error = tracker.error.code if tracker.error is not None else None
        self.answers.append(
            Answer(
                tracker.rows,
                tracker.result_sets,
                tracker.affected_rows,
                error,
                tracker.cursor_opened,
            )
        )

    def row(self, payload: bytes) -> None:
        self.rows.append(payload)


# --- client packets


def command(payload: bytes, sequence_id: int = 0) -> bytes:
    return frame(payload, sequence_id)


def query(sql: str) -> bytes:
    return command(b"\x03" + sql.encode())


def prepare(sql: str) -> bytes:
    return command(b"\x16" + sql.encode())


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def execute_payload(
    statement_id: int, *params: tuple[int, bytes | None], bound: bool = True
) -> bytes:
    """COM_STMT_EXECUTE: each parameter as (type code, its encoded value or None for NULL)."""
    out = bytearray(b"\x17" + u32(statement_id) + b"\x00" + u32(1))
    if params:
        bitmap = bytearray((len(params) + 7) // 8)
        for index, (_, value) in enumerate(params):
            if value is None:
                bitmap[index >> 3] |= 1 << (index & 7)
        out += bitmap
        out.append(1 if bound else 0)
        if bound:
            for kind, _ in params:
                out += kind.to_bytes(2, "little")
        for _, value in params:
            if value is not None:
                out += value
    return bytes(out)


def execute(statement_id: int, *params: tuple[int, bytes | None], bound: bool = True) -> bytes:
    return command(execute_payload(statement_id, *params, bound=bound))


def longlong(value: int) -> bytes:
    return struct.pack("<q", value)


def text(value: str | bytes) -> bytes:
    return lenenc_bytes(value.encode() if isinstance(value, str) else value)


def long_data(statement_id: int, parameter: int, data: bytes) -> bytes:
    return command(b"\x18" + u32(statement_id) + parameter.to_bytes(2, "little") + data)


def close(statement_id: int) -> bytes:
    return command(b"\x19" + u32(statement_id))


def set_option(on: bool) -> bytes:
    return command(b"\x1b" + (b"\x00\x00" if on else b"\x01\x00"))


# --- server packets


def ok(caps: int = CLASSIC, affected: int = 0, status: int = AUTOCOMMIT) -> bytes:
    return OkPacket(affected, 0, status, 0).build(caps)


def err(code: int = 1146, message: str = "Table 'test.nope' doesn't exist") -> bytes:
    return ErrPacket(code, "42S02", message).build()


def end(caps: int, status: int = AUTOCOMMIT) -> bytes:
    """What ends a group of definitions or rows: EOF, or OK with 0xFE under DEPRECATE_EOF."""
    if caps & C.DEPRECATE_EOF:
        return OkPacket(0, 0, status, 0, header=0xFE).build(caps)
    return EofPacket(0, status).build()


def column(name: bytes, kind: int = VAR_STRING) -> bytes:
    return ColumnDefinition(
        b"test", b"accounts", b"accounts", name, name, 45, 80, kind, 0, 0
    ).build()


def text_row(*values: bytes | None) -> bytes:
    return b"".join(b"\xfb" if value is None else lenenc_bytes(value) for value in values)


def result_set(
    caps: int, rows: Sequence[bytes], columns: int = 2, status: int = AUTOCOMMIT
) -> list[bytes]:
    packets = [lenenc_int(columns), *(column(b"c%d" % i) for i in range(columns))]
    if not caps & C.DEPRECATE_EOF:
        packets.append(end(caps))
    return [*packets, *rows, end(caps, status)]


def prepare_ok(caps: int, statement_id: int, params: int, columns: int) -> list[bytes]:
    packets = [StmtPrepareOk(statement_id, columns, params, 0).build()]
    for group in (params, columns):
        if group:
            packets += [column(b"?")] * group
            if not caps & C.DEPRECATE_EOF:
                packets.append(end(caps))
    return packets


def answer(*payloads: bytes, first: int = 1) -> bytes:
    """Server packets answering a command, numbered from `first`."""
    return b"".join(frame(payload, (first + i) & 0xFF) for i, payload in enumerate(payloads))


# --- what the relay did


def only_hold(actions: Sequence[object]) -> HoldCommand:
    assert len(actions) == 1, actions
    held = actions[0]
    assert isinstance(held, HoldCommand), held
    return held


def only_end(actions: Sequence[object]) -> EndSession:
    assert len(actions) == 1, actions
    ended = actions[0]
    assert isinstance(ended, EndSession), ended
    return ended


def err_of(raw: bytes) -> tuple[int, ErrPacket]:
    """The sequence id and content of one ERR packet sent to the client."""
    packets = PacketReader(MAX).feed(raw)
    assert len(packets) == 1
    assert packets[0].raw == raw
    return packets[0].sequence_id, ErrPacket.parse(packets[0].payload)


def relay_answer(relay: MySqlRelay, stream: bytes, piece: int = 0) -> tuple[bytes, list[object]]:
    """Feed a server stream whole (piece 0) or in pieces; what reached the client, and the
    actions the relay asked for."""
    if not piece:
        out, actions = relay.server_data(stream)
        return out, list(actions)
    relayed = b""
    collected: list[object] = []
    for start in range(0, len(stream), piece):
        out, actions = relay.server_data(stream[start : start + piece])
        relayed += out
        collected += actions
    return relayed, collected


def admitted(relay: MySqlRelay, statement_id: int) -> bool:
    """The relay runs an execute of this statement without a decision."""
    actions = relay.client_data(execute(statement_id))
    if isinstance(actions[0], HoldCommand):
        relay.release(forward=False, error=StatementDenied("probe"))
        return False
    relay.server_data(answer(ok(relay.capabilities)))
    return True


# --- a cached, allowed COM_QUERY, and its answer


@pytest.mark.parametrize("caps", CAPS)
def test_a_cached_read_is_forwarded_verbatim_and_its_ok_relayed_byte_for_byte(caps: int) -> None:
    results = Results()
    relay = make_relay(caps, READ_SQL, results=results)
    raw = query(READ_SQL)
    assert relay.client_data(raw) == [SendToServer(raw)]
    assert relay.busy
    reply = answer(ok(caps, affected=0, status=AUTOCOMMIT))
    assert relay.server_data(reply) == (reply, [])
    assert not relay.busy
    assert results.answers == [Answer(rows=0, result_sets=0, affected_rows=0, error=None)]


def test_a_cached_read_with_other_literals_shares_the_verdict() -> None:
    relay = make_relay(CLASSIC, READ_SQL)
    raw = query(READ_SQL.replace("= 1", "= 42"))
    assert relay.client_data(raw) == [SendToServer(raw)]


def test_a_command_split_anywhere_is_forwarded_once_whole() -> None:
    raw = query(READ_SQL)
    for cut in range(1, len(raw)):
        relay = make_relay(CLASSIC, READ_SQL)
        assert relay.client_data(raw[:cut]) == []
        assert relay.client_data(raw[cut:]) == [SendToServer(raw)]
    relay = make_relay(CLASSIC, READ_SQL)
    actions = [relay.client_data(raw[i : i + 1]) for i in range(len(raw))]
    assert actions[:-1] == [[]] * (len(raw) - 1)
    assert actions[-1] == [SendToServer(raw)]


def rows_stream(caps: int) -> bytes:
    rows = [text_row(b"1", b"alice"), text_row(b"2", None), text_row(b"3", b"z" * 300)]
    return answer(*result_set(caps, rows))


@pytest.mark.parametrize("caps", CAPS)
def test_a_result_set_is_relayed_byte_for_byte_whole_byte_by_byte_and_split_anywhere(
    caps: int,
) -> None:
    stream = rows_stream(caps)
    splits: list[list[bytes]] = [[stream], [stream[i : i + 1] for i in range(len(stream))]]
    splits += [[stream[:cut], stream[cut:]] for cut in range(1, len(stream))]
    splits += [[stream[:a], stream[a : a + 7], stream[a + 7 :]] for a in range(0, len(stream), 13)]
    for pieces in splits:
        results = Results()
        relay = make_relay(caps, READ_SQL, results=results)
        relay.client_data(query(READ_SQL))
        relayed = b""
        for piece in pieces:
            out, actions = relay.server_data(piece)
            assert actions == []
            relayed += out
            # what reaches the client is always the stream's beginning, in order
            assert stream.startswith(relayed)
        assert relayed == stream, [len(p) for p in pieces]
        assert results.answers == [Answer(rows=3, result_sets=1, affected_rows=0, error=None)]
        assert not relay.busy


@pytest.mark.parametrize("caps", CAPS)
def test_an_error_answer_is_relayed_verbatim_and_reported(caps: int) -> None:
    results = Results()
    relay = make_relay(caps, READ_SQL, "SELECT * FROM nope", results=results)
    relay.client_data(query("SELECT * FROM nope"))
    reply = answer(err(1146))
    assert relay.server_data(reply) == (reply, [])
    # an error after some rows ends the answer too
    relay.client_data(query(READ_SQL))
    packets = [*result_set(caps, [text_row(b"1", b"a")])[:-1], err(1690, "out of range")]
    stream = answer(*packets)
    assert relay_answer(relay, stream, piece=3) == (stream, [])
    assert results.answers == [
        Answer(rows=0, result_sets=0, affected_rows=0, error=1146),
        Answer(rows=1, result_sets=1, affected_rows=0, error=1690),
    ]
    assert not relay.busy


@pytest.mark.parametrize("caps", CAPS)
def test_a_write_allowed_by_the_rule_reports_its_affected_rows(caps: int) -> None:
    results = Results()
    relay = make_relay(caps, WRITE_SQL, results=results, allow=["write"])
    raw = query(WRITE_SQL)
    assert relay.client_data(raw) == [SendToServer(raw)]
    reply = answer(ok(caps, affected=3))
    assert relay.server_data(reply) == (reply, [])
    assert results.answers == [Answer(rows=0, result_sets=0, affected_rows=3, error=None)]


def test_rows_reach_the_listener_only_when_captured() -> None:
    stream = rows_stream(DEPRECATE)
    for capture in (True, False):
        results = Results()
        relay = make_relay(DEPRECATE, READ_SQL, results=results, capture_rows=capture)
        relay.client_data(query(READ_SQL))
        assert relay.server_data(stream) == (stream, [])
        expected = [text_row(b"1", b"alice"), text_row(b"2", None), text_row(b"3", b"z" * 300)]
        assert results.rows == (expected if capture else [])


def test_on_statement_hears_what_the_hot_path_admits_and_nothing_held() -> None:
    relay = make_relay(CLASSIC, READ_SQL, SELECT_PAIR, WRITE_SQL)
    heard: list[tuple[str, StatementClass, bool, bytes | None]] = []

    def listener(
        sql: str, verdict: Verdict, statement: PreparedStatement | None, payload: bytes | None
    ) -> None:
        heard.append((sql, verdict.statement_class, statement is not None, payload))

    relay.on_statement = listener
    relay.client_data(query(READ_SQL))
    relay.server_data(answer(ok()))
    only_hold(relay.client_data(query(WRITE_SQL)))
    relay.release(forward=False, error=StatementDenied("no"))
    relay.client_data(prepare(SELECT_PAIR))
    relay.server_data(answer(*prepare_ok(CLASSIC, 1, 2, 2)))
    payload = execute_payload(1, (LONGLONG, longlong(5)), (VAR_STRING, text("a")))
    relay.client_data(command(payload))
    assert heard == [
        (READ_SQL, StatementClass.READ, False, None),
        (SELECT_PAIR, StatementClass.READ, True, payload),
    ]


# --- holds


def test_an_uncached_query_is_held_and_nothing_reaches_the_server() -> None:
    relay = make_relay(CLASSIC)
    raw = query(READ_SQL)
    held = only_hold(relay.client_data(raw))
    assert held.command == Command.QUERY
    assert held.sql == READ_SQL
    assert held.packet.raw == raw
    assert relay.held == held
    assert not relay.busy
    assert relay.release(forward=True) == [SendToServer(raw)]
    assert relay.held is None
    assert relay.busy
    reply = answer(ok())
    assert relay.server_data(reply) == (reply, [])


@pytest.mark.parametrize(
    ("sql", "verdict_class"),
    [(WRITE_SQL, StatementClass.WRITE), (DDL_SQL, StatementClass.DDL)],
)
def test_a_cached_statement_the_rule_does_not_allow_is_held(
    sql: str, verdict_class: StatementClass
) -> None:
    relay = make_relay(CLASSIC, sql)
    verdict = relay.gate.classifier.lookup(sql)
    assert verdict is not None
    assert verdict.statement_class is verdict_class
    held = only_hold(relay.client_data(query(sql)))
    assert held.sql == sql
    assert not relay.gate.allowed(verdict)


def test_a_query_that_is_not_valid_text_is_held_without_its_text() -> None:
    relay = make_relay(CLASSIC)
    raw = command(b"\x03SELECT '\xff\xfe'")
    held = only_hold(relay.client_data(raw))
    assert held.sql is None
    assert held.packet.raw == raw


def test_a_refused_command_gets_one_err_numbered_after_it_and_the_session_goes_on() -> None:
    relay = make_relay(CLASSIC, READ_SQL)
    only_hold(relay.client_data(query(WRITE_SQL)))
    actions = relay.release(forward=False, error=StatementDenied("writes need an approval"))
    assert len(actions) == 1
    assert isinstance(actions[0], SendToClient)
    sequence, packet = err_of(actions[0].raw)
    assert sequence == 1
    assert packet.code == 1142
    assert packet.sqlstate == "42000"
    assert "writes need an approval" in packet.message
    assert relay.held is None
    assert not relay.busy
    # the next command works as if nothing happened
    raw = query(READ_SQL)
    assert relay.client_data(raw) == [SendToServer(raw)]
    assert relay.server_data(answer(ok())) == (answer(ok()), [])


def test_a_held_command_answered_by_the_gateway_gets_the_reply_in_sequence() -> None:
    relay = make_relay(CLASSIC, allow=["admin"])
    only_hold(relay.client_data(query("KILL QUERY 12")))
    reply = ok()
    assert relay.release(forward=False, reply=reply) == [SendToClient(frame(reply, 1))]
    assert not relay.busy


def test_release_without_a_held_command_is_a_programming_error() -> None:
    relay = make_relay(CLASSIC)
    with pytest.raises(RuntimeError):
        relay.release(forward=True)


def test_error_packet_carries_errno_sqlstate_detail_and_hint() -> None:
    error = StatementDenied("refused", detail="by dba", hint="ask again")
    sequence, packet = err_of(error_packet(error, 5))
    assert sequence == 5
    assert (packet.code, packet.sqlstate) == (1142, "42000")
    assert packet.message == "refused (by dba); ask again"


# --- one command at a time: the queue


def test_pipelined_commands_never_overtake_a_held_one() -> None:
    relay = make_relay(CLASSIC, READ_SQL)
    first, second = query(WRITE_SQL), query(READ_SQL)
    held = only_hold(relay.client_data(first + second))
    assert held.packet.raw == first
    # more commands while held: still nothing
    third = query(READ_SQL.replace("1", "3"))
    assert relay.client_data(third) == []
    # the approval forwards the held command only; the others wait for its answer
    assert relay.release(forward=True) == [SendToServer(first)]
    assert relay.client_data(b"") == []
    assert relay.server_data(answer(ok(affected=1))) == (
        answer(ok(affected=1)),
        [SendToServer(second)],
    )
    assert relay.server_data(answer(ok())) == (answer(ok()), [SendToServer(third)])
    assert relay.server_data(answer(ok())) == (answer(ok()), [])
    assert not relay.busy


def test_a_lone_command_sent_while_another_is_held_or_answered_waits() -> None:
    relay = make_relay(CLASSIC, READ_SQL)
    held_raw, waiting = query(WRITE_SQL), query(READ_SQL)
    only_hold(relay.client_data(held_raw))
    assert relay.client_data(waiting) == []  # nothing else queued: still it waits
    assert relay.release(forward=True) == [SendToServer(held_raw)]
    assert relay.server_data(answer(ok(affected=1))) == (
        answer(ok(affected=1)),
        [SendToServer(waiting)],
    )
    assert relay.server_data(answer(ok())) == (answer(ok()), [])
    # one sent while an answer is pending (nothing queued) waits for the answer's end
    first, second = query(READ_SQL), query(READ_SQL.replace("1", "2"))
    assert relay.client_data(first) == [SendToServer(first)]
    assert relay.client_data(second) == []
    assert relay.server_data(answer(ok())) == (answer(ok()), [SendToServer(second)])
    assert relay.server_data(answer(ok())) == (answer(ok()), [])
    assert not relay.busy


def test_a_refused_held_command_lets_the_queued_ones_go_in_order() -> None:
    relay = make_relay(CLASSIC, READ_SQL)
    first, second = query(WRITE_SQL), query(READ_SQL)
    only_hold(relay.client_data(first + second))
    actions = relay.release(forward=False, error=StatementDenied("no"))
    assert len(actions) == 2
    assert isinstance(actions[0], SendToClient)
    assert err_of(actions[0].raw)[1].code == 1142
    assert actions[1] == SendToServer(second)


@pytest.mark.parametrize("caps", CAPS)
def test_commands_sent_during_an_answer_wait_for_its_end(caps: int) -> None:
    relay = make_relay(caps, READ_SQL, "SELECT 2")
    first, second, third = query(READ_SQL), query("SELECT 2"), query(WRITE_SQL)
    assert relay.client_data(first + second) == [SendToServer(first)]
    assert relay.client_data(third) == []
    stream = rows_stream(caps)
    # the answer arrives in pieces: the queue moves only at its very end
    out, actions = relay.server_data(stream[:-1])
    assert (out, actions) == (stream[: len(out)], [])
    out2, actions = relay.server_data(stream[-1:])
    assert out + out2 == stream
    assert actions == [SendToServer(second)]
    # the third command is held in turn, after the second's answer
    out, actions = relay.server_data(answer(ok(caps)))
    held = only_hold(actions)
    assert held.packet.raw == third
    assert not relay.busy


@pytest.mark.parametrize("caps", CAPS)
def test_answer_sequence_is_where_a_gateway_err_can_answer_until_the_server_begins(
    caps: int,
) -> None:
    """An ERR the gateway sends when a session ends must not land inside a server answer."""
    relay = make_relay(caps, READ_SQL)
    assert relay.answer_sequence is None  # nothing asked
    relay.client_data(query(READ_SQL))
    assert relay.answer_sequence == 1  # the command was packet 0
    stream = rows_stream(caps)
    relay.server_data(stream[:2])  # not even a whole header: the answer has begun
    assert relay.answer_sequence is None
    relay.server_data(stream[2:])
    assert not relay.busy
    # A command of several packets (16 MB and more) is answered after its last one.
    big = "SELECT '" + "x" * MAX_CHUNK + "'"
    relay = make_relay(caps, max_packet_bytes=2 * MAX_CHUNK)
    raw = query(big)
    held = only_hold(relay.client_data(raw))  # too large to classify: held, then approved
    assert relay.answer_sequence is None
    assert relay.release(forward=True) == [SendToServer(held.packet.raw)]
    assert relay.answer_sequence == 2


def test_a_command_out_of_sequence_ends_the_session() -> None:
    relay = make_relay(CLASSIC, READ_SQL)
    ended = only_end(relay.client_data(command(b"\x03SELECT 1", sequence_id=3)))
    assert isinstance(ended.error, ProtocolViolation)


# --- prepared statements


@pytest.mark.parametrize("caps", CAPS)
def test_prepared_statements_register_run_and_are_forgotten(caps: int) -> None:
    results = Results()
    relay = make_relay(caps, SELECT_PAIR, INSERT_ONE, READ_SQL, results=results)
    gate = relay.gate
    # a cached statement is prepared at once (preparing runs nothing)
    raw = prepare(SELECT_PAIR)
    assert relay.client_data(raw) == [SendToServer(raw)]
    reply = answer(*prepare_ok(caps, 7, params=2, columns=2))
    assert relay_answer(relay, reply, piece=5) == (reply, [])
    assert results.answers == []  # a prepare is not a statement's result
    assert not relay.busy
    # an execute of the allowed statement runs
    raw = execute(7, (LONGLONG, longlong(-2)), (VAR_STRING, text("two")))
    assert relay.client_data(raw) == [SendToServer(raw)]
    row = b"\x00\x00" + longlong(-2) + text("two")
    reply = answer(*result_set(caps, [row]))
    assert relay.server_data(reply) == (reply, [])
    assert results.answers == [Answer(rows=1, result_sets=1, affected_rows=0, error=None)]
    # a write is prepared too, but its execute waits for a decision (write: approve)
    relay.client_data(prepare(INSERT_ONE))
    relay.server_data(answer(*prepare_ok(caps, 8, params=1, columns=0)))
    raw = execute(8, (VAR_STRING, text("e")))
    held = only_hold(relay.client_data(raw))
    assert (held.command, held.sql, held.packet.raw) == (Command.STMT_EXECUTE, None, raw)
    run = gate.execution(held.packet.payload)
    assert run.sql == INSERT_ONE
    assert run.verdict.statement_class is StatementClass.WRITE
    assert run.parameters == (Parameter("var_string", "e"),)
    assert relay.release(forward=True) == [SendToServer(raw)]
    relay.server_data(answer(ok(caps, affected=1)))
    assert results.answers[-1] == Answer(rows=0, result_sets=0, affected_rows=1, error=None)
    # an id the gateway never saw prepared is held, as UNPREPARED (class unknown)
    raw = execute(99)
    held = only_hold(relay.client_data(raw))
    run = gate.execution(held.packet.payload)
    assert run.verdict == UNPREPARED
    assert run.verdict.statement_class is StatementClass.UNKNOWN
    assert run.parameters == ()
    relay.release(forward=False, error=StatementDenied("unknown statement"))
    # COM_STMT_CLOSE needs no answer: it and the next command go out at once
    closing, next_query = close(7), query(READ_SQL)
    assert relay.client_data(closing + next_query) == [
        SendToServer(closing),
        SendToServer(next_query),
    ]
    relay.server_data(answer(ok(caps)))
    # and the closed id is forgotten: its execute is held
    held = only_hold(
        relay.client_data(execute(7, (LONGLONG, longlong(1)), (VAR_STRING, text("x"))))
    )
    assert gate.execution(held.packet.payload).verdict == UNPREPARED


def test_an_uncached_prepare_is_held_and_registered_with_the_verdict_given_on_release() -> None:
    relay = make_relay(CLASSIC)
    raw = prepare(SELECT_PAIR)
    held = only_hold(relay.client_data(raw))
    assert (held.command, held.sql) == (Command.STMT_PREPARE, SELECT_PAIR)
    verdict = classify(SELECT_PAIR, "mysql")
    assert relay.release(forward=True, prepared=(SELECT_PAIR, verdict)) == [SendToServer(raw)]
    relay.server_data(answer(*prepare_ok(CLASSIC, 3, params=2, columns=2)))
    raw = execute(3, (LONGLONG, longlong(1)), (VAR_STRING, text("a")))
    assert relay.client_data(raw) == [SendToServer(raw)]


def test_a_failed_prepare_registers_nothing() -> None:
    relay = make_relay(CLASSIC, SELECT_PAIR)
    relay.client_data(prepare(SELECT_PAIR))
    reply = answer(err(1064, "syntax"))
    assert relay.server_data(reply) == (reply, [])
    only_hold(relay.client_data(execute(1)))


def test_send_long_data_and_close_need_no_answer() -> None:
    relay = make_relay(CLASSIC, INSERT_ONE, READ_SQL)
    relay.client_data(prepare(INSERT_ONE))
    relay.server_data(answer(*prepare_ok(CLASSIC, 4, params=1, columns=0)))
    chunk, closing, after = long_data(4, 0, b"0123456789"), close(4), query(READ_SQL)
    # one at a time ...
    assert relay.client_data(chunk) == [SendToServer(chunk)]
    assert not relay.busy
    # ... or pipelined: nothing waits for an answer that never comes
    assert relay.client_data(chunk + closing + after) == [
        SendToServer(chunk),
        SendToServer(closing),
        SendToServer(after),
    ]
    assert relay.busy  # only the query has an answer
    relay.server_data(answer(ok()))
    with pytest.raises(ProtocolViolation):
        relay.server_data(answer(ok()))  # nothing else was pending


@pytest.mark.parametrize("caps", CAPS)
def test_reset_connection_forgets_every_statement(caps: int) -> None:
    relay = make_relay(caps, SELECT_PAIR, "SELECT 1 AS one")
    relay.client_data(prepare(SELECT_PAIR))
    relay.server_data(answer(*prepare_ok(caps, 1, params=2, columns=2)))
    relay.client_data(prepare("SELECT 1 AS one"))
    relay.server_data(answer(*prepare_ok(caps, 2, params=0, columns=1)))
    assert admitted(relay, 1)
    assert admitted(relay, 2)
    raw = command(b"\x1f")
    assert relay.client_data(raw) == [SendToServer(raw)]
    relay.server_data(answer(ok(caps)))
    assert not admitted(relay, 1)
    assert not admitted(relay, 2)
    assert relay.gate.execution(execute_payload(2)).verdict == UNPREPARED


def test_a_session_grant_admits_approve_classes_until_it_expires() -> None:
    now = [NOW]
    gate = make_gate(WRITE_SQL, DDL_SQL, "KILL 5", clock=lambda: now[0])
    relay = make_relay(CLASSIC, gate=gate)
    gate.session_grant_until = NOW + 60
    raw = query(WRITE_SQL)
    assert relay.client_data(raw) == [SendToServer(raw)]
    relay.server_data(answer(ok(affected=1)))
    # ddl is denied by the rule: no grant lets it through, nor an admin statement
    only_hold(relay.client_data(query(DDL_SQL)))
    relay.release(forward=False, error=StatementDenied("no"))
    only_hold(relay.client_data(query("KILL 5")))
    relay.release(forward=False, error=StatementDenied("no"))
    now[0] = NOW + 61
    only_hold(relay.client_data(raw))


# --- what an approver sees of an execute


def test_execute_parameters_decodes_ints_strings_null_and_bytes() -> None:
    payload = execute_payload(
        1,
        (LONGLONG, longlong(-5)),
        (LONGLONG | UNSIGNED, struct.pack("<Q", 2**64 - 1)),
        (VAR_STRING, text("héllo")),
        (VAR_STRING, None),
        (BLOB, text(b"\xff\x00\x01")),
        (BLOB, text(b"plain")),
    )
    assert mysql_parameters(payload, 6, None, {}) == (
        Parameter("longlong", "-5"),
        Parameter("unsigned longlong", str(2**64 - 1)),
        Parameter("var_string", "héllo"),
        Parameter("var_string", None),
        Parameter("blob", "ff0001", "hex"),
        Parameter("blob", "plain"),
    )


def test_types_are_remembered_for_executes_that_do_not_rebind() -> None:
    relay = make_relay(CLASSIC, SELECT_PAIR)
    gate = relay.gate
    relay.client_data(prepare(SELECT_PAIR))
    relay.server_data(answer(*prepare_ok(CLASSIC, 10, params=2, columns=2)))
    bound = execute(10, (LONGLONG, longlong(1)), (VAR_STRING, text("one")))
    assert relay.client_data(bound) == [SendToServer(bound)]  # the hot path notes its types
    relay.server_data(answer(ok()))
    again = execute_payload(10, (LONGLONG, longlong(-2)), (VAR_STRING, text("two")), bound=False)
    assert gate.execution(again).parameters == (
        Parameter("longlong", "-2"),
        Parameter("var_string", "two"),
    )


def test_note_bound_types_keeps_the_last_bound_types() -> None:
    statement = PreparedStatement(SELECT_PAIR, classify(SELECT_PAIR, "mysql"), True, 2)
    bound = execute_payload(1, (LONGLONG, longlong(1)), (VAR_STRING, text("a")))
    note_bound_types(statement, bound)
    assert statement.types == LONGLONG.to_bytes(2, "little") + VAR_STRING.to_bytes(2, "little")
    # an execute that does not re-bind leaves them
    not_bound = execute_payload(1, (LONGLONG, longlong(7)), (VAR_STRING, text("b")), bound=False)
    note_bound_types(statement, not_bound)
    assert statement.types == LONGLONG.to_bytes(2, "little") + VAR_STRING.to_bytes(2, "little")
    assert mysql_parameters(not_bound, 2, statement.types, {}) == (
        Parameter("longlong", "7"),
        Parameter("var_string", "b"),
    )
    # without the earlier types, the values cannot be read: shown raw, never raised
    shown = mysql_parameters(not_bound, 2, None, {})
    assert shown == (Parameter("unknown", not_bound[1:].hex(), "hex"),)


def test_long_data_is_shown_to_the_approver() -> None:
    relay = make_relay(CLASSIC, INSERT_PAIR)
    gate = relay.gate
    relay.client_data(prepare(INSERT_PAIR))
    relay.server_data(answer(*prepare_ok(CLASSIC, 5, params=2, columns=0)))
    relay.client_data(long_data(5, 1, b"a long "))
    relay.client_data(long_data(5, 1, b"\xffnote"))
    # a real client sends no value for a parameter that came as long data
    payload = execute_payload(5, (VAR_STRING, text("name")), (BLOB, b""))
    held = only_hold(relay.client_data(command(payload)))
    shown = gate.execution(held.packet.payload).parameters
    data = b"a long \xffnote"
    assert Parameter("long data", data.hex(), "hex") in shown or any(
        p.value in (data.hex(), data.decode(errors="replace")) for p in shown
    ), shown


def test_a_malformed_execute_never_raises() -> None:
    statement_types = LONGLONG.to_bytes(2, "little") + VAR_STRING.to_bytes(2, "little")
    good = execute_payload(1, (LONGLONG, longlong(1)), (VAR_STRING, text("abc")))
    generator = random.Random(1234)
    samples = [good[:cut] for cut in range(len(good))]
    samples += [good + b"\x00trailing", good[:-1] + b"\xfe"]
    samples += [
        b"\x17" + bytes(generator.randrange(256) for _ in range(generator.randrange(40)))
        for _ in range(300)
    ]
    for payload in samples:
        for types in (None, statement_types, b"\xff"):
            shown = mysql_parameters(payload, 2, types, {3: b"long"})
            assert all(isinstance(p, Parameter) for p in shown)
    # through the gate, for a registered statement too
    relay = make_relay(CLASSIC, SELECT_PAIR)
    relay.client_data(prepare(SELECT_PAIR))
    relay.server_data(answer(*prepare_ok(CLASSIC, 1, params=2, columns=2)))
    for payload in samples:
        run = relay.gate.execution(payload)
        if int.from_bytes(payload[1:5], "little") == 1:  # the registered statement
            assert run.sql == SELECT_PAIR
            assert run.parameters, payload.hex()
        else:
            assert run.verdict == UNPREPARED
    truncated = good[:-2]
    assert relay.gate.execution(truncated).parameters == (
        Parameter("unknown", truncated[1:].hex(), "hex"),
    )


def test_the_parameters_key_differs_exactly_when_the_values_differ() -> None:
    relay = make_relay(CLASSIC, INSERT_PAIR)
    relay.client_data(prepare(INSERT_PAIR))
    relay.server_data(answer(*prepare_ok(CLASSIC, 2, params=2, columns=0)))
    gate = relay.gate

    def key(*params: tuple[int, bytes | None]) -> str:
        return gate.execution(execute_payload(2, *params)).key

    base = key((VAR_STRING, text("a")), (LONGLONG, longlong(1)))
    assert base == key((VAR_STRING, text("a")), (LONGLONG, longlong(1)))
    assert base != key((VAR_STRING, text("b")), (LONGLONG, longlong(1)))
    assert base != key((VAR_STRING, text("a")), (LONGLONG, longlong(2)))
    assert base != key((VAR_STRING, None), (LONGLONG, longlong(1)))
    assert base != key((VAR_STRING, text("a")), (LONGLONG | UNSIGNED, longlong(1)))
    assert gate.execution(execute_payload(77)).key != gate.execution(execute_payload(78)).key


# The three tests below show where the approver's view and the server's differ.


def test_long_data_is_forgotten_once_an_execute_reached_the_server() -> None:
    """MySQL and MariaDB reset a statement's long data at the end of every execute
    (reset_stmt_params in Prepared_statement::execute_loop). A later execute that sends
    its value inline must be shown with that value, not the long data of the one before."""
    relay = make_relay(CLASSIC, INSERT_ONE)
    gate = relay.gate
    relay.client_data(prepare(INSERT_ONE))
    relay.server_data(answer(*prepare_ok(CLASSIC, 6, params=1, columns=0)))
    relay.client_data(long_data(6, 0, b"harmless"))
    first = only_hold(relay.client_data(execute(6, (BLOB, b""))))
    gate.execution(first.packet.payload)
    relay.release(forward=True)
    relay.server_data(answer(ok(affected=1)))
    # the second execute binds its value inline: the server reads it from the packet
    second = only_hold(relay.client_data(execute(6, (BLOB, text("DROP everything")))))
    assert gate.execution(second.packet.payload).parameters == (
        Parameter("blob", "DROP everything"),
    )


def test_a_grant_for_long_data_values_does_not_cover_later_inline_values() -> None:
    """The same reset seen through the grant key: an execute whose value came as long data
    is approved (key of "harmless"); a later execute binding another value inline must
    not get the same key, or a statement grant for the first would run the second."""
    relay = make_relay(CLASSIC, INSERT_ONE)
    gate = relay.gate
    relay.client_data(prepare(INSERT_ONE))
    relay.server_data(answer(*prepare_ok(CLASSIC, 6, params=1, columns=0)))
    relay.client_data(long_data(6, 0, b"harmless"))
    # the long data wins over any inline bytes: the server binds "harmless"
    first = only_hold(relay.client_data(execute(6, (BLOB, text("x")))))
    approved = gate.execution(first.packet.payload)
    relay.release(forward=True)
    relay.server_data(answer(ok(affected=1)))
    second = only_hold(relay.client_data(execute(6, (BLOB, text("DROP everything")))))
    assert gate.execution(second.packet.payload).key != approved.key


def test_long_data_is_cleared_by_stmt_reset() -> None:
    relay = make_relay(CLASSIC, INSERT_ONE)
    gate = relay.gate
    relay.client_data(prepare(INSERT_ONE))
    relay.server_data(answer(*prepare_ok(CLASSIC, 6, params=1, columns=0)))
    relay.client_data(long_data(6, 0, b"old"))
    relay.client_data(command(b"\x1a" + u32(6)))
    relay.server_data(answer(ok()))
    payload = execute_payload(6, (VAR_STRING, text("new")))
    assert gate.execution(payload).parameters == (Parameter("var_string", "new"),)


def test_long_data_sent_for_mariadbs_last_statement_id_is_not_hidden_from_the_approver() -> None:
    """MariaDB reads statement id 0xFFFFFFFF as "the statement prepared last"
    (find_prepared_statement: LAST_STMT_ID), for COM_STMT_SEND_LONG_DATA too. Long data
    sent that way binds the parameter on the server: either the relay does not pass it
    on unseen, or the approver is shown it."""
    relay = make_relay(CLASSIC, INSERT_ONE)
    gate = relay.gate
    relay.client_data(prepare(INSERT_ONE))
    relay.server_data(answer(*prepare_ok(CLASSIC, 12, params=1, columns=0)))
    sneaky = long_data(0xFFFFFFFF, 0, b"hidden")
    actions = relay.client_data(sneaky)
    if actions == [SendToServer(sneaky)]:
        # the server binds "hidden", whatever the execute carries inline
        held = only_hold(relay.client_data(execute(12, (VAR_STRING, text("shown")))))
        shown = gate.execution(held.packet.payload).parameters
        assert any(p.value in ("hidden", b"hidden".hex()) for p in shown), shown
    else:  # not passed on at all: the session ends with a reason
        [end] = actions
        assert isinstance(end, EndSession)
        assert end.error is not None
        assert "-1" in end.error.message


def test_types_of_a_refused_execute_are_not_remembered() -> None:
    """An execute that never reached the server did not bind its types there: a later
    execute that does not re-bind is read by the server with the types it last saw."""
    relay = make_relay(CLASSIC, INSERT_ONE)
    gate = relay.gate
    relay.client_data(prepare(INSERT_ONE))
    relay.server_data(answer(*prepare_ok(CLASSIC, 9, params=1, columns=0)))
    approved = only_hold(relay.client_data(execute(9, (LONGLONG, longlong(1)))))
    gate.execution(approved.packet.payload)  # shown to the approver, then forwarded
    relay.release(forward=True)
    relay.server_data(answer(ok(affected=1)))
    # bound as a string, shown to the approver, refused: the server never sees it
    refused = only_hold(relay.client_data(execute(9, (VAR_STRING, text("x")))))
    gate.execution(refused.packet.payload)
    relay.release(forward=False, error=StatementDenied("refused"))
    # 8 bytes the server reads as a LONGLONG (its types), and as a 7-character string
    value = b"\x07" + b"1234567"
    third = only_hold(relay.client_data(execute(9, (LONGLONG, value), bound=False)))
    assert gate.execution(third.packet.payload).parameters == (
        Parameter("longlong", str(struct.unpack("<q", value)[0])),
    )


def test_parameters_with_long_data_are_not_read_from_the_execute_packet() -> None:
    """The server reads no value (and no NULL bit) for a parameter that has long data
    (insert_params: `if (!param->has_long_data_value())`): bytes in the packet belong to
    the next parameter. The approver must not be shown values the server will not bind."""
    relay = make_relay(CLASSIC, INSERT_PAIR)
    gate = relay.gate
    relay.client_data(prepare(INSERT_PAIR))
    relay.server_data(answer(*prepare_ok(CLASSIC, 3, params=2, columns=0)))
    relay.client_data(long_data(3, 0, b"from long data"))
    # crafted: an inline value for parameter 0 as well; the server binds (long data, AAA)
    payload = execute_payload(3, (VAR_STRING, text("AAA")), (VAR_STRING, text("BBB")))
    held = only_hold(relay.client_data(command(payload)))
    shown = gate.execution(held.packet.payload).parameters
    assert Parameter("var_string", "BBB") not in shown, shown
    if all(p.format == "text" for p in shown):  # decoded: it must be what the server binds
        assert [p.value for p in shown] == ["from long data", "AAA"], shown


# --- sizes


def test_a_17_mb_query_is_classified_whole() -> None:
    sql = "SELECT '" + "a" * (17 * 1024 * 1024) + "'"
    raw = query(sql)
    assert len(raw) > MAX_CHUNK + 4  # two chunks on the wire: 0..1
    relay = make_relay(CLASSIC, max_packet_bytes=32 * 1024 * 1024)
    cuts = [0, 3, MAX_CHUNK + 2, MAX_CHUNK + 6, len(raw)]  # inside both headers
    actions: list[object] = []
    for start, stop in itertools.pairwise(cuts):
        actions += relay.client_data(raw[start:stop])
    held = only_hold(actions)
    assert held.sql == sql
    assert (held.packet.sequence_id, held.packet.last_sequence_id) == (0, 1)
    assert relay.release(forward=True) == [SendToServer(raw)]
    relay.server_data(answer(ok(), first=2))
    # refused, its ERR follows the last chunk
    only_hold(relay.client_data(raw))
    refusal = relay.release(forward=False, error=StatementDenied("too much"))
    assert len(refusal) == 1
    assert isinstance(refusal[0], SendToClient)
    assert err_of(refusal[0].raw)[0] == 2


def test_a_packet_over_max_packet_bytes_ends_the_session_with_1153() -> None:
    relay = make_relay(CLASSIC, max_packet_bytes=1000)
    big = query("SELECT '" + "b" * 2000 + "'")
    actions = relay.client_data(big[:500]) + relay.client_data(big[500:])
    ended = only_end(actions)
    assert isinstance(ended.error, MessageTooLarge)
    assert ended.error.mysql_errno == 1153
    assert ended.sequence == 1
    sequence, packet = err_of(error_packet(ended.error, ended.sequence))
    assert (sequence, packet.code) == (1, 1153)
    # byte by byte: nothing until the packet's last byte, then the same end
    relay = make_relay(CLASSIC, max_packet_bytes=1000)
    steps = [relay.client_data(big[i : i + 1]) for i in range(len(big))]
    assert steps[:-1] == [[]] * (len(big) - 1)
    assert only_end(steps[-1]).sequence == 1


def test_a_chunked_packet_over_max_packet_bytes_is_answered_after_its_last_chunk() -> None:
    relay = make_relay(CLASSIC, max_packet_bytes=MAX)
    big = frame(b"\x03" + b"c" * MAX_CHUNK + b"tail", 0)  # chunks 0 and 1
    ended = only_end(relay.client_data(big))
    assert isinstance(ended.error, MessageTooLarge)
    assert ended.sequence == 2


# --- commands the gateway refuses or handles itself


def test_change_user_ends_the_session() -> None:
    relay = make_relay(CLASSIC)
    ended = only_end(relay.client_data(command(b"\x11root\x00\x00")))
    assert isinstance(ended.error, FeatureNotSupported)
    assert ended.error.mysql_errno == 1235


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x12" + u32(4) + b"\x00\x00" + u32(1), id="binlog_dump"),
        pytest.param(b"\x08\x00", id="shutdown"),
        pytest.param(b"\xfa" + u32(1) + b"\x00\x00", id="bulk_execute"),
        pytest.param(b"\x40", id="0x40"),
        pytest.param(b"", id="empty"),
    ],
)
def test_forbidden_commands_get_one_err_and_the_session_goes_on(payload: bytes) -> None:
    relay = make_relay(CLASSIC, READ_SQL)
    actions = relay.client_data(command(payload))
    assert len(actions) == 1
    assert isinstance(actions[0], SendToClient)
    sequence, packet = err_of(actions[0].raw)
    assert sequence == 1
    assert packet.code == FeatureNotSupported.mysql_errno
    assert not relay.busy
    assert relay.held is None
    raw = query(READ_SQL)
    assert relay.client_data(raw) == [SendToServer(raw)]


def test_a_forbidden_command_behind_others_is_refused_in_turn() -> None:
    relay = make_relay(CLASSIC, READ_SQL)
    first, forbidden, last = query(READ_SQL), command(b"\x08\x00"), query(READ_SQL)
    assert relay.client_data(first + forbidden + last) == [SendToServer(first)]
    _, actions = relay.server_data(answer(ok()))
    assert len(actions) == 2
    assert isinstance(actions[0], SendToClient)
    assert err_of(actions[0].raw)[0] == 1
    assert actions[1] == SendToServer(last)


def test_quit_is_forwarded_and_the_session_marked_terminated() -> None:
    relay = make_relay(CLASSIC)
    raw = command(b"\x01")
    assert relay.client_data(raw) == [SendToServer(raw)]
    assert relay.terminated
    assert not relay.busy


def test_init_db_of_a_database_the_target_does_not_expose_is_refused_here() -> None:
    relay = make_relay(CLASSIC)
    [refused] = relay.client_data(command(b"\x02mysql"))
    assert isinstance(refused, SendToClient)
    assert refused.raw[4] == 0xFF
    assert int.from_bytes(refused.raw[5:7], "little") == 1044
    assert not relay.busy


def test_a_cached_read_outside_the_exposed_databases_is_held_for_the_session() -> None:
    relay = make_relay(CLASSIC, "SELECT * FROM mysql.user", "SELECT * FROM test.t")
    raw = command(b"\x03SELECT * FROM test.t")
    assert relay.client_data(raw) == [SendToServer(raw)]
    relay.server_data(answer(ok(CLASSIC)))
    held = only_hold(relay.client_data(command(b"\x03SELECT * FROM mysql.user")))
    assert held.sql == "SELECT * FROM mysql.user"


def test_process_kill_waits_for_the_session() -> None:
    relay = make_relay(CLASSIC, allow=["admin"])
    raw = command(b"\x0c" + u32(5))
    held = only_hold(relay.client_data(raw))
    assert (held.command, held.sql) == (Command.PROCESS_KILL, None)


@pytest.mark.parametrize("caps", CAPS)
def test_harmless_commands_are_forwarded_and_followed(caps: int) -> None:
    relay = make_relay(caps)
    for payload, reply in [
        (b"\x0e", answer(ok(caps))),  # ping
        (b"\x09", answer(b"Uptime: 5  Threads: 1")),  # statistics
        (b"\x02test", answer(ok(caps))),  # init db
        (b"\x04accounts\x00", answer(column(b"id"), end(caps))),  # field list
        (b"\x1a" + u32(1), answer(ok(caps))),  # stmt reset
    ]:
        raw = command(payload)
        assert relay.client_data(raw) == [SendToServer(raw)], payload
        assert relay.server_data(reply) == (reply, []), payload
        assert not relay.busy


# --- answers that must end the session


@pytest.mark.parametrize("caps", CAPS)
def test_an_answer_turning_no_backslash_escapes_on_ends_the_session(caps: int) -> None:
    relay = make_relay(caps, READ_SQL)
    relay.client_data(query(READ_SQL))
    with pytest.raises(ProtocolViolation):
        relay.server_data(answer(ok(caps, status=NO_BACKSLASH_ESCAPES)))
    # also when the flag comes in the end of a result set, in pieces
    relay = make_relay(caps, READ_SQL)
    relay.client_data(query(READ_SQL))
    stream = answer(*result_set(caps, [text_row(b"1", b"a")], status=NO_BACKSLASH_ESCAPES))
    with pytest.raises(ProtocolViolation):
        relay_answer(relay, stream, piece=4)


def test_a_mariadb_answer_reporting_ansi_quotes_ends_the_session() -> None:
    """MariaDB reports ANSI_QUOTES in the status flags (0x8000, see the ansi_quotes
    vector). Under it `"a\\"; DELETE FROM t; -- "` is an identifier, then a DELETE, where
    the gateway's lexer reads one string: a session that got there (EXECUTE IMMEDIATE
    under a session grant, say) can no longer be classified, as with
    NO_BACKSLASH_ESCAPES, and the gateway refuses such an upstream at login."""
    relay = make_relay(DEPRECATE, READ_SQL)
    relay.client_data(query(READ_SQL))
    with pytest.raises(ProtocolViolation):
        relay.server_data(answer(ok(DEPRECATE, status=AUTOCOMMIT | int(S.ANSI_QUOTES))))


def test_a_local_infile_request_ends_the_session() -> None:
    relay = make_relay(CLASSIC, READ_SQL)
    relay.client_data(query(READ_SQL))
    with pytest.raises(ProtocolViolation):
        relay.server_data(answer(LocalInfileRequest(b"/etc/passwd").build()))


def test_server_bytes_when_no_command_is_pending_are_a_violation() -> None:
    with pytest.raises(ProtocolViolation):
        make_relay(CLASSIC).server_data(answer(ok()))
    # after a whole answer
    relay = make_relay(CLASSIC, READ_SQL)
    relay.client_data(query(READ_SQL))
    relay.server_data(answer(ok()))
    with pytest.raises(ProtocolViolation):
        relay.server_data(answer(ok()))
    # more than the answer, in one read
    relay = make_relay(CLASSIC, READ_SQL)
    relay.client_data(query(READ_SQL))
    with pytest.raises(ProtocolViolation):
        relay.server_data(answer(ok()) + answer(ok(), first=2))
    # while a command is held (nothing was forwarded)
    relay = make_relay(CLASSIC)
    only_hold(relay.client_data(query(READ_SQL)))
    with pytest.raises(ProtocolViolation):
        relay.server_data(answer(ok()))
    # after a command that has no answer
    relay = make_relay(CLASSIC)
    relay.client_data(close(1))
    with pytest.raises(ProtocolViolation):
        relay.server_data(answer(ok()))


# --- multi-statements and COM_SET_OPTION


@pytest.mark.parametrize("caps", CAPS)
def test_multi_statement_answers_are_followed_to_the_last_result(caps: int) -> None:
    multi = "SELECT 1 AS a; UPDATE accounts SET name = 'x'; SELECT name FROM accounts"
    results = Results()
    relay = make_relay(
        caps | int(C.MULTI_STATEMENTS), multi, READ_SQL, results=results, allow=["write"]
    )
    first, second = query(multi), query(READ_SQL)
    assert relay.client_data(first + second) == [SendToServer(first)]
    parts = [
        answer(*result_set(caps, [text_row(b"1")], columns=1, status=MORE)),
        answer(ok(caps, affected=2, status=MORE)),
        answer(*result_set(caps, [text_row(b"a"), text_row(b"b")], columns=1)),
    ]
    for part in parts[:-1]:
        assert relay.server_data(part) == (part, [])
        assert relay.busy
    assert relay.server_data(parts[-1]) == (parts[-1], [SendToServer(second)])
    assert results.answers == [Answer(rows=3, result_sets=2, affected_rows=2, error=None)]
    # an error ends a multi-statement answer too
    relay.server_data(answer(ok(caps)))
    third = query(multi)
    relay.client_data(third + second)
    stream = answer(ok(caps, status=MORE)) + answer(err(1146))
    assert relay.server_data(stream) == (stream, [SendToServer(second)])


def test_set_option_toggles_multi_statements() -> None:
    relay = make_relay(CLASSIC)
    assert not relay.multi_statements
    for on in (True, False, True):
        raw = set_option(on)
        assert relay.client_data(raw) == [SendToServer(raw)]
        assert relay.multi_statements is not on  # not before the server agrees
        relay.server_data(answer(EofPacket(0, AUTOCOMMIT).build()))
        assert relay.multi_statements is on
    # a refused option changes nothing
    relay.client_data(set_option(False))
    relay.server_data(answer(ErrPacket(1047, "08S01", "Unknown command").build()))
    assert relay.multi_statements
    # COM_RESET_CONNECTION goes back to what the client asked at login
    relay.client_data(command(b"\x1f"))
    relay.server_data(answer(ok()))
    assert not relay.multi_statements
    assert make_relay(CLASSIC | int(C.MULTI_STATEMENTS)).multi_statements


# --- KILL and admin statements


@pytest.mark.parametrize(
    ("sql", "connection_id", "query_only"),
    [
        ("KILL 5", 5, False),
        ("kill query 7;", 7, True),
        ("KILL CONNECTION 9", 9, False),
        ("  Kill\tQuery\n 4294967295 ; ", 4294967295, True),
    ],
)
def test_parse_kill_accepts_plain_kills(sql: str, connection_id: int, query_only: bool) -> None:
    kill = parse_kill(sql)
    assert kill is not None
    assert (kill.connection_id, kill.query_only) == (connection_id, query_only)


@pytest.mark.parametrize(
    "sql",
    [
        "KILL USER x",
        "KILL QUERY ID 5",
        "KILL 5; DROP TABLE t",
        "KILL HARD 5",
        "KILL",
        "KILL 12345678901",
        "KILL @id",
        "KILL 5 /* c */",
        "SELECT 1; KILL 5",
    ],
)
def test_parse_kill_rejects_anything_else(sql: str) -> None:
    assert parse_kill(sql) is None


@pytest.mark.parametrize("digits", ["\u0665", "\uff15"], ids=["arabic_indic", "fullwidth"])
def test_parse_kill_reads_only_ascii_digits(digits: str) -> None:
    """MySQL's lexer reads only ASCII digits: KILL followed by an Arabic-Indic or a
    fullwidth five is a syntax error there, and must not make the gateway end
    connection 5."""
    assert parse_kill(f"KILL {digits}") is None


def test_is_kill_spots_a_kill_among_several_statements() -> None:
    assert is_kill(classify("KILL 5", "mysql"))
    assert is_kill(classify("SELECT 1; KILL 5", "mysql"))
    assert not is_kill(classify("SELECT 'KILL 5'", "mysql"))
    assert not is_kill(classify("FLUSH TABLES", "mysql"))


@pytest.mark.parametrize("sql", ["KILL 5", "FLUSH TABLES", "SET NAMES sjis"])
def test_admin_statements_are_held_even_where_the_rule_allows_them(sql: str) -> None:
    relay = make_relay(CLASSIC, sql, allow=["admin"])
    verdict = relay.gate.classifier.lookup(sql)
    assert verdict is not None
    assert verdict.statement_class is StatementClass.ADMIN
    held = only_hold(relay.client_data(query(sql)))
    assert held.sql == sql
    assert relay.gate.allowed(verdict)
    assert not relay.gate.admits(verdict)
    # nor does a statement prepared from admin text execute from the hot path
    relay.release(forward=False, error=StatementDenied("decided elsewhere"))
    relay.client_data(prepare(sql))
    relay.server_data(answer(*prepare_ok(CLASSIC, 1, params=0, columns=0)))
    assert not admitted(relay, 1)
    # where the rule denies admin, the gate does not allow it either
    assert not make_gate(sql).allowed(verdict)


# --- sessions captured from a real MariaDB, replayed through the relay

VECTORS = Path(__file__).resolve().parents[1] / "protocols" / "mysql" / "vectors"
SESSIONS = ["session_eof", "session_deprecate_eof"]
#: Exchanges after which the gateway ends the session (checked on their own below).
ENDS_SESSION = {"ansi_quotes", "local_infile_request", "local_infile_empty_reply"}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text())
    return data


def hex_bytes(lines: list[str]) -> bytes:
    return bytes.fromhex("".join(lines))


def submit(relay: MySqlRelay, client: bytes, command_byte: int) -> list[object]:
    """The client's command, approved if the relay holds it (as an approver would)."""
    if command_byte in (Command.QUERY, Command.STMT_PREPARE):
        relay.gate.classifier.classify(client[5:].decode())
    actions: list[object] = list(relay.client_data(client))
    if len(actions) == 1 and isinstance(actions[0], HoldCommand):
        held = actions[0]
        prepared = None
        if held.command == Command.STMT_PREPARE and held.sql is not None:
            prepared = (held.sql, classify(held.sql, "mysql"))
        actions = list(relay.release(forward=True, prepared=prepared))
    return actions


def check_answer(name: str, answer_seen: Answer, expect: dict[str, Any]) -> None:
    kind = expect["kind"]
    if kind == "result":
        assert (answer_seen.rows, answer_seen.result_sets) == (
            expect["rows"],
            expect["result_sets"],
        ), name
        assert answer_seen.error is None, name
    elif kind == "ok":
        assert answer_seen.affected_rows == expect["affected_rows"], name
        assert answer_seen.error is None, name
    elif kind == "error":
        assert answer_seen.error == expect["code"], name
    elif kind == "cursor":
        assert answer_seen.cursor, name
    else:
        raise AssertionError(f"{name}: unexpected kind {kind}")


@pytest.mark.parametrize("piece", [0, 1, 5], ids=["whole", "bytewise", "by5"])
@pytest.mark.parametrize("name", SESSIONS)
def test_a_real_mariadb_session_replays_through_the_relay(name: str, piece: int) -> None:
    data = load(name)
    results = Results()
    relay = make_relay(data["capabilities"], results=results, allow=ALLOW_EVERYTHING)
    # The captured session's own databases; its COM_INIT_DB of one that does not exist
    # is the server's to refuse.
    relay.gate.databases = frozenset({"test", "airlock_vectors", "airlock_no_such_db"})
    replayed = 0
    for exchange in data["exchanges"]:
        command_byte = exchange["command"]
        if command_byte is None or exchange["name"] in ENDS_SESSION:
            continue
        client, server = hex_bytes(exchange["client"]), hex_bytes(exchange["server"])
        actions = submit(relay, client, command_byte)
        if command_byte == Command.PROCESS_INFO:  # a process list: refused by the gateway
            assert len(actions) == 1
            assert isinstance(actions[0], SendToClient)
            continue
        assert actions == [SendToServer(client)], exchange["name"]
        before = len(results.answers)
        relayed, more = relay_answer(relay, server, piece)
        assert (relayed, more) == (server, []), exchange["name"]
        assert not relay.busy, exchange["name"]
        if command_byte in (Command.QUERY, Command.STMT_EXECUTE):
            assert len(results.answers) == before + 1, exchange["name"]
            check_answer(exchange["name"], results.answers[-1], exchange["expect"]["response"])
        else:
            assert len(results.answers) == before, exchange["name"]
        if exchange["name"] == "set_option_multi_off":
            assert not relay.multi_statements
        if exchange["name"] == "set_option_multi_on":
            assert relay.multi_statements
        replayed += 1
    assert replayed > 40
    assert relay.terminated


@pytest.mark.parametrize("exchange_name", ["ansi_quotes", "local_infile_request"])
@pytest.mark.parametrize("name", SESSIONS)
def test_real_answers_the_gateway_cannot_follow_end_the_session(
    name: str, exchange_name: str
) -> None:
    data = load(name)
    (exchange,) = [e for e in data["exchanges"] if e["name"] == exchange_name]
    relay = make_relay(data["capabilities"], allow=ALLOW_EVERYTHING)
    client = hex_bytes(exchange["client"])
    assert submit(relay, client, exchange["command"]) == [SendToServer(client)]
    with pytest.raises(ProtocolViolation):
        relay.server_data(hex_bytes(exchange["server"]))


def test_every_refusal_the_relay_builds_is_an_airlock_error() -> None:
    """EndSession errors reach the client through error_packet: each is an AirlockError
    with a MySQL errno."""
    cases = [
        make_relay(CLASSIC).client_data(command(b"\x11x\x00")),
        make_relay(CLASSIC, max_packet_bytes=10).client_data(query("SELECT 1234567890")),
        make_relay(CLASSIC).client_data(command(b"\x03x", sequence_id=1)),
    ]
    for actions in cases:
        ended = only_end(actions)
        assert isinstance(ended.error, AirlockError)
        assert ended.error.mysql_errno > 1000


# --- the target's read and write roles

TAKE_WRITE = query("SET ROLE `writer`")
TAKE_READ = query("SET ROLE `reader`")


def role_relay(*known: str, allow: Sequence[str] = ()) -> MySqlRelay:
    """A relay for a target with roles, its gate with the write classes cold, as the
    session makes it."""
    cold = frozenset(c for c in StatementClass if c is not StatementClass.READ)
    gate = MySqlGate(
        CachedClassifier("mysql"), policy(allow), lambda: NOW, frozenset({"test"}),
        cold_classes=cold,
    )  # fmt: skip
    for sql in known:
        gate.classifier.classify(sql)
    return MySqlRelay(
        capabilities=CLASSIC, gate=gate, max_packet_bytes=MAX, roles=("reader", "writer")
    )


def test_an_elevated_command_runs_between_the_write_role_and_the_read_role() -> None:
    relay = role_relay(READ_SQL, WRITE_SQL)
    write, read = query(WRITE_SQL), query(READ_SQL)
    only_hold(relay.client_data(write))
    assert relay.release(forward=True, elevate=True) == [SendToServer(TAKE_WRITE)]
    assert relay.client_data(read) == []  # the client's next command waits, in order
    # The server's OK to the gateway's SET ROLE is not relayed; the write goes then.
    assert relay.server_data(answer(ok())) == (b"", [SendToServer(write)])
    # The write's answer is relayed whole, then the read role is taken again...
    reply = answer(ok(affected=1))
    assert relay.server_data(reply) == (reply, [SendToServer(TAKE_READ)])
    # ...and only once the server agreed does the waiting read go.
    assert relay.server_data(answer(ok())) == (b"", [SendToServer(read)])
    rows = answer(*result_set(CLASSIC, [text_row(b"1", b"a")]))
    assert relay.server_data(rows) == (rows, [])
    assert relay.client_data(read) == [SendToServer(read)]  # the hot path again


def test_a_refused_write_role_refuses_the_command_and_forwards_nothing() -> None:
    relay = role_relay(WRITE_SQL, READ_SQL)
    only_hold(relay.client_data(query(WRITE_SQL)))
    relay.release(forward=True, elevate=True)
    relay.client_data(query(READ_SQL))
    to_client, actions = relay.server_data(answer(err(1959, "Invalid role specification")))
    assert to_client == b""
    refusal, then = actions
    assert isinstance(refusal, SendToClient)
    sequence, packet = err_of(refusal.raw)
    assert (sequence, packet.code) == (1, WriteRoleRefused.mysql_errno)
    assert "write role" in packet.message
    assert "Invalid role" not in packet.message  # the server's words go to the log only
    assert relay.role_error == "1959 Invalid role specification"
    assert then == SendToServer(query(READ_SQL))  # no return needed: nothing changed


def test_a_failed_return_to_the_read_role_ends_the_session() -> None:
    relay = role_relay(WRITE_SQL, READ_SQL)
    only_hold(relay.client_data(query(WRITE_SQL)))
    relay.release(forward=True, elevate=True)
    relay.server_data(answer(ok()))
    reply = answer(ok(affected=1))
    assert relay.server_data(reply) == (reply, [SendToServer(TAKE_READ)])
    assert relay.client_data(query(READ_SQL)) == []
    to_client, actions = relay.server_data(answer(err(1959, "Invalid role specification")))
    assert to_client == b""
    ended = only_end(actions)
    assert isinstance(ended.error, RoleNotRestored)


def test_with_roles_writes_the_rules_allow_and_their_prepares_are_held() -> None:
    relay = role_relay(READ_SQL, WRITE_SQL, allow=("write",))
    only_hold(relay.client_data(query(WRITE_SQL)))  # allowed, yet decided off the hot path
    relay.release(forward=False, error=StatementDenied("probe"))
    only_hold(relay.client_data(prepare(WRITE_SQL)))  # prepared under the write role
    relay.release(forward=False, error=StatementDenied("probe"))
    assert relay.client_data(query(READ_SQL)) == [SendToServer(query(READ_SQL))]
    relay.server_data(answer(*result_set(CLASSIC, [])))
    assert relay.client_data(prepare(READ_SQL)) == [SendToServer(prepare(READ_SQL))]


def test_reset_connection_is_followed_by_the_read_role() -> None:
    relay = role_relay(READ_SQL)
    reset = command(b"\x1f")
    assert relay.client_data(reset) == [SendToServer(reset)]
    assert relay.client_data(query(READ_SQL)) == []
    reply = answer(ok())
    assert relay.server_data(reply) == (reply, [SendToServer(TAKE_READ)])
    assert relay.server_data(answer(ok())) == (b"", [SendToServer(query(READ_SQL))])
