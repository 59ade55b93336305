"""The in-band token refresh: the one statement the gateway consumes itself.

An agent whose driver can send a statement keeps its session past its token's expiry by
sending, in either protocol, simple or extended/prepared:

    SELECT airlock.refresh('<fresh JWT>')

The gateway verifies the token as at login, extends the session (proxy/core/session_core.py
decides how far), and runs in the statement's place a constant query that answers with
one row, `ends_at` and `ends_because`, so that every driver sees an ordinary result. The
token never reaches the server and is never recorded: the transcript holds the query that
ran and a `token_refreshed` event with the token's `jti` and `iat`.

Fail closed: any statement that names `airlock.refresh` and is not exactly this form (a
placeholder for the token, other statements around it, a comment) is refused with an
error and never forwarded. Such text is never classified, so it is never in the verdict
cache the relays' hot paths admit statements from (proxy/core/classifying.py).
"""

from __future__ import annotations

import datetime
import re

from proxy.errors import RefreshRefused

#: What may stand between a schema, the dot and a function name: space, quotes, comments.
_GAP = r"(?:[\s\"`]|/\*.*?\*/|--[^\n]*\n|#[^\n]*\n)*"
#: Any mention of the refresh function, however quoted, spaced or commented.
_MENTION = re.compile(rf"airlock{_GAP}\.{_GAP}refresh(?![\w$])", re.IGNORECASE | re.DOTALL)
#: The one form consumed: the token as a string literal, alone in its statement.
_FORM = re.compile(
    r"\s*select\s+airlock\s*\.\s*refresh\s*\(\s*'([A-Za-z0-9_.-]*)'\s*\)\s*;?\s*",
    re.IGNORECASE,
)
FORM = "SELECT airlock.refresh('<token>')"
#: What the transcript and the logs show of a refresh statement that was refused.
REDACTED = "SELECT airlock.refresh('<token withheld>')"


def mentions_refresh(sql: str) -> bool:
    """The text names the refresh function: the gateway consumes it or refuses it."""
    return "refresh" in sql.lower() and _MENTION.search(sql) is not None


def refresh_token(sql: str) -> str:
    """The token of a refresh statement (one that `mentions_refresh`), or RefreshRefused
    when it is not exactly the documented form."""
    found = _FORM.fullmatch(sql)
    if found is None or not found.group(1):
        raise RefreshRefused(
            "malformed token refresh: the gateway consumes only "
            f"{FORM}, alone in its statement, with the token as a literal",
            hint="put the token in the statement text, not in a parameter; "
            "nothing of this statement was sent to the server",
        )
    return found.group(1)


def answer_sql(ends_at: float, ends_because: str) -> str:
    """The constant query run in a refresh statement's place: one row saying when the
    session now ends and why then (`token expires` or `session_ttl`)."""
    when = datetime.datetime.fromtimestamp(ends_at, datetime.UTC)
    shown = when.isoformat(timespec="seconds").replace("+00:00", "Z")
    return f"SELECT '{shown}' AS ends_at, '{ends_because}' AS ends_because"
