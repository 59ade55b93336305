"""The web page at /: people sign in with their token, approvers decide held statements
with its buttons, auditors replay transcripts. Driven as a browser drives it (cookies,
form posts, redirects) against a real gateway, real agents and the real server."""

from __future__ import annotations

import html
import http.client
import http.cookiejar
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

import jwt
import psycopg
import pytest

from tests.support.approvals import Background, agent_token, dba_token, pending, rule
from tests.support.gateway import RunningGateway


class Browser:
    """Cookies kept, redirects followed: what a browser does with the page's forms."""

    def __init__(self, gateway: RunningGateway) -> None:
        self.base = gateway.api_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))
        self.headers: dict[str, str] = {}

    def get(self, path: str) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.base + path))  # noqa: S310 (the gateway's http URL)

    def post(
        self,
        path: str,
        fields: dict[str, str],
        origin: str | None = None,
        fetch_site: str | None = "same-origin",
    ) -> tuple[int, str]:
        """A form post with the headers Chromium sends for one of the page's own forms
        under its Referrer-Policy (its Origin, Sec-Fetch-Site: same-origin), or those
        given: `origin` and `fetch_site` as another page would make it send them ("" and
        None leave a header out, as clients that are not browsers do)."""
        data = urllib.parse.urlencode(fields).encode()
        headers = {"Origin": self.base if origin is None else origin}
        if fetch_site is not None:
            headers |= {
                "Sec-Fetch-Site": fetch_site,
                "Sec-Fetch-Mode": "navigate",
                "Sec-Fetch-User": "?1",
                "Sec-Fetch-Dest": "document",
            }
        headers = {k: v for k, v in headers.items() if v}
        request = urllib.request.Request(self.base + path, data=data, headers=headers)  # noqa: S310
        return self._open(request)

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=10) as response:
                self.headers = dict(response.headers)
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            self.headers = dict(error.headers)
            return error.code, error.read().decode()

    def download(self, path: str) -> tuple[int, bytes]:
        """A link followed for its bytes (a download), with the page's cookies."""
        request = urllib.request.Request(self.base + path)  # noqa: S310 (the gateway's http URL)
        with self.opener.open(request, timeout=10) as response:
            self.headers = dict(response.headers)
            return response.status, response.read()

    def sign_in(self, token: str) -> str:
        status, page = self.post("/login", {"token": token})
        assert status == 200, page
        assert "Sign out" in page
        return page

    def csrf(self) -> str:
        _, page = self.get("/")
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match is not None, "no form on the page"
        return match.group(1)


def approver(gateway: RunningGateway) -> Browser:
    browser = Browser(gateway)
    browser.sign_in(dba_token(gateway))
    return browser


def test_the_page_asks_for_a_token_and_refuses_a_bad_one(gated: RunningGateway) -> None:
    browser = Browser(gated)
    status, page = browser.get("/")
    assert status == 200
    assert '<form method="post" action="/login">' in page
    policy = browser.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert browser.headers["Cache-Control"] == "no-store"
    bad = gated.issuer.mint(sub="dba-1", groups=("oncall-dba",), ttl_s=-120)
    status, page = browser.post("/login", {"token": bad})
    assert status == 401
    assert "Not signed in" in page
    assert "expired" in page
    assert bad not in page
    assert not list(browser.cookies)
    assert browser.headers["Referrer-Policy"] == "same-origin"  # so forms carry the Origin
    good = dba_token(gated)
    status, page = browser.post(
        "/login", {"token": good}, origin="https://evil.example", fetch_site="cross-site"
    )
    assert status == 403  # nobody is signed in from another site's form
    assert not list(browser.cookies)
    status, page = browser.get("/sessions")  # signed out: back to the sign-in form
    assert status == 200
    assert "Sign in" in page


@pytest.mark.timeout(60)
def test_an_approver_sees_the_held_write_and_approves_it_with_the_button(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    with psycopg.connect(gated.dsn(agent_token(gated)), autocommit=True) as agent:
        write = Background(
            lambda: (
                agent.execute(
                    "update accounts set balance = %s where id = %s", (55, 1), prepare=True
                ).rowcount
            )
        )
        [request] = pending(gated)
        browser = approver(gated)
        status, page = browser.get("/")
        assert status == 200
        assert "Pending approvals (1)" in page
        card = page[page.index(f'id="request-{request["id"]}"') :]
        assert "update accounts set balance = $1 where id = $2" in card
        assert "<strong>agent-1</strong>" in card
        assert re.search(r"<td>1</td><td>int\d</td><td>55</td>", card), card
        assert re.search(r"<td>2</td><td>int\d</td><td>1</td>", card), card
        assert re.search(r"\d+s ago", card)
        assert accounts()[1] == 100  # held: not yet run
        status, page = browser.post(
            f"/approvals/{request['id']}/approve",
            {"csrf": browser.csrf(), "scope": "statement", "ttl": "", "comment": "ok by me"},
        )
        assert status == 200
        assert f"Request {request['id']} approved." in page
        assert "Pending approvals (0)" in page
        assert write.result() == 1
    assert accounts()[1] == 55


@pytest.mark.timeout(60)
def test_deny_needs_a_reason_and_the_agent_gets_it(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    with psycopg.connect(gated.dsn(agent_token(gated)), autocommit=True) as agent:
        write = Background(lambda: agent.execute("delete from accounts where id = 3"))
        [request] = pending(gated)
        browser = approver(gated)
        path = f"/approvals/{request['id']}/deny"
        _, page = browser.post(path, {"csrf": browser.csrf(), "reason": "  "})
        assert "a reason is required" in page
        assert "Pending approvals (1)" in page
        _, page = browser.post(path, {"csrf": browser.csrf(), "reason": "not on a Friday"})
        assert f"Request {request['id']} denied." in page
        error = write.result()
        assert isinstance(error, psycopg.errors.InsufficientPrivilege)
        assert "not on a Friday" in str(error)
        _, page = browser.post(path, {"csrf": browser.csrf(), "reason": "again"})
        assert "is already denied" in page
    assert 3 in accounts()


@pytest.mark.timeout(60)
def test_a_post_without_the_page_csrf_token_decides_nothing(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    with psycopg.connect(gated.dsn(agent_token(gated)), autocommit=True) as agent:
        write = Background(lambda: agent.execute("delete from accounts where id = 4"))
        [request] = pending(gated)
        browser = approver(gated)
        path = f"/approvals/{request['id']}/approve"
        someone_elses = approver(gated).csrf()  # valid, for another page session
        for fields in ({}, {"csrf": "forged"}, {"csrf": someone_elses}):
            status, page = browser.post(path, fields)
            assert status == 403, page
            assert "The form has expired" in page
        # The right token, posted from another page than this one: what the browser says
        # of where the form came from decides (Sec-Fetch-Site first, then Origin).
        fields = {"csrf": browser.csrf()}
        other_port = gated.api_url.rsplit(":", 1)[0] + ":1"
        for origin, fetch_site in (
            ("https://evil.example", "cross-site"),
            ("https://evil.example", None),  # a browser without Sec-Fetch-*
            (other_port, "same-site"),  # another port: same site, and the cookie goes along
            (other_port, None),
            ("null", "cross-site"),  # an opaque origin: sandboxed frame, data: URL
            ("null", "same-origin"),  # what no-referrer made of this page's own forms
            ("null", None),
            (gated.api_url, "same-site"),  # the fetch metadata wins over the Origin
            (gated.api_url, "cross-site"),
            ("http://[::1", "same-origin"),  # not even a URL
            ("ftp://" + gated.api_url.split("://")[1], "same-origin"),
        ):
            status, page = browser.post(path, fields, origin=origin, fetch_site=fetch_site)
            assert status == 403, (origin, fetch_site)
            assert "A form from another site was refused" in page
        # Not signed in at all: back to the sign-in form, nothing decided.
        status, page = Browser(gated).post(path, {"csrf": browser.csrf()})
        assert "Sign in" in page
        [still] = pending(gated)
        assert still["id"] == request["id"]
        browser.post(f"/approvals/{request['id']}/deny", {"csrf": browser.csrf(), "reason": "x"})
        assert isinstance(write.result(), psycopg.errors.InsufficientPrivilege)


@pytest.mark.timeout(60)
def test_nobody_approves_their_own_request_or_one_outside_their_groups(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    # agent-1 is also an approver here: the gateway still refuses its own request.
    token = gated.issuer.mint(sub="agent-1", groups=("data-agents", "oncall-dba"))
    with psycopg.connect(gated.dsn(token), autocommit=True) as agent:
        write = Background(lambda: agent.execute("delete from accounts where id = 5"))
        [request] = pending(gated)
        path = f"/approvals/{request['id']}/approve"
        browser = Browser(gated)
        page = browser.sign_in(token)
        assert "Pending approvals (1)" in page  # its requester reads it: no buttons
        assert f'action="{path}"' not in page
        _, page = browser.post(path, {"csrf": browser.csrf(), "scope": "session"})
        assert "Not allowed: nobody may decide their own request" in page, page
        # Another agent of the same group does not even see it.
        browser = Browser(gated)
        browser.sign_in(agent_token(gated, sub="agent-2"))
        _, page = browser.post(path, {"csrf": browser.csrf(), "scope": "session"})
        assert f"No approval request {request['id']}." in page, page
        assert "Pending approvals (0)" in page
        dba = approver(gated)
        dba.post(f"/approvals/{request['id']}/deny", {"csrf": dba.csrf(), "reason": "x"})
        assert isinstance(write.result(), psycopg.errors.InsufficientPrivilege)
    assert 5 in accounts()


@pytest.mark.timeout(60)
def test_the_page_shows_sql_as_text_never_as_markup(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    sql = "update accounts set balance = 1 where id = 6 and '<script>alert(1)</script>' <> ''"
    with psycopg.connect(gated.dsn(agent_token(gated)), autocommit=True) as agent:
        write = Background(lambda: agent.execute(sql))
        [request] = pending(gated)
        browser = approver(gated)
        _, page = browser.get("/")
        assert "<script>" not in page
        assert html.escape(sql) in page
        browser.post(f"/approvals/{request['id']}/deny", {"csrf": browser.csrf(), "reason": "no"})
        write.result()


def test_auditors_list_sessions_and_replay_a_verified_transcript(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(rules=[rule()], auditors=["auditors"])
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        agent.execute("select count(*) from accounts where balance > 10")
    gateway.wait_for_no_sessions()
    auditor = Browser(gateway)
    page = auditor.sign_in(gateway.issuer.mint(sub="audit-1", groups=("auditors",)))
    assert '<a href="/sessions">Sessions</a>' in page
    status, page = auditor.get("/sessions")
    assert status == 200
    [session_id] = re.findall(r'<a href="/sessions/([^"]+)">', page)
    assert "<td>agent-1</td><td>orders</td><td>1</td>" in page
    status, page = auditor.get(f"/sessions/{session_id}")
    assert status == 200
    assert "verified: " in page
    assert html.escape("select count(*) from accounts where balance > 10") in page
    status, _ = auditor.get("/sessions/" + "0" * 32)
    assert status == 404
    # An approver who is not an auditor sees neither the link nor the sessions.
    browser = approver(gateway)
    status, page = browser.get("/sessions")
    assert status == 403
    assert "Only the auditors groups (auditors)" in page
    _, page = browser.get("/")
    assert '<a href="/sessions">' not in page


def test_signing_out_ends_the_page_session(gated: RunningGateway) -> None:
    browser = approver(gated)
    status, page = browser.post("/logout", {"csrf": browser.csrf()})
    assert status == 200
    assert '<form method="post" action="/login">' in page
    status, page = browser.get("/sessions")
    assert "Sign in" in page


def test_the_page_session_ends_when_the_token_expires(gated: RunningGateway) -> None:
    browser = Browser(gated)
    token = gated.issuer.mint(sub="dba-1", groups=("oncall-dba",), ttl_s=4)
    browser.sign_in(token)
    _, page = browser.get("/")
    assert "Pending approvals" in page
    # The page checks the token's `exp` against the wall clock at each request (the web
    # pages' clock is not reachable from here): wait until then, however long sign-in took.
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(expires_at - time.time(), 0) + 0.1)
    _, page = browser.get("/")
    assert '<form method="post" action="/login">' in page


def test_a_client_that_is_no_browser_posts_without_origin_but_with_the_csrf_token(
    gated: RunningGateway,
) -> None:
    # No Origin, no Sec-Fetch-*: no page can make a browser send that; the page session's
    # CSRF token is still required.
    browser = Browser(gated)
    status, page = browser.post("/login", {"token": dba_token(gated)}, origin="", fetch_site=None)
    assert status == 200
    assert "Sign out" in page
    status, page = browser.post("/logout", {}, origin="", fetch_site=None)
    assert status == 403
    assert "The form has expired" in page
    status, page = browser.post("/logout", {"csrf": browser.csrf()}, origin="", fetch_site=None)
    assert status == 200
    assert '<form method="post" action="/login">' in page


@pytest.mark.timeout(60)
def test_the_page_shows_bidi_and_control_characters_escaped(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    # U+202E (right-to-left override) would make the approver read the end of the line
    # backwards; a zero-width space hides text; U+2066 isolates it.
    sql = (
        "update accounts set balance = 0 where id = 9 /* \u202e 9 = di erehw */"
        " and %s <> 'x\u200by' and '\u2066' <> ''"
    )
    with psycopg.connect(gated.dsn(agent_token(gated)), autocommit=True) as agent:
        write = Background(lambda: agent.execute(sql, ("\u202esdrawkcab\x1b[2J",)))
        [request] = pending(gated)
        browser = approver(gated)
        _, page = browser.get("/")
        card = page[page.index(f'id="request-{request["id"]}"') :]
        assert "/* \\u202e 9 = di erehw */" in card
        assert html.escape("'x\\u200by'") in card
        assert html.escape("'\\u2066'") in card
        assert "\\u202esdrawkcab\\x1b[2J" in card  # the bound parameter
        _, page = browser.post(
            "/approvals/" + urllib.parse.quote("apr_\u202e1") + "/approve",
            {"csrf": browser.csrf(), "scope": "statement"},
        )
        assert "No approval request apr_\\u202e1." in page
        for char in ("\u202e", "\u200b", "\u2066", "\x1b"):
            assert char not in page, repr(char)
        browser.post(f"/approvals/{request['id']}/deny", {"csrf": browser.csrf(), "reason": "no"})
        assert isinstance(write.result(), psycopg.errors.InsufficientPrivilege)


def test_the_history_shows_decided_and_withdrawn_requests_with_filters(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    browser = approver(gated)
    with (
        psycopg.connect(gated.dsn(agent_token(gated)), autocommit=True) as first,
        psycopg.connect(gated.dsn(agent_token(gated, sub="agent-2")), autocommit=True) as second,
    ):
        update = Background(lambda: first.execute("update accounts set balance = 9 where id = 4"))
        [updating] = pending(gated)
        delete = Background(lambda: second.execute("delete from accounts where id = 5"))
        [deleting] = [r for r in pending(gated, count=2) if r["id"] != updating["id"]]
        browser.post(f"/approvals/{updating['id']}/approve", {"csrf": browser.csrf()})
        update.result()
        reason = {"csrf": browser.csrf(), "reason": "not today"}
        browser.post(f"/approvals/{deleting['id']}/deny", reason)
        delete.result()
    status, page = browser.get("/history")
    assert status == 200
    assert "History (2)" in page
    assert updating["id"] in page
    assert deleting["id"] in page
    assert "not today" in page
    _, page = browser.get("/history?state=denied")
    assert "History (1)" in page
    assert deleting["id"] in page
    assert updating["id"] not in page
    _, page = browser.get("/history?requester=agent-1")
    assert updating["id"] in page
    assert deleting["id"] not in page
    _, page = browser.get("/history?target=elsewhere")
    assert "History (0)" in page
    assert "No request matches." in page
    _, page = browser.get("/history?state=nonsense")
    assert "The state must be one of approved, denied, withdrawn." in page
    # The requester sees their own requests only; nobody else's.
    requester = Browser(gated)
    requester.sign_in(agent_token(gated, sub="agent-2"))
    _, page = requester.get("/history")
    assert "History (1)" in page
    assert deleting["id"] in page
    assert updating["id"] not in page
    assert accounts()[4] == 9
    assert 5 in accounts()


def test_auditors_search_page_and_download_sessions(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(rules=[rule()], auditors=["auditors"])
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        agent.execute("select count(*) from accounts")
    with psycopg.connect(gateway.dsn(agent_token(gateway, sub="agent-2")), autocommit=True) as two:
        write = Background(lambda: two.execute("delete from accounts where id = 6"))
        [request] = pending(gateway)
        dba = approver(gateway)
        dba.post(f"/approvals/{request['id']}/approve", {"csrf": dba.csrf()})
        assert write.result() is not None
    gateway.wait_for_no_sessions()
    auditor = Browser(gateway)
    auditor.sign_in(gateway.issuer.mint(sub="audit-1", groups=("auditors",)))

    def listed(query: str) -> list[str]:
        status, page = auditor.get("/sessions" + query)
        assert status == 200, page
        return re.findall(r'<a href="/sessions/([^"]+)">', page)

    assert len(listed("")) == 2
    [reader] = listed("?agent=agent-1")
    [writer] = listed("?agent=agent-2")
    assert listed("?class=write") == [writer]
    assert listed("?class=read") == [reader]
    assert listed("?approver=dba-1") == [writer]
    assert listed("?approver=dba-9") == []
    assert listed("?target=orders&since=1h") == [writer, reader]  # newest first
    assert listed("?until=2000-01-01") == []
    _, page = auditor.get("/sessions?since=yesterday")
    assert "From: &#x27;yesterday&#x27; is neither an ISO 8601 date" in page

    # The signed file, byte for byte, and what its verification found.
    status, page = auditor.get(f"/sessions/{writer}")
    assert f'href="/sessions/{writer}/transcript"' in page
    status, body = auditor.download(f"/sessions/{writer}/transcript")
    assert status == 200
    assert "attachment" in auditor.headers["Content-Disposition"]
    [path] = (gateway.settings.data_dir / "transcripts").glob(f"*/{writer}.airlock")
    assert body == path.read_bytes()
    status, body = auditor.download(f"/sessions/{writer}/verification")
    text = body.decode()
    assert "result: verified: sealed" in text
    assert "BEGIN PUBLIC KEY" in text
    assert f"airlock verify --public-key key.pem {writer}.airlock" in text
    # An approver who is no auditor downloads nothing.
    status, page = dba.get(f"/sessions/{writer}/transcript")
    assert status == 403

    # Pages past the first 200: copies of the file under other names are more sessions.
    for n in range(199):
        shutil.copy(path, path.with_name(f"copy{n:03}.airlock"))
    _, page = auditor.get("/sessions")
    assert "Sessions (201)" in page
    assert len(re.findall(r'<a href="/sessions/([^"]+)">', page)) == 200
    [older] = re.findall(r'<a rel="next" href="([^"]+)">', page)
    _, page = auditor.get(html.unescape(older))
    assert "Page 2 of 2" in page
    assert len(re.findall(r'<a href="/sessions/([^"]+)">', page)) == 1
    assert 6 not in accounts()


def test_the_live_stream_says_when_requests_change(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]]
) -> None:
    browser = approver(gated)
    address = urllib.parse.urlsplit(gated.api_url)
    assert address.hostname is not None
    stream = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    stream.request("GET", "/approvals/events", headers={"Cookie": cookie})
    events = stream.getresponse()
    assert events.status == 200
    assert events.headers["Content-Type"] == "text/event-stream"
    assert events.readline() == b"retry: 3000\n"

    def next_event() -> list[bytes]:
        lines: list[bytes] = []
        while (line := events.readline()) != b"\n" or not lines:
            if line != b"\n" and not line.startswith(b":"):  # not a keepalive
                lines.append(line.rstrip(b"\n"))
        return lines

    with psycopg.connect(gated.dsn(agent_token(gated)), autocommit=True) as agent:
        write = Background(lambda: agent.execute("delete from accounts where id = 7"))
        [request] = pending(gated)
        assert next_event() == [b"event: change", b"data: requested"]
        status, fragment = browser.get("/approvals/live")
        assert status == 200
        assert fragment.startswith('<section id="pending"')
        assert f'id="request-{request["id"]}"' in fragment
        browser.post(f"/approvals/{request['id']}/deny", {"csrf": browser.csrf(), "reason": "no"})
        assert next_event() == [b"event: change", b"data: settled"]
        assert isinstance(write.result(), psycopg.errors.InsufficientPrivilege)
    stream.close()
    assert 7 in accounts()
    # Signed out: neither the stream nor the list.
    stranger = Browser(gated)
    assert stranger.get("/approvals/events")[0] == 401
    assert stranger.get("/approvals/live")[0] == 401


def test_the_page_serves_its_own_stylesheet_and_script_and_no_other_file(
    gated: RunningGateway,
) -> None:
    browser = Browser(gated)
    status, page = browser.get("/")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert '<link rel="stylesheet" href="/static/desk.css">' in page
    policy = browser.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "style-src 'self'" in policy
    assert "unsafe-inline" not in policy
    status, script = browser.get("/static/desk.js")
    assert status == 200
    assert browser.headers["Content-Type"].startswith("text/javascript")
    assert "EventSource" in script
    status, style = browser.get("/static/desk.css")
    assert status == 200
    assert ".request" in style
    assert browser.headers["Content-Type"].startswith("text/css")
    for path in ("/static/web.py", "/static/..%2Fweb.py", "/static/", "/static/desk.map"):
        assert browser.get(path)[0] == 404, path
