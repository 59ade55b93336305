"""EventChain (proxy/event_chain.pyx) writes exactly what msgpack and hashlib would."""

from __future__ import annotations

import hashlib
import itertools
import random
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from proxy.event_chain import EventChain

PACKER = msgpack.Packer(use_bin_type=True)
ZERO_HASH = "0" * 64
# Sizes either side of every msgpack length-header boundary.
SIZES = (0, 1, 31, 32, 255, 256, 65535, 65536)
INTS = (0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1)
NEGATIVE_INTS = (-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63))


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.25

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def record(seq: int, ts: float, kind: str, data: dict[str, Any], prev: str) -> bytes:
    raw = PACKER.pack({"seq": seq, "ts": ts, "kind": kind, "data": data, "prev": prev})
    assert isinstance(raw, bytes)
    return raw


def records(raw: bytes) -> list[bytes]:
    """Taken bytes, cut where each msgpack record ends."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(raw)
    cuts = [0]
    for _ in unpacker:
        cuts.append(unpacker.tell())
    assert cuts[-1] == len(raw)
    return [raw[a:b] for a, b in itertools.pairwise(cuts)]


def test_the_chain_starts_at_zero_with_nothing_pending() -> None:
    chain = EventChain(Clock())
    assert (chain.seq, chain.prev, chain.has_pending, chain.take()) == (0, ZERO_HASH, False, b"")


@pytest.mark.parametrize("sql_size", SIZES)
@pytest.mark.parametrize("bind_size", [None, *SIZES])
def test_a_statement_event_is_what_msgpack_packs(sql_size: int, bind_size: int | None) -> None:
    clock = Clock()
    chain = EventChain(clock)
    sql = ("é€😀x" * sql_size)[:sql_size]  # multi-byte characters: UTF-8 lengths count
    data: dict[str, Any] = {"sql": sql, "class": "read", "decision": "allow"}
    if bind_size is None:
        chain.statement(sql, "read", "allow")
    else:
        bind = bytes(range(256)) * (bind_size // 256) + bytes(bind_size % 256)
        types = (23, 25, 0, 2**32 - 1)
        chain.statement(sql, "read", "allow", bind, types)
        data |= {"bind": bind, "types": list(types)}
    raw = chain.take()
    assert raw == record(0, clock.now, "statement", data, ZERO_HASH)
    assert chain.prev == hashlib.sha256(raw).hexdigest()
    assert chain.seq == 1


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 70_000])
def test_every_length_of_types_list_is_packed_as_msgpack_does(count: int) -> None:
    clock = Clock()
    chain = EventChain(clock)
    types = tuple(random.Random(count).choice(INTS) for _ in range(count))
    chain.statement("SELECT $1", "read", "allow", b"B", types)
    data: dict[str, Any] = {"sql": "SELECT $1", "class": "read", "decision": "allow"}
    data |= {"bind": b"B", "types": list(types)}
    assert chain.take() == record(0, clock.now, "statement", data, ZERO_HASH)


@pytest.mark.parametrize("tag", ["", "SELECT 1", "x" * 31, "x" * 32, "ü" * 300])
def test_a_result_event_is_what_msgpack_packs(tag: str) -> None:
    clock = Clock()
    chain = EventChain(clock)
    chain.result_tag(tag)
    assert chain.take() == record(0, clock.now, "result", {"tag": tag}, ZERO_HASH)


def test_any_event_with_its_data_packed_by_msgpack() -> None:
    clock = Clock()
    chain = EventChain(clock)
    data = {"ints": [*INTS, *NEGATIVE_INTS], "none": None, "float": 1.5, "nested": {"a": [b""]}}
    chain.append("approval.decided", PACKER.pack(data), 12.5)
    chain.append("k" * 40, PACKER.pack({}))  # no ts: the clock's
    first, second = records(chain.take())
    assert first == record(0, 12.5, "approval.decided", data, ZERO_HASH)
    assert second == record(1, clock.now, "k" * 40, {}, hashlib.sha256(first).hexdigest())


def test_sequence_numbers_and_links_follow_each_other_across_every_width() -> None:
    """seq crosses msgpack's 1-, 2- and 3-byte integer forms; each prev is the hash of the
    record before it, whichever method made it."""
    clock = Clock()
    chain = EventChain(clock)
    expected: list[bytes] = []
    prev = ZERO_HASH
    for seq in range(70_000):
        if seq % 3 == 0:
            chain.statement(f"SELECT {seq}", "read", "allow")
            data: dict[str, Any] = {"sql": f"SELECT {seq}", "class": "read", "decision": "allow"}
            kind = "statement"
        elif seq % 3 == 1:
            chain.result_tag("SELECT 1")
            data, kind = {"tag": "SELECT 1"}, "result"
        else:
            chain.append("session.end", PACKER.pack({"seq": seq}))
            data, kind = {"seq": seq}, "session.end"
        raw = record(seq, clock.now, kind, data, prev)
        expected.append(raw)
        prev = hashlib.sha256(raw).hexdigest()
    taken = chain.take()
    assert records(taken) == expected
    assert taken == b"".join(expected)
    assert (chain.seq, chain.prev) == (70_000, prev)


@pytest.mark.parametrize("seed", range(5))
def test_records_hashed_later_chain_as_if_hashed_at_once(seed: int) -> None:
    """Records are packed when recorded and hashed by hash_pending (the relay's call
    once the message is passed on), by a 17th record waiting, or by whatever reads the
    chain's end: whichever comes first, and whatever the flush thread takes and puts
    back meanwhile, the links are the same."""
    rng = random.Random(seed)
    clock = Clock()
    chain = EventChain(clock)
    prev, pending, written, everything = ZERO_HASH, b"", b"", b""
    failed_write: bytes | None = None  # taken, then put back after the next record
    for seq in range(3_000):
        chain.result_tag(f"SELECT {seq}")
        raw = record(seq, clock.now, "result", {"tag": f"SELECT {seq}"}, prev)
        prev = hashlib.sha256(raw).hexdigest()
        pending += raw
        everything += raw
        if failed_write is not None:
            chain.put_back(failed_write)
            pending = failed_write + pending
            failed_write = None
        action = rng.randrange(40)
        if action < 8:
            chain.hash_pending()
        elif action == 8:
            assert chain.prev == prev
        elif action == 9:
            assert chain.take() == pending
            written += pending
            pending = b""
        elif action == 10:
            failed_write = chain.take()
            assert failed_write == pending
            pending = b""
        elif action == 11:
            seal = PACKER.pack({"seal": seq})
            chain.queue(seal)  # outside the chain: not hashed, not linked
            pending += seal
            everything += seal
    last = chain.take()
    assert last == pending
    assert written + last == everything
    assert (chain.seq, chain.prev) == (3_000, prev)


def test_taken_records_put_back_go_first_and_queued_ones_keep_their_place() -> None:
    chain = EventChain(Clock())
    chain.result_tag("A")
    taken = chain.take()
    chain.result_tag("B")
    chain.put_back(taken)
    chain.queue(PACKER.pack({"seal": 1}))
    pending = records(chain.take())
    assert [msgpack.unpackb(raw)["data"]["tag"] for raw in pending[:2]] == ["A", "B"]
    assert msgpack.unpackb(pending[2]) == {"seal": 1}
    assert not chain.has_pending
    assert chain.take() == b""


def test_a_closed_chain_records_nothing_more() -> None:
    chain = EventChain(Clock())
    chain.close()
    with pytest.raises(RuntimeError, match="after the transcript was sealed"):
        chain.statement("SELECT 1", "read", "allow")
    with pytest.raises(RuntimeError, match="after the transcript was sealed"):
        chain.result_tag("SELECT 1")
    with pytest.raises(RuntimeError, match="after the transcript was sealed"):
        chain.append("statement", PACKER.pack({}))
    assert (chain.seq, chain.has_pending) == (0, False)


def test_text_that_cannot_be_utf8_is_refused_and_changes_nothing() -> None:
    chain = EventChain(Clock())
    with pytest.raises(UnicodeEncodeError):
        chain.statement("SELECT '\udcff'", "read", "allow")
    assert (chain.seq, chain.prev, chain.has_pending) == (0, ZERO_HASH, False)


def test_the_pending_buffer_grows_past_its_kept_size_and_records_go_on_after_a_take() -> None:
    clock = Clock()
    chain = EventChain(clock)
    big = "x" * 700_000  # two of these: past the 1 MiB the chain keeps between takes
    chain.statement(big, "read", "allow")
    chain.statement(big, "read", "allow")
    first, second = records(chain.take())
    assert second == record(
        1,
        clock.now,
        "statement",
        {"sql": big, "class": "read", "decision": "allow"},
        hashlib.sha256(first).hexdigest(),
    )
    chain.put_back(first + second)  # a failed write: back in front of what came since
    chain.result_tag("SELECT 1")
    again = records(chain.take())
    assert again[:2] == [first, second]
    assert again[2] == record(
        2, clock.now, "result", {"tag": "SELECT 1"}, hashlib.sha256(second).hexdigest()
    )
