"""MySQL writes wait for a human too: real agents (PyMySQL, mysql-connector), the real
MariaDB, approvers deciding through the API and the `airlock` CLI, KILL QUERY, and
the sessions' transcripts replayed and verified."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from tests.support.approvals import (
    REQUEST_ID,
    Background,
    agent_token,
    airlock,
    api,
    dba_token,
    decide,
    pending,
    rule,
)
from tests.support.gateway import RunningGateway
from tests.support.mariadb import MariaDb

AIRLOCK = [sys.executable, "-m", "proxy.cli"]


def shop_rule(**overrides: Any) -> dict[str, Any]:
    return rule(targets=["shop"], **overrides)


@pytest.fixture
def balances(local_mariadb: MariaDb, mysql_database: str) -> Callable[[], dict[int, Any]]:
    """The accounts table as the server has it, over a direct connection."""

    def read() -> dict[int, Any]:
        with local_mariadb.root(mysql_database) as root, root.cursor() as cursor:
            cursor.execute("SELECT id, balance FROM accounts")
            return {int(i): b for i, b in cursor.fetchall()}

    return read


@pytest.fixture
def gated(mysql_gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return mysql_gateway_factory(rules=[shop_rule()])


def agent(gateway: RunningGateway, token: str | None = None) -> pymysql.Connection[Any]:
    return gateway.pymysql(token or agent_token(gateway), autocommit=True, read_timeout=60)


@pytest.fixture
def connection(gated: RunningGateway) -> Iterator[pymysql.Connection[Any]]:
    conn = agent(gated)
    yield conn
    conn.close()


def connection_id(conn: pymysql.Connection[Any]) -> int:
    """The id the gateway gave this connection in its handshake (what KILL takes)."""
    return int(conn.thread_id())  # type: ignore[no-untyped-call]


def run(conn: pymysql.Connection[Any], sql: str, args: Any = None) -> Any:
    with conn.cursor() as cursor:
        affected = cursor.execute(sql, args)
        rows = cursor.fetchall()
        return rows if cursor.description else affected


@pytest.mark.timeout(90)
def test_a_read_passes_and_a_write_waits_until_approved_with_the_cli(
    gated: RunningGateway,
    connection: pymysql.Connection[Any],
    balances: Callable[[], dict[int, Any]],
) -> None:
    assert run(connection, "SELECT balance FROM accounts WHERE id = 1") == ((100,),)
    write = Background(lambda: run(connection, "UPDATE accounts SET balance = 50 WHERE id = 1"))
    [request] = pending(gated)
    time.sleep(0.3)  # not a wait for an event: a window in which nothing may happen
    assert write.thread.is_alive()  # MySQL has no notices: the client simply waits...
    assert balances()[1] == 100  # ...and the server has not seen the write
    assert request["sql"] == "UPDATE accounts SET balance = 50 WHERE id = 1"
    assert request["class"] == "write"
    assert request["protocol"] == "mysql"
    assert request["requester"]["subject"] == "agent-1"
    listed = airlock("approvals", "list", "--server", gated.api_url, token=dba_token(gated))
    assert request["id"] in listed.stdout
    done = airlock("approve", request["id"], "--server", gated.api_url, token=dba_token(gated))
    assert done.returncode == 0, done.stderr
    assert write.result() == 1
    assert balances()[1] == 50
    # The grant was for that statement once: the same write waits again.
    again = Background(lambda: run(connection, "UPDATE accounts SET balance = 50 WHERE id = 1"))
    [second] = pending(gated)
    assert second["id"] != request["id"]
    decide(gated, second["id"], "deny", {"reason": "once is enough"})
    error = again.result()
    assert isinstance(error, pymysql.err.OperationalError | pymysql.err.ProgrammingError)


@pytest.mark.timeout(60)
def test_deny_gives_1142_naming_approver_and_reason_and_the_session_stays_usable(
    gated: RunningGateway,
    connection: pymysql.Connection[Any],
    balances: Callable[[], dict[int, Any]],
) -> None:
    write = Background(lambda: run(connection, "DELETE FROM accounts WHERE id = 2"))
    [request] = pending(gated)
    status, body = decide(gated, request["id"], "deny", {"reason": "not during business hours"})
    assert status == 200
    assert body["state"] == "denied"
    error = write.result()
    assert isinstance(error, pymysql.err.MySQLError)
    assert error.args[0] == 1142
    assert "dba-1" in error.args[1]
    assert "not during business hours" in error.args[1]
    assert 2 in balances()
    assert run(connection, "SELECT COUNT(*) FROM accounts") == ((60,),)


@pytest.mark.timeout(60)
def test_a_hold_that_times_out_gives_1317_and_the_request_stays_pending(
    mysql_gateway_factory: Callable[..., RunningGateway], balances: Callable[[], dict[int, Any]]
) -> None:
    gateway = mysql_gateway_factory(rules=[shop_rule(hold_timeout="1s")])
    with agent(gateway) as conn:
        started = time.monotonic()
        with pytest.raises(pymysql.err.MySQLError) as raised:
            run(conn, "DELETE FROM accounts WHERE id = 3")
        assert raised.value.args[0] == 1317
        assert time.monotonic() - started < 10
        request_id = REQUEST_ID.search(raised.value.args[1])
        assert request_id is not None
        [request] = pending(gateway)
        assert request["id"] == request_id.group(0)
        assert request["state"] == "pending"
        assert run(conn, "SELECT COUNT(*) FROM accounts") == ((60,),)
    assert 3 in balances()


@pytest.mark.timeout(60)
def test_reject_mode_refuses_at_once_and_runs_the_same_statement_once_approved(
    mysql_gateway_factory: Callable[..., RunningGateway], balances: Callable[[], dict[int, Any]]
) -> None:
    gateway = mysql_gateway_factory(rules=[shop_rule(hold="reject")])
    statement = "UPDATE accounts SET balance = 1 WHERE id = 4"
    with agent(gateway) as conn:
        with pytest.raises(pymysql.err.MySQLError) as raised:
            run(conn, statement)
        assert raised.value.args[0] == 1142
        found = REQUEST_ID.search(raised.value.args[1])
        assert found is not None
        assert balances()[4] == 100
        status, _ = decide(gateway, found.group(0), "approve", {})
        assert status == 200
        # Other text is not covered by the grant; the same text is, once.
        with pytest.raises(pymysql.err.MySQLError):
            run(conn, "UPDATE accounts SET balance = 2 WHERE id = 4")
        assert run(conn, statement) == 1
        assert balances()[4] == 1
        with pytest.raises(pymysql.err.MySQLError):
            run(conn, statement)


@pytest.mark.timeout(60)
def test_a_session_grant_lets_later_writes_of_the_session_run(
    gated: RunningGateway,
    connection: pymysql.Connection[Any],
    balances: Callable[[], dict[int, Any]],
) -> None:
    write = Background(lambda: run(connection, "UPDATE accounts SET balance = 9 WHERE id = 5"))
    [request] = pending(gated)
    decide(gated, request["id"], "approve", {"scope": "session", "ttl": "5m"})
    assert write.result() == 1
    assert run(connection, "UPDATE accounts SET balance = 9 WHERE id = 6") == 1
    assert run(connection, "DELETE FROM accounts WHERE id = 7") == 1
    assert (balances()[5], balances()[6], 7 in balances()) == (9, 9, False)
    status, body = api(gated, "GET", "/api/v1/approvals?state=pending", dba_token(gated))
    assert status == 200
    assert body["approvals"] == []
    # Another session of the same agent has no such grant.
    with agent(gated) as other:
        held = Background(lambda: run(other, "DELETE FROM accounts WHERE id = 8"))
        [request] = pending(gated)
        decide(gated, request["id"], "deny", {"reason": "no"})
        assert isinstance(held.result(), pymysql.err.MySQLError)


@pytest.mark.timeout(60)
def test_a_prepared_statement_is_held_at_execute_with_its_parameters_shown(
    gated: RunningGateway, balances: Callable[[], dict[int, Any]]
) -> None:
    conn: Any = gated.mysql_connector(agent_token(gated), autocommit=True)
    try:
        cursor = conn.cursor(prepared=True)
        cursor.execute("SELECT balance FROM accounts WHERE id = %s", (10,))
        assert cursor.fetchall() == [(100,)]
        write = Background(
            lambda: cursor.execute("UPDATE accounts SET balance = %s WHERE id = %s", (4321, 10))
        )
        [request] = pending(gated)
        assert request["sql"] == "UPDATE accounts SET balance = ? WHERE id = ?"
        assert [p["value"] for p in request["parameters"]] == ["4321", "10"]
        decide(gated, request["id"], "approve", {})
        assert write.result() is None
        assert balances()[10] == 4321
        # Other values are another statement for the approver.
        again = Background(
            lambda: cursor.execute("UPDATE accounts SET balance = %s WHERE id = %s", (1, 10))
        )
        [second] = pending(gated)
        assert [p["value"] for p in second["parameters"]] == ["1", "10"]
        decide(gated, second["id"], "deny", {"reason": "no"})
        error = again.result()
        assert isinstance(error, mysql.connector.Error)
        assert error.errno == 1142
        cursor.close()
    finally:
        conn.close()
    assert balances()[10] == 4321


@pytest.mark.timeout(60)
def test_kill_query_from_another_connection_withdraws_the_held_statement(
    gated: RunningGateway,
    connection: pymysql.Connection[Any],
    balances: Callable[[], dict[int, Any]],
) -> None:
    write = Background(lambda: run(connection, "DELETE FROM accounts WHERE id = 11"))
    [request] = pending(gated)
    with agent(gated) as killer:
        assert run(killer, f"KILL QUERY {connection_id(connection)}") == 0
    error = write.result()
    assert isinstance(error, pymysql.err.MySQLError)
    assert error.args[0] == 1317
    status, body = api(gated, "GET", f"/api/v1/approvals/{request['id']}", dba_token(gated))
    assert status == 200
    assert body["state"] == "withdrawn"
    assert 11 in balances()
    assert run(connection, "SELECT balance FROM accounts WHERE id = 11") == ((100,),)
    # Another identity cannot kill this agent's statements, nor learn that they exist.
    other = agent(gated, gated.issuer.mint(sub="agent-2", groups=("data-agents",)))
    with other, pytest.raises(pymysql.err.MySQLError) as raised:
        run(other, f"KILL QUERY {connection_id(connection)}")
    assert raised.value.args[0] == 1094


def only_session(data_dir: Path) -> str:
    listed = subprocess.run(
        [*AIRLOCK, "sessions", "list", "--data-dir", str(data_dir), "--identity", "agent-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    [line] = [row for row in listed.stdout.splitlines() if "agent-1" in row]
    return line.split()[0]


@pytest.mark.timeout(120)
def test_a_mysql_session_replays_with_every_statement_and_approval_and_verifies(
    gated: RunningGateway, balances: Callable[[], dict[int, Any]]
) -> None:
    with agent(gated) as conn:
        run(conn, "SELECT balance FROM accounts WHERE id = %s", (12,))
        write = Background(lambda: run(conn, "UPDATE accounts SET balance = 7 WHERE id = 12"))
        [approved] = pending(gated)
        decide(gated, approved["id"], "approve", {"comment": "ticket 12"})
        write.result()
        refused = Background(lambda: run(conn, "DELETE FROM accounts WHERE id = 13"))
        [denied] = pending(gated)
        decide(gated, denied["id"], "deny", {"reason": "keep it"})
        assert isinstance(refused.result(), pymysql.err.MySQLError)
        with pytest.raises(pymysql.err.MySQLError):
            run(conn, "SELECT * FROM no_such_table")
    data_dir = gated.settings.data_dir
    gated.wait_for_sealed_transcripts()
    session = only_session(data_dir)
    replayed = subprocess.run(
        [*AIRLOCK, "replay", session, "--data-dir", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replayed.returncode == 0, replayed.stderr
    events = [json.loads(line) for line in replayed.stdout.splitlines() if line.strip()]
    assert events[0]["kind"] == "session.start"
    assert events[0]["data"]["protocol"] == "mysql"
    assert events[0]["data"]["identity"]["sub"] == "agent-1"
    statements = [e["data"] for e in events if e["kind"] == "statement"]
    sqls = [s["sql"] for s in statements]
    assert "SELECT balance FROM accounts WHERE id = 12" in sqls
    assert "UPDATE accounts SET balance = 7 WHERE id = 12" in sqls
    assert "DELETE FROM accounts WHERE id = 13" in sqls
    results = [e["data"] for e in events if e["kind"] == "result"]
    assert {"tag": "SELECT", "rows": 1} in results
    assert {"tag": "OK, 1 row affected"} in results
    assert any(r.get("error", {}).get("errno") == 1146 for r in results)
    decided = [e["data"] for e in events if e["kind"] == "approval.decided"]
    assert [(d["id"], d["state"], d["by"]) for d in decided] == [
        (approved["id"], "approved", "dba-1"),
        (denied["id"], "denied", "dba-1"),
    ]
    verified = subprocess.run(
        [*AIRLOCK, "verify", session, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "sealed" in verified.stdout
    human = subprocess.run(
        [*AIRLOCK, "replay", session, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "ticket 12" in human.stdout
    assert "keep it" in human.stdout
    assert "error 1146" in human.stdout


@pytest.mark.timeout(120)
def test_prepared_statements_record_their_parameters_for_replay(
    mysql_gateway_factory: Callable[..., RunningGateway], balances: Callable[[], dict[int, Any]]
) -> None:
    gateway = mysql_gateway_factory(rules=[shop_rule(write="allow")])
    conn: Any = gateway.mysql_connector(agent_token(gateway), autocommit=True)
    try:
        cursor = conn.cursor(prepared=True)
        statement = "UPDATE accounts SET balance = %s WHERE id = %s"
        cursor.execute(statement, (4242, 14))
        cursor.execute(statement, (None, 15))  # same statement, other values and types
        cursor.close()
    finally:
        conn.close()
    assert (balances()[14], balances()[15]) == (4242, None)
    gateway.wait_for_sealed_transcripts()
    data_dir = gateway.settings.data_dir
    session = only_session(data_dir)
    replayed = subprocess.run(
        [*AIRLOCK, "replay", session, "--data-dir", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert replayed.returncode == 0, replayed.stderr
    events = [json.loads(line) for line in replayed.stdout.splitlines() if line.strip()]
    executed = [
        [p["value"] for p in e["params"]]
        for e in events
        if e["kind"] == "statement" and e.get("params")
    ]
    assert executed == [["4242", "14"], [None, "15"]]
    verified = subprocess.run(
        [*AIRLOCK, "verify", session, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout
