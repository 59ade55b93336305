"""The codec against bytes captured from a real PostgreSQL 15, psycopg 3 and asyncpg.

Each vector is framed whole, byte by byte, and with trailing data; every
message is decoded, the sequence of message names must be the one the capture
tool recorded in MANIFEST.md, and the raw bytes must add up to the input (what
is forwarded is forwarded verbatim).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocols.postgres import messages as m
from protocols.postgres.framing import BackendRelay, MessageFramer, StartupFramer

VECTORS = Path(__file__).parent / "vectors"

BACKEND_NAMES = {
    "T": "RowDescription",
    "D": "DataRow",
    "C": "CommandComplete",
    "Z": "ReadyForQuery",
    "E": "ErrorResponse",
    "N": "NoticeResponse",
    "S": "ParameterStatus",
    "K": "BackendKeyData",
    "1": "ParseComplete",
    "2": "BindComplete",
    "3": "CloseComplete",
    "n": "NoData",
    "s": "PortalSuspended",
    "t": "ParameterDescription",
    "I": "EmptyQueryResponse",
    "G": "CopyInResponse",
    "H": "CopyOutResponse",
    "d": "CopyData",
    "c": "CopyDone",
    "A": "NotificationResponse",
    "v": "NegotiateProtocolVersion",
    "V": "FunctionCallResponse",
}
FRONTEND_NAMES = {
    "Q": "Query",
    "P": "Parse",
    "B": "Bind",
    "D": "Describe",
    "E": "Execute",
    "S": "Sync",
    "H": "Flush",
    "C": "Close",
    "p": "PasswordMessage",
    "d": "CopyData",
    "c": "CopyDone",
    "f": "CopyFail",
    "X": "Terminate",
    "F": "FunctionCall",
}


def load(name: str) -> bytes:
    lines = (VECTORS / name).read_text().splitlines()
    return bytes.fromhex("".join(line for line in lines if not line.startswith("#")))


def manifest() -> dict[str, list[str]]:
    """file name -> expected message names, from the capture tool's table."""
    expected: dict[str, list[str]] = {}
    for line in (VECTORS / "MANIFEST.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.split(" | ")]
        if len(cells) < 6 or not cells[0].startswith("| `"):
            continue
        names: list[str] = []
        for name, count in re.findall(
            r"([A-Za-z][A-Za-z0-9]*)(?:\[[^\]]*\]|\([^)]*\))?(?: x(\d+))?", cells[-1]
        ):
            names += [name] * int(count or 1)
        expected[cells[0].strip("|` ")] = names
    return expected


MANIFEST = manifest()
BACKEND_FILES = sorted(p.name for p in VECTORS.glob("be_*.hex"))
FRONTEND_FILES = sorted(p.name for p in VECTORS.glob("fe_*.hex"))


def backend_name(raw: bytes) -> str:
    message = m.decode_backend(raw)
    if raw[:1] == b"R":
        return type(message).__name__
    return BACKEND_NAMES[chr(raw[0])]


def split_backend(data: bytes, step: int | None = None) -> list[bytes]:
    """Messages in data, fed whole or `step` bytes at a time."""
    if len(data) == 1 and data in (b"S", b"N"):  # the one-byte answer to SSLRequest
        return [data]
    framer = MessageFramer(frozenset(m.BACKEND_TYPES))
    out: list[bytes] = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        framer.feed(chunk)
        while (raw := framer.next_message()) is not None:
            out.append(raw)
    assert framer.buffered == 0
    return out


def test_every_vector_is_in_the_manifest() -> None:
    assert set(BACKEND_FILES + FRONTEND_FILES) == set(MANIFEST)
    assert len(MANIFEST) >= 40


@pytest.mark.parametrize("name", BACKEND_FILES)
def test_backend_vector_decodes_to_the_recorded_messages(name: str) -> None:
    data = load(name)
    messages = split_backend(data)
    assert b"".join(messages) == data
    if messages == [data] and len(data) == 1:
        assert MANIFEST[name] == ["SSLResponse"]
        return
    assert [backend_name(raw) for raw in messages] == MANIFEST[name]
    assert split_backend(data, step=1) == messages


@pytest.mark.parametrize("name", BACKEND_FILES)
def test_backend_vector_passes_the_relay_unchanged_in_any_split(name: str) -> None:
    data = load(name)
    if len(data) == 1:
        return
    for step in (1, 3, 7, len(data)):
        relay = BackendRelay(frozenset(m.BACKEND_TYPES), frozenset(b"ZSE"))
        passed = b""
        for i in range(0, len(data), step):
            framed = relay.feed(data[i : i + step])
            spans = relay.inspected
            for kind, start, end in zip(spans[::3], spans[1::3], spans[2::3], strict=True):
                assert framed[start] == kind
                assert end - start == int.from_bytes(framed[start + 1 : start + 5], "big") + 1
            passed += framed
        assert passed == data
        assert relay.at_boundary


@pytest.mark.parametrize("name", BACKEND_FILES)
def test_backend_vector_with_trailing_partial_message(name: str) -> None:
    data = load(name)
    if len(data) == 1:
        return
    framer = MessageFramer(frozenset(m.BACKEND_TYPES))
    framer.feed(data + b"Z\x00\x00")
    count = 0
    while framer.next_message() is not None:
        count += 1
    assert count == len(MANIFEST[name])
    assert framer.buffered == 3


def split_frontend(data: bytes) -> list[str]:
    """Names of the messages a client sent: untyped startup-phase ones, then typed ones."""
    names: list[str] = []
    startup = StartupFramer()
    typed = MessageFramer(frozenset(m.FRONTEND_TYPES) | frozenset(b"p"))
    rest = data
    while rest and rest[0] == 0:  # untyped messages start with a length below 2**24
        startup.feed(rest)
        raw = startup.next_message()
        assert raw is not None
        rest = startup.take_rest()
        names.append(type(m.decode_initial(raw)).__name__)
    typed.feed(rest)
    while (raw := typed.next_message()) is not None:
        if raw[:1] != b"p":
            m.decode_frontend(raw)  # must decode without error
        names.append(FRONTEND_NAMES[chr(raw[0])])
    assert typed.buffered == 0
    return names


@pytest.mark.parametrize("name", FRONTEND_FILES)
def test_frontend_vector_decodes_to_the_recorded_messages(name: str) -> None:
    assert split_frontend(load(name)) == MANIFEST[name]


def test_a_real_startup_message_keeps_its_parameters() -> None:
    raw = load("fe_psycopg_startup_message.hex")
    startup = m.decode_initial(raw)
    assert isinstance(startup, m.StartupMessage)
    assert startup.raw == raw
    assert "user" in startup.parameters
    assert m.StartupMessage.build(startup.parameters).raw == raw  # same encoding as libpq
