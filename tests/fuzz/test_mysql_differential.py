"""Differential fuzzing of the MySQL gate against a real MariaDB (issue 14, section 2).

Hypothesis drives random sequences of commands (COM_QUERY with single and
multi-statement strings, COM_STMT_PREPARE / EXECUTE / RESET / CLOSE /
SEND_LONG_DATA / FETCH with real and guessed statement ids, cursors and the
new-params-bound flag both ways, COM_INIT_DB, bursts of pipelined commands)
through an in-process gateway to a throwaway MariaDB whose general log is the
truth. The rule lets reads run, holds writes with `hold: reject` (so none is ever
approved) and denies ddl, admin and unknown. After every sequence:

- the canary table, which only the pool's writes touch, is unchanged;
- every statement the server ran (general log: Query and Execute) is in the
  transcript, forwarded by the gateway with the class it gave it, and that class
  is read (the only class this rule lets run).

CI runs a bounded number of sequences (about a minute); AIRLOCK_FUZZ_EXAMPLES=N
runs a long campaign of N sequences.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from pymysql.constants import CLIENT

from protocols.mysql.messages import Command
from proxy.recording.format import transcripts_dir
from proxy.recording.verifier import read_transcript
from tests.support.gateway import RunningGateway, gateway_document, start_gateway
from tests.support.issuer import TestIssuer
from tests.support.mariadb import TlsMariaDb
from tests.support.rawmysql import READ_ONLY_CURSOR, RawMySql, execute_payload

EXAMPLES = int(os.environ.get("AIRLOCK_FUZZ_EXAMPLES", "0") or 0)
CANARY = {1: 10, 2: 20, 3: 30}

READS = (
    "SELECT v FROM canary WHERE id = 1",
    "SELECT 1",
    "SELECT COUNT(*) FROM canary",
    "SELECT * FROM canary WHERE id = ?",
    "SELECT CONCAT(?, ?)",
    "SELECT id FROM canary ORDER BY id",
    "DO 1",
    "SET @x = 1",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "PREPARE s FROM 'SELECT 1'",
    "DEALLOCATE PREPARE s",
    "SHOW TABLES",
    "USE shop_tls",
)
WRITES = (
    "UPDATE canary SET v = v + 1",
    "UPDATE canary SET v = ? WHERE id = 1",
    "INSERT INTO canary VALUES (99, 0)",
    "INSERT INTO canary VALUES (?, ?)",
    "DELETE FROM canary WHERE id = ?",
    "REPLACE INTO canary VALUES (1, 0)",
    "SELECT v FROM canary WHERE id = 1 FOR UPDATE",
    "SET @y = (SELECT v FROM canary LIMIT 1) + 1; UPDATE canary SET v = @y",
    "PREPARE w FROM 'DELETE FROM canary'",
    "EXECUTE s",
    "EXECUTE w",
    "EXECUTE IMMEDIATE 'DELETE FROM canary'",
    "CREATE TABLE x (a INT)",
    "DROP TABLE canary",
    "TRUNCATE canary",
)
FAILING = ("SELEC 1", "SELECT * FROM no_such_table", "SELECT ?", "UPDATE no_such SET a = 1")
POOL = READS + WRITES + FAILING
DATABASES = ("shop_tls", "mysql", "no_such_db", "information_schema")


@dataclass
class Finding:
    what: str


def _transcript_statements(data_dir: Path, seen: set[Path]) -> list[dict[str, Any]]:
    """The statement events of the transcripts not read yet, once every one is sealed
    (sessions are sealed in the background after they end)."""
    deadline = time.monotonic() + 10
    while True:
        paths = [p for p in transcripts_dir(data_dir).glob("*/*.airlock") if p not in seen]
        transcripts = [read_transcript(path) for path in sorted(paths)]
        if all(t.end is not None for t in transcripts):
            break
        assert time.monotonic() < deadline, "a transcript was not sealed"
        time.sleep(0.02)
    seen.update(paths)
    return [e.data for t in transcripts for e in t.events if e.kind == "statement"]


def _matches(executed: str, recorded: str) -> bool:
    """The server logs an execute with its parameters substituted, and each statement
    of a multi-statement string on its own."""
    if executed == recorded or executed.strip() in recorded:
        return True
    pattern = ".*".join(re.escape(part) for part in recorded.split("?"))
    return re.fullmatch(pattern, executed, re.DOTALL) is not None


@pytest.fixture(scope="module")
def fuzz_target(tls_mariadb: TlsMariaDb) -> TlsMariaDb:
    root = pymysql.connect(host="127.0.0.1", port=tls_mariadb.port, user="root", password="")
    with root, root.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {tls_mariadb.database}.canary (id INT PRIMARY KEY, v INT)")
        cursor.execute(
            f"INSERT INTO {tls_mariadb.database}.canary VALUES (1, 10), (2, 20), (3, 30)"  # noqa: S608
        )
        cursor.execute("SET GLOBAL log_output = 'TABLE'")
        cursor.execute("SET GLOBAL general_log = 1")
        root.commit()
    return tls_mariadb


@pytest.mark.timeout(0 if EXAMPLES else 300)
def test_nothing_reaches_mariadb_around_the_gate(
    issuer: TestIssuer, fuzz_target: TlsMariaDb, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    upstream = fuzz_target.upstream_url("require")
    document = gateway_document(issuer, data_dir, upstream)
    document["listen"] = {"postgres": None, "mysql": "127.0.0.1:0", "api": "127.0.0.1:0"}
    document["targets"] = {"shop": {"protocol": "mysql", "upstream": upstream}}
    document["rules"] = [{
        "groups": ["data-agents"], "targets": ["shop"], "read": "allow", "write": "approve",
        "ddl": "deny", "admin": "deny", "unknown": "deny", "approvers": ["oncall-dba"],
        "hold": "reject", "grant_ttl": "15m",
    }]  # fmt: skip
    gateway = start_gateway(issuer, document, tmp_path / "airlock.yaml")
    root = pymysql.connect(
        host="127.0.0.1", port=fuzz_target.port, user="root", password="", autocommit=True
    )
    seen: set[Path] = set()
    sequences = [0]
    try:
        machine = _machine(gateway, root, data_dir, seen, sequences)
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=EXAMPLES or 40,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                derandomize=not EXAMPLES,
            ),
        )
    finally:
        root.close()
        gateway.stop()
    print(f"mysql differential fuzzing: {sequences[0]} sequences, no finding")


def _machine(
    gateway: RunningGateway,
    root: pymysql.Connection[Any],
    data_dir: Path,
    seen: set[Path],
    sequences: list[int],
) -> type[RuleBasedStateMachine]:
    def canary() -> dict[int, int]:
        with root.cursor() as cursor:
            cursor.execute("SELECT id, v FROM shop_tls.canary")
            return {int(i): int(v) for i, v in cursor.fetchall()}

    def general_log(threads: set[int]) -> list[tuple[int, str, str]]:
        if not threads:
            return []
        with root.cursor() as cursor:
            cursor.execute(
                "SELECT thread_id, command_type, CONVERT(argument USING utf8mb4) "
                "FROM mysql.general_log WHERE thread_id IN %s",
                (tuple(threads),),
            )
            return [(int(t), str(c), str(a)) for t, c, a in cursor.fetchall()]

    class GateMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            sequences[0] += 1
            self.threads: set[int] = set()
            self.wire: RawMySql | None = None
            self.ids: dict[int, int] = {}  # statement id -> parameters
            self.highest = 0
            self.connect()

        def connect(self) -> None:
            connection = gateway.pymysql(
                gateway.issuer.mint(sub="fuzz", groups=("data-agents",)),
                autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS, read_timeout=20,
            )  # fmt: skip
            self.wire = RawMySql(connection)
            thread = self.wire.query("SELECT CONNECTION_ID()").text_rows()[0][0]
            assert thread is not None
            self.threads.add(int(thread))

        def live(self) -> RawMySql:
            if self.wire is None:
                self.connect()
            assert self.wire is not None
            return self.wire

        def statement_id(self, pick: int) -> int:
            """A prepared id, or a guess around the highest one the server gave."""
            known = sorted(self.ids)
            if known and pick < 8:
                return known[pick % len(known)]
            return max(1, self.highest + pick - 10)

        def run(self, *payloads: bytes) -> None:
            wire = self.live()
            try:
                for payload in payloads:
                    wire.send(payload)
                for _ in range(len(wire._sent)):
                    answer = wire.answer()
                    if answer.statement_id is not None:
                        self.ids[answer.statement_id] = answer.num_params
                        self.highest = max(self.highest, answer.statement_id)
            except (pymysql.err.MySQLError, OSError):
                wire.connection._force_close()  # the gateway ended the session
                self.wire = None

        # --- commands

        @staticmethod
        def query_payload(parts: list[str]) -> bytes:
            return bytes([Command.QUERY]) + "; ".join(parts).encode()

        @rule(parts=st.lists(st.sampled_from(POOL), min_size=1, max_size=3))
        def query(self, parts: list[str]) -> None:
            self.run(self.query_payload(parts))

        @rule(sql=st.sampled_from(POOL))
        def prepare(self, sql: str) -> None:
            self.run(bytes([Command.STMT_PREPARE]) + sql.encode())

        @rule(
            pick=st.integers(0, 14),
            params=st.lists(st.sampled_from(("1", "2", "99", "x", None)), max_size=2),
            cursor=st.booleans(),
            bind=st.booleans(),
        )
        def execute(self, pick: int, params: list[str | None], cursor: bool, bind: bool) -> None:
            flags = READ_ONLY_CURSOR if cursor else 0
            payload = execute_payload(
                self.statement_id(pick), tuple(params), cursor=flags, bind_types=bind
            )
            self.run(payload)

        @rule(pick=st.integers(0, 14))
        def close(self, pick: int) -> None:
            statement_id = self.statement_id(pick)
            self.ids.pop(statement_id, None)
            self.run(bytes([Command.STMT_CLOSE]) + statement_id.to_bytes(4, "little"))

        @rule(pick=st.integers(0, 14))
        def reset(self, pick: int) -> None:
            self.run(bytes([Command.STMT_RESET]) + self.statement_id(pick).to_bytes(4, "little"))

        @rule(pick=st.integers(0, 14), parameter=st.integers(0, 2), chunk=st.binary(max_size=4))
        def long_data(self, pick: int, parameter: int, chunk: bytes) -> None:
            statement_id = self.statement_id(pick)
            head = bytes([Command.STMT_SEND_LONG_DATA]) + statement_id.to_bytes(4, "little")
            self.run(head + parameter.to_bytes(2, "little") + chunk)

        @rule(pick=st.integers(0, 14), rows=st.integers(1, 5))
        def fetch(self, pick: int, rows: int) -> None:
            head = bytes([Command.STMT_FETCH]) + self.statement_id(pick).to_bytes(4, "little")
            self.run(head + rows.to_bytes(4, "little"))

        @rule(database=st.sampled_from(DATABASES))
        def init_db(self, database: str) -> None:
            self.run(bytes([Command.INIT_DB]) + database.encode())

        @rule(
            burst=st.lists(
                st.tuples(st.sampled_from(("query", "prepare", "execute", "close")),
                          st.sampled_from(POOL), st.integers(0, 14)),
                min_size=2, max_size=5,
            )
        )  # fmt: skip
        def pipelined(self, burst: list[tuple[str, str, int]]) -> None:
            payloads = []
            for kind, sql, pick in burst:
                statement_id = self.statement_id(pick).to_bytes(4, "little")
                if kind == "query":
                    payloads.append(self.query_payload([sql]))
                elif kind == "prepare":
                    payloads.append(bytes([Command.STMT_PREPARE]) + sql.encode())
                elif kind == "execute":
                    payloads.append(execute_payload(self.statement_id(pick)))
                else:
                    payloads.append(bytes([Command.STMT_CLOSE]) + statement_id)
            self.run(*payloads)

        @invariant()
        def canary_unchanged(self) -> None:
            found = canary()
            if found != CANARY:
                with root.cursor() as cursor:  # put it back, so shrinking starts clean
                    cursor.execute("DELETE FROM shop_tls.canary")
                    cursor.execute("INSERT INTO shop_tls.canary VALUES (1, 10), (2, 20), (3, 30)")
            assert found == CANARY, "a write reached the canary table"

        def teardown(self) -> None:
            if self.wire is not None:
                self.wire.connection.close()
            listener = gateway.gateway.mysql
            assert listener is not None
            deadline = time.monotonic() + 10
            while gateway.call(lambda: len(listener.sessions) + len(listener.connections)):
                assert time.monotonic() < deadline, "ended sessions were not forgotten"
                time.sleep(0.02)
            recorded = _transcript_statements(data_dir, seen)
            forwarded = [r for r in recorded if r.get("decision") in ("allow",)]
            findings = [
                Finding(f"forwarded as {r['class']}: {r['sql']!r}")
                for r in forwarded
                if r["class"] != "read"
            ]
            logged_in: set[int] = set()  # what comes before is the gateway's own login
            for thread, command, argument in general_log(self.threads):
                if argument == "SELECT CONNECTION_ID()":
                    logged_in.add(thread)
                if thread not in logged_in or command not in ("Query", "Execute"):
                    continue
                if not any(_matches(argument, r["sql"]) for r in forwarded):
                    findings.append(Finding(f"ran unrecorded ({command}): {argument!r}"))
            with root.cursor() as cursor:
                cursor.execute("TRUNCATE TABLE mysql.general_log")
            assert not findings, findings

    return GateMachine
