"""The approver commands against a stand-in approvals API over real HTTP on 127.0.0.1.

The stand-in (FakeApprovalsApi) implements the /api/v1/approvals contract, serves from
its own event loop on a thread (the commands are synchronous), and records every
request. Every command is run through `run`, which also checks that no token appears
in anything printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from proxy.cli.approvals import add_parsers
from proxy.core.tls import ensure_self_signed, server_context
from proxy.rendering import format_age, format_parameter, one_line_sql

DBA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.dba-1-token-payload.c2lnbmF0dXJl"
AGENT_TOKEN = "eyJhbGciOiJSUzI1NiJ9.agent-1-token-payload.c2lnbmF0dXJl"
UNKNOWN_TOKEN = "eyJhbGciOiJSUzI1NiJ9.expired-token-payload.c2lnbmF0dXJl"
TOKENS = (DBA_TOKEN, AGENT_TOKEN, UNKNOWN_TOKEN)


def iso(moment: datetime) -> str:
    """As the gateway's API writes times: to the millisecond. (Whole seconds made a
    15-minute grant read "in 14m" whenever the second turned during the test.)"""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def approval(
    approval_id: str,
    *,
    age: timedelta = timedelta(seconds=42),
    state: str = "pending",
    subject: str = "agent-1",
    target: str = "orders",
    sql: str = "UPDATE t SET a = $1 WHERE id = $2",
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "id": approval_id,
        "state": state,
        "session_id": "ses_1",
        "session_state": "open",
        "requester": {"subject": subject, "groups": ["data-agents"], "email": None},
        "target": target,
        "sql": sql,
        "parameters": (
            [{"type": "int4", "value": "42"}, {"type": "text", "value": None}]
            if parameters is None
            else parameters
        ),
        "class": "write",
        "reasons": ["UPDATE modifies data"],
        "hold": "wait",
        "approver_groups": ["oncall-dba"],
        "transaction": "in transaction",
        "created_at": iso(datetime.now(UTC) - age),
        "decision": None,
    }


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: Any


def refusal(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@dataclass
class CannedAnswer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class FakeApprovalsApi:
    """The approvals API contract, served over HTTP(S) on 127.0.0.1 from a thread."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.subjects = {DBA_TOKEN: "dba-1", AGENT_TOKEN: "agent-1"}
        self.approvals: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        #: Answers by path, instead of the contract's (errors, redirects, junk).
        self.canned: dict[str, CannedAnswer] = {}
        #: Seconds to wait before answering (timeouts).
        self.delay_s = 0.0
        self._ssl_context = ssl_context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-api")
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def add(self, *approvals: dict[str, Any]) -> None:
        for item in approvals:
            self.approvals[item["id"]] = item

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=5)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._record_and_authenticate])
        app.router.add_get("/api/v1/approvals", self._list)
        app.router.add_get("/api/v1/approvals/{id}", self._get)
        app.router.add_post("/api/v1/approvals/{id}/approve", self._approve)
        app.router.add_post("/api/v1/approvals/{id}/deny", self._deny)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        scheme = "https" if self._ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"

    async def _stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _record_and_authenticate(self, request: web.Request, handler: Any) -> Any:
        body = await request.json() if request.can_read_body else None
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                request.headers.get("Authorization"),
                body,
            )
        )
        if self.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.delay_s)
        canned = self.canned.get(request.path)
        if canned is not None:
            return web.Response(
                status=canned.status,
                body=canned.body,
                content_type=canned.content_type,
                headers=canned.headers,
            )
        if self._subject(request) is None:
            return refusal(401, "unauthorized", "token expired or not valid")
        return await handler(request)

    def _subject(self, request: web.Request) -> str | None:
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        return self.subjects.get(token) if scheme == "Bearer" else None

    def _find(self, request: web.Request) -> dict[str, Any] | None:
        return self.approvals.get(request.match_info["id"])

    async def _list(self, request: web.Request) -> web.Response:
        state = request.query.get("state", "pending")
        if state not in ("pending", "approved", "denied", "withdrawn", "all"):
            return refusal(400, "bad_request", f"unknown state {state}")
        chosen = [a for a in self.approvals.values() if state in ("all", a["state"])]
        return web.json_response({"approvals": chosen})

    async def _get(self, request: web.Request) -> web.Response:
        found = self._find(request)
        if found is None:
            return refusal(404, "not_found", "no approval request with that id")
        return web.json_response(found)

    def _decidable(self, request: web.Request) -> dict[str, Any] | web.Response:
        found = self._find(request)
        if found is None:
            return refusal(404, "not_found", "no approval request with that id")
        if found["requester"]["subject"] == self._subject(request):
            return refusal(403, "forbidden", "you cannot approve your own request")
        if found["state"] != "pending":
            return refusal(409, "conflict", f"already {found['state']}")
        return found

    async def _approve(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("scope") not in ("statement", "session"):
            return refusal(400, "bad_request", "scope must be statement or session")
        found = self._decidable(request)
        if isinstance(found, web.Response):
            return found
        now = datetime.now(UTC)
        found["state"] = "approved"
        found["decision"] = {
            "by": self._subject(request),
            "at": iso(now),
            "scope": body["scope"],
            "expires_at": iso(now + timedelta(seconds=body.get("ttl_s", 900))),
            "comment": body.get("comment"),
            "reason": None,
        }
        return web.json_response(found)

    async def _deny(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not body.get("reason"):
            return refusal(400, "bad_request", "reason is required")
        found = self._decidable(request)
        if isinstance(found, web.Response):
            return found
        found["state"] = "denied"
        found["decision"] = {
            "by": self._subject(request),
            "at": iso(datetime.now(UTC)),
            "scope": None,
            "expires_at": None,
            "comment": None,
            "reason": body["reason"],
        }
        return web.json_response(found)


@pytest.fixture
def api() -> Iterator[FakeApprovalsApi]:
    fake = FakeApprovalsApi()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIRLOCK_TOKEN", "AIRLOCK_SERVER", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Result:
    code: int
    out: str
    err: str


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="airlock")
    commands = parser.add_subparsers(dest="command", required=True)
    add_parsers(commands)
    return parser.parse_args(argv)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    args = parse(*argv)
    code = args.handler(args)
    captured = capsys.readouterr()
    for token in TOKENS:
        assert token not in captured.out
        assert token not in captured.err
    return Result(code, captured.out, captured.err)


def as_dba(api: FakeApprovalsApi, *argv: str) -> tuple[str, ...]:
    return (*argv, "--server", api.url, "--token", DBA_TOKEN)


# --- list --------------------------------------------------------------------------------------


def test_list_sends_the_token_and_prints_a_table(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.add(
        # Ages in minutes: a slow run must not turn 42s into 43s (format_age has its own test).
        approval("apr_1", age=timedelta(minutes=2, seconds=20)),
        approval(
            "apr_2",
            age=timedelta(minutes=5, seconds=10),
            subject="agent-2",
            target="shop",
            sql="DELETE FROM orders\n   WHERE created_at < now() - interval '90 days' AND x = 1",
        ),
        approval("apr_3", age=timedelta(hours=2), state="approved"),
    )
    result = run(capsys, *as_dba(api, "approvals", "list"))
    assert result.code == 0
    assert result.err == ""
    [request] = api.requests
    assert (request.method, request.path) == ("GET", "/api/v1/approvals")
    assert request.query == {"state": "pending"}
    assert request.authorization == f"Bearer {DBA_TOKEN}"

    header, first, second, *rest = result.out.splitlines()
    assert rest == []
    assert header.split() == [
        "ID", "AGE", "REQUESTER", "TARGET", "CLASS", "STATE", "TRANSACTION", "SQL"
    ]  # fmt: skip
    assert first[header.index("TRANSACTION") :].startswith("in transaction ")
    assert first.split()[:6] == ["apr_1", "2m", "agent-1", "orders", "write", "pending"]
    assert first.endswith("UPDATE t SET a = $1 WHERE id = $2")
    assert second.split()[:6] == ["apr_2", "5m", "agent-2", "shop", "write", "pending"]
    # One line, whitespace collapsed, clipped to the SQL column.
    sql_cell = second[header.index("SQL") :]
    assert sql_cell.startswith("DELETE FROM orders WHERE created_at < now()")
    assert sql_cell.endswith("...")
    assert len(sql_cell) == 60
    # Columns line up under their headers.
    assert first.index("2m") == header.index("AGE")
    assert second.index("shop") == header.index("TARGET")


def test_list_asks_for_the_state_given(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.add(approval("apr_1"), approval("apr_2", state="denied", age=timedelta(days=3)))
    result = run(capsys, *as_dba(api, "approvals", "list", "--state", "all"))
    assert result.code == 0
    assert api.requests[0].query == {"state": "all"}
    rows = [line.split()[:6] for line in result.out.splitlines()[1:]]
    assert [row[0] for row in rows] == ["apr_1", "apr_2"]
    assert rows[1][1] == "3d"
    assert rows[1][5] == "denied"


def test_list_sends_state_pending_by_default(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, *as_dba(api, "approvals", "list"))
    assert api.requests[0].query == {"state": "pending"}


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("pending", "no pending approvals"),
        ("denied", "no denied approvals"),
        ("all", "no approvals"),
    ],
)
def test_an_empty_list_says_so(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str], state: str, message: str
) -> None:
    result = run(capsys, *as_dba(api, "approvals", "list", "--state", state))
    assert (result.code, result.out, result.err) == (0, message + "\n", "")


def test_list_json_is_the_api_list(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.add(approval("apr_1"), approval("apr_2"))
    result = run(capsys, *as_dba(api, "approvals", "list", "--json"))
    assert result.code == 0
    assert json.loads(result.out) == [api.approvals["apr_1"], api.approvals["apr_2"]]


def test_list_rejects_an_unknown_state() -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("approvals", "list", "--state", "everything")
    assert exit_info.value.code == 2


# --- get, approve, deny ------------------------------------------------------------------------


def test_get_shows_sql_and_parameters(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.add(approval("apr_1", age=timedelta(minutes=5)))
    result = run(capsys, *as_dba(api, "approvals", "get", "apr_1"))
    assert result.code == 0
    assert api.requests[0].path == "/api/v1/approvals/apr_1"
    lines = result.out.splitlines()
    assert "id:          apr_1" in lines
    assert "state:       pending" in lines
    assert "requester:   agent-1 (groups: data-agents)" in lines
    assert "sql:         UPDATE t SET a = $1 WHERE id = $2" in lines
    assert "parameters:  $1 = 42 (int4)" in lines
    assert "             $2 = NULL (text)" in lines
    assert "class:       write (UPDATE modifies data)" in lines
    assert "transaction: in transaction" in lines
    assert "approvers:   oncall-dba" in lines
    assert any(line.startswith("created:") and line.endswith("(5m ago)") for line in lines)


def test_approve_posts_statement_scope_and_shows_the_decision(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.add(approval("apr_1"))
    result = run(capsys, *as_dba(api, "approve", "apr_1"))
    assert result.code == 0
    [request] = api.requests
    assert (request.method, request.path) == ("POST", "/api/v1/approvals/apr_1/approve")
    assert request.body == {"scope": "statement"}
    assert request.authorization == f"Bearer {DBA_TOKEN}"
    lines = result.out.splitlines()
    assert "state:       approved" in lines
    assert "parameters:  $1 = 42 (int4)" in lines
    assert "scope:       statement" in lines
    assert any(line.startswith("decided by:  dba-1 at ") for line in lines)
    assert any(line.startswith("expires:") and "(in 15m)" in line for line in lines)


def test_approve_sends_scope_ttl_and_comment(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.add(approval("apr_1"))
    argv = as_dba(api, "approve", "apr_1", "--scope", "session", "--ttl", "10m")
    result = run(capsys, *argv, "--comment", "ticket OPS-12")
    assert result.code == 0
    assert api.requests[0].body == {"scope": "session", "ttl_s": 600, "comment": "ticket OPS-12"}
    assert "scope:       session" in result.out.splitlines()
    assert any(
        line.startswith("expires:") and "(in 10m)" in line for line in result.out.splitlines()
    )
    assert "comment:     ticket OPS-12" in result.out.splitlines()


@pytest.mark.parametrize(("ttl", "seconds"), [("30s", 30), ("10m", 600), ("1h", 3600), ("90", 90)])
def test_ttl_durations(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str], ttl: str, seconds: int
) -> None:
    api.add(approval("apr_1"))
    assert run(capsys, *as_dba(api, "approve", "apr_1", "--ttl", ttl)).code == 0
    assert api.requests[0].body["ttl_s"] == seconds


@pytest.mark.parametrize("ttl", ["10x", "-5m", "0", "abc", "m", ""])
def test_a_bad_ttl_is_a_usage_error(capsys: pytest.CaptureFixture[str], ttl: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("approve", "apr_1", "--ttl", ttl, "--token", DBA_TOKEN)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--ttl" in err
    assert DBA_TOKEN not in err


def test_approve_json_prints_the_approval(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.add(approval("apr_1"))
    result = run(capsys, *as_dba(api, "approve", "apr_1", "--json"))
    assert result.code == 0
    printed = json.loads(result.out)
    assert printed["state"] == "approved"
    assert printed == api.approvals["apr_1"]


def test_deny_posts_the_reason(api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.add(approval("apr_1"))
    result = run(capsys, *as_dba(api, "deny", "apr_1", "--reason", "not during the freeze"))
    assert result.code == 0
    [request] = api.requests
    assert (request.method, request.path) == ("POST", "/api/v1/approvals/apr_1/deny")
    assert request.body == {"reason": "not during the freeze"}
    lines = result.out.splitlines()
    assert "state:       denied" in lines
    assert "reason:      not during the freeze" in lines
    assert not any(line.startswith(("scope:", "expires:")) for line in lines)


def test_deny_needs_a_reason(api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*as_dba(api, "deny", "apr_1"))
    assert exit_info.value.code == 2
    capsys.readouterr()
    result = run(capsys, *as_dba(api, "deny", "apr_1", "--reason", "  "))
    assert result.code == 2
    assert result.err == "airlock: --reason must not be empty\n"
    assert api.requests == []


def test_an_id_stays_one_path_segment(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(capsys, *as_dba(api, "approve", "../../approvals?state=all"))
    assert result.code == 1
    assert api.requests[0].path == "/api/v1/approvals/../../approvals?state=all/approve"
    assert result.err == "airlock: not_found: no approval request with that id\n"


# --- refusals and failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "approval_id", "state", "message"),
    [
        (UNKNOWN_TOKEN, "apr_1", "pending", "unauthorized: token expired or not valid (check"),
        (AGENT_TOKEN, "apr_1", "pending", "forbidden: you cannot approve your own request"),
        (DBA_TOKEN, "apr_404", "pending", "not_found: no approval request with that id"),
        (DBA_TOKEN, "apr_1", "denied", "conflict: already denied"),
    ],
)
def test_refusals_print_the_server_message_and_exit_1(
    api: FakeApprovalsApi,
    capsys: pytest.CaptureFixture[str],
    token: str,
    approval_id: str,
    state: str,
    message: str,
) -> None:
    api.add(approval("apr_1", state=state))
    result = run(capsys, "approve", approval_id, "--server", api.url, "--token", token)
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith(f"airlock: {message}")
    assert result.err.count("\n") == 1


def test_a_bad_request_exits_1(api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.canned["/api/v1/approvals"] = CannedAnswer(
        400, b'{"error": {"code": "bad_request", "message": "state: unknown value"}}'
    )
    result = run(capsys, *as_dba(api, "approvals", "list"))
    assert (result.code, result.err) == (1, "airlock: bad_request: state: unknown value\n")


def test_a_server_echoing_the_token_is_redacted(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    echo = {"error": {"code": "unauthorized", "message": f"bad token {DBA_TOKEN}"}}
    api.canned["/api/v1/approvals/apr_1"] = CannedAnswer(401, json.dumps(echo).encode())
    result = run(capsys, *as_dba(api, "approvals", "get", "apr_1"))
    assert result.code == 1
    assert result.err.startswith("airlock: unauthorized: bad token [redacted]")


def test_an_error_without_the_json_shape_names_the_status(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.canned["/api/v1/approvals"] = CannedAnswer(500, b"<html>oops</html>", "text/html")
    result = run(capsys, *as_dba(api, "approvals", "list"))
    assert result.code == 1
    assert result.err == f"airlock: {api.url} answered HTTP 500 Internal Server Error\n"


def test_a_gateway_behind_a_proxy_that_is_down_exits_3(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.canned["/api/v1/approvals"] = CannedAnswer(503, b"", "text/plain")
    result = run(capsys, *as_dba(api, "approvals", "list"))
    assert result.code == 3
    assert result.err.startswith(f"airlock: {api.url} is unavailable: ")


def test_an_answer_that_is_not_the_contract_exits_1(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.canned["/api/v1/approvals"] = CannedAnswer(200, b'{"items": []}')
    result = run(capsys, *as_dba(api, "approvals", "list"))
    assert result.code == 1
    assert result.err.startswith(f"airlock: unexpected answer from {api.url}: ")
    api.canned["/api/v1/approvals"] = CannedAnswer(200, b"<html>", "text/html")
    assert run(capsys, *as_dba(api, "approvals", "list")).code == 1


def test_redirects_are_not_followed(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = FakeApprovalsApi()
    elsewhere.start()
    try:
        api.canned["/api/v1/approvals"] = CannedAnswer(
            302, b"", "text/plain", {"Location": f"{elsewhere.url}/api/v1/approvals"}
        )
        result = run(capsys, *as_dba(api, "approvals", "list"))
    finally:
        elsewhere.stop()
    assert result.code == 1
    assert "answered HTTP 302" in result.err
    assert "not followed" in result.err
    assert elsewhere.requests == []


def test_an_unreachable_server_exits_3_and_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = f"http://127.0.0.1:{port}"
    result = run(capsys, "approvals", "list", "--server", server, "--token", DBA_TOKEN)
    assert result.code == 3
    assert result.err.startswith(f"airlock: cannot reach {server}: ")
    assert result.err.count("\n") == 1


def test_a_slow_server_times_out_with_exit_3(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.delay_s = 5
    result = run(capsys, *as_dba(api, "approvals", "list", "--timeout", "0.2"))
    assert result.code == 3
    assert result.err == f"airlock: no answer from {api.url} within 0.2s\n"


# --- token, server and environment ------------------------------------------------------------


def test_a_missing_token_is_a_usage_error(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(capsys, "approvals", "list", "--server", api.url)
    assert result.code == 2
    assert result.err == "airlock: no token: pass --token or set AIRLOCK_TOKEN\n"
    assert api.requests == []


def test_token_and_server_come_from_the_environment(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRLOCK_TOKEN", DBA_TOKEN)
    monkeypatch.setenv("AIRLOCK_SERVER", api.url + "/")
    api.add(approval("apr_1"))
    result = run(capsys, "approve", "apr_1")
    assert result.code == 0
    assert api.requests[0].authorization == f"Bearer {DBA_TOKEN}"
    assert api.requests[0].path == "/api/v1/approvals/apr_1/approve"


def test_options_win_over_the_environment(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRLOCK_TOKEN", UNKNOWN_TOKEN)
    monkeypatch.setenv("AIRLOCK_SERVER", "http://127.0.0.1:1")
    assert run(capsys, *as_dba(api, "approvals", "list")).code == 0
    assert api.requests[0].authorization == f"Bearer {DBA_TOKEN}"


def test_the_default_server_is_local_port_8080(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def fake_open(self: Any, request: Any, timeout: float) -> Any:
        seen.append(request.full_url)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr("urllib.request.OpenerDirector.open", fake_open)
    args = parse("approvals", "list", "--token", DBA_TOKEN)
    assert args.handler(args) == 3
    assert seen == ["http://127.0.0.1:8080/api/v1/approvals?state=pending"]


@pytest.mark.parametrize(
    "token",
    [
        DBA_TOKEN + "\r\nX-Injected: 1",
        "Bearer " + DBA_TOKEN,
        DBA_TOKEN + "\x00",
    ],
)
def test_a_token_that_cannot_be_a_header_is_refused_without_quoting_it(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str], token: str
) -> None:
    result = run(capsys, "approvals", "list", "--server", api.url, "--token", token)
    assert result.code == 2
    assert "characters a bearer token cannot have" in result.err
    assert api.requests == []


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("http://gateway.example.com:8080", "refusing to send the token over plain http"),
        (f"https://dba:{DBA_TOKEN}@gateway.example.com", "must not hold credentials"),
        ("ftp://127.0.0.1", "must be an http:// or https:// URL"),
        ("127.0.0.1:8080", "must be an http:// or https:// URL"),
        ("http://127.0.0.1:99999", "is not a URL"),
        ("http://127.0.0.1:8080/?x=1", "must not have a query"),
    ],
)
def test_unsafe_or_bad_servers_are_usage_errors(
    capsys: pytest.CaptureFixture[str], server: str, message: str
) -> None:
    result = run(capsys, "approvals", "list", "--server", server, "--token", DBA_TOKEN)
    assert result.code == 2
    assert message in result.err


@pytest.mark.parametrize("timeout", ["0", "-1", "soon", "inf"])
def test_a_bad_timeout_is_a_usage_error(timeout: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("approvals", "list", "--timeout", timeout)
    assert exit_info.value.code == 2


# --- HTTPS -------------------------------------------------------------------------------------


@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[tuple[FakeApprovalsApi, Path]]:
    cert, key = ensure_self_signed(tmp_path / "tls")
    fake = FakeApprovalsApi(ssl_context=server_context(cert, key))
    fake.start()
    try:
        yield fake, cert
    finally:
        fake.stop()


def test_https_verifies_the_certificate(
    tls_api: tuple[FakeApprovalsApi, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    api, cert = tls_api
    assert api.url.startswith("https://")
    untrusted = run(capsys, *as_dba(api, "approvals", "list"))
    assert untrusted.code == 3
    assert "TLS certificate not trusted" in untrusted.err
    assert "--cacert" in untrusted.err
    assert api.requests == []

    api.add(approval("apr_1"))
    trusted = run(capsys, *as_dba(api, "approvals", "list", "--cacert", str(cert)))
    assert trusted.code == 0
    assert "apr_1" in trusted.out
    assert api.requests[0].authorization == f"Bearer {DBA_TOKEN}"


def test_an_unreadable_cacert_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.pem"
    argv = ("approvals", "list", "--server", "https://127.0.0.1:1", "--token", DBA_TOKEN)
    result = run(capsys, *argv, "--cacert", str(missing))
    assert result.code == 2
    assert result.err.startswith(f"airlock: --cacert {missing}: ")


# --- what agents write is shown, not obeyed ----------------------------------------------------

HIDING_SQL = "DROP TABLE users; \x1b[2K\rSELECT 1 -- \u202etxt.exe"


def test_control_and_bidi_characters_in_sql_are_escaped(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.add(
        approval(
            "apr_1",
            sql=HIDING_SQL,
            parameters=[{"type": "text", "value": "a\x1b]0;title\x07"}],
        )
    )
    table = run(capsys, *as_dba(api, "approvals", "list"))
    summary = run(capsys, *as_dba(api, "approvals", "get", "apr_1"))
    for output in (table.out, summary.out):
        assert "\x1b" not in output
        assert "\r" not in output
        assert "\u202e" not in output
        assert "\x07" not in output
    # One table line: the \r is whitespace there, collapsed like any other.
    assert "DROP TABLE users; \\x1b[2K SELECT 1 -- \\u202etxt.exe" in table.out
    assert "sql:         DROP TABLE users; \\x1b[2K\\rSELECT 1 -- \\u202etxt.exe" in summary.out
    assert "parameters:  $1 = 'a\\x1b]0;title\\x07' (text)" in summary.out
    as_json = run(capsys, *as_dba(api, "approvals", "get", "apr_1", "--json"))
    assert "\x1b" not in as_json.out
    assert json.loads(as_json.out)["sql"] == HIDING_SQL


def test_multi_line_sql_keeps_its_lines_in_the_summary(
    api: FakeApprovalsApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.add(approval("apr_1", sql="UPDATE t\nSET a = 1\nWHERE id = 2"))
    lines = run(capsys, *as_dba(api, "approvals", "get", "apr_1")).out.splitlines()
    start = lines.index("sql:         UPDATE t")
    assert lines[start + 1 : start + 3] == ["             SET a = 1", "             WHERE id = 2"]


# --- pure helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "0s"),
        (0, "0s"),
        (42.9, "42s"),
        (59, "59s"),
        (60, "1m"),
        (3599, "59m"),
        (3600, "1h"),
        (7300, "2h"),
        (86399, "23h"),
        (86400, "1d"),
        (10 * 86400, "10d"),
    ],
)
def test_format_age(seconds: float, shown: str) -> None:
    assert format_age(seconds) == shown


@pytest.mark.parametrize(
    ("parameter", "shown"),
    [
        ({"type": "int4", "value": "42"}, "$1 = 42 (int4)"),
        ({"type": "numeric", "value": "-1.5e3"}, "$1 = -1.5e3 (numeric)"),
        ({"type": "text", "value": None}, "$1 = NULL (text)"),
        ({"type": "text", "value": "NULL"}, "$1 = 'NULL' (text)"),
        ({"type": "text", "value": ""}, "$1 = '' (text)"),
        ({"type": "text", "value": "it's"}, "$1 = 'it''s' (text)"),
        ({"value": "x"}, "$1 = 'x'"),
    ],
)
def test_format_parameter(parameter: dict[str, Any], shown: str) -> None:
    assert format_parameter(1, parameter) == shown


def test_a_long_parameter_is_clipped_with_its_length() -> None:
    shown = format_parameter(2, {"type": "text", "value": "x" * 5000})
    assert shown.startswith("$2 = 'xxx")
    assert shown.endswith("... (5000 chars in all; --json shows it) (text)")
    assert len(shown) < 300


def test_one_line_sql() -> None:
    assert one_line_sql("SELECT\n  1,\t2") == "SELECT 1, 2"
    assert one_line_sql("x" * 100, width=20) == "x" * 17 + "..."
