"""PacketReader against any split of its input, with hypothesis.

Fed a stream in any pieces, the reader returns the packets it returns fed the stream
byte by byte (which returns each packet as soon as its last byte arrives), and refuses
the same streams, with a ProtocolViolation and nothing else.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import ProtocolViolation
from protocols.mysql.packets import Packet, PacketReader, frame

PAYLOADS = st.lists(st.tuples(st.binary(max_size=100), st.integers(0, 255)), max_size=6)
CUTS = st.lists(st.integers(0, 1000), max_size=10)


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(raw)) for cut in cuts})
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


def read(chunks: list[bytes], cap: int, drain: bool) -> tuple[list[Packet], bool]:
    """The packets read from `chunks`, and whether the reader refused the stream."""
    reader = PacketReader(cap, drain_oversized=drain)
    packets: list[Packet] = []
    try:
        for chunk in chunks:
            packets += reader.feed(chunk)
    except ProtocolViolation:
        return packets, True
    return packets, False


def bytewise(raw: bytes, cap: int, drain: bool) -> tuple[list[Packet], bool]:
    return read([raw[i : i + 1] for i in range(len(raw))], cap, drain)


@given(PAYLOADS, CUTS)
def test_any_split_of_a_stream_reads_the_same_packets(
    payloads: list[tuple[bytes, int]], cuts: list[int]
) -> None:
    stream = b"".join(frame(payload, seq) for payload, seq in payloads)
    expected = [Packet(seq, seq, payload, frame(payload, seq)) for payload, seq in payloads]
    assert read([stream], 1 << 20, False) == (expected, False)
    assert read(split(stream, cuts), 1 << 20, False) == (expected, False)
    assert bytewise(stream, 1 << 20, False) == (expected, False)


@given(st.binary(max_size=300), CUTS, st.integers(0, 80), st.booleans())
def test_garbage_reads_packets_or_a_protocol_violation(
    raw: bytes, cuts: list[int], cap: int, drain: bool
) -> None:
    reference, refused = bytewise(raw, cap, drain)
    for chunks in ([raw], split(raw, cuts)):
        packets, stopped = read(chunks, cap, drain)
        # A feed that raises loses the packets it completed before the refusal: what was
        # read is a prefix of the reference, and all of it when nothing was refused.
        assert stopped == refused
        assert packets == reference if not refused else packets == reference[: len(packets)]
    for packet in reference:
        assert packet.oversized == (not packet.raw)
        if not packet.oversized:
            assert len(packet.payload) <= cap
            assert raw.find(packet.raw) >= 0


@given(st.binary(min_size=1, max_size=80), st.integers(0, 255), CUTS, st.binary(max_size=20))
def test_a_packet_over_the_cap_is_drained_whole_in_any_split(
    payload: bytes, seq: int, cuts: list[int], after: bytes
) -> None:
    # Over a cap one byte short of it: refused, or with drain_oversized read to its end
    # and returned empty and marked, with the packet after it read as usual.
    cap = len(payload) - 1
    stream = frame(payload, seq) + frame(after, (seq + 1) & 0xFF)
    assert read(split(stream, cuts), cap, False)[1]
    packets, refused = read(split(stream, cuts), cap, True)
    assert not refused
    assert packets[0] == Packet(seq, seq, b"", b"", oversized=True)
    if len(after) <= cap:
        assert packets[1:] == [
            Packet((seq + 1) & 0xFF, (seq + 1) & 0xFF, after, frame(after, (seq + 1) & 0xFF))
        ]
