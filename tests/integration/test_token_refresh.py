"""Sessions outlive a token, not the identity: a fresh token of the same subject, through
the API or in-band, keeps a session past its first token's expiry; one of another subject
changes nothing; a session nobody refreshes ends naming why; PostgreSQL clients are warned
first. Real gateway, real servers, real drivers (psycopg, PyMySQL)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from proxy.recording.sessions import find_transcript
from proxy.recording.verifier import read_transcript
from tests.support.approvals import api, rule
from tests.support.gateway import RunningGateway
from tests.support.waiting import PATIENCE_S, wait_until

GatewayFactory = Callable[..., RunningGateway]
#: The first token's life: the session would end after it unless refreshed.
SHORT_S = 3


def agent_token(gateway: RunningGateway, ttl_s: float = 600, sub: str = "agent-1") -> str:
    return gateway.issuer.mint(sub=sub, groups=("data-agents",), ttl_s=ttl_s)


def only_session_id(gateway: RunningGateway) -> str:
    def found() -> str | None:
        listeners = [gateway.gateway.postgres, gateway.gateway.mysql]
        sessions = [s for listener in listeners if listener for s in listener.sessions]
        return sessions[0].id if len(sessions) == 1 else None

    return wait_until(found, PATIENCE_S, "one live session")


def events(gateway: RunningGateway, session_id: str) -> list[tuple[str, dict[str, Any]]]:
    gateway.wait_for_sealed_transcripts()
    path = find_transcript(gateway.settings.data_dir, session_id)
    return [(e.kind, e.data) for e in read_transcript(path).events]


def transcript_bytes(gateway: RunningGateway, session_id: str) -> bytes:
    return Path(find_transcript(gateway.settings.data_dir, session_id)).read_bytes()


def outlive_first_token(started: float) -> None:
    time.sleep(max(SHORT_S + 1.5 - (time.monotonic() - started), 0.0))


@pytest.mark.timeout(60)
def test_an_api_refresh_keeps_a_psycopg_session_past_its_first_token(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory()
    started = time.monotonic()
    agent = psycopg.connect(gateway.dsn(agent_token(gateway, SHORT_S)), autocommit=True)
    session_id = only_session_id(gateway)
    path = f"/api/v1/sessions/{session_id}/refresh"

    # Another subject's token is refused, and changes nothing.
    status, body = api(gateway, "POST", path, agent_token(gateway, sub="agent-2"))
    assert status == 403, body
    assert "another subject" in body["error"]["message"]
    status, body = api(gateway, "POST", "/api/v1/sessions/nosuch/refresh", agent_token(gateway))
    assert status == 404, body

    fresh = agent_token(gateway, 600)
    status, body = api(gateway, "POST", path, fresh)
    assert status == 200, body
    assert body["id"] == session_id
    assert body["refreshed"] is True
    assert body["ends_because"] == "token expires"

    outlive_first_token(started)
    assert agent.execute("select 1").fetchone() == (1,)
    # Every live session of the subject at once.
    status, body = api(gateway, "POST", "/api/v1/sessions/refresh", agent_token(gateway, 900))
    assert status == 200, body
    assert [s["id"] for s in body["sessions"]] == [session_id]
    agent.close()

    refreshes = [data for kind, data in events(gateway, session_id) if kind == "token_refreshed"]
    assert len(refreshes) == 2
    assert refreshes[0]["via"] == "api"
    assert refreshes[0]["jti"].startswith("AT.")
    assert refreshes[0]["ends_because"] == "token expires"
    assert fresh.encode() not in transcript_bytes(gateway, session_id)


@pytest.mark.timeout(60)
def test_session_ttl_caps_a_refresh(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory(rules=[rule(session_ttl="1h")])
    agent = psycopg.connect(gateway.dsn(agent_token(gateway, 60)), autocommit=True)
    session_id = only_session_id(gateway)
    status, body = api(
        gateway, "POST", f"/api/v1/sessions/{session_id}/refresh", agent_token(gateway, 7200)
    )
    assert status == 200, body
    assert body["ends_because"] == "session_ttl"
    agent.close()


@pytest.mark.timeout(60)
def test_a_session_nobody_refreshes_ends_naming_the_token_and_is_warned_first(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory(limits={"session_end_warning": "2s"})
    token = agent_token(gateway, SHORT_S + 1)
    agent = psycopg.connect(gateway.dsn(token), autocommit=True)
    notices: list[tuple[str | None, str | None, str | None]] = []

    def noticed(notice: psycopg.errors.Diagnostic) -> None:
        # Read inside the handler: psycopg frees the notice once it returns.
        notices.append((notice.severity, notice.message_primary, notice.message_hint))

    agent.add_notice_handler(noticed)
    session_id = only_session_id(gateway)
    # The warning is sent while the client is idle; psycopg reads it with its next query.
    time.sleep(2.5)
    assert agent.execute("select 1").fetchone() == (1,)
    warnings = [n for n in notices if "this session ends" in (n[1] or "")]
    assert len(warnings) == 1, notices
    severity, message, hint = warnings[0]
    assert severity == "WARNING"
    assert "its token expires" in (message or "")
    assert "airlock.refresh" in (hint or "")

    gateway.wait_for_no_sessions(SHORT_S + 1 + PATIENCE_S)
    with pytest.raises(psycopg.OperationalError) as ended:
        agent.execute("select 1")
    assert "session ended by the gateway: the token expired" in str(ended.value)
    agent.close()
    end = events(gateway, session_id)[-1]
    assert end[0] == "session.end"
    assert end[1]["reason"] == "the token expired"
    assert end[1]["error"]["sqlstate"] == "57P01"


@pytest.mark.timeout(60)
def test_an_in_band_refresh_with_psycopg_simple_and_prepared(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory()
    started = time.monotonic()
    agent = psycopg.connect(gateway.dsn(agent_token(gateway, SHORT_S)), autocommit=True)
    session_id = only_session_id(gateway)
    fresh = agent_token(gateway, 600)

    row = agent.execute(f"SELECT airlock.refresh('{fresh}')").fetchone()
    assert row is not None
    assert row[1] == "token expires"
    assert row[0].endswith("Z")
    # The extended protocol (a named prepared statement) is consumed the same way.
    again = agent_token(gateway, 700)
    row = agent.execute(f"select airlock.refresh('{again}')", prepare=True).fetchone()
    assert row is not None
    assert row[1] == "token expires"

    # Fail closed: anything else that names the function is refused, never forwarded.
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as placeholder:
        agent.execute("SELECT airlock.refresh(%s)", [fresh])
    assert "malformed token refresh" in str(placeholder.value)
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
        agent.execute(f"SELECT 1; SELECT airlock.refresh('{fresh}')")
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as bad:
        agent.execute("SELECT airlock.refresh('not.a.token')")
    assert "token refresh refused" in str(bad.value)
    other = agent_token(gateway, 600, sub="agent-2")
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as foreign:
        agent.execute(f"SELECT airlock.refresh('{other}')")
    assert "another subject" in str(foreign.value)

    outlive_first_token(started)
    assert agent.execute("select 1").fetchone() == (1,)
    agent.close()
    recorded = events(gateway, session_id)
    refreshes = [data for kind, data in recorded if kind == "token_refreshed"]
    assert [r["via"] for r in refreshes] == ["statement", "statement"]
    raw = transcript_bytes(gateway, session_id)
    for token in (fresh, again, other):
        assert token.encode() not in raw
    sqls = [data.get("sql") for kind, data in recorded if kind == "statement"]
    assert "SELECT airlock.refresh('<token withheld>')" in sqls


@pytest.mark.timeout(60)
def test_an_in_band_refresh_with_pymysql(
    mysql_gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = mysql_gateway_factory()
    started = time.monotonic()
    conn: Any = gateway.pymysql(agent_token(gateway, SHORT_S))
    session_id = only_session_id(gateway)
    fresh = agent_token(gateway, 600)
    with conn.cursor() as cursor:
        cursor.execute("SELECT airlock.refresh(%s)", (fresh,))  # quoted by PyMySQL
        row = cursor.fetchone()
    assert row is not None
    assert row[1] == "token expires"
    with conn.cursor() as cursor, pytest.raises(pymysql.err.OperationalError) as bad:
        cursor.execute("SELECT airlock.refresh('not.a.token')")
    assert bad.value.args[0] == 1045
    outlive_first_token(started)
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    conn.close()
    assert fresh.encode() not in transcript_bytes(gateway, session_id)
    kinds = [kind for kind, _ in events(gateway, session_id)]
    assert "token_refreshed" in kinds
