"""Writing transcripts: the Recorder (all of a gateway's) and SessionRecording (one).

Layout. Each session is one file, `data_dir/transcripts/<YYYY-MM-DD>/<session_id>.airlock`
(the UTC day the session started; directories 0700, files 0600: transcripts hold bind
parameters), appended to and never rewritten; proxy/recording/format.py defines what
goes in it and docs/transcript-format.md describes it. The writer adds `session_id` and
`format` (the schema version) to the session start.

Seal. When a session ends, `seal()` writes the `session.end` event and then the seal,
an Ed25519 signature (proxy/recording/signing.py) over `format.seal_message()`; a file with events
but no seal (the gateway was killed) verifies as far as its chain goes and is reported
"unsealed", never valid.

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
import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proxy.recording.event_chain import EventChain
from proxy.recording.format import (
    SCHEMA_VERSION,
    SESSION_END,
    SESSION_ID,
    SESSION_START,
    SUFFIX,
    EventData,
    encode_seal,
    pack,
    seal_message,
    transcripts_dir,
)
from proxy.recording.ledger import Ledger, LedgerError
from proxy.recording.signing import SigningKey

log = logging.getLogger("airlock.transcript")

#: The schema version written (kept under its old name).
FORMAT_VERSION = SCHEMA_VERSION


class TranscriptError(Exception):
    """A transcript cannot be written: the gateway refuses the session with this message."""


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

    def record(self, event: EventData, ts: float | None = None) -> None:
        """Record an event given as its kind's definition (proxy/recording/format.py)."""
        self.event(event.KIND, event.to_data(), ts)

    def event(self, kind: str, data: dict[str, Any], ts: float | None = None) -> None:
        """Record an event (at `ts`, else now): packed, hashed and queued; written by the
        next flush."""
        if self._sealed:
            raise TranscriptError(f"session {self.session_id}: transcript already sealed")
        self._chain.append(kind, pack(data), ts)

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
        self._chain.queue(encode_seal(last, last_seq, self._key.key_id, signature))
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
        #: Called (in a worker thread) with a session id and its file once its seal is on
        #: disk: the shipper into a shared store (proxy/recording/shipping.py) listens here.
        self.on_sealed: Callable[[str, Path], None] | None = None

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
        if self.on_sealed is not None:
            self.on_sealed(recording.session_id, recording.path)


def _fsync_directory(directory: Path) -> None:
    """Make a new file's directory entry durable, not only its content."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
