"""MySQL/MariaDB packet framing and the protocol's basic data types, sans-I/O.

A packet is a 4-byte header (3-byte little-endian payload length, 1-byte
sequence id) and its payload. A payload of 0xFFFFFF bytes or more is split
into chunks of exactly 0xFFFFFF bytes, then a final shorter (possibly empty)
chunk, each with the next sequence id; `PacketReader` reassembles them, so what
the gateway classifies is always the whole logical payload.
https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html
https://mariadb.com/docs/server/reference/clientserver-protocol/0-packet
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from protocols.errors import MessageTooLarge, ProtocolViolation

#: Largest chunk payload; a chunk of exactly this size continues in the next one.
MAX_CHUNK = 0xFFFFFF
#: A common cap for one logical payload (MariaDB's default max_allowed_packet).
DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

_HEADER = struct.Struct("<I")  # low 3 bytes: length, high byte: sequence id
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)  # slots: compiled, a C struct (packets.pxd); Cython takes no slots=
class Packet:
    """One logical packet: its payload reassembled, and its exact wire bytes."""

    sequence_id: int  # of the first chunk
    last_sequence_id: int  # of the final chunk (the next packet uses this + 1)
    payload: bytes
    raw: bytes  # every chunk with its header, for verbatim forwarding
    #: Over the reader's cap, read and thrown away (payload and raw empty): the sender
    #: waits for an answer numbered after last_sequence_id (see `drain_oversized`).
    oversized: bool = False

    def __repr__(self) -> str:
        return (
            f"Packet(seq={self.sequence_id}..{self.last_sequence_id}, "
            f"{len(self.payload)} bytes, first={self.payload[:1].hex() or '-'})"
        )


def packet_end(raw: bytes, pos: int, size: int) -> int:
    """Where the packet at `raw[pos:]` ends, when `raw[pos:size]` holds all of it in one
    chunk; -1 when it does not (fewer than 4 bytes, not all of its payload, or a payload
    of 0xFFFFFF bytes, which goes on in the next chunk).

    The one place a packet header is read: `PacketReader` frames with it, and so do the
    relay's fast paths (`ResponseTracker.follow`, the MySQL relay's client side), which
    pass whole packets on without making them objects.
    """
    if size - pos < 4:
        return -1
    data = raw  # compiled, a const unsigned char * (packets.pxd): three loads, no objects
    length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
    end = pos + 4 + length
    if length == MAX_CHUNK or end > size:
        return -1
    return end


class PacketReader:
    """Incremental reassembly of logical packets from a byte stream.

    `feed` returns every logical packet completed by the new bytes and keeps the
    rest buffered; `next_packet` returns only the first and keeps everything after
    it (`take_rest`). Each chunk header is checked as soon as it arrives: a logical
    payload above `max_payload_bytes` or a continuation chunk whose sequence id
    is not the previous one + 1 (mod 256) raises before its bytes are buffered.
    """

    __slots__ = ("_buffer", "_drain", "_max", "_need", "_oversized_at", "_skip")

    def __init__(
        self, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, *, drain_oversized: bool = False
    ) -> None:
        """`drain_oversized`: a packet over the cap is read to its end and thrown away, and
        `feed` returns it as a Packet with `oversized` set (so the gateway can answer it
        with an error the client reads, in sequence); otherwise it raises MessageTooLarge."""
        if max_payload_bytes < 0:
            raise ValueError("max_payload_bytes must not be negative")
        self._max = max_payload_bytes
        self._drain = drain_oversized
        self._buffer = bytearray()
        # Buffered bytes needed before a scan can complete another packet: lets a
        # large packet arriving in many reads be appended without rescanning.
        self._need = 0
        self._oversized_at = -1  # where a scan found an oversized packet to drain
        self._skip: _Skip | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def take_rest(self) -> bytes:
        """Every byte not yet returned as a packet, for a new owner of the stream."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._need = 0
        return rest

    def feed(self, data: bytes) -> list[Packet]:
        return self._feed(data, 0)

    def next_packet(self, data: bytes) -> Packet | None:
        """`feed`, but at most one packet: whatever follows it stays buffered, unread (after
        a MySQL SSLRequest, the client's TLS handshake; after a split packet, the whole
        packets the relay's fast path takes)."""
        packets = self._feed(data, 1)
        return packets[0] if packets else None

    def _feed(self, data: bytes, most: int) -> list[Packet]:
        """Packets completed by `data`, at most `most` of them (0: all)."""
        if self._skip is not None:
            drained, data = self._skip.feed(data)
            if drained is None:
                return []
            self._skip = None
            if most == 1:
                self._buffer += data
                return [drained]
            return [drained, *self._feed(data, most)] if data else [drained]
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return []
            data = bytes(buffer)
            buffer.clear()
        packets, pos = self._scan(data, most)
        if self._oversized_at >= 0:
            return packets + self._start_draining(data[pos:], most)
        if pos < len(data):
            buffer += data[pos:] if pos else data
        return packets

    def _start_draining(self, rest: bytes, most: int) -> list[Packet]:
        """Throw away the oversized packet at the start of `rest`, chunk by chunk."""
        self._oversized_at = -1
        self._need = 0
        self._skip = _Skip()
        return self._feed(rest, most)

    def _oversized(self, length: int, limit: int, pos: int) -> None:
        if not self._drain:
            raise MessageTooLarge(f"packet of {length} bytes exceeds the {limit}-byte cap")
        self._oversized_at = pos

    def _scan(self, raw: bytes, most: int) -> tuple[list[Packet], int]:
        """Split whole packets (at most `most`, 0: all) off `raw`; return them and where the
        rest starts. Sets `_need`, relative to that start (the buffer's, from then on)."""
        packets: list[Packet] = []
        size = len(raw)
        limit = self._max
        pos = 0
        self._need = 0
        while not most or len(packets) < most:
            end = packet_end(raw, pos, size)
            if end >= 0:
                if end - pos - 4 > limit:
                    self._oversized(end - pos - 4, limit, pos)
                    break
                seq = raw[pos + 3]
                whole = raw if pos == 0 and end == size else raw[pos:end]
                packets.append(Packet(seq, seq, whole[4:], whole))
                pos = end
                continue
            # Not a whole one-chunk packet: the start of one, or a packet split in chunks.
            if size - pos < 4:
                self._need = 4 - (size - pos)
                break
            length = raw[pos] | raw[pos + 1] << 8 | raw[pos + 2] << 16
            if length == MAX_CHUNK:
                split = self._scan_chunks(raw, size, pos)
                if split is None:
                    break
                packets.append(split[0])
                pos = split[1]
                continue
            if length > limit:
                self._oversized(length, limit, pos)
            else:
                self._need = 4 + length
            break
        return packets, pos

    def _scan_chunks(self, raw: bytes, size: int, start: int) -> tuple[Packet, int] | None:
        """A packet split into chunks, from `start`; None (and `_need` set) if incomplete."""
        limit = self._max
        pos = start
        total = 0
        first_seq = seq = -1
        while True:
            if size - pos < 4:
                self._need = pos + 4 - start
                return None
            (header,) = _HEADER.unpack_from(raw, pos)
            length = header & MAX_CHUNK
            chunk_seq = header >> 24
            if first_seq < 0:
                first_seq = chunk_seq
            elif chunk_seq != (seq + 1) & 0xFF:
                raise ProtocolViolation(
                    f"continuation chunk has sequence id {chunk_seq}, expected {(seq + 1) & 0xFF}"
                )
            seq = chunk_seq
            total += length
            if total > limit:
                self._oversized(total, limit, start)
                return None
            end = pos + 4 + length
            if end > size:
                self._need = end - start
                return None
            pos = end
            if length < MAX_CHUNK:
                break
        whole = raw[start:pos]
        payload = bytearray()
        chunk = 0
        while chunk < len(whole):
            length = int.from_bytes(whole[chunk : chunk + 3], "little")
            payload += whole[chunk + 4 : chunk + 4 + length]
            chunk += 4 + length
        return Packet(first_seq, seq, bytes(payload), whole), pos


class _Skip:
    """Reading an oversized packet to its end without keeping it."""

    __slots__ = ("chunk_left", "first_seq", "header", "in_chunk", "last_chunk", "seq")

    def __init__(self) -> None:
        self.header = bytearray()
        self.chunk_left = 0
        self.in_chunk = False
        self.last_chunk = False
        self.first_seq = -1
        self.seq = -1

    def feed(self, data: bytes) -> tuple[Packet | None, bytes]:
        """(the drained packet once its last chunk ended, and the bytes after it)."""
        pos, size = 0, len(data)
        while pos < size or (self.in_chunk and not self.chunk_left):
            if not self.in_chunk:
                take = data[pos : pos + 4 - len(self.header)]
                self.header += take
                pos += len(take)
                if len(self.header) < 4:
                    break
                header = int.from_bytes(self.header, "little")
                self.header.clear()
                seq = header >> 24
                if self.first_seq < 0:
                    self.first_seq = seq
                elif seq != (self.seq + 1) & 0xFF:
                    expected = (self.seq + 1) & 0xFF
                    raise ProtocolViolation(
                        f"continuation chunk has sequence id {seq}, expected {expected}"
                    )
                self.seq = seq
                self.chunk_left = header & MAX_CHUNK
                self.last_chunk = self.chunk_left < MAX_CHUNK
                self.in_chunk = True
            skipped = min(self.chunk_left, size - pos)
            pos += skipped
            self.chunk_left -= skipped
            if not self.chunk_left:
                self.in_chunk = False
                if self.last_chunk:
                    return Packet(self.first_seq, self.seq, b"", b"", oversized=True), data[pos:]
        return None, b""


def frame(payload: bytes, sequence_id: int) -> bytes:
    """Wire bytes of one logical packet: 0xFFFFFF-byte chunks, then a shorter final one."""
    if not 0 <= sequence_id <= 0xFF:
        raise ValueError(f"sequence id {sequence_id} out of range")
    size = len(payload)
    if size < MAX_CHUNK:
        return _HEADER.pack(size | sequence_id << 24) + payload
    out = bytearray()
    view = memoryview(payload)
    pos = 0
    seq = sequence_id
    while True:
        chunk = view[pos : pos + MAX_CHUNK]
        out += _HEADER.pack(len(chunk) | seq << 24)
        out += chunk
        seq = (seq + 1) & 0xFF
        pos += MAX_CHUNK
        if len(chunk) < MAX_CHUNK:
            return bytes(out)


def chunk_count(payload_size: int) -> int:
    """How many chunks (and so sequence ids) a payload of this size takes on the wire."""
    return payload_size // MAX_CHUNK + 1


def next_sequence_id(payload_size: int, sequence_id: int) -> int:
    """The sequence id of whatever follows a packet framed from `sequence_id`."""
    return (sequence_id + chunk_count(payload_size)) & 0xFF


# --- basic data types
# https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_dt_integers.html


def read_lenenc_int(buf: bytes, pos: int) -> tuple[int | None, int]:
    """A length-encoded integer at `pos`: (value or None for the 0xFB NULL marker, new pos)."""
    if pos >= len(buf):
        raise ProtocolViolation("truncated packet: missing length-encoded integer")
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    if first == 0xFC:
        width = 2
    elif first == 0xFD:
        width = 3
    elif first == 0xFE:
        width = 8
    else:
        raise ProtocolViolation("invalid length-encoded integer (0xFF)")
    end = pos + 1 + width
    if end > len(buf):
        raise ProtocolViolation("truncated packet: short length-encoded integer")
    return int.from_bytes(buf[pos + 1 : end], "little"), end


def read_lenenc_bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    """A length-encoded string at `pos`: (bytes or None for NULL, new pos)."""
    length, pos = read_lenenc_int(buf, pos)
    if length is None:
        return None, pos
    end = pos + length
    if end > len(buf):
        raise ProtocolViolation("truncated packet: length-encoded string runs past the end")
    return buf[pos:end], end


def lenenc_int(n: int) -> bytes:
    if n < 0:
        raise ValueError("length-encoded integers are unsigned")
    if n < 0xFB:
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfc" + _U16.pack(n)
    if n <= 0xFFFFFF:
        return b"\xfd" + n.to_bytes(3, "little")
    if n <= 0xFFFFFFFFFFFFFFFF:
        return b"\xfe" + _U64.pack(n)
    raise ValueError("length-encoded integers have at most 64 bits")


def lenenc_bytes(b: bytes) -> bytes:
    return lenenc_int(len(b)) + b


def read_nul_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    """A NUL-terminated string at `pos`: (bytes without the NUL, position after the NUL)."""
    end = buf.find(b"\0", pos)
    if end < 0:
        raise ProtocolViolation("truncated packet: unterminated string")
    return buf[pos:end], end + 1


def read_uint(buf: bytes, pos: int, width: int) -> tuple[int, int]:
    """A fixed-width little-endian unsigned integer at `pos`: (value, new pos)."""
    end = pos + width
    if end > len(buf):
        raise ProtocolViolation(f"truncated packet: cannot read a {width}-byte integer")
    return int.from_bytes(buf[pos:end], "little"), end


def read_bytes(buf: bytes, pos: int, count: int) -> tuple[bytes, int]:
    """Exactly `count` bytes at `pos`: (bytes, new pos)."""
    end = pos + count
    if count < 0 or end > len(buf):
        raise ProtocolViolation(f"truncated packet: cannot read {count} bytes")
    return buf[pos:end], end
