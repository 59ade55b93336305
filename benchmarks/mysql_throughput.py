"""MySQL relay throughput: Airlock against HAProxy (mode tcp) and direct connections to
the same MariaDB.

One run sets up everything it measures and tears it all down again:

- a throwaway database (`airlock_bench_<hex>`) on the local MariaDB, filled with
  `sysbench oltp_point_select prepare` (one table of TABLE_SIZE rows);
- the Airlock gateway (`airlock serve`) on free loopback ports with a generated config: a
  development issuer, plain TCP allowed from loopback, one MySQL target `bench`, one rule
  that allows every class; recording is on, as it always is;
- HAProxy (`apt-get install -y haproxy` when missing) as a child process with a generated
  config: mode tcp, one thread, in front of the same MariaDB;
- with --forwarder, also `tcp_forwarder.py`, the cheapest relay Python can be (bytes in,
  bytes out, on uvloop): what any one-process Python proxy costs before it does any work;

then, for each statement mode and client count, runs `sysbench oltp_point_select` (select
one row by primary key) directly, through HAProxy (and the forwarder) and through the
gateway, interleaved in rounds (each after a short warm-up), and prints per target the
median TPS, its spread over the rounds, the TPS as a share of HAProxy's (overall, and the
lowest and highest round), mean latency, the proxy's CPU per transaction, transcript bytes
per statement, and whether the issue's target (airlock >= 90% of HAProxy's TPS, at 1 and 8
clients) is met. All connect without TLS (like for like). Modes: `text` (sysbench
--db-ps-mode=disable: each select is a COM_QUERY with its own literal, so the classifier's
fingerprint cache does the work) and `prepared` (--db-ps-mode=auto: COM_STMT_EXECUTE of
one prepared statement).

    .venv/bin/python benchmarks/mysql_throughput.py --duration 10 --rounds 3

Run it on a quiet machine: on a loaded one the spread says the figures mean little (use
mysql_callgrind.py to compare two versions there). Missing the target is reported, never
an exit status: the script exits non-zero only when it could not measure (sysbench failed,
the gateway did not start, ...). Needs root or sudo to apt-get install sysbench and
haproxy when they are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
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
MIN_RATIO_VS_HAPROXY = 0.90
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


def ensure_haproxy() -> str:
    found = shutil.which("haproxy")
    if found:
        return found
    note("installing haproxy (apt-get)")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with contextlib.suppress(BenchError):
        run([*prefix, "apt-get", "install", "-y", "-qq", "haproxy"], env=env, what="apt-get")
    if not shutil.which("haproxy"):
        run([*prefix, "apt-get", "update", "-qq"], env=env, what="apt-get update")
        run([*prefix, "apt-get", "install", "-y", "-qq", "haproxy"], env=env, what="apt-get")
    found = shutil.which("haproxy")
    if not found:
        raise BenchError("haproxy is not installed and could not be installed")
    return found


def start_haproxy(
    workdir: Path, database: str, stack: contextlib.ExitStack
) -> tuple[subprocess.Popen[bytes], Endpoint]:
    """HAProxy in mode tcp in front of the same MariaDB: one process, one thread (as
    the gateway runs one event loop), in the foreground as our child."""
    binary = ensure_haproxy()
    port = free_port()
    config = workdir / "haproxy.cfg"
    config.write_text(
        "global\n"
        "    nbthread 1\n"
        "    maxconn 1000\n"
        "defaults\n"
        "    mode tcp\n"
        "    timeout connect 5s\n"
        "    timeout client 1h\n"
        "    timeout server 1h\n"
        "frontend mysql_in\n"
        f"    bind 127.0.0.1:{port}\n"
        "    default_backend mariadb\n"
        "backend mariadb\n"
        "    server local 127.0.0.1:3306\n"
    )
    run([binary, "-c", "-f", str(config)], what="haproxy -c")
    log = workdir / "haproxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(stop_process, process, "haproxy")
    deadline = time.monotonic() + 10.0
    while True:
        if process.poll() is not None:
            raise BenchError(f"haproxy exited with {process.returncode}: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
            break
        if time.monotonic() > deadline:
            raise BenchError("haproxy did not listen within 10 s")
        time.sleep(0.1)
    return process, Endpoint(port, "root", "", database)


def spread(values: list[float]) -> float:
    """(max - min) / median of the rounds: how far one round is from another."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else 0.0


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
    haproxy_process, haproxy = start_haproxy(workdir, database, stack)
    note(f"haproxy (mode tcp) on 127.0.0.1:{haproxy.port}")
    targets: list[tuple[str, Endpoint, int | None]] = [
        ("direct", direct, None),
        ("haproxy", haproxy, haproxy_process.pid),
        ("airlock", gateway, process.pid),
    ]
    if args.forwarder:
        forwarder_port = free_port()
        forwarder_process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("tcp_forwarder.py")),
             str(forwarder_port), "127.0.0.1", "3306"],
            start_new_session=True,
        )  # fmt: skip
        stack.callback(stop_process, forwarder_process, "forwarder")
        time.sleep(1.0)
        if forwarder_process.poll() is not None:
            raise BenchError("the TCP forwarder did not start")
        forwarder = Endpoint(forwarder_port, "root", "", database)
        targets.insert(2, ("forwarder", forwarder, forwarder_process.pid))
    rows: list[dict[str, Any]] = []
    for mode in args.modes:
        for clients in args.clients:
            runs: dict[str, list[Measure]] = {name: [] for name, _, _ in targets}
            grown: list[float] = []
            for _ in range(args.rounds):
                # Interleaved: the targets of a round run back to back, so drift hits all.
                for name, endpoint, pid in targets:
                    if args.warmup:
                        sysbench(endpoint, mode, clients, args.warmup)
                    before_cpu = process_cpu_s(pid)
                    before_bytes = transcript_bytes(data_dir)
                    measure = sysbench(endpoint, mode, clients, args.duration)
                    after_cpu = process_cpu_s(pid)
                    if before_cpu is not None and after_cpu is not None:
                        measure.cpu_s = after_cpu - before_cpu
                    runs[name].append(measure)
                    if name == "airlock":
                        grown.append(
                            (transcript_bytes(data_dir) - before_bytes)
                            / max(measure.transactions, 1)
                        )
                    note(f"{mode:9} {clients} clients {name:9} {measure.tps:9.0f} tps "
                         f"{measure.latency_ms:.3f} ms")  # fmt: skip
            row: dict[str, Any] = {"mode": mode, "clients": clients, "targets": {}}
            base = statistics.median(m.tps for m in runs["haproxy"])
            for name, _, _ in targets:
                measures = runs[name]
                tps = statistics.median(m.tps for m in measures)
                cpu = [m.cpu_s / m.transactions * 1e6 for m in measures if m.cpu_s]
                # Each round's ratio to HAProxy in the same round: its spread is the noise.
                ratios = [
                    m.tps / h.tps for m, h in zip(measures, runs["haproxy"], strict=True) if h.tps
                ]
                row["targets"][name] = {
                    "tps": tps,
                    "tps_rounds": [m.tps for m in measures],
                    "tps_spread": spread([m.tps for m in measures]),
                    "latency_ms": statistics.median(m.latency_ms for m in measures),
                    "ratio_to_haproxy": tps / base if base else 0.0,
                    "ratio_to_haproxy_rounds": ratios,
                    "cpu_us_per_txn": statistics.median(cpu) if cpu else None,
                }
            row["transcript_bytes_per_statement"] = statistics.median(grown) if grown else None
            rows.append(row)
    return {
        "rows": rows,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "targets": [name for name, _, _ in targets],
    }


def report(result: dict[str, Any]) -> str:
    names: list[str] = result["targets"]
    lines = [
        "Airlock MySQL relay throughput (sysbench oltp_point_select, MariaDB, no TLS)",
        "",
        f"{result['duration_s']} s per run, median of {result['rounds']} round(s), the "
        f"targets interleaved in each round: {', '.join(names)}. spread: (max - min) / "
        "median of the rounds; x/hap: TPS as a share of HAProxy's (mode tcp), with the "
        "lowest and highest round; CPU: the proxy process's user + system time per "
        "transaction.",
        "",
        "| mode     | clients | target    |     tps | spread | x/hap  | x/hap rounds  "
        "|       ms | CPU us/txn |",
        "|----------|---------|-----------|---------|--------|--------|---------------"
        "|----------|------------|",
    ]
    for row in result["rows"]:
        for name in names:
            t = row["targets"][name]
            rounds = t["ratio_to_haproxy_rounds"]
            span = f"{min(rounds):.1%}-{max(rounds):.1%}" if rounds else "-"
            cpu = t["cpu_us_per_txn"]
            lines.append(
                f"| {row['mode']:8} | {row['clients']:7} | {name:9} | {t['tps']:7.0f} "
                f"| {t['tps_spread']:6.1%} | {t['ratio_to_haproxy']:6.1%} | {span:13} "
                f"| {t['latency_ms']:8.3f} | {f'{cpu:.1f}' if cpu else '-':>10} |"
            )
    worst = min(result["rows"], key=lambda row: row["targets"]["airlock"]["ratio_to_haproxy"])
    ratio = worst["targets"]["airlock"]["ratio_to_haproxy"]
    met = ratio >= MIN_RATIO_VS_HAPROXY
    bytes_per = [r["transcript_bytes_per_statement"] for r in result["rows"]]
    lines += [
        "",
        "Transcript bytes per statement: "
        + ", ".join(f"{b:.0f}" for b in bytes_per if b is not None),
        f"Target (issue 15): airlock >= {MIN_RATIO_VS_HAPROXY:.0%} of HAProxy's TPS at 1 and "
        f"8 clients: {'met' if met else 'NOT met'} (worst {ratio:.1%}, {worst['mode']}, "
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
    parser.add_argument(
        "--forwarder", action="store_true", help="also the bytes-only uvloop forwarder"
    )
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
