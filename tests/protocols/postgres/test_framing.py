"""Framers, each tested with the whole input, byte by byte, and with trailing data."""

from __future__ import annotations

import pytest

from protocols.errors import MessageTooLarge, ProtocolViolation
from protocols.postgres import messages as m
from protocols.postgres.framing import (
    MAX_STARTUP_BYTES,
    BackendRelay,
    MessageFramer,
    StartupFramer,
)

FRONTEND = frozenset(m.FRONTEND_TYPES)
BACKEND = frozenset(m.BACKEND_TYPES)

MESSAGES = [
    m.Query.build("select 1").raw,
    m.frame(b"P", m.cstring("s1") + m.cstring("select $1") + b"\x00\x01\x00\x00\x00\x17"),
    m.Sync().raw,
    m.frame(b"d", b"x" * 1000),
    m.Terminate().raw,
]
STREAM = b"".join(MESSAGES)


def drain(framer: MessageFramer) -> list[bytes]:
    out = []
    while (raw := framer.next_message()) is not None:
        out.append(raw)
    return out


def test_message_framer_whole_input() -> None:
    framer = MessageFramer(FRONTEND)
    framer.feed(STREAM)
    assert drain(framer) == MESSAGES
    assert framer.buffered == 0


def test_message_framer_byte_by_byte() -> None:
    framer = MessageFramer(FRONTEND)
    out: list[bytes] = []
    for i in range(len(STREAM)):
        framer.feed(STREAM[i : i + 1])
        out += drain(framer)
    assert out == MESSAGES


def test_message_framer_keeps_trailing_partial_data() -> None:
    framer = MessageFramer(FRONTEND)
    tail = m.Query.build("select 2").raw
    framer.feed(STREAM + tail[:7])
    assert drain(framer) == MESSAGES
    assert framer.buffered == 7
    framer.feed(tail[7:])
    assert drain(framer) == [tail]


def test_message_framer_take_buffered_hands_over_every_unread_byte() -> None:
    framer = MessageFramer(FRONTEND)
    framer.feed(MESSAGES[0] + MESSAGES[1] + b"Q\x00")
    assert framer.next_message() == MESSAGES[0]
    assert framer.take_buffered() == MESSAGES[1] + b"Q\x00"
    assert framer.buffered == 0


@pytest.mark.parametrize(
    "raw",
    [b"Z\x00\x00\x00\x05I", b"\x00\x00\x00\x00\x04", b"R\x00\x00\x00\x08\x00\x00\x00\x00"],
)
def test_message_framer_refuses_types_not_allowed(raw: bytes) -> None:
    framer = MessageFramer(FRONTEND)
    framer.feed(raw)
    with pytest.raises(ProtocolViolation, match="unexpected message type"):
        framer.next_message()


@pytest.mark.parametrize("length", [-1, 0, 3])
def test_message_framer_refuses_impossible_lengths(length: int) -> None:
    framer = MessageFramer(FRONTEND)
    framer.feed(b"Q" + length.to_bytes(4, "big", signed=True))
    with pytest.raises(ProtocolViolation, match="invalid message length"):
        framer.next_message()


def test_message_framer_caps_size_from_the_header_alone() -> None:
    framer = MessageFramer(FRONTEND, max_message_bytes=1024)
    framer.feed(b"Q" + (1 << 30).to_bytes(4, "big"))  # announces 1 GiB, sends 5 bytes
    with pytest.raises(MessageTooLarge):
        framer.next_message()


STARTUP = m.StartupMessage.build({"user": "agent", "database": "orders"}).raw
INITIAL = [m.SSLRequest().raw, m.GSSENCRequest().raw, STARTUP]


def test_startup_framer_whole_byte_by_byte_and_trailing() -> None:
    whole = StartupFramer()
    whole.feed(b"".join(INITIAL) + STARTUP[:6])
    assert [whole.next_message() for _ in INITIAL] == INITIAL
    assert whole.next_message() is None
    assert whole.take_rest() == STARTUP[:6]

    bytewise = StartupFramer()
    out: list[bytes] = []
    for byte in b"".join(INITIAL):
        bytewise.feed(bytes([byte]))
        while (raw := bytewise.next_message()) is not None:
            out.append(raw)
    assert out == INITIAL


@pytest.mark.parametrize("length", [0, 4, 7, MAX_STARTUP_BYTES + 1])
def test_startup_framer_refuses_bad_lengths(length: int) -> None:
    framer = StartupFramer()
    framer.feed(length.to_bytes(4, "big") + b"\x00" * 8)
    with pytest.raises(ProtocolViolation):
        framer.next_message()


def test_startup_framer_refuses_direct_tls() -> None:
    framer = StartupFramer()
    framer.feed(b"\x16\x03\x01")
    with pytest.raises(ProtocolViolation, match="direct TLS"):
        framer.next_message()


# --- BackendRelay

ROWS = [m.frame(b"D", b"\x00\x01" + len(v).to_bytes(4, "big") + v) for v in (b"a", b"b" * 500)]
BACKEND_STREAM = (
    m.frame(b"T", b"\x00\x00")
    + b"".join(ROWS)
    + m.frame(b"C", m.cstring("SELECT 2"))
    + m.ReadyForQuery.build("I").raw
)
INSPECT = frozenset(b"Z")


def relayed(relay: BackendRelay, raw: bytes) -> tuple[bytes, list[bytes]]:
    """What may be passed on after feeding raw, and the inspected messages inside it."""
    framed = relay.feed(raw)
    spans = relay.inspected
    assert len(spans) % 3 == 0
    messages = [framed[spans[i + 1] : spans[i + 2]] for i in range(0, len(spans), 3)]
    assert [message[0] for message in messages] == spans[::3]
    return framed, messages


def test_backend_relay_whole_input() -> None:
    relay = BackendRelay(BACKEND, INSPECT)
    passed, inspected = relayed(relay, BACKEND_STREAM)
    assert passed == BACKEND_STREAM
    assert inspected == [m.ReadyForQuery.build("I").raw]
    assert relay.at_boundary


def test_backend_relay_byte_by_byte() -> None:
    relay = BackendRelay(BACKEND, INSPECT)
    passed = b""
    inspected: list[bytes] = []
    for i in range(len(BACKEND_STREAM)):
        p, ins = relayed(relay, BACKEND_STREAM[i : i + 1])
        passed += p
        inspected += ins
    assert passed == BACKEND_STREAM
    assert inspected == [m.ReadyForQuery.build("I").raw]


def test_backend_relay_holds_back_a_partial_header_and_an_inspected_message() -> None:
    relay = BackendRelay(BACKEND, INSPECT)
    ready = m.ReadyForQuery.build("T").raw
    passed, _ = relayed(relay, ROWS[0] + ready[:4])
    assert passed == ROWS[0]
    assert not relay.at_boundary
    passed, inspected = relayed(relay, ready[4:] + ROWS[1][:2])
    assert inspected == [ready]
    assert passed == ready  # the 2 bytes of the next header wait
    passed, inspected = relayed(relay, ROWS[1][2:])
    assert passed == ROWS[1]
    assert inspected == []  # the last feed's messages are not left in the list
    assert relay.at_boundary


def test_backend_relay_refuses_unknown_types_and_bad_lengths() -> None:
    with pytest.raises(ProtocolViolation):
        BackendRelay(BACKEND, INSPECT).feed(b"\x7f\x00\x00\x00\x04")
    with pytest.raises(ProtocolViolation):
        BackendRelay(BACKEND, INSPECT).feed(b"D\x00\x00\x00\x03")
    # A negative length (the wire's Int32 is signed), for a passed-through type and an
    # inspected one: refused, never read as a huge body still to come.
    for kind in (b"D", b"Z"):
        with pytest.raises(ProtocolViolation, match="length -1"):
            BackendRelay(BACKEND, INSPECT).feed(kind + b"\xff\xff\xff\xff" + b"x" * 8)
        with pytest.raises(ProtocolViolation, match="length -2147483648"):
            BackendRelay(BACKEND, INSPECT).feed(kind + b"\x80\x00\x00\x00")


def test_backend_relay_caps_inspected_messages() -> None:
    relay = BackendRelay(BACKEND, frozenset(b"E"), max_inspected_bytes=100)
    with pytest.raises(MessageTooLarge):
        relay.feed(b"E" + (1000).to_bytes(4, "big"))
