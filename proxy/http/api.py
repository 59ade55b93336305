"""The gateway's HTTP side: liveness (/healthz), readiness (/readyz), metrics, under
/api/v1 approvals, sessions and short-lived credentials, and the web page at /
(proxy/http/web.py).

Every /api/v1 call carries `Authorization: Bearer <JWT>`, verified exactly as
agents' tokens are. Errors are JSON: `{"error": {"code", "message"}}` with 400
(bad input), 401 (no valid token), 403 (not allowed), 404 (no such request or
target), 409 (already decided, or withdrawn: the message says which) or 429 (too
many live credentials).

A session's token is refreshed at /api/v1/sessions/{id}/refresh, or every live session
of the caller's subject at /api/v1/sessions/refresh, with the fresh token as the bearer
(RefreshApi).

An approval request is shown only to its requester, the members of its approver
groups and the auditors (policy.rules.request_sight); to anyone else it does not
exist: lists leave it out and its id answers 404, as an unknown id does.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from policy.identity import Identity
from policy.rules import (
    RequestSight,
    Rule,
    effective_policy,
    request_sight,
    transcript_refusal,
)
from proxy.approvals.credentials import CredentialBook, TooManyCredentials, new_credential
from proxy.approvals.hub import ApprovalHub, NotAllowedToDecide
from proxy.approvals.store import (
    SCOPES,
    STATES,
    AlreadyDecided,
    ApprovalRequest,
    StoreUnavailable,
    UnknownRequest,
    iso_time,
)
from proxy.approvals.store_pg import TranscriptStore
from proxy.config import TargetSettings, parse_duration
from proxy.core.listener import TokenVerifier
from proxy.core.metrics import CONTENT_TYPE, exposition
from proxy.core.session_core import ENDS_BECAUSE, AnswerRefresh
from proxy.errors import AirlockError
from proxy.http.web import WebPages
from proxy.recording.format import SESSION_ID
from proxy.recording.render import event_json
from proxy.recording.sessions import parse_since, summarize
from proxy.recording.shared import StoredTranscript, find_stored, list_sessions
from proxy.recording.verifier import Transcript, VerifyResult

_MAX_BODY_BYTES = 64 * 1024
_MAX_TEXT_CHARS = 2000
_MAX_LISTED = 500


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def make_app(
    health: Callable[[], dict[str, object]],
    *,
    hub: ApprovalHub | None = None,
    verifier: TokenVerifier | None = None,
    data_dir: Path | None = None,
    transcripts: TranscriptStore | None = None,
    auditors: frozenset[str] = frozenset(),
    metrics: CollectorRegistry | None = None,
    readiness: Callable[[], Awaitable[tuple[bool, dict[str, object]]]] | None = None,
    credentials: CredentialsApi | None = None,
    pages: WebPages | None = None,
    live_sessions: Callable[[], Iterable[LiveSession]] | None = None,
) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **health()})

    app = web.Application(client_max_size=_MAX_BODY_BYTES)
    app.router.add_get("/healthz", healthz)
    if readiness is not None:
        ready_checks = readiness

        async def readyz(_request: web.Request) -> web.Response:
            ready, body = await ready_checks()
            status = "ready" if ready else "not ready"
            return web.json_response({"status": status, **body}, status=200 if ready else 503)

        app.router.add_get("/readyz", readyz)
    if metrics is not None:
        registry = metrics

        async def prometheus(_request: web.Request) -> web.Response:
            # On the loop: the collectors read the sessions' state, which the loop changes.
            body = exposition(registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

        app.router.add_get("/metrics", prometheus)
    if hub is not None and verifier is not None:
        ApprovalsApi(hub, verifier, auditors).add_routes(app)
    if data_dir is not None and verifier is not None:
        SessionsApi(data_dir, auditors, verifier, transcripts).add_routes(app)
    if credentials is not None:
        credentials.add_routes(app)
    if live_sessions is not None and verifier is not None:
        RefreshApi(live_sessions, verifier).add_routes(app)
    if pages is not None:
        pages.add_routes(app)
    return app


Handler = Callable[[web.Request, Identity], Awaitable[Any]]


def _route(
    verifier: TokenVerifier, handler: Handler
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A JSON endpoint: the caller's bearer token verified, errors as JSON."""

    async def run(request: web.Request) -> web.Response:
        try:
            identity = await _identity(verifier, request)
            return web.json_response(await handler(request, identity))
        except ApiError as error:
            return _error(error.status, error.code, error.message)
        except UnknownRequest:
            return _error(404, "not_found", f"no approval request {request.match_info['id']}")
        except AlreadyDecided as error:
            return _error(409, "conflict", str(error))
        except NotAllowedToDecide as error:
            return _error(403, "forbidden", str(error))
        except StoreUnavailable as error:
            return _error(503, "store_unavailable", str(error))

    return run


async def _identity(verifier: TokenVerifier, request: web.Request) -> Identity:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "a bearer token is required")
    try:
        return await verifier.verify(token.strip())
    except AirlockError as error:
        raise ApiError(401, "unauthorized", error.message) from None


class ApprovalsApi:
    def __init__(
        self, hub: ApprovalHub, verifier: TokenVerifier, auditors: frozenset[str] = frozenset()
    ) -> None:
        self.hub = hub
        self.verifier = verifier
        self.auditors = auditors

    def add_routes(self, app: web.Application) -> None:
        route = functools.partial(_route, self.verifier)
        app.router.add_get("/api/v1/approvals", route(self.list))
        app.router.add_get("/api/v1/approvals/{id}", route(self.get))
        app.router.add_post("/api/v1/approvals/{id}/approve", route(self.approve))
        app.router.add_post("/api/v1/approvals/{id}/deny", route(self.deny))

    def _sight(self, approval: ApprovalRequest, identity: Identity) -> RequestSight:
        return request_sight(
            viewer_subject=identity.subject,
            viewer_groups=identity.groups,
            requester_subject=approval.request.subject,
            approver_groups=approval.request.approver_groups,
            auditors=self.auditors,
        )

    def _visible(self, request_id: str, identity: Identity) -> ApprovalRequest:
        """The request, if this caller may see it; UnknownRequest (404) otherwise, so
        that nobody learns a request exists that they may not see."""
        approval = self.hub.store.get(request_id)
        if self._sight(approval, identity) is RequestSight.HIDDEN:
            raise UnknownRequest(request_id)
        return approval

    async def list(self, request: web.Request, identity: Identity) -> Any:
        """Pending requests by default; `state` (or `all`), `requester` (a subject),
        `target` and `since` (ISO 8601 or a duration ago: 24h) look through the history.
        Newest first, at most `limit` (default and maximum 500)."""
        query = request.query
        state = query.get("state", "pending")
        if state not in (*STATES, "all"):
            raise ApiError(400, "bad_request", f"state must be one of {', '.join(STATES)}, all")
        since = query.get("since")
        try:
            since_ts = None if since is None else parse_since(since, self.hub.clock())
        except ValueError as error:
            raise ApiError(400, "bad_request", f"since: {error}") from None
        limit = query.get("limit", str(_MAX_LISTED))
        if not limit.isdigit() or not 1 <= int(limit) <= _MAX_LISTED:
            raise ApiError(400, "bad_request", f"limit must be a number from 1 to {_MAX_LISTED}")
        found = self.hub.store.list(
            None if state == "all" else state,
            requester=query.get("requester") or None,
            target=query.get("target") or None,
            since=since_ts,
            limit=int(limit),
        )
        shown = [r for r in found if self._sight(r, identity) is not RequestSight.HIDDEN]
        return {"approvals": [self._json(r) for r in shown]}

    def _json(self, approval: ApprovalRequest) -> dict[str, Any]:
        data = approval.to_json()
        url = self.hub.page_url(approval.id)
        if url is not None:
            data["url"] = url
        return data

    async def get(self, request: web.Request, identity: Identity) -> Any:
        return self._json(self._visible(request.match_info["id"], identity))

    async def approve(self, request: web.Request, identity: Identity) -> Any:
        self._visible(request.match_info["id"], identity)
        body = await _body(request)
        scope = body.get("scope", "statement")
        if scope not in SCOPES:
            raise ApiError(400, "bad_request", f"scope must be one of {', '.join(SCOPES)}")
        ttl_s = _ttl(body)
        comment = _text(body, "comment")
        return self._json(
            self.hub.approve(
                request.match_info["id"], identity, scope=scope, ttl_s=ttl_s, comment=comment
            )
        )

    async def deny(self, request: web.Request, identity: Identity) -> Any:
        self._visible(request.match_info["id"], identity)
        body = await _body(request)
        reason = _text(body, "reason")
        if not reason:
            raise ApiError(400, "bad_request", "a reason is required to deny")
        return self._json(self.hub.deny(request.match_info["id"], identity, reason=reason))


class CredentialsApi:
    """`POST /api/v1/credentials`: an agent's token traded for a user name and password
    that log in to one target as that agent, until the token expires (or `ttl`)."""

    def __init__(
        self,
        book: CredentialBook,
        verifier: TokenVerifier,
        targets: Mapping[str, TargetSettings],
        rules: Sequence[Rule],
    ) -> None:
        self.book = book
        self.verifier = verifier
        self.targets = targets
        self.rules = rules

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/credentials", _route(self.verifier, self.mint))

    async def mint(self, request: web.Request, identity: Identity) -> Any:
        body = await _body(request)
        name = body.get("target")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "bad_request", "target is required: the name of a target")
        target = self.targets.get(name)
        if target is None:
            raise ApiError(404, "not_found", f'no target named "{name[:_MAX_TEXT_CHARS]}"')
        if effective_policy(self.rules, identity.groups, name) is None:
            raise ApiError(403, "forbidden", f'no rule lets "{identity.subject}" reach "{name}"')
        ttl_s = _ttl(body)
        now = self.book.clock()
        expires_at = identity.expires_at if ttl_s is None else min(identity.expires_at, now + ttl_s)
        try:
            self.book.make_room(identity.subject)  # refuse before the PBKDF2, not after
            credential, password = await asyncio.to_thread(
                new_credential, identity, name, expires_at
            )
            self.book.add(credential)  # checks again: other mints ran meanwhile
        except TooManyCredentials as error:
            raise ApiError(429, "too_many_credentials", str(error)) from None
        return {
            "username": credential.username,
            "password": password,
            "expires_at": iso_time(expires_at),
            "target": name,
            "protocol": target.protocol,
        }


class LiveSession(Protocol):
    """A session relaying now, as far as a token refresh goes (proxy/core/gated_session.py)."""

    id: str
    identity: Identity | None
    ended: bool

    def refresh(self, identity: Identity, via: str) -> AnswerRefresh: ...


class RefreshApi:
    """`POST /api/v1/sessions/{id}/refresh` and `POST /api/v1/sessions/refresh` (every live
    session of the caller's subject): the bearer token is the fresh one, verified as a login
    token is, and must be for the session's subject (else 403, and nothing changes). Each
    session then ends at the token's expiry, never later than its session_ttl."""

    def __init__(
        self, live_sessions: Callable[[], Iterable[LiveSession]], verifier: TokenVerifier
    ) -> None:
        self.live_sessions = live_sessions
        self.verifier = verifier

    def add_routes(self, app: web.Application) -> None:
        route = functools.partial(_route, self.verifier)
        app.router.add_post("/api/v1/sessions/refresh", route(self.refresh_all))
        app.router.add_post("/api/v1/sessions/{id}/refresh", route(self.refresh_one))

    def _live(self) -> list[LiveSession]:
        return [s for s in self.live_sessions() if not s.ended and s.identity is not None]

    async def refresh_one(self, request: web.Request, identity: Identity) -> Any:
        session_id = request.match_info["id"]
        found = [s for s in self._live() if s.id == session_id]
        if not found:
            raise ApiError(404, "not_found", f"no live session {session_id[:_MAX_TEXT_CHARS]}")
        session = found[0]
        assert session.identity is not None
        if session.identity.subject != identity.subject:
            raise ApiError(403, "forbidden", "the token is for another subject than the session's")
        answer = session.refresh(identity, "api")
        if answer.error is not None:
            raise ApiError(403, "forbidden", answer.error.message)
        return _refreshed(session, answer)

    async def refresh_all(self, _request: web.Request, identity: Identity) -> Any:
        mine = [s for s in self._live() if s.identity and s.identity.subject == identity.subject]
        answers = [(session, session.refresh(identity, "api")) for session in mine]
        return {"sessions": [_refreshed(session, answer) for session, answer in answers]}


def _refreshed(session: LiveSession, answer: AnswerRefresh) -> dict[str, Any]:
    if answer.error is not None or answer.end_at is None or answer.reason is None:
        message = answer.error.message if answer.error is not None else "not refreshed"
        return {"id": session.id, "refreshed": False, "error": message}
    return {
        "id": session.id,
        "refreshed": True,
        "ends_at": iso_time(answer.end_at),
        "ends_because": ENDS_BECAUSE[answer.reason],
    }


class SessionsApi:
    """Transcripts for auditors: members of the config's `auditors` groups only.

    With a shared store (`transcripts`), sessions are every gateway's: those shipped
    into the store (sealed), and this gateway's own not shipped yet (still open, or
    sealed a moment ago) from its data_dir. `/sealed` hands out a transcript's bytes
    as sealed and the signer's public key, for the auditor to verify on their side
    (`airlock verify --server`) rather than take this gateway's word for it.
    """

    def __init__(
        self,
        data_dir: Path,
        auditors: frozenset[str],
        verifier: TokenVerifier,
        transcripts: TranscriptStore | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.auditors = auditors
        self.verifier = verifier
        self.transcripts = transcripts

    def add_routes(self, app: web.Application) -> None:
        route = functools.partial(_route, self.verifier)
        app.router.add_get("/api/v1/sessions", route(self._auditor(self.list)))
        app.router.add_get("/api/v1/sessions/{id}", route(self._auditor(self.get)))
        app.router.add_get(
            "/api/v1/sessions/{id}/transcript", route(self._auditor(self.transcript_of))
        )
        app.router.add_get("/api/v1/sessions/{id}/sealed", route(self._auditor(self.sealed)))

    def _auditor(self, handler: Handler) -> Handler:
        async def checked(request: web.Request, identity: Identity) -> Any:
            refusal = transcript_refusal(identity.groups, self.auditors)
            if refusal is not None:
                raise ApiError(403, "forbidden", refusal)
            return await handler(request, identity)

        return checked

    async def list(self, request: web.Request, _identity: Identity) -> Any:
        since = request.query.get("since")
        try:
            since_ts = None if since is None else parse_since(since, time.time())
        except ValueError as error:
            raise ApiError(400, "bad_request", str(error)) from None
        found = await asyncio.to_thread(
            list_sessions,
            self.data_dir,
            self.transcripts,
            identity=request.query.get("identity"),
            target=request.query.get("target"),
            since=since_ts,
        )
        return {"sessions": [summary.to_json() for summary in found]}

    async def get(self, request: web.Request, _identity: Identity) -> Any:
        found = await asyncio.to_thread(self._verified, request.match_info["id"])
        summary = summarize(found.transcript).to_json()
        return {**summary, **found.origin(), "verification": _verification(found.result)}

    async def transcript_of(self, request: web.Request, _identity: Identity) -> Any:
        found = await asyncio.to_thread(self._verified, request.match_info["id"])
        record = found.transcript
        events = [json.loads(event_json(record.session_id, e)) for e in record.events]
        return {
            "session_id": record.session_id,
            **found.origin(),
            "verification": _verification(found.result),
            "events": events,
        }

    async def sealed(self, request: web.Request, _identity: Identity) -> Any:
        found = await asyncio.to_thread(self._found, request.match_info["id"])
        return {
            "session_id": found.transcript.session_id,
            **found.origin(),
            "public_key_pem": found.public_key_pem,
            "transcript": base64.b64encode(found.raw).decode("ascii"),
        }

    def _found(self, session_id: str) -> StoredTranscript:
        if not SESSION_ID.fullmatch(session_id):
            raise ApiError(400, "bad_request", "not a session id")
        try:
            return find_stored(self.data_dir, self.transcripts, session_id)
        except LookupError:
            raise ApiError(404, "not_found", f"no session {session_id}") from None

    def _verified(self, session_id: str) -> _Verified:
        found = self._found(session_id)
        return _Verified(found, found.verify())


@dataclass(frozen=True, slots=True)
class _Verified:
    found: StoredTranscript
    result: VerifyResult

    @property
    def transcript(self) -> Transcript:
        return self.found.transcript

    def origin(self) -> dict[str, Any]:
        return self.found.origin()


def _verification(result: VerifyResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "sealed": result.sealed,
        "events": result.events,
        "problems": list(result.problems),
    }


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _MAX_TEXT_CHARS:
        raise ApiError(400, "bad_request", f"{key} must be a string of at most 2000 characters")
    return value.strip() or None


def _ttl(body: dict[str, Any]) -> float | None:
    if "ttl_s" in body and "ttl" in body:
        raise ApiError(400, "bad_request", "give ttl_s or ttl, not both")
    value = body.get("ttl_s", body.get("ttl"))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(400, "bad_request", "ttl must be seconds or a duration like 10m")
    try:
        seconds = parse_duration(value) if isinstance(value, str) else float(value)
    except (ValueError, TypeError) as error:
        raise ApiError(400, "bad_request", f"bad ttl: {error}") from None
    if not seconds > 0:
        raise ApiError(400, "bad_request", "ttl must be positive")
    return seconds
