"""Real MySQL drivers through the gateway to a real MariaDB.

The mariadb CLI, PyMySQL, aiomysql, asyncmy and mysql-connector-python (pure)
connect to a running gateway exactly as agents would (the JWT as password, over
TLS or, where the config allows it, plain loopback) and check what a user would
check: values and types, writes that reached the table (read back over a direct
root connection), server-side prepared statements, multi-statement strings,
packets split over 16 MiB, KILL, and the refusals: a write hidden in a
multi-statement string, a huge packet, an executable comment, LOCAL INFILE,
COM_CHANGE_USER, statements that would desynchronise the gateway's lexer, and
logins that must not get in.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import decimal
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeAlias

import aiomysql  # type: ignore[import-untyped]
import asyncmy
import mysql.connector
import mysql.connector.errors
import pymysql
import pymysql.cursors
import pytest
from pymysql.constants import CLIENT

from tests.support.gateway import RunningGateway
from tests.support.mariadb import MariaDb, aiomysql_close
from tests.support.waiting import PATIENCE_S, wait_until

PyMySqlConnection: TypeAlias = "pymysql.connections.Connection[pymysql.cursors.Cursor]"

#: MySQL error numbers the tests expect.
ER_ACCESS_DENIED = 1045
ER_BAD_DB = 1049
ER_NO_SUCH_THREAD = 1094
ER_TABLEACCESS_DENIED = 1142
ER_QUERY_INTERRUPTED = 1317
#: Client-side errors: the connection broke (2006 gone away, 2013 lost during query).
CLIENT_CONNECTION_ERRORS = {2006, 2013, 2055}

#: Over 16 MiB: the wire splits it into 0xFFFFFF chunks.
SEVENTEEN_MB = 17 * 1024 * 1024
#: A gateway cap that lets a 17 MB packet through (the default is 16 MiB).
BIG_LIMITS = {"max_message_bytes": 32 * 1024 * 1024}

#: How long a KILL QUERY may take to end a query before a test calls it lost: wide for a
#: busy machine, and still well short of the SLEEP(30) the tests kill.
KILL_DEADLINE_S = 10.0

#: A rule for `shop` that lets only reads through.
READS_ONLY = {
    "groups": ["data-agents"],
    "targets": ["shop"],
    "read": "allow",
    "write": "deny",
    "ddl": "deny",
    "admin": "deny",
    "unknown": "deny",
}
#: A rule for `shop` under which everything but reads needs approval, refused at once.
APPROVE_REJECT = {
    "groups": ["data-agents"],
    "targets": ["shop"],
    "read": "allow",
    "write": "approve",
    "ddl": "approve",
    "admin": "approve",
    "unknown": "approve",
    "approvers": ["oncall-dba"],
    "hold": "reject",
}

#: One row with each kind of value a driver must decode.
TYPES_SQL = (
    "SELECT 42 AS i, -9007199254740993 AS big, CAST('12345.67' AS DECIMAL(12,2)) AS d, "
    "'héllo wörld ✓ 日本 🐬' AS s, NULL AS n, DATE '2024-02-29' AS dt, "
    "CAST('2024-02-29 13:14:15.123456' AS DATETIME(6)) AS ts, X'00FF5C27' AS b, 1.5e0 AS f"
)
UNICODE = "héllo wörld ✓ 日本 🐬"
TYPES_ROW = (
    42,
    -9007199254740993,
    decimal.Decimal("12345.67"),
    UNICODE,
    None,
    datetime.date(2024, 2, 29),
    datetime.datetime(2024, 2, 29, 13, 14, 15, 123456),
    b"\x00\xff\\'",
    1.5,
)


# --------------------------------------------------------------------------
# Helpers


#: tests/support/mariadb.py leaves `listen.postgres` out, which keeps the default
#: 127.0.0.1:6432: two gateways at once (another pytest run, say) would collide there.
LISTEN = {"postgres": None, "mysql": "127.0.0.1:0", "api": "127.0.0.1:0"}


@pytest.fixture
def mysql_gateway_factory(
    mysql_gateway_factory: Callable[..., RunningGateway],
) -> Callable[..., RunningGateway]:
    def make(**overrides: Any) -> RunningGateway:
        overrides.setdefault("listen", LISTEN)
        return mysql_gateway_factory(**overrides)

    return make


@pytest.fixture
def token(mysql_gateway: RunningGateway) -> str:
    return mysql_gateway.issuer.mint(sub="agent-1", groups=("data-agents",))


@pytest.fixture
def root(local_mariadb: MariaDb, mysql_database: str) -> Iterator[PyMySqlConnection]:
    """A direct root connection to the throwaway database (no gateway)."""
    connection = local_mariadb.root(mysql_database)
    try:
        yield connection
    finally:
        connection.close()


def root_rows(root: PyMySqlConnection, sql: str) -> list[tuple[Any, ...]]:
    with root.cursor() as cursor:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]


def accounts_state(root: PyMySqlConnection) -> tuple[int, int]:
    """(row count, total balance) of the fixture's accounts table: (60, 6000) untouched."""
    ((count, total),) = root_rows(root, "SELECT COUNT(*), COALESCE(SUM(balance), 0) FROM accounts")
    return int(count), int(total)


UNTOUCHED = (60, 6000)


def connect_pymysql(
    gateway: RunningGateway,
    token: str,
    *,
    tls: bool = True,
    database: str = "shop",
    **kwargs: Any,
) -> PyMySqlConnection:
    params: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": gateway.mysql_port,
        "user": "agent",
        "password": token,
        "database": database,
        "connect_timeout": 10,
        "read_timeout": 40,
        "write_timeout": 40,
    }
    if tls:
        params["ssl"] = gateway.ssl_context()  # verify-full against the gateway's certificate
    else:
        params["ssl_disabled"] = True  # PyMySQL would otherwise try TLS ("preferred")
    params.update(kwargs)
    return pymysql.connect(**params)


def refusal(excinfo: pytest.ExceptionInfo[BaseException]) -> tuple[int, str]:
    """(errno, message) of a driver's error; errno 0 when the driver gave none."""
    error: Any = excinfo.value
    if isinstance(error, mysql.connector.errors.Error):
        return int(error.errno or 0), str(error.msg)
    args = error.args
    if len(args) >= 2 and isinstance(args[0], int):
        return args[0], str(args[1])
    return 0, str(error)


def clean_env() -> dict[str, str]:
    """The environment without MYSQL_* / LIBMYSQL_* variables, in a UTF-8 locale."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MYSQL", "LIBMYSQL", "MARIADB"))
    }
    env["LC_ALL"] = "C.UTF-8"
    return env


OBSOLETE_CLEARTEXT_OPTION = "WARNING: option '--enable-cleartext-plugin' is obsolete.\n"


def run_cli(
    gateway: RunningGateway,
    token: str,
    sql: str,
    *,
    tls: bool = True,
    cleartext: bool = True,
    database: str = "shop",
) -> subprocess.CompletedProcess[str]:
    """The mariadb CLI in batch mode (-N -B), against the gateway."""
    args = [
        "mysql",
        "--no-defaults",
        "-h127.0.0.1",
        f"-P{gateway.mysql_port}",
        "-uagent",
        f"-p{token}",
        "--connect-timeout=10",
        "--default-character-set=utf8mb4",
        "-N",
        "-B",
    ]
    if tls:
        args += ["--ssl", f"--ssl-ca={gateway.cert_file}", "--ssl-verify-server-cert"]
    else:
        args.append("--skip-ssl")
    if cleartext:
        args.append("--enable-cleartext-plugin")
    args += [database, "-e", sql]
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        env=clean_env(),
        check=False,
    )
    # The MariaDB client always has the cleartext plugin, and says so on stdout.
    result.stdout = result.stdout.replace(OBSOLETE_CLEARTEXT_OPTION, "")
    return result


def cli_error(result: subprocess.CompletedProcess[str]) -> tuple[int, str]:
    match = re.search(r"ERROR (\d+) \([0-9A-Z]{5}\)(?: at line \d+)?: (.*)", result.stderr)
    assert match is not None, f"no MySQL error in: {result.stderr!r}"
    return int(match.group(1)), match.group(2)


def upstream_sleeps(local_mariadb: MariaDb) -> list[int]:
    """Ids of the service account's upstream threads that are inside SLEEP()."""
    with local_mariadb.root() as direct, direct.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM information_schema.processlist WHERE user = %s AND info LIKE %s",
            (local_mariadb.service_user, "%SLEEP(%"),
        )
        return [int(row[0]) for row in cursor.fetchall()]


def wait_for_sleep(local_mariadb: MariaDb) -> None:
    wait_until(lambda: upstream_sleeps(local_mariadb), PATIENCE_S, "the query's SLEEP upstream")


def assert_usable(connection: PyMySqlConnection) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'still usable', COUNT(*) FROM accounts")
        assert cursor.fetchone() == ("still usable", 60)


# --------------------------------------------------------------------------
# mariadb CLI


def test_cli_over_tls_reads_types_and_multi_statement(
    mysql_gateway: RunningGateway, token: str
) -> None:
    # The client splits the string at `;` itself and sends one COM_QUERY per statement.
    result = run_cli(
        mysql_gateway,
        token,
        "SELECT 42, CAST('12345.67' AS DECIMAL(12,2)), 'héllo wörld ✓ 日本 🐬', NULL, "
        "DATE '2024-02-29', X'414243'; SELECT COUNT(*), SUM(balance) FROM accounts; select 1; "
        "select 2",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"42\t12345.67\t{UNICODE}\tNULL\t2024-02-29\tABC",
        "60\t6000",
        "1",
        "2",
    ]


def test_cli_status_shows_tls_in_use(mysql_gateway: RunningGateway, token: str) -> None:
    result = run_cli(mysql_gateway, token, "status")
    assert result.returncode == 0, result.stderr
    ssl_line = next(line for line in result.stdout.splitlines() if line.startswith("SSL:"))
    assert "Cipher in use is" in ssl_line


def test_cli_over_tls_without_cleartext_plugin_uses_caching_sha2(
    mysql_gateway: RunningGateway, token: str
) -> None:
    # Over TLS the gateway asks for caching_sha2_password full authentication: the
    # client sends the password without having to opt in to the cleartext plugin.
    result = run_cli(mysql_gateway, token, "SELECT 40 + 2", cleartext=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"


def test_cli_writes_are_visible_directly(
    mysql_gateway: RunningGateway, token: str, root: PyMySqlConnection
) -> None:
    result = run_cli(
        mysql_gateway,
        token,
        "UPDATE accounts SET balance = balance - 30 WHERE id = 1; "
        "INSERT INTO accounts VALUES (61, 7); DELETE FROM accounts WHERE id = 60",
    )
    assert result.returncode == 0, result.stderr
    assert root_rows(root, "SELECT id, balance FROM accounts WHERE id IN (1, 60, 61)") == [
        (1, 70),
        (61, 7),
    ]


def test_cli_plain_loopback_with_allow_insecure_loopback(
    mysql_gateway_factory: Callable[..., RunningGateway], root: PyMySqlConnection
) -> None:
    gateway = mysql_gateway_factory(allow_insecure_loopback=True)
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    result = run_cli(
        gateway,
        token,
        "SELECT 'plain', 'ü'; INSERT INTO accounts VALUES (99, 1); SELECT COUNT(*) FROM accounts",
        tls=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["plain\tü", "61"]
    assert root_rows(root, "SELECT balance FROM accounts WHERE id = 99") == [(1,)]


def test_cli_plain_loopback_is_refused_without_allow_insecure_loopback(
    mysql_gateway: RunningGateway, token: str
) -> None:
    result = run_cli(mysql_gateway, token, "SELECT 1", tls=False)
    assert result.returncode == 1
    errno, message = cli_error(result)
    assert errno == ER_ACCESS_DENIED
    assert "TLS" in message
    assert token not in result.stderr


@pytest.mark.timeout(60)
def test_cli_ctrl_c_cancels_the_query(
    mysql_gateway: RunningGateway, token: str, local_mariadb: MariaDb
) -> None:
    # On Ctrl-C the client opens a second connection (same user and password, no
    # database) and sends KILL QUERY with the connection id of its handshake.
    args = [
        "mysql",
        "--no-defaults",
        "-h127.0.0.1",
        f"-P{mysql_gateway.mysql_port}",
        "-uagent",
        f"-p{token}",
        "--ssl",
        f"--ssl-ca={mysql_gateway.cert_file}",
        "--ssl-verify-server-cert",
        "-N",
        "-B",
        "shop",
        "-e",
        "SELECT SLEEP(30); SELECT 'after the cancel'",
    ]
    cli = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=clean_env(),
    )
    try:
        wait_for_sleep(local_mariadb)
        started = time.monotonic()
        cli.send_signal(signal.SIGINT)
        stdout, stderr = cli.communicate(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert "cannot connect to server to kill query" not in stdout + stderr
    assert "Ctrl-C -- query killed." in stdout
    # The query is interrupted (SLEEP returns 1, or error 1317), not the client.
    assert stdout.splitlines()[:1] == ["1"] or "ERROR 1317" in stderr, (stdout, stderr)
    assert elapsed < KILL_DEADLINE_S
    wait_until(
        lambda: not upstream_sleeps(local_mariadb), KILL_DEADLINE_S, "the SLEEP to stop upstream"
    )


def test_cli_write_denied_by_rule(
    mysql_gateway_factory: Callable[..., RunningGateway], root: PyMySqlConnection
) -> None:
    gateway = mysql_gateway_factory(rules=[READS_ONLY])
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    result = run_cli(gateway, token, "DELETE FROM accounts")
    assert result.returncode == 1
    errno, message = cli_error(result)
    assert errno == ER_TABLEACCESS_DENIED
    assert "write statements are not allowed" in message
    assert accounts_state(root) == UNTOUCHED


# --------------------------------------------------------------------------
# PyMySQL


def test_pymysql_reads_values_and_types(mysql_gateway: RunningGateway, token: str) -> None:
    with connect_pymysql(mysql_gateway, token) as agent, agent.cursor() as cursor:
        cursor.execute(TYPES_SQL)
        assert cursor.fetchall() == (TYPES_ROW,)
        cursor.execute("SELECT id, balance FROM accounts WHERE id IN (%s, %s) ORDER BY id", (1, 60))
        assert cursor.fetchall() == ((1, 100), (60, 100))
        cursor.execute("SELECT COUNT(*), SUM(balance) FROM accounts")
        assert cursor.fetchone() == (60, decimal.Decimal(6000))
        # Client-side interpolation of awkward values reaches the server as sent.
        awkward = 'O\'Reilly \\ "q" ; -- ' + UNICODE
        cursor.execute("SELECT %s, %s, %s", (awkward, b"\x00\xff'", None))
        assert cursor.fetchone() == (awkward, b"\x00\xff'", None)


def test_pymysql_writes_commit_and_rollback(
    mysql_gateway: RunningGateway, token: str, root: PyMySqlConnection
) -> None:
    with connect_pymysql(mysql_gateway, token) as agent:
        # PyMySQL turns autocommit off on connect: writes are in a transaction.
        with agent.cursor() as cursor:
            cursor.execute("UPDATE accounts SET balance = %s WHERE id = %s", (5, 2))
            cursor.executemany(
                "INSERT INTO accounts VALUES (%s, %s)", [(100 + n, n) for n in range(10)]
            )
            assert cursor.rowcount == 10
        assert root_rows(root, "SELECT COUNT(*) FROM accounts") == [(60,)]  # not committed
        agent.commit()
        with agent.cursor() as cursor:
            cursor.execute("DELETE FROM accounts WHERE id = 3")
        agent.rollback()
    assert root_rows(root, "SELECT balance FROM accounts WHERE id IN (2, 3) ORDER BY id") == [
        (5,),
        (100,),
    ]
    assert root_rows(root, "SELECT COUNT(*), SUM(balance) FROM accounts WHERE id >= 100") == [
        (10, decimal.Decimal(45))
    ]


def test_pymysql_multi_statement_results(mysql_gateway: RunningGateway, token: str) -> None:
    with (
        connect_pymysql(mysql_gateway, token, client_flag=CLIENT.MULTI_STATEMENTS) as agent,
        agent.cursor() as cursor,
    ):
        cursor.execute("SELECT 1 AS one; SELECT 'two', NULL; SELECT id FROM accounts WHERE id < 3")
        assert cursor.fetchall() == ((1,),)
        assert cursor.nextset()
        assert cursor.fetchall() == (("two", None),)
        assert cursor.nextset()
        assert cursor.fetchall() == ((1,), (2,))
        assert not cursor.nextset()
        cursor.execute("SELECT 'after'")
        assert cursor.fetchone() == ("after",)


@pytest.mark.parametrize("rule", [READS_ONLY, APPROVE_REJECT], ids=["deny", "approve-reject"])
def test_pymysql_multi_statement_with_a_write_is_refused_whole(
    mysql_gateway_factory: Callable[..., RunningGateway],
    root: PyMySqlConnection,
    rule: dict[str, Any],
) -> None:
    gateway = mysql_gateway_factory(rules=[rule])
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    with connect_pymysql(gateway, token, client_flag=CLIENT.MULTI_STATEMENTS) as agent:
        with agent.cursor() as cursor, pytest.raises(pymysql.err.MySQLError) as excinfo:
            cursor.execute("select 1; delete from accounts")
        errno, message = refusal(excinfo)
        assert errno == ER_TABLEACCESS_DENIED
        if rule is APPROVE_REJECT:
            assert re.search(r"needs approval: request \S+", message), message
        else:
            assert "not allowed" in message
        assert accounts_state(root) == UNTOUCHED
        # The read alone still runs; the session is fine.
        with agent.cursor() as cursor:
            cursor.execute("select 1; select 2")
            assert cursor.fetchall() == ((1,),)
            assert cursor.nextset()
            assert cursor.fetchall() == ((2,),)
        assert_usable(agent)


def test_pymysql_packet_over_16_mib_is_classified_whole(
    mysql_gateway_factory: Callable[..., RunningGateway], root: PyMySqlConnection
) -> None:
    gateway = mysql_gateway_factory(rules=[READS_ONLY], limits=BIG_LIMITS)
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    padding = "x" * SEVENTEEN_MB
    # The first 0xFFFFFF-byte chunk looks like a read; the write is in the last chunk.
    hidden_write = f"SELECT 1 /* {padding} */; DELETE FROM accounts"  # noqa: S608
    assert len(hidden_write.encode()) > 0xFFFFFF
    with connect_pymysql(gateway, token, client_flag=CLIENT.MULTI_STATEMENTS) as agent:
        with agent.cursor() as cursor, pytest.raises(pymysql.err.MySQLError) as excinfo:
            cursor.execute(hidden_write)
        # Over limits.max_statement_bytes (1 MiB by default): refused unparsed, 1153.
        errno, message = refusal(excinfo)
        assert errno == 1153, message
        assert "max_statement_bytes" in message or "limit of" in message
        assert accounts_state(root) == UNTOUCHED
        assert_usable(agent)
        # So is a plain read that long.
        with agent.cursor() as cursor, pytest.raises(pymysql.err.MySQLError) as excinfo:
            cursor.execute(f"SELECT '{padding}' IS NOT NULL")
        errno, message = refusal(excinfo)
        assert errno == 1153, message
        assert_usable(agent)


def test_pymysql_packet_over_the_gateway_cap_ends_the_session(
    mysql_gateway: RunningGateway, token: str
) -> None:
    padding = "z" * SEVENTEEN_MB
    with connect_pymysql(mysql_gateway, token, read_timeout=20, write_timeout=20) as agent:
        started = time.monotonic()
        with agent.cursor() as cursor, pytest.raises(pymysql.err.MySQLError) as excinfo:
            cursor.execute(f"SELECT '{padding}'")
        elapsed = time.monotonic() - started
        errno, message = refusal(excinfo)
        assert elapsed < 10, f"took {elapsed:.1f}s: {errno} {message}"
        assert errno == 1153, (errno, message)  # ER_NET_PACKET_TOO_LARGE, from the gateway
        assert "max_message_bytes" in message
        with pytest.raises(pymysql.err.MySQLError):
            agent.ping(reconnect=False)
    # The gateway itself is fine.
    with connect_pymysql(mysql_gateway, token) as other:
        assert_usable(other)


EXECUTABLE_COMMENTS = [
    "/*!50000 DELETE FROM accounts */",
    "/*M!100000 DELETE FROM accounts */",
    "/*!DELETE FROM accounts*/",
    "SELECT 1 /*!50000 , (SELECT COUNT(*) FROM accounts) */",
    "SELECT 1 /*!50000 ; */ /*M! UNION SELECT id FROM accounts */",
]


@pytest.mark.parametrize("rule", [READS_ONLY, APPROVE_REJECT], ids=["deny", "approve-reject"])
def test_pymysql_executable_comments_are_held(
    mysql_gateway_factory: Callable[..., RunningGateway],
    root: PyMySqlConnection,
    rule: dict[str, Any],
) -> None:
    gateway = mysql_gateway_factory(rules=[rule])
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    with connect_pymysql(gateway, token, autocommit=True) as agent:
        for sql in EXECUTABLE_COMMENTS:
            with agent.cursor() as cursor, pytest.raises(pymysql.err.MySQLError) as excinfo:
                cursor.execute(sql)
            errno, message = refusal(excinfo)
            assert errno == ER_TABLEACCESS_DENIED, (sql, message)
            assert accounts_state(root) == UNTOUCHED
        assert_usable(agent)


def test_pymysql_executable_comment_runs_upstream_under_allow_all(
    mysql_gateway: RunningGateway, token: str, root: PyMySqlConnection
) -> None:
    # The control for the test above: MariaDB does run what such a comment holds.
    with connect_pymysql(mysql_gateway, token, autocommit=True) as agent, agent.cursor() as cursor:
        cursor.execute("/*M!100000 DELETE FROM accounts WHERE id = 60 */")
        assert cursor.rowcount == 1
    assert accounts_state(root) == (59, 5900)


def test_pymysql_admin_statements_run_under_allow_all(
    mysql_gateway: RunningGateway, token: str
) -> None:
    # The default rule allows every class, admin included: these reach the server.
    with connect_pymysql(mysql_gateway, token, autocommit=True) as agent, agent.cursor() as cursor:
        cursor.execute("ANALYZE TABLE accounts")
        row = cursor.fetchone()
        assert row is not None
        assert str(row[0]).endswith(".accounts")
        assert row[3] in ("OK", "Table is already up to date")
        cursor.execute("SET ROLE NONE")
        cursor.execute("SELECT CURRENT_ROLE()")
        assert cursor.fetchone() == (None,)


def test_pymysql_load_data_local_infile_reads_no_file(
    mysql_gateway: RunningGateway, token: str, root: PyMySqlConnection, tmp_path: Path
) -> None:
    secrets_file = tmp_path / "client-secret.tsv"
    secrets_file.write_text("1000\t1\n1001\t2\n")
    with connect_pymysql(mysql_gateway, token, local_infile=True, autocommit=True) as agent:
        with agent.cursor() as cursor, pytest.raises(pymysql.err.MySQLError) as excinfo:
            cursor.execute(f"LOAD DATA LOCAL INFILE '{secrets_file}' INTO TABLE accounts")
        errno, message = refusal(excinfo)
        # Refused by the gateway's policy or, forwarded, by the server, which was never told
        # the client may send files (1148 ER_NOT_ALLOWED_COMMAND). Had the server asked for
        # the file anyway, the gateway would have ended the session.
        assert errno not in CLIENT_CONNECTION_ERRORS, message
        assert_usable(agent)
    assert root_rows(root, "SELECT COUNT(*) FROM accounts WHERE id >= 1000") == [(0,)]
    assert accounts_state(root) == UNTOUCHED


def test_pymysql_lexer_pinning_statements_are_refused(
    mysql_gateway: RunningGateway, token: str
) -> None:
    refused = [
        "SET NAMES gbk",
        "SET sql_mode='ANSI_QUOTES'",
        "SET character_set_client = sjis",
        "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')",
        "SET NAMES big5",
    ]
    with connect_pymysql(mysql_gateway, token, autocommit=True) as agent:
        for sql in refused:
            with agent.cursor() as cursor, pytest.raises(pymysql.err.MySQLError) as excinfo:
                cursor.execute(sql)
            errno, message = refusal(excinfo)
            assert errno == ER_TABLEACCESS_DENIED, (sql, message)
        with agent.cursor() as cursor:
            cursor.execute("SELECT @@character_set_client, @@sql_mode")
            row = cursor.fetchone()
            assert row is not None
            charset, sql_mode = row
        assert charset == "utf8mb4"
        assert "ANSI_QUOTES" not in sql_mode
        assert "NO_BACKSLASH_ESCAPES" not in sql_mode
        # What drivers send on connect still passes.
        with agent.cursor() as cursor:
            cursor.execute("SET NAMES utf8mb4")
            cursor.execute("SELECT 'ok'")
            assert cursor.fetchone() == ("ok",)


def test_pymysql_gbk_handshake_charset_is_refused_at_login(
    mysql_gateway: RunningGateway, token: str
) -> None:
    with pytest.raises(pymysql.err.MySQLError) as excinfo:
        connect_pymysql(mysql_gateway, token, charset="gbk")
    errno, message = refusal(excinfo)
    assert errno not in CLIENT_CONNECTION_ERRORS, message
    assert "gbk" in message
    assert "utf8mb4" in message


def test_pymysql_select_db_to_another_database_stays_on_the_target(
    mysql_gateway: RunningGateway, token: str
) -> None:
    with connect_pymysql(mysql_gateway, token) as agent:
        with agent.cursor() as cursor:
            cursor.execute("SELECT DATABASE()")
            row = cursor.fetchone()
            assert row is not None
            assert str(row[0]).startswith("airlock_test_")
        # COM_INIT_DB reaches the server, which refuses a database the account may not use.
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            agent.select_db("mysql")
        assert refusal(excinfo)[0] in (1044, ER_ACCESS_DENIED)
        assert_usable(agent)


# --------------------------------------------------------------------------
# TLS at the packet level


class TlsOverBio:
    """A TLS client driven by hand, so a test decides which bytes go out in which write."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, hostname: str) -> None:
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=hostname)

    def client_hello(self) -> bytes:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        return self.outgoing.read()

    def _flush(self) -> None:
        if data := self.outgoing.read():
            self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the gateway closed the connection")
        self.incoming.write(data)

    def finish_handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            else:
                self._flush()
                return

    def sendall(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def recv_exact(self, size: int) -> bytes:
        received = b""
        while len(received) < size:
            try:
                received += self.tls.read(size - len(received))
            except ssl.SSLWantReadError:
                self._fill()
        return received


def mysql_packet(payload: bytes, sequence_id: int) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([sequence_id]) + payload


def plain_packet(sock: socket.socket) -> tuple[int, bytes]:
    """(sequence id, payload) of one packet read from a plain socket."""
    header = b""
    while len(header) < 4:
        chunk = sock.recv(4 - len(header))
        assert chunk, "the gateway closed the connection"
        header += chunk
    size = int.from_bytes(header[:3], "little")
    payload = b""
    while len(payload) < size:
        chunk = sock.recv(size - len(payload))
        assert chunk, "the gateway closed the connection"
        payload += chunk
    return header[3], payload


RAW_CLIENT_FLAGS = (
    CLIENT.LONG_PASSWORD
    | CLIENT.CONNECT_WITH_DB
    | CLIENT.PROTOCOL_41
    | CLIENT.SSL
    | CLIENT.TRANSACTIONS
    | CLIENT.SECURE_CONNECTION
    | CLIENT.PLUGIN_AUTH
    | CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA
)
UTF8MB4_GENERAL_CI = 45


def test_tls_client_hello_in_the_same_segment_as_the_ssl_request(
    mysql_gateway: RunningGateway, token: str
) -> None:
    # A MySQL client does not wait for an answer to its SSLRequest: the ClientHello
    # follows at once and may arrive in the same read. The gateway must hand those
    # bytes to TLS, not read them as a MySQL packet. (Drivers hit this by chance.)
    with socket.create_connection(("127.0.0.1", mysql_gateway.mysql_port), timeout=10) as sock:
        sequence_id, greeting = plain_packet(sock)
        assert (sequence_id, greeting[0]) == (0, 10)
        prefix = struct.pack("<IIB23x", RAW_CLIENT_FLAGS, 1 << 24, UTF8MB4_GENERAL_CI)
        tls = TlsOverBio(sock, mysql_gateway.ssl_context(), "127.0.0.1")
        sock.sendall(mysql_packet(prefix, 1) + tls.client_hello())
        tls.finish_handshake()
        secret = token.encode() + b"\0"
        response = (
            prefix
            + b"agent\0"
            + b"\xfc"
            + len(secret).to_bytes(2, "little")
            + secret
            + b"shop\0mysql_clear_password\0"
        )
        tls.sendall(mysql_packet(response, 2))
        header = tls.recv_exact(4)
        answer = tls.recv_exact(int.from_bytes(header[:3], "little"))
        assert (header[3], answer[:1]) == (3, b"\x00"), answer  # OK: logged in
        tls.sendall(mysql_packet(b"\x0e", 0))  # COM_PING
        header = tls.recv_exact(4)
        assert tls.recv_exact(int.from_bytes(header[:3], "little"))[:1] == b"\x00"


# --------------------------------------------------------------------------
# Login refusals


def test_login_with_a_wrongly_signed_token_is_refused(mysql_gateway: RunningGateway) -> None:
    issuer = mysql_gateway.issuer
    forged = issuer.mint(key=issuer.attacker_key(kid=issuer.signing_key.kid))
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        connect_pymysql(mysql_gateway, forged)
    errno, message = refusal(excinfo)
    assert errno == ER_ACCESS_DENIED
    assert forged not in message
    assert forged.split(".")[2] not in message


def test_login_with_an_expired_token_is_refused(mysql_gateway: RunningGateway) -> None:
    expired = mysql_gateway.issuer.mint(now=time.time() - 3600, ttl_s=600)
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        connect_pymysql(mysql_gateway, expired)
    errno, message = refusal(excinfo)
    assert errno == ER_ACCESS_DENIED
    assert "expired" in message.lower()
    assert expired not in message
    assert expired.split(".")[2] not in message


def test_login_with_a_non_token_password_is_refused(mysql_gateway: RunningGateway) -> None:
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        connect_pymysql(mysql_gateway, "hunter2-not-a-jwt")
    errno, message = refusal(excinfo)
    assert errno == ER_ACCESS_DENIED
    assert "hunter2" not in message


def test_login_to_an_unknown_database_is_refused(mysql_gateway: RunningGateway, token: str) -> None:
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        connect_pymysql(mysql_gateway, token, database="warehouse")
    errno, message = refusal(excinfo)
    assert errno == ER_BAD_DB
    assert "warehouse" in message


def test_login_without_tls_from_loopback_is_refused(
    mysql_gateway: RunningGateway, token: str
) -> None:
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        connect_pymysql(mysql_gateway, token, tls=False)
    errno, message = refusal(excinfo)
    assert errno == ER_ACCESS_DENIED
    assert "TLS" in message
    assert token not in message


def test_login_with_groups_matching_no_rule_is_refused(mysql_gateway: RunningGateway) -> None:
    outsider = mysql_gateway.issuer.mint(sub="intern-7", groups=("marketing",))
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        connect_pymysql(mysql_gateway, outsider)
    errno, message = refusal(excinfo)
    assert errno == ER_ACCESS_DENIED
    assert "intern-7" in message
    assert outsider not in message


def test_pymysql_plain_loopback_with_allow_insecure_loopback(
    mysql_gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = mysql_gateway_factory(allow_insecure_loopback=True)
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    with connect_pymysql(gateway, token, tls=False) as agent, agent.cursor() as cursor:
        cursor.execute(TYPES_SQL)
        assert cursor.fetchone() == TYPES_ROW


# --------------------------------------------------------------------------
# KILL


def run_in_thread(fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def target() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the test
            future.set_exception(exc)

    threading.Thread(target=target, daemon=True).start()
    return future


def query_outcome(running: concurrent.futures.Future[Any]) -> Any:
    """The query's result, or the errno it failed with, once it ends (within the deadline)."""
    try:
        return running.result(timeout=KILL_DEADLINE_S)
    except pymysql.err.MySQLError as exc:
        return exc.args[0]
    except mysql.connector.errors.Error as exc:
        return exc.errno


def gateway_thread_id(connection: PyMySqlConnection) -> int:
    """The connection id from the handshake: the gateway's, not the upstream thread's."""
    return int(connection.thread_id())  # type: ignore[no-untyped-call]


def sleep_query(connection: PyMySqlConnection) -> Callable[[], Any]:
    def run() -> Any:
        with connection.cursor() as cursor:
            cursor.execute("SELECT SLEEP(30)")
            return cursor.fetchone()

    return run


@pytest.mark.timeout(60)
def test_pymysql_kill_query_of_own_session(
    mysql_gateway: RunningGateway, token: str, local_mariadb: MariaDb
) -> None:
    with (
        connect_pymysql(mysql_gateway, token) as sleeper,
        connect_pymysql(mysql_gateway, token) as killer,
    ):
        # The id the gateway gave the client, not the upstream thread's.
        gateway_id = gateway_thread_id(sleeper)
        with sleeper.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            row = cursor.fetchone()
            assert row is not None
            upstream_id = int(row[0])
        assert gateway_id != upstream_id
        running = run_in_thread(sleep_query(sleeper))
        wait_for_sleep(local_mariadb)
        # (The upstream thread id works too: tests/integration/test_mysql_fidelity.py.)
        started = time.monotonic()
        with killer.cursor() as cursor:
            cursor.execute(f"KILL QUERY {gateway_id}")
        # SLEEP() returns 1 when interrupted, or the server reports the interruption.
        assert query_outcome(running) in ((1,), ER_QUERY_INTERRUPTED)
        assert time.monotonic() - started < KILL_DEADLINE_S
        wait_until(
            lambda: not upstream_sleeps(local_mariadb),
            KILL_DEADLINE_S,
            "the SLEEP to stop upstream",
        )
        assert_usable(sleeper)
        assert_usable(killer)


@pytest.mark.timeout(60)
def test_pymysql_kill_query_by_another_identity_is_refused(
    mysql_gateway: RunningGateway, token: str, local_mariadb: MariaDb
) -> None:
    other_token = mysql_gateway.issuer.mint(sub="agent-2", groups=("data-agents",))
    with (
        connect_pymysql(mysql_gateway, token) as sleeper,
        connect_pymysql(mysql_gateway, token) as owner,
        connect_pymysql(mysql_gateway, other_token) as stranger,
    ):
        gateway_id = gateway_thread_id(sleeper)
        running = run_in_thread(sleep_query(sleeper))
        wait_for_sleep(local_mariadb)
        for statement in (f"KILL QUERY {gateway_id}", f"KILL {gateway_id}"):
            with stranger.cursor() as cursor, pytest.raises(pymysql.err.MySQLError) as excinfo:
                cursor.execute(statement)
            errno, message = refusal(excinfo)
            assert errno == ER_NO_SUCH_THREAD, message
            assert str(gateway_id) in message
        time.sleep(1.0)  # not a wait for an event: a window in which nothing may happen
        assert not running.done(), "the query ended after another identity's KILL"
        assert upstream_sleeps(local_mariadb)
        # Clean up: the owner may.
        with owner.cursor() as cursor:
            cursor.execute(f"KILL QUERY {gateway_id}")
        assert query_outcome(running) in ((1,), ER_QUERY_INTERRUPTED)
        assert_usable(stranger)


@pytest.mark.timeout(60)
def test_pymysql_kill_connection_ends_the_session(
    mysql_gateway: RunningGateway, token: str, local_mariadb: MariaDb
) -> None:
    with (
        connect_pymysql(mysql_gateway, token) as sleeper,
        connect_pymysql(mysql_gateway, token) as killer,
    ):
        gateway_id = gateway_thread_id(sleeper)
        running = run_in_thread(sleep_query(sleeper))
        wait_for_sleep(local_mariadb)
        started = time.monotonic()
        with killer.cursor() as cursor:
            cursor.execute(f"KILL {gateway_id}")
        with pytest.raises(pymysql.err.MySQLError):
            running.result(timeout=KILL_DEADLINE_S)
        assert time.monotonic() - started < KILL_DEADLINE_S
        # The upstream query is gone too, not left sleeping.
        wait_until(
            lambda: not upstream_sleeps(local_mariadb),
            KILL_DEADLINE_S,
            "the SLEEP to stop upstream",
        )
        with pytest.raises(pymysql.err.MySQLError), sleeper.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert_usable(killer)
        # Killing a session that has gone: unknown thread.
        with killer.cursor() as cursor, pytest.raises(pymysql.err.MySQLError) as excinfo:
            cursor.execute(f"KILL {gateway_id}")
        assert refusal(excinfo)[0] == ER_NO_SUCH_THREAD


@pytest.mark.timeout(60)
def test_connector_kill_query_by_connection_id(
    mysql_gateway: RunningGateway, token: str, local_mariadb: MariaDb
) -> None:
    sleeper = mysql_gateway.mysql_connector(token)
    killer = mysql_gateway.mysql_connector(token)
    try:
        gateway_id = int(sleeper.connection_id)

        def run() -> Any:
            cursor = sleeper.cursor()
            try:
                cursor.execute("SELECT SLEEP(30)")
                return cursor.fetchall()
            finally:
                cursor.close()

        running = run_in_thread(run)
        wait_for_sleep(local_mariadb)
        killer.cmd_query(f"KILL QUERY {gateway_id}")
        assert query_outcome(running) in ([(1,)], ER_QUERY_INTERRUPTED)
        cursor = sleeper.cursor()
        cursor.execute("SELECT 'usable'")
        assert cursor.fetchall() == [("usable",)]
        cursor.close()
    finally:
        sleeper.close()
        killer.close()


# --------------------------------------------------------------------------
# Concurrency


def test_pymysql_concurrent_sessions(mysql_gateway: RunningGateway, token: str) -> None:
    def worker(n: int) -> list[tuple[Any, ...]]:
        seen: list[tuple[Any, ...]] = []
        with (
            connect_pymysql(mysql_gateway, token, autocommit=True) as agent,
            agent.cursor() as cursor,
        ):
            for i in range(50):
                account = (n * 50 + i) % 60 + 1
                cursor.execute(
                    "SELECT %s, id, balance FROM accounts WHERE id = %s", (f"w{n}-{i}", account)
                )
                row = cursor.fetchone()
                assert row is not None
                seen.append(tuple(row))
        return seen

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(worker, range(8)))
    for n, seen in enumerate(results):
        assert seen == [(f"w{n}-{i}", (n * 50 + i) % 60 + 1, 100) for i in range(50)]


# --------------------------------------------------------------------------
# aiomysql


async def aiomysql_connect(gateway: RunningGateway, token: str, **kwargs: Any) -> Any:
    return await aiomysql.connect(
        host="127.0.0.1",
        port=gateway.mysql_port,
        user="agent",
        password=token,
        db="shop",
        charset="utf8mb4",
        ssl=gateway.ssl_context(),
        connect_timeout=10,
        **kwargs,
    )


async def test_aiomysql_reads_writes_and_multi_statement(
    mysql_gateway: RunningGateway, token: str, root: PyMySqlConnection
) -> None:
    conn = await aiomysql_connect(mysql_gateway, token, autocommit=True)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(TYPES_SQL)
            assert await cursor.fetchall() == (TYPES_ROW,)
            await cursor.execute("SELECT balance FROM accounts WHERE id = %s", (7,))
            assert await cursor.fetchone() == (100,)
            await cursor.execute("UPDATE accounts SET balance = %s WHERE id = %s", (1, 7))
            assert cursor.rowcount == 1
            await cursor.execute("INSERT INTO accounts VALUES (%s, %s)", (70, 70))
            # aiomysql always asks for multi-statements.
            await cursor.execute("SELECT 'a'; SELECT 'b', 2")
            assert await cursor.fetchall() == (("a",),)
            assert await cursor.nextset()
            assert await cursor.fetchall() == (("b", 2),)
    finally:
        await aiomysql_close(conn)
    assert root_rows(root, "SELECT id, balance FROM accounts WHERE id IN (7, 70)") == [
        (7, 1),
        (70, 70),
    ]


async def test_aiomysql_multi_statement_with_a_write_is_refused(
    mysql_gateway_factory: Callable[..., RunningGateway], root: PyMySqlConnection
) -> None:
    gateway = mysql_gateway_factory(rules=[READS_ONLY])
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    conn = await aiomysql_connect(gateway, token, autocommit=True)
    try:
        async with conn.cursor() as cursor:
            with pytest.raises(pymysql.err.MySQLError) as excinfo:
                await cursor.execute("select 1; delete from accounts")
            assert refusal(excinfo)[0] == ER_TABLEACCESS_DENIED
            await cursor.execute("SELECT COUNT(*) FROM accounts")
            assert await cursor.fetchone() == (60,)
    finally:
        await aiomysql_close(conn)
    assert accounts_state(root) == UNTOUCHED


# --------------------------------------------------------------------------
# asyncmy


async def test_asyncmy_reads_and_writes(
    mysql_gateway: RunningGateway, token: str, root: PyMySqlConnection
) -> None:
    conn = await asyncmy.connect(
        host="127.0.0.1",
        port=mysql_gateway.mysql_port,
        user="agent",
        password=token,
        database="shop",
        ssl=mysql_gateway.ssl_context(),
        autocommit=True,
        connect_timeout=10,
    )
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(TYPES_SQL)
            assert tuple(await cursor.fetchone()) == TYPES_ROW
            await cursor.execute(
                "SELECT id, balance FROM accounts WHERE id BETWEEN %s AND %s ORDER BY id",
                (58, 60),
            )
            assert [tuple(r) for r in await cursor.fetchall()] == [(58, 100), (59, 100), (60, 100)]
            await cursor.execute("DELETE FROM accounts WHERE id > %s", (55,))
            assert cursor.rowcount == 5
            await cursor.execute("UPDATE accounts SET balance = balance * 2 WHERE id = %s", (1,))
            await cursor.execute("SELECT %s, %s", (UNICODE, None))
            assert tuple(await cursor.fetchone()) == (UNICODE, None)
    finally:
        await conn.ensure_closed()  # QUIT, and waits for the close
    assert accounts_state(root) == (55, 5600)


# --------------------------------------------------------------------------
# mysql-connector-python (pure)


def test_connector_text_protocol_reads_and_writes(
    mysql_gateway: RunningGateway, token: str, root: PyMySqlConnection
) -> None:
    conn = mysql_gateway.mysql_connector(token, autocommit=True)
    try:
        cursor = conn.cursor()
        cursor.execute(TYPES_SQL)
        (row,) = cursor.fetchall()
        values = list(row)
        values[7] = bytes(values[7])
        assert tuple(values) == TYPES_ROW
        cursor.execute("UPDATE accounts SET balance = %s WHERE id = %s", (3, 4))
        assert cursor.rowcount == 1
        cursor.execute("INSERT INTO accounts VALUES (%s, %s)", (80, 8))
        cursor.close()
    finally:
        conn.close()
    assert root_rows(root, "SELECT id, balance FROM accounts WHERE id IN (4, 80)") == [
        (4, 3),
        (80, 8),
    ]


def test_connector_prepared_statements(
    mysql_gateway: RunningGateway, token: str, root: PyMySqlConnection
) -> None:
    conn = mysql_gateway.mysql_connector(token, autocommit=True)
    try:
        cursor = conn.cursor(prepared=True)
        cursor.execute(
            "SELECT ? IS NULL, ? + 1, CONCAT(?, '!'), HEX(?), ? + INTERVAL 1 DAY",
            (None, 41, UNICODE, b"\x00\xff'\\", datetime.date(2024, 2, 28)),
        )
        assert cursor.fetchall() == [(1, 42, UNICODE + "!", "00FF275C", datetime.date(2024, 2, 29))]
        cursor.execute(TYPES_SQL)
        (row,) = cursor.fetchall()
        values = list(row)
        values[7] = bytes(values[7])
        assert tuple(values) == TYPES_ROW
        # One statement, prepared once, executed many times with other parameters.
        for n in range(1, 41):
            cursor.execute("SELECT id, balance + ? FROM accounts WHERE id = ?", (n, n))
            assert cursor.fetchall() == [(n, 100 + n)]
        for n in range(1, 21):
            cursor.execute("UPDATE accounts SET balance = ? WHERE id = ?", (n, n))
        cursor.execute("INSERT INTO accounts VALUES (?, ?)", (90, None))
        cursor.close()
        # The server saw prepared statements, each prepared once and executed again.
        status = conn.cursor()
        status.execute("SHOW SESSION STATUS LIKE 'Com_stmt_%'")
        counters = {str(name): int(value) for name, value in status.fetchall()}
        status.close()
        assert counters["Com_stmt_execute"] >= 63
        assert counters["Com_stmt_prepare"] <= 10
    finally:
        conn.close()
    assert root_rows(root, "SELECT SUM(balance) FROM accounts WHERE id <= 20") == [
        (decimal.Decimal(210),)
    ]
    assert root_rows(root, "SELECT balance FROM accounts WHERE id = 90") == [(None,)]


def test_connector_prepared_write_denied_by_rule(
    mysql_gateway_factory: Callable[..., RunningGateway], root: PyMySqlConnection
) -> None:
    gateway = mysql_gateway_factory(rules=[READS_ONLY])
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    conn = gateway.mysql_connector(token, autocommit=True)
    try:
        cursor = conn.cursor(prepared=True)
        cursor.execute("SELECT balance FROM accounts WHERE id = ?", (5,))
        assert cursor.fetchall() == [(100,)]
        with pytest.raises(mysql.connector.errors.Error) as excinfo:
            cursor.execute("DELETE FROM accounts WHERE id > ?", (0,))
        assert refusal(excinfo)[0] == ER_TABLEACCESS_DENIED
        cursor.execute("SELECT COUNT(*) FROM accounts WHERE id > ?", (0,))
        assert cursor.fetchall() == [(60,)]
        cursor.close()
    finally:
        conn.close()
    assert accounts_state(root) == UNTOUCHED


def test_connector_change_user_is_refused(mysql_gateway: RunningGateway, token: str) -> None:
    conn = mysql_gateway.mysql_connector(token)
    try:
        other = mysql_gateway.issuer.mint(sub="admin-1", groups=("data-agents",))
        with pytest.raises(mysql.connector.errors.Error) as excinfo:
            conn.cmd_change_user(username="admin", password=other, database="shop")
        errno, message = refusal(excinfo)
        assert "changing the user is not supported" in message, (errno, message)
        assert other not in message
    finally:
        conn.close()
