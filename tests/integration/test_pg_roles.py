"""Defence in depth on PostgreSQL: the upstream session runs as the target's read role,
and takes its write role only for what the gate let through (SPEC, "Connecting as an
agent"). A statement the classifier gets wrong meets the server's permission error.

Each test makes its own roles: a read role, a write role, and a NOINHERIT login role
that is a member of both, as docs/security.md tells operators to.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import asyncpg
import psycopg
import pytest
from psycopg import sql

from policy.classify import StatementClass, Verdict
from tests.support.approvals import Background, agent_token, approve_next, connect, rule
from tests.support.gateway import RunningGateway
from tests.support.pgcluster import PgServer

UPDATE = "update accounts set balance = balance + 1 where id = %s"


@dataclass(frozen=True)
class Roles:
    login: str
    read: str
    write: str


@pytest.fixture
def roles(
    local_pg: PgServer, pg_database: str, accounts: Callable[[], dict[int, int]]
) -> Iterator[Roles]:
    tag = secrets.token_hex(4)
    made = Roles(f"airlock_svc_{tag}", f"airlock_reader_{tag}", f"airlock_writer_{tag}")
    read, write, login = (sql.Identifier(n) for n in (made.read, made.write, made.login))
    with psycopg.connect(local_pg.dsn(pg_database), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(read))
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(write))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT").format(login))
        admin.execute(sql.SQL("GRANT {}, {} TO {}").format(read, write, login))
        admin.execute(sql.SQL("GRANT SELECT ON accounts TO {}").format(read))
        admin.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON accounts TO {}").format(write)
        )
    yield made
    with psycopg.connect(local_pg.dsn(pg_database), autocommit=True) as admin:
        for role in (login, read, write):
            admin.execute(sql.SQL("DROP OWNED BY {}").format(role))
            admin.execute(sql.SQL("DROP ROLE {}").format(role))


@pytest.fixture
def split(
    gateway_factory: Callable[..., RunningGateway],
    local_pg: PgServer,
    pg_database: str,
    roles: Roles,
) -> RunningGateway:
    upstream = (
        f"postgresql://{roles.login}@{local_pg.host}:{local_pg.port}/{pg_database}?sslmode=disable"
    )
    target = {"protocol": "postgres", "upstream": upstream}
    target["roles"] = {"read": roles.read, "write": roles.write}  # type: ignore[assignment]
    return gateway_factory(targets={"orders": target}, rules=[rule()])


def current_user(agent: psycopg.Connection[tuple[object, ...]]) -> object:
    row = agent.execute("select current_user").fetchone()
    assert row is not None
    return row[0]


@pytest.mark.timeout(60)
def test_reads_run_as_the_read_role(split: RunningGateway, roles: Roles) -> None:
    with connect(split, agent_token(split)) as agent:
        assert current_user(agent) == roles.read
        assert agent.execute("select count(*) from accounts").fetchone() == (60,)


@pytest.mark.timeout(60)
def test_a_write_the_classifier_misses_meets_the_servers_permission_error(
    split: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    # A classifier mistake, simulated: this UPDATE's verdict in the cache says read.
    missed = "update accounts set balance = 0 where id = 7"
    cache = split.gateway.postgres.classifiers.cached("postgres")  # type: ignore[union-attr]
    mistake = Verdict(StatementClass.READ, ("a classifier mistake",))
    cache.store(missed, mistake)
    cache.store(missed.replace("= 7", "= $1"), mistake)
    with connect(split, agent_token(split)) as agent:
        # An approved write first: the write role came and went.
        run = Background(lambda: agent.execute(UPDATE, (8,)))
        approve_next(split)
        assert not isinstance(run.result(), Exception), run.result()
        # The gate lets the mistaken "read" through; the server refuses it, not the gateway.
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="for table accounts"):
            agent.execute(missed, prepare=False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="for table accounts"):
            agent.execute(missed.replace("= 7", "= %s"), (7,))  # and in the extended protocol
        agent.execute("select 1")  # the session goes on
    assert (accounts()[7], accounts()[8]) == (100, 101)


@pytest.mark.timeout(60)
def test_an_approved_write_runs_as_the_write_role_then_the_read_role_returns(
    split: RunningGateway, roles: Roles, accounts: Callable[[], dict[int, int]]
) -> None:
    with connect(split, agent_token(split)) as agent:
        run = Background(lambda: agent.execute(UPDATE, (1,)))  # extended protocol
        approve_next(split)
        assert not isinstance(run.result(), Exception), run.result()
        assert current_user(agent) == roles.read
    assert accounts()[1] == 101


@pytest.mark.timeout(60)
def test_approved_writes_inside_an_explicit_transaction(
    split: RunningGateway, roles: Roles, accounts: Callable[[], dict[int, int]]
) -> None:
    with connect(split, agent_token(split)) as agent:
        agent.execute("begin")

        def write_then_read() -> object:
            agent.execute(UPDATE, (2,))
            return current_user(agent)

        run = Background(write_then_read)
        approve_next(split)
        assert run.result() == roles.read  # back to the read role, inside the transaction
        run = Background(lambda: agent.execute(UPDATE, (3,)))
        approve_next(split)
        assert not isinstance(run.result(), Exception), run.result()
        agent.execute("commit")
        assert current_user(agent) == roles.read
    assert (accounts()[2], accounts()[3]) == (101, 101)


@pytest.mark.timeout(60)
def test_a_failed_approved_write_in_a_transaction_leaves_the_read_role_after_rollback(
    split: RunningGateway, roles: Roles, accounts: Callable[[], dict[int, int]]
) -> None:
    with connect(split, agent_token(split)) as agent:
        agent.execute("begin")
        run = Background(
            lambda: agent.execute(
                "update accounts set balance = 1 / (balance - 100) where id = %s", (4,)
            )
        )
        approve_next(split)
        assert isinstance(run.result(), psycopg.errors.DivisionByZero)
        agent.execute("rollback")
        assert current_user(agent) == roles.read
        missed = "update accounts set balance = 0 where id = 5"
        cache = split.gateway.postgres.classifiers.cached("postgres")  # type: ignore[union-attr]
        cache.store(missed, Verdict(StatementClass.READ, ("a classifier mistake",)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="for table accounts"):
            agent.execute(missed, prepare=False)
    assert (accounts()[4], accounts()[5]) == (100, 100)


@pytest.mark.timeout(60)
def test_an_approved_simple_query_write_with_asyncpg(
    split: RunningGateway, roles: Roles, accounts: Callable[[], dict[int, int]]
) -> None:
    async def agent() -> tuple[object, object]:
        conn = await asyncpg.connect(**split.asyncpg_params(agent_token(split)), timeout=10)
        try:
            # No arguments: asyncpg sends a simple Query.
            write = asyncio.ensure_future(
                conn.execute("update accounts set balance = 7 where id = 6")
            )
            await asyncio.to_thread(approve_next, split)
            tag = await write
            return tag, await conn.fetchval("select current_user")
        finally:
            await conn.close()

    assert asyncio.run(agent()) == ("UPDATE 1", roles.read)
    assert accounts()[6] == 7


@pytest.mark.timeout(60)
def test_clients_cannot_switch_roles_themselves(split: RunningGateway, roles: Roles) -> None:
    with connect(split, agent_token(split)) as agent:
        for statement in (
            f"set role {roles.write}",
            "reset role",
            f"select set_config('role', '{roles.write}', false)",
            "set session authorization default",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                agent.execute(statement)
        assert current_user(agent) == roles.read


@pytest.mark.timeout(60)
def test_rollback_to_a_savepoint_made_under_the_write_role_does_not_bring_it_back(
    split: RunningGateway, roles: Roles, accounts: Callable[[], dict[int, int]]
) -> None:
    # An approved multi-statement Query made a savepoint while it held the write role:
    # ROLLBACK TO that savepoint restores the role the savepoint saw.
    missed = "update accounts set balance = 0 where id = 10"
    cache = split.gateway.postgres.classifiers.cached("postgres")  # type: ignore[union-attr]
    cache.store(missed, Verdict(StatementClass.READ, ("a classifier mistake",)))

    async def agent() -> list[object]:
        conn = await asyncpg.connect(**split.asyncpg_params(agent_token(split)), timeout=10)
        seen: list[object] = []
        try:
            await conn.execute("begin")
            write = asyncio.ensure_future(
                conn.execute("update accounts set balance = 9 where id = 9; savepoint s")
            )
            await asyncio.to_thread(approve_next, split)
            await write
            seen.append(await conn.fetchval("select current_user"))
            await conn.execute("rollback to savepoint s")
            seen.append(await conn.fetchval("select current_user"))
            try:
                await conn.execute(missed)
            except asyncpg.InsufficientPrivilegeError as error:
                seen.append(type(error).__name__)
            await conn.execute("rollback")
            seen.append(await conn.fetchval("select current_user"))
        finally:
            await conn.close()
        return seen

    assert asyncio.run(agent()) == [
        roles.read,
        roles.read,
        "InsufficientPrivilegeError",
        roles.read,
    ]
    assert accounts()[10] == 100
