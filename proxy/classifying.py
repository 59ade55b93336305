"""Statement classification in the running gateway: cache first, parse off the hot path.

A cached verdict (same text, or same literal-stripped fingerprint) costs a
dictionary lookup. A miss parses: short statements on the event loop (sqlglot's
compiled build parses them in well under the ~2 ms a loop iteration may take),
longer ones in a worker process, so a 100-row INSERT or a pathological statement
never stalls other sessions. The size and nesting caps run before any parse, in
either place. A worker that dies (sqlglot's compiled build can crash on input
the caps let through) costs that statement an `unknown` verdict and a new
worker, never the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from policy.classify import StatementClass, Verdict, classify, precheck
from policy.fingerprint import CachedClassifier

log = logging.getLogger("airlock.classify")

#: Statements up to this many characters are parsed on the event loop.
INLINE_CHARS = 2000
WORKER_TIMEOUT_S = 10.0


class Classifiers:
    def __init__(self, *, inline_chars: int = INLINE_CHARS) -> None:
        self.inline_chars = inline_chars
        self._cached: dict[str, CachedClassifier] = {}
        self._pool: ProcessPoolExecutor | None = None

    def cached(self, dialect: str) -> CachedClassifier:
        found = self._cached.get(dialect)
        if found is None:
            found = self._cached[dialect] = CachedClassifier(dialect)
        return found

    async def classify(self, sql: str, dialect: str) -> Verdict:
        cache = self.cached(dialect)
        verdict = cache.lookup(sql)
        if verdict is not None:
            return verdict
        capped = precheck(sql)
        if capped is not None:
            return capped  # not cached: a huge text would only fill the cache
        if len(sql) <= self.inline_chars:
            verdict = classify(sql, dialect)
        else:
            verdict = await self._in_worker(sql, dialect)
        cache.store(sql, verdict)
        return verdict

    async def _in_worker(self, sql: str, dialect: str) -> Verdict:
        if self._pool is None:
            # spawn, not fork: the gateway's process has an event loop and threads.
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._pool, classify, sql, dialect), WORKER_TIMEOUT_S
            )
        except (BrokenProcessPool, TimeoutError) as error:
            log.warning("classifier worker failed (%s); starting a new one", type(error).__name__)
            self._discard_pool()
            return Verdict(
                StatementClass.UNKNOWN, ("the classifier could not finish parsing the statement",)
            )

    def close(self) -> None:
        self._discard_pool()

    def _discard_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # A worker stuck in a parse would outlive shutdown(wait=False): kill it. The
        # executor keeps its processes in a private mapping; nothing public reaches them.
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
