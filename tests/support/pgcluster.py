"""Throwaway PostgreSQL databases and clusters for tests.

Two kinds of fixture live here:

- ``local_pg`` / ``pg_database`` / ``session_pg_database``: the shared server
  at 127.0.0.1:5432 (or ``AIRLOCK_TEST_PG_HOST``/``_PORT``/``_USER``/``_PASSWORD``)
  and throwaway databases on it. A missing server fails the run, never skips it.
- ``ThrowawayCluster`` and the session fixtures built on it (``pg_cluster_factory``,
  ``scram_cluster``, ``md5_cluster``, ``tls_cluster``): a private cluster made
  with ``initdb`` in a temp dir, with a chosen pg_hba auth method for TCP from
  127.0.0.1 and optional TLS, for the authentication paths the shared trust-auth
  server cannot exercise.

initdb refuses to run as root, so when the tests run as root every server
binary is run as the ``postgres`` OS user (``runuser``) and the temp dir is
handed to that user.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import ipaddress
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg import sql

AuthMethod = Literal["trust", "md5", "scram-sha-256", "password"]

_AUTH_METHODS: frozenset[str] = frozenset({"trust", "md5", "scram-sha-256", "password"})
_SERVER_OS_USER = "postgres"
_DEFAULT_BINDIR = "/usr/lib/postgresql/15/bin"
_START_TIMEOUT_S = 30
_CONNECT_TIMEOUT_S = 5


def _dsn_value(value: str) -> str:
    """Quote a libpq keyword/value DSN value when it needs it."""
    if value and not any(ch in value for ch in " '\\\t\n="):
        return value
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def make_dsn(**params: str | int | None) -> str:
    """Build a libpq keyword/value DSN, skipping parameters that are None."""
    return " ".join(
        f"{key}={_dsn_value(str(value))}" for key, value in params.items() if value is not None
    )


@dataclass(frozen=True)
class PgServer:
    """Where a PostgreSQL server listens and how to reach it as a superuser."""

    host: str
    port: int
    superuser: str
    password: str | None

    def dsn(
        self,
        dbname: str,
        user: str | None = None,
        password: str | None = None,
        **params: str,
    ) -> str:
        """A libpq keyword DSN for ``dbname``, as the superuser unless ``user`` is given."""
        if user is None:
            user = self.superuser
            password = self.password if password is None else password
        return make_dsn(
            host=self.host,
            port=self.port,
            dbname=dbname,
            user=user,
            password=password,
            **params,
        )


# --------------------------------------------------------------------------
# The shared local server and throwaway databases on it.


def local_server_from_env() -> PgServer:
    """The shared test server, from ``AIRLOCK_TEST_PG_*`` with local defaults."""
    return PgServer(
        host=os.environ.get("AIRLOCK_TEST_PG_HOST", "127.0.0.1"),
        port=int(os.environ.get("AIRLOCK_TEST_PG_PORT", "5432")),
        superuser=os.environ.get("AIRLOCK_TEST_PG_USER", "postgres"),
        password=os.environ.get("AIRLOCK_TEST_PG_PASSWORD") or None,
    )


def create_database(server: PgServer) -> str:
    """Create a database with a unique ``airlock_test_<hex>`` name and return the name."""
    dbname = f"airlock_test_{secrets.token_hex(6)}"
    with psycopg.connect(
        server.dsn("postgres", connect_timeout=str(_CONNECT_TIMEOUT_S)), autocommit=True
    ) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return dbname


def drop_database(server: PgServer, dbname: str) -> None:
    """Drop ``dbname``, ending any sessions still connected to it."""
    with psycopg.connect(
        server.dsn("postgres", connect_timeout=str(_CONNECT_TIMEOUT_S)), autocommit=True
    ) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


@contextlib.contextmanager
def throwaway_database(server: PgServer) -> Iterator[str]:
    """A database that exists for the duration of the ``with`` block."""
    dbname = create_database(server)
    try:
        yield dbname
    finally:
        drop_database(server, dbname)


@pytest.fixture(scope="session")
def local_pg() -> PgServer:
    """The shared PostgreSQL server; fails the run if it does not answer."""
    server = local_server_from_env()
    try:
        with psycopg.connect(
            server.dsn("postgres", connect_timeout=str(_CONNECT_TIMEOUT_S)), autocommit=True
        ) as probe:
            probe.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL at {server.host}:{server.port} (user {server.superuser!r}) "
            f"did not answer: {exc}. Start it, or point AIRLOCK_TEST_PG_HOST/"
            "AIRLOCK_TEST_PG_PORT/AIRLOCK_TEST_PG_USER (and AIRLOCK_TEST_PG_PASSWORD) at one.",
            pytrace=False,
        )
    return server


@pytest.fixture
def pg_database(local_pg: PgServer) -> Iterator[str]:
    """A database on ``local_pg`` for one test, dropped WITH (FORCE) afterwards."""
    with throwaway_database(local_pg) as dbname:
        yield dbname


@pytest.fixture(scope="session")
def session_pg_database(local_pg: PgServer) -> Iterator[str]:
    """A database on ``local_pg`` shared by the whole session, dropped at the end."""
    with throwaway_database(local_pg) as dbname:
        yield dbname


# --------------------------------------------------------------------------
# Private clusters made with initdb.


def _pg_bindir() -> Path:
    """Directory holding initdb/pg_ctl: ``AIRLOCK_TEST_PG_BINDIR``, else PG 15, else newest."""
    configured = os.environ.get("AIRLOCK_TEST_PG_BINDIR")
    if configured:
        return Path(configured)
    default = Path(_DEFAULT_BINDIR)
    if (default / "initdb").exists():
        return default
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    for candidate in reversed(candidates):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("no initdb found; set AIRLOCK_TEST_PG_BINDIR")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class _Certificates:
    ca_cert_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes


def _make_certificates(hostnames: tuple[str, ...] = ("127.0.0.1", "localhost")) -> _Certificates:
    """A self-signed CA and a server certificate it signed for ``hostnames``."""
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Airlock test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    alt_names: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _Certificates(
        ca_cert_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        server_cert_pem=server_cert.public_bytes(serialization.Encoding.PEM),
        server_key_pem=server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


class ThrowawayCluster:
    """A private PostgreSQL cluster in a temp dir, removed on exit.

    TCP connections from 127.0.0.1 authenticate with ``auth_method``; with
    ``tls`` the server has ssl=on and a certificate from a fresh CA
    (``ca_cert_path``, valid for verify-full against 127.0.0.1 and localhost);
    with ``hostssl_only`` plain TCP connections find no pg_hba entry and are
    refused. ``role`` (LOGIN, password ``password``) owns database ``dbname``.
    The superuser ``postgres`` has password ``superuser_password`` over TCP and
    trust over the cluster's private Unix socket in ``socket_dir``.
    """

    host = "127.0.0.1"
    superuser = "postgres"

    def __init__(
        self,
        auth_method: AuthMethod = "scram-sha-256",
        *,
        tls: bool = False,
        hostssl_only: bool = False,
        role: str = "airlock_svc",
        dbname: str = "app",
        password: str | None = None,
        bindir: Path | None = None,
    ) -> None:
        if auth_method not in _AUTH_METHODS:
            raise ValueError(f"unknown auth method {auth_method!r}")
        if hostssl_only and not tls:
            raise ValueError("hostssl_only needs tls=True")
        self.auth_method: AuthMethod = auth_method
        self.tls = tls
        self.hostssl_only = hostssl_only
        self.role = role
        self.dbname = dbname
        self.password = password if password is not None else secrets.token_urlsafe(18)
        self.superuser_password = secrets.token_urlsafe(18)
        self.bindir = bindir if bindir is not None else _pg_bindir()
        self.port = 0
        self._base_dir: Path | None = None
        self._running = False
        self.startup_s = 0.0

    # Paths, valid once entered.

    @property
    def base_dir(self) -> Path:
        if self._base_dir is None:
            raise RuntimeError("cluster not started")
        return self._base_dir

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "socket"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def ca_cert_path(self) -> Path | None:
        return self.base_dir / "ca.crt" if self.tls else None

    @property
    def server(self) -> PgServer:
        """The cluster as a ``PgServer`` (superuser over TCP, with its password)."""
        return PgServer(self.host, self.port, self.superuser, self.superuser_password)

    def dsn(
        self,
        dbname: str | None = None,
        user: str | None = None,
        password: str | None = None,
        **params: str,
    ) -> str:
        """A TCP DSN, as ``role`` into ``dbname`` unless told otherwise."""
        if user is None:
            user = self.role
            password = self.password if password is None else password
        return make_dsn(
            host=self.host,
            port=self.port,
            dbname=dbname if dbname is not None else self.dbname,
            user=user,
            password=password,
            **params,
        )

    def socket_dsn(self, dbname: str = "postgres") -> str:
        """A superuser DSN over the private Unix socket (trust auth)."""
        return make_dsn(host=str(self.socket_dir), port=self.port, dbname=dbname, user="postgres")

    # Lifecycle.

    def __enter__(self) -> Self:
        started = time.monotonic()
        self._base_dir = Path(tempfile.mkdtemp(prefix="airlock-pg-"))
        atexit.register(self.close)
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server (immediate mode) and remove the temp dir; safe to repeat."""
        atexit.unregister(self.close)
        if self._base_dir is None:
            return
        try:
            if self._running:
                self._stop()
        finally:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._base_dir = None

    def _create(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_SERVER_OS_USER)
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        if self.tls:
            self._write_certificates()
        self._write_config()
        for attempt in range(3):
            self.port = _free_port()
            self._write_port()
            try:
                self._run(
                    "pg_ctl",
                    "start",
                    "-w",
                    "-t",
                    str(_START_TIMEOUT_S),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                )
            except RuntimeError:
                # Another process may have taken the port between probe and bind.
                if attempt == 2 or "could not bind" not in self._log_tail():
                    raise
                continue
            self._running = True
            break
        self._create_role()

    def _write_certificates(self) -> None:
        certificates = _make_certificates()
        assert self.ca_cert_path is not None
        self.ca_cert_path.write_bytes(certificates.ca_cert_pem)
        self._write_server_file("server.crt", certificates.server_cert_pem, 0o644)
        self._write_server_file("server.key", certificates.server_key_pem, 0o600)

    def _write_server_file(self, name: str, content: bytes, mode: int) -> None:
        path = self.data_dir / name
        path.write_bytes(content)
        path.chmod(mode)
        self._give_to_server(path)

    def _give_to_server(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_SERVER_OS_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _write_config(self) -> None:
        host_type = "hostssl" if self.hostssl_only else "host"
        (self.data_dir / "pg_hba.conf").write_text(
            "# Written by tests/support/pgcluster.py\n"
            "local all all trust\n"
            f"{host_type} all all 127.0.0.1/32 {self.auth_method}\n"
        )
        # md5 needs md5 verifiers; the other methods accept SCRAM verifiers.
        encryption = "md5" if self.auth_method == "md5" else "scram-sha-256"
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "password_encryption": f"'{encryption}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "'16MB'",
            "max_connections": "30",
            "max_wal_senders": "0",
            "wal_level": "minimal",
            "autovacuum": "off",
            "logging_collector": "off",
            "log_connections": "on",
            "ssl": "on" if self.tls else "off",
        }
        if self.tls:
            settings["ssl_cert_file"] = "'server.crt'"
            settings["ssl_key_file"] = "'server.key'"
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# Written by tests/support/pgcluster.py\n")
            for name, value in settings.items():
                conf.write(f"{name} = {value}\n")

    def _write_port(self) -> None:
        auto_conf = self.data_dir / "postgresql.auto.conf"
        auto_conf.write_text(f"port = {self.port}\n")
        self._give_to_server(auto_conf)

    def _create_role(self) -> None:
        with psycopg.connect(self.socket_dsn(), autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(self.superuser), sql.Literal(self.superuser_password)
                )
            )
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(self.role), sql.Literal(self.password)
                )
            )
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.dbname), sql.Identifier(self.role)
                )
            )

    def _stop(self) -> None:
        self._running = False
        try:
            self._run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.data_dir))
        except RuntimeError:
            self._kill_postmaster()
            raise

    def _kill_postmaster(self) -> None:
        """Last resort when pg_ctl stop failed: SIGQUIT the pid in postmaster.pid."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", _SERVER_OS_USER, "--", *command]
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S + 30,
            check=False,
            cwd=self.base_dir,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({completed.returncode}):\n"
                f"{completed.stdout}{completed.stderr}\n--- server log ---\n{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        return (
            f"ThrowawayCluster(auth_method={self.auth_method!r}, tls={self.tls}, "
            f"hostssl_only={self.hostssl_only}, port={self.port})"
        )


class ClusterFactory(Protocol):
    """The callable ``pg_cluster_factory`` yields."""

    def __call__(
        self,
        auth_method: AuthMethod = "scram-sha-256",
        *,
        tls: bool = False,
        hostssl_only: bool = False,
        role: str = "airlock_svc",
        dbname: str = "app",
        password: str | None = None,
    ) -> ThrowawayCluster: ...


@pytest.fixture(scope="session")
def pg_cluster_factory() -> Iterator[ClusterFactory]:
    """Make ``ThrowawayCluster``s that live until the end of the session.

    Call it with ``ThrowawayCluster``'s arguments; every cluster it made is
    stopped and removed when the session ends.
    """
    with contextlib.ExitStack() as stack:

        def make(
            auth_method: AuthMethod = "scram-sha-256",
            *,
            tls: bool = False,
            hostssl_only: bool = False,
            role: str = "airlock_svc",
            dbname: str = "app",
            password: str | None = None,
        ) -> ThrowawayCluster:
            cluster = ThrowawayCluster(
                auth_method,
                tls=tls,
                hostssl_only=hostssl_only,
                role=role,
                dbname=dbname,
                password=password,
            )
            return stack.enter_context(cluster)

        yield make


@pytest.fixture(scope="session")
def scram_cluster(pg_cluster_factory: ClusterFactory) -> ThrowawayCluster:
    """scram-sha-256 over TCP; TLS offered (ssl=on) but not required."""
    return pg_cluster_factory("scram-sha-256", tls=True)


@pytest.fixture(scope="session")
def md5_cluster(pg_cluster_factory: ClusterFactory) -> ThrowawayCluster:
    """md5 over plain TCP, with md5 password verifiers."""
    return pg_cluster_factory("md5")


@pytest.fixture(scope="session")
def tls_cluster(pg_cluster_factory: ClusterFactory) -> ThrowawayCluster:
    """scram-sha-256, hostssl only: plain TCP connections are refused."""
    return pg_cluster_factory("scram-sha-256", tls=True, hostssl_only=True)
