"""MySQL relay throughput: Airlock against direct connections to the same MariaDB.

One run sets up everything it measures and tears it all down again:

- a throwaway database (`airlock_bench_<hex>`) on the local MariaDB, filled with
  `sysbench oltp_point_select prepare` (one table of TABLE_SIZE rows);
- the Airlock gateway (`airlock serve`) on free loopback ports with a generated config: a
  development issuer, plain TCP allowed from loopback, one MySQL target `bench`, one rule
  that allows every class; recording is on, as it always is;

- `tcp_forwarder.py`, the cheapest relay Python can be (bytes in, bytes out, on uvloop),
  as a baseline: what any one-process Python proxy costs here before it does any work;

then, for each statement mode and client count, runs `sysbench oltp_point_select` (select
one row by primary key) directly, through the forwarder and through the gateway, back to
back, each after a short warm-up, and prints TPS, mean latency, the ratios, the proxies'
CPU per transaction, transcript bytes per statement, and whether the issue's target is
met.
Both connect without TLS (like for like). Modes: `text` (sysbench --db-ps-mode=disable:
each select is a COM_QUERY with its own literal, so the classifier's fingerprint cache
does the work) and `prepared` (--db-ps-mode=auto: COM_STMT_EXECUTE of one prepared
statement).

    .venv/bin/python benchmarks/mysql_throughput.py --duration 10 --rounds 3

Missing the target is reported, never an exit status: the script exits non-zero only when
it could not measure (sysbench failed, the gateway did not start, ...). Needs root or
sudo to apt-get install sysbench when it is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_throughput import (  # the PostgreSQL benchmark's process helpers
    AIRLOCK,
    BenchError,
    free_port,
    note,
    process_cpu_s,
    run,
    stop_process,
    wait_for_health,
)

MODES = {"text": "disable", "prepared": "auto"}
MIN_RATIO_VS_DIRECT = 0.70
TABLE_SIZE = 10_000
_TRANSACTIONS = re.compile(r"transactions:\s+(\d+)\s+\(([0-9.]+) per sec\.\)")
_LATENCY = re.compile(r"avg:\s+([0-9.]+)")


@dataclass
class Endpoint:
    port: int
    user: str
    password: str
    database: str


@dataclass
class Measure:
    tps: float
    latency_ms: float
    transactions: int
    cpu_s: float | None = None


def mysql_root(sql: str) -> None:
    run(["mysql", "-h127.0.0.1", "-P3306", "-uroot", "-e", sql], what="mysql")


def ensure_sysbench() -> str:
    found = shutil.which("sysbench")
    if found:
        return found
    note("installing sysbench (apt-get)")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with contextlib.suppress(BenchError):
        run([*prefix, "apt-get", "install", "-y", "-qq", "sysbench"], env=env, what="apt-get")
    if not shutil.which("sysbench"):
        run([*prefix, "apt-get", "update", "-qq"], env=env, what="apt-get update")
        run([*prefix, "apt-get", "install", "-y", "-qq", "sysbench"], env=env, what="apt-get")
    found = shutil.which("sysbench")
    if not found:
        raise BenchError("sysbench is not installed and could not be installed")
    return found


def sysbench(
    endpoint: Endpoint, mode: str, clients: int, duration_s: int, action: str = "run"
) -> Measure:
    command = [
        "sysbench",
        "oltp_point_select",
        "--mysql-host=127.0.0.1",
        f"--mysql-port={endpoint.port}",
        f"--mysql-user={endpoint.user}",
        f"--mysql-password={endpoint.password}",
        f"--mysql-db={endpoint.database}",
        "--mysql-ssl=off",
        "--tables=1",
        f"--table-size={TABLE_SIZE}",
        f"--threads={clients}",
        f"--time={duration_s}",
        f"--db-ps-mode={MODES[mode]}",
        action,
    ]
    # libmariadb sends the token with mysql_clear_password only when told it may; loading
    # the plugin up front avoids a race when several threads are switched to it at once
    # ("Plugin mysql_clear_password could not be loaded: it is already loaded").
    env = {
        **os.environ,
        "LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN": "1",
        "LIBMYSQL_PLUGINS": "mysql_clear_password",
    }
    done = run(command, env=env, timeout=duration_s + 120, what="sysbench")
    if action != "run":
        return Measure(0.0, 0.0, 0)
    transactions = _TRANSACTIONS.search(done.stdout)
    latency = _LATENCY.search(done.stdout)
    if transactions is None or latency is None:
        raise BenchError(f"cannot read sysbench's output:\n{done.stdout[-2000:]}")
    tps, count = float(transactions.group(2)), int(transactions.group(1))
    return Measure(tps, float(latency.group(1)), count)


def start_gateway(
    workdir: Path,
    database: str,
    stack: contextlib.ExitStack,
    *,
    prefix: Sequence[str] = (),
    env: dict[str, str] | None = None,
    health_timeout_s: float = 30.0,
) -> tuple[subprocess.Popen[bytes], Endpoint, Path]:
    """`airlock serve` (run under `prefix`, e.g. valgrind) with the benchmark's config."""
    mysql_port, api_port = free_port(), free_port()
    data_dir = workdir / "data"
    config = workdir / "airlock.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": {
                    "postgres": None,
                    "mysql": f"127.0.0.1:{mysql_port}",
                    "api": f"127.0.0.1:{api_port}",
                },
                "allow_insecure_loopback": True,
                "dev_issuer": True,
                "data_dir": str(data_dir),
                "targets": {
                    "bench": {
                        "protocol": "mysql",
                        "upstream": f"mysql://root@127.0.0.1:3306/{database}?sslmode=disable",
                    }
                },
                "rules": [
                    {
                        "groups": ["data-agents"],
                        "targets": ["bench"],
                        "read": "allow",
                        "write": "allow",
                        "ddl": "allow",
                        "unknown": "allow",
                        "session_ttl": "2h",
                    }
                ],
            }
        )
    )
    log = workdir / "airlock.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*prefix, str(AIRLOCK), "serve", "--config", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(stop_process, process, "airlock")
    wait_for_health(process, api_port, log, timeout_s=health_timeout_s)
    token = run(
        [str(AIRLOCK), "dev-token", "--config", str(config), "--sub", "bench",
         "--groups", "data-agents", "--ttl", "2h"],
        what="airlock dev-token",
    ).stdout.strip()  # fmt: skip
    return process, Endpoint(mysql_port, "agent", token, "bench"), data_dir


def transcript_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "transcripts").rglob("*") if p.is_file())


def benchmark(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    ensure_sysbench()
    database = f"airlock_bench_{secrets.token_hex(4)}"
    mysql_root(f"CREATE DATABASE {database}")
    stack.callback(mysql_root, f"DROP DATABASE IF EXISTS {database}")
    direct = Endpoint(3306, "root", "", database)
    note(f"created database {database}; sysbench prepare ({TABLE_SIZE} rows)")
    sysbench(direct, "text", 1, 1, action="prepare")
    workdir = Path(tempfile.mkdtemp(prefix="airlock-mysql-bench-"))
    stack.callback(shutil.rmtree, workdir, True)
    process, gateway, data_dir = start_gateway(workdir, database, stack)
    note(f"airlock on 127.0.0.1:{gateway.port}")
    forwarder_port = free_port()
    forwarder_process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("tcp_forwarder.py")),
         str(forwarder_port), "127.0.0.1", "3306"],
        start_new_session=True,
    )  # fmt: skip
    stack.callback(stop_process, forwarder_process, "forwarder")
    forwarder = Endpoint(forwarder_port, "root", "", database)
    time.sleep(1.0)
    if forwarder_process.poll() is not None:
        raise BenchError("the TCP forwarder did not start")
    pids = {"airlock": process.pid, "forwarder": forwarder_process.pid}
    rows: list[dict[str, Any]] = []
    for mode in args.modes:
        for clients in args.clients:
            runs: dict[str, list[Measure]] = {"direct": [], "forwarder": [], "airlock": []}
            for _ in range(args.rounds):
                for name, endpoint in (
                    ("direct", direct),
                    ("forwarder", forwarder),
                    ("airlock", gateway),
                ):
                    if args.warmup:
                        sysbench(endpoint, mode, clients, args.warmup)
                    pid = pids.get(name)
                    before_cpu = process_cpu_s(pid) if pid is not None else None
                    before_bytes = transcript_bytes(data_dir)
                    measure = sysbench(endpoint, mode, clients, args.duration)
                    if before_cpu is not None:
                        after = process_cpu_s(pid)
                        measure.cpu_s = None if after is None else after - before_cpu
                    runs[name].append(measure)
                    if name == "airlock":
                        grown = transcript_bytes(data_dir) - before_bytes
                        note(f"  transcript grew {grown} bytes for {measure.transactions} selects")
                        runs.setdefault("bytes", []).append(
                            Measure(grown / max(measure.transactions, 1), 0.0, 0)
                        )
                    note(f"{mode:9} {clients} clients {name:8} {measure.tps:9.0f} tps "
                         f"{measure.latency_ms:.3f} ms")  # fmt: skip
            direct_tps = statistics.median(m.tps for m in runs["direct"])
            airlock_tps = statistics.median(m.tps for m in runs["airlock"])
            forwarder_tps = statistics.median(m.tps for m in runs["forwarder"])
            cpu = [m.cpu_s / m.transactions * 1e6 for m in runs["airlock"] if m.cpu_s]
            fcpu = [m.cpu_s / m.transactions * 1e6 for m in runs["forwarder"] if m.cpu_s]
            rows.append(
                {
                    "mode": mode,
                    "clients": clients,
                    "direct_tps": direct_tps,
                    "direct_ms": statistics.median(m.latency_ms for m in runs["direct"]),
                    "airlock_tps": airlock_tps,
                    "airlock_ms": statistics.median(m.latency_ms for m in runs["airlock"]),
                    "ratio": airlock_tps / direct_tps if direct_tps else 0.0,
                    "forwarder_tps": forwarder_tps,
                    "forwarder_ratio": forwarder_tps / direct_tps if direct_tps else 0.0,
                    "forwarder_cpu_us_per_txn": statistics.median(fcpu) if fcpu else None,
                    "airlock_cpu_us_per_txn": statistics.median(cpu) if cpu else None,
                    "transcript_bytes_per_statement": statistics.median(
                        m.tps for m in runs["bytes"]
                    ),
                }
            )
    return {"rows": rows, "duration_s": args.duration, "rounds": args.rounds}


def report(result: dict[str, Any]) -> str:
    lines = [
        "Airlock MySQL relay throughput (sysbench oltp_point_select, MariaDB, no TLS)",
        "",
        f"{result['duration_s']} s per run, median of {result['rounds']} round(s); "
        "direct and airlock interleaved per row.",
        "",
        "| mode     | clients | direct tps | fwd tps | fwd/direct | fwd CPU us/txn "
        "| airlock tps | airlock ms | air/direct | airlock CPU us/txn | transcript B/stmt |",
        "|----------|---------|------------|---------|------------|----------------"
        "|-------------|------------|------------|--------------------|-------------------|",
    ]
    for row in result["rows"]:
        cpu, fcpu = row["airlock_cpu_us_per_txn"], row["forwarder_cpu_us_per_txn"]
        lines.append(
            f"| {row['mode']:8} | {row['clients']:7} | {row['direct_tps']:10.0f} "
            f"| {row['forwarder_tps']:7.0f} | {row['forwarder_ratio']:10.1%} "
            f"| {f'{fcpu:.1f}' if fcpu else '-':>14} "
            f"| {row['airlock_tps']:11.0f} | {row['airlock_ms']:10.3f} "
            f"| {row['ratio']:10.1%} | {f'{cpu:.1f}' if cpu else '-':>18} "
            f"| {row['transcript_bytes_per_statement']:17.0f} |"
        )
    worst = min(result["rows"], key=lambda row: row["ratio"])
    met = worst["ratio"] >= MIN_RATIO_VS_DIRECT
    lines += [
        "",
        f"Target: airlock >= {MIN_RATIO_VS_DIRECT:.0%} of direct TPS: "
        f"{'met' if met else 'NOT met'} (worst {worst['ratio']:.1%}, {worst['mode']}, "
        f"{worst['clients']} clients)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument(
        "--modes", type=lambda s: s.split(","), default=list(MODES), help="text,prepared"
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(sorted(unknown))}")
    try:
        with contextlib.ExitStack() as stack:
            result = benchmark(args, stack)
    except BenchError as error:
        print(f"mysql_throughput: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
