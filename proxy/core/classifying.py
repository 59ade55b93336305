"""Statement classification in the running gateway: cache first, cold parses fair and bounded.

A cached verdict (same text, or same literal-stripped fingerprint) costs a dictionary
lookup on the event loop. A miss parses:

- statements up to `INLINE_CHARS` characters on the event loop: measured on the
  gateway's machine, sqlglot parses 500 characters of its slowest shapes in about 1.5 ms,
  under the ~2 ms a loop iteration may take;
- longer ones in worker processes, through `FairScheduler`: each session has at most one
  parse in a worker at a time, sessions waiting for a worker are served round-robin (not
  first come, first served over everyone), and a parse that runs past the timeout is
  `unknown` (fail closed) and its worker is killed and replaced, so one agent's
  statements cannot hold a worker from the others.

A statement over `limits.max_statement_bytes` is never parsed: `StatementTooLarge`
(SQLSTATE 54000 / MySQL 1153) refuses it. The size and nesting caps of
`policy.classify.precheck` run in whichever place parses. A worker that dies (sqlglot's
compiled build can crash on input the caps let through) costs that statement an `unknown`
verdict and a new worker, never the gateway.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
from collections.abc import Callable, Hashable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from policy.classify import StatementClass, Verdict, classify
from policy.fingerprint import CachedClassifier
from proxy.core.refresh import mentions_refresh
from proxy.errors import StatementTooLarge

log = logging.getLogger("airlock.classify")

#: Statements up to this many characters are parsed on the event loop (see the docstring).
INLINE_CHARS = 512
DEFAULT_MAX_STATEMENT_BYTES = 1024 * 1024
DEFAULT_TIMEOUT_S = 5.0
#: Worker processes for cold parses of long statements.
DEFAULT_WORKERS = 2
#: How long a new worker may take to start (spawn, import sqlglot) before it is replaced.
WORKER_START_S = 60.0


#: How the verdicts of parses that did not finish begin: not cached.
_TRANSIENT_REASONS = ("classification took longer than", "the classifier could not finish")


class Worker(Protocol):
    """One process that parses one statement at a time."""

    async def ready(self) -> None: ...

    async def run(self, sql: str, dialect: str) -> Verdict: ...

    def kill(self) -> None: ...


def _warm() -> None:
    """Run in a new worker: importing `policy.classify` is the slow part of starting."""


class ProcessWorker:
    """A single-process pool: killing it affects no other worker."""

    def __init__(self) -> None:
        # spawn, not fork: the gateway's process has an event loop and threads.
        self._pool = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )
        self._started = asyncio.get_running_loop().run_in_executor(self._pool, _warm)

    async def ready(self) -> None:
        await asyncio.shield(self._started)

    async def run(self, sql: str, dialect: str) -> Verdict:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, classify, sql, dialect)

    def kill(self) -> None:
        # A worker stuck in a parse would outlive shutdown(wait=False): kill it. The
        # executor keeps its processes in a private mapping; nothing public reaches them.
        processes = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
        if not self._started.done():
            self._started.cancel()


@dataclass(eq=False)
class _Job:
    session: Hashable
    sql: str
    dialect: str
    done: asyncio.Future[Verdict] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class FairScheduler:
    """Cold parses in a few workers, fair across sessions (sans sockets: tests give it
    fake workers).

    Each session queues its own jobs; at most one of them runs at a time. A free worker
    takes the next job of the session that has waited longest in the round (a session
    whose job finishes goes to the back of it). A job that runs longer than `timeout_s`
    is `unknown` and its worker is killed and replaced.
    """

    def __init__(
        self, start_worker: Callable[[], Worker], *, workers: int, timeout_s: float
    ) -> None:
        if workers < 1:
            raise ValueError("a scheduler needs at least one worker")
        self.timeout_s = timeout_s
        self._start_worker = start_worker
        self._workers = workers
        self._idle: list[Worker] = []
        self._busy: set[Worker] = set()
        self._queues: dict[Hashable, collections.deque[_Job]] = {}
        self._round: collections.deque[Hashable] = collections.deque()
        self._running: set[Hashable] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Workers replaced after a timeout or a crash (for metrics and tests).
        self.replaced = 0

    async def classify(self, sql: str, dialect: str, session: Hashable) -> Verdict:
        job = _Job(session, sql, dialect)
        queue = self._queues.setdefault(session, collections.deque())
        queue.append(job)
        if session not in self._running and session not in self._round:
            self._round.append(session)
        self._dispatch()
        try:
            return await asyncio.shield(job.done)
        except asyncio.CancelledError:
            # The session stopped waiting (its client went): a queued job is dropped; a
            # running one finishes, bounded by the timeout, and its verdict is unused.
            if job in queue:
                queue.remove(job)
                self._forget_if_idle(session)
            raise

    def waiting(self, session: Hashable) -> int:
        """Jobs of `session` queued or running."""
        return len(self._queues.get(session, ())) + (session in self._running)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for worker in [*self._idle, *self._busy]:
            worker.kill()
        self._idle.clear()
        self._busy.clear()
        for queue in self._queues.values():
            for job in queue:
                if not job.done.done():
                    job.done.cancel()
        self._queues.clear()
        self._round.clear()

    def _forget_if_idle(self, session: Hashable) -> None:
        if not self._queues.get(session) and session not in self._running:
            self._queues.pop(session, None)
            if session in self._round:
                self._round.remove(session)

    def _dispatch(self) -> None:
        while self._round and (self._idle or len(self._busy) < self._workers):
            session = self._round.popleft()
            queue = self._queues.get(session)
            if not queue:
                self._queues.pop(session, None)
                continue
            job = queue.popleft()
            worker = self._idle.pop() if self._idle else self._start_worker()
            self._busy.add(worker)
            self._running.add(session)
            task = asyncio.get_running_loop().create_task(self._run(worker, job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, worker: Worker, job: _Job) -> None:
        verdict: Verdict
        healthy = False
        try:
            await asyncio.wait_for(worker.ready(), WORKER_START_S)
            verdict = await asyncio.wait_for(worker.run(job.sql, job.dialect), self.timeout_s)
            healthy = True
        except TimeoutError:
            log.warning(
                "classification took longer than %gs; its worker is replaced", self.timeout_s
            )
            verdict = Verdict(
                StatementClass.UNKNOWN,
                (f"classification took longer than {self.timeout_s:g}s; not classified",),
            )
        except asyncio.CancelledError:
            worker.kill()
            self._busy.discard(worker)
            raise
        except Exception as error:  # BrokenProcessPool, or a worker that could not start
            log.warning("classifier worker failed (%s); starting a new one", type(error).__name__)
            verdict = Verdict(
                StatementClass.UNKNOWN, ("the classifier could not finish parsing the statement",)
            )
        self._busy.discard(worker)
        if healthy:
            self._idle.append(worker)
        else:
            worker.kill()
            self.replaced += 1
            self._idle.append(self._start_worker())  # starts now, ready by the next job
        self._running.discard(job.session)
        if not job.done.done():
            job.done.set_result(verdict)
        if self._queues.get(job.session):
            self._round.append(job.session)
        else:
            self._forget_if_idle(job.session)
        self._dispatch()


class Classifiers:
    def __init__(
        self,
        *,
        inline_chars: int = INLINE_CHARS,
        max_statement_bytes: int = DEFAULT_MAX_STATEMENT_BYTES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        workers: int = DEFAULT_WORKERS,
        start_worker: Callable[[], Worker] = ProcessWorker,
    ) -> None:
        self.inline_chars = inline_chars
        self.max_statement_bytes = max_statement_bytes
        self._cached: dict[str, CachedClassifier] = {}
        self._scheduler: FairScheduler | None = None
        self._start_worker = start_worker
        self._workers = workers
        self._timeout_s = timeout_s

    def cached(self, dialect: str) -> CachedClassifier:
        found = self._cached.get(dialect)
        if found is None:
            found = self._cached[dialect] = CachedClassifier(dialect)
        return found

    @property
    def scheduler(self) -> FairScheduler:
        if self._scheduler is None:
            self._scheduler = FairScheduler(
                self._start_worker, workers=self._workers, timeout_s=self._timeout_s
            )
        return self._scheduler

    async def classify(self, sql: str, dialect: str, session: Hashable = None) -> Verdict:
        """The verdict for `sql`; `session` keys fairness (one cold parse at a time each).

        Raises StatementTooLarge over max_statement_bytes.
        """
        cap = self.max_statement_bytes
        if len(sql) > cap or (4 * len(sql) > cap and len(sql.encode("utf-8", "replace")) > cap):
            raise StatementTooLarge(
                f"statement is longer than the gateway's limit of {cap} bytes; not run",
                hint="split it into smaller statements, or ask the operator to raise "
                "limits.max_statement_bytes",
            )
        cache = self.cached(dialect)
        verdict = cache.lookup(sql)
        if verdict is not None:
            return verdict
        if len(sql) <= self.inline_chars:
            verdict = classify(sql, dialect)
        else:
            verdict = await self.scheduler.classify(sql, dialect, session)
        if mentions_refresh(sql):
            # Never cached: the relays' hot paths would admit such text on its verdict,
            # and the gateway consumes it instead (proxy/core/refresh.py).
            return verdict
        if not verdict.reasons or not verdict.reasons[0].startswith(_TRANSIENT_REASONS):
            cache.store(sql, verdict)  # a timeout under load says nothing about the text
        return verdict

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None
