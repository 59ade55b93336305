"""The web page at `/`: approvers decide held statements, auditors replay transcripts.

Served by the API listener, rendered on the server as plain HTML forms that work with
scripts off; one small script of its own (proxy/static/desk.js) keeps the pending list
live: the server says when requests change (server-sent events from the hub), and the
script fetches the list again and patches it. A person signs in by SSO (the OIDC
authorization code flow with PKCE, proxy/http/sso.py, when the config has a `web` client)
or by pasting their OIDC token, either verified as every API token is. The page then
shows the pending approval requests (session state, when the agent stops waiting, how
often the same statement was asked for, SQL, bound parameters, requester, age, class,
reasons, the agent's stated reason, the impact preview) with approve and deny buttons
for who may decide them, the decided ones in a history with filters, and, to members
of the `auditors` groups, the sessions (searched, filtered, paged) and each session's
replay with its verification and its transcript to download. Deciding through the page
is deciding through the hub: the same approver-group and self-approval checks, the
same records.

Signing in makes a page session: a random id in an HttpOnly, SameSite=Strict cookie,
held in memory until the token expires. The token itself is not kept. Every form
carries the page session's CSRF token, a post that the browser says came from
another origin is refused (signing in included: see `_same_origin`), and the
page forbids framing and any script or style but its own files
(Content-Security-Policy). User-controlled text (SQL, parameters, reasons,
comments) is shown with control and bidi characters escaped, as the CLI shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import importlib.resources
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from aiohttp import web

from policy.identity import Identity
from policy.rules import RequestSight, request_sight, transcript_refusal
from proxy.approvals.hub import ApprovalHub, NotAllowedToDecide
from proxy.approvals.store import (
    PENDING,
    SCOPES,
    STATES,
    AlreadyDecided,
    ApprovalRequest,
    StoreUnavailable,
    UnknownRequest,
)
from proxy.approvals.store_pg import TranscriptStore
from proxy.config import SSO_CALLBACK_PATH, parse_duration
from proxy.core.listener import TokenVerifier
from proxy.errors import AirlockError
from proxy.http.oidc import OidcConfigError
from proxy.http.sso import SIGN_IN_TTL_S, SignInFailed, SsoClient
from proxy.recording.format import (
    APPROVAL_DECIDED,
    SESSION_ID,
    STATEMENT,
    SUFFIX,
    ApprovalDecided,
    Statement,
    decode,
)
from proxy.recording.render import render
from proxy.recording.sessions import (
    SessionSummary,
    parse_since,
)
from proxy.recording.shared import StoredTranscript, find_stored, list_sessions
from proxy.recording.verifier import Transcript, describe
from proxy.rendering import format_age, preview_lines, printable

COOKIE = "airlock_page"
#: The cookie that binds a sign-in at the identity provider to the browser that began it.
SSO_COOKIE = "airlock_sso"
SSO_PATH = "/sso"
#: Page sessions kept at most; the oldest go first when a sign-in needs room.
MAX_PAGE_SESSIONS = 1_000
#: Sessions listed on a page of the sessions list, newest first.
SESSIONS_LISTED = 200
#: Decided requests listed on a page of the history, newest first.
HISTORY_LISTED = 50
#: The history filters by who may see a request among this many of the latest matches.
HISTORY_SCANNED = 5_000
#: A live page hears from the server at least this often (a comment line), so that
#: proxies keep the stream open and a page whose sign-in ended finds out.
KEEPALIVE_S = 15.0
STATIC = importlib.resources.files("proxy") / "static"
_MAX_FIELD_CHARS = 2000
_MAX_TOKEN_CHARS = 16 * 1024

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it browsers post the page's own forms with `Origin: null`,
    # and the cross-origin check could not tell them from another site's.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_STATIC_TYPES = {"desk.css": "text/css", "desk.js": "text/javascript"}


@dataclass
class PageSession:
    identity: Identity
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    #: Said once on the next page: (text, is_error).
    flash: tuple[str, bool] | None = None


class SharedPageSessions(Protocol):
    """Where gateways sharing a store keep page sessions, by the SHA-256 of the cookie
    (proxy/approvals/store_pg.py PgStore): signed in through one gateway, signed in on all."""

    def put_page_session(self, key_hash: str, identity: Identity, csrf: str) -> None: ...

    def find_page_session(self, key_hash: str, now: float) -> tuple[Identity, str] | None: ...

    def drop_page_session(self, key_hash: str, now: float) -> None: ...


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class WebPages:
    def __init__(
        self,
        hub: ApprovalHub,
        verifier: TokenVerifier,
        data_dir: Path,
        auditors: frozenset[str],
        clock: Callable[[], float] = time.time,
        *,
        sso: SsoClient | None = None,
        shared: SharedPageSessions | None = None,
        transcripts: TranscriptStore | None = None,
    ) -> None:
        self.hub = hub
        #: SSO sign-in (authorization code + PKCE), when the config has a web client.
        self.sso = sso
        self.verifier = verifier
        self.data_dir = data_dir
        self.auditors = auditors
        self.clock = clock
        self.shared = shared
        #: The shared store's transcripts: every gateway's sessions are listed and replayed.
        self.transcripts = transcripts
        self._sessions: dict[str, PageSession] = {}
        #: The live pages' event streams, each told to end when the server stops.
        self._streams: set[asyncio.Queue[str | None]] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.approvals)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_post("/login", self.login)
        if self.sso is not None:
            app.router.add_get(f"{SSO_PATH}/start", self.sso_start)
            app.router.add_get(SSO_CALLBACK_PATH, self.sso_callback)
        app.router.add_post("/logout", self._form(self.logout))
        app.router.add_get("/approvals/live", self.live_list)
        app.router.add_get("/approvals/events", self.events)
        app.router.add_post("/approvals/{id}/approve", self._form(self.approve))
        app.router.add_post("/approvals/{id}/deny", self._form(self.deny))
        app.router.add_get("/history", self._signed_in(self.history))
        app.router.add_get("/sessions", self._signed_in(self.sessions))
        app.router.add_get("/sessions/{id}", self._signed_in(self.session))
        app.router.add_get("/sessions/{id}/transcript", self._signed_in(self.transcript))
        app.router.add_get("/sessions/{id}/verification", self._signed_in(self.verification))
        app.on_shutdown.append(self._end_streams)

    async def static(self, request: web.Request) -> web.Response:
        """The page's own stylesheet and script (proxy/static/)."""
        name = request.match_info["name"]
        content_type = _STATIC_TYPES.get(name)
        if content_type is None:
            raise web.HTTPNotFound()
        body = (STATIC / name).read_bytes()
        headers = {**_HEADERS, "Cache-Control": "no-cache"}
        return web.Response(body=body, content_type=content_type, headers=headers)

    # --- page sessions

    def _page_session(self, request: web.Request) -> tuple[str, PageSession] | None:
        key = request.cookies.get(COOKIE, "")
        session = self._sessions.get(key)
        if session is None and key and self.shared is not None:
            try:
                found = self.shared.find_page_session(_key_hash(key), self.clock())
            except StoreUnavailable as error:
                raise web.HTTPServiceUnavailable(text=str(error)) from None
            if found is not None:  # signed in through another gateway
                session = self._sessions[key] = PageSession(found[0], found[1])
        if session is None:
            return None
        if session.identity.expires_at <= self.clock():
            del self._sessions[key]
            return None
        return key, session

    def _signed_in(
        self, handler: Callable[[web.Request, PageSession], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            found = self._page_session(request)
            if found is None:
                raise web.HTTPSeeOther("/")
            return await handler(request, found[1])

        return run

    def _form(
        self,
        handler: Callable[[web.Request, str, PageSession, dict[str, str]], Awaitable[str]],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A form post: signed in, with the page session's CSRF token; then back to `/`
        (or where the handler says) with what happened said once there."""

        async def run(request: web.Request) -> web.Response:
            if not _same_origin(request):
                return _cross_origin()
            found = self._page_session(request)
            if found is None:
                raise web.HTTPSeeOther("/")
            key, session = found
            fields = await _fields(request)
            if not hmac.compare_digest(fields.get("csrf", ""), session.csrf):
                return _html(
                    _layout("Refused", _error("The form has expired: reload the page."), None),
                    status=403,
                )
            response = web.HTTPSeeOther(await handler(request, key, session, fields))
            if key not in self._sessions:  # signed out: the browser forgets the cookie too
                response.del_cookie(COOKIE, path="/")
            raise response

        return run

    # --- sign in and out

    async def login(self, request: web.Request) -> web.Response:
        if not _same_origin(request):
            return _cross_origin()
        token = (await _fields(request, max_chars=_MAX_TOKEN_CHARS)).get("token", "").strip()
        try:
            identity = await self.verifier.verify(token)
        except AirlockError as error:
            return _html(self._login_page(f"Not signed in: {error.message}"), status=401)
        response = web.HTTPSeeOther("/")
        try:
            self._open_session(request, response, identity)
        except StoreUnavailable as error:
            return _html(self._login_page(f"Not signed in: {error}"), status=503)
        raise response

    def _open_session(
        self, request: web.Request, response: web.StreamResponse, identity: Identity
    ) -> None:
        """A new page session for `identity`, its cookie set on `response`."""
        now = self.clock()
        expired = [k for k, s in self._sessions.items() if s.identity.expires_at <= now]
        for key in expired:
            del self._sessions[key]
        self._sessions.pop(request.cookies.get(COOKIE, ""), None)  # the browser's old one
        while len(self._sessions) >= MAX_PAGE_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        key = secrets.token_urlsafe(32)
        session = PageSession(identity)
        if self.shared is not None:  # raises StoreUnavailable: no session
            self.shared.put_page_session(_key_hash(key), identity, session.csrf)
        self._sessions[key] = session
        response.set_cookie(
            COOKIE,
            key,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
            max_age=max(1, int(identity.expires_at - now)),
        )

    async def sso_start(self, request: web.Request) -> web.Response:
        """Off to the identity provider, with a new sign-in bound to this browser."""
        assert self.sso is not None
        try:
            key, url = await self.sso.start()
        except AirlockError as error:
            return _html(self._login_page(f"SSO is unavailable: {error.message}"), status=503)
        except OidcConfigError as error:
            return _html(self._login_page(f"SSO is unavailable: {error}"), status=503)
        response = web.HTTPSeeOther(url)
        # Lax, not Strict: the browser comes back from the identity provider's site, and
        # a Strict cookie would stay behind.
        response.set_cookie(
            SSO_COOKIE,
            key,
            httponly=True,
            samesite="Lax",
            secure=request.secure,
            path=SSO_PATH,
            max_age=int(SIGN_IN_TTL_S),
        )
        raise response

    async def sso_callback(self, request: web.Request) -> web.Response:
        """Back from the identity provider: a page session, or a page saying why not."""
        assert self.sso is not None
        answer = {k: v[:_MAX_TOKEN_CHARS] for k, v in request.query.items()}
        identity: Identity | None = None
        try:
            signed_in = await self.sso.finish(request.cookies.get(SSO_COOKIE, ""), answer)
            try:
                # Exactly as the API verifies a token: issuer, audience, algorithm, expiry,
                # groups (and the client id, when identity.client_id is set).
                identity = await self.verifier.verify(signed_in.access_token)
            except AirlockError as error:
                raise SignInFailed(f"the access token was refused: {error.message}") from None
            if identity.subject != signed_in.subject:
                raise SignInFailed("the ID token and the access token name different people")
        except SignInFailed as failed:
            response = _html(self._login_page(f"Not signed in: {failed.message}"), status=401)
        else:
            # A page, not a redirect: a redirect in a navigation that began at the identity
            # provider's site would arrive without the SameSite=Strict cookie just set.
            response = _html(_continue_page(), status=200)
            try:
                self._open_session(request, response, identity)
            except StoreUnavailable as error:
                response = _html(self._login_page(f"Not signed in: {error}"), status=503)
        response.del_cookie(SSO_COOKIE, path=SSO_PATH)
        return response

    async def logout(
        self, _request: web.Request, key: str, _session: PageSession, _fields: dict[str, str]
    ) -> str:
        self._sessions.pop(key, None)
        if self.shared is not None:
            try:
                self.shared.drop_page_session(_key_hash(key), self.clock())
            except StoreUnavailable as error:
                raise web.HTTPServiceUnavailable(text=str(error)) from None
        return "/"

    def _login_page(self, problem: str | None = None) -> str:
        return _login_page(problem, sso=self.sso is not None)

    # --- approvals

    async def approvals(self, request: web.Request) -> web.Response:
        found = self._page_session(request)
        if found is None:
            return _html(self._login_page())
        _, session = found
        content = _flash(session) + self._pending_list(session)
        return _html(_layout("Pending approvals", content, session, self.auditors, live=True))

    async def live_list(self, request: web.Request) -> web.Response:
        """The pending list alone, for the page's script to patch the page with."""
        found = self._page_session(request)
        if found is None:
            return _html(_error("Signed out."), status=401)
        return _html(self._pending_list(found[1]))

    def _pending_list(self, session: PageSession) -> str:
        shown = [(r, self._sight(session, r)) for r in self.hub.store.list(PENDING)]
        pending = [(r, sight) for r, sight in shown if sight is not RequestSight.HIDDEN]
        now = self.clock()
        cards = "".join(
            _request_card(
                self._card_facts(r, now),
                session.csrf,
                decide=sight is RequestSight.DECIDE,
            )
            for r, sight in pending
        )
        empty = "" if pending else '<p class="empty">Nothing waits for a decision.</p>'
        return (
            '<section id="pending" data-live="/approvals/live" data-events="/approvals/events">'
            f'<h1 id="pending-count">Pending approvals ({len(pending)})</h1>{empty}'
            f'<div class="cards">{cards}</div></section>'
        )

    def _card_facts(self, approval: ApprovalRequest, now: float) -> CardFacts:
        return CardFacts(
            approval=approval,
            now=now,
            wait_deadline=self.hub.wait_deadline(approval.id),
            timed_out_at=self.hub.timed_out_at(approval.id),
            times_requested=self.hub.store.times_requested(approval),
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: `change` whenever a request is made, decided, withdrawn,
        times out or loses its session (the script then fetches the list again), and
        `signed-out` when the page session ends. Only that something changed is said:
        what this person may see of it comes with the list."""
        found = self._page_session(request)
        if found is None:
            return _html(_error("Signed out."), status=401)
        key = found[0]
        changes: asyncio.Queue[str | None] = asyncio.Queue()
        self._streams.add(changes)
        stop_watching = self.hub.watch(lambda change, _id: changes.put_nowait(change))
        response = web.StreamResponse(
            headers={**_HEADERS, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        try:
            await response.prepare(request)
            await response.write(b"retry: 3000\n\n")
            while True:
                change: str | None = "keepalive"
                with contextlib.suppress(TimeoutError):
                    change = await asyncio.wait_for(changes.get(), KEEPALIVE_S)
                if change is None:
                    break
                if self._page_session(request) is None or key not in self._sessions:
                    await response.write(b"event: signed-out\ndata: \n\n")
                    break
                if change == "keepalive":
                    await response.write(b": keepalive\n\n")
                    continue
                stopping = False
                while not changes.empty():  # a burst of changes is one fetch
                    stopping = stopping or changes.get_nowait() is None
                if stopping:
                    break
                await response.write(f"event: change\ndata: {change}\n\n".encode())
        except ConnectionResetError:
            pass  # the page went away
        finally:
            stop_watching()
            self._streams.discard(changes)
        return response

    async def _end_streams(self, _app: web.Application) -> None:
        for stream in self._streams:
            stream.put_nowait(None)

    async def approve(
        self, request: web.Request, _key: str, session: PageSession, fields: dict[str, str]
    ) -> str:
        request_id = request.match_info["id"]
        scope = fields.get("scope", "statement")
        ttl_text = fields.get("ttl", "").strip()
        try:
            if scope not in SCOPES:
                raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
            ttl_s = parse_duration(ttl_text) if ttl_text else None
            if ttl_s is not None and not ttl_s > 0:
                raise ValueError("the ttl must be positive")
        except ValueError as error:
            session.flash = (f"Not approved: {error}", True)
            return "/"
        comment = fields.get("comment", "").strip() or None
        self._decide(
            session,
            request_id,
            "approved",
            lambda: self.hub.approve(
                request_id, session.identity, scope=scope, ttl_s=ttl_s, comment=comment
            ),
        )
        return "/"

    async def deny(
        self, request: web.Request, _key: str, session: PageSession, fields: dict[str, str]
    ) -> str:
        request_id = request.match_info["id"]
        reason = fields.get("reason", "").strip()
        if not reason:
            session.flash = ("Not denied: a reason is required to deny.", True)
            return "/"
        self._decide(
            session,
            request_id,
            "denied",
            lambda: self.hub.deny(request_id, session.identity, reason=reason),
        )
        return "/"

    def _sight(self, session: PageSession, approval: ApprovalRequest) -> RequestSight:
        return request_sight(
            viewer_subject=session.identity.subject,
            viewer_groups=session.identity.groups,
            requester_subject=approval.request.subject,
            approver_groups=approval.request.approver_groups,
            auditors=self.auditors,
        )

    def _decide(
        self,
        session: PageSession,
        request_id: str,
        done: str,
        decide: Callable[[], ApprovalRequest],
    ) -> None:
        try:
            # A request this person may not see is answered as one that does not exist.
            if self._sight(session, self.hub.store.get(request_id)) is RequestSight.HIDDEN:
                raise UnknownRequest(request_id)
            decided = decide()
        except UnknownRequest:
            session.flash = (f"No approval request {request_id}.", True)
        except AlreadyDecided as error:
            told = str(error)
            session.flash = (f"{told[:1].upper()}{told[1:]}.", True)
        except NotAllowedToDecide as error:
            session.flash = (f"Not allowed: {error}", True)
        else:
            missing = decided.approvals_missing if decided.state == "pending" else 0
            if missing:
                more = f"{missing} more approval{'s' if missing != 1 else ''} needed"
                session.flash = (f"Your approval of {request_id} is recorded; {more}.", False)
            else:
                session.flash = (f"Request {request_id} {done}.", False)

    # --- history

    async def history(self, request: web.Request, session: PageSession) -> web.Response:
        """Decided, withdrawn and expired requests this person may see, newest first."""
        query = request.query
        state = query.get("state", "").strip()
        requester = query.get("requester", "").strip()
        target = query.get("target", "").strip()
        page = _page_number(query.get("page"))
        decided_states = [s for s in STATES if s != PENDING]
        problem = None
        if state and state not in decided_states:
            problem = f"The state must be one of {', '.join(decided_states)}."
        matching = self.hub.store.list(
            state or decided_states,
            subject=requester or None,
            target=target or None,
            limit=HISTORY_SCANNED,
        )
        visible = [r for r in matching if self._sight(session, r) is not RequestSight.HIDDEN]
        shown = visible[(page - 1) * HISTORY_LISTED : page * HISTORY_LISTED]
        rows = "".join(_history_row(r) for r in shown)
        filters = _filter_form(
            "/history",
            [
                _select("state", "State", ["", *decided_states], state),
                _text_input("requester", "Requester", requester, "subject or email"),
                _text_input("target", "Target", target, "target name"),
            ],
        )
        body = (
            f"<h1>History ({len(visible)})</h1>{filters}"
            + (_error(problem) if problem else "")
            + (
                '<div class="scroll"><table class="list"><thead><tr><th>request</th>'
                "<th>state</th><th>requested (UTC)</th><th>requester</th><th>target</th>"
                "<th>class</th><th>statement</th><th>decided (UTC)</th><th>by</th>"
                f"<th>comment or reason</th></tr></thead><tbody>{rows}</tbody></table></div>"
                if shown
                else "<p>No request matches.</p>"
            )
            + _pager("/history", query, page, len(visible), HISTORY_LISTED)
        )
        return _html(_layout("History", body, session, self.auditors))

    # --- sessions and transcripts (auditors)

    def _auditor_refusal(self, session: PageSession) -> web.Response | None:
        refusal = transcript_refusal(session.identity.groups, self.auditors)
        if refusal is None:
            return None
        body = _error(refusal[0].upper() + refusal[1:] + ".")
        return _html(_layout("Sessions", body, session, self.auditors), status=403)

    async def sessions(self, request: web.Request, session: PageSession) -> web.Response:
        refused = self._auditor_refusal(session)
        if refused is not None:
            return refused
        query = request.query
        wanted = {
            name: query.get(name, "").strip()
            for name in ("agent", "target", "since", "until", "class", "approver")
        }
        page = _page_number(query.get("page"))
        problem = None
        try:
            search = SessionSearch.of(wanted, self.clock())
        except ValueError as error:
            problem, search = str(error), SessionSearch()
        try:
            found = await asyncio.to_thread(search.run, self.data_dir, self.transcripts)
        except StoreUnavailable as error:
            problem, found = str(error), []
        newest = sorted(found, key=lambda s: (s.started_at or 0.0, s.session_id), reverse=True)
        shown = newest[(page - 1) * SESSIONS_LISTED : page * SESSIONS_LISTED]
        rows = [
            "<tr>"
            f'<td><a href="/sessions/{_shown(s.session_id)}">{_shown(s.session_id[:12])}</a></td>'
            f"<td>{_shown(_moment(s.started_at))}</td><td>{_shown(s.subject or '?')}</td>"
            f"<td>{_shown(s.target or '?')}</td><td>{s.statements}</td>"
            f"<td>{_shown(s.end_reason or ('open' if s.ended_at is None else 'ended'))}</td>"
            f"<td>{_badge('sealed' if s.sealed else 'not sealed')}</td>"
            "</tr>"
            for s in shown
        ]
        filters = _filter_form(
            "/sessions",
            [
                _text_input("agent", "Agent", wanted["agent"], "subject or email"),
                _text_input("target", "Target", wanted["target"], "target name"),
                _text_input("since", "From", wanted["since"], "2025-06-01 or 24h"),
                _text_input("until", "Until", wanted["until"], "2025-06-02T18:00Z"),
                _select(
                    "class",
                    "Class",
                    ["", "read", "write", "ddl", "admin", "unknown"],
                    wanted["class"],
                ),
                _text_input("approver", "Approver", wanted["approver"], "who decided"),
            ],
        )
        table = (
            '<div class="scroll"><table class="list"><thead><tr><th>session</th>'
            "<th>started (UTC)</th><th>identity</th><th>target</th><th>statements</th>"
            "<th>end</th><th>seal</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table></div>"
            if shown
            else "<p>No session matches.</p>"
        )
        body = (
            f"<h1>Sessions ({len(found)})</h1>{filters}"
            + (_error(problem) if problem else "")
            + table
            + _pager("/sessions", query, page, len(found), SESSIONS_LISTED)
        )
        return _html(_layout("Sessions", body, session, self.auditors))

    async def session(self, request: web.Request, session: PageSession) -> web.Response:
        refused = self._auditor_refusal(session)
        if refused is not None:
            return refused
        session_id = request.match_info["id"]
        if not SESSION_ID.fullmatch(session_id):
            return _html(_layout("Session", _error("Not a session id."), session), status=400)
        try:
            lines, verdict, ok = await asyncio.to_thread(self._replay, session_id)
        except LookupError:
            body = _error(f"No session {session_id}.")
            return _html(_layout("Session", body, session, self.auditors), status=404)
        except StoreUnavailable as error:
            body = _error(str(error))
            return _html(_layout("Session", body, session, self.auditors), status=503)
        shown = f'<p class="{"notice" if ok else "error"}">{_shown(verdict)}</p>'
        replay = _shown(lines, multiline=True)
        quoted = urllib.parse.quote(session_id)
        downloads = (
            '<p class="downloads">'
            f'<a class="button" href="/sessions/{quoted}/transcript" download>'
            "Download the signed transcript</a> "
            f'<a class="button" href="/sessions/{quoted}/verification" download>'
            "Download its verification</a></p>"
        )
        body = f"<h1>Session {_shown(session_id)}</h1>{shown}{downloads}<pre>{replay}</pre>"
        return _html(_layout(f"Session {session_id}", body, session, self.auditors))

    def _replay(self, session_id: str) -> tuple[str, str, bool]:
        """The replay as `airlock replay` prints it, and whether the transcript verifies."""
        found = find_stored(self.data_dir, self.transcripts, session_id)
        verdict, ok = _verdict(found)
        return "\n".join(render(found.transcript)), verdict, ok

    async def transcript(self, request: web.Request, session: PageSession) -> web.StreamResponse:
        """The transcript file as the gateway wrote it, signed: `airlock verify` checks it."""
        refused = self._auditor_refusal(session)
        if refused is not None:
            return refused
        found = await self._transcript_path(request, session)
        if isinstance(found, web.Response):
            return found
        name = found.transcript.session_id + SUFFIX
        return web.Response(
            body=found.raw,
            content_type="application/octet-stream",
            headers={**_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def verification(self, request: web.Request, session: PageSession) -> web.Response:
        """What the gateway's verification of the transcript found, with the file's
        SHA-256 and the public key to check it again offline."""
        refused = self._auditor_refusal(session)
        if refused is not None:
            return refused
        found = await self._transcript_path(request, session)
        if isinstance(found, web.Response):
            return found
        text = await asyncio.to_thread(self._verification_text, found)
        name = found.transcript.session_id + SUFFIX + ".verification.txt"
        return web.Response(
            text=text,
            content_type="text/plain",
            headers={**_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
        )

    def _verification_text(self, found: StoredTranscript) -> str:
        digest = hashlib.sha256(found.raw).hexdigest()
        verdict, _ok = _verdict(found)
        key = found.public_key_pem or "(no public key known for its signer)\n"
        name = found.transcript.session_id + SUFFIX
        return (
            f"transcript: {name}\nsha256: {digest}\nchecked at: {_moment(self.clock())} UTC\n"
            f"result: {verdict}\n\nCheck it again with the public key below, saved as key.pem:\n"
            f"  airlock verify --public-key key.pem {name}\n\n{key}"
        )

    async def _transcript_path(
        self, request: web.Request, session: PageSession
    ) -> StoredTranscript | web.Response:
        session_id = request.match_info["id"]
        if not SESSION_ID.fullmatch(session_id):
            return _html(_layout("Session", _error("Not a session id."), session), status=400)
        try:
            return await asyncio.to_thread(find_stored, self.data_dir, self.transcripts, session_id)
        except LookupError:
            body = _error(f"No session {session_id}.")
            return _html(_layout("Session", body, session, self.auditors), status=404)
        except StoreUnavailable as error:
            body = _error(str(error))
            return _html(_layout("Session", body, session, self.auditors), status=503)


def _verdict(found: StoredTranscript) -> tuple[str, bool]:
    """What `airlock verify` says of it, checked with its signer's public key."""
    result = found.verify()
    return ("verified: " if result.ok else "DOES NOT VERIFY: ") + describe(result), result.ok


@dataclass(frozen=True)
class SessionSearch:
    """The sessions page's filters: those the session list answers from its summary, and
    the statement class and approver, answered from the events."""

    agent: str | None = None
    target: str | None = None
    since: float | None = None
    until: float | None = None
    statement_class: str | None = None
    approver: str | None = None

    @classmethod
    def of(cls, fields: dict[str, str], now: float) -> SessionSearch:
        """From the form's fields; ValueError saying which one is wrong."""

        def moment(name: str, label: str) -> float | None:
            if not fields.get(name):
                return None
            try:
                return parse_since(fields[name], now)
            except ValueError as error:
                raise ValueError(f"{label}: {error}") from None

        return cls(
            agent=fields.get("agent") or None,
            target=fields.get("target") or None,
            since=moment("since", "From"),
            until=moment("until", "Until"),
            statement_class=fields.get("class") or None,
            approver=fields.get("approver") or None,
        )

    def run(
        self, data_dir: Path, transcripts: TranscriptStore | None = None
    ) -> list[SessionSummary]:
        found = list_sessions(
            data_dir, transcripts, identity=self.agent, target=self.target, since=self.since
        )
        if self.until is not None:
            until = self.until
            found = [s for s in found if s.started_at is not None and s.started_at <= until]
        if self.statement_class is None and self.approver is None:
            return found
        return [
            s
            for s in found
            if self._events_match(find_stored(data_dir, transcripts, s.session_id).transcript)
        ]

    def _events_match(self, transcript: Transcript) -> bool:
        has_class = self.statement_class is None
        has_approver = self.approver is None
        for event in transcript.events:
            if not has_class and event.kind == STATEMENT:
                data = decode(event.kind, event.data)
                has_class = isinstance(data, Statement) and (
                    data.statement_class == self.statement_class
                )
            elif not has_approver and event.kind == APPROVAL_DECIDED:
                decided = decode(event.kind, event.data)
                by = decided.by if isinstance(decided, ApprovalDecided) else None
                if isinstance(by, dict):
                    by = by.get("sub")
                has_approver = isinstance(by, str) and (
                    by.casefold() == (self.approver or "").casefold()
                )
            if has_class and has_approver:
                return True
        return False


# --- rendering


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", headers=_HEADERS)


def _layout(
    title: str,
    content: str,
    session: PageSession | None,
    auditors: frozenset[str] = frozenset(),
    *,
    live: bool = False,
) -> str:
    header = '<header><a class="brand" href="/">Airlock</a><nav>'
    if session is not None:
        header += '<a href="/">Pending</a><a href="/history">History</a>'
        identity = session.identity
        if transcript_refusal(identity.groups, auditors) is None:
            header += '<a href="/sessions">Sessions</a>'
        header += (
            f'</nav><span class="who">{_shown(identity.subject)} '
            f"({_shown(', '.join(sorted(identity.groups)))})</span>"
            f'<form class="signout" method="post" action="/logout">{_csrf(session.csrf)}'
            '<button type="submit">Sign out</button></form>'
        )
    else:
        header += "</nav>"
    header += "</header>"
    script = '<script src="/static/desk.js" defer></script>' if live else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_shown(title)} - Airlock</title>"
        f'<link rel="stylesheet" href="/static/desk.css">{script}</head>'
        f"<body>{header}<main>{content}</main></body></html>"
    )


def _login_page(problem: str | None = None, *, sso: bool = False) -> str:
    single_sign_on = (
        f'<p><a class="button" href="{SSO_PATH}/start">Sign in with SSO</a></p>'
        "<p>Or paste a token instead:</p>"
        if sso
        else ""
    )
    content = (
        '<div class="signin"><h1>Sign in</h1>'
        + (_error(problem) if problem else "")
        + single_sign_on
        + '<form method="post" action="/login">'
        '<label for="token">Paste your OIDC access token (the one '
        "<code>airlock approve --token</code> takes).</label>"
        '<textarea id="token" name="token" rows="6" required autocomplete="off" '
        'spellcheck="false"></textarea>'
        '<p><button class="primary" type="submit">Sign in</button></p></form></div>'
    )
    return _layout("Sign in", content, None)


def _continue_page() -> str:
    """Said between the identity provider and the page: on to `/` at once, from here."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="0;url=/">'
        "<title>Signed in - Airlock</title>"
        '<link rel="stylesheet" href="/static/desk.css"></head>'
        '<body><main><p>Signed in. <a href="/">Continue to the approvals</a>.</p></main>'
        "</body></html>"
    )


@dataclass(frozen=True, slots=True)
class CardFacts:
    """What a pending request's card shows beyond the request itself."""

    approval: ApprovalRequest
    now: float
    #: When the agent stops waiting (None: no agent waits, `hold: reject` or gone).
    wait_deadline: float | None
    #: When the agent stopped waiting, its timeout having passed (None: not known to).
    timed_out_at: float | None
    #: Requests for the same statement (text or fingerprint) by the same identity and
    #: target, this one included.
    times_requested: int


def _card_details(facts: CardFacts) -> list[tuple[str, str]]:
    """The card's facts as (term, HTML) rows, in the order shown. More facts about a
    request (its transaction, the agent's justification, an impact preview, approvals
    so far) are rows added here."""
    approval = facts.approval
    r = approval.request
    requester = f"<strong>{_shown(r.subject)}</strong>" + (
        f" &lt;{_shown(r.email)}&gt;" if r.email else ""
    )
    live = approval.session_state == "open"
    session = f"{_badge('live' if live else 'gone')} <code>{_shown(r.session_id[:12])}</code>" + (
        "" if live else " (the agent has disconnected)"
    )
    if facts.wait_deadline is not None:
        left = facts.wait_deadline - facts.now
        waits = (
            f"until {_shown(_moment(facts.wait_deadline))} UTC "
            f"(in {format_age(left)}; then the statement is refused)"
        )
    elif facts.timed_out_at is not None:
        waits = (
            f"{_badge('timed out')} at {_shown(_moment(facts.timed_out_at))} UTC: the "
            "statement was refused; approving lets the agent retry it"
        )
    elif r.hold == "reject" and live:
        waits = "not waiting: the agent was refused, and may retry once this is approved"
    elif r.hold == "reject":
        waits = "not waiting: once approved, the same identity may retry on a new session"
    else:
        waits = "no longer waiting"
    times = facts.times_requested
    asked = "first time" if times <= 1 else f"{times} times (same identity, target, statement)"
    return [
        ("Requester", f"{requester} ({_shown(', '.join(r.groups))})"),
        ("Session", session),
        ("Agent waits", waits),
        ("Requested", f"{format_age(facts.now - approval.created_at)} ago, {asked}"),
        ("Class", _badge(r.statement_class)),
        ("Why held", _shown("; ".join(r.reasons)) if r.reasons else "-"),
        *([("Agent says why", f'<span class="why">{_shown(r.why)}</span>')] if r.why else []),
        *([("Transaction", _shown(r.transaction))] if r.transaction else []),
        *([("Approvals", _approvals_so_far(approval))] if r.approvals_required > 1 else []),
        ("Approvers", _shown(", ".join(r.approver_groups))),
    ]


def _request_card(facts: CardFacts, csrf: str, *, decide: bool) -> str:
    """One held request; the approve and deny forms only for who may decide it."""
    approval = facts.approval
    r = approval.request
    request_id = _shown(approval.id)
    parameters = ""
    if r.parameters:
        rows = "".join(
            f"<tr><td>{n}</td><td>{_shown(p.type)}</td>"
            f"<td>{'NULL' if p.value is None else _shown(p.value)}"
            f"{' (hex)' if p.format == 'hex' else ''}</td></tr>"
            for n, p in enumerate(r.parameters, start=1)
        )
        parameters = (
            '<table class="params"><caption>Parameters</caption>'
            f"<tr><th>#</th><th>type</th><th>value</th></tr>{rows}</table>"
        )
    details = "".join(f"<dt>{term}</dt><dd>{value}</dd>" for term, value in _card_details(facts))
    state = "live" if approval.session_state == "open" else "gone"
    return (
        f'<article class="request session-{state}" id="request-{request_id}" '
        f'aria-labelledby="title-{request_id}">'
        f'<h2 id="title-{request_id}">{_badge(r.statement_class)} on {_shown(r.target)} '
        f"<small>request {request_id}</small></h2>"
        f'<pre class="sql">{_shown(r.sql, multiline=True)}</pre>{parameters}'
        f'<dl class="facts">{details}</dl>'
        + _preview_block(approval.preview)
        + (_decision_forms(request_id, csrf) if decide else "")
        + "</article>"
    )


def _preview_block(preview: dict[str, object] | None) -> str:
    """The impact preview on a card: the plan, estimated rows and dry run, as text."""
    lines = preview_lines(preview)
    if not lines:
        return ""
    shown = "\n".join(_shown(line) for line in lines)
    return (
        '<details class="preview" open><summary>Impact preview</summary>'
        f"<pre>{shown}</pre></details>"
    )


def _approvals_so_far(approval: ApprovalRequest) -> str:
    """Under the two-person rule: "1 of 2 approvals (alice)"."""
    who = ", ".join(d.by for d in approval.approvals)
    return (
        f'<span class="approvals">{len(approval.approvals)} of '
        f"{approval.request.approvals_required} approvals"
        + (f" ({_shown(who)})" if who else "")
        + "</span>"
    )


def _decision_forms(request_id: str, csrf: str) -> str:
    scopes = "".join(f'<option value="{s}">{s}</option>' for s in SCOPES)
    i = request_id
    return (
        '<div class="decide">'
        f'<form class="approve" method="post" action="/approvals/{i}/approve">{_csrf(csrf)}'
        f'<label for="scope-{i}">Scope</label><select id="scope-{i}" name="scope">{scopes}</select>'
        f'<label for="ttl-{i}">TTL</label><input id="ttl-{i}" name="ttl" size="5" '
        'placeholder="15m">'
        f'<label for="comment-{i}">Comment</label><input id="comment-{i}" name="comment">'
        '<button class="primary" type="submit">Approve</button></form>'
        f'<form class="deny" method="post" action="/approvals/{i}/deny">{_csrf(csrf)}'
        f'<label for="reason-{i}">Reason</label><input id="reason-{i}" name="reason" required>'
        '<button class="danger" type="submit">Deny</button></form></div>'
    )


def _history_row(approval: ApprovalRequest) -> str:
    r = approval.request
    said = approval.comment if approval.state == "approved" else approval.reason
    return (
        f"<tr><td><code>{_shown(approval.id)}</code></td><td>{_badge(approval.state)}</td>"
        f"<td>{_shown(_moment(approval.created_at))}</td><td>{_shown(r.subject)}</td>"
        f"<td>{_shown(r.target)}</td><td>{_badge(r.statement_class)}</td>"
        f'<td><code class="sql">{_shown(r.sql)}</code></td>'
        f"<td>{_shown(_moment(approval.decided_at))}</td>"
        f"<td>{_shown(approval.decided_by or '-')}</td><td>{_shown(said or '')}</td></tr>"
    )


_BADGES = frozenset(
    {
        *("live", "gone", "timed out", "sealed", "not sealed"),
        *("read", "write", "ddl", "admin", "unknown", *STATES),
    }
)


def _badge(word: str) -> str:
    """A word with its status colour (see desk.css)."""
    kind = word.replace(" ", "-") if word in _BADGES else "other"
    return f'<span class="badge badge-{kind}">{_shown(word)}</span>'


def _text_input(name: str, label: str, value: str, placeholder: str) -> str:
    return (
        f'<label for="f-{name}">{label}</label><input id="f-{name}" name="{name}" '
        f'value="{_shown(value)}" placeholder="{placeholder}">'
    )


def _select(name: str, label: str, options: Sequence[str], chosen: str) -> str:
    shown = "".join(
        f'<option value="{_shown(o)}"{" selected" if o == chosen else ""}>{_shown(o or "any")}'
        "</option>"
        for o in options
    )
    return (
        f'<label for="f-{name}">{label}</label><select id="f-{name}" name="{name}">{shown}</select>'
    )


def _filter_form(action: str, fields: Sequence[str]) -> str:
    cells = "".join(f'<div class="field">{f}</div>' for f in fields)
    return (
        f'<form class="filters" method="get" action="{action}" role="search">{cells}'
        f'<div class="field actions"><button type="submit">Filter</button> '
        f'<a href="{action}">Clear</a></div></form>'
    )


def _page_number(text: str | None) -> int:
    try:
        return max(1, min(int(text or "1"), 1_000_000))
    except ValueError:
        return 1


def _pager(path: str, query: Mapping[str, str], page: int, total: int, per_page: int) -> str:
    """Links to the previous and next pages, keeping the filters."""
    last = max(1, -(-total // per_page))
    if last == 1:
        return ""

    def link(to: int, text: str, rel: str) -> str:
        params = {k: v for k, v in query.items() if k != "page" and v} | {"page": str(to)}
        return f'<a rel="{rel}" href="{path}?{_shown(urllib.parse.urlencode(params))}">{text}</a>'

    parts = []
    if page > 1:
        parts.append(link(page - 1, "&larr; Newer", "prev"))
    parts.append(f"<span>Page {page} of {last}</span>")
    if page < last:
        parts.append(link(page + 1, "Older &rarr;", "next"))
    return f'<nav class="pager" aria-label="Pages">{" ".join(parts)}</nav>'


def _shown(text: str, *, multiline: bool = False) -> str:
    """User-controlled text as HTML: control and bidi characters escaped visibly (as the
    CLI and the replay show them), then the markup characters."""
    return html.escape(printable(text, multiline=multiline))


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{html.escape(token)}">'


def _error(text: str) -> str:
    return f'<p class="error">{_shown(text)}</p>'


def _flash(session: PageSession) -> str:
    flash, session.flash = session.flash, None
    if flash is None:
        return ""
    text, is_error = flash
    return f'<p class="{"error" if is_error else "notice"}">{_shown(text)}</p>'


def _moment(ts: float | None) -> str:
    if ts is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _same_origin(request: web.Request) -> bool:
    """A form posted from this page, as far as the browser says. Browsers that send
    Sec-Fetch-Site must say `same-origin` (not `same-site`: another port of this host
    is the same site and gets the SameSite cookie); an Origin header, when sent, must
    name this host: `null` (an opaque origin: a sandboxed frame, a data: URL, a page
    under no-referrer) is refused like any other site. A client that sends neither is
    no browser a page can lure into posting; the CSRF token still binds decisions to
    the page session."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site != "same-origin":
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    # The scheme may differ behind a TLS-terminating proxy; the host and port may not.
    try:
        parts = urllib.parse.urlsplit(origin)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return parts.scheme in ("http", "https") and parts.netloc == request.host


def _cross_origin() -> web.Response:
    body = _error("A form from another site was refused.")
    return _html(_layout("Refused", body, None), status=403)


async def _fields(request: web.Request, max_chars: int = _MAX_FIELD_CHARS) -> dict[str, str]:
    """The form's text fields, each cut to `max_chars`."""
    form = await request.post()
    return {k: v[:max_chars] for k, v in form.items() if isinstance(v, str)}
