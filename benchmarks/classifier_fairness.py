"""Classification fairness: a victim's latency for a cached read, alone and while two other
sessions flood the gateway with unique statements of about 1 MB, in one run.

    python benchmarks/classifier_fairness.py [--seconds 10] [--size 900000]

Starts a gateway in this process (its own event loop and thread, as the tests do) in
front of the PostgreSQL at $AIRLOCK_TEST_PG_HOST/PORT (default 127.0.0.1:5432, user
postgres), then measures, over asyncpg with the simple query protocol:
1. the victim alone: `SELECT 1` (cached after the first) back to back for --seconds;
2. the same while two attacker sessions each send unique --size-character SELECTs back
   to back (every one a cold parse in a classification worker), for as long;
and prints p50/p99/max for both, with how many flood statements were classified.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.gateway import RunningGateway, gateway_document, start_gateway
from tests.support.issuer import TestIssuer

_unique = itertools.count()


def big_select(size: int) -> str:
    head = f"SELECT {next(_unique)} AS n WHERE 1 IN ("
    return head + ",".join(str(n % 1000) for n in range(size // 4)) + ")"


async def victim_latencies(connection: asyncpg.Connection, seconds: float) -> list[float]:
    latencies = []
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        started = time.perf_counter()
        await connection.execute("SELECT 1")
        latencies.append(time.perf_counter() - started)
    return latencies


def summary(label: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]
    return (
        f"{label:<28} p50 {statistics.median(ordered) * 1000:7.2f} ms   "
        f"p99 {p99 * 1000:7.2f} ms   max {ordered[-1] * 1000:7.2f} ms   (n={len(ordered)})"
    )


async def run(gateway: RunningGateway, token: str, seconds: float, size: int) -> None:
    params = {**gateway.asyncpg_params(token), "ssl": None}
    victim = await asyncpg.connect(**params, timeout=30)
    attackers = [await asyncpg.connect(**params, timeout=30) for _ in range(2)]
    await victim.execute("SELECT 1")
    alone = await victim_latencies(victim, seconds)
    stop = asyncio.Event()
    flooded = [0, 0]

    async def flood(index: int) -> None:
        while not stop.is_set():
            await attackers[index].execute(big_select(size))
            flooded[index] += 1

    floods = [asyncio.create_task(flood(index)) for index in range(2)]
    await asyncio.sleep(1.0)
    started = time.perf_counter()
    under_flood = await victim_latencies(victim, seconds)
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*floods)
    print(summary("victim alone", alone))
    print(summary("victim, two 1 MB floods", under_flood))
    print(
        f"flood statements classified: {sum(flooded)} of {size} characters each "
        f"({elapsed:.1f} s of flood measured)"
    )
    for connection in [victim, *attackers]:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=900_000)
    args = parser.parse_args()
    host = os.environ.get("AIRLOCK_TEST_PG_HOST", "127.0.0.1")
    port = os.environ.get("AIRLOCK_TEST_PG_PORT", "5432")
    issuer = TestIssuer()
    issuer.start()
    with tempfile.TemporaryDirectory() as scratch:
        document = gateway_document(
            issuer,
            Path(scratch) / "data",
            f"postgresql://postgres@{host}:{port}/postgres?sslmode=disable",
            allow_insecure_loopback=True,
        )
        gateway = start_gateway(issuer, document, Path(scratch) / "airlock.yaml")
        try:
            token = issuer.mint(sub="bench", groups=("data-agents",))
            asyncio.run(run(gateway, token, args.seconds, args.size))
        finally:
            gateway.stop()
            issuer.stop()


if __name__ == "__main__":
    main()
