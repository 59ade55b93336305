"""MySQL drivers see the server they expect, through the gateway to a real MariaDB.

The greeting announces the upstream's own version (MariaDB's form, which drivers parse
to tell MariaDB from MySQL); the character sets accepted at login are the ones `SET
NAMES` may choose (latin1 included, those that can hide a quote refused by both); the
connection id a client sees in SQL (`CONNECTION_ID()`, `SHOW PROCESSLIST`) is one
`KILL` accepts, for the agent's own sessions only; and a client naming no database
reaches the target marked default, or is told which targets exist.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from typing import Any

import aiomysql  # type: ignore[import-untyped]
import pymysql
import pytest

from tests.support.gateway import RunningGateway
from tests.support.mariadb import MariaDb, aiomysql_close
from tests.support.waiting import PATIENCE_S, wait_until

PyMySqlConnection = Any
LISTEN = {"postgres": None, "mysql": "127.0.0.1:0", "api": "127.0.0.1:0"}
ER_BAD_DB = 1049
ER_NO_SUCH_THREAD = 1094
ER_QUERY_INTERRUPTED = 1317
KILL_DEADLINE_S = 10.0


@pytest.fixture
def mysql_gateway(mysql_gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return mysql_gateway_factory(listen=LISTEN)


def agent_token(gateway: RunningGateway, sub: str = "agent-1") -> str:
    return gateway.issuer.mint(sub=sub, groups=("data-agents",))


def connect(
    gateway: RunningGateway, token: str, database: str | None = "shop", **kwargs: Any
) -> PyMySqlConnection:
    return pymysql.connect(
        host="127.0.0.1",
        port=gateway.mysql_port,
        user="agent",
        password=token,
        database=database,
        ssl=gateway.ssl_context(),
        connect_timeout=10,
        read_timeout=40,
        **kwargs,
    )


def one(connection: PyMySqlConnection, sql: str) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone()
        assert row is not None
        return row[0]


@pytest.fixture
def direct_version(local_mariadb: MariaDb) -> str:
    with local_mariadb.root() as root:
        return str(root.get_server_info())  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------
# The greeting


def test_pymysql_sees_the_upstreams_mariadb_version(
    mysql_gateway: RunningGateway, direct_version: str
) -> None:
    assert direct_version.startswith("5.5.5-")  # MariaDB's greeting, for old clients
    with connect(mysql_gateway, agent_token(mysql_gateway)) as agent:
        announced = agent.get_server_info()
        assert announced == f"{direct_version}-airlock"
        # What VERSION() says (MariaDB drops the 5.5.5- prefix) begins the greeting's rest.
        assert announced.removeprefix("5.5.5-").startswith(one(agent, "SELECT VERSION()"))


def test_mysql_connector_and_aiomysql_see_mariadb(
    mysql_gateway: RunningGateway, direct_version: str
) -> None:
    token = agent_token(mysql_gateway)
    connector = mysql_gateway.mysql_connector(token)
    try:
        assert connector.server_info == f"{direct_version}-airlock"
    finally:
        connector.close()

    async def aiomysql_version() -> str:
        conn = await aiomysql.connect(
            host="127.0.0.1",
            port=mysql_gateway.mysql_port,
            user="agent",
            password=token,
            db="shop",
            ssl=mysql_gateway.ssl_context(),
            connect_timeout=10,
        )
        try:
            return str(conn.get_server_info())
        finally:
            await aiomysql_close(conn)

    assert "MariaDB" in asyncio.run(aiomysql_version())


# --------------------------------------------------------------------------
# Character sets


@pytest.mark.parametrize("charset", ["latin1", "utf8mb4", "ascii"])
def test_pymysql_connects_and_queries_with_a_safe_charset(
    mysql_gateway: RunningGateway, charset: str
) -> None:
    with connect(mysql_gateway, agent_token(mysql_gateway), charset=charset) as agent:
        text = "cafe" if charset == "ascii" else "café"
        assert one(agent, f"SELECT '{text}'") == text
        assert one(agent, "SELECT @@character_set_client") == charset


def test_set_names_latin1_after_a_utf8mb4_login(mysql_gateway: RunningGateway) -> None:
    with connect(mysql_gateway, agent_token(mysql_gateway), charset="utf8mb4") as agent:
        with agent.cursor() as cursor:
            cursor.execute("SET NAMES latin1")
            cursor.execute("SET NAMES latin1 COLLATE latin1_swedish_ci")
            cursor.execute("SET CHARACTER SET latin1")
        assert one(agent, "SELECT @@character_set_client") == "latin1"
        with agent.cursor() as cursor, pytest.raises(pymysql.err.MySQLError) as refused:
            cursor.execute("SET NAMES gbk")
        assert "gbk" not in one(agent, "SELECT @@character_set_client")
        assert "character set" in str(refused.value)


def test_aiomysql_with_latin1(mysql_gateway: RunningGateway) -> None:
    token = agent_token(mysql_gateway)

    async def run() -> Any:
        conn = await aiomysql.connect(
            host="127.0.0.1",
            port=mysql_gateway.mysql_port,
            user="agent",
            password=token,
            db="shop",
            charset="latin1",
            ssl=mysql_gateway.ssl_context(),
            connect_timeout=10,
        )
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT 'café', COUNT(*) FROM accounts")
                return await cursor.fetchone()
        finally:
            await aiomysql_close(conn)

    assert asyncio.run(run()) == ("café", 60)


# --------------------------------------------------------------------------
# KILL with the id the client sees


def upstream_sleeps(local_mariadb: MariaDb) -> list[int]:
    with local_mariadb.root() as direct, direct.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM information_schema.processlist WHERE user = %s AND info LIKE %s",
            (local_mariadb.service_user, "%SLEEP(%"),
        )
        return [int(row[0]) for row in cursor.fetchall()]


def run_in_thread(fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def target() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the test
            future.set_exception(exc)

    threading.Thread(target=target, daemon=True).start()
    return future


def sleeping(connection: PyMySqlConnection) -> concurrent.futures.Future[Any]:
    return run_in_thread(lambda: one(connection, "SELECT SLEEP(30)"))


def outcome(running: concurrent.futures.Future[Any]) -> Any:
    try:
        return running.result(timeout=KILL_DEADLINE_S)
    except pymysql.err.MySQLError as exc:
        return exc.args[0]


@pytest.fixture
def two_sessions(mysql_gateway: RunningGateway) -> Iterator[tuple[Any, Any]]:
    token = agent_token(mysql_gateway)
    with connect(mysql_gateway, token) as sleeper, connect(mysql_gateway, token) as killer:
        yield sleeper, killer


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["CONNECTION_ID()", "SHOW PROCESSLIST"])
def test_kill_query_with_the_id_sql_shows(
    mysql_gateway: RunningGateway,
    local_mariadb: MariaDb,
    two_sessions: tuple[Any, Any],
    how: str,
) -> None:
    sleeper, killer = two_sessions
    seen = int(one(sleeper, "SELECT CONNECTION_ID()"))
    running = sleeping(sleeper)
    wait_until(lambda: upstream_sleeps(local_mariadb), PATIENCE_S, "the SLEEP upstream")
    if how == "SHOW PROCESSLIST":
        with killer.cursor() as cursor:
            cursor.execute("SHOW PROCESSLIST")
            ids = [int(row[0]) for row in cursor.fetchall() if "SLEEP(" in str(row[7])]
        assert ids == [seen]
    with killer.cursor() as cursor:
        cursor.execute(f"KILL QUERY {seen}")
    assert outcome(running) in (1, ER_QUERY_INTERRUPTED)
    wait_until(lambda: not upstream_sleeps(local_mariadb), KILL_DEADLINE_S, "the SLEEP to stop")
    assert one(sleeper, "SELECT 'usable'") == "usable"


@pytest.mark.timeout(60)
def test_kill_with_the_id_sql_shows_of_another_identity_is_refused(
    mysql_gateway: RunningGateway, local_mariadb: MariaDb
) -> None:
    with (
        connect(mysql_gateway, agent_token(mysql_gateway)) as sleeper,
        connect(mysql_gateway, agent_token(mysql_gateway)) as owner,
        connect(mysql_gateway, agent_token(mysql_gateway, "agent-2")) as stranger,
    ):
        seen = int(one(sleeper, "SELECT CONNECTION_ID()"))
        running = sleeping(sleeper)
        wait_until(lambda: upstream_sleeps(local_mariadb), PATIENCE_S, "the SLEEP upstream")
        for statement in (f"KILL QUERY {seen}", f"KILL {seen}", f"KILL CONNECTION {seen}"):
            with stranger.cursor() as cursor, pytest.raises(pymysql.err.MySQLError) as refused:
                cursor.execute(statement)
            assert refused.value.args[0] == ER_NO_SUCH_THREAD
        with pytest.raises(pymysql.err.MySQLError) as refused:
            stranger.kill(seen)  # COM_PROCESS_KILL
        assert refused.value.args[0] == ER_NO_SUCH_THREAD
        assert not running.done()
        assert upstream_sleeps(local_mariadb)
        with owner.cursor() as cursor:
            cursor.execute(f"KILL QUERY {seen}")  # clean up: the owner may
        assert outcome(running) in (1, ER_QUERY_INTERRUPTED)


@pytest.mark.timeout(60)
def test_kill_connection_with_the_id_sql_shows(
    mysql_gateway: RunningGateway, local_mariadb: MariaDb, two_sessions: tuple[Any, Any]
) -> None:
    sleeper, killer = two_sessions
    seen = int(one(sleeper, "SELECT CONNECTION_ID()"))
    running = sleeping(sleeper)
    wait_until(lambda: upstream_sleeps(local_mariadb), PATIENCE_S, "the SLEEP upstream")
    killer.kill(seen)  # COM_PROCESS_KILL
    with pytest.raises(pymysql.err.MySQLError):
        running.result(timeout=KILL_DEADLINE_S)
    wait_until(lambda: not upstream_sleeps(local_mariadb), KILL_DEADLINE_S, "the SLEEP to stop")
    assert one(killer, "SELECT 'usable'") == "usable"


# --------------------------------------------------------------------------
# No database named


@pytest.fixture
def two_targets(local_mariadb: MariaDb, mysql_database: str) -> Callable[[bool], dict[str, Any]]:
    def overrides(default: bool) -> dict[str, Any]:
        url = local_mariadb.upstream_url(mysql_database)
        return {
            "listen": LISTEN,
            "targets": {
                "shop": {"protocol": "mysql", "upstream": url},
                "warehouse": {"protocol": "mysql", "upstream": url, "default": default},
            },
            "rules": [
                {"groups": ["data-agents"], "targets": ["shop", "warehouse"], "all": "allow"}
            ],
        }

    return overrides


def test_no_database_and_several_targets_names_them(
    mysql_gateway_factory: Callable[..., RunningGateway],
    two_targets: Callable[[bool], dict[str, Any]],
) -> None:
    gateway = mysql_gateway_factory(**two_targets(False))
    with pytest.raises(pymysql.err.MySQLError) as refused:
        connect(gateway, agent_token(gateway), database=None)
    errno, message = refused.value.args
    assert errno == ER_BAD_DB
    assert "shop, warehouse" in message


def test_no_database_reaches_the_default_target(
    mysql_gateway_factory: Callable[..., RunningGateway],
    two_targets: Callable[[bool], dict[str, Any]],
    mysql_database: str,
) -> None:
    gateway = mysql_gateway_factory(**two_targets(True))
    with connect(gateway, agent_token(gateway), database=None) as agent:
        assert one(agent, "SELECT DATABASE()") == mysql_database
        listener = gateway.gateway.mysql
        assert listener is not None
        targets = gateway.call(
            lambda: [s.target.name for s in listener.sessions if s.target is not None]
        )
        assert targets == ["warehouse"]
