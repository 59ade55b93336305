"""PostgreSQL relay throughput: Airlock against direct connections and pgbouncer.

One run sets up everything it measures and tears it all down again:

- a throwaway database (`airlock_bench_<hex>`) initialised with `pgbench -i -s SCALE`;
- pgbouncer in session pool mode on a free loopback port, in front of that database
  (installed with apt-get when missing; run as the `postgres` OS user when we are root);
- the Airlock gateway (`airlock serve`) on free loopback ports with a generated config:
  a development issuer, plain TCP allowed from loopback, one target `bench`;

then, for each query mode and client count, runs `pgbench -n -S` (select only) against
the three back to back (direct, pgbouncer, airlock), each after a short warm-up, and
prints TPS and mean latency, the ratios between them and whether the targets of the
performance issue are met. All three connect with `sslmode=disable`, so the
comparison is like for like: TLS costs are not part of the figures.

    .venv/bin/python benchmarks/pg_throughput.py --duration 10 --json out.json

Missing a target is reported, never an exit status: the script exits non-zero only
when it could not measure (a pgbench run failed, a service did not start, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import importlib.metadata
import importlib.util
import json
import os
import platform
import pwd
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
# The scripts that import this one (profile_relay.py, pg_cost_breakdown.py) run the gateway
# in their own process: this tree's, not whatever the venv was installed from.
sys.path.insert(0, str(REPO_ROOT))
#: The `airlock` command of the interpreter running this script (the project's venv).
AIRLOCK = Path(sys.executable).parent / "airlock"

MODES = ("simple", "extended", "prepared")
TARGETS = ("direct", "pgbouncer", "airlock")
AIRLOCK_GROUP = "data-agents"
AIRLOCK_TARGET = "bench"
PGBOUNCER_DATABASE = "bench"

#: The targets of the performance issues: TPS as a share of pgbouncer's at every client
#: count (issue 15's; --min-ratio sets another), and latency added at 1 client.
MIN_TPS_RATIO_VS_PGBOUNCER = 0.90
MAX_ADDED_LATENCY_US_AT_1_CLIENT = 60.0

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


class BenchError(Exception):
    """The benchmark could not measure something; the message says what and why."""


def note(text: str) -> None:
    """Progress goes to stderr; the report alone goes to stdout."""
    print(text, file=sys.stderr, flush=True)


# --- processes -----------------------------------------------------------------------------


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _file_tail(path: Path, lines: int = 30) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError:
        return "(no log)"


def run(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; a non-zero exit is a BenchError with its output."""
    try:
        done = subprocess.run(
            list(command),
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"{what or command[0]} did not finish within {timeout:.0f} s") from error
    except OSError as error:
        raise BenchError(f"cannot run {command[0]}: {error}") from error
    if done.returncode != 0:
        output = _tail(done.stderr + "\n" + done.stdout)
        raise BenchError(f"{what or command[0]} failed (exit {done.returncode}):\n{output}")
    return done


def stop_process(process: subprocess.Popen[bytes], name: str, grace_s: float = 10.0) -> None:
    """SIGTERM to the process group (started with start_new_session), then SIGKILL."""
    if process.poll() is not None:
        return
    for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            if signum == signal.SIGTERM:
                note(f"{name} did not stop on SIGTERM within {grace_s:.0f} s; killing it")
    note(f"warning: {name} (pid {process.pid}) did not exit after SIGKILL")


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_guarded(body: Callable[[contextlib.ExitStack], T]) -> tuple[int, T | None]:
    """`body(stack)`, then everything it put on the stack cleaned up, even on Ctrl-C or
    SIGTERM (which count as Ctrl-C), and not cut short by a second one.

    (0, result) when it ran; (130, None) when interrupted; (1, None) on a BenchError,
    said on stderr.
    """
    previous_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    stack = contextlib.ExitStack()
    try:
        return 0, body(stack)
    except KeyboardInterrupt:
        note("interrupted: cleaning up")
        return 130, None
    except BenchError as error:
        note(f"error: {error}")
        return 1, None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.close()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous_term)


# --- connections ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where pgbench connects for one of the compared targets."""

    name: str
    host: str
    port: int
    user: str
    dbname: str
    password: str | None = field(default=None, repr=False)
    #: The proxy process in between, whose CPU time each run records (None: direct).
    pid: int | None = None

    def env(self) -> dict[str, str]:
        """Environment for libpq tools: no inherited PG* variables, TLS off, our password."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGSSLMODE"] = "disable"
        env["PGCONNECT_TIMEOUT"] = "10"
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def args(self) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", self.user]


def psql(endpoint: Endpoint, sql: str, *, dbname: str | None = None) -> str:
    done = run(
        [
            "psql",
            *endpoint.args(),
            "-d",
            dbname or endpoint.dbname,
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ],
        env=endpoint.env(),
        timeout=60,
        what=f"psql on {endpoint.name}",
    )
    return done.stdout.strip()


def create_database(server: Endpoint, stack: contextlib.ExitStack) -> str:
    name = f"airlock_bench_{secrets.token_hex(4)}"
    # Registered first: a CREATE that half-failed or a Ctrl-C right after still drops it.
    stack.callback(drop_database, server, name)
    psql(server, f'CREATE DATABASE "{name}"', dbname="postgres")
    return name


def drop_database(server: Endpoint, name: str) -> None:
    try:
        psql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', dbname="postgres")
    except BenchError as error:
        note(f"warning: could not drop database {name}: {error}")
    else:
        note(f"dropped database {name}")


# --- pgbouncer -----------------------------------------------------------------------------


def find_pgbouncer() -> str | None:
    found = shutil.which("pgbouncer")
    if found is not None:
        return found
    for candidate in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_pgbouncer() -> str:
    """The pgbouncer binary, installed from Debian's packages when missing."""
    found = find_pgbouncer()
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise BenchError(
            "pgbouncer is not installed and we are not root: apt-get install pgbouncer"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    note("pgbouncer is missing: apt-get install -y pgbouncer")
    try:
        run(["apt-get", "install", "-y", "pgbouncer"], env=env, what="apt-get install pgbouncer")
    except BenchError:
        note("install failed; apt-get update, then again")
        run(["apt-get", "update"], env=env, what="apt-get update")
        run(["apt-get", "install", "-y", "pgbouncer"], env=env, what="apt-get install pgbouncer")
    found = find_pgbouncer()
    if found is None:
        raise BenchError("pgbouncer was installed but its binary is not found")
    return found


def pgbouncer_version(binary: str) -> str:
    try:
        done = run([binary, "--version"], timeout=30, what="pgbouncer --version")
    except BenchError:
        return "unknown"
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "unknown"


def start_pgbouncer(
    binary: str, server: Endpoint, database: str, pool_size: int, stack: contextlib.ExitStack
) -> Endpoint:
    """pgbouncer in session mode in front of `database`; stopped when the stack closes."""
    workdir = Path(tempfile.mkdtemp(prefix="airlock-bench-pgbouncer-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    port = free_port()
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        "\n".join(
            [
                "[databases]",
                f"{PGBOUNCER_DATABASE} = host={server.host} port={server.port} "
                f"dbname={database} user={server.user}",
                "",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = any",
                "pool_mode = session",
                f"default_pool_size = {pool_size}",
                f"max_client_conn = {pool_size * 2 + 10}",
                f"max_db_connections = {pool_size * 2}",
                f"logfile = {workdir / 'pgbouncer.log'}",
                f"pidfile = {workdir / 'pgbouncer.pid'}",
                "ignore_startup_parameters = extra_float_digits",
                "server_tls_sslmode = disable",
                "client_tls_sslmode = disable",
                "",
            ]
        )
    )
    user: str | None = None
    if os.geteuid() == 0:
        # pgbouncer refuses to run as root: run it as the postgres OS user (as `runuser -u
        # postgres --` would, but as our own child, so we reap it when it stops).
        user = "postgres"
        account = pwd.getpwnam(user)
        for path in (workdir, ini):
            os.chown(path, account.pw_uid, account.pw_gid)
    log = workdir / "pgbouncer.log"
    # Problems found before pgbouncer opens its logfile (a bad config) go to stderr.
    with (workdir / "pgbouncer.stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [binary, str(ini)],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user is not None else None,
            cwd=workdir,
        )
    stack.callback(stop_process, process, "pgbouncer")
    endpoint = Endpoint(
        "pgbouncer", "127.0.0.1", port, server.user, PGBOUNCER_DATABASE, pid=process.pid
    )
    deadline = time.monotonic() + 20.0
    while True:
        if process.poll() is not None:
            output = _file_tail(workdir / "pgbouncer.stderr") + "\n" + _file_tail(log)
            raise BenchError(f"pgbouncer exited with {process.returncode}:\n{output}")
        try:
            psql(endpoint, "SELECT 1")
            return endpoint
        except BenchError as error:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"pgbouncer did not answer on port {port}: {error}\n{_file_tail(log)}"
                ) from error
            time.sleep(0.2)


# --- Airlock -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningAirlock:
    endpoint: Endpoint
    log: Path


def airlock_config(workdir: Path, upstream_url: str, pg_port: int, api_port: int) -> Path:
    """The generated config: dev issuer, loopback without TLS, one target, all allowed."""
    document: dict[str, Any] = {
        "listen": {"postgres": f"127.0.0.1:{pg_port}", "api": f"127.0.0.1:{api_port}"},
        "allow_insecure_loopback": True,
        "data_dir": str(workdir / "airlock-data"),
        "dev_issuer": True,
        "identity": {"audience": "api://airlock"},
        "targets": {AIRLOCK_TARGET: {"protocol": "postgres", "upstream": upstream_url}},
        "rules": [
            {
                "groups": [AIRLOCK_GROUP],
                "targets": [AIRLOCK_TARGET],
                # The production shape: every statement is classified; reads pass,
                # writes would wait for an approver (select-only sends none).
                "read": "allow",
                "write": "approve",
                "ddl": "deny",
                "admin": "deny",
                "approvers": ["oncall-dba"],
                "session_ttl": "1h",
            }
        ],
    }
    path = workdir / "airlock.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def wait_for_health(
    process: subprocess.Popen[bytes], port: int, log: Path, *, timeout_s: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"airlock exited with {process.returncode}:\n{_file_tail(log)}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
        try:
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                return
            last = f"HTTP {response.status}"
        except OSError as error:
            last = str(error)
        finally:
            connection.close()
        time.sleep(0.2)
    raise BenchError(
        f"airlock /healthz did not answer in {timeout_s:.0f} s ({last}):\n{_file_tail(log)}"
    )


def airlock_env() -> dict[str, str]:
    """The environment `airlock` runs in: this tree's code first (PYTHONPATH), so that the
    gateway measured is the one whose commit the report names, also from another git
    worktree of a venv installed in editable mode from elsewhere."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def start_airlock(
    server: Endpoint, database: str, token_ttl_s: int, stack: contextlib.ExitStack
) -> RunningAirlock:
    """`airlock serve` on free loopback ports, healthy, with a minted token; stopped at exit."""
    if not AIRLOCK.exists():
        raise BenchError(f"{AIRLOCK} not found: run this with the project's .venv/bin/python")
    workdir = Path(tempfile.mkdtemp(prefix="airlock-bench-gateway-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    pg_port, api_port = free_port(), free_port()
    while api_port == pg_port:
        api_port = free_port()
    upstream = f"postgresql://{server.user}@{server.host}:{server.port}/{database}?sslmode=disable"
    config = airlock_config(workdir, upstream, pg_port, api_port)
    log = workdir / "airlock.log"
    env = airlock_env()
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(AIRLOCK), "serve", "--config", str(config)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(stop_process, process, "airlock")
    wait_for_health(process, api_port, log)
    minted = run(
        [
            str(AIRLOCK),
            "dev-token",
            "--config",
            str(config),
            "--sub",
            "bench-agent",
            "--groups",
            AIRLOCK_GROUP,
            "--ttl",
            str(token_ttl_s),
        ],
        env=env,
        timeout=60,
        what="airlock dev-token",
    )
    token = minted.stdout.strip()
    if not token:
        raise BenchError("airlock dev-token printed no token")
    endpoint = Endpoint(
        "airlock", "127.0.0.1", pg_port, "bench-agent", AIRLOCK_TARGET, token, pid=process.pid
    )
    try:
        psql(endpoint, "SELECT 1")
    except BenchError as error:
        raise BenchError(f"{error}\nairlock log:\n{_file_tail(log)}") from error
    return RunningAirlock(endpoint, log)


# --- pgbench -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgbenchRun:
    target: str
    mode: str
    clients: int
    threads: int
    duration_s: int
    tps: float
    latency_ms: float
    transactions: int
    #: CPU seconds (user + system) the proxy process used during the run; None for direct.
    proxy_cpu_s: float | None = None

    @property
    def proxy_cpu_us_per_txn(self) -> float | None:
        if self.proxy_cpu_s is None:
            return None
        return self.proxy_cpu_s * 1e6 / self.transactions

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "mode": self.mode,
            "clients": self.clients,
            "threads": self.threads,
            "duration_s": self.duration_s,
            "tps": self.tps,
            "latency_ms": self.latency_ms,
            "transactions": self.transactions,
            "proxy_cpu_s": self.proxy_cpu_s,
            "proxy_cpu_us_per_txn": self.proxy_cpu_us_per_txn,
        }


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds a process has used so far, from /proc (None if unknown)."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name start at field 3 (state);
    # utime and stime are fields 14 and 15, in clock ticks.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_pgbench(output: str) -> tuple[float, float, int]:
    """(TPS without connection time, mean latency in ms, transactions) from pgbench output."""
    tps = _TPS.search(output)
    latency = _LATENCY.search(output)
    processed = _PROCESSED.search(output)
    if tps is None or latency is None or processed is None:
        raise BenchError(f"cannot read TPS and latency from pgbench output:\n{_tail(output)}")
    failed = _FAILED.search(output)
    if failed is not None and int(failed.group(1)) > 0:
        raise BenchError(f"pgbench reported {failed.group(1)} failed transactions")
    if int(processed.group(1)) == 0:
        raise BenchError("pgbench processed no transactions")
    return float(tps.group(1)), float(latency.group(1)), int(processed.group(1))


def pgbench_command(endpoint: Endpoint, mode: str, clients: int, duration_s: int) -> list[str]:
    """The select-only pgbench command line both benchmark scripts run."""
    return [
        "pgbench",
        "-n",
        "-S",
        "-T",
        str(duration_s),
        "-M",
        mode,
        "-c",
        str(clients),
        "-j",
        str(min(clients, 2)),
        *endpoint.args(),
        endpoint.dbname,
    ]


def pgbench(
    endpoint: Endpoint, mode: str, clients: int, duration_s: int, log: Path | None = None
) -> PgbenchRun:
    """One select-only pgbench run; any failure is a BenchError, never a zero."""
    command = pgbench_command(endpoint, mode, clients, duration_s)
    what = f"pgbench against {endpoint.name} ({mode}, {clients} clients)"
    try:
        before = process_cpu_s(endpoint.pid)
        done = run(command, env=endpoint.env(), timeout=duration_s + 120, what=what)
        after = process_cpu_s(endpoint.pid)
        tps, latency_ms, transactions = parse_pgbench(done.stdout)
    except BenchError as error:
        if log is not None:
            raise BenchError(f"{error}\n{endpoint.name} log:\n{_file_tail(log)}") from error
        raise
    cpu_s = after - before if before is not None and after is not None else None
    return PgbenchRun(
        endpoint.name,
        mode,
        clients,
        min(clients, 2),
        duration_s,
        tps,
        latency_ms,
        transactions,
        cpu_s,
    )


# --- results -------------------------------------------------------------------------------


@dataclass
class Row:
    """One configuration (mode, clients): the median of its rounds for each target."""

    mode: str
    clients: int
    runs: dict[str, list[PgbenchRun]] = field(default_factory=dict)

    def tps(self, target: str) -> float:
        return statistics.median(r.tps for r in self.runs[target])

    def latency_ms(self, target: str) -> float:
        return statistics.median(r.latency_ms for r in self.runs[target])

    def tps_ratio(self, target: str, base: str) -> float:
        return self.tps(target) / self.tps(base)

    def cpu_us_per_txn(self, target: str) -> float | None:
        values = [r.proxy_cpu_us_per_txn for r in self.runs[target]]
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    def cpu_share(self, target: str) -> float | None:
        """The proxy's CPU time over the run's duration: 1.0 is one core fully busy."""
        values = [
            r.proxy_cpu_s / r.duration_s for r in self.runs[target] if r.proxy_cpu_s is not None
        ]
        return statistics.median(values) if values else None

    def added_latency_us(self, target: str) -> float:
        return (self.latency_ms(target) - self.latency_ms("direct")) * 1000.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "clients": self.clients,
            **{
                target: {"tps": self.tps(target), "latency_ms": self.latency_ms(target)}
                for target in TARGETS
            },
            "airlock_vs_pgbouncer_tps": self.tps_ratio("airlock", "pgbouncer"),
            "airlock_vs_direct_tps": self.tps_ratio("airlock", "direct"),
            "pgbouncer_vs_direct_tps": self.tps_ratio("pgbouncer", "direct"),
            "airlock_added_latency_us": self.added_latency_us("airlock"),
            "pgbouncer_added_latency_us": self.added_latency_us("pgbouncer"),
            **{
                f"{target}_cpu": {
                    "share_of_one_core": self.cpu_share(target),
                    "us_per_txn": self.cpu_us_per_txn(target),
                }
                for target in ("pgbouncer", "airlock")
            },
        }


@dataclass(frozen=True)
class TargetCheck:
    name: str
    met: bool | None  # None: not measured in this run
    detail: str

    @property
    def verdict(self) -> str:
        return "not measured" if self.met is None else "met" if self.met else "NOT met"


def check_targets(
    rows: Sequence[Row], min_ratio: float = MIN_TPS_RATIO_VS_PGBOUNCER
) -> list[TargetCheck]:
    checks: list[TargetCheck] = []
    name = f"airlock >= {min_ratio:.0%} of pgbouncer TPS in every mode (every client count)"
    if rows:
        worst = min(rows, key=lambda row: row.tps_ratio("airlock", "pgbouncer"))
        ratio = worst.tps_ratio("airlock", "pgbouncer")
        checks.append(
            TargetCheck(
                name,
                all(r.tps_ratio("airlock", "pgbouncer") >= min_ratio for r in rows),
                f"worst {ratio:.1%} ({worst.mode}, {worst.clients} clients)",
            )
        )
    else:
        checks.append(TargetCheck(name, None, "no rows"))
    name = (
        f"<= {MAX_ADDED_LATENCY_US_AT_1_CLIENT:.0f} us mean latency added over direct at 1 client"
    )
    single = [row for row in rows if row.clients == 1]
    if single:
        worst = max(single, key=lambda row: row.added_latency_us("airlock"))
        checks.append(
            TargetCheck(
                name,
                all(
                    r.added_latency_us("airlock") <= MAX_ADDED_LATENCY_US_AT_1_CLIENT
                    for r in single
                ),
                f"worst +{worst.added_latency_us('airlock'):.0f} us ({worst.mode})",
            )
        )
    else:
        checks.append(TargetCheck(name, None, "no 1-client configuration in --clients"))
    return checks


def _render(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A Markdown table: the first two columns left-aligned, the figures right-aligned."""
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if index < 2 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(parts) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), separator, *(line(cells) for cells in body)])


def _maybe(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_cpu_table(rows: Sequence[Row]) -> str:
    headers = [
        "mode",
        "clients",
        "pgbouncer CPU",
        "pgbouncer us/txn",
        "airlock CPU",
        "airlock us/txn",
    ]
    body = [
        [
            row.mode,
            str(row.clients),
            _maybe(row.cpu_share("pgbouncer"), ".0%"),
            _maybe(row.cpu_us_per_txn("pgbouncer"), ".1f"),
            _maybe(row.cpu_share("airlock"), ".0%"),
            _maybe(row.cpu_us_per_txn("airlock"), ".1f"),
        ]
        for row in rows
    ]
    return _render(headers, body)


def format_table(rows: Sequence[Row]) -> str:
    headers = [
        "mode",
        "clients",
        "direct tps",
        "direct ms",
        "pgbouncer tps",
        "pgbouncer ms",
        "airlock tps",
        "airlock ms",
        "air/pgb tps",
        "air/direct tps",
        "air +us",
        "pgb +us",
    ]
    body: list[list[str]] = []
    for row in rows:
        body.append(
            [
                row.mode,
                str(row.clients),
                f"{row.tps('direct'):.0f}",
                f"{row.latency_ms('direct'):.3f}",
                f"{row.tps('pgbouncer'):.0f}",
                f"{row.latency_ms('pgbouncer'):.3f}",
                f"{row.tps('airlock'):.0f}",
                f"{row.latency_ms('airlock'):.3f}",
                f"{row.tps_ratio('airlock', 'pgbouncer'):.1%}",
                f"{row.tps_ratio('airlock', 'direct'):.1%}",
                f"{row.added_latency_us('airlock'):+.0f}",
                f"{row.added_latency_us('pgbouncer'):+.0f}",
            ]
        )
    return _render(headers, body)


# --- machine facts -------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                return text.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        head = run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], timeout=10)
        status = run(["git", "-C", str(REPO_ROOT), "status", "--porcelain"], timeout=30)
    except BenchError:
        return None
    return head.stdout.strip() + (" (with local changes)" if status.stdout.strip() else "")


def machine_facts(pgbouncer: str, server: Endpoint) -> dict[str, Any]:
    uvloop_installed = importlib.util.find_spec("uvloop") is not None
    pgbench_version = run(["pgbench", "--version"], timeout=30).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "uvloop_installed": uvloop_installed,
        "uvloop_version": _package_version("uvloop") if uvloop_installed else None,
        "airlock_version": _package_version("airlock-gateway"),
        "git_commit": _git_commit(),
        "pgbouncer": pgbouncer_version(pgbouncer),
        "pgbench": pgbench_version,
        "postgres_server": psql(server, "SHOW server_version", dbname="postgres"),
    }


def format_facts(facts: Mapping[str, Any]) -> str:
    uvloop = f"yes ({facts['uvloop_version']})" if facts["uvloop_installed"] else "no"
    return "\n".join(
        [
            f"date:       {facts['date']}",
            f"machine:    {facts['cpu_count']} CPUs ({facts['cpus_usable']} usable), "
            f"{facts['cpu_model']}",
            f"platform:   {facts['platform']}",
            f"python:     {facts['python']}; uvloop installed: {uvloop}",
            f"airlock:    {facts['airlock_version']} (git {facts['git_commit'] or 'unknown'})",
            f"pgbouncer:  {facts['pgbouncer']}",
            f"pgbench:    {facts['pgbench']}; PostgreSQL server {facts['postgres_server']}",
        ]
    )


# --- the run -------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return list(dict.fromkeys(values))


def _mode_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [v for v in values if v not in MODES]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)} (got {text!r})")
    return list(dict.fromkeys(values))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="pgbench select-only throughput: direct vs pgbouncer vs Airlock.",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--clients", type=_int_list, default=[1, 8], help="e.g. 1,8")
    parser.add_argument(
        "--modes", type=_mode_list, default=list(MODES), help="simple,extended,prepared"
    )
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i scale factor")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up (0: none)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="interleaved rounds per configuration (direct, pgbouncer, airlock back to back "
        "in each); the median is reported",
    )
    parser.add_argument(
        "--min-ratio",
        type=float,
        default=MIN_TPS_RATIO_VS_PGBOUNCER,
        help="the target: airlock's TPS as a share of pgbouncer's (default %(default)s)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write all figures here")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    return parser


def benchmark(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    modes: list[str] = args.modes
    clients: list[int] = args.clients
    duration: int = args.duration
    warmup: int = args.warmup
    rounds: int = args.rounds
    per_run = duration + warmup
    planned_s = len(modes) * len(clients) * len(TARGETS) * rounds * per_run
    note(
        f"plan: {len(modes)} modes x {len(clients)} client counts x {len(TARGETS)} targets "
        f"x {rounds} round(s) x ({warmup} s warm-up + {duration} s) = about {planned_s} s "
        "of pgbench, plus setup"
    )

    pgbouncer_binary = ensure_pgbouncer()
    admin = Endpoint("direct", args.pg_host, args.pg_port, args.pg_user, "postgres")
    facts = machine_facts(pgbouncer_binary, admin)
    database = create_database(admin, stack)
    direct = Endpoint("direct", args.pg_host, args.pg_port, args.pg_user, database)
    note(f"created database {database}; pgbench -i -s {args.scale}")
    run(
        ["pgbench", "-i", "-q", "-s", str(args.scale), *direct.args(), database],
        env=direct.env(),
        timeout=3600,
        what="pgbench -i",
    )
    pool_size = max(clients) + 2
    pgbouncer = start_pgbouncer(pgbouncer_binary, admin, database, pool_size, stack)
    note(f"pgbouncer (session mode) on 127.0.0.1:{pgbouncer.port}")
    airlock = start_airlock(admin, database, max(3600, 3 * planned_s + 600), stack)
    note(f"airlock on 127.0.0.1:{airlock.endpoint.port}")

    endpoints = {"direct": direct, "pgbouncer": pgbouncer, "airlock": airlock.endpoint}
    logs = {"airlock": airlock.log}
    rows: list[Row] = []
    total = len(modes) * len(clients) * rounds * len(TARGETS)
    done = 0
    for mode in modes:
        for count in clients:
            row = Row(mode, count, {name: [] for name in TARGETS})
            for _ in range(rounds):
                # The three back to back, so drift (thermal, noisy neighbours) hits them alike.
                for name in TARGETS:
                    endpoint = endpoints[name]
                    if warmup > 0:
                        pgbench(endpoint, mode, count, warmup, logs.get(name))
                    result = pgbench(endpoint, mode, count, duration, logs.get(name))
                    row.runs[name].append(result)
                    done += 1
                    note(
                        f"[{done:>2}/{total}] {mode:<8} {count:>2} clients  {name:<9} "
                        f"{result.tps:>9.0f} tps  {result.latency_ms:.3f} ms"
                    )
            rows.append(row)

    checks = check_targets(rows, args.min_ratio)
    return {
        "machine": facts,
        "parameters": {
            "duration_s": duration,
            "warmup_s": warmup,
            "rounds": rounds,
            "clients": clients,
            "modes": modes,
            "scale": args.scale,
            "pgbench": "pgbench -n -S -T DURATION -M MODE -c N -j min(N,2)",
            "sslmode": "disable for all three targets",
            "pgbouncer_pool_mode": "session",
            "pgbouncer_pool_size": pool_size,
        },
        "runs": [r.as_dict() for row in rows for name in TARGETS for r in row.runs[name]],
        "rows": [row.as_dict() for row in rows],
        "targets": [{"name": c.name, "met": c.met, "detail": c.detail} for c in checks],
        "_rows": rows,
        "_checks": checks,
    }


def report(result: Mapping[str, Any]) -> str:
    rows: list[Row] = result["_rows"]
    checks: list[TargetCheck] = result["_checks"]
    params = result["parameters"]
    lines = [
        "Airlock PostgreSQL relay throughput (pgbench select-only)",
        "",
        format_facts(result["machine"]),
        "",
        f"pgbench -n -S -T {params['duration_s']} -M MODE -c N -j min(N,2), scale "
        f"{params['scale']}, {params['warmup_s']} s warm-up before each run, "
        f"{params['rounds']} round(s) (median), targets interleaved per configuration.",
        "All three targets connect with sslmode=disable over loopback TCP (like for like: "
        "no TLS anywhere).",
        "pgbouncer: session pool mode. TPS excludes connection time; ms = mean latency.",
        "",
        format_table(rows),
        "",
        "air/pgb, air/direct: Airlock's TPS as a share of pgbouncer's / direct's.",
        "air +us, pgb +us: mean latency added over direct, in microseconds.",
        "",
        "CPU used by the proxy process during each measured run (from /proc: user + system;",
        "100% = one core busy for the whole run) and per transaction:",
        "",
        format_cpu_table(rows),
        "",
        "Targets:",
        *(f"  {c.verdict:<12} {c.name}: {c.detail}" for c in checks),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.duration < 1 or args.scale < 1 or args.warmup < 0 or args.rounds < 1:
        note("error: --duration, --scale and --rounds must be >= 1, --warmup >= 0")
        return 2
    for tool in ("pgbench", "psql"):
        if shutil.which(tool) is None:
            note(f"error: {tool} is not on PATH")
            return 2
    status, result = run_guarded(lambda stack: benchmark(args, stack))
    if result is None:
        return status
    print(report(result))
    if args.json is not None:
        public = {k: v for k, v in result.items() if not k.startswith("_")}
        args.json.write_text(json.dumps(public, indent=2) + "\n")
        note(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
