"""Statement classifier throughput: cold (full classification) against cached (fingerprint hit).

For each workload it measures statements per second and microseconds per statement:

- cold: `policy.classify.classify` on every statement, as on a cache miss: both lexers,
  the agreement check and, for queries, a full sqlglot parse and tree check;
- cached: `policy.fingerprint.CachedClassifier.classify` after a warm-up round: a lookup
  by exact text, then by fingerprint (a statement that differs from one seen before only
  in its literals), and on a miss a full classification that is then stored.

The workloads are what a gateway sees: short SELECTs repeated exactly (extended protocol),
pgbench's select-only query with a new literal each time (simple protocol, so no two texts
are equal), its extended-protocol form with $1, a 100-row INSERT with fresh values, and
the same shapes for MySQL, whose texts always carry their literals inline.

    .venv/bin/python benchmarks/classifier.py
    .venv/bin/python benchmarks/classifier.py --seconds 2 --json results.json

Pure CPU work in one process; no database needed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from policy.classify import classify
from policy.fingerprint import CachedClassifier, fingerprint

SHORT_SELECTS = [
    "SELECT 1",
    "SELECT id, name FROM users WHERE id = $1",
    "SELECT count(*) FROM orders WHERE status = $1",
    "SELECT * FROM t ORDER BY created_at DESC LIMIT 10",
    "SELECT a.id, b.total FROM a JOIN b ON b.a_id = a.id WHERE a.id = $1",
    "SELECT now(), current_user, version()",
    "SELECT lower(email) FROM users WHERE created_at > now() - interval '1 day'",
    "SHOW search_path",
]


@dataclass(frozen=True)
class Workload:
    name: str
    dialect: str
    #: Makes the n-th statement of the workload.
    statement: Callable[[random.Random], str]


def _pgbench_simple(rng: random.Random) -> str:
    aid = rng.randint(1, 1_000_000)
    return f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"  # noqa: S608


def _pgbench_extended(rng: random.Random) -> str:
    return "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"


def _short_select(rng: random.Random) -> str:
    return rng.choice(SHORT_SELECTS)


def _row(rng: random.Random, separator: str) -> str:
    customer = f"customer{separator}{rng.randint(1, 10**6)}"
    amount = f"{rng.randint(0, 99999)}.{rng.randint(0, 99):02d}"
    return f"({rng.randint(1, 10**9)}, '{customer}', {amount})"


def _insert_100_rows(rng: random.Random) -> str:
    rows = ", ".join(_row(rng, " ") for _ in range(100))
    return f"INSERT INTO payments (id, customer, amount) VALUES {rows}"  # noqa: S608


def _mysql_select(rng: random.Random) -> str:
    name = rng.choice(["alice", "bob", "o'brien", 'say "hi"', "a\\b"]).replace("\\", "\\\\")
    quoted = "'" + name.replace("'", "\\'") + "'"
    return f"SELECT id, email FROM users WHERE id = {rng.randint(1, 10**6)} AND name = {quoted}"  # noqa: S608


def _mysql_insert_100_rows(rng: random.Random) -> str:
    rows = ", ".join(_row(rng, "-") for _ in range(100))
    return f"INSERT INTO payments (id, customer, amount) VALUES {rows}"  # noqa: S608


WORKLOADS = [
    Workload("short SELECTs, repeated", "postgres", _short_select),
    Workload("pgbench -S, simple protocol", "postgres", _pgbench_simple),
    Workload("pgbench -S, extended ($1)", "postgres", _pgbench_extended),
    Workload("100-row INSERT", "postgres", _insert_100_rows),
    Workload("SELECT with inline literals", "mysql", _mysql_select),
    Workload("100-row INSERT", "mysql", _mysql_insert_100_rows),
]


@dataclass(frozen=True)
class Result:
    workload: str
    dialect: str
    chars: int
    cold_per_s: float
    cold_us: float
    cached_per_s: float
    cached_us: float
    cache_path: str
    fingerprint_us: float


def _rate(run: Callable[[str], object], statements: Sequence[str], seconds: float) -> float:
    """Statements per second over one pass, stopped after `seconds`.

    One pass, so a statement the cache stored while being measured is not met again:
    only the warm-up's shapes can hit.
    """
    done = 0
    started = time.perf_counter()
    for sql in statements:
        run(sql)
        done += 1
        if done % 16 == 0 and time.perf_counter() - started > seconds:
            break
    return done / (time.perf_counter() - started)


def measure(workload: Workload, seconds: float, count: int) -> Result:
    rng = random.Random(1)
    statements = [workload.statement(rng) for _ in range(count)]
    cache = CachedClassifier(workload.dialect)

    def cold(sql: str) -> object:
        return classify(sql, workload.dialect)

    def cached(sql: str) -> object:
        return cache.classify(sql)  # lookup; on a miss classify and store

    # Warm up on other statements of the same shapes, so the measured ones hit the cache
    # the way the gateway's would: by text when texts repeat, else by fingerprint.
    warm_rng = random.Random(2)
    warm = {workload.statement(warm_rng) for _ in range(50)}
    for sql in warm:
        cache.classify(sql)
    if all(sql in warm for sql in statements):
        path = "exact text"
    elif cache.lookup(statements[0]) is None:
        path = "miss: too long for the token path, exact text only"
    else:
        key = fingerprint(statements[0], workload.dialect) or ""
        path = "fingerprint, fast path" if "\x00F\x00" in key else "fingerprint, tokens"
    cold_rate = _rate(cold, statements, seconds)
    cached_rate = _rate(cached, statements, seconds)
    fingerprint_rate = _rate(
        lambda sql: fingerprint(sql, workload.dialect), statements, seconds / 2
    )
    return Result(
        workload=workload.name,
        dialect=workload.dialect,
        chars=len(statements[0]),
        cold_per_s=cold_rate,
        cold_us=1e6 / cold_rate,
        cached_per_s=cached_rate,
        cached_us=1e6 / cached_rate,
        cache_path=path,
        fingerprint_us=1e6 / fingerprint_rate,
    )


def print_table(results: Sequence[Result]) -> None:
    header = (
        f"{'workload':30} {'dialect':8} {'chars':>6} {'cold/s':>9} {'cold us':>9} "
        f"{'cached/s':>10} {'cached us':>9} {'speed-up':>8}  {'fingerprint us':>14}  cache hit by"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.workload:30} {r.dialect:8} {r.chars:>6} {r.cold_per_s:>9,.0f} {r.cold_us:>9.1f} "
            f"{r.cached_per_s:>10,.0f} {r.cached_us:>9.1f} {r.cached_per_s / r.cold_per_s:>7.0f}x"
            f"  {r.fingerprint_us:>14.1f}  {r.cache_path}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="at most, per measurement (default 1)"
    )
    parser.add_argument(
        "--statements", type=int, default=5000, help="statements per workload (default 5000)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    results = [measure(workload, args.seconds, args.statements) for workload in WORKLOADS]
    print_table(results)
    print(
        f"\nPython {platform.python_version()}, sqlglot {importlib.metadata.version('sqlglot')}, "
        f"{platform.machine()}, {platform.processor() or platform.platform()}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "python": platform.python_version(),
                    "sqlglot": importlib.metadata.version("sqlglot"),
                    "machine": platform.machine(),
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
