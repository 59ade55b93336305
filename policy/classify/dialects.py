"""The two dialects: what differs between PostgreSQL's and MySQL's servers, in one class
each (in the manner of sqlglot's Dialect classes). Data comes from `policy.classify.data`,
the statements each understands from the family modules' tables; the few behaviours that
are not data are small methods."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from types import ModuleType

from sqlglot import exp
from sqlglot.tokenizer_core import Token, TokenType

from policy.classify.context import DialectRules, Handler
from policy.classify.data import common
from policy.classify.data import mysql as mysql_data
from policy.classify.data import postgres as postgres_data
from policy.classify.statements import (
    ddl,
    dml,
    explain,
    mysql,
    operators,
    settings,
    transactions,
    utility,
)
from policy.classify.tokens import word_of
from policy.classify.verdicts import ADMIN, DDL, WRITE, Finding, Verdict, verdict_of

_FAMILIES: tuple[ModuleType, ...] = (transactions, settings, explain, dml, ddl, utility, mysql)


def _statements(dialect_table: str) -> Mapping[str, Handler | Verdict]:
    """Every family's COMMON table and its table for one dialect, merged; a first word
    claimed twice is a mistake in the tables."""
    merged: dict[str, Handler | Verdict] = {}
    for family in _FAMILIES:
        for table in (family.COMMON, getattr(family, dialect_table)):
            for first, entry in table.items():
                if first in merged:
                    raise AssertionError(f"{first} is classified twice ({family.__name__})")
                merged[first] = entry
    return merged


def _merged(*tables: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    merged: dict[str, frozenset[str]] = {}
    for table in tables:
        for key, words in table.items():
            merged[key] = merged.get(key, frozenset()) | words
    return merged


class Postgres(DialectRules):
    NAME = "postgres"
    STATEMENTS = _statements("POSTGRES")
    READ_SAFE_FUNCTIONS = postgres_data.FUNCTIONS
    NEVER_FUNCTION_NAMES = postgres_data.RESERVED_WORDS
    SESSION_RESET = postgres_data.SESSION_RESET
    BUILTIN_OPERATORS = postgres_data.OPERATORS
    GRAMMAR_AFTER_OPERAND = common.GRAMMAR_AFTER_OPERAND
    GRAMMAR_AFTER_WORD = common.GRAMMAR_AFTER_WORD
    EXPLAIN_OPTIONS = postgres_data.EXPLAIN_OPTIONS

    def query_findings(
        self,
        sql: str,
        tokens: Sequence[Token],
        root: exp.Expr,
        index_of: dict[int, int],
        synthetic: int,
    ) -> list[Finding]:
        return [
            *operators.operator_findings(tokens, synthetic),
            *operators.type_findings(sql, tokens, root, index_of, synthetic),
        ]

    def into_finding(self, node: exp.Into) -> Finding | None:
        return (DDL, "SELECT ... INTO creates a table")

    def argument_findings(
        self, sql: str, tokens: Sequence[Token], index: int, name: str
    ) -> list[Finding] | None:
        if name == "set_config":
            return settings.set_config_findings(sql, tokens, index)
        return None

    def call_problem(self, tokens: Sequence[Token], index: int, name: str) -> str | None:
        own_schema = postgres_data.INFORMATION_SCHEMA_FUNCTIONS.get(name, "pg_catalog")
        if index < 2 or tokens[index - 1].token_type is not TokenType.DOT:
            if own_schema != "pg_catalog":  # found through search_path: perhaps a user's
                return f"function {name} is not qualified with {own_schema}"
            return None
        # Only pg_catalog.name(...) is the built-in (information_schema's few helpers, so
        # qualified): any other schema may hold a user's.
        schema = tokens[index - 2]
        schema_name = schema.text if schema.token_type is TokenType.IDENTIFIER else word_of(schema)
        if schema_name.lower() != own_schema or (
            index >= 3 and tokens[index - 3].token_type is TokenType.DOT
        ):
            return f"function {name} is schema-qualified and not on the allowlist"
        return None


class MySQL(DialectRules):
    NAME = "mysql"
    STATEMENTS = _statements("MYSQL")
    READ_SAFE_FUNCTIONS = mysql_data.FUNCTIONS
    NEVER_FUNCTION_NAMES = mysql_data.RESERVED_OPERATORS
    GRAMMAR_AFTER_OPERAND = common.GRAMMAR_AFTER_OPERAND | mysql_data.GRAMMAR_AFTER_OPERAND
    GRAMMAR_AFTER_WORD = _merged(common.GRAMMAR_AFTER_WORD, mysql_data.GRAMMAR_AFTER_WORD)
    OPTIMIZER_HINTS = mysql_data.OPTIMIZER_HINTS
    EXPLAIN_FORMAT_ASSIGNMENT = True
    EXPLAIN_CONNECTIONS_AND_TABLES = True
    DROP_PREPARE_DEALLOCATES = True

    def query_refusal(self, tokens: Sequence[Token]) -> Verdict | None:
        for token, following in itertools.pairwise(tokens):
            if token.token_type is TokenType.INTO and word_of(following) in ("OUTFILE", "DUMPFILE"):
                return verdict_of(
                    ADMIN, f"SELECT ... INTO {word_of(following)} writes a file on the server"
                )
        return None

    def into_finding(self, node: exp.Into) -> Finding | None:
        if _into_user_variable(node):
            return None  # SELECT ... INTO @v: a session variable, as SET @v = (...)
        return (WRITE, "SELECT ... INTO assigns variables")

    def call_problem(self, tokens: Sequence[Token], index: int, name: str) -> str | None:
        if index >= 2 and tokens[index - 1].token_type is TokenType.DOT:
            return f"function {name} is qualified: a stored function"
        if (
            name in mysql_data.SPACE_SENSITIVE_FUNCTIONS
            and tokens[index + 1].start != tokens[index].end + 1
        ):
            return f"space before ( makes {name} a stored function call"
        return None


def _into_user_variable(node: exp.Into) -> bool:
    target = node.this
    return (
        not node.expressions
        and not node.args.get("temporary")
        and not node.args.get("unlogged")
        and isinstance(target, exp.Table)
        and isinstance(target.this, exp.Parameter)
        and all(value is None for key, value in target.args.items() if key != "this")
    )


#: Each dialect's rules, by name (the names of `DIALECTS`).
RULES: dict[str, DialectRules] = {rules.NAME: rules for rules in (Postgres(), MySQL())}
