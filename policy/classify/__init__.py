"""Statement classification: is this SQL text provably read-only, and if not, what is it?

Pure and deterministic: `classify(sql, dialect)` turns SQL text into a `Verdict` (one of
read / write / ddl / admin / unknown, with human-readable reasons) and never raises. The
contract is the SPEC's "Statements: classification"; the rule everywhere is *fail closed*:
anything this module cannot prove harmless is not `read`.

How a text is classified:

1. `precheck`: size and bracket-depth caps on the raw text, before anything reads it (the
   compiled sqlglot recurses once per nesting level and can exhaust the C stack).
2. Two lexers read the text: a small one here that knows exactly where the server ends
   strings, quoted identifiers, dollar quotes and comments (PostgreSQL with
   standard_conforming_strings on, MySQL's default sql_mode), and sqlglot's tokenizer. If
   they disagree on any string, comment or `;` boundary, the verdict is `unknown`: a
   boundary the gateway gets wrong is how a write hides inside a "string" or "comment".
   Then caps on the nesting no bracket shows (CASE, NOT NOT ..., ARRAY[ARRAY[...]], which
   sqlglot parses in exponential time), and MySQL executable comments and optimizer hints.
3. The token stream is split at `;`. Utility statements (transaction control, SET, SHOW,
   EXPLAIN, COPY, ...) are classified from their tokens, because sqlglot models few of
   them. Queries are parsed by sqlglot, with every literal replaced by a fixed placeholder
   first; every node of the tree must be of an allowed kind, and every `name(` in the text
   must be grammar where it stands or a call of a function on the read-safe allowlist, by
   its name as written (not sqlglot's normalised class, which hides the name).
4. The statements' verdicts are combined: all read is read; otherwise the non-read
   statements' class if they share one, else unknown.

A verdict never depends on the values of literals, except in SET and PREPARE statements
(the value is the point there); `policy.fingerprint` relies on this to cache verdicts
across statements that differ only in their literals.

Where each part lives: `verdicts` (the answer), `prechecks` (caps, optimizer hints),
`lexers` (the server lexers and the agreement check), `tokens` (reading tokens),
`context` (one text, statement by statement), `dialects` (what differs between the
servers, one class each), `data` (allowlists and other per-server data), and
`statements` (the handlers, by statement family). docs/classification.md has the map.

What this cannot see: what the database does behind a name. A view, a row-level security
policy, a user-defined cast or operator, or a user function shadowing a builtin through
search_path or overloading can run code on a plain SELECT; creating any of them takes
DDL, which the gateway holds. Connect as a read-only role anyway.
"""

from __future__ import annotations

from policy.classify import context
from policy.classify.dialects import RULES
from policy.classify.lexers import DIALECTS, LITERAL_TOKEN_TYPES, Lexed, lex
from policy.classify.prechecks import MAX_NESTING_DEPTH, MAX_STATEMENT_CHARS, precheck
from policy.classify.verdicts import (
    CLASS_NAMES,
    KILL_REASON,
    LEXER_REASON,
    UNKNOWN,
    StatementClass,
    Verdict,
    combine,
    verdict_of,
)

__all__ = [
    "CLASS_NAMES",
    "DIALECTS",
    "KILL_REASON",
    "LEXER_REASON",
    "LITERAL_TOKEN_TYPES",
    "MAX_NESTING_DEPTH",
    "MAX_STATEMENT_CHARS",
    "Lexed",
    "StatementClass",
    "Verdict",
    "classify",
    "combine",
    "lex",
    "precheck",
]


def classify(sql: str, dialect: str) -> Verdict:
    """The class of `sql` in `dialect` ("postgres" or "mysql"), with reasons. Never raises."""
    try:
        rules = RULES.get(dialect)
        if rules is None:
            return verdict_of(UNKNOWN, f"unknown dialect; expected one of {', '.join(DIALECTS)}")
        return context.classify_text(sql, rules)
    except Exception as error:  # fail closed: a bug or a sqlglot crash is not a read
        return verdict_of(UNKNOWN, f"could not parse: {type(error).__name__}")
