"""The shared store: approvals, credentials, web-page sessions and the gateways, in one
PostgreSQL database that several gateways use at once (`store: postgresql://...`).

Approvals run proxy/approvals/store.py's statements unchanged (its `?` placeholders become
psycopg's `%s`), on one autocommitted connection. Each call is a statement or two of
well under a millisecond on a near store, made on the event loop; none is on the
relay's path (reads never touch the store): only holds, grants, decisions, logins with a
minted credential and the web pages do.

Waking a held statement decided elsewhere: a decision, on whichever gateway, commits
and then sends `NOTIFY airlock_decisions, '<request id>'`. Each gateway LISTENs on a
connection of its own (`follow`), and re-reads what its held statements wait for on
each notification, after each reconnect, and every `poll_s` seconds regardless (a lost
notification costs at most that long). The same loop records the gateway's heartbeat
and, when another gateway's heartbeat is older than `heartbeat_timeout_s`, marks that
gateway's open requests gone (withdrawing its held `hold: wait` statements, whose
clients went with it).

The store down: every call raises StoreUnavailable at once (the connection is never
re-opened on the event loop, where a connect could block): a new hold fails closed
(proxy/errors.py ApprovalStoreUnavailable), a decision gets 503, reads relay as ever.
`follow` reconnects both connections once a second until the store answers, then
re-reads every held statement's request: a decision made meanwhile through a gateway
that could reach the store is found then. Nothing is cached that a decision could
contradict.

The schema is created and migrated by the gateways themselves: `MIGRATIONS` in order,
each applied once, under a transaction-scoped advisory lock so gateways starting
together do not race; `schema_version` records how far it went.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from policy.identity import Identity
from proxy.approvals.credentials import Credential
from proxy.approvals.store import _SCHEMA, ApprovalStore, StoreUnavailable

log = logging.getLogger("airlock.store")

#: The channel a decision is announced on; the payload is the request id only.
CHANNEL = "airlock_decisions"
#: The channel a PostgreSQL cancel key is forwarded on, to the gateway (or worker) whose
#: owner number its secret carries: payload "<owner> <process id> <secret>".
CANCEL_CHANNEL = "airlock_cancel"
#: Owner numbers: the top 8 bits of a cancel secret; 0 stays "not routed" (SQLite store).
OWNERS = range(1, 256)
#: pg_advisory_xact_lock key for migrations: hashtext('airlock.schema') is stable.
_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('airlock.schema'))"
#: How long a connect may take in the background before it counts as a failure.
CONNECT_TIMEOUT_S = 3

#: (version, statements). Append only: a gateway applies those above schema_version.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, _SCHEMA.replace("REAL", "DOUBLE PRECISION")),
    (
        2,
        """
CREATE TABLE IF NOT EXISTS gateways (
    id              TEXT PRIMARY KEY,
    host            TEXT NOT NULL,
    pid             INTEGER NOT NULL,
    started_at      DOUBLE PRECISION NOT NULL,
    heartbeat_at    DOUBLE PRECISION NOT NULL,
    stopped_at      DOUBLE PRECISION,
    key_id          TEXT,
    public_key_pem  TEXT
);
CREATE INDEX IF NOT EXISTS approvals_gateway ON approvals (gateway_id)
    WHERE session_state = 'open';
CREATE TABLE IF NOT EXISTS credentials (
    username        TEXT PRIMARY KEY,
    subject         TEXT NOT NULL,
    target          TEXT NOT NULL,
    identity_json   TEXT NOT NULL,
    scram_salt      BYTEA NOT NULL,
    scram_stored_key BYTEA NOT NULL,
    scram_server_key BYTEA NOT NULL,
    scram_iterations INTEGER NOT NULL,
    native_hash     TEXT NOT NULL,
    sha2_hash       BYTEA NOT NULL,
    expires_at      DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS credentials_subject ON credentials (subject, expires_at);
CREATE TABLE IF NOT EXISTS page_sessions (
    key_hash        TEXT PRIMARY KEY,
    identity_json   TEXT NOT NULL,
    csrf            TEXT NOT NULL,
    expires_at      DOUBLE PRECISION NOT NULL
);
""",
    ),
    (
        3,
        """
ALTER TABLE gateways ADD COLUMN IF NOT EXISTS owner INTEGER;
""",
    ),
    (
        4,
        """
CREATE TABLE IF NOT EXISTS transcripts (
    session_id      TEXT PRIMARY KEY,
    gateway_id      TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    sealed_at       DOUBLE PRECISION NOT NULL,
    shipped_at      DOUBLE PRECISION NOT NULL,
    started_at      DOUBLE PRECISION,
    last_at         DOUBLE PRECISION,
    subject         TEXT,
    email           TEXT,
    groups_json     TEXT NOT NULL,
    target          TEXT,
    client          TEXT,
    statements      INTEGER NOT NULL,
    end_reason      TEXT,
    path            TEXT NOT NULL,
    transcript      BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS transcripts_started ON transcripts (started_at);
CREATE INDEX IF NOT EXISTS gateways_key ON gateways (key_id)
""",
    ),
    (
        5,
        """
ALTER TABLE approvals ADD COLUMN IF NOT EXISTS approvals_required INTEGER NOT NULL DEFAULT 1;
""",
    ),
)


def migrate(connection: psycopg.Connection[Any]) -> int:
    """Bring the schema up to the last migration; the version it is at afterwards."""
    with connection.transaction():
        connection.execute(_MIGRATION_LOCK)
        connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = connection.execute("SELECT max(version) AS v FROM schema_version").fetchone()
        current = 0 if row is None or row["v"] is None else int(row["v"])
        for version, script in MIGRATIONS:
            if version <= current:
                continue
            for statement in script.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            log.info("store schema migrated to version %d", version)
            current = version
    return current


class _Connection:
    """One autocommitted connection that raises StoreUnavailable when it is broken (and
    until `reconnect` replaces it), with store.py's `?` placeholders."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: psycopg.Connection[Any] | None = None

    @property
    def broken(self) -> bool:
        return self._connection is None or self._connection.closed != 0

    def reconnect(self) -> None:
        """Open a new connection (blocking: off the event loop once serving)."""
        try:
            fresh: psycopg.Connection[Any] = psycopg.connect(
                self.url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S
            )
        except psycopg.Error as error:
            raise StoreUnavailable(_describe(error)) from None
        old, self._connection = self._connection, fresh
        if old is not None:
            old.close()

    def _live(self) -> psycopg.Connection[Any]:
        connection = self._connection
        if connection is None or connection.closed:
            raise StoreUnavailable("the approval store (PostgreSQL) is unreachable")
        return connection

    def execute(self, sql: str, values: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        connection = self._live()
        try:
            return connection.execute(sql.replace("?", "%s"), tuple(values))
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            self._lost(connection)
            raise StoreUnavailable(_describe(error)) from None

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor[Any]:
        connection = self._live()
        try:
            cursor = connection.cursor()
            cursor.executemany(sql.replace("?", "%s"), rows)
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            self._lost(connection)
            raise StoreUnavailable(_describe(error)) from None
        return cursor

    def _lost(self, connection: psycopg.Connection[Any]) -> None:
        if not connection.closed:
            connection.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def _describe(error: psycopg.Error) -> str:
    """The store's failure, without the URL (which may carry a password)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"the approval store (PostgreSQL) is unreachable: {first}"


class PgStore(ApprovalStore):
    """The shared store, as this gateway (`gateway_id`) uses it."""

    def __init__(self, url: str, *, poll_s: float = 5.0, heartbeat_timeout_s: float = 30.0) -> None:
        self.url = url
        self.path = "postgresql"
        self.poll_s = poll_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.gateway_id = f"gw_{os.urandom(6).hex()}"
        self._db = _Connection(url)
        self._stopping = False
        #: This gateway's owner number (1-255, unique among live gateways), set by `open`.
        self.owner = 0

    # --- startup and shutdown

    def open(self, *, now: float, key_id: str | None, public_key_pem: str | None) -> None:
        """Connect (blocking), migrate, register this gateway and take over from gateways
        that stopped answering. Raises StoreUnavailable."""
        self._db.reconnect()
        connection = self._db._live()
        try:
            migrate(connection)
        except psycopg.OperationalError as error:
            raise StoreUnavailable(_describe(error)) from None
        try:
            with connection.transaction():
                # One owner number per live gateway (or worker): the top bits of the cancel
                # keys it mints, so a cancel landing anywhere finds its way back.
                connection.execute("SELECT pg_advisory_xact_lock(hashtext('airlock.owners'))")
                taken = {
                    row["owner"]
                    for row in connection.execute(
                        "SELECT owner FROM gateways WHERE stopped_at IS NULL"
                        " AND owner IS NOT NULL AND heartbeat_at >= %s",
                        (now - self.heartbeat_timeout_s,),
                    ).fetchall()
                }
                owner = next((number for number in OWNERS if number not in taken), None)
                if owner is None:
                    raise StoreUnavailable(
                        f"{len(OWNERS)} gateways (or workers) are live on this store already:"
                        " there is no owner number left for another"
                    )
                connection.execute(
                    "INSERT INTO gateways (id, host, pid, started_at, heartbeat_at, key_id,"
                    " public_key_pem, owner) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (self.gateway_id, socket.gethostname(), os.getpid(), now, now, key_id,
                     public_key_pem, owner),
                )  # fmt: skip
        except psycopg.OperationalError as error:
            raise StoreUnavailable(_describe(error)) from None
        self.owner = owner
        log.info("store: PostgreSQL, as gateway %s (owner %d)", self.gateway_id, owner)
        self.reap(now)

    def stop(self, now: float) -> None:
        """This gateway is stopping: its open requests' sessions have ended."""
        self._stopping = True
        try:
            self.withdraw_orphaned_holds(reason="the gateway holding it stopped", now=now)
            self.sessions_gone()
            self._db.execute(
                "UPDATE gateways SET stopped_at = ? WHERE id = ?", (now, self.gateway_id)
            )
        except StoreUnavailable as error:
            log.warning("store: could not record this gateway's stop: %s", error)

    def close(self) -> None:
        self._db.close()

    #: The connection autocommits; a transaction is opened explicitly.
    _BEGIN = "BEGIN"

    def _lock(self, request_id: str) -> None:
        """Two approvers deciding at once through two gateways are counted one after the
        other: the request's row is locked until the transaction ends."""
        self._db.execute("SELECT 1 FROM approvals WHERE id = ? FOR UPDATE", (request_id,))

    def _own(self) -> tuple[str, tuple[Any, ...]]:
        return " AND gateway_id = ?", (self.gateway_id,)

    def _decided(self, request_id: str) -> None:
        self._db.execute("SELECT pg_notify(?, ?)", (CHANNEL, request_id))

    # --- the gateways

    def heartbeat(self, now: float) -> None:
        self._db.execute(
            "UPDATE gateways SET heartbeat_at = ? WHERE id = ?", (now, self.gateway_id)
        )

    def reap(self, now: float) -> int:
        """Mark the open requests of gateways whose heartbeat stopped as gone (their held
        statements withdrawn); the number of gateways taken for dead."""
        dead = self._db.execute(
            "UPDATE gateways SET stopped_at = ? WHERE stopped_at IS NULL AND heartbeat_at < ?"
            " AND id <> ? RETURNING id",
            (now, now - self.heartbeat_timeout_s, self.gateway_id),
        ).fetchall()
        stopped = [row["id"] for row in dead]
        # Also gateways that stopped (cleanly or so found) with requests still open.
        for row in self._db.execute(
            "SELECT DISTINCT a.gateway_id FROM approvals a JOIN gateways g ON g.id = a.gateway_id"
            " WHERE a.session_state = 'open' AND g.stopped_at IS NOT NULL"
        ).fetchall():
            if row["gateway_id"] not in stopped:
                stopped.append(row["gateway_id"])
        for gateway_id in stopped:
            withdrawn = self._db.execute(
                "UPDATE approvals SET state = 'withdrawn', decided_at = ?, decided_by = NULL,"
                " decided_groups_json = '[]', reason = ? WHERE state = 'pending'"
                " AND hold = 'wait' AND session_state = 'open' AND gateway_id = ? RETURNING id",
                (now, f"the gateway holding it ({gateway_id}) stopped answering", gateway_id),
            ).fetchall()
            gone = self._db.execute(
                "UPDATE approvals SET session_state = 'gone'"
                " WHERE session_state = 'open' AND gateway_id = ?",
                (gateway_id,),
            ).rowcount
            for row in withdrawn:
                self._decided(row["id"])
            if gone:
                log.warning(
                    "store: gateway %s stopped answering: %d of its requests marked gone"
                    " (%d held statements withdrawn)",
                    gateway_id,
                    gone,
                    len(withdrawn),
                )
        return len(dead)

    def send_cancel(self, owner: int, process_id: int, secret: int) -> None:
        """Forward a PostgreSQL cancel key to the gateway whose owner number is `owner`:
        it cancels only when both halves match one of its sessions."""
        self._db.execute(
            "SELECT pg_notify(?, ?)", (CANCEL_CHANNEL, f"{owner} {process_id} {secret}")
        )

    def gateways(self) -> list[dict[str, Any]]:
        """Every gateway that used this store, newest first."""
        rows = self._db.execute("SELECT * FROM gateways ORDER BY started_at DESC").fetchall()
        return [dict(row) for row in rows]

    # --- the wake-up

    async def follow(
        self,
        wake: Callable[[str | None], None],
        clock: Callable[[], float],
        cancel: Callable[[int, int], None] | None = None,
    ) -> None:
        """Forever (until cancelled): LISTEN for decisions and call `wake(request_id)` for
        each; `wake(None)` (re-read every held statement's request) after each reconnect
        and each poll interval, when the heartbeat is recorded and dead gateways reaped.
        `cancel(process_id, secret)`: a cancel key forwarded to this gateway's owner number."""
        while not self._stopping:
            try:
                listener = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                )
            except psycopg.Error as error:
                log.warning("store: %s; retrying", _describe(error))
                await asyncio.sleep(1.0)
                continue
            try:
                async with listener:
                    await listener.execute(f"LISTEN {CHANNEL}")
                    if cancel is not None:
                        await listener.execute(f"LISTEN {CANCEL_CHANNEL}")
                    await self._keep(wake, clock)
                    last_poll = clock()
                    while True:
                        async for note in listener.notifies(timeout=1.0):
                            if note.channel == CHANNEL:
                                wake(note.payload)
                            elif cancel is not None:
                                self._cancel_noted(note.payload, cancel)
                        if self._db.broken or clock() - last_poll >= self.poll_s:
                            await self._keep(wake, clock)
                            last_poll = clock()
            except (psycopg.Error, StoreUnavailable) as error:
                message = str(error) if isinstance(error, StoreUnavailable) else _describe(error)
                log.warning("store: %s; reconnecting", message)
                await asyncio.sleep(1.0)

    def _cancel_noted(self, payload: str, cancel: Callable[[int, int], None]) -> None:
        try:
            owner, process_id, secret = (int(part) for part in payload.split())
        except ValueError:
            log.warning("store: a malformed cancel notification ignored")
            return
        if owner == self.owner:
            cancel(process_id, secret)

    async def _keep(self, wake: Callable[[str | None], None], clock: Callable[[], float]) -> None:
        if self._db.broken:
            await asyncio.to_thread(self._db.reconnect)
            log.info("store: reconnected")
        self.heartbeat(clock())
        self.reap(clock())
        wake(None)

    # --- credentials (verifiers only: never a password)

    def put_credential(self, credential: Credential) -> None:
        salt, stored_key, server_key, iterations = credential.scram
        self._db.execute(
            "INSERT INTO credentials (username, subject, target, identity_json, scram_salt,"
            " scram_stored_key, scram_server_key, scram_iterations, native_hash, sha2_hash,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                credential.username,
                credential.identity.subject,
                credential.target,
                identity_json(credential.identity),
                salt,
                stored_key,
                server_key,
                iterations,
                credential.native_hash,
                credential.sha2_hash,
                credential.expires_at,
            ),
        )

    def find_credential(self, username: str, now: float) -> Credential | None:
        row = self._db.execute(
            "SELECT * FROM credentials WHERE username = ? AND expires_at > ?", (username, now)
        ).fetchone()
        if row is None:
            return None
        return Credential(
            username=row["username"],
            target=row["target"],
            identity=identity_from_json(row["identity_json"]),
            scram=(
                bytes(row["scram_salt"]),
                bytes(row["scram_stored_key"]),
                bytes(row["scram_server_key"]),
                int(row["scram_iterations"]),
            ),
            native_hash=row["native_hash"],
            sha2_hash=bytes(row["sha2_hash"]),
        )

    def live_credentials(self, subject: str, now: float) -> tuple[int, int]:
        """(live credentials of all gateways, of them `subject`'s); forgets expired ones."""
        self._db.execute("DELETE FROM credentials WHERE expires_at <= ?", (now,))
        row = self._db.execute(
            "SELECT count(*) AS total, count(*) FILTER (WHERE subject = ?) AS mine"
            " FROM credentials",
            (subject,),
        ).fetchone()
        return int(row["total"]), int(row["mine"])

    # --- web-page sessions (by the SHA-256 of the cookie, never the cookie)

    def put_page_session(self, key_hash: str, identity: Identity, csrf: str) -> None:
        self._db.execute(
            "INSERT INTO page_sessions (key_hash, identity_json, csrf, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (key_hash, identity_json(identity), csrf, identity.expires_at),
        )

    def find_page_session(self, key_hash: str, now: float) -> tuple[Identity, str] | None:
        row = self._db.execute(
            "SELECT identity_json, csrf FROM page_sessions WHERE key_hash = ? AND expires_at > ?",
            (key_hash, now),
        ).fetchone()
        return None if row is None else (identity_from_json(row["identity_json"]), row["csrf"])

    def drop_page_session(self, key_hash: str, now: float) -> None:
        self._db.execute(
            "DELETE FROM page_sessions WHERE key_hash = ? OR expires_at <= ?", (key_hash, now)
        )


class TranscriptStore:
    """Sealed transcripts in the shared store (the `transcripts` table), on a connection
    of its own: the shipper writes and the API reads in worker threads, never on the
    event loop. A row holds the transcript's bytes exactly as sealed plus summary
    columns for listing; the signer's public key is the `gateways` row with the seal's
    key id. Raises StoreUnavailable when the store cannot be reached (the connection
    is re-opened on the next call)."""

    def __init__(self, url: str, gateway_id: str) -> None:
        self.gateway_id = gateway_id
        self._db = _Connection(url)
        self._lock = threading.Lock()

    def _execute(self, sql: str, values: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        with self._lock:
            if self._db.broken:
                self._db.reconnect()
            return self._db.execute(sql, values)

    def put(self, row: Mapping[str, Any]) -> bool:
        """Store one sealed transcript (`row` holds every column but gateway_id); False
        when the session is there already (shipping is idempotent)."""
        columns = {**row, "gateway_id": self.gateway_id}
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        cursor = self._execute(
            f"INSERT INTO transcripts ({names}) VALUES ({marks})"  # noqa: S608 (our names)
            " ON CONFLICT (session_id) DO NOTHING",
            tuple(columns.values()),
        )
        return cursor.rowcount == 1

    def shipped(self, session_ids: Sequence[str]) -> set[str]:
        """Which of these sessions the store already holds."""
        rows = self._execute(
            "SELECT session_id FROM transcripts WHERE session_id = ANY(?)", (list(session_ids),)
        ).fetchall()
        return {row["session_id"] for row in rows}

    def summaries(
        self,
        *,
        identity: str | None = None,
        target: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """Every gateway's sealed sessions (summary columns, no bytes), oldest first."""
        where, values = ["TRUE"], list[Any]()
        if identity is not None:
            where.append("(lower(subject) = lower(?) OR lower(email) = lower(?))")
            values += [identity, identity]
        if target is not None:
            where.append("target = ?")
            values.append(target)
        if since is not None:
            where.append("last_at >= ?")
            values.append(since)
        rows = self._execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM transcripts WHERE {' AND '.join(where)}"  # noqa: S608
            " ORDER BY started_at, session_id",
            values,
        ).fetchall()
        return [dict(row) for row in rows]

    def sealed(self, session_id: str) -> dict[str, Any] | None:
        """One session's row with its bytes and its signer's public key (None: no
        such session; a prefix of one id is enough, as on a data_dir)."""
        rows = self._execute(
            f"SELECT {_SUMMARY_COLUMNS}, t.transcript, (SELECT g.public_key_pem FROM gateways g"  # noqa: S608 (our columns)
            " WHERE g.key_id = t.key_id AND g.public_key_pem IS NOT NULL LIMIT 1)"
            " AS public_key_pem FROM transcripts t WHERE starts_with(t.session_id, ?)"
            " ORDER BY length(t.session_id) LIMIT 2",
            (session_id,),
        ).fetchall()
        exact = [row for row in rows if row["session_id"] == session_id]
        if exact or len(rows) == 1:
            return dict((exact or rows)[0])
        return None

    def close(self) -> None:
        self._db.close()


_SUMMARY_COLUMNS = (
    "session_id, gateway_id, key_id, sealed_at, started_at, last_at, subject, email,"
    " groups_json, target, client, statements, end_reason, path"
)


# --- credentials and web-page sessions, for the gateways to share


def identity_json(identity: Identity) -> str:
    return json.dumps(
        {
            "subject": identity.subject,
            "issuer": identity.issuer,
            "groups": sorted(identity.groups),
            "expires_at": identity.expires_at,
            "email": identity.email,
            "token_id": identity.token_id,
            "claims": dict(identity.claims),
        },
        default=str,
    )


def identity_from_json(text: str) -> Identity:
    fields = json.loads(text)
    return Identity(
        subject=fields["subject"],
        issuer=fields["issuer"],
        groups=frozenset(fields["groups"]),
        expires_at=float(fields["expires_at"]),
        email=fields["email"],
        token_id=fields["token_id"],
        claims=fields["claims"],
    )
