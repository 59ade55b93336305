"""Running the gateway as operators run a proxy: /metrics (checked by promtool),
/readyz, SIGTERM's drain and SIGHUP's reload, against the real PostgreSQL server."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.approvals import (
    Background,
    agent_token,
    approve_next,
    connect,
    rule,
)
from tests.support.gateway import (
    REPOSITORY,
    RunningGateway,
    ServedGateway,
    free_port,
    metric_samples,
    served_gateway,
)
from tests.support.pgcluster import PgServer
from tests.support.waiting import PATIENCE_S, wait_until


def scrape(api_url: str) -> str:
    with urllib.request.urlopen(api_url + "/metrics", timeout=10) as response:  # noqa: S310 (the gateway's own http URL)
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(response.read().decode())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (the gateway's own http URL)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --- /metrics


@pytest.mark.timeout(90)
def test_metrics_pass_promtool_and_count_reads_holds_and_refused_logins(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: apt-get install -y prometheus"
    gateway = gateway_factory(rules=[rule()])
    before = samples(scrape(gateway.api_url))
    with connect(gateway, agent_token(gateway)) as agent:
        # 520 reads: the relay times one read in 256, so at least two are observed.
        for account in range(1, 521):
            agent.execute(f"select balance from accounts where id = {account % 60 + 1}")  # noqa: S608
        write = Background(
            lambda: agent.execute("update accounts set balance = 5 where id = 1").rowcount
        )
        approve_next(gateway)
        assert write.result() == 1
    with pytest.raises(psycopg.OperationalError, match="token"):
        psycopg.connect(gateway.dsn("not-a-token"))
    text = scrape(gateway.api_url)

    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    after = samples(text)
    reads = value(after, "airlock_statements_total", target="orders", **{"class": "read"},
                  decision="allowed")  # fmt: skip
    assert reads - value(before, "airlock_statements_total", target="orders",
                         **{"class": "read"}, decision="allowed") >= 520  # fmt: skip
    approved = {"target": "orders", "class": "write", "decision": "approved"}
    assert value(after, "airlock_statements_total", **approved) == 1
    refused = {"protocol": "postgres", "reason": "authentication"}
    assert value(after, "airlock_login_refusals_total", **refused) == 1
    assert value(after, "airlock_hold_wait_seconds_count", target="orders") == 1
    assert value(after, "airlock_hold_wait_seconds_sum", target="orders") > 0
    relayed = {"protocol": "postgres", "path": "relay"}
    assert value(after, "airlock_added_latency_seconds_count", **relayed) >= 2
    decided = {"protocol": "postgres", "path": "decided"}
    assert value(after, "airlock_added_latency_seconds_count", **decided) >= 1
    assert value(after, "airlock_approval_requests", state="approved") == 1
    [build] = [labels for (name, labels) in after if name == "airlock_build_info"]
    assert dict(build)["version"]
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "airlock_draining") == 0


# --- /readyz


@pytest.mark.timeout(60)
def test_readyz_is_200_when_everything_is_reachable_and_503_with_an_upstream_down(
    gateway_factory: Callable[..., RunningGateway], local_pg: PgServer, pg_database: str
) -> None:
    up = gateway_factory()
    status, body = get_json(up.api_url + "/readyz")
    assert status == 200, body
    assert body["status"] == "ready"
    assert body["upstreams"]["orders"]["ok"] is True
    assert body["issuer_keys"]["ok"] is True
    assert body["store"]["ok"] is True

    closed = free_port()  # nothing listens there
    url = f"postgresql://{local_pg.superuser}@{local_pg.host}:{local_pg.port}/{pg_database}"
    down = gateway_factory(
        targets={
            "orders": {"protocol": "postgres", "upstream": url},
            "gone": {"protocol": "postgres", "upstream": f"postgresql://svc@127.0.0.1:{closed}/db"},
        }
    )
    status, body = get_json(down.api_url + "/readyz")
    assert status == 503, body
    assert body["status"] == "not ready"
    assert body["upstreams"]["orders"]["ok"] is True
    gone = body["upstreams"]["gone"]
    assert gone["ok"] is False
    assert gone["address"] == f"127.0.0.1:{closed}"
    assert "refused" in gone["error"].lower()
    # Liveness is another question: the process is up.
    status, health = get_json(down.api_url + "/healthz")
    assert status == 200
    assert health["status"] == "ok"


# --- SIGTERM


def _agent_dsn(served: ServedGateway, token: str) -> str:
    cert = served.config.parent / "data" / "tls" / "server.crt"
    return (
        f"host=127.0.0.1 port={served.pg_port} dbname=orders user=agent password={token} "
        f"sslmode=verify-full sslrootcert={cert}"
    )


def _pending(served: ServedGateway, dba_token: str) -> list[Any] | None:
    """The pending approval requests, or None while there are none."""
    request = urllib.request.Request(  # noqa: S310 (the gateway's own http URL)
        served.api_url + "/api/v1/approvals", headers={"Authorization": f"Bearer {dba_token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return list(json.loads(response.read())["approvals"]) or None


def _running(local_pg: PgServer, database: str, sql: str) -> int:
    """How many server sessions are running `sql` now."""
    with psycopg.connect(local_pg.dsn(database)) as direct:
        query = "select count(*) from pg_stat_activity where state = 'active' and query = %s"
        row = direct.execute(query, (sql,)).fetchone()
        return 0 if row is None else int(row[0])


@pytest.mark.timeout(120)
def test_sigterm_lets_statements_finish_within_the_grace_then_cancels_the_rest(
    tmp_path: Path, local_pg: PgServer, pg_database: str, accounts: Callable[[], dict[int, int]]
) -> None:
    # pg_sleep() is not on the read-safe allowlist, but a view that calls it is read.
    with psycopg.connect(local_pg.dsn(pg_database), autocommit=True) as admin:
        admin.execute("create view sleep_3 as select pg_sleep(3)::text as slept, 'done' as what")
        admin.execute("create view sleep_60 as select pg_sleep(60)::text as slept")
    with served_gateway(
        tmp_path, local_pg, pg_database, [rule()], settings={"limits": {"drain_timeout": "6s"}}
    ) as served:
        token = served.token("agent-1", "data-agents")
        dba = served.token("dba-1", "oncall-dba")
        short = psycopg.connect(_agent_dsn(served, token), autocommit=True)
        long = psycopg.connect(_agent_dsn(served, token), autocommit=True)
        writer = psycopg.connect(_agent_dsn(served, token), autocommit=True)
        idle = psycopg.connect(_agent_dsn(served, token), autocommit=True)
        long_sql, short_sql = "select * from sleep_60", "select * from sleep_3"
        cancelled = Background(lambda: long.execute(long_sql).fetchone())
        held = Background(
            lambda: writer.execute("update accounts set balance = 1 where id = 1").rowcount
        )
        [request] = wait_until(lambda: _pending(served, dba), PATIENCE_S, "the write held")
        finishing = Background(lambda: short.execute(short_sql).fetchone())
        wait_until(
            lambda: (
                _running(local_pg, pg_database, long_sql)
                and _running(local_pg, pg_database, short_sql)
            ),
            PATIENCE_S,
            "both sleeps running on the server",
        )
        signalled = time.monotonic()
        served.process.send_signal(signal.SIGTERM)

        # The held write is answered at once, and its request withdrawn.
        refusal = held.result()
        assert isinstance(refusal, psycopg.errors.QueryCanceled), refusal
        assert "the gateway is shutting down" in str(refusal)
        assert request["id"] in str(refusal)
        # New connections are refused.
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(_agent_dsn(served, token), connect_timeout=3)
        # The short statement finishes within the grace, with its result.
        assert finishing.result() == ("", "done")
        # The long one is ended with 57P01 once the grace is over, and stopped upstream.
        ended = cancelled.result(timeout_s=30)
        assert isinstance(ended, psycopg.errors.AdminShutdown), ended
        assert "the gateway is draining" in str(ended)
        assert time.monotonic() - signalled >= 5.5
        assert served.process.wait(timeout=30) == 0
        output = served.process.stdout.read() if served.process.stdout else ""
        # The idle session was ended as soon as the drain began.
        with pytest.raises(psycopg.OperationalError):
            idle.execute("select 1")
        for conn in (short, long, writer, idle):
            conn.close()

    wait_until(
        lambda: _running(local_pg, pg_database, long_sql) == 0,
        10,
        "the long statement cancelled on the server",
    )
    assert accounts()[1] == 100  # the held write never ran
    with sqlite3.connect(tmp_path / "data" / "airlock.db") as store:
        [(state,)] = store.execute(
            "select state from approvals where id = ?", (request["id"],)
        ).fetchall()
    assert state == "withdrawn"
    verified = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy.cli.main",
            "verify",
            "--all",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPOSITORY,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr + output


# --- SIGHUP


@pytest.mark.timeout(120)
def test_sighup_applies_a_changed_rule_to_new_sessions_and_keeps_old_ones_and_bad_files_out(
    tmp_path: Path, local_pg: PgServer, pg_database: str, accounts: Callable[[], dict[int, int]]
) -> None:
    with served_gateway(tmp_path, local_pg, pg_database, [rule(write="deny")]) as served:
        token = served.token("agent-1", "data-agents")
        old = psycopg.connect(_agent_dsn(served, token), autocommit=True)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not allowed"):
            old.execute("update accounts set balance = 1 where id = 1")

        document = yaml.safe_load(served.config.read_text())
        document["rules"] = [rule(write="approve", hold="reject")]
        served.config.write_text(yaml.safe_dump(document))
        served.process.send_signal(signal.SIGHUP)
        wait_until(lambda: _reloads(served, "ok") == 1, PATIENCE_S, "the reload")

        with psycopg.connect(_agent_dsn(served, token), autocommit=True) as new:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="needs approval"):
                new.execute("update accounts set balance = 1 where id = 1")
            assert new.execute("select 1").fetchone() == (1,)
        # The session that logged in before keeps its rules, and works on.
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not allowed"):
            old.execute("update accounts set balance = 1 where id = 1")
        assert old.execute("select balance from accounts where id = 2").fetchone() == (100,)

        served.config.write_text(
            served.config.read_text().replace("write: approve", "write: maybe")
        )
        served.process.send_signal(signal.SIGHUP)
        wait_until(lambda: _reloads(served, "failed") == 1, PATIENCE_S, "the failed reload")
        assert served.process.poll() is None
        with (
            psycopg.connect(_agent_dsn(served, token), autocommit=True) as newer,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="needs approval"),
        ):
            newer.execute("update accounts set balance = 1 where id = 1")
        assert old.execute("select 1").fetchone() == (1,)
        old.close()
    assert accounts()[1] == 100
    assert len(_requests(tmp_path)) == 2


def _reloads(served: ServedGateway, result: str) -> float:
    return float(metric_samples(served.api_url).get(
        f'airlock_config_reloads_total{{result="{result}"}}', "0"
    ))  # fmt: skip


def _requests(directory: Path) -> list[Any]:
    with sqlite3.connect(directory / "data" / "airlock.db") as store:
        return store.execute("select id from approvals").fetchall()
