"""PgRelay with no sockets: client and server bytes in, actions out (a playbook)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from protocols.errors import MessageTooLarge, ProtocolViolation
from protocols.postgres import messages as m
from proxy.errors import AirlockError, FeatureNotSupported, StatementDenied
from proxy.postgres.gate import ADMIT, DECIDE, PgGate
from proxy.postgres.relay import EndSession, HoldMessage, PgRelay, Pipe, SendToClient, SendToServer

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


def refusal_portal(sent: bytes) -> str:
    """The portal of the failing Execute the relay sent in a refused message's place."""
    execute = m.decode_frontend(sent[: 1 + int.from_bytes(sent[1:5], "big")])
    assert isinstance(execute, m.Execute)
    return execute.portal


def no_portal_error(portal: str) -> bytes:
    """What PostgreSQL answers to an Execute of a portal that does not exist."""
    return m.ErrorResponse.build("ERROR", "34000", f'portal "{portal}" does not exist').raw


def test_function_call_is_refused_by_a_failing_execute_and_never_forwarded() -> None:
    r = relay()
    actions = r.client_data(function_call())
    sent = sent_to_server(actions)
    assert b"F" not in sent[:1]
    assert sent.endswith(m.Sync().raw)
    assert sent_to_client(actions) == b""
    # The server fails the stand-in; the client sees our error in its place.
    out = r.server_data(no_portal_error(refusal_portal(sent)) + ready("I"))
    error = m.decode_backend(out[: -len(ready("I"))])
    assert isinstance(error, m.ErrorResponse)
    assert (error.code, error.severity) == ("0A000", "ERROR")
    assert out.endswith(ready("I"))


def test_a_refusal_keeps_its_place_behind_the_replies_the_server_still_owes() -> None:
    r = relay()
    actions = r.client_data(query("select pg_sleep(1)") + function_call())
    sent = sent_to_server(actions)
    assert sent.startswith(query("select pg_sleep(1)"))
    assert sent_to_client(actions) == b""
    portal = refusal_portal(sent[len(query("select pg_sleep(1)")) :])
    first = complete("SELECT 1") + ready("T")
    out = r.server_data(first + no_portal_error(portal) + ready("E"))
    assert out.startswith(first)
    error = m.decode_backend(out[len(first) : -len(ready("E"))])
    assert isinstance(error, m.ErrorResponse)
    assert error.code == "0A000"
    # the status is the server's: the refusal failed its transaction, as any error does
    assert out.endswith(ready("E"))
    assert r.transaction_status == "E"


def test_an_error_not_about_our_portal_passes_unchanged() -> None:
    r = relay()
    sent = sent_to_server(r.client_data(function_call()))
    aborted = m.ErrorResponse.build("ERROR", "25P02", "current transaction is aborted").raw
    assert r.server_data(aborted + ready("E")) == aborted + ready("E")
    other = m.ErrorResponse.build("ERROR", "34000", 'portal "c1" does not exist').raw
    r.client_data(query("fetch c1"))
    assert r.server_data(other + ready("I")) == other + ready("I")
    assert refusal_portal(sent)


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


class HoldingGate(PgGate):
    """Holds Execute, and Query messages whose SQL starts with one of prefixes."""

    def __init__(self, *prefixes: bytes) -> None:
        self.prefixes = prefixes
        self.described_types: list[tuple[int, ...]] = []
        self.ready_count = 0

    def admit(self, kind: int, raw: bytes, start: int, end: int) -> int:
        if kind == b"E"[0]:
            return DECIDE
        held = kind == b"Q"[0] and raw[start + 5 : end].startswith(self.prefixes)
        return DECIDE if held else ADMIT

    def described(self, param_types: tuple[int, ...]) -> None:
        self.described_types.append(param_types)

    # The name bookkeeping is PgGate's own, tested in test_pg_gate.py: left out here.
    def unit_sent(self) -> None:
        pass

    def answered(self, kind: int) -> None:
        pass

    def failed(self) -> None:
        pass

    def wait_after(self, unit: int) -> None:
        pass

    def ready(self, _transaction_status: str) -> None:
        self.ready_count += 1


def holding(*prefixes: bytes) -> PgRelay:
    return PgRelay(transaction_status="I", max_message_bytes=MAX, gate=HoldingGate(*prefixes))


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


def test_refusing_a_held_query_makes_the_server_fail_in_its_place() -> None:
    r = holding(b"update")
    r.client_data(query("select 1") + query("update t set a = 1") + query("select 2"))
    actions = r.release(forward=False, error=StatementDenied("denied by dba-1: not now"))
    sent = sent_to_server(actions)
    # the stand-in (Execute + Sync), then select 2; nothing is answered by the gateway
    assert sent.endswith(m.Sync().raw + query("select 2"))
    assert sent_to_client(actions) == b""
    portal = refusal_portal(sent)
    first = complete("SELECT 1") + ready("I")
    out = r.server_data(first + no_portal_error(portal) + ready("I"))
    assert out.startswith(first)
    error = m.decode_backend(out[len(first) : -len(ready("I"))])
    assert isinstance(error, m.ErrorResponse)
    assert (error.code, error.message) == ("42501", "denied by dba-1: not now")
    assert out.endswith(ready("I"))
    # select 2's reply then arrives normally
    assert r.server_data(complete("SELECT 1") + ready("I")) == first


def test_refusing_a_held_execute_fails_its_batch_on_the_server() -> None:
    r = holding()
    sync = m.Sync().raw
    actions = r.client_data(parse("update t set a = $1") + bind() + execute() + sync)
    assert sent_to_server(actions) == parse("update t set a = $1") + bind()
    assert actions[-1] == HoldMessage(execute())
    actions = r.release(forward=False, error=StatementDenied("denied"))
    sent = sent_to_server(actions)
    assert sent.endswith(sync)  # the stand-in Execute, then the client's Sync
    portal = refusal_portal(sent)
    server_reply = m.frame(b"1", b"") + m.frame(b"2", b"")
    out = r.server_data(server_reply + no_portal_error(portal) + ready("I"))
    assert out.startswith(server_reply)
    error = m.decode_backend(out[len(server_reply) : -len(ready("I"))])
    assert isinstance(error, m.ErrorResponse)
    assert error.code == "42501"


def test_the_error_is_swapped_even_before_the_client_sends_its_sync() -> None:
    r = holding()
    r.client_data(parse("update t set a = 1") + bind() + execute() + m.Flush().raw)
    portal = refusal_portal(sent_to_server(r.release(forward=False, error=StatementDenied("no"))))
    out = r.server_data(m.frame(b"1", b"") + m.frame(b"2", b"") + no_portal_error(portal))
    error = m.decode_backend(out[10:])
    assert isinstance(error, m.ErrorResponse)
    assert error.code == "42501"


def test_an_execute_refused_after_the_server_already_failed_the_batch_adds_no_error() -> None:
    r = holding()
    r.client_data(parse("update nope set a = 1") + bind() + execute() + m.Sync().raw)
    r.release(forward=False, error=StatementDenied("denied"))
    server_error = m.ErrorResponse.build("ERROR", "42P01", 'relation "nope" does not exist').raw
    out = r.server_data(server_error + ready("I"))
    assert out == server_error + ready("I")  # one error per batch, as from a server


def test_the_gate_hears_parameter_descriptions_and_ready_for_query() -> None:
    gate = HoldingGate()
    r = PgRelay(transaction_status="I", max_message_bytes=MAX, gate=gate)
    r.client_data(parse("select $1") + m.frame(b"D", b"S\0") + m.Sync().raw)
    description = m.frame(b"t", b"\0\x02" + (23).to_bytes(4, "big") + (25).to_bytes(4, "big"))
    out = r.server_data(m.frame(b"1", b"") + description + m.frame(b"n", b"") + ready("I"))
    assert description in out
    assert gate.described_types == [(23, 25)]
    assert gate.ready_count == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [("standard_conforming_strings", "off"), ("client_encoding", "LATIN1")],
)
def test_a_setting_the_classifier_cannot_follow_ends_the_session(name: str, value: str) -> None:
    r = relay()
    r.client_data(query(f"set {name} = {value}"))
    with pytest.raises(FeatureNotSupported, match=name):
        r.server_data(m.ParameterStatus.build(name, value).raw)


def test_after_a_refusal_the_rest_of_its_batch_goes_on_unexamined_to_be_skipped() -> None:
    r = holding()
    sync = m.Sync().raw
    batch = parse("update t set a = 1") + bind() + execute()
    r.client_data(batch + batch + sync + batch)
    actions = r.release(forward=False, error=StatementDenied("no"))
    sent = sent_to_server(actions)
    # The second Execute is not held: the server skips it after the refusal's error.
    # The Sync ends the failed batch; the next batch's Execute is held again.
    assert sent.endswith(batch + sync + parse("update t set a = 1") + bind())
    assert actions[-1] == HoldMessage(execute())


# --- the pipe between the two sockets


class Ends:
    """What a pipe hands on: to each socket, and back to the session."""

    def __init__(self) -> None:
        self.to_server: list[bytes] = []
        self.to_client: list[bytes] = []
        self.rest: list[tuple[bytes, int]] = []
        self.failures: list[AirlockError] = []

    def pipe(self, relay: PgRelay) -> Pipe:
        return Pipe(
            relay,
            self.to_server.append,
            self.to_client.append,
            lambda raw, done: self.rest.append((raw, done)),
            self.failures.append,
        )


def test_the_pipe_passes_whole_messages_straight_through_both_ways() -> None:
    ends = Ends()
    pipe = ends.pipe(PgRelay(transaction_status="I", max_message_bytes=MAX))
    pipe.client_data(query("select 1"))
    answer = m.frame(b"C", b"SELECT 1\0") + ready("I")
    pipe.server_data(answer)
    assert (ends.to_server, ends.to_client, ends.rest) == ([query("select 1")], [answer], [])


def test_the_pipe_hands_the_session_what_the_fast_path_leaves() -> None:
    ends = Ends()
    pipe = ends.pipe(PgRelay(transaction_status="I", max_message_bytes=MAX))
    whole, partial = query("select 1"), query("select 2")[:7]
    pipe.client_data(whole + partial)
    assert ends.to_server == []
    assert ends.rest == [(whole + partial, len(whole))]


def test_the_pipe_reports_a_server_out_of_step_and_sends_nothing() -> None:
    ends = Ends()
    pipe = ends.pipe(PgRelay(transaction_status="I", max_message_bytes=MAX))
    pipe.server_data(ready("I"))  # a ReadyForQuery nobody asked for
    assert [type(error) for error in ends.failures] == [ProtocolViolation]
    assert ends.to_client == []


def test_a_closed_pipe_drops_what_still_arrives() -> None:
    ends = Ends()
    pipe = ends.pipe(PgRelay(transaction_status="I", max_message_bytes=MAX))
    pipe.open = False
    pipe.client_data(query("select 1"))
    pipe.server_data(ready("I"))
    assert (ends.to_server, ends.to_client, ends.rest, ends.failures) == ([], [], [], [])


# --- the write role around what the gate let through (targets.X.roles)


def role_relay() -> PgRelay:
    return PgRelay(
        transaction_status="I",
        max_message_bytes=MAX,
        gate=HoldingGate(b"update"),
        roles=("reader", "writer"),
    )


def answers(*kinds: bytes) -> bytes:
    """Server messages with empty bodies, by type: b"1" ParseComplete, b"2" BindComplete..."""
    return b"".join(m.frame(kind, b"") for kind in kinds)


#: What the server answers to one run of the gateway's own SET ROLE inside a batch.
RUN_ANSWER = answers(b"1", b"2") + complete("SET") + answers(b"3", b"3")


def messages_of(raw: bytes) -> list[bytes]:
    out = []
    while raw:
        size = 1 + int.from_bytes(raw[1:5], "big")
        out.append(raw[:size])
        raw = raw[size:]
    return out


def set_role_sql(raw: bytes) -> list[str]:
    """The SET ROLE statements among the messages (Parse and Query bodies)."""
    found = []
    for message in messages_of(raw):
        if message[:1] in b"PQ" and b"SET ROLE" in message:
            start = message.index(b"SET ROLE")
            found.append(message[start : message.index(b"\0", start)].decode())
    return found


def test_an_approved_execute_runs_between_the_write_role_and_the_read_role() -> None:
    r = role_relay()
    actions = r.client_data(bind() + execute() + m.Sync().raw)
    assert isinstance(actions[-1], HoldMessage)
    sent = sent_to_server(r.release(forward=True, elevate=True))
    assert set_role_sql(sent) == ['SET ROLE "writer"', 'SET ROLE "reader"']
    assert execute() in sent
    assert sent.endswith(m.Sync().raw)
    # The server's answers to the gateway's own runs never reach the client.
    theirs = answers(b"2") + RUN_ANSWER + complete("UPDATE 1") + RUN_ANSWER + ready("I")
    out = b"".join(r.server_data(theirs[i : i + 7]) for i in range(0, len(theirs), 7))
    assert out == answers(b"2") + complete("UPDATE 1") + ready("I")
    assert not r.role_in_doubt
    assert r.client_data(query("select 1")) == [SendToServer(query("select 1"))]


def test_a_write_role_that_cannot_be_taken_fails_the_statement_in_its_place() -> None:
    r = role_relay()
    r.client_data(bind() + execute() + m.Sync().raw)
    r.release(forward=True, elevate=True)
    denied = m.ErrorResponse.build("ERROR", "42501", 'permission denied to set role "writer"')
    theirs = answers(b"2", b"1", b"2") + denied.raw + ready("I")
    assert r.server_data(theirs) == answers(b"2") + denied.raw + ready("I")
    assert not r.role_in_doubt  # the implicit transaction rolled SET ROLE back


def test_a_failed_write_in_a_transaction_leaves_the_role_in_doubt_until_it_ends() -> None:
    r = role_relay()
    r.client_data(bind() + execute() + m.Sync().raw)
    r.release(forward=True, elevate=True)
    failed = m.ErrorResponse.build("ERROR", "22012", "division by zero")
    # The write role was taken; the Execute failed; the return to the read role was skipped.
    assert r.server_data(answers(b"2") + RUN_ANSWER + failed.raw + ready("E")).endswith(
        failed.raw + ready("E")
    )
    assert r.role_in_doubt
    # The client's next unit is followed by a return of the gateway's own, not relayed.
    sent = sent_to_server(r.client_data(query("rollback")))
    assert sent == query("rollback") + query('SET ROLE "reader"')
    out = r.server_data(complete("ROLLBACK") + ready("I") + complete("SET") + ready("I"))
    assert out == complete("ROLLBACK") + ready("I")
    assert not r.role_in_doubt


def test_an_approved_query_gets_queries_of_the_gateways_own_around_it() -> None:
    r = role_relay()
    r.client_data(query("update t set a = 1"))
    sent = sent_to_server(r.release(forward=True, elevate=True))
    assert sent == (
        query('SET ROLE "writer"') + query("update t set a = 1") + query('SET ROLE "reader"')
    )
    theirs = complete("SET") + ready("I") + complete("UPDATE 1") + ready("I")
    theirs += complete("SET") + m.ParameterStatus.build("is_superuser", "off").raw + ready("I")
    assert r.server_data(theirs) == complete("UPDATE 1") + ready("I")


def test_a_return_to_the_read_role_failing_outside_an_aborted_transaction_ends_it() -> None:
    r = role_relay()
    r.client_data(query("update t set a = 1"))
    r.release(forward=True, elevate=True)
    refused = m.ErrorResponse.build("ERROR", "42501", 'permission denied to set role "reader"')
    theirs = complete("SET") + ready("I") + complete("UPDATE 1") + ready("I")
    with pytest.raises(AirlockError, match="read role"):
        r.server_data(theirs + refused.raw + ready("I"))


def test_without_roles_an_elevated_release_forwards_the_message_alone() -> None:
    r = holding(b"update")
    r.client_data(query("update t set a = 1"))
    assert sent_to_server(r.release(forward=True, elevate=True)) == query("update t set a = 1")
