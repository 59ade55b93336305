"""The PostgreSQL relay as a state machine: events in, actions out, no I/O.

Client bytes are framed into whole messages; each is forwarded verbatim,
refused, or held before it reaches the server. Server bytes are framed by
`BackendRelay`, which passes result rows through without decoding them and
hands over only the messages the gateway must see.

Holding: a `hold` callback (the policy, from issue 3 on) may ask for any client
message to wait. The relay then emits `HoldMessage` and stops taking client
messages, which stay framed-but-unread in the framer (the I/O side stops
reading the socket too), while server output keeps flowing: results of earlier
statements are never buffered. `release` forwards or refuses the held message
and carries on with the ones behind it.

Refusing: the client must see exactly what a server would send.
- A simple Query (or FunctionCall) gets ErrorResponse then ReadyForQuery.
- An extended-protocol message gets ErrorResponse; every message after it up
  to Sync is dropped, as a server does after an error. At that Sync, if earlier
  messages of the batch reached the server, the Sync is forwarded and our error
  goes just before the server's ReadyForQuery (unless the server reported an
  error of its own in that batch); otherwise we answer ReadyForQuery ourselves.
Replies we make up must reach the client in the order it asked, after every
reply the server still owes for earlier messages: `_owed` is that order, one
entry per request that ends in ReadyForQuery (Query, Sync, FunctionCall).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from protocols.errors import AirlockError, FeatureNotSupported, ProtocolViolation
from protocols.postgres import messages as m
from protocols.postgres.framing import BackendRelay, MessageFramer

# --- actions


@dataclass(frozen=True, slots=True)
class SendToServer:
    raw: bytes


@dataclass(frozen=True, slots=True)
class SendToClient:
    raw: bytes


@dataclass(frozen=True, slots=True)
class HoldMessage:
    """This client message waits for a decision; call `PgRelay.release` with it."""

    raw: bytes


@dataclass(frozen=True, slots=True)
class EndSession:
    """Close both sides; `error` (if any) goes to the client first as FATAL."""

    reason: str
    error: AirlockError | None = None


Action = SendToServer | SendToClient | HoldMessage | EndSession

#: Decides whether a client message (type byte, raw message) must wait for a decision.
HoldPolicy = Callable[[int, bytes], bool]


@dataclass(slots=True)
class _ServerOwes:
    """The server owes a ReadyForQuery; `error` is ours to put just before it."""

    error: bytes | None = None


@dataclass(frozen=True, slots=True)
class _WeOwe:
    """A reply the gateway makes up, released in turn (ReadyForQuery added then)."""

    error: bytes


_Owed = _ServerOwes | _WeOwe

_Z, _S, _K, _R, _E = b"Z"[0], b"S"[0], b"K"[0], b"R"[0], b"E"[0]
_INSPECTED = frozenset((_Z, _S, _K, _R, _E))
# FunctionCallResponse answers only FunctionCall, and CopyBothResponse only replication:
# the gateway lets neither through, so a server sending them is out of step.
_BACKEND_TYPES = frozenset(m.BACKEND_TYPES) - frozenset(b"VW")
_FRONTEND_TYPES = frozenset(m.FRONTEND_TYPES)
_EXTENDED = frozenset(b"PBDECH")
_QUERY, _SYNC, _FUNCTION_CALL, _TERMINATE = b"Q"[0], b"S"[0], b"F"[0], b"X"[0]
#: Client messages that, unless a policy holds them, are forwarded with no more than
#: bookkeeping: everything but Terminate and FunctionCall.
_PLAIN_FORWARD = _FRONTEND_TYPES - {_TERMINATE, _FUNCTION_CALL}
_HEADER = struct.Struct("!Bi")


def error_message(error: AirlockError, *, fatal: bool | None = None) -> bytes:
    """The one place an AirlockError becomes a PostgreSQL ErrorResponse."""
    severity = "FATAL" if (error.fatal if fatal is None else fatal) else "ERROR"
    return m.ErrorResponse.build(
        severity, error.sqlstate, error.message, detail=error.detail, hint=error.hint
    ).raw


def forward_all(_kind: int, _raw: bytes) -> bool:
    """The hold policy that holds nothing."""
    return False


class PgRelay:
    def __init__(
        self,
        *,
        transaction_status: str = "I",
        max_message_bytes: int,
        hold: HoldPolicy = forward_all,
    ) -> None:
        self.transaction_status = transaction_status
        self._hold = hold
        self._client = MessageFramer(_FRONTEND_TYPES, max_message_bytes)
        self._max_message_bytes = max_message_bytes
        #: Nothing buffered, held or being discarded: the fast path may be taken.
        self._client_idle = True
        self._server = BackendRelay(_BACKEND_TYPES, _INSPECTED)
        self._owed: deque[_Owed] = deque()
        self._unsynced = False  # extended-protocol messages forwarded since the last Sync
        self._discarding: bytes | None = None  # our error, while dropping messages up to Sync
        self._server_erred = False  # the server sent an ErrorResponse since its last ReadyForQuery
        self.held: bytes | None = None
        self.terminated = False
        #: The server sent a FATAL or PANIC error: it is about to close, and said why.
        self.server_fatal = False
        self.server_parameters: dict[str, str] = {}

    @property
    def busy(self) -> bool:
        """The server is still working on something the client sent."""
        return self._unsynced or any(isinstance(entry, _ServerOwes) for entry in self._owed)

    # --- events

    def client_data(self, raw: bytes) -> list[Action]:
        if self.forwards_whole(raw):
            return [SendToServer(raw)]
        if self.terminated:
            return []
        self._client.feed(raw)
        self._client_idle = False
        if self.held is not None:
            return []  # framed later, once the held message is decided
        actions = self._take_client_messages()
        self._update_idle()
        return actions

    def _update_idle(self) -> None:
        self._client_idle = (
            self.held is None
            and self._discarding is None
            and not self.terminated
            and not self._client.buffered
        )

    def forwards_whole(self, raw: bytes) -> bool:
        """The fast path: True when raw is whole messages that are all simply forwarded.

        Most reads from a client are exactly one or a few whole messages, none of them
        special: they go on as they came (the caller sends raw to the server as it is),
        without being copied into the framer; only the bookkeeping is done. Anything
        else (a partial message, Terminate, FunctionCall, a malformed header, a policy
        that may hold messages, a message already held) leaves the state untouched and
        returns False, and `client_data` frames it.
        """
        if not self._client_idle or self._hold is not forward_all:
            return False
        size = len(raw)
        pos = 0
        unsynced = self._unsynced
        owed = 0
        max_bytes = self._max_message_bytes
        unpack = _HEADER.unpack_from
        while pos < size:
            if size - pos < 5:
                return False
            kind, length = unpack(raw, pos)
            if kind not in _PLAIN_FORWARD or length < 4 or length >= max_bytes:
                return False
            pos += 1 + length
            # _note_forwarded's bookkeeping, inlined and deferred: nothing changes
            # unless every message in raw qualifies.
            if kind in _EXTENDED:
                unsynced = True
            elif kind in (_QUERY, _SYNC):
                unsynced = False
                owed += 1
        if pos != size:
            return False
        self._unsynced = unsynced
        while owed:
            self._owed.append(_ServerOwes())
            owed -= 1
        return True

    def release(self, *, forward: bool, error: AirlockError | None = None) -> list[Action]:
        """Decide the held message: forward it, or refuse it with `error`."""
        held = self.held
        if held is None:
            raise RuntimeError("no message is held")
        self.held = None
        actions: list[Action] = []
        if forward:
            self._note_forwarded(held[0])
            actions.append(SendToServer(held))
        else:
            assert error is not None
            actions += self._refuse(held, error)
        actions += self._take_client_messages()
        self._update_idle()
        return actions

    def server_data(self, raw: bytes) -> bytes:
        """Server bytes in; the bytes to send the client out (the server never gets a reply
        from us). Raises ProtocolViolation when the server is out of step."""
        framed, inspected = self._server.feed(raw)
        if not inspected:
            return framed
        # Inspected messages are relayed as they are; what we add (a refusal's error and
        # ReadyForQuery) goes in at a ReadyForQuery's edges, so `framed` is only cut then.
        inserts: list[tuple[int, bytes]] = []
        for kind, start, end in inspected:
            if kind == _Z:
                before, after = self._server_ready(framed, start, end)
                if before:
                    inserts.append((start, before))
                if after:
                    inserts.append((end, after))
            elif kind == _E:
                error = m.decode_backend(framed[start:end])
                assert isinstance(error, m.ErrorResponse)
                if error.severity in ("FATAL", "PANIC"):
                    self.server_fatal = True
                self._server_erred = True
            elif kind == _S:
                status = m.decode_backend(framed[start:end])
                assert isinstance(status, m.ParameterStatus)
                self.server_parameters[status.name] = status.value
            else:  # BackendKeyData or Authentication* after startup: never relayed
                raise ProtocolViolation("server sent a startup message mid-session")
        if not inserts:
            return framed
        pieces: list[bytes] = []
        cut = 0
        for position, extra in inserts:
            pieces += (framed[cut:position], extra)
            cut = position
        pieces.append(framed[cut:])
        return b"".join(pieces)

    # --- internals

    def _take_client_messages(self) -> list[Action]:
        forward: list[bytes] = []
        actions: list[Action] = []

        def flush() -> None:
            if forward:
                actions.append(SendToServer(b"".join(forward)))
                forward.clear()

        while (message := self._client.next_message()) is not None:
            kind = message[0]
            if self._discarding is not None:
                if kind == _SYNC:
                    flush()
                    actions += self._end_discard(message)
                continue
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
            if self._hold(kind, message):
                flush()
                self.held = message
                actions.append(HoldMessage(message))
                return actions
            self._note_forwarded(kind)
            forward.append(message)
        flush()
        return actions

    def _note_forwarded(self, kind: int) -> None:
        if kind in _EXTENDED:
            self._unsynced = True
        elif kind in (_QUERY, _SYNC):
            self._unsynced = False
            self._owed.append(_ServerOwes())

    def _refuse(self, message: bytes, error: AirlockError) -> list[Action]:
        reply = error_message(error, fatal=False)
        kind = message[0]
        if kind in _EXTENDED:
            # As a server does after an error: drop everything up to the next Sync.
            self._discarding = reply
            return []
        if kind == _SYNC:
            self._discarding = reply
            return self._end_discard(message)
        if self._unsynced:
            # A Query or FunctionCall between Parse/Bind/Execute and their Sync: no
            # server accepts that, and no reply order would be right.
            return [
                EndSession(
                    "message out of order inside an extended-protocol batch",
                    ProtocolViolation("Query or FunctionCall before Sync"),
                )
            ]
        self._owed.append(_WeOwe(reply))
        return self._send_replies_due()

    def _end_discard(self, sync: bytes) -> list[Action]:
        reply = self._discarding
        assert reply is not None
        self._discarding = None
        if self._unsynced:
            # Earlier messages of this batch reached the server: let it finish them.
            self._unsynced = False
            self._owed.append(_ServerOwes(error=reply))
            return [SendToServer(sync)]
        self._owed.append(_WeOwe(reply))
        return self._send_replies_due()

    def _server_ready(self, framed: bytes, start: int, end: int) -> tuple[bytes, bytes]:
        """A ReadyForQuery at framed[start:end]: what goes just before it and just after it."""
        owed = self._owed
        entry = owed.popleft() if owed else None
        if type(entry) is not _ServerOwes:
            raise ProtocolViolation("server sent an unrequested ReadyForQuery")
        status = chr(framed[start + 5]) if end - start == 6 else ""
        if status not in ("I", "T", "E"):
            raise ProtocolViolation("malformed ReadyForQuery from server")
        before = b""
        if entry.error is not None and not self._server_erred:
            # The server's transaction did not see our error; the client's view of it is
            # the server's status (issue 3 decides what a refused write does to a transaction).
            before = entry.error
        self._server_erred = False
        self.transaction_status = status
        if owed and type(owed[0]) is _WeOwe:
            return before, self._replies_due()
        return before, b""

    def _send_replies_due(self) -> list[Action]:
        due = self._replies_due()
        return [SendToClient(due)] if due else []

    def _replies_due(self) -> bytes:
        """Our own replies whose turn has come (none while the server owes an earlier one)."""
        out: list[bytes] = []
        while self._owed and isinstance(self._owed[0], _WeOwe):
            entry = self._owed.popleft()
            assert isinstance(entry, _WeOwe)
            # The status is read now, not when the reply was made: earlier requests may
            # have changed it.
            out.append(entry.error + m.ReadyForQuery.build(self.transaction_status).raw)
        return b"".join(out)
