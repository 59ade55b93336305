"""Instructions the PostgreSQL relay spends per pgbench transaction, counted by callgrind.

Wall-clock figures on a shared machine are noise; instruction counts are not. For each
pgbench select-only mode, the messages one pgbench client sends per transaction and the
server's reply (relay_cost.py's) go through a `Pipe` as `airlock serve` builds it: a
`PgRelay` with the session's gate (verdict cache warm), and for `airlock` the session
transcript's chain recording each statement and its result tag (`gate` leaves the chain
out; `framing` the gate too). The transports are stand-ins (the C builtin `len`, called
with the bytes), so the event loop and the system calls, the same for every build of the
relay, are not counted.

One process runs every (mode, variant) under `valgrind --tool=callgrind`, each one's
--count transactions (after a warm-up) inside `sys.call_tracing`, the one function callgrind
is told to collect in and to dump after: start-up, imports and set-up are not counted.
The figure is that section's instructions divided by --count (a loop iteration's own few
hundred instructions included, the same for every build).

    .venv/bin/python benchmarks/relay_instructions.py [--count 2000] [--modes ...]
        [--variants framing,gate,airlock]

Run it from the tree to measure (it imports the tree's compiled modules); valgrind must be
installed (apt-get install valgrind), and the interpreter keep its symbols (sys_call_tracing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relay_cost import PARAM_SQL, READY, SYNC, make_gate, parse, transactions

from proxy.postgres.relay import PgRelay, Pipe
from proxy.recording.event_chain import EventChain

MODES = ("simple", "extended", "prepared")
VARIANTS = ("framing", "gate", "airlock")
#: Transactions run before the measured ones (and in both runs alike): caches warm.
WARM_UP = 200


class _Results:
    """The session's result listener: with a chain, the relay records tags there instead."""

    def result(self, tag: str | None, error: object) -> None:
        raise RuntimeError(f"a pgbench transaction failed: {error!r}")

    def row(self, raw: bytes, start: int, end: int) -> None:
        raise RuntimeError("rows are not captured")


def _not_expected(*args: object) -> None:
    raise RuntimeError(f"a pgbench transaction left the fast path: {args!r}")


def _pipe(mode: str, variant: str) -> tuple[Pipe, EventChain | None]:
    gate = make_gate() if variant != "framing" else None
    chain = EventChain(time.time) if variant == "airlock" else None
    results = _Results() if chain is not None else None
    relay = PgRelay(max_message_bytes=1 << 24, gate=gate, results=results)
    if gate is not None and chain is not None:
        gate.chain = relay.chain = chain
    if mode == "prepared":
        relay.client_data(parse(PARAM_SQL, "P0_1") + SYNC)
        relay.server_data(b"1\0\0\0\4" + READY)
    # The transports' write, as stand-ins: a C builtin called with the bytes, as uvloop's is.
    pipe = Pipe(relay, len, len, _not_expected, _not_expected)
    pipe.chain = chain
    return pipe, chain


def _run(pipe: Pipe, chain: EventChain | None, work: list[tuple[bytes, bytes]]) -> None:
    client_data, server_data = pipe.client_data, pipe.server_data
    for index, (client, server) in enumerate(work):
        client_data(client)
        server_data(server)
        if chain is not None and index % 64 == 0:
            chain.take()  # the transcript's writer thread takes the records as they come


def inner(sections: list[tuple[str, str]], count: int) -> None:
    """The measured process: for each (mode, variant), WARM_UP transactions, then `count`
    inside sys.call_tracing, the function callgrind collects in and dumps after."""
    for mode, variant in sections:
        pipe, chain = _pipe(mode, variant)
        work = transactions(mode, WARM_UP + count)
        _run(pipe, chain, work[:WARM_UP])
        sys.call_tracing(_run, (pipe, chain, work[WARM_UP:]))


def measure(sections: list[tuple[str, str]], count: int) -> list[float]:
    """Instructions per transaction of each section, in one process under callgrind."""
    with tempfile.TemporaryDirectory() as out_dir:
        out = Path(out_dir) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=sys_call_tracing",
                "--dump-after=sys_call_tracing",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--count",
                str(count),
                "--inner",
                ",".join(f"{mode}:{variant}" for mode, variant in sections),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        totals = []
        for index in range(1, len(sections) + 1):
            dump = Path(f"{out}.{index}")
            total = next(
                int(line.split()[1])
                for line in dump.read_text().splitlines()
                if line.startswith(("summary:", "totals:"))
            )
            totals.append(total / count)
        return totals


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        sections = [(s.split(":")[0], s.split(":")[1]) for s in args.inner.split(",")]
        inner(sections, args.count)
        return 0
    modes, variants = args.modes.split(","), args.variants.split(",")
    figures = measure([(mode, variant) for mode in modes for variant in variants], args.count)
    print(f"instructions per transaction (callgrind, {args.count} transactions)")
    print(f"{'mode':10}" + "".join(f"{v:>10}" for v in variants))
    for row, mode in enumerate(modes):
        cells = figures[row * len(variants) : (row + 1) * len(variants)]
        print(f"{mode:10}" + "".join(f"{f:10.0f}" for f in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
