"""Recording fails closed, mid-session too (issue 14, section 5).

Under `recording.on_failure: refuse` (the default) a statement that may change data is
on disk (written and fsynced) before it reaches the server, and a session whose events
can no longer be written ends with 58030 (MySQL: 1026) instead of relaying unrecorded.
`on_failure: allow` keeps relaying, logged and counted.

The full disk is real: a small tmpfs mounted over the data_dir's transcripts directory
(tests run as root, here and in CI), then filled. Write errors are also injected in the
gateway's own process, for both protocols.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
import pymysql
import pytest

from proxy.recording import writer
from proxy.recording.verifier import read_transcript
from tests.support.approvals import agent_token, rule
from tests.support.gateway import RunningGateway, served_gateway
from tests.support.mariadb import MariaDb
from tests.support.pgcluster import PgServer
from tests.support.waiting import PATIENCE_S, wait_until

ALL_ALLOWED = {"write": "allow", "ddl": "allow", "admin": "allow", "unknown": "allow"}
#: Larger than the page a tmpfs file may still have room in: its record cannot fit.
BIG = "x" * 20_000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs where the first gateway's transcripts go (gateway_factory's data0;
    the MySQL factory's mysql-data0 is linked to it)."""
    mount_point = tmp_path / "data0" / "transcripts"
    mount_point.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(
            "these tests need a real full disk: mounting a tmpfs failed (run them as root): "
            + mounted.stderr.strip()
        )
    (tmp_path / "mysql-data0").mkdir()
    (tmp_path / "mysql-data0" / "transcripts").symlink_to(mount_point)
    try:
        yield mount_point
    finally:
        # Lazily: the gateway may still hold its transcripts open when this runs.
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(mount_point: Path) -> None:
    """Write until the tmpfs has no room left."""

    def write_forever(filler: BinaryIO) -> None:
        while True:
            filler.write(b"\0" * 4096)

    with (
        (mount_point / "filler").open("wb", buffering=0) as filler,
        pytest.raises(OSError, match="No space left on device"),
    ):
        write_forever(filler)


def transcript_sql(gateway: RunningGateway) -> list[str]:
    """Every statement's SQL in the gateway's transcripts as they are on disk now."""
    found = []
    for path in sorted((gateway.settings.data_dir / "transcripts").glob("*/*.airlock")):
        for event in read_transcript(path).events:
            if event.kind == "statement":
                found.append(str(event.data.get("sql")))
    return found


def pg_rows(local_pg: PgServer, database: str) -> int:
    with psycopg.connect(local_pg.dsn(database), autocommit=True) as direct:
        row = direct.execute("select count(*) from accounts").fetchone()
        assert row is not None
        return int(row[0])


class Writes:
    """The gateway's transcript writes, watched in its process: `failed` is set at the
    first one that fails (on a full disk, or injected: `fail_after` writes succeed)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None) -> None:
        self.calls = 0
        self.failed = threading.Event()
        real = writer._write_all

        def write(fd: int, raw: bytes) -> None:
            self.calls += 1
            try:
                if fail_after is not None and self.calls > fail_after:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                real(fd, raw)
            except OSError:
                self.failed.set()
                raise

        monkeypatch.setattr(writer, "_write_all", write)

    def reads_until_ended(self, run: Callable[[], object]) -> tuple[int, Exception]:
        """Run reads until the session ends: how many completed after the first failed
        write, and the error that ended the session."""
        after = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            failed = self.failed.is_set()
            try:
                run()
            except Exception as error:  # the test looks at which
                return after, error
            after += failed
        raise AssertionError("reads ran for 20 s and the session did not end")


#: Reads completed after the first failed write: the one in flight when it failed, and
#: one the event loop may relay before it runs the end the writer thread asked for.
IN_FLIGHT = 2


# --- PostgreSQL, a real full disk


@pytest.mark.timeout(60)
def test_a_write_whose_record_cannot_be_made_durable_never_reaches_the_server(
    small_disk: Path,
    gateway_factory: Callable[..., RunningGateway],
    accounts: Callable[[], dict[int, int]],
    local_pg: PgServer,
    pg_database: str,
) -> None:
    gateway = gateway_factory(rules=[rule(**ALL_ALLOWED)])
    before = pg_rows(local_pg, pg_database)
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        agent.execute("select 1")
        fill(small_disk)
        with pytest.raises(psycopg.OperationalError) as ended:
            agent.execute("insert into accounts values (1000, length(%s))", (BIG,))
        assert ended.value.sqlstate == "58030"
        assert "cannot record" in str(ended.value)
        assert agent.closed or agent.broken
    assert pg_rows(local_pg, pg_database) == before
    gateway.wait_for_no_sessions()


@pytest.mark.timeout(60)
def test_reads_end_with_58030_once_a_flush_fails_on_a_full_disk(
    small_disk: Path,
    gateway_factory: Callable[..., RunningGateway],
    accounts: Callable[[], dict[int, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = gateway_factory(rules=[rule(**ALL_ALLOWED)])
    writes = Writes(monkeypatch)  # watched, not changed
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        agent.execute("select balance from accounts where id = 1")
        fill(small_disk)
        # Reads are recorded in the background: until the transcript's last page (which
        # a tmpfs file keeps) is full, they still fit; then the next flush fails.
        after, error = writes.reads_until_ended(
            lambda: agent.execute("select balance from accounts where id = 1").fetchall()
        )
    assert isinstance(error, psycopg.OperationalError), error
    assert error.sqlstate == "58030"
    assert writes.failed.is_set()
    assert after <= IN_FLIGHT


@pytest.mark.timeout(60)
def test_with_on_failure_allow_a_full_disk_keeps_relaying_and_is_counted(
    small_disk: Path,
    gateway_factory: Callable[..., RunningGateway],
    accounts: Callable[[], dict[int, int]],
    local_pg: PgServer,
    pg_database: str,
) -> None:
    gateway = gateway_factory(rules=[rule(**ALL_ALLOWED)], recording={"on_failure": "allow"})
    before = pg_rows(local_pg, pg_database)
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        agent.execute("select 1")
        fill(small_disk)
        agent.execute("insert into accounts values (1000, length(%s))", (BIG,))

        def counted() -> bool:
            if gateway.metrics().get("airlock_transcript_write_failures_total", "0") != "0":
                return True
            agent.execute("select 1")  # more to write, while the disk stays full
            return False

        wait_until(counted, PATIENCE_S, "the failed writes counted")
        assert agent.execute("select 2").fetchone() == (2,)
    assert pg_rows(local_pg, pg_database) == before + 1


# --- injected write errors, both protocols


@pytest.mark.timeout(60)
def test_postgres_write_errors_end_the_session_and_forward_nothing_more(
    gateway_factory: Callable[..., RunningGateway],
    accounts: Callable[[], dict[int, int]],
    local_pg: PgServer,
    pg_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = gateway_factory(rules=[rule(**ALL_ALLOWED)])
    before = pg_rows(local_pg, pg_database)
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        agent.execute("update accounts set balance = 1 where id = 1")  # durable, then run
        Writes(monkeypatch, fail_after=0)
        with pytest.raises(psycopg.OperationalError) as ended:
            agent.execute("insert into accounts values (1001, 1)")
        assert ended.value.sqlstate == "58030"
    assert pg_rows(local_pg, pg_database) == before
    monkeypatch.undo()
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as reader:
        reader.execute("select 1")
        writes = Writes(monkeypatch, fail_after=0)
        after, error = writes.reads_until_ended(lambda: reader.execute("select 1").fetchall())
    assert isinstance(error, psycopg.OperationalError), error
    assert error.sqlstate == "58030"
    assert after <= IN_FLIGHT


@pytest.mark.timeout(60)
def test_mysql_write_errors_end_the_session_with_1026_and_forward_nothing(
    mysql_gateway_factory: Callable[..., RunningGateway],
    local_mariadb: MariaDb,
    mysql_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = mysql_gateway_factory(rules=[rule(targets=["shop"], **ALL_ALLOWED)])

    def rows() -> int:
        with local_mariadb.root(mysql_database) as root, root.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM accounts")
            row: Any = cursor.fetchone()
            return int(row[0])

    before = rows()
    agent = gateway.pymysql(agent_token(gateway), autocommit=True)
    try:
        with agent.cursor() as cursor:
            cursor.execute("UPDATE accounts SET balance = 1 WHERE id = 1")
            Writes(monkeypatch, fail_after=0)
            with pytest.raises(pymysql.err.OperationalError) as ended:
                cursor.execute("INSERT INTO accounts VALUES (1001, 1)")
        assert ended.value.args[0] == 1026
        assert "cannot record" in str(ended.value.args[1])
    finally:
        agent.close()
    assert rows() == before
    monkeypatch.undo()
    reader = gateway.pymysql(agent_token(gateway), autocommit=True)
    try:
        with reader.cursor() as cursor:
            cursor.execute("SELECT 1")
            writes = Writes(monkeypatch, fail_after=2)  # after a few reads' flushes
            after, error = writes.reads_until_ended(lambda: cursor.execute("SELECT 1"))
    finally:
        reader.close()
    assert isinstance(error, pymysql.err.OperationalError), error
    assert error.args[0] == 1026
    assert after <= IN_FLIGHT


@pytest.mark.timeout(60)
def test_a_mysql_write_on_a_full_disk_never_reaches_the_server(
    small_disk: Path,
    mysql_gateway_factory: Callable[..., RunningGateway],
    local_mariadb: MariaDb,
    mysql_database: str,
) -> None:
    gateway = mysql_gateway_factory(rules=[rule(targets=["shop"], **ALL_ALLOWED)])
    agent = gateway.pymysql(agent_token(gateway), autocommit=True)
    try:
        with agent.cursor() as cursor:
            cursor.execute("SELECT 1")
            fill(small_disk)
            with pytest.raises(pymysql.err.OperationalError) as ended:
                cursor.execute("INSERT INTO accounts VALUES (1000, LENGTH(%s))", (BIG,))
        assert ended.value.args[0] == 1026
    finally:
        agent.close()
    with local_mariadb.root(mysql_database) as root, root.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM accounts WHERE id = 1000")
        assert cursor.fetchone() == (0,)


# --- durable before forwarded: a killed gateway


@pytest.mark.timeout(90)
def test_an_allowed_write_is_on_disk_before_it_runs_even_if_the_gateway_is_killed(
    tmp_path: Path, local_pg: PgServer, pg_database: str, accounts: Callable[[], dict[int, int]]
) -> None:
    with served_gateway(tmp_path, local_pg, pg_database, [rule(**ALL_ALLOWED)]) as served:
        token = served.token("agent-1", "data-agents")
        dsn = (
            f"host=127.0.0.1 port={served.pg_port} dbname=orders user=agent "
            f"password={token} sslmode=require"
        )
        with psycopg.connect(dsn, autocommit=True) as agent:
            agent.execute("update accounts set balance = 9 where id = 5")
            # At once: well before the periodic flush (0.2 s) could have written it.
            served.process.send_signal(signal.SIGKILL)
            served.process.wait(timeout=10)
    [path] = (tmp_path / "data" / "transcripts").glob("*/*.airlock")
    statements = [e.data for e in read_transcript(path).events if e.kind == "statement"]
    assert [(s["sql"], s["class"], s["decision"]) for s in statements] == [
        ("update accounts set balance = 9 where id = 5", "write", "allow")
    ]
