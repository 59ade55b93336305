"""Statements that change data: INSERT, UPDATE, DELETE, MERGE, ..., TRUNCATE, REFRESH."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlglot.tokenizer_core import Token

from policy.classify.tokens import word_of
from policy.classify.verdicts import WRITE, Verdict, verdict_of

if TYPE_CHECKING:
    from policy.classify.context import Context, Handler

#: The first words of statements that modify data (EXPLAIN plans them without running).
DML_VERBS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE"})


def modifies_data(context: Context, tokens: list[Token]) -> Verdict:
    return verdict_of(WRITE, f"{word_of(tokens[0]).partition(' ')[0]} modifies data")


COMMON: Mapping[str, Handler | Verdict] = {
    **dict.fromkeys(DML_VERBS, modifies_data),
    "TRUNCATE": verdict_of(WRITE, "TRUNCATE removes all rows of a table"),
}
POSTGRES: Mapping[str, Handler | Verdict] = {
    "REFRESH": verdict_of(WRITE, "REFRESH MATERIALIZED VIEW rewrites its data"),
}
MYSQL: Mapping[str, Handler | Verdict] = {}
