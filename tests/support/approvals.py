"""What the approval tests share: a rule, an accounts table, agents and approvers,
the approvals API, and an agent call running in the background while a test decides."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.gateway import RunningGateway
from tests.support.pgcluster import PgServer
from tests.support.waiting import PATIENCE_S, wait_until

REQUEST_ID = re.compile(r"apr_[0-9a-f]+")


def rule(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "groups": ["data-agents"],
        "targets": ["orders"],
        "read": "allow",
        "write": "approve",
        "ddl": "deny",
        "admin": "deny",
        "approvers": ["oncall-dba"],
        "hold": "wait",
        "hold_timeout": "30s",
        "grant_ttl": "15m",
    }
    base.update(overrides)
    return base


@pytest.fixture
def accounts(local_pg: PgServer, pg_database: str) -> Callable[[], dict[int, int]]:
    with psycopg.connect(local_pg.dsn(pg_database), autocommit=True) as admin:
        admin.execute("create table accounts (id int primary key, balance int)")
        admin.execute("insert into accounts select g, 100 from generate_series(1, 60) g")

    def balances() -> dict[int, int]:
        with psycopg.connect(local_pg.dsn(pg_database)) as direct:
            rows = direct.execute("select id, balance from accounts").fetchall()
            return {int(i): int(b) for i, b in rows}

    return balances


@pytest.fixture
def gated(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> RunningGateway:
    return gateway_factory(rules=[rule()])


def agent_token(gateway: RunningGateway, sub: str = "agent-1") -> str:
    return gateway.issuer.mint(sub=sub, groups=("data-agents",))


def dba_token(gateway: RunningGateway, sub: str = "dba-1") -> str:
    return gateway.issuer.mint(sub=sub, groups=("oncall-dba",))


def api(
    gateway: RunningGateway, method: str, path: str, token: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    # The gateway's own http:// API URL, never a user-supplied scheme.
    request = urllib.request.Request(  # noqa: S310
        gateway.api_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def decide(
    gateway: RunningGateway, request_id: str, verdict: str, body: dict[str, Any]
) -> tuple[int, Any]:
    """An approver (dba-1) approves or denies through the API."""
    path = f"/api/v1/approvals/{request_id}/{verdict}"
    return api(gateway, "POST", path, dba_token(gateway), body)


def pending(gateway: RunningGateway, timeout_s: float = PATIENCE_S, count: int = 1) -> list[Any]:
    """Wait until `count` requests are pending; return them."""

    def listed() -> list[Any]:
        status, body = api(gateway, "GET", "/api/v1/approvals", dba_token(gateway))
        assert status == 200
        return list(body["approvals"]) if len(body["approvals"]) >= count else []

    return wait_until(listed, timeout_s, f"{count} pending request(s)")


def approve_next(gateway: RunningGateway, timeout_s: float = PATIENCE_S) -> dict[str, Any]:
    """Approve (as dba-1) the one statement held now; return its request.

    Waits until exactly one request is pending and the approval takes: should the
    listing still show a request that was decided a moment ago, the API answers 409
    and the next listing is tried, so the request approved is always the new one."""
    approved: list[dict[str, Any]] = []

    def approve() -> bool:
        status, body = api(gateway, "GET", "/api/v1/approvals", dba_token(gateway))
        assert status == 200
        if len(body["approvals"]) != 1:
            return False
        [request] = body["approvals"]
        status, answer = decide(gateway, request["id"], "approve", {})
        assert status in (200, 409), answer
        if status == 200:
            approved.append(request)
        return status == 200

    wait_until(approve, timeout_s, "exactly one pending request, approved")
    return approved[0]


def airlock(*args: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIRLOCK_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
    )


class Background:
    """Run a blocking agent call in a thread; the test decides meanwhile."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.outcome: list[object] = []

        def run() -> None:
            try:
                self.outcome.append(fn())
            except Exception as exc:  # handed to the test
                self.outcome.append(exc)

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def result(self, timeout_s: float = PATIENCE_S) -> object:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the agent is still waiting"
        assert len(self.outcome) == 1
        return self.outcome[0]


def connect(gateway: RunningGateway, token: str, notices: list[str] | None = None) -> Any:
    conn = psycopg.connect(gateway.dsn(token), autocommit=True)
    if notices is not None:
        conn.add_notice_handler(lambda d: notices.append(f"{d.message_primary} {d.message_hint}"))
    return conn
