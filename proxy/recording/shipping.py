"""Shipping sealed transcripts into the shared store, so that any gateway can serve
every gateway's sessions to an auditor (docs/transcripts.md, "Several gateways").

The transcript is written and sealed locally exactly as without a store; only once its
seal is on disk (Recorder.on_sealed, in the writer's worker thread) is it queued here.
One task ships the queue in order, each in a worker thread on the store's own
connection (store_pg.TranscriptStore): never on the relay's path nor the event loop.
When the store is down it retries the same transcript, waiting longer each time (up to
`MAX_RETRY_S`); the queue meanwhile only grows by a path per session. An insert of a
session already stored does nothing, so shipping twice is harmless: at start the
shipper ships every sealed transcript under the data dir that the store does not hold
yet (sealed while the store was down and the gateway stopped, or before it had one).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from proxy.approvals.store import StoreUnavailable
from proxy.approvals.store_pg import TranscriptStore
from proxy.recording.format import SUFFIX
from proxy.recording.sessions import summarize, transcript_paths
from proxy.recording.verifier import parse_transcript

log = logging.getLogger("airlock.transcript")

FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0
#: Sessions asked about per query when catching up at start.
CATCH_UP_BATCH = 500


def transcript_row(raw: bytes, path: Path, *, now: float) -> dict[str, Any] | None:
    """The store's row for a transcript file's bytes (None: not sealed, so not shipped)."""
    transcript = parse_transcript(raw, path)
    if transcript.seal is None:
        return None
    summary = summarize(transcript)
    return {
        "session_id": transcript.session_id,
        "key_id": transcript.seal.key_id,
        "sealed_at": summary.last_at if summary.last_at is not None else now,
        "shipped_at": now,
        "started_at": summary.started_at,
        "last_at": summary.last_at,
        "subject": summary.subject,
        "email": summary.email,
        "groups_json": json.dumps(list(summary.groups)),
        "target": summary.target,
        "client": summary.client,
        "statements": summary.statements,
        "end_reason": summary.end_reason,
        "path": str(path),
        "transcript": raw,
    }


class TranscriptShipper:
    """Ships this gateway's sealed transcripts into the shared store."""

    def __init__(
        self,
        store: TranscriptStore,
        data_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        first_retry_s: float = FIRST_RETRY_S,
    ) -> None:
        self.store = store
        self.data_dir = data_dir
        self.clock = clock
        self.first_retry_s = first_retry_s
        self._queue: asyncio.Queue[Path] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        #: Transcripts stored, and attempts that failed (each retry counted).
        self.shipped = 0
        self.failures = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="transcript-shipper")

    def sealed(self, _session_id: str, path: Path) -> None:
        """Recorder.on_sealed: queue the file (from any thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, path)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Ship what is queued, for up to `timeout_s`, then stop (what is left is shipped
        by the next start's catch-up)."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if not self._queue.empty():
            log.warning(
                "%d sealed transcripts not shipped yet: the next start ships them",
                self._queue.qsize(),
            )

    async def _run(self) -> None:
        await self._retrying(self._catch_up, "catching up")
        while True:
            path = await self._queue.get()
            try:
                await self._retrying(functools.partial(self._ship, path), str(path))
            finally:
                self._queue.task_done()

    async def _retrying(self, work: Callable[[], None], what: str) -> None:
        wait = self.first_retry_s
        while True:
            try:
                await asyncio.to_thread(work)
                return
            except StoreUnavailable as error:
                self.failures += 1
                log.warning("shipping transcripts (%s): %s; retrying in %gs", what, error, wait)
            except psycopg.Error as error:  # the store refused it: retrying would not help
                self.failures += 1
                log.error("shipping transcripts (%s): the store refused it: %s", what, error)
                return
            await asyncio.sleep(wait)
            wait = min(wait * 2, MAX_RETRY_S)

    def _ship(self, path: Path) -> None:
        try:
            raw = path.read_bytes()
        except OSError as error:
            log.error("transcript %s not shipped: %s", path, error.strerror or error)
            return
        row = transcript_row(raw, path, now=self.clock())
        if row is None:
            log.error("transcript %s not shipped: it is not sealed", path)
            return
        if self.store.put(row):
            self.shipped += 1

    def _catch_up(self) -> None:
        paths = transcript_paths(self.data_dir)
        for start in range(0, len(paths), CATCH_UP_BATCH):
            batch = {p.name.removesuffix(SUFFIX): p for p in paths[start : start + CATCH_UP_BATCH]}
            stored = self.store.shipped(list(batch))
            for session_id, path in batch.items():
                if session_id not in stored:
                    self._ship_if_sealed(path)

    def _ship_if_sealed(self, path: Path) -> None:
        try:
            raw = path.read_bytes()
        except OSError:
            return
        row = transcript_row(raw, path, now=self.clock())
        if row is not None and self.store.put(row):
            self.shipped += 1
