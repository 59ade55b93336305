"""The PostgreSQL relay as a state machine: events in, actions out, no I/O.

Client bytes are framed into whole messages; each is forwarded verbatim,
refused, or (from issue 3 on) held before it reaches the server. Server bytes
are framed by `BackendRelay`, which passes result rows through without
decoding them and hands over only the messages the gateway must see.

Responses the gateway makes up itself (a refusal's ErrorResponse and
ReadyForQuery) must reach the client in the order the client asked, after
every reply the server still owes for earlier messages. `_owed` is that order:
one entry per request that ends in ReadyForQuery (Query, Sync), either owed by
the server or already made by the gateway.
"""

from __future__ import annotations

from collections import deque
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
class EndSession:
    """Close both sides; `error` (if any) goes to the client first as FATAL."""

    reason: str
    error: AirlockError | None = None


Action = SendToServer | SendToClient | EndSession

_UPSTREAM = None  # an `_owed` entry the server will answer

_Z, _S, _K, _R, _E = b"Z"[0], b"S"[0], b"K"[0], b"R"[0], b"E"[0]
_INSPECTED = frozenset((_Z, _S, _K, _R, _E))
_BACKEND_TYPES = frozenset(m.BACKEND_TYPES)
_FRONTEND_TYPES = frozenset(m.FRONTEND_TYPES)
_EXTENDED = frozenset(b"PBDECH")


def error_message(error: AirlockError, *, fatal: bool | None = None) -> bytes:
    """The one place an AirlockError becomes a PostgreSQL ErrorResponse."""
    severity = "FATAL" if (error.fatal if fatal is None else fatal) else "ERROR"
    return m.ErrorResponse.build(
        severity, error.sqlstate, error.message, detail=error.detail, hint=error.hint
    ).raw


class PgRelay:
    def __init__(self, *, transaction_status: str = "I", max_message_bytes: int) -> None:
        self.transaction_status = transaction_status
        self._client = MessageFramer(_FRONTEND_TYPES, max_message_bytes)
        self._server = BackendRelay(_BACKEND_TYPES, _INSPECTED)
        # None: the server owes a ReadyForQuery; bytes: our own reply, sent in turn.
        self._owed: deque[bytes | None] = deque()
        self._unsynced = False  # extended-protocol messages sent since the last Sync
        self.terminated = False
        #: The server sent a FATAL or PANIC error: it is about to close, and said why.
        self.server_fatal = False
        self.server_parameters: dict[str, str] = {}

    @property
    def busy(self) -> bool:
        """The server is still working on something the client sent."""
        return self._unsynced or any(entry is _UPSTREAM for entry in self._owed)

    # --- events

    def client_data(self, raw: bytes) -> list[Action]:
        if self.terminated:
            return []
        self._client.feed(raw)
        forward: list[bytes] = []
        actions: list[Action] = []
        while (message := self._client.next_message()) is not None:
            kind = message[0]
            if kind in _EXTENDED:
                self._unsynced = True
                forward.append(message)
            elif kind == 0x51 or kind == 0x53:  # Query, Sync: each ends in ReadyForQuery
                self._unsynced = False
                self._owed.append(_UPSTREAM)
                forward.append(message)
            elif kind == 0x46:  # FunctionCall: calls a function by OID, bypassing SQL
                if forward:
                    actions.append(SendToServer(b"".join(forward)))
                    forward = []
                actions.extend(
                    self._refuse(
                        FeatureNotSupported(
                            "the FunctionCall message (fast-path function call) is not allowed "
                            "through the gateway",
                            hint="call the function in a SQL statement",
                        )
                    )
                )
            elif kind == 0x58:  # Terminate
                forward.append(message)
                self.terminated = True
                break
            else:  # CopyData, CopyDone, CopyFail
                forward.append(message)
        if forward:
            actions.append(SendToServer(b"".join(forward) if len(forward) > 1 else forward[0]))
        if self.terminated:
            actions.append(EndSession("client terminated the session"))
        return actions

    def server_data(self, raw: bytes) -> list[Action]:
        chunks = self._server.feed(raw)
        if len(chunks) == 1 and isinstance(chunks[0], bytes):
            return [SendToClient(chunks[0])]
        out: list[bytes] = []
        actions: list[Action] = []
        for chunk in chunks:
            if isinstance(chunk, bytes):
                out.append(chunk)
                continue
            kind, message = chunk
            if kind == _Z:
                ready = m.decode_backend(message)
                assert isinstance(ready, m.ReadyForQuery)
                self.transaction_status = ready.status
                if not self._owed or self._owed[0] is not _UPSTREAM:
                    raise ProtocolViolation("server sent an unrequested ReadyForQuery")
                self._owed.popleft()
                out.append(message)
                out.extend(self._local_replies_due())
            elif kind == _E:
                error = m.decode_backend(message)
                assert isinstance(error, m.ErrorResponse)
                if error.severity in ("FATAL", "PANIC"):
                    self.server_fatal = True
                out.append(message)
            elif kind == _S:
                status = m.decode_backend(message)
                assert isinstance(status, m.ParameterStatus)
                self.server_parameters[status.name] = status.value
                out.append(message)
            else:  # BackendKeyData or Authentication* after startup: never relayed
                raise ProtocolViolation("server sent a startup message mid-session")
        if out:
            actions.append(SendToClient(b"".join(out)))
        return actions

    # --- internals

    def _refuse(self, error: AirlockError) -> list[Action]:
        """Answer a request ourselves: ErrorResponse then ReadyForQuery, in turn."""
        if self._unsynced:
            # Mid-pipeline the server is between Syncs; an injected ReadyForQuery
            # would desynchronise the client.
            return [
                EndSession(
                    "refused message inside an unsynced pipeline",
                    ProtocolViolation(
                        f"{error.message} (sent inside an extended-protocol pipeline)"
                    ),
                )
            ]
        reply = error_message(error, fatal=False)
        self._owed.append(reply)
        # The status is read when the reply is released, not now: earlier requests may change it.
        return (
            [SendToClient(b"".join(self._local_replies_due()))]
            if self._owed[0] is not _UPSTREAM
            else []
        )

    def _local_replies_due(self) -> list[bytes]:
        out: list[bytes] = []
        while self._owed and self._owed[0] is not _UPSTREAM:
            reply = self._owed.popleft()
            assert reply is not None
            out.append(reply + m.ReadyForQuery.build(self.transaction_status).raw)
        return out
