"""Logins are bounded: a connection that does not finish logging in within
limits.login_timeout is closed with an error, and pending logins are capped per source
address and in total, with refusals counted on /metrics. Both protocols.

Linux takes any 127.x.y.z as loopback, so sockets bound to 127.0.0.2 and 127.0.0.3
stand in for other clients' addresses.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pymysql
import pytest

from proxy.core.listener import Listener
from tests.support.gateway import RunningGateway
from tests.support.waiting import PATIENCE_S, wait_until


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def connect_from(
    sockets: list[socket.socket], port: int, source: str = "127.0.0.1"
) -> socket.socket:
    """A raw TCP connection to the gateway from `source` that sends nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sockets.append(sock)
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the gateway sends until it closes (socket.timeout if it never does)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def listener_of(gateway: RunningGateway, protocol: str) -> Listener[Any]:
    listener = gateway.gateway.postgres if protocol == "postgres" else gateway.gateway.mysql
    assert listener is not None
    return listener


def wait_for_pending(gateway: RunningGateway, protocol: str, count: int) -> None:
    """Until the listener counts exactly `count` connections logging in."""
    listener = listener_of(gateway, protocol)
    wait_until(
        lambda: gateway.call(lambda: listener.pending_logins.total) == count,
        PATIENCE_S,
        f"exactly {count} logins pending",
        every_s=0.02,
    )


def refusals(gateway: RunningGateway, protocol: str, reason: str) -> str:
    return gateway.metrics()[
        f'airlock_login_refusals_total{{protocol="{protocol}",reason="{reason}"}}'
    ]


def pg_error_fields(raw: bytes) -> dict[str, str]:
    """The fields of the one ErrorResponse `raw` holds."""
    assert raw[:1] == b"E", raw
    length = int.from_bytes(raw[1:5], "big")
    assert len(raw) == 1 + length, raw
    fields = raw[5 : 1 + length].rstrip(b"\0").split(b"\0")
    return {f[:1].decode(): f[1:].decode() for f in fields}


def mysql_packets(raw: bytes) -> list[tuple[int, bytes]]:
    """(sequence id, payload) of each packet in `raw`."""
    packets = []
    while raw:
        length = int.from_bytes(raw[:3], "little")
        packets.append((raw[3], raw[4 : 4 + length]))
        raw = raw[4 + length :]
    return packets


def mysql_error(payload: bytes) -> tuple[int, str]:
    assert payload[:1] == b"\xff", payload
    return int.from_bytes(payload[1:3], "little"), payload[9:].decode()


def pg_login_works(gateway: RunningGateway) -> None:
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    with psycopg.connect(gateway.dsn(token)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --- the login timeout


def test_pg_a_connection_that_sends_nothing_is_closed_at_the_login_timeout(
    gateway_factory: Callable[..., RunningGateway], sockets: list[socket.socket]
) -> None:
    gateway = gateway_factory(limits={"login_timeout": "300ms"})
    started = time.monotonic()
    silent = connect_from(sockets, gateway.pg_port)
    fields = pg_error_fields(read_to_end(silent))
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 5, elapsed
    assert fields["S"] == "FATAL"
    assert fields["C"] == "08006"
    assert fields["M"] == "login not completed within 0.3s"
    assert refusals(gateway, "postgres", "timeout") == "1"
    wait_for_pending(gateway, "postgres", 0)
    pg_login_works(gateway)  # a prompt login is not affected


def test_pg_a_login_stalled_after_its_startup_message_is_closed_too(
    gateway_factory: Callable[..., RunningGateway], sockets: list[socket.socket]
) -> None:
    gateway = gateway_factory(limits={"login_timeout": "300ms"}, allow_insecure_loopback=True)
    client = connect_from(sockets, gateway.pg_port)
    body = (3 << 16).to_bytes(4, "big") + b"user\0agent\0database\0orders\0\0"
    client.sendall((len(body) + 4).to_bytes(4, "big") + body)
    raw = read_to_end(client)  # the password request, then the error: no password came
    assert raw[:1] == b"R"
    fields = pg_error_fields(raw[1 + int.from_bytes(raw[1:5], "big") :])
    assert (fields["S"], fields["C"]) == ("FATAL", "08006")
    assert refusals(gateway, "postgres", "timeout") == "1"


def test_mysql_a_connection_that_sends_nothing_is_closed_at_the_login_timeout(
    mysql_gateway_factory: Callable[..., RunningGateway], sockets: list[socket.socket]
) -> None:
    gateway = mysql_gateway_factory(limits={"login_timeout": "300ms"})
    silent = connect_from(sockets, gateway.mysql_port)
    greeting, error = mysql_packets(read_to_end(silent))
    assert greeting[1][:1] == b"\x0a"  # HandshakeV10
    assert mysql_error(error[1]) == (1159, "login not completed within 0.3s")
    assert refusals(gateway, "mysql", "timeout") == "1"


# --- the caps on pending logins


def test_pg_the_per_address_cap_refuses_the_next_login_from_that_address_only(
    gateway_factory: Callable[..., RunningGateway], sockets: list[socket.socket]
) -> None:
    gateway = gateway_factory(
        limits={"max_pending_logins_per_address": 2, "max_pending_logins": 10}
    )
    waiting = [connect_from(sockets, gateway.pg_port, "127.0.0.2") for _ in range(2)]
    wait_for_pending(gateway, "postgres", 2)
    refused = connect_from(sockets, gateway.pg_port, "127.0.0.2")
    fields = pg_error_fields(read_to_end(refused))
    assert (fields["S"], fields["C"]) == ("FATAL", "53300")
    assert "too many connections from your address" in fields["M"]
    assert refusals(gateway, "postgres", "per_address") == "1"
    # Another address logs in as usual while 127.0.0.2's logins wait.
    pg_login_works(gateway)
    # One of the waiting logins ends: 127.0.0.2 is admitted again.
    waiting[0].close()
    wait_for_pending(gateway, "postgres", 1)
    connect_from(sockets, gateway.pg_port, "127.0.0.2")
    wait_for_pending(gateway, "postgres", 2)
    assert refusals(gateway, "postgres", "per_address") == "1"
    assert gateway.metrics()['airlock_pending_logins{protocol="postgres"}'] == "2"


def test_pg_a_driver_over_the_cap_gets_a_clear_error(
    gateway_factory: Callable[..., RunningGateway], sockets: list[socket.socket]
) -> None:
    gateway = gateway_factory(
        limits={"max_pending_logins_per_address": 1}, allow_insecure_loopback=True
    )
    connect_from(sockets, gateway.pg_port)
    wait_for_pending(gateway, "postgres", 1)
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(gateway.dsn(token, sslmode="disable"))
    assert "too many connections from your address are logging in" in str(refused.value)
    assert token not in str(refused.value)
    # A client that asked for TLS is refused too; libpq (since the fix for CVE-2024-10977)
    # does not show a message that arrives before the TLS handshake.
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(gateway.dsn(token, sslmode="require"))
    assert "error response during SSL exchange" in str(refused.value)
    assert refusals(gateway, "postgres", "per_address") == "2"


def test_pg_the_total_cap_refuses_every_address_until_a_login_finishes(
    gateway_factory: Callable[..., RunningGateway], sockets: list[socket.socket]
) -> None:
    gateway = gateway_factory(limits={"max_pending_logins_per_address": 2, "max_pending_logins": 3})
    waiting = [connect_from(sockets, gateway.pg_port, "127.0.0.2") for _ in range(2)]
    waiting.append(connect_from(sockets, gateway.pg_port, "127.0.0.3"))
    wait_for_pending(gateway, "postgres", 3)
    refused = connect_from(sockets, gateway.pg_port, "127.0.0.4")
    fields = pg_error_fields(read_to_end(refused))
    assert (fields["S"], fields["C"]) == ("FATAL", "53300")
    assert "too many connections are logging in to the gateway" in fields["M"]
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(gateway.dsn(token))
    assert refusals(gateway, "postgres", "total") == "2"
    waiting[2].close()
    wait_for_pending(gateway, "postgres", 2)
    pg_login_works(gateway)
    assert refusals(gateway, "postgres", "total") == "2"
    assert refusals(gateway, "postgres", "per_address") == "0"


def test_mysql_the_caps_refuse_with_too_many_connections(
    mysql_gateway_factory: Callable[..., RunningGateway], sockets: list[socket.socket]
) -> None:
    gateway = mysql_gateway_factory(
        limits={"max_pending_logins_per_address": 1, "max_pending_logins": 2}
    )
    waiting = connect_from(sockets, gateway.mysql_port, "127.0.0.2")
    wait_for_pending(gateway, "mysql", 1)
    refused = connect_from(sockets, gateway.mysql_port, "127.0.0.2")
    [(sequence, payload)] = mysql_packets(read_to_end(refused))
    assert sequence == 0  # in place of the greeting, as the server's own "Too many connections"
    errno, message = mysql_error(payload)
    assert errno == 1040
    assert "too many connections from your address" in message
    # Another address logs in while 127.0.0.2's login waits.
    token = gateway.issuer.mint(sub="agent-1", groups=("data-agents",))
    with gateway.pymysql(token) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    # Total cap: 127.0.0.2 and 127.0.0.3 waiting, a driver from 127.0.0.1 is refused.
    connect_from(sockets, gateway.mysql_port, "127.0.0.3")
    wait_for_pending(gateway, "mysql", 2)
    with pytest.raises(pymysql.err.OperationalError) as total:
        gateway.pymysql(token)
    assert total.value.args[0] == 1040
    assert "too many connections are logging in" in total.value.args[1]
    waiting.close()
    wait_for_pending(gateway, "mysql", 1)
    gateway.pymysql(token).close()
    assert refusals(gateway, "mysql", "per_address") == "1"
    assert refusals(gateway, "mysql", "total") == "1"
