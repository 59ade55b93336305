"""What an approver sees of a held write besides its SQL: the agent's justification and
the impact preview.

The justification is a leading SQL comment, `/* airlock:why restock after audit #123 */`
(or `-- airlock:why ...` on its own line), which any driver sends as part of the
statement, in the simple and the extended protocol alike. The comment stays in the SQL
the server gets (the gateway never rewrites a statement) and changes nothing in its
classification (the classifier ignores comments).

The impact preview runs in the background once the request exists, so it never delays
the hold: on a separate upstream connection, with the statement and its bound
parameters,
- `EXPLAIN` (no ANALYZE): the plan and the estimated rows, as the target's read role
  where it has one; PostgreSQL in a read-only transaction;
- opt-in per rule (`preview: {dry_run: true}`), a dry run: the statement executed in a
  transaction that is always rolled back, as the write role where the target has one;
  the rows it affects, and on PostgreSQL a sample of the changed rows.
Each is time-boxed (the rule's `preview.timeout`, 2s by default) with the server's
statement and lock timeouts and a deadline of its own. Only `write` statements (DML) are
previewed: reads need none, and EXPLAIN knows nothing of DDL or administration. The
statement is always prepared (a single statement: never several in one string).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import sqlglot
from sqlglot import exp

from policy.rules import Preview
from proxy.approvals.store import ApprovalRequest, ApprovalStore
from proxy.config import TargetSettings, UpstreamSettings

log = logging.getLogger("airlock.preview")

#: The longest justification kept (characters); a longer one is cut, with an ellipsis.
WHY_MAX_CHARS = 500
#: Rows of a dry run's sample.
SAMPLE_ROWS = 5
#: The longest plan text kept (characters).
PLAN_MAX_CHARS = 20_000

_WHY = re.compile(
    r"""\A\s*(?:
        /\*\s*airlock:why\b(?P<block>.*?)\*/
      | --[ \t]*airlock:why\b(?P<line>[^\r\n]*)
    )""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
_LEADING_COMMENT = re.compile(r"\A\s*(?:/\*.*?\*/|--[^\r\n]*(?:\r?\n|\Z))", re.DOTALL)

#: Background previews still running (a task is kept until it ends).
_running: set[asyncio.Task[None]] = set()


def justification(sql: str) -> str | None:
    """The agent's reason for a statement: the text of its `airlock:why` comment, among the
    comments that lead the statement; None when there is none. Whitespace is collapsed and
    the text cut at WHY_MAX_CHARS (rendering escapes it like all agent text)."""
    rest = sql
    for _ in range(16):  # a few leading comments; the reason need not be the first
        match = _WHY.match(rest)
        if match is not None:
            text = " ".join((match["block"] or match["line"] or "").split())
            if len(text) > WHY_MAX_CHARS:
                text = text[: WHY_MAX_CHARS - 1] + "…"
            return text or None
        comment = _LEADING_COMMENT.match(rest)
        if comment is None:
            return None
        rest = rest[comment.end() :]
    return None


def previewed(request: ApprovalRequest, settings: Preview) -> bool:
    """Whether a request gets a preview: a write, under a rule that wants one."""
    return request.request.statement_class == "write" and (settings.explain or settings.dry_run)


def start(
    store: ApprovalStore,
    request: ApprovalRequest,
    target: TargetSettings,
    settings: Preview,
    on_done: Callable[[str], None] | None = None,
) -> asyncio.Task[None] | None:
    """Start the preview of a held statement in the background (None when it gets none).
    The request shows `{"state": "running"}` until the preview is stored."""
    if not previewed(request, settings):
        return None
    store.set_preview(request.id, {"state": "running"})
    task = asyncio.get_running_loop().create_task(
        _run_and_store(store, request, target, settings, on_done)
    )
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


async def _run_and_store(
    store: ApprovalStore,
    request: ApprovalRequest,
    target: TargetSettings,
    settings: Preview,
    on_done: Callable[[str], None] | None,
) -> None:
    try:
        result = await preview(request, target, settings)
    except Exception as error:  # a preview never hurts the hold: say what went wrong
        log.warning("preview of %s failed: %s", request.id, error)
        result = {"state": "done", "error": f"the preview failed: {type(error).__name__}"}
    store.set_preview(request.id, result)
    if on_done is not None:
        on_done(request.id)


async def preview(
    request: ApprovalRequest, target: TargetSettings, settings: Preview
) -> dict[str, Any]:
    """The preview of a held write, as stored with its request (API `preview`)."""
    r = request.request
    result: dict[str, Any] = {"state": "done"}
    if any(p.format != "text" for p in r.parameters):
        result["error"] = "a bound parameter is binary the gateway cannot show as text"
        return result
    values = [p.value for p in r.parameters]
    runner = _PostgresPreview if target.protocol == "postgres" else _MySqlPreview
    if settings.explain:
        result["explain"] = await _timeboxed(
            runner(target, settings.timeout_s).explain, r.sql, values, settings.timeout_s
        )
    if settings.dry_run:
        result["dry_run"] = await _timeboxed(
            runner(target, settings.timeout_s).dry_run, r.sql, values, settings.timeout_s
        )
    return result


async def _timeboxed(
    run: Callable[[str, Sequence[str | None]], dict[str, Any]],
    sql: str,
    values: Sequence[str | None],
    timeout_s: float,
) -> dict[str, Any]:
    """Run one part of a preview in a worker thread; the server's own timeouts end it,
    and past twice the time box (connecting included) the approver is told so."""
    try:
        async with asyncio.timeout(2 * timeout_s + 1):
            return await asyncio.to_thread(run, sql, values)
    except TimeoutError:
        return {"error": f"timed out after {timeout_s:g}s"}


def _milliseconds(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


class _PostgresPreview:
    def __init__(self, target: TargetSettings, timeout_s: float) -> None:
        self.target, self.timeout_s = target, timeout_s

    def _connect(self, role: str | None) -> Any:
        import psycopg

        upstream: UpstreamSettings = self.target.upstream
        connection = psycopg.connect(
            host=upstream.host,
            port=upstream.port,
            user=upstream.user,
            password=upstream.password,
            dbname=upstream.database or upstream.user,
            sslmode=upstream.sslmode,
            sslrootcert=str(upstream.sslrootcert) if upstream.sslrootcert else None,
            connect_timeout=max(int(self.timeout_s + 0.999), 1),
            application_name="airlock preview",
            cursor_factory=psycopg.RawCursor,
        )
        if role is not None:
            connection.execute(f"SET ROLE {_pg_identifier(role)}")
            connection.commit()
        return connection

    def _box(self, cursor: Any) -> None:
        ms = _milliseconds(self.timeout_s)
        cursor.execute(f"SET LOCAL statement_timeout = {ms}")
        cursor.execute(f"SET LOCAL lock_timeout = {ms}")

    def explain(self, sql: str, values: Sequence[str | None]) -> dict[str, Any]:
        import psycopg

        try:
            with self._connect(self.target.read_role) as connection:
                connection.read_only = True
                with connection.cursor() as cursor:
                    self._box(cursor)
                    cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", values, prepare=True)
                    plan_json = _json(cursor.fetchone()[0])
                    cursor.execute(f"EXPLAIN {sql}", values, prepare=True)
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                connection.rollback()
        except psycopg.Error as error:
            return {"error": _pg_error(error)}
        return {
            "plan": plan[:PLAN_MAX_CHARS],
            "plan_json": plan_json,
            "estimated_rows": _pg_estimate(plan_json),
        }

    def dry_run(self, sql: str, values: Sequence[str | None]) -> dict[str, Any]:
        import psycopg

        sampled = _returning_wrapper(sql, "postgres")
        try:
            with self._connect(self.target.write_role) as connection:
                try:
                    with connection.cursor() as cursor:
                        self._box(cursor)
                        if sampled is None:
                            cursor.execute(sql, values, prepare=True)
                            return {"rows_affected": max(cursor.rowcount, 0)}
                        cursor.execute(sampled, values, prepare=True)
                        rows = cursor.fetchall()
                        return {
                            "rows_affected": int(rows[0][1]) if rows else 0,
                            "sample": [_json(row[0]) for row in rows],
                        }
                finally:
                    connection.rollback()
        except psycopg.Error as error:
            return {"error": _pg_error(error)}


class _MySqlPreview:
    def __init__(self, target: TargetSettings, timeout_s: float) -> None:
        self.target, self.timeout_s = target, timeout_s

    def _connect(self, role: str | None) -> Any:
        import pymysql

        upstream = self.target.upstream
        ssl: dict[str, Any] | None = None
        if upstream.sslmode in ("require", "verify-ca", "verify-full"):
            ssl = {"ca": str(upstream.sslrootcert)} if upstream.sslrootcert else {}
        wait = max(int(self.timeout_s + 0.999), 1)
        connection = pymysql.connect(
            host=upstream.host,
            port=upstream.port,
            user=upstream.user,
            password=upstream.password or "",
            database=upstream.database or None,
            ssl=ssl,
            connect_timeout=wait,
            read_timeout=2 * wait,
            write_timeout=wait,
            autocommit=False,
        )
        with connection.cursor() as cursor:
            cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {wait}")
            cursor.execute(f"SET SESSION lock_wait_timeout = {wait}")
            # MariaDB's statement time box (MySQL has none for writes)
            with contextlib.suppress(pymysql.MySQLError):
                cursor.execute(f"SET SESSION max_statement_time = {self.timeout_s:g}")
            if role is not None:
                cursor.execute(f"SET ROLE {_my_identifier(role)}")
        return connection

    @staticmethod
    def _execute(cursor: Any, sql: str, values: Sequence[str | None]) -> None:
        """Run `sql` as a server-side prepared statement (one statement, `?` bound)."""
        cursor.execute("PREPARE airlock_preview FROM %s", (sql,))
        names = [f"@airlock_p{index}" for index in range(len(values))]
        for name, value in zip(names, values, strict=True):
            cursor.execute(f"SET {name} = %s", (value,))
        using = f" USING {', '.join(names)}" if names else ""
        cursor.execute(f"EXECUTE airlock_preview{using}")

    def explain(self, sql: str, values: Sequence[str | None]) -> dict[str, Any]:
        import pymysql

        try:
            connection = self._connect(self.target.read_role)
            try:
                with connection.cursor() as cursor:
                    self._execute(cursor, f"EXPLAIN FORMAT=JSON {sql}", values)
                    plan_json = _json(cursor.fetchone()[0])
                    self._execute(cursor, f"EXPLAIN {sql}", values)
                    columns = [d[0] for d in cursor.description]
                    rows = cursor.fetchall()
            finally:
                connection.rollback()
                connection.close()
        except pymysql.MySQLError as error:
            return {"error": _my_error(error)}
        lines = [" | ".join(columns)] + [" | ".join(_cell(v) for v in row) for row in rows]
        estimate = None
        if rows and "rows" in columns:
            cell = rows[0][columns.index("rows")]
            estimate = int(cell) if cell is not None and str(cell).isdigit() else None
        return {
            "plan": "\n".join(lines)[:PLAN_MAX_CHARS],
            "plan_json": plan_json,
            "estimated_rows": estimate,
        }

    def dry_run(self, sql: str, values: Sequence[str | None]) -> dict[str, Any]:
        import pymysql

        try:
            connection = self._connect(self.target.write_role)
            try:
                with connection.cursor() as cursor:
                    cursor.execute("START TRANSACTION")
                    self._execute(cursor, sql, values)
                    return {"rows_affected": max(cursor.rowcount, 0)}
            finally:
                connection.rollback()
                connection.close()
        except pymysql.MySQLError as error:
            return {"error": _my_error(error)}


def _returning_wrapper(sql: str, dialect: str) -> str | None:
    """PostgreSQL: the statement inside a CTE that returns a sample of the rows it changes
    (as JSON) and their count; None when it is not a plain INSERT, UPDATE or DELETE
    without a RETURNING of its own."""
    try:
        parsed = sqlglot.parse(sql, read=dialect)
    except sqlglot.errors.SqlglotError:
        return None
    if len(parsed) != 1 or not isinstance(parsed[0], exp.Insert | exp.Update | exp.Delete):
        return None
    if parsed[0].args.get("returning") is not None or parsed[0].args.get("with") is not None:
        return None
    body = sql.rstrip().rstrip(";")
    # The agent's statement, unchanged, as the CTE's body (a newline ends a trailing
    # line comment); it runs prepared with its own parameters, as it would have.
    return (
        f"WITH airlock_dry_run AS ({body}\nRETURNING *)"  # noqa: S608
        " SELECT row_to_json(airlock_dry_run)::text, count(*) OVER ()"
        f" FROM airlock_dry_run LIMIT {SAMPLE_ROWS}"
    )


def _pg_estimate(plan_json: Any) -> int | None:
    """The rows a PostgreSQL plan expects to touch: a ModifyTable's input's estimate."""
    try:
        node = plan_json[0]["Plan"]
        while node.get("Node Type") == "ModifyTable" and node.get("Plans"):
            node = node["Plans"][0]
        return int(node["Plan Rows"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _cell(value: object) -> str:
    return "NULL" if value is None else str(value)


def _pg_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _my_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _pg_error(error: Exception) -> str:
    diag = getattr(error, "diag", None)
    sqlstate = getattr(diag, "sqlstate", None)
    message = getattr(diag, "message_primary", None) or str(error).strip().splitlines()[0]
    if sqlstate in ("57014", "55P03"):
        return f"timed out: {message}"
    return f"{sqlstate} {message}" if sqlstate else message


def _my_error(error: Exception) -> str:
    code = error.args[0] if error.args else None
    message = error.args[1] if len(error.args) > 1 else str(error)
    if code in (1969, 1205, 3024):  # max_statement_time, lock wait, max_execution_time
        return f"timed out: {message}"
    return f"{code} {message}" if code is not None else str(message)
