"""Classification in the gateway: cached verdicts, cold parses fair across sessions, bounded
per session and in time, and a statement-size cap. The scheduler is tested with fake
workers (no processes, no sockets); two tests use real worker processes."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from policy.classify import StatementClass, Verdict
from proxy.core.classifying import Classifiers, FairScheduler
from proxy.errors import StatementTooLarge


class FakeWorker:
    """Runs a job when the test releases it (`release(sql)`), or never (`hang`)."""

    def __init__(self, pool: FakeWorkers) -> None:
        self.pool = pool
        self.killed = False

    async def ready(self) -> None:
        return None

    async def run(self, sql: str, dialect: str) -> Verdict:
        pool = self.pool
        pool.started.append(sql)
        pool.running += 1
        pool.most_running = max(pool.most_running, pool.running)
        pool.changed.set()
        try:
            if sql.startswith("hang"):
                await asyncio.Event().wait()
            await pool.gate(sql).wait()
        finally:
            pool.running -= 1
        return Verdict(StatementClass.READ, (f"parsed {sql}",))

    def kill(self) -> None:
        self.killed = True


class FakeWorkers:
    def __init__(self) -> None:
        self.workers: list[FakeWorker] = []
        self.started: list[str] = []
        self.running = 0
        self.most_running = 0
        self.changed = asyncio.Event()
        self._gates: dict[str, asyncio.Event] = {}

    def __call__(self) -> FakeWorker:
        worker = FakeWorker(self)
        self.workers.append(worker)
        return worker

    def gate(self, sql: str) -> asyncio.Event:
        return self._gates.setdefault(sql, asyncio.Event())

    def release(self, sql: str) -> None:
        self.gate(sql).set()

    async def until_started(self, count: int) -> None:
        while len(self.started) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)


def submit(scheduler: FairScheduler, sql: str, session: Hashable) -> asyncio.Task[Verdict]:
    return asyncio.get_running_loop().create_task(scheduler.classify(sql, "postgres", session))


async def test_sessions_are_served_round_robin_not_first_come_first_served() -> None:
    workers = FakeWorkers()
    scheduler = FairScheduler(workers, workers=1, timeout_s=5)
    try:
        flood = [submit(scheduler, f"a{n}", "attacker") for n in range(5)]
        await workers.until_started(1)
        victim = submit(scheduler, "v", "victim")
        await asyncio.sleep(0)
        workers.release("a0")
        await workers.until_started(2)
        # The victim came after five of the attacker's jobs, and runs second.
        assert workers.started == ["a0", "v"]
        workers.release("v")
        assert (await victim).reasons == ("parsed v",)
        for n in range(1, 5):
            workers.release(f"a{n}")
        await asyncio.gather(*flood)
        assert workers.started == ["a0", "v", "a1", "a2", "a3", "a4"]
    finally:
        scheduler.close()


async def test_two_floods_alternate_and_a_third_session_waits_for_one_job_at_most() -> None:
    workers = FakeWorkers()
    scheduler = FairScheduler(workers, workers=1, timeout_s=5)
    try:
        tasks = [submit(scheduler, f"a{n}", "a") for n in range(3)]
        tasks += [submit(scheduler, f"b{n}", "b") for n in range(3)]
        await workers.until_started(1)
        tasks.append(submit(scheduler, "v", "victim"))
        await asyncio.sleep(0)
        for sql in ("a0", "b0", "v", "a1", "b1", "a2", "b2"):
            workers.release(sql)
        await asyncio.gather(*tasks)
        assert workers.started == ["a0", "b0", "v", "a1", "b1", "a2", "b2"]
    finally:
        scheduler.close()


async def test_a_session_never_has_two_parses_running_even_with_idle_workers() -> None:
    workers = FakeWorkers()
    scheduler = FairScheduler(workers, workers=3, timeout_s=5)
    try:
        tasks = [submit(scheduler, f"a{n}", "a") for n in range(4)]
        await workers.until_started(1)
        await asyncio.sleep(0.01)  # not a wait for an event: a window for a wrong start
        assert workers.started == ["a0"]
        assert scheduler.waiting("a") == 4
        other = submit(scheduler, "b", "b")
        await workers.until_started(2)  # another session uses an idle worker at once
        for sql in ("b", "a0", "a1", "a2", "a3"):
            workers.release(sql)
        await asyncio.gather(*tasks, other)
        assert workers.most_running == 2
        assert scheduler.waiting("a") == 0
    finally:
        scheduler.close()


async def test_a_parse_past_the_timeout_is_unknown_and_its_worker_is_replaced() -> None:
    workers = FakeWorkers()
    scheduler = FairScheduler(workers, workers=1, timeout_s=0.05)
    try:
        stuck = submit(scheduler, "hang", "attacker")
        await workers.until_started(1)
        after = submit(scheduler, "v", "victim")
        verdict = await stuck
        assert verdict.statement_class is StatementClass.UNKNOWN
        assert verdict.reasons == ("classification took longer than 0.05s; not classified",)
        assert workers.workers[0].killed
        assert scheduler.replaced == 1
        workers.release("v")
        assert (await after).reasons == ("parsed v",)
        assert len(workers.workers) == 2
        assert not workers.workers[1].killed
    finally:
        scheduler.close()


async def test_a_session_that_stops_waiting_leaves_the_queue() -> None:
    workers = FakeWorkers()
    scheduler = FairScheduler(workers, workers=1, timeout_s=5)
    try:
        first = submit(scheduler, "a0", "a")
        await workers.until_started(1)
        gone = submit(scheduler, "g", "gone")
        await asyncio.sleep(0)
        assert scheduler.waiting("gone") == 1
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert scheduler.waiting("gone") == 0
        victim = submit(scheduler, "v", "victim")
        workers.release("a0")
        workers.release("v")
        await asyncio.gather(first, victim)
        assert workers.started == ["a0", "v"]  # "g" never ran
    finally:
        scheduler.close()


async def test_statements_over_the_size_cap_are_refused_with_54000_not_parsed() -> None:
    workers = FakeWorkers()
    classifiers = Classifiers(max_statement_bytes=2048, start_worker=workers)
    try:
        select = "select 1 -- " + "x" * 2100
        with pytest.raises(StatementTooLarge) as refused:
            await classifiers.classify(select, "postgres", "s")
        assert refused.value.sqlstate == "54000"
        assert refused.value.mysql_errno == 1153
        assert "2048 bytes" in refused.value.message
        # Bytes, not characters: 700 three-byte characters are 2100 bytes.
        with pytest.raises(StatementTooLarge):
            await classifiers.classify("select '" + "€" * 700 + "'", "postgres", "s")
        assert workers.started == []
        under = "select '" + "x" * 1900 + "'"
        parsing = asyncio.get_running_loop().create_task(
            classifiers.classify(under, "postgres", "s")
        )
        await workers.until_started(1)
        workers.release(under)
        assert (await parsing).reasons == (f"parsed {under}",)  # parsed, not refused
    finally:
        classifiers.close()


async def test_short_statements_parse_inline_and_timeouts_are_not_cached() -> None:
    workers = FakeWorkers()
    classifiers = Classifiers(inline_chars=100, timeout_s=0.05, start_worker=workers)
    try:
        short = await classifiers.classify("select 1", "postgres", "s")
        assert short.is_read
        assert workers.started == []
        long_text = "hang " + "x" * 200
        verdict = await classifiers.classify(long_text, "postgres", "s")
        assert verdict.statement_class is StatementClass.UNKNOWN
        assert classifiers.cached("postgres").lookup(long_text) is None
    finally:
        classifiers.close()


async def test_long_statements_are_classified_in_a_worker_process_and_cached() -> None:
    classifiers = Classifiers(inline_chars=100)
    try:
        values = ", ".join(f"({i}, 'name {i}')" for i in range(200))
        insert = f"insert into t values {values}"  # noqa: S608 (a fixed test string)
        verdict = await classifiers.classify(insert, "postgres", "s")
        assert verdict.statement_class is StatementClass.WRITE
        assert classifiers.cached("postgres").lookup(insert) == verdict
        short = await classifiers.classify("select 1", "postgres", "s")
        assert short.statement_class is StatementClass.READ
    finally:
        classifiers.close()


async def test_capped_statements_are_unknown_and_never_cached() -> None:
    classifiers = Classifiers()
    try:
        deep = "select " + "(" * 50_000 + "1" + ")" * 50_000
        verdict = await classifiers.classify(deep, "postgres", "s")
        assert verdict.statement_class is StatementClass.UNKNOWN
        assert classifiers.cached("postgres").lookup(deep) is None
    finally:
        classifiers.close()
