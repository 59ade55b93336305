"""Schema changes: CREATE, ALTER, DROP, RENAME, COMMENT ON, ...; and privileges (GRANT,
REVOKE, roles and users), which are administration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlglot.tokenizer_core import Token

from policy.classify.data import names
from policy.classify.tokens import words_of
from policy.classify.verdicts import ADMIN, DDL, READ, Verdict, verdict_of

if TYPE_CHECKING:
    from policy.classify.context import Context, Handler

#: Objects whose CREATE/ALTER/DROP is administration, not schema.
_ADMIN_OBJECTS = frozenset({"ROLE", "USER", "GROUP", "SYSTEM", "SERVER", "INSTANCE"})

#: Words between the verb and the object's kind: CREATE OR REPLACE TEMP VIEW.
_DDL_MODIFIERS = names(
    """
    OR REPLACE TEMP TEMPORARY UNLOGGED GLOBAL LOCAL UNIQUE MATERIALIZED RECURSIVE
    DEFINER ALGORITHM UNDEFINED MERGE TEMPTABLE SQL SECURITY INVOKER IF NOT EXISTS
    CONSTRAINT TRUSTED PROCEDURAL ONLINE OFFLINE AGGREGATE EXTERNAL
    """
)


def ddl(context: Context, tokens: list[Token]) -> Verdict:
    words = words_of(tokens)
    verb = words[0]
    objects = [word for word in words[1:6] if word not in _DDL_MODIFIERS]
    what = objects[0] if objects and objects[0] else "object"
    if what in _ADMIN_OBJECTS or (what == "DEFAULT" and words[2:3] == ["PRIVILEGES"]):
        return verdict_of(ADMIN, f"{verb} {what} changes roles, privileges or server settings")
    if verb == "DROP" and what == "PREPARE" and context.rules.DROP_PREPARE_DEALLOCATES:
        return verdict_of(READ, "DROP PREPARE drops this session's prepared statement")
    if verb == "DROP" and what == "OWNED":
        return verdict_of(ADMIN, "DROP OWNED drops a role's objects and privileges")
    return verdict_of(DDL, f"{verb} {what} changes the schema")


def rename(context: Context, tokens: list[Token]) -> Verdict:
    if words_of(tokens[1:2]) == ["USER"]:
        return verdict_of(ADMIN, "RENAME USER changes accounts")
    return verdict_of(DDL, "RENAME changes the schema")


COMMON: Mapping[str, Handler | Verdict] = {
    "CREATE": ddl,
    "ALTER": ddl,
    "DROP": ddl,
    "GRANT": verdict_of(ADMIN, "GRANT changes privileges"),
    "REVOKE": verdict_of(ADMIN, "REVOKE changes privileges"),
}
POSTGRES: Mapping[str, Handler | Verdict] = {
    "COMMENT": verdict_of(DDL, "COMMENT ON changes the schema's comments"),
    "SECURITY": verdict_of(DDL, "SECURITY LABEL changes the schema"),
    "IMPORT": verdict_of(DDL, "IMPORT FOREIGN SCHEMA creates tables"),
    "REASSIGN": verdict_of(ADMIN, "REASSIGN OWNED changes ownership"),
}
MYSQL: Mapping[str, Handler | Verdict] = {
    "RENAME": rename,
    "IMPORT": verdict_of(DDL, "IMPORT TABLE creates tables"),
}
