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
The text of an executable comment (`/*! ... */`, `/*!50700 ... */`, MariaDB's
`/*M! ... */`), which the server runs and sqlglot skips, is checked as if it stood
outside the comment.

Cached twice: by exact text, and by the statement's fingerprint (`policy.fingerprint`:
its text with literal values taken out) where the caller passes one, so `... WHERE id=5`
and `... WHERE id=6` share one answer, as they share one verdict. A fingerprint stands
only for texts whose tokens are the same but for the values of their literals, and the
parser reads a literal's value only as a value, except where it takes a string as a name
(`FROM 'db'.t`, `USE 'db'`). So an answer is shared by fingerprint only when it was read
from the tree and no database name it looked at occurs inside any literal of the text;
otherwise (a name in a string, a statement read token by token, which looks inside
strings) it is cached by exact text only. tests/policy/test_scope.py checks the shared
answers against uncached ones over the case tables with their literals varied.
"""

from __future__ import annotations

import re
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import Token, TokenType

from policy.classify import LITERAL_TOKEN_TYPES

#: Readable whatever the target exposes (it shows only what the account may see).
ALWAYS_EXPOSED = "information_schema"
_DIALECT = "mysql"
#: The prefix of a MySQL fingerprint (`policy.fingerprint`): a key of another dialect is ignored.
_KEY_PREFIX = f"{_DIALECT}\x00"
#: Token types whose text is a literal's value (as `policy.fingerprint` takes them out).
_LITERALS = LITERAL_TOKEN_TYPES
#: MySQL's `/*! ... */` and `/*!50700 ... */`, MariaDB's `/*M! ... */`: the server runs
#: the text inside (sqlglot reads it as a comment).
_EXECUTABLE_COMMENT = re.compile(r"/\*[Mm]?!\d*(.*?)\*/", re.DOTALL)
_NOT_QUALIFIERS = frozenset(
    {TokenType.STRING, TokenType.NUMBER, TokenType.DOT, TokenType.R_PAREN, TokenType.R_BRACKET}
)


def exposed(name: str, databases: frozenset[str]) -> bool:
    return name in databases or name.lower() == ALWAYS_EXPOSED


def scope_refusal(sql: str, databases: frozenset[str], key: str | None = None) -> str | None:
    """Why `sql` reaches outside `databases` (None: it does not).

    `key`, if given, must be `policy.fingerprint.fingerprint(sql, "mysql")` (as
    `CachedClassifier.key` gives it): texts of one key then share one answer where it
    cannot depend on their literals.
    """
    if key is None or not key.startswith(_KEY_PREFIX):
        return _checked(sql, databases)[0]
    shape = (key, databases)
    found = _BY_SHAPE.get(shape)
    if found is not None:
        return found[0]
    answer, shared = _checked(sql, databases)
    if shared:
        _BY_SHAPE.put(shape, answer)
    return answer


def clear_cache() -> None:
    """Forget every answer (for tests)."""
    _checked.cache_clear()
    _BY_SHAPE.clear()


@lru_cache(maxsize=8192)
def _checked(sql: str, databases: frozenset[str]) -> tuple[str | None, bool]:
    """The refusal for `sql` (None: none), and whether every text of its fingerprint
    gets the same one."""
    if _EXECUTABLE_COMMENT.search(sql) is not None:
        # The server runs what is inside; so do we, as if it stood outside the comment.
        return _checked(_EXECUTABLE_COMMENT.sub(r" \1 ", sql, count=1), databases)[0], False
    dialect = sqlglot.Dialect.get_or_raise(_DIALECT)
    try:
        tokens = dialect.tokenize(sql)
        statements = dialect.parser().parse(tokens, sql)
    except SqlglotError:
        return _token_refusal(sql, databases), False
    names: list[str] = []
    refusal = None
    for statement in statements:
        if statement is None:
            continue
        if isinstance(statement, exp.Command):
            return _token_refusal(sql, databases), False
        for name in _databases(statement):
            names.append(name)
            if not exposed(name, databases):
                refusal = _outside(name)
                break
        if refusal is not None:
            break
    return refusal, not _read_from_literals(names, statements, tokens)


def _read_from_literals(
    names: list[str], statements: list[exp.Expr | None], tokens: list[Token]
) -> bool:
    """A name may have been read from a literal: a name occurs in the text of one, or an
    identifier anywhere in the tree (even an empty one, which names nothing) was read
    from one, or from no token at all."""
    literals = [token for token in tokens if token.token_type in _LITERALS]
    if not literals:
        return False
    texts = [token.text.casefold() for token in literals]
    if any(name.casefold() in text for name in names for text in texts):
        return True
    starts = {token.start for token in literals}
    for statement in statements:
        for node in statement.walk() if statement is not None else ():
            if isinstance(node, exp.Identifier):
                start = node.meta.get("start")
                if start in starts or (start is None and node.quoted):
                    return True
    return False


class _Shapes:
    """Answers by (fingerprint, databases), each in a 1-tuple; bounded in entries and in
    characters of keys, the oldest first out (a plain dict keeps insertion order)."""

    def __init__(self, max_entries: int, max_chars: int) -> None:
        self._entries: dict[tuple[str, frozenset[str]], tuple[str | None]] = {}
        self._chars = 0
        self._max_entries = max_entries
        self._max_chars = max_chars

    def get(self, shape: tuple[str, frozenset[str]]) -> tuple[str | None] | None:
        return self._entries.get(shape)

    def put(self, shape: tuple[str, frozenset[str]], answer: str | None) -> None:
        entries = self._entries
        if shape in entries:
            return
        entries[shape] = (answer,)
        self._chars += len(shape[0])
        while len(entries) > self._max_entries or self._chars > self._max_chars:
            evicted = next(iter(entries))
            del entries[evicted]
            self._chars -= len(evicted[0])

    def clear(self) -> None:
        self._entries.clear()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._entries)


_BY_SHAPE = _Shapes(max_entries=8192, max_chars=4_000_000)


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
