"""The two-person rule with a real gateway, real PostgreSQL and psycopg agents: a class
that needs two distinct approvers runs only once both approve through the API; one
denial decides; the same approver twice counts once; the CLI, webhooks and the
transcript follow each decision; the history stays listable with filters."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.test_pg_approvals import Receiver
from tests.support.approvals import (
    Background,
    agent_token,
    airlock,
    api,
    connect,
    dba_token,
    pending,
    rule,
)
from tests.support.gateway import RunningGateway

UPDATE = "update accounts set balance = 1 where id = 5"


def two_person(gateway_factory: Callable[..., RunningGateway], **overrides: Any) -> RunningGateway:
    return gateway_factory(rules=[rule(approvals_required={"write": 2})], **overrides)


def approve_as(gateway: RunningGateway, request_id: str, sub: str, **body: Any) -> tuple[int, Any]:
    path = f"/api/v1/approvals/{request_id}/approve"
    return api(gateway, "POST", path, dba_token(gateway, sub), body)


def deny_as(gateway: RunningGateway, request_id: str, sub: str, reason: str) -> tuple[int, Any]:
    path = f"/api/v1/approvals/{request_id}/deny"
    return api(gateway, "POST", path, dba_token(gateway, sub), {"reason": reason})


@pytest.mark.timeout(90)
def test_a_write_needing_two_approvers_runs_once_two_distinct_dbas_approve(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = two_person(gateway_factory)
    with connect(gateway, agent_token(gateway)) as agent:
        write = Background(lambda: agent.execute(UPDATE).rowcount)
        [request] = pending(gateway)
        assert (request["approvals_required"], request["approvals_received"]) == (2, 0)

        status, first = approve_as(gateway, request["id"], "dba-1", comment="looks fine")
        assert status == 200, first
        assert first["state"] == "pending"
        assert (first["approvals_required"], first["approvals_received"]) == (2, 1)
        assert [(d["by"], d["verdict"]) for d in first["decisions"]] == [("dba-1", "approve")]
        time.sleep(0.3)  # not a wait for an event: a window in which nothing may happen
        assert write.thread.is_alive()  # one approval is not enough...
        assert accounts()[5] == 100  # ...and the server has not seen the write

        # The same approver again counts once: refused, and the request still waits.
        status, again = approve_as(gateway, request["id"], "dba-1")
        assert status == 409, again
        assert "already approved" in again["error"]["message"]
        assert "1 more approval" in again["error"]["message"]
        [still] = pending(gateway)
        assert (still["state"], still["approvals_received"]) == ("pending", 1)
        assert write.thread.is_alive()

        status, second = approve_as(gateway, request["id"], "dba-2")
        assert status == 200, second
        assert second["state"] == "approved"
        assert second["approvals_received"] == 2
        assert second["decision"]["by"] == "dba-2"
        assert write.result() == 1
    assert accounts()[5] == 1

    # The transcript holds each approver's decision, then the statement that ran.
    gateway.wait_for_no_sessions()
    data_dir = gateway.settings.data_dir
    listed = run_cli("sessions", "list", "--data-dir", str(data_dir), "--identity", "agent-1")
    [session] = [row.split()[0] for row in listed.splitlines() if "agent-1" in row]
    replayed = run_cli("replay", session, "--data-dir", str(data_dir), "--json")
    events = [json.loads(line) for line in replayed.splitlines() if line.strip()]
    story = [
        (e["kind"], e["data"].get("state"), e["data"].get("by"))
        for e in events
        if e["kind"] in ("approval.decided", "statement")
        and (e["data"].get("sql") or "") in ("", UPDATE)
    ]
    assert story[-3:] == [
        ("approval.decided", "pending", "dba-1"),
        ("approval.decided", "approved", "dba-2"),
        ("statement", None, None),
    ]
    final = [e["data"] for e in events if e["kind"] == "approval.decided"][-1]
    assert final["approved_by"] == ["dba-1", "dba-2"]
    human = run_cli("replay", session, "--data-dir", str(data_dir))
    assert "1 of 2 approvals" in human
    assert "2 of 2 approvals" in human


@pytest.mark.timeout(90)
def test_one_approval_then_a_denial_denies_the_write(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = two_person(gateway_factory)
    with connect(gateway, agent_token(gateway)) as agent:
        write = Background(lambda: agent.execute(UPDATE))
        [request] = pending(gateway)
        assert approve_as(gateway, request["id"], "dba-1")[0] == 200
        status, denied = deny_as(gateway, request["id"], "dba-2", "not on a Friday")
        assert status == 200, denied
        assert denied["state"] == "denied"
        assert [(d["by"], d["verdict"]) for d in denied["decisions"]] == [
            ("dba-1", "approve"),
            ("dba-2", "deny"),
        ]
        error = write.result()
        assert isinstance(error, psycopg.errors.InsufficientPrivilege)
        assert "not on a Friday" in str(error)
        # Nobody can approve it any more.
        assert approve_as(gateway, request["id"], "dba-3")[0] == 409
    assert accounts()[5] == 100


@pytest.mark.timeout(90)
def test_the_requester_never_counts_and_grant_scope_and_ttl_stay_the_strictest(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = two_person(gateway_factory)
    # An agent that is also an approver may not count towards its own request.
    both = gateway.issuer.mint(sub="agent-dba", groups=("data-agents", "oncall-dba"))
    with connect(gateway, both) as agent:
        write = Background(lambda: agent.execute(UPDATE).rowcount)
        [request] = pending(gateway)
        path = f"/api/v1/approvals/{request['id']}/approve"
        status, refused = api(gateway, "POST", path, both, {})
        assert status == 403, refused
        assert approve_as(gateway, request["id"], "dba-1", scope="session", ttl="10m")[0] == 200
        status, done = approve_as(gateway, request["id"], "dba-2", scope="statement", ttl="5m")
        assert status == 200, done
        assert write.result() == 1
    # One approver chose `statement`: the grant is for that statement only, and it
    # ends at the earlier of the two expiries.
    assert done["decision"]["scope"] == "statement"
    assert done["decision"]["expires_at"] == done["decisions"][1]["expires_at"]
    assert done["decisions"][0]["expires_at"] > done["decisions"][1]["expires_at"]


@pytest.mark.timeout(90)
def test_cli_webhooks_and_history_follow_each_decision(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    hook = Receiver()
    slack = Receiver()
    gateway = two_person(
        gateway_factory,
        webhooks=[{"url": hook.url}, {"url": slack.url, "format": "slack"}],
        web={"public_url": "https://airlock.example.com/"},
    )
    with connect(gateway, agent_token(gateway)) as agent:
        write = Background(lambda: agent.execute(UPDATE).rowcount)
        [request] = pending(gateway)
        first = airlock("approve", request["id"], "--server", gateway.api_url,
                        token=dba_token(gateway, "dba-1"))  # fmt: skip
        assert first.returncode == 0, first.stderr
        assert "recorded; 1 more approval needed" in first.stdout
        assert "1 of 2 (dba-1)" in first.stdout
        listed = airlock("approvals", "list", "--server", gateway.api_url,
                         token=dba_token(gateway, "dba-2"))  # fmt: skip
        assert "pending 1/2" in listed.stdout
        second = airlock("approve", request["id"], "--server", gateway.api_url,
                         token=dba_token(gateway, "dba-2"))  # fmt: skip
        assert second.returncode == 0, second.stderr
        assert "more approval" not in second.stdout
        assert write.result() == 1
        # A second write, withdrawn by its client: the chat hears it was settled.
        cancelled = Background(
            lambda: agent.execute("update accounts set balance = 2 where id = 6")
        )
        [other] = pending(gateway)
        agent.cancel_safe()
        assert isinstance(cancelled.result(), psycopg.errors.QueryCanceled)

    events = [json.loads(body) for _, body in hook.events(5)]
    kinds = [(e["type"], e["data"]["id"], e["data"]["state"]) for e in events]
    assert kinds == [
        ("approval.requested", request["id"], "pending"),
        ("approval.partially_approved", request["id"], "pending"),
        ("approval.decided", request["id"], "approved"),
        ("approval.requested", other["id"], "pending"),
        ("approval.decided", other["id"], "withdrawn"),
    ]
    assert events[0]["data"]["url"] == f"https://airlock.example.com/#request-{request['id']}"
    messages = [json.dumps(json.loads(body)) for _, body in slack.events(5)]
    assert "1 of 2 approvals" in messages[1]
    assert "more approvals needed" in messages[1]
    assert f"https://airlock.example.com/#request-{request['id']}|open in Airlock" in messages[0]
    assert "Withdrawn" in messages[4]

    # History: decided and withdrawn requests stay listable, filtered.
    auditor = dba_token(gateway, "dba-3")
    status, history = api(gateway, "GET", "/api/v1/approvals?state=all&requester=agent-1", auditor)
    assert status == 200
    assert [(a["id"], a["state"]) for a in history["approvals"]] == [
        (other["id"], "withdrawn"),
        (request["id"], "approved"),
    ]
    status, withdrawn = api(gateway, "GET", "/api/v1/approvals?state=withdrawn&since=1h", auditor)
    assert [a["id"] for a in withdrawn["approvals"]] == [other["id"]]
    status, nobody = api(gateway, "GET", "/api/v1/approvals?state=all&requester=agent-9", auditor)
    assert nobody["approvals"] == []
    status, elsewhere = api(gateway, "GET", "/api/v1/approvals?state=all&target=billing", auditor)
    assert elsewhere["approvals"] == []
    status, bad = api(gateway, "GET", "/api/v1/approvals?since=yesterday", auditor)
    assert status == 400
    assert "since" in bad["error"]["message"]


def run_cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
