"""The fast path against the full decoder, with hypothesis.

The relay follows a server's answer in place (`ResponseTracker.follow`: rows and column
definitions counted where they lie, framed by `packet_end`), and hands the reader
(`PacketReader.next_packet`, `feed`) only what is split over reads or in chunks. The
full decoder is the reader's packets fed to `ResponseTracker.feed` one by one. For
random answers, valid and mangled, cut anywhere, both find the same packets, stop after
the same one, say the same about the answer, and refuse the same streams, with a
ProtocolViolation and nothing else. And random bytes give a packet or a
ProtocolViolation, nothing else.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import ProtocolViolation
from protocols.mysql import messages as m
from protocols.mysql.messages import Capability as C
from protocols.mysql.messages import Command
from protocols.mysql.messages import ServerStatus as S
from protocols.mysql.packets import (
    MAX_CHUNK,
    Packet,
    PacketReader,
    frame,
    lenenc_bytes,
    lenenc_int,
    packet_end,
)
from protocols.mysql.responses import ResponseTracker

CLASSIC = int(C.PROTOCOL_41 | C.TRANSACTIONS | C.MULTI_RESULTS | C.PS_MULTI_RESULTS)
DEPRECATE = CLASSIC | int(C.DEPRECATE_EOF)
CAPS = st.sampled_from([CLASSIC, DEPRECATE])
COMMANDS = st.sampled_from(
    [Command.QUERY, Command.STMT_EXECUTE, Command.STMT_FETCH, Command.STMT_PREPARE,
     Command.FIELD_LIST, Command.PING]
)  # fmt: skip
STATUS = st.sampled_from([int(S.AUTOCOMMIT), int(S.AUTOCOMMIT | S.MORE_RESULTS_EXISTS)])
MAX = 1 << 20
CUTS = st.lists(st.integers(0, 4000), max_size=12)
COLDEF = m.ColumnDefinition(
    b"test", b"t", b"t", b"c", b"c", 45, 80, m.FieldType.VAR_STRING, 0, 0
).build()


def end(caps: int, status: int) -> bytes:
    if caps & C.DEPRECATE_EOF:
        return m.OkPacket(0, 0, status, 0, header=0xFE).build(caps)
    return m.EofPacket(0, status).build()


@st.composite
def answers(draw: st.DrawFn) -> tuple[int, int, list[bytes]]:
    """(command, capabilities, the payloads of a plausible answer to it)."""
    command, caps = int(draw(COMMANDS)), draw(CAPS)
    rows = st.lists(
        st.lists(st.one_of(st.none(), st.binary(max_size=300)), min_size=1, max_size=3).map(
            lambda values: b"".join(b"\xfb" if v is None else lenenc_bytes(v) for v in values)
        ),
        max_size=8,
    )
    last = m.OkPacket(draw(st.integers(0, 300)), 0, int(S.AUTOCOMMIT), 0).build(caps)
    if command == Command.STMT_PREPARE:
        params, columns = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        prepared = [m.StmtPrepareOk(7, columns, params, 0).build()]
        for group in (params, columns):
            if group:
                prepared += [COLDEF] * group
                prepared += [] if caps & C.DEPRECATE_EOF else [end(caps, int(S.AUTOCOMMIT))]
        return command, caps, prepared
    if command == Command.FIELD_LIST:
        return command, caps, [COLDEF] * draw(st.integers(0, 3)) + [end(caps, 2)]
    if command == Command.PING:
        return command, caps, [last]
    if command == Command.STMT_FETCH:
        return command, caps, [*draw(rows), end(caps, int(S.AUTOCOMMIT))]
    payloads: list[bytes] = []
    count = draw(st.integers(1, 3))
    for index in range(count):
        # Every result but the last says another follows.
        status = int(S.AUTOCOMMIT | (S.MORE_RESULTS_EXISTS if index < count - 1 else 0))
        if draw(st.booleans()):
            payloads.append(m.OkPacket(draw(st.integers(0, 300)), 0, status, 0).build(caps))
            continue
        columns = draw(st.integers(1, 4))
        payloads += [lenenc_int(columns), *[COLDEF] * columns]
        payloads += [] if caps & C.DEPRECATE_EOF else [end(caps, int(S.AUTOCOMMIT))]
        payloads += draw(rows)
        payloads.append(end(caps, status))
    if draw(st.booleans()):  # an error ends the answer instead (after rows, or statements)
        payloads[-1] = m.ErrPacket(1064, "42000", "syntax").build()
    return command, caps, payloads


@st.composite
def streams(draw: st.DrawFn) -> tuple[int, int, bytes]:
    """An answer as wire bytes, as sent or mangled (bytes changed, cut, added)."""
    command, caps, payloads = draw(answers())
    stream = bytearray(b"".join(frame(p, (i + 1) & 0xFF) for i, p in enumerate(payloads)))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "add", "none"]))
        if kind == "flip" and stream:
            stream[draw(st.integers(0, len(stream) - 1))] = draw(st.integers(0, 255))
        elif kind == "cut" and stream:
            del stream[draw(st.integers(0, len(stream) - 1)) :]
        elif kind == "add":
            stream[draw(st.integers(0, len(stream))) : 0] = draw(st.binary(max_size=20))
    return command, caps, bytes(stream)


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(raw)) for cut in cuts})
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


def snapshot(tracker: ResponseTracker) -> tuple[object, ...]:
    return (
        tracker.complete, tracker.rows, tracker.result_sets, tracker.columns,
        tracker.status_flags, tracker.warnings, tracker.affected_rows, tracker.error,
        tracker.ok, tracker.prepare_ok, tracker.cursor_opened, tracker.local_infile,
        tracker.statistics,
    )  # fmt: skip


def decoded(command: int, caps: int, stream: bytes) -> tuple[tuple[object, ...], int, bool]:
    """The full decoder: every packet framed by the reader, then fed. (What the tracker
    says, how many bytes the answer took, whether the stream was refused.)"""
    tracker = ResponseTracker(command, caps)
    used = 0
    try:
        for packet in PacketReader(MAX).feed(stream):
            used += len(packet.raw)
            if tracker.feed(packet.payload):
                break
    except ProtocolViolation:
        return (), -1, True  # the session ends: nothing more is read from the tracker
    return snapshot(tracker), used, False


def fast(
    command: int, caps: int, chunks: list[bytes], rows: list[bytes] | None = None
) -> tuple[tuple[object, ...], int, bool]:
    """The relay's way (proxy/mysql/relay.py): each read followed in place, from where the
    reader's split packet ends; whatever follow leaves is framed by the reader."""
    tracker = ResponseTracker(command, caps, on_row=None if rows is None else rows.append)
    reader = PacketReader(MAX)
    used = 0
    try:
        for chunk in chunks:
            raw = chunk
            if reader.buffered:
                packet = reader.next_packet(raw)
                if packet is None:
                    continue
                raw = reader.take_rest()
                used += len(packet.raw)
                if tracker.feed(packet.payload):
                    return snapshot(tracker), used, False
            pos = tracker.follow(raw, 0, len(raw))
            used += pos
            if tracker.complete:
                return snapshot(tracker), used, False
            for packet in reader.feed(raw[pos:]):
                used += len(packet.raw)
                if tracker.feed(packet.payload):
                    return snapshot(tracker), used, False
    except ProtocolViolation:
        return (), -1, True  # the session ends: nothing more is read from the tracker
    return snapshot(tracker), used, False


def outcome(
    result: tuple[tuple[object, ...], int, bool], stream: bytes
) -> tuple[tuple[object, ...], int, bool]:
    """As the relay sees it: a byte after the answer is the server out of step."""
    state, used, refused = result
    if refused or (state[0] and used < len(stream)):
        return (), -1, True
    return result


@given(streams(), CUTS)
def test_follow_agrees_with_the_decoder_on_any_split(
    case: tuple[int, int, bytes], cuts: list[int]
) -> None:
    command, caps, stream = case
    expected = outcome(decoded(command, caps, stream), stream)
    assert outcome(fast(command, caps, [stream]), stream) == expected
    assert outcome(fast(command, caps, split(stream, cuts)), stream) == expected
    if len(stream) < 600:
        bytewise = [stream[i : i + 1] for i in range(len(stream))]
        assert outcome(fast(command, caps, bytewise), stream) == expected


@given(answers(), CUTS)
def test_rows_captured_on_the_fast_path_are_the_decoders(
    case: tuple[int, int, list[bytes]], cuts: list[int]
) -> None:
    command, caps, payloads = case
    stream = b"".join(frame(p, (i + 1) & 0xFF) for i, p in enumerate(payloads))
    expected: list[bytes] = []
    tracker = ResponseTracker(command, caps, on_row=expected.append)
    for payload in payloads:
        if tracker.feed(payload):
            break
    captured: list[bytes] = []
    state, used, refused = fast(command, caps, split(stream, cuts), captured)
    assert not refused
    assert state == snapshot(tracker)
    assert captured == expected
    assert state[0]
    assert used == len(stream)


@given(st.binary(max_size=400), st.integers(0, 400), st.integers(0, 400))
def test_packet_end_finds_exactly_the_readers_one_chunk_packets(
    raw: bytes, pos: int, size: int
) -> None:
    pos, size = min(pos, len(raw)), min(size, len(raw))
    end = packet_end(raw, pos, size)
    if end >= 0:
        [packet] = PacketReader(1 << 30).feed(raw[pos:end])
        assert packet.raw == raw[pos:end]
        assert len(packet.payload) < MAX_CHUNK
        return
    try:  # no cap: only a chunked packet's continuation out of sequence is refused
        packets = PacketReader(1 << 30).feed(raw[pos:size]) if pos <= size else []
    except ProtocolViolation:
        return
    # nothing whole, or a packet split in chunks
    assert not packets or len(packets[0].raw) > MAX_CHUNK


@given(st.lists(st.tuples(st.binary(max_size=100), st.integers(0, 255)), max_size=6), CUTS)
def test_next_packet_reads_the_packets_feed_reads(
    payloads: list[tuple[bytes, int]], cuts: list[int]
) -> None:
    stream = b"".join(frame(payload, seq) for payload, seq in payloads)
    reader = PacketReader(MAX)
    got: list[Packet] = []
    for chunk in split(stream, cuts):
        packet = reader.next_packet(chunk)
        while packet is not None:
            got.append(packet)
            packet = reader.next_packet(b"")
    assert got == PacketReader(MAX).feed(stream)
    assert reader.take_rest() == b""


@given(st.binary(max_size=300), CUTS, st.integers(0, 80), st.booleans())
def test_random_bytes_give_a_packet_or_a_protocol_violation(
    raw: bytes, cuts: list[int], cap: int, drain: bool
) -> None:
    # One packet at a time, as _first_packet reads a login: the rest stays unread.
    reader = PacketReader(cap, drain_oversized=drain)
    try:
        for chunk in split(raw, cuts):
            packet = reader.next_packet(chunk)
            if packet is not None:
                assert packet.oversized or raw.startswith(packet.raw)
                assert packet.oversized or len(packet.payload) <= cap
                break
    except ProtocolViolation:
        pass


@given(COMMANDS, CAPS, st.binary(max_size=400), CUTS)
def test_random_answers_give_a_state_or_a_protocol_violation(
    command: int, caps: int, raw: bytes, cuts: list[int]
) -> None:
    # Anything else (IndexError, OverflowError, ...) fails the test.
    expected = outcome(decoded(int(command), caps, raw), raw)
    assert outcome(fast(int(command), caps, split(raw, cuts)), raw) == expected
