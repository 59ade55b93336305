"""Sessions become evidence: real agents' transcripts replay and verify, a killed gateway
leaves an unsealed but intact one, and `airlock demo` tells the whole story."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import psycopg
import pytest

from tests.support.approvals import Background, agent_token, api, decide, pending, rule
from tests.support.gateway import RunningGateway, served_gateway
from tests.support.pgcluster import PgServer
from tests.support.waiting import PATIENCE_S, wait_until

AIRLOCK = [sys.executable, "-m", "proxy.cli"]


def airlock(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AIRLOCK, *args], capture_output=True, text=True, timeout=60)


def only_session(data_dir: Path, identity: str) -> str:
    listed = airlock("sessions", "list", "--data-dir", str(data_dir), "--identity", identity)
    assert listed.returncode == 0, listed.stderr
    [line] = [row for row in listed.stdout.splitlines() if identity in row]
    return line.split()[0]


def replay_events(
    data_dir: Path, session: str, *, verifies: bool = True
) -> list[dict[str, object]]:
    """The session's events as `airlock replay --json` prints them; it exits 0 when the
    transcript verifies, else 1 (an unsealed one: the gateway was killed)."""
    replayed = airlock("replay", session, "--data-dir", str(data_dir), "--json")
    assert replayed.returncode == (0 if verifies else 1), replayed.stderr
    return [json.loads(line) for line in replayed.stdout.splitlines() if line.strip()]


@pytest.mark.timeout(120)
def test_a_psycopg_session_replays_with_every_statement_and_approval_and_verifies(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(rules=[rule()])
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        agent.execute("select balance from accounts where id = %s", (1,))
        write = Background(lambda: agent.execute("update accounts set balance = 7 where id = 2"))
        [approved] = pending(gateway)
        decide(gateway, approved["id"], "approve", {"comment": "ticket 12"})
        write.result()
        refused = Background(lambda: agent.execute("delete from accounts where id = 3"))
        [denied] = pending(gateway)
        decide(gateway, denied["id"], "deny", {"reason": "keep it"})
        assert isinstance(refused.result(), psycopg.errors.InsufficientPrivilege)
    data_dir = gateway.settings.data_dir
    gateway.wait_for_no_sessions()
    session = only_session(data_dir, "agent-1")
    events = replay_events(data_dir, session)
    kinds = [event["kind"] for event in events]
    assert kinds[0] == "session.start"
    assert "session.end" in kinds[-2:]
    statements = [e["data"] for e in events if e["kind"] == "statement"]
    sqls = [s["sql"] for s in statements]  # type: ignore[index]
    assert "select balance from accounts where id = $1" in sqls
    assert "update accounts set balance = 7 where id = 2" in sqls
    assert "delete from accounts where id = 3" in sqls
    decided = [e["data"] for e in events if e["kind"] == "approval.decided"]
    assert [(d["id"], d["state"], d["by"]) for d in decided] == [  # type: ignore[index]
        (approved["id"], "approved", "dba-1"),
        (denied["id"], "denied", "dba-1"),
    ]
    verified = airlock("verify", session, "--data-dir", str(data_dir))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "sealed" in verified.stdout
    human = airlock("replay", session, "--data-dir", str(data_dir))
    assert "ticket 12" in human.stdout
    assert "keep it" in human.stdout


@pytest.mark.timeout(120)
def test_an_asyncpg_session_records_its_bound_parameters(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(rules=[rule(write="allow")])

    async def agent() -> None:
        conn = await asyncpg.connect(**gateway.asyncpg_params(agent_token(gateway)))
        try:
            statement = await conn.prepare("update accounts set balance = $1 where id = $2")
            await statement.fetch(4242, 5)
        finally:
            await conn.close()

    asyncio.run(agent())
    gateway.wait_for_sealed_transcripts()
    data_dir = gateway.settings.data_dir
    session = only_session(data_dir, "agent-1")
    human = airlock("replay", session, "--data-dir", str(data_dir))
    assert "update accounts set balance = $1 where id = $2" in human.stdout
    assert "4242" in human.stdout
    assert airlock("verify", session, "--data-dir", str(data_dir)).returncode == 0


@pytest.mark.timeout(120)
def test_a_login_on_a_slow_disk_does_not_stall_the_other_sessions(
    gateway_factory: Callable[..., RunningGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A login makes its transcript and ledger entry durable, and a session's end seals
    its transcript: fsyncs, here 1 s each. Other sessions keep their pace meanwhile.
    (A whole second, so that a query slowed by a busy machine is still told apart from
    one that waited for a disk.)"""
    gateway = gateway_factory(rules=[rule()])
    token = agent_token(gateway)
    with psycopg.connect(gateway.dsn(token), autocommit=True) as agent:
        real_fsync = os.fsync

        def slow_fsync(fd: int) -> None:
            time.sleep(1.0)  # the slow disk, not a wait
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", slow_fsync)
        started = time.monotonic()
        other = Background(lambda: psycopg.connect(gateway.dsn(token)).close())
        slowest = 0.0
        queries = 0
        while other.thread.is_alive():
            sent = time.monotonic()
            assert agent.execute("select 1").fetchone() == (1,)
            slowest = max(slowest, time.monotonic() - sent)
            queries += 1
        assert not isinstance(other.result(), Exception)
        took = time.monotonic() - started
    monkeypatch.undo()
    assert slowest < 0.5, f"a query took {slowest:.3f} s while the other agent logged in"
    assert took > 2.9  # the other agent's login waited for three slow fsyncs at least
    assert queries > 50
    # The agent's session is sealed in a worker thread once it is over (tens of thousands
    # of events here): wait for that, then every transcript must verify.
    gateway.wait_for_sealed_transcripts()
    verified = airlock("verify", "--all", "--data-dir", str(gateway.settings.data_dir))
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.timeout(120)
def test_a_login_that_times_out_while_its_transcript_opens_leaves_it_sealed(
    gateway_factory: Callable[..., RunningGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = gateway_factory(rules=[rule()], limits={"login_timeout": "500ms"})
    token = agent_token(gateway)
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.4)  # the slow disk, not a wait
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(gateway.dsn(token), connect_timeout=10)
    data_dir = gateway.settings.data_dir
    # The transcript is sealed once the file is made, after the login gave up.
    gateway.wait_for_sealed_transcripts()
    monkeypatch.undo()
    events = replay_events(data_dir, only_session(data_dir, "agent-1"))
    assert [e["kind"] for e in events] == ["session.start", "session.end"]
    assert events[-1]["data"] == {
        "reason": "the session ended during login",
        "error": None,
        "statements": 0,
    }


@pytest.mark.timeout(120)
def test_a_gateway_killed_mid_session_leaves_an_unsealed_transcript_with_its_decisions(
    tmp_path: Path, local_pg: PgServer, pg_database: str, accounts: Callable[[], dict[int, int]]
) -> None:
    with served_gateway(tmp_path, local_pg, pg_database, [rule()]) as served:
        token = served.token("agent-1", "data-agents")
        dsn = (
            f"host=127.0.0.1 port={served.pg_port} dbname=orders user=agent "
            f"password={token} sslmode=require"
        )
        agent = psycopg.connect(dsn, autocommit=True)
        write = Background(lambda: agent.execute("update accounts set balance = 8 where id = 4"))
        dba = served.token("dba-1", "oncall-dba")

        def held() -> list[dict[str, object]]:
            listed = served.airlock(
                "approvals", "list", "--json", "--server", served.api_url, "--token", dba
            )
            return json.loads(listed.stdout or "[]") if listed.returncode == 0 else []

        request_id = str(wait_until(held, PATIENCE_S, "the write held", every_s=0.1)[0]["id"])
        approved = served.airlock("approve", request_id, "--server", served.api_url, "--token", dba)
        assert approved.returncode == 0, approved.stderr
        write.result()
        agent.execute("select 1")

        def flushed() -> bool:  # by the recorder's periodic flush
            listed = airlock("sessions", "list", "--data-dir", str(tmp_path / "data"))
            if "agent-1" not in listed.stdout:
                return False
            session = only_session(tmp_path / "data", "agent-1")
            replayed = airlock("replay", session, "--data-dir", str(tmp_path / "data"), "--json")
            # Open, so unsealed: replay shows it and exits 1 (it does not verify yet).
            return replayed.returncode == 1 and '"select 1"' in replayed.stdout

        wait_until(flushed, PATIENCE_S, "the last statement on disk", every_s=0.2)
        served.process.send_signal(signal.SIGKILL)
        served.process.wait(timeout=10)
        agent.close()
    data_dir = tmp_path / "data"
    session = only_session(data_dir, "agent-1")
    verified = airlock("verify", session, "--data-dir", str(data_dir))
    assert verified.returncode == 1
    assert "unsealed" in verified.stdout
    events = replay_events(data_dir, session, verifies=False)
    decided = [e for e in events if e["kind"] == "approval.decided"]
    assert [d["data"]["id"] for d in decided] == [request_id]  # type: ignore[index]


@pytest.mark.timeout(180)
def test_the_demo_runs_end_to_end(local_pg: PgServer) -> None:
    upstream = f"postgresql://{local_pg.superuser}@{local_pg.host}:{local_pg.port}/postgres"
    demo = subprocess.run(
        [*AIRLOCK, "demo", "--upstream", upstream],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = demo.stdout
    assert "statement held for approval: request apr_" in out
    assert "agent-1's write ran: UPDATE 1" in out
    assert "order 2 is now refunded" in out
    # The role split of docs/security.md: reads as the read role, the approved write as
    # the write role (the server's own current_user), then the read role again; a write
    # the classifier misses meets the server's permission error.
    reader = re.search(r"^ +(airlock_demo_[0-9a-f]{6})_reader$", out, re.MULTILINE)
    assert reader is not None, out
    run = reader.group(1)
    assert f"the server ran it as {run}_writer" in out
    assert f"{run}_reader   (back on the read role)" in out
    assert "the server refused it: error: permission denied for table orders" in out
    assert "valid" in out
    assert "sealed" in out
    with psycopg.connect(local_pg.dsn("postgres"), autocommit=True) as admin:
        left = admin.execute(
            "select rolname from pg_roles where rolname like %s", (f"{run}%",)
        ).fetchall()
        assert left == []  # the demo drops its roles


@pytest.mark.timeout(60)
def test_auditors_read_transcripts_through_the_api_and_nobody_else_does(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(rules=[rule()], auditors=["auditors"])
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        agent.execute("select count(*) from accounts")
    gateway.wait_for_sealed_transcripts()
    auditor = gateway.issuer.mint(sub="audit-1", groups=("auditors",))
    status, body = api(gateway, "GET", "/api/v1/sessions?identity=agent-1", auditor)
    assert status == 200
    [session] = body["sessions"]
    assert (session["subject"], session["target"], session["sealed"]) == ("agent-1", "orders", True)
    status, body = api(
        gateway, "GET", f"/api/v1/sessions/{session['session_id']}/transcript", auditor
    )
    assert status == 200
    assert body["verification"]["status"] == "valid"
    assert "select count(*) from accounts" in [
        e["data"].get("sql") for e in body["events"] if e["kind"] == "statement"
    ]
    status, _ = api(gateway, "GET", "/api/v1/sessions", agent_token(gateway))
    assert status == 403
    status, _ = api(gateway, "GET", "/api/v1/sessions/bad.id!/transcript", auditor)
    assert status == 400
    status, _ = api(gateway, "GET", "/api/v1/sessions/" + "0" * 32 + "/transcript", auditor)
    assert status == 404


@pytest.mark.timeout(60)
@pytest.mark.parametrize("on_failure", ["refuse", "allow"])
def test_a_session_that_cannot_be_recorded_is_refused_unless_configured_otherwise(
    gateway_factory: Callable[..., RunningGateway],
    accounts: Callable[[], dict[int, int]],
    on_failure: str,
) -> None:
    gateway = gateway_factory(rules=[rule()], recording={"on_failure": on_failure})
    transcripts = gateway.settings.data_dir / "transcripts"
    shutil.rmtree(transcripts, ignore_errors=True)
    transcripts.write_text("a file where the transcripts directory should be")
    dsn = gateway.dsn(agent_token(gateway))
    if on_failure == "refuse":
        with pytest.raises(psycopg.OperationalError, match="cannot record this session"):
            psycopg.connect(dsn)
    else:
        with psycopg.connect(dsn, autocommit=True) as agent:  # no BEGIN: two statements
            assert agent.execute("select 1").fetchone() == (1,)
            assert agent.execute("select 2").fetchone() == (2,)
            # Unrecorded, but still counted.
            statements = gateway.metric_total("airlock_statements_total")
        assert statements == 2


@pytest.mark.timeout(60)
def test_result_rows_are_captured_when_configured_up_to_the_sessions_cap(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(
        rules=[rule()], recording={"capture_rows": True, "max_row_bytes": 200}
    )
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        agent.execute("select id, balance from accounts where id <= 2 order by id")
        agent.execute("select id, balance from accounts order by id")  # more than the cap
    gateway.wait_for_sealed_transcripts()
    data_dir = gateway.settings.data_dir
    events = replay_events(data_dir, only_session(data_dir, "agent-1"))
    results = [e["data"] for e in events if e["kind"] == "result"]
    first, second = results[0], results[1]
    assert first["tag"] == "SELECT 2"  # type: ignore[index]
    # As for MySQL: `rows` counts the rows, `row_data` holds the bodies.
    assert first["rows"] == 2  # type: ignore[index]
    rows = first["row_data"]  # type: ignore[index]
    assert len(rows) == 2
    # DataRow bodies: 2 columns, then each value as length + text
    assert "$base64" in json.dumps(rows[0])
    assert second["rows_cut"] is True  # type: ignore[index]
    assert second["tag"] == "SELECT 60"  # type: ignore[index]
    assert "rows" not in second  # type: ignore[operator]  # cut short: the bodies kept are not the count


@pytest.mark.timeout(60)
def test_metrics_count_sessions_statements_approvals_and_cache_hits(
    gateway_factory: Callable[..., RunningGateway], accounts: Callable[[], dict[int, int]]
) -> None:
    gateway = gateway_factory(rules=[rule(hold="reject")])
    with psycopg.connect(gateway.dsn(agent_token(gateway)), autocommit=True) as agent:
        for account in (1, 2, 3):
            agent.execute(f"select balance from accounts where id = {account}")  # noqa: S608
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            agent.execute("update accounts set balance = 0 where id = 1")
        samples = gateway.metrics()
        statements = gateway.metric_total("airlock_statements_total")
    assert samples["airlock_sessions"] == "1"
    assert statements >= 4
    assert samples['airlock_approval_requests{state="pending"}'] == "1"
    # three selects differing only in a literal: one parse, then fingerprint hits
    assert float(samples['airlock_classifier_cache_total{dialect="postgres",outcome="hit"}']) >= 2
    assert samples['airlock_classifier_cache_total{dialect="mysql",outcome="hit"}'] == "0"


@pytest.mark.timeout(180)
def test_the_demo_runs_on_a_throwaway_cluster_when_no_server_is_given() -> None:
    demo = subprocess.run(
        [*AIRLOCK, "demo", "--throwaway"], capture_output=True, text=True, timeout=150
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "started one with initdb" in demo.stdout
    assert "agent-1's write ran: UPDATE 1" in demo.stdout
    assert "_reader   (back on the read role)" in demo.stdout
    assert "sealed" in demo.stdout
