"""Three `airlock serve` processes on one PostgreSQL store (a throwaway database), on
different ports, as a TCP load balancer would spread agents over them: a hold on one
gateway is released by a decision through another, credentials log in anywhere, a
killed gateway's holds are marked gone by the others, and a store that goes away loses
no decision."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from tests.support.gateway import REPOSITORY, free_port
from tests.support.issuer import TestIssuer
from tests.support.pgcluster import PgServer, create_database, drop_database
from tests.support.waiting import PATIENCE_S, wait_until

HEARTBEAT_TIMEOUT_S = 2.0


@dataclass
class Served:
    name: str
    pg_port: int
    api_port: int
    process: subprocess.Popen[str]
    log: Path
    cert: Path

    def api(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def dsn(self, user: str, password: str) -> str:
        return (
            f"host=127.0.0.1 port={self.pg_port} dbname=orders user={user} "
            f"password={password} sslmode=require connect_timeout=10"
        )


@dataclass
class Cluster:
    issuer: TestIssuer
    store_dsn: str
    upstream_dsn: str
    gateways: dict[str, Served] = field(default_factory=dict)

    def agent(self) -> str:
        return self.issuer.mint(sub="agent-1", groups=("data-agents",))

    def dba(self) -> str:
        return self.issuer.mint(sub="dba-1", groups=("oncall-dba",))

    def pending(self, via: str, count: int = 1) -> list[dict[str, Any]]:
        def listed() -> list[dict[str, Any]]:
            status, body = self.gateways[via].api("GET", "/api/v1/approvals", self.dba())
            assert status == 200, body
            return list(body["approvals"]) if len(body["approvals"]) >= count else []

        return wait_until(listed, PATIENCE_S, f"{count} pending request(s) seen through {via}")

    def request(self, via: str, request_id: str) -> dict[str, Any]:
        status, body = self.gateways[via].api("GET", f"/api/v1/approvals/{request_id}", self.dba())
        assert status == 200, body
        return dict(body)


def _start(directory: Path, name: str, issuer: TestIssuer, store: str, upstream: str) -> Served:
    pg_port, api_port = free_port(), free_port()
    while api_port == pg_port:  # free_port may hand out the same free port twice
        api_port = free_port()
    data = directory / name
    data.mkdir()
    document = {
        "listen": {"postgres": f"127.0.0.1:{pg_port}", "api": f"127.0.0.1:{api_port}"},
        "data_dir": str(data / "data"),
        "identity": {"issuer": issuer.url, "audience": issuer.audience},
        "store": {
            "url": store,
            "poll_interval": "500ms",
            "heartbeat_timeout": f"{HEARTBEAT_TIMEOUT_S:g}s",
        },
        "targets": {"orders": {"protocol": "postgres", "upstream": upstream}},
        "auditors": ["auditors"],
        "rules": [
            {
                "groups": ["data-agents"],
                "targets": ["orders"],
                "read": "allow",
                "write": "approve",
                "ddl": "deny",
                "admin": "deny",
                "approvers": ["oncall-dba"],
                "hold": "wait",
                "hold_timeout": "60s",
            }
        ],
    }
    config = data / "airlock.yaml"
    config.write_text(yaml.safe_dump(document))
    log = data / "gateway.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPOSITORY,
            env={**os.environ, "PYTHONPATH": str(REPOSITORY), "PYTHONUNBUFFERED": "1"},
        )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=1):
                return True
        except OSError:
            assert process.poll() is None, log.read_text()
            return False

    wait_until(healthy, PATIENCE_S, f"gateway {name} to come up", every_s=0.1)
    return Served(name, pg_port, api_port, process, log, data / "data" / "tls" / "server.crt")


@pytest.fixture
def cluster(
    issuer: TestIssuer, local_pg: PgServer, pg_database: str, tmp_path: Path
) -> Iterator[Cluster]:
    with psycopg.connect(local_pg.dsn(pg_database), autocommit=True) as admin:
        admin.execute("create table accounts (id int primary key, balance int)")
        admin.execute("insert into accounts select g, 100 from generate_series(1, 10) g")
    store_db = create_database(local_pg)
    auth = local_pg.superuser + (f":{local_pg.password}" if local_pg.password else "")
    where = f"{local_pg.host}:{local_pg.port}"
    found = Cluster(
        issuer,
        local_pg.dsn(store_db),
        f"postgresql://{auth}@{where}/{pg_database}?sslmode=disable",
    )
    store = f"postgresql://{auth}@{where}/{store_db}?sslmode=disable"
    try:
        for name in ("A", "B", "C"):
            found.gateways[name] = _start(tmp_path, name, issuer, store, found.upstream_dsn)
        yield found
    finally:
        for served in found.gateways.values():
            if served.process.poll() is None:
                served.process.send_signal(signal.SIGTERM)
                try:
                    served.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    served.process.kill()
                    served.process.wait()
        with psycopg.connect(local_pg.dsn("postgres"), autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(store_db))
            )
        drop_database(local_pg, store_db)


class HeldWrite:
    """An agent's UPDATE through one gateway, running in a thread until it returns."""

    def __init__(self, cluster: Cluster, via: str, row: int) -> None:
        self.done_at: float | None = None
        self.error: BaseException | None = None
        self.connection = psycopg.connect(cluster.gateways[via].dsn("agent", cluster.agent()))
        self.connection.autocommit = True
        self.thread = threading.Thread(target=self._run, args=(row,), daemon=True)
        self.thread.start()

    def _run(self, row: int) -> None:
        try:
            self.connection.execute("update accounts set balance = 0 where id = %s", (row,))
        except BaseException as error:  # reported to the test
            self.error = error
        self.done_at = time.monotonic()

    def join(self) -> None:
        self.thread.join(PATIENCE_S)
        assert not self.thread.is_alive(), "the held statement never returned"
        self.connection.close()


def _balance(cluster: Cluster, row: int) -> int:
    with psycopg.connect(cluster.upstream_dsn) as direct:
        found = direct.execute("select balance from accounts where id = %s", (row,)).fetchone()
        assert found is not None
        return int(found[0])


def test_a_hold_on_one_gateway_is_released_by_an_approval_through_another(
    cluster: Cluster,
) -> None:
    releases: list[float] = []
    for row in (1, 2, 3):
        held = HeldWrite(cluster, "A", row)
        [request] = cluster.pending("B")
        assert request["sql"].startswith("update accounts")
        status, body = cluster.gateways["B"].api(
            "POST", f"/api/v1/approvals/{request['id']}/approve", cluster.dba(), {}
        )
        decided_at = time.monotonic()
        assert status == 200, body
        held.join()
        assert held.error is None, held.error
        assert held.done_at is not None
        releases.append(held.done_at - decided_at)
        assert _balance(cluster, row) == 0
    print(f"release after a decision through another gateway: {releases}")
    assert max(releases) < 1.0, releases


def test_a_credential_minted_on_one_gateway_logs_in_on_another(cluster: Cluster) -> None:
    status, minted = cluster.gateways["A"].api(
        "POST", "/api/v1/credentials", cluster.agent(), {"target": "orders"}
    )
    assert status == 200, minted
    dsn = cluster.gateways["C"].dsn(minted["username"], minted["password"])
    with psycopg.connect(dsn) as agent:
        assert agent.execute("select balance from accounts where id = 4").fetchone() == (100,)
    with pytest.raises(psycopg.OperationalError, match=r"password|authentication"):
        psycopg.connect(cluster.gateways["C"].dsn(minted["username"], "not-the-password"))


def test_a_killed_gateway_s_holds_are_marked_gone_and_the_others_keep_serving(
    cluster: Cluster,
) -> None:
    held = HeldWrite(cluster, "A", 5)
    [request] = cluster.pending("B")
    cluster.gateways["A"].process.send_signal(signal.SIGKILL)
    cluster.gateways["A"].process.wait(timeout=10)
    held.join()
    assert held.error is not None  # its connection went with the gateway

    def marked() -> dict[str, Any] | None:
        found = cluster.request("C", request["id"])
        return found if found["session_state"] == "gone" else None

    killed_at = time.monotonic()
    found = wait_until(marked, HEARTBEAT_TIMEOUT_S + PATIENCE_S, "A's request marked gone")
    assert found["state"] == "withdrawn"
    assert "stopped answering" in found["decision"]["reason"]
    print(f"marked gone {time.monotonic() - killed_at:.1f}s after the kill was seen")
    # B and C serve on: a read on B, and a write held on B released through C.
    with psycopg.connect(cluster.gateways["B"].dsn("agent", cluster.agent())) as agent:
        assert agent.execute("select balance from accounts where id = 5").fetchone() == (100,)
    held = HeldWrite(cluster, "B", 6)
    [request] = cluster.pending("C")
    status, body = cluster.gateways["C"].api(
        "POST", f"/api/v1/approvals/{request['id']}/approve", cluster.dba(), {}
    )
    assert status == 200, body
    held.join()
    assert held.error is None, held.error
    assert _balance(cluster, 5) == 100
    assert _balance(cluster, 6) == 0


def _kill_store_connections(cluster: Cluster, *, allow: bool) -> None:
    """Terminate every gateway's store connection; with allow=False the store database
    also refuses new connections (the store is down) until called with allow=True."""
    store_db = psycopg.conninfo.conninfo_to_dict(cluster.store_dsn)["dbname"]
    admin_dsn = cluster.store_dsn.replace(f"dbname={store_db}", "dbname=postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(str(store_db)), sql.SQL("true" if allow else "false")
            )
        )
        admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = %s and pid <> pg_backend_pid()",
            (store_db,),
        )


def test_the_store_going_away_loses_no_decision_and_holds_resume(cluster: Cluster) -> None:
    held = HeldWrite(cluster, "A", 7)
    [request] = cluster.pending("B")
    # Every store connection killed: the decision through B waits for B to reconnect.
    _kill_store_connections(cluster, allow=True)

    def approved() -> bool:
        status, body = cluster.gateways["B"].api(
            "POST", f"/api/v1/approvals/{request['id']}/approve", cluster.dba(), {}
        )
        assert status in (200, 503), body
        return status == 200

    wait_until(approved, PATIENCE_S, "B to approve once its store connection is back")
    held.join()
    assert held.error is None, held.error
    assert _balance(cluster, 7) == 0

    # The store down: reads still relay; a write that needs approval fails closed.
    agent = psycopg.connect(cluster.gateways["A"].dsn("agent", cluster.agent()), autocommit=True)
    _kill_store_connections(cluster, allow=False)
    assert agent.execute("select balance from accounts where id = 8").fetchone() == (100,)
    with pytest.raises(psycopg.errors.SystemError, match="approval store is unreachable"):
        agent.execute("update accounts set balance = 0 where id = 8")
    assert agent.execute("select balance from accounts where id = 8").fetchone() == (100,)
    status, body = cluster.gateways["C"].api("GET", "/api/v1/approvals", cluster.dba())
    assert status == 503, body
    assert body["error"]["code"] == "store_unavailable"

    # The store back: holds work again, and what was decided is still there.
    _kill_store_connections(cluster, allow=True)

    def held_again() -> HeldWrite | None:
        attempt = HeldWrite(cluster, "A", 8)
        time.sleep(0.3)
        if attempt.done_at is not None:  # refused: the store not reached yet
            attempt.join()
            return None
        return attempt

    held = wait_until(held_again, PATIENCE_S, "a new hold once the store is back", every_s=0.5)
    [request] = cluster.pending("C")
    status, body = cluster.gateways["C"].api(
        "POST", f"/api/v1/approvals/{request['id']}/approve", cluster.dba(), {}
    )
    assert status == 200, body
    held.join()
    assert held.error is None, held.error
    assert _balance(cluster, 8) == 0
    status, body = cluster.gateways["C"].api(
        "GET", "/api/v1/approvals?state=approved", cluster.dba()
    )
    assert status == 200
    assert len(body["approvals"]) == 2
    agent.close()
