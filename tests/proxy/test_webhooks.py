"""Webhook signing, payloads and delivery, against a real aiohttp receiver on 127.0.0.1.

Retry delays are a few milliseconds so the retry and shutdown paths run for real
without slowing the suite.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from proxy.approvals.webhooks import (
    APPROVAL_DECIDED,
    APPROVAL_REQUESTED,
    WebhookEndpoint,
    WebhookNotifier,
    WebhookVerificationError,
    generate_secret,
    redact_url,
    sign,
    slack_payload,
    verify,
)
from tests.support.waiting import PATIENCE_S, until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

REQUESTED = {
    "id": "apr_x",
    "state": "pending",
    "session_id": "ses_1",
    "requester": {"subject": "agent-1", "groups": ["data-agents"], "email": None},
    "target": "orders",
    "sql": "UPDATE t SET a = $1",
    "parameters": [{"type": "int4", "value": "42"}],
    "class": "write",
    "reasons": ["UPDATE modifies data"],
    "hold": "wait",
    "approver_groups": ["oncall-dba"],
    "created_at": "2025-01-01T00:00:00Z",
    "decision": None,
}

DECIDED = {
    **REQUESTED,
    "state": "approved",
    "decision": {
        "by": "dba-1",
        "at": "2025-01-01T00:01:00Z",
        "scope": "session",
        "expires_at": "2025-01-01T00:16:00Z",
        "comment": "ok for the backfill",
        "reason": None,
    },
}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers with the scripted statuses in turn, then 200; records every request."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    requests: list[Received] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(dict(request.headers), await request.read()))
        if self.hang:
            await self.released.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook{tail:.*}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    receiver.url = f"http://{host}:{port}/hook"
    try:
        yield receiver
    finally:
        receiver.released.set()
        await runner.cleanup()


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@pytest.fixture
async def notifier() -> AsyncIterator[WebhookNotifier]:
    notifier = WebhookNotifier(attempts=4, base_delay_s=0.01, max_delay_s=0.05, timeout_s=2)
    await notifier.start()
    try:
        yield notifier
    finally:
        await notifier.close()


async def eventually(condition: Callable[[], bool], timeout_s: float = PATIENCE_S) -> None:
    await until(condition, timeout_s, "the notifier's counters", every_s=0.005)


# --- signing and verify ---------------------------------------------------


def test_signature_matches_the_standard_webhooks_example() -> None:
    # The worked example from the Standard Webhooks / Svix documentation.
    signature = sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def signed_headers(
    secret: str = SECRET, body: bytes = b'{"a":1}', timestamp: int | None = None
) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, "msg_1", timestamp, body),
    }


def test_verify_accepts_a_valid_signature_in_any_header_case_and_in_a_list() -> None:
    headers = signed_headers()
    verify(SECRET, headers, b'{"a":1}')
    verify(SECRET, {k.upper(): v for k, v in headers.items()}, '{"a":1}')
    # During a rotation the sender lists several signatures; one match suffices.
    other = sign(generate_secret(), "msg_1", int(headers["webhook-timestamp"]), b'{"a":1}')
    headers["webhook-signature"] = f"v2,abc {other} {headers['webhook-signature']}"
    verify(SECRET, headers, b'{"a":1}')


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("tampered body", "no valid signature"),
        ("wrong secret", "no valid signature"),
        ("old timestamp", "too old"),
        ("future timestamp", "in the future"),
        ("tampered id", "no valid signature"),
        ("missing signature", "missing"),
        ("bad timestamp", "not an integer"),
        ("unknown version", "no valid signature"),
        ("bad base64", "no valid signature"),
    ],
)
def test_verify_rejects(case: str, message: str) -> None:
    now = time.time()
    body = b'{"a":1}'
    headers = signed_headers()
    if case == "tampered body":
        body = b'{"a":2}'
    elif case == "wrong secret":
        headers = signed_headers(secret=generate_secret())
    elif case == "old timestamp":
        headers = signed_headers(timestamp=int(now) - 301)
    elif case == "future timestamp":
        headers = signed_headers(timestamp=int(now) + 301)
    elif case == "tampered id":
        headers["webhook-id"] = "msg_2"
    elif case == "missing signature":
        del headers["webhook-signature"]
    elif case == "bad timestamp":
        headers["webhook-timestamp"] = "yesterday"
    elif case == "unknown version":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    elif case == "bad base64":
        headers["webhook-signature"] = "v1,!!!"
    with pytest.raises(WebhookVerificationError, match=message):
        verify(SECRET, headers, body, now=now)


def test_verify_tolerance_is_configurable() -> None:
    headers = signed_headers(timestamp=1000)
    verify(SECRET, headers, b'{"a":1}', now=1000 + 299)
    verify(SECRET, headers, b'{"a":1}', now=1000 + 3599, tolerance_s=3600)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers, b'{"a":1}', now=1000 + 61, tolerance_s=60)


def test_generated_secret_round_trips() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) == 32
    verify(secret, signed_headers(secret=secret), b'{"a":1}')


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "ftp://example.com/hook"}, "http or https"),
        ({"url": "https:///hook"}, "http or https"),
        ({"url": "https://example.com:99999/hook"}, "not a valid URL"),
        ({"url": "https://example.com/hook", "format": "teams"}, "format 'teams'"),
        ({"url": "https://example.com/hook", "secret": "s3cr3t-plain"}, "must start with"),
        ({"url": "https://example.com/hook", "secret": "whsec_***s3cr3t***"}, "not valid base64"),
        ({"url": "https://example.com/hook", "secret": "whsec_"}, "empty key"),
        ({"url": "https://example.com/hook", "events": frozenset()}, "non-empty"),
        ({"url": "https://example.com/hook", "events": frozenset({"approval.made"})}, "unknown"),
    ],
)
def test_endpoint_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        WebhookEndpoint(**kwargs)
    assert "s3cr3t" not in str(raised.value)


def test_redact_url() -> None:
    url = "https://user:pw@hooks.example.com:8443/services/T1/B2/XYZ?token=abc#frag"
    assert redact_url(url) == "https://hooks.example.com:8443/services/T1/B2/XYZ"
    assert redact_url(url, keep_path=False) == "https://hooks.example.com:8443/..."
    assert redact_url("http://[::1]:80/") == "http://[::1]:80/"


# --- payloads -------------------------------------------------------------


def test_slack_payload_for_a_request() -> None:
    payload = slack_payload(APPROVAL_REQUESTED, REQUESTED)
    assert set(payload) == {"text", "blocks"}
    assert "agent-1" in payload["text"]
    assert "orders" in payload["text"]
    assert "write" in payload["text"]
    assert all(block["type"] in ("section", "context") for block in payload["blocks"])
    rendered = json.dumps(payload["blocks"])
    assert "```UPDATE t SET a = $1```" in rendered
    assert "$1 = 42  (int4)" in rendered
    assert "data-agents" in rendered
    assert "UPDATE modifies data" in rendered
    assert "airlock approve apr_x" in rendered
    assert "apr_x" in payload["blocks"][-1]["elements"][0]["text"]


def test_slack_payload_for_a_decision() -> None:
    payload = slack_payload(APPROVAL_DECIDED, DECIDED)
    assert "approved by dba-1" in payload["text"]
    rendered = json.dumps(payload["blocks"])
    assert "*Approved* by dba-1" in rendered
    assert "*Scope:* session" in rendered
    assert "ok for the backfill" in rendered
    assert "2025-01-01T00:16:00Z" in rendered
    assert "airlock approve" not in rendered

    denied = {**DECIDED, "state": "denied", "decision": {"by": "dba-2", "reason": "not today"}}
    rendered = json.dumps(slack_payload(APPROVAL_DECIDED, denied))
    assert ":no_entry: *Denied* by dba-2" in rendered
    assert "*Reason:* not today" in rendered


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"id": 7, "requester": "agent-1", "parameters": "not a list", "decision": "yes"},
        {"requester": {"groups": None}, "parameters": [None, 3, {"value": None}], "reasons": 5},
        {"sql": "SELECT '```' <b> & 1", "parameters": [{"value": "x" * 5000}] * 30},
        {
            "id": "&" * 5000,
            "target": "<" * 5000,
            "class": "&" * 5000,
            "sql": "&" * 5000,
            "requester": {"subject": ">" * 5000, "groups": ["&" * 5000]},
            "reasons": ["&" * 5000] * 3,
            "parameters": [{"value": "&" * 5000, "type": "&" * 5000}] * 30,
            "decision": {k: "&" * 5000 for k in ("by", "scope", "expires_at", "reason", "comment")},
        },
    ],
)
@pytest.mark.parametrize("event_type", [APPROVAL_REQUESTED, APPROVAL_DECIDED, "approval.other"])
def test_slack_payload_survives_odd_data(event_type: str, data: dict[str, Any]) -> None:
    payload = slack_payload(event_type, data)
    assert payload["text"]
    for block in payload["blocks"]:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
            # Slack's control characters are escaped; the fence is never closed early.
            assert "<b>" not in block["text"]["text"]
            assert block["text"]["text"].count("```") % 2 == 0
        else:
            assert len(block["elements"][0]["text"]) <= 3000
    assert len(payload["text"]) <= 3000


# --- delivery -------------------------------------------------------------


async def test_signed_standard_delivery_verifies(
    receiver: Receiver, notifier: WebhookNotifier
) -> None:
    endpoint = WebhookEndpoint(receiver.url, secret=SECRET)
    notifier.notify(APPROVAL_REQUESTED, REQUESTED, [endpoint])
    await eventually(lambda: notifier.delivered == 1)
    (received,) = receiver.requests
    verify(SECRET, received.headers, received.body)
    assert received.headers["webhook-id"].startswith("msg_")
    assert received.headers["Content-Type"] == "application/json"
    event = received.json()
    assert set(event) == {"type", "timestamp", "data"}
    assert event["type"] == APPROVAL_REQUESTED
    assert event["data"] == REQUESTED
    assert event["timestamp"].endswith("Z")
    assert notifier.failed == 0


async def test_unsigned_endpoint_gets_no_signature(
    receiver: Receiver, notifier: WebhookNotifier
) -> None:
    notifier.notify(APPROVAL_DECIDED, DECIDED, [WebhookEndpoint(receiver.url)])
    await eventually(lambda: notifier.delivered == 1)
    (received,) = receiver.requests
    assert "webhook-signature" not in received.headers
    assert "webhook-id" in received.headers
    assert received.json()["data"]["decision"]["by"] == "dba-1"


async def test_slack_delivery(receiver: Receiver, notifier: WebhookNotifier) -> None:
    notifier.notify(APPROVAL_REQUESTED, REQUESTED, [WebhookEndpoint(receiver.url, format="slack")])
    await eventually(lambda: notifier.delivered == 1)
    assert receiver.requests[0].json() == slack_payload(APPROVAL_REQUESTED, REQUESTED)


async def test_data_is_snapshotted_at_notify(receiver: Receiver, notifier: WebhookNotifier) -> None:
    data = dict(REQUESTED)
    notifier.notify(APPROVAL_REQUESTED, data, [WebhookEndpoint(receiver.url)])
    data["state"] = "changed later"
    await eventually(lambda: notifier.delivered == 1)
    assert receiver.requests[0].json()["data"]["state"] == "pending"


async def test_retries_after_server_errors_then_delivers_once(
    receiver: Receiver, notifier: WebhookNotifier
) -> None:
    receiver.statuses = [500, 500]
    notifier.notify(APPROVAL_REQUESTED, REQUESTED, [WebhookEndpoint(receiver.url, secret=SECRET)])
    await eventually(lambda: notifier.delivered == 1)
    await asyncio.sleep(0.05)  # not a wait for an event: a window for a stray extra post
    assert len(receiver.requests) == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    for received in receiver.requests:
        verify(SECRET, received.headers, received.body)
    assert (notifier.delivered, notifier.failed) == (1, 0)


@pytest.mark.parametrize("status", [503, 408, 429])
async def test_retryable_statuses(
    receiver: Receiver, notifier: WebhookNotifier, status: int
) -> None:
    receiver.statuses = [status]
    notifier.notify(APPROVAL_REQUESTED, REQUESTED, [WebhookEndpoint(receiver.url)])
    await eventually(lambda: notifier.delivered == 1)
    assert len(receiver.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 410, 302])
async def test_other_statuses_give_up_at_once(
    receiver: Receiver, notifier: WebhookNotifier, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.statuses = [status]
    notifier.notify(APPROVAL_REQUESTED, REQUESTED, [WebhookEndpoint(receiver.url)])
    await eventually(lambda: notifier.failed == 1)
    await asyncio.sleep(0.05)  # not a wait for an event: a window for a stray retry
    assert len(receiver.requests) == 1
    assert notifier.delivered == 0
    assert f"HTTP {status}" in caplog.text


async def test_gives_up_after_the_configured_attempts(receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    notifier = WebhookNotifier(attempts=3, base_delay_s=0.001, max_delay_s=0.002)
    await notifier.start()
    try:
        notifier.notify(APPROVAL_REQUESTED, REQUESTED, [WebhookEndpoint(receiver.url)])
        await eventually(lambda: notifier.failed == 1)
        assert len(receiver.requests) == 3
    finally:
        await notifier.close()


async def test_unreachable_endpoint_neither_blocks_notify_nor_close(closed_port_url: str) -> None:
    # Long backoff: close() must not sit out the pending retry.
    notifier = WebhookNotifier(attempts=6, base_delay_s=10, max_delay_s=30, timeout_s=2)
    await notifier.start()
    endpoint = WebhookEndpoint(closed_port_url, secret=SECRET)
    started = time.monotonic()
    for _ in range(50):
        notifier.notify(APPROVAL_REQUESTED, REQUESTED, [endpoint])
    assert time.monotonic() - started < 0.1
    await asyncio.sleep(0.1)  # the first attempt fails, the retry waits
    started = time.monotonic()
    await notifier.close()
    assert time.monotonic() - started < 1.0  # not the 10 s backoff
    assert notifier.delivered == 0
    assert notifier.failed + notifier.dropped == 50


async def test_close_gives_a_hanging_delivery_a_short_grace(receiver: Receiver) -> None:
    receiver.hang = True
    notifier = WebhookNotifier(timeout_s=5, base_delay_s=10)
    await notifier.start()
    notifier.notify(APPROVAL_REQUESTED, REQUESTED, [WebhookEndpoint(receiver.url)])
    notifier.notify(APPROVAL_DECIDED, DECIDED, [WebhookEndpoint(receiver.url)])
    await eventually(lambda: len(receiver.requests) == 1)
    started = time.monotonic()
    await notifier.close()
    # The grace (CLOSE_GRACE_S, 1 s), not the 5 s request timeout (the window is wide
    # for a busy machine, and still short of the timeout).
    assert 0.9 < time.monotonic() - started < 4.0
    assert (notifier.delivered, notifier.failed, notifier.dropped) == (0, 0, 2)


async def test_one_dead_endpoint_does_not_delay_another(
    receiver: Receiver, closed_port_url: str
) -> None:
    notifier = WebhookNotifier(attempts=6, base_delay_s=10, timeout_s=2)
    await notifier.start()
    try:
        dead = WebhookEndpoint(closed_port_url)
        for _ in range(3):
            notifier.notify(APPROVAL_REQUESTED, REQUESTED, [dead, WebhookEndpoint(receiver.url)])
        await eventually(lambda: notifier.delivered == 3)
    finally:
        await notifier.close()


async def test_queue_bound_drops_the_oldest(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = WebhookNotifier(max_queue=3, base_delay_s=0.01)
    endpoint = WebhookEndpoint(receiver.url)
    # Not started yet: deliveries wait in the queue.
    for number in range(5):
        notifier.notify(APPROVAL_REQUESTED, {**REQUESTED, "id": f"apr_{number}"}, [endpoint])
    assert (notifier.queued, notifier.dropped) == (3, 2)
    assert caplog.text.count("dropped the oldest") == 2
    await notifier.start()
    try:
        await eventually(lambda: notifier.delivered == 3)
        # In order, one endpoint's deliveries never overtake each other.
        assert [r.json()["data"]["id"] for r in receiver.requests] == ["apr_2", "apr_3", "apr_4"]
    finally:
        await notifier.close()


async def test_events_filtering_and_duplicate_endpoints(
    receiver: Receiver, notifier: WebhookNotifier
) -> None:
    decided_only = WebhookEndpoint(receiver.url, events=frozenset({APPROVAL_DECIDED}))
    notifier.notify(APPROVAL_REQUESTED, REQUESTED, [decided_only])
    assert notifier.queued == 0
    # The same endpoint named twice (say globally and by a rule) is posted once.
    notifier.notify(APPROVAL_DECIDED, DECIDED, [decided_only, decided_only])
    await eventually(lambda: notifier.delivered == 1)
    await asyncio.sleep(0.05)  # not a wait for an event: a window for a stray extra post
    assert [r.json()["type"] for r in receiver.requests] == [APPROVAL_DECIDED]


async def test_one_event_to_several_formats(receiver: Receiver, notifier: WebhookNotifier) -> None:
    endpoints = [
        WebhookEndpoint(receiver.url, secret=SECRET),
        WebhookEndpoint(receiver.url, format="slack"),
    ]
    notifier.notify(APPROVAL_DECIDED, DECIDED, endpoints)
    await eventually(lambda: notifier.delivered == 2)
    bodies = sorted((r.json() for r in receiver.requests), key=lambda body: "text" in body)
    assert bodies[0]["type"] == APPROVAL_DECIDED
    assert "approved by dba-1" in bodies[1]["text"]


async def test_notify_never_raises(
    receiver: Receiver, notifier: WebhookNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = WebhookEndpoint(receiver.url)
    notifier.notify(APPROVAL_REQUESTED, {"id": "apr_x", "when": object()}, [endpoint])
    assert notifier.failed == 1
    assert "cannot render" in caplog.text
    await notifier.close()
    notifier.notify(APPROVAL_REQUESTED, REQUESTED, [endpoint])
    assert "closed" in caplog.text
    assert notifier.queued == 0


async def test_no_secret_in_logs(
    receiver: Receiver, closed_port_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    credentialed = receiver.url.replace("http://", "http://hookuser:pw-LEAK-1@") + "?token=LEAK-2"
    endpoints = [
        WebhookEndpoint(credentialed, secret=SECRET),
        WebhookEndpoint(receiver.url + "/T0/B0/LEAK-3", format="slack"),
        WebhookEndpoint(closed_port_url.replace("/hook", "/hook?key=LEAK-4"), secret=SECRET),
    ]
    receiver.statuses = [500, 400]  # a retry, then a refusal
    notifier = WebhookNotifier(attempts=2, base_delay_s=0.01, timeout_s=2)
    await notifier.start()
    notifier.notify(APPROVAL_REQUESTED, REQUESTED, endpoints)
    await eventually(lambda: notifier.failed >= 2)
    await notifier.close()
    authorization = next(r.headers["Authorization"] for r in receiver.requests)
    assert authorization == "Basic " + base64.b64encode(b"hookuser:pw-LEAK-1").decode()
    # The receiver's own access log is not ours to judge.
    logged = "\n".join(
        record.getMessage() for record in caplog.records if record.name.startswith("airlock")
    )
    assert "HTTP 500" in logged
    assert "HTTP 400" in logged
    assert "ClientConnectorError" in logged
    assert "127.0.0.1" in logged
    for secret in ("LEAK", SECRET, SECRET.removeprefix("whsec_"), authorization, "hookuser"):
        assert secret not in logged
    # Nor the body: it holds SQL and bind parameters.
    assert "UPDATE t SET" not in logged
