"""Workers and cancel routing on one PostgreSQL store (a throwaway database): a cancel
that lands on another gateway stops the query where it runs, a forged secret stops
nothing, `--workers 2` serves connections on both workers, and `--workers 2` without
the shared store is refused with a clear error."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psycopg
import pytest
import yaml
from psycopg import sql

from tests.support.gateway import REPOSITORY, free_port
from tests.support.issuer import TestIssuer
from tests.support.pgcluster import PgServer, create_database, drop_database
from tests.support.waiting import PATIENCE_S, wait_until

CANCEL_REQUEST_CODE = 80877102


@dataclass
class Served:
    pg_port: int
    api_port: int
    process: subprocess.Popen[str]
    log: Path


@dataclass
class Store:
    url: str
    upstream: str
    upstream_dsn: str


def _config(directory: Path, issuer: TestIssuer, store: str | None, upstream: str) -> Path:
    pg_port, api_port = free_port(), free_port()
    directory.mkdir()
    document: dict[str, object] = {
        "listen": {"postgres": f"127.0.0.1:{pg_port}", "api": f"127.0.0.1:{api_port}"},
        "data_dir": str(directory / "data"),
        "identity": {"issuer": issuer.url, "audience": issuer.audience},
        "targets": {"orders": {"protocol": "postgres", "upstream": upstream}},
        "rules": [
            {
                "groups": ["data-agents"],
                "targets": ["orders"],
                "read": "allow",
                "write": "approve",
                "approvers": ["oncall-dba"],
            }
        ],
    }
    if store is not None:
        document["store"] = {"url": store, "poll_interval": "500ms"}
    config = directory / "airlock.yaml"
    config.write_text(yaml.safe_dump(document))
    return config


def _serve(config: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    log = config.parent / "gateway.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPOSITORY,
            env={**os.environ, "PYTHONPATH": str(REPOSITORY), "PYTHONUNBUFFERED": "1"},
        )
    return process, log


def _start(directory: Path, issuer: TestIssuer, store: Store, *args: str) -> Served:
    config = _config(directory, issuer, store.url, store.upstream)
    listen = yaml.safe_load(config.read_text())["listen"]
    pg_port = int(listen["postgres"].rsplit(":", 1)[1])
    api_port = int(listen["api"].rsplit(":", 1)[1])
    process, log = _serve(config, *args)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=1):
                return True
        except OSError:
            assert process.poll() is None, log.read_text()
            return False

    wait_until(healthy, PATIENCE_S, f"gateway in {directory.name} to come up", every_s=0.1)
    return Served(pg_port, api_port, process, log)


def _stop(served: Served) -> None:
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()


@pytest.fixture
def store(local_pg: PgServer, pg_database: str) -> Iterator[Store]:
    with psycopg.connect(local_pg.dsn(pg_database), autocommit=True) as admin:
        # pg_sleep alone classifies unknown (held); through a view it is a read.
        admin.execute("create view slow as select pg_sleep(30)::text as slept")
    store_db = create_database(local_pg)
    auth = local_pg.superuser + (f":{local_pg.password}" if local_pg.password else "")
    where = f"{local_pg.host}:{local_pg.port}"
    try:
        yield Store(
            f"postgresql://{auth}@{where}/{store_db}?sslmode=disable",
            f"postgresql://{auth}@{where}/{pg_database}?sslmode=disable",
            local_pg.dsn(pg_database),
        )
    finally:
        with psycopg.connect(local_pg.dsn("postgres"), autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(store_db))
            )
        drop_database(local_pg, store_db)


def _send_cancel(port: int, process_id: int, secret: int) -> None:
    """A CancelRequest on a new connection, as a driver sends it (and the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(struct.pack("!iiii", 16, CANCEL_REQUEST_CODE, process_id, secret))
        sock.settimeout(5)
        assert sock.recv(1) == b""  # no answer, as PostgreSQL gives none


def _active(upstream_dsn: str, process_id: int) -> bool:
    with psycopg.connect(upstream_dsn) as direct:
        row = direct.execute(
            "select state from pg_stat_activity where pid = %s", (process_id,)
        ).fetchone()
        return row is not None and row[0] == "active"


async def _slow_query_cancelled_via(
    gateway: Served, cancel_port: int, token: str, upstream_dsn: str
) -> None:
    agent = await asyncpg.connect(
        host="127.0.0.1", port=gateway.pg_port, user="agent", password=token,
        database="orders", ssl="require",
    )  # fmt: skip
    try:
        process_id: int = agent._protocol.backend_pid  # what BackendKeyData said
        secret: int = agent._protocol.backend_secret
        running = asyncio.ensure_future(agent.fetch("select * from slow"))
        await asyncio.to_thread(
            wait_until, lambda: _active(upstream_dsn, process_id), PATIENCE_S, "the slow query"
        )
        owner = (secret & 0xFFFFFFFF) >> 24
        assert owner != 0, "with a shared store the secret carries its owner number"
        # A forged secret: the right process id and owner, a wrong random part.
        await asyncio.to_thread(_send_cancel, cancel_port, process_id, secret ^ 0x5A5A5A)
        await asyncio.sleep(1.5)
        assert not running.done(), "a forged secret cancelled the query"
        assert _active(upstream_dsn, process_id)
        cancelled_at = time.monotonic()
        await asyncio.to_thread(_send_cancel, cancel_port, process_id, secret)
        with pytest.raises(asyncpg.QueryCanceledError):
            await asyncio.wait_for(running, PATIENCE_S)
        print(f"cancel through another port took {time.monotonic() - cancelled_at:.3f}s")
    finally:
        await agent.close()


def test_a_cancel_sent_to_gateway_b_stops_a_query_running_on_a(
    issuer: TestIssuer, store: Store, tmp_path: Path
) -> None:
    a = _start(tmp_path / "A", issuer, store)
    try:
        b = _start(tmp_path / "B", issuer, store)
        try:
            token = issuer.mint(sub="agent-1", groups=("data-agents",))
            asyncio.run(_slow_query_cancelled_via(a, b.pg_port, token, store.upstream_dsn))
        finally:
            _stop(b)
    finally:
        _stop(a)
    assert "cancel request forwarded to owner" in b.log.read_text()
    assert "cancel request with an unknown key ignored" in a.log.read_text()


def test_two_workers_serve_connections_and_route_cancels(
    issuer: TestIssuer, store: Store, tmp_path: Path
) -> None:
    served = _start(tmp_path / "W", issuer, store, "--workers", "2")
    try:
        token = issuer.mint(sub="agent-1", groups=("data-agents",))

        def both_workers_served() -> bool:
            try:
                with psycopg.connect(
                    f"host=127.0.0.1 port={served.pg_port} dbname=orders user=agent "
                    f"password={token} sslmode=require connect_timeout=10"
                ) as agent:
                    agent.execute("select 1")
            except psycopg.OperationalError:
                return False  # no worker listens on the port yet (they are starting)
            time.sleep(0.1)  # the session's end is logged as it closes
            pattern = r"\[worker (\d) pid \d+\]: session \S+ ended"
            ended = re.findall(pattern, served.log.read_text())
            return set(ended) == {"1", "2"}

        wait_until(both_workers_served, PATIENCE_S, "sessions on both workers", every_s=0)
        # Wherever the cancel lands (the kernel picks the worker), it stops the query.
        asyncio.run(_slow_query_cancelled_via(served, served.pg_port, token, store.upstream_dsn))
        # A dead worker is started again.
        pids = set(re.findall(r"worker \d started \(pid (\d+)\)", served.log.read_text()))
        os.kill(int(sorted(pids)[0]), signal.SIGKILL)
        wait_until(
            lambda: (
                "restarting" in served.log.read_text()
                and len(re.findall(r"worker \d started", served.log.read_text())) == 3
            ),
            PATIENCE_S,
            "the killed worker to be started again",
        )
    finally:
        _stop(served)
    assert served.process.returncode == 0, served.log.read_text()
    assert "all workers stopped" in served.log.read_text()


def test_workers_without_the_shared_store_are_refused(issuer: TestIssuer, tmp_path: Path) -> None:
    config = _config(tmp_path / "S", issuer, None, "postgresql://nobody@127.0.0.1:1/none")
    process, log = _serve(config, "--workers", "2")
    assert process.wait(timeout=30) == 2
    assert "--workers 2 needs the shared store (store: postgresql://...)" in log.read_text()
