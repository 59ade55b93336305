"""The hold seam end to end: a statement paused in the gateway while a real
driver waits, then forwarded or refused. Issue 3 plugs classification and
approvals into `PgListener.hold_policy`; here a test policy holds UPDATEs.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from protocols.errors import StatementDenied
from proxy.pg_server import PgSession
from tests.support.gateway import RunningGateway
from tests.support.pgcluster import PgServer


def holds_updates(_kind: int, raw: bytes) -> bool:
    return b"update" in raw.lower()


@pytest.fixture
def holding_gateway(
    gateway: RunningGateway, local_pg: PgServer, pg_database: str
) -> RunningGateway:
    with psycopg.connect(local_pg.dsn(pg_database), autocommit=True) as admin:
        admin.execute("create table accounts (id int primary key, balance int)")
        admin.execute("insert into accounts values (1, 100)")

    def install() -> None:
        assert gateway.gateway.postgres is not None
        gateway.gateway.postgres.hold_policy = holds_updates

    gateway.call(install)
    return gateway


def held_session(gateway: RunningGateway, timeout_s: float = 5.0) -> PgSession:
    def find() -> PgSession | None:
        assert gateway.gateway.postgres is not None
        for session in gateway.gateway.postgres.sessions:
            if session.relay is not None and session.relay.held is not None:
                return session
        return None

    deadline = time.monotonic() + timeout_s
    while (session := gateway.call(find)) is None:
        assert time.monotonic() < deadline, "no statement was held"
        time.sleep(0.02)
    return session


def balance(local_pg: PgServer, pg_database: str) -> int:
    with psycopg.connect(local_pg.dsn(pg_database)) as direct:
        row = direct.execute("select balance from accounts where id = 1").fetchone()
        assert row is not None
        return int(row[0])


def run_in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except Exception as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


@pytest.mark.timeout(60)
def test_a_held_statement_waits_then_runs_when_released(
    holding_gateway: RunningGateway, local_pg: PgServer, pg_database: str
) -> None:
    gateway = holding_gateway
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    with psycopg.connect(gateway.dsn(token), autocommit=True) as agent:
        assert agent.execute("select balance from accounts").fetchone() == (100,)
        thread, outcome = run_in_thread(
            lambda: agent.execute("update accounts set balance = 50 where id = 1").rowcount
        )
        session = held_session(gateway)
        time.sleep(0.3)
        assert thread.is_alive()  # the client waits
        assert balance(local_pg, pg_database) == 100  # and the server never saw the write
        gateway.call(lambda: session.release_held(forward=True))
        thread.join(timeout=10)
        assert outcome == [1]
        assert balance(local_pg, pg_database) == 50
        assert agent.execute("select 1").fetchone() == (1,)


def update_to_zero(agent: psycopg.Connection[tuple[object, ...]], prepare: bool) -> object:
    if prepare:
        sql = "update accounts set balance = %s where id = 1"
        return agent.execute(sql, (0,), prepare=True)
    return agent.execute("update accounts set balance = 0 where id = 1")


@pytest.mark.timeout(60)
def test_a_refused_statement_gets_42501_and_the_session_stays_usable(
    holding_gateway: RunningGateway, local_pg: PgServer, pg_database: str
) -> None:
    gateway = holding_gateway
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    for prepare in (False, True):  # simple protocol, then extended with a parameter
        with psycopg.connect(gateway.dsn(token), autocommit=True) as agent:
            thread, outcome = run_in_thread(functools.partial(update_to_zero, agent, prepare))
            session = held_session(gateway)
            denial = StatementDenied("denied by dba-1: not during business hours")
            gateway.call(functools.partial(session.release_held, forward=False, error=denial))
            thread.join(timeout=10)
            assert len(outcome) == 1
            assert isinstance(outcome[0], psycopg.errors.InsufficientPrivilege)
            assert "dba-1" in str(outcome[0])
            assert agent.execute("select balance from accounts").fetchone() == (100,)
    assert balance(local_pg, pg_database) == 100
