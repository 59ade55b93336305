"""Writes wait for a human: real agents (psycopg, asyncpg), the real server, approvers
deciding through the `airlock` CLI and the HTTP API."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime

import asyncpg
import psycopg
import pytest

from proxy.approvals.webhooks import generate_secret, verify
from tests.support.approvals import (
    REQUEST_ID,
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
from tests.support.clock import SteppedClock
from tests.support.gateway import RunningGateway
from tests.support.waiting import PATIENCE_S, wait_until


@pytest.mark.timeout(90)
def test_reads_pass_and_a_write_waits_until_an_approver_approves_with_the_cli(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    notices: list[str] = []
    with connect(gated, agent_token(gated), notices) as agent:
        assert agent.execute("select balance from accounts where id = 1").fetchone() == (100,)
        write = Background(
            lambda: agent.execute("update accounts set balance = 50 where id = 1").rowcount
        )
        [request] = pending(gated)
        time.sleep(0.3)  # not a wait for an event: a window in which nothing may happen
        assert write.thread.is_alive()  # the agent waits...
        assert accounts()[1] == 100  # ...and the server has not seen the write
        assert request["sql"] == "update accounts set balance = 50 where id = 1"
        assert request["class"] == "write"
        assert request["requester"]["subject"] == "agent-1"
        assert request["session_state"] == "open"
        # The agent was told at once which request holds it and how it is approved.
        assert notices
        assert request["id"] in notices[0]
        assert f"airlock approve {request['id']}" in notices[0]

        listed = airlock("approvals", "list", "--server", gated.api_url, token=dba_token(gated))
        assert listed.returncode == 0, listed.stderr
        assert request["id"] in listed.stdout
        assert "agent-1" in listed.stdout

        done = airlock("approve", request["id"], "--server", gated.api_url, token=dba_token(gated))
        assert done.returncode == 0, done.stderr
        assert write.result() == 1
        assert accounts()[1] == 50
        # The grant was for that statement once: the same write waits again.
        again = Background(
            lambda: agent.execute("update accounts set balance = 50 where id = 1").rowcount
        )
        [second] = pending(gated)
        assert second["id"] != request["id"]
        airlock(
            "deny",
            second["id"],
            "--reason",
            "once is enough",
            "--server",
            gated.api_url,
            token=dba_token(gated),
        )
        assert isinstance(again.result(), psycopg.errors.InsufficientPrivilege)


@pytest.mark.timeout(60)
def test_a_parameterised_read_that_ends_in_an_empty_string_runs_at_once(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    # psycopg sends `... = $1 ... <> ''`: a text sqlglot 30.30 alone cannot tokenize.
    notices: list[str] = []
    with connect(gated, agent_token(gated), notices) as agent:
        query = "select balance from accounts where id = %s and balance::text <> ''"
        assert agent.execute(query, (1,)).fetchone() == (100,)
        assert agent.execute(query, (1,), prepare=True).fetchone() == (100,)
    assert notices == []  # no hold was announced
    status, body = api(gated, "GET", "/api/v1/approvals", dba_token(gated))
    assert status == 200
    assert body["approvals"] == []


@pytest.mark.timeout(60)
def test_deny_gives_42501_naming_approver_and_reason_and_the_session_stays_usable(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    with connect(gated, agent_token(gated)) as agent:
        write = Background(lambda: agent.execute("delete from accounts where id = 2"))
        [request] = pending(gated)
        status, body = decide(
            gated,
            request["id"],
            "deny",
            {"reason": "not during business hours"},
        )
        assert status == 200
        assert body["state"] == "denied"
        error = write.result()
        assert isinstance(error, psycopg.errors.InsufficientPrivilege)
        assert error.sqlstate == "42501"
        assert "dba-1" in str(error)
        assert "not during business hours" in str(error)
        assert 2 in accounts()
        assert agent.execute("select count(*) from accounts").fetchone() == (60,)
        status, body = decide(gated, request["id"], "approve", {})
        assert status == 409


@pytest.mark.timeout(60)
def test_a_denied_write_aborts_the_open_transaction_as_a_server_error_would(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    with psycopg.connect(gated.dsn(agent_token(gated))) as agent:  # not autocommit
        assert agent.execute("select 1").fetchone() == (1,)  # BEGIN; a read
        write = Background(lambda: agent.execute("update accounts set balance = 0 where id = 3"))
        [request] = pending(gated)
        decide(
            gated,
            request["id"],
            "deny",
            {"reason": "no"},
        )
        assert isinstance(write.result(), psycopg.errors.InsufficientPrivilege)
        # The transaction is failed, exactly as after any error in PostgreSQL...
        assert agent.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            agent.execute("select 1")
        agent.rollback()
        # ...and after ROLLBACK the session goes on.
        assert agent.execute("select balance from accounts where id = 3").fetchone() == (100,)


@pytest.mark.timeout(60)
def test_a_hold_that_times_out_gives_57014_and_the_request_stays_pending(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(rules=[rule(hold_timeout="1s")])
    with connect(gateway, agent_token(gateway)) as agent:
        # A real hold timeout, end to end: the hold waits on the event loop's timer, which
        # no injected clock moves; one second is short, and the window is wide.
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as caught:
            agent.execute("update accounts set balance = 1 where id = 4")
        assert 0.9 < time.monotonic() - started < 10
        assert caught.value.sqlstate == "57014"
        [request] = pending(gateway)
        assert request["id"] in str(caught.value)
        assert request["state"] == "pending"
        assert accounts()[4] == 100
        assert agent.execute("select 1").fetchone() == (1,)
        # Approved later, the same statement runs when retried.
        decide(gateway, request["id"], "approve", {})
        assert agent.execute("update accounts set balance = 1 where id = 4").rowcount == 1
        assert accounts()[4] == 1


@pytest.mark.timeout(60)
def test_reject_mode_refuses_at_once_and_the_approved_retry_runs_within_the_grant(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(rules=[rule(hold="reject")])
    sql = "update accounts set balance = %s where id = %s"
    with connect(gateway, agent_token(gateway)) as agent:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            agent.execute(sql, (7, 5))
        found = REQUEST_ID.search(str(caught.value))
        assert found is not None
        request_id = found.group(0)
        [request] = pending(gateway)
        assert request["id"] == request_id
        assert request["hold"] == "reject"
        assert [p["value"] for p in request["parameters"]] == ["7", "5"]
        assert accounts()[5] == 100
        decide(gateway, request_id, "approve", {})
        # Different parameters are a different statement: refused, with a new request.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            agent.execute(sql, (8, 5))
        assert agent.execute(sql, (7, 5)).rowcount == 1
        assert accounts()[5] == 7
        # The statement grant is used up.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            agent.execute(sql, (7, 5))


@pytest.mark.timeout(60)
def test_approve_with_a_ttl_above_the_rules_grant_ttl_says_the_grant_was_capped(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(rules=[rule(hold="reject", grant_ttl="10m")])
    with connect(gateway, agent_token(gateway)) as agent:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            agent.execute("update accounts set balance = 1 where id = 4")
        [request] = pending(gateway)
        approved = airlock(
            "approve", request["id"], "--ttl", "2h", "--json",
            "--server", gateway.api_url, token=dba_token(gateway),
        )  # fmt: skip
        assert approved.returncode == 0, approved.stderr
        assert approved.stderr == (
            "airlock: note: --ttl 2h is longer than the rule's grant_ttl (10m): "
            "the grant lasts 10m\n"
        )
        decision = json.loads(approved.stdout)["decision"]
        lasts_s = datetime.fromisoformat(decision["expires_at"]) - datetime.fromisoformat(
            decision["at"]
        )
        assert lasts_s.total_seconds() == pytest.approx(600, abs=1)
        # Within the rule's limit, nothing is said.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            agent.execute("update accounts set balance = 2 where id = 5")
        [second] = pending(gateway)
        within = airlock(
            "approve", second["id"], "--ttl", "5m", "--server", gateway.api_url,
            token=dba_token(gateway),
        )  # fmt: skip
        assert (within.returncode, within.stderr) == (0, "")


@pytest.mark.timeout(60)
def test_session_scope_lets_later_writes_through_until_the_grant_expires(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    # The grant's two seconds pass when the test says so, not while a busy machine
    # runs the writes meant to fall inside them.
    clock = SteppedClock()
    gated.use_clock(clock)
    with connect(gated, agent_token(gated)) as agent:
        first = Background(lambda: agent.execute("update accounts set balance = 11 where id = 6"))
        [request] = pending(gated)
        status, body = decide(
            gated,
            request["id"],
            "approve",
            {"scope": "session", "ttl_s": 2, "comment": "migration window"},
        )
        assert status == 200
        assert body["decision"]["scope"] == "session"
        assert body["decision"]["comment"] == "migration window"
        first.result()
        for account in (7, 8, 9):  # no new requests within the grant
            agent.execute("update accounts set balance = 11 where id = %s", (account,))
        assert [accounts()[i] for i in (6, 7, 8, 9)] == [11, 11, 11, 11]
        clock.advance(1.9)  # still inside the grant
        agent.execute("update accounts set balance = 12 where id = 9")
        assert accounts()[9] == 12
        clock.advance(0.2)  # past it
        late = Background(lambda: agent.execute("update accounts set balance = 11 where id = 10"))
        [newer] = pending(gated)
        assert newer["id"] != request["id"]
        assert newer["sql"] == "update accounts set balance = 11 where id = 10"
        decide(
            gated,
            newer["id"],
            "deny",
            {"reason": "window closed"},
        )
        assert isinstance(late.result(), psycopg.errors.InsufficientPrivilege)
        assert accounts()[10] == 100


@pytest.mark.timeout(60)
def test_only_approver_groups_decide_and_nobody_approves_their_own_request(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    # agent-2 is an agent and also an approver; it still cannot approve its own request.
    gateway = gateway_factory(rules=[rule(groups=["data-agents", "oncall-dba"])])
    both = gateway.issuer.mint(sub="agent-2", groups=("data-agents", "oncall-dba"))
    with connect(gateway, both) as agent:
        write = Background(lambda: agent.execute("update accounts set balance = 0 where id = 11"))
        [request] = pending(gateway)
        path = f"/api/v1/approvals/{request['id']}/approve"
        status, body = api(gateway, "POST", path, both, {})
        assert status == 403
        assert "own request" in body["error"]["message"]
        outsider = gateway.issuer.mint(sub="someone", groups=("data-agents",))
        status, body = api(gateway, "POST", path, outsider, {})
        assert status == 404  # not theirs to see: as if it did not exist
        assert body["error"]["code"] == "not_found"
        status, body = api(gateway, "POST", path, "not-a-token", {})
        assert status == 401
        status, _ = api(
            gateway, "POST", "/api/v1/approvals/apr_000000000000/approve", dba_token(gateway), {}
        )
        assert status == 404
        denied = airlock("approve", request["id"], "--server", gateway.api_url, token=both)
        assert denied.returncode == 1
        assert "own request" in denied.stderr
        api(gateway, "POST", path, dba_token(gateway), {})
        write.result()
    assert accounts()[11] == 0


@pytest.mark.timeout(60)
def test_a_prepared_write_shows_its_bound_parameters_to_the_approver(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    async def agent() -> str:
        conn = await asyncpg.connect(**gated.asyncpg_params(agent_token(gated)))
        try:
            statement = await conn.prepare(
                "update accounts set balance = $1 where id = $2 and $3::text is not null"
            )
            return str(await statement.fetch(4242, 12, "ticket 7"))
        finally:
            await conn.close()

    write = Background(lambda: asyncio.run(agent()))
    [request] = pending(gated)
    assert (
        request["sql"] == "update accounts set balance = $1 where id = $2 and $3::text is not null"
    )
    shown = [(p["type"], p["value"]) for p in request["parameters"]]
    assert shown == [("int4", "4242"), ("int4", "12"), ("text", "ticket 7")]
    shown_cli = airlock(
        "approvals", "get", request["id"], "--server", gated.api_url, token=dba_token(gated)
    )
    assert "4242" in shown_cli.stdout
    assert "ticket 7" in shown_cli.stdout
    decide(gated, request["id"], "approve", {})
    write.result()
    assert accounts()[12] == 4242


@pytest.mark.timeout(60)
def test_a_cancel_withdraws_the_held_request(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    with connect(gated, agent_token(gated)) as agent:
        write = Background(lambda: agent.execute("update accounts set balance = 0 where id = 13"))
        [request] = pending(gated)
        agent.cancel_safe()
        error = write.result()
        assert isinstance(error, psycopg.errors.QueryCanceled)
        status, body = api(gated, "GET", f"/api/v1/approvals/{request['id']}", dba_token(gated))
        assert body["state"] == "withdrawn"
        status, _ = decide(gated, request["id"], "approve", {})
        assert status == 409
        assert agent.execute("select balance from accounts where id = 13").fetchone() == (100,)


@pytest.mark.timeout(120)
def test_fifty_agents_each_holding_a_write_all_complete_once_approved(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    async def one(account: int) -> str:
        conn = await asyncpg.connect(**gated.asyncpg_params(agent_token(gated, f"agent-{account}")))
        try:
            return str(
                await conn.execute(
                    "update accounts set balance = $1 where id = $1", account, timeout=60
                )
            )
        finally:
            await conn.close()

    async def all_agents() -> list[str]:
        return list(await asyncio.gather(*(one(i) for i in range(1, 51))))

    agents = Background(lambda: asyncio.run(all_agents()))
    requests = pending(gated, timeout_s=30, count=50)
    assert accounts()[1] == 100
    for request in requests:
        status, _ = decide(gated, request["id"], "approve", {})
        assert status == 200
    assert agents.result(60) == ["UPDATE 1"] * 50
    balances = accounts()
    assert all(balances[i] == i for i in range(1, 51))


@pytest.mark.timeout(60)
def test_denied_classes_are_refused_at_once_without_a_request(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    with connect(gated, agent_token(gated)) as agent:
        for sql in ("drop table accounts", "set role postgres", "select pg_sleep(0)"):
            with pytest.raises(psycopg.Error) as caught:
                agent.execute(sql)
            assert caught.value.sqlstate in ("42501",), sql
        assert agent.execute("select count(*) from accounts").fetchone() == (60,)
    _status, body = api(gated, "GET", "/api/v1/approvals?state=all", dba_token(gated))
    assert body["approvals"] == []


@pytest.mark.timeout(60)
def test_a_write_inside_a_pipeline_waits_and_a_denial_aborts_the_rest_of_the_batch(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    with connect(gated, agent_token(gated)) as agent:

        def pipeline() -> object:
            with agent.pipeline():
                agent.execute("select 1")
                agent.execute("update accounts set balance = 0 where id = %s", (14,))
                agent.execute("update accounts set balance = 0 where id = %s", (15,))
            return None

        run = Background(pipeline)
        [request] = pending(gated)
        assert request["parameters"][0]["value"] == "14"
        decide(
            gated,
            request["id"],
            "deny",
            {"reason": "no"},
        )
        assert isinstance(run.result(), psycopg.errors.InsufficientPrivilege)
        assert accounts()[14] == 100
        assert accounts()[15] == 100
        assert agent.execute("select 2").fetchone() == (2,)


@pytest.mark.timeout(60)
def test_requests_survive_a_gateway_restart_marked_session_gone(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(rules=[rule(hold="reject")])
    with (
        connect(gateway, agent_token(gateway)) as agent,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        agent.execute("update accounts set balance = 3 where id = 16")
    [before] = pending(gateway)
    gateway.stop()
    document_dir = gateway.settings.data_dir
    again = gateway_factory(rules=[rule(hold="reject")], data_dir=str(document_dir))
    [after] = pending(again)
    assert after["id"] == before["id"]
    assert after["state"] == "pending"
    assert after["session_state"] == "gone"
    decide(again, after["id"], "approve", {})
    with connect(again, agent_token(again)) as agent:
        assert agent.execute("update accounts set balance = 3 where id = 16").rowcount == 1
    assert accounts()[16] == 3


class Receiver:
    """A webhook receiver on loopback: records each POST; answers with `statuses` in turn."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = outer.statuses.pop(0) if outer.statuses else 200
                if status == 200:
                    outer.received.append((dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(
        self, count: int, timeout_s: float = PATIENCE_S
    ) -> list[tuple[dict[str, str], bytes]]:
        wait_until(lambda: len(self.received) >= count, timeout_s, f"{count} webhooks")
        return self.received[:count]


@pytest.mark.timeout(60)
def test_webhooks_announce_requests_and_decisions_signed_and_never_delay_a_hold(
    gateway_factory: Callable[..., RunningGateway],
    accounts: Callable[[], dict[int, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = generate_secret()
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", secret)
    flaky = Receiver(statuses=[500, 503])  # fails twice, then takes the event
    slack = Receiver()
    dead = "http://127.0.0.1:9/unreachable"  # nothing listens: retried in the background
    gateway = gateway_factory(
        webhooks=[{"url": flaky.url, "secret_env": "TEST_WEBHOOK_SECRET"}, {"url": dead}],
        rules=[rule(webhooks=[{"url": slack.url, "format": "slack"}])],
    )
    with connect(gateway, agent_token(gateway)) as agent:
        write = Background(lambda: agent.execute("update accounts set balance = 9 where id = 17"))
        [request] = pending(gateway)  # the hold is there while the webhooks are retried
        decide(gateway, request["id"], "approve", {})
        write.result()
    events = flaky.events(2)
    for headers, body in events:
        verify(secret, headers, body)  # raises unless the Standard Webhooks signature holds
    kinds = [json.loads(body)["type"] for _, body in events]
    assert kinds == ["approval.requested", "approval.decided"]
    decided = json.loads(events[1][1])["data"]
    assert decided["id"] == request["id"]
    assert decided["decision"]["by"] == "dba-1"
    [(_, first), _] = slack.events(2)
    assert request["id"] in json.dumps(json.loads(first))
    assert "text" in json.loads(first)


@pytest.mark.timeout(60)
def test_huge_and_deeply_nested_statements_never_stall_the_gateway(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    with connect(gated, agent_token(gated)) as agent, connect(gated, agent_token(gated)) as other:
        deep = "select " + "(" * 100_000 + "1" + ")" * 100_000
        started = time.monotonic()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            agent.execute(deep)  # unknown: refused, as the strictest class, never parsed
        assert time.monotonic() - started < 5
        # A 300-row INSERT is parsed in the worker process; meanwhile others are served.
        values = ", ".join(f"({i}, {i})" for i in range(1000, 1300))
        sql = f"insert into accounts values {values}"  # noqa: S608 (integers only)
        insert = Background(lambda: agent.execute(sql))
        assert other.execute("select 1").fetchone() == (1,)
        [request] = pending(gated, timeout_s=30)
        assert request["class"] == "write"
        decide(gated, request["id"], "approve", {})
        insert.result()
        assert len(accounts()) == 60 + 300


@pytest.mark.timeout(60)
def test_a_session_grant_given_to_a_rejected_statement_covers_the_sessions_later_writes(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(rules=[rule(hold="reject")])
    with connect(gateway, agent_token(gateway)) as agent:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            agent.execute("update accounts set balance = 5 where id = 18")
        [request] = pending(gateway)
        status, _ = decide(
            gateway,
            request["id"],
            "approve",
            {"scope": "session"},
        )
        assert status == 200
        agent.execute("update accounts set balance = 5 where id = 18")
        agent.execute("update accounts set balance = 5 where id = 19")  # another write
        assert (accounts()[18], accounts()[19]) == (5, 5)
    # A new session of the same agent has no grant.
    with (
        connect(gateway, agent_token(gateway)) as agent,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        agent.execute("update accounts set balance = 5 where id = 20")
