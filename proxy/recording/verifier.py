"""Reading and verifying transcripts: every record that can be read, then whether the
chain is whole, the numbering contiguous and the seal's signature good.

Nothing here trusts the file: a record that does not have the format's shape stops the
reading, and the verifier names each break by the events it concerns.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proxy.recording import signing
from proxy.recording.format import (
    EVENT_KEYS as _EVENT_KEYS,
)
from proxy.recording.format import (
    FIRST_VERSION,
    SESSION_END,
    SESSION_START,
    SUFFIX,
    ZERO_HASH,
    EventData,
    decode,
    seal_message,
)
from proxy.recording.format import (
    SEAL_KEYS as _SEAL_KEYS,
)
from proxy.recording.format import (
    is_count as _is_int,
)
from proxy.rendering import one_line_sql

_HEX_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    ts: float
    kind: str
    data: dict[str, Any]
    prev: str
    #: SHA-256 of the record's bytes as read.
    hash: str
    #: Byte offset of the record in the file.
    offset: int


@dataclass(frozen=True, slots=True)
class Seal:
    last: str
    seq: int
    key_id: str
    sig: bytes
    offset: int


@dataclass(frozen=True, slots=True)
class Transcript:
    path: Path
    events: tuple[Event, ...]
    seal: Seal | None
    #: Why reading stopped before the end of the file (None: it did not).
    stopped: str | None = None
    #: True when `stopped` is an incomplete last record (a cut file), not garbage.
    truncated: bool = False
    #: Records found after the seal.
    after_seal: bool = False

    @property
    def start(self) -> dict[str, Any] | None:
        if self.events and self.events[0].kind == SESSION_START:
            return self.events[0].data
        return None

    @property
    def end(self) -> dict[str, Any] | None:
        if self.events and self.events[-1].kind == SESSION_END:
            return self.events[-1].data
        return None

    @property
    def version(self) -> int:
        """The schema version its session start names (1 when it names none)."""
        start = self.start
        version = start.get("format") if start else None
        return version if _is_int(version) and version > 0 else FIRST_VERSION

    def decoded(self, event: Event) -> EventData:
        """One of its events' data as the kind's definition (proxy/recording/format.py)."""
        return decode(event.kind, event.data, self.version)

    @property
    def session_id(self) -> str:
        """The id the session start names, else the file's name."""
        start = self.start
        named = start.get("session_id") if start else None
        return named if isinstance(named, str) else self.path.name.removesuffix(SUFFIX)


def read_transcript(path: Path) -> Transcript:
    """Every record that can be read, stopping at the first one that cannot."""
    return parse_transcript(path.read_bytes(), path)


def parse_transcript(raw: bytes, path: Path) -> Transcript:
    """`read_transcript` on bytes already in hand; `path` names the session's file."""
    # max_buffer_size=0: no limit beyond the file, which is already in memory. Map keys
    # that are not strings (an int the writer was given) read back, rather than stop here.
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
    unpacker.feed(raw)
    events: list[Event] = []
    seal: Seal | None = None
    offset = 0
    while offset < len(raw):
        try:
            record = unpacker.unpack()
        except (msgpack.UnpackException, ValueError, TypeError) as error:
            truncated = isinstance(error, msgpack.OutOfData)
            if seal is not None:
                stopped = f"{len(raw) - offset} bytes after the seal, at byte {offset}"
                return Transcript(path, tuple(events), seal, stopped, after_seal=True)
            if truncated:
                stopped = f"incomplete record at byte {offset} ({len(raw) - offset} bytes)"
            else:
                stopped = f"undecodable record at byte {offset}"
            return Transcript(path, tuple(events), seal, stopped, truncated=truncated)
        end = unpacker.tell()
        if seal is not None:
            stopped = f"a record after the seal, at byte {offset}"
            return Transcript(path, tuple(events), seal, stopped, after_seal=True)
        if isinstance(record, dict) and set(record) == {"seal"}:
            seal = _seal(record["seal"], offset)
            if seal is None:
                return Transcript(path, tuple(events), None, f"malformed seal at byte {offset}")
        else:
            event = _event(record, raw[offset:end], offset)
            if event is None:
                stopped = f"a record at byte {offset} that is not an event"
                return Transcript(path, tuple(events), seal, stopped)
            events.append(event)
        offset = end
    return Transcript(path, tuple(events), seal)


def _event(record: object, raw: bytes, offset: int) -> Event | None:
    if not isinstance(record, dict) or tuple(record) != _EVENT_KEYS:
        return None
    seq, ts, kind, data, prev = (record[key] for key in _EVENT_KEYS)
    if (
        not _is_int(seq)
        or not isinstance(ts, float | int)
        or isinstance(ts, bool)
        or not isinstance(kind, str)
        or not isinstance(data, dict)
        or not isinstance(prev, str)
        or not _HEX_HASH.fullmatch(prev)
    ):
        return None
    return Event(seq, float(ts), kind, data, prev, hashlib.sha256(raw).hexdigest(), offset)


def _seal(fields: object, offset: int) -> Seal | None:
    # Nothing here but what the signature covers (key_id is checked against the key).
    if not isinstance(fields, dict) or tuple(fields) != _SEAL_KEYS:
        return None
    last, seq, key_id, sig = (fields[key] for key in _SEAL_KEYS)
    if (
        not isinstance(last, str)
        or not _is_int(seq)
        or not isinstance(key_id, str)
        or not isinstance(sig, bytes)
    ):
        return None
    return Seal(last, seq, key_id, sig, offset)


# --- verifying ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    sealed: bool
    events: int
    problems: list[str]
    #: How many events, from the first, link up with nothing wrong before them.
    intact: int = 0

    @property
    def status(self) -> str:
        """ "valid"; "unsealed" (intact, but nothing proves the end is there); "invalid"."""
        if self.ok:
            return "valid"
        if not self.sealed and self.intact == self.events and len(self.problems) == 1:
            return "unsealed"
        return "invalid"


def verify(path: Path, public_key: Ed25519PublicKey) -> VerifyResult:
    """Whether the file is whole and unaltered: every link, contiguous seq, a valid seal."""
    return verify_transcript(read_transcript(path), public_key)


def verify_transcript(transcript: Transcript, public_key: Ed25519PublicKey) -> VerifyResult:
    problems = _chain_problems(transcript.events)
    events = transcript.events
    intact = len(events)
    for position, event in enumerate(events):
        if event.seq != position:
            intact = position
            break
        if event.prev != (events[position - 1].hash if position else ZERO_HASH):
            # The break is in the link, so the event before it is suspect too.
            intact = max(0, position - 1)
            break
    start = transcript.start
    if events and start is None:
        problems.append(f"event {events[0].seq}: not a session start")
    stem = transcript.path.name.removesuffix(SUFFIX)
    if start is not None and transcript.session_id != stem:
        problems.append(f"event 0: names session {_line(transcript.session_id)}, the file {stem}")
    if transcript.stopped is not None and not transcript.after_seal:
        problems.append(_stop_problem(transcript))
    seal = transcript.seal
    if seal is None:
        if transcript.stopped is None:
            problems.append(_unsealed_problem(transcript, intact))
    else:
        problems.extend(_seal_problems(transcript, seal, public_key))
        if transcript.after_seal:
            problems.append(f"seal: {transcript.stopped} (added after the session was sealed)")
    if not events and transcript.stopped is None:
        problems.insert(0, "no events: the file is empty")
    return VerifyResult(
        ok=not problems,
        sealed=seal is not None,
        events=len(events),
        problems=problems,
        intact=intact,
    )


def _chain_problems(events: tuple[Event, ...]) -> list[str]:
    """Each break in the chain or the numbering, named by the events it concerns.

    The hash links are the proof; the seq numbers only help say what happened: a gap
    with no matching event elsewhere is a deletion, a link to an event found elsewhere
    is a reordering, a link to nothing where the numbering fits is an alteration.
    """
    problems: list[str] = []
    position_of: dict[str, int] = {}
    for position, event in enumerate(events):
        position_of.setdefault(event.hash, position)
    seen_hashes: set[str] = set()
    expected_seq = 0
    skip: set[int] = set()
    for position, event in enumerate(events):
        previous = events[position - 1] if position else None
        linked = event.prev == (previous.hash if previous else ZERO_HASH)
        if position in skip:
            expected_seq = max(expected_seq, event.seq + 1)
            seen_hashes.add(event.hash)
            continue
        if event.hash in seen_hashes:
            problems.append(f"event {event.seq}: duplicated (a second copy at byte {event.offset})")
            continue
        seen_hashes.add(event.hash)
        if linked:
            if event.seq != expected_seq:
                problems.append(
                    f"event {expected_seq}: altered (its sequence number reads {event.seq})"
                )
            expected_seq += 1
            continue
        target = position_of.get(event.prev)
        if target is not None:
            following = events[position + 1] if position + 1 < len(events) else None
            if (
                following is not None
                and target == position + 1
                and following.prev == (previous.hash if previous else ZERO_HASH)
            ):
                problems.append(f"events {following.seq} and {event.seq}: swapped (reordered)")
                skip.add(position + 1)
                after = events[position + 2] if position + 2 < len(events) else None
                if after is not None and after.prev == event.hash:
                    skip.add(position + 2)
            else:
                problems.append(
                    f"event {event.seq}: out of order (it follows event {events[target].seq}, "
                    f"found after event {previous.seq if previous else 'none'})"
                )
            expected_seq = max(expected_seq, event.seq + 1)
            continue
        if event.seq > expected_seq:
            problems.append(
                f"{_event_range(expected_seq, event.seq - 1)}: missing (deleted) before "
                f"event {event.seq}"
            )
        elif previous is None:
            problems.append(f"event {event.seq}: altered (it does not start the chain)")
        else:
            problems.append(
                f"event {expected_seq - 1}: altered (its hash does not match the link in "
                f"event {event.seq})"
            )
        expected_seq = event.seq + 1
    return problems


def _seal_problems(transcript: Transcript, seal: Seal, public_key: Ed25519PublicKey) -> list[str]:
    problems: list[str] = []
    ours = signing.key_id(public_key)
    if seal.key_id != ours:
        problems.append(f"seal: signed by another key ({seal.key_id}, not {ours})")
    elif not signing.verify(
        public_key, seal.sig, seal_message(transcript.session_id, seal.last, seal.seq)
    ):
        problems.append("seal: signature invalid")
    if not transcript.events:
        return problems
    last = transcript.events[-1]
    if seal.seq > last.seq:
        problems.append(
            f"{_event_range(last.seq + 1, seal.seq)}: missing (removed from the end; "
            f"the seal covers event {seal.seq})"
        )
    elif seal.seq < last.seq:
        problems.append(
            f"{_event_range(seal.seq + 1, last.seq)}: not covered by the seal "
            f"(it ends at event {seal.seq})"
        )
    elif seal.last != last.hash:
        problems.append(f"event {last.seq}: altered (its hash does not match the seal)")
    return problems


def _stop_problem(transcript: Transcript) -> str:
    events = transcript.events
    if transcript.truncated and transcript.seal is None:
        after = f"event {events[-1].seq}" if events else "the start"
        return f"truncated after {after}: {transcript.stopped} (no seal)"
    position = events[-1].seq + 1 if events else 0
    return f"event {position}: {transcript.stopped}; nothing after it can be read"


def _unsealed_problem(transcript: Transcript, intact: int) -> str:
    if not transcript.events:
        return "unsealed: no events"
    last = transcript.events[-1].seq
    return (
        f"unsealed: {intact} events intact (0 to {last}); no seal, so events after "
        f"{last} may be missing (the gateway stopped before the session ended, or the "
        "end of the file was cut)"
        if intact == len(transcript.events)
        else "unsealed: no seal"
    )


def _event_range(first: int, last: int) -> str:
    return f"event {first}" if first == last else f"events {first} to {last}"


def describe(result: VerifyResult) -> str:
    """One line: what the verification found."""
    if result.ok:
        return f"sealed, {result.events} events"
    return "; ".join(result.problems)


def _line(value: object) -> str:
    return "?" if value is None else one_line_sql(str(value), sys.maxsize)
