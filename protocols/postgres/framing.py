"""Incremental framing of PostgreSQL byte streams.

Bytes go in with `feed`; whole messages come out of `next_message`, which
returns None when more bytes are needed. Lengths are checked against a cap
before anything is buffered, so a peer cannot make the gateway allocate what it
announces. https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS

`frame_at` is the one place a typed message's header is read and checked: the
framers here call it, and so does the relay's fast path for client messages
(`PgRelay.fast_forward`), which frames whole messages inside a read without copying
them and leaves to `MessageFramer` whatever it does not take.

`BackendRelay` is the relay's fast path for server output: it finds message
boundaries without copying message bodies, passes the bodies of uninteresting
messages (DataRow, RowDescription, CopyData, ...) through as they arrive, and
hands back whole the few messages the gateway must look at.
"""

from __future__ import annotations

import struct
from array import array

from protocols.errors import MessageTooLarge, ProtocolViolation

#: PostgreSQL itself refuses startup packets above this size.
MAX_STARTUP_BYTES = 10_000
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_TLS_HANDSHAKE = 0x16

_LENGTH = struct.Struct("!i")

#: What `frame_at` answers instead of a message's end.
NEED_DATA = -1  # the 5-byte header is not all there yet
BAD_TYPE = -2
BAD_LENGTH = -3
TOO_LARGE = -4
#: A cap no message reaches (lengths are 31-bit): for messages passed on as they arrive.
UNCAPPED = 1 << 32


def frame_at(raw: bytes, pos: int, types: bytes, max_bytes: int) -> int:
    """Frame the typed message whose header starts at raw[pos]: the one reading of a
    message header (a type byte, then an int32 length that counts itself), for every
    framer here and for the relay's fast path.

    Answers where the message ends, pos + 1 + its length (beyond len(raw) while its body
    is still to come), or instead: NEED_DATA while fewer than 5 bytes are left; BAD_TYPE
    when `types` (a byte per message type, see `type_table`) is 0 for its type;
    BAD_LENGTH for a length below 4 (a negative one included); TOO_LARGE when the whole
    message would exceed `max_bytes`. It never raises and never copies: a caller that
    refuses the stream raises `framing_error(code, ...)`, a fast path hands the bytes to
    a framer that will.
    """
    if len(raw) - pos < 5:
        return NEED_DATA
    data = raw  # a C pointer when compiled: the check above bounds every index below
    flags = types
    if not flags[data[pos]]:
        return BAD_TYPE
    # The length is a signed int32, big-endian: its top byte carries the sign.
    top = data[pos + 1]
    if top >= 0x80:
        top -= 0x100
    length = top * 0x1000000 + (data[pos + 2] << 16) + (data[pos + 3] << 8) + data[pos + 4]
    if length < 4:
        return BAD_LENGTH
    if length >= max_bytes:  # length + 1 > max_bytes
        return TOO_LARGE
    return pos + 1 + length


def type_table(allowed_types: frozenset[int]) -> bytes:
    """`frame_at`'s table for a set of message types: 1 for each of them, 0 elsewhere."""
    return bytes(kind in allowed_types for kind in range(256))


def framing_error(
    code: int, raw: bytes, pos: int, max_bytes: int, peer: str = ""
) -> ProtocolViolation:
    """The error for a message `frame_at` refused with `code` (`peer`: whose, as "server ")."""
    if code == BAD_TYPE:
        return ProtocolViolation(f"unexpected {peer}message type {raw[pos : pos + 1]!r}")
    (length,) = _LENGTH.unpack_from(raw, pos + 1)
    if code == TOO_LARGE:
        return MessageTooLarge(
            f"{peer}message of {length + 1} bytes exceeds the {max_bytes}-byte cap"
        )
    return ProtocolViolation(f"invalid {peer}message length {length}")


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
    """Frames typed messages (type byte, int32 length) and checks the type is allowed.

    Bytes fed are kept as they came until a message needs them: a message that arrives
    whole in one read is returned as that read's bytes object (or a slice of it), and one
    that arrives in pieces is joined once, when its last piece is there.
    """

    __slots__ = ("_buffer", "_chunked", "_chunks", "_max_bytes", "_pos", "_types")

    def __init__(
        self, allowed_types: frozenset[int], max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ):
        self._types = type_table(allowed_types)
        self._max_bytes = max_message_bytes
        self._buffer = b""  # the bytes being framed, from _pos on
        self._pos = 0
        self._chunks: list[bytes] = []  # fed after those, not yet joined to them
        self._chunked = 0

    def feed(self, raw: bytes) -> None:
        if raw:
            self._chunks.append(raw)
            self._chunked += len(raw)

    def next_message(self) -> bytes | None:
        if not self._gather(5):
            return None
        buffer, pos = self._buffer, self._pos
        end = frame_at(buffer, pos, self._types, self._max_bytes)
        if end < 0:
            raise framing_error(end, buffer, pos, self._max_bytes)
        if end > len(buffer):
            if not self._gather(end - pos):
                return None
            buffer, end, pos = self._buffer, end - pos, 0
        self._pos = end
        return buffer[pos:end]

    def _gather(self, needed: int) -> bool:
        """At least `needed` bytes from _pos on in `_buffer`, if that many were fed."""
        have = len(self._buffer) - self._pos
        if have >= needed:
            return True
        if have + self._chunked < needed:
            return False
        chunks = self._chunks
        if have:
            chunks.insert(0, self._buffer[self._pos :])
        self._buffer = b"".join(chunks)  # one chunk alone is taken as it is, not copied
        self._pos = 0
        chunks.clear()
        self._chunked = 0
        return True

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._pos + self._chunked

    def take_buffered(self) -> bytes:
        """Every byte not yet returned as a message, for a new owner of the stream."""
        self._gather(self.buffered)
        rest = self._buffer[self._pos :]
        self._buffer = b""
        self._pos = 0
        return rest


class BackendRelay:
    """Finds message boundaries in server output without copying message bodies.

    `feed(raw)` returns the bytes that may be passed on now, and leaves in `marks`
    three ints for each whole message of an inspected type inside them, type, start
    and end (`marked` ints in all), for the caller to look at before the next feed.
    (One array of C integers, refilled by each feed: on the hot path, no list, tuple
    or Python int is made per read.)
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
        "marked",
        "marks",
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
        self.marks = array("q", bytes(8 * 48))
        self.marked = 0

    @property
    def between_messages(self) -> bool:
        """No message has been passed on in part: bytes sent now would not split one."""
        return self._remaining == 0

    def feed(self, raw: bytes) -> bytes:
        self.marked = 0
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
            end = frame_at(raw, pos, types, UNCAPPED)
            if end < 0:
                if end == NEED_DATA:
                    self._held = raw[pos:]
                    return raw[:pos]
                raise framing_error(end, raw, pos, UNCAPPED, "server ")
            kind = raw[pos]
            if types[kind] == 2:
                if end - pos > self._max_inspected:
                    raise MessageTooLarge(
                        f"server message of {end - pos} bytes exceeds the "
                        f"{self._max_inspected}-byte cap"
                    )
                if end > size:
                    self._held = raw[pos:]
                    return raw[:pos]
                marked = self.marked
                if marked + 3 > len(self.marks):
                    self._grow()
                self.marks[marked] = kind
                self.marks[marked + 1] = pos
                self.marks[marked + 2] = end
                self.marked = marked + 3
            elif end > size:
                self._remaining = end - size
                return raw
            pos = end
        return raw

    def _grow(self) -> None:
        marks = self.marks
        grown = array("q", bytes(16 * len(marks)))
        for i in range(self.marked):
            grown[i] = marks[i]
        self.marks = grown

    @property
    def inspected(self) -> list[int]:
        """The last feed's marks, as a list (for tests and debugging)."""
        return [self.marks[i] for i in range(self.marked)]

    def inspect_all(self, every: bool) -> None:
        """Inspect every message from the next one framed on (True), or only the usual
        types again (False)."""
        self._types = self._all_types if every else self._usual_types

    @property
    def at_boundary(self) -> bool:
        """True when no message is partly received."""
        return not self._remaining and not self._held
