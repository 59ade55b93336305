"""Utility and administration commands: COPY, DECLARE, PREPARE/EXECUTE/DEALLOCATE, CALL,
DO, LISTEN/NOTIFY, cursors, and PostgreSQL's maintenance (VACUUM, CLUSTER, ...).
COPY, DECLARE and PREPARE wrap a statement: theirs is the inner statement's class."""

from __future__ import annotations

from collections.abc import Mapping

from sqlglot.tokenizer_core import Token, TokenType

from policy.classify.context import (
    MAX_WRAPPING,
    Context,
    Handler,
    classify_statement,
    classify_text,
)
from policy.classify.lexers import QUOTED_TOKEN_TYPES
from policy.classify.statements.queries import classify_query
from policy.classify.tokens import closing_paren, top_level_word, word_of, words_of
from policy.classify.verdicts import ADMIN, READ, UNKNOWN, WRITE, Verdict, verdict_of


def copy(context: Context, tokens: list[Token]) -> Verdict:
    index = 1
    if word_of(tokens[index] if len(tokens) > index else None) == "BINARY":
        index += 1
    query: list[Token] | None = None
    if len(tokens) > index and tokens[index].token_type is TokenType.L_PAREN:
        closing = closing_paren(tokens, index)
        if closing < 0:
            return verdict_of(UNKNOWN, "COPY not understood")
        query = tokens[index + 1 : closing]
        index = closing + 1
    else:
        while index < len(tokens) and (
            word_of(tokens[index]) not in ("FROM", "TO")
            or tokens[index - 1].token_type is TokenType.DOT
        ):
            if tokens[index].token_type is TokenType.L_PAREN:
                closing = closing_paren(tokens, index)
                if closing < 0:
                    return verdict_of(UNKNOWN, "COPY not understood")
                index = closing
            index += 1
    if index + 1 >= len(tokens):
        return verdict_of(UNKNOWN, "COPY not understood")
    direction, target = word_of(tokens[index]), tokens[index + 1]
    target_word = word_of(target)
    if target_word == "PROGRAM":
        return verdict_of(ADMIN, "COPY ... PROGRAM runs a shell command on the server")
    if target.token_type in QUOTED_TOKEN_TYPES - {TokenType.IDENTIFIER}:
        return verdict_of(ADMIN, "COPY to or from a file reads or writes the server's file system")
    if direction == "FROM" and target_word == "STDIN":
        return verdict_of(WRITE, "COPY FROM STDIN loads rows into a table")
    if direction != "TO" or target_word != "STDOUT":
        return verdict_of(UNKNOWN, "COPY not understood")
    if query is None:
        return verdict_of(READ, "COPY TO STDOUT reads a table")
    if not query or context.wrapping >= MAX_WRAPPING:
        return verdict_of(UNKNOWN, "COPY not understood")
    verdict = classify_statement(context.nested(), query)
    if verdict.is_read:
        return verdict_of(READ, "COPY (query) TO STDOUT runs a read-only query")
    return verdict


def declare(context: Context, tokens: list[Token]) -> Verdict:
    words = words_of(tokens)
    if "CURSOR" not in words or "FOR" not in words[words.index("CURSOR") :]:
        return verdict_of(UNKNOWN, "DECLARE not understood")
    query = tokens[words.index("FOR", words.index("CURSOR")) + 1 :]
    if not query or context.wrapping >= MAX_WRAPPING:
        return verdict_of(UNKNOWN, "DECLARE not understood")
    verdict = classify_query(context.nested(), query)
    if verdict.is_read:
        return verdict_of(READ, "DECLARE CURSOR over a read-only query")
    return verdict


def _prepare_refusal(context: Context, words: list[str]) -> Verdict | None:
    if words[1:2] == ["TRANSACTION"]:
        return verdict_of(WRITE, "PREPARE TRANSACTION turns the transaction into a two-phase one")
    if context.wrapping >= MAX_WRAPPING:
        return verdict_of(UNKNOWN, "statements wrapped too deeply")
    return None


def _prepared(verdict: Verdict) -> Verdict:
    if verdict.is_read:
        return verdict_of(READ, "PREPARE of a read-only statement")
    return verdict


def prepare_postgres(context: Context, tokens: list[Token]) -> Verdict:
    """PREPARE name [(types)] AS statement."""
    refused = _prepare_refusal(context, words_of(tokens))
    if refused is not None:
        return refused
    as_index = top_level_word(tokens, "AS")
    inner = tokens[as_index + 1 :] if as_index > 0 else []
    if not inner:
        return verdict_of(UNKNOWN, "PREPARE not understood")
    return _prepared(classify_statement(context.nested(), inner))


def prepare_mysql(context: Context, tokens: list[Token]) -> Verdict:
    """PREPARE name FROM 'statement': the string is classified as a text of its own."""
    words = words_of(tokens)
    refused = _prepare_refusal(context, words)
    if refused is not None:
        return refused
    if len(tokens) != 4 or words[2] != "FROM" or tokens[3].token_type is not TokenType.STRING:
        return verdict_of(UNKNOWN, "PREPARE from a variable: the statement cannot be seen")
    raw = context.sql[tokens[3].start : tokens[3].end + 1]
    if "\\" in raw:
        return verdict_of(UNKNOWN, "PREPARE from a string with escapes is not classified")
    return _prepared(classify_text(tokens[3].text, context.rules, context.wrapping + 1))


COMMON: Mapping[str, Handler | Verdict] = {
    "DEALLOCATE": verdict_of(READ, "DEALLOCATE drops this session's prepared statement"),
    "CALL": verdict_of(UNKNOWN, "CALL runs a procedure the gateway cannot see into"),
    "EXECUTE": verdict_of(UNKNOWN, "EXECUTE runs a prepared statement the gateway cannot see"),
    "CHECKPOINT": verdict_of(ADMIN, "CHECKPOINT is server maintenance"),
}
POSTGRES: Mapping[str, Handler | Verdict] = {
    "PREPARE": prepare_postgres,
    "COPY": copy,
    "DECLARE": declare,
    "VACUUM": verdict_of(ADMIN, "VACUUM is maintenance"),
    "CLUSTER": verdict_of(ADMIN, "CLUSTER rewrites a table"),
    "REINDEX": verdict_of(ADMIN, "REINDEX rebuilds indexes"),
    "LOAD": verdict_of(ADMIN, "LOAD loads a shared library into the server"),
    "LISTEN": verdict_of(READ, "LISTEN only subscribes this session"),
    "UNLISTEN": verdict_of(READ, "UNLISTEN only unsubscribes this session"),
    "NOTIFY": verdict_of(WRITE, "NOTIFY sends a notification to other sessions"),
    "LOCK": verdict_of(WRITE, "LOCK takes a table lock"),
    "DO": verdict_of(UNKNOWN, "DO runs a code block the gateway cannot see into"),
    "FETCH": verdict_of(READ, "FETCH reads from this session's cursor"),
    "MOVE": verdict_of(READ, "MOVE positions this session's cursor"),
    "CLOSE": verdict_of(READ, "CLOSE closes this session's cursor"),
}
MYSQL: Mapping[str, Handler | Verdict] = {
    "PREPARE": prepare_mysql,
}
