"""The gateway's own login to PostgreSQL upstreams, against throwaway clusters.

Agents always log in to the gateway with a JWT; the gateway then logs in to
the target with the credentials in its config. These tests point a gateway at
private clusters that demand SCRAM-SHA-256, MD5 or TLS and check, as an agent
would, that the session works (and really went through that method), and that
a misconfigured upstream gives the agent a clear FATAL 08006 that never
contains the upstream password.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
from psycopg import sql

from tests.support.gateway import RunningGateway
from tests.support.pgcluster import ThrowawayCluster

GatewayFactory = Callable[..., RunningGateway]


def upstream_url(
    cluster: ThrowawayCluster,
    *,
    password: str | None = None,
    sslmode: str = "disable",
    sslrootcert: Path | None = None,
    host: str = "127.0.0.1",
) -> str:
    """The target URL for the cluster's service role, password inline (tests only)."""
    secret = urllib.parse.quote(cluster.password if password is None else password, safe="")
    query = {"sslmode": sslmode}
    if sslrootcert is not None:
        query["sslrootcert"] = str(sslrootcert)
    return (
        f"postgresql://{cluster.role}:{secret}@{host}:{cluster.port}/{cluster.dbname}"
        f"?{urllib.parse.urlencode(query)}"
    )


def agent_token(gateway: RunningGateway) -> str:
    return gateway.issuer.mint(sub="agent-1", groups=("data-agents",))


def run_psql(gateway: RunningGateway, statement: str) -> subprocess.CompletedProcess[str]:
    """psql against the gateway, with no PG* variables from the environment."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    return subprocess.run(
        ["psql", "-X", "-A", "-t", "-d", gateway.dsn(agent_token(gateway)), "-c", statement],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


async def login_error(gateway: RunningGateway) -> Any:
    """The error asyncpg raises when logging in through the gateway (asyncpg keeps SQLSTATEs)."""
    with pytest.raises(asyncpg.PostgresError) as raised:
        await asyncpg.connect(**gateway.asyncpg_params(agent_token(gateway)), timeout=15)
    # asyncpg closes its TLS transport on a failed login without waiting for the TLS
    # shutdown; let that finish before pytest-asyncio closes the loop, or the socket
    # is reported unclosed (and filterwarnings=error fails the test).
    await asyncio.sleep(0.2)
    return raised.value


def login_method_logged(cluster: ThrowawayCluster, method: str) -> bool:
    """Whether the cluster logged a connection of its role authenticated by `method`."""
    log = cluster.log_path.read_text(errors="replace")
    return f'identity="{cluster.role}" method={method}' in log


def assert_session_works(gateway: RunningGateway, cluster: ThrowawayCluster) -> None:
    """Log in as an agent, write a row through the gateway, read it back directly."""
    table = sql.Identifier(f"t_{secrets.token_hex(4)}")
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        row = agent.execute("select current_user, current_database()").fetchone()
        assert row == (cluster.role, cluster.dbname)
        agent.execute(sql.SQL("create table {} (id int primary key, note text)").format(table))
        agent.execute(sql.SQL("insert into {} values (%s, %s)").format(table), (1, "via gateway"))
    with psycopg.connect(cluster.dsn(), autocommit=True) as direct:
        rows = direct.execute(sql.SQL("select id, note from {}").format(table)).fetchall()
        direct.execute(sql.SQL("drop table {}").format(table))
    assert rows == [(1, "via gateway")]


# --------------------------------------------------------------------------
# SCRAM-SHA-256


def test_scram_upstream_login(
    gateway_factory: GatewayFactory, scram_cluster: ThrowawayCluster
) -> None:
    gateway = gateway_factory(upstream=upstream_url(scram_cluster))
    assert_session_works(gateway, scram_cluster)
    assert login_method_logged(scram_cluster, "scram-sha-256")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cluster_fixture", ["scram_cluster", "md5_cluster"])
async def test_wrong_upstream_password_is_a_fatal_08006_without_the_password(
    gateway_factory: GatewayFactory,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    cluster_fixture: str,
) -> None:
    cluster: ThrowawayCluster = request.getfixturevalue(cluster_fixture)
    wrong_password = f"Wr0ng-{secrets.token_urlsafe(12)}"
    gateway = gateway_factory(upstream=upstream_url(cluster, password=wrong_password))
    caplog.set_level(logging.DEBUG)

    error = await login_error(gateway)
    assert isinstance(error, asyncpg.exceptions.ConnectionFailureError)
    assert error.sqlstate == "08006"
    assert error.severity == "FATAL"
    assert "upstream" in error.message
    for text in (error.message, error.detail or "", error.hint or ""):
        assert wrong_password not in text
        assert cluster.password not in text

    shown = run_psql(gateway, "select 1")
    assert shown.returncode == 2
    assert "FATAL:" in shown.stderr
    assert wrong_password not in shown.stderr
    # Nor does the gateway write it to its log.
    assert caplog.records
    assert wrong_password not in caplog.text


# --------------------------------------------------------------------------
# MD5


def test_md5_upstream_login(gateway_factory: GatewayFactory, md5_cluster: ThrowawayCluster) -> None:
    gateway = gateway_factory(upstream=upstream_url(md5_cluster))
    assert_session_works(gateway, md5_cluster)
    assert login_method_logged(md5_cluster, "md5")


# --------------------------------------------------------------------------
# TLS-only upstream


@pytest.mark.parametrize(
    ("sslmode", "host"),
    [("verify-full", "127.0.0.1"), ("verify-full", "localhost"), ("require", "127.0.0.1")],
)
def test_tls_only_upstream_with_tls(
    gateway_factory: GatewayFactory, tls_cluster: ThrowawayCluster, sslmode: str, host: str
) -> None:
    assert tls_cluster.ca_cert_path is not None
    gateway = gateway_factory(
        upstream=upstream_url(
            tls_cluster, sslmode=sslmode, sslrootcert=tls_cluster.ca_cert_path, host=host
        )
    )
    assert_session_works(gateway, tls_cluster)
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        row = agent.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone()
    assert row == (True,)


@pytest.mark.timeout(60)
async def test_tls_only_upstream_refuses_sslmode_disable(
    gateway_factory: GatewayFactory,
    tls_cluster: ThrowawayCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    gateway = gateway_factory(upstream=upstream_url(tls_cluster, sslmode="disable"))
    error = await login_error(gateway)
    assert isinstance(error, asyncpg.exceptions.ConnectionFailureError)
    assert error.sqlstate == "08006"
    assert error.severity == "FATAL"
    assert "could not log in to the upstream" in error.message
    # The server's own reason (which names the service role) goes to the gateway's log,
    # for its operator, not to the agent.
    assert "no pg_hba.conf entry" not in error.message
    assert tls_cluster.role not in error.message
    assert "no pg_hba.conf entry" in caplog.text
    assert "no encryption" in caplog.text
    assert tls_cluster.password not in caplog.text

    shown = run_psql(gateway, "select 1")
    assert shown.returncode == 2
    assert "FATAL:  the gateway could not log in to the upstream" in shown.stderr


@pytest.mark.timeout(60)
async def test_tls_upstream_verify_full_refuses_an_unknown_ca(
    gateway_factory: GatewayFactory, tls_cluster: ThrowawayCluster
) -> None:
    # No sslrootcert: the system trust store does not know the cluster's private CA.
    gateway = gateway_factory(upstream=upstream_url(tls_cluster, sslmode="verify-full"))
    error = await login_error(gateway)
    assert isinstance(error, asyncpg.exceptions.ConnectionFailureError)
    assert error.sqlstate == "08006"
    assert "certificate verify failed" in error.message
