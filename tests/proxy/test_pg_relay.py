"""PgRelay with no sockets: client and server bytes in, actions out (a playbook)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from protocols.errors import MessageTooLarge, ProtocolViolation
from protocols.postgres import messages as m
from proxy.pg_relay import EndSession, PgRelay, SendToClient, SendToServer

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
    assert sent_to_client(r.server_data(result)) == result


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
        out = sent_to_client(r.server_data(stream[:cut])) + sent_to_client(
            r.server_data(stream[cut:])
        )
        assert out == stream, cut
        assert r.transaction_status == "T"


def test_no_partial_header_is_forwarded() -> None:
    r = relay()
    r.client_data(query("select"))
    row = data_row(b"abc")
    assert sent_to_client(r.server_data(row[:3])) == b""
    assert sent_to_client(r.server_data(row[3:])) == row


def test_large_data_rows_stream_through_without_waiting_for_their_end() -> None:
    r = relay()
    r.client_data(query("select"))
    row = data_row(b"z" * 100_000)
    first = sent_to_client(r.server_data(row[:50_000]))
    assert first == row[:50_000]  # body bytes of a framed message pass on as they come
    assert sent_to_client(r.server_data(row[50_000:])) == row[50_000:]


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
    out = sent_to_client(r.server_data(complete("SELECT 1") + ready("T")))
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
    out = sent_to_client(r.server_data(complete("SET") + status + ready()))
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
