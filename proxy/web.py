"""The web page at `/`: approvers decide held statements, auditors replay transcripts.

Served by the API listener, rendered on the server, plain HTML forms and no
JavaScript. A person signs in by pasting their OIDC token, verified as every API
token is; the page then shows the pending approval requests (SQL, bound parameters,
requester, age) with approve and deny buttons, and, to members of the `auditors`
groups, the session list and each session's replay with its verification. Deciding
through the page is deciding through the hub: the same approver-group and
self-approval checks, the same records.

Signing in makes a page session: a random id in an HttpOnly, SameSite=Strict cookie,
held in memory until the token expires. The token itself is not kept. Every form
carries the page session's CSRF token, a post that the browser says came from
another origin is refused (signing in included: see `_same_origin`), and the
page forbids framing and scripts (Content-Security-Policy). User-controlled text
(SQL, parameters, reasons, comments) is shown with control and bidi characters
escaped, as the CLI shows it.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from policy.identity import Identity
from policy.rules import RequestSight, request_sight, transcript_refusal
from proxy.approvals import ApprovalHub, NotAllowedToDecide
from proxy.config import parse_duration
from proxy.errors import AirlockError
from proxy.listener import TokenVerifier
from proxy.recording.format import SESSION_ID
from proxy.recording.render import render
from proxy.recording.sessions import find_sessions, find_transcript
from proxy.recording.verifier import describe, read_transcript, verify_transcript
from proxy.rendering import format_age, printable
from proxy.signing import load_public_key
from proxy.store import SCOPES, AlreadyDecided, ApprovalRequest, UnknownRequest

COOKIE = "airlock_page"
#: Page sessions kept at most; the oldest go first when a sign-in needs room.
MAX_PAGE_SESSIONS = 1_000
#: Sessions listed on the sessions page, newest first.
SESSIONS_LISTED = 200
_MAX_FIELD_CHARS = 2000
_MAX_TOKEN_CHARS = 16 * 1024

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it browsers post the page's own forms with `Origin: null`,
    # and the cross-origin check could not tell them from another site's.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 70rem; padding: 1rem; }
header { display: flex; gap: 1.5rem; align-items: baseline; border-bottom: 1px solid #ccc; }
header .who { margin-left: auto; color: #555; }
pre { background: #f4f4f4; padding: .5rem; white-space: pre-wrap; overflow-wrap: anywhere; }
.request { border: 1px solid #ccc; border-radius: 4px; margin: 1rem 0; padding: .5rem 1rem; }
.notice { background: #e7f5e7; padding: .5rem 1rem; }
.error { background: #fbe9e9; padding: .5rem 1rem; }
table { border-collapse: collapse; } td, th { padding: .2rem .6rem; text-align: left; }
form.inline { display: inline-block; margin-right: 1rem; }
"""


@dataclass
class PageSession:
    identity: Identity
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    #: Said once on the next page: (text, is_error).
    flash: tuple[str, bool] | None = None


class WebPages:
    def __init__(
        self,
        hub: ApprovalHub,
        verifier: TokenVerifier,
        data_dir: Path,
        auditors: frozenset[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self.verifier = verifier
        self.data_dir = data_dir
        self.auditors = auditors
        self.clock = clock
        self._sessions: dict[str, PageSession] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.approvals)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self._form(self.logout))
        app.router.add_post("/approvals/{id}/approve", self._form(self.approve))
        app.router.add_post("/approvals/{id}/deny", self._form(self.deny))
        app.router.add_get("/sessions", self._signed_in(self.sessions))
        app.router.add_get("/sessions/{id}", self._signed_in(self.session))

    # --- page sessions

    def _page_session(self, request: web.Request) -> tuple[str, PageSession] | None:
        key = request.cookies.get(COOKIE, "")
        session = self._sessions.get(key)
        if session is None:
            return None
        if session.identity.expires_at <= self.clock():
            del self._sessions[key]
            return None
        return key, session

    def _signed_in(
        self, handler: Callable[[web.Request, PageSession], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def run(request: web.Request) -> web.Response:
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
            raise web.HTTPSeeOther(await handler(request, key, session, fields))

        return run

    # --- sign in and out

    async def login(self, request: web.Request) -> web.Response:
        if not _same_origin(request):
            return _cross_origin()
        token = (await _fields(request, max_chars=_MAX_TOKEN_CHARS)).get("token", "").strip()
        try:
            identity = await self.verifier.verify(token)
        except AirlockError as error:
            return _html(_login_page(f"Not signed in: {error.message}"), status=401)
        now = self.clock()
        expired = [k for k, s in self._sessions.items() if s.identity.expires_at <= now]
        for key in expired:
            del self._sessions[key]
        while len(self._sessions) >= MAX_PAGE_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        key = secrets.token_urlsafe(32)
        self._sessions[key] = PageSession(identity)
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE,
            key,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
            max_age=max(1, int(identity.expires_at - now)),
        )
        raise response

    async def logout(
        self, _request: web.Request, key: str, _session: PageSession, _fields: dict[str, str]
    ) -> str:
        self._sessions.pop(key, None)
        return "/"

    # --- approvals

    async def approvals(self, request: web.Request) -> web.Response:
        found = self._page_session(request)
        if found is None:
            return _html(_login_page())
        _, session = found
        shown = [(r, self._sight(session, r)) for r in self.hub.store.list("pending")]
        pending = [(r, sight) for r, sight in shown if sight is not RequestSight.HIDDEN]
        now = self.clock()
        parts = [_flash(session), f"<h1>Pending approvals ({len(pending)})</h1>"]
        if not pending:
            parts.append("<p>Nothing waits for a decision.</p>")
        parts += (
            _request_card(r, session.csrf, now, decide=sight is RequestSight.DECIDE)
            for r, sight in pending
        )
        return _html(_layout("Pending approvals", "".join(parts), session, self.auditors))

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

    # --- sessions and transcripts (auditors)

    def _auditor_refusal(self, session: PageSession) -> web.Response | None:
        refusal = transcript_refusal(session.identity.groups, self.auditors)
        if refusal is None:
            return None
        body = _error(refusal[0].upper() + refusal[1:] + ".")
        return _html(_layout("Sessions", body, session, self.auditors), status=403)

    async def sessions(self, _request: web.Request, session: PageSession) -> web.Response:
        refused = self._auditor_refusal(session)
        if refused is not None:
            return refused
        found = await asyncio.to_thread(find_sessions, self.data_dir)
        newest = sorted(found, key=lambda s: s.started_at or 0.0, reverse=True)
        rows = [
            "<tr>"
            f'<td><a href="/sessions/{_shown(s.session_id)}">{_shown(s.session_id[:12])}</a></td>'
            f"<td>{_shown(_moment(s.started_at))}</td><td>{_shown(s.subject or '?')}</td>"
            f"<td>{_shown(s.target or '?')}</td><td>{s.statements}</td>"
            f"<td>{_shown(s.end_reason or ('open' if s.ended_at is None else 'ended'))}</td>"
            f"<td>{'sealed' if s.sealed else 'not sealed'}</td>"
            "</tr>"
            for s in newest[:SESSIONS_LISTED]
        ]
        body = (
            f"<h1>Sessions ({len(found)})</h1><table><tr><th>session</th><th>started (UTC)</th>"
            "<th>identity</th><th>target</th><th>statements</th><th>end</th><th>seal</th></tr>"
            + "".join(rows)
            + "</table>"
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
        shown = f'<p class="{"notice" if ok else "error"}">{_shown(verdict)}</p>'
        replay = _shown(lines, multiline=True)
        body = f"<h1>Session {_shown(session_id)}</h1>{shown}<pre>{replay}</pre>"
        return _html(_layout(f"Session {session_id}", body, session, self.auditors))

    def _replay(self, session_id: str) -> tuple[str, str, bool]:
        """The replay as `airlock replay` prints it, and whether the transcript verifies."""
        record = read_transcript(find_transcript(self.data_dir, session_id))
        result = verify_transcript(record, load_public_key(self.data_dir))
        verdict = ("verified: " if result.ok else "DOES NOT VERIFY: ") + describe(result)
        return "\n".join(render(record)), verdict, result.ok


# --- rendering


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", headers=_HEADERS)


def _layout(
    title: str, content: str, session: PageSession | None, auditors: frozenset[str] = frozenset()
) -> str:
    header = '<header><strong>Airlock</strong><a href="/">Approvals</a>'
    if session is not None:
        identity = session.identity
        if transcript_refusal(identity.groups, auditors) is None:
            header += '<a href="/sessions">Sessions</a>'
        header += (
            f'<span class="who">{_shown(identity.subject)} '
            f"({_shown(', '.join(sorted(identity.groups)))})</span>"
            f'<form class="inline" method="post" action="/logout">{_csrf(session.csrf)}'
            '<button type="submit">Sign out</button></form>'
        )
    header += "</header>"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_shown(title)} - Airlock</title><style>{_STYLE}</style></head>"
        f"<body>{header}<main>{content}</main></body></html>"
    )


def _login_page(problem: str | None = None) -> str:
    content = (
        "<h1>Sign in</h1>"
        + (_error(problem) if problem else "")
        + "<p>Paste your OIDC access token (the one `airlock approve --token` takes).</p>"
        '<form method="post" action="/login">'
        '<textarea name="token" rows="6" cols="80" required autocomplete="off"></textarea>'
        '<p><button type="submit">Sign in</button></p></form>'
    )
    return _layout("Sign in", content, None)


def _request_card(approval: ApprovalRequest, csrf: str, now: float, *, decide: bool) -> str:
    """One held request; the approve and deny forms only for who may decide it."""
    r = approval.request
    request_id = _shown(approval.id)
    requester = _shown(r.subject) + (f" &lt;{_shown(r.email)}&gt;" if r.email else "")
    parameters = ""
    if r.parameters:
        rows = "".join(
            f"<tr><td>{n}</td><td>{_shown(p.type)}</td>"
            f"<td>{'NULL' if p.value is None else _shown(p.value)}"
            f"{' (hex)' if p.format == 'hex' else ''}</td></tr>"
            for n, p in enumerate(r.parameters, start=1)
        )
        parameters = f"<table><tr><th>#</th><th>type</th><th>value</th></tr>{rows}</table>"
    reasons = "; ".join(r.reasons)
    return (
        f'<section class="request" id="request-{request_id}">'
        f"<h2>{_shown(r.statement_class)} on {_shown(r.target)} "
        f"<small>request {request_id}, {format_age(now - approval.created_at)} ago</small></h2>"
        f"<p>Requested by <strong>{requester}</strong> "
        f"({_shown(', '.join(r.groups))}); session {_shown(r.session_id[:12])}; "
        f"approvers: {_shown(', '.join(r.approver_groups))}</p>"
        + _approvals_line(approval)
        + f"<pre>{_shown(r.sql, multiline=True)}</pre>{parameters}"
        + (f"<p>Why held: {_shown(reasons)}</p>" if reasons else "")
        + (_decision_forms(request_id, csrf) if decide else "")
        + "</section>"
    )


def _approvals_line(approval: ApprovalRequest) -> str:
    """Under the two-person rule: "1 of 2 approvals (alice)"; nothing otherwise."""
    required = approval.request.approvals_required
    if required < 2:
        return ""
    who = ", ".join(d.by for d in approval.approvals)
    return (
        f'<p class="approvals">{len(approval.approvals)} of {required} approvals'
        + (f" ({_shown(who)})" if who else "")
        + "</p>"
    )


def _decision_forms(request_id: str, csrf: str) -> str:
    scopes = "".join(f'<option value="{s}">{s}</option>' for s in SCOPES)
    return (
        f'<form class="inline" method="post" action="/approvals/{request_id}/approve">'
        f'{_csrf(csrf)}<label>scope <select name="scope">{scopes}</select></label> '
        '<label>ttl <input name="ttl" size="5" placeholder="15m"></label> '
        '<label>comment <input name="comment"></label> '
        '<button type="submit">Approve</button></form>'
        f'<form class="inline" method="post" action="/approvals/{request_id}/deny">'
        f'{_csrf(csrf)}<label>reason <input name="reason" required></label> '
        '<button type="submit">Deny</button></form>'
    )


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
