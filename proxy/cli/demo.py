"""`airlock demo`: the whole story on one machine, in under a minute, with no Okta.

A gateway with its development issuer starts in front of a real PostgreSQL (the
given URL, else the local server at 127.0.0.1:5432, else a throwaway cluster made
from the machine's PostgreSQL binaries) on a fresh demo database, with the read/write
role split of docs/security.md: a read role, a write role, and a NOINHERIT login role
that is a member of both, all named for this run. An agent (psycopg, an ordinary
driver) reads, which passes and runs as the read role, and writes, which is held; an
approver lists and approves it with the `airlock` CLI; the write runs as the write
role, and the session is back on the read role after it; the session's sealed
transcript is replayed and verified. Every step is printed. The database and the
roles are dropped at the end, and roles a killed run left behind (their database
gone) are dropped at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from policy.classify import StatementClass, Verdict
from proxy.cli.demo_cluster import ClusterUnavailable, throwaway_cluster
from proxy.config import parse_settings
from proxy.recording.sessions import find_sessions
from proxy.server import Gateway

DEFAULT_UPSTREAM = "postgresql://postgres@127.0.0.1:5432/postgres"
WRITE = "UPDATE orders SET status = 'refunded' WHERE id = 2"
MISSED = "DELETE FROM orders WHERE id = 3"
#: A run's database is airlock_demo_<tag>, its roles airlock_demo_<tag>_reader, _writer, _svc.
PREFIX = "airlock_demo_"
ROLE_KINDS = ("reader", "writer", "svc")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="run the whole story (read, held write, approval, replay) locally"
    )
    demo.add_argument(
        "--upstream",
        default=None,
        help="a PostgreSQL server URL the demo may create a database on (default: "
        f"{DEFAULT_UPSTREAM}, else a throwaway cluster)",
    )
    demo.add_argument(
        "--throwaway",
        action="store_true",
        help="always run against a throwaway cluster made with initdb",
    )
    demo.add_argument("--data-dir", default=None, help="keep the demo's data here (default: temp)")
    demo.add_argument("--verbose", action="store_true", help="also show the gateway's log")
    demo.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        import psycopg  # noqa: F401  (the demo's agent)
    except ImportError:
        print("airlock demo needs psycopg: pip install 'psycopg[binary]'", file=sys.stderr)
        return 2
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)  # the story, not the gateway's log
    with contextlib.ExitStack() as stack:
        data_dir = (
            Path(args.data_dir)
            if args.data_dir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="airlock-demo-")))
        )
        upstream = args.upstream
        if args.throwaway or (upstream is None and not _reachable(DEFAULT_UPSTREAM)):
            say("== 0. no PostgreSQL at 127.0.0.1:5432 to use"
                if not args.throwaway else "== 0. a throwaway PostgreSQL cluster")  # fmt: skip
            try:
                upstream = stack.enter_context(throwaway_cluster())
            except ClusterUnavailable as error:
                say(f"airlock demo: cannot start a throwaway cluster: {error}")
                return 1
            say(f"   started one with initdb: {upstream}")
        return asyncio.run(Demo(upstream or DEFAULT_UPSTREAM, data_dir).run())
    return 1  # unreachable; for type checkers


def _reachable(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def say(text: str = "") -> None:
    print(text, flush=True)


def step(number: int, text: str) -> None:
    say()
    say(f"== {number}. {text}")


class Demo:
    def __init__(self, upstream: str, data_dir: Path) -> None:
        self.upstream = upstream.rstrip("/")
        self.data_dir = data_dir
        self.database = f"{PREFIX}{secrets.token_hex(3)}"
        self.reader, self.writer, self.login = (f"{self.database}_{k}" for k in ROLE_KINDS)
        self.password = secrets.token_urlsafe(18)  # the login role's, for password auth

    async def run(self) -> int:
        import psycopg

        step(1, f"a demo database on {self._url(database='').rstrip('/')}")
        try:
            with psycopg.connect(self.upstream, autocommit=True, connect_timeout=5) as admin:
                _drop_leftover_roles(admin)
                admin.execute(f'CREATE DATABASE "{self.database}"')
        except psycopg.Error as error:
            say(f"airlock demo: cannot reach PostgreSQL at {self.upstream}: {error}")
            say("  start it, or pass --upstream postgresql://USER@HOST:PORT/DB")
            return 1
        try:
            return await self._story()
        finally:
            with psycopg.connect(self.upstream, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
                for role in (self.login, self.reader, self.writer):
                    admin.execute(f'DROP ROLE IF EXISTS "{role}"')

    def _url(self, *, database: str, user: str | None = None, password: str = "") -> str:
        """The upstream URL with another database (and user), its query kept."""
        parts = urllib.parse.urlsplit(self.upstream)
        netloc = parts.netloc
        if user is not None:
            quoted = urllib.parse.quote(user, safe="")
            if password:
                quoted += ":" + urllib.parse.quote(password, safe="")
            netloc = f"{quoted}@{parts.netloc.rpartition('@')[2]}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, path=f"/{database}"))

    def _database_url(self) -> str:
        return self._url(database=self.database)

    async def _story(self) -> int:
        import psycopg

        with psycopg.connect(self._database_url(), autocommit=True) as admin:
            admin.execute(
                "CREATE TABLE orders (id int PRIMARY KEY, customer text, status text,"
                " changed_by text);"
                "INSERT INTO orders VALUES (1, 'ada', 'shipped'), (2, 'grace', 'paid'),"
                " (3, 'linus', 'paid');"
                # The server, not the gateway, says which role changed a row.
                "CREATE FUNCTION orders_changed_by() RETURNS trigger LANGUAGE plpgsql AS"
                " $$BEGIN NEW.changed_by := current_user; RETURN NEW; END$$;"
                "CREATE TRIGGER orders_changed_by BEFORE UPDATE ON orders"
                " FOR EACH ROW EXECUTE FUNCTION orders_changed_by()"
            )
            say(f"   created {self.database} with a table of 3 orders")
            say("   and the roles of docs/security.md (read, write, and the gateway's login):")
            for statement in self._role_statements():
                shown = statement.replace(self.password, "...")
                say(f"     {shown}")
                admin.execute(statement.encode())

        gateway = Gateway(parse_settings(self._config(), source=self.data_dir / "airlock.yaml"))
        await gateway.start()
        try:
            return await self._with_gateway(gateway)
        finally:
            await gateway.close()

    def _role_statements(self) -> list[str]:
        reader, writer, login = (f'"{r}"' for r in (self.reader, self.writer, self.login))
        return [
            f"CREATE ROLE {reader} NOLOGIN",
            f"CREATE ROLE {writer} NOLOGIN",
            f"GRANT USAGE ON SCHEMA public TO {reader}, {writer}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {writer}",
            f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {writer}",
            f"CREATE ROLE {login} LOGIN NOINHERIT PASSWORD '{self.password}'",
            f"GRANT {reader}, {writer} TO {login}",
        ]

    def _config(self) -> dict[str, Any]:
        return {
            "listen": {"postgres": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "data_dir": str(self.data_dir),
            "dev_issuer": True,
            "identity": {"audience": "api://airlock"},
            "targets": {
                "orders": {
                    "protocol": "postgres",
                    # The gateway logs in as the login role, which can do nothing itself.
                    "upstream": self._url(
                        database=self.database, user=self.login, password=self.password
                    ),
                    "roles": {"read": self.reader, "write": self.writer},
                }
            },
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
                    "hold_timeout": "2m",
                }
            ],
        }

    async def _with_gateway(self, gateway: Gateway) -> int:
        import psycopg

        issuer = gateway.dev_issuer
        assert issuer is not None
        host, port = gateway.bound["postgres"]
        api = "http://{}:{}".format(*gateway.bound["api"])
        agent_token = issuer.mint("agent-1", ["data-agents"], ttl_s=600)
        dba_token = issuer.mint("dba-1", ["oncall-dba"], ttl_s=600)
        say(f"   gateway: postgres on {host}:{port}, API on {api}, development issuer")

        step(2, "agent-1 connects with psycopg; its token is the password (TLS)")
        dsn = (
            f"host={host} port={port} dbname=orders user=agent-1 sslmode=require "
            f"password={agent_token}"
        )
        agent: psycopg.Connection[tuple[Any, ...]] = await asyncio.to_thread(
            lambda: psycopg.connect(dsn, autocommit=True)
        )
        notices: list[str] = []
        agent.add_notice_handler(lambda d: notices.append(f"{d.message_primary}"))
        try:
            step(3, "agent-1 reads: the statements pass at once, as the read role")
            say("   SELECT current_user")
            say(f"     {await asyncio.to_thread(_current_user, agent)}")
            say("   SELECT id, customer, status FROM orders ORDER BY id")
            rows = await asyncio.to_thread(
                lambda: agent.execute(
                    "SELECT id, customer, status FROM orders ORDER BY id"
                ).fetchall()
            )
            for row in rows:
                say(f"     {row}")

            step(4, "agent-1 writes: the statement is held for approval")
            say(f"   {WRITE}")
            outcome: list[object] = []
            writer = threading.Thread(target=_execute, args=(agent, WRITE, outcome))
            writer.start()
            request_id = await _pending_request(gateway)
            for notice in notices:
                say(f"   NOTICE: {notice}")
            say("   (agent-1 is waiting; the database has not seen the write)")

            step(5, "dba-1 lists pending approvals with the CLI")
            say("   $ airlock approvals list")
            await _cli(["approvals", "list", "--server", api, "--token", dba_token])

            step(6, "dba-1 approves it")
            say(f"   $ airlock approve {request_id} --comment 'customer asked for a refund'")
            await _cli(
                ["approve", request_id, "--server", api, "--token", dba_token,
                 "--comment", "customer asked for a refund"]
            )  # fmt: skip
            await asyncio.to_thread(writer.join, 30)
            say(f"   agent-1's write ran: {outcome[0] if outcome else 'still waiting?'}")
            status = await asyncio.to_thread(
                lambda: agent.execute(
                    "SELECT status, changed_by FROM orders WHERE id = 2"
                ).fetchone()
            )
            say(f"   order 2 is now {status[0] if status else '?'}")
            say(
                f"   the server ran it as {status[1] if status else '?'} "
                "(orders.changed_by, set by a trigger to current_user)"
            )
            say("   SELECT current_user")
            say(f"     {await asyncio.to_thread(_current_user, agent)}   (back on the read role)")

            step(7, "suppose the classifier got a write wrong and called it a read")
            say("   (simulated: the demo tells the gateway's verdict cache that this is a read)")
            say(f"   {MISSED}")
            cache = gateway.postgres.classifiers.cached("postgres") if gateway.postgres else None
            assert cache is not None
            mistake = Verdict(StatementClass.READ, ("a simulated classifier mistake",))
            cache.store(MISSED, mistake)
            outcome.clear()
            await asyncio.to_thread(_execute, agent, MISSED, outcome)
            say(f"   the gate let it through; the server refused it: {outcome[0]}")
        finally:
            await asyncio.to_thread(agent.close)
        await _wait_until_sealed(gateway)

        step(8, "an auditor replays agent-1's session from its sealed transcript")
        [session] = find_sessions(self.data_dir, identity="agent-1")
        say(f"   $ airlock replay {session.session_id}")
        code = await _cli(["replay", session.session_id, "--data-dir", str(self.data_dir)])
        step(9, "and verifies it: hash chain and Ed25519 seal")
        say(f"   $ airlock verify {session.session_id}")
        code = await _cli(["verify", session.session_id, "--data-dir", str(self.data_dir)]) or code
        say()
        say("That is Airlock: reads pass, writes wait for a human, everything is on the record;")
        say("and the database itself refuses a write the gateway did not let through.")
        return code


def _current_user(agent: Any) -> str:
    row = agent.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else "?"


def _drop_leftover_roles(admin: Any) -> None:
    """Drop the roles of earlier runs whose database is gone (a run killed before its
    cleanup); a run's database is made before its roles and dropped before them."""
    rows = admin.execute(
        "SELECT rolname FROM pg_roles WHERE rolname ~ %s"
        " AND NOT EXISTS (SELECT FROM pg_database"
        "  WHERE datname = substring(rolname FROM '^(.*)_[a-z]+$'))",
        (f"^{PREFIX}[0-9a-f]{{6}}_({'|'.join(ROLE_KINDS)})$",),
    ).fetchall()
    for (role,) in rows:
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def _execute(agent: Any, sql: str, outcome: list[object]) -> None:
    try:
        cursor = agent.execute(sql)
        outcome.append(cursor.statusmessage)
    except Exception as error:  # shown to the reader
        outcome.append(f"error: {error}")


async def _pending_request(gateway: Gateway, timeout_s: float = 20.0) -> str:
    assert gateway.store is not None
    deadline = time.monotonic() + timeout_s
    while True:
        pending = gateway.store.list("pending")
        if pending:
            return pending[0].id
        if time.monotonic() > deadline:
            raise RuntimeError("the write was never held")
        await asyncio.sleep(0.05)


async def _wait_until_sealed(gateway: Gateway, timeout_s: float = 10.0) -> None:
    assert gateway.postgres is not None
    deadline = time.monotonic() + timeout_s
    while gateway.postgres.sessions and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # a demo's poll: sessions end on the client's close


async def _cli(argv: list[str]) -> int:
    """Run an `airlock` command as a user would (in a thread: it makes blocking calls)."""
    from proxy.cli.main import main

    return await asyncio.to_thread(lambda: main(argv, configure_logging=False))
