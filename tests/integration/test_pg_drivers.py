"""Real PostgreSQL drivers through the gateway to a real server.

psql, psycopg 3, asyncpg and pgbench connect to a running gateway exactly as
agents would (TLS, a JWT as password) and check what a user would check:
results and types, errors with their SQLSTATE, rows that actually reached the
table (read back over a direct connection), COPY in both directions, LISTEN/
NOTIFY, and cancellation that reaches the right backend and only that one.
The gateway forwards every statement in this version, so nothing here is held.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import decimal
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import psycopg.errors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from tests.support.gateway import RunningGateway
from tests.support.pgcluster import PgServer
from tests.support.waiting import PATIENCE_S, wait_until

#: The protocol code of a CancelRequest (PostgreSQL docs, "Message Formats").
CANCEL_REQUEST_CODE = 80877102
#: How long a cancel may take to land before a test calls it lost.
CANCEL_DEADLINE_S = 10.0
BACKENDS_BY_APPLICATION_NAME = "select pid from pg_stat_activity where application_name = %s"

Connection = psycopg.Connection[TupleRow]


# --------------------------------------------------------------------------
# Helpers


@pytest.fixture
def token(gateway: RunningGateway) -> str:
    return gateway.issuer.mint(sub="agent-1", groups=("data-agents",))


@pytest.fixture
def direct_dsn(local_pg: PgServer, pg_database: str) -> str:
    """The throwaway database behind the gateway, reached directly (no gateway)."""
    return local_pg.dsn(pg_database)


def direct_execute(direct_dsn: str, sql: str) -> None:
    with psycopg.connect(direct_dsn, autocommit=True) as direct:
        direct.execute(sql.encode())


def direct_rows(direct_dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[TupleRow]:
    with psycopg.connect(direct_dsn, autocommit=True) as direct:
        return direct.execute(sql.encode(), params).fetchall()


def active_queries(direct_dsn: str, application_name: str) -> list[str]:
    """Queries still running in backends opened with this application_name."""
    rows = direct_rows(
        direct_dsn,
        "select query from pg_stat_activity "
        "where application_name = %s and state = 'active' and pid <> pg_backend_pid()",
        (application_name,),
    )
    return [str(row[0]) for row in rows]


def wait_for_sleep(direct_dsn: str, application_name: str) -> None:
    """Block until the backend of `application_name` is inside pg_sleep."""
    wait_until(
        lambda: any("pg_sleep" in query for query in active_queries(direct_dsn, application_name)),
        PATIENCE_S,
        f"{application_name} to start its pg_sleep",
    )


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without PG* variables (they would change libpq's defaults)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PG")}
    env.update(extra)
    return env


def run_psql(
    gateway: RunningGateway,
    token: str,
    *args: str,
    stdin: str | None = None,
    **dsn_params: str,
) -> subprocess.CompletedProcess[str]:
    """psql -X (no psqlrc), unaligned and tuples-only, against the gateway."""
    return subprocess.run(
        ["psql", "-X", "-A", "-t", "-d", gateway.dsn(token, **dsn_params), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )


def connect(gateway: RunningGateway, token: str, **kwargs: Any) -> Connection:
    return psycopg.connect(gateway.dsn(token), **kwargs)


async def asyncpg_connect(gateway: RunningGateway, token: str, **kwargs: Any) -> Any:
    return await asyncpg.connect(**gateway.asyncpg_params(token), timeout=10, **kwargs)


def unrelated_certificate_pem() -> bytes:
    """A self-signed CA certificate that has nothing to do with the gateway's."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the gateway")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def send_cancel_request(port: int, process_id: int, secret_key: int) -> bytes:
    """A raw 16-byte CancelRequest over plain TCP; returns whatever came back before close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw_socket:
        raw_socket.sendall(struct.pack("!iiii", 16, CANCEL_REQUEST_CODE, process_id, secret_key))
        received = b""
        while chunk := raw_socket.recv(1024):
            received += chunk
        return received


# --------------------------------------------------------------------------
# psql


def test_psql_sslmode_require_multi_statement(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    result = run_psql(
        gateway,
        token,
        "-c",
        "create table notes (id int primary key, body text); "
        "insert into notes values (1, 'one'), (2, 'two'); "
        "select id || ':' || body from notes order by id",
    )
    assert result.returncode == 0, result.stderr
    # psql 15 prints every result of a multi-statement string, command tags included.
    assert result.stdout.splitlines() == ["CREATE TABLE", "INSERT 0 2", "1:one", "2:two"]
    assert direct_rows(direct_dsn, "select id, body from notes order by id") == [
        (1, "one"),
        (2, "two"),
    ]


def test_psql_reports_tls_to_the_gateway(gateway: RunningGateway, token: str) -> None:
    result = run_psql(gateway, token, "-c", r"\conninfo")
    assert result.returncode == 0, result.stderr
    assert "SSL connection" in result.stdout


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_psql_verify_full_with_gateway_certificate(
    gateway: RunningGateway, token: str, host: str
) -> None:
    result = run_psql(
        gateway,
        token,
        "-c",
        "select current_database(), 40 + 2",
        sslmode="verify-full",
        sslrootcert=str(gateway.cert_file),
        host=host,
    )
    assert result.returncode == 0, result.stderr
    # The client asked for target "orders"; the upstream database is the throwaway one.
    database, answer = result.stdout.strip().split("|")
    assert database.startswith("airlock_test_")
    assert answer == "42"


def test_psql_verify_full_refuses_an_untrusted_certificate(
    gateway: RunningGateway, token: str, tmp_path: Path
) -> None:
    # A CA the gateway's certificate was not issued by.
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(unrelated_certificate_pem())
    result = run_psql(
        gateway, token, "-c", "select 1", sslmode="verify-full", sslrootcert=str(other_ca)
    )
    assert result.returncode == 2
    assert "certificate verify failed" in result.stderr


def test_psql_copy_from_stdin_and_to_stdout(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    direct_execute(direct_dsn, "create table parcels (id int primary key, label text, kg numeric)")
    rows_in = "".join(f"{n}\tparcel {n}\t{n}.5\n" for n in range(1, 501))
    loaded = run_psql(gateway, token, "-c", r"\copy parcels from stdin", stdin=rows_in)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "COPY 500"
    assert direct_rows(direct_dsn, "select count(*), sum(kg) from parcels") == [
        (500, decimal.Decimal("125500.0"))
    ]

    dumped = run_psql(
        gateway,
        token,
        "-c",
        r"\copy (select id, label from parcels where id <= 3 order by id) to stdout with csv",
    )
    assert dumped.returncode == 0, dumped.stderr
    assert dumped.stdout.splitlines() == ["1,parcel 1", "2,parcel 2", "3,parcel 3"]


@pytest.mark.timeout(60)
def test_psql_ctrl_c_cancels_the_query(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    psql = subprocess.Popen(
        ["psql", "-X", "-d", gateway.dsn(token, application_name="psql-ctrl-c")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert psql.stdin is not None
        psql.stdin.write("select pg_sleep(30);\n")
        psql.stdin.flush()
        wait_for_sleep(direct_dsn, "psql-ctrl-c")
        started = time.monotonic()
        # psql's SIGINT handler sends a CancelRequest (PQcancel: plain TCP, no TLS).
        psql.send_signal(signal.SIGINT)
        wait_until(
            lambda: not any("pg_sleep" in q for q in active_queries(direct_dsn, "psql-ctrl-c")),
            CANCEL_DEADLINE_S,
            "psql's Ctrl-C to cancel pg_sleep",
        )
        assert time.monotonic() - started < CANCEL_DEADLINE_S
        stdout, stderr = psql.communicate(timeout=20)
    finally:
        if psql.poll() is None:
            psql.kill()
            psql.wait()
    assert "Cancel request sent" in stderr
    assert "ERROR:  canceling statement due to user request" in stderr
    assert stdout == ""


def test_psql_syntax_error(gateway: RunningGateway, token: str) -> None:
    result = run_psql(gateway, token, "-c", "selec 1")
    assert result.returncode == 1
    assert 'ERROR:  syntax error at or near "selec"' in result.stderr


def test_psql_script_with_a_transaction_commits(
    gateway: RunningGateway, token: str, direct_dsn: str, tmp_path: Path
) -> None:
    direct_execute(direct_dsn, "create table ledger (id int primary key, amount int not null)")
    script = tmp_path / "ok.sql"
    script.write_text(
        "begin;\n"
        "insert into ledger values (1, 100);\n"
        "insert into ledger values (2, -40);\n"
        "select sum(amount) from ledger;\n"
        "commit;\n"
    )
    result = run_psql(gateway, token, "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "60"
    assert direct_rows(direct_dsn, "select id, amount from ledger order by id") == [
        (1, 100),
        (2, -40),
    ]


def test_psql_script_stops_on_error_and_rolls_back(
    gateway: RunningGateway, token: str, direct_dsn: str, tmp_path: Path
) -> None:
    direct_execute(direct_dsn, "create table ledger (id int primary key, amount int not null)")
    script = tmp_path / "fails.sql"
    script.write_text(
        "begin;\n"
        "insert into ledger values (1, 100);\n"
        "insert into ledger values (1, 100);\n"  # duplicate key
        "insert into ledger values (3, 7);\n"
        "commit;\n"
    )
    result = run_psql(gateway, token, "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script))
    # 3: an error in a script with ON_ERROR_STOP set.
    assert result.returncode == 3
    assert "duplicate key value violates unique constraint" in result.stderr
    assert f"{script}:3: ERROR:" in result.stderr
    assert direct_rows(direct_dsn, "select count(*) from ledger") == [(0,)]


# --------------------------------------------------------------------------
# psycopg 3


def test_psycopg_simple_query_without_params(gateway: RunningGateway, token: str) -> None:
    with connect(gateway, token, autocommit=True) as agent:
        cursor = agent.execute("select 1 as one, 'x''y' as quoted; select 2, null::text")
        assert cursor.fetchall() == [(1, "x'y")]
        assert cursor.nextset()
        assert cursor.fetchall() == [(2, None)]
        assert not cursor.nextset()
        # Comment-only text gets EmptyQueryResponse, not an error.
        empty = agent.execute("-- nothing")
        assert empty.pgresult is not None
        assert empty.pgresult.status == psycopg.pq.ExecStatus.EMPTY_QUERY


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_psycopg_extended_with_params(
    gateway: RunningGateway, token: str, direct_dsn: str, binary: bool
) -> None:
    direct_execute(
        direct_dsn,
        "create table things (id int primary key, name text, blob bytea, price numeric(12,4), "
        "seen_at timestamptz, doc jsonb, note text)",
    )
    seen_at = datetime.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=datetime.UTC)
    blob = bytes(range(256)) + b"\x00\x00'\\"
    name = 'O\'Reilly; drop table things; -- "quoted" \\ back'
    price = decimal.Decimal("12345678.1234")
    doc = {"a": [1, 2, {"b": None}], "quote": "it's"}
    with connect(gateway, token) as agent:
        with agent.cursor(binary=binary) as cursor:
            cursor.execute(
                "insert into things values (%s, %s, %s, %s, %s, %s, %s)",
                (1, name, blob, price, seen_at, Jsonb(doc), None),
            )
            cursor.execute(
                "select name, blob, price, seen_at, doc, note from things where id = %s", (1,)
            )
            assert cursor.fetchone() == (name, blob, price, seen_at, doc, None)
            cursor.execute("select %s::int + %s::int, %s::text is null", (40, 2, None))
            assert cursor.fetchone() == (42, True)
        agent.commit()
    assert direct_rows(direct_dsn, "select name, blob, price, seen_at, doc, note from things") == [
        (name, blob, price, seen_at, doc, None)
    ]


def test_psycopg_pipeline_many_inserts_then_select(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    direct_execute(direct_dsn, "create table events (id int primary key, kind text)")
    with connect(gateway, token, autocommit=True) as agent:
        with agent.pipeline(), agent.cursor() as cursor:
            for n in range(200):
                cursor.execute("insert into events values (%s, %s)", (n, f"kind-{n % 3}"))
            cursor.execute("select count(*), count(distinct kind) from events")
            assert cursor.fetchone() == (200, 3)
        with agent.pipeline():
            counts = [agent.execute("select %s::int * 2", (n,)) for n in range(50)]
        assert [cursor.fetchone() for cursor in counts] == [(n * 2,) for n in range(50)]
    assert direct_rows(direct_dsn, "select count(*) from events") == [(200,)]


def test_psycopg_pipeline_error_leaves_connection_usable(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    direct_execute(direct_dsn, "create table events (id int primary key)")
    with connect(gateway, token, autocommit=True) as agent:

        def failing_pipeline() -> None:
            with agent.pipeline():
                agent.execute("insert into events values (1)")
                agent.execute("select 1 / 0")
                agent.execute("insert into events values (2)")

        with pytest.raises(psycopg.errors.DivisionByZero):
            failing_pipeline()
        # The server runs a pipeline up to Sync as one implicit transaction: all rolled back.
        assert agent.execute("select count(*) from events").fetchone() == (0,)
        with agent.pipeline():
            agent.execute("insert into events values (3)")
            agent.execute("insert into events values (4)")
        assert agent.execute("select 'still usable'").fetchone() == ("still usable",)
    assert direct_rows(direct_dsn, "select id from events order by id") == [(3,), (4,)]


def test_psycopg_server_side_prepared_statements(gateway: RunningGateway, token: str) -> None:
    with connect(gateway, token, autocommit=True) as agent:
        for n in range(100):
            row = agent.execute("select %s::int * 3, %s::text", (n, f"n{n}"), prepare=True)
            assert row.fetchone() == (n * 3, f"n{n}")
        prepared = agent.execute(
            "select name, statement from pg_prepared_statements where name like '_pg3_%%'"
        ).fetchall()
        assert any("$1::int * 3" in statement for _, statement in prepared), prepared


def test_psycopg_prepare_threshold_zero(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    direct_execute(direct_dsn, "create table hits (id int primary key, n int)")
    with connect(gateway, token, autocommit=True, prepare_threshold=0) as agent:
        for n in range(100):
            agent.execute("insert into hits values (%s, %s)", (n, n * n))
            assert agent.execute("select n from hits where id = %s", (n,)).fetchone() == (n * n,)
        names = agent.execute("select count(*) from pg_prepared_statements").fetchone()
        assert names is not None
        assert names[0] >= 2
    assert direct_rows(direct_dsn, "select count(*), sum(n) from hits") == [
        (100, sum(n * n for n in range(100)))
    ]


def test_psycopg_copy_from_stdin_and_to_stdout(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    direct_execute(direct_dsn, "create table readings (id int primary key, sensor text, v float8)")
    with connect(gateway, token) as agent:
        with agent.cursor() as cursor:
            with cursor.copy("copy readings (id, sensor, v) from stdin") as copy:
                for n in range(1000):
                    copy.write_row((n, f"sensor\t{n % 7}", n / 4))
            assert cursor.rowcount == 1000
        agent.commit()
    assert direct_rows(direct_dsn, "select count(*), sum(v) from readings") == [
        (1000, sum(n / 4 for n in range(1000)))
    ]
    with connect(gateway, token) as agent, agent.cursor() as cursor:
        with cursor.copy(
            "copy (select id, sensor from readings where id < 3 order by id) to stdout"
        ) as copy:
            rows = list(copy.rows())
        assert rows == [("0", "sensor\t0"), ("1", "sensor\t1"), ("2", "sensor\t2")]


def test_psycopg_binary_copy(gateway: RunningGateway, token: str, direct_dsn: str) -> None:
    direct_execute(direct_dsn, "create table samples (id int8, payload bytea, at timestamptz)")
    at = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    with connect(gateway, token) as agent:
        with (
            agent.cursor() as cursor,
            cursor.copy("copy samples from stdin (format binary)") as copy,
        ):
            copy.set_types(["int8", "bytea", "timestamptz"])
            for n in range(300):
                copy.write_row((n, bytes([n % 256]) * 10, at))
        agent.commit()
        with (
            agent.cursor() as cursor,
            cursor.copy(
                "copy (select id, payload from samples order by id) to stdout (format binary)"
            ) as copy,
        ):
            copy.set_types(["int8", "bytea"])
            rows = list(copy.rows())
    assert len(rows) == 300
    assert rows[5] == (5, b"\x05" * 10)
    assert direct_rows(direct_dsn, "select count(*), min(at), max(at) from samples") == [
        (300, at, at)
    ]


@pytest.mark.timeout(60)
def test_psycopg_cancel_from_another_thread(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    # cancel_safe (libpq 17+ PQcancelStart) negotiates TLS on the cancel connection too.
    # The legacy cancel() is not used here: it holds the GIL while it waits for the
    # gateway to close, and this gateway runs in the same interpreter. psql's Ctrl-C
    # below covers that plain-TCP path.
    with connect(gateway, token, autocommit=True, application_name="cancel-me") as agent:

        def cancel_when_sleeping() -> None:
            wait_for_sleep(direct_dsn, "cancel-me")
            agent.cancel_safe(timeout=5)

        canceller = threading.Thread(target=cancel_when_sleeping)
        canceller.start()
        started = time.monotonic()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                agent.execute("select pg_sleep(30)")
        finally:
            canceller.join(timeout=20)
        assert time.monotonic() - started < CANCEL_DEADLINE_S
        assert agent.execute("select 'after cancel'").fetchone() == ("after cancel",)
    assert active_queries(direct_dsn, "cancel-me") == []


def test_psycopg_notices_and_parameter_status(gateway: RunningGateway, token: str) -> None:
    notices: list[tuple[str | None, str | None]] = []
    with connect(gateway, token, autocommit=True) as agent:
        agent.add_notice_handler(lambda d: notices.append((d.severity, d.message_primary)))
        agent.execute("do $$ begin raise notice 'hello from %', 'plpgsql'; end $$")
        assert notices == [("NOTICE", "hello from plpgsql")]
        # SET changes arrive as ParameterStatus messages, relayed to the driver.
        agent.execute("set application_name = 'renamed-agent'")
        assert agent.info.parameter_status("application_name") == "renamed-agent"
        agent.execute("set timezone = 'Asia/Tokyo'")
        assert agent.info.parameter_status("TimeZone") == "Asia/Tokyo"
        at = agent.execute("select '2024-01-01 00:00:00+00'::timestamptz").fetchone()
        assert at is not None
        assert str(at[0].tzinfo) == "Asia/Tokyo"


@pytest.mark.timeout(120)
def test_psycopg_large_values_and_results(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    direct_execute(direct_dsn, "create table blobs (id int primary key, payload bytea)")
    payload = secrets.token_bytes(8 * 1024 * 1024)
    with connect(gateway, token, autocommit=True) as agent:
        # One 8 MiB Bind message, many TCP segments.
        agent.execute("insert into blobs values (%s, %s)", (1, payload))
        row = agent.execute("select payload from blobs where id = %s", (1,)).fetchone()
        assert row == (payload,)
        # A result much larger than any socket buffer: flow control, not buffering.
        total = agent.execute(
            "select count(*), sum(length(x)) from "
            "(select repeat(md5(g::text), 1000) as x from generate_series(1, 20000) as g) s"
        ).fetchone()
        assert total == (20000, 20000 * 32000)
        with agent.cursor() as cursor:
            cursor.execute(
                "select g, repeat(md5(g::text), 100) from generate_series(1, 50000) as g"
            )
            received = 0
            for number, text in cursor:
                assert len(text) == 3200
                received += number
        assert received == sum(range(1, 50001))
        with agent.cursor() as cursor, cursor.copy("copy blobs (id, payload) from stdin") as copy:
            for n in range(2, 50002):
                copy.write_row((n, b"x" * 100))
    assert direct_rows(direct_dsn, "select count(*) from blobs") == [(50001,)]


@pytest.mark.timeout(60)
def test_psycopg_listen_notify(gateway: RunningGateway, token: str, direct_dsn: str) -> None:
    with connect(gateway, token, autocommit=True) as agent:
        agent.execute("listen airlock_orders")
        with psycopg.connect(direct_dsn, autocommit=True) as direct:
            notifier_pid = direct.info.backend_pid
            direct.execute("notify airlock_orders, 'order 42 shipped'")
            direct.execute("select pg_notify('airlock_orders', 'order 43 shipped')")
        received = list(agent.notifies(timeout=10, stop_after=2))
    assert [(n.channel, n.payload) for n in received] == [
        ("airlock_orders", "order 42 shipped"),
        ("airlock_orders", "order 43 shipped"),
    ]
    assert all(n.pid == notifier_pid for n in received)


def test_psycopg_rolled_back_transaction_leaves_no_rows(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    direct_execute(direct_dsn, "create table drafts (id int primary key)")
    with connect(gateway, token, autocommit=True) as agent:
        with agent.transaction(force_rollback=True):
            agent.execute("insert into drafts select generate_series(1, 10)")
            assert agent.execute("select count(*) from drafts").fetchone() == (10,)

        def duplicate_insert() -> None:
            with agent.transaction():
                agent.execute("insert into drafts values (1)")
                agent.execute("insert into drafts values (1)")

        with pytest.raises(psycopg.errors.UniqueViolation):
            duplicate_insert()
        assert agent.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert direct_rows(direct_dsn, "select count(*) from drafts") == [(0,)]


def test_psycopg_autocommit_off_with_commit(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    direct_execute(direct_dsn, "create table orders_ (id int primary key, total numeric)")
    with connect(gateway, token) as agent:
        assert not agent.autocommit
        agent.execute("insert into orders_ values (1, 9.99), (2, 20)")
        assert agent.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        # Not committed yet: invisible to anyone else.
        assert direct_rows(direct_dsn, "select count(*) from orders_") == [(0,)]
        agent.commit()
        assert direct_rows(direct_dsn, "select count(*) from orders_") == [(2,)]
        agent.execute("insert into orders_ values (3, 1)")
        agent.rollback()
    assert direct_rows(direct_dsn, "select id from orders_ order by id") == [(1,), (2,)]


# --------------------------------------------------------------------------
# asyncpg


async def direct_execute_async(direct_dsn: str, sql: str) -> None:
    async with await psycopg.AsyncConnection.connect(direct_dsn, autocommit=True) as direct:
        await direct.execute(sql.encode())


async def direct_fetch(direct_dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[TupleRow]:
    async with await psycopg.AsyncConnection.connect(direct_dsn, autocommit=True) as direct:
        cursor = await direct.execute(sql.encode(), params)
        return await cursor.fetchall()


async def test_asyncpg_fetch_with_args(gateway: RunningGateway, token: str) -> None:
    agent = await asyncpg_connect(gateway, token)
    try:
        at = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
        rows = await agent.fetch(
            "select $1::int + 1 as n, $2::text as t, $3::bytea as b, $4::numeric as d, "
            "$5::timestamptz as at, $6::text is null as missing",
            41,
            "it's",
            b"\x00\xff",
            decimal.Decimal("1.50"),
            at,
            None,
        )
        assert len(rows) == 1
        assert dict(rows[0]) == {
            "n": 42,
            "t": "it's",
            "b": b"\x00\xff",
            "d": decimal.Decimal("1.50"),
            "at": at,
            "missing": True,
        }
        assert await agent.fetchval("select count(*) from generate_series(1, $1::int)", 500) == 500
        # Without args asyncpg uses the simple protocol, which runs several statements.
        await agent.execute("create temp table scratch (n int); insert into scratch values (7)")
        assert await agent.fetchval("select n from scratch") == 7
        with pytest.raises(asyncpg.exceptions.UndefinedTableError) as raised:
            await agent.fetch("select * from no_such_table where id = $1", 1)
        assert raised.value.sqlstate == "42P01"
        assert await agent.fetchval("select 'usable'") == "usable"
    finally:
        await agent.close()


async def test_asyncpg_prepared_statement_many_times(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    await direct_execute_async(direct_dsn, "create table stock (sku int primary key, qty int)")
    agent = await asyncpg_connect(gateway, token)
    try:
        insert = await agent.prepare("insert into stock values ($1, $2)")
        lookup = await agent.prepare("select qty from stock where sku = $1")
        for sku in range(200):
            await insert.fetch(sku, sku * 2)
            assert await lookup.fetchval(sku) == sku * 2
        assert [a.name for a in lookup.get_attributes()] == ["qty"]
    finally:
        await agent.close()
    assert await direct_fetch(direct_dsn, "select count(*), sum(qty) from stock") == [
        (200, sum(sku * 2 for sku in range(200)))
    ]


async def test_asyncpg_transactions(gateway: RunningGateway, token: str, direct_dsn: str) -> None:
    await direct_execute_async(
        direct_dsn, "create table accounts (id int primary key, balance int)"
    )
    agent = await asyncpg_connect(gateway, token)
    try:
        async with agent.transaction():
            await agent.execute("insert into accounts values ($1, $2)", 1, 100)
            await agent.execute("insert into accounts values ($1, $2)", 2, 50)

        async def abandoned_transfer() -> None:
            async with agent.transaction():
                await agent.execute("update accounts set balance = balance - 70 where id = 1")
                await agent.execute("update accounts set balance = balance + 70 where id = 2")
                raise RuntimeError("abandon the transfer")

        async def overdraft() -> None:
            async with agent.transaction():
                await agent.execute(
                    "alter table accounts add constraint positive check (balance >= 0)"
                )
                await agent.execute("update accounts set balance = -1 where id = 1")

        with pytest.raises(RuntimeError, match="abandon"):
            await abandoned_transfer()
        with pytest.raises(asyncpg.exceptions.CheckViolationError):
            await overdraft()
        assert not agent.is_in_transaction()
        assert await agent.fetch("select id, balance from accounts order by id") == [
            (1, 100),
            (2, 50),
        ]
    finally:
        await agent.close()
    assert await direct_fetch(direct_dsn, "select id, balance from accounts order by id") == [
        (1, 100),
        (2, 50),
    ]


async def test_asyncpg_executemany(gateway: RunningGateway, token: str, direct_dsn: str) -> None:
    await direct_execute_async(direct_dsn, "create table tags (id int primary key, tag text)")
    agent = await asyncpg_connect(gateway, token)
    try:
        await agent.executemany(
            "insert into tags values ($1, $2)", [(n, f"tag-{n}") for n in range(500)]
        )
        with pytest.raises(asyncpg.exceptions.UniqueViolationError):
            await agent.executemany("insert into tags values ($1, $2)", [(1000, "a"), (1, "b")])
        assert await agent.fetchval("select count(*) from tags") == 500
    finally:
        await agent.close()
    # executemany runs in one implicit transaction: the failed batch left nothing behind.
    assert await direct_fetch(direct_dsn, "select count(*), max(id) from tags") == [(500, 499)]


async def test_asyncpg_copy_records_and_copy_from_query(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    await direct_execute_async(
        direct_dsn, "create table metrics (id int primary key, name text, value float8, raw bytea)"
    )
    records = [(n, f"metric {n}", n * 0.5, bytes([n % 256, 0])) for n in range(2000)]
    agent = await asyncpg_connect(gateway, token)
    try:
        status = await agent.copy_records_to_table("metrics", records=records)
        assert status == "COPY 2000"
        chunks: list[bytes] = []

        async def collect(chunk: bytes) -> None:
            chunks.append(chunk)

        status = await agent.copy_from_query(
            "select id, name from metrics where id < $1 order by id",
            3,
            output=collect,
            format="csv",
        )
        assert status == "COPY 3"
        assert b"".join(chunks).decode().splitlines() == ["0,metric 0", "1,metric 1", "2,metric 2"]
    finally:
        await agent.close()
    assert await direct_fetch(direct_dsn, "select count(*), sum(value) from metrics") == [
        (2000, sum(n * 0.5 for n in range(2000)))
    ]


async def test_asyncpg_cursor_with_prefetch(gateway: RunningGateway, token: str) -> None:
    agent = await asyncpg_connect(gateway, token)
    try:
        async with agent.transaction():
            # Each batch is an Execute with a row limit: the portal is suspended in between.
            seen = [
                record["n"]
                async for record in agent.cursor(
                    "select n from generate_series(1, $1::int) as n", 1000, prefetch=37
                )
            ]
            assert seen == list(range(1, 1001))
            cursor = await agent.cursor("select n from generate_series(1, 100) as n order by n")
            assert [r["n"] for r in await cursor.fetch(5)] == [1, 2, 3, 4, 5]
            await cursor.forward(10)
            assert await cursor.fetchrow() == (16,)
            assert [r["n"] for r in await cursor.fetch(3)] == [17, 18, 19]
        assert await agent.fetchval("select 1") == 1
    finally:
        await agent.close()


@pytest.mark.timeout(60)
async def test_asyncpg_pool_reuses_sessions(gateway: RunningGateway, token: str) -> None:
    # Releasing a connection runs asyncpg's reset (UNLISTEN *, RESET ALL, ...) each time.
    async with asyncpg.create_pool(
        **gateway.asyncpg_params(token),
        min_size=2,
        max_size=4,
    ) as pool:

        async def one(n: int) -> int:
            async with pool.acquire() as pooled:
                await pooled.execute("set application_name = 'pooled'")
                value: int = await pooled.fetchval("select $1::int * 10", n)
                return value

        results = await asyncio.gather(*(one(n) for n in range(40)))
        assert results == [n * 10 for n in range(40)]
        assert await pool.fetchval("select current_setting('application_name')") != "pooled"


@pytest.mark.timeout(60)
async def test_asyncpg_listener(gateway: RunningGateway, token: str, direct_dsn: str) -> None:
    agent = await asyncpg_connect(gateway, token)
    received: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    try:
        await agent.add_listener(
            "airlock_events",
            lambda _conn, _pid, channel, payload: received.put_nowait((channel, payload)),
        )
        await direct_execute_async(direct_dsn, "notify airlock_events, 'first'")
        await direct_execute_async(direct_dsn, "notify airlock_events, 'second'")
        got = [await asyncio.wait_for(received.get(), timeout=10) for _ in range(2)]
        assert got == [("airlock_events", "first"), ("airlock_events", "second")]
    finally:
        await agent.close()


@pytest.mark.timeout(60)
async def test_asyncpg_timeout_cancels_the_backend(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    agent = await asyncpg_connect(gateway, token, server_settings={"application_name": "apg-sleep"})
    try:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await agent.fetch("select pg_sleep(10)", timeout=0.5)
        assert await agent.fetchval("select 'usable'") == "usable"
        # The backend stops sleeping well before the 10 s sleep could have ended by itself.
        while await direct_fetch(
            direct_dsn,
            "select pid, query from pg_stat_activity where application_name = 'apg-sleep' "
            "and state = 'active' and query like '%%pg_sleep%%'",
        ):
            assert time.monotonic() - started < 8, "pg_sleep still runs upstream"
            await asyncio.sleep(0.05)
    finally:
        await agent.close()


# --------------------------------------------------------------------------
# pgbench


@pytest.fixture
def pgbench_tables(direct_dsn: str) -> None:
    """pgbench's tables, made directly in the throwaway database (scale 1: 100 000 accounts)."""
    completed = subprocess.run(
        ["pgbench", "-i", "-s", "1", "-q", direct_dsn],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )
    assert completed.returncode == 0, completed.stderr


def run_pgbench(
    gateway: RunningGateway, token: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pgbench", "-h", "127.0.0.1", "-p", str(gateway.pg_port), "-U", "agent", *args, "orders"],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(PGPASSWORD=token, PGSSLMODE="require"),
        check=False,
    )


def assert_pgbench_ok(completed: subprocess.CompletedProcess[str], transactions: int) -> None:
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert (
        f"number of transactions actually processed: {transactions}/{transactions}"
        in completed.stdout
    ), completed.stdout
    failed = re.search(r"number of failed transactions: (\d+)", completed.stdout)
    assert failed is not None, completed.stdout
    assert failed.group(1) == "0"


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("pgbench_tables")
@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_select_only(gateway: RunningGateway, token: str, mode: str) -> None:
    completed = run_pgbench(gateway, token, "-n", "-S", "-t", "200", "-M", mode)
    assert f"query mode: {mode}" in completed.stdout
    assert_pgbench_ok(completed, 200)


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("pgbench_tables")
def test_pgbench_concurrent_clients(gateway: RunningGateway, token: str) -> None:
    completed = run_pgbench(
        gateway, token, "-n", "-S", "-t", "200", "-M", "prepared", "-c", "4", "-j", "2"
    )
    assert "number of clients: 4" in completed.stdout
    assert_pgbench_ok(completed, 800)


# --------------------------------------------------------------------------
# Cancel isolation


@pytest.mark.timeout(90)
def test_cancel_reaches_only_its_own_session(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    with (
        connect(gateway, token, autocommit=True, application_name="sleeper-1") as first,
        connect(gateway, token, autocommit=True, application_name="sleeper-2") as second,
        concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool,
    ):
        first_sleep = pool.submit(first.execute, "select pg_sleep(30)")
        second_sleep = pool.submit(second.execute, "select pg_sleep(30)")
        wait_for_sleep(direct_dsn, "sleeper-1")
        wait_for_sleep(direct_dsn, "sleeper-2")

        first.cancel_safe(timeout=5)
        with pytest.raises(psycopg.errors.QueryCanceled):
            first_sleep.result(timeout=CANCEL_DEADLINE_S)
        time.sleep(0.5)  # not a wait for an event: a window in which nothing may happen
        assert not second_sleep.done()
        assert any("pg_sleep" in query for query in active_queries(direct_dsn, "sleeper-2"))
        assert first.execute("select 1").fetchone() == (1,)

        second.cancel_safe(timeout=5)
        with pytest.raises(psycopg.errors.QueryCanceled):
            second_sleep.result(timeout=CANCEL_DEADLINE_S)
        assert second.execute("select 2").fetchone() == (2,)


@pytest.mark.timeout(60)
def test_guessed_cancel_keys_cancel_nothing(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    with (
        connect(gateway, token, autocommit=True, application_name="guess-target") as agent,
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool,
    ):
        real_pid = agent.execute("select pg_backend_pid()").fetchone()
        assert real_pid is not None
        sleep = pool.submit(agent.execute, "select pg_sleep(3), 'slept'")
        wait_for_sleep(direct_dsn, "guess-target")
        guesses = [
            (agent.info.backend_pid, 0),  # the key's (real, public) pid, a wrong secret
            (agent.info.backend_pid, secrets.randbits(31)),
            (real_pid[0], -1),
            (secrets.randbits(31), secrets.randbits(31)),
        ]
        for process_id, secret_key in guesses:
            # The gateway answers a CancelRequest with nothing and closes, like PostgreSQL.
            assert send_cancel_request(gateway.pg_port, process_id, secret_key) == b""
        time.sleep(0.5)  # not a wait for an event: a window in which nothing may happen
        assert any("pg_sleep" in query for query in active_queries(direct_dsn, "guess-target"))
        cursor = sleep.result(timeout=20)
        assert cursor.fetchone() == ("", "slept")
        assert agent.execute("select 'fine'").fetchone() == ("fine",)


@pytest.mark.parametrize("how", ["terminate", "abrupt"])
def test_closing_the_client_ends_the_backend(
    gateway: RunningGateway, token: str, direct_dsn: str, how: str
) -> None:
    agent = connect(gateway, token, autocommit=True, application_name="short-lived")
    try:
        agent.execute("select 1")
        assert len(direct_rows(direct_dsn, BACKENDS_BY_APPLICATION_NAME, ("short-lived",))) == 1
        if how == "abrupt":
            # Drop the TCP connection without a Terminate message (a crashed agent).
            with socket.socket(fileno=os.dup(agent.fileno())) as raw_socket:
                raw_socket.shutdown(socket.SHUT_RDWR)
    finally:
        agent.close()
    wait_until(
        lambda: direct_rows(direct_dsn, BACKENDS_BY_APPLICATION_NAME, ("short-lived",)) == [],
        PATIENCE_S,
        "the upstream backend to close",
    )
    gateway.wait_for_no_sessions()


def test_client_sees_the_real_backend_pid(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    with connect(gateway, token, autocommit=True, application_name="pid-check") as agent:
        key_pid = agent.info.backend_pid
        row = agent.execute("select pg_backend_pid()").fetchone()
        assert row == (key_pid,)
        # And it is the backend the server shows for this session.
        assert direct_rows(
            direct_dsn, "select pid from pg_stat_activity where application_name = 'pid-check'"
        ) == [(key_pid,)]
        listener = gateway.gateway.postgres
        assert listener is not None
        assert gateway.call(lambda: [k for k in listener.cancel_keys if k[0] == key_pid])
    # The key dies with the session.
    wait_until(
        lambda: not gateway.call(lambda: [k for k in listener.cancel_keys if k[0] == key_pid]),
        PATIENCE_S,
        "the session's cancel key to go",
    )


@pytest.mark.timeout(60)
def test_another_sessions_secret_cancels_nothing(
    gateway: RunningGateway, token: str, direct_dsn: str
) -> None:
    """The pid is public (pg_stat_activity): only the secret half makes a key, and it is
    each session's own."""
    with (
        connect(gateway, token, autocommit=True, application_name="victim") as victim,
        connect(gateway, token, autocommit=True) as other,
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool,
    ):
        listener = gateway.gateway.postgres
        assert listener is not None
        other_pid = other.info.backend_pid
        other_keys = gateway.call(lambda: [k for k in listener.cancel_keys if k[0] == other_pid])
        assert len(other_keys) == 1
        sleep = pool.submit(victim.execute, "select pg_sleep(2), 'slept'")
        wait_for_sleep(direct_dsn, "victim")
        # The victim's pid with the other session's (valid) secret.
        assert (
            send_cancel_request(gateway.pg_port, victim.info.backend_pid, other_keys[0][1]) == b""
        )
        time.sleep(0.5)  # not a wait for an event: a window in which nothing may happen
        assert any("pg_sleep" in query for query in active_queries(direct_dsn, "victim"))
        assert sleep.result(timeout=20).fetchone() == ("", "slept")


@pytest.mark.timeout(60)
def test_psycopg_recognises_its_own_notifications(gateway: RunningGateway, token: str) -> None:
    with connect(gateway, token, autocommit=True) as agent:
        agent.execute("listen airlock_self")
        agent.execute("notify airlock_self, 'mine'")
        received = list(agent.notifies(timeout=10, stop_after=1))
        assert [(n.channel, n.payload) for n in received] == [("airlock_self", "mine")]
        # How a client tells its own notifications from others' (psycopg's docs).
        assert received[0].pid == agent.info.backend_pid


@pytest.mark.timeout(60)
async def test_asyncpg_recognises_its_own_notifications(
    gateway: RunningGateway, token: str
) -> None:
    agent = await asyncpg_connect(gateway, token)
    try:
        received: asyncio.Queue[tuple[int, str, str]] = asyncio.Queue()
        await agent.add_listener(
            "airlock_self",
            lambda _conn, pid, channel, payload: received.put_nowait((pid, channel, payload)),
        )
        await agent.execute("notify airlock_self, 'mine'")
        pid, channel, payload = await asyncio.wait_for(received.get(), 10)
        assert (channel, payload) == ("airlock_self", "mine")
        assert pid == agent.get_server_pid()
        assert await agent.fetchval("select pg_backend_pid()") == agent.get_server_pid()
    finally:
        await agent.close()


@pytest.mark.parametrize("count", [32768, 65535])
@pytest.mark.parametrize("prepare", [False, True], ids=["unnamed", "prepared"])
def test_psycopg_statement_with_more_than_32767_parameters(
    gateway: RunningGateway, token: str, count: int, prepare: bool
) -> None:
    """Parse, Bind and ParameterDescription counts are unsigned 16-bit: up to 65,535."""
    sql = "select array_length(array[" + ",".join(["%s"] * (count - 1)) + "]::int[], 1), %s::text"
    with connect(gateway, token, autocommit=True) as agent:
        row = agent.execute(sql.encode(), [*range(count - 1), "last"], prepare=prepare).fetchone()
        assert row == (count - 1, "last")
        assert agent.execute("select 'still here'").fetchone() == ("still here",)
