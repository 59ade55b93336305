"""Webhook notifications for approval requests: signing, payloads and delivery.

Approvers hear about a request when it is created (`approval.requested`), when
one approver of several approves it (`approval.partially_approved`: the
two-person rule), when it is settled (`approval.decided`: approved, denied, or
withdrawn by its client), and when its agent stops waiting for it
(`approval.timed_out`: it stays pending). With `web.public_url` configured, each
event's data has the request page's `url`, and Slack messages link to it. Each
endpoint gets either the event JSON itself (format "standard") or a
Slack-compatible message (format "slack").
Signed endpoints get Standard Webhooks headers (https://www.standardwebhooks.com/):
`webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>`
over `{id}.{timestamp}.{body}`; `verify` checks them on the receiving side.

`WebhookNotifier.notify` only enqueues, so a slow or dead endpoint never holds
up an approval hold. Delivery runs in background tasks owned by the notifier,
one lane per endpoint: deliveries to an endpoint go out in order, one at a time,
and an endpoint that is down delays only its own lane. Secrets, signatures and
bodies (SQL, bind parameters) are never logged; endpoint URLs are logged without
userinfo, query or fragment (see `redact_url`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import itertools
import json
import logging
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

log = logging.getLogger("airlock.webhooks")

APPROVAL_REQUESTED = "approval.requested"
APPROVAL_PARTIALLY_APPROVED = "approval.partially_approved"
APPROVAL_DECIDED = "approval.decided"
APPROVAL_TIMED_OUT = "approval.timed_out"
ALL_EVENTS = frozenset(
    {APPROVAL_REQUESTED, APPROVAL_PARTIALLY_APPROVED, APPROVAL_DECIDED, APPROVAL_TIMED_OUT}
)
FORMATS = frozenset({"standard", "slack"})

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SIGNATURE_VERSION = "v1"
#: How long close() lets deliveries already under way finish (capped by timeout_s).
CLOSE_GRACE_S = 1.0
#: HTTP statuses outside 2xx that are worth retrying; any other status is final.
RETRYABLE_STATUSES = frozenset({408, 429})
USER_AGENT = "airlock-webhooks/1"

#: Slack rejects a section text over 3000 characters. Code blocks (SQL, parameters)
#: and single values are cut so that no section can exceed it.
SLACK_SECTION_CHARS = 3000
SLACK_BLOCK_CHARS = 2900
SLACK_FIELD_CHARS = 600
SLACK_PARAM_CHARS = 200
SLACK_MAX_PARAMS = 20


class WebhookVerificationError(ValueError):
    """A webhook's headers do not prove it came from the holder of the secret.

    The message says why (missing header, stale timestamp, no matching signature)
    and never includes the secret or the signatures.
    """


# --- signing ----------------------------------------------------------------


def generate_secret() -> str:
    """A new endpoint secret, `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_<base64>` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"webhook secret must start with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        # No `from exc`: binascii's message could quote part of the secret.
        raise ValueError(
            f"webhook secret is not valid base64 after the {SECRET_PREFIX!r} prefix"
        ) from None
    if not key:
        raise ValueError("webhook secret has an empty key")
    return key


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<base64 HMAC-SHA256>`."""
    digest = _signature(_secret_key(secret), msg_id, timestamp, body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> None:
    """Check a received webhook's Standard Webhooks headers; raise if they do not hold.

    `headers` may be any mapping (header names are matched case-insensitively),
    `body` the raw request body exactly as received. The timestamp must be within
    `tolerance_s` of `now` (default: the current time) in either direction, which
    bounds replays. `webhook-signature` may list several space-separated
    signatures (as during a secret rotation); one valid `v1` signature suffices.
    Raises WebhookVerificationError; a malformed secret raises ValueError.
    """
    key = _secret_key(secret)
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp_text = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not timestamp_text or not signatures:
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is in the future")
    raw = body.encode() if isinstance(body, str) else body
    expected = _signature(key, msg_id, timestamp, raw)
    for candidate in signatures.split():
        version, _, encoded = candidate.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            presented = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(presented, expected):
            return
    raise WebhookVerificationError("no valid signature in webhook-signature")


# --- endpoints --------------------------------------------------------------


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """The URL as it may be logged: scheme, host, port and (optionally) path only.

    Userinfo, query and fragment are dropped, since they are where credentials
    usually sit. Slack-style hook URLs carry their credential in the path, so
    Slack endpoints are logged without it (`keep_path=False`).
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    path = parts.path if keep_path else ("/..." if parts.path not in ("", "/") else "")
    return f"{parts.scheme}://{netloc}{path}"


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """Where to post events, how to sign them and in which format.

    Checked on construction, so a bad configuration fails at startup; the
    messages never quote the secret nor the parts of the URL that may hold one.
    """

    url: str
    secret: str | None = None  # "whsec_<base64 key>"; None: unsigned
    format: str = "standard"  # "standard" | "slack"
    events: frozenset[str] = ALL_EVENTS

    def __post_init__(self) -> None:
        shown = redact_url(self.url, keep_path=False)
        try:
            parts = urlsplit(self.url)
            host = parts.hostname
            _ = parts.port  # raises ValueError on a bad port
        except ValueError:
            raise ValueError(f"webhook URL {shown} is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError(f"webhook URL {shown} must be an http or https URL with a host")
        if self.format not in FORMATS:
            raise ValueError(
                f"webhook format {self.format!r} for {shown} is not one of {sorted(FORMATS)}"
            )
        if self.secret is not None:
            try:
                _secret_key(self.secret)
            except ValueError as exc:
                raise ValueError(f"webhook for {shown}: {exc}") from None
        if not isinstance(self.events, frozenset) or not self.events:
            raise ValueError(f"webhook for {shown} must subscribe to a non-empty set of events")
        if unknown := self.events - ALL_EVENTS:
            raise ValueError(
                f"webhook for {shown} subscribes to unknown events {sorted(unknown)}; "
                f"known events are {sorted(ALL_EVENTS)}"
            )

    @property
    def display_url(self) -> str:
        """The URL as logged."""
        return redact_url(self.url, keep_path=self.format != "slack")


# --- payloads ---------------------------------------------------------------


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def standard_payload(event_type: str, data: Mapping[str, Any], timestamp: str) -> dict[str, Any]:
    """The event as posted in the "standard" format."""
    return {"type": event_type, "timestamp": timestamp, "data": data}


def _mrkdwn_escape(text: str) -> str:
    # Slack's three control characters; everything else is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(escaped: str, limit: int) -> str:
    """Cut escaped text to `limit` characters without splitting an entity."""
    if len(escaped) <= limit:
        return escaped
    return re.sub(r"&[a-z]{0,3}$", "", escaped[: limit - 1]) + "\u2026"


def _str(value: Any, default: str = "?") -> str:
    if value is None or value == "":
        return default
    return value if isinstance(value, str) else str(value)


def _field(value: Any, limit: int = SLACK_FIELD_CHARS, default: str = "?") -> str:
    """A value as escaped mrkdwn of bounded length."""
    return _clip(_mrkdwn_escape(_str(value, default)), limit)


def _code_block(text: str, limit: int = SLACK_BLOCK_CHARS) -> str:
    # A code block cannot contain its own fence; a zero-width space breaks it up.
    return "```" + _clip(_mrkdwn_escape(text).replace("```", "`\u200b``"), limit) + "```"


def _requester_text(requester: Any) -> str:
    if not isinstance(requester, Mapping):
        return _str(requester)
    who = _str(requester.get("subject"))
    email = requester.get("email")
    if email:
        who += f" <{_str(email)}>"
    groups = requester.get("groups")
    if isinstance(groups, list | tuple) and groups:
        who += f" (groups: {', '.join(_str(g) for g in groups)})"
    return who


def _parameters_text(parameters: Any) -> str | None:
    if not isinstance(parameters, list | tuple) or not parameters:
        return None
    lines = []
    for number, parameter in enumerate(parameters[:SLACK_MAX_PARAMS], start=1):
        kind = None
        value = parameter
        if isinstance(parameter, Mapping):
            value, kind = parameter.get("value"), parameter.get("type")
        shown = "NULL" if value is None else _str(value, "")
        if len(shown) > SLACK_PARAM_CHARS:
            shown = shown[: SLACK_PARAM_CHARS - 1] + "\u2026"
        lines.append(f"${number} = {shown}" + (f"  ({_str(kind)})" if kind else ""))
    if len(parameters) > SLACK_MAX_PARAMS:
        lines.append(f"... and {len(parameters) - SLACK_MAX_PARAMS} more")
    return "\n".join(lines)


def _progress_text(data: Mapping[str, Any]) -> str | None:
    """ "1 of 2 approvals" for a request that needs more than one approver, else None."""
    required, received = data.get("approvals_required"), data.get("approvals_received")
    if not isinstance(required, int) or not isinstance(received, int) or required < 2:
        return None
    return f"{received} of {required} approvals"


def _latest_approver(data: Mapping[str, Any]) -> str:
    decisions = data.get("decisions")
    if isinstance(decisions, list):
        for decision in reversed(decisions):
            if isinstance(decision, Mapping) and decision.get("verdict") == "approve":
                return _str(decision.get("by"))
    return "?"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def slack_payload(event_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message (`text` plus `blocks`) for an approval event.

    Any key of `data` may be missing or of an unexpected type; the message then
    shows "?" in its place rather than failing. Long values are cut so that no
    section exceeds Slack's 3000-character limit.
    """
    request_id = _str(data.get("id"))
    who = _requester_text(data.get("requester"))
    target = _str(data.get("target"))
    statement_class = _str(data.get("class"))
    state = _str(data.get("state"), "decided")
    decision = data.get("decision")
    if not isinstance(decision, Mapping):
        decision = {}
    by = _str(decision.get("by"))

    progress = _progress_text(data)
    if event_type == APPROVAL_REQUESTED:
        text = f"Approval requested: {who} wants to run a {statement_class} on {target}"
        headline = (
            f":lock: *Approval requested* for a {_field(statement_class)} on {_field(target)}"
        )
        if progress is not None:
            headline += f" ({_field(progress)})"
    elif event_type == APPROVAL_PARTIALLY_APPROVED:
        latest = _latest_approver(data)
        text = f"Request {request_id} approved by {latest} ({progress}): more approvals needed"
        headline = (
            f":ballot_box_with_check: *Approved by {_field(latest)}* ({_field(progress)}): "
            "still pending, more approvals needed"
        )
    elif event_type == APPROVAL_DECIDED and state == "withdrawn":
        why = _str(decision.get("reason"), "no reason given")
        text = f"Request {request_id} withdrawn ({why}): it can no longer be decided"
        headline = (
            f":leftwards_arrow_with_hook: *Withdrawn*: {_field(why)}. "
            "The statement never ran; nothing is left to decide."
        )
    elif event_type == APPROVAL_DECIDED:
        text = f"Request {request_id} {state} by {by}: {statement_class} on {target} for {who}"
        icon = {"approved": ":white_check_mark:", "denied": ":no_entry:"}.get(state, ":bell:")
        headline = f"{icon} *{_field(state.capitalize())}* by {_field(by)}"
        if state == "approved" and progress is not None:
            headline += f" ({_field(progress)})"
    elif event_type == APPROVAL_TIMED_OUT:
        text = f"Request {request_id}: the agent stopped waiting; it stays pending"
        headline = (
            ":hourglass: *The agent stopped waiting* for a decision. The request stays "
            "pending: once approved, the same statement runs when the agent retries it."
        )
    else:
        text = f"Airlock {event_type} for request {request_id}"
        headline = f":bell: *{_field(event_type)}*"

    details = [
        f"*Requester:* {_field(who)}",
        f"*Target:* {_field(target)}",
        f"*Class:* {_field(statement_class)}",
    ]
    reasons = data.get("reasons")
    if isinstance(reasons, list | tuple) and reasons:
        details.append("*Why:* " + _field("; ".join(_str(r) for r in reasons)))
    blocks: list[dict[str, Any]] = [_section(headline), _section("\n".join(details))]
    sql = data.get("sql")
    if sql:
        blocks.append(_section("*SQL:*\n" + _code_block(_str(sql))))
    parameters = _parameters_text(data.get("parameters"))
    if parameters is not None:
        blocks.append(_section("*Parameters:*\n" + _code_block(parameters)))

    if event_type == APPROVAL_DECIDED and state in ("approved", "denied"):
        outcome = [f"*Scope:* {_field(decision.get('scope'))}"] if state == "approved" else []
        for key, label in (("expires_at", "Expires"), ("reason", "Reason"), ("comment", "Comment")):
            if decision.get(key):
                outcome.append(f"*{label}:* {_field(decision.get(key))}")
        blocks.append(_section("\n".join(outcome)))
    elif event_type in (APPROVAL_REQUESTED, APPROVAL_PARTIALLY_APPROVED):
        blocks.append(
            _section(
                "*To approve:* "
                + _code_block(f"airlock approve {request_id}", SLACK_FIELD_CHARS)
                + "\n*To deny:* "
                + _code_block(f'airlock deny {request_id} --reason "..."', SLACK_FIELD_CHARS)
            )
        )
    footer = f"Request `{_field(request_id)}`"
    url = data.get("url")
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        # Slack's link syntax: <url|label>; the URL is escaped as any text is.
        footer += f" · <{_mrkdwn_escape(url)}|open in Airlock>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]})
    return {"text": _clip(_mrkdwn_escape(text), SLACK_SECTION_CHARS), "blocks": blocks}


# --- delivery ---------------------------------------------------------------


@dataclass(slots=True)
class _Delivery:
    """One event for one endpoint; the id and body stay the same across retries."""

    seq: int
    msg_id: str
    event_type: str
    endpoint: WebhookEndpoint
    body: bytes = field(repr=False)


class _Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give up"


class WebhookNotifier:
    """Posts approval events to webhook endpoints in the background.

    `notify()` is synchronous and never blocks or raises: it serialises the event
    and enqueues one delivery per subscribed endpoint. Call it on the event loop's
    thread. At most `max_queue` deliveries wait at once (deliveries under way are
    not counted); when the queue is full the *oldest* waiting delivery, across
    all endpoints, is dropped with a warning, since fresh news matters more to
    an approver and the oldest usually sits behind an endpoint that is down.

    Each delivery gets `attempts` tries, `timeout_s` each; between tries it waits
    `base_delay_s`, doubled each time, capped at `max_delay_s` (a longer
    Retry-After from the receiver is honoured up to that cap). 2xx is delivered;
    408, 429, 5xx, timeouts and connection errors are retried; anything else
    (4xx, redirects, which are not followed) fails at once.

    `close()` cuts retry waits short, gives each lane up to CLOSE_GRACE_S (capped
    by `timeout_s`) to finish the delivery under way and to try what is queued
    once, then cancels it and drops the rest with a warning. Counters:
    `delivered`, `failed` (gave up) and `dropped` (queue full, or shutdown).
    """

    def __init__(
        self,
        *,
        max_queue: int = 1000,
        attempts: int = 6,
        base_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        timeout_s: float = 5.0,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if base_delay_s < 0 or max_delay_s < 0 or timeout_s <= 0:
            raise ValueError("delays must not be negative and timeout_s must be positive")
        self._max_queue = max_queue
        self._attempts = attempts
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = asyncio.Event()
        self._closed = False
        self._seq = itertools.count()
        self._lanes: dict[WebhookEndpoint, deque[_Delivery]] = {}
        self._lane_tasks: dict[WebhookEndpoint, asyncio.Task[None]] = {}
        self._queued = 0
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    @property
    def queued(self) -> int:
        """Deliveries waiting for their first attempt."""
        return self._queued

    async def start(self) -> None:
        """Create the HTTP session and start delivering what is already queued."""
        if self._session is not None or self._closed:
            raise RuntimeError("WebhookNotifier already started or closed")
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            headers={"User-Agent": USER_AGENT},
        )
        for endpoint in list(self._lanes):
            self._start_lane(endpoint)

    def notify(
        self, event_type: str, data: dict[str, Any], endpoints: Sequence[WebhookEndpoint]
    ) -> None:
        """Enqueue `event_type` for each endpoint subscribed to it; never blocks."""
        if self._closed:
            log.warning("webhook notifier is closed; %s event not sent", event_type)
            return
        subscribed = [e for e in dict.fromkeys(endpoints) if event_type in e.events]
        if not subscribed:
            return
        msg_id = f"msg_{uuid.uuid4().hex}"
        timestamp = _utc_now_iso()
        bodies: dict[str, bytes] = {}
        for format_ in {e.format for e in subscribed}:
            try:
                bodies[format_] = self._render(format_, event_type, data, timestamp)
            except (TypeError, ValueError, RecursionError) as exc:
                # The data's content is not logged: it holds SQL and parameters.
                log.error(
                    "webhook %s event not sent: cannot render a %s payload (%s)",
                    event_type,
                    format_,
                    type(exc).__name__,
                )
                self.failed += len(subscribed)
                return
        for endpoint in subscribed:
            body = bodies[endpoint.format]
            self._enqueue(_Delivery(next(self._seq), msg_id, event_type, endpoint, body))

    async def close(self) -> None:
        """Stop promptly: no more retries, a short grace for deliveries under way."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        tasks = list(self._lane_tasks.values())
        if tasks:
            grace_s = min(CLOSE_GRACE_S, self._timeout_s)
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                # wait() rather than gather(): the tasks' CancelledError is expected
                # and must not be mistaken for a cancellation of close() itself.
                await asyncio.wait(pending)
        self._lane_tasks.clear()
        if self._queued:
            log.warning("webhook notifier closed with %d deliveries not sent", self._queued)
            self.dropped += self._queued
            self._queued = 0
        self._lanes.clear()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @staticmethod
    def _render(format_: str, event_type: str, data: dict[str, Any], timestamp: str) -> bytes:
        payload = (
            slack_payload(event_type, data)
            if format_ == "slack"
            else standard_payload(event_type, data, timestamp)
        )
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

    def _enqueue(self, delivery: _Delivery) -> None:
        if self._queued >= self._max_queue:
            self._drop_oldest()
        self._lanes.setdefault(delivery.endpoint, deque()).append(delivery)
        self._queued += 1
        if self._session is not None:
            self._start_lane(delivery.endpoint)

    def _drop_oldest(self) -> None:
        lane = min((lane for lane in self._lanes.values() if lane), key=lambda lane: lane[0].seq)
        oldest = lane.popleft()
        self._queued -= 1
        self.dropped += 1
        log.warning(
            "webhook queue full (%d): dropped the oldest delivery, %s to %s",
            self._max_queue,
            oldest.event_type,
            oldest.endpoint.display_url,
        )

    def _start_lane(self, endpoint: WebhookEndpoint) -> None:
        if endpoint in self._lane_tasks or self._loop is None:
            return
        task = self._loop.create_task(self._run_lane(endpoint))
        self._lane_tasks[endpoint] = task

    async def _run_lane(self, endpoint: WebhookEndpoint) -> None:
        """Deliver an endpoint's queue in order; end when it is empty."""
        lane = self._lanes[endpoint]
        while lane:
            delivery = lane.popleft()
            self._queued -= 1
            try:
                await self._deliver(delivery)
            except asyncio.CancelledError:
                # close() ran out of grace with this delivery under way.
                self.dropped += 1
                raise
            except Exception:
                # A bug must not silently stop this endpoint's deliveries.
                self.failed += 1
                log.exception(
                    "webhook %s to %s failed unexpectedly",
                    delivery.event_type,
                    endpoint.display_url,
                )
        # No await since the loop's test: notify() cannot have added to the lane.
        del self._lane_tasks[endpoint]
        del self._lanes[endpoint]

    async def _deliver(self, delivery: _Delivery) -> None:
        url = delivery.endpoint.display_url
        for attempt in range(1, self._attempts + 1):
            outcome, detail, retry_after_s = await self._attempt(delivery)
            if outcome is _Outcome.DELIVERED:
                self.delivered += 1
                log.debug("webhook %s delivered to %s", delivery.event_type, url)
                return
            if outcome is _Outcome.GIVE_UP:
                self.failed += 1
                log.warning(
                    "webhook %s to %s refused (%s); not retried", delivery.event_type, url, detail
                )
                return
            if attempt == self._attempts or self._closing.is_set():
                break
            delay_s = min(self._base_delay_s * 2 ** (attempt - 1), self._max_delay_s)
            if retry_after_s is not None:
                delay_s = min(max(delay_s, retry_after_s), self._max_delay_s)
            log.info(
                "webhook %s to %s failed (%s), attempt %d of %d; retrying in %.3g s",
                delivery.event_type,
                url,
                detail,
                attempt,
                self._attempts,
                delay_s,
            )
            if not await self._sleep_unless_closing(delay_s):
                break
        self.failed += 1
        log.warning(
            "webhook %s to %s failed after %d attempt(s) (%s); giving up",
            delivery.event_type,
            url,
            attempt,
            detail,
        )

    async def _attempt(self, delivery: _Delivery) -> tuple[_Outcome, str, float | None]:
        """One POST: the outcome, a loggable detail, and any Retry-After in seconds."""
        session = self._session
        if session is None:
            return _Outcome.GIVE_UP, "notifier closed", None
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery.msg_id,
            "webhook-timestamp": str(timestamp),
        }
        secret = delivery.endpoint.secret
        if secret is not None:
            # Signed per attempt, so the timestamp is fresh for the receiver's
            # tolerance check; the id stays the same for deduplication.
            headers["webhook-signature"] = sign(secret, delivery.msg_id, timestamp, delivery.body)
        try:
            async with session.post(
                delivery.endpoint.url,
                data=delivery.body,
                headers=headers,
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            return _Outcome.RETRY, f"no answer within {self._timeout_s} s", None
        except aiohttp.ClientError as exc:
            # Only the class name: aiohttp's messages can quote the full URL.
            return _Outcome.RETRY, type(exc).__name__, None
        detail = f"HTTP {status}"
        if 200 <= status < 300:
            return _Outcome.DELIVERED, detail, None
        if status >= 500 or status in RETRYABLE_STATUSES:
            return _Outcome.RETRY, detail, _retry_after_s(retry_after)
        return _Outcome.GIVE_UP, detail, None

    async def _sleep_unless_closing(self, delay_s: float) -> bool:
        """Wait `delay_s`; False at once if close() is called meanwhile."""
        try:
            async with asyncio.timeout(delay_s):
                await self._closing.wait()
        except TimeoutError:
            return True
        return False


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After in seconds; the HTTP-date form is rare for webhooks and ignored."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
