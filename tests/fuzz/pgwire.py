"""The fuzzer's side of the wire: extended-protocol messages as bytes, and a session that
pipelines them through the gateway and reads the replies back by their ReadyForQuery.

https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-EXT-QUERY

After an error inside an extended-query batch the server discards every message up to
the next Sync, a simple Query included: such a Query gets no ReadyForQuery. A batch
that holds a Query the server may have discarded is therefore read up to a fence (a
Sync, then an empty Query, which no step sends: its EmptyQueryResponse comes even in a
failed transaction) rather than by counting.
"""

from __future__ import annotations

import struct

from protocols.postgres import messages as m
from tests.support.rawpg import RawPg

SYNC = m.frame(b"S", b"")
FLUSH = m.frame(b"H", b"")
FENCE_SQL = ""


def parse(name: str, sql: str) -> bytes:
    return m.frame(b"P", m.cstring(name) + m.cstring(sql) + b"\0\0")


def bind(portal: str, statement: str, params: tuple[bytes | None, ...]) -> bytes:
    body = m.cstring(portal) + m.cstring(statement) + b"\0\0" + struct.pack("!h", len(params))
    for value in params:
        body += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    return m.frame(b"B", body + b"\0\0")


def describe(kind: str, name: str) -> bytes:
    return m.frame(b"D", kind.encode() + m.cstring(name))


def execute(portal: str, max_rows: int) -> bytes:
    return m.frame(b"E", m.cstring(portal) + struct.pack("!i", max_rows))


def close(kind: str, name: str) -> bytes:
    return m.frame(b"C", kind.encode() + m.cstring(name))


def query(sql: str) -> bytes:
    return m.Query.build(sql).raw


def data_row(message: m.BackendMessage) -> tuple[bytes | None, ...] | None:
    """A DataRow's values, or None for any other message."""
    if not isinstance(message, m.OtherBackendMessage) or message.raw[:1] != b"D":
        return None
    raw = message.raw
    (count,) = struct.unpack_from("!h", raw, 5)
    offset = 7
    values: list[bytes | None] = []
    for _ in range(count):
        (size,) = struct.unpack_from("!i", raw, offset)
        offset += 4
        if size < 0:
            values.append(None)
        else:
            values.append(raw[offset : offset + size])
            offset += size
    return tuple(values)


class SessionClosed(Exception):
    """The gateway closed the session (a refusal may do that): start another."""


class WireSession:
    """One client session through the gateway: an outbox of messages, sent in batches.

    `expected` counts the ReadyForQuery messages owed for what was sent; `uncertain`
    says some of them may never come (a Query the server may have discarded)."""

    def __init__(self, port: int, token: str, timeout_s: float) -> None:
        self.raw = RawPg(port, timeout_s=timeout_s)
        try:
            replies = self.raw.login(token, application_name="pgfuzz")
        except (OSError, AssertionError):
            self.raw.close()
            raise
        if not replies or not isinstance(replies[-1], m.ReadyForQuery):
            self.raw.close()
            raise SessionClosed(f"login failed: {replies!r}")
        self.local_port: int = self.raw.sock.getsockname()[1]
        self.outbox: list[bytes] = []
        self.expected = 0
        self.uncertain = False
        self.in_batch = False  # extended messages appended since the last Sync
        self.status = "I"
        self.last_error = ""

    def close(self) -> None:
        self.raw.close()

    def append(self, raw: bytes) -> None:
        kind = raw[:1]
        if kind == b"S":
            self.expected += 1
            self.in_batch = False
        elif kind == b"Q":
            if self.in_batch:
                self.uncertain = True
            else:
                self.expected += 1
        else:
            self.in_batch = True
        self.outbox.append(raw)

    def send(self) -> None:
        if self.outbox:
            raw, self.outbox = b"".join(self.outbox), []
            try:
                self.raw.send(raw)
            except OSError as error:
                raise SessionClosed(str(error)) from error

    def settle(self) -> list[m.BackendMessage]:
        """Send everything (closed by a Sync) and read every reply it is owed."""
        if self.in_batch:
            self.append(SYNC)
        fenced = self.uncertain
        if fenced:
            self.append(query(FENCE_SQL))
            self.expected -= 1  # the fence is counted below, not by RFQ
        self.send()
        replies: list[m.BackendMessage] = []
        fence_seen = False
        while fenced or self.expected > 0:
            message = self._read()
            replies.append(message)
            if isinstance(message, m.ErrorResponse):
                self.last_error = f"{message.code} {message.message}"
            if isinstance(message, m.OtherBackendMessage) and message.raw[:1] == b"I":
                fence_seen = True  # EmptyQueryResponse
            if isinstance(message, m.ReadyForQuery):
                self.status = message.status
                if fenced and fence_seen:
                    break  # the fence's own
                self.expected -= 1
        self.expected, self.uncertain = 0, False
        return replies

    def _read(self) -> m.BackendMessage:
        try:
            message = self.raw.read()
        except ConnectionResetError as error:
            raise SessionClosed(str(error)) from error
        # TimeoutError is not caught: a hang is a failure.
        if message is None:
            raise SessionClosed(f"closed after: {self.last_error or 'no error'}")
        return message
