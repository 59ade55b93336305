"""Connection pools through `airlock serve` under the example's rules: each pool's
checkout, checkin and reset cycle runs its housekeeping with no request held and nothing
refused, and the pool hands the same upstream connection out again.

psycopg_pool (sync and async), asyncpg's pool (whose release runs `SELECT
pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`), aiomysql's pool, and
mysql-connector's pooling (whose reset is COM_RESET_CONNECTION). SQLAlchemy's pools
are exercised in test_frameworks_sqlalchemy.py, node-postgres's in test_frameworks_node.py.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiomysql  # type: ignore[import-untyped]
import asyncpg
import mysql.connector.pooling
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from tests.support.example_gateway import ExampleGateway

#: Checkouts per pool: the first opens the connection, the rest reuse it after a reset.
CYCLES = 3


def test_psycopg_pool_cycle_passes(example_gateway: ExampleGateway) -> None:
    subject, token = example_gateway.reader("psycopg-pool")
    pids: list[int] = []
    with ConnectionPool(
        example_gateway.pg_dsn(token),
        min_size=1,
        max_size=1,
        check=ConnectionPool.check_connection,
        open=True,
    ) as pool:
        for cycle in range(CYCLES):
            with pool.connection() as conn:
                pids.append(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
                # Returned inside a transaction (the first) or a failed one (the second):
                # the pool rolls it back.
                if cycle == 0:
                    conn.execute("SELECT count(*) FROM products WHERE type = %s", ("fruit",))
                if cycle == 1:
                    with pytest.raises(psycopg.errors.DivisionByZero):
                        conn.execute("SELECT 1 / 0")
        assert pool.get_stats()["connections_num"] == 1
    assert len(set(pids)) == 1
    example_gateway.assert_reads_passed(subject)


def test_psycopg_async_pool_cycle_passes(example_gateway: ExampleGateway) -> None:
    subject, token = example_gateway.reader("psycopg-async-pool")

    async def agent() -> list[int]:
        pids: list[int] = []
        async with AsyncConnectionPool(
            example_gateway.pg_dsn(token),
            min_size=1,
            max_size=1,
            check=AsyncConnectionPool.check_connection,
            open=False,
        ) as pool:
            for _ in range(CYCLES):
                async with pool.connection() as conn:
                    cursor = await conn.execute("SELECT pg_backend_pid(), now()")
                    pids.append((await cursor.fetchone())[0])  # type: ignore[index]
        return pids

    assert len(set(asyncio.run(agent()))) == 1
    example_gateway.assert_reads_passed(subject)


def test_asyncpg_pool_release_reset_passes(example_gateway: ExampleGateway) -> None:
    subject, token = example_gateway.reader("asyncpg-pool")
    context = ssl.create_default_context(cafile=str(example_gateway.cert_file))

    async def agent() -> list[int]:
        pids: list[int] = []
        pool = await asyncpg.create_pool(
            host="127.0.0.1",
            port=example_gateway.pg_port,
            user="agent",
            password=token,
            database="orders",
            ssl=context,
            min_size=1,
            max_size=1,
        )
        try:
            for _ in range(CYCLES):
                # Released with a timeout, as applications do: a release that waited
                # for a DBA would otherwise hang here.
                async with asyncio.timeout(20):
                    async with pool.acquire() as conn:
                        pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
                        rows = await conn.fetch(
                            "SELECT name FROM products WHERE type = $1 ORDER BY id", "fruit"
                        )
                        assert [r["name"] for r in rows] == ["apple", "pear"]
        finally:
            await asyncio.wait_for(pool.close(), 20)
        return pids

    assert len(set(asyncio.run(agent()))) == 1
    statements = example_gateway.assert_reads_passed(subject)
    # The reset really went through the gateway (released twice before the pool closed).
    assert sum("RESET ALL" in s["sql"] for s in statements) >= CYCLES - 1


def mysql_ssl(example_gateway: ExampleGateway) -> ssl.SSLContext:
    """Trusts only the gateway's certificate (which names 127.0.0.1; no host name check)."""
    context = ssl.create_default_context(cafile=str(example_gateway.cert_file))
    context.check_hostname = False
    return context


def test_aiomysql_pool_cycle_passes(example_gateway: ExampleGateway) -> None:
    subject, token = example_gateway.reader("aiomysql-pool")

    async def agent() -> list[int]:
        ids: list[int] = []
        pool = await aiomysql.create_pool(
            host="127.0.0.1",
            port=example_gateway.mysql_port,
            user="agent",
            password=token,
            db="shop",
            ssl=mysql_ssl(example_gateway),
            minsize=1,
            maxsize=1,
        )
        try:
            for _ in range(CYCLES):
                async with asyncio.timeout(20):
                    async with pool.acquire() as conn, conn.cursor() as cursor:
                        await cursor.execute("SELECT CONNECTION_ID()")
                        ids.append((await cursor.fetchone())[0])
                        await cursor.execute(
                            "SELECT name FROM products WHERE type = %s ORDER BY id", ("fruit",)
                        )
                        assert await cursor.fetchall() == (("apple",), ("pear",))
        finally:
            # The pool closes its connections without waiting for their TLS transports to
            # finish closing: wait for each, or the garbage collector finds them open.
            writers = [conn._writer for conn in pool._free if conn._writer is not None]
            pool.close()
            await asyncio.wait_for(pool.wait_closed(), 20)
            for writer in writers:
                await asyncio.wait_for(writer.wait_closed(), 5)
        return ids

    assert len(set(asyncio.run(agent()))) == 1
    example_gateway.assert_reads_passed(subject)


def test_mysql_connector_pooling_reset_passes(example_gateway: ExampleGateway) -> None:
    subject, token = example_gateway.reader("mysql-connector-pool")
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": example_gateway.mysql_port,
        "user": "agent",
        "password": token,
        "database": "shop",
        "use_pure": True,
        "ssl_ca": str(example_gateway.cert_file),
        "ssl_verify_cert": True,
        "connection_timeout": 10,
    }
    # pool_reset_session: each connection handed back is reset (COM_RESET_CONNECTION,
    # or a change-user where that is missing) before its next checkout.
    pool = mysql.connector.pooling.MySQLConnectionPool(
        pool_name=f"airlock-{subject}", pool_size=1, pool_reset_session=True, **config
    )
    ids: list[int] = []
    for cycle in range(CYCLES):
        conn = pool.get_connection()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT CONNECTION_ID(), @left_by_last_checkout")
            connection_id, left = cursor.fetchone()
            ids.append(int(connection_id))
            # The reset really ran: what the last checkout left in the session is gone.
            assert left is None
            cursor.execute("SET @left_by_last_checkout = %s", (cycle,))
            cursor.execute("SELECT name FROM products WHERE price < %s ORDER BY id", (1.3,))
            assert cursor.fetchall() == [("apple",), ("leek",)]
            cursor.close()
        finally:
            conn.close()  # back to the pool, reset
    assert len(set(ids)) == 1
    pool._remove_connections()
    example_gateway.assert_reads_passed(subject)
