"""What each layer of the PostgreSQL relay costs under load, measured in place.

In-process figures (`relay_cost.py`) undercount what a microsecond of Python costs when
pgbench, PostgreSQL's backends and the gateway share two cores: every switch between
them leaves the caches cold. This script measures the layers where they run. The
gateway runs in this process (uvloop, as `airlock serve`), in front of a throwaway
pgbench database, and pgbench runs select-only through five variants, interleaved
round by round so that drift hits them alike:

| variant     | what relays                                                             |
| ----------- | ----------------------------------------------------------------------- |
| `pgbouncer` | pgbouncer in session mode: the reference of the issues' targets           |
| `forwarder` | `tcp_forwarder.py` in this process: bytes in, bytes out, nothing framed   |
| `framing`   | the gateway without its gate and recording: framing both ways, forwarding |
| `gate`      | plus classification (verdict cache) and statement and portal tracking     |
| `airlock`   | plus the transcript's statement and result events: the gateway as it runs |

The gateway's code is not changed. For the `framing` and `gate` runs this script wraps,
in its own process only, the name `PgRelay` in proxy.postgres.session (to build relays without
a gate or result listener), and `PgSession._start_relay` and `PgSession.result` (to
take the transcript's recorders off the gate and relay a session builds: statements are
counted, not recorded, and results not recorded), and puts them back before the
`airlock` run.
Each run gives pgbench's TPS and the relaying process's user and system CPU time per
transaction (this process's, from getrusage; pgbouncer's from /proc).

    .venv/bin/python benchmarks/pg_cost_breakdown.py [--duration 5] [--rounds 3]
        [--clients 8] [--modes simple,prepared]

Needs what pg_throughput.py needs (pgbouncer is installed with apt-get when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tcp_forwarder
from pg_throughput import (
    AIRLOCK_GROUP,
    AIRLOCK_TARGET,
    Endpoint,
    airlock_config,
    create_database,
    ensure_pgbouncer,
    note,
    parse_pgbench,
    process_cpu_s,
    run,
    run_guarded,
    start_pgbouncer,
)
from profile_relay import _loop_factory, pgbench_async

import proxy.postgres.session as pg_server
from policy.classify import Verdict
from proxy.config import load_settings
from proxy.postgres.relay import PgRelay
from proxy.server import Gateway

VARIANTS = ("pgbouncer", "forwarder", "framing", "gate", "airlock")
_REAL_RELAY = PgRelay
_REAL_START_RELAY = pg_server.PgSession._start_relay
_REAL_RESULT = pg_server.PgSession.result


def _relay_without_gate(**kwargs: Any) -> PgRelay:
    kwargs.update(gate=None, results=None, capture_rows=False)
    return _REAL_RELAY(**kwargs)


def _start_relay_unrecorded(self: pg_server.PgSession, *args: Any) -> None:
    _REAL_START_RELAY(self, *args)
    assert self.gate is not None
    assert self.relay is not None
    self.gate.chain = None  # allowed statements: counted by the gate, not recorded
    self.gate.on_statement = _statement_counted_only(self)
    self.relay.chain = None  # results go to PgSession.result, a no-op in this run


def _statement_counted_only(session: pg_server.PgSession) -> Callable[..., None]:
    def counted(_sql: str, verdict: Verdict, _bind: object, _types: object, decision: str) -> None:
        session.count_statement(verdict.statement_class, decision)

    return counted


def _result_not_recorded(self: pg_server.PgSession, *args: Any) -> None:
    pass


def use_variant(variant: str) -> None:
    """Take the gateway's layers out (framing, gate) or put them all back (airlock)."""
    relay: Callable[..., PgRelay] = _REAL_RELAY
    start_relay: Callable[..., None] = _REAL_START_RELAY
    result: Callable[..., None] = _REAL_RESULT
    if variant == "framing":
        relay = _relay_without_gate
    if variant == "gate":
        start_relay, result = _start_relay_unrecorded, _result_not_recorded
    vars(pg_server)["PgRelay"] = relay  # the name the session builds its relay by
    pg_server.PgSession._start_relay = start_relay  # type: ignore[method-assign]
    pg_server.PgSession.result = result  # type: ignore[method-assign]


@dataclass(frozen=True)
class Run:
    variant: str
    tps: float
    cpu_us: float  # per transaction, of the relaying process: user + system
    user_us: float | None  # user alone (this process's runs only)


def _own_cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def measure(
    variant: str, endpoint: Endpoint, mode: str, clients: int, duration_s: int
) -> Run:
    use_variant(variant)
    if endpoint.pid is not None:  # pgbouncer: its own process
        before_total = process_cpu_s(endpoint.pid) or 0.0
        output = await pgbench_async(endpoint, mode, clients, duration_s)
        total = (process_cpu_s(endpoint.pid) or 0.0) - before_total
        user: float | None = None
    else:
        user0, system0 = _own_cpu()
        output = await pgbench_async(endpoint, mode, clients, duration_s)
        user1, system1 = _own_cpu()
        user, total = user1 - user0, user1 - user0 + system1 - system0
    tps, _, transactions = parse_pgbench(output)
    per = 1e6 / transactions
    return Run(variant, tps, total * per, None if user is None else user * per)


async def breakdown(
    server: Endpoint, database: str, pgbouncer: Endpoint, args: argparse.Namespace
) -> dict[tuple[str, int], list[Run]]:
    workdir = Path(tempfile.mkdtemp(prefix="airlock-bench-breakdown-"))
    upstream = f"postgresql://{server.user}@{server.host}:{server.port}/{database}?sslmode=disable"
    gateway = Gateway(load_settings(airlock_config(workdir, upstream, 0, 0)))
    await gateway.start()
    forwarder = await tcp_forwarder.start(0, server.host, server.port)
    try:
        assert gateway.dev_issuer is not None
        token = gateway.dev_issuer.mint("bench-agent", [AIRLOCK_GROUP], ttl_s=3600.0)
        gateway_port = gateway.bound["postgres"][1]
        forwarder_port = forwarder.sockets[0].getsockname()[1]
        endpoints = {
            "pgbouncer": pgbouncer,
            "forwarder": Endpoint("forwarder", "127.0.0.1", forwarder_port, server.user, database),
            **{
                name: Endpoint(
                    name, "127.0.0.1", gateway_port, "bench-agent", AIRLOCK_TARGET, token
                )
                for name in ("framing", "gate", "airlock")
            },
        }
        results: dict[tuple[str, int], list[Run]] = {}
        for mode in args.modes:
            for clients in args.clients:
                runs = results.setdefault((mode, clients), [])
                for round_ in range(1, args.rounds + 1):
                    for variant in args.variants:
                        endpoint = endpoints[variant]
                        if args.warmup:
                            await measure(variant, endpoint, mode, clients, args.warmup)
                        run_ = await measure(variant, endpoint, mode, clients, args.duration)
                        note(
                            f"{mode} c={clients} round {round_} {variant}: {run_.tps:.0f} tps, "
                            f"{run_.cpu_us:.1f} us CPU/txn"
                        )
                        runs.append(run_)
        return results
    finally:
        use_variant("airlock")
        forwarder.close()
        await gateway.close()
        shutil.rmtree(workdir, ignore_errors=True)


def report(results: dict[tuple[str, int], list[Run]]) -> str:
    lines: list[str] = []
    for (mode, clients), runs in results.items():
        ran = [v for v in VARIANTS if any(r.variant == v for r in runs)]
        median = {
            v: (
                statistics.median(r.tps for r in runs if r.variant == v),
                statistics.median(r.cpu_us for r in runs if r.variant == v),
                statistics.median(r.user_us or 0.0 for r in runs if r.variant == v),
            )
            for v in ran
        }
        reference = median["pgbouncer"][0]
        lines += [
            f"\n{mode}, {clients} clients (medians of {len(runs) // len(ran)} rounds)",
            "| variant   |    tps | of pgbouncer | CPU us/txn | user us/txn | adds us/txn |",
            "|-----------|--------|--------------|------------|-------------|-------------|",
        ]
        previous: float | None = None
        for variant in ran:
            tps, cpu, user = median[variant]
            adds = "" if previous is None or variant == "forwarder" else f"{cpu - previous:+.1f}"
            user_text = "" if variant == "pgbouncer" else f"{user:.1f}"
            lines.append(
                f"| {variant:<9} | {tps:6.0f} | {tps / reference:11.1%} | {cpu:10.1f} "
                f"| {user_text:>11} | {adds:>11} |"
            )
            previous = cpu
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=_int_list, default=[8])
    parser.add_argument("--modes", type=lambda t: t.split(","), default=["simple", "prepared"])
    parser.add_argument(
        "--variants",
        type=lambda t: t.split(","),
        default=list(VARIANTS),
        help=f"which to run, in this order (default: {','.join(VARIANTS)})",
    )
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.duration, args.rounds, args.scale, *args.clients) < 1 or args.warmup < 0:
        note("error: --duration, --rounds, --scale, --clients must be >= 1, --warmup >= 0")
        return 2
    if "pgbouncer" not in args.variants or not set(args.variants) <= set(VARIANTS):
        note(f"error: --variants takes pgbouncer and any of {', '.join(VARIANTS[1:])}")
        return 2
    server = Endpoint("direct", args.pg_host, args.pg_port, args.pg_user, "postgres")
    started = time.monotonic()

    def body(stack: contextlib.ExitStack) -> dict[tuple[str, int], list[Run]]:
        binary = ensure_pgbouncer()
        database = create_database(server, stack)
        direct = Endpoint("direct", args.pg_host, args.pg_port, args.pg_user, database)
        run(
            ["pgbench", "-i", "-q", "-s", str(args.scale), *direct.args(), database],
            env=direct.env(),
            timeout=3600,
            what="pgbench -i",
        )
        pgbouncer = start_pgbouncer(binary, server, database, max(args.clients) + 2, stack)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(breakdown(server, database, pgbouncer, args))

    status, results = run_guarded(body)
    if results is None:
        return status
    print(report(results))
    note(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
