"""The session ledger: one signed, hash-chained record per recorded session.

A transcript proves its own events (hash chain, sealed signature), but a transcript
deleted whole leaves nothing behind. So when the Recorder opens a transcript it first
appends a record to `data_dir/transcripts/ledger.airlock`:

    {"seq": n, "session_id": ..., "path": "<YYYY-MM-DD>/<session_id>.airlock",
     "ts": unix seconds, "prev": SHA-256 hex of the previous record's bytes, "sig": ...}

When the session's transcript is sealed (its end and seal written and fsynced), a
second record says so, in the same chain:

    {"seq": n, "kind": "seal", "session_id": ..., "last": hex hash of the transcript's
     last event, "events": that event's seq, "ts": ..., "prev": ..., "sig": ...}

signed over `seal_entry_message()`. A transcript whose seal record is in the ledger but
whose file ends earlier or differently had its tail cut; one with a start record and no
seal record was never sealed (the gateway crashed, or the session is still running).
Start records are unchanged, so ledgers written before seal records existed read as
before. (A gateway older than seal records refuses to extend a ledger holding them.)

`sig` is the gateway's Ed25519 signature over `entry_message()`. `airlock verify --all`
reads the ledger back: a record edited, removed from the middle, reordered or signed by
another key is named, and so is every listed session whose transcript is missing.
What no local file can show is the newest records cut off together with their
transcripts; an auditor who keeps the last `seq` and hash (`verify --all` prints them)
sees that too, next time.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proxy.recording import signing
from proxy.recording.signing import SigningKey

LEDGER_FILE = "ledger.airlock"
ZERO_HASH = "0" * 64
_CONTEXT = b"airlock session ledger v1\0"
_SEAL_CONTEXT = b"airlock session ledger seal v1\0"
_KEYS = ("seq", "session_id", "path", "ts", "prev", "sig")
_SEAL_KEYS = ("seq", "kind", "session_id", "last", "events", "ts", "prev", "sig")
SEAL_KIND = "seal"


class LedgerError(Exception):
    """The ledger cannot be written (the session is then refused, like its transcript)."""


def entry_message(seq: int, session_id: str, path: str, prev: str) -> bytes:
    """What an entry's signature covers."""
    return _CONTEXT + f"{seq}\0{session_id}\0{path}\0{prev}".encode()


def seal_entry_message(seq: int, session_id: str, last: str, events: int, prev: str) -> bytes:
    """What a seal record's signature covers."""
    return _SEAL_CONTEXT + f"{seq}\0{session_id}\0{last}\0{events}\0{prev}".encode()


@dataclass(frozen=True, slots=True)
class SealEntry:
    """The session's transcript was sealed: its last event is `events`, hashing to `last`."""

    seq: int
    session_id: str
    last: str
    events: int
    ts: float
    prev: str
    sig: bytes
    hash: str

    def message(self) -> bytes:
        return seal_entry_message(self.seq, self.session_id, self.last, self.events, self.prev)


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    session_id: str
    path: str  # relative to the transcripts directory
    ts: float
    prev: str
    sig: bytes
    hash: str  # SHA-256 hex of the record's bytes, which the next record's `prev` names

    def message(self) -> bytes:
        return entry_message(self.seq, self.session_id, self.path, self.prev)


def _records(raw: bytes) -> Iterator[tuple[object, bytes] | None]:
    """Each record with its bytes; None once the rest cannot be read."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=0)
    unpacker.feed(raw)
    offset = 0
    while offset < len(raw):
        try:
            record = unpacker.unpack()
        except (msgpack.UnpackException, ValueError, TypeError):
            yield None
            return
        end = unpacker.tell()
        yield record, raw[offset:end]
        offset = end


def _entry(record: object, raw: bytes) -> Entry | SealEntry | None:
    if isinstance(record, dict) and tuple(record) == _SEAL_KEYS:
        return _seal_entry(record, raw)
    if not isinstance(record, dict) or tuple(record) != _KEYS:
        return None
    seq, session_id, path, ts, prev, sig = (record[k] for k in _KEYS)
    if not (
        isinstance(seq, int)
        and isinstance(session_id, str)
        and isinstance(path, str)
        and isinstance(ts, int | float)
        and isinstance(prev, str)
        and isinstance(sig, bytes)
    ):
        return None
    return Entry(seq, session_id, path, float(ts), prev, sig, hashlib.sha256(raw).hexdigest())


def _seal_entry(record: dict[str, object], raw: bytes) -> SealEntry | None:
    seq, kind, session_id, last, events, ts, prev, sig = (record[k] for k in _SEAL_KEYS)
    if not (
        isinstance(seq, int)
        and kind == SEAL_KIND
        and isinstance(session_id, str)
        and isinstance(last, str)
        and isinstance(events, int)
        and isinstance(ts, int | float)
        and isinstance(prev, str)
        and isinstance(sig, bytes)
    ):
        return None
    digest = hashlib.sha256(raw).hexdigest()
    return SealEntry(seq, session_id, last, events, float(ts), prev, sig, digest)


class Ledger:
    """Appends entries for one Recorder; continues the chain already on disk."""

    def __init__(self, directory: Path, key: SigningKey) -> None:
        self.path = directory / LEDGER_FILE
        self._key = key
        self._lock = threading.Lock()
        self._seq, self._prev = 0, ZERO_HASH
        if self.path.exists():
            for item in _records(self.path.read_bytes()):
                entry = _entry(*item) if item is not None else None
                if entry is None:
                    # Never extend a chain that does not read back: verify must name it.
                    raise LedgerError(f"{self.path}: unreadable; the gateway will not extend it")
                self._seq, self._prev = entry.seq + 1, entry.hash

    def append(self, session_id: str, path: str, ts: float) -> None:
        """Write and fsync the session's entry. LedgerError when the disk refuses."""
        with self._lock:
            self._write(
                {
                    "seq": self._seq,
                    "session_id": session_id,
                    "path": path,
                    "ts": ts,
                    "prev": self._prev,
                    "sig": self._key.sign(entry_message(self._seq, session_id, path, self._prev)),
                }
            )

    def append_seal(self, session_id: str, last: str, events: int, ts: float) -> None:
        """Write and fsync the record that the session's transcript was sealed, its last
        event being `events` with hash `last`. LedgerError when the disk refuses."""
        with self._lock:
            message = seal_entry_message(self._seq, session_id, last, events, self._prev)
            self._write(
                {
                    "seq": self._seq,
                    "kind": SEAL_KIND,
                    "session_id": session_id,
                    "last": last,
                    "events": events,
                    "ts": ts,
                    "prev": self._prev,
                    "sig": self._key.sign(message),
                }
            )

    def _write(self, record: dict[str, Any]) -> None:
        """Append one record and fsync; the caller holds the lock."""
        raw = msgpack.packb(record, use_bin_type=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                written = os.write(fd, raw)
                if written != len(raw):
                    raise OSError(f"short write to the ledger ({written} of {len(raw)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            raise LedgerError(f"cannot write {self.path}: {error}") from None
        self._seq += 1
        self._prev = hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class LedgerResult:
    #: The sessions' start records.
    entries: tuple[Entry, ...]
    problems: tuple[str, ...]
    #: Session ids of listed sessions whose transcript file is missing.
    missing: tuple[str, ...]
    #: The seal records whose signature verifies, by session id.
    seals: dict[str, SealEntry] = field(default_factory=dict)
    #: The chain's last record (its `seq` and hash are what an auditor keeps).
    last: Entry | SealEntry | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing


def verify_ledger(directory: Path, public_key: Ed25519PublicKey) -> LedgerResult | None:
    """Read the ledger under `directory` back and check it; None when there is none."""
    path = directory / LEDGER_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    entries: list[Entry] = []
    seals: dict[str, SealEntry] = {}
    problems: list[str] = []
    prev = ZERO_HASH
    last: Entry | SealEntry | None = None
    for index, item in enumerate(_records(raw)):
        entry = _entry(*item) if item is not None else None
        if entry is None:
            problems.append(f"entry {index}: unreadable; nothing after it can be checked")
            break
        if entry.seq != index:
            problems.append(f"entry {index}: numbered {entry.seq} (entries removed or reordered)")
        if entry.prev != prev:
            problems.append(
                f"entry {index}: does not follow the entry before it (one altered or removed)"
            )
        if not signing.verify(public_key, entry.sig, entry.message()):
            problems.append(f"entry {index}: signature does not verify (altered, or another key)")
        elif isinstance(entry, SealEntry):
            seals[entry.session_id] = entry
        if isinstance(entry, Entry):
            entries.append(entry)
        prev, last = entry.hash, entry
    missing = tuple(e.session_id for e in entries if not (directory / e.path).is_file())
    return LedgerResult(tuple(entries), tuple(problems), missing, seals, last)
