"""The local MariaDB (127.0.0.1:3306, root with an empty password) for integration tests.

Each run makes a service account of its own (what the gateway logs in as, with
mysql_native_password and a random password) and each test a throwaway
database that only that account may use; both are dropped afterwards. A
MariaDB that does not answer fails the tests that need it: it is part of the
machine, and a skip would count as a pass.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

from proxy.core.tls import ensure_self_signed
from tests.support.gateway import RunningGateway, gateway_document, start_gateway
from tests.support.issuer import TestIssuer
from tests.support.waiting import wait_until

HOST, PORT = "127.0.0.1", 3306


@dataclass(frozen=True)
class MariaDb:
    host: str
    port: int
    service_user: str
    service_password: str

    def root(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
        return pymysql.connect(
            host=self.host, port=self.port, user="root", password="", database=database,
            autocommit=True,
        )  # fmt: skip

    def upstream_url(self, database: str) -> str:
        return (
            f"mysql://{self.service_user}:{self.service_password}@{self.host}:{self.port}"
            f"/{database}?sslmode=disable"
        )


@pytest.fixture(scope="session")
def local_mariadb() -> Iterator[MariaDb]:
    try:
        root = pymysql.connect(host=HOST, port=PORT, user="root", password="", autocommit=True)
    except pymysql.err.OperationalError as exc:
        pytest.fail(f"MariaDB at {HOST}:{PORT} is not reachable as root: {exc}")
    user = f"airlock_svc_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    with root.cursor() as cursor:
        cursor.execute(
            f"CREATE USER '{user}'@'%%' IDENTIFIED VIA mysql_native_password USING PASSWORD(%s)",
            (password,),
        )
    try:
        yield MariaDb(HOST, PORT, user, password)
    finally:
        with root.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        root.close()


@pytest.fixture
def mysql_database(local_mariadb: MariaDb) -> Iterator[str]:
    """A throwaway database with an `accounts` table, for the run's service account."""
    name = f"airlock_test_{secrets.token_hex(5)}"
    with local_mariadb.root() as root, root.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
        cursor.execute(f"GRANT ALL ON {name}.* TO '{local_mariadb.service_user}'@'%'")
        cursor.execute(f"CREATE TABLE {name}.accounts (id INT PRIMARY KEY, balance INT)")
        cursor.execute(f"INSERT INTO {name}.accounts SELECT seq, 100 FROM {name}.seq_1_to_60")  # noqa: S608
    try:
        yield name
    finally:
        with local_mariadb.root() as root, root.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
def mysql_gateway_factory(
    issuer: TestIssuer, local_mariadb: MariaDb, mysql_database: str, tmp_path: Path
) -> Iterator[Callable[..., RunningGateway]]:
    """Gateways with a MySQL listener and target `shop` = the test's database."""
    running: list[RunningGateway] = []

    def make(**overrides: Any) -> RunningGateway:
        document = gateway_document(
            issuer,
            tmp_path / f"mysql-data{len(running)}",
            local_mariadb.upstream_url(mysql_database),
        )
        document["listen"] = {"postgres": None, "mysql": "127.0.0.1:0", "api": "127.0.0.1:0"}
        document["targets"] = {
            "shop": {"protocol": "mysql", "upstream": local_mariadb.upstream_url(mysql_database)}
        }
        document["rules"][0]["targets"] = ["shop"]
        document.update(overrides)
        gateway = start_gateway(issuer, document, tmp_path / "airlock.yaml")
        running.append(gateway)
        return gateway

    yield make
    for gateway in running:
        gateway.stop()


@pytest.fixture
def mysql_gateway(mysql_gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return mysql_gateway_factory()


@dataclass(frozen=True)
class TlsMariaDb:
    """A throwaway MariaDB server of our own, with TLS (the machine's has none)."""

    port: int
    cert_file: Path
    service_user: str
    service_password: str
    database: str

    def upstream_url(self, sslmode: str, rootcert: Path | None = None) -> str:
        url = (
            f"mysql://{self.service_user}:{self.service_password}@127.0.0.1:{self.port}"
            f"/{self.database}?sslmode={sslmode}"
        )
        return url + (f"&sslrootcert={rootcert}" if rootcert is not None else "")


@pytest.fixture(scope="module")
def tls_mariadb() -> Iterator[TlsMariaDb]:
    """mariadb-install-db into a temp dir, then mariadbd on a free loopback port with a
    self-signed certificate; as the `mysql` OS user when we are root (mariadbd refuses
    root). Its service account may only log in over TLS (REQUIRE SSL)."""
    # In /tmp itself: pytest's own temp directories are private to this user, and the
    # server runs as another one.
    base = Path(tempfile.mkdtemp(prefix="airlock-mariadb-"))
    cert, key = ensure_self_signed(base / "tls")  # names 127.0.0.1, for verify-full
    run_as: list[str] = []
    if os.geteuid() == 0:
        for path in (base, base / "tls", key, cert):
            shutil.chown(path, "mysql", "mysql")
        run_as = ["runuser", "-u", "mysql", "--"]
    data = base / "data"
    installed = subprocess.run(
        [*run_as, "mariadb-install-db", "--no-defaults", f"--datadir={data}",
         "--auth-root-authentication-method=normal", "--skip-test-db"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = subprocess.Popen(
        [*run_as, "/usr/sbin/mariadbd", "--no-defaults", f"--datadir={data}",
         f"--port={port}", "--bind-address=127.0.0.1", f"--socket={base / 'sock'}",
         f"--pid-file={base / 'pid'}", f"--ssl-cert={cert}", f"--ssl-key={key}",
         "--skip-name-resolve"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def started() -> pymysql.Connection[Any] | None:
            try:
                return pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
            except pymysql.err.OperationalError:
                assert server.poll() is None, "the throwaway mariadbd exited"
                return None

        root = wait_until(started, 60, "the throwaway mariadbd to start", every_s=0.2)
        user, password, database = "airlock_svc", secrets.token_urlsafe(18), "shop_tls"
        with root, root.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {database}")
            cursor.execute(
                f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s REQUIRE SSL",  # TLS or nothing
                (password,),
            )
            cursor.execute(f"GRANT ALL ON {database}.* TO '{user}'@'%'")
        yield TlsMariaDb(port, cert, user, password, database)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


async def aiomysql_close(conn: Any) -> None:
    """QUIT, then wait until the TLS transport has really closed (aiomysql's
    ensure_closed does not wait, and a socket left to the garbage collector warns)."""
    writer = conn._writer
    await conn.ensure_closed()
    if writer is not None:
        await asyncio.wait_for(writer.wait_closed(), 5)
