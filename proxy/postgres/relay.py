"""The PostgreSQL relay as a state machine: events in, actions out, no I/O.

Client bytes are framed into whole messages; each is forwarded verbatim,
refused, or held before it reaches the server. Server bytes are framed by
`BackendRelay`, which passes result rows through without decoding them and
hands over only the messages the gateway must see.

Holding: a `PgGate` (the session's classifier, approvals and its picture of the
server's statements and portals) admits each client message, asks for a decision, or
asks to wait for the server (`admit`); it hears of the server's confirmations
(ParseComplete, BindComplete, CloseComplete), errors, parameter descriptions and each
ReadyForQuery. The relay calls it in C when compiled: a stand-in gate subclasses it.
A message the gate does not admit is held: the relay emits `HoldMessage` and stops
taking client messages, which stay framed-but-unread in the framer (the I/O side stops
reading the socket too), while server output keeps flowing: results of earlier
statements are never buffered. `release` forwards or refuses the held message
and carries on with the ones behind it.

A simple Query inside an extended-protocol batch, before its Sync (asyncpg sends one
after Parse, Describe, Flush), would be skipped unanswered had the batch failed: the
relay sends a Sync of its own before it, whose ReadyForQuery it does not relay.

Refusing: the client must see exactly what a server would send, and the
server's transaction must end up as if the statement had failed there (an
error aborts an open transaction, and the rest of a pipelined batch). So a
refused message is replaced by an Execute of a portal that cannot exist (plus a
Sync, for a simple Query or a FunctionCall): the server fails it, with all the
consequences a real failure has, skips to Sync as it always does, and answers
ReadyForQuery with the true transaction status. The relay swaps the server's
"portal does not exist" error, recognised by its unguessable portal name, for
the gateway's own. If the server failed the batch earlier (or the transaction
was already aborted), its own error stands and ours is dropped, as a server
would report only the first error.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Protocol

from protocols.errors import ProtocolViolation
from protocols.postgres import messages as m
from protocols.postgres.framing import BackendRelay, MessageFramer, frame_at
from proxy.core.actions import EndSession as EndSession
from proxy.core.actions import SendToClient as SendToClient
from proxy.core.actions import SendToServer as SendToServer
from proxy.core.metrics import LATENCY_SAMPLE_EVERY
from proxy.errors import AirlockError, FeatureNotSupported, RoleNotRestored
from proxy.postgres.gate import ADMIT, PgGate
from proxy.postgres.upstream import quote_identifier, set_role
from proxy.recording.event_chain import EventChain

# --- actions


@dataclass(frozen=True, slots=True)
class HoldMessage:
    """This client message waits for a decision; call `PgRelay.release` with it."""

    raw: bytes


Action = SendToServer | SendToClient | HoldMessage | EndSession


class ResultListener(Protocol):
    def result(self, tag: str | None, error: m.ErrorResponse | None) -> None:
        """A statement finished: its CommandComplete tag, or the error the client saw."""
        ...

    def row(self, raw: bytes, start: int, end: int) -> None:
        """A DataRow at raw[start:end] (only when the relay was asked to capture rows)."""
        ...


_Z, _S, _K, _R, _E, _T, _C, _D = (ord(c) for c in "ZSKREtCD")
#: ParseComplete, BindComplete, CloseComplete: the gate's name changes confirmed.
_CONFIRMS = frozenset(b"123")
_INSPECTED = frozenset((_Z, _S, _K, _R, _E))
# FunctionCallResponse answers only FunctionCall, and CopyBothResponse only replication:
# the gateway lets neither through, so a server sending them is out of step.
_BACKEND_TYPES = frozenset(m.BACKEND_TYPES) - frozenset(b"VW")
_FRONTEND_TYPES = frozenset(m.FRONTEND_TYPES)
#: Messages that open an extended-protocol batch, which only a Sync closes. Not Flush:
#: it runs nothing, and psycopg sends one after its pipeline's Sync.
_EXTENDED = frozenset(b"PBDEC")
_QUERY, _SYNC, _FUNCTION_CALL, _TERMINATE = b"Q"[0], b"S"[0], b"F"[0], b"X"[0]
_PARSE_COMPLETE, _BIND_COMPLETE, _CLOSE_COMPLETE = b"1"[0], b"2"[0], b"3"[0]
_EXECUTE = b"E"[0]
#: Client messages that, unless the gate holds them, are forwarded with no more than
#: bookkeeping: everything but Terminate and FunctionCall.
_PLAIN_FORWARD = _FRONTEND_TYPES - {_TERMINATE, _FUNCTION_CALL}
#: The messages a gate looks at; the rest (Sync, Flush, COPY data) it always admits.
_GATED = frozenset(b"QPBECD")
# The same sets as one flag byte per message type, for the hot path (and as frame_at's
# table: every frontend type has _FRAMED, so any other type has no flag at all).
_PLAIN, _GATE, _OPENS_BATCH, _ENDS_BATCH, _FRAMED = 1, 2, 4, 8, 16
_FRONTEND_FLAGS = bytes(
    (_FRAMED if kind in _FRONTEND_TYPES else 0)
    | (_PLAIN if kind in _PLAIN_FORWARD else 0)
    | (_GATE if kind in _GATED else 0)
    | (_OPENS_BATCH if kind in _EXTENDED else 0)
    | (_ENDS_BATCH if kind in (_QUERY, _SYNC) else 0)
    for kind in range(256)
)
_UNDEFINED_CURSOR = "34000"
#: The message that ends the server's answer to each extended-protocol message:
#: ParseComplete, BindComplete, CloseComplete, NoData, RowDescription (to a Describe),
#: CommandComplete, EmptyQueryResponse, PortalSuspended (to an Execute).
_FINAL = frozenset(b"123nTCIs")
#: A run of the gateway's own messages inside a batch: Parse, Bind, Execute, Close, Close.
_RUN_LENGTH = 5


def _role_messages(read_role: str, write_role: str) -> tuple[bytes, bytes, bytes, bytes]:
    """Runs (inside a batch) and Queries that take the write role and the read role.

    The runs' statement and portal have an unguessable name, made and closed within the
    run: no client message ever runs while they exist.
    """
    name = m.cstring(f"airlock role {secrets.token_hex(8)}")

    def run(role: str) -> bytes:
        sql = m.cstring(f"SET ROLE {quote_identifier(role)}")
        return (
            m.frame(b"P", name + sql + b"\0\0")
            + m.frame(b"B", name + name + b"\0\0\0\0\0\0")
            + m.frame(b"E", name + b"\0\0\0\0")
            + m.frame(b"C", b"P" + name)
            + m.frame(b"C", b"S" + name)
        )

    return run(write_role), run(read_role), set_role(write_role), set_role(read_role)


_SYNC_MESSAGE = m.Sync().raw


#: Server settings the classifier's lexer depends on, and the values it assumes: with
#: backslash escapes in plain strings, or another client encoding, the server would
#: read a statement differently from the gateway.
LEXER_ASSUMPTIONS = {
    "standard_conforming_strings": ("on",),
    "client_encoding": ("utf8", "unicode", "sql_ascii"),
}


def check_lexer_assumption(name: str, value: str) -> None:
    expected = LEXER_ASSUMPTIONS.get(name)
    if expected is not None and value.casefold().replace("-", "") not in expected:
        raise FeatureNotSupported(
            f"{name} is now {value!r}: the gateway classifies statements only with "
            f"{name} = {expected[0]}, so it ends the session",
        )


def error_message(error: AirlockError, *, fatal: bool | None = None) -> bytes:
    """The one place an AirlockError becomes a PostgreSQL ErrorResponse."""
    severity = "FATAL" if (error.fatal if fatal is None else fatal) else "ERROR"
    return m.ErrorResponse.build(
        severity, error.sqlstate, error.message, detail=error.detail, hint=error.hint
    ).raw


class Pipe:
    """The relay's hot path between the two sockets, in one compiled object.

    The event loop hands each read straight to `client_data` or `server_data`; what
    the relay passes whole goes to the other socket's transport with no session method
    or Channel in between. Anything else goes to the session: the client's bytes the
    fast path did not take (`client_rest`, with how many it took), a server protocol
    error (`server_failed`). Once the session ends it sets `open` to False, and the
    pipe drops whatever still arrives.

    When the session is recorded, `chain` is its transcript's: what the relay recorded
    about a read is hashed into it once the read's bytes are passed on, so that the
    hashing is not between a query and the server, or a reply and the client.
    """

    def __init__(
        self,
        relay: PgRelay,
        to_server: Callable[[bytes], object],
        to_client: Callable[[bytes], object],
        client_rest: Callable[[bytes, int], None],
        server_failed: Callable[[AirlockError], None],
    ) -> None:
        self.relay = relay
        self.to_server = to_server
        self.to_client = to_client
        self.client_rest = client_rest
        self.server_failed = server_failed
        self.open = True
        self.chain: EventChain | None = None
        #: Told how long one client read in LATENCY_SAMPLE_EVERY took to be forwarded
        #: (metrics: the latency the gateway adds), when the relay passed it whole.
        self.on_latency: Callable[[float], object] | None = None
        self._countdown = LATENCY_SAMPLE_EVERY

    def client_data(self, raw: bytes) -> None:
        if not self.open:
            return
        self._countdown -= 1
        if self._countdown == 0:
            self._countdown = LATENCY_SAMPLE_EVERY
            if self.on_latency is not None:
                started = perf_counter()
                if self._client_data(raw):
                    self.on_latency(perf_counter() - started)
                return
        self._client_data(raw)

    def _client_data(self, raw: bytes) -> bool:
        """Forward what the relay passes; True when that was all of `raw`."""
        done = self.relay.fast_forward(raw)
        whole = done == len(raw)
        if whole:
            self.to_server(raw)
        else:
            self.client_rest(raw, done)
        if self.chain is not None:
            self.chain.hash_pending()
        return whole

    def server_data(self, raw: bytes) -> None:
        if not self.open:
            return
        try:
            out = self.relay.server_data(raw)
        except AirlockError as error:
            self.server_failed(error)
            return
        if out:
            self.to_client(out)
        if self.chain is not None:
            self.chain.hash_pending()


class PgRelay:
    def __init__(
        self,
        *,
        transaction_status: str = "I",
        max_message_bytes: int,
        gate: PgGate | None = None,
        results: ResultListener | None = None,
        capture_rows: bool = False,
        roles: tuple[str, str] | None = None,
    ) -> None:
        self.transaction_status = transaction_status
        self._gate = gate
        self._client = MessageFramer(_FRONTEND_TYPES, max_message_bytes)
        self._max_message_bytes = max_message_bytes
        #: Nothing buffered or held: the fast path may be taken.
        self._client_idle = True
        self._results = results
        #: Takes each statement's command tag instead of `results` (its `result_tag`),
        #: when the session records results but no rows: the transcript's chain.
        self.chain: EventChain | None = None
        inspected = _INSPECTED | ({_T, *_CONFIRMS} if gate is not None else set())
        inspected |= {_C} if results is not None else set()
        if capture_rows:
            # Rows are then framed whole before they pass, so the message cap applies.
            assert results is not None
            inspected |= {_D}
        #: The server messages the normal path looks at, as flags by type: while the
        #: gateway's own messages are answered, the BackendRelay frames every message.
        self._looked_at = bytes(kind in inspected for kind in range(256))
        if roles is not None:
            # Each message's last answer is counted from the start of its batch, to find
            # the answers to the gateway's own messages, which may come later.
            inspected |= _FINAL
        self._server = BackendRelay(_BACKEND_TYPES, inspected, max_message_bytes)
        #: ReadyForQuery messages the server owes: one per Query and Sync forwarded.
        self._owed = 0
        self._units_sent = 0  # Queries and Syncs forwarded, ever
        #: Extended-protocol messages forwarded in the unit being built (each answered by
        #: one "last" message: see _FINAL).
        self._unit_messages = 0
        #: Units (by number) that are the gateway's own Syncs and Queries: nothing the
        #: server answers to them is relayed. Those of them that return the session to
        #: its read role are also in `_switchbacks`.
        self._own_units: list[int] = []
        #: Units ended by a Sync of the gateway's own, inside a client's batch (before a
        #: simple Query): only their ReadyForQuery is not relayed.
        self._own_readies: list[int] = []
        self._switchbacks: list[int] = []
        #: The gateway's own messages inside a client's batch: (unit, first, end, returns
        #: to the read role), by the positions of the batch's messages.
        self._runs: list[tuple[int, int, int, bool]] = []
        self._answered = 0  # messages of the unit at the server's head answered so far
        self._failed_at = -1  # which of them failed, if one did
        #: Defence in depth (SET ROLE): the messages that take the write role and return
        #: to the read role, inside a batch and as Queries; None without roles.
        self._roles: tuple[bytes, bytes, bytes, bytes] | None = None
        if roles is not None:
            self._roles = _role_messages(*roles)
        #: A return to the read role failed: one follows every client unit until one works.
        self.role_in_doubt = False
        #: A savepoint made under the write role (by an approved multi-statement Query)
        #: may exist in the open transaction: ROLLBACK TO it would bring the write role
        #: back, so every client statement is followed by a return to the read role until
        #: the transaction ends.
        self._savepoints_in_doubt = False
        self._query_returns: list[int] = []  # returns that follow an approved Query
        self._unsynced = False  # extended-protocol messages forwarded since the last Sync
        #: A refusal failed this batch on the server, which skips the rest up to Sync: the
        #: rest goes on unexamined (nothing in it will run, so nothing is worth holding).
        self._failed_batch = False
        # Refusals are Executes of portals named with this unguessable prefix and a
        # sequence number; the server's "does not exist" error names the portal.
        self._refusal_prefix = f"airlock refused {secrets.token_hex(8)} "
        self._refusal_pattern = re.compile(re.escape(self._refusal_prefix) + r"(\d+)")
        self._refusal_seq = 0
        self._refusals: dict[int, bytes] = {}  # sequence number -> our error for it
        self.held: bytes | None = None
        #: A Query of the gateway's own that asks the server something (`probe`): its unit,
        #: the DataRows answering it, and whether it failed; `on_probed` hears its end.
        self._probe_unit = -1
        self.probe_rows: list[bytes] = []
        self.probe_failed = False
        self.on_probed: Callable[[], None] | None = None
        self.terminated = False
        #: The server sent a FATAL or PANIC error: it is about to close, and said why.
        self.server_fatal = False
        self.server_parameters: dict[str, str] = {}

    @property
    def between_server_messages(self) -> bool:
        """No server message has been relayed in part: a message of the gateway's own
        written to the client now would not split one."""
        return self._server.between_messages

    @property
    def busy(self) -> bool:
        """The server is still working on something the client sent."""
        return self._unsynced or self._owed > 0

    # --- events

    def client_data(self, raw: bytes, done: int | None = None) -> list[Action]:
        """Client bytes in, actions out. `done`: what `fast_forward(raw)` returned, when
        the caller already ran it (those bytes are noted, and sent by these actions)."""
        if done is None:
            done = self.fast_forward(raw)
        if done == len(raw):
            return [SendToServer(raw)] if raw else []
        actions: list[Action] = [SendToServer(raw[:done])] if done else []
        if self.terminated:
            return actions
        self._client.feed(raw[done:] if done else raw)
        self._client_idle = False
        if self.held is None:
            actions += self._take_client_messages()
        self._update_idle()
        return actions

    def _update_idle(self) -> None:
        self._client_idle = (
            self.held is None
            and not self.terminated
            and not self._failed_batch
            and not self.role_in_doubt
            and not self._savepoints_in_doubt
            and not self._client.buffered
        )

    def fast_forward(self, raw: bytes) -> int:
        """The fast path: how many bytes at the start of raw are whole messages that go
        to the server as they came, already noted (by the relay and the gate).

        Most reads from a client are exactly one or a few whole messages, none of them
        special: the caller sends them on as they are, without copying them into the
        framer. The first message that is partial, special (Terminate, FunctionCall, a
        header `frame_at` refuses) or not admitted by the gate ends the prefix;
        `client_data` frames the rest with the MessageFramer, which reads headers with the
        same `frame_at`, so both find the same messages (tests/protocols/postgres/
        test_fast_path.py holds them to that). The prefix is final: the messages in it are
        never looked at again, so the gate's bookkeeping happens exactly once per message.
        """
        if not self._client_idle:
            return 0
        size = len(raw)
        pos = 0
        gate = self._gate
        max_bytes = self._max_message_bytes
        flags_of = _FRONTEND_FLAGS
        while True:
            # Framed as MessageFramer frames it (the same frame_at, the same cap): a
            # message not all in this read, or one the framer would refuse, is left to it.
            end = frame_at(raw, pos, flags_of, max_bytes)
            if end < 0 or end > size:
                break
            kind = raw[pos]
            flags = flags_of[kind]
            if (
                not flags & _PLAIN
                or (kind == _QUERY and self._unsynced)
                or (gate is not None and flags & _GATE and gate.admit(kind, raw, pos, end) != 1)
            ):
                break
            # _note_forwarded, inlined: this runs for nearly every message.
            if flags & _OPENS_BATCH:
                self._unsynced = True
                self._unit_messages += 1
            elif flags & _ENDS_BATCH:
                self._unsynced = False
                self._owed += 1
                self._units_sent += 1
                self._unit_messages = 0
                if gate is not None:
                    gate.unit_sent()
            pos = end
        return pos

    def release(
        self, *, forward: bool, error: AirlockError | None = None, elevate: bool = False
    ) -> list[Action]:
        """Decide the held message: forward it (under the write role when `elevate` and the
        target has roles), or refuse it with `error`."""
        held = self.held
        if held is None:
            raise RuntimeError("no message is held")
        self.held = None
        actions: list[Action] = []
        if forward and elevate and self._roles is not None:
            actions.append(SendToServer(self._elevated(held)))
        elif forward:
            self._note_forwarded(held[0])
            actions.append(SendToServer(held + self._trailing(held[0])))
        else:
            assert error is not None
            actions += self._refuse(held, error)
        actions += self._take_client_messages()
        self._update_idle()
        return actions

    def server_data(self, raw: bytes) -> bytes:
        """Server bytes in; the bytes to send the client out (the server never gets a reply
        from us). Raises ProtocolViolation when the server is out of step."""
        server = self._server
        framed = server.feed(raw)
        count = server.marked
        if not count:
            return framed
        marks = server.marks
        data = framed  # its slices are made straight from the buffer when compiled
        # Inspected messages are relayed as they are, except a refusal's error, which is
        # swapped for ours: `framed` is cut only there.
        swaps: list[tuple[int, int, bytes]] | None = None
        i = 0
        own_answers = bool(self._own_units) or bool(self._runs)
        counting = self._roles is not None
        while i < count:
            kind, start, end = marks[i], marks[i + 1], marks[i + 2]
            i += 3
            if own_answers:
                if self._own_answer(framed, kind, start, end):
                    if swaps is None:
                        swaps = []
                    swaps.append((start, end, b""))  # answers the gateway's own message
                    continue
            elif counting and kind in _FINAL:
                self._answered += 1
            if not self._looked_at[kind]:
                continue  # framed only to tell whose answer it is
            if kind == _Z:
                if self._server_ready(framed, start, end):
                    if swaps is None:
                        swaps = []
                    swaps.append((start, end, b""))  # our own Sync's: not the client's
            elif kind == _E:
                if self._gate is not None:
                    self._gate.failed()
                error = m.decode_backend(framed[start:end])
                assert isinstance(error, m.ErrorResponse)
                if error.severity in ("FATAL", "PANIC"):
                    self.server_fatal = True
                if self._refusals and error.code == _UNDEFINED_CURSOR:
                    ours = self._refusal_error(error.message)
                    if ours is not None:
                        if swaps is None:
                            swaps = []
                        swaps.append((start, end, ours))
                        swapped = m.decode_backend(ours)
                        assert isinstance(swapped, m.ErrorResponse)
                        error = swapped
                if self._results is not None:
                    self._results.result(None, error)
            elif kind == _D:
                assert self._results is not None
                self._results.row(framed, start, end)
            elif kind == _C:
                tag = data[start + 5 : end - 1].decode("utf-8", "replace")
                if self.chain is not None:
                    self.chain.result_tag(tag)
                else:
                    assert self._results is not None
                    self._results.result(tag, None)
            elif kind == _S:
                status = m.decode_backend(framed[start:end])
                assert isinstance(status, m.ParameterStatus)
                self.server_parameters[status.name] = status.value
                check_lexer_assumption(status.name, status.value)
            elif kind == _T:
                assert self._gate is not None
                self._gate.described(m.decode_parameter_description(framed[start:end]))
            elif kind in (_PARSE_COMPLETE, _BIND_COMPLETE, _CLOSE_COMPLETE):
                assert self._gate is not None
                self._gate.answered(kind)
            else:  # BackendKeyData or Authentication* after startup: never relayed
                raise ProtocolViolation("server sent a startup message mid-session")
        if swaps is None:
            return framed
        pieces: list[bytes] = []
        cut = 0
        for start, end, replacement in swaps:
            pieces += (framed[cut:start], replacement)
            cut = end
        pieces.append(framed[cut:])
        return b"".join(pieces)

    # --- internals

    def _take_client_messages(self) -> list[Action]:
        forward: list[bytes] = []
        actions: list[Action] = []
        gate = self._gate

        def flush() -> None:
            if forward:
                actions.append(SendToServer(b"".join(forward)))
                forward.clear()

        while (message := self._client.next_message()) is not None:
            kind = message[0]
            if kind == _TERMINATE:
                forward.append(message)
                self.terminated = True
                flush()
                actions.append(EndSession("client terminated the session"))
                return actions
            if kind == _FUNCTION_CALL:
                flush()
                actions += self._refuse(
                    message,
                    FeatureNotSupported(
                        "the FunctionCall message (fast-path function call) is not allowed "
                        "through the gateway",
                        hint="call the function in a SQL statement",
                    ),
                )
                continue
            if self._failed_batch and kind != _SYNC:
                forward.append(message)  # the server skips it, unseen by the gate
                continue
            if kind == _QUERY and self._unsynced:
                # asyncpg sends Parse, Describe, Flush, then a simple Query. Had the batch
                # failed, the server would skip the Query unanswered; a Sync of ours first
                # ends the batch as the Query would have, and its ReadyForQuery is not
                # relayed: the Query is then judged, and run, in a clean state. (The rest
                # of that unit's answers are the client's: its batch's.)
                self._own_readies.append(self._units_sent)
                self._note_forwarded(_SYNC)
                forward.append(_SYNC_MESSAGE)
            if (
                gate is not None
                and kind in _GATED
                and gate.admit(kind, message, 0, len(message)) != ADMIT
            ):
                flush()
                self.held = message
                actions.append(HoldMessage(message))
                return actions
            self._note_forwarded(kind)
            forward.append(message)
            if self.role_in_doubt or self._savepoints_in_doubt:
                forward.append(self._trailing(kind))
        flush()
        return actions

    def _note_forwarded(self, kind: int) -> None:
        if kind in _EXTENDED:
            self._unsynced = True
            self._unit_messages += 1
        elif kind in (_QUERY, _SYNC):
            self._unsynced = False
            self._failed_batch = False
            self._unit_sent()

    def _unit_sent(self) -> None:
        """A Sync or simple Query went to the server: it owes one ReadyForQuery more."""
        self._owed += 1
        self._units_sent += 1
        self._unit_messages = 0
        if self._gate is not None:
            self._gate.unit_sent()

    def _refuse(self, message: bytes, error: AirlockError) -> list[Action]:
        """Make the server fail in the message's place (see the module docstring)."""
        kind = message[0]
        if kind in _EXTENDED:
            # In its batch, the failing Execute stands in for the message; the server
            # skips the rest up to the client's Sync, as after any error.
            self._unsynced = True
            self._failed_batch = True
            return [SendToServer(self._refusal_execute(error))]
        if kind == _SYNC:
            raise RuntimeError("Sync is never held")
        if self._unsynced:
            # A Query or FunctionCall between Parse/Bind/Execute and their Sync: no
            # server accepts that, and no reply order would be right.
            return [
                EndSession(
                    "message out of order inside an extended-protocol batch",
                    ProtocolViolation("Query or FunctionCall before Sync"),
                )
            ]
        self._unit_sent()
        return [SendToServer(self._refusal_execute(error) + m.Sync().raw)]

    def _refusal_execute(self, error: AirlockError) -> bytes:
        self._refusal_seq += 1
        self._refusals[self._refusal_seq] = error_message(error, fatal=False)
        portal = f"{self._refusal_prefix}{self._refusal_seq}"
        return m.frame(b"E", m.cstring(portal) + b"\0\0\0\0")

    def _refusal_error(self, server_message: str) -> bytes | None:
        """Our error for the refusal the server's message names, if it names one."""
        found = self._refusal_pattern.search(server_message)
        if found is None:
            return None
        seq = int(found.group(1))
        ours = self._refusals.pop(seq, None)
        # The server answers in order: refusals before this one were answered or skipped.
        for older in [n for n in self._refusals if n < seq]:
            del self._refusals[older]
        return ours

    def _server_ready(self, framed: bytes, start: int, end: int) -> bool:
        """A ReadyForQuery at framed[start:end]; True when it answers our own unit."""
        if not self._owed:
            raise ProtocolViolation("server sent an unrequested ReadyForQuery")
        unit = self._units_sent - self._owed
        own = False
        if self._own_units and self._own_units[0] == unit:
            del self._own_units[0]
            own = True
        elif self._own_readies and self._own_readies[0] == unit:
            del self._own_readies[0]  # our Sync's, ending the client's batch
            own = True
        self._owed -= 1
        status = chr(framed[start + 5]) if end - start == 6 else ""
        if status not in ("I", "T", "E"):
            raise ProtocolViolation("malformed ReadyForQuery from server")
        self.transaction_status = status
        if self._gate is not None:
            self._gate.ready(status)
        if status == "I":
            self._savepoints_in_doubt = False  # the transaction, and its savepoints, are over
        if self._switchbacks or self._runs:
            self._unit_answered(unit, status)
        self._answered = 0
        self._failed_at = -1
        if not self._own_units and not self._runs:
            self._server.inspect_all(False)
        return own

    def _own_answer(self, framed: bytes, kind: int, start: int, end: int) -> bool:
        """While the gateway's own messages are answered: is this message an answer to
        one of them (not to be relayed)? Their side effects happen here."""
        unit = self._units_sent - self._owed  # the unit the server is answering
        if self._own_units and self._own_units[0] == unit:
            if unit == self._probe_unit:
                if kind == _D:
                    self.probe_rows.append(framed[start:end])
                elif kind == _E:
                    self.probe_failed = True
            if kind == _Z:
                self._server_ready(framed, start, end)
                if unit == self._probe_unit:
                    self._probe_unit = -1
                    if self.on_probed is not None:
                        probed, self.on_probed = self.on_probed, None
                        probed()
            elif kind == _E:
                self._failed_at = self._answered
                if self._gate is not None:
                    self._gate.failed()
                error = m.decode_backend(framed[start:end])
                if isinstance(error, m.ErrorResponse) and error.severity in ("FATAL", "PANIC"):
                    self.server_fatal = True
            elif kind == _S:
                status = m.decode_backend(framed[start:end])
                assert isinstance(status, m.ParameterStatus)
                self.server_parameters[status.name] = status.value
                check_lexer_assumption(status.name, status.value)
            return True
        if not self._runs or self._runs[0][0] != unit:
            return False
        position = self._answered
        if kind == _E:
            self._failed_at = position  # relayed: it stands for the client's skipped message
            return False
        if kind == _Z:
            return False  # the client's Sync's
        if kind in _FINAL:
            self._answered += 1
        for run_unit, first, run_end, _switchback in self._runs:
            if run_unit == unit and first <= position < run_end:
                return True
        return False

    # --- asking the server

    def probe(self, sql: str) -> bytes:
        """A simple Query of the gateway's own, to send while the server is idle (nothing
        owed, no batch open) and a client message is held: its answers never reach the
        client. Its DataRows collect in `probe_rows` (`probe_failed` when it failed), and
        `on_probed` is called once its ReadyForQuery arrives."""
        if self.busy or self.held is None or self._probe_unit >= 0:
            raise RuntimeError("the server is not idle between the client's messages")
        self.probe_rows = []
        self.probe_failed = False
        self._probe_unit = self._units_sent
        self._own_unit(switchback=False)
        return m.Query.build(sql).raw

    # --- defence in depth: the write role for what the gate let through

    def _own_unit(self, *, switchback: bool) -> None:
        """The gateway sends a unit of its own (a Sync or a Query) now."""
        self._own_units.append(self._units_sent)
        if switchback:
            self._switchbacks.append(self._units_sent)
        self._server.inspect_all(True)
        self._unit_sent()

    def _elevated(self, held: bytes) -> bytes:
        """The held message, between taking the write role and returning to the read one.

        A simple Query gets Queries of ours around it, and the client's next message waits
        until the server has answered them (the Query may have made a savepoint under the
        write role). An Execute, inside its batch, gets runs of ours (Parse, Bind, Execute,
        Close, Close of a SET ROLE) around it: should anything fail, the server skips the
        rest of the batch and rolls its transaction back, SET ROLE included.
        """
        assert self._roles is not None
        write_run, read_run, write_query, _ = self._roles
        if held[0] == _QUERY:
            self._own_unit(switchback=False)
            self._note_forwarded(_QUERY)
            out = write_query + held + self._return_to_read_role()
            self._query_returns.append(self._units_sent - 1)
            if self._gate is not None:
                self._gate.wait_after(self._units_sent - 1)
            return out
        first = self._unit_messages
        unit = self._units_sent
        self._runs.append((unit, first, first + _RUN_LENGTH, False))
        self._runs.append((unit, first + _RUN_LENGTH + 1, first + 2 * _RUN_LENGTH + 1, True))
        self._note_forwarded(held[0])
        self._unit_messages += 2 * _RUN_LENGTH
        self._server.inspect_all(True)
        return write_run + held + read_run

    def _return_to_read_role(self) -> bytes:
        assert self._roles is not None
        self._own_unit(switchback=True)
        return self._roles[3]

    def _trailing(self, kind: int) -> bytes:
        """What follows a client message while the read role is in doubt: a return of
        ours after each unit (Query, Sync), and inside a batch after each Execute."""
        if not (self.role_in_doubt or self._savepoints_in_doubt):
            return b""
        if kind in (_QUERY, _SYNC):
            return self._return_to_read_role()
        if kind == _EXECUTE:
            assert self._roles is not None
            first = self._unit_messages
            self._runs.append((self._units_sent, first, first + _RUN_LENGTH, True))
            self._unit_messages += _RUN_LENGTH
            self._server.inspect_all(True)
            return self._roles[1]
        return b""

    def _unit_answered(self, unit: int, status: str) -> None:
        """The server finished `unit`: did the session return to its read role?"""
        returned: bool | None = None  # None: the unit had no return of ours
        if self._switchbacks and self._switchbacks[0] == unit:
            del self._switchbacks[0]
            returned = self._failed_at < 0
            if self._query_returns and self._query_returns[0] == unit:
                del self._query_returns[0]
                if status != "I":
                    self._savepoints_in_doubt = True
                    self._client_idle = False
        while self._runs and self._runs[0][0] == unit:
            _unit, _first, end, switchback = self._runs.pop(0)
            if switchback:
                # Failed before it ran: the transaction's rollback undid the write role too,
                # once the transaction is over.
                returned = self._failed_at < 0 or self._failed_at >= end or status == "I"
        if returned is None:
            return
        if returned:
            self.role_in_doubt = False
        elif status == "E":
            # A failed transaction: whatever ends it (ROLLBACK, or ROLLBACK TO a savepoint
            # made under the write role) is followed by another return of ours.
            self.role_in_doubt = True
            self._client_idle = False  # the client's messages go by the slow path meanwhile
        else:
            raise RoleNotRestored(
                "the gateway could not return the upstream session to the target's read role"
            )
