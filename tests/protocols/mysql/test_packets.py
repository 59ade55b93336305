"""Packet framing and the basic data types."""

from __future__ import annotations

import struct

import pytest

from protocols.errors import MessageTooLarge, ProtocolViolation
from protocols.mysql.packets import (
    MAX_CHUNK,
    Packet,
    PacketReader,
    chunk_count,
    frame,
    lenenc_bytes,
    lenenc_int,
    next_sequence_id,
    read_bytes,
    read_lenenc_bytes,
    read_lenenc_int,
    read_nul_string,
    read_uint,
)

PAYLOADS = [b"\x03SELECT 1", b"", b"\x00\x00\x00\x02\x00\x00\x00", b"x" * 1000, b"\x0e"]
STREAM = b"".join(frame(payload, seq) for seq, payload in enumerate(PAYLOADS))
BIG = 64 * 1024 * 1024


def header(length: int, seq: int) -> bytes:
    return struct.pack("<I", length | seq << 24)


def payloads(packets: list[Packet]) -> list[bytes]:
    return [packet.payload for packet in packets]


def test_frame_small() -> None:
    assert frame(b"\x0e", 0) == b"\x01\x00\x00\x00\x0e"
    assert frame(b"", 7) == b"\x00\x00\x00\x07"
    assert frame(b"ab", 255) == b"\x02\x00\x00\xffab"


def test_frame_rejects_bad_sequence_id() -> None:
    with pytest.raises(ValueError, match="sequence id"):
        frame(b"x", 256)


def test_reader_whole_buffer() -> None:
    reader = PacketReader(BIG)
    packets = reader.feed(STREAM)
    assert payloads(packets) == PAYLOADS
    assert [p.sequence_id for p in packets] == list(range(len(PAYLOADS)))
    assert [p.last_sequence_id for p in packets] == list(range(len(PAYLOADS)))
    assert b"".join(p.raw for p in packets) == STREAM
    assert reader.buffered == 0


def test_reader_byte_by_byte() -> None:
    reader = PacketReader(BIG)
    packets: list[Packet] = []
    for i in range(len(STREAM)):
        packets += reader.feed(STREAM[i : i + 1])
    assert payloads(packets) == PAYLOADS
    assert b"".join(p.raw for p in packets) == STREAM
    assert reader.buffered == 0


def test_reader_keeps_trailing_data() -> None:
    reader = PacketReader(BIG)
    tail = frame(b"\x03SELECT 2", 0)
    packets = reader.feed(STREAM + tail[:6])
    assert payloads(packets) == PAYLOADS
    assert reader.buffered == 6
    assert payloads(reader.feed(tail[6:])) == [b"\x03SELECT 2"]
    assert reader.buffered == 0


def test_reader_partial_header_then_rest() -> None:
    reader = PacketReader(BIG)
    assert reader.feed(STREAM[:2]) == []
    assert reader.buffered == 2
    assert payloads(reader.feed(STREAM[2:])) == PAYLOADS


def test_take_rest() -> None:
    reader = PacketReader(BIG)
    reader.feed(STREAM + b"\x05\x00\x00")
    assert reader.take_rest() == b"\x05\x00\x00"
    assert reader.buffered == 0
    assert payloads(reader.feed(frame(b"ok", 1))) == [b"ok"]


def test_exactly_max_chunk_needs_an_empty_final_chunk() -> None:
    payload = bytes(range(256)) * (MAX_CHUNK // 256) + b"\x01" * (MAX_CHUNK % 256)
    assert len(payload) == MAX_CHUNK
    wire = frame(payload, 3)
    assert len(wire) == 4 + MAX_CHUNK + 4
    assert wire[:4] == header(MAX_CHUNK, 3)
    assert wire[-4:] == header(0, 4)
    assert chunk_count(len(payload)) == 2
    assert next_sequence_id(len(payload), 3) == 5

    reader = PacketReader(MAX_CHUNK)
    # Without the empty chunk the packet is not complete.
    assert reader.feed(wire[:-4]) == []
    (packet,) = reader.feed(wire[-4:] + frame(b"next", 5))[:1]
    assert packet.payload == payload
    assert (packet.sequence_id, packet.last_sequence_id) == (3, 4)
    assert packet.raw == wire
    assert reader.buffered == 0


def test_sixteen_megabytes_plus_one_with_sequence_wraparound() -> None:
    payload = b"\x03" + b"y" * MAX_CHUNK  # 16 MB + 1: a full chunk and a 1-byte chunk
    wire = frame(payload, 255)
    assert wire[:4] == header(MAX_CHUNK, 255)
    assert wire[-5:] == header(1, 0) + b"y"
    assert next_sequence_id(len(payload), 255) == 1

    reader = PacketReader(BIG)
    packets: list[Packet] = []
    step = 1 << 20  # a large packet arriving in many reads
    for start in range(0, len(wire), step):
        packets += reader.feed(wire[start : start + step])
    (packet,) = packets
    assert packet.payload == payload
    assert (packet.sequence_id, packet.last_sequence_id) == (255, 0)
    assert packet.raw == wire


def test_small_packets_around_a_split_packet() -> None:
    big = b"z" * (MAX_CHUNK + 10)
    wire = frame(b"a", 0) + frame(big, 1) + frame(b"b", 3)
    reader = PacketReader(BIG)
    packets = reader.feed(wire[:100]) + reader.feed(wire[100:])
    assert payloads(packets) == [b"a", big, b"b"]
    assert [p.sequence_id for p in packets] == [0, 1, 3]
    assert packets[1].last_sequence_id == 2


def test_size_cap_single_chunk_checked_at_the_header() -> None:
    reader = PacketReader(100)
    assert payloads(reader.feed(frame(b"x" * 100, 0))) == [b"x" * 100]
    with pytest.raises(MessageTooLarge):
        reader.feed(header(101, 0))  # no payload bytes needed to refuse it


def test_size_cap_split_packet_checked_at_the_first_header() -> None:
    reader = PacketReader(1000)
    with pytest.raises(MessageTooLarge):
        reader.feed(header(MAX_CHUNK, 0) + b"x" * 10)


def test_size_cap_counts_every_chunk() -> None:
    reader = PacketReader(MAX_CHUNK + 5)
    wire = frame(b"q" * (MAX_CHUNK + 6), 0)
    with pytest.raises(MessageTooLarge):
        reader.feed(wire[: 4 + MAX_CHUNK + 4])  # the final chunk's header is enough
    assert issubclass(MessageTooLarge, ProtocolViolation)


@pytest.mark.parametrize("size", [101, MAX_CHUNK, MAX_CHUNK + 7])
def test_a_draining_reader_reads_an_oversized_packet_to_its_end_and_goes_on(size: int) -> None:
    # What a client waits for after a packet the gateway refuses: an answer numbered after
    # the packet's last chunk, so the packet must be read to its end, not kept.
    wire = frame(b"o" * size, 0) + frame(b"\x0e", 0)
    last = size // MAX_CHUNK  # a payload of exactly MAX_CHUNK ends with an empty chunk
    for step in (len(wire), 4096, 1_000_003):
        reader = PacketReader(100, drain_oversized=True)
        packets: list[Packet] = []
        for start in range(0, len(wire), step):
            packets += reader.feed(wire[start : start + step])
        assert [p.oversized for p in packets] == [True, False]
        assert (packets[0].sequence_id, packets[0].last_sequence_id) == (0, last)
        assert packets[0].payload == b""
        assert packets[1].payload == b"\x0e"
        assert reader.buffered == 0


def test_bad_continuation_sequence_id() -> None:
    reader = PacketReader(BIG)
    wire = header(MAX_CHUNK, 5) + b"x" * MAX_CHUNK + header(1, 7) + b"y"
    with pytest.raises(ProtocolViolation, match="sequence id 7, expected 6"):
        reader.feed(wire)


def test_bad_continuation_detected_before_the_chunk_arrives() -> None:
    reader = PacketReader(BIG)
    assert reader.feed(header(MAX_CHUNK, 0) + b"x" * MAX_CHUNK) == []
    with pytest.raises(ProtocolViolation):
        reader.feed(header(10, 9))


def test_lenenc_int_round_trips() -> None:
    for value, width in [
        (0, 1),
        (250, 1),
        (251, 3),
        (0xFFFF, 3),
        (0x10000, 4),
        (0xFFFFFF, 4),
        (0x1000000, 9),
        (2**64 - 1, 9),
    ]:
        raw = lenenc_int(value)
        assert len(raw) == width
        assert read_lenenc_int(raw + b"tail", 0) == (value, width)
    with pytest.raises(ValueError, match="unsigned"):
        lenenc_int(-1)
    with pytest.raises(ValueError, match="64 bits"):
        lenenc_int(2**64)


def test_lenenc_null_and_errors() -> None:
    assert read_lenenc_int(b"\xfb", 0) == (None, 1)
    assert read_lenenc_bytes(b"\x00\xfb", 1) == (None, 2)
    for bad in (b"", b"\xff", b"\xfc\x01", b"\xfd\x01\x02", b"\xfe" + bytes(7)):
        with pytest.raises(ProtocolViolation):
            read_lenenc_int(bad, 0)


def test_lenenc_bytes() -> None:
    assert lenenc_bytes(b"abc") == b"\x03abc"
    assert read_lenenc_bytes(b"\x03abcd", 0) == (b"abc", 4)
    long = b"q" * 300
    assert read_lenenc_bytes(lenenc_bytes(long), 0) == (long, 303)
    with pytest.raises(ProtocolViolation):
        read_lenenc_bytes(b"\x05abc", 0)


def test_fixed_reads() -> None:
    assert read_nul_string(b"ab\0cd\0", 0) == (b"ab", 3)
    assert read_nul_string(b"ab\0cd\0", 3) == (b"cd", 6)
    with pytest.raises(ProtocolViolation):
        read_nul_string(b"abc", 0)
    assert read_uint(b"\x01\x02\x03", 0, 3) == (0x030201, 3)
    with pytest.raises(ProtocolViolation):
        read_uint(b"\x01", 0, 2)
    assert read_bytes(b"abc", 1, 2) == (b"bc", 3)
    with pytest.raises(ProtocolViolation):
        read_bytes(b"abc", 1, 3)
