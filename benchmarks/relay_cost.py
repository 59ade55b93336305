"""What classification adds to the relay's own work per transaction, without sockets.

For each pgbench select-only mode, the exact messages a pgbench client sends per
transaction (the simple-protocol text changes its literal every time) and the
server's reply go through `PgRelay` twice, in the same process and interleaved: once
with no gate (issue 2's forward-everything relay) and once with the gate and its
verdict cache, as `airlock serve` runs it. Printed: microseconds per transaction,
best of --repeat, and the difference. This is the CPU cost on the event-loop thread
that the gate adds; the event loop and system calls, which cost the same either
way, are not in it (pg_throughput.py measures everything end to end).

    .venv/bin/python benchmarks/relay_cost.py [--transactions 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy.fingerprint import CachedClassifier
from policy.rules import Action, Rule, effective_policy
from protocols.postgres import messages as m
from proxy.postgres.gate import PgGate
from proxy.postgres.relay import PgRelay

SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"
PARAM_SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"


def parse(sql: str, name: str = "") -> bytes:
    return m.frame(b"P", m.cstring(name) + m.cstring(sql) + b"\0\0")


def bind(value: int, statement: str = "") -> bytes:
    text = str(value).encode()
    body = b"\0" + m.cstring(statement) + b"\0\0" + struct.pack("!h", 1)
    return m.frame(b"B", body + struct.pack("!i", len(text)) + text + b"\0\0")


DESCRIBE_PORTAL = m.frame(b"D", b"P\0")
EXECUTE = m.frame(b"E", b"\0\0\0\0\0")
SYNC = m.Sync().raw
ROW = m.frame(b"D", b"\0\1\0\0\0\4" + b"1234")
RESULT = (
    m.frame(b"T", b"\0\1abalance\0" + b"\0" * 6 + b"\0\0\0\x17\0\4\xff\xff\xff\xff\0\0")
    + ROW
    + m.frame(b"C", m.cstring("SELECT 1"))
)
READY = m.ReadyForQuery.build("I").raw


def transactions(mode: str, count: int) -> list[tuple[bytes, bytes]]:
    """(client bytes, server bytes) per transaction, as pgbench and PostgreSQL send them."""
    out = []
    for i in range(count):
        aid = 1 + (i * 7919) % 1_000_000
        if mode == "simple":
            out.append((m.Query.build(SQL.format(aid)).raw, RESULT + READY))
        elif mode == "extended":
            client = parse(PARAM_SQL) + bind(aid) + DESCRIBE_PORTAL + EXECUTE + SYNC
            reply = m.frame(b"1", b"") + m.frame(b"2", b"") + RESULT + READY
            out.append((client, reply))
        else:  # prepared: Parse once (in setup), then Bind/Describe/Execute/Sync
            client = bind(aid, "P0_1") + DESCRIBE_PORTAL + EXECUTE + SYNC
            out.append((client, m.frame(b"2", b"") + RESULT + READY))
    return out


def make_gate() -> PgGate:
    rule = Rule(
        groups=frozenset({"agents"}),
        targets=frozenset({"orders"}),
        write=Action.APPROVE,
        approvers=frozenset({"dba"}),
    )
    policy = effective_policy([rule], ["agents"], "orders")
    assert policy is not None
    classifier = CachedClassifier("postgres")
    classifier.classify(SQL.format(1))  # one cache miss per shape, as in a real run
    classifier.classify(PARAM_SQL)
    return PgGate(classifier, policy, time.time)


def run(mode: str, gated: bool, work: list[tuple[bytes, bytes]]) -> float:
    relay = PgRelay(max_message_bytes=1 << 24, gate=make_gate() if gated else None)
    if mode == "prepared":
        relay.client_data(parse(PARAM_SQL, "P0_1") + SYNC)
        relay.server_data(m.frame(b"1", b"") + READY)
    fast_forward, server_data = relay.fast_forward, relay.server_data
    started = time.perf_counter()
    for client, server in work:
        if fast_forward(client) != len(client):
            raise RuntimeError(f"{mode}: a pgbench transaction left the fast path")
        server_data(server)
    return (time.perf_counter() - started) / len(work) * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print("relay work per pgbench select-only transaction (us, best of", args.repeat, "runs)")
    print(f"{'mode':10} {'no gate':>9} {'gate':>9} {'added':>9}")
    for mode in ("simple", "extended", "prepared"):
        work = transactions(mode, args.transactions)
        best: dict[bool, float] = {False: float("inf"), True: float("inf")}
        for _ in range(args.repeat):
            for gated in (False, True):  # interleaved, so drift hits both alike
                best[gated] = min(best[gated], run(mode, gated, work))
        added = best[True] - best[False]
        print(f"{mode:10} {best[False]:9.2f} {best[True]:9.2f} {added:+9.2f}")
    recording_cost(args.transactions)
    return 0


def recording_cost(count: int) -> None:
    """What recording adds per select: a statement event and a result event, packed,
    hashed and queued on the event loop (the write itself runs in the flush thread), by
    the calls the PostgreSQL session makes for an allowed statement."""
    import tempfile

    from policy.classify import classify
    from proxy.recording.signing import SigningKey
    from proxy.recording.writer import Recorder

    verdict = classify(PARAM_SQL, "postgres")
    with tempfile.TemporaryDirectory() as directory:
        recorder = Recorder(Path(directory), SigningKey.generate())
        recording = recorder.open("bench", {"identity": {"sub": "agent-1"}, "target": "orders"})
        binds = [bind(1 + i % 1000, "P0_1") for i in range(count)]
        started = time.perf_counter()
        statement_class = verdict.statement_class.value
        for raw in binds:  # what PgSession records for an allowed prepared select
            recording.statement(PARAM_SQL, statement_class, "allow", raw, (23,))
            recording.result_tag("SELECT 1")
        per_statement_us = (time.perf_counter() - started) / count * 1e6
        recording.seal({"reason": "done", "statements": count})
        size = recording.path.stat().st_size
    print()
    print(
        f"recording: {per_statement_us:.2f} us per statement on the event loop (2 events), "
        f"{size / count:.0f} transcript bytes per statement"
    )


if __name__ == "__main__":
    sys.exit(main())
