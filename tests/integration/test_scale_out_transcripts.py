"""Transcripts with three gateways on one store: each gateway ships its sealed
transcripts into the store, and `airlock sessions list`, `verify`, `replay` and `export`
through any gateway's API (--server) see every gateway's sessions, verified on the
auditor's side with the key of the gateway that sealed each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from proxy.approvals.store_pg import TranscriptStore, migrate
from proxy.recording import signing
from proxy.recording.shipping import TranscriptShipper
from proxy.recording.writer import Recorder
from tests.integration.test_scale_out import Cluster, _kill_store_connections
from tests.integration.test_scale_out import cluster as cluster  # the fixture
from tests.integration.test_web import Browser
from tests.proxy.test_audit_cli import path_of
from tests.proxy.test_transcript import END, START_TS, Clock, record_session, start_data
from tests.support.gateway import REPOSITORY
from tests.support.pgcluster import PgServer, create_database, drop_database
from tests.support.waiting import PATIENCE_S, wait_until


def _auditor(cluster: Cluster) -> str:
    return cluster.issuer.mint(sub="audit-1", groups=("auditors",))


def _airlock(
    cluster: Cluster, via: str, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`airlock ARGS --server <via's API>` with an auditor's token (in the environment)."""
    server = f"http://127.0.0.1:{cluster.gateways[via].api_port}"
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args, "--server", server],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPOSITORY,
        env={
            **os.environ,
            "PYTHONPATH": str(REPOSITORY),
            "AIRLOCK_TOKEN": token or _auditor(cluster),
        },
        check=False,
    )


def _session_on(cluster: Cluster, via: str, row: int) -> None:
    """An agent's session through one gateway: a read, then the session ends (sealed)."""
    with psycopg.connect(cluster.gateways[via].dsn("agent", cluster.agent())) as agent:
        found = agent.execute("select balance from accounts where id = %s", (row,)).fetchone()
        assert found == (100,)


def _listed(cluster: Cluster, via: str, count: int) -> list[dict[str, object]]:
    def listed() -> list[dict[str, object]] | None:
        run = _airlock(cluster, via, "sessions", "list", "--json")
        assert run.returncode == 0, run.stderr
        sessions = [json.loads(line) for line in run.stdout.splitlines()]
        shipped = [s for s in sessions if s.get("gateway")]
        return sessions if len(shipped) >= count else None

    return wait_until(listed, PATIENCE_S, f"{count} sessions shipped into the store")


def test_every_gateway_s_sessions_are_listed_verified_and_exported_through_any_gateway(
    cluster: Cluster, tmp_path: Path
) -> None:
    for row, via in enumerate(("A", "B", "C"), start=1):
        _session_on(cluster, via, row)
    sessions = _listed(cluster, "C", 3)
    assert len(sessions) == 3
    assert len({s["gateway"] for s in sessions}) == 3  # one from each gateway
    assert all(s["sealed"] and s["subject"] == "agent-1" for s in sessions)
    ids = [str(s["session_id"]) for s in sessions]

    table = _airlock(cluster, "B", "sessions", "list")
    assert table.returncode == 0, table.stderr
    assert all(session_id in table.stdout for session_id in ids)

    for session_id in ids:
        run = _airlock(cluster, "C", "verify", session_id)
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.startswith(f"valid     {session_id}"), run.stdout
    everything = _airlock(cluster, "A", "verify", "--all")
    assert everything.returncode == 0, everything.stdout + everything.stderr
    assert "3 transcripts: 3 valid" in everything.stdout

    replay = _airlock(cluster, "A", "replay", ids[2])
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "select balance from accounts where id = " in replay.stdout
    assert "-- verified" in replay.stdout

    export = _airlock(cluster, "C", "export")
    assert export.returncode == 0, export.stderr
    events = [json.loads(line) for line in export.stdout.splitlines()]
    for session_id in ids:
        kinds = [e["kind"] for e in events if e["session_id"] == session_id]
        assert kinds[0] == "session.start"
        assert "statement" in kinds
        assert kinds[-2:] == ["session.end", "session.sealed"]

    # A key pinned by the auditor: A's own public key verifies A's session only.
    [from_a] = [s for s in sessions if str(s["path"]).startswith(str(tmp_path / "A"))]
    key = tmp_path / "a.pub.pem"
    key.write_bytes((tmp_path / "A" / "data" / "keys" / "transcript_ed25519.pub.pem").read_bytes())
    pinned = _airlock(cluster, "B", "verify", "--all", "--public-key", str(key))
    assert pinned.returncode == 1
    assert f"valid     {from_a['session_id']}" in pinned.stdout
    assert pinned.stdout.count("signed by another key") == 2


def test_a_transcript_altered_in_the_store_fails_verification(cluster: Cluster) -> None:
    _session_on(cluster, "A", 3)
    [session] = _listed(cluster, "B", 1)
    session_id = str(session["session_id"])
    with psycopg.connect(cluster.store_dsn, autocommit=True) as store:
        row = store.execute(
            "select transcript from transcripts where session_id = %s", (session_id,)
        ).fetchone()
        assert row is not None
        original = bytes(row[0])
        assert b"id = $1" in original or b"where id" in original
        altered = original.replace(b"accounts", b"accountz", 1)
        assert altered != original
        store.execute(
            "update transcripts set transcript = %s where session_id = %s", (altered, session_id)
        )
    run = _airlock(cluster, "C", "verify", session_id)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.startswith(f"invalid   {session_id}"), run.stdout
    replay = _airlock(cluster, "B", "replay", session_id)
    assert replay.returncode == 1
    assert "-- DOES NOT VERIFY" in replay.stdout
    # The gateway's own verdict (the web page's, GET /api/v1/sessions/ID) says so too.
    status, body = cluster.gateways["B"].api(
        "GET", f"/api/v1/sessions/{session_id}", _auditor(cluster)
    )
    assert status == 200, body
    assert body["verification"]["status"] == "invalid"


def test_a_transcript_sealed_while_the_store_is_down_is_shipped_when_it_is_back(
    cluster: Cluster,
) -> None:
    log = cluster.gateways["B"].log
    _kill_store_connections(cluster, allow=False)
    try:
        _session_on(cluster, "B", 4)  # reads relay with the store down
        wait_until(
            lambda: "shipping transcripts" in log.read_text(),
            PATIENCE_S,
            "B to fail to ship the transcript",
        )
        assert "retrying" in log.read_text()
    finally:
        _kill_store_connections(cluster, allow=True)
    [session] = _listed(cluster, "A", 1)
    assert session["gateway"] is not None
    run = _airlock(cluster, "C", "verify", str(session["session_id"]))
    assert run.returncode == 0, run.stdout + run.stderr


def test_only_auditors_read_transcripts_through_the_api(cluster: Cluster) -> None:
    _session_on(cluster, "A", 5)
    _listed(cluster, "A", 1)
    refused = _airlock(cluster, "B", "sessions", "list", token=cluster.agent())
    assert refused.returncode == 1
    assert "403" in refused.stderr or "auditor" in refused.stderr
    agent_token = cluster.agent()
    assert agent_token not in refused.stderr


@pytest.mark.parametrize("command", [["verify", "not/an/id"], ["replay", "x.airlock"]])
def test_a_file_is_not_a_session_id_through_the_api(command: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "proxy.cli", *command, "--server", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY), "AIRLOCK_TOKEN": "t.o.k"},
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert "not a session id" in run.stderr


@dataclass
class _Page:
    """What tests.integration.test_web.Browser needs of a gateway: its API's URL."""

    api_url: str


def test_the_web_page_lists_and_replays_every_gateway_s_sessions(
    cluster: Cluster, tmp_path: Path
) -> None:
    for row, via in ((6, "A"), (7, "B")):
        _session_on(cluster, via, row)
    sessions = _listed(cluster, "C", 2)
    browser = Browser(_Page(f"http://127.0.0.1:{cluster.gateways['C'].api_port}"))  # type: ignore[arg-type]
    browser.sign_in(_auditor(cluster))
    status, page = browser.get("/sessions")
    assert status == 200, page
    for session in sessions:
        assert str(session["session_id"])[:12] in page
    [from_a] = [s for s in sessions if str(s["path"]).startswith(str(tmp_path / "A"))]
    session_id = str(from_a["session_id"])
    status, page = browser.get(f"/sessions/{session_id}")
    assert status == 200, page
    assert "verified: " in page
    assert "select balance from accounts where id = " in page
    status, raw = browser.download(f"/sessions/{session_id}/transcript")
    assert status == 200
    assert raw == Path(str(from_a["path"])).read_bytes()


def test_a_gateway_starting_ships_what_its_data_dir_holds_once(
    local_pg: PgServer, tmp_path: Path
) -> None:
    """The catch-up at start: every sealed transcript the store lacks, once; never an
    unsealed one; shipping again changes nothing."""
    data_dir = tmp_path / "data"
    key = signing.load_or_create(data_dir)
    recorder = Recorder(data_dir, key, clock=Clock(START_TS))
    record_session(sealed := recorder.open("a" * 32, start_data()))
    sealed.seal(END)
    record_session(open_one := recorder.open("b" * 32, start_data()))
    open_one.flush()
    database = create_database(local_pg)
    try:
        with psycopg.connect(local_pg.dsn(database), autocommit=True, row_factory=dict_row) as db:
            migrate(db)
            db.execute(
                "INSERT INTO gateways (id, host, pid, started_at, heartbeat_at, key_id,"
                " public_key_pem) VALUES ('gw_1', 'h', 1, 0, 0, %s, %s)",
                (key.key_id, key.public_key_pem()),
            )
        store = TranscriptStore(local_pg.dsn(database), "gw_1")
        shipper = TranscriptShipper(store, data_dir)
        shipper._catch_up()
        shipper._catch_up()
        assert shipper.shipped == 1
        assert [row["session_id"] for row in store.summaries()] == ["a" * 32]
        found = store.sealed("a" * 8)  # a prefix, as on a data_dir
        assert found is not None
        assert bytes(found["transcript"]) == path_of(data_dir, "a" * 32).read_bytes()
        assert found["public_key_pem"] == key.public_key_pem()
        assert store.sealed("b" * 32) is None
        store.close()
    finally:
        drop_database(local_pg, database)
