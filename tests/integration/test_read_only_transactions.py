"""A statement that needs approval inside a READ ONLY transaction, which the server refuses
there anyway, is answered at once with the server's own error (PostgreSQL 25006, MariaDB
1792) instead of waiting for a DBA; anything the server might run is held as before, and
every approval request says what transaction the session was in. Real servers, real
drivers (psycopg, asyncpg, PyMySQL), the API and the `airlock` CLI."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import psycopg
import pymysql
import pytest

from proxy.core.gated_session import READ_ONLY_REFUSES
from proxy.recording.sessions import transcript_paths
from proxy.recording.verifier import read_transcript
from tests.support.approvals import (
    Background,
    agent_token,
    airlock,
    api,
    connect,
    dba_token,
    decide,
    pending,
    rule,
)
from tests.support.gateway import RunningGateway
from tests.support.mariadb import MariaDb


def nothing_pending(gateway: RunningGateway) -> None:
    status, body = api(gateway, "GET", "/api/v1/approvals", dba_token(gateway))
    assert status == 200
    assert body["approvals"] == []


def decisions(gateway: RunningGateway) -> list[tuple[str, str]]:
    """Every statement of every sealed transcript: (sql, decision)."""
    gateway.wait_for_sealed_transcripts()
    found = []
    for path in transcript_paths(gateway.settings.data_dir):
        for event in read_transcript(path).events:
            if event.kind == "statement":
                found.append((event.data["sql"], event.data["decision"]))
    return found


# --- PostgreSQL


@pytest.fixture
def pg_gated(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> RunningGateway:
    return gateway_factory(rules=[rule(ddl="approve")])


PG_REFUSED = [
    ("insert into accounts values (100, 1)", "INSERT"),
    ("update accounts set balance = 0 where id = 1", "UPDATE"),
    ("delete from accounts where id = 1", "DELETE"),
    (
        "merge into accounts a using (select 1 as id) s on a.id = s.id "
        "when matched then update set balance = 0",
        "MERGE",
    ),
    ("truncate accounts", "TRUNCATE TABLE"),
    ("create table other (a int)", "CREATE TABLE"),
    ("create temp table scratch (a int)", "CREATE TABLE"),
    ("create table copied as select * from accounts", "CREATE TABLE AS"),
    ("alter table accounts add column note text", "ALTER TABLE"),
    ("drop table accounts", "DROP TABLE"),
    ("comment on table accounts is 'x'", "COMMENT"),
    ("create index on accounts (balance)", "CREATE INDEX"),
]


@pytest.mark.timeout(90)
def test_psycopg_statements_the_server_refuses_read_only_get_25006_at_once(
    pg_gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    with connect(pg_gated, agent_token(pg_gated)) as agent:
        for sql, command in PG_REFUSED:
            agent.execute("begin transaction read only")
            started = time.monotonic()
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as raised:
                agent.execute(sql)
            assert time.monotonic() - started < 5  # no hold: nobody was asked
            assert str(raised.value).startswith(
                f"cannot execute {command} in a read-only transaction"
            ), sql
            agent.execute("rollback")
        # The session goes on as before: reads pass, and a write outside the transaction
        # still waits for an approver.
        assert agent.execute("select count(*) from accounts").fetchone() == (60,)
        write = Background(
            lambda: agent.execute("update accounts set balance = 7 where id = 2").rowcount
        )
        [request] = pending(pg_gated)
        assert request["transaction"] == "idle"
        decide(pg_gated, request["id"], "deny", {"reason": "no"})
        assert isinstance(write.result(), psycopg.errors.InsufficientPrivilege)
    nothing_pending(pg_gated)
    assert accounts()[1] == 100
    assert len(accounts()) == 60
    recorded = dict(decisions(pg_gated))
    for sql, _command in PG_REFUSED:
        assert recorded[sql] == READ_ONLY_REFUSES


@pytest.mark.timeout(90)
def test_psycopg_requests_show_the_transaction_state_and_what_might_run_is_held(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(rules=[rule(ddl="allow")])
    with connect(gateway, agent_token(gateway)) as agent:
        # In a read-write transaction: held, and the request says so.
        agent.execute("begin")
        write = Background(
            lambda: agent.execute("update accounts set balance = 1 where id = 1").rowcount
        )
        [request] = pending(gateway)
        assert request["transaction"] == "in transaction"
        shown = airlock(
            "approvals", "get", request["id"], "--server", gateway.api_url,
            token=dba_token(gateway),
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "in transaction" in shown.stdout
        decide(gateway, request["id"], "approve", {})
        assert write.result() == 1
        agent.execute("rollback")
        # In a failed transaction.
        agent.execute("begin")
        with pytest.raises(psycopg.errors.DivisionByZero):
            agent.execute("select 1 / 0")
        write = Background(
            lambda: agent.execute("update accounts set balance = 1 where id = 1").rowcount
        )
        [request] = pending(gateway)
        assert request["transaction"] == "failed"
        decide(gateway, request["id"], "deny", {"reason": "no"})
        write.result()
        agent.execute("rollback")
        # A temporary table exists: a write in a READ ONLY transaction may be to it, which
        # the server allows, so it is held; approved, it runs.
        agent.execute("create temp table scratch (a int)")
        agent.execute("begin transaction read only")
        insert = Background(lambda: agent.execute("insert into scratch values (1)").rowcount)
        [request] = pending(gateway)
        assert request["transaction"] == "read only"
        decide(gateway, request["id"], "approve", {})
        assert insert.result() == 1
        agent.execute("rollback")
    assert accounts()[1] == 100


@pytest.mark.timeout(90)
def test_asyncpg_simple_write_is_refused_at_once_and_a_bound_one_is_held(
    pg_gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    async def agent() -> str:
        conn = await asyncpg.connect(**pg_gated.asyncpg_params(agent_token(pg_gated)))
        try:
            async with conn.transaction(readonly=True):
                with pytest.raises(asyncpg.exceptions.ReadOnlySQLTransactionError):
                    await conn.execute("update accounts set balance = 0 where id = 1")
            async with conn.transaction(readonly=True):
                # A bound statement runs in an open batch, where the gateway cannot ask
                # the server: it is held as before (the request cannot tell the state).
                bound = asyncio.ensure_future(
                    conn.execute("update accounts set balance = $1 where id = 1", 0)
                )
                [request] = await asyncio.to_thread(pending, pg_gated)
                assert request["transaction"] is None
                await asyncio.to_thread(decide, pg_gated, request["id"], "approve", {})
                with pytest.raises(asyncpg.exceptions.ReadOnlySQLTransactionError):
                    await bound
            return str(await conn.fetchval("select count(*) from accounts"))
        finally:
            await conn.close()

    assert asyncio.run(agent()) == "60"
    assert accounts()[1] == 100


# --- MariaDB


@pytest.fixture
def balances(local_mariadb: MariaDb, mysql_database: str) -> Callable[[], dict[int, Any]]:
    def read() -> dict[int, Any]:
        with local_mariadb.root(mysql_database) as root, root.cursor() as cursor:
            cursor.execute("SELECT id, balance FROM accounts")
            return {int(i): b for i, b in cursor.fetchall()}

    return read


def run(conn: pymysql.Connection[Any], sql: str) -> Any:
    with conn.cursor() as cursor:
        affected = cursor.execute(sql)
        rows = cursor.fetchall()
        return rows if cursor.description else affected


@pytest.mark.timeout(90)
def test_pymysql_writes_in_a_read_only_transaction_get_1792_at_once(
    mysql_gateway_factory: Callable[..., RunningGateway],
    balances: Callable[[], dict[int, Any]],
) -> None:
    gateway = mysql_gateway_factory(rules=[rule(targets=["shop"], ddl="approve")])
    conn = gateway.pymysql(agent_token(gateway), autocommit=True, read_timeout=60)
    refused = [
        "UPDATE accounts SET balance = 0 WHERE id = 1",
        "INSERT INTO accounts VALUES (100, 1)",
        "DELETE FROM accounts WHERE id = 1",
        "REPLACE INTO accounts VALUES (1, 0)",
    ]
    with conn:
        run(conn, "START TRANSACTION READ ONLY")
        assert run(conn, "SELECT COUNT(*) FROM accounts") == ((60,),)
        for sql in refused:
            with pytest.raises(pymysql.err.MySQLError) as raised:
                run(conn, sql)
            assert raised.value.args[0] == 1792, sql
        # DDL is not refused there: MariaDB commits the transaction and runs it. Held.
        ddl = Background(lambda: run(conn, "CREATE TABLE other (a INT)"))
        [request] = pending(gateway)
        assert request["transaction"] == "read only"
        decide(gateway, request["id"], "deny", {"reason": "no"})
        assert isinstance(ddl.result(), pymysql.err.MySQLError)
        run(conn, "COMMIT")
        # A read-write transaction: held, and the request says so.
        run(conn, "START TRANSACTION")
        write = Background(lambda: run(conn, "UPDATE accounts SET balance = 5 WHERE id = 1"))
        [request] = pending(gateway)
        assert request["transaction"] == "in transaction"
        listed = airlock(
            "approvals", "list", "--state", "pending", "--server", gateway.api_url,
            token=dba_token(gateway),
        )  # fmt: skip
        assert "in transaction" in listed.stdout
        decide(gateway, request["id"], "deny", {"reason": "no"})
        write.result()
        run(conn, "ROLLBACK")
    assert balances()[1] == 100
    assert len(balances()) == 60
    recorded = dict(decisions(gateway))
    for sql in refused:
        assert recorded[sql] == READ_ONLY_REFUSES


@pytest.mark.timeout(90)
def test_pymysql_a_session_that_may_have_a_temporary_table_is_held(
    mysql_gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = mysql_gateway_factory(rules=[rule(targets=["shop"], ddl="allow")])
    conn = gateway.pymysql(agent_token(gateway), autocommit=True, read_timeout=60)
    with conn:
        run(conn, "CREATE TEMPORARY TABLE scratch (a INT)")
        run(conn, "START TRANSACTION READ ONLY")
        insert = Background(lambda: run(conn, "INSERT INTO scratch VALUES (1)"))
        [request] = pending(gateway)
        assert request["transaction"] == "read only"
        decide(gateway, request["id"], "approve", {})
        assert insert.result() == 1  # MariaDB allows it: the table is temporary
        run(conn, "COMMIT")
