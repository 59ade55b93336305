"""Who sees an approval request, its SQL and its bound parameters: its requester, the
members of its approver groups, and the auditors (read-only). Anyone else with a valid
token is answered as if it did not exist, through the API, the CLI and the web page."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.test_web import Browser
from tests.support.approvals import agent_token, airlock, api, dba_token, pending, rule
from tests.support.gateway import RunningGateway

SECRET = "424242"


@pytest.fixture
def held(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> tuple[RunningGateway, dict[str, Any]]:
    """A gateway with two teams' rules and one request held for the first team's DBAs."""
    gateway = gateway_factory(
        rules=[
            rule(hold="reject"),
            rule(groups=["billing-agents"], approvers=["billing-dba"], hold="reject"),
        ],
        auditors=["auditors"],
    )
    with (
        psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        agent.execute("update accounts set balance = %s where id = 7", (int(SECRET),))
    [request] = pending(gateway)
    return gateway, request


def tokens(gateway: RunningGateway) -> dict[str, str]:
    mint = gateway.issuer.mint
    return {
        "requester": agent_token(gateway),
        "approver": dba_token(gateway),
        "auditor": mint(sub="audit-1", groups=("auditors",)),
        "same team": agent_token(gateway, sub="agent-2"),
        "other team's approver": mint(sub="dba-9", groups=("billing-dba",)),
        "no rule": mint(sub="passer-by", groups=("marketing",)),
    }


SEE = ("requester", "approver", "auditor")
HIDDEN = ("same team", "other team's approver", "no rule")


def test_the_api_shows_a_request_only_to_who_may_see_it(
    held: tuple[RunningGateway, dict[str, Any]],
) -> None:
    gateway, request = held
    path = f"/api/v1/approvals/{request['id']}"
    unknown = "/api/v1/approvals/apr_00000000000000000000000000000000"
    for who, token in tokens(gateway).items():
        for state in ("pending", "all"):
            status, body = api(gateway, "GET", f"/api/v1/approvals?state={state}", token)
            assert status == 200, (who, body)
            shown = [a["id"] for a in body["approvals"]]
            assert shown == ([request["id"]] if who in SEE else []), who
        status, body = api(gateway, "GET", path, token)
        if who in SEE:
            assert status == 200, (who, body)
            assert body["parameters"][0]["value"] == SECRET
            continue
        assert status == 404, (who, body)
        assert SECRET not in json.dumps(body)
        # Exactly what a request that does not exist gets: its existence is not confirmed.
        _, nothing = api(gateway, "GET", unknown, token)
        assert body["error"]["code"] == nothing["error"]["code"] == "not_found"
        for verdict, decision in (("approve", {}), ("deny", {"reason": "mine now"})):
            status, body = api(gateway, "POST", f"{path}/{verdict}", token, decision)
            assert status == 404, (who, verdict, body)
    # Those who see it but may not decide it are told why (they know it exists).
    for who in ("requester", "auditor"):
        status, body = api(gateway, "POST", f"{path}/approve", tokens(gateway)[who], {})
        assert status == 403, (who, body)
    [still] = pending(gateway)
    assert still["state"] == "pending"
    status, body = api(gateway, "POST", f"{path}/approve", tokens(gateway)["approver"], {})
    assert status == 200, body
    assert body["state"] == "approved"


def test_the_cli_lists_nothing_and_gets_nothing_for_an_outsider(
    held: tuple[RunningGateway, dict[str, Any]],
) -> None:
    gateway, request = held
    server = ("--server", gateway.api_url)
    outsider = tokens(gateway)["same team"]
    listed = airlock("approvals", "list", "--state", "all", *server, token=outsider)
    assert listed.returncode == 0, listed.stderr
    assert request["id"] not in listed.stdout
    assert SECRET not in listed.stdout
    got = airlock("approvals", "get", request["id"], *server, token=outsider)
    assert got.returncode == 1
    assert SECRET not in got.stdout + got.stderr
    assert "no approval request" in got.stderr
    approved = airlock("approve", request["id"], *server, token=outsider)
    assert approved.returncode == 1
    assert "no approval request" in approved.stderr
    mine = airlock("approvals", "get", request["id"], *server, token=tokens(gateway)["requester"])
    assert mine.returncode == 0, mine.stderr
    assert SECRET in mine.stdout


def test_the_web_page_shows_a_request_only_to_who_may_see_it(
    held: tuple[RunningGateway, dict[str, Any]],
) -> None:
    gateway, request = held
    for who, token in tokens(gateway).items():
        browser = Browser(gateway)
        page = browser.sign_in(token)
        card = f'id="request-{request["id"]}"'
        buttons = f'action="/approvals/{request["id"]}/approve"'
        if who in SEE:
            assert "Pending approvals (1)" in page, who
            assert card in page, who
            assert SECRET in page, who
            # Only an approver gets the buttons; the others read.
            assert (buttons in page) == (who == "approver"), who
            continue
        assert "Pending approvals (0)" in page, who
        assert card not in page, who
        assert SECRET not in page, who
        for verdict, fields in (("approve", {}), ("deny", {"reason": "mine now"})):
            _, page = browser.post(
                f"/approvals/{request['id']}/{verdict}", {"csrf": browser.csrf(), **fields}
            )
            # What a request id that does not exist gets.
            assert f"No approval request {request['id']}." in page, (who, verdict)
    [still] = pending(gateway)
    assert still["state"] == "pending"
    approver = Browser(gateway)
    approver.sign_in(tokens(gateway)["approver"])
    _, page = approver.post(
        f"/approvals/{request['id']}/approve", {"csrf": approver.csrf(), "scope": "statement"}
    )
    assert f"Request {request['id']} approved." in page
