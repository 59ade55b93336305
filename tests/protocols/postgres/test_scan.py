"""The gate's zero-copy scan against the full decoder, and the framer against any split.

`decode_frontend` is the reference: for any bytes, a scan accessor answers -1 exactly
when decoding raises ProtocolViolation, and otherwise the fields it points at are the
decoder's. Read from inside a larger buffer, it sees only its own message's bytes.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import ProtocolViolation
from protocols.postgres import messages as m
from protocols.postgres import scan
from protocols.postgres.framing import MessageFramer

Scanner = Callable[[bytes, int, int], int]

#: Names and SQL: text without NUL (what a driver sends), and any bytes without NUL
#: (which may not be UTF-8: the decoder refuses those, and so must the scan).
TEXT = st.text().map(lambda text: text.replace("\0", "").encode())
NAMES = st.one_of(TEXT, st.binary().map(lambda raw: raw.replace(b"\0", b"")))
FORMATS = st.lists(st.integers(-(2**15), 2**15 - 1), max_size=5)
PARAMS = st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=6)
OIDS = st.lists(st.integers(0, 2**32 - 1), max_size=6)


def parse(name: bytes, sql: bytes, oids: list[int]) -> bytes:
    body = struct.pack(f"!H{len(oids)}I", len(oids), *oids)
    return m.frame(b"P", name + b"\0" + sql + b"\0" + body)


def bind(
    portal: bytes,
    statement: bytes,
    formats: list[int],
    params: list[bytes | None],
    results: list[int],
) -> bytes:
    body = (
        portal
        + b"\0"
        + statement
        + b"\0"
        + struct.pack(f"!H{len(formats)}h", len(formats), *formats)
    )
    body += struct.pack("!H", len(params))
    for value in params:
        body += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    body += struct.pack(f"!H{len(results)}h", len(results), *results)
    return m.frame(b"B", body)


def execute(portal: bytes, max_rows: int) -> bytes:
    return m.frame(b"E", portal + b"\0" + struct.pack("!i", max_rows))


def target(kind: bytes, subtype: bytes, name: bytes) -> bytes:
    return m.frame(kind, subtype + name + b"\0")


MESSAGES = st.one_of(
    st.builds(parse, NAMES, NAMES, OIDS),
    st.builds(bind, NAMES, NAMES, FORMATS, PARAMS, FORMATS),
    st.builds(execute, NAMES, st.integers(-(2**31), 2**31 - 1)),
    st.builds(target, st.sampled_from([b"C", b"D"]), st.sampled_from([b"S", b"P"]), NAMES),
    st.builds(lambda sql: m.frame(b"Q", sql + b"\0"), NAMES),
)

SCANNERS: dict[int, Scanner] = {
    ord("Q"): scan.query_sql_end,
    ord("P"): scan.parse_sql_end,
    ord("B"): scan.bind_statement_end,
    ord("E"): scan.execute_portal_end,
    ord("C"): scan.target_name_end,
    ord("D"): scan.target_name_end,
}


def fields(raw: bytes, start: int, end: int) -> tuple[object, ...] | None:
    """The fields the gate reads, by the scan; None where the scan says malformed."""
    kind = raw[start]
    found = SCANNERS[kind](raw, start, end)
    if found < 0:
        return None
    assert start + 5 <= found < end
    if kind == ord("Q"):
        return (raw[start + 5 : found],)
    if kind in (ord("C"), ord("D")):
        return (chr(raw[start + 5]), raw[start + 6 : found])
    first_end = scan.text_end(raw, start + 5, end)
    assert first_end >= 0
    first = raw[start + 5 : first_end]
    if kind == ord("E"):
        assert found == first_end
        return (first,)
    second = raw[first_end + 1 : found]
    if kind == ord("B"):
        return (first, second)
    return (first, second, raw[found + 1 : end])  # Parse: name, SQL, declared types


def decoded(raw: bytes) -> tuple[object, ...] | None:
    """The same fields, by the full decoder; None where it raises ProtocolViolation."""
    try:
        message = m.decode_frontend(raw)
    except ProtocolViolation:
        return None
    if isinstance(message, m.Query):
        return (message.sql.encode(),)
    if isinstance(message, m.Close | m.Describe):
        return (message.kind, message.name.encode())
    if isinstance(message, m.Execute):
        return (message.portal.encode(),)
    if isinstance(message, m.Bind):
        return (message.portal.encode(), message.statement.encode())
    assert isinstance(message, m.Parse)
    types = message.param_types
    declared = struct.pack(f"!h{len(types)}I", len(types), *types)
    return (message.statement.encode(), message.sql.encode(), declared)


def agree(raw: bytes) -> tuple[object, ...] | None:
    """The scan and the decoder agree on `raw`, alone and amid other bytes."""
    expected = decoded(raw)
    assert fields(raw, 0, len(raw)) == expected
    # Amid NULs and valid-looking bytes on both sides: the scan reads only its own.
    before, after = b"\0\0P\0", b"\0\0\0\0\0\0\0\0"
    assert fields(before + raw + after, len(before), len(before) + len(raw)) == expected
    return expected


@given(MESSAGES)
def test_the_scan_reads_the_decoders_fields_from_any_message(raw: bytes) -> None:
    agree(raw)


@given(st.builds(parse, TEXT, TEXT, OIDS) | st.builds(bind, TEXT, TEXT, FORMATS, PARAMS, FORMATS))
def test_well_formed_messages_with_utf8_text_are_read(raw: bytes) -> None:
    assert agree(raw) is not None


@given(MESSAGES, st.data())
def test_a_truncated_message_is_malformed_to_both(raw: bytes, data: st.DataObject) -> None:
    # Every field's length follows from the bytes before it, so no prefix is whole.
    cut = data.draw(st.integers(5, len(raw) - 1))
    assert agree(raw[:cut]) is None


@given(MESSAGES, st.data())
def test_a_mutated_message_gets_the_decoders_answer(raw: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(5, len(raw) - 1))
    value = data.draw(st.integers(0, 255))
    agree(raw[:index] + bytes([value]) + raw[index + 1 :])


@given(st.sampled_from(b"QPBECD"), st.binary(max_size=60))
def test_random_bodies_get_the_decoders_answer(kind: int, body: bytes) -> None:
    agree(m.frame(bytes([kind]), body))


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc0\x80",  # overlong NUL
        b"\xed\xa0\x80",  # a surrogate
        b"\xf4\x90\x80\x80",  # above U+10FFFF
        b"\xe2\x82",  # cut short
        b"\xff",
    ],
)
def test_text_that_is_not_utf8_is_malformed(raw: bytes) -> None:
    assert scan.text_end(raw + b"\0", 0, len(raw) + 1) == -1
    assert agree(m.frame(b"C", b"S" + raw + b"\0")) is None


@given(st.text(max_size=20))
def test_text_end_accepts_exactly_utf8(text: str) -> None:
    raw = text.replace("\0", "").encode() + b"\0"
    assert scan.text_end(raw, 0, len(raw)) == len(raw) - 1
    assert scan.text_end(raw, 0, len(raw) - 1) == -1  # the NUL out of bounds


# --- the framer: any split of a stream frames the same messages

FRONTEND = frozenset(m.FRONTEND_TYPES)


def framed(chunks: list[bytes], max_bytes: int = 1 << 20) -> tuple[list[bytes], bool]:
    """The messages framed from `chunks`, and whether the framer refused the stream."""
    framer = MessageFramer(FRONTEND, max_bytes)
    out: list[bytes] = []
    try:
        for chunk in chunks:
            framer.feed(chunk)
            while (raw := framer.next_message()) is not None:
                out.append(raw)
    except ProtocolViolation:
        return out, True
    return out, False


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(raw)) for cut in cuts})
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


@given(st.lists(MESSAGES, max_size=6), st.lists(st.integers(0, 2000), max_size=10))
def test_any_split_of_a_stream_frames_the_same_messages(
    messages: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(messages)
    assert framed([stream]) == (messages, False)
    assert framed(split(stream, cuts)) == (messages, False)
    assert framed([bytes([b]) for b in stream]) == (messages, False)


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=8))
def test_garbage_frames_messages_or_a_protocol_violation(raw: bytes, cuts: list[int]) -> None:
    whole = framed([raw], 64)
    pieces = framed(split(raw, cuts), 64)
    # Split or whole, the same messages, then the same refusal (or a wait for more).
    assert pieces == whole
    for message in whole[0]:
        # Each framed message decodes, or is refused with a ProtocolViolation.
        if message[0] in SCANNERS:
            agree(message)
        else:
            with contextlib.suppress(ProtocolViolation):
                m.decode_frontend(message)


@pytest.mark.parametrize("count", [32767, 32768, 65535])
def test_counts_are_unsigned_16_bit(count: int) -> None:
    """A statement may have up to 65,535 parameters: the counts' top bit is no sign."""
    oids = [23] * count
    raw = parse(b"", b"select", oids)
    assert scan.parse_sql_end(raw, 0, len(raw)) > 0
    decoded = m.decode_frontend(raw)
    assert isinstance(decoded, m.Parse)
    assert len(decoded.param_types) == count
    values: list[bytes | None] = [b"1"] * count
    raw = bind(b"", b"", [0], values, [0] * count)
    assert scan.bind_statement_end(raw, 0, len(raw)) > 0
    decoded_bind = m.decode_frontend(raw)
    assert isinstance(decoded_bind, m.Bind)
    assert len(decoded_bind.params) == count
    description = m.frame(b"t", struct.pack(f"!H{count}I", count, *oids))
    assert len(m.decode_parameter_description(description)) == count
