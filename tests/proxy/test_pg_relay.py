"""PgRelay with no sockets: client and server bytes in, actions out (a playbook)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from protocols.errors import MessageTooLarge, ProtocolViolation, StatementDenied
from protocols.postgres import messages as m
from proxy.pg_relay import EndSession, HoldMessage, PgRelay, SendToClient, SendToServer

MAX = 1 << 20


def relay() -> PgRelay:
    return PgRelay(transaction_status="I", max_message_bytes=MAX)


def query(sql: str) -> bytes:
    return m.Query.build(sql).raw


def ready(status: str = "I") -> bytes:
    return m.ReadyForQuery.build(status).raw


def complete(tag: str) -> bytes:
    return m.frame(b"C", m.cstring(tag))


def data_row(*values: bytes) -> bytes:
    body = len(values).to_bytes(2, "big")
    for value in values:
        body += len(value).to_bytes(4, "big") + value
    return m.frame(b"D", body)


def function_call() -> bytes:
    # FunctionCall: oid, 0 arg formats, 0 args, result format text.
    return m.frame(b"F", (1234).to_bytes(4, "big") + b"\0\0" + b"\0\0" + b"\0\0")


def parse(sql: str) -> bytes:
    return m.frame(b"P", m.cstring("") + m.cstring(sql) + b"\0\0")


def sent_to_server(actions: Sequence[object]) -> bytes:
    return b"".join(a.raw for a in actions if isinstance(a, SendToServer))


def sent_to_client(actions: Sequence[object]) -> bytes:
    return b"".join(a.raw for a in actions if isinstance(a, SendToClient))


def test_a_query_is_forwarded_verbatim_and_its_result_relayed() -> None:
    r = relay()
    raw = query("select 1")
    assert r.client_data(raw) == [SendToServer(raw)]
    result = complete("SELECT 1") + ready("I")
    assert r.server_data(result) == result


def test_client_messages_split_byte_by_byte_are_forwarded_once_whole() -> None:
    r = relay()
    raw = query("select 1") + query("select 2")
    out = b""
    for i in range(len(raw)):
        actions = r.client_data(raw[i : i + 1])
        out += sent_to_server(actions)
        # nothing is forwarded before a message is complete
        assert len(out) in (0, len(query("select 1")), len(raw))
    assert out == raw


def test_server_bytes_split_anywhere_reach_the_client_unchanged() -> None:
    stream = (
        m.frame(b"T", b"\0\0")
        + data_row(b"x" * 300)
        + data_row(b"y")
        + complete("SELECT 2")
        + ready("T")
    )
    for cut in range(1, len(stream)):
        r = relay()
        r.client_data(query("select"))
        out = r.server_data(stream[:cut]) + r.server_data(stream[cut:])
        assert out == stream, cut
        assert r.transaction_status == "T"


def test_no_partial_header_is_forwarded() -> None:
    r = relay()
    r.client_data(query("select"))
    row = data_row(b"abc")
    assert r.server_data(row[:3]) == b""
    assert r.server_data(row[3:]) == row


def test_large_data_rows_stream_through_without_waiting_for_their_end() -> None:
    r = relay()
    r.client_data(query("select"))
    row = data_row(b"z" * 100_000)
    first = r.server_data(row[:50_000])
    assert first == row[:50_000]  # body bytes of a framed message pass on as they come
    assert r.server_data(row[50_000:]) == row[50_000:]


def test_function_call_is_refused_with_error_and_ready_and_never_forwarded() -> None:
    r = relay()
    actions = r.client_data(function_call())
    assert sent_to_server(actions) == b""
    reply = sent_to_client(actions)
    error = m.decode_backend(reply[: reply.index(b"Z")])
    assert isinstance(error, m.ErrorResponse)
    assert error.code == "0A000"
    assert error.severity == "ERROR"
    assert reply.endswith(ready("I"))


def test_a_refusal_waits_for_the_replies_the_server_still_owes() -> None:
    r = relay()
    actions = r.client_data(query("select pg_sleep(1)") + function_call())
    assert sent_to_server(actions) == query("select pg_sleep(1)")
    assert sent_to_client(actions) == b""  # the error must not overtake the query's result
    out = r.server_data(complete("SELECT 1") + ready("T"))
    assert out.startswith(complete("SELECT 1") + ready("T"))
    tail = out[len(complete("SELECT 1") + ready("T")) :]
    assert isinstance(m.decode_backend(tail[: -len(ready("T"))]), m.ErrorResponse)
    # the made-up ReadyForQuery carries the status the server last reported
    assert tail.endswith(ready("T"))


def test_function_call_inside_an_unsynced_pipeline_ends_the_session() -> None:
    r = relay()
    actions = r.client_data(parse("select 1") + function_call())
    assert any(isinstance(a, EndSession) for a in actions)


def test_pipelined_syncs_each_expect_one_ready_for_query() -> None:
    r = relay()
    sync = m.Sync().raw
    r.client_data(parse("select 1") + sync + parse("select 2") + sync)
    r.server_data(m.frame(b"1", b"") + ready("I"))
    r.server_data(m.frame(b"1", b"") + ready("I"))
    with pytest.raises(ProtocolViolation, match="unrequested ReadyForQuery"):
        r.server_data(ready("I"))


def test_terminate_is_forwarded_and_ends_the_session() -> None:
    r = relay()
    actions = r.client_data(m.Terminate().raw + query("select 1"))
    assert sent_to_server(actions) == m.Terminate().raw
    assert isinstance(actions[-1], EndSession)
    assert r.client_data(query("select 1")) == []


def test_parameter_status_is_relayed_and_remembered() -> None:
    r = relay()
    r.client_data(query("set application_name = 'x'"))
    status = m.ParameterStatus.build("application_name", "x").raw
    out = r.server_data(complete("SET") + status + ready())
    assert status in out
    assert r.server_parameters["application_name"] == "x"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x01\x00\x00\x00\x05",  # unknown type byte
        b"Q\x00\x00\x00\x02",  # length below 4
    ],
)
def test_malformed_client_messages_are_protocol_violations(raw: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        relay().client_data(raw)


def test_an_oversized_client_message_is_refused_before_it_is_buffered() -> None:
    r = PgRelay(transaction_status="I", max_message_bytes=1024)
    header = b"Q" + (10_000_000).to_bytes(4, "big")
    with pytest.raises(MessageTooLarge):
        r.client_data(header)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x01\x00\x00\x00\x04",  # unknown backend type
        m.BackendKeyData.build(1, 2).raw,  # startup-only message mid-session
        m.AuthenticationOk().raw,
        b"D\x00\x00\x00\x01",  # length below 4
    ],
)
def test_malformed_server_output_is_a_protocol_violation(raw: bytes) -> None:
    r = relay()
    r.client_data(query("select 1"))
    with pytest.raises(ProtocolViolation):
        r.server_data(raw)


# --- holding: the seam the approval gate uses


def holding(*prefixes: bytes) -> PgRelay:
    """A relay that holds Query messages whose SQL starts with one of prefixes, and Execute."""

    def hold(kind: int, raw: bytes) -> bool:
        if kind == b"E"[0]:
            return True
        return kind == b"Q"[0] and raw[5:].startswith(prefixes)

    return PgRelay(transaction_status="I", max_message_bytes=MAX, hold=hold)


def bind() -> bytes:
    return m.frame(b"B", b"\0\0" + b"\0\0" + b"\0\0" + b"\0\0")


def execute() -> bytes:
    return m.frame(b"E", b"\0" + b"\0\0\0\0")


def test_a_held_query_is_not_forwarded_and_nothing_behind_it_is_either() -> None:
    r = holding(b"update")
    actions = r.client_data(query("select 1") + query("update t set a = 1") + query("select 2"))
    assert sent_to_server(actions) == query("select 1")
    assert actions[-1] == HoldMessage(query("update t set a = 1"))
    assert r.client_data(query("select 3")) == []  # more input waits behind the hold


def test_results_keep_flowing_while_a_statement_is_held() -> None:
    r = holding(b"update")
    r.client_data(query("select 1") + query("update t set a = 1"))
    result = data_row(b"1") + complete("SELECT 1") + ready("I")
    assert r.server_data(result) == result


def test_releasing_forwards_the_held_message_then_the_ones_behind_it() -> None:
    r = holding(b"update")
    r.client_data(query("update t set a = 1") + query("select 2"))
    actions = r.release(forward=True)
    assert sent_to_server(actions) == query("update t set a = 1") + query("select 2")
    assert r.held is None


def test_refusing_a_held_query_answers_error_and_ready_in_order() -> None:
    r = holding(b"update")
    r.client_data(query("select 1") + query("update t set a = 1") + query("select 2"))
    actions = r.release(forward=False, error=StatementDenied("denied by dba-1: not now"))
    # select 2 goes on to the server; the refusal waits for select 1's reply
    assert sent_to_server(actions) == query("select 2")
    assert sent_to_client(actions) == b""
    out = r.server_data(complete("SELECT 1") + ready("I"))
    first = complete("SELECT 1") + ready("I")
    assert out.startswith(first)
    error = m.decode_backend(out[len(first) : -len(ready("I"))])
    assert isinstance(error, m.ErrorResponse)
    assert (error.code, error.message) == ("42501", "denied by dba-1: not now")
    assert out.endswith(ready("I"))
    # select 2's reply then arrives normally
    assert r.server_data(complete("SELECT 1") + ready("I")) == first


def test_refusing_a_held_execute_drops_the_batch_to_sync_and_injects_the_error() -> None:
    r = holding()
    sync = m.Sync().raw
    actions = r.client_data(parse("update t set a = $1") + bind() + execute() + sync)
    assert sent_to_server(actions) == parse("update t set a = $1") + bind()
    assert actions[-1] == HoldMessage(execute())
    actions = r.release(forward=False, error=StatementDenied("denied"))
    assert sent_to_server(actions) == sync  # the server finishes Parse/Bind
    server_reply = m.frame(b"1", b"") + m.frame(b"2", b"")
    out = r.server_data(server_reply + ready("I"))
    assert out.startswith(server_reply)
    error = m.decode_backend(out[len(server_reply) : -len(ready("I"))])
    assert isinstance(error, m.ErrorResponse)
    assert error.code == "42501"


def test_an_execute_refused_after_the_server_already_failed_the_batch_adds_no_error() -> None:
    r = holding()
    r.client_data(parse("update nope set a = 1") + bind() + execute() + m.Sync().raw)
    r.release(forward=False, error=StatementDenied("denied"))
    server_error = m.ErrorResponse.build("ERROR", "42P01", 'relation "nope" does not exist').raw
    out = r.server_data(server_error + ready("I"))
    assert out == server_error + ready("I")  # one error per batch, as from a server


def test_a_refused_batch_that_never_reached_the_server_is_answered_by_the_gateway() -> None:
    def hold_parse(kind: int, _raw: bytes) -> bool:
        return kind == b"P"[0]

    r = PgRelay(transaction_status="T", max_message_bytes=MAX, hold=hold_parse)
    sync = m.Sync().raw
    r.client_data(parse("update t set a = 1") + bind() + execute() + sync)
    actions = r.release(forward=False, error=StatementDenied("denied"))
    assert sent_to_server(actions) == b""
    reply = sent_to_client(actions)
    assert isinstance(m.decode_backend(reply[: -len(ready("T"))]), m.ErrorResponse)
    assert reply.endswith(ready("T"))
