"""The lexers: where the server ends each string, identifier, comment and statement.

Two lexers read every text. `ServerLexer.scan` (one per dialect) knows exactly where the
server ends strings, quoted identifiers, dollar quotes and comments (PostgreSQL with
standard_conforming_strings on, MySQL's default sql_mode). sqlglot's tokenizer makes the
tokens the classifier reads. `lex` returns those tokens only when the two agree on every
string, comment and `;` boundary: a boundary the gateway gets wrong is how a write hides
inside a "string" or "comment".
"""

from __future__ import annotations

import functools
import itertools
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from sqlglot.dialects.dialect import Dialect
from sqlglot.tokenizer_core import Token, TokenType
from sqlglot.tokens import Tokenizer

from policy.classify.verdicts import UNKNOWN, Verdict, verdict_of


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment as the server sees it."""

    start: int
    end: int  # exclusive
    text: str  # as written, delimiters included


@dataclass(frozen=True, slots=True)
class Scan:
    """What a server lexer found in a text; `problem` when it cannot lex it."""

    #: (start, end) of every lexeme that is not whitespace or a comment, in order.
    code: list[tuple[int, int]]
    #: (position of the opening quote, end) of strings, quoted identifiers, dollar quotes.
    quoted: set[tuple[int, int]]
    separators: list[int]
    comments: list[Comment]
    problem: str | None


# `plain` takes a run of names, numbers, operators and whitespace at once when nothing in it
# can start a string, comment, dollar quote or separator: no quote, $, -, /, ; or \, and no
# name glued to what follows it (E'..', U&'..', x$y). The rest goes one lexeme at a time.
#: The PostgreSQL lexer's lexemes, compiled on first use (its character classes over all
#: of Unicode take a noticeable time to compile, and a gateway may serve one dialect).
_PG_LEXEME = r"""
    (?P<ws>[ \t\n\r\f]+)
    | (?P<plain>(?:
          (?>[A-Za-z0-9_\x80-\U0010ffff]+)(?![A-Za-z0-9_\x80-\U0010ffff$'"&])
        | [ \t\n\r\f]+
        | [^A-Za-z0-9_\x80-\U0010ffff'"$;\-/\\ \t\n\r\f\x00-\x1f\x7f]
      )+)
    | (?P<line>--[^\n\r]*)
    | (?P<block>/\*)
    | (?P<estr>[eE]')
    | (?P<ustr>[uU]&')
    | (?P<uident>[uU]&")
    | (?P<bxstr>[bBxX]')
    | (?P<str>[nN]?')
    | (?P<ident>")
    | (?P<dollar>\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$)
    | (?P<param>\$[0-9]+)
    | (?P<word>[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*)
    | (?P<number>[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9][0-9_]*(?:[eE][+-]?[0-9]+)?)
    | (?P<semi>;)
    | (?P<other>.)
    """

_MYSQL_LEXEME = r"""
    (?P<ws>[ \t\n\r\f\v]+)
    | (?P<plain>(?:
          (?>[A-Za-z0-9_$\x80-\U0010ffff]+)(?![A-Za-z0-9_$\x80-\U0010ffff'"`])
        | [ \t\n\r\f\v]+
        | [^A-Za-z0-9_$\x80-\U0010ffff'"`;\-/\#\\ \t\n\r\f\v\x00-\x1f\x7f]
      )+)
    | (?P<line>\#[^\n]*|--(?=[\x00-\x20\x7f]|$)[^\n]*)
    | (?P<exec>/\*!|/\*[mM]!)
    | (?P<block>/\*)
    | (?P<bxstr>[bBxX]')
    | (?P<str>')
    | (?P<dstr>")
    | (?P<ident>`)
    | (?P<word>[A-Za-z0-9_$\x80-\U0010ffff]+)
    | (?P<semi>;)
    | (?P<other>.)
    """


# The rest of a quoted token after its opening quote, per kind.
_PG_STANDARD_REST = re.compile(r"(?:[^']|'')*'")

_PG_ESCAPE_REST = re.compile(r"(?:[^'\\]|\\.|'')*'", re.DOTALL)

_PG_BITS_REST = re.compile(r"[^']*'")

_PG_IDENT_REST = re.compile(r'(?:[^"]|"")*"')

_MYSQL_SINGLE_REST = re.compile(r"(?:[^'\\]|\\.|'')*'", re.DOTALL)

_MYSQL_DOUBLE_REST = re.compile(r'(?:[^"\\]|\\.|"")*"', re.DOTALL)

_MYSQL_BITS_REST = re.compile(r"[^']*'")

_MYSQL_IDENT_REST = re.compile(r"(?:[^`]|``)*`")


# PostgreSQL continues a string literal across whitespace that holds a newline (and --
# comments on their own lines): 'a'\n'b' is one literal, lexed by the first part's rules.
# One character or one comment per repetition: a run of whitespace can be matched one way
# only, so a failed search costs linear time, not exponential.
_PG_CONTINUATION = re.compile(r"[ \t\f]*[\n\r](?:[ \t\n\r\f]|--[^\n\r]*[\n\r])*'")

_PG_BLOCK_MARK = re.compile(r"/\*|\*/")

_PG_STRING_KINDS = {"estr": _PG_ESCAPE_REST, "ustr": _PG_STANDARD_REST, "bxstr": _PG_BITS_REST}


class ServerLexer:
    """Where one server's lexer ends strings, quoted identifiers, comments and statements.

    It does not tokenize for parsing: `lex` checks sqlglot's tokens against it.
    """

    #: What the server's lexer skips as whitespace.
    WHITESPACE: ClassVar[str]
    #: The server's lexemes, one named group per kind (compiled on first use).
    LEXEME: ClassVar[str]

    @functools.cached_property
    def _lexeme(self) -> re.Pattern[str]:
        return re.compile(self.LEXEME, re.VERBOSE | re.DOTALL)

    def scan(self, sql: str) -> Scan:
        raise NotImplementedError


class PostgresLexer(ServerLexer):
    """PostgreSQL's, with standard_conforming_strings on."""

    WHITESPACE = " \t\n\r\f"
    LEXEME = _PG_LEXEME

    def scan(self, sql: str) -> Scan:
        lexeme = self._lexeme
        code: list[tuple[int, int]] = []
        quoted: set[tuple[int, int]] = set()
        separators: list[int] = []
        comments: list[Comment] = []
        continue_at = -1
        continue_rest = _PG_STANDARD_REST
        pos = 0
        size = len(sql)
        while pos < size:
            match = lexeme.match(sql, pos)
            assert match is not None  # `other` matches any character
            kind = match.lastgroup
            end = match.end()
            if kind == "ws":
                pos = end
                continue
            if kind == "plain":
                code.append((pos, pos + len(match.group().rstrip(" \t\n\r\f"))))
                pos = end
                continue
            if kind == "line":
                comments.append(Comment(pos, end, sql[pos:end]))
                pos = end
                continue
            if kind == "block":
                end = _pg_block_comment_end(sql, pos)
                if end < 0:
                    return Scan(code, quoted, separators, comments, "unterminated /* comment")
                comments.append(Comment(pos, end, sql[pos:end]))
                pos = end
                continue
            if kind in ("estr", "ustr", "bxstr", "str", "ident", "uident"):
                quote = end - 1
                if kind == "str" and quote == continue_at:
                    rest = continue_rest
                elif kind in ("ident", "uident"):
                    rest = _PG_IDENT_REST
                else:
                    rest = _PG_STRING_KINDS.get(kind or "", _PG_STANDARD_REST)
                tail = rest.match(sql, end)
                if tail is None:
                    return Scan(code, quoted, separators, comments, "unterminated quoted text")
                end = tail.end()
                quoted.add((quote, end))
                if kind not in ("ident", "uident"):
                    continuation = _PG_CONTINUATION.match(sql, end)
                    if continuation is not None:
                        continue_at = continuation.end() - 1
                        continue_rest = rest
            elif kind == "dollar":
                closing = sql.find(match.group(), end)
                if closing < 0:
                    return Scan(code, quoted, separators, comments, "unterminated $$ string")
                end = closing + len(match.group())
                quoted.add((pos, end))
            elif kind == "semi":
                separators.append(pos)
            code.append((pos, end))
            pos = end
        return Scan(code, quoted, separators, comments, None)


def _pg_block_comment_end(sql: str, start: int) -> int:
    """End of the (nested) block comment opening at `start`, or -1 when it never closes."""
    depth = 0
    for mark in _PG_BLOCK_MARK.finditer(sql, start):
        depth += 1 if mark.group() == "/*" else -1
        if depth == 0:
            return mark.end()
    return -1


class MySQLLexer(ServerLexer):
    """MySQL's, in its default sql_mode (no ANSI_QUOTES, no NO_BACKSLASH_ESCAPES)."""

    WHITESPACE = " \t\n\r\f\v"
    LEXEME = _MYSQL_LEXEME

    def scan(self, sql: str) -> Scan:
        lexeme = self._lexeme
        code: list[tuple[int, int]] = []
        quoted: set[tuple[int, int]] = set()
        separators: list[int] = []
        comments: list[Comment] = []
        pos = 0
        size = len(sql)
        rests = {
            "bxstr": _MYSQL_BITS_REST,
            "str": _MYSQL_SINGLE_REST,
            "dstr": _MYSQL_DOUBLE_REST,
            "ident": _MYSQL_IDENT_REST,
        }
        while pos < size:
            match = lexeme.match(sql, pos)
            assert match is not None
            kind = match.lastgroup or ""
            end = match.end()
            if kind == "ws":
                pos = end
                continue
            if kind == "plain":
                code.append((pos, pos + len(match.group().rstrip(" \t\n\r\f\v"))))
                pos = end
                continue
            if kind == "line":
                comments.append(Comment(pos, end, sql[pos:end]))
                pos = end
                continue
            if kind == "exec":
                return Scan(
                    code,
                    quoted,
                    separators,
                    comments,
                    "MySQL executable comment /*! ... */ runs the text inside it",
                )
            if kind == "block":
                closing = sql.find("*/", end)
                if closing < 0:
                    return Scan(code, quoted, separators, comments, "unterminated /* comment")
                end = closing + 2
                comments.append(Comment(pos, end, sql[pos:end]))
                pos = end
                continue
            if kind in rests:
                tail = rests[kind].match(sql, end)
                if tail is None:
                    return Scan(code, quoted, separators, comments, "unterminated quoted text")
                quoted.add((end - 1, tail.end()))
                end = tail.end()
            elif kind == "semi":
                separators.append(pos)
            code.append((pos, end))
            pos = end
        return Scan(code, quoted, separators, comments, None)


#: Each dialect's server lexer, by the dialect's name.
LEXERS: dict[str, ServerLexer] = {"postgres": PostgresLexer(), "mysql": MySQLLexer()}
DIALECTS = tuple(LEXERS)


@dataclass(frozen=True, slots=True)
class Lexed:
    """sqlglot's tokens for a text, checked against `ServerLexer.scan`'s boundaries."""

    tokens: list[Token]
    comments: list[Comment]


QUOTED_TOKEN_TYPES = frozenset(
    {
        TokenType.STRING,
        TokenType.NATIONAL_STRING,
        TokenType.BYTE_STRING,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.UNICODE_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.RAW_STRING,
        TokenType.NATIONAL_RAW_STRING,
        TokenType.IDENTIFIER,
    }
)

#: Token types that hold a literal value: `_normalized` replaces their text.
LITERAL_TOKEN_TYPES = frozenset(QUOTED_TOKEN_TYPES - {TokenType.IDENTIFIER} | {TokenType.NUMBER})

_QUOTE_CHARS = re.compile(r"['\"`$]")


@functools.cache
def sqlglot_dialect(name: str) -> Dialect:
    if name not in DIALECTS:
        raise ValueError(f"unknown dialect {name!r}; expected one of {', '.join(DIALECTS)}")
    return Dialect.get_or_raise(name)


class _Tokenizers(threading.local):
    """Per-thread tokenizers (a tokenizer keeps state while it runs), one per dialect.

    sqlglot's own tokenizers swallow everything after EXPLAIN, SHOW, CALL, LOCK, ... as a
    single string token, for its `Command` fallback; these keep every token.
    """

    def __init__(self) -> None:
        self.by_dialect: dict[str, Tokenizer] = {}

    def get(self, name: str) -> Tokenizer:
        tokenizer = self.by_dialect.get(name)
        if tokenizer is None:
            dialect = sqlglot_dialect(name)
            plain = type("PlainTokenizer", (dialect.tokenizer_class,), {"COMMANDS": set()})
            tokenizer = self.by_dialect[name] = plain(dialect=dialect)
        return tokenizer


_tokenizers = _Tokenizers()


def lex(sql: str, dialect: str) -> Lexed | Verdict:
    """sqlglot's tokens for `sql`, or the `unknown` verdict when they cannot be trusted.

    They cannot be trusted when `ServerLexer.scan` (which follows the server's lexer) puts a string,
    quoted identifier, comment or `;` anywhere else. Call `precheck` first.
    """
    lexer = LEXERS.get(dialect)
    if lexer is None:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
    scan = lexer.scan(sql)
    if scan.problem is not None:
        return verdict_of(UNKNOWN, scan.problem)
    tokenizer = _tokenizers.get(dialect)
    try:
        tokens = tokenizer.tokenize(sql)
    except Exception as error:  # TokenError, or anything else the tokenizer throws
        if not sql.endswith("'"):
            return verdict_of(UNKNOWN, f"could not tokenize: {type(error).__name__}")
        # sqlglot 30.30 fails on a PostgreSQL text with a $n parameter that ends in '':
        # looking for a $tag$ string it reads to the end, takes the final '' for an
        # escaped quote and finds no character after it. A space after the text lexes
        # the same tokens of the same characters, and they must still agree with `ServerLexer.scan`.
        try:
            tokens = tokenizer.tokenize(sql + " ")
        except Exception as retried:
            return verdict_of(UNKNOWN, f"could not tokenize: {type(retried).__name__}")
    if not _tokens_agree(sql, lexer.WHITESPACE, tokens, scan):
        return verdict_of(
            UNKNOWN,
            "the gateway's two lexers disagree on where a string, identifier or comment "
            "ends; not classified",
        )
    return Lexed(tokens, scan.comments)


def _tokens_agree(sql: str, whitespace: str, tokens: Sequence[Token], scan: Scan) -> bool:
    kinds = [token.token_type for token in tokens]
    if TokenType.HINT in kinds:  # a comment to the server and to `ServerLexer.scan`
        tokens = [token for token in tokens if token.token_type is not TokenType.HINT]
        kinds = [token.token_type for token in tokens]
    starts = [token.start for token in tokens]
    ends = [token.end + 1 for token in tokens]
    if any(start >= end for start, end in zip(starts, ends, strict=True)) or any(
        end > start for end, start in zip(ends, starts[1:], strict=False)
    ):
        return False  # tokens out of order or overlapping: not spans of this text
    if ends and (starts[0] < 0 or ends[-1] > len(sql)):
        return False
    separators = [start for start, kind in zip(starts, kinds, strict=True) if kind is _SEMICOLON]
    if separators != scan.separators:
        return False
    quoted = set()
    for start, end, kind in zip(starts, ends, kinds, strict=True):
        if kind in QUOTED_TOKEN_TYPES:
            first_quote = _QUOTE_CHARS.search(sql, start, end)
            if first_quote is not None:
                quoted.add((first_quote.start(), end))
    if quoted != scan.quoted:
        return False
    return _code_breaks(list(zip(starts, ends, strict=True)), sql, whitespace) == _code_breaks(
        scan.code, sql, whitespace
    )


_SEMICOLON = TokenType.SEMICOLON


def _code_breaks(spans: Sequence[tuple[int, int]], sql: str, whitespace: str) -> list[int]:
    """Where code starts and stops, ignoring gaps of pure whitespace between code spans.

    Two lexers that agree on this agree on what is code and what is comment or whitespace,
    however each cuts the code into tokens.
    """
    if not spans:
        return []
    breaks = [spans[0][0]]
    for (_, end), (start, _) in itertools.pairwise(spans):
        if end != start and sql[end:start].strip(whitespace):
            breaks += (end, start)
    breaks.append(spans[-1][1])
    return breaks
