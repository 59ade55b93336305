"""MySQL's own statements: table locks, LOAD, DO, USE, KILL, FLUSH, replication and
server control, table maintenance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlglot.tokenizer_core import Token

from policy.classify.statements.queries import expression
from policy.classify.tokens import words_of
from policy.classify.verdicts import (
    ADMIN,
    KILL_REASON,
    READ,
    UNKNOWN,
    WRITE,
    Verdict,
    verdict_of,
)

if TYPE_CHECKING:
    from policy.classify.context import Context, Handler


def lock(context: Context, tokens: list[Token]) -> Verdict:
    if " ".join(words_of(tokens[:2])) == "LOCK INSTANCE":
        return verdict_of(ADMIN, "LOCK INSTANCE blocks the whole server")
    return verdict_of(WRITE, "LOCK TABLES takes table locks")


def unlock(context: Context, tokens: list[Token]) -> Verdict:
    if " ".join(words_of(tokens)) in ("UNLOCK TABLES", "UNLOCK TABLE"):
        return verdict_of(READ, "UNLOCK TABLES releases this session's table locks")
    return verdict_of(ADMIN, "UNLOCK INSTANCE acts on the whole server")


def load(context: Context, tokens: list[Token]) -> Verdict:
    if words_of(tokens[1:2]) == ["INDEX"]:
        return verdict_of(ADMIN, "LOAD INDEX changes server caches")
    return verdict_of(ADMIN, "LOAD DATA/XML reads a file into a table")


def do(context: Context, tokens: list[Token]) -> Verdict:
    verdict = expression(context, tokens[1:])
    if verdict.is_read:
        return verdict_of(READ, "DO only evaluates read-safe expressions")
    return verdict


COMMON: Mapping[str, Handler | Verdict] = {}
POSTGRES: Mapping[str, Handler | Verdict] = {}
MYSQL: Mapping[str, Handler | Verdict] = {
    "LOCK": lock,
    "UNLOCK": unlock,
    "LOAD": load,
    "DO": do,
    "USE": verdict_of(READ, "USE selects the default database"),
    "HELP": verdict_of(READ, "HELP reads the server's help tables"),
    "KILL": verdict_of(ADMIN, KILL_REASON),
    "FLUSH": verdict_of(ADMIN, "FLUSH acts on server caches, logs or privileges"),
    "PURGE": verdict_of(ADMIN, "PURGE deletes binary logs"),
    "RESET": verdict_of(ADMIN, "RESET resets server state"),
    "SHUTDOWN": verdict_of(ADMIN, "SHUTDOWN stops the server"),
    "RESTART": verdict_of(ADMIN, "RESTART restarts the server"),
    "INSTALL": verdict_of(ADMIN, "INSTALL loads a plugin or component"),
    "UNINSTALL": verdict_of(ADMIN, "UNINSTALL removes a plugin or component"),
    "CHANGE": verdict_of(ADMIN, "CHANGE REPLICATION changes replication"),
    "STOP": verdict_of(ADMIN, "STOP controls replication"),
    "CACHE": verdict_of(ADMIN, "CACHE INDEX changes server caches"),
    "BINLOG": verdict_of(ADMIN, "BINLOG replays binary log events"),
    "CLONE": verdict_of(ADMIN, "CLONE copies a server"),
    "OPTIMIZE": verdict_of(ADMIN, "OPTIMIZE TABLE rebuilds a table"),
    "REPAIR": verdict_of(ADMIN, "REPAIR TABLE rewrites a table"),
    "CHECK": verdict_of(ADMIN, "CHECK TABLE is maintenance"),
    "CHECKSUM": verdict_of(ADMIN, "CHECKSUM TABLE is maintenance"),
    "HANDLER": verdict_of(UNKNOWN, "HANDLER opens a low-level table handle"),
    "GET": verdict_of(READ, "GET DIAGNOSTICS reads this session's diagnostics"),
}
