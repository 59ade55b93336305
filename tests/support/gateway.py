"""A real gateway for integration tests, running its own event loop in a thread.

Tests drive it with ordinary synchronous and asynchronous drivers over real
sockets, exactly as agents would; only the process is shared, so a failing
test can look at the gateway's sessions and cancel map.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mysql.connector
import pymysql
import pytest
import uvloop
import yaml

from proxy.config import Settings, parse_settings
from proxy.server import Gateway
from tests.support.issuer import TestIssuer
from tests.support.pgcluster import PgServer
from tests.support.waiting import PATIENCE_S, wait_until

T = TypeVar("T")

#: Where `python -m proxy.cli.main` imports this work tree's gateway from.
REPOSITORY = Path(__file__).resolve().parents[2]


@dataclass
class RunningGateway:
    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    issuer: TestIssuer
    settings: Settings

    @property
    def pg_port(self) -> int:
        return self.gateway.bound["postgres"][1]

    @property
    def mysql_port(self) -> int:
        return self.gateway.bound["mysql"][1]

    @property
    def api_url(self) -> str:
        host, port = self.gateway.bound["api"]
        return f"http://{host}:{port}"

    @property
    def cert_file(self) -> Path:
        return self.settings.data_dir / "tls" / "server.crt"

    def metrics(self) -> dict[str, str]:
        """`GET /metrics` as {'name{labels}': value}, values as %g ("2", not "2.0")."""
        return metric_samples(self.api_url)

    def metric_total(self, name: str) -> float:
        """The sum of `name`'s samples over all their labels."""
        return sum(
            float(value)
            for key, value in self.metrics().items()
            if key == name or key.startswith(name + "{")
        )

    def call(self, fn: Callable[[], T]) -> T:
        """Run fn on the gateway's loop and return its result."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout=10)

    def wait_for_no_sessions(
        self, timeout_s: float = PATIENCE_S, protocol: str = "postgres"
    ) -> None:
        """Until the protocol's listener has forgotten every session: each has ended (its
        transcript's seal may still be on its way to disk: wait_for_sealed_transcripts)."""
        listener = self.gateway.postgres if protocol == "postgres" else self.gateway.mysql
        assert listener is not None
        wait_until(
            lambda: self.call(lambda: not listener.sessions),
            timeout_s,
            f"the {protocol} listener to forget its ended sessions",
        )

    def wait_for_sealed_transcripts(self, timeout_s: float = PATIENCE_S) -> None:
        """Until every session has ended and `airlock verify --all` finds each transcript
        sealed and valid: what a user reads after a session is over (the seal is written
        in a worker thread after the session is gone)."""
        for protocol in ("postgres", "mysql"):
            if getattr(self.gateway, protocol) is not None:
                self.wait_for_no_sessions(timeout_s, protocol)
        command = [sys.executable, "-m", "proxy.cli", "verify", "--all"]
        command += ["--data-dir", str(self.settings.data_dir)]

        def verified() -> subprocess.CompletedProcess[str] | None:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=60, cwd=REPOSITORY
            )
            return done if done.returncode == 0 else None

        wait_until(verified, timeout_s, "every transcript sealed", every_s=0.2)

    def use_clock(self, clock: Callable[[], float]) -> None:
        """Give the approvals hub and the listeners (so the sessions they start from now
        on, and their gates) `clock` as the wall clock: a test about grant or request
        expiry moves time on instead of sleeping through it. Token signatures are still
        checked against the real time."""

        def install() -> None:
            assert self.gateway.hub is not None
            self.gateway.hub.clock = clock
            for listener in (self.gateway.postgres, self.gateway.mysql):
                if listener is not None:
                    listener.clock = clock

        self.call(install)

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts only the gateway's self-signed certificate (verify-full for asyncpg)."""
        return ssl.create_default_context(cafile=str(self.cert_file))

    def pymysql(self, token: str, **params: Any) -> pymysql.Connection[Any]:
        """A PyMySQL agent on target `shop` over TLS, trusting only the gateway's certificate
        (which names 127.0.0.1 but is not checked against a host name here)."""
        context = self.ssl_context()
        context.check_hostname = False
        options: dict[str, Any] = {"database": "shop", "ssl": context, **params}
        return pymysql.connect(
            host="127.0.0.1", port=self.mysql_port, user="agent", password=token, **options
        )

    def mysql_connector(self, token: str, **params: Any) -> Any:
        """A mysql-connector-python agent (pure Python) on target `shop`, verifying the
        gateway's certificate."""
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.mysql_port,
            "user": "agent",
            "password": token,
            "database": "shop",
            "use_pure": True,
            "ssl_ca": str(self.cert_file),
            "ssl_verify_cert": True,
            "ssl_verify_identity": True,
            "connection_timeout": 10,
            **params,
        }
        return mysql.connector.connect(**options)

    def asyncpg_params(self, token: str) -> dict[str, Any]:
        """asyncpg.connect / create_pool keywords for an agent reaching `orders` over TLS."""
        return {
            "host": "127.0.0.1",
            "port": self.pg_port,
            "user": "agent",
            "password": token,
            "database": "orders",
            "ssl": self.ssl_context(),
        }

    def dsn(
        self, token: str, *, dbname: str = "orders", sslmode: str = "require", **params: str
    ) -> str:
        parts = {
            "host": "127.0.0.1",
            "port": str(self.pg_port),
            "dbname": dbname,
            "user": "agent",
            "password": token,
            "sslmode": sslmode,
            "connect_timeout": "10",
            **params,
        }
        return " ".join(f"{k}='{v}'" for k, v in parts.items())

    def stop(self) -> None:
        if self.loop.is_closed() or not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.gateway.close(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def gateway_document(
    issuer: TestIssuer, default_data_dir: Path, upstream_dsn_url: str, **overrides: Any
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "listen": {"postgres": "127.0.0.1:0", "api": "127.0.0.1:0"},
        "allow_insecure_loopback": False,
        "data_dir": str(default_data_dir),
        "identity": {
            "issuer": issuer.url,
            "audience": issuer.audience,
            "jwks_refetch_cooldown": "1s",
        },
        "targets": {"orders": {"protocol": "postgres", "upstream": upstream_dsn_url}},
        "rules": [
            {
                "groups": ["data-agents"],
                "targets": ["orders"],
                # The transport tests see every statement through; the approval tests
                # pass rules of their own.
                "read": "allow",
                "write": "allow",
                "ddl": "allow",
                "admin": "allow",
                "unknown": "allow",
            },
        ],
    }
    for key, value in overrides.items():
        document[key] = value
    return document


def start_gateway(issuer: TestIssuer, document: dict[str, Any], source: Path) -> RunningGateway:
    settings = parse_settings(document, source=source)
    gateway = Gateway(settings)
    # The same loop the `airlock` command runs on.
    loop = uvloop.new_event_loop()
    started: Future[None] = Future()

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                await gateway.start()
                started.set_result(None)
            except BaseException as exc:
                started.set_exception(exc)

        loop.create_task(boot())
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=main, name="airlock-gateway", daemon=True)
    thread.start()
    started.result(timeout=30)
    return RunningGateway(gateway, loop, thread, issuer, settings)


@pytest.fixture
def gateway_factory(
    issuer: TestIssuer, local_pg: PgServer, pg_database: str, tmp_path: Path
) -> Iterator[Callable[..., RunningGateway]]:
    """Start gateways in front of a throwaway database; all are stopped after the test."""
    running: list[RunningGateway] = []

    def make(upstream: str | None = None, **overrides: Any) -> RunningGateway:
        url = (
            upstream
            or f"postgresql://{local_pg.superuser}@{local_pg.host}:{local_pg.port}/{pg_database}?sslmode=disable"
        )
        document = gateway_document(issuer, tmp_path / f"data{len(running)}", url, **overrides)
        gateway = start_gateway(issuer, document, tmp_path / "airlock.yaml")
        running.append(gateway)
        return gateway

    yield make
    for gateway in running:
        gateway.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory()


@dataclass
class ServedGateway:
    """`airlock serve` as a real process (for what only a process shows: signals, kills)."""

    config: Path
    pg_port: int
    api_port: int
    process: subprocess.Popen[str]
    #: What the process wrote (its log), once it has stopped.
    output: list[str] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def airlock(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*AIRLOCK, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def token(self, sub: str, *groups: str) -> str:
        minted = self.airlock(
            "dev-token", "--config", str(self.config), "--sub", sub, "--groups", ",".join(groups)
        )
        assert minted.returncode == 0, minted.stderr
        return minted.stdout.strip()


AIRLOCK = [sys.executable, "-m", "proxy.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metric_samples(api_url: str) -> dict[str, str]:
    """`GET /metrics` from the gateway at `api_url` as {'name{labels}': value}."""
    with urllib.request.urlopen(api_url + "/metrics", timeout=10) as response:  # noqa: S310 (the gateway's own http URL)
        text = response.read().decode()
    lines = (line for line in text.splitlines() if line and not line.startswith("#"))
    return {key: f"{float(value):g}" for key, value in (line.rsplit(" ", 1) for line in lines)}


@contextlib.contextmanager
def served_gateway(
    directory: Path,
    local_pg: PgServer,
    database: str,
    rules: list[dict[str, Any]],
    *,
    settings: dict[str, Any] | None = None,
    options: Sequence[str] = (),
) -> Iterator[ServedGateway]:
    """Run `airlock serve` with a dev issuer in front of `database` (`settings` added to
    its config, `options` to its command line); stop it afterwards, keeping its output."""
    pg_port, api_port = free_port(), free_port()
    config = directory / "airlock.yaml"
    upstream = f"postgresql://{local_pg.superuser}@{local_pg.host}:{local_pg.port}/{database}"
    document = {
        "listen": {"postgres": f"127.0.0.1:{pg_port}", "api": f"127.0.0.1:{api_port}"},
        "dev_issuer": True,
        "data_dir": str(directory / "data"),
        "targets": {"orders": {"protocol": "postgres", "upstream": upstream}},
        "rules": rules,
        **(settings or {}),
    }
    config.write_text(yaml.safe_dump(document))
    process = subprocess.Popen(
        [*AIRLOCK, "serve", "--config", str(config), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    served = ServedGateway(config, pg_port, api_port, process)
    try:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=1):
                    return True
            except OSError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                return False

        wait_until(healthy, PATIENCE_S, "the gateway to come up", every_s=0.1)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout:
            served.output.extend(process.stdout.read().splitlines())
            process.stdout.close()
