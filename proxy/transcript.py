"""Session transcripts: the format, the writer, the reader and verifier, replay and export.

Layout. Each session is one file, `data_dir/transcripts/<YYYY-MM-DD>/<session_id>.airlock`
(the UTC day the session started; directories 0700, files 0600: transcripts hold bind
parameters). A file is a stream of msgpack maps, appended to and never rewritten.

Events. Every record but the last is an event, a map with exactly these keys, in order:

    {"seq": n, "ts": unix seconds (float), "kind": str, "data": {...}, "prev": hex sha256}

`seq` counts from 0 with no gaps; `prev` is the SHA-256 of the previous event's bytes
exactly as written (64 zeros for event 0). `data` is the session code's; the writer adds
only `session_id` and `format` (1) to the `session.start` event. Replay reads these keys
where present and shows anything else as JSON:

- `session.start`: `identity` {iss, sub, email, groups, jti, exp}, `target`, `protocol`,
  `client` ("addr:port", or {address, port, tls, application_name}), `tls`, `policy`.
- `statement`: `sql`, `class`, `reasons`, `decision`, and the parameters, either as
  `params` [{type, value}] or as the raw PostgreSQL Bind message `bind` with the type
  OIDs `types`, decoded on replay and export so the relay spends nothing on them.
- `approval.requested`: `id` (or `approval_id`), `sql`, `class`, `hold`,
  `approver_groups`; `approval.decided`: `id`, `state`, `by`, `groups`, `scope`,
  `expires_at` (or `ttl_s`), `comment`, `reason`.
- `result`: `tag`, or `error` {sqlstate, message}; `rows` and `duration_s` if known.
- `session.end`: `reason`, `error`, `statements` (or `totals` {name: count}).

Seal. When a session ends, `seal()` writes the `session.end` event and then one last
record, `{"seal": {"last": hex hash of the last event, "seq": its seq, "key_id": ...,
"sig": 64 bytes}}`. The signature is Ed25519 (proxy/signing.py) over `seal_message()`:
b"airlock transcript seal v1\\0" + session_id + b"\\0" + last + b"\\0" + decimal seq,
all UTF-8. The seal holds nothing the signature does not cover (key_id must name the
verifying key), so no byte of a sealed file can change unnoticed. A file with events but
no seal (the gateway was killed) verifies as far as its chain goes and is reported
"unsealed", never valid: without the seal nobody can tell whether events were cut from
its end.

Durability. `event()` packs and hashes in memory; nothing touches the disk on the relay
path. `flush()` writes everything pending and fsyncs; the `Recorder` runs it for every
open session every `flush_interval_s`, in a worker thread. The session code calls it
itself (in a worker thread too) before it forwards a statement that may change data
(under `recording.on_failure: refuse`) and before releasing a held statement, so the
statement and the approval decision are on disk first. A session's end goes through
`Recorder.seal_soon`: the end and the seal are queued at once and written in a worker
thread, so the event loop never waits for the disk. A failed write is cut back off the
file (ftruncate to the last good length) and kept in memory for the next attempt, so the
stream never holds half a record followed by whole ones; it is counted
(`Recorder.write_failures`) and told to the session (`on_write_failed`, from whichever
thread wrote), which ends itself under `on_failure: refuse`. `Recorder.open` writes and
fsyncs the session start before the session may proceed, and raises `TranscriptError`
when it cannot: the gateway refuses the session (fail closed). Sessions call it in a
worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import errno
import hashlib
import json
import logging
import math
import os
import re
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

import msgpack  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols.errors import ProtocolViolation
from protocols.postgres import messages as pg
from proxy import signing
from proxy.approvals_cli import format_age, format_parameter, one_line_sql
from proxy.event_chain import EventChain
from proxy.ledger import Ledger, LedgerError
from proxy.mysql_relay import execute_parameters
from proxy.pg_gate import describe_parameters
from proxy.signing import SigningKey

log = logging.getLogger("airlock.transcript")

TRANSCRIPTS_DIR = "transcripts"
SUFFIX = ".airlock"
FORMAT_VERSION = 1
ZERO_HASH = "0" * 64
SEAL_DOMAIN = b"airlock transcript seal v1\x00"

SESSION_START = "session.start"
STATEMENT = "statement"
APPROVAL_REQUESTED = "approval.requested"
APPROVAL_DECIDED = "approval.decided"
RESULT = "result"
SESSION_END = "session.end"

#: Session ids name files: nothing that could climb out of the day directory.
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_EVENT_KEYS = ("seq", "ts", "kind", "data", "prev")
_SEAL_KEYS = ("last", "seq", "key_id", "sig")
_HEX_HASH = re.compile(r"[0-9a-f]{64}")


class TranscriptError(Exception):
    """A transcript cannot be written: the gateway refuses the session with this message."""


def seal_message(session_id: str, last: str, seq: int) -> bytes:
    """The bytes a seal signs: the session, its last event's hash and seq."""
    return SEAL_DOMAIN + b"\x00".join(
        (session_id.encode("utf-8"), last.encode("ascii"), str(seq).encode("ascii"))
    )


def transcripts_dir(data_dir: Path) -> Path:
    return data_dir / TRANSCRIPTS_DIR


# --- msgpack, typed ---------------------------------------------------------------------------


def _packable(value: object) -> object:
    """What msgpack cannot pack itself but the gateway may hand over."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot record a {type(value).__name__} in a transcript")


class _Packers(threading.local):
    """One msgpack Packer per thread: making one per record (as `packb` does) costs more
    than packing a small record, and a Packer must not be shared between threads."""

    def __init__(self) -> None:
        self.packer = msgpack.Packer(use_bin_type=True, default=_packable, datetime=False)


_packers = _Packers()


def _pack(record: Mapping[str, Any]) -> bytes:
    raw = _packers.packer.pack(record)
    assert isinstance(raw, bytes)
    return raw


# --- writing -----------------------------------------------------------------------------------


def _write_all(fd: int, raw: bytes) -> None:
    view = memoryview(raw)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _make_directory(directory: Path) -> None:
    """The directory, made private if new; TranscriptError saying why it cannot be."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        where = error.filename or directory
        if error.errno in (errno.EEXIST, errno.ENOTDIR):
            reason = "a file is in the way: it is not a directory"
        else:
            reason = _reason(error)
        raise TranscriptError(f"cannot record the session: {where}: {reason}") from None


class SessionRecording:
    """One session's transcript while it is being written. Made by `Recorder.open`.

    `event`, `statement`, `result_tag` and `seal` run on the event loop; `flush` may also
    run in the Recorder's worker thread, so the file is guarded by a lock (the records
    waiting for it are the EventChain's, which needs none).

    `statement` and `result_tag`, recorded for nearly every statement, are the chain's own
    methods; the PostgreSQL gate and relay hold the `chain` itself and call them in C.
    """

    def __init__(
        self,
        session_id: str,
        path: Path,
        fd: int,
        key: SigningKey,
        clock: Callable[[], float],
        on_closed: Callable[[SessionRecording], None],
        on_failed: Callable[[], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.path = path
        self._fd: int | None = fd
        self._key = key
        self._clock = clock
        self._on_closed = on_closed
        self._on_failed = on_failed
        #: Told of every failed write, in the thread that tried it (the session's own
        #: durable flush, or the Recorder's): the session decides what that means.
        self.on_write_failed: Callable[[TranscriptError], None] | None = None
        self._chain = EventChain(clock)
        self.statement: Callable[..., None] = self._chain.statement
        """`event(STATEMENT, {"sql", "class", "decision"[, "bind", "types"]})`: (sql,
        statement_class, decision, bind=None, types=())."""
        self.result_tag: Callable[[str], None] = self._chain.result_tag
        """`event(RESULT, {"tag": tag})`: a statement completed."""
        self._sealed = False
        #: (hash, seq) of the last event, once sealed: what the ledger's seal record says.
        self.sealed_as: tuple[str, int] | None = None
        self._file_lock = threading.Lock()
        self._written = 0
        self._failing = False

    @property
    def sealed(self) -> bool:
        return self._sealed

    @property
    def chain(self) -> EventChain:
        """The events' chain, whose `statement` and `result_tag` record straight into it."""
        return self._chain

    @property
    def events(self) -> int:
        """How many events have been recorded (written or pending)."""
        return self._chain.seq

    def event(self, kind: str, data: dict[str, Any], ts: float | None = None) -> None:
        """Record an event (at `ts`, else now): packed, hashed and queued; written by the
        next flush."""
        if self._sealed:
            raise TranscriptError(f"session {self.session_id}: transcript already sealed")
        self._chain.append(kind, _packers.packer.pack(data), ts)

    def flush(self) -> None:
        """Write every pending record and fsync. TranscriptError when the disk refuses."""
        with self._file_lock:
            raw = self._chain.take()
            if self._fd is None:
                if raw:
                    self._chain.put_back(raw)
                    raise TranscriptError(f"{self.path}: transcript closed with events pending")
                return
            if raw:
                try:
                    _write_all(self._fd, raw)
                    os.fsync(self._fd)
                except OSError as error:
                    self._take_back(raw)
                    failure = TranscriptError(
                        f"cannot write the transcript {self.path}: {_reason(error)}"
                    )
                    self._write_failed(failure)
                    raise failure from None
                self._written += len(raw)
            # A flush from the Recorder's thread may have taken the chunks before seal()
            # queued the seal itself: close only once nothing is left.
            if self._sealed and not self._chain.has_pending:
                self._close_locked()

    def seal(self, end: dict[str, Any], *, flush: bool = True) -> None:
        """The session.end event, then the signature over the last hash; then close.

        With `flush`, written at once; when the write fails this raises TranscriptError.
        Without, or when it failed, the Recorder writes the end and the seal on its flush
        interval (or sooner: `Recorder.flush_soon`), and closes the file once they are.
        """
        self.event(SESSION_END, end)
        last_seq = self._chain.seq - 1
        last = self._chain.prev
        signature = self._key.sign(seal_message(self.session_id, last, last_seq))
        seal = {
            "seal": {
                "last": last,
                "seq": last_seq,
                "key_id": self._key.key_id,
                "sig": signature,
            }
        }
        self._chain.queue(_pack(seal))
        self._chain.close()
        self.sealed_as = (last, last_seq)
        self._sealed = True
        if flush:
            self.flush()

    def close(self) -> None:
        """Stop writing, sealed or not (what is pending is written first, if it can be)."""
        try:
            self.flush()
        finally:
            with self._file_lock:
                self._close_locked()

    def _write_failed(self, failure: TranscriptError) -> None:
        if self._on_failed is not None:
            self._on_failed()
        told = self.on_write_failed
        if told is not None:
            told(failure)

    def _take_back(self, raw: bytes) -> None:
        """Undo a failed write: cut the file back to its last good length, keep the records."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._written)
        self._chain.put_back(raw)

    def _close_locked(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.close(fd)
        self._on_closed(self)

    def _flush_in_background(self) -> None:
        """The Recorder's periodic flush: failures are logged, once, not raised."""
        try:
            self.flush()
        except TranscriptError as error:
            if not self._failing:
                log.error("%s (kept in memory, retrying)", error)
            self._failing = True
        else:
            if self._failing:
                log.warning("transcript %s: writing again", self.path)
            self._failing = False


class Recorder:
    """All transcripts of one gateway: data_dir/transcripts/<YYYY-MM-DD>/<session_id>.airlock."""

    def __init__(
        self,
        data_dir: Path,
        key: SigningKey,
        *,
        flush_interval_s: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = transcripts_dir(data_dir)
        self.key = key
        self.flush_interval_s = flush_interval_s
        self._clock = clock
        self._open: dict[str, SessionRecording] = {}
        self._open_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._ledger: Ledger | None = None  # read and opened with the first session
        self._ledger_lock = threading.Lock()  # sessions open in worker threads
        self._failures_lock = threading.Lock()  # writes fail in worker threads
        #: Transcript writes (write and fsync) that failed, each retry counted.
        self.write_failures = 0

    def open(self, session_id: str, start: dict[str, Any]) -> SessionRecording:
        """Create the session's transcript and make its start event durable.

        Raises TranscriptError when the directory cannot be made or written, or the
        disk is full: the gateway refuses the session.
        """
        if not SESSION_ID.fullmatch(session_id):
            raise TranscriptError(f"session id {session_id!r} cannot name a transcript file")
        started = self._clock()
        day = datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d")
        day_dir = self.directory / day
        path = day_dir / (session_id + SUFFIX)
        _make_directory(self.directory)
        _make_directory(day_dir)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except FileExistsError:
            raise TranscriptError(
                f"session {session_id} already has a transcript: {path}"
            ) from None
        except OSError as error:
            raise TranscriptError(f"cannot record the session: {path}: {_reason(error)}") from None
        recording = SessionRecording(
            session_id, path, fd, self.key, self._clock, self._closed, self._count_failure
        )
        writer_keys = {"session_id": session_id, "format": FORMAT_VERSION}
        try:
            start_data = writer_keys | {k: v for k, v in start.items() if k not in writer_keys}
            recording.event(SESSION_START, start_data, ts=started)
            recording.flush()
            _fsync_directory(day_dir)
        except (TranscriptError, OSError) as error:
            with contextlib.suppress(TranscriptError):
                recording.close()
            path.unlink(missing_ok=True)
            if isinstance(error, TranscriptError):
                raise TranscriptError(f"cannot record the session: {error}") from None
            raise TranscriptError(
                f"cannot record the session: {day_dir}: {_reason(error)}"
            ) from None
        try:
            # Listed once its transcript exists: a transcript deleted whole is then missed.
            with self._ledger_lock:
                if self._ledger is None:
                    self._ledger = Ledger(self.directory, self.key)
                ledger = self._ledger
            ledger.append(session_id, f"{day}/{session_id}{SUFFIX}", started)
        except LedgerError as error:
            with contextlib.suppress(TranscriptError):
                recording.close()
            path.unlink(missing_ok=True)
            raise TranscriptError(f"cannot record the session: {error}") from None
        with self._open_lock:
            self._open[session_id] = recording
        return recording

    async def start(self) -> None:
        """Start the periodic flush (one task, owned here, ended by close())."""
        if self._task is None:
            self._task = asyncio.create_task(self._flush_periodically(), name="transcript-flush")

    async def close(self) -> None:
        """Flush everything still pending and close the files; unsealed ones stay unsealed."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self._close_all)

    def seal_soon(self, recording: SessionRecording, end: dict[str, Any]) -> None:
        """Seal a session's transcript now; write the end and the seal in a worker thread."""
        try:
            recording.seal(end, flush=False)
        except TranscriptError as failure:
            log.error(
                "session %s: its transcript could not be sealed: %s", recording.session_id, failure
            )
            return
        self.flush_soon(recording)

    def flush_soon(self, recording: SessionRecording) -> None:
        """Write what the recording has pending (a sealed one: then close it) in a worker
        thread, off the event loop; a failure is logged and retried on the interval."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: nothing to keep waiting
            recording._flush_in_background()
            return
        loop.run_in_executor(None, recording._flush_in_background)

    def flush_all(self) -> None:
        for recording in self._recordings():
            recording._flush_in_background()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await asyncio.to_thread(self.flush_all)

    def _close_all(self) -> None:
        for recording in self._recordings():
            try:
                recording.close()
            except TranscriptError as error:
                log.error("%s: events lost at shutdown", error)

    def _recordings(self) -> list[SessionRecording]:
        with self._open_lock:
            return list(self._open.values())

    def _count_failure(self) -> None:
        with self._failures_lock:
            self.write_failures += 1

    def _closed(self, recording: SessionRecording) -> None:
        with self._open_lock:
            self._open.pop(recording.session_id, None)
        sealed_as = recording.sealed_as
        if sealed_as is None or recording.chain.has_pending:
            return  # not sealed, or its seal never reached the disk: the ledger says nothing
        try:
            # The seal is on disk: the ledger now says so, and verify can tell a tail cut
            # off the transcript from a session that never ended.
            with self._ledger_lock:
                if self._ledger is None:
                    self._ledger = Ledger(self.directory, self.key)
                ledger = self._ledger
            ledger.append_seal(recording.session_id, sealed_as[0], sealed_as[1], self._clock())
        except LedgerError as error:
            log.error("session %s: its seal is not in the ledger: %s", recording.session_id, error)


def _fsync_directory(directory: Path) -> None:
    """Make a new file's directory entry durable, not only its content."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading -----------------------------------------------------------------------------------


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


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


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


# --- finding sessions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionSummary:
    session_id: str
    path: Path
    started_at: float | None
    subject: str | None
    email: str | None
    groups: tuple[str, ...]
    target: str | None
    client: str | None
    statements: int
    #: The last event's time: the end, or as far as an open or cut transcript goes.
    last_at: float | None
    ended_at: float | None
    end_reason: str | None
    sealed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "path": str(self.path),
            "started_at": self.started_at,
            "subject": self.subject,
            "email": self.email,
            "groups": list(self.groups),
            "target": self.target,
            "client": self.client,
            "statements": self.statements,
            "last_at": self.last_at,
            "ended_at": self.ended_at,
            "end_reason": self.end_reason,
            "sealed": self.sealed,
        }


def transcript_paths(data_dir: Path, *, modified_since: float | None = None) -> list[Path]:
    """Every transcript file under data_dir, oldest day first.

    `modified_since` skips files last written before then: a file's events are all
    older than its modification time (they are written after they happen).
    """
    paths = sorted(transcripts_dir(data_dir).glob("*/*" + SUFFIX))
    if modified_since is None:
        return paths
    return [p for p in paths if _mtime(p) >= modified_since]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")  # let the reader say what is wrong with it


def find_transcript(data_dir: Path, session: str) -> Path:
    """The transcript of a session id, a unique prefix of one, or a file path.

    Raises LookupError naming what was searched.
    """
    as_path = Path(session)
    if as_path.suffix == SUFFIX and as_path.is_file():
        return as_path
    directory = transcripts_dir(data_dir)
    if not SESSION_ID.fullmatch(session):
        raise LookupError(f"{session!r} is neither a session id nor a transcript file")
    exact = sorted(directory.glob(f"*/{session}{SUFFIX}"))
    matches = exact or sorted(directory.glob(f"*/{session}*{SUFFIX}"))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LookupError(f"no session {session} under {directory}")
    names = ", ".join(p.name.removesuffix(SUFFIX) for p in matches[:5])
    raise LookupError(f"{session} matches {len(matches)} sessions: {names}")


def summarize(transcript: Transcript) -> SessionSummary:
    start = transcript.start or {}
    identity = start.get("identity")
    identity = identity if isinstance(identity, dict) else {}
    groups = identity.get("groups")
    end = transcript.end
    events = transcript.events
    return SessionSummary(
        session_id=transcript.session_id,
        path=transcript.path,
        started_at=events[0].ts if events else None,
        subject=_str(identity.get("sub")),
        email=_str(identity.get("email")),
        groups=tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
        target=_str(start.get("target")),
        client=_client_address(start.get("client")),
        statements=sum(1 for e in events if e.kind == STATEMENT),
        last_at=events[-1].ts if events else None,
        ended_at=events[-1].ts if end is not None else None,
        end_reason=_str(end.get("reason")) if end is not None else None,
        sealed=transcript.seal is not None,
    )


def find_sessions(
    data_dir: Path,
    *,
    identity: str | None = None,
    target: str | None = None,
    since: float | None = None,
) -> list[SessionSummary]:
    """Sessions, oldest first, from their start (and end) events.

    `identity` matches the subject or the email (case-insensitively); `since` keeps
    sessions active at or after that time (started then, or still running).
    """
    summaries: list[SessionSummary] = []
    for path in transcript_paths(data_dir, modified_since=since):
        try:
            summary = summarize(read_transcript(path))
        except OSError as error:
            log.warning("%s: %s", path, error.strerror or error)
            continue
        if identity is not None and identity.casefold() not in {
            (summary.subject or "").casefold(),
            (summary.email or "").casefold(),
        }:
            continue
        if target is not None and summary.target != target:
            continue
        if since is not None and (summary.last_at is None or summary.last_at < since):
            continue
        summaries.append(summary)
    summaries.sort(key=lambda s: (s.started_at or 0.0, s.session_id))
    return summaries


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


# --- replay ------------------------------------------------------------------------------------


def _utc(ts: object) -> datetime | None:
    """The time a unix timestamp names; None for one no calendar holds (a damaged file)."""
    if not isinstance(ts, float | int) or isinstance(ts, bool):
        return None
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _clock_time(ts: float) -> str:
    moment = _utc(ts)
    return moment.strftime("%H:%M:%S.%f")[:-3] if moment else f"{ts!r:>12}"


def _moment(ts: object) -> str:
    moment = _utc(ts)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else _line(ts)


def _line(value: object) -> str:
    """A value as one line of printable text: control and bidi characters escaped."""
    if value is None:
        return "?"
    text = value if isinstance(value, str) else json.dumps(_jsonable(value))
    return one_line_sql(text, sys.maxsize)


def _duration(seconds: object) -> str | None:
    if not isinstance(seconds, float | int) or isinstance(seconds, bool):
        return None
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


_INDENT = " " * len("00:00:00.000  ")


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    """The first of `keys` that `data` holds a value for (writers name some fields twice)."""
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    return None


def _number(value: object) -> float | None:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return float(value)
    return None


def statement_parameters(data: Mapping[str, Any]) -> list[Any] | None:
    """A statement's bound parameters as [{type, value, format}]: as recorded, or decoded
    from the raw PostgreSQL Bind message (`bind`, with the parameter type OIDs in `types`)
    that the relay records to spend nothing on decoding while it forwards."""
    params = _first(data, "params", "parameters")
    if isinstance(params, list):
        return params
    execute = data.get("execute")
    if isinstance(execute, bytes):
        return _mysql_parameters(data, execute)
    bind = data.get("bind")
    if not isinstance(bind, bytes):
        return None
    types = data.get("types")
    oids = tuple(t for t in types if _is_int(t)) if isinstance(types, list) else ()
    try:
        message = pg.decode_frontend(bind)
    except (ProtocolViolation, ValueError, IndexError, struct.error):
        message = None
    if not isinstance(message, pg.Bind):
        return [{"type": "raw Bind message, hex", "value": bind.hex(), "format": "hex"}]
    return [parameter.to_json() for parameter in describe_parameters(message, oids)]


def _mysql_parameters(data: Mapping[str, Any], execute: bytes) -> list[Any]:
    """Decoded from a raw COM_STMT_EXECUTE (`execute`, with `num_params`, the types an
    earlier execute bound, `param_types`, and any `long_data`)."""
    count = data.get("num_params")
    types = data.get("param_types")
    long_data = data.get("long_data")
    chunks = (
        {int(k): v for k, v in long_data.items() if str(k).isdigit() and isinstance(v, bytes)}
        if isinstance(long_data, dict)
        else {}
    )
    parameters = execute_parameters(
        execute,
        count if _is_int(count) else 0,
        types if isinstance(types, bytes) else None,
        chunks,
    )
    return [parameter.to_json() for parameter in parameters]


def _client_address(client: object) -> str | None:
    """ "addr:port" from a session start's `client`, a string or {address, port}."""
    if isinstance(client, dict):
        address, port = client.get("address"), client.get("port")
        if address is None:
            return None
        return str(address) if port is None else f"{address}:{port}"
    return client if isinstance(client, str) else None


def _client(data: Mapping[str, Any]) -> list[str]:
    """Where the session came from: "from addr:port", TLS, the application's name."""
    client = data.get("client")
    tls = data.get("tls")
    details = [f"from {_line(_client_address(client))}"]
    if isinstance(client, dict) and tls is None:
        tls = client.get("tls")
    if isinstance(tls, dict):
        details.append(" ".join(_line(v) for v in (tls.get("version"), tls.get("cipher")) if v))
    elif tls is True:
        details.append("TLS")
    elif tls is None or tls is False:
        details.append("no TLS")
    else:
        details.append(_line(tls))
    if isinstance(client, dict) and client.get("application_name"):
        details.append(f"application {_line(client['application_name'])}")
    return details


class _Replay:
    """Turns events into lines, remembering who and where from the session start."""

    def __init__(self) -> None:
        self.who = "?"
        self.target = "?"

    def lines(self, event: Event) -> list[str]:
        data = event.data
        head = _clock_time(event.ts) + "  "
        if event.kind == SESSION_START:
            return self._start(head, data)
        if event.kind == STATEMENT:
            return self._statement(head, data)
        if event.kind == RESULT:
            return [head + "  ← " + _result(data)]
        if event.kind == APPROVAL_REQUESTED:
            return [head + "  " + _approval_requested(data)]
        if event.kind == APPROVAL_DECIDED:
            return [head + "  " + _approval_decided(data)]
        if event.kind == SESSION_END:
            return [head + _session_end(data)]
        return [head + f"{_line(event.kind)}  {_line(data)}"]

    def _start(self, head: str, data: dict[str, Any]) -> list[str]:
        identity = data.get("identity")
        identity = identity if isinstance(identity, dict) else {}
        self.who = _line(identity.get("sub"))
        self.target = _line(data.get("target"))
        line = f"{head}{self.who} → {self.target}  session start"
        if data.get("protocol"):
            line += f" ({_line(data['protocol'])})"
        about = []
        if identity.get("email"):
            about.append(_line(identity["email"]))
        groups = identity.get("groups")
        if isinstance(groups, list) and groups:
            about.append("groups " + ", ".join(_line(g) for g in groups))
        if about:
            line += "  " + "; ".join(about)
        details = _client(data)
        if data.get("policy") is not None:
            details.append(f"policy {_line(data['policy'])}")
        token = []
        if identity.get("jti") is not None:
            token.append(f"token {_line(identity['jti'])}")
        if identity.get("exp") is not None:
            token.append(f"expires {_moment(identity['exp'])}")
        if identity.get("iss") is not None:
            token.append(f"issuer {_line(identity['iss'])}")
        lines = [line, _INDENT + ", ".join(details)]
        if token:
            lines.append(_INDENT + ", ".join(token))
        return lines

    def _statement(self, head: str, data: dict[str, Any]) -> list[str]:
        statement_class = _line(data.get("class"))
        line = (
            f"{head}{self.who} → {self.target}  {statement_class:<5}  "
            f"{_line(data.get('sql'))}  [{_decision(data)}]"
        )
        lines = [line]
        reasons = data.get("reasons")
        if data.get("class") != "read" and isinstance(reasons, list) and reasons:
            lines.append(_INDENT + "because " + "; ".join(_line(r) for r in reasons))
        params = statement_parameters(data)
        if params:
            lines.extend(_INDENT + format_parameter(i, p) for i, p in enumerate(params, start=1))
        return lines


def _decision(data: dict[str, Any]) -> str:
    decision = data.get("decision")
    if decision in ("approve", "hold"):
        return f"held: {_line(data.get('approval_id'))}"
    if decision == "allow" and data.get("grant"):
        return f"allow: grant {_line(data['grant'])}"
    if decision == "deny":
        return "denied"
    return _line(decision)


def _result(data: dict[str, Any]) -> str:
    facts = []
    rows = data.get("rows")
    if _is_int(rows):
        facts.append(f"{rows} row" + ("" if rows == 1 else "s"))
    duration = _duration(data.get("duration_s"))
    if duration:
        facts.append(duration)
    suffix = f" ({', '.join(facts)})" if facts else ""
    error = data.get("error")
    error = error if isinstance(error, dict) else data
    if _first(error, "sqlstate", "errno") is not None:
        code = " ".join(_line(error[k]) for k in ("errno", "sqlstate") if error.get(k) is not None)
        return f"error {code}: {_line(error.get('message'))}{suffix}"
    tag = data.get("tag")
    return f"{'ok' if tag is None else _line(tag)}{suffix}"


def _approval_requested(data: dict[str, Any]) -> str:
    line = f"approval {_line(_first(data, 'approval_id', 'id'))} requested"
    if data.get("sql") is not None:
        line += f" for {_line(data.get('class'))} {_line(data['sql'])}"
    facts = []
    approvers = _first(data, "approvers", "approver_groups")
    if isinstance(approvers, list) and approvers:
        facts.append("approvers " + ", ".join(_line(a) for a in approvers))
    timeout = _number(data.get("timeout_s"))
    if timeout is not None:
        facts.append(f"{_line(data.get('hold') or 'wait')} up to {format_age(timeout)}")
    elif data.get("hold") is not None:
        facts.append(f"hold {_line(data['hold'])}")
    return line + (f" ({'; '.join(facts)})" if facts else "")


def _approval_decided(data: dict[str, Any]) -> str:
    line = f"approval {_line(_first(data, 'approval_id', 'id'))} {_line(data.get('state'))}"
    approver = _first(data, "approver", "by")
    if isinstance(approver, dict):
        line += f" by {_line(approver.get('sub'))}"
        if approver.get("email"):
            line += f" <{_line(approver['email'])}>"
    elif approver is not None:
        line += f" by {_line(approver)}"
    groups = data.get("groups")
    if isinstance(groups, list) and groups:
        line += " (" + ", ".join(_line(g) for g in groups) + ")"
    facts = []
    if data.get("scope") is not None:
        facts.append(f"scope {_line(data['scope'])}")
    ttl = _number(data.get("ttl_s"))
    if ttl is not None:
        facts.append(f"for {format_age(ttl)}")
    elif data.get("expires_at") is not None:
        facts.append(f"until {_moment(data['expires_at'])}")
    if facts:
        line += f" ({', '.join(facts)})"
    said = _first(data, "comment", "reason")
    if said is not None:
        line += f": {json.dumps(_line(said), ensure_ascii=False)}"
    return line


def _session_end(data: dict[str, Any]) -> str:
    line = f"session end: {_line(data.get('reason'))}"
    error = data.get("error")
    if isinstance(error, dict):
        line += f"; error {_line(error.get('sqlstate'))}: {_line(error.get('message'))}"
    totals = data.get("totals")
    if isinstance(totals, dict) and totals:
        line += " (" + ", ".join(f"{_line(k)} {_line(v)}" for k, v in totals.items()) + ")"
    elif _is_int(data.get("statements")):
        count = data["statements"]
        line += f" ({count} statement{'' if count == 1 else 's'})"
    return line


def render(
    transcript: Transcript,
    *,
    speed: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Replay lines, like a terminal transcript; times are UTC.

    With `speed`, waits between events for the recorded gap divided by `speed`.
    """
    replay = _Replay()
    day = None
    if transcript.events:
        first = _utc(transcript.events[0].ts)
        day = first.date() if first else None
        started = day.isoformat() if day else "?"
        yield f"session {_line(transcript.session_id)}, {started} (times UTC)"
    for event in paced(transcript.events, speed, sleep):
        moment = _utc(event.ts)
        if moment is not None and moment.date() != day:
            day = moment.date()
            yield f"-- {day.isoformat()}"
        yield from replay.lines(event)


def paced(
    events: Iterable[Event],
    speed: float | None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Event]:
    """The events, each after the recorded gap before it divided by `speed` (None: at once)."""
    previous: Event | None = None
    for event in events:
        if speed and previous is not None:
            gap_s = event.ts - previous.ts
            if 0 < gap_s < math.inf:
                sleep(gap_s / speed)
        yield event
        previous = event


# --- JSON: replay --json and export ------------------------------------------------------------


def _jsonable(value: object) -> object:
    """What json.dumps takes: bytes as {"$base64": ...}, map keys as strings."""
    if isinstance(value, dict):
        return {
            k if isinstance(k, str) else json.dumps(_jsonable(k)): _jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


_PARAMETER_KEYS = ("bind", "execute", "params", "parameters")


def event_json(session_id: str, event: Event) -> str:
    """One event as a JSON line: bytes as {"$base64": ...}, time also as ISO 8601.

    A statement recorded with parameters (raw, as a Bind or COM_STMT_EXECUTE, or
    decoded) also gets them decoded as `params`.
    """
    document = {
        "session_id": session_id,
        "seq": event.seq,
        "ts": event.ts,
        "time": _iso(event.ts),
        "kind": event.kind,
        "data": event.data,
        "prev": event.prev,
        "hash": event.hash,
    }
    if event.kind == STATEMENT and any(k in event.data for k in _PARAMETER_KEYS):
        # One place for them however they were recorded: raw on the hot path, decoded by
        # the session when it decided the statement (so, under recording.on_failure:
        # refuse, every execute that may change data).
        document["params"] = statement_parameters(event.data)
    return json.dumps(_jsonable(document), separators=(",", ":"))


def seal_json(session_id: str, seal: Seal, ts: float | None) -> str:
    """The seal as a JSON line; it has no time of its own, so it takes its last event's."""
    document = {
        "session_id": session_id,
        "seq": seal.seq,
        "ts": ts,
        "time": _iso(ts) if ts is not None else None,
        "kind": "session.sealed",
        "data": {
            "last": seal.last,
            "key_id": seal.key_id,
            "sig": base64.b64encode(seal.sig).decode("ascii"),
        },
    }
    return json.dumps(document, separators=(",", ":"))


def _iso(ts: float) -> str | None:
    moment = _utc(ts)
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def transcript_lines(transcript: Transcript) -> Iterator[str]:
    """Every event of one transcript as JSON lines, and its seal when there is one."""
    for event in transcript.events:
        yield event_json(transcript.session_id, event)
    if transcript.seal is not None:
        yield seal_json(transcript.session_id, transcript.seal, _last_ts(transcript))


def export_lines(data_dir: Path, since: float | None) -> Iterator[str]:
    """JSON lines, one per event at or after `since`, session by session in start order.

    A seal is a line of kind "session.sealed". Export does not verify: `verify` does.
    """
    by_day: dict[str, list[Path]] = {}
    for path in transcript_paths(data_dir, modified_since=since):
        by_day.setdefault(path.parent.name, []).append(path)
    for day in sorted(by_day):
        # A day at a time: sessions in start order without holding every transcript.
        for transcript in sorted(_readable(by_day[day]), key=_start_order):
            yield from _export_transcript(transcript, since)


def _readable(paths: list[Path]) -> list[Transcript]:
    transcripts = []
    for path in paths:
        try:
            transcripts.append(read_transcript(path))
        except OSError as error:
            log.warning("%s: %s", path, error.strerror or error)
    return transcripts


def _start_order(transcript: Transcript) -> tuple[float, str]:
    return (transcript.events[0].ts if transcript.events else 0.0, transcript.session_id)


def _export_transcript(transcript: Transcript, since: float | None) -> Iterator[str]:
    for event in transcript.events:
        if since is None or event.ts >= since:
            yield event_json(transcript.session_id, event)
    seal, last_ts = transcript.seal, _last_ts(transcript)
    if seal is not None and (since is None or (last_ts is not None and last_ts >= since)):
        yield seal_json(transcript.session_id, seal, last_ts)


def _last_ts(transcript: Transcript) -> float | None:
    return transcript.events[-1].ts if transcript.events else None
