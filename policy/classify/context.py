"""Classifying one text: the caps and lexers, then each statement by its first word.

`classify_text` runs the prechecks and the lexers, splits the checked tokens at `;` and
sends each statement to `classify_statement`, which hands queries to
`statements.queries` and every other statement to its dialect's handler (or fixed
verdict) for its first word. Handlers that wrap a statement (EXPLAIN, COPY, DECLARE,
PREPARE) come back here for the inner one, one `wrapping` level deeper.

`DialectRules` is what differs between the servers, declared once here and given values
in `policy.classify.dialects`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from sqlglot.tokenizer_core import Token, TokenType

from policy.classify.lexers import lex
from policy.classify.prechecks import check_nesting, check_optimizer_hints, precheck
from policy.classify.statements.queries import QUERY_STARTS, classify_query
from policy.classify.tokens import split_statements, word_of
from policy.classify.verdicts import READ, UNKNOWN, Finding, Verdict, combine, verdict_of

if TYPE_CHECKING:
    from sqlglot import exp

#: PREPARE ... FROM '...' (MySQL) and EXPLAIN/COPY/DECLARE wrap statements; this bounds it.
MAX_WRAPPING = 4


@dataclass(frozen=True, slots=True)
class Context:
    """What every handler of one text needs: the text, its dialect, how deep it is wrapped."""

    sql: str
    rules: DialectRules
    wrapping: int

    def nested(self) -> Context:
        """The context of a statement this one wraps."""
        return Context(self.sql, self.rules, self.wrapping + 1)


#: Classifies one statement (its tokens, `;` excluded) that starts with a given word.
Handler = Callable[[Context, list[Token]], Verdict]


class DialectRules:
    """What differs between the two servers, as class constants and a few small methods,
    in the manner of sqlglot's Dialect classes. One instance per dialect
    (`policy.classify.dialects.RULES`)."""

    #: The dialect's name, as sqlglot and `classify` know it.
    NAME: ClassVar[str]
    #: Statements other than queries, by first word: a handler, or the verdict they get.
    STATEMENTS: ClassVar[Mapping[str, Handler | Verdict]]
    #: Functions a read may call, by name as written (lower case).
    READ_SAFE_FUNCTIONS: ClassVar[frozenset[str]]
    #: Operators OPERATOR(pg_catalog.op) may name and stay built in.
    BUILTIN_OPERATORS: ClassVar[frozenset[str]] = frozenset()
    #: The statements of a pool's session reset (`policy.classify.data.postgres`): read
    #: only when a text has every one of them, each once.
    SESSION_RESET: ClassVar[frozenset[str]] = frozenset()
    #: Words the server never reads as an unqualified function's name (its reserved words,
    #: less any that name a built-in function): before "(" they are always grammar.
    NEVER_FUNCTION_NAMES: ClassVar[frozenset[str]]
    #: Words that are grammar before "(" when they follow an operand (x IN (...)).
    GRAMMAR_AFTER_OPERAND: ClassVar[frozenset[str]]
    #: Words that are grammar before "(" after particular words (WITHIN GROUP (...)).
    GRAMMAR_AFTER_WORD: ClassVar[Mapping[str, frozenset[str]]]
    #: The optimizer hints /*+ ... */ allowed; None where the server reads them as comments.
    OPTIMIZER_HINTS: ClassVar[frozenset[str] | None] = None
    #: The options of EXPLAIN ( option [, ...] ) statement; None where there is no such list.
    EXPLAIN_OPTIONS: ClassVar[frozenset[str] | None] = None
    #: EXPLAIN FORMAT = name statement.
    EXPLAIN_FORMAT_ASSIGNMENT: ClassVar[bool] = False
    #: EXPLAIN FOR CONNECTION n, and EXPLAIN/DESCRIBE of a table.
    EXPLAIN_CONNECTIONS_AND_TABLES: ClassVar[bool] = False
    #: DROP PREPARE name deallocates a prepared statement of this session.
    DROP_PREPARE_DEALLOCATES: ClassVar[bool] = False

    def query_refusal(self, tokens: Sequence[Token]) -> Verdict | None:
        """A verdict for a query found from its tokens alone, before it is parsed."""
        return None

    def query_findings(
        self,
        sql: str,
        tokens: Sequence[Token],
        root: exp.Expr,
        index_of: dict[int, int],
        synthetic: int,
    ) -> list[Finding]:
        """What this server could run behind a parsed query's operators and types."""
        return []

    def into_finding(self, node: exp.Into) -> Finding | None:
        """What SELECT ... INTO does here; None when it only sets this session's state."""
        raise NotImplementedError

    def argument_findings(
        self, sql: str, tokens: Sequence[Token], index: int, name: str
    ) -> list[Finding] | None:
        """What a call of the built-in `name` at tokens[index] does, judged by its arguments
        (set_config: the SET it amounts to); None for a function not judged so."""
        return None

    def call_problem(self, tokens: Sequence[Token], index: int, name: str) -> str | None:
        """Why the call of `name` at tokens[index] may not be the built-in function, or None
        (qualifiers, MySQL's space before "(")."""
        return None


def classify_text(sql: str, rules: DialectRules, wrapping: int = 0) -> Verdict:
    """The verdict for a whole text: the caps, the lexers, then every statement in it."""
    refused = precheck(sql)
    if refused is not None:
        return refused
    lexed = lex(sql, rules.NAME)
    if isinstance(lexed, Verdict):
        return lexed
    tokens = lexed.tokens
    refused = check_nesting(tokens) or check_optimizer_hints(lexed.comments, rules.OPTIMIZER_HINTS)
    if refused is not None:
        return refused
    statements = split_statements(tokens)
    if not statements:
        return verdict_of(READ, "empty statement: nothing runs")
    context = Context(sql, rules, wrapping)
    verdicts = [classify_statement(context, statement) for statement in statements]
    if rules.SESSION_RESET and len(statements) >= len(rules.SESSION_RESET):
        verdicts = _session_reset(rules.SESSION_RESET, statements, verdicts)
    return combine(verdicts)


def _session_reset(
    reset: frozenset[str], statements: list[list[Token]], verdicts: list[Verdict]
) -> list[Verdict]:
    """`verdicts`, with the statements of a pool's session reset read when the text has
    every one of them exactly once."""
    shapes = [" ".join(token.text.upper() for token in statement) for statement in statements]
    if sorted(shape for shape in shapes if shape in reset) != sorted(reset):
        return verdicts
    return [
        _SESSION_RESET_VERDICT if shape in reset else verdict
        for shape, verdict in zip(shapes, verdicts, strict=True)
    ]


_SESSION_RESET_VERDICT = verdict_of(
    READ,
    "a pool's session reset: releases this session's advisory locks, closes its cursors, "
    "stops its LISTENs and returns its settings to their login values (the role stays)",
)


def classify_statement(context: Context, tokens: list[Token]) -> Verdict:
    """The verdict for one statement, by its first word."""
    first = word_of(tokens[0]).partition(" ")[0]
    if first in QUERY_STARTS or tokens[0].token_type is TokenType.L_PAREN:
        return classify_query(context, tokens)
    entry = context.rules.STATEMENTS.get(first)
    if isinstance(entry, Verdict):
        return entry
    if entry is not None:
        return entry(context, tokens)
    if first:
        return verdict_of(UNKNOWN, f"{first} statements are not classified")
    return verdict_of(UNKNOWN, "statement does not start with a keyword")
