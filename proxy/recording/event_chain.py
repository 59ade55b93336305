"""Transcript events as bytes, in pure Python: the fallback of event_chain.pyx.

setup.py compiles event_chain.pyx (the same API in C, linked with OpenSSL's libcrypto)
into an extension of this module's name, which Python imports before this file; where
nothing was compiled (no C compiler, or AIRLOCK_PURE=1 at install), this file is the
module. Both write the same bytes for the same calls, clock readings and sequence:
tests/proxy/test_event_chain.py holds each to msgpack and hashlib, and the two to each
other, so a transcript written by either verifies under either.

An event is the msgpack map {"seq", "ts", "kind", "data", "prev"} (proxy/recording/format.py
describes the format), written as msgpack-python's Packer (use_bin_type=True) packs it,
with its `data` packed by the caller (`append`) or from the fields (`statement`,
`result_tag`). "prev" is the hex SHA-256 of the event before (64 zeros for the first).

The C chain packs a record when it is recorded and hashes it later (`hash_pending`); here
a record is hashed as it is recorded, which gives the same links, and `hash_pending` has
nothing to do. Events are recorded from one thread (the session's event loop), while
`take` and `put_back` may run in another: a lock keeps each call whole, as the GIL does
for the C methods.
"""

from __future__ import annotations

import hashlib
import operator
import struct
import threading
from collections.abc import Callable

_ZERO_HASH = b"0" * 64
_INT64 = (-(2**63), 2**63 - 1)
_double = struct.Struct(">Bd").pack


def _text(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    return value.encode("utf-8")  # surrogates: UnicodeEncodeError, as in C


def _int64(value: object) -> int:
    number = operator.index(value)  # type: ignore[arg-type]
    if not _INT64[0] <= number <= _INT64[1]:
        raise OverflowError("value too large to convert to int64_t")
    return number


def _str_header(size: int) -> bytes:
    if size < 32:
        return bytes((0xA0 | size,))
    if size <= 0xFF:
        return bytes((0xD9, size))
    if size <= 0xFFFF:
        return b"\xda" + size.to_bytes(2, "big")
    return b"\xdb" + size.to_bytes(4, "big")


def _str(utf8: bytes) -> bytes:
    return _str_header(len(utf8)) + utf8


def _bin(raw: bytes) -> bytes:
    size = len(raw)
    if size <= 0xFF:
        return bytes((0xC4, size)) + raw
    if size <= 0xFFFF:
        return b"\xc5" + size.to_bytes(2, "big") + raw
    return b"\xc6" + size.to_bytes(4, "big") + raw


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x90 | count,))
    if count <= 0xFFFF:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _int(value: int) -> bytes:
    """msgpack-python's choice: the shortest form, unsigned forms for values >= 0."""
    if value >= 0:
        if value < 128:
            return bytes((value,))
        for code, size in ((0xCC, 1), (0xCD, 2), (0xCE, 4)):
            if value < 1 << (8 * size):
                return bytes((code,)) + value.to_bytes(size, "big")
        return b"\xcf" + value.to_bytes(8, "big")
    if value >= -32:
        return bytes((value & 0xFF,))
    for code, size in ((0xD0, 1), (0xD1, 2), (0xD2, 4)):
        if value >= -(1 << (8 * size - 1)):
            return bytes((code,)) + value.to_bytes(size, "big", signed=True)
    return b"\xd3" + value.to_bytes(8, "big", signed=True)


_STATEMENT = b"\xa4kind" + _str(b"statement") + b"\xa4data"
_RESULT = b"\xa4kind" + _str(b"result") + b"\xa4data"


class EventChain:
    """One transcript's chain: the next sequence number, the hash of the last event, and
    the records not yet taken for writing."""

    __slots__ = ("_clock", "_closed", "_lock", "_pending", "_prev", "_seq")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._seq = 0
        self._prev = _ZERO_HASH
        self._clock = clock
        self._pending = bytearray()
        self._closed = False
        self._lock = threading.Lock()

    @property
    def seq(self) -> int:
        """The next event's sequence number: how many events were recorded."""
        return self._seq

    @property
    def prev(self) -> str:
        """The hex SHA-256 of the last event's bytes (64 zeros before the first)."""
        return self._prev.decode("ascii")

    @property
    def has_pending(self) -> bool:
        return len(self._pending) > 0

    def take(self) -> bytes:
        """Every record not yet taken, oldest first, back to back (b"" when none)."""
        with self._lock:
            taken = bytes(self._pending)
            self._pending = bytearray()
        return taken

    def put_back(self, taken: bytes) -> None:
        """Records taken but not written: they go first again."""
        if not isinstance(taken, bytes):
            raise TypeError(f"taken must be bytes, not {type(taken).__name__}")
        with self._lock:
            self._pending[0:0] = taken

    def queue(self, raw: bytes) -> None:
        """A record outside the chain (the seal), after the events so far."""
        if not isinstance(raw, bytes):
            raise TypeError(f"raw must be bytes, not {type(raw).__name__}")
        with self._lock:
            self._pending += raw

    def close(self) -> None:
        """No more events: recording one is a bug, and raises."""
        self._closed = True

    def hash_pending(self) -> None:
        """Chain the records recorded since the last call: here each one was chained when
        it was recorded, so there is nothing left to do."""

    def append(self, kind: str, data: bytes, ts: float | None = None) -> None:
        """Record the next event, of `kind`, with `data` (a map, packed by msgpack), at `ts`
        (unix seconds; now if None)."""
        when = _seconds(self._clock() if ts is None else ts)
        kind_utf8 = _text(kind, "kind")
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        self._record(b"\xa4kind" + _str(kind_utf8) + b"\xa4data" + data, when)

    def statement(
        self,
        sql: str,
        statement_class: str,
        decision: str,
        bind: bytes | None = None,
        types: tuple[int, ...] = (),
    ) -> None:
        """Record a `statement` event {"sql", "class", "decision"}, plus {"bind", "types"}
        when `bind` (the raw PostgreSQL Bind message) is given, at the clock's time."""
        ts = _seconds(self._clock())
        fields = [
            b"\xa3sql" + _str(_text(sql, "sql")),
            b"\xa5class" + _str(_text(statement_class, "statement_class")),
            b"\xa8decision" + _str(_text(decision, "decision")),
        ]
        if bind is None:
            header = b"\x83"
        else:
            if not isinstance(bind, bytes):
                raise TypeError(f"bind must be bytes, not {type(bind).__name__}")
            if not isinstance(types, tuple):
                raise TypeError(f"types must be tuple, not {type(types).__name__}")
            header = b"\x85"
            fields.append(b"\xa4bind" + _bin(bind))
            oids = [_int(_int64(oid)) for oid in types]
            fields.append(b"\xa5types" + _array_header(len(oids)) + b"".join(oids))
        self._record(_STATEMENT + header + b"".join(fields), ts)

    def result_tag(self, tag: str) -> None:
        """Record a `result` event {"tag": tag}: a statement completed, at the clock's time."""
        ts = _seconds(self._clock())
        self._record(_RESULT + b"\x81\xa3tag" + _str(_text(tag, "tag")), ts)

    def _record(self, kind_and_data: bytes, ts: float) -> None:
        """The record around `kind_and_data` (the kind's and data's keys and values):
        chained after the last one, and pending."""
        with self._lock:
            if self._closed:
                raise RuntimeError("event recorded after the transcript was sealed")
            raw = b"".join(
                (
                    b"\x85\xa3seq",
                    _int(self._seq),
                    b"\xa2ts",
                    _double(0xCB, ts),
                    kind_and_data,
                    b"\xa4prev\xd9\x40",
                    self._prev,
                )
            )
            self._prev = hashlib.sha256(raw).hexdigest().encode("ascii")
            self._seq += 1
            self._pending += raw


def _seconds(ts: object) -> float:
    """ts as the C double it becomes there: a number, not text."""
    if isinstance(ts, str | bytes):
        raise TypeError(f"must be real number, not {type(ts).__name__}")
    return float(ts)  # type: ignore[arg-type]
