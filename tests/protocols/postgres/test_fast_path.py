"""The relay's fast path for client bytes against MessageFramer: one framing, any split.

`PgRelay.fast_forward` frames whole messages inside each read without copying them and
leaves the rest to the relay's MessageFramer. Both read headers with `frame_at`; these
tests hold the combination to the framer alone. For any stream of valid and invalid
messages, cut anywhere, under any `max_message_bytes`: the relay forwards exactly the
messages the framer frames from the whole stream, in order (its gate sees each of them
once, with the same bytes), every fast-path prefix ends on one of the framer's message
boundaries, and where the framer refuses the stream (ProtocolViolation, MessageTooLarge)
the relay refuses it with the same error, having forwarded the same messages before it.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import MessageTooLarge, ProtocolViolation
from protocols.postgres import messages as m
from protocols.postgres.framing import MessageFramer
from proxy.postgres.gate import ADMIT, PgGate
from proxy.postgres.relay import PgRelay, SendToServer

FRONTEND = frozenset(m.FRONTEND_TYPES)
_QUERY, _SYNC, _TERMINATE = b"Q"[0], b"S"[0], b"X"[0]
_EXTENDED = frozenset(b"PBDEC")
_GATED = frozenset(b"QPBECD")
#: Every frontend type but FunctionCall, which the relay refuses in place (with an
#: Execute and a Sync of its own): what it forwards would not be the client's bytes.
TYPES = sorted(FRONTEND - {b"F"[0]})


def message(kind: int, body: bytes) -> bytes:
    return m.frame(bytes([kind]), body)


def header(kind: int, length: int, body: bytes) -> bytes:
    """A header as a peer may send it: any type, any length (negative, tiny, huge)."""
    return bytes([kind]) + struct.pack("!i", length) + body


#: Mostly valid messages (a body of any bytes: framing does not look inside), some with
#: a header that lies or a type that is not a client's, some plain garbage.
PIECES = st.one_of(
    st.builds(message, st.sampled_from(TYPES), st.binary(max_size=40)),
    st.builds(message, st.sampled_from(TYPES), st.binary(max_size=40)),
    st.builds(message, st.sampled_from(TYPES), st.binary(max_size=40)),
    st.builds(
        header,
        st.one_of(st.sampled_from(TYPES), st.integers(0, 255)),
        st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-2, 80)),
        st.binary(max_size=40),
    ),
    st.binary(max_size=12),
)
#: The cap, from below any message's size to above every one's.
CAPS = st.one_of(st.integers(4, 80), st.just(1 << 20))


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(raw)) for cut in cuts})
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


def framed(stream: bytes, max_bytes: int) -> tuple[list[bytes], type[Exception] | None]:
    """The reference: the messages MessageFramer frames from the whole stream, up to
    Terminate (the relay reads nothing after it), and the error it refuses it with."""
    framer = MessageFramer(FRONTEND, max_bytes)
    framer.feed(stream)
    out: list[bytes] = []
    try:
        while (raw := framer.next_message()) is not None:
            out.append(raw)
            if raw[0] == _TERMINATE:
                break
    except ProtocolViolation as error:
        return out, type(error)
    return out, None


def forwarded_for(messages: list[bytes]) -> bytes:
    """What the relay sends the server for these client messages: each as it is, with a
    Sync of the relay's own before a Query inside an extended-protocol batch."""
    out = []
    unsynced = False
    for raw in messages:
        if raw[0] == _QUERY and unsynced:
            out.append(m.Sync().raw)
        if raw[0] in _EXTENDED:
            unsynced = True
        elif raw[0] in (_QUERY, _SYNC):
            unsynced = False
        out.append(raw)
    return b"".join(out)


class RecordingGate(PgGate):
    """Admits every message, and keeps the bytes of each one it was asked about."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def admit(self, kind: int, raw: bytes, start: int, end: int) -> int:
        assert raw[start] == kind
        self.seen.append(raw[start:end])
        return ADMIT

    def unit_sent(self) -> None:
        pass


def relayed(
    chunks: list[bytes], max_bytes: int
) -> tuple[bytes, list[bytes], list[int], type[Exception] | None]:
    """Each chunk as the pipe hands it over: the fast path first, then `client_data` with
    what it took. Out: the bytes sent to the server (by the calls that returned), the
    messages the gate saw, where each fast-path prefix that took anything ended in the
    stream, and the error the relay raised."""
    gate = RecordingGate()
    relay = PgRelay(max_message_bytes=max_bytes, gate=gate)
    sent: list[bytes] = []
    fast_ends: list[int] = []
    offset = 0
    try:
        for chunk in chunks:
            done = relay.fast_forward(chunk)
            if done:
                fast_ends.append(offset + done)
            actions = relay.client_data(chunk, done)
            sent += [action.raw for action in actions if isinstance(action, SendToServer)]
            offset += len(chunk)
    except ProtocolViolation as error:
        return b"".join(sent), gate.seen, fast_ends, type(error)
    return b"".join(sent), gate.seen, fast_ends, None


def check(stream: bytes, chunks: list[bytes], max_bytes: int) -> None:
    messages, error = framed(stream, max_bytes)
    sent, seen, fast_ends, relay_error = relayed(chunks, max_bytes)
    assert relay_error is error
    assert seen == [raw for raw in messages if raw[0] in _GATED]
    if error is None:
        assert sent == forwarded_for(messages)
    else:
        # The call that raised returned nothing; the session ends with the error.
        assert forwarded_for(messages).startswith(sent)
    boundaries = {0}
    for raw in messages:
        boundaries.add(max(boundaries) + len(raw))
    assert set(fast_ends) <= boundaries


@given(st.lists(PIECES, max_size=8), st.lists(st.integers(0, 400), max_size=8), CAPS)
def test_any_split_relays_what_the_framer_frames(
    pieces: list[bytes], cuts: list[int], max_bytes: int
) -> None:
    stream = b"".join(pieces)
    check(stream, [stream], max_bytes)
    check(stream, split(stream, cuts), max_bytes)


@given(st.lists(PIECES, max_size=4), CAPS)
def test_byte_by_byte_relays_what_the_framer_frames(pieces: list[bytes], max_bytes: int) -> None:
    stream = b"".join(pieces)
    check(stream, [bytes([b]) for b in stream], max_bytes)


def test_the_cap_is_the_same_on_both_paths() -> None:
    """A message of exactly the cap passes, by the fast path when whole; one byte more is
    refused as soon as its header is in, whole or in pieces, and nothing of it is sent."""
    at_cap = message(b"Q"[0], b"x" * 10 + b"\0")  # 16 bytes
    assert len(at_cap) == 16
    for chunks in ([at_cap], [at_cap[:3], at_cap[3:]]):
        sent, seen, _, error = relayed(chunks, 16)
        assert (sent, seen, error) == (at_cap, [at_cap], None)
    over = message(b"Q"[0], b"x" * 11 + b"\0")
    for chunks in ([at_cap, over[:5]], [at_cap, over]):
        sent, seen, _, error = relayed(chunks, 16)
        assert (sent, seen, error) == (at_cap, [at_cap], MessageTooLarge)
    # In one read with the message before it: the read is refused whole.
    for chunks in ([at_cap + over], [at_cap + over[:5], over[5:]]):
        sent, seen, _, error = relayed(chunks, 16)
        assert (sent, seen, error) == (b"", [at_cap], MessageTooLarge)
    assert framed(at_cap + over, 16) == ([at_cap], MessageTooLarge)


def test_a_fast_path_prefix_stops_before_a_malformed_header() -> None:
    sync = m.Sync().raw
    bad_length = header(b"S"[0], 3, b"")
    not_a_client_type = header(b"Z"[0], 5, b"I")
    for bad in (bad_length, not_a_client_type):
        relay = PgRelay(max_message_bytes=1 << 20, gate=RecordingGate())
        assert relay.fast_forward(sync + bad + sync) == len(sync)
        assert framed(sync + bad + sync, 1 << 20) == ([sync], ProtocolViolation)
