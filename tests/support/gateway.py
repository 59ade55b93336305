"""A real gateway for integration tests, running its own event loop in a thread.

Tests drive it with ordinary synchronous and asynchronous drivers over real
sockets, exactly as agents would; only the process is shared, so a failing
test can look at the gateway's sessions and cancel map.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from proxy.config import Settings, parse_settings
from proxy.server import Gateway
from tests.support.issuer import TestIssuer
from tests.support.pgcluster import PgServer

T = TypeVar("T")


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
    def api_url(self) -> str:
        host, port = self.gateway.bound["api"]
        return f"http://{host}:{port}"

    @property
    def cert_file(self) -> Path:
        return self.settings.data_dir / "tls" / "server.crt"

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

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts only the gateway's self-signed certificate (verify-full for asyncpg)."""
        return ssl.create_default_context(cafile=str(self.cert_file))

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
