"""No write runs for a client that has gone: a held statement whose client disconnects
is withdrawn at once, never forwarded, and cannot be approved afterwards.

Real clients leave the ways agents do: psql and the mariadb CLI killed with SIGKILL,
asyncpg and node-postgres giving up after their own timeout and closing, PyMySQL's
read timeout closing its socket. Each test checks what a DBA and the database owner
would: the request is `withdrawn` (with why) within a few seconds, the session is
over, approving or denying it is refused (409, and the CLI says why), and the row is
not on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pymysql
import pytest

from protocols.postgres import messages as m
from tests.integration.test_mysql_drivers import clean_env
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
from tests.support.rawpg import RawPg
from tests.support.waiting import wait_until

NODE_AGENTS = Path(__file__).resolve().parent / "node"
#: How long the gateway may take to notice a client has gone: promptly, not at a timeout
#: (the rules' hold_timeout is 30 s); a busy machine may take seconds, so not too tight.
NOTICE_S = 15.0


def wait_for_state(gateway: RunningGateway, request_id: str, state: str) -> dict[str, Any]:
    def request() -> dict[str, Any] | None:
        status, body = api(gateway, "GET", f"/api/v1/approvals/{request_id}", dba_token(gateway))
        assert status == 200, body
        return dict(body) if body["state"] == state else None

    return wait_until(request, NOTICE_S, f"request {request_id} {state}")


def wait_for_no_sessions(gateway: RunningGateway, protocol: str) -> None:
    gateway.wait_for_no_sessions(NOTICE_S, protocol)


def assert_withdrawn_for_good(
    gateway: RunningGateway, request_id: str, protocol: str, row_exists: Callable[[], bool]
) -> None:
    """What a DBA and the database owner see once the client has gone."""
    withdrawn = wait_for_state(gateway, request_id, "withdrawn")
    assert withdrawn["decision"]["reason"] == "the client disconnected"
    assert withdrawn["decision"]["by"] is None
    wait_for_no_sessions(gateway, protocol)
    assert wait_for_state(gateway, request_id, "withdrawn")["session_state"] == "gone"
    status, body = decide(gateway, request_id, "approve", {})
    assert status == 409, body
    assert "withdrawn" in body["error"]["message"]
    assert "the client disconnected" in body["error"]["message"]
    status, body = decide(gateway, request_id, "deny", {"reason": "too late"})
    assert status == 409, body
    shown = airlock("approve", request_id, "--server", gateway.api_url, token=dba_token(gateway))
    assert shown.returncode != 0
    assert "withdrawn" in shown.stderr
    assert "the client disconnected" in shown.stderr
    assert not row_exists()
    assert wait_for_state(gateway, request_id, "withdrawn")["decision"]["by"] is None


# --- PostgreSQL


@pytest.fixture
def pg_gated(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> RunningGateway:
    return gateway_factory(rules=[rule()])


def pg_row(accounts: Callable[[], dict[int, int]], account: int) -> Callable[[], bool]:
    return lambda: account in accounts()


@pytest.mark.timeout(60)
def test_psql_killed_during_a_hold_withdraws_its_request(
    pg_gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    psql = subprocess.Popen(
        [
            "psql",
            "-X",
            "-d",
            pg_gated.dsn(agent_token(pg_gated)),
            "-c",
            "insert into accounts values (91, 7)",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        [request] = pending(pg_gated)
        psql.send_signal(signal.SIGKILL)
        psql.wait(10)
    finally:
        psql.kill()
    assert_withdrawn_for_good(pg_gated, request["id"], "postgres", pg_row(accounts, 91))


@pytest.mark.timeout(60)
def test_asyncpg_giving_up_and_closing_its_connection_withdraws_its_request(
    pg_gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    gave_up = threading.Event()

    async def agent() -> str:
        conn = await asyncpg.connect(**pg_gated.asyncpg_params(agent_token(pg_gated)))
        write = asyncio.ensure_future(conn.execute("insert into accounts values (92, 7)"))
        # The agent's own deadline (the test says when it passes): it stops waiting and
        # drops the connection, as a pool does with one that timed out. No cancel is sent.
        await asyncio.to_thread(gave_up.wait, 30)
        assert not write.done()
        conn.terminate()
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await write
        return "gave up"

    run = Background(lambda: asyncio.run(agent()))
    [request] = pending(pg_gated)
    gave_up.set()
    assert run.result() == "gave up"
    assert_withdrawn_for_good(pg_gated, request["id"], "postgres", pg_row(accounts, 92))


@pytest.fixture(scope="module")
def node_agents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """node-postgres, installed from the committed lock file into a temporary directory."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is missing: scripts/setup installs it"
    where = tmp_path_factory.mktemp("node-agents")
    for name in ("package.json", "package-lock.json", "query_timeout.js"):
        shutil.copy(NODE_AGENTS / name, where / name)
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=where,
        check=True,
        timeout=300,
        capture_output=True,
    )
    return where


@pytest.mark.timeout(90)
def test_node_postgres_query_timeout_then_pool_end_withdraws_its_request(
    pg_gated: RunningGateway, accounts: Callable[[], dict[int, int]], node_agents: Path
) -> None:
    env = {**os.environ, "AIRLOCK_TOKEN": agent_token(pg_gated)}
    node = subprocess.Popen(
        [
            "node",
            "query_timeout.js",
            str(pg_gated.pg_port),
            str(pg_gated.cert_file),
            "insert into accounts values (93, 7)",
        ],
        cwd=node_agents,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        [request] = pending(pg_gated)
        out, err = node.communicate(timeout=30)  # gives up after 3 s, then closes its pool
    finally:
        node.kill()
    assert node.returncode == 0, err
    assert "gave up: Query read timeout" in out
    assert "pool closed" in out
    assert_withdrawn_for_good(pg_gated, request["id"], "postgres", pg_row(accounts, 93))


@pytest.mark.timeout(60)
def test_a_client_sending_too_much_behind_a_held_statement_is_ended_and_withdrawn(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    """The gateway keeps reading while a statement is held (that is how it sees the
    client leave), up to limits.max_message_bytes; a client that sends more is ended
    rather than left unread, so no close can go unnoticed behind a full buffer."""
    gateway = gateway_factory(
        rules=[rule()], allow_insecure_loopback=True, limits={"max_message_bytes": "64KiB"}
    )
    with RawPg(gateway.pg_port) as client:
        client.login(agent_token(gateway))
        client.send(m.Query.build("insert into accounts values (94, 7)").raw)
        notice = client.read()
        assert isinstance(notice, m.NoticeResponse), notice
        [request] = pending(gateway)
        filler = m.Query.build("select 1").raw * (200 * 1024 // len(m.Query.build("select 1").raw))
        with contextlib.suppress(OSError):
            client.send(filler)
        answer = client.read()
        assert isinstance(answer, m.ErrorResponse), answer
        assert answer.code == "54000"
        assert "while a statement waited for approval" in answer.message
        assert client.is_closed()
    withdrawn = wait_for_state(gateway, request["id"], "withdrawn")
    assert "sent more than" in withdrawn["decision"]["reason"]
    status, _ = decide(gateway, request["id"], "approve", {})
    assert status == 409
    assert 94 not in accounts()


@pytest.mark.timeout(60)
def test_a_session_ending_at_its_ttl_during_a_hold_withdraws_its_request(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    """Not only a client's close: any end of the session leaves nothing to run."""
    # Long enough for a busy machine to hold the write (and the test to see it) first.
    gateway = gateway_factory(rules=[rule(session_ttl="6s")])
    with connect(gateway, agent_token(gateway)) as agent:
        write = Background(lambda: agent.execute("insert into accounts values (90, 7)"))
        [request] = pending(gateway)
        assert isinstance(write.result(), psycopg.errors.AdminShutdown)
    withdrawn = wait_for_state(gateway, request["id"], "withdrawn")
    assert withdrawn["decision"]["reason"] == "the session ended: session_ttl reached"
    status, body = decide(gateway, request["id"], "approve", {})
    assert status == 409, body
    assert "session_ttl reached" in body["error"]["message"]
    assert 90 not in accounts()


# --- MySQL


@pytest.fixture
def mysql_gated(mysql_gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return mysql_gateway_factory(rules=[rule(targets=["shop"])])


@pytest.fixture
def mysql_row(local_mariadb: MariaDb, mysql_database: str) -> Callable[[int], bool]:
    def exists(account: int) -> bool:
        with local_mariadb.root(mysql_database) as root, root.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM accounts WHERE id = %s", (account,))
            (count,) = cursor.fetchone()
            return bool(count)

    return exists


@pytest.mark.timeout(60)
def test_mariadb_cli_killed_during_a_hold_withdraws_its_request(
    mysql_gated: RunningGateway, mysql_row: Callable[[int], bool]
) -> None:
    token = agent_token(mysql_gated)
    cli = subprocess.Popen(
        [
            "mysql",
            "--no-defaults",
            "-h127.0.0.1",
            f"-P{mysql_gated.mysql_port}",
            "-uagent",
            f"-p{token}",
            "--ssl",
            f"--ssl-ca={mysql_gated.cert_file}",
            "--enable-cleartext-plugin",
            "shop",
            "-e",
            "INSERT INTO accounts VALUES (95, 7)",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )
    try:
        [request] = pending(mysql_gated)
        cli.send_signal(signal.SIGKILL)
        cli.wait(10)
    finally:
        cli.kill()
    assert_withdrawn_for_good(mysql_gated, request["id"], "mysql", lambda: mysql_row(95))


@pytest.mark.timeout(60)
def test_pymysql_read_timeout_closing_its_socket_withdraws_its_request(
    mysql_gated: RunningGateway, mysql_row: Callable[[int], bool]
) -> None:
    conn = mysql_gated.pymysql(agent_token(mysql_gated), autocommit=True, read_timeout=3)

    def write() -> object:
        with conn.cursor() as cursor:
            return cursor.execute("INSERT INTO accounts VALUES (96, 7)")

    run = Background(write)
    [request] = pending(mysql_gated)
    error = run.result()  # PyMySQL gives up after 3 s and closes its socket
    assert isinstance(error, pymysql.err.OperationalError), error
    assert error.args[0] == 2013
    assert_withdrawn_for_good(mysql_gated, request["id"], "mysql", lambda: mysql_row(96))
