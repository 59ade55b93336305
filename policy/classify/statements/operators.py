"""PostgreSQL operators and types in a query: both can run user code (an operator is a
function; a domain's CHECK and a type's input function run on a cast), so only built-in
ones, as written, are read."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from sqlglot import exp
from sqlglot.tokenizer_core import Token, TokenType

from policy.classify.data import postgres as postgres_data
from policy.classify.lexers import LITERAL_TOKEN_TYPES, QUOTED_TOKEN_TYPES, sqlglot_dialect
from policy.classify.tokens import closing_paren, name_at, top_level_word, word_of
from policy.classify.verdicts import UNKNOWN, Finding

_OPERATOR_CHARS = frozenset("+-*/<>=~!@#%^&|`?")

_OPERATOR_KEEPS_SIGN = frozenset("~!@#^&|`?%")


def _operators(run: str) -> list[str]:
    """The operators PostgreSQL's lexer makes of a run of operator characters: the longest
    run, less trailing + and - when nothing in it is one of ~!@#^&|`?%."""
    operators = []
    while run:
        size = len(run)
        if size > 1 and run[-1] in "+-" and not _OPERATOR_KEEPS_SIGN.intersection(run[:-1]):
            while size > 1 and run[size - 1] in "+-":
                size -= 1
        operators.append(run[:size])
        run = run[size:]
    return operators


def operator_findings(tokens: Sequence[Token], synthetic: int) -> list[Finding]:
    findings: list[Finding] = []
    run = ""
    end = -2
    for token in [*tokens[synthetic:], None]:
        text = token.text if token is not None else ""
        is_operator = (
            token is not None
            and token.token_type not in QUOTED_TOKEN_TYPES
            and bool(text)
            and _OPERATOR_CHARS.issuperset(text)
        )
        if is_operator and token is not None and token.start == end + 1 and run:
            run += text
            end = token.end
            continue
        for operator in _operators(run):
            if operator not in postgres_data.OPERATORS:
                findings.append(
                    (UNKNOWN, f"operator {operator} is not built in: it may call a user function")
                )
        run, end = (text, token.end) if is_operator and token is not None else ("", -2)
    return findings


def _type_problem(sql: str, tokens: Sequence[Token], index: int) -> str | None:
    """None when the type name starting at tokens[index] is a built-in type, as written."""
    words = word_of(tokens[index]).split()
    if len(words) > 1:  # sqlglot's one token for DOUBLE PRECISION, CHARACTER VARYING, ...
        if postgres_data.TYPE_WORDS.issuperset(words):
            return None
        return "a type name that is not understood"
    name, used = name_at(sql, tokens, index)
    quoted = tokens[index].token_type is TokenType.IDENTIFIER or used == 3
    following = index + used
    if (
        name is not None
        and following < len(tokens)
        and tokens[following].token_type is (TokenType.DOT)
    ):
        if name != "pg_catalog":
            return f"type {name}.… is not a built-in type"
        name, used = name_at(sql, tokens, following + 1)
        quoted = tokens[following + 1].token_type is TokenType.IDENTIFIER or used == 3
        following += 1 + used
    if name is None:
        return "a type name that is not understood"
    if name in postgres_data.CATALOG_TYPES:
        return None
    if not quoted and name in postgres_data.GRAMMAR_TYPES:
        second = postgres_data.TYPE_SECOND_WORD.get(name)
        if second is None or word_of(tokens[following] if following < len(tokens) else None) in (
            second
        ):
            return None
    return f"type {name} is not a built-in type"


def _catalog_type(node: exp.DataType) -> bool:
    """Whether a type sqlglot does not know is pg_catalog.<a built-in type> (x::pg_catalog.
    regclass); the text's own check (`_type_problem`) reads it as written."""
    kind = node.args.get("kind")
    return (
        isinstance(kind, exp.Dot)
        and isinstance(kind.this, exp.Identifier)
        and isinstance(kind.expression, exp.Identifier)
        and kind.this.name == "pg_catalog"
        and kind.expression.name in postgres_data.CATALOG_TYPES
    )


@functools.cache
def _type_tokens(dialect: str) -> frozenset[TokenType]:
    return frozenset(sqlglot_dialect(dialect).parser_class.TYPE_TOKENS)


def type_findings(
    sql: str,
    tokens: Sequence[Token],
    root: exp.Expr,
    index_of: dict[int, int],
    synthetic: int,
) -> list[Finding]:
    """Every type a value is cast or converted to must be built in: a domain's CHECK, a
    type's input function or a user cast may call any function."""
    starts: set[int] = set()
    type_tokens = _type_tokens("postgres")
    for index in range(synthetic, len(tokens) - 1):
        token, following = tokens[index], tokens[index + 1]
        kind = token.token_type
        if kind is TokenType.DCOLON:
            starts.add(index + 1)  # x::type
        elif kind in type_tokens and following.token_type in LITERAL_TOKEN_TYPES - {
            TokenType.NUMBER
        }:
            starts.add(index)  # type 'literal'
        elif word_of(token) in ("CAST", "TRY_CAST") and following.token_type is TokenType.L_PAREN:
            closing = closing_paren(tokens, index + 1)
            inner = tokens[index + 2 : closing] if closing > 0 else []
            as_at = top_level_word(inner, "AS")
            if as_at >= 0:
                starts.add(index + 2 + as_at + 1)  # CAST(x AS type)
    findings: list[Finding] = []
    for node in root.find_all(exp.ColumnDef, exp.DataType):
        if isinstance(node, exp.ColumnDef):
            name_node = node.this
            position = index_of.get(
                name_node.meta.get("start", -1) if isinstance(name_node, exp.Expr) else -1
            )
            if position is None:
                findings.append((UNKNOWN, "a column definition whose type cannot be checked"))
            elif node.args.get("kind") is not None:
                starts.add(position + 1)  # AS t(a type, ...)
        elif (
            isinstance(node, exp.DataType)
            and node.this is exp.DataType.Type.USERDEFINED
            and not _catalog_type(node)
        ):
            findings.append((UNKNOWN, "a type that is not built in may run user code"))
    for start in sorted(starts):
        if start >= len(tokens):
            findings.append((UNKNOWN, "a type name that is not understood"))
            continue
        problem = _type_problem(sql, tokens, start)
        if problem is not None:
            findings.append((UNKNOWN, f"{problem}: a cast to it may run user code"))
    return findings
