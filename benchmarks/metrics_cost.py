"""What the metrics cost the relay's hot path, in instructions, under callgrind.

pgbench's select-only transactions (simple, extended, prepared) go through the
PostgreSQL `Pipe`, gate and relay as `airlock serve` runs them (transports replaced by
list appends), with the pipe's latency observer set to a real prometheus_client
histogram when the tree has one. Run it twice under callgrind, with no transactions and
with many, in each tree; the difference divided by the count is the instructions per
transaction, setup and imports left out:

    for tree in /path/to/base /path/to/branch; do
      for n in 0 20000; do
        PYTHONPATH=$tree valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \\
            .venv/bin/python benchmarks/metrics_cost.py --transactions $n
      done
    done
    # instructions per transaction: (Ir of 20000 - Ir of 0) / 60000 (three modes)
    # and once more with --transactions 20000 --generate-only: the messages' own cost,
    # to subtract, leaving the relay's (pipe, relay, gate) instructions per transaction.

The totals are callgrind's "Collected" line (or `callgrind_annotate` summary).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relay_cost import PARAM_SQL, READY, SYNC, make_gate, parse, transactions

from protocols.postgres import messages as m
from proxy.postgres.relay import PgRelay, Pipe


def run(mode: str, count: int, relayed: bool = True) -> int:
    work = transactions(mode, count)
    if not relayed:
        return len(work)
    relay = PgRelay(max_message_bytes=1 << 24, gate=make_gate())
    sent: list[bytes] = []
    pipe = Pipe(relay, sent.append, sent.append, _left_fast_path, _failed)
    if hasattr(pipe, "on_latency"):
        from proxy.core.metrics import Instruments

        pipe.on_latency = Instruments().relay_latency("postgres")
    if mode == "prepared":
        pipe.client_data(parse(PARAM_SQL, "P0_1") + SYNC)
        pipe.server_data(m.frame(b"1", b"") + READY)
    for client, server in work:
        pipe.client_data(client)
        pipe.server_data(server)
    return len(sent)


def _left_fast_path(raw: bytes, done: int) -> None:
    raise RuntimeError("a pgbench transaction left the fast path")


def _failed(error: Exception) -> None:
    raise error


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument(
        "--generate-only",
        action="store_true",
        help="make the messages but relay nothing (what to subtract: the messages' cost)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    for mode in ("simple", "extended", "prepared"):
        run(mode, args.transactions, relayed=not args.generate_only)
    print(f"{args.transactions} transactions per mode in {time.perf_counter() - started:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
