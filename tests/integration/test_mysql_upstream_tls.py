"""The gateway's own connection to a MySQL upstream over TLS, per sslmode.

The machine's MariaDB has no TLS, so these tests start a throwaway MariaDB with a
self-signed certificate (tests/support/mariadb.py, `tls_mariadb`) whose service account
may log in only over TLS (REQUIRE SSL): a login that works is a login over TLS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pymysql
import pytest

from tests.support.approvals import agent_token
from tests.support.gateway import RunningGateway
from tests.support.mariadb import TlsMariaDb


def through(gateway: RunningGateway) -> pymysql.Connection[Any]:
    return gateway.pymysql(agent_token(gateway), autocommit=True)


def gateway_to(factory: Callable[..., RunningGateway], url: str) -> RunningGateway:
    return factory(targets={"shop": {"protocol": "mysql", "upstream": url}})


@pytest.mark.parametrize("sslmode", ["require", "verify-full"])
def test_the_upstream_login_runs_over_tls(
    mysql_gateway_factory: Callable[..., RunningGateway], tls_mariadb: TlsMariaDb, sslmode: str
) -> None:
    rootcert = tls_mariadb.cert_file if sslmode == "verify-full" else None
    gateway = gateway_to(mysql_gateway_factory, tls_mariadb.upstream_url(sslmode, rootcert))
    with through(gateway) as conn, conn.cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        [(_, cipher)] = cursor.fetchall()
        assert cipher  # the gateway's upstream session is encrypted
        cursor.execute("SELECT CURRENT_USER()")
        assert cursor.fetchone()[0].startswith(tls_mariadb.service_user + "@")


def test_a_plaintext_upstream_login_is_what_the_server_refuses(
    mysql_gateway_factory: Callable[..., RunningGateway], tls_mariadb: TlsMariaDb
) -> None:
    gateway = gateway_to(mysql_gateway_factory, tls_mariadb.upstream_url("disable"))
    with pytest.raises(pymysql.err.OperationalError) as refused:
        through(gateway)
    errno, message = refused.value.args
    assert errno == 2013  # the gateway could not open the upstream session
    assert "upstream" in message
    assert tls_mariadb.service_password not in message


def test_verify_full_refuses_a_server_whose_certificate_it_cannot_verify(
    mysql_gateway_factory: Callable[..., RunningGateway],
    tls_mariadb: TlsMariaDb,
) -> None:
    # Trust only the gateway's own certificate: the server's is not signed by it.
    gateway = mysql_gateway_factory()
    url = tls_mariadb.upstream_url("verify-full", gateway.cert_file)
    strict = gateway_to(mysql_gateway_factory, url)
    with pytest.raises(pymysql.err.OperationalError) as refused:
        through(strict)
    assert refused.value.args[0] == 2013
