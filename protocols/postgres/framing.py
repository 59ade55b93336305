"""Incremental framing of PostgreSQL byte streams.

Bytes go in with `feed`; whole messages come out of `next_message`, which
returns None when more bytes are needed. Lengths are checked against a cap
before anything is buffered, so a peer cannot make the gateway allocate what it
announces. https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS

`BackendRelay` is the relay's fast path for server output: it finds message
boundaries without copying message bodies, passes the bodies of uninteresting
messages (DataRow, RowDescription, CopyData, ...) through as they arrive, and
hands back whole the few messages the gateway must look at.
"""

from __future__ import annotations

import struct

from protocols.errors import MessageTooLarge, ProtocolViolation

#: PostgreSQL itself refuses startup packets above this size.
MAX_STARTUP_BYTES = 10_000
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_TLS_HANDSHAKE = 0x16

_LENGTH = struct.Struct("!i")
_HEADER = struct.Struct("!Bi")


class StartupFramer:
    """Frames the untyped messages that open a connection (SSLRequest, StartupMessage, ...)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, raw: bytes) -> None:
        self._buffer += raw

    def next_message(self) -> bytes | None:
        buffer = self._buffer
        if buffer and buffer[0] == _TLS_HANDSHAKE:
            raise ProtocolViolation(
                "direct TLS (sslnegotiation=direct) is not supported; use sslmode"
            )
        if len(buffer) < 4:
            return None
        (length,) = _LENGTH.unpack_from(buffer)
        if length < 8 or length > MAX_STARTUP_BYTES:
            raise ProtocolViolation(f"invalid startup packet length {length}")
        if len(buffer) < length:
            return None
        raw = bytes(buffer[:length])
        del buffer[:length]
        return raw

    def take_rest(self) -> bytes:
        """Bytes fed beyond the last message (a client that did not wait for our answer)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest


class MessageFramer:
    """Frames typed messages (type byte, int32 length) and checks the type is allowed."""

    __slots__ = ("_allowed", "_buffer", "_max_bytes", "_pos")

    def __init__(
        self, allowed_types: frozenset[int], max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ):
        self._allowed = allowed_types
        self._max_bytes = max_message_bytes
        self._buffer = bytearray()
        self._pos = 0

    def feed(self, raw: bytes) -> None:
        if self._pos:
            # Compact lazily: only when new bytes arrive, never per message.
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += raw

    def next_message(self) -> bytes | None:
        buffer = self._buffer
        pos = self._pos
        if len(buffer) - pos < 5:
            return None
        kind, length = _HEADER.unpack_from(buffer, pos)
        if kind not in self._allowed:
            raise ProtocolViolation(f"unexpected message type {bytes([kind])!r}")
        if length < 4:
            raise ProtocolViolation(f"invalid message length {length}")
        if length + 1 > self._max_bytes:
            raise MessageTooLarge(
                f"message of {length + 1} bytes exceeds the {self._max_bytes}-byte cap"
            )
        end = pos + 1 + length
        if len(buffer) < end:
            return None
        raw = bytes(buffer[pos:end])
        self._pos = end
        return raw

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._pos

    def take_buffered(self) -> bytes:
        """Every byte not yet returned as a message, for a new owner of the stream."""
        rest = bytes(self._buffer[self._pos :])
        self._buffer.clear()
        self._pos = 0
        return rest


class BackendRelay:
    """Finds message boundaries in server output without copying message bodies.

    `feed(raw)` returns the bytes that may be passed on now, and leaves in `inspected`
    three ints for each whole message of an inspected type inside them, type, start
    and end, for the caller to look at before the next feed. (One list, refilled by
    each feed: on the hot path, no tuple or list is made per read.)
    Bodies of other messages (DataRow, CopyData, ...) pass as they arrive, even
    before their message is complete, so a large row is never buffered whole.
    What is held back for the next feed: a header not yet complete, and an
    inspected message not yet complete. So nothing unframed is passed on.
    """

    __slots__ = (
        "_all_types",
        "_held",
        "_max_inspected",
        "_remaining",
        "_types",
        "_usual_types",
        "inspected",
    )

    def __init__(
        self,
        valid_types: frozenset[int],
        inspect_types: frozenset[int],
        max_inspected_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ):
        # One lookup per message on the hot path: 0 invalid, 1 pass through, 2 inspect.
        self._types = self._usual_types = bytes(
            (2 if t in inspect_types else 1) if t in valid_types else 0 for t in range(256)
        )
        self._all_types = bytes(2 if t in valid_types else 0 for t in range(256))
        self._max_inspected = max_inspected_bytes
        self._remaining = 0  # body bytes of a passed-through message still to come
        self._held = b""  # an incomplete header, or an incomplete inspected message
        self.inspected: list[int] = []

    @property
    def between_messages(self) -> bool:
        """No message has been passed on in part: bytes sent now would not split one."""
        return self._remaining == 0

    def feed(self, raw: bytes) -> bytes:
        inspected = self.inspected
        if inspected:
            inspected.clear()
        if self._held:
            raw = self._held + raw
            self._held = b""
        size = len(raw)
        pos = 0
        if self._remaining:
            if self._remaining >= size:
                self._remaining -= size
                return raw
            pos = self._remaining
            self._remaining = 0
        types = self._types
        while pos < size:
            if size - pos < 5:
                self._held = raw[pos:]
                return raw[:pos]
            # The header by hand: four shifts in C when compiled. The length is signed.
            kind = raw[pos]
            length = (
                (raw[pos + 1] << 24) | (raw[pos + 2] << 16) | (raw[pos + 3] << 8) | raw[pos + 4]
            )
            if length >= 0x80000000:
                length -= 0x100000000
            what = types[kind]
            if not what or length < 4:
                raise ProtocolViolation(f"malformed server message (type {kind}, length {length})")
            end = pos + 1 + length
            if what == 2:
                if length + 1 > self._max_inspected:
                    raise MessageTooLarge(f"server message of {length + 1} bytes exceeds the cap")
                if end > size:
                    self._held = raw[pos:]
                    return raw[:pos]
                inspected.append(kind)
                inspected.append(pos)
                inspected.append(end)
            elif end > size:
                self._remaining = end - size
                return raw
            pos = end
        return raw

    def inspect_all(self, every: bool) -> None:
        """Inspect every message from the next one framed on (True), or only the usual
        types again (False)."""
        self._types = self._all_types if every else self._usual_types

    @property
    def at_boundary(self) -> bool:
        """True when no message is partly received."""
        return not self._remaining and not self._held
