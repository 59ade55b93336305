"""MySQL sessions end on time, and a refusal leaves an open transaction as it was."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

from tests.support.approvals import rule
from tests.support.gateway import RunningGateway
from tests.support.mariadb import MariaDb
from tests.support.waiting import wait_until


def expect_session_ended(conn: Any, within_s: float) -> pymysql.err.MySQLError:
    """The next command fails because the gateway ended the session; returns the error.
    (MySQL has no unsolicited messages: the client learns of the end by asking.)"""

    def ended() -> pymysql.err.MySQLError | None:
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
        except pymysql.err.MySQLError as error:
            return error
        return None

    return wait_until(ended, within_s, "the gateway to end the session", every_s=0.2)


def test_session_ttl_ends_the_session_with_a_reason(
    mysql_gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = mysql_gateway_factory(rules=[rule(targets=["shop"], session_ttl="1s")])
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    started = time.monotonic()  # before the login, which starts the session's second
    conn: Any = gateway.pymysql(token)
    error = expect_session_ended(conn, within_s=10)
    assert time.monotonic() - started > 0.9
    # The gateway's ERR (read as the answer to the next command) says why.
    assert error.args[0] == 1927, error.args  # ER_CONNECTION_KILLED
    assert "session_ttl" in error.args[1]
    assert token not in str(error.args)


#: SLEEP() is not on the read-safe allowlist: these let it run.
ALL_ALLOWED = {"write": "allow", "ddl": "allow", "admin": "allow", "unknown": "allow"}


def upstream_sleeps(local_mariadb: MariaDb) -> int:
    """How many of the service account's upstream threads are inside SLEEP()."""
    with local_mariadb.root() as direct, direct.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE user = %s AND info LIKE %s",
            (local_mariadb.service_user, "%SLEEP(%"),
        )
        row = cursor.fetchone()
        assert row is not None
        return int(row[0])


def test_session_ttl_during_a_query_answers_it_and_stops_it_upstream(
    mysql_gateway_factory: Callable[..., RunningGateway], local_mariadb: MariaDb
) -> None:
    gateway = mysql_gateway_factory(rules=[rule(targets=["shop"], session_ttl="1s", **ALL_ALLOWED)])
    conn: Any = gateway.pymysql(gateway.issuer.mint(sub="agent-1", groups=("data-agents",)))
    started = time.monotonic()
    with conn.cursor() as cursor, pytest.raises(pymysql.err.MySQLError) as ended:
        cursor.execute("SELECT SLEEP(20)")
    # The server had not begun to answer: the gateway's ERR is the answer, with the reason.
    assert ended.value.args[0] == 1927, ended.value.args
    assert "session_ttl" in ended.value.args[1]
    assert time.monotonic() - started < 10
    # And the statement does not run on unobserved.
    wait_until(lambda: not upstream_sleeps(local_mariadb), 10, "the SLEEP to stop upstream")


def test_an_expiring_token_ends_the_session(
    mysql_gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = mysql_gateway_factory()
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",), ttl_s=2)
    conn: Any = gateway.pymysql(token)
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
    error = expect_session_ended(conn, within_s=10)
    assert error.args[0] == 1927, error.args
    assert "token expired" in error.args[1]


@pytest.mark.timeout(60)
def test_a_refused_write_inside_a_transaction_leaves_the_transaction_open(
    mysql_gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = mysql_gateway_factory(rules=[rule(targets=["shop"], write="approve", hold="reject")])
    conn: Any = gateway.pymysql(gateway.issuer.mint(sub="agent-1", groups=("data-agents",)))
    with conn, conn.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("SELECT @@in_transaction")
        assert cursor.fetchone() == (1,)
        with pytest.raises(pymysql.err.MySQLError) as refused:
            cursor.execute("UPDATE accounts SET balance = 0 WHERE id = 1")
        assert refused.value.args[0] == 1142
        # MySQL does not abort a transaction on an error, and the gateway sent nothing:
        # the transaction is still open and usable.
        cursor.execute("SELECT @@in_transaction")
        assert cursor.fetchone() == (1,)
        cursor.execute("SELECT balance FROM accounts WHERE id = 1")
        assert cursor.fetchone() == (100,)
        cursor.execute("ROLLBACK")


def test_metrics_count_mysql_sessions_statements_and_requests(
    mysql_gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = mysql_gateway_factory(rules=[rule(targets=["shop"], hold="reject")])
    conn: Any = gateway.pymysql(gateway.issuer.mint(sub="agent-1", groups=("data-agents",)))
    with conn, conn.cursor() as cursor:
        for account in (1, 2, 3):
            cursor.execute("SELECT balance FROM accounts WHERE id = %s", (account,))
        with pytest.raises(pymysql.err.MySQLError):
            cursor.execute("UPDATE accounts SET balance = 0 WHERE id = 1")
        samples = gateway.metrics()
        statements = gateway.metric_total("airlock_statements_total")
    assert samples["airlock_sessions"] == "1"
    assert statements >= 4
    assert samples['airlock_approval_requests{state="pending"}'] == "1"
    # three selects differing only in a literal: one parse, then fingerprint hits
    assert float(samples['airlock_classifier_cache_total{dialect="mysql",outcome="hit"}']) >= 2
    assert samples['airlock_classifier_cache_total{dialect="postgres",outcome="hit"}'] == "0"
