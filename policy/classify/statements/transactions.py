"""Transaction control: BEGIN, START, COMMIT, ROLLBACK, SAVEPOINT, XA, ... Read, except
what overrides the read-only default (READ WRITE) or makes a transaction two-phase."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sqlglot.tokenizer_core import Token, TokenType

from policy.classify.data import names
from policy.classify.tokens import word_of, words_of
from policy.classify.verdicts import ADMIN, READ, UNKNOWN, WRITE, Verdict, verdict_of

if TYPE_CHECKING:
    from policy.classify.context import Context, Handler

#: Transaction characteristics, PostgreSQL and MySQL alike.
_TRANSACTION_WORDS = names(
    """
    ISOLATION LEVEL SERIALIZABLE REPEATABLE READ COMMITTED UNCOMMITTED ONLY NOT
    DEFERRABLE WITH CONSISTENT SNAPSHOT WORK TRANSACTION
    """
)


def transaction_modes(tokens: Sequence[Token], what: str, *, snapshot: bool = False) -> Verdict:
    words = [word_of(token) for token in tokens if token.token_type is not TokenType.COMMA]
    for previous, word in zip(["", *words], words, strict=False):
        if previous == "READ" and word == "WRITE":
            return verdict_of(
                ADMIN, f"{what} READ WRITE overrides the read-only transaction default"
            )
    if snapshot and words[:1] == ["SNAPSHOT"] and len(tokens) == 2:
        return verdict_of(READ, f"{what} SNAPSHOT only imports a snapshot")
    if all(word in _TRANSACTION_WORDS for word in words):
        return verdict_of(READ, f"{what} is transaction control")
    return verdict_of(UNKNOWN, f"{what} with characteristics that are not understood")


def begin(context: Context, tokens: list[Token]) -> Verdict:
    return transaction_modes(tokens[1:], word_of(tokens[0]))


def start_postgres(context: Context, tokens: list[Token]) -> Verdict:
    if word_of(tokens[1] if len(tokens) > 1 else None) == "TRANSACTION":
        return transaction_modes(tokens[2:], "START TRANSACTION")
    return verdict_of(UNKNOWN, "START statement not understood")


def start_mysql(context: Context, tokens: list[Token]) -> Verdict:
    if word_of(tokens[1] if len(tokens) > 1 else None) == "TRANSACTION":
        return transaction_modes(tokens[2:], "START TRANSACTION")
    return verdict_of(ADMIN, "START controls replication")


def end_transaction(context: Context, tokens: list[Token]) -> Verdict:
    first = word_of(tokens[0])
    if "PREPARED" in words_of(tokens[1:2]):
        return verdict_of(WRITE, f"{first} PREPARED finishes a two-phase transaction")
    return verdict_of(READ, f"{first} is transaction control")


COMMON: Mapping[str, Handler | Verdict] = {
    "BEGIN": begin,
    "COMMIT": end_transaction,
    "ROLLBACK": end_transaction,
    "SAVEPOINT": verdict_of(READ, "SAVEPOINT is transaction control"),
    "RELEASE": verdict_of(READ, "RELEASE SAVEPOINT is transaction control"),
}
POSTGRES: Mapping[str, Handler | Verdict] = {
    "START": start_postgres,
    "END": end_transaction,
    "ABORT": end_transaction,
}
MYSQL: Mapping[str, Handler | Verdict] = {
    "START": start_mysql,
    "XA": verdict_of(WRITE, "XA controls a distributed transaction"),
}
