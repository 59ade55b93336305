"""EXPLAIN, DESCRIBE and ANALYZE: planning a statement reads; running it (EXPLAIN ANALYZE,
MariaDB's ANALYZE statement) is that statement's class; PostgreSQL's ANALYZE and MySQL's
ANALYZE TABLE are maintenance."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from sqlglot.tokenizer_core import Token, TokenType

from policy.classify.context import MAX_WRAPPING, Context, Handler, classify_statement
from policy.classify.data import names
from policy.classify.statements.dml import DML_VERBS
from policy.classify.statements.queries import QUERY_STARTS, classify_query
from policy.classify.tokens import closing_paren, name_at, top_level_split, word_of, words_of
from policy.classify.verdicts import ADMIN, READ, UNKNOWN, WRITE, Verdict, verdict_of

#: EXPLAIN's flags that take no value.
_EXPLAIN_FLAGS = frozenset({"VERBOSE", "EXTENDED", "PARTITIONS"})


def _option_name(sql: str, option: Sequence[Token]) -> tuple[str | None, list[Token]]:
    """The name an option list item gives, as the server compares it, and its value.

    None for the name when it cannot be read for sure (a U&"..." name with UESCAPE, an
    escape that is not one). The value is the tokens after the name.
    """
    if not option:
        return None, []
    name, used = name_at(sql, option, 0)
    return name, list(option[used:])


#: MySQL DESCRIBE t [column | 'wildcard'], with t possibly db.t.
_DESCRIBE_TABLE = re.compile(r"name(?: \. name)?(?: (?:name|string))?")


def _describe_shape(token: Token) -> str:
    if token.token_type is TokenType.DOT:
        return "."
    if token.token_type is TokenType.STRING:
        return "string"
    return "name" if token.token_type is TokenType.IDENTIFIER or word_of(token) else "other"


#: What EXPLAIN can plan without running.
_EXPLAINABLE_DML = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE"})


def explain(context: Context, tokens: list[Token]) -> Verdict:
    """EXPLAIN [options] statement (and MySQL's DESCRIBE): planning only is read; with
    ANALYZE the statement runs, so it is that statement's class."""
    first = word_of(tokens[0])
    index, analyze = 1, False
    words = words_of(tokens)
    rules = context.rules
    options = rules.EXPLAIN_OPTIONS
    if options is not None and len(tokens) > 1 and tokens[1].token_type is TokenType.L_PAREN:
        closing = closing_paren(tokens, 1)
        if closing < 0:
            return verdict_of(UNKNOWN, "EXPLAIN options not understood")
        for option in top_level_split(tokens[2:closing], TokenType.COMMA):
            name, value = _option_name(context.sql, option)
            if name is None or name not in options:
                # The server may know options this does not (and compares them as the
                # quoted or escaped name spells them): what it cannot name may run.
                shown = repr(name) if name is not None else "(escaped in a way not resolved)"
                return verdict_of(UNKNOWN, f"EXPLAIN option {shown} is not recognised")
            if name in ("analyze", "analyse"):
                # A value other than a bare false/off runs the statement; so does one
                # this cannot read (0, 'off' and "off" included: fail closed).
                analyze = analyze or words_of(value) not in (["FALSE"], ["OFF"])
        index = closing + 1
    else:
        while index < len(tokens):
            word = words[index]
            if word in ("ANALYZE", "ANALYSE"):
                analyze = True
                index += 1
            elif word in _EXPLAIN_FLAGS:
                index += 1
            elif word == "FORMAT" and rules.EXPLAIN_FORMAT_ASSIGNMENT and index + 2 < len(tokens):
                index += 3
            else:
                break
    inner = tokens[index:]
    if not inner:
        return verdict_of(READ, f"{first} reads a table's definition")
    inner_first = word_of(inner[0])
    if (
        rules.EXPLAIN_CONNECTIONS_AND_TABLES
        and inner_first == "FOR"
        and word_of(inner[1:2][0] if len(inner) > 1 else None) == "CONNECTION"
    ):
        return verdict_of(READ, f"{first} FOR CONNECTION shows another statement's plan")
    if context.wrapping >= MAX_WRAPPING:
        return verdict_of(UNKNOWN, "statements wrapped too deeply")
    nested = context.nested()
    if inner_first in QUERY_STARTS or inner[0].token_type is TokenType.L_PAREN:
        verdict = classify_query(nested, inner, plan_only=not analyze)
    elif inner_first in _EXPLAINABLE_DML:
        if analyze:
            return verdict_of(WRITE, f"{first} ANALYZE runs the {inner_first}, which modifies data")
        verdict = classify_query(nested, inner, plan_only=True)
    elif (
        rules.EXPLAIN_CONNECTIONS_AND_TABLES
        and not analyze
        and _DESCRIBE_TABLE.fullmatch(" ".join(_describe_shape(token) for token in inner))
    ):
        return verdict_of(READ, f"{first} reads a table's definition")
    elif analyze:
        return classify_statement(nested, inner)
    else:
        return verdict_of(UNKNOWN, f"{first} of a {inner_first or 'statement'} is not classified")
    if not verdict.is_read:
        return verdict
    if analyze:
        return verdict_of(READ, f"{first} ANALYZE runs a read-only query")
    return verdict_of(READ, f"{first} only plans the statement; it does not run it")


#: The words of MySQL's ANALYZE TABLE (maintenance, not a statement it runs).
_ANALYZE_TABLE = names("TABLE TABLES NO_WRITE_TO_BINLOG LOCAL")


def analyze_mysql(context: Context, tokens: list[Token]) -> Verdict:
    """ANALYZE TABLE is maintenance; MariaDB's ANALYZE [FORMAT=...] <statement> runs the
    statement (and reports what it did), so it is that statement's class."""
    words = words_of(tokens)
    if words[1:2] and words[1] in _ANALYZE_TABLE:
        return verdict_of(ADMIN, "ANALYZE TABLE is maintenance: it writes statistics")
    index = 1
    if words[1:2] == ["FORMAT"]:
        if len(tokens) < 4 or tokens[2].token_type is not TokenType.EQ:
            return verdict_of(UNKNOWN, "ANALYZE not understood")
        index = 4
    inner = tokens[index:]
    inner_first = word_of(inner[0]) if inner else ""
    if not inner or context.wrapping >= MAX_WRAPPING:
        return verdict_of(UNKNOWN, "ANALYZE not understood")
    if inner_first in DML_VERBS:
        return verdict_of(WRITE, f"ANALYZE runs the {inner_first}, which modifies data")
    if inner_first not in QUERY_STARTS and inner[0].token_type is not TokenType.L_PAREN:
        return verdict_of(UNKNOWN, f"ANALYZE of a {inner_first or 'statement'} is not classified")
    verdict = classify_query(context.nested(), inner)
    if verdict.is_read:
        return verdict_of(READ, "ANALYZE runs a read-only query")
    return verdict


_ANALYZE_IS_MAINTENANCE = verdict_of(ADMIN, "ANALYZE is maintenance: it writes statistics")

COMMON: Mapping[str, Handler | Verdict] = {"EXPLAIN": explain}
POSTGRES: Mapping[str, Handler | Verdict] = {
    "ANALYZE": _ANALYZE_IS_MAINTENANCE,
    "ANALYSE": _ANALYZE_IS_MAINTENANCE,
}
MYSQL: Mapping[str, Handler | Verdict] = {
    "DESCRIBE": explain,
    "DESC": explain,
    "ANALYZE": analyze_mysql,
}
