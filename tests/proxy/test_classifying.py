"""Classification in the gateway: cached verdicts, long statements in a worker process."""

from __future__ import annotations

from policy.classify import StatementClass
from proxy.classifying import Classifiers


async def test_long_statements_are_classified_in_a_worker_and_cached() -> None:
    classifiers = Classifiers(inline_chars=100)
    try:
        values = ", ".join(f"({i}, 'name {i}')" for i in range(200))
        insert = f"insert into t values {values}"  # noqa: S608 (a fixed test string)
        verdict = await classifiers.classify(insert, "postgres")
        assert verdict.statement_class is StatementClass.WRITE
        assert classifiers.cached("postgres").lookup(insert) == verdict
        short = await classifiers.classify("select 1", "postgres")
        assert short.statement_class is StatementClass.READ
    finally:
        classifiers.close()


async def test_capped_statements_are_never_parsed_nor_cached() -> None:
    classifiers = Classifiers()
    deep = "select " + "(" * 50_000 + "1" + ")" * 50_000
    verdict = await classifiers.classify(deep, "postgres")
    assert verdict.statement_class is StatementClass.UNKNOWN
    assert classifiers.cached("postgres").lookup(deep) is None
    assert classifiers._pool is None  # no worker was needed
