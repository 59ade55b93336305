"""The gateway's picture of a PostgreSQL session is the server's: raw wire messages
through the gateway to the real server, in the orders an attacker would send them.

Each test ends by checking the table on the server directly: a write the policy refuses
must not have happened, whatever the gateway answered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest

from protocols.postgres import messages as m
from tests.support.approvals import agent_token, rule
from tests.support.capture_pg_vectors import bind, close, execute, parse, query, sync
from tests.support.gateway import RunningGateway
from tests.support.pgcluster import PgServer
from tests.support.rawpg import RawPg

INSERT = "INSERT INTO accounts VALUES (666, 0)"


@pytest.fixture
def rejecting(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> RunningGateway:
    """Writes need approval and are refused at once (hold: reject); nobody approves."""
    return gateway_factory(rules=[rule(hold="reject")], allow_insecure_loopback=True)


@pytest.fixture
def agent(rejecting: RunningGateway) -> Iterator[RawPg]:
    with RawPg(rejecting.pg_port) as raw:
        answer = raw.login(agent_token(rejecting))
        assert isinstance(answer[-1], m.ReadyForQuery), answer
        yield raw


def exchange(raw: RawPg, messages: bytes, readies: int = 1) -> list[m.BackendMessage]:
    """Send, then read the answers up to the `readies`-th ReadyForQuery."""
    raw.send(messages)
    out: list[m.BackendMessage] = []
    for _ in range(readies):
        answer = raw.read_until_ready()
        assert answer, out
        assert isinstance(answer[-1], m.ReadyForQuery), out + answer
        out += answer
    return out


def tags(answers: list[m.BackendMessage]) -> list[str]:
    return [a.tag for a in answers if isinstance(a, m.CommandComplete)]


def errors(answers: list[m.BackendMessage]) -> list[str]:
    return [a.code for a in answers if isinstance(a, m.ErrorResponse)]


def row_666(local_pg: PgServer, database: str) -> bool:
    with psycopg.connect(local_pg.dsn(database)) as direct:
        return direct.execute("select 1 from accounts where id = 666").fetchone() is not None


def test_a_batch_the_server_failed_changes_no_statement_name(
    agent: RawPg, local_pg: PgServer, pg_database: str
) -> None:
    # Issue 14's repro: the Close and Parse after the failed Bind never ran on the server.
    assert errors(exchange(agent, parse("s", INSERT) + sync())) == []
    failed = exchange(
        agent, bind("", "no_such_stmt") + close(b"S", "s") + parse("s", "SELECT 1") + sync()
    )
    assert errors(failed) == ["26000"]
    ran = exchange(agent, bind("", "s") + execute("") + sync())
    assert errors(ran) == ["42501"]  # the INSERT it really is, refused
    assert tags(ran) == []
    assert not row_666(local_pg, pg_database)


def test_the_same_pipelined_in_one_write(
    agent: RawPg, local_pg: PgServer, pg_database: str
) -> None:
    answers = exchange(
        agent,
        parse("s", INSERT)
        + sync()
        + bind("", "no_such_stmt")
        + close(b"S", "s")
        + parse("s", "SELECT 1")
        + sync()
        + bind("", "s")
        + execute("")
        + sync(),
        readies=3,
    )
    assert errors(answers) == ["26000", "42501"]
    assert not row_666(local_pg, pg_database)


@pytest.mark.parametrize(
    "failing",
    [
        parse("", "SELEC oops"),  # fails at parse
        bind("", "no_such_stmt"),  # fails at bind
        parse("z", "SELECT 1/0") + bind("", "z") + execute(""),  # fails at execute
    ],
    ids=["parse", "bind", "execute"],
)
def test_names_changed_after_an_error_keep_their_old_meaning(
    agent: RawPg, local_pg: PgServer, pg_database: str, failing: bytes
) -> None:
    exchange(agent, parse("w", INSERT) + parse("r", "SELECT 1") + sync())
    # Swap the names after the failure: the server skips the swap.
    swap = close(b"S", "w") + close(b"S", "r") + parse("w", "SELECT 1") + parse("r", INSERT)
    assert len(errors(exchange(agent, failing + swap + sync()))) == 1
    for name in ("w", "r"):
        answers = exchange(agent, bind("", name) + execute("") + sync())
        assert errors(answers) == (["42501"] if name == "w" else []), name
    assert not row_666(local_pg, pg_database)


def test_sql_fetch_of_a_protocol_portal_bound_to_a_write_is_refused(
    agent: RawPg, local_pg: PgServer, pg_database: str
) -> None:
    # FETCH reads as a read, but it runs the portal: here a DELETE ... RETURNING.
    exchange(agent, query("BEGIN"))
    exchange(agent, parse("d", "DELETE FROM accounts RETURNING id") + bind("p", "d") + sync())
    answers = exchange(agent, query("FETCH ALL FROM p"))
    assert errors(answers) == ["42501"]
    exchange(agent, query("ROLLBACK"))
    with psycopg.connect(local_pg.dsn(pg_database)) as direct:
        assert direct.execute("select count(*) from accounts").fetchone() == (60,)


def flush() -> bytes:
    return m.frame(b"H", b"")


def test_a_simple_query_inside_an_extended_batch_is_judged_in_a_clean_state(
    agent: RawPg, local_pg: PgServer, pg_database: str
) -> None:
    # asyncpg sends Parse, Describe, Flush, then a Query; after a failure in the batch the
    # server would skip the Query unanswered, so the gateway ends the batch first.
    agent.send(parse("w", INSERT) + m.frame(b"D", b"S" + m.cstring("w")) + flush())
    while not isinstance(answer := agent.read(), m.OtherBackendMessage) or answer.type != b"n":
        assert answer is not None  # ParseComplete, ParameterDescription, then NoData
    answers = exchange(agent, query("SELECT 2"))
    assert tags(answers) == ["SELECT 1"]
    assert sum(isinstance(a, m.ReadyForQuery) for a in answers) == 1
    # The statement the batch parsed is known: binding it runs the INSERT, refused.
    assert errors(exchange(agent, bind("", "w") + execute("") + sync())) == ["42501"]
    # A batch that failed before the Query: the Query still gets its answer.
    agent.send(parse("", "SELEC oops") + flush())
    assert isinstance(agent.read(), m.ErrorResponse)
    answers = exchange(agent, query("SELECT 3"))
    assert tags(answers) == ["SELECT 1"]
    assert not row_666(local_pg, pg_database)


def test_ordinary_pipelining_still_runs_reads_without_waiting(agent: RawPg) -> None:
    # Three batches in one write, each naming the statement the one before parsed.
    answers = exchange(
        agent,
        parse("a", "SELECT 1")
        + sync()
        + bind("", "a")
        + execute("")
        + sync()
        + bind("", "a")
        + execute("")
        + close(b"S", "a")
        + sync(),
        readies=3,
    )
    assert errors(answers) == []
    assert tags(answers) == ["SELECT 1", "SELECT 1"]


def test_a_flush_after_sync_opens_no_batch(agent: RawPg) -> None:
    # psycopg's pipeline sends Sync, then Flush, then carries on with simple Queries.
    flush = m.frame(b"H", b"")
    answers = exchange(agent, parse("", "SELECT 1") + bind("", "") + execute("") + sync() + flush)
    assert tags(answers) == ["SELECT 1"]
    assert tags(exchange(agent, query("SELECT 2"))) == ["SELECT 1"]


def test_a_statement_replaced_before_a_query_in_its_batch_is_judged_as_its_new_text(
    agent: RawPg, local_pg: PgServer, pg_database: str
) -> None:
    # Found by the differential fuzzer: Close and Parse with no Sync, then a Query. The
    # server ran the Close and Parse (nothing failed before them): s is the INSERT now.
    assert errors(exchange(agent, parse("s", "SELECT 1") + sync())) == []
    replaced = close(b"S", "s") + parse("s", INSERT) + query("SELECT 2")
    assert errors(exchange(agent, replaced)) == []
    assert errors(exchange(agent, bind("", "s") + execute("") + sync())) == ["42501"]
    assert not row_666(local_pg, pg_database)


def test_a_statement_closed_before_a_query_in_its_batch_is_gone(
    rejecting: RunningGateway, agent: RawPg
) -> None:
    assert errors(exchange(agent, parse("s", "SELECT 1") + sync())) == []
    exchange(agent, close(b"S", "s") + query("SELECT 2"))
    listener = rejecting.gateway.postgres
    assert listener is not None
    [session] = listener.sessions
    assert session.gate is not None
    assert session.gate.known_statements() == {}  # as the server: s is gone
