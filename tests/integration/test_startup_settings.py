"""Startup parameters get the judgement the equivalent SET gets: a `search_path` (as a
parameter, or `-c` in `options`) that `SET search_path` would not be allowed to set
refuses the login with a FATAL naming it; one it would be allowed to set is passed on."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable

import asyncpg
import psycopg
import pytest

from protocols.postgres import messages as m
from tests.support.approvals import rule
from tests.support.gateway import RunningGateway
from tests.support.rawpg import RawPg

GatewayFactory = Callable[..., RunningGateway]


def token_of(gateway: RunningGateway) -> str:
    return gateway.issuer.mint(sub="agent-1", groups=("data-agents",))


def test_psycopg_options_search_path_outside_the_allowlist_refuses_the_login(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory(rules=[rule()])  # admin: deny
    token = token_of(gateway)
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(gateway.dsn(token, options="-c search_path=evil,public"))
    message = str(refused.value)
    assert 'startup parameter "search_path" is refused' in message
    assert "admin" in message
    assert token not in message


def test_a_search_path_startup_parameter_is_judged_like_set(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory(rules=[rule()], allow_insecure_loopback=True)
    token = token_of(gateway)
    with RawPg(gateway.pg_port) as raw:
        raw.startup(search_path="evil")
        assert isinstance(raw.read(), m.AuthenticationCleartextPassword)
        raw.send(m.PasswordMessage.build(token.encode()).raw)
        error = raw.read()
        assert isinstance(error, m.ErrorResponse)
        assert (error.severity, error.code) == ("FATAL", "42501")
        assert 'startup parameter "search_path" is refused' in error.message
        assert "judged as: SET search_path = 'evil'" in error.fields["D"]
        assert raw.is_closed()


def test_quoted_names_and_case_are_read_as_the_server_reads_them(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory(rules=[rule()], allow_insecure_loopback=True)
    token = token_of(gateway)
    # "PUBLIC" quoted is a schema other than public: the server would not fold it.
    with RawPg(gateway.pg_port) as raw:
        raw.startup(search_path='pg_catalog, "PUBLIC"')
        assert isinstance(raw.read(), m.AuthenticationCleartextPassword)
        raw.send(m.PasswordMessage.build(token.encode()).raw)
        error = raw.read()
        assert isinstance(error, m.ErrorResponse)
        assert 'startup parameter "search_path"' in error.message
    # Unquoted PUBLIC is public.
    with RawPg(gateway.pg_port) as raw:
        messages = raw.login(token, search_path="pg_catalog, PUBLIC")
        assert isinstance(messages[-1], m.ReadyForQuery)


def test_an_allowed_search_path_is_passed_on(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory(rules=[rule()])
    token = token_of(gateway)
    dsn = gateway.dsn(token, options="-c search_path=pg_catalog,public -c statement_timeout=5s")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("show search_path").fetchone() == ("pg_catalog,public",)
        assert conn.execute("show statement_timeout").fetchone() == ("5s",)

    async def asyncpg_login() -> str:
        conn = await asyncpg.connect(
            **gateway.asyncpg_params(token), server_settings={"search_path": '"$user", public'}
        )
        try:
            return str(await conn.fetchval("show search_path"))
        finally:
            await conn.close()

    assert asyncio.run(asyncpg_login()) == '"$user", public'


def test_a_rule_that_allows_admin_lets_the_same_search_path_through(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory(rules=[rule(admin="allow")])
    with psycopg.connect(gateway.dsn(token_of(gateway), options="-c search_path=evil")) as conn:
        assert conn.execute("show search_path").fetchone() == ("evil",)


def test_psql_with_pgoptions_gets_the_fatal(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory(rules=[rule()])
    token = token_of(gateway)
    environment = {
        **os.environ,
        "PGPASSWORD": token,
        "PGOPTIONS": "-c search_path=evil",
        "PGSSLMODE": "require",
        "PGCONNECT_TIMEOUT": "10",
    }
    result = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(gateway.pg_port),
            "-U",
            "agent",
            "-d",
            "orders",
            "-c",
            "select 1",
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result
    assert 'FATAL:  startup parameter "search_path" is refused' in result.stderr
    assert token not in result.stderr


def test_other_option_switches_are_dropped_with_a_warning(
    gateway_factory: GatewayFactory,
) -> None:
    gateway = gateway_factory(rules=[rule()], allow_insecure_loopback=True)
    with RawPg(gateway.pg_port) as raw:
        messages = raw.login(token_of(gateway), options="-S 1000 -c TimeZone=UTC")
        [warning] = [msg for msg in messages if isinstance(msg, m.NoticeResponse)]
        assert "-S (in options)" in warning.message
        assert "TimeZone" not in warning.message
        assert isinstance(messages[-1], m.ReadyForQuery)


def test_options_timezone_and_long_form_search_path_reach_the_server(
    gateway_factory: GatewayFactory,
) -> None:
    """What Django and libpq users put in `options`: allowlisted settings run, as their
    SET would under the default rules, with no warning."""
    gateway = gateway_factory(rules=[rule()])
    options = "-c TimeZone=Asia/Tokyo --search_path=pg_catalog,public -c statement_timeout=7s"
    notices: list[str] = []
    with psycopg.connect(gateway.dsn(token_of(gateway), options=options)) as agent:
        agent.add_notice_handler(lambda notice: notices.append(notice.message_primary or ""))
        assert agent.info.parameter_status("TimeZone") == "Asia/Tokyo"
        assert agent.execute("show search_path").fetchone() == ("pg_catalog,public",)
        assert agent.execute("show statement_timeout").fetchone() == ("7s",)
    assert notices == []


def test_options_setting_off_the_allowlist_is_judged_like_its_set(
    gateway_factory: GatewayFactory,
) -> None:
    """`work_mem` is not on the read allowlist: `SET work_mem` is admin, so the setting
    in `options` runs where admin is allowed and refuses the login where it is not
    (never silently dropped)."""
    allowing = gateway_factory(rules=[rule(admin="allow")])
    dsn = allowing.dsn(token_of(allowing), options="-c work_mem=77kB")
    with psycopg.connect(dsn) as agent:
        assert agent.execute("show work_mem").fetchone() == ("77kB",)
    refusing = gateway_factory(rules=[rule()])  # admin: deny
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(refusing.dsn(token_of(refusing), options="-c work_mem=77kB"))
    assert 'startup parameter "work_mem" is refused' in str(refused.value)
    assert "admin" in str(refused.value)


def test_role_in_options_is_never_passed_on(gateway_factory: GatewayFactory) -> None:
    """The gateway chooses the session's role (read and write roles): a `role` or
    `session_authorization` asked for at startup is dropped with a warning even where
    admin is allowed."""
    gateway = gateway_factory(rules=[rule(admin="allow")], allow_insecure_loopback=True)
    with RawPg(gateway.pg_port) as raw:
        messages = raw.login(token_of(gateway), options="-c role=pg_monitor")
        [warning] = [msg for msg in messages if isinstance(msg, m.NoticeResponse)]
        assert "role (in options)" in warning.message
    dsn = gateway.dsn(token_of(gateway), options="-c role=pg_monitor")
    with psycopg.connect(dsn) as agent:
        row = agent.execute("select current_user = session_user").fetchone()
        assert row == (True,)
