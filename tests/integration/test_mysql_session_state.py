"""The gateway's picture of a MySQL session is the server's (issue 14, section 1).

Commands are sent at the wire level (pipelined where a driver could pipeline them)
through the gateway to the real MariaDB, under a rule that refuses writes at once
(`hold: reject`); the accounts table, read over a direct connection, says whether
anything was written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest
from pymysql.constants import CLIENT

from protocols.mysql.messages import Command
from tests.support.approvals import agent_token, rule
from tests.support.gateway import RunningGateway
from tests.support.mariadb import MariaDb
from tests.support.rawmysql import READ_ONLY_CURSOR, RawMySql, execute_payload

DENIED = 1142  # the gateway's refusal (ER_TABLEACCESS_DENIED_ERROR)
UNKNOWN_HANDLER = 1243  # the server's "Unknown prepared statement handler"


@pytest.fixture
def balances(local_mariadb: MariaDb, mysql_database: str) -> Callable[[], dict[int, Any]]:
    def read() -> dict[int, Any]:
        with local_mariadb.root(mysql_database) as root, root.cursor() as cursor:
            cursor.execute("SELECT id, balance FROM accounts")
            return {int(i): b for i, b in cursor.fetchall()}

    return read


@pytest.fixture
def gateway(mysql_gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return mysql_gateway_factory(rules=[rule(targets=["shop"], hold="reject")])


@pytest.fixture
def wire(gateway: RunningGateway) -> Iterator[RawMySql]:
    connection = gateway.pymysql(
        agent_token(gateway), autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS
    )
    yield RawMySql(connection)
    connection.close()


def test_statement_ids_are_the_servers_after_a_failed_prepare(
    wire: RawMySql, balances: Callable[[], dict[int, Any]]
) -> None:
    before = balances()
    read = wire.prepare("SELECT balance FROM accounts WHERE id = ?")
    failed = wire.prepare("SELECT * FROM no_such_table")
    write = wire.prepare("UPDATE accounts SET balance = 0 WHERE id = ?")
    assert read.statement_id is not None
    assert write.statement_id is not None
    assert failed.errno == 1146
    assert failed.statement_id is None
    # MariaDB spent an id on the failed prepare: the write is not read's id + 1.
    assert write.statement_id == read.statement_id + 2
    assert wire.execute(write.statement_id, ("1",)).errno == DENIED
    # The id the failed prepare spent names nothing: no guess makes it the write or the read.
    assert wire.execute(read.statement_id + 1, ("1",)).errno in (DENIED, UNKNOWN_HANDLER)
    answer = wire.execute(read.statement_id, ("1",))
    assert answer.error is None
    assert len(answer.rows) == 1
    assert balances() == before


def test_pipelined_close_prepare_execute_learns_the_new_id_first(
    wire: RawMySql, balances: Callable[[], dict[int, Any]]
) -> None:
    before = balances()
    read = wire.prepare("SELECT balance FROM accounts WHERE id = ?")
    assert read.statement_id is not None
    # Close the read, prepare a write, and execute the read's id and the next ones, all
    # in one burst: the gateway must hear the server's PREPARE_OK before judging them.
    wire.close(read.statement_id)
    wire.send(bytes([Command.STMT_PREPARE]) + b"UPDATE accounts SET balance = 0 WHERE id = ?")
    for statement_id in range(read.statement_id, read.statement_id + 3):
        wire.send(execute_payload(statement_id, ("1",)))
    prepared = wire.answer()
    assert prepared.statement_id is not None
    answers = [wire.answer() for _ in range(3)]
    assert all(a.error is not None for a in answers), answers
    assert balances() == before


def test_long_data_has_no_answer_and_is_bound_at_execute(wire: RawMySql) -> None:
    echo = wire.prepare("SELECT CONCAT(?, '')")
    assert echo.statement_id is not None
    wire.long_data(echo.statement_id, 0, b"sent ")
    wire.long_data(echo.statement_id, 0, b"long")
    answer = wire.execute(echo.statement_id, ("inline",))
    assert answer.error is None
    assert answer.rows[0].endswith(b"sent long")
    # The server cleared it at the execute; a COM_STMT_RESET clears what comes after.
    wire.long_data(echo.statement_id, 0, b"discarded")
    assert wire.reset(echo.statement_id).error is None
    answer = wire.execute(echo.statement_id, ("inline",))
    assert answer.error is None
    assert answer.rows[0].endswith(b"inline")


def test_long_data_for_a_write_is_refused_with_its_execute(
    wire: RawMySql, balances: Callable[[], dict[int, Any]]
) -> None:
    before = balances()
    write = wire.prepare("UPDATE accounts SET balance = ? WHERE id = 1")
    assert write.statement_id is not None
    wire.long_data(write.statement_id, 0, b"0")
    assert wire.execute(write.statement_id, ("7",)).errno == DENIED
    assert balances() == before


def test_cursors_fetch_reads_and_never_open_on_a_write(
    wire: RawMySql, balances: Callable[[], dict[int, Any]]
) -> None:
    before = balances()
    read = wire.prepare("SELECT id FROM accounts ORDER BY id")
    assert read.statement_id is not None
    opened = wire.execute(read.statement_id, cursor=READ_ONLY_CURSOR)
    assert opened.error is None
    assert opened.rows == []
    assert len(wire.fetch(read.statement_id, 5).rows) == 5
    assert len(wire.fetch(read.statement_id, 100).rows) == 55
    write = wire.prepare("UPDATE accounts SET balance = 0")
    assert write.statement_id is not None
    assert wire.execute(write.statement_id, cursor=READ_ONLY_CURSOR).errno == DENIED
    assert wire.fetch(write.statement_id, 5).error is not None  # no cursor was opened
    assert balances() == before


def test_multi_statement_strings(wire: RawMySql, balances: Callable[[], dict[int, Any]]) -> None:
    before = balances()
    both = wire.query("SELECT 1; SELECT 2")
    assert both.error is None
    assert both.result_sets == 2
    for sql in (
        "SELECT 1; UPDATE accounts SET balance = 0",
        "SELECT * FROM no_such_table; UPDATE accounts SET balance = 0",
        "SELECT 1;UPDATE accounts SET balance = 0;SELECT 2",
        "SELECT 1 -- x\n; DELETE FROM accounts",
        "SELECT '\\'; DELETE FROM accounts -- '; DELETE FROM accounts",
    ):
        assert wire.query(sql).errno == DENIED, sql
    assert wire.query("SELECT 3").text_rows() == [("3",)]  # in step after every refusal
    assert balances() == before


def test_sql_level_prepared_statements_never_run_unseen(
    wire: RawMySql, balances: Callable[[], dict[int, Any]]
) -> None:
    before = balances()
    assert wire.query("PREPARE s FROM 'SELECT 1'").error is None
    # EXECUTE names a statement the gateway did not classify as prepared: never read.
    assert wire.query("EXECUTE s").errno == DENIED
    assert wire.query("PREPARE w FROM 'UPDATE accounts SET balance = 0'").errno == DENIED
    assert wire.query("EXECUTE IMMEDIATE 'UPDATE accounts SET balance = 0'").errno == DENIED
    assert wire.query("SET @q = 'DELETE FROM accounts'").error is None
    assert wire.query("PREPARE q FROM @q").errno == DENIED
    # The two namespaces are apart: a protocol execute cannot reach `s` by its id either.
    probe = wire.prepare("SELECT 1")
    assert probe.statement_id is not None
    for statement_id in range(1, probe.statement_id):
        assert wire.execute(statement_id).error is not None
    assert wire.query("DEALLOCATE PREPARE s").error is None
    assert balances() == before


def test_reset_connection_forgets_every_statement(
    wire: RawMySql, balances: Callable[[], dict[int, Any]]
) -> None:
    before = balances()
    read = wire.prepare("SELECT 1")
    assert read.statement_id is not None
    assert wire.reset_connection().error is None
    assert wire.execute(read.statement_id).error is not None
    write = wire.prepare("DELETE FROM accounts")
    assert write.statement_id is not None
    assert wire.execute(write.statement_id).errno == DENIED
    assert wire.query("SELECT 4").text_rows() == [("4",)]
    assert balances() == before


def test_change_user_ends_the_session(wire: RawMySql) -> None:
    wire.send(bytes([Command.CHANGE_USER]) + b"root\0\0")
    answer = wire.answer()
    assert answer.errno == 1235
    with pytest.raises(pymysql.err.OperationalError):
        wire.query("SELECT 1")


def test_statement_id_minus_one_is_refused(
    wire: RawMySql, balances: Callable[[], dict[int, Any]]
) -> None:
    before = balances()
    wire.send(bytes([Command.STMT_PREPARE]) + b"DELETE FROM accounts")
    wire.send(execute_payload(0xFFFFFFFF))
    assert wire.answer().statement_id is not None
    assert wire.answer().errno == 1235
    assert balances() == before


def test_the_scope_answer_holds_for_every_literal_of_a_statement_shape(
    wire: RawMySql, mysql_database: str
) -> None:
    """The gateway remembers scope answers per statement shape (literals taken out):
    new literals neither open nor close a database."""
    for n in range(1, 4):
        assert wire.query(f"SELECT id FROM accounts WHERE id = {n}").text_rows() == [(str(n),)]  # noqa: S608
        own = wire.query(f"SELECT id FROM {mysql_database}.accounts WHERE id = {n}")  # noqa: S608
        assert own.text_rows() == [(str(n),)]
        outside = wire.query(f"SELECT user FROM mysql.user WHERE user = 'u{n}'")  # noqa: S608
        assert outside.errno == 1044, outside.error
    for schema in ("mysql", mysql_database, "performance_schema"):
        # information_schema shows only what the account may see, whichever schema it names
        answer = wire.query(
            f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{schema}'"  # noqa: S608
        )
        assert answer.error is None, (schema, answer.error)


def test_names_inside_executable_comments_are_checked(wire: RawMySql) -> None:
    # The server runs the text of /*! ... */; the gateway checks it like any other (this
    # target refuses unknown statements too, with another error: the scope comes first).
    for sql in (
        "SELECT 1 /*! , (SELECT COUNT(*) FROM mysql.user) */",
        "SELECT 1 /*M!100000 , (SELECT COUNT(*) FROM mysql.user) */",
    ):
        answer = wire.query(sql)
        assert answer.errno == 1044, (sql, answer.error)


def test_databases_the_target_does_not_expose_are_refused(
    wire: RawMySql, mysql_database: str
) -> None:
    """Section 7: the target exposes its upstream URL's database (and information_schema)."""
    for sql in (
        "SELECT user FROM mysql.user",
        "SELECT * FROM `mysql`.`user`",
        "WITH c AS (SELECT user FROM mysql.user) SELECT * FROM c",
        "SELECT (SELECT 1 FROM mysql.db LIMIT 1)",
        "SELECT 1; SELECT * FROM performance_schema.threads",
        "USE mysql",
        "SHOW TABLES FROM mysql",
        "DESCRIBE mysql.user",
        "SELECT * FROM sys.version",
    ):
        answer = wire.query(sql)
        assert answer.errno == 1044, (sql, answer.error)
        assert answer.error is not None
        assert "not exposed" in answer.error.message
    refused = wire.prepare("SELECT user FROM mysql.user")
    assert refused.errno == 1044
    assert refused.statement_id is None
    assert wire.init_db("mysql").errno == 1044
    # Still in the exposed database: unqualified names resolve there.
    assert wire.query("SELECT DATABASE()").text_rows() == [(mysql_database,)]
    assert wire.query("SELECT COUNT(*) FROM accounts").text_rows() == [("60",)]
    assert wire.query(f"SELECT COUNT(*) FROM {mysql_database}.accounts").error is None  # noqa: S608
    assert wire.init_db(mysql_database).error is None
    assert wire.query(f"USE {mysql_database}").error is None
    tables = wire.query(
        "SELECT table_name FROM information_schema.tables WHERE table_name = 'accounts'"
    )
    assert tables.error is None
    assert tables.text_rows() == [("accounts",)]
