"""Login, refusals and session lifetime through a real gateway, as clients see them.

SQLSTATEs are read with asyncpg (which exposes them on connection errors) or with
the raw client in tests/support/rawpg.py when the point is what goes over the wire.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import asyncpg
import jwt
import psycopg
import pytest

from protocols.postgres import messages as m
from tests.support.gateway import RunningGateway
from tests.support.pgcluster import PgServer
from tests.support.rawpg import RawPg, function_call
from tests.support.waiting import PATIENCE_S, until, wait_until

GatewayFactory = Callable[..., RunningGateway]


async def connect(gateway: RunningGateway, token: str, **kwargs: object) -> asyncpg.Connection:
    return await asyncpg.connect(**gateway.asyncpg_params(token), timeout=10, **kwargs)


@pytest.fixture
def plain_gateway(gateway_factory: GatewayFactory) -> RunningGateway:
    """A gateway that lets loopback clients log in without TLS, for the raw client."""
    return gateway_factory(allow_insecure_loopback=True)


def refused(gateway: RunningGateway, token: str, **parameters: str) -> m.ErrorResponse:
    """Log in with the raw client; the gateway's refusal, after which it closes."""
    with RawPg(gateway.pg_port) as raw:
        raw.startup(**parameters)
        request = raw.read()
        assert isinstance(request, m.AuthenticationCleartextPassword), request
        raw.send(m.PasswordMessage.build(token.encode()).raw)
        error = raw.read()
        assert isinstance(error, m.ErrorResponse), error
        assert error.severity == "FATAL"
        assert raw.read() is None
        return error


def agent_token(gateway: RunningGateway, **kwargs: object) -> str:
    return gateway.issuer.mint(sub="agent-1", groups=("data-agents",), **kwargs)  # type: ignore[arg-type]


# --- tokens


async def test_a_valid_token_logs_in_over_tls_and_queries(gateway: RunningGateway) -> None:
    conn = await connect(gateway, agent_token(gateway))
    try:
        assert await conn.fetchval("select 40 + $1::int", 2) == 42
        assert await conn.fetchval("select current_database()") != "orders"  # the upstream's
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda g: agent_token(g, ttl_s=-600), "expired"),
        (lambda g: agent_token(g, claims_overrides={"aud": "api://other"}), "audience"),
        (lambda g: agent_token(g, claims_overrides={"iss": "https://evil.example/"}), "issuer"),
        (lambda g: agent_token(g, key=g.issuer.attacker_key()), "key"),
        (lambda g: agent_token(g, drop_claims=("groups",)), "groups"),
        (
            lambda g: g.issuer.forge(
                {"alg": "none", "typ": "JWT"}, g.issuer.claims(), signature=b"sig"
            ),
            "algorithm",
        ),
        (lambda g: "not-a-jwt", "malformed"),
        (lambda g: "a" * 20_000, "too large"),
    ],
    ids=[
        "expired",
        "audience",
        "issuer",
        "unknown-key",
        "no-groups",
        "alg-none",
        "garbage",
        "oversized",
    ],
)
def test_bad_tokens_are_refused_with_28P01_and_never_echoed(
    plain_gateway: RunningGateway,
    make_token: Callable[[RunningGateway], str],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = make_token(plain_gateway)
    error = refused(plain_gateway, token)
    assert error.code == "28P01"
    assert reason in error.message.lower()
    for part in token.split("."):
        if len(part) > 8:
            assert part not in error.message
            assert part not in caplog.text


async def test_a_rotated_issuer_key_is_picked_up(gateway: RunningGateway) -> None:
    await (await connect(gateway, agent_token(gateway))).close()
    gateway.issuer.rotate()
    await asyncio.sleep(1.2)  # the test config's refetch cooldown is 1 s
    conn = await connect(gateway, agent_token(gateway))
    await conn.close()


def test_groups_matching_no_rule_are_refused_with_28000(plain_gateway: RunningGateway) -> None:
    token = plain_gateway.issuer.mint(sub="intruder", groups=("marketing",))
    error = refused(plain_gateway, token)
    assert error.code == "28000"
    assert "no rule" in error.message


def test_an_unknown_target_is_refused_with_3D000(plain_gateway: RunningGateway) -> None:
    error = refused(plain_gateway, agent_token(plain_gateway), database="payroll")
    assert error.code == "3D000"


# --- transport


async def test_without_tls_the_token_is_never_asked_for(gateway: RunningGateway) -> None:
    with RawPg(gateway.pg_port) as raw:
        raw.startup()
        answer = raw.read()
        assert isinstance(answer, m.ErrorResponse), answer  # not AuthenticationCleartextPassword
        assert answer.code == "28000"
        assert "TLS" in answer.message
        assert raw.read() is None


def test_psql_sslmode_disable_is_refused(gateway: RunningGateway) -> None:
    with pytest.raises(psycopg.OperationalError, match="only over TLS"):
        psycopg.connect(gateway.dsn(agent_token(gateway), sslmode="disable"))


def test_loopback_without_tls_works_when_the_config_allows_it(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory(allow_insecure_loopback=True)
    with psycopg.connect(gateway.dsn(agent_token(gateway), sslmode="disable")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert conn.pgconn.ssl_in_use is False


def test_verify_full_against_the_generated_certificate(gateway: RunningGateway) -> None:
    dsn = gateway.dsn(
        agent_token(gateway), sslmode="verify-full", sslrootcert=str(gateway.cert_file)
    )
    with psycopg.connect(dsn) as conn:
        assert conn.pgconn.ssl_in_use is True
    with pytest.raises(psycopg.OperationalError, match="certificate"):
        # The system CA store does not know the gateway's self-signed certificate.
        psycopg.connect(
            gateway.dsn(agent_token(gateway), sslmode="verify-full", sslrootcert="system")
        )


def test_data_sent_before_the_tls_handshake_is_refused(gateway: RunningGateway) -> None:
    with RawPg(gateway.pg_port) as raw:
        # SSLRequest and a StartupMessage in one write: the startup would be read as if
        # it had come over TLS (CVE-2021-23214).
        raw.send(m.SSLRequest().raw + m.StartupMessage.build({"user": "agent"}).raw)
        assert raw.read_byte() in (b"", b"E")
        assert raw.is_closed()


def test_gssenc_request_is_declined_and_startup_goes_on(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory(allow_insecure_loopback=True)
    with RawPg(gateway.pg_port) as raw:
        raw.send(m.GSSENCRequest().raw)
        assert raw.read_byte() == b"N"
        messages = raw.login(agent_token(gateway))
        assert isinstance(messages[-1], m.ReadyForQuery)


def test_direct_tls_is_refused_cleanly(gateway: RunningGateway) -> None:
    with RawPg(gateway.pg_port) as raw:
        raw.send(b"\x16\x03\x01\x00\x05hello")  # a TLS ClientHello's first bytes
        assert raw.is_closed()


# --- startup parameters


def test_protocol_3_2_and_pq_options_get_negotiate_protocol_version(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory(allow_insecure_loopback=True)
    with RawPg(gateway.pg_port) as raw:
        startup = m.StartupMessage.build(
            {"user": "agent", "database": "orders", "_pq_.magic": "1"},
            protocol_version=(3 << 16) | 2,
        )
        raw.send(startup.raw)
        negotiate = raw.read()
        assert isinstance(negotiate, m.NegotiateProtocolVersion)
        assert negotiate.newest_minor == 0
        assert negotiate.unrecognized == ("_pq_.magic",)
        assert isinstance(raw.read(), m.AuthenticationCleartextPassword)
        raw.send(m.PasswordMessage.build(agent_token(gateway).encode()).raw)
        assert isinstance(raw.read_until_ready()[-1], m.ReadyForQuery)


def test_replication_connections_are_refused(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory(allow_insecure_loopback=True)
    with RawPg(gateway.pg_port) as raw:
        raw.startup(replication="database")
        error = raw.read()
        assert isinstance(error, m.ErrorResponse)
        assert error.code == "0A000"
        assert "replication" in error.message


def test_options_settings_reach_the_upstream_where_their_set_is_allowed(
    gateway: RunningGateway,
) -> None:
    """This gateway's rule allows every class, so the admin SETs these amount to are
    allowed too (tests/integration/test_startup_settings.py: refused where not)."""
    dsn = gateway.dsn(
        agent_token(gateway),
        options="-c default_transaction_read_only=on -c work_mem=77kB",
        application_name="agent-app",
    )
    with psycopg.connect(dsn) as conn:
        assert conn.execute("show default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("show work_mem").fetchone() == ("77kB",)
        assert conn.execute("show application_name").fetchone() == ("agent-app",)


def test_dropped_parameters_are_named_in_a_warning(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory(allow_insecure_loopback=True)
    with RawPg(gateway.pg_port) as raw:
        messages = raw.login(agent_token(gateway), options="-c role=postgres", jit="off")
        warnings = [msg for msg in messages if isinstance(msg, m.NoticeResponse)]
        assert len(warnings) == 1
        assert "role (in options)" in warnings[0].message
        assert "jit" not in warnings[0].message  # judged as its SET, allowed here


def test_a_client_encoding_that_can_hide_quotes_is_refused(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory(allow_insecure_loopback=True)
    with RawPg(gateway.pg_port) as raw:
        raw.startup(client_encoding="SJIS")
        error = raw.read()
        assert isinstance(error, m.ErrorResponse)
        assert error.code == "0A000"


def test_clients_see_the_upstream_backend_pid_in_their_key(gateway: RunningGateway) -> None:
    with psycopg.connect(gateway.dsn(agent_token(gateway))) as conn:
        real_pid = conn.execute("select pg_backend_pid()").fetchone()
        assert real_pid == (conn.info.backend_pid,)


# --- session lifetime and failures


async def test_session_ttl_ends_the_session_with_57P01(gateway_factory: GatewayFactory) -> None:
    rules = [
        {
            "groups": ["data-agents"],
            "targets": ["orders"],
            "write": "allow",
            "unknown": "allow",
            "session_ttl": "1s",
        }
    ]
    gateway = gateway_factory(rules=rules)
    conn = await connect(gateway, agent_token(gateway))
    assert await conn.fetchval("select 1") == 1
    # asyncpg reads the gateway's FATAL as it arrives and marks the connection closed.
    await until(conn.is_closed, PATIENCE_S, "the gateway to end the session")
    with pytest.raises((asyncpg.AdminShutdownError, asyncpg.InterfaceError)):
        await conn.fetchval("select 1")
    assert conn.is_closed()


def test_session_ttl_message_says_why(gateway_factory: GatewayFactory) -> None:
    rules = [
        {
            "groups": ["data-agents"],
            "targets": ["orders"],
            "write": "allow",
            "unknown": "allow",
            "session_ttl": "1s",
        }
    ]
    gateway = gateway_factory(rules=rules, allow_insecure_loopback=True)
    with RawPg(gateway.pg_port) as raw:
        raw.login(agent_token(gateway))
        # Nothing sent: the gateway speaks first, to warn (the end is under 5 minutes
        # away from the start), and when time is up.
        warning = raw.read()
        assert isinstance(warning, m.NoticeResponse)
        assert "session_ttl reached" in warning.message
        error = raw.read()
        assert isinstance(error, m.ErrorResponse)
        assert (error.severity, error.code) == ("FATAL", "57P01")
        assert "session_ttl" in error.message
        assert raw.read() is None


def test_session_ttl_during_a_query_ends_it_and_stops_it_upstream(
    gateway_factory: GatewayFactory, local_pg: PgServer, pg_database: str
) -> None:
    rules = [
        {
            "groups": ["data-agents"],
            "targets": ["orders"],
            "write": "allow",
            "ddl": "allow",
            "admin": "allow",
            "unknown": "allow",  # pg_sleep is not on the read-safe allowlist
            "session_ttl": "1s",
        }
    ]
    gateway = gateway_factory(rules=rules)
    started = time.monotonic()
    with (
        psycopg.connect(gateway.dsn(agent_token(gateway), application_name="ttl-sleeper")) as agent,
        pytest.raises(psycopg.OperationalError) as ended,
    ):
        agent.execute("select pg_sleep(20)")
    assert "session_ttl" in str(ended.value)
    assert time.monotonic() - started < 10
    # The backend does not sleep on for a session that has ended.
    with psycopg.connect(local_pg.dsn(pg_database), autocommit=True) as admin:
        wait_until(
            lambda: (
                not admin.execute(
                    "select 1 from pg_stat_activity where application_name = 'ttl-sleeper'"
                    " and state = 'active'"
                ).fetchone()
            ),
            10,  # well before the 20 s pg_sleep would end by itself
            "pg_sleep to stop upstream",
        )


def test_an_expiring_token_ends_the_session(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory(allow_insecure_loopback=True)
    token = agent_token(gateway, ttl_s=4)
    # A real expiry, end to end: the session's deadline is an event-loop timer, which no
    # injected clock moves. The window is the token's own `exp`, not the time since the
    # login, which a busy machine can stretch.
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    with RawPg(gateway.pg_port) as raw:
        raw.login(token)
        assert time.time() < expires_at, "the login took longer than the token lived"
        warning = raw.read()
        assert isinstance(warning, m.NoticeResponse)
        assert "its token expires" in warning.message
        error = raw.read()
        ended_at = time.time()
        assert isinstance(error, m.ErrorResponse)
        assert "token expired" in error.message
        # Not before the token expired (a timer may fire a hair early), and soon after.
        assert expires_at - 0.1 < ended_at < expires_at + 5.0


def test_function_call_is_refused_and_the_session_stays_usable(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory(allow_insecure_loopback=True)
    with RawPg(gateway.pg_port) as raw:
        raw.login(agent_token(gateway))
        raw.send(function_call())
        reply = raw.read_until_ready()
        assert isinstance(reply[0], m.ErrorResponse)
        assert reply[0].code == "0A000"
        raw.send(m.Query.build("select 7").raw)
        answer = raw.read_until_ready()
        assert isinstance(answer[-1], m.ReadyForQuery)
        assert any(isinstance(msg, m.CommandComplete) for msg in answer)


@pytest.mark.parametrize(
    ("garbage", "sqlstate"),
    [
        (b"\x01\x00\x00\x00\x08abcd", "08P01"),  # unknown message type
        (b"Q\x00\x00\x00\x02", "08P01"),  # impossible length
        (b"Q" + (512 * 1024 * 1024).to_bytes(4, "big"), "54000"),  # announces 512 MiB
    ],
    ids=["unknown-type", "bad-length", "oversized"],
)
def test_a_malformed_message_ends_only_that_session(
    gateway_factory: GatewayFactory, garbage: bytes, sqlstate: str
) -> None:
    gateway = gateway_factory(allow_insecure_loopback=True)
    token = agent_token(gateway)
    with (
        psycopg.connect(gateway.dsn(token, sslmode="disable")) as bystander,
        RawPg(gateway.pg_port) as raw,
    ):
        raw.login(token)
        raw.send(garbage)
        error = raw.read()
        assert isinstance(error, m.ErrorResponse)
        assert (error.severity, error.code) == ("FATAL", sqlstate)
        assert raw.read() is None
        assert bystander.execute("select 'still here'").fetchone() == ("still here",)


def test_an_upstream_that_dies_ends_the_session_and_the_gateway_serves_on(
    gateway: RunningGateway, local_pg: PgServer, pg_database: str
) -> None:
    token = agent_token(gateway)
    with psycopg.connect(gateway.dsn(token, application_name="doomed")) as doomed:
        with psycopg.connect(local_pg.dsn(pg_database), autocommit=True) as admin:
            admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity"
                " where application_name = 'doomed'"
            )
        with pytest.raises(psycopg.OperationalError):
            doomed.execute("select 1")
    with psycopg.connect(gateway.dsn(token)) as fresh:
        assert fresh.execute("select 1").fetchone() == (1,)
    gateway.wait_for_no_sessions(5)


def test_a_client_that_vanishes_mid_query_stops_the_upstream_query(
    gateway_factory: GatewayFactory, local_pg: PgServer, pg_database: str
) -> None:
    gateway = gateway_factory(allow_insecure_loopback=True)

    def sleeping() -> int:
        with psycopg.connect(local_pg.dsn(pg_database), autocommit=True) as admin:
            row = admin.execute(
                "select count(*) from pg_stat_activity where query = %s and state = 'active'",
                (sql,),
            ).fetchone()
            assert row is not None
            return int(row[0])

    sql = f"select pg_sleep(60) -- vanishing {uuid.uuid4().hex}"
    raw = RawPg(gateway.pg_port)
    raw.login(agent_token(gateway))
    raw.send(m.Query.build(sql).raw)
    wait_until(sleeping, PATIENCE_S, "pg_sleep to run upstream")
    raw.close()
    # Well before the 60 s pg_sleep would end by itself.
    wait_until(lambda: sleeping() == 0, PATIENCE_S, "the vanished client's query to stop")


def test_health_endpoint_answers(gateway: RunningGateway) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{gateway.api_url}/healthz", timeout=5) as response:  # noqa: S310
        assert response.status == 200
        assert b'"ok"' in response.read()
