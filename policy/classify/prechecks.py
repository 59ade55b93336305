"""The caps that keep the parser safe, and the comments the server would act on.

`precheck` runs on the raw text before anything reads it (size, NUL, bracket depth: the
compiled sqlglot recurses once per nesting level and can exhaust the C stack).
`check_nesting` runs on the checked tokens: the nesting no bracket shows (CASE, NOT NOT
..., ARRAY[ARRAY[...]]), which sqlglot parses in exponential time.
`check_optimizer_hints` allows only the MySQL optimizer hints that steer the plan.
(MySQL's executable comments /*! ... */ are refused by its lexer, `lexers`.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlglot.tokenizer_core import Token, TokenType

from policy.classify.lexers import Comment
from policy.classify.verdicts import UNKNOWN, Verdict, verdict_of

#: SQL text longer than this is never lexed or parsed.
MAX_STATEMENT_CHARS = 1_000_000

#: Deepest nesting of ( [ { counted over the raw text (strings and comments included).
MAX_NESTING_DEPTH = 64

#: Deepest nesting of [ ] in code: sqlglot's ARRAY[...] parsing is exponential in it.
MAX_SQUARE_BRACKET_DEPTH = 8

#: Longest chain of subscripts x[1][2]...: sqlglot's cost is quadratic in it.
MAX_SUBSCRIPT_CHAIN = 16

#: Deepest CASE ... END nesting and longest run of prefix operators (NOT NOT ..., - - ...):
#: each level is a recursion in the parser that no bracket shows.
MAX_KEYWORD_NESTING = 64

_BRACKETS_ONLY = re.compile(r"[^()\[\]{}]+")
_AS_PARENS = str.maketrans("[{]}", "(())")


def precheck(sql: str) -> Verdict | None:
    """The caps that hold before anything reads the text: size, bracket depth, NUL.

    Cheap (a few C-level passes over the text, no parse). None when the text may be
    classified; otherwise the `unknown` verdict to give it. Brackets inside strings and
    comments count too: this runs before anything knows where strings are.
    """
    if len(sql) > MAX_STATEMENT_CHARS:
        return verdict_of(
            UNKNOWN, f"statement is longer than {MAX_STATEMENT_CHARS} characters; not parsed"
        )
    if "\x00" in sql:
        return verdict_of(UNKNOWN, "statement contains a NUL character")
    opens = sql.count("(") + sql.count("[") + sql.count("{")
    if opens > MAX_NESTING_DEPTH and _bracket_depth_exceeds(sql, MAX_NESTING_DEPTH):
        return verdict_of(
            UNKNOWN, f"brackets are nested deeper than {MAX_NESTING_DEPTH} levels; not parsed"
        )
    return None


def _bracket_depth_exceeds(sql: str, limit: int) -> bool:
    # Peel the innermost () pairs, one nesting level per pass (a C-level replace), for at
    # most `limit` passes. What is left after that is unmatched brackets ")))(((" whose
    # openers add to the depth of whatever was peeled inside them: an upper bound.
    brackets = _BRACKETS_ONLY.sub("", sql).translate(_AS_PARENS)
    passes = 0
    while passes <= limit:
        peeled = brackets.replace("()", "")
        if peeled == brackets:
            break
        brackets = peeled
        passes += 1
    return passes + brackets.count("(") > limit


_PREFIX_OPERATORS = frozenset({TokenType.NOT, TokenType.DASH, TokenType.PLUS, TokenType.TILDE})


def check_nesting(tokens: Sequence[Token]) -> Verdict | None:
    """Caps on the nesting no bracket count shows, which sqlglot handles badly."""
    kinds = [token.token_type for token in tokens]
    # Below these counts no nesting or run can pass its cap: skip the walk.
    if (
        kinds.count(TokenType.L_BRACKET) <= min(MAX_SQUARE_BRACKET_DEPTH, MAX_SUBSCRIPT_CHAIN)
        and kinds.count(TokenType.CASE) <= MAX_KEYWORD_NESTING
        and sum(kinds.count(kind) for kind in _PREFIX_OPERATORS) <= MAX_KEYWORD_NESTING
    ):
        return None
    square = case = prefix_run = chain = 0
    previous: TokenType | None = None
    for kind in kinds:
        if kind is TokenType.L_BRACKET:
            square += 1
            chain = chain + 1 if previous is TokenType.R_BRACKET else 1
            if square > MAX_SQUARE_BRACKET_DEPTH or chain > MAX_SUBSCRIPT_CHAIN:
                return verdict_of(UNKNOWN, "array brackets are nested or chained too deeply")
        elif kind is TokenType.R_BRACKET:
            square = max(square - 1, 0)
        elif kind is TokenType.CASE:
            case += 1
            if case > MAX_KEYWORD_NESTING:
                return verdict_of(UNKNOWN, "CASE expressions are nested too deeply")
        elif kind is TokenType.END:
            case = max(case - 1, 0)
        prefix_run = prefix_run + 1 if kind in _PREFIX_OPERATORS else 0
        if prefix_run > MAX_KEYWORD_NESTING:
            return verdict_of(UNKNOWN, "too many prefix operators in a row")
        previous = kind
    return None


_HINT_ITEM = re.compile(r"\s*([A-Za-z_]+)\s*(?:\(([^()'\"`]*)\))?")


def check_optimizer_hints(
    comments: Sequence[Comment], allowed: frozenset[str] | None
) -> Verdict | None:
    """Optimizer hints /*+ ... */: only the `allowed` ones, with plain arguments.

    `allowed` is None where the server reads /*+ ... */ as a comment (PostgreSQL).
    """
    if allowed is None:
        return None
    for comment in comments:
        if not comment.text.startswith("/*+"):
            continue
        body = comment.text[3:-2]
        pos = 0
        while pos < len(body.rstrip()):
            item = _HINT_ITEM.match(body, pos)
            if item is None or item.end() == pos:
                return verdict_of(UNKNOWN, "optimizer hint /*+ ... */ not understood")
            if item.group(1).lower() not in allowed:
                return verdict_of(
                    UNKNOWN, f"optimizer hint {item.group(1).upper()} is not on the allowlist"
                )
            pos = item.end()
    return None
