"""Short-lived gateway credentials: an agent trades its token at POST /api/v1/credentials
for a user name and password, then logs in with drivers that cannot send a JWT, through
SCRAM-SHA-256 (psycopg, asyncpg, psql) or MySQL's own password plugins (PyMySQL,
mysql-connector, the mariadb CLI), as the token's identity and only until it expires."""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
import subprocess
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import mysql.connector
import psycopg
import pymysql
import pytest

from proxy.recording.sessions import transcript_paths
from proxy.recording.signing import load_public_key
from proxy.recording.verifier import describe, read_transcript, verify_transcript
from tests.support.approvals import (
    Background,
    agent_token,
    api,
    dba_token,
    decide,
    pending,
    rule,
)
from tests.support.gateway import RunningGateway
from tests.support.mariadb import MariaDb
from tests.support.pgcluster import PgServer
from tests.support.waiting import PATIENCE_S


def mint(gateway: RunningGateway, token: str, **body: Any) -> dict[str, Any]:
    status, reply = api(gateway, "POST", "/api/v1/credentials", token, body)
    assert status == 200, reply
    return dict(reply)


def credential_dsn(gateway: RunningGateway, credential: dict[str, Any], **params: str) -> str:
    """psycopg's libpq (18) may answer only a SCRAM-SHA-256 request: were the gateway to
    ask for a cleartext password, the login would fail."""
    parts = {
        "host": "127.0.0.1",
        "port": str(gateway.pg_port),
        "dbname": "orders",
        "user": credential["username"],
        "password": credential["password"],
        "sslmode": "require",
        "require_auth": "scram-sha-256",
        "connect_timeout": "10",
        **params,
    }
    return " ".join(f"{k}='{v}'" for k, v in parts.items() if v)


def seconds_until(iso: str) -> float:
    moment = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.timestamp() - time.time()


# --- the API


def test_a_credential_is_minted_for_a_reachable_target_until_the_token_expires(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = gateway_factory()
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",), ttl_s=600)
    first, second = mint(gateway, token, target="orders"), mint(gateway, token, target="orders")
    assert first["username"].startswith("airlock_")
    assert first["username"] != second["username"]
    assert first["password"] != second["password"]
    assert len(first["password"]) >= 32
    assert (first["target"], first["protocol"]) == ("orders", "postgres")
    assert 590 < seconds_until(first["expires_at"]) <= 600
    shorter = mint(gateway, token, target="orders", ttl="30s")
    assert 20 < seconds_until(shorter["expires_at"]) <= 30
    longer = mint(gateway, token, target="orders", ttl="2h")  # never past the token
    assert seconds_until(longer["expires_at"]) <= 600


def test_the_api_refuses_what_it_cannot_mint(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = gateway_factory()
    token = agent_token(gateway)
    cases: list[tuple[str, dict[str, Any], int]] = [
        (token, {}, 400),
        (token, {"target": 7}, 400),
        (token, {"target": "nowhere"}, 404),
        (dba_token(gateway), {"target": "orders"}, 403),  # no rule for its groups
        ("not-a-token", {"target": "orders"}, 401),
        (token, {"target": "orders", "ttl": "-1s"}, 400),
    ]
    for bearer, body, expected in cases:
        status, reply = api(gateway, "POST", "/api/v1/credentials", bearer, body)
        assert status == expected, (body, reply)
        assert "password" not in reply


def test_one_agent_may_hold_at_most_100_live_credentials(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = gateway_factory()
    token = agent_token(gateway)
    for _ in range(100):
        mint(gateway, token, target="orders")
    status, reply = api(gateway, "POST", "/api/v1/credentials", token, {"target": "orders"})
    assert status == 429
    assert reply["error"]["code"] == "too_many_credentials"
    mint(gateway, agent_token(gateway, sub="agent-2"), target="orders")  # others still may


# --- PostgreSQL: SCRAM-SHA-256


@pytest.mark.timeout(90)
def test_psycopg_logs_in_with_scram_and_acts_as_the_token(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(rules=[rule()])
    credential = mint(gateway, agent_token(gateway, sub="agent-7"), target="orders")
    with psycopg.connect(credential_dsn(gateway, credential), autocommit=True) as agent:
        assert agent.execute("select balance from accounts where id = 1").fetchone() == (100,)
        # The write waits for an approver, as the token's own writes would.
        write = Background(
            lambda: agent.execute("update accounts set balance = 5 where id = 1").rowcount
        )
        [request] = pending(gateway)
        assert request["requester"]["subject"] == "agent-7"
        assert accounts()[1] == 100
        status, _ = decide(gateway, request["id"], "approve", {})
        assert status == 200
        assert write.result() == 1
    assert accounts()[1] == 5
    # The transcript names the token's identity and the credential it came through.
    gateway.wait_for_no_sessions()
    [path] = transcript_paths(gateway.settings.data_dir)
    recorded = read_transcript(path)
    start = recorded.events[0]
    assert start.kind == "session.start"
    assert start.data["identity"]["sub"] == "agent-7"
    assert start.data["client"]["credential"] == credential["username"]
    assert credential["password"].encode() not in path.read_bytes()
    verified = verify_transcript(recorded, load_public_key(gateway.settings.data_dir))
    assert verified.ok, describe(verified)


def test_asyncpg_and_psql_log_in_with_a_credential(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = gateway_factory()
    credential = mint(gateway, agent_token(gateway), target="orders")

    async def query() -> object:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=gateway.pg_port,
            user=credential["username"],
            password=credential["password"],
            database="orders",
            ssl=gateway.ssl_context(),
            timeout=10,
        )
        try:
            return await conn.fetchval("select 'asyncpg, ' || 6 * 7")
        finally:
            await conn.close()

    assert asyncio.run(query()) == "asyncpg, 42"
    # psql (libpq 15: no require_auth) with the password in the environment, verifying
    # the gateway's certificate.
    dsn = credential_dsn(
        gateway,
        credential,
        password="",
        require_auth="",
        sslmode="verify-full",
        sslrootcert=str(gateway.cert_file),
    )
    result = subprocess.run(
        ["psql", "-X", "-A", "-t", "-d", dsn, "-c", "select 6 * 7"],
        env={**os.environ, "PGPASSWORD": credential["password"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"


def test_a_wrong_password_or_an_unknown_name_fails_as_28P01(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = gateway_factory()
    credential = mint(gateway, agent_token(gateway), target="orders")
    for wrong in (
        {**credential, "password": credential["password"][:-1] + "x"},
        {**credential, "username": "airlock_0000000000000000"},
    ):
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(credential_dsn(gateway, wrong))
        assert "password authentication failed" in str(refused.value)
        assert credential["password"] not in str(refused.value)


def test_a_credential_reaches_only_its_own_target(
    gateway_factory: Callable[..., RunningGateway], local_pg: PgServer, pg_database: str
) -> None:
    upstream = (
        f"postgresql://{local_pg.superuser}@{local_pg.host}:{local_pg.port}/{pg_database}"
        "?sslmode=disable"
    )
    both = rule(targets=["orders", "billing"], write="allow")
    gateway = gateway_factory(
        targets={
            "orders": {"protocol": "postgres", "upstream": upstream},
            "billing": {"protocol": "postgres", "upstream": upstream},
        },
        rules=[both],
    )
    credential = mint(gateway, agent_token(gateway), target="orders")
    with psycopg.connect(credential_dsn(gateway, credential)) as agent:
        assert agent.execute("select 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(credential_dsn(gateway, credential, dbname="billing"))
    assert 'is for target "orders"' in str(refused.value)


@pytest.mark.timeout(60)
def test_a_credential_dies_with_its_token_and_so_does_its_session(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = gateway_factory()
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",), ttl_s=3)
    credential = mint(gateway, token, target="orders")
    agent = psycopg.connect(credential_dsn(gateway, credential), autocommit=True)
    assert agent.execute("select 1").fetchone() == (1,)
    # The session ends on an event-loop timer at the token's expiry (no injected clock
    # moves it): wait for that end, not a guessed time after it.
    gateway.wait_for_no_sessions(seconds_until(credential["expires_at"]) + PATIENCE_S)
    assert seconds_until(credential["expires_at"]) <= 0.1, "the session ended early"
    with pytest.raises(psycopg.OperationalError) as ended:
        agent.execute("select 1")
    assert "token expired" in str(ended.value)
    agent.close()
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(credential_dsn(gateway, credential))
    assert "password authentication failed" in str(refused.value)


# --- MySQL: caching_sha2_password and mysql_native_password


def tls_without_host_check(gateway: RunningGateway) -> ssl.SSLContext:
    context = gateway.ssl_context()
    context.check_hostname = False
    return context


def mysql_credential(gateway: RunningGateway) -> dict[str, Any]:
    credential = mint(gateway, agent_token(gateway, sub="agent-7"), target="shop")
    assert credential["protocol"] == "mysql"
    return credential


def test_pymysql_logs_in_with_a_credential_and_its_write_waits_for_approval(
    mysql_gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = mysql_gateway_factory(rules=[rule(targets=["shop"])])
    credential = mysql_credential(gateway)
    # PyMySQL answers the greeting's caching_sha2_password with the fast-path scramble.
    conn: Any = pymysql.connect(
        host="127.0.0.1",
        port=gateway.mysql_port,
        user=credential["username"],
        password=credential["password"],
        database="shop",
        ssl=tls_without_host_check(gateway),
        autocommit=True,
    )
    with conn, conn.cursor() as cursor:
        cursor.execute("SELECT balance FROM accounts WHERE id = 1")
        assert cursor.fetchone() == (100,)
        write = Background(lambda: cursor.execute("UPDATE accounts SET balance = 9 WHERE id = 1"))
        [request] = pending(gateway)
        assert request["requester"]["subject"] == "agent-7"
        decide(gateway, request["id"], "approve", {})
        assert write.result() == 1
        cursor.execute("SELECT balance FROM accounts WHERE id = 1")
        assert cursor.fetchone() == (9,)


def test_mysql_connector_logs_in_with_mysql_native_password(
    mysql_gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = mysql_gateway_factory()
    credential = mysql_credential(gateway)
    # The client offers mysql_native_password; the gateway checks it without a switch.
    conn = gateway.mysql_connector(
        credential["password"], user=credential["username"], auth_plugin="mysql_native_password"
    )
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT COUNT(*) FROM accounts")
        assert cursor.fetchone() == (60,)
    finally:
        conn.close()


def test_the_mariadb_cli_logs_in_with_a_credential_without_the_cleartext_plugin(
    mysql_gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = mysql_gateway_factory()
    credential = mysql_credential(gateway)
    args = [
        "mysql",
        "--no-defaults",
        "-h127.0.0.1",
        f"-P{gateway.mysql_port}",
        f"-u{credential['username']}",
        "--ssl",
        f"--ssl-ca={gateway.cert_file}",
        "--ssl-verify-server-cert",
        "--connect-timeout=10",
        "-N",
        "-B",
        "shop",
        "-e",
        "SELECT 6 * 7",
    ]
    env = {**os.environ, "MYSQL_PWD": credential["password"]}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "42"


def test_a_wrong_mysql_password_is_refused_as_1045(
    mysql_gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = mysql_gateway_factory()
    credential = mysql_credential(gateway)
    for plugin in ("caching_sha2_password", "mysql_native_password"):
        with pytest.raises(mysql.connector.errors.Error) as refused:
            gateway.mysql_connector(
                credential["password"] + "x", user=credential["username"], auth_plugin=plugin
            )
        assert refused.value.errno == 1045, refused.value
        assert credential["password"] not in str(refused.value)
    with pytest.raises(pymysql.err.OperationalError) as refused_pymysql:
        pymysql.connect(
            host="127.0.0.1",
            port=gateway.mysql_port,
            user="airlock_0000000000000000",  # no such credential
            password=credential["password"],
            database="shop",
            ssl=tls_without_host_check(gateway),
        )
    assert refused_pymysql.value.args[0] == 1045


def test_a_mysql_credential_reaches_only_its_own_target(
    mysql_gateway_factory: Callable[..., RunningGateway],
    local_mariadb: MariaDb,
    mysql_database: str,
) -> None:
    upstream = local_mariadb.upstream_url(mysql_database)
    gateway = mysql_gateway_factory(
        targets={
            "shop": {"protocol": "mysql", "upstream": upstream},
            "warehouse": {"protocol": "mysql", "upstream": upstream},
        },
        rules=[rule(targets=["shop", "warehouse"], write="allow")],
    )
    credential = mysql_credential(gateway)
    # No database named: the credential's own target.
    conn = gateway.mysql_connector(
        credential["password"], user=credential["username"], database=None
    )
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT DATABASE()")
        assert cursor.fetchone() == (mysql_database,)
    finally:
        conn.close()
    with pytest.raises(mysql.connector.errors.Error) as refused:
        gateway.mysql_connector(
            credential["password"], user=credential["username"], database="warehouse"
        )
    assert refused.value.errno == 1045
    assert 'is for target "shop"' in str(refused.value)
