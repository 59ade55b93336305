"""The gateway's instructions per MySQL query, counted by callgrind: a figure the machine's
load does not move, for comparing two versions of the relay.

One run:

- creates a throwaway database on the local MariaDB with a sysbench-shaped table
  (`sbtest1`: id, k, c CHAR(120), pad CHAR(60)) of 1,000 rows;
- starts `airlock serve` (this work tree's code: PYTHONPATH is set to it) under
  `valgrind --tool=callgrind --instr-atstart=no`, with mysql_throughput.py's config
  (recording on, as it always is; no TLS, loopback);
- for each workload, on one connection: a warm-up, then instrumentation on and the
  counters zeroed (`callgrind_control`), QUERIES queries, a dump, instrumentation off.
  Callgrind acts on a command when the process next runs, so each command is followed
  by a COM_PING that wakes the gateway; the pings counted with the queries (about two
  per dump) are left in: a ping costs a fraction of a query.

Workloads (the client is PyMySQL, or mysql-connector for server-side prepared
statements; only the gateway process is counted):

- `point`: `SELECT c FROM sbtest1 WHERE id=<n>`, a new literal each time (a verdict
  cache hit by fingerprint), one row;
- `range100`: `SELECT id, k, c, pad FROM sbtest1 WHERE id BETWEEN <n> AND <n+99>`,
  100 rows;
- `prepared`: COM_STMT_EXECUTE of `SELECT c FROM sbtest1 WHERE id=?`, one binary row.

Printed: instructions per query (Ir, the dump's total over the number of queries) and
the top functions of each dump (callgrind_annotate), unless --quiet.

    .venv/bin/python benchmarks/mysql_callgrind.py [--queries 2000] [--workloads point,range100]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from mysql_throughput import Endpoint, mysql_root, start_gateway
from pg_throughput import REPO_ROOT, BenchError, note, run, run_guarded

from tests.support.rawmysql import RawMySql

TABLE_ROWS = 1000
WORKLOADS = ("point", "range100", "prepared")
_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def create_table(database: str) -> None:
    mysql_root(
        f"CREATE TABLE {database}.sbtest1 (id INT PRIMARY KEY, k INT NOT NULL, "
        f"c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL)"
    )
    rows = [
        (i, random.randrange(TABLE_ROWS), secrets.token_hex(60), secrets.token_hex(30))
        for i in range(1, TABLE_ROWS + 1)
    ]
    with pymysql.connect(host="127.0.0.1", port=3306, user="root", database=database) as root:
        root.cursor().executemany("INSERT INTO sbtest1 VALUES (%s, %s, %s, %s)", rows)
        root.commit()


class Callgrind:
    """`callgrind_control` on the gateway, each command woken by a ping of the client's."""

    def __init__(self, pid: int, out_dir: Path) -> None:
        self.pid = pid
        self.out_dir = out_dir

    def command(self, ping: Callable[[], object], *args: str) -> None:
        control = subprocess.Popen(
            ["callgrind_control", *args, str(self.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120.0
        while control.poll() is None:
            if time.monotonic() > deadline:
                control.kill()
                raise BenchError(f"callgrind_control {' '.join(args)} got no answer")
            ping()
            time.sleep(0.2)
        if control.returncode != 0:
            assert control.stderr is not None
            raise BenchError(f"callgrind_control {' '.join(args)}: {control.stderr.read()!r}")

    def dumps(self) -> set[Path]:
        return set(self.out_dir.glob("callgrind.out.*"))


def connect(endpoint: Endpoint) -> pymysql.Connection[Any]:
    return pymysql.connect(
        host="127.0.0.1",
        port=endpoint.port,
        user=endpoint.user,
        password=endpoint.password,
        database=endpoint.database,
        ssl_disabled=True,  # PyMySQL would take TLS where offered; the benchmark is plain TCP
    )


def text_workload(endpoint: Endpoint, name: str) -> tuple[Callable[[int], None], Any]:
    connection = connect(endpoint)
    cursor = connection.cursor()
    if name == "point":

        def query(n: int) -> None:
            # a literal of its own each time, as sysbench sends it (ints: nothing to inject)
            cursor.execute(f"SELECT c FROM sbtest1 WHERE id={n % TABLE_ROWS + 1}")  # noqa: S608
            if len(cursor.fetchall()) != 1:
                raise BenchError("a point select did not return one row")

    else:

        def query(n: int) -> None:
            low = n % (TABLE_ROWS - 100) + 1
            cursor.execute(
                f"SELECT id, k, c, pad FROM sbtest1 WHERE id BETWEEN {low} AND {low + 99}"  # noqa: S608
            )
            if len(cursor.fetchall()) != 100:
                raise BenchError("a range select did not return 100 rows")

    return query, connection


def prepared_workload(endpoint: Endpoint) -> tuple[Callable[[int], None], Any]:
    # The drivers at hand send a token in clear text only over TLS; the test suite's raw
    # client rides on a PyMySQL login and sends COM_STMT_PREPARE and _EXECUTE itself.
    connection = connect(endpoint)
    raw = RawMySql(connection)
    prepared = raw.prepare("SELECT c FROM sbtest1 WHERE id=?")
    if prepared.statement_id is None:
        raise BenchError(f"the prepare failed: {prepared.error}")
    statement_id = prepared.statement_id

    def query(n: int) -> None:
        if len(raw.execute(statement_id, (str(n % TABLE_ROWS + 1),)).rows) != 1:
            raise BenchError("a prepared point select did not return one row")

    return query, connection


def measure(
    callgrind: Callgrind, endpoint: Endpoint, name: str, queries: int, warmup: int
) -> tuple[int, Path]:
    """Instructions the gateway ran for `queries` queries of workload `name`, and the dump."""
    query, connection = (
        prepared_workload(endpoint) if name == "prepared" else text_workload(endpoint, name)
    )
    try:
        for n in range(warmup):
            query(n)
        ping = connection.ping
        callgrind.command(ping, "-i", "on")
        callgrind.command(ping, "-z")
        before = callgrind.dumps()
        for n in range(queries):
            query(warmup + n)
        callgrind.command(ping, "-d", name)
        callgrind.command(ping, "-i", "off")
    finally:
        connection.close()
    [dump] = callgrind.dumps() - before
    totals = _TOTALS.search(dump.read_text(errors="replace"))
    if totals is None:
        raise BenchError(f"no totals in {dump}")
    return int(totals.group(1)), dump


def top_functions(dump: Path, queries: int, count: int) -> str:
    done = run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=99", str(dump)],
        what="callgrind_annotate",
    )
    lines: list[str] = []
    for line in done.stdout.splitlines():
        match = re.match(r"^\s*([0-9,]+)\s+\(\s*([0-9.]+)%\)\s+(.*)$", line)
        if match is None:
            continue
        ir = int(match.group(1).replace(",", ""))
        lines.append(f"  {ir / queries:10.0f}  {match.group(2):>5}%  {match.group(3)[:110]}")
        if len(lines) > count:
            break
    return "\n".join(lines[1:])  # the first is the program total


def benchmark(args: argparse.Namespace, stack: contextlib.ExitStack) -> list[str]:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise BenchError("valgrind is not installed (apt-get install -y valgrind)")
    database = f"airlock_cg_{secrets.token_hex(4)}"
    mysql_root(f"CREATE DATABASE {database}")
    stack.callback(mysql_root, f"DROP DATABASE IF EXISTS {database}")
    create_table(database)
    workdir = Path(tempfile.mkdtemp(prefix="airlock-mysql-callgrind-"))
    stack.callback(shutil.rmtree, workdir, True)
    out_dir = workdir / "callgrind"
    out_dir.mkdir()
    prefix = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_dir}/callgrind.out.%p",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONHASHSEED": "0"}
    note("starting airlock under callgrind (slow)")
    process, gateway, _ = start_gateway(
        workdir, database, stack, prefix=prefix, env=env, health_timeout_s=600.0
    )
    callgrind = Callgrind(process.pid, out_dir)
    report = [f"instructions per query in the gateway (callgrind Ir, {args.queries} queries)"]
    for name in args.workloads:
        total, dump = measure(callgrind, gateway, name, args.queries, args.warmup)
        report.append(f"{name:9} {total / args.queries:12,.0f} Ir/query")
        note(report[-1])
        if not args.quiet:
            report.append(top_functions(dump, args.queries, args.top))
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(dump, args.keep / f"callgrind.{name}.out")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--workloads", type=lambda s: s.split(","), default=list(WORKLOADS), help="point,..."
    )
    parser.add_argument("--top", type=int, default=25, help="functions listed per workload")
    parser.add_argument("--quiet", action="store_true", help="totals only")
    parser.add_argument("--keep", type=Path, help="copy each workload's dump here")
    args = parser.parse_args(argv)
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    status, report = run_guarded(lambda stack: benchmark(args, stack))
    if report is not None:
        print("\n".join(report))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
