"""SSO sign-in on the web page (OIDC authorization code + PKCE), in headless Chromium.

The gateway runs its development issuer, which signs people in as an identity provider
does (an authorize form, a token endpoint that checks codes, PKCE, clients and
redirects), and the page is its client. The browser reaches the page as `localhost`
and the issuer as `127.0.0.1`: two sites, as with a real identity provider, so the
cookies cross sites as they would with Okta.

The attacks each get a clear page and no session: a wrong or missing `state`, a code
used twice, a code sent with another sign-in's PKCE verifier, a code issued to another
client or for another redirect, a wrong client secret, an access token for another
audience. The tests obtain codes from the issuer's form directly (with the challenge
the browser's authorization request carried), as an attacker who got hold of one would.
"""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from selenium.webdriver.common.by import By

from proxy.approvals.store import ApprovalRequest
from proxy.http.dev_issuer import DevIssuer
from tests.integration.test_web_browser import (
    Chrome,
    body_text,
    browsers,
    button,
    screenshot,
    wait_for_text,
)
from tests.support.approvals import Background, rule
from tests.support.gateway import RunningGateway, free_port
from tests.support.waiting import PATIENCE_S, wait_until

__all__ = ["browsers"]  # the fixture, used by name

pytestmark = pytest.mark.timeout(120)

CLIENT_ID = "airlock-desk"


@dataclass
class Desk:
    """A gateway whose page signs in at its development issuer."""

    gateway: RunningGateway
    #: The page as the browser reaches it (another site than the issuer's 127.0.0.1).
    url: str

    @property
    def issuer(self) -> DevIssuer:
        issuer = self.gateway.gateway.dev_issuer
        assert issuer is not None
        return issuer

    def token(self, sub: str, *groups: str) -> str:
        return self.issuer.mint(sub, groups)


def make_desk(
    gateway_factory: Callable[..., RunningGateway], web: dict[str, Any] | None = None
) -> Desk:
    port = free_port()
    url = f"http://localhost:{port}"
    gateway = gateway_factory(
        listen={"postgres": "127.0.0.1:0", "api": f"127.0.0.1:{port}"},
        dev_issuer=True,
        identity={},
        web={"client_id": CLIENT_ID, "redirect_url": f"{url}/sso/callback", **(web or {})},
        rules=[rule()],
    )
    return Desk(gateway, url)


@pytest.fixture
def desk(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> Desk:
    return make_desk(gateway_factory)


def requests(gateway: RunningGateway, state: str) -> list[ApprovalRequest]:
    hub = gateway.gateway.hub
    assert hub is not None
    return gateway.call(lambda: hub.store.list(state))


def begin(driver: Chrome, desk: Desk) -> dict[str, str]:
    """Click "Sign in with SSO"; the authorization request's parameters, as the issuer's
    sign-in form (where the browser now is) received them."""
    driver.get(desk.url + "/")
    driver.find_element(By.LINK_TEXT, "Sign in with SSO").click()
    wait_for_text(driver, "Development issuer: sign in")
    assert driver.current_url.startswith(desk.issuer.issuer + "/v1/authorize?")
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(driver.current_url).query))


def issue_code(desk: Desk, request: dict[str, str], **changes: str) -> str:
    """A code from the issuer's form for `request` (with `changes`), taken from its
    redirect without following it."""
    form = {
        **{k: v for k, v in request.items() if k != "response_type"},
        "subject": "dba-1",
        "groups": "oncall-dba",
        **changes,
    }
    issuer = urllib.parse.urlsplit(desk.issuer.issuer)
    connection = http.client.HTTPConnection(issuer.netloc, timeout=10)
    try:
        connection.request(
            "POST",
            issuer.path + "/v1/authorize",
            body=urllib.parse.urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        response = connection.getresponse()
        location = response.getheader("Location") or ""
        assert response.status == 303, response.read()
    finally:
        connection.close()
    answer = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert location.startswith(form["redirect_uri"] + "?")
    assert answer["state"] == request["state"]
    return answer["code"]


def come_back(driver: Chrome, desk: Desk, **answer: str) -> None:
    driver.get(f"{desk.url}/sso/callback?{urllib.parse.urlencode(answer)}")


def page_cookie(driver: Chrome) -> dict[str, Any] | None:
    found = [c for c in driver.get_cookies() if c["name"] == "airlock_page"]
    return found[0] if found else None


def assert_refused(driver: Chrome, desk: Desk, why: str) -> None:
    """The page says the sign-in failed and why; nobody is signed in."""
    text = wait_for_text(driver, "Not signed in:")
    assert why in text
    assert "Sign in with SSO" in text
    assert page_cookie(driver) is None
    driver.get(desk.url + "/")
    text = body_text(driver)
    assert "Sign out" not in text
    assert "Paste your OIDC access token" in text


def test_a_dba_signs_in_with_sso_approves_a_held_write_and_signs_out(
    desk: Desk, accounts: Callable[[], dict[int, int]], browsers: Callable[[], Chrome]
) -> None:
    gateway = desk.gateway
    with psycopg.connect(
        gateway.dsn(desk.token("agent-1", "data-agents")), autocommit=True
    ) as agent:
        write = Background(
            lambda: agent.execute("update accounts set balance = 7 where id = 4").rowcount
        )
        wait_until(lambda: requests(gateway, "pending"), PATIENCE_S, "a held write")

        driver = browsers()
        driver.get(desk.url + "/")
        text = body_text(driver)
        assert "Sign in with SSO" in text
        assert "Paste your OIDC access token" in text  # pasting stays available
        driver.find_element(By.LINK_TEXT, "Sign in with SSO").click()
        wait_for_text(driver, "Development issuer: sign in")
        screenshot(driver, "sso-dev-issuer")
        subject = driver.find_element(By.NAME, "subject")
        subject.clear()
        subject.send_keys("dba-2")
        groups = driver.find_element(By.NAME, "groups")
        groups.clear()
        groups.send_keys("oncall-dba, readers")
        button(driver, "Sign in").click()

        text = wait_for_text(driver, "Sign out")
        assert driver.current_url == desk.url + "/"
        assert "dba-2 (oncall-dba, readers)" in text
        assert "Pending approvals (1)" in text
        cookie = page_cookie(driver)
        assert cookie is not None
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert not [c for c in driver.get_cookies() if c["name"] == "airlock_sso"]

        card = driver.find_element(By.CSS_SELECTOR, "article.request")
        assert "update accounts set balance = 7 where id = 4" in card.text
        button(card, "Approve").click()
        wait_for_text(driver, "approved.")
        assert write.result() == 1
    assert accounts()[4] == 7
    [decided] = requests(gateway, "approved")
    assert decided.decided_by == "dba-2"

    button(driver, "Sign out").click()
    text = wait_for_text(driver, "Sign in with SSO")
    assert "Sign out" not in text
    driver.get(desk.url + "/sessions")
    assert "Sign in with SSO" in body_text(driver)


def test_pasting_a_token_still_signs_in_where_sso_is_configured(
    desk: Desk, browsers: Callable[[], Chrome]
) -> None:
    driver = browsers()
    driver.get(desk.url + "/")
    driver.find_element(By.NAME, "token").send_keys(desk.token("dba-1", "oncall-dba"))
    button(driver, "Sign in").click()
    assert "dba-1 (oncall-dba)" in wait_for_text(driver, "Sign out")


def test_a_wrong_or_missing_state_signs_nobody_in(
    desk: Desk, browsers: Callable[[], Chrome]
) -> None:
    driver = browsers()
    request = begin(driver, desk)
    code = issue_code(desk, request)
    come_back(driver, desk, code=code, state=request["state"][:-2] + "xx")
    assert_refused(driver, desk, "its state does not match")

    request = begin(driver, desk)
    come_back(driver, desk, code=issue_code(desk, request))
    assert_refused(driver, desk, "its state does not match")

    # An answer for another browser's sign-in (login CSRF: the victim's browser is sent
    # the attacker's code and state) finds no sign-in begun in this browser.
    request = begin(driver, desk)
    code = issue_code(desk, request)
    victim = browsers()
    come_back(victim, desk, code=code, state=request["state"])
    assert_refused(victim, desk, "this browser has no sign-in in progress")


def test_a_code_is_exchanged_once(desk: Desk, browsers: Callable[[], Chrome]) -> None:
    driver = browsers()
    first = begin(driver, desk)
    code = issue_code(desk, first)
    come_back(driver, desk, code=code, state=first["state"])
    assert "dba-1 (oncall-dba)" in wait_for_text(driver, "Sign out")
    button(driver, "Sign out").click()
    wait_for_text(driver, "Sign in with SSO")

    again = begin(driver, desk)
    come_back(driver, desk, code=code, state=again["state"])
    assert_refused(driver, desk, "the code is unknown, expired or already used")

    # Nor is the answer itself good twice: its sign-in was used up.
    come_back(driver, desk, code=issue_code(desk, again), state=again["state"])
    assert_refused(driver, desk, "this browser has no sign-in in progress")


def test_a_code_sent_with_another_sign_ins_pkce_verifier_is_refused(
    desk: Desk, browsers: Callable[[], Chrome]
) -> None:
    # A code intercepted from one sign-in and fed to another: the gateway sends the
    # second sign-in's verifier, which does not match the first one's challenge.
    driver = browsers()
    intercepted = begin(driver, desk)
    mine = begin(driver, desk)
    assert mine["code_challenge"] != intercepted["code_challenge"]
    code = issue_code(desk, intercepted)
    come_back(driver, desk, code=code, state=mine["state"])
    assert_refused(driver, desk, "PKCE verification failed")


def test_a_code_issued_to_another_client_or_for_another_redirect_is_refused(
    desk: Desk, browsers: Callable[[], Chrome]
) -> None:
    other_app = "http://127.0.0.1:9/other-app/callback"
    desk.gateway.call(lambda: desk.issuer.register_client("other-app", [other_app]))
    driver = browsers()
    request = begin(driver, desk)
    code = issue_code(desk, request, client_id="other-app", redirect_uri=other_app)
    come_back(driver, desk, code=code, state=request["state"])
    assert_refused(driver, desk, "the code was issued to another client")

    elsewhere = "http://127.0.0.1:9/sso/callback"
    desk.gateway.call(lambda: desk.issuer.register_client(CLIENT_ID, [elsewhere]))
    request = begin(driver, desk)
    code = issue_code(desk, request, redirect_uri=elsewhere)
    come_back(driver, desk, code=code, state=request["state"])
    assert_refused(driver, desk, "redirect_uri does not match")


def test_an_access_token_for_another_audience_is_refused(
    desk: Desk, browsers: Callable[[], Chrome]
) -> None:
    # The issuer answers with tokens for another API than this gateway.
    desk.gateway.call(lambda: setattr(desk.issuer, "audience", "api://another"))
    driver = browsers()
    request = begin(driver, desk)
    come_back(driver, desk, code=issue_code(desk, request), state=request["state"])
    assert_refused(driver, desk, "the access token was refused: audience mismatch")


def test_the_identity_providers_refusal_is_shown(
    desk: Desk, browsers: Callable[[], Chrome]
) -> None:
    driver = browsers()
    request = begin(driver, desk)
    come_back(
        driver,
        desk,
        error="access_denied",
        error_description="User is not assigned to the client application.",
        state=request["state"],
    )
    assert_refused(
        driver,
        desk,
        "refused the sign-in (access_denied: User is not assigned to the client application.)",
    )


def test_a_confidential_client_signs_in_with_its_secret(
    gateway_factory: Callable[..., RunningGateway],
    accounts: Callable[[], dict[int, int]],
    browsers: Callable[[], Chrome],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRLOCK_WEB_SECRET", "s3cret/with:odd+chars")
    desk = make_desk(gateway_factory, {"client_secret_env": "AIRLOCK_WEB_SECRET"})
    driver = browsers()
    request = begin(driver, desk)
    come_back(driver, desk, code=issue_code(desk, request), state=request["state"])
    assert "dba-1 (oncall-dba)" in wait_for_text(driver, "Sign out")
    button(driver, "Sign out").click()
    wait_for_text(driver, "Sign in with SSO")

    # The issuer now expects another secret than the gateway sends.
    desk.gateway.call(
        lambda: desk.issuer.register_client(CLIENT_ID, [], secret="rotated-elsewhere")
    )
    request = begin(driver, desk)
    come_back(driver, desk, code=issue_code(desk, request), state=request["state"])
    assert_refused(driver, desk, "client authentication failed")
    assert "s3cret" not in body_text(driver)
