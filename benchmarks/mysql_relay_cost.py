"""What the MySQL relay costs per transaction on the event-loop thread, without sockets.

The bytes a sysbench point select sends and gets back go through `MySqlRelay` as
`airlock serve` runs it (cached verdicts, the gate, statement tracking, the answer
followed to its end), in one process, interleaved:

- text, one literal: the same COM_QUERY every time (the verdict cache hits by exact
  text): the baseline;
- text, new literals: a COM_QUERY whose literal changes every time, as sysbench sends
  it (the cache hits by fingerprint): the difference is what fingerprinting costs;
- prepared: a COM_STMT_EXECUTE of one prepared statement (no text to look up).

Then what recording adds per statement (a statement and a result event). Printed:
microseconds per transaction, best of --repeat. The event loop and system calls are not
in it; mysql_throughput.py measures everything end to end.

    .venv/bin/python benchmarks/mysql_relay_cost.py [--transactions 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy.fingerprint import CachedClassifier
from policy.rules import Action, Rule, effective_policy
from protocols.mysql.messages import Capability, OkPacket, ServerStatus, StmtPrepareOk
from protocols.mysql.packets import frame, lenenc_bytes, lenenc_int
from proxy.mysql.relay import MySqlGate, MySqlRelay
from proxy.recording.signing import load_or_create
from proxy.recording.writer import Recorder

CAPS = int(
    Capability.PROTOCOL_41
    | Capability.SECURE_CONNECTION
    | Capability.TRANSACTIONS
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.DEPRECATE_EOF
)
SQL = "SELECT c FROM sbtest1 WHERE id={}"
STATUS = int(ServerStatus.AUTOCOMMIT)
COLUMN = (
    lenenc_bytes(b"def") + lenenc_bytes(b"bench") + lenenc_bytes(b"sbtest1")
    + lenenc_bytes(b"sbtest1") + lenenc_bytes(b"c") + lenenc_bytes(b"c")
    + b"\x0c" + b"\x2d\x00" + b"\xe0\x01\x00\x00" + b"\xfe" + b"\x00\x00" + b"\x00" + b"\x00\x00"
)  # fmt: skip
END = b"\xfe" + OkPacket(0, 0, STATUS, 0).build(CAPS)[1:]  # OK with the 0xFE header


def answer(row: bytes) -> bytes:
    packets = [lenenc_int(1), COLUMN, row, END]
    return b"".join(frame(payload, seq) for seq, payload in enumerate(packets, start=1))


TEXT_ANSWER = answer(lenenc_bytes(b"x" * 120))
BINARY_ANSWER = answer(b"\x00\x00" + lenenc_bytes(b"x" * 120))


def transactions(mode: str, count: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(1)
    if mode == "text":
        return [
            (frame(b"\x03" + SQL.format(rng.randint(1, 10_000)).encode(), 0), TEXT_ANSWER)
            for _ in range(count)
        ]
    out = []
    for _ in range(count):
        payload = (
            b"\x17" + (1).to_bytes(4, "little") + b"\x00" + (1).to_bytes(4, "little")
            + b"\x00" + b"\x01" + b"\x03\x00" + rng.randint(1, 10_000).to_bytes(4, "little")
        )  # fmt: skip
        out.append((frame(payload, 0), BINARY_ANSWER))
    return out


def make_relay(mode: str) -> MySqlRelay:
    rule = Rule(
        groups=frozenset({"agents"}),
        targets=frozenset({"bench"}),
        read=Action.ALLOW,
        write=Action.ALLOW,
    )
    policy = effective_policy([rule], ["agents"], "bench")
    assert policy is not None
    gate = MySqlGate(CachedClassifier("mysql"), policy, time.time)
    relay = MySqlRelay(capabilities=CAPS, gate=gate, max_packet_bytes=16 << 20)
    sql = SQL.format(1)
    gate.classifier.classify(sql)  # a warm cache, as after the first select
    if mode == "prepared":
        prepared = "SELECT c FROM sbtest1 WHERE id=?"
        gate.classifier.classify(prepared)
        relay.client_data(frame(b"\x16" + prepared.encode(), 0))
        ok = StmtPrepareOk(1, 1, 1, 0).build()
        param = COLUMN
        relay.server_data(frame(ok, 1) + frame(param, 2) + frame(COLUMN, 3))
    return relay


def relayed(relay: MySqlRelay, work: list[tuple[bytes, bytes]]) -> float:
    start = time.perf_counter()
    for request, reply in work:
        relay.client_data(request)
        relay.server_data(reply)
    return time.perf_counter() - start


def recording_cost(count: int) -> None:
    """A statement event and a result event per select, as a recorded session writes."""
    with tempfile.TemporaryDirectory() as directory:
        data_dir = Path(directory)
        recorder = Recorder(data_dir, load_or_create(data_dir))
        recording = recorder.open("bench", {"identity": {"sub": "agent-1"}, "target": "bench"})
        sql = SQL.format(1)
        start = time.perf_counter()
        for _ in range(count):
            recording.event("statement", {"sql": sql, "class": "read", "decision": "allow"})
            recording.event("result", {"tag": "SELECT", "rows": 1})
        elapsed = time.perf_counter() - start
        recording.seal({"reason": "done", "statements": count})
        size = recording.path.stat().st_size
    print(
        f"recording: {elapsed / count * 1e6:.2f} us per statement (2 events), "
        f"{size / count:.0f} transcript bytes per statement"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print("MySQL relay work per sysbench point-select transaction (us, best of runs)")
    same = [transactions("text", 1)[0]] * args.transactions
    cases = [
        ("text, one literal", "text", same),
        ("text, new literals", "text", transactions("text", args.transactions)),
        ("prepared", "prepared", transactions("prepared", args.transactions)),
    ]
    relays = {name: make_relay(mode) for name, mode, _ in cases}
    best = dict.fromkeys(relays, float("inf"))
    for _ in range(args.repeat):
        for name, _, work in cases:
            best[name] = min(best[name], relayed(relays[name], work) / len(work) * 1e6)
    for name, _, _ in cases:
        print(f"  {name:20} {best[name]:7.2f}")
    print(f"  fingerprinting adds  {best['text, new literals'] - best['text, one literal']:+7.2f}")
    recording_cost(args.transactions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
