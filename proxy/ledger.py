"""The session ledger: one signed, hash-chained record per recorded session.

A transcript proves its own events (hash chain, sealed signature), but a transcript
deleted whole leaves nothing behind. So when the Recorder opens a transcript it first
appends a record to `data_dir/transcripts/ledger.airlock`:

    {"seq": n, "session_id": ..., "path": "<YYYY-MM-DD>/<session_id>.airlock",
     "ts": unix seconds, "prev": SHA-256 hex of the previous record's bytes, "sig": ...}

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proxy import signing
from proxy.signing import SigningKey

LEDGER_FILE = "ledger.airlock"
ZERO_HASH = "0" * 64
_CONTEXT = b"airlock session ledger v1\0"
_KEYS = ("seq", "session_id", "path", "ts", "prev", "sig")


class LedgerError(Exception):
    """The ledger cannot be written (the session is then refused, like its transcript)."""


def entry_message(seq: int, session_id: str, path: str, prev: str) -> bytes:
    """What an entry's signature covers."""
    return _CONTEXT + f"{seq}\0{session_id}\0{path}\0{prev}".encode()


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    session_id: str
    path: str  # relative to the transcripts directory
    ts: float
    prev: str
    sig: bytes
    hash: str  # SHA-256 hex of the record's bytes, which the next record's `prev` names


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


def _entry(record: object, raw: bytes) -> Entry | None:
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
            record: dict[str, Any] = {
                "seq": self._seq,
                "session_id": session_id,
                "path": path,
                "ts": ts,
                "prev": self._prev,
                "sig": self._key.sign(entry_message(self._seq, session_id, path, self._prev)),
            }
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
    entries: tuple[Entry, ...]
    problems: tuple[str, ...]
    #: Session ids of listed sessions whose transcript file is missing.
    missing: tuple[str, ...]

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
    problems: list[str] = []
    prev = ZERO_HASH
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
        message = entry_message(entry.seq, entry.session_id, entry.path, entry.prev)
        if not signing.verify(public_key, entry.sig, message):
            problems.append(f"entry {index}: signature does not verify (altered, or another key)")
        entries.append(entry)
        prev = entry.hash
    missing = tuple(e.session_id for e in entries if not (directory / e.path).is_file())
    return LedgerResult(tuple(entries), tuple(problems), missing)
