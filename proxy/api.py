"""The gateway's HTTP side: health, and the approvals API under /api/v1.

Every /api/v1 call carries `Authorization: Bearer <JWT>`, verified exactly as
agents' tokens are. Errors are JSON: `{"error": {"code", "message"}}` with 400
(bad input), 401 (no valid token), 403 (not allowed to decide this request),
404 (no such request) or 409 (already decided).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from policy.identity import Identity
from protocols.errors import AirlockError
from proxy.approvals import ApprovalHub, NotAllowedToDecide
from proxy.config import parse_duration
from proxy.store import SCOPES, STATES, AlreadyDecided, UnknownRequest

_MAX_BODY_BYTES = 64 * 1024
_MAX_TEXT_CHARS = 2000


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Identity: ...


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
) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **health()})

    app = web.Application(client_max_size=_MAX_BODY_BYTES)
    app.router.add_get("/healthz", healthz)
    if hub is not None and verifier is not None:
        ApprovalsApi(hub, verifier).add_routes(app)
    return app


Handler = Callable[[web.Request, Identity], Awaitable[Any]]


class ApprovalsApi:
    def __init__(self, hub: ApprovalHub, verifier: TokenVerifier) -> None:
        self.hub = hub
        self.verifier = verifier

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/approvals", self._route(self.list))
        app.router.add_get("/api/v1/approvals/{id}", self._route(self.get))
        app.router.add_post("/api/v1/approvals/{id}/approve", self._route(self.approve))
        app.router.add_post("/api/v1/approvals/{id}/deny", self._route(self.deny))

    def _route(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def run(request: web.Request) -> web.Response:
            try:
                identity = await self._identity(request)
                return web.json_response(await handler(request, identity))
            except ApiError as error:
                return _error(error.status, error.code, error.message)
            except UnknownRequest:
                return _error(404, "not_found", f"no approval request {request.match_info['id']}")
            except AlreadyDecided as error:
                return _error(409, "conflict", f"already {error.request.state}")
            except NotAllowedToDecide as error:
                return _error(403, "forbidden", str(error))

        return run

    async def _identity(self, request: web.Request) -> Identity:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "a bearer token is required")
        try:
            return await self.verifier.verify(token.strip())
        except AirlockError as error:
            raise ApiError(401, "unauthorized", error.message) from None

    async def list(self, request: web.Request, _identity: Identity) -> Any:
        state = request.query.get("state", "pending")
        if state not in (*STATES, "all"):
            raise ApiError(400, "bad_request", f"state must be one of {', '.join(STATES)}, all")
        found = self.hub.store.list(None if state == "all" else state)
        return {"approvals": [r.to_json() for r in found]}

    async def get(self, request: web.Request, _identity: Identity) -> Any:
        return self.hub.store.get(request.match_info["id"]).to_json()

    async def approve(self, request: web.Request, identity: Identity) -> Any:
        body = await _body(request)
        scope = body.get("scope", "statement")
        if scope not in SCOPES:
            raise ApiError(400, "bad_request", f"scope must be one of {', '.join(SCOPES)}")
        ttl_s = _ttl(body)
        comment = _text(body, "comment")
        return self.hub.approve(
            request.match_info["id"], identity, scope=scope, ttl_s=ttl_s, comment=comment
        ).to_json()

    async def deny(self, request: web.Request, identity: Identity) -> Any:
        body = await _body(request)
        reason = _text(body, "reason")
        if not reason:
            raise ApiError(400, "bad_request", "a reason is required to deny")
        return self.hub.deny(request.match_info["id"], identity, reason=reason).to_json()


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
