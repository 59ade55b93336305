"""EventChain writes exactly what msgpack and hashlib would, in C (proxy/recording/event_chain.pyx)
and in pure Python (proxy/recording/event_chain.py), and the two write the same bytes: a transcript
written by either verifies under either.

Every test runs against each implementation there is: both in a compiled tree, the pure
one in scripts/test's pure run.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from proxy.recording.event_chain import EventChain
from tests.support.builds import implementations

CHAINS = {
    name: module.EventChain
    for name, module in implementations("proxy.recording.event_chain").items()
}

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


@pytest.fixture(params=sorted(CHAINS))
def chain_type(request: pytest.FixtureRequest) -> type[EventChain]:
    """Each implementation of EventChain: its tests run against both."""
    chain: type[EventChain] = CHAINS[request.param]
    return chain


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


def test_the_chain_starts_at_zero_with_nothing_pending(chain_type: type[EventChain]) -> None:
    chain = chain_type(Clock())
    assert (chain.seq, chain.prev, chain.has_pending, chain.take()) == (0, ZERO_HASH, False, b"")


@pytest.mark.parametrize("sql_size", SIZES)
@pytest.mark.parametrize("bind_size", [None, *SIZES])
def test_a_statement_event_is_what_msgpack_packs(
    chain_type: type[EventChain], sql_size: int, bind_size: int | None
) -> None:
    clock = Clock()
    chain = chain_type(clock)
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
def test_every_length_of_types_list_is_packed_as_msgpack_does(
    chain_type: type[EventChain], count: int
) -> None:
    clock = Clock()
    chain = chain_type(clock)
    types = tuple(random.Random(count).choice(INTS) for _ in range(count))
    chain.statement("SELECT $1", "read", "allow", b"B", types)
    data: dict[str, Any] = {"sql": "SELECT $1", "class": "read", "decision": "allow"}
    data |= {"bind": b"B", "types": list(types)}
    assert chain.take() == record(0, clock.now, "statement", data, ZERO_HASH)


@pytest.mark.parametrize("tag", ["", "SELECT 1", "x" * 31, "x" * 32, "ü" * 300])
def test_a_result_event_is_what_msgpack_packs(chain_type: type[EventChain], tag: str) -> None:
    clock = Clock()
    chain = chain_type(clock)
    chain.result_tag(tag)
    assert chain.take() == record(0, clock.now, "result", {"tag": tag}, ZERO_HASH)


def test_any_event_with_its_data_packed_by_msgpack(chain_type: type[EventChain]) -> None:
    clock = Clock()
    chain = chain_type(clock)
    data = {"ints": [*INTS, *NEGATIVE_INTS], "none": None, "float": 1.5, "nested": {"a": [b""]}}
    chain.append("approval.decided", PACKER.pack(data), 12.5)
    chain.append("k" * 40, PACKER.pack({}))  # no ts: the clock's
    first, second = records(chain.take())
    assert first == record(0, 12.5, "approval.decided", data, ZERO_HASH)
    assert second == record(1, clock.now, "k" * 40, {}, hashlib.sha256(first).hexdigest())


def test_sequence_numbers_and_links_follow_each_other_across_every_width(
    chain_type: type[EventChain],
) -> None:
    """seq crosses msgpack's 1-, 2- and 3-byte integer forms; each prev is the hash of the
    record before it, whichever method made it."""
    clock = Clock()
    chain = chain_type(clock)
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
def test_records_hashed_later_chain_as_if_hashed_at_once(
    chain_type: type[EventChain], seed: int
) -> None:
    """Records are packed when recorded and hashed by hash_pending (the relay's call
    once the message is passed on), by a 17th record waiting, or by whatever reads the
    chain's end: whichever comes first, and whatever the flush thread takes and puts
    back meanwhile, the links are the same."""
    rng = random.Random(seed)
    clock = Clock()
    chain = chain_type(clock)
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


def test_taken_records_put_back_go_first_and_queued_ones_keep_their_place(
    chain_type: type[EventChain],
) -> None:
    chain = chain_type(Clock())
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


def test_a_closed_chain_records_nothing_more(chain_type: type[EventChain]) -> None:
    chain = chain_type(Clock())
    chain.close()
    with pytest.raises(RuntimeError, match="after the transcript was sealed"):
        chain.statement("SELECT 1", "read", "allow")
    with pytest.raises(RuntimeError, match="after the transcript was sealed"):
        chain.result_tag("SELECT 1")
    with pytest.raises(RuntimeError, match="after the transcript was sealed"):
        chain.append("statement", PACKER.pack({}))
    assert (chain.seq, chain.has_pending) == (0, False)


def test_text_that_cannot_be_utf8_is_refused_and_changes_nothing(
    chain_type: type[EventChain],
) -> None:
    chain = chain_type(Clock())
    with pytest.raises(UnicodeEncodeError):
        chain.statement("SELECT '\udcff'", "read", "allow")
    assert (chain.seq, chain.prev, chain.has_pending) == (0, ZERO_HASH, False)


def test_the_pending_buffer_grows_past_its_kept_size_and_records_go_on_after_a_take(
    chain_type: type[EventChain],
) -> None:
    clock = Clock()
    chain = chain_type(clock)
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


# ---------------------------------------------------------------- random events, both ways

_TEXT = ["SELECT ", "x", "é", "€", "😀", "'", " ", "\n", "\x00", "1", "$1", "ü" * 40, "a" * 300]
_KINDS = ["statement", "result", "approval.decided", "session.end", "k" * 31, "k" * 32, "ü"]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_TEXT) for _ in range(rng.choice((0, 1, 3, 12, 40))))


def _random_data(rng: random.Random) -> dict[str, Any]:
    return {
        _text(rng)[:20]: rng.choice(
            [None, True, 1.5, rng.choice(INTS), rng.choice(NEGATIVE_INTS), _text(rng), b"\x01"]
        )
        for _ in range(rng.randrange(4))
    }


class Schedule:
    """A random run of records, takes, put-backs and seals on one chain, with the bytes
    msgpack and hashlib say it must take."""

    def __init__(self, chain: EventChain, clock: Clock, seed: int) -> None:
        self.chain, self.clock, self.rng = chain, clock, random.Random(seed)
        self.prev, self.seq, self.expected = ZERO_HASH, 0, b""

    def _recorded(self, kind: str, data: dict[str, Any], ts: float) -> None:
        raw = record(self.seq, ts, kind, data, self.prev)
        self.prev, self.seq = hashlib.sha256(raw).hexdigest(), self.seq + 1
        self.expected += raw

    def step(self, *, records_only: bool = False) -> bytes:
        """One random call; what the chain gave back, if it was a take. `records_only`:
        one event recorded, or the chain's hashing done."""
        rng, chain = self.rng, self.chain
        action = rng.randrange(17 if records_only else 20)
        if action < 7:
            sql, cls, decision = _text(rng), rng.choice(["read", "write"]), _text(rng)[:9]
            data: dict[str, Any] = {"sql": sql, "class": cls, "decision": decision}
            if rng.random() < 0.5:
                chain.statement(sql, cls, decision)
            else:
                bind = rng.randbytes(rng.choice(SIZES))
                types = tuple(rng.choice(INTS + NEGATIVE_INTS) for _ in range(rng.randrange(20)))
                chain.statement(sql, cls, decision, bind, types)
                data |= {"bind": bind, "types": list(types)}
            self._recorded("statement", data, self.clock.now)
        elif action < 12:
            tag = _text(rng)
            chain.result_tag(tag)
            self._recorded("result", {"tag": tag}, self.clock.now)
        elif action < 16:
            kind, data = rng.choice(_KINDS), _random_data(rng)
            ts = rng.choice([None, 0, 12.5, -1.25, 2**40 + 0.5, 1_700_000_000])
            chain.append(kind, PACKER.pack(data), ts)
            self._recorded(kind, data, self.clock.now if ts is None else float(ts))
        elif action == 16:
            chain.hash_pending()
        elif action == 17:
            seal = PACKER.pack({"seal": self.seq})
            chain.queue(seal)
            self.expected += seal
        elif action == 18:
            taken = chain.take()
            chain.put_back(taken)  # a failed write
        else:
            return chain.take()
        return b""


@pytest.mark.parametrize("seed", range(20))
def test_random_events_are_what_msgpack_and_hashlib_write(
    chain_type: type[EventChain], seed: int
) -> None:
    clock = Clock()
    schedule = Schedule(chain_type(clock), clock, seed)
    written = b"".join(schedule.step() for _ in range(1_500)) + schedule.chain.take()
    assert written == schedule.expected
    assert (schedule.chain.seq, schedule.chain.prev) == (schedule.seq, schedule.prev)


both = pytest.mark.skipif(
    len(CHAINS) < 2, reason="pure tree: there is no compiled EventChain to compare with"
)


@both
@pytest.mark.parametrize("seed", range(20))
def test_the_c_and_python_chains_write_the_same_bytes(seed: int) -> None:
    """The same calls at the same clock readings: the same bytes, taken at the same
    points, the same seq and prev after each call."""
    clocks = Clock(), Clock()
    runs = [
        Schedule(CHAINS[name](clock), clock, seed)
        for name, clock in zip(("compiled", "pure"), clocks, strict=True)
    ]
    for _ in range(1_500):
        assert runs[0].step() == runs[1].step()
        assert (runs[0].chain.seq, runs[0].chain.has_pending) == (
            runs[1].chain.seq,
            runs[1].chain.has_pending,
        )
    assert runs[0].chain.take() == runs[1].chain.take()
    assert runs[0].chain.prev == runs[1].chain.prev
    assert runs[0].expected == runs[1].expected


@both
def test_both_chains_refuse_the_same_calls_the_same_way() -> None:
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("statement", ("SELECT '\udcff'", "read", "allow")),
        ("result_tag", ("\ud800",)),
        ("append", ("\udcff", b"\x80")),
        ("statement", ("SELECT 1", "read", "allow", b"B", (2**63,))),
        ("statement", ("SELECT 1", "read", "allow", b"B", (-(2**63) - 1,))),
        ("statement", ("SELECT 1", "read", "allow", b"B", ("23",))),
        ("statement", ("SELECT 1", "read", "allow", b"B", [23])),
        ("append", ("statement", b"\x80", "12.5")),
    ]
    for method, args in calls:
        raised = []
        for name in ("compiled", "pure"):
            chain = CHAINS[name](Clock())
            with pytest.raises(Exception) as error:  # noqa: PT011 (the same one, either way)
                getattr(chain, method)(*args)
            assert (chain.seq, chain.prev, chain.has_pending) == (0, ZERO_HASH, False)
            raised.append(error.type)
        assert raised[0] is raised[1], (method, args, raised)


WRITERS = implementations("proxy.recording.writer")


@pytest.mark.parametrize("build", sorted(WRITERS))
@pytest.mark.parametrize("writer", sorted(CHAINS))
def test_a_transcript_written_by_either_chain_verifies_under_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str, build: str
) -> None:
    """A whole session recorded through either build of the transcript writer (the pure
    one, or the compiled one) with each chain verifies, and the file is the same, byte
    for byte, whichever chain wrote it."""
    from proxy.recording.signing import SigningKey
    from proxy.recording.verifier import verify

    module = WRITERS[build]
    key = SigningKey.generate()
    files = {}
    for name in sorted(CHAINS):
        monkeypatch.setattr(module, "EventChain", CHAINS[name])
        clock = Clock()
        recorder = module.Recorder(tmp_path / name, key, clock=clock)
        recording = recorder.open("3f2a9c1e5b7d4e0f8a6c2b1d9e7f5a3c", {"target": "orders"})
        assert isinstance(recording.chain, CHAINS[name])
        schedule = Schedule(recording.chain, clock, seed=3)
        for _ in range(300):
            schedule.step(records_only=True)
        recording.seal({"reason": "client closed the connection"})
        files[name] = recording.path
    result = verify(files[writer], key.public_key)
    assert (result.status, result.problems) == ("valid", [])
    assert result.events == schedule.seq + 2  # the start and the end events
    contents = {path.read_bytes() for path in files.values()}
    assert len(contents) == 1
