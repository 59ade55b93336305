"""Defence in depth on MariaDB: the upstream session runs as the target's read role,
and takes its write role only for what the gate let through (issue 14, section 4).
A statement the classifier gets wrong meets the server's own permission error (1142).

Each test makes its own roles and login account, as docs/security-mysql.md tells
operators to: a read role with SELECT, a write role with SELECT, INSERT, UPDATE and
DELETE, and an account with no privileges of its own that is granted both.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiomysql  # type: ignore[import-untyped]
import mysql.connector
import pymysql
import pytest

from policy.classify import StatementClass, Verdict
from tests.support.approvals import Background, agent_token, approve_next, decide, pending, rule
from tests.support.gateway import RunningGateway
from tests.support.mariadb import MariaDb
from tests.support.waiting import PATIENCE_S

#: The server's own wording (the gateway's refusals say "refused" or "denied by").
SERVER_DENIED = "UPDATE command denied to user"


@dataclass(frozen=True)
class Roles:
    login: str
    password: str
    read: str
    write: str


@pytest.fixture
def roles(local_mariadb: MariaDb, mysql_database: str) -> Iterator[Roles]:
    tag = secrets.token_hex(4)
    made = Roles(
        f"airlock_svc_{tag}", secrets.token_urlsafe(18), f"airlock_r_{tag}", f"airlock_w_{tag}"
    )
    with local_mariadb.root() as root, root.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {made.read}")
        cursor.execute(f"CREATE ROLE {made.write}")
        cursor.execute(f"GRANT SELECT ON {mysql_database}.* TO {made.read}")
        cursor.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON {mysql_database}.* TO {made.write}"
        )
        cursor.execute(f"CREATE USER '{made.login}'@'%%' IDENTIFIED BY %s", (made.password,))
        cursor.execute(f"GRANT {made.read} TO '{made.login}'@'%'")
        cursor.execute(f"GRANT {made.write} TO '{made.login}'@'%'")
    yield made
    with local_mariadb.root() as root, root.cursor() as cursor:
        cursor.execute(f"DROP USER IF EXISTS '{made.login}'@'%'")
        cursor.execute(f"DROP ROLE IF EXISTS {made.read}")
        cursor.execute(f"DROP ROLE IF EXISTS {made.write}")


@pytest.fixture
def balances(local_mariadb: MariaDb, mysql_database: str) -> Callable[[], dict[int, int]]:
    def read() -> dict[int, int]:
        with local_mariadb.root(mysql_database) as root, root.cursor() as cursor:
            cursor.execute("SELECT id, balance FROM accounts")
            return {int(i): int(b) for i, b in cursor.fetchall()}

    return read


def split_gateway(
    factory: Callable[..., RunningGateway],
    local_mariadb: MariaDb,
    database: str,
    roles: Roles,
    *,
    read_role: str | None = None,
    write_role: str | None = None,
    **rule_overrides: Any,
) -> RunningGateway:
    upstream = (
        f"mysql://{roles.login}:{roles.password}@{local_mariadb.host}:{local_mariadb.port}"
        f"/{database}?sslmode=disable"
    )
    target = {
        "protocol": "mysql",
        "upstream": upstream,
        "roles": {"read": read_role or roles.read, "write": write_role or roles.write},
    }
    return factory(targets={"shop": target}, rules=[rule(targets=["shop"], **rule_overrides)])


@pytest.fixture
def split(
    mysql_gateway_factory: Callable[..., RunningGateway],
    local_mariadb: MariaDb,
    mysql_database: str,
    roles: Roles,
) -> RunningGateway:
    return split_gateway(mysql_gateway_factory, local_mariadb, mysql_database, roles)


def agent(gateway: RunningGateway) -> pymysql.Connection[Any]:
    return gateway.pymysql(agent_token(gateway), autocommit=True, read_timeout=60)


def run(conn: pymysql.Connection[Any], sql: str, args: Any = None) -> Any:
    with conn.cursor() as cursor:
        affected = cursor.execute(sql, args)
        return cursor.fetchall() if cursor.description else affected


def current_role(conn: pymysql.Connection[Any]) -> object:
    return run(conn, "SELECT CURRENT_ROLE()")[0][0]


def approved(gateway: RunningGateway, work: Callable[[], object]) -> object:
    """Run `work` (which makes one statement wait) while an approver approves it."""
    background = Background(work)
    approve_next(gateway)
    result = background.result()
    assert not isinstance(result, Exception), result
    return result


def mistake(gateway: RunningGateway, *texts: str) -> None:
    """A classifier mistake, simulated: these statements' cached verdicts say read."""
    cache = gateway.gateway.mysql.classifiers.cached("mysql")  # type: ignore[union-attr]
    for sql in texts:
        cache.store(sql, Verdict(StatementClass.READ, ("a classifier mistake",)))


@pytest.mark.timeout(60)
def test_reads_run_as_the_read_role(split: RunningGateway, roles: Roles) -> None:
    with agent(split) as conn:
        assert current_role(conn) == roles.read
        assert run(conn, "SELECT count(*) FROM accounts") == ((60,),)


@pytest.mark.timeout(90)
def test_a_write_the_classifier_misses_meets_the_servers_permission_error(
    split: RunningGateway, roles: Roles, balances: Callable[[], dict[int, int]]
) -> None:
    missed = "UPDATE accounts SET balance = 0 WHERE id = 7"
    prepared = "UPDATE accounts SET balance = 0 WHERE id = ?"
    mistake(split, missed, prepared)
    with agent(split) as conn:
        # An approved write first: the write role came and went.
        assert approved(split, lambda: run(conn, "UPDATE accounts SET balance = 1 WHERE id = 8"))
        # The gate lets the mistaken "read" through; the server refuses it, not the gateway.
        with pytest.raises(pymysql.err.OperationalError) as refused:
            run(conn, missed)
        assert refused.value.args[0] == 1142
        assert SERVER_DENIED in refused.value.args[1]
        assert current_role(conn) == roles.read  # the session goes on
    connector: Any = split.mysql_connector(agent_token(split), autocommit=True)
    try:
        cursor = connector.cursor(prepared=True)
        with pytest.raises(mysql.connector.Error) as prepared_refused:
            cursor.execute(prepared, (7,))
        assert prepared_refused.value.errno == 1142
        assert SERVER_DENIED in str(prepared_refused.value)
    finally:
        connector.close()
    assert (balances()[7], balances()[8]) == (100, 1)


@pytest.mark.timeout(60)
def test_an_approved_write_runs_as_the_write_role_then_the_read_role_returns(
    split: RunningGateway, roles: Roles, balances: Callable[[], dict[int, int]]
) -> None:
    with agent(split) as conn:
        assert approved(split, lambda: run(conn, "UPDATE accounts SET balance = 5 WHERE id = 1"))
        assert current_role(conn) == roles.read
        assert approved(split, lambda: run(conn, "INSERT INTO accounts VALUES (61, 61)")) == 1
        assert current_role(conn) == roles.read
    assert (balances()[1], balances()[61]) == (5, 61)


@pytest.mark.timeout(60)
def test_approved_writes_inside_an_explicit_transaction(
    split: RunningGateway, roles: Roles, balances: Callable[[], dict[int, int]]
) -> None:
    with agent(split) as conn:
        run(conn, "BEGIN")

        def write_then_role() -> object:
            run(conn, "UPDATE accounts SET balance = 2 WHERE id = 2")
            return current_role(conn)

        assert approved(split, write_then_role) == roles.read  # inside the transaction
        approved(split, lambda: run(conn, "UPDATE accounts SET balance = 3 WHERE id = 3"))
        assert balances()[2] == 100  # not committed yet: the role switches did not commit
        run(conn, "COMMIT")
        assert current_role(conn) == roles.read
        # A rollback undoes the writes, and not the return to the read role.
        run(conn, "BEGIN")
        approved(split, lambda: run(conn, "UPDATE accounts SET balance = 4 WHERE id = 4"))
        run(conn, "ROLLBACK")
        assert current_role(conn) == roles.read
    assert (balances()[2], balances()[3], balances()[4]) == (2, 3, 100)


@pytest.mark.timeout(60)
def test_approved_prepared_writes_with_mysql_connector(
    split: RunningGateway, roles: Roles, balances: Callable[[], dict[int, int]]
) -> None:
    conn: Any = split.mysql_connector(agent_token(split), autocommit=True)
    try:
        cursor = conn.cursor(prepared=True)
        update = "UPDATE accounts SET balance = %s WHERE id = %s"
        approved(split, lambda: cursor.execute(update, (11, 11)))
        plain = conn.cursor()
        plain.execute("SELECT CURRENT_ROLE()")
        assert plain.fetchall() == [(roles.read,)]
        conn.start_transaction()
        approved(split, lambda: cursor.execute(update, (12, 12)))
        plain.execute("SELECT CURRENT_ROLE()")
        assert plain.fetchall() == [(roles.read,)]
        conn.commit()
        cursor.close()
    finally:
        conn.close()
    assert (balances()[11], balances()[12]) == (11, 12)


@pytest.mark.timeout(60)
def test_an_approved_write_with_aiomysql_in_a_transaction(
    split: RunningGateway, roles: Roles, balances: Callable[[], dict[int, int]]
) -> None:
    async def session() -> object:
        context = split.ssl_context()
        context.check_hostname = False
        conn = await aiomysql.connect(
            host="127.0.0.1", port=split.mysql_port, user="agent",
            password=agent_token(split), db="shop", ssl=context, autocommit=False,
        )  # fmt: skip
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("BEGIN")
                write = asyncio.ensure_future(
                    cursor.execute("UPDATE accounts SET balance = 13 WHERE id = 13")
                )
                await asyncio.to_thread(approve_next, split)
                await write
                await cursor.execute("SELECT CURRENT_ROLE()")
                role = (await cursor.fetchall())[0][0]
                await conn.commit()
                return role
        finally:
            # Wait until the TLS transport has really closed: left to the garbage
            # collector, its socket warns in whichever test runs next.
            writer = conn._writer
            await conn.ensure_closed()
            if writer is not None:
                await asyncio.wait_for(writer.wait_closed(), PATIENCE_S)

    assert asyncio.run(session()) == roles.read
    assert balances()[13] == 13


@pytest.mark.timeout(60)
def test_writes_the_rules_allow_run_under_the_write_role(
    mysql_gateway_factory: Callable[..., RunningGateway],
    local_mariadb: MariaDb,
    mysql_database: str,
    roles: Roles,
    balances: Callable[[], dict[int, int]],
) -> None:
    gateway = split_gateway(
        mysql_gateway_factory, local_mariadb, mysql_database, roles, write="allow"
    )
    with agent(gateway) as conn:
        for _ in range(2):  # the second time from the classifier's cache
            assert run(conn, "UPDATE accounts SET balance = balance + 1 WHERE id = 20") == 1
            assert current_role(conn) == roles.read
    assert balances()[20] == 102


@pytest.mark.timeout(120)  # two gateways, two held statements: slow on a busy machine
def test_clients_cannot_switch_roles_themselves(
    mysql_gateway_factory: Callable[..., RunningGateway],
    local_mariadb: MariaDb,
    mysql_database: str,
    roles: Roles,
) -> None:
    gateway = split_gateway(
        mysql_gateway_factory, local_mariadb, mysql_database, roles, admin="approve"
    )
    with agent(gateway) as conn:
        # Even approved, a SET ROLE of the client's lasts only until the gateway's own.
        assert approved(gateway, lambda: run(conn, f"SET ROLE {roles.write}")) == 0
        assert current_role(conn) == roles.read
        approved(gateway, lambda: run(conn, "SET ROLE NONE"))
        assert current_role(conn) == roles.read
    denied = split_gateway(mysql_gateway_factory, local_mariadb, mysql_database, roles)
    with agent(denied) as conn:
        for statement in (
            f"SET ROLE {roles.write}",
            "SET ROLE NONE",
            f"SET DEFAULT ROLE {roles.write}",
            f"SET @@role = '{roles.write}'",
            f"SELECT 1; SET ROLE {roles.write}",
        ):
            with pytest.raises(pymysql.err.MySQLError) as refused:
                run(conn, statement)
            assert refused.value.args[0] == 1142
            assert SERVER_DENIED not in refused.value.args[1]  # the gateway's refusal
        assert current_role(conn) == roles.read


@pytest.mark.timeout(60)
def test_reset_connection_keeps_the_read_role(split: RunningGateway, roles: Roles) -> None:
    conn: Any = split.mysql_connector(agent_token(split), autocommit=True)
    try:
        conn.cmd_reset_connection()
        cursor = conn.cursor()
        cursor.execute("SELECT CURRENT_ROLE(), count(*) FROM accounts")
        assert cursor.fetchall() == [(roles.read, 60)]
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_a_read_role_the_server_refuses_refuses_the_login_without_its_reason(
    mysql_gateway_factory: Callable[..., RunningGateway],
    local_mariadb: MariaDb,
    mysql_database: str,
    roles: Roles,
) -> None:
    gateway = split_gateway(
        mysql_gateway_factory, local_mariadb, mysql_database, roles, read_role="no_such_role"
    )
    with pytest.raises(pymysql.err.MySQLError) as refused:
        agent(gateway)
    message = str(refused.value)
    assert "read role" in message
    assert roles.login not in message  # the server's reason names the account: log only


@pytest.mark.timeout(60)
def test_a_write_role_the_server_refuses_refuses_the_statement_not_the_session(
    mysql_gateway_factory: Callable[..., RunningGateway],
    local_mariadb: MariaDb,
    mysql_database: str,
    roles: Roles,
    balances: Callable[[], dict[int, int]],
) -> None:
    gateway = split_gateway(
        mysql_gateway_factory,
        local_mariadb,
        mysql_database,
        roles,
        write_role="airlock_not_granted",
    )
    with agent(gateway) as conn:
        write = Background(lambda: run(conn, "UPDATE accounts SET balance = 0 WHERE id = 30"))
        approve_next(gateway)
        error = write.result()
        assert isinstance(error, pymysql.err.MySQLError)
        assert "write role" in str(error)
        assert current_role(conn) == roles.read
    assert balances()[30] == 100


@pytest.mark.timeout(60)
def test_a_failed_return_to_the_read_role_ends_the_session(
    split: RunningGateway,
    local_mariadb: MariaDb,
    roles: Roles,
    balances: Callable[[], dict[int, int]],
) -> None:
    with agent(split) as conn:
        write = Background(lambda: run(conn, "UPDATE accounts SET balance = 0 WHERE id = 31"))
        [request] = pending(split)
        with local_mariadb.root() as root, root.cursor() as cursor:
            cursor.execute(f"REVOKE {roles.read} FROM '{roles.login}'@'%'")
        decide(split, request["id"], "approve", {})
        assert write.result() == 1  # the write ran, under the write role...
        with pytest.raises(pymysql.err.MySQLError) as ended:
            current_role(conn)  # ...and the session could not go back: it ended
        assert "read role" in str(ended.value)
    assert balances()[31] == 0
