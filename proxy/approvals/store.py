"""Approval requests and the grants they give, kept in SQLite in data_dir (or, for
several gateways, in a shared PostgreSQL database: proxy/approvals/store_pg.py, which runs this
module's statements there).

One table holds every request from the moment a statement is held until it is
decided. An approved request is also its grant: scope `statement` lets the same
text with the same parameters from the same identity on the same target run
once before `expires_at`; scope `session` lets the requesting session's
statements that need approval run until `expires_at`.

A request needs `approvals_required` distinct approvers (the two-person rule: 1
unless the rule says more). Each approver's decision is a row of `decisions`;
the request becomes approved when enough distinct approvers have approved, and
denied at the first denial. An approval's grant is the strictest of what its
approvers asked: scope `session` only if every one of them chose it, and the
earliest expiry.

Requests are never deleted. When the gateway starts, requests whose sessions
died with the previous process are marked `session_state = 'gone'`. Those of
`hold: reject` stay decidable (an approved one is a grant the agent can use by
retrying); those of `hold: wait` are withdrawn first, as they are when a live
client disconnects: the statement that waited can never run.

Every call is short and synchronous: SQLite in WAL mode answers in well under
a millisecond, and holds are rare next to reads.

The statements are written once, with `?` placeholders, for both engines: a column
added to `_SCHEMA` and to the statements reaches the PostgreSQL store too (which adds
it with a migration of its own, proxy/approvals/store_pg.py `MIGRATIONS`). Each request names
the gateway that holds it (`gateway_id`): with a shared store, a gateway acts at
startup and when its sessions end on its own requests only.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from policy.fingerprint import fingerprint
from proxy.parameters import Parameter as Parameter

PENDING, APPROVED, DENIED, WITHDRAWN = "pending", "approved", "denied", "withdrawn"
STATES = (PENDING, APPROVED, DENIED, WITHDRAWN)
SCOPES = ("statement", "session")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id              TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    session_state   TEXT NOT NULL,
    subject         TEXT NOT NULL,
    groups_json     TEXT NOT NULL,
    email           TEXT,
    target          TEXT NOT NULL,
    protocol        TEXT NOT NULL,
    sql             TEXT NOT NULL,
    params_json     TEXT NOT NULL,
    params_key      TEXT NOT NULL,
    class           TEXT NOT NULL,
    reasons_json    TEXT NOT NULL,
    hold            TEXT NOT NULL,
    approvers_json  TEXT NOT NULL,
    grant_ttl_s     REAL NOT NULL,
    created_at      REAL NOT NULL,
    decided_at      REAL,
    decided_by      TEXT,
    decided_groups_json TEXT,
    scope           TEXT,
    expires_at      REAL,
    comment         TEXT,
    reason          TEXT,
    used_at         REAL,
    why             TEXT,
    preview_json    TEXT,
    gateway_id      TEXT,
    transaction_state TEXT
);
CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state, created_at);
CREATE INDEX IF NOT EXISTS approvals_grant ON approvals (subject, target, params_key)
    WHERE state = 'approved';
CREATE INDEX IF NOT EXISTS approvals_session ON approvals (session_id);
CREATE TABLE IF NOT EXISTS decisions (
    request_id      TEXT NOT NULL REFERENCES approvals (id),
    approver        TEXT NOT NULL,
    groups_json     TEXT NOT NULL,
    verdict         TEXT NOT NULL,
    at              REAL NOT NULL,
    scope           TEXT,
    expires_at      REAL,
    comment         TEXT,
    reason          TEXT,
    PRIMARY KEY (request_id, approver)
);
"""
#: Columns added since the first schema: a store made before them gets them at open.
_ADDED_COLUMNS = {
    "why": "TEXT",
    "preview_json": "TEXT",
    "gateway_id": "TEXT",
    "transaction_state": "TEXT",
    "approvals_required": "INTEGER NOT NULL DEFAULT 1",
}


class StoreUnavailable(Exception):
    """The store cannot be reached (a shared PostgreSQL store is down or its connection
    broke). Nothing was written; the caller fails closed."""


#: The session's transaction state as an approval request records it (`transaction`):
#: none open, one open, one failed (it ends only in ROLLBACK), one open READ ONLY.
TRANSACTION_STATES = ("idle", "in transaction", "failed", "read only")


#: An older store's decisions, one per decided request, copied into `decisions` once.
_COPY_OLD_DECISIONS = """
INSERT OR IGNORE INTO decisions
    (request_id, approver, groups_json, verdict, at, scope, expires_at, comment, reason)
SELECT id, decided_by, coalesce(decided_groups_json, '[]'),
       CASE state WHEN 'approved' THEN 'approve' ELSE 'deny' END,
       decided_at, scope, expires_at, comment, reason
FROM approvals WHERE decided_by IS NOT NULL AND state IN ('approved', 'denied')
"""

APPROVE, DENY = "approve", "deny"


class AlreadyDecided(Exception):
    """The request was decided (or withdrawn) before this decision arrived. Its message
    is what the approver is shown (API 409, CLI, web page)."""

    def __init__(self, request: ApprovalRequest) -> None:
        if request.state == WITHDRAWN:
            message = (
                f"request {request.id} was withdrawn ({request.reason}): its statement "
                "never ran, and it can no longer be approved or denied"
            )
        else:
            by = f" by {request.decided_by}" if request.decided_by else ""
            message = f"request {request.id} is already {request.state}{by}"
        super().__init__(message)
        self.request = request


class AlreadyApproved(AlreadyDecided):
    """This approver's approval of a request that needs more approvers is already
    counted: the same person approving twice counts once."""

    def __init__(self, request: ApprovalRequest, approver: str) -> None:
        super().__init__(request)
        missing = request.approvals_missing
        self.args = (
            f"{approver} already approved request {request.id}; it needs {missing} more "
            f"approval{'s' if missing != 1 else ''} from other approvers",
        )


class UnknownRequest(KeyError):
    pass


@dataclass(frozen=True, slots=True)
class NewRequest:
    session_id: str
    subject: str
    groups: tuple[str, ...]
    email: str | None
    target: str
    protocol: str
    sql: str
    parameters: tuple[Parameter, ...]
    params_key: str  # proxy.parameters.parameters_key: the exact bound values, for retries
    statement_class: str
    reasons: tuple[str, ...]
    hold: str
    approver_groups: tuple[str, ...]
    grant_ttl_s: float
    #: The agent's justification (proxy/core/preview.py's `justification`), if it gave one.
    why: str | None = None
    #: The session's transaction state when the request was made (TRANSACTION_STATES);
    #: None when the gateway could not tell.
    transaction: str | None = None
    #: Distinct approvers needed (the two-person rule when 2).
    approvals_required: int = 1


@dataclass(frozen=True, slots=True)
class Decision:
    """One approver's answer to a request."""

    by: str
    groups: tuple[str, ...]
    verdict: str  # APPROVE or DENY
    at: float
    scope: str | None = None
    expires_at: float | None = None
    comment: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "groups": list(self.groups),
            "verdict": self.verdict,
            "at": iso_time(self.at),
            "scope": self.scope,
            "expires_at": iso_time(self.expires_at),
            "comment": self.comment,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    id: str
    state: str
    session_state: str
    created_at: float
    request: NewRequest
    decided_at: float | None = None
    decided_by: str | None = None
    decided_groups: tuple[str, ...] = ()
    scope: str | None = None
    expires_at: float | None = None
    comment: str | None = None
    reason: str | None = None
    used_at: float | None = None
    #: The impact preview (proxy/core/preview.py), once started: {"state": "running"} until done.
    preview: dict[str, Any] | None = None
    #: Every approver's answer so far, oldest first.
    decisions: tuple[Decision, ...] = ()

    @property
    def approvals(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.verdict == APPROVE)

    @property
    def approvals_missing(self) -> int:
        """How many more distinct approvers must approve (0 once approved)."""
        return max(0, self.request.approvals_required - len(self.approvals))

    def to_json(self) -> dict[str, Any]:
        r = self.request
        decision = None
        if self.decided_at is not None:
            decision = {
                "by": self.decided_by,
                "groups": list(self.decided_groups),
                "at": iso_time(self.decided_at),
                "scope": self.scope,
                "expires_at": iso_time(self.expires_at),
                "comment": self.comment,
                "reason": self.reason,
                "used_at": iso_time(self.used_at),
            }
        return {
            "id": self.id,
            "state": self.state,
            "session_id": r.session_id,
            "session_state": self.session_state,
            "requester": {"subject": r.subject, "groups": list(r.groups), "email": r.email},
            "target": r.target,
            "protocol": r.protocol,
            "sql": r.sql,
            "parameters": [p.to_json() for p in r.parameters],
            "class": r.statement_class,
            "reasons": list(r.reasons),
            "why": r.why,
            "preview": self.preview,
            "hold": r.hold,
            "approver_groups": list(r.approver_groups),
            "grant_ttl_s": r.grant_ttl_s,
            "transaction": r.transaction,
            "created_at": iso_time(self.created_at),
            "approvals_required": r.approvals_required,
            "approvals_received": len(self.approvals),
            "decisions": [d.to_json() for d in self.decisions],
            "decision": decision,
        }


def iso_time(when: float | None) -> str | None:
    """A time as the API shows it: ISO 8601 in UTC, to the millisecond, with a Z."""
    if when is None:
        return None
    moment = datetime.datetime.fromtimestamp(when, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ApprovalStore:
    """The SQLite store: one gateway's, in data_dir."""

    #: The gateway whose requests this store creates (None: the only one, SQLite).
    gateway_id: str | None = None

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._db: Any = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a store written by an older release up to this schema."""
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(approvals)")}
        missing = [(n, kind) for n, kind in _ADDED_COLUMNS.items() if n not in columns]
        if not missing:
            return
        with self._transaction():
            for name, kind in missing:
                self._db.execute(f"ALTER TABLE approvals ADD COLUMN {name} {kind}")
            self._db.execute(_COPY_OLD_DECISIONS)

    #: What opens a transaction that takes the store's write lock at once.
    _BEGIN = "BEGIN IMMEDIATE"

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute(self._BEGIN)
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def _own(self) -> tuple[str, tuple[Any, ...]]:
        """The condition (with its values) that limits an update to this gateway's own
        requests: none with SQLite, where every request is this gateway's."""
        return "", ()

    def _decided(self, request_id: str) -> None:
        """A request was decided or withdrawn (for the PostgreSQL store: tell the others)."""

    # --- lifecycle of sessions

    def sessions_gone(self, session_ids: Sequence[str] | None = None) -> int:
        """Mark the requests of these sessions (all this gateway's open ones when None)
        as orphaned."""
        if session_ids is None:
            own, values = self._own()
            cursor = self._db.execute(
                "UPDATE approvals SET session_state = 'gone' WHERE session_state = 'open'" + own,  # noqa: S608 (a constant condition)
                values,
            )
        else:
            cursor = self._db.executemany(
                "UPDATE approvals SET session_state = 'gone' WHERE session_id = ?",
                [(s,) for s in session_ids],
            )
        return int(cursor.rowcount)

    def withdraw_orphaned_holds(self, *, reason: str, now: float) -> int:
        """Withdraw the pending `hold: wait` requests of sessions still marked open (at
        startup: their clients' connections ended with the previous process)."""
        own, values = self._own()
        cursor = self._db.execute(
            "UPDATE approvals SET state = 'withdrawn', decided_at = ?, decided_by = NULL,"  # noqa: S608 (own: a constant condition)
            " decided_groups_json = '[]', reason = ?"
            " WHERE state = 'pending' AND hold = 'wait' AND session_state = 'open'" + own,
            (now, reason, *values),
        )
        return int(cursor.rowcount)

    # --- requests

    def create(self, new: NewRequest, now: float) -> ApprovalRequest:
        request_id = "apr_" + secrets.token_hex(6)
        self._db.execute(
            "INSERT INTO approvals (id, state, session_id, session_state, subject, groups_json,"
            " email, target, protocol, sql, params_json, params_key, class, reasons_json, hold,"
            " approvers_json, grant_ttl_s, created_at, why, gateway_id, transaction_state,"
            " approvals_required)"
            " VALUES (?, 'pending', ?, 'open',"
            " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                request_id,
                new.session_id,
                new.subject,
                json.dumps(list(new.groups)),
                new.email,
                new.target,
                new.protocol,
                new.sql,
                json.dumps([p.to_json() for p in new.parameters]),
                new.params_key,
                new.statement_class,
                json.dumps(list(new.reasons)),
                new.hold,
                json.dumps(list(new.approver_groups)),
                new.grant_ttl_s,
                now,
                new.why,
                self.gateway_id,
                new.transaction,
                new.approvals_required,
            ),
        )
        return ApprovalRequest(request_id, PENDING, "open", now, new)

    def set_preview(self, request_id: str, preview: dict[str, Any]) -> None:
        """Store a request's impact preview (whatever its state: it informs, decides nothing)."""
        self._db.execute(
            "UPDATE approvals SET preview_json = ? WHERE id = ?", (json.dumps(preview), request_id)
        )

    def get(self, request_id: str) -> ApprovalRequest:
        row = self._db.execute("SELECT * FROM approvals WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            raise UnknownRequest(request_id)
        return self._from_row(row)

    def get_many(self, request_ids: Sequence[str]) -> list[ApprovalRequest]:
        """Those of these requests that exist, in no particular order."""
        found: list[ApprovalRequest] = []
        for start in range(0, len(request_ids), 500):
            chunk = request_ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT * FROM approvals WHERE id IN ({marks})", chunk)  # noqa: S608 (only placeholders)
            found.extend(self._from_row(row) for row in rows)
        return found

    def list(
        self,
        state: str | Sequence[str] | None = None,
        *,
        subject: str | None = None,
        requester: str | None = None,
        target: str | None = None,
        since: float | None = None,
        limit: int = 500,
        offset: int = 0,
    ) -> list[ApprovalRequest]:
        """Requests, newest first: in `state` (one or several), of the requester `subject`
        (or `requester`; or whose email it is), on `target`, made at or after `since`;
        `limit` of them after skipping `offset`."""
        subject = subject if subject is not None else requester
        where: list[str] = []
        values: list[Any] = []
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            where.append(f"state IN ({', '.join('?' * len(states))})")
            values += states
        if subject is not None:
            where.append("(subject = ? OR email = ? COLLATE NOCASE)")
            values += [subject, subject]
        if target is not None:
            where.append("target = ?")
            values.append(target)
        if since is not None:
            where.append("created_at >= ?")
            values.append(since)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(
            f"SELECT * FROM approvals{clause} ORDER BY created_at DESC LIMIT ? OFFSET ?",  # noqa: S608 (placeholders only)
            (*values, limit, offset),
        )
        return [self._from_row(row) for row in rows]

    def times_requested(self, request: ApprovalRequest, *, within: int = 1000) -> int:
        """How many requests (this one included) asked for the same statement by the same
        identity on the same target, whatever became of them: the same text, or the same
        literal-stripped fingerprint (`delete ... where id = 2` and `... id = 3`). Counted
        among that identity's latest `within` requests on the target."""
        r = request.request
        key = fingerprint(r.sql, r.protocol)
        rows = self._db.execute(
            "SELECT sql FROM approvals WHERE subject = ? AND target = ? AND protocol = ?"
            " ORDER BY created_at DESC LIMIT ?",
            (r.subject, r.target, r.protocol, within),
        )
        return sum(
            1
            for (sql,) in rows
            if sql == r.sql or (key is not None and fingerprint(sql, r.protocol) == key)
        )

    def count_by_state(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, count(*) AS n FROM approvals GROUP BY state")
        return {state: 0 for state in STATES} | {row["state"]: int(row["n"]) for row in rows}

    def approve(
        self,
        request_id: str,
        *,
        approver: str,
        approver_groups: Sequence[str],
        scope: str,
        expires_at: float,
        comment: str | None,
        now: float,
    ) -> ApprovalRequest:
        """Count one approver's approval; the request is approved once it has
        `approvals_required` of them. AlreadyApproved when this approver's is counted."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        with self._transaction():
            self._lock(request_id)
            request = self._pending(request_id)
            if any(d.by == approver for d in request.approvals):
                raise AlreadyApproved(request, approver)
            decision = Decision(
                approver, tuple(approver_groups), APPROVE, now, scope, expires_at, comment
            )
            self._add_decision(request_id, decision)
            approvals = (*request.approvals, decision)
            if len(approvals) >= request.request.approvals_required:
                # The grant is the strictest any approver gave.
                every_session = all(a.scope == "session" for a in approvals)
                self._db.execute(
                    "UPDATE approvals SET state = 'approved', decided_at = ?, decided_by = ?,"
                    " decided_groups_json = ?, scope = ?, expires_at = ?, comment = ?"
                    " WHERE id = ?",
                    (
                        now,
                        approver,
                        json.dumps(list(approver_groups)),
                        "session" if every_session else "statement",
                        min(a.expires_at for a in approvals if a.expires_at is not None),
                        comment,
                        request_id,
                    ),
                )
        self._decided(request_id)
        return self.get(request_id)

    def deny(
        self,
        request_id: str,
        *,
        approver: str,
        approver_groups: Sequence[str],
        reason: str,
        now: float,
    ) -> ApprovalRequest:
        """One denial decides: the request is denied, whatever approvals it had."""
        with self._transaction():
            self._lock(request_id)
            self._pending(request_id)
            self._db.execute("DELETE FROM decisions WHERE request_id = ? AND approver = ?",
                             (request_id, approver))  # fmt: skip
            decision = Decision(approver, tuple(approver_groups), DENY, now, reason=reason)
            self._add_decision(request_id, decision)
            self._db.execute(
                "UPDATE approvals SET state = 'denied', decided_at = ?, decided_by = ?,"
                " decided_groups_json = ?, reason = ? WHERE id = ?",
                (now, approver, json.dumps(list(approver_groups)), reason, request_id),
            )
        self._decided(request_id)
        return self.get(request_id)

    def _lock(self, request_id: str) -> None:
        """Inside a transaction: no other decision on this request until it ends (SQLite:
        BEGIN IMMEDIATE has taken the whole store's write lock already)."""

    def _pending(self, request_id: str) -> ApprovalRequest:
        request = self.get(request_id)  # raises UnknownRequest
        if request.state != PENDING:
            raise AlreadyDecided(request)
        return request

    def _add_decision(self, request_id: str, d: Decision) -> None:
        self._db.execute(
            "INSERT INTO decisions (request_id, approver, groups_json, verdict, at, scope,"
            " expires_at, comment, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (request_id, d.by, json.dumps(list(d.groups)), d.verdict, d.at, d.scope,
             d.expires_at, d.comment, d.reason),
        )  # fmt: skip

    def withdraw(self, request_id: str, *, reason: str, now: float) -> ApprovalRequest:
        """The requester gave up (a cancel): nobody can decide it any more."""
        return self._decide(
            request_id,
            "UPDATE approvals SET state = 'withdrawn', decided_at = ?, decided_by = NULL,"
            " decided_groups_json = '[]', reason = ? WHERE id = ? AND state = 'pending'",
            (now, reason),
        )

    def _decide(self, request_id: str, sql: str, values: tuple[Any, ...]) -> ApprovalRequest:
        cursor = self._db.execute(sql, (*values, request_id))
        request = self.get(request_id)  # raises UnknownRequest
        if cursor.rowcount == 0:
            raise AlreadyDecided(request)
        self._decided(request_id)
        return request

    # --- grants

    def use_statement_grant(
        self, *, subject: str, target: str, sql: str, params_key: str, now: float
    ) -> ApprovalRequest | None:
        """Consume an unused, unexpired statement grant for exactly this statement."""
        row = self._db.execute(
            "UPDATE approvals SET used_at = ? WHERE id = ("
            " SELECT id FROM approvals WHERE state = 'approved' AND scope = 'statement'"
            " AND used_at IS NULL AND expires_at > ? AND subject = ? AND target = ?"
            " AND params_key = ? AND sql = ? ORDER BY decided_at LIMIT 1)"
            " RETURNING id",
            (now, now, subject, target, params_key, sql),
        ).fetchone()
        return None if row is None else self.get(row["id"])

    def use_grant(self, request_id: str, now: float) -> ApprovalRequest:
        """Mark one approved request as used by the statement that waited for it."""
        self._db.execute(
            "UPDATE approvals SET used_at = ? WHERE id = ? AND used_at IS NULL", (now, request_id)
        )
        return self.get(request_id)

    def session_grant(self, session_id: str, now: float) -> ApprovalRequest | None:
        """The latest-expiring session-scope grant of this session still in force."""
        row = self._db.execute(
            "SELECT * FROM approvals WHERE session_id = ? AND state = 'approved'"
            " AND scope = 'session' AND expires_at > ? ORDER BY expires_at DESC LIMIT 1",
            (session_id, now),
        ).fetchone()
        return None if row is None else self._from_row(row)

    def _from_row(self, row: Any) -> ApprovalRequest:
        decisions = self._db.execute(
            "SELECT * FROM decisions WHERE request_id = ? ORDER BY at, approver", (row["id"],)
        )
        return _from_row(row, tuple(_decision(d) for d in decisions))


def _decision(row: Any) -> Decision:
    return Decision(
        by=row["approver"],
        groups=tuple(json.loads(row["groups_json"])),
        verdict=row["verdict"],
        at=row["at"],
        scope=row["scope"],
        expires_at=row["expires_at"],
        comment=row["comment"],
        reason=row["reason"],
    )


def _from_row(row: Any, decisions: tuple[Decision, ...]) -> ApprovalRequest:
    new = NewRequest(
        session_id=row["session_id"],
        subject=row["subject"],
        groups=tuple(json.loads(row["groups_json"])),
        email=row["email"],
        target=row["target"],
        protocol=row["protocol"],
        sql=row["sql"],
        parameters=tuple(
            Parameter(p["type"], p["value"], p.get("format", "text"))
            for p in json.loads(row["params_json"])
        ),
        params_key=row["params_key"],
        statement_class=row["class"],
        reasons=tuple(json.loads(row["reasons_json"])),
        hold=row["hold"],
        approver_groups=tuple(json.loads(row["approvers_json"])),
        grant_ttl_s=row["grant_ttl_s"],
        why=row["why"],
        transaction=row["transaction_state"],
        approvals_required=row["approvals_required"],
    )
    preview = json.loads(row["preview_json"]) if row["preview_json"] else None
    request = ApprovalRequest(
        row["id"], row["state"], row["session_state"], row["created_at"], new,
        preview=preview, decisions=decisions,
    )  # fmt: skip
    if row["decided_at"] is None:
        return request
    return replace(
        request,
        decided_at=row["decided_at"],
        decided_by=row["decided_by"],
        decided_groups=tuple(json.loads(row["decided_groups_json"] or "[]")),
        scope=row["scope"],
        expires_at=row["expires_at"],
        comment=row["comment"],
        reason=row["reason"],
        used_at=row["used_at"],
    )
