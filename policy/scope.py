"""Which databases a MySQL statement names, against the ones its target exposes.

A MySQL target exposes the databases its config lists (default: the one in its
upstream URL). A statement may name others: `USE db`, `db.table` anywhere in
the tree (subqueries, CTEs, every statement of a multi-statement string), and
SHOW ... FROM/IN db. `information_schema` is always allowed: it shows only what
the upstream account can see, and drivers and tools read it for metadata.
Every other database (`mysql`, `performance_schema`, `sys`, ...) is refused.

Statements sqlglot cannot parse into a tree (a parse error, or its `Command`
fallback, e.g. `PREPARE s FROM '...'`) are scanned token by token instead: any
`name.` qualifier (inside string literals too, which PREPARE runs) must be an
exposed database. That refuses some harmless statements (`t.col` of an alias in
such a statement) and never lets an unexposed database through: fail closed.
Pure and cached: a repeated statement costs one dictionary lookup.
"""

from __future__ import annotations

from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import Token, TokenType

#: Readable whatever the target exposes (it shows only what the account may see).
ALWAYS_EXPOSED = "information_schema"
_DIALECT = "mysql"
_NOT_QUALIFIERS = frozenset(
    {TokenType.STRING, TokenType.NUMBER, TokenType.DOT, TokenType.R_PAREN, TokenType.R_BRACKET}
)


def exposed(name: str, databases: frozenset[str]) -> bool:
    return name in databases or name.lower() == ALWAYS_EXPOSED


@lru_cache(maxsize=8192)
def scope_refusal(sql: str, databases: frozenset[str]) -> str | None:
    """Why `sql` reaches outside `databases` (None: it does not)."""
    try:
        statements = sqlglot.parse(sql, read=_DIALECT)
    except SqlglotError:
        return _token_refusal(sql, databases)
    for statement in statements:
        if statement is None:
            continue
        if isinstance(statement, exp.Command):
            return _token_refusal(sql, databases)
        for name in _databases(statement):
            if not exposed(name, databases):
                return _outside(name)
    return None


def _outside(name: str) -> str:
    return f'database "{name}" is not exposed by this target'


def _databases(statement: exp.Expr) -> list[str]:
    names: list[str] = []
    if isinstance(statement, exp.Use):
        target = statement.this
        names.append(target.name if isinstance(target, exp.Expr) else str(target))
    for node in statement.walk():
        if isinstance(node, exp.Table) and node.db:
            names.append(node.db)
        elif isinstance(node, exp.Show) and node.args.get("db") is not None:
            db = node.args["db"]
            names.append(db.name if isinstance(db, exp.Expr) else str(db))
    return names


def _token_refusal(sql: str, databases: frozenset[str], depth: int = 0) -> str | None:
    try:
        tokens = sqlglot.Dialect.get_or_raise(_DIALECT).tokenize(sql)
    except SqlglotError:
        return "the statement cannot be read to check which databases it names"
    previous: Token | None = None
    for token in tokens:
        if token.token_type == TokenType.STRING and depth < 2:
            inner = _token_refusal(token.text, databases, depth + 1)
            if inner is not None:
                return inner
        if (
            token.token_type == TokenType.DOT
            and previous is not None
            and previous.token_type not in _NOT_QUALIFIERS
            and not exposed(previous.text, databases)
        ):
            return _outside(previous.text)
        previous = token
    return None
