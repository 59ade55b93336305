"""The web page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, installed by scripts/setup) driven with Selenium against a real
gateway, real agents whose writes are held, and the real server.

What only a browser shows: the headers it really sends with the page's forms (Origin,
Sec-Fetch-Site, under the page's Referrer-Policy), its cookie rules, and what a person
reads on the rendered page. With AIRLOCK_SCREENSHOTS=DIR set, the tests also save the
screenshots docs/web.md shows (`AIRLOCK_SCREENSHOTS=docs/screenshots pytest ...`).
"""

from __future__ import annotations

import http.server
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.support.approvals import Background, agent_token, api, dba_token, pending, rule
from tests.support.gateway import RunningGateway

pytestmark = pytest.mark.timeout(90)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 15.0

Chrome = webdriver.Chrome


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[Callable[..., Chrome]]:
    """Start headless Chromium browsers, each with its own profile (and a window of
    `width` CSS pixels); all quit after."""
    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(path), f"{path} is missing: run scripts/setup"
    started: list[Chrome] = []

    def start(width: int = 1100) -> Chrome:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--window-size={width},800",
            f"--user-data-dir={tmp_path / f'profile{len(started)}'}",
        ):
            options.add_argument(argument)
        if os.geteuid() == 0:
            options.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
        driver = Chrome(options=options, service=Service(CHROMEDRIVER))
        started.append(driver)
        if width < 500:  # narrower than a desktop window goes: a phone's screen
            metrics = {"width": width, "height": 844, "deviceScaleFactor": 1, "mobile": True}
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        return driver

    yield start
    for driver in started:
        driver.quit()


def body_text(driver: Chrome) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def wait_for_text(driver: Chrome, text: str) -> str:
    """The page's visible text once it shows `text`."""
    try:
        # The page may be between two documents (a form's redirect) or have had its list
        # patched by its live script when it is read: Chromium then answers with a stale
        # element or "node does not belong to the document"; read it again.
        WebDriverWait(driver, WAIT_S, ignored_exceptions=[WebDriverException]).until(
            lambda d: text in body_text(d)
        )
    except TimeoutException:
        raise AssertionError(f"{text!r} not shown; the page says: {body_text(driver)}") from None
    return body_text(driver)


def button(scope: Chrome | WebElement, label: str) -> WebElement:
    return scope.find_element(By.XPATH, f".//button[normalize-space()='{label}']")


def sign_in(driver: Chrome, gateway: RunningGateway, token: str) -> str:
    driver.get(gateway.api_url + "/")
    driver.find_element(By.NAME, "token").send_keys(token)
    button(driver, "Sign in").click()
    return wait_for_text(driver, "Sign out")


def screenshot(driver: Chrome, name: str) -> None:
    """Saved for docs/web.md when AIRLOCK_SCREENSHOTS names a directory."""
    directory = os.environ.get("AIRLOCK_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(Path(directory) / f"{name}.png"))


def screenshot_element(element: WebElement, name: str) -> None:
    directory = os.environ.get("AIRLOCK_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        assert element.screenshot(str(Path(directory) / f"{name}.png"))


def test_an_approver_signs_in_approves_a_held_write_denies_another_and_signs_out(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]], browsers: Callable[[], Chrome]
) -> None:
    driver = browsers()
    driver.get(gated.api_url + "/")
    screenshot(driver, "sign-in")
    with (
        psycopg.connect(gated.dsn(agent_token(gated)), autocommit=True) as first,
        psycopg.connect(gated.dsn(agent_token(gated)), autocommit=True) as second,
    ):
        update = Background(
            lambda: (
                first.execute(
                    "update accounts set balance = %s where id = %s", (55, 1), prepare=True
                ).rowcount
            )
        )
        [held_update] = pending(gated)
        delete = Background(lambda: second.execute("delete from accounts where id = 2"))
        held = {r["id"]: r for r in pending(gated, count=2)}
        [held_delete] = [r for i, r in held.items() if i != held_update["id"]]

        text = sign_in(driver, gated, dba_token(gated))
        assert "dba-1 (oncall-dba)" in text
        assert "Pending approvals (2)" in text
        card = driver.find_element(By.ID, f"request-{held_update['id']}")
        assert "update accounts set balance = $1 where id = $2" in card.text
        assert "agent-1" in card.text
        screenshot(driver, "pending-approvals")
        assert accounts()[1] == 100  # held: not yet run

        card.find_element(By.NAME, "comment").send_keys("ok by me")
        button(card, "Approve").click()
        text = wait_for_text(driver, f"Request {held_update['id']} approved.")
        assert "Pending approvals (1)" in text
        assert update.result() == 1  # the agent's statement completed
        assert accounts()[1] == 55

        card = driver.find_element(By.ID, f"request-{held_delete['id']}")
        card.find_element(By.NAME, "reason").send_keys("not on a Friday")
        button(card, "Deny").click()
        text = wait_for_text(driver, f"Request {held_delete['id']} denied.")
        assert "Pending approvals (0)" in text
        error = delete.result()
        assert isinstance(error, psycopg.errors.InsufficientPrivilege)
        assert "not on a Friday" in str(error)
    assert 2 in accounts()

    button(driver, "Sign out").click()
    wait_for_text(driver, "Paste your OIDC access token")
    driver.get(gated.api_url + "/sessions")
    assert "Paste your OIDC access token" in body_text(driver)


def test_an_auditor_replays_a_session_in_the_browser(
    gateway_factory: Callable[..., RunningGateway],
    accounts: Callable[[], dict[int, int]],
    browsers: Callable[[], Chrome],
) -> None:
    gateway = gateway_factory(rules=[rule()], auditors=["auditors"])
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        agent.execute("select count(*) from accounts where balance > 10")
        agent.execute("select id, balance from accounts where id = %s", (7,))
    gateway.wait_for_no_sessions()
    driver = browsers()
    sign_in(driver, gateway, gateway.issuer.mint(sub="audit-1", groups=("auditors",)))
    driver.find_element(By.LINK_TEXT, "Sessions").click()
    text = wait_for_text(driver, "Sessions (1)")
    assert "agent-1" in text
    driver.find_element(By.ID, "f-agent").send_keys("agent-2")
    button(driver, "Filter").click()
    wait_for_text(driver, "Sessions (0)")
    driver.find_element(By.ID, "f-agent").clear()
    driver.find_element(By.ID, "f-agent").send_keys("agent-1")
    driver.find_element(By.ID, "f-since").send_keys("1h")
    button(driver, "Filter").click()
    wait_for_text(driver, "Sessions (1)")
    screenshot(driver, "sessions")
    driver.find_element(By.CSS_SELECTOR, "table a").click()
    text = wait_for_text(driver, "verified: ")
    assert "select count(*) from accounts where balance > 10" in text
    assert "DOES NOT VERIFY" not in text
    screenshot(driver, "session-replay")


class OtherSite:
    """Another site's page with a form that posts to the gateway: the attack the
    cross-site check is for. The test clicks its button as a lured person would."""

    def __init__(self, form: str) -> None:
        page = f"<!doctype html><html><body>{form}</body></html>".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, host: str) -> str:
        return f"http://{host}:{self.server.server_port}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_sign_in_form_on_another_site_signs_nobody_in(
    gated: RunningGateway, browsers: Callable[[], Chrome]
) -> None:
    # Login CSRF: another site signs the visitor in as someone else.
    token = dba_token(gated)
    other = OtherSite(
        f'<form method="post" action="{gated.api_url}/login">'
        f'<input type="hidden" name="token" value="{token}">'
        '<button type="submit">Win a prize</button></form>'
    )
    try:
        driver = browsers()
        driver.get(other.url("localhost"))  # another site than 127.0.0.1
        button(driver, "Win a prize").click()
        wait_for_text(driver, "A form from another site was refused.")
        driver.get(gated.api_url + "/")
        assert "Paste your OIDC access token" in body_text(driver)
        assert not driver.get_cookies()
    finally:
        other.close()


def test_a_decision_posted_from_another_origin_of_the_same_site_decides_nothing(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]], browsers: Callable[[], Chrome]
) -> None:
    # 127.0.0.1 on another port is the same site: the browser sends the SameSite=Strict
    # page cookie along. Even with the person's CSRF token (as if it had leaked), the
    # origin check refuses the form.
    with psycopg.connect(gated.dsn(agent_token(gated)), autocommit=True) as agent:
        write = Background(lambda: agent.execute("delete from accounts where id = 3"))
        [request] = pending(gated)
        driver = browsers()
        sign_in(driver, gated, dba_token(gated))
        csrf = driver.find_element(By.NAME, "csrf").get_attribute("value")
        other = OtherSite(
            f'<form method="post" action="{gated.api_url}/approvals/{request["id"]}/approve">'
            f'<input type="hidden" name="csrf" value="{csrf}">'
            '<button type="submit">Win a prize</button></form>'
        )
        try:
            driver.get(other.url("127.0.0.1"))
            button(driver, "Win a prize").click()
            wait_for_text(driver, "A form from another site was refused.")
        finally:
            other.close()
        [still] = pending(gated)
        assert still["id"] == request["id"]
        driver.get(gated.api_url + "/")
        card = driver.find_element(By.ID, f"request-{request['id']}")
        card.find_element(By.NAME, "reason").send_keys("no")
        button(card, "Deny").click()
        wait_for_text(driver, f"Request {request['id']} denied.")
        assert isinstance(write.result(), psycopg.errors.InsufficientPrivilege)
    assert 3 in accounts()


def test_a_held_write_appears_live_and_leaves_when_decided_elsewhere(
    gated: RunningGateway, accounts: Callable[[], dict[int, int]], browsers: Callable[[], Chrome]
) -> None:
    driver = browsers()
    sign_in(driver, gated, dba_token(gated))
    wait_for_text(driver, "Pending approvals (0)")
    # Set on this very document: it is still there only if the page never reloads.
    driver.execute_script("window.airlockSameDocument = true")
    with psycopg.connect(gated.dsn(agent_token(gated)), autocommit=True) as agent:
        first = Background(lambda: agent.execute("delete from accounts where id = 9"))
        [request] = pending(gated)
        text = wait_for_text(driver, "Pending approvals (1)")
        card = driver.find_element(By.ID, f"request-{request['id']}")
        assert "delete from accounts where id = 9" in card.text
        assert "live" in card.text
        assert "Agent waits\nuntil " in card.text
        assert "first time" in card.text
        screenshot_element(card, "card")

        status, _ = api(
            gated, "POST", f"/api/v1/approvals/{request['id']}/approve", dba_token(gated, "dba-2")
        )
        assert status == 200
        wait_for_text(driver, "Pending approvals (0)")
        assert not driver.find_elements(By.ID, f"request-{request['id']}")
        assert first.result() is not None
        # The same statement with other literals: the card counts the requests.
        second = Background(lambda: agent.execute("delete from accounts where id = 10"))
        [again] = pending(gated)
        wait_for_text(driver, "Pending approvals (1)")
        card = driver.find_element(By.ID, f"request-{again['id']}")
        assert "2 times (same identity, target, statement)" in card.text
        assert driver.execute_script("return window.airlockSameDocument") is True
        # Cancelled by the agent: withdrawn, and gone from the page.
        agent.cancel_safe()
        assert isinstance(second.result(), psycopg.errors.QueryCanceled)
        text = wait_for_text(driver, "Pending approvals (0)")
        assert "Nothing waits for a decision." in text
    assert driver.execute_script("return window.airlockSameDocument") is True
    driver.find_element(By.LINK_TEXT, "History").click()
    text = wait_for_text(driver, "History (2)")
    assert request["id"] in text
    assert again["id"] in text
    Select(driver.find_element(By.ID, "f-state")).select_by_visible_text("withdrawn")
    button(driver, "Filter").click()
    text = wait_for_text(driver, "History (1)")
    assert again["id"] in text
    assert request["id"] not in text
    screenshot(driver, "history")
    assert 9 not in accounts()
    assert 10 in accounts()


def test_who_cannot_approve_sees_no_approve_button(
    gateway_factory: Callable[..., RunningGateway],
    accounts: Callable[[], dict[int, int]],
    browsers: Callable[..., Chrome],
) -> None:
    gateway = gateway_factory(rules=[rule()], auditors=["auditors"])
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        write = Background(lambda: agent.execute("delete from accounts where id = 8"))
        [request] = pending(gateway)
        people = {
            "auditor": gateway.issuer.mint(sub="audit-1", groups=("auditors",)),
            "requester": agent_token(gateway),
        }
        for who, token in people.items():
            driver = browsers()
            sign_in(driver, gateway, token)
            text = wait_for_text(driver, "Pending approvals (1)")
            card = driver.find_element(By.ID, f"request-{request['id']}")
            assert "delete from accounts where id = 8" in card.text, who
            assert not card.find_elements(By.TAG_NAME, "button"), who
            assert not driver.find_elements(By.XPATH, "//button[normalize-space()='Approve']")
            assert "Sessions" in text if who == "auditor" else "Sessions" not in text
        # An approver, in a browser as wide as a phone's: the card and its buttons fit.
        phone = browsers(width=390)
        sign_in(phone, gateway, dba_token(gateway))
        wait_for_text(phone, "Pending approvals (1)")
        assert phone.execute_script("return window.innerWidth") <= 390
        overflow = phone.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"the page is {overflow}px wider than the phone"
        approve = button(phone.find_element(By.ID, f"request-{request['id']}"), "Approve")
        assert approve.rect["x"] + approve.rect["width"] <= 390
        screenshot(phone, "desk-phone")
        phone.find_element(By.ID, f"reason-{request['id']}").send_keys("no")
        button(phone, "Deny").click()
        wait_for_text(phone, f"Request {request['id']} denied.")
        assert isinstance(write.result(), psycopg.errors.InsufficientPrivilege)
    assert 8 in accounts()
