"""`airlock serve` on examples/airlock.yaml, for the framework, driver and pool tests.

One gateway process for the whole test session, run from this work tree with the
example's own file: its rules (reads allow, write and unknown approve with `hold: wait`
and a 5 minute hold_timeout, DDL and admin deny), its identity settings, the dev
issuer and the read/write roles of its `orders` target. Only what must differ on a
test machine is changed: the listen ports, data_dir, and the upstreams, which are a
throwaway PostgreSQL database (`orders`, with roles of its own) and a throwaway
MariaDB database (`shop`).

Each test mints tokens for a subject of its own. What a user would check is the
approvals store: `ExampleGateway.requests_by(subject)` lists every approval request
that subject's statements made, in any state. A statement from a subject named
`reader-...` that is held would keep its driver waiting for five minutes, so a
watcher denies it at once (its driver gets the denial as an error) and the request
stays in the store for the test to report.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from proxy.config import dev_issuer_url, load_settings
from proxy.http.dev_issuer import DevIssuer
from tests.support.gateway import REPOSITORY, free_port
from tests.support.mariadb import MariaDb
from tests.support.pgcluster import PgServer, throwaway_database
from tests.support.waiting import PATIENCE_S, wait_until

EXAMPLE = REPOSITORY / "examples" / "airlock.yaml"
#: The subjects whose held statements the watcher denies at once (see the docstring).
READER_PREFIX = "reader-"

#: The `orders` database: column names that are also type names or keywords (`name`,
#: `type`, `date`, `comment`, ...), as real schemas have them.
PG_SCHEMA = """
CREATE TABLE products (
    id serial PRIMARY KEY,
    name text NOT NULL,
    type text NOT NULL,
    date date,
    price numeric(10, 2) NOT NULL,
    comment text,
    tags jsonb,
    created_at timestamp NOT NULL DEFAULT '2024-01-01 00:00:00'
);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    product_id int NOT NULL REFERENCES products (id),
    quantity int NOT NULL,
    status text NOT NULL,
    placed_at timestamptz NOT NULL
);
CREATE VIEW order_totals AS
    SELECT o.id, p.name, o.quantity * p.price AS total FROM orders o JOIN products p
    ON p.id = o.product_id;
INSERT INTO products (name, type, date, price, comment, tags) VALUES
    ('apple', 'fruit', '2024-01-02', 1.20, 'crisp', '{"colour": "red"}'),
    ('pear', 'fruit', '2024-01-03', 1.50, NULL, '{"colour": "green"}'),
    ('leek', 'vegetable', '2024-02-01', 0.90, 'long', NULL),
    ('bread', 'bakery', NULL, 2.75, NULL, '[]');
INSERT INTO orders (product_id, quantity, status, placed_at) VALUES
    (1, 3, 'shipped', '2024-03-01 10:00+00'),
    (2, 1, 'pending', '2024-03-02 11:30+00'),
    (1, 5, 'pending', '2024-03-03 09:15+00'),
    (4, 2, 'cancelled', '2024-03-04 16:45+00');
"""

#: The `shop` database on MariaDB.
MYSQL_SCHEMA = [
    "CREATE TABLE products (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(40) NOT NULL,"
    " type VARCHAR(20) NOT NULL, price DECIMAL(10, 2) NOT NULL)",
    "INSERT INTO products (name, type, price) VALUES ('apple', 'fruit', 1.20),"
    " ('pear', 'fruit', 1.50), ('leek', 'vegetable', 0.90)",
]


@dataclass
class ExampleGateway:
    """The running `airlock serve` and what a test needs to reach it."""

    config: Path
    data_dir: Path
    pg_port: int
    mysql_port: int
    api_port: int
    process: subprocess.Popen[bytes]
    log: Path
    pg_database: str
    mysql_database: str
    direct_pg_dsn: str
    issuer: DevIssuer
    denied_reads: list[dict[str, Any]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def cert_file(self) -> Path:
        """The self-signed certificate the gateway generated (no tls section)."""
        return self.data_dir / "tls" / "server.crt"

    def token(self, subject: str, *groups: str) -> str:
        """What `airlock dev-token --config ... --sub S --groups G` prints."""
        return self.issuer.mint(subject, groups or ("data-agents",))

    def reader(self, name: str) -> tuple[str, str]:
        """A fresh agent subject whose held statements are denied at once, and its token."""
        subject = f"{READER_PREFIX}{name}-{secrets.token_hex(3)}"
        return subject, self.token(subject)

    def pg_dsn(self, token: str, **params: str) -> str:
        """A libpq DSN for `orders`, over TLS as drivers default to (sslmode=prefer)."""
        parts = {
            "host": "127.0.0.1",
            "port": str(self.pg_port),
            "dbname": "orders",
            "user": "agent",
            "password": token,
            "connect_timeout": "10",
            **params,
        }
        return " ".join(f"{k}='{v}'" for k, v in parts.items())

    def pg_url(self, scheme: str, token: str) -> str:
        """A URL for `orders` (SQLAlchemy, LangChain): the token needs no quoting."""
        return f"{scheme}://agent:{token}@127.0.0.1:{self.pg_port}/orders"

    def api(self, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 (the gateway's own http URL)
            self.api_url + path,
            method="GET" if body is None else "POST",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    def approvals(self, state: str = "all") -> list[dict[str, Any]]:
        """The approvals store as an approver of the example (oncall-dba) sees it."""
        dba = self.token("dba-frameworks", "oncall-dba")
        return list(self.api(f"/api/v1/approvals?state={state}", dba)["approvals"])

    def requests_by(self, subject: str) -> list[dict[str, Any]]:
        return [a for a in self.approvals() if a["requester"]["subject"] == subject]

    def assert_nothing_held(self, subject: str) -> None:
        """No statement of `subject` waited for a DBA (or was denied for being held)."""
        held = [
            f"{a['class']} ({'; '.join(a['reasons'])}): {a['sql']}"
            for a in self.requests_by(subject)
        ]
        assert held == [], "held for approval:\n" + "\n".join(held)

    def statements_by(self, subject: str) -> list[dict[str, Any]]:
        """Every statement of `subject`'s sessions as its transcripts recorded it ({sql,
        class, decision, ...}), read through the sessions API as an auditor would, once
        all of those sessions have ended (close the connections and pools first)."""
        auditor = self.token("auditor-frameworks", "auditors")
        path = f"/api/v1/sessions?identity={urllib.parse.quote(subject)}"

        def ended() -> list[dict[str, Any]]:
            sessions = list(self.api(path, auditor)["sessions"])
            return sessions if sessions and all(s["ended_at"] for s in sessions) else []

        sessions = wait_until(ended, PATIENCE_S, f"every session of {subject} to end")
        return [
            event["data"]
            for session in sessions
            for event in self.api(f"/api/v1/sessions/{session['session_id']}/transcript", auditor)[
                "events"
            ]
            if event["kind"] == "statement"
        ]

    def assert_reads_passed(self, subject: str) -> list[dict[str, Any]]:
        """Nothing `subject` sent was held or refused: no approval request, and every
        statement in its transcripts allowed. Returns the statements."""
        self.assert_nothing_held(subject)
        statements = self.statements_by(subject)
        stopped = [
            f"{s['class']} {s['decision']} ({'; '.join(s.get('reasons', []))}): {s['sql']}"
            for s in statements
            if s["decision"] != "allow"
        ]
        assert stopped == [], "not allowed:\n" + "\n".join(stopped)
        return statements

    def pending_request(self, subject: str) -> dict[str, Any]:
        """Wait for the one pending request of `subject`; return it."""

        def found() -> list[dict[str, Any]]:
            return [a for a in self.approvals("pending") if a["requester"]["subject"] == subject]

        [request] = wait_until(found, PATIENCE_S, f"a held statement of {subject}")
        return request

    def deny(self, request_id: str, reason: str = "not now") -> dict[str, Any]:
        dba = self.token("dba-frameworks", "oncall-dba")
        answer: dict[str, Any] = self.api(
            f"/api/v1/approvals/{request_id}/deny", dba, {"reason": reason}
        )
        return answer

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def pg_rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows read straight from the upstream (no gateway), as a DBA would check."""
        with psycopg.connect(self.direct_pg_dsn, autocommit=True) as direct:
            return direct.execute(query.encode(), params).fetchall()


def _deny_held_reads(gateway: ExampleGateway, stop: threading.Event) -> None:
    """Deny at once what a `reader-` subject's driver would otherwise wait 5 minutes for."""
    while not stop.wait(0.2):
        with contextlib.suppress(OSError, ValueError, urllib.error.HTTPError):
            for request in gateway.approvals("pending"):
                if request["requester"]["subject"].startswith(READER_PREFIX):
                    gateway.deny(request["id"], "the test expected reads only")
                    gateway.denied_reads.append(request)


@contextlib.contextmanager
def _pg_roles(local_pg: PgServer, database: str) -> Iterator[tuple[str, str, str]]:
    """The example's three roles (login, read, write), named for this run, with its grants."""
    suffix = secrets.token_hex(4)
    login, reader, writer = (f"airlock_{r}_{suffix}" for r in ("svc", "reader", "writer"))
    with psycopg.connect(local_pg.dsn(database), autocommit=True) as admin:
        admin.execute(PG_SCHEMA.encode())
        for statement in (
            "CREATE ROLE {reader} NOLOGIN",
            "CREATE ROLE {writer} NOLOGIN",
            "CREATE ROLE {login} LOGIN NOINHERIT",
            "GRANT USAGE ON SCHEMA public TO {reader}, {writer}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {writer}",
            "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {writer}",
            "GRANT {reader}, {writer} TO {login}",
        ):
            names = {"login": login, "reader": reader, "writer": writer}
            admin.execute(
                sql.SQL(statement).format(**{k: sql.Identifier(v) for k, v in names.items()})
            )
    try:
        yield login, reader, writer
    finally:
        with psycopg.connect(local_pg.dsn("postgres"), autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
            for role in (login, reader, writer):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@contextlib.contextmanager
def _mysql_database(mariadb: MariaDb) -> Iterator[str]:
    name = f"airlock_fw_{secrets.token_hex(5)}"
    with mariadb.root() as root, root.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
        cursor.execute(f"GRANT ALL ON {name}.* TO '{mariadb.service_user}'@'%'")
        for statement in MYSQL_SCHEMA:
            cursor.execute(f"USE {name}")
            cursor.execute(statement)
    try:
        yield name
    finally:
        with mariadb.root() as root, root.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")


def example_document(
    data_dir: Path, ports: dict[str, int], pg_upstream: str, roles: dict[str, str], shop: str
) -> dict[str, Any]:
    """examples/airlock.yaml with this machine's ports, data_dir and upstreams."""
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    document["listen"] = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    document["data_dir"] = str(data_dir)
    document["targets"]["orders"]["upstream"] = pg_upstream
    document["targets"]["orders"]["roles"] = roles
    document["targets"]["shop"]["upstream"] = shop
    return document


@pytest.fixture(scope="session")
def example_gateway(
    local_pg: PgServer, local_mariadb: MariaDb, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExampleGateway]:
    """`airlock serve` on the example's file (see the module docstring), for the session."""
    directory = tmp_path_factory.mktemp("example-gateway")
    with (
        throwaway_database(local_pg) as pg_database,
        _pg_roles(local_pg, pg_database) as (login, reader, writer),
        _mysql_database(local_mariadb) as mysql_database,
    ):
        ports = {"postgres": free_port(), "mysql": free_port(), "api": free_port()}
        pg_upstream = f"postgresql://{login}@{local_pg.host}:{local_pg.port}/{pg_database}"
        document = example_document(
            directory / "data",
            ports,
            pg_upstream,
            {"read": reader, "write": writer},
            local_mariadb.upstream_url(mysql_database),
        )
        config = directory / "airlock.yaml"
        config.write_text(yaml.safe_dump(document))
        log = directory / "airlock.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=REPOSITORY,
                env={**os.environ, "PYTHONPATH": str(REPOSITORY), "PYTHONUNBUFFERED": "1"},
            )
        stop = threading.Event()
        try:
            api_url = f"http://127.0.0.1:{ports['api']}"

            def healthy() -> bool:
                assert process.poll() is None, "airlock serve exited:\n" + log.read_text()
                try:
                    with urllib.request.urlopen(api_url + "/healthz", timeout=1):  # noqa: S310
                        return True
                except OSError:
                    return False

            wait_until(healthy, PATIENCE_S, "airlock serve to come up", every_s=0.1)
            settings = load_settings(config)
            gateway = ExampleGateway(
                config=config,
                data_dir=settings.data_dir,
                pg_port=ports["postgres"],
                mysql_port=ports["mysql"],
                api_port=ports["api"],
                process=process,
                log=log,
                pg_database=pg_database,
                mysql_database=mysql_database,
                direct_pg_dsn=local_pg.dsn(pg_database),
                # The key the gateway made in data_dir, as `airlock dev-token` reads it.
                issuer=DevIssuer(
                    settings.data_dir, dev_issuer_url(settings.listen), settings.identity.audience
                ),
            )
            watcher = threading.Thread(
                target=_deny_held_reads, args=(gateway, stop), name="deny-held-reads", daemon=True
            )
            watcher.start()
            yield gateway
        finally:
            stop.set()
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
