"""Checks that the PostgreSQL fixtures in ``tests/support/pgcluster.py`` do what they say."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.support.capture_pg_vectors import (
    Direction,
    RecordingForwarder,
    label_stream,
    read_hex_file,
)
from tests.support.pgcluster import (
    PgServer,
    ThrowawayCluster,
    create_database,
    drop_database,
    make_dsn,
    throwaway_database,
)


def _database_exists(server: PgServer, dbname: str) -> bool:
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as admin:
        row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone()
    return row is not None


def test_make_dsn_quotes_values_libpq_would_misread() -> None:
    dsn = make_dsn(host="127.0.0.1", port=5432, password="it's a \\pw", options=None, user="")
    assert dsn == "host=127.0.0.1 port=5432 password='it\\'s a \\\\pw' user=''"
    parsed = psycopg.conninfo.conninfo_to_dict(dsn)
    assert parsed["password"] == "it's a \\pw"
    assert parsed["user"] == ""


def test_pg_server_dsn_defaults_to_superuser(local_pg: PgServer) -> None:
    parsed = psycopg.conninfo.conninfo_to_dict(local_pg.dsn("db1", application_name="x y"))
    assert parsed["dbname"] == "db1"
    assert parsed["user"] == local_pg.superuser
    assert parsed["application_name"] == "x y"


def test_pg_database_is_usable(local_pg: PgServer, pg_database: str) -> None:
    assert pg_database.startswith("airlock_test_")
    with psycopg.connect(local_pg.dsn(pg_database)) as session:
        session.execute("CREATE TABLE t (n int)")
        session.execute("INSERT INTO t VALUES (1), (2)")
        row = session.execute("SELECT current_database(), sum(n) FROM t").fetchone()
    assert row == (pg_database, 3)


def test_session_pg_database_exists(local_pg: PgServer, session_pg_database: str) -> None:
    assert session_pg_database.startswith("airlock_test_")
    assert _database_exists(local_pg, session_pg_database)


def test_throwaway_database_is_dropped_even_with_open_sessions(local_pg: PgServer) -> None:
    with throwaway_database(local_pg) as dbname:
        assert _database_exists(local_pg, dbname)
        # A session still connected must not stop the drop (WITH (FORCE)).
        lingering = psycopg.connect(local_pg.dsn(dbname))
    try:
        assert not _database_exists(local_pg, dbname)
    finally:
        lingering.close()


def test_create_and_drop_database_names_are_unique(local_pg: PgServer) -> None:
    first, second = create_database(local_pg), create_database(local_pg)
    try:
        assert first != second
    finally:
        drop_database(local_pg, first)
        drop_database(local_pg, second)


def _login(dsn: str) -> str:
    with psycopg.connect(dsn, connect_timeout=5) as session:
        row = session.execute("SELECT current_user || '@' || current_database()").fetchone()
    assert row is not None
    value: str = row[0]
    return value


def _stored_verifier(cluster: ThrowawayCluster) -> str:
    with psycopg.connect(cluster.socket_dsn()) as admin:
        row = admin.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", [cluster.role]
        ).fetchone()
    assert row is not None
    verifier: str = row[0]
    return verifier


def test_scram_cluster_accepts_right_password(scram_cluster: ThrowawayCluster) -> None:
    assert _login(scram_cluster.dsn(sslmode="disable")) == "airlock_svc@app"
    assert _stored_verifier(scram_cluster).startswith("SCRAM-SHA-256$")


def test_scram_cluster_offers_tls(scram_cluster: ThrowawayCluster) -> None:
    assert scram_cluster.ca_cert_path is not None
    dsn = scram_cluster.dsn(sslmode="verify-full", sslrootcert=str(scram_cluster.ca_cert_path))
    with psycopg.connect(dsn, connect_timeout=5) as session:
        assert session.pgconn.ssl_in_use


def test_scram_cluster_refuses_wrong_password(scram_cluster: ThrowawayCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _login(scram_cluster.dsn(password="wrong", sslmode="disable"))


def test_scram_cluster_speaks_scram(scram_cluster: ThrowawayCluster) -> None:
    # require_auth makes libpq refuse any other method the server might ask for.
    dsn = scram_cluster.dsn(sslmode="disable", require_auth="scram-sha-256")
    assert _login(dsn) == "airlock_svc@app"


def test_md5_cluster_accepts_right_password(md5_cluster: ThrowawayCluster) -> None:
    assert _login(md5_cluster.dsn(require_auth="md5")) == "airlock_svc@app"
    assert _stored_verifier(md5_cluster).startswith("md5")


def test_md5_cluster_refuses_wrong_password(md5_cluster: ThrowawayCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _login(md5_cluster.dsn(password="wrong"))


def test_tls_cluster_refuses_plain_connections(tls_cluster: ThrowawayCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        _login(tls_cluster.dsn(sslmode="disable"))


def test_tls_cluster_accepts_verify_full(tls_cluster: ThrowawayCluster) -> None:
    assert tls_cluster.ca_cert_path is not None
    for host in ("127.0.0.1", "localhost"):
        dsn = tls_cluster.dsn(
            sslmode="verify-full", sslrootcert=str(tls_cluster.ca_cert_path)
        ).replace("host=127.0.0.1", f"host={host}")
        with psycopg.connect(dsn, connect_timeout=5) as session:
            assert session.pgconn.ssl_in_use
            row = session.execute("SELECT current_user").fetchone()
        assert row == ("airlock_svc",)


def test_tls_cluster_refuses_wrong_password(tls_cluster: ThrowawayCluster) -> None:
    assert tls_cluster.ca_cert_path is not None
    dsn = tls_cluster.dsn(
        password="wrong", sslmode="verify-full", sslrootcert=str(tls_cluster.ca_cert_path)
    )
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _login(dsn)


def test_throwaway_cluster_cleans_up() -> None:
    with ThrowawayCluster("password") as cluster:
        base_dir = cluster.base_dir
        assert _login(cluster.dsn(require_auth="password")) == "airlock_svc@app"
        port = cluster.port
    assert not base_dir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            make_dsn(host="127.0.0.1", port=port, dbname="postgres", user="postgres"),
            connect_timeout=2,
        )


VECTOR_DIR = Path(__file__).resolve().parents[1] / "protocols" / "postgres" / "vectors"


def test_recording_forwarder_records_both_directions(local_pg: PgServer) -> None:
    with RecordingForwarder(local_pg.host, local_pg.port) as forwarder:
        via = PgServer("127.0.0.1", forwarder.port, local_pg.superuser, local_pg.password)
        with psycopg.connect(via.dsn("postgres", sslmode="disable"), autocommit=True) as session:
            session.execute("SELECT 1")
            client_raw, server_raw = forwarder.recording(0).since((0, 0))
    assert label_stream(client_raw, "client->server") == [
        "StartupMessage(3.0)",
        "Query('SELECT 1')",
    ]
    server_labels = label_stream(server_raw, "server->client")
    assert server_labels[0] == "AuthenticationOk"
    assert server_labels[-3:] == ["DataRow", "CommandComplete(SELECT 1)", "ReadyForQuery(I)"]


def test_vector_files_are_well_formed() -> None:
    files = sorted(VECTOR_DIR.glob("*.hex"))
    assert files, f"no vectors in {VECTOR_DIR}"
    manifest = (VECTOR_DIR / "MANIFEST.md").read_text()
    for path in files:
        lines = path.read_text().splitlines()
        direction: Direction = "server->client" if path.name.startswith("be_") else "client->server"
        assert lines[0].startswith(f"# {direction}: "), path.name
        assert all(len(line) == 64 for line in lines[1:-1]), path.name
        assert 0 < len(lines[-1]) <= 64, path.name
        raw = read_hex_file(path)
        assert label_stream(raw, direction), path.name  # frames cleanly, no leftover bytes
        assert f"`{path.name}`" in manifest, path.name
