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

What this cannot see: what the database does behind a name. A view, a row-level security
policy, a user-defined cast or operator, or a user function shadowing a builtin through
search_path or overloading can run code on a plain SELECT; creating any of them takes
DDL, which the gateway holds. Connect as a read-only role anyway.
"""

from __future__ import annotations

import enum
import functools
import itertools
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError
from sqlglot.tokenizer_core import Token, TokenType
from sqlglot.tokens import Tokenizer


class StatementClass(enum.Enum):
    READ = "read"
    WRITE = "write"
    DDL = "ddl"
    ADMIN = "admin"
    UNKNOWN = "unknown"

    # Members are singletons compared by identity, so identity is a correct hash; Enum's
    # own __hash__ is a Python function, and the relay looks classes up per statement.
    __hash__ = object.__hash__


#: Each class's name, as transcripts record it: `.value` is an Enum property, dearer.
CLASS_NAMES: dict[StatementClass, str] = {cls: cls.value for cls in StatementClass}


@dataclass(frozen=True, slots=True)
class Verdict:
    statement_class: StatementClass
    reasons: tuple[str, ...]

    @property
    def is_read(self) -> bool:
        return self.statement_class is StatementClass.READ

    def to_json(self) -> dict[str, object]:
        return {"class": self.statement_class.value, "reasons": list(self.reasons)}


#: The end of every reason given to a statement that would change how the server lexes
#: statements (character set, sql_mode): the MySQL gateway refuses these whatever the rule.
LEXER_REASON = "would desynchronise the gateway's lexer"
#: The reason a MySQL KILL statement carries: the gateway runs KILL itself, for the
#: agent's own sessions, and never forwards one (gateway and server ids differ).
KILL_REASON = "KILL ends a connection or query"

READ = StatementClass.READ
WRITE = StatementClass.WRITE
DDL = StatementClass.DDL
ADMIN = StatementClass.ADMIN
UNKNOWN = StatementClass.UNKNOWN

DIALECTS = ("postgres", "mysql")

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
#: PREPARE ... FROM '...' (MySQL) and EXPLAIN/COPY/DECLARE wrap statements; this bounds it.
MAX_WRAPPING = 4


def _verdict(statement_class: StatementClass, *reasons: str) -> Verdict:
    return Verdict(statement_class, tuple(reasons))


# --------------------------------------------------------------------------- precheck

_BRACKETS_ONLY = re.compile(r"[^()\[\]{}]+")
_AS_PARENS = str.maketrans("[{]}", "(())")


def precheck(sql: str) -> Verdict | None:
    """The caps that hold before anything reads the text: size, bracket depth, NUL.

    Cheap (a few C-level passes over the text, no parse). None when the text may be
    classified; otherwise the `unknown` verdict to give it. Brackets inside strings and
    comments count too: this runs before anything knows where strings are.
    """
    if len(sql) > MAX_STATEMENT_CHARS:
        return _verdict(
            UNKNOWN, f"statement is longer than {MAX_STATEMENT_CHARS} characters; not parsed"
        )
    if "\x00" in sql:
        return _verdict(UNKNOWN, "statement contains a NUL character")
    opens = sql.count("(") + sql.count("[") + sql.count("{")
    if opens > MAX_NESTING_DEPTH and _bracket_depth_exceeds(sql, MAX_NESTING_DEPTH):
        return _verdict(
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


# --------------------------------------------------------------------------- the lexers
#
# `_scan` is this module's own lexer. It does not tokenize for parsing; it finds what the
# server's lexer would treat as strings, quoted identifiers, comments and statement
# separators, so that sqlglot's tokens can be checked against it (`lex`).


@dataclass(frozen=True, slots=True)
class _Comment:
    start: int
    end: int  # exclusive
    text: str  # as written, delimiters included


@dataclass(frozen=True, slots=True)
class _Scan:
    #: (start, end) of every lexeme that is not whitespace or a comment, in order.
    code: list[tuple[int, int]]
    #: (position of the opening quote, end) of strings, quoted identifiers, dollar quotes.
    quoted: set[tuple[int, int]]
    separators: list[int]
    comments: list[_Comment]
    problem: str | None


# `plain` takes a run of names, numbers, operators and whitespace at once when nothing in it
# can start a string, comment, dollar quote or separator: no quote, $, -, /, ; or \, and no
# name glued to what follows it (E'..', U&'..', x$y). The rest goes one lexeme at a time.
_PG_LEXEME = re.compile(
    r"""
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
    """,
    re.VERBOSE | re.DOTALL,
)

_MYSQL_LEXEME = re.compile(
    r"""
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
    """,
    re.VERBOSE | re.DOTALL,
)

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
_PG_CONTINUATION = re.compile(r"[ \t\f]*[\n\r](?:[ \t\n\r\f]+|--[^\n\r]*[\n\r])*'")
_PG_BLOCK_MARK = re.compile(r"/\*|\*/")
_PG_STRING_KINDS = {"estr": _PG_ESCAPE_REST, "ustr": _PG_STANDARD_REST, "bxstr": _PG_BITS_REST}


def _scan(sql: str, dialect: str) -> _Scan:
    return _scan_postgres(sql) if dialect == "postgres" else _scan_mysql(sql)


def _scan_postgres(sql: str) -> _Scan:
    code: list[tuple[int, int]] = []
    quoted: set[tuple[int, int]] = set()
    separators: list[int] = []
    comments: list[_Comment] = []
    continue_at = -1
    continue_rest = _PG_STANDARD_REST
    pos = 0
    size = len(sql)
    while pos < size:
        match = _PG_LEXEME.match(sql, pos)
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
            comments.append(_Comment(pos, end, sql[pos:end]))
            pos = end
            continue
        if kind == "block":
            end = _pg_block_comment_end(sql, pos)
            if end < 0:
                return _Scan(code, quoted, separators, comments, "unterminated /* comment")
            comments.append(_Comment(pos, end, sql[pos:end]))
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
                return _Scan(code, quoted, separators, comments, "unterminated quoted text")
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
                return _Scan(code, quoted, separators, comments, "unterminated $$ string")
            end = closing + len(match.group())
            quoted.add((pos, end))
        elif kind == "semi":
            separators.append(pos)
        code.append((pos, end))
        pos = end
    return _Scan(code, quoted, separators, comments, None)


def _pg_block_comment_end(sql: str, start: int) -> int:
    """End of the (nested) block comment opening at `start`, or -1 when it never closes."""
    depth = 0
    for mark in _PG_BLOCK_MARK.finditer(sql, start):
        depth += 1 if mark.group() == "/*" else -1
        if depth == 0:
            return mark.end()
    return -1


def _scan_mysql(sql: str) -> _Scan:
    code: list[tuple[int, int]] = []
    quoted: set[tuple[int, int]] = set()
    separators: list[int] = []
    comments: list[_Comment] = []
    pos = 0
    size = len(sql)
    rests = {
        "bxstr": _MYSQL_BITS_REST,
        "str": _MYSQL_SINGLE_REST,
        "dstr": _MYSQL_DOUBLE_REST,
        "ident": _MYSQL_IDENT_REST,
    }
    while pos < size:
        match = _MYSQL_LEXEME.match(sql, pos)
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
            comments.append(_Comment(pos, end, sql[pos:end]))
            pos = end
            continue
        if kind == "exec":
            return _Scan(
                code,
                quoted,
                separators,
                comments,
                "MySQL executable comment /*! ... */ runs the text inside it",
            )
        if kind == "block":
            closing = sql.find("*/", end)
            if closing < 0:
                return _Scan(code, quoted, separators, comments, "unterminated /* comment")
            end = closing + 2
            comments.append(_Comment(pos, end, sql[pos:end]))
            pos = end
            continue
        if kind in rests:
            tail = rests[kind].match(sql, end)
            if tail is None:
                return _Scan(code, quoted, separators, comments, "unterminated quoted text")
            quoted.add((end - 1, tail.end()))
            end = tail.end()
        elif kind == "semi":
            separators.append(pos)
        code.append((pos, end))
        pos = end
    return _Scan(code, quoted, separators, comments, None)


@dataclass(frozen=True, slots=True)
class Lexed:
    """sqlglot's tokens for a text, checked against `_scan`'s boundaries."""

    tokens: list[Token]
    comments: list[_Comment]


_QUOTED_TOKEN_TYPES = frozenset(
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
LITERAL_TOKEN_TYPES = frozenset(_QUOTED_TOKEN_TYPES - {TokenType.IDENTIFIER} | {TokenType.NUMBER})
_QUOTE_CHARS = re.compile(r"['\"`$]")
#: What each server's lexer skips as whitespace.
_WHITESPACE = {"postgres": " \t\n\r\f", "mysql": " \t\n\r\f\v"}


@functools.cache
def _dialect(name: str) -> Dialect:
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
            dialect = _dialect(name)
            plain = type("PlainTokenizer", (dialect.tokenizer_class,), {"COMMANDS": set()})
            tokenizer = self.by_dialect[name] = plain(dialect=dialect)
        return tokenizer


_tokenizers = _Tokenizers()


def lex(sql: str, dialect: str) -> Lexed | Verdict:
    """sqlglot's tokens for `sql`, or the `unknown` verdict when they cannot be trusted.

    They cannot be trusted when `_scan` (which follows the server's lexer) puts a string,
    quoted identifier, comment or `;` anywhere else. Call `precheck` first.
    """
    scan = _scan(sql, dialect)
    if scan.problem is not None:
        return _verdict(UNKNOWN, scan.problem)
    tokenizer = _tokenizers.get(dialect)
    try:
        tokens = tokenizer.tokenize(sql)
    except Exception as error:  # TokenError, or anything else the tokenizer throws
        if not sql.endswith("'"):
            return _verdict(UNKNOWN, f"could not tokenize: {type(error).__name__}")
        # sqlglot 30.30 fails on a PostgreSQL text with a $n parameter that ends in '':
        # looking for a $tag$ string it reads to the end, takes the final '' for an
        # escaped quote and finds no character after it. A space after the text lexes
        # the same tokens of the same characters, and they must still agree with `_scan`.
        try:
            tokens = tokenizer.tokenize(sql + " ")
        except Exception as retried:
            return _verdict(UNKNOWN, f"could not tokenize: {type(retried).__name__}")
    if not _tokens_agree(sql, dialect, tokens, scan):
        return _verdict(
            UNKNOWN,
            "the gateway's two lexers disagree on where a string, identifier or comment "
            "ends; not classified",
        )
    return Lexed(tokens, scan.comments)


def _tokens_agree(sql: str, dialect: str, tokens: Sequence[Token], scan: _Scan) -> bool:
    kinds = [token.token_type for token in tokens]
    if TokenType.HINT in kinds:  # a comment to the server and to `_scan`
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
        if kind in _QUOTED_TOKEN_TYPES:
            first_quote = _QUOTE_CHARS.search(sql, start, end)
            if first_quote is not None:
                quoted.add((first_quote.start(), end))
    if quoted != scan.quoted:
        return False
    whitespace = _WHITESPACE[dialect]
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


# --------------------------------------------------------------------------- allowlists


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Functions that only compute a value: no writes, no locks, no waiting, no file or
#: network access, no other sessions, no SQL text executed. Matched by the name as written
#: (lower case); PostgreSQL also allows the `pg_catalog.` qualifier, MySQL no qualifier.
_COMMON_FUNCTIONS = _names(
    """
    abs acos all any array asin atan atan2 avg bit_and bit_count bit_length bit_or bit_xor
    cast ceil exists row some
    ceiling char_length character_length coalesce concat concat_ws cos cot count
    cume_dist current_date current_role current_time current_timestamp current_user
    degrees dense_rank exp extract first_value floor format greatest
    json_array json_arrayagg json_object json_objectagg json_table json_value lag
    last_value lead least left length ln localtime localtimestamp log log10 lower lpad
    ltrim max md5 min mod now nth_value ntile nullif octet_length percent_rank pi
    position power radians rank regexp_instr regexp_like regexp_replace regexp_substr
    repeat replace reverse right round row_number rpad rtrim session_user sign sin sqrt
    stddev stddev_pop stddev_samp substr substring sum tan trim upper var_pop var_samp
    variance version
    """
)

_POSTGRES_FUNCTIONS = _COMMON_FUNCTIONS | _names(
    """
    acosd acosh age any_value array_agg array_append array_cat array_dims array_fill
    array_length array_lower array_ndims array_position array_positions array_prepend
    array_remove array_replace array_reverse array_sample array_shuffle array_sort
    array_to_json array_to_string array_to_tsvector array_upper ascii asind asinh atan2d
    atand atanh bool_and bool_or box btrim cardinality cbrt center char chr circle
    clock_timestamp col_description convert convert_from convert_to corr cosd cosh cotd
    covar_pop covar_samp crc32 crc32c current_catalog current_database current_query
    current_schema current_schemas current_setting currval date_bin date_part
    date_subtract date_trunc daterange datemultirange decode diameter div encode
    enum_first enum_last enum_range erf erfc every factorial family float4 float8
    format_type gcd gen_random_uuid generate_series generate_subscripts get_bit get_byte
    has_any_column_privilege has_column_privilege has_database_privilege
    has_foreign_data_wrapper_privilege has_function_privilege has_language_privilege
    has_parameter_privilege has_schema_privilege has_sequence_privilege
    has_server_privilege has_table_privilege has_tablespace_privilege has_type_privilege
    height host hostmask inet_client_addr inet_client_port inet_merge inet_same_family
    inet_server_addr inet_server_port initcap int2 int4 int4range int4multirange int8
    int8range int8multirange isempty isfinite json json_agg json_array_elements
    json_array_elements_text json_array_length json_build_array json_build_object
    json_each json_each_text json_exists json_extract_path json_extract_path_text
    json_object_agg json_object_keys json_populate_record json_populate_recordset
    json_query json_scalar json_serialize json_strip_nulls json_to_record
    json_to_recordset json_typeof jsonb_agg jsonb_array_elements
    jsonb_array_elements_text jsonb_array_length jsonb_build_array jsonb_build_object
    jsonb_each jsonb_each_text jsonb_exists jsonb_extract_path jsonb_extract_path_text
    jsonb_insert jsonb_object jsonb_object_agg jsonb_object_keys jsonb_path_exists
    jsonb_path_exists_tz jsonb_path_match jsonb_path_match_tz jsonb_path_query
    jsonb_path_query_array jsonb_path_query_array_tz jsonb_path_query_first
    jsonb_path_query_first_tz jsonb_path_query_tz jsonb_populate_record
    jsonb_populate_recordset jsonb_pretty jsonb_set jsonb_set_lax jsonb_strip_nulls
    jsonb_to_record jsonb_to_recordset jsonb_typeof justify_days justify_hours
    justify_interval lastval lcm lower_inc lower_inf lseg make_date make_interval
    make_time make_timestamp make_timestamptz masklen min_scale mode multirange
    netmask network normalize num_nonnulls num_nulls numeric numrange nummultirange
    obj_description overlay parse_ident percentile_cont percentile_disc
    pg_backend_pid pg_blocking_pids pg_client_encoding pg_collation_is_visible
    pg_column_compression pg_column_size pg_conf_load_time pg_conversion_is_visible
    pg_current_snapshot pg_database_size pg_describe_object pg_encoding_to_char
    pg_function_is_visible pg_get_constraintdef pg_get_expr pg_get_function_arguments
    pg_get_function_identity_arguments pg_get_function_result pg_get_functiondef
    pg_get_indexdef pg_get_keywords pg_get_partkeydef pg_get_ruledef
    pg_get_serial_sequence pg_get_statisticsobjdef pg_get_triggerdef pg_get_userbyid
    pg_get_viewdef pg_has_role pg_identify_object pg_index_column_has_property
    pg_index_has_property pg_indexam_has_property pg_indexes_size pg_input_error_info
    pg_input_is_valid pg_is_in_recovery pg_jit_available pg_last_wal_receive_lsn
    pg_last_wal_replay_lsn pg_last_xact_replay_timestamp pg_my_temp_schema
    pg_opclass_is_visible pg_operator_is_visible pg_opfamily_is_visible
    pg_partition_ancestors pg_partition_root pg_partition_tree pg_postmaster_start_time
    pg_relation_filenode pg_relation_filepath pg_relation_size pg_safe_snapshot_blocking_pids
    pg_size_bytes pg_size_pretty pg_snapshot_xip pg_snapshot_xmax pg_snapshot_xmin
    pg_statistics_obj_is_visible pg_table_is_visible pg_table_size pg_tablespace_size
    pg_total_relation_size pg_trigger_depth pg_ts_config_is_visible pg_ts_dict_is_visible
    pg_ts_parser_is_visible pg_ts_template_is_visible pg_type_is_visible pg_typeof
    pg_visible_in_snapshot pg_wal_lsn_diff phraseto_tsquery plainto_tsquery point
    polygon quote_ident quote_literal quote_nullable radius random random_normal
    range_agg range_intersect_agg range_merge regexp_count regexp_match regexp_matches
    regexp_split_to_array regexp_split_to_table regr_avgx regr_avgy regr_count
    regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy row_security_active
    row_to_json scale setweight sha224 sha256 sha384 sha512 shobj_description sind sinh
    slope split_part starts_with statement_timestamp string_agg string_to_array
    string_to_table strip strpos tand tanh text timeofday timezone to_ascii to_char
    to_date to_hex to_json to_jsonb to_number to_regclass to_regcollation
    to_regnamespace to_regoper to_regoperator to_regproc to_regprocedure to_regrole
    to_regtype to_regtypemod to_timestamp to_tsquery to_tsvector transaction_timestamp
    translate trim_array trim_scale trunc ts_headline ts_rank ts_rank_cd tsrange
    tsmultirange tstzrange tstzmultirange tsvector_to_array unistr unnest upper_inc
    upper_inf user websearch_to_tsquery width width_bucket xmlagg xmlconcat
    xmlelement xmlexists xmlforest xmlparse xmlpi xmlroot xmlserialize xmltable xpath
    xpath_exists

    similarity word_similarity strict_word_similarity show_trgm
    levenshtein levenshtein_less_equal soundex difference metaphone dmetaphone
    dmetaphone_alt unaccent
    l2_distance l1_distance cosine_distance inner_product vector_dims vector_norm
    l2_normalize binary_quantize subvector hamming_distance jaccard_distance
    """
)

_MYSQL_FUNCTIONS = _COMMON_FUNCTIONS | _names(
    """
    adddate addtime aes_decrypt aes_encrypt any_value ascii bin bin_to_uuid char charset
    connection_id date_add date_sub
    coercibility collation compress conv convert convert_tz crc32 curdate current_role
    curtime database date date_format datediff day dayname dayofmonth dayofweek
    dayofyear elt export_set field find_in_set format_bytes format_pico_time found_rows
    from_base64 from_days from_unixtime get_format group_concat hex hour icu_version if
    ifnull inet6_aton inet6_ntoa inet_aton inet_ntoa insert instr interval is_ipv4
    is_ipv4_compat is_ipv4_mapped is_ipv6 is_uuid isnull json_array_append
    json_array_insert json_contains json_contains_path json_depth json_extract
    json_insert json_keys json_length json_merge json_merge_patch json_merge_preserve
    json_overlaps json_pretty json_quote json_remove json_replace json_schema_valid
    json_schema_validation_report json_search json_set json_storage_free
    json_storage_size json_type json_unquote json_valid last_day last_insert_id lcase
    locate log2 make_set makedate maketime match microsecond mid minute month monthname
    oct ord period_add period_diff pow quarter quote rand random_bytes regexp
    roles_graphml row_count schema sec_to_time second sha sha1 sha2 soundex space std
    str_to_date strcmp subdate substring_index subtime sysdate system_user time
    time_format time_to_sec timediff timestamp timestampadd timestampdiff to_base64
    to_days to_seconds truncate ucase uncompress uncompressed_length unhex
    unix_timestamp user utc_date utc_time utc_timestamp uuid uuid_short uuid_to_bin
    week weekday weekofyear weight_string year yearweek
    """
)

_READ_SAFE_FUNCTIONS = {"postgres": _POSTGRES_FUNCTIONS, "mysql": _MYSQL_FUNCTIONS}

#: Functions known to have effects, with a sharper class and reason than "not allowlisted".
_KNOWN_EFFECTS: dict[str, tuple[StatementClass, str]] = {
    **dict.fromkeys(("nextval", "setval"), (WRITE, "changes a sequence")),
    **dict.fromkeys(
        (
            "pg_advisory_lock",
            "pg_advisory_lock_shared",
            "pg_advisory_unlock",
            "pg_advisory_unlock_all",
            "pg_advisory_unlock_shared",
            "pg_advisory_xact_lock",
            "pg_advisory_xact_lock_shared",
            "pg_try_advisory_lock",
            "pg_try_advisory_lock_shared",
            "pg_try_advisory_xact_lock",
            "pg_try_advisory_xact_lock_shared",
            "get_lock",
            "release_lock",
            "release_all_locks",
        ),
        (WRITE, "takes or releases a lock"),
    ),
    **dict.fromkeys(
        ("lo_create", "lo_creat", "lo_from_bytea", "lo_put", "lo_unlink", "lo_truncate"),
        (WRITE, "changes a large object"),
    ),
    "pg_notify": (WRITE, "sends a notification to other sessions"),
    "txid_current": (WRITE, "assigns a transaction id"),
    "pg_current_xact_id": (WRITE, "assigns a transaction id"),
    "set_config": (ADMIN, "changes a server setting"),
    **dict.fromkeys(
        (
            "pg_cancel_backend",
            "pg_terminate_backend",
            "pg_reload_conf",
            "pg_rotate_logfile",
            "pg_switch_wal",
            "pg_create_restore_point",
            "pg_promote",
            "pg_log_backend_memory_contexts",
            "pg_stat_reset",
            "pg_stat_reset_shared",
            "pg_stat_reset_single_table_counters",
            "pg_stat_reset_single_function_counters",
            "pg_stat_reset_slru",
            "pg_stat_reset_replication_slot",
            "pg_stat_statements_reset",
            "pg_backup_start",
            "pg_backup_stop",
            "pg_wal_replay_pause",
            "pg_wal_replay_resume",
            "pg_create_physical_replication_slot",
            "pg_create_logical_replication_slot",
            "pg_drop_replication_slot",
            "pg_import_system_collations",
        ),
        (ADMIN, "acts on the server or other sessions"),
    ),
    **dict.fromkeys(
        (
            "pg_read_file",
            "pg_read_binary_file",
            "pg_stat_file",
            "pg_ls_dir",
            "pg_ls_logdir",
            "pg_ls_waldir",
            "pg_ls_tmpdir",
            "pg_ls_archive_statusdir",
            "pg_ls_logicalmapdir",
            "pg_ls_logicalsnapdir",
            "pg_ls_replslotdir",
            "lo_import",
            "lo_export",
            "load_file",
        ),
        (ADMIN, "reads or writes the server's file system"),
    ),
    **dict.fromkeys(
        (
            "dblink",
            "dblink_exec",
            "dblink_connect",
            "dblink_connect_u",
            "dblink_send_query",
            "query_to_xml",
            "query_to_xmlschema",
            "query_to_xml_and_xmlschema",
            "cursor_to_xml",
            "ts_rewrite",
        ),
        (UNKNOWN, "runs SQL text the gateway cannot see"),
    ),
}

#: Session settings drivers and tools send on connect, harmless to change (PostgreSQL).
_POSTGRES_SETTINGS = _names(
    """
    application_name bytea_output client_encoding client_min_messages datestyle
    default_transaction_isolation extra_float_digits idle_in_transaction_session_timeout
    idle_session_timeout intervalstyle lock_timeout search_path standard_conforming_strings
    statement_timeout timezone transaction_isolation xmloption
    """
)
#: ... and MySQL.
_MYSQL_SETTINGS = _names(
    """
    autocommit character_set_client character_set_connection character_set_results
    collation_connection div_precision_increment group_concat_max_len
    innodb_lock_wait_timeout interactive_timeout lc_time_names lock_wait_timeout
    max_execution_time net_read_timeout net_write_timeout sql_mode sql_select_limit
    time_zone transaction_isolation tx_isolation wait_timeout
    """
)
_UTF8_ENCODINGS = frozenset({"utf8", "unicode"})  # PostgreSQL: case and punctuation ignored
_MYSQL_CHARSETS = frozenset({"utf8mb4", "utf8mb3", "utf8", "ascii"})
#: sql_mode flags that do not change how a statement is lexed (ANSI_QUOTES and
#: NO_BACKSLASH_ESCAPES do, and so do the combination modes that include them).
_MYSQL_SAFE_SQL_MODES = _names(
    """
    allow_invalid_dates error_for_division_by_zero high_not_precedence ignore_space
    no_auto_create_user no_auto_value_on_zero no_dir_in_create no_engine_substitution
    no_unsigned_subtraction no_zero_date no_zero_in_date only_full_group_by
    pad_char_to_full_length pipes_as_concat real_as_float strict_all_tables
    strict_trans_tables time_truncate_fractional traditional
    """
)
#: MySQL optimizer hints /*+ ... */ that only steer the plan. SET_VAR and RESOURCE_GROUP
#: change settings, so they are left out.
_MYSQL_HINTS = _names(
    """
    bka bnl derived_condition_pushdown group_index hash_join index index_merge
    join_fixed_order join_index join_order join_prefix join_suffix max_execution_time
    merge mrr no_bka no_bnl no_derived_condition_pushdown no_group_index no_hash_join
    no_icp no_index no_index_merge no_join_index no_merge no_mrr no_order_index
    no_range_optimization no_semijoin no_skip_scan order_index qb_name semijoin
    skip_scan subquery
    """
)


# --------------------------------------------------------------------------- classify


def classify(sql: str, dialect: str) -> Verdict:
    """The class of `sql` in `dialect` ("postgres" or "mysql"), with reasons. Never raises."""
    try:
        return _classify_text(sql, dialect)
    except Exception as error:  # fail closed: a bug or a sqlglot crash is not a read
        return _verdict(UNKNOWN, f"could not parse: {type(error).__name__}")


def _classify_text(sql: str, dialect: str, wrapping: int = 0) -> Verdict:
    if dialect not in DIALECTS:
        return _verdict(UNKNOWN, f"unknown dialect; expected one of {', '.join(DIALECTS)}")
    refused = precheck(sql)
    if refused is not None:
        return refused
    lexed = lex(sql, dialect)
    if isinstance(lexed, Verdict):
        return lexed
    tokens = lexed.tokens
    refused = _check_nesting(tokens) or _check_comments(lexed.comments, dialect)
    if refused is not None:
        return refused
    statements = _split(tokens)
    if not statements:
        return _verdict(READ, "empty statement: nothing runs")
    context = _Context(sql, dialect, wrapping)
    verdicts = [_classify_statement(context, statement) for statement in statements]
    return combine(verdicts)


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict for several statements run together: the strictest.

    All read is read. Otherwise the non-read statements' class when they share one, else
    unknown. Reasons of several statements say which statement they are about.
    """
    if len(verdicts) == 1:
        return verdicts[0]
    blocking = [(n, v) for n, v in enumerate(verdicts, 1) if not v.is_read]
    shown = blocking or list(enumerate(verdicts, 1))
    classes = {v.statement_class for _, v in shown}
    statement_class = classes.pop() if len(classes) == 1 else UNKNOWN
    reasons: list[str] = []
    for number, verdict in shown:
        for reason in verdict.reasons:
            labelled = f"statement {number} of {len(verdicts)}: {reason}"
            if labelled not in reasons:
                reasons.append(labelled)
    return Verdict(statement_class, tuple(reasons))


@dataclass(frozen=True, slots=True)
class _Context:
    sql: str
    dialect: str
    wrapping: int


def _split(tokens: Sequence[Token]) -> list[list[Token]]:
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type is TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return [statement for statement in statements if statement]


_PREFIX_OPERATORS = frozenset({TokenType.NOT, TokenType.DASH, TokenType.PLUS, TokenType.TILDE})


def _check_nesting(tokens: Sequence[Token]) -> Verdict | None:
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
                return _verdict(UNKNOWN, "array brackets are nested or chained too deeply")
        elif kind is TokenType.R_BRACKET:
            square = max(square - 1, 0)
        elif kind is TokenType.CASE:
            case += 1
            if case > MAX_KEYWORD_NESTING:
                return _verdict(UNKNOWN, "CASE expressions are nested too deeply")
        elif kind is TokenType.END:
            case = max(case - 1, 0)
        prefix_run = prefix_run + 1 if kind in _PREFIX_OPERATORS else 0
        if prefix_run > MAX_KEYWORD_NESTING:
            return _verdict(UNKNOWN, "too many prefix operators in a row")
        previous = kind
    return None


_HINT_ITEM = re.compile(r"\s*([A-Za-z_]+)\s*(?:\(([^()'\"`]*)\))?")


def _check_comments(comments: Sequence[_Comment], dialect: str) -> Verdict | None:
    """MySQL optimizer hints: only the ones that steer the plan, with plain arguments."""
    if dialect != "mysql":
        return None
    for comment in comments:
        if not comment.text.startswith("/*+"):
            continue
        body = comment.text[3:-2]
        pos = 0
        while pos < len(body.rstrip()):
            item = _HINT_ITEM.match(body, pos)
            if item is None or item.end() == pos:
                return _verdict(UNKNOWN, "optimizer hint /*+ ... */ not understood")
            if item.group(1).lower() not in _MYSQL_HINTS:
                return _verdict(
                    UNKNOWN, f"optimizer hint {item.group(1).upper()} is not on the allowlist"
                )
            pos = item.end()
    return None


# --------------------------------------------------------------------------- statements

_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def _word(token: Token | None) -> str:
    """The token's text in upper case when it is a bare word (keyword or name), else "".

    sqlglot makes one token of a few keyword pairs ("LOCK TABLES", "GROUP BY"): those come
    back as their words joined by one space.
    """
    if token is None or token.token_type in _QUOTED_TOKEN_TYPES:
        return ""
    text = token.text
    if _BARE_WORD.fullmatch(text):
        return text.upper()
    parts = text.split()
    if len(parts) > 1 and all(_BARE_WORD.fullmatch(part) for part in parts):
        return " ".join(parts).upper()
    return ""


def _words(tokens: Sequence[Token]) -> list[str]:
    return [_word(token) for token in tokens]


def _classify_statement(context: _Context, tokens: list[Token]) -> Verdict:
    first = _word(tokens[0]).partition(" ")[0]
    if first in _QUERY_STARTS or tokens[0].token_type is TokenType.L_PAREN:
        return _classify_query(context, tokens)
    if first in _DML:
        return _verdict(WRITE, f"{first} modifies data")
    handler = _HANDLERS.get((context.dialect, first)) or _HANDLERS.get(("", first))
    if handler is not None:
        return handler(context, tokens)
    fixed = _FIXED.get((context.dialect, first)) or _FIXED.get(("", first))
    if fixed is not None:
        return fixed
    if first:
        return _verdict(UNKNOWN, f"{first} statements are not classified")
    return _verdict(UNKNOWN, "statement does not start with a keyword")


_QUERY_STARTS = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})
_DML = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE"})

_FIXED: dict[tuple[str, str], Verdict] = {
    ("", "TRUNCATE"): _verdict(WRITE, "TRUNCATE removes all rows of a table"),
    ("", "GRANT"): _verdict(ADMIN, "GRANT changes privileges"),
    ("", "REVOKE"): _verdict(ADMIN, "REVOKE changes privileges"),
    ("", "SAVEPOINT"): _verdict(READ, "SAVEPOINT is transaction control"),
    ("", "RELEASE"): _verdict(READ, "RELEASE SAVEPOINT is transaction control"),
    ("", "DEALLOCATE"): _verdict(READ, "DEALLOCATE drops this session's prepared statement"),
    ("", "CALL"): _verdict(UNKNOWN, "CALL runs a procedure the gateway cannot see into"),
    ("", "EXECUTE"): _verdict(UNKNOWN, "EXECUTE runs a prepared statement the gateway cannot see"),
    ("postgres", "ANALYZE"): _verdict(ADMIN, "ANALYZE is maintenance: it writes statistics"),
    ("", "CHECKPOINT"): _verdict(ADMIN, "CHECKPOINT is server maintenance"),
    ("postgres", "ANALYSE"): _verdict(ADMIN, "ANALYZE is maintenance: it writes statistics"),
    ("postgres", "VACUUM"): _verdict(ADMIN, "VACUUM is maintenance"),
    ("postgres", "CLUSTER"): _verdict(ADMIN, "CLUSTER rewrites a table"),
    ("postgres", "REINDEX"): _verdict(ADMIN, "REINDEX rebuilds indexes"),
    ("postgres", "REFRESH"): _verdict(WRITE, "REFRESH MATERIALIZED VIEW rewrites its data"),
    ("postgres", "COMMENT"): _verdict(DDL, "COMMENT ON changes the schema's comments"),
    ("postgres", "SECURITY"): _verdict(DDL, "SECURITY LABEL changes the schema"),
    ("postgres", "IMPORT"): _verdict(DDL, "IMPORT FOREIGN SCHEMA creates tables"),
    ("postgres", "REASSIGN"): _verdict(ADMIN, "REASSIGN OWNED changes ownership"),
    ("postgres", "LOAD"): _verdict(ADMIN, "LOAD loads a shared library into the server"),
    ("postgres", "LISTEN"): _verdict(READ, "LISTEN only subscribes this session"),
    ("postgres", "UNLISTEN"): _verdict(READ, "UNLISTEN only unsubscribes this session"),
    ("postgres", "NOTIFY"): _verdict(WRITE, "NOTIFY sends a notification to other sessions"),
    ("postgres", "LOCK"): _verdict(WRITE, "LOCK takes a table lock"),
    ("postgres", "DO"): _verdict(UNKNOWN, "DO runs a code block the gateway cannot see into"),
    ("postgres", "FETCH"): _verdict(READ, "FETCH reads from this session's cursor"),
    ("postgres", "MOVE"): _verdict(READ, "MOVE positions this session's cursor"),
    ("postgres", "CLOSE"): _verdict(READ, "CLOSE closes this session's cursor"),
    ("mysql", "USE"): _verdict(READ, "USE selects the default database"),
    ("mysql", "HELP"): _verdict(READ, "HELP reads the server's help tables"),
    ("mysql", "KILL"): _verdict(ADMIN, KILL_REASON),
    ("mysql", "FLUSH"): _verdict(ADMIN, "FLUSH acts on server caches, logs or privileges"),
    ("mysql", "PURGE"): _verdict(ADMIN, "PURGE deletes binary logs"),
    ("mysql", "RESET"): _verdict(ADMIN, "RESET resets server state"),
    ("mysql", "SHUTDOWN"): _verdict(ADMIN, "SHUTDOWN stops the server"),
    ("mysql", "RESTART"): _verdict(ADMIN, "RESTART restarts the server"),
    ("mysql", "INSTALL"): _verdict(ADMIN, "INSTALL loads a plugin or component"),
    ("mysql", "UNINSTALL"): _verdict(ADMIN, "UNINSTALL removes a plugin or component"),
    ("mysql", "CHANGE"): _verdict(ADMIN, "CHANGE REPLICATION changes replication"),
    ("mysql", "STOP"): _verdict(ADMIN, "STOP controls replication"),
    ("mysql", "CACHE"): _verdict(ADMIN, "CACHE INDEX changes server caches"),
    ("mysql", "BINLOG"): _verdict(ADMIN, "BINLOG replays binary log events"),
    ("mysql", "CLONE"): _verdict(ADMIN, "CLONE copies a server"),
    ("mysql", "OPTIMIZE"): _verdict(ADMIN, "OPTIMIZE TABLE rebuilds a table"),
    ("mysql", "REPAIR"): _verdict(ADMIN, "REPAIR TABLE rewrites a table"),
    ("mysql", "CHECK"): _verdict(ADMIN, "CHECK TABLE is maintenance"),
    ("mysql", "CHECKSUM"): _verdict(ADMIN, "CHECKSUM TABLE is maintenance"),
    ("mysql", "IMPORT"): _verdict(DDL, "IMPORT TABLE creates tables"),
    ("mysql", "XA"): _verdict(WRITE, "XA controls a distributed transaction"),
    ("mysql", "HANDLER"): _verdict(UNKNOWN, "HANDLER opens a low-level table handle"),
    ("mysql", "GET"): _verdict(READ, "GET DIAGNOSTICS reads this session's diagnostics"),
}


def _top_level_split(tokens: Sequence[Token], separator: TokenType) -> list[list[Token]]:
    """`tokens` split at `separator` tokens outside brackets."""
    parts: list[list[Token]] = [[]]
    depth = 0
    for token in tokens:
        kind = token.token_type
        if kind in (TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE):
            depth += 1
        elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE):
            depth -= 1
        elif kind is separator and depth == 0:
            parts.append([])
            continue
        parts[-1].append(token)
    return parts


def _top_level_word(tokens: Sequence[Token], word: str) -> int:
    """Index of the first bare `word` outside brackets, or -1."""
    depth = 0
    for index, token in enumerate(tokens):
        kind = token.token_type
        if kind in (TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE):
            depth += 1
        elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE):
            depth -= 1
        elif depth == 0 and _word(token) == word:
            return index
    return -1


def _closing_paren(tokens: Sequence[Token], opening: int) -> int:
    """Index of the ) matching the ( at `opening`, or -1."""
    depth = 0
    for index in range(opening, len(tokens)):
        kind = tokens[index].token_type
        if kind is TokenType.L_PAREN:
            depth += 1
        elif kind is TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                return index
    return -1


# Transaction characteristics, PostgreSQL and MySQL alike.
_TRANSACTION_WORDS = _names(
    """
    ISOLATION LEVEL SERIALIZABLE REPEATABLE READ COMMITTED UNCOMMITTED ONLY NOT
    DEFERRABLE WITH CONSISTENT SNAPSHOT WORK TRANSACTION
    """
)


def _transaction_modes(tokens: Sequence[Token], what: str, *, snapshot: bool = False) -> Verdict:
    words = [_word(token) for token in tokens if token.token_type is not TokenType.COMMA]
    for previous, word in zip(["", *words], words, strict=False):
        if previous == "READ" and word == "WRITE":
            return _verdict(ADMIN, f"{what} READ WRITE overrides the read-only transaction default")
    if snapshot and words[:1] == ["SNAPSHOT"] and len(tokens) == 2:
        return _verdict(READ, f"{what} SNAPSHOT only imports a snapshot")
    if all(word in _TRANSACTION_WORDS for word in words):
        return _verdict(READ, f"{what} is transaction control")
    return _verdict(UNKNOWN, f"{what} with characteristics that are not understood")


def _begin(context: _Context, tokens: list[Token]) -> Verdict:
    return _transaction_modes(tokens[1:], _word(tokens[0]))


def _start(context: _Context, tokens: list[Token]) -> Verdict:
    if _word(tokens[1] if len(tokens) > 1 else None) == "TRANSACTION":
        return _transaction_modes(tokens[2:], "START TRANSACTION")
    if context.dialect == "mysql":
        return _verdict(ADMIN, "START controls replication")
    return _verdict(UNKNOWN, "START statement not understood")


def _end_transaction(context: _Context, tokens: list[Token]) -> Verdict:
    first = _word(tokens[0])
    if "PREPARED" in _words(tokens[1:2]):
        return _verdict(WRITE, f"{first} PREPARED finishes a two-phase transaction")
    return _verdict(READ, f"{first} is transaction control")


_SIMPLE_VALUE_TYPES = frozenset(
    {TokenType.STRING, TokenType.NUMBER, TokenType.IDENTIFIER, TokenType.NATIONAL_STRING}
)


def _simple_values(tokens: Sequence[Token]) -> list[str] | None:
    """A SET value list: strings, numbers, names, signed numbers; else None.

    Bare names come back in lower case (the server folds them), quoted ones as written.
    """
    values: list[str] = []
    for part in _top_level_split(tokens, TokenType.COMMA):
        if len(part) == 2 and part[0].token_type in (TokenType.DASH, TokenType.PLUS):
            part = part[1:]
        if len(part) != 1:
            return None
        token = part[0]
        if token.token_type in _SIMPLE_VALUE_TYPES:
            values.append(token.text)
        elif _word(token):
            values.append(token.text.lower())
        else:
            return None
    return values


def _set_postgres(context: _Context, tokens: list[Token]) -> Verdict:
    rest = tokens[1:]
    words = _words(rest)
    if words[:1] in (["SESSION"], ["LOCAL"]) and words[1:2] not in (
        ["AUTHORIZATION"],
        ["CHARACTERISTICS"],
    ):
        rest, words = rest[1:], words[1:]
    if not rest:
        return _verdict(UNKNOWN, "SET without a setting")
    head = words[0]
    if head == "ROLE" or words[:2] == ["SESSION", "AUTHORIZATION"]:
        return _verdict(
            ADMIN,
            f"SET {' '.join(words[:2]) if head != 'ROLE' else 'ROLE'} "
            "changes the identity the session acts as",
        )
    if head == "TRANSACTION":
        return _transaction_modes(rest[1:], "SET TRANSACTION", snapshot=True)
    if words[:4] == ["SESSION", "CHARACTERISTICS", "AS", "TRANSACTION"]:
        return _transaction_modes(rest[4:], "SET SESSION CHARACTERISTICS")
    if head == "CONSTRAINTS":
        return _verdict(READ, "SET CONSTRAINTS only changes when this transaction checks them")
    if words[:2] == ["XML", "OPTION"]:
        return _verdict(READ, "SET XML OPTION is an allowlisted session setting")
    if words[:2] == ["TIME", "ZONE"]:
        name, value_tokens = "timezone", rest[2:]
        if words[2:3] == ["INTERVAL"]:
            return _verdict(READ, "SET TIME ZONE is an allowlisted session setting")
    elif head in ("NAMES", "SCHEMA"):
        name = "client_encoding" if head == "NAMES" else "search_path"
        value_tokens = rest[1:]
    else:
        if len(rest) < 2 or not head:
            return _verdict(UNKNOWN, "SET statement not understood")
        if rest[1].token_type is TokenType.DOT:
            return _verdict(ADMIN, "SET of a custom (extension or application) setting")
        name = rest[0].text.lower()
        if words[1:2] != ["TO"] and rest[1].token_type is not TokenType.EQ:
            return _verdict(UNKNOWN, "SET statement not understood")
        value_tokens = rest[2:]
    if name not in _POSTGRES_SETTINGS:
        return _verdict(ADMIN, f"SET {name} changes a setting that is not on the allowlist")
    values = _simple_values(value_tokens)
    if values is None or not values:
        return _verdict(UNKNOWN, f"SET {name} to a value that is not a plain constant")
    problem = _postgres_setting_problem(name, values)
    if problem is not None:
        return _verdict(ADMIN, problem)
    return _verdict(READ, f"SET {name} is an allowlisted session setting")


def _postgres_setting_problem(name: str, values: list[str]) -> str | None:
    lowered = [value.lower() for value in values]
    if lowered == ["default"]:
        return None
    if name == "client_encoding":
        if len(values) != 1 or re.sub(r"[^a-z0-9]", "", lowered[0]) not in _UTF8_ENCODINGS:
            return (
                "SET client_encoding to anything but UTF8 would desynchronise the gateway's lexer"
            )
    elif name == "standard_conforming_strings":
        if lowered not in (["on"], ["true"], ["yes"], ["1"]):
            return "SET standard_conforming_strings off changes how strings are lexed"
    elif name == "search_path":
        allowed = {"$user", "public"}
        rest = values[1:] if lowered[0] == "pg_catalog" else values
        if not all(value in allowed for value in rest):
            return (
                'search_path may only list pg_catalog (first), "$user" and public: '
                "other schemas can shadow tables and functions"
            )
    return None


_MYSQL_SCOPES = {
    "GLOBAL": ADMIN,
    "PERSIST": ADMIN,
    "PERSIST_ONLY": ADMIN,
    "SESSION": READ,
    "LOCAL": READ,
}


def _set_mysql(context: _Context, tokens: list[Token]) -> Verdict:
    words = _words(tokens[1:])
    if words[:1] in (["PASSWORD"], ["ROLE"], ["DEFAULT"], ["RESOURCE"]):
        return _verdict(ADMIN, f"SET {words[0]} changes privileges or server resources")
    scope = words[0] if words and words[0] in _MYSQL_SCOPES else ""
    if words[1 if scope else 0 : 2 if scope else 1] == ["TRANSACTION"]:
        if _MYSQL_SCOPES.get(scope) is ADMIN:
            return _verdict(ADMIN, f"SET {scope} TRANSACTION changes a server-wide default")
        return _transaction_modes(tokens[3 if scope else 2 :], "SET TRANSACTION")
    verdicts = [
        _mysql_set_item(context, item) for item in _top_level_split(tokens[1:], TokenType.COMMA)
    ]
    blocking = [verdict for verdict in verdicts if not verdict.is_read]
    if not blocking:
        return _verdict(READ, *dict.fromkeys(r for v in verdicts for r in v.reasons))
    classes = {verdict.statement_class for verdict in blocking}
    return Verdict(
        classes.pop() if len(classes) == 1 else UNKNOWN,
        tuple(dict.fromkeys(r for v in blocking for r in v.reasons)),
    )


def _mysql_set_item(context: _Context, item: list[Token]) -> Verdict:
    words = _words(item)
    if not item:
        return _verdict(UNKNOWN, "SET statement not understood")
    if words[0] == "NAMES" or words[:2] == ["CHARACTER", "SET"] or words[0] == "CHARSET":
        value_at = 1 if words[0] != "CHARACTER" else 2
        charset = item[value_at].text.lower() if len(item) > value_at else ""
        collate = words[value_at + 1 : value_at + 2] == ["COLLATE"]
        collation = item[value_at + 2].text.lower() if collate and len(item) > value_at + 2 else ""
        expected = value_at + (3 if collate else 1)
        if (
            len(item) == expected
            and (charset in _MYSQL_CHARSETS or charset == "default")
            and (not collate or collation.split("_")[0] in _MYSQL_CHARSETS)
        ):
            return _verdict(READ, f"SET {words[0]} to a UTF-8 or ASCII character set")
        return _verdict(
            ADMIN,
            "changing the character set to anything but utf8mb4/utf8/ascii would "
            "desynchronise the gateway's lexer",
        )
    assign = next(
        (
            index
            for index, token in enumerate(item)
            if token.token_type in (TokenType.EQ, TokenType.COLON_EQ)
        ),
        -1,
    )
    if assign < 1 or assign == len(item) - 1:
        return _verdict(UNKNOWN, "SET statement not understood")
    target, value = item[:assign], item[assign + 1 :]
    kinds = [token.token_type for token in target]
    if kinds[0] is TokenType.PARAMETER:
        if len(target) != 2:
            return _verdict(UNKNOWN, "SET of a user variable not understood")
        verdict = _expression(context, value)
        if verdict.is_read:
            return _verdict(READ, "SET of a user variable only changes this session")
        return verdict
    scope = "SESSION"
    if kinds[0] is TokenType.SESSION_PARAMETER:
        if len(target) == 4 and kinds[2] is TokenType.DOT:
            scope = _word(target[1])
        elif len(target) != 2:
            return _verdict(UNKNOWN, "SET of a system variable not understood")
        name_token = target[-1]
    else:
        if len(target) == 2:
            scope = _word(target[0])
        elif len(target) != 1:
            return _verdict(UNKNOWN, "SET of a system variable not understood")
        name_token = target[-1]
    if scope not in _MYSQL_SCOPES or not _word(name_token):
        return _verdict(UNKNOWN, "SET of a system variable not understood")
    if _MYSQL_SCOPES[scope] is ADMIN:
        return _verdict(ADMIN, f"SET {scope} changes a server-wide setting")
    name = name_token.text.lower()
    if name not in _MYSQL_SETTINGS:
        return _verdict(ADMIN, f"SET {name} changes a setting that is not on the allowlist")
    values = _simple_values(value)
    if name in _MYSQL_CHECKED_SETTINGS:
        problem = _mysql_setting_problem(name, values)
        if problem is not None:
            return _verdict(ADMIN, problem)
    elif values is None:
        verdict = _expression(context, value)
        if not verdict.is_read:
            return verdict
    return _verdict(READ, f"SET {name} is an allowlisted session setting")


_MYSQL_CHECKED_SETTINGS = frozenset(
    {
        "sql_mode",
        "character_set_client",
        "character_set_connection",
        "character_set_results",
        "collation_connection",
    }
)


def _mysql_setting_problem(name: str, values: list[str] | None) -> str | None:
    if values is None or len(values) != 1:
        return f"SET {name} to a value that is not a plain constant {LEXER_REASON}"
    value = values[0].lower()
    if value == "default":
        return None
    if name == "sql_mode":
        modes = {mode.strip() for mode in value.split(",")} - {""}
        if modes <= _MYSQL_SAFE_SQL_MODES:
            return None
        return (
            "SET sql_mode with modes that change how statements are lexed (ANSI_QUOTES, ...) "
            + LEXER_REASON
        )
    if name == "collation_connection":
        if value.split("_")[0] in _MYSQL_CHARSETS:
            return None
    elif value in _MYSQL_CHARSETS or (
        name == "character_set_results" and value in ("binary", "null")
    ):
        return None
    return f"SET {name} to anything but utf8mb4/utf8/ascii {LEXER_REASON}"


def _reset_postgres(context: _Context, tokens: list[Token]) -> Verdict:
    words = _words(tokens[1:])
    if words == ["ALL"]:
        return _verdict(ADMIN, "RESET ALL undoes the settings the gateway relies on")
    if words[:1] == ["ROLE"] or words[:2] == ["SESSION", "AUTHORIZATION"]:
        return _verdict(ADMIN, "RESET changes the identity the session acts as")
    name = "timezone" if words == ["TIME", "ZONE"] else (words[0].lower() if words else "")
    if len(words) in (1, 2) and name in _POSTGRES_SETTINGS:
        return _verdict(READ, f"RESET {name} is an allowlisted session setting")
    return _verdict(ADMIN, "RESET of a setting that is not on the allowlist")


def _discard(context: _Context, tokens: list[Token]) -> Verdict:
    words = _words(tokens[1:])
    if words in (["PLANS"], ["SEQUENCES"]):
        return _verdict(READ, f"DISCARD {words[0]} only drops this session's caches")
    if words in (["TEMP"], ["TEMPORARY"]):
        return _verdict(WRITE, "DISCARD TEMP drops temporary tables")
    return _verdict(ADMIN, "DISCARD ALL resets the session, including its role and settings")


def _show(context: _Context, tokens: list[Token]) -> Verdict:
    if not any(token.token_type is TokenType.L_PAREN for token in tokens):
        return _verdict(READ, "SHOW reads a setting or the catalog")
    words = _words(tokens)
    if "WHERE" in words:
        condition = tokens[words.index("WHERE") + 1 :]
        if not any(
            token.token_type is TokenType.L_PAREN for token in tokens[: words.index("WHERE")]
        ):
            verdict = _expression(context, condition)
            if verdict.is_read:
                return _verdict(READ, "SHOW reads a setting or the catalog")
            return verdict
    return _verdict(UNKNOWN, "SHOW with parentheses not understood")


_EXPLAIN_FLAGS = frozenset({"VERBOSE", "EXTENDED", "PARTITIONS"})
#: EXPLAIN ( ... ) options of PostgreSQL 15 to 17, as the server compares them (lower
#: case, after quotes and Unicode escapes are resolved). Any other name is not read.
_POSTGRES_EXPLAIN_OPTIONS = _names(
    """
    analyze analyse verbose costs settings buffers wal timing summary format generic_plan
    serialize memory
    """
)
_UNICODE_ESCAPE = re.compile(r"\\(?:\\|([0-9A-Fa-f]{4})|\+([0-9A-Fa-f]{6}))")


def _option_name(sql: str, option: Sequence[Token]) -> tuple[str | None, list[Token]]:
    """The name an option list item gives, as the server compares it, and its value.

    None for the name when it cannot be read for sure (a U&"..." name with UESCAPE, an
    escape that is not one). The value is the tokens after the name.
    """
    if not option:
        return None, []
    name, used = _name_at(sql, option, 0)
    return name, list(option[used:])


def _name_at(sql: str, tokens: Sequence[Token], index: int) -> tuple[str | None, int]:
    """The name that starts at tokens[index] as the server resolves it, and how many tokens
    it takes: a bare word folded to lower case, a "quoted" name as written, a U&"..." name
    with its escapes resolved. (None, 1) when it is none of these or cannot be resolved."""
    token = tokens[index] if index < len(tokens) else None
    if token is None:
        return None, 1
    following = tokens[index + 1] if index + 1 < len(tokens) else None
    after = tokens[index + 2] if index + 2 < len(tokens) else None
    if (
        _word(token) == "U"
        and following is not None
        and following.token_type is TokenType.AMP
        and after is not None
        and after.token_type is TokenType.IDENTIFIER
        and following.start == token.end + 1
        and after.start == following.end + 1
    ):
        if index + 3 < len(tokens) and _word(tokens[index + 3]) == "UESCAPE":
            return None, 3
        raw = sql[after.start + 1 : after.end].replace('""', '"')
        if "\\" not in raw:
            return raw, 3
        if _UNICODE_ESCAPE.sub("", raw).count("\\"):
            return None, 3
        try:
            return _UNICODE_ESCAPE.sub(
                lambda m: "\\" if m.group(0) == "\\\\" else chr(int(m.group(1) or m.group(2), 16)),
                raw,
            ), 3
        except (ValueError, OverflowError):
            return None, 3
    if token.token_type is TokenType.IDENTIFIER:
        raw = sql[token.start : token.end + 1]
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in '"`':
            return raw[1:-1].replace(raw[0] * 2, raw[0]), 1
        return None, 1
    word = _word(token)
    return (word.lower() if word and " " not in word else None), 1


#: MySQL DESCRIBE t [column | 'wildcard'], with t possibly db.t.
_MYSQL_DESCRIBE_TABLE = re.compile(r"name(?: \. name)?(?: (?:name|string))?")


def _describe_shape(token: Token) -> str:
    if token.token_type is TokenType.DOT:
        return "."
    if token.token_type is TokenType.STRING:
        return "string"
    return "name" if token.token_type is TokenType.IDENTIFIER or _word(token) else "other"


_EXPLAINABLE_DML = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE"})


def _explain(context: _Context, tokens: list[Token]) -> Verdict:
    first = _word(tokens[0])
    index, analyze = 1, False
    words = _words(tokens)
    if (
        context.dialect == "postgres"
        and len(tokens) > 1
        and tokens[1].token_type is TokenType.L_PAREN
    ):
        closing = _closing_paren(tokens, 1)
        if closing < 0:
            return _verdict(UNKNOWN, "EXPLAIN options not understood")
        for option in _top_level_split(tokens[2:closing], TokenType.COMMA):
            name, value = _option_name(context.sql, option)
            if name is None or name not in _POSTGRES_EXPLAIN_OPTIONS:
                # The server may know options this does not (and compares them as the
                # quoted or escaped name spells them): what it cannot name may run.
                shown = repr(name) if name is not None else "(escaped in a way not resolved)"
                return _verdict(UNKNOWN, f"EXPLAIN option {shown} is not recognised")
            if name in ("analyze", "analyse"):
                # A value other than a bare false/off runs the statement; so does one
                # this cannot read (0, 'off' and "off" included: fail closed).
                analyze = analyze or _words(value) not in (["FALSE"], ["OFF"])
        index = closing + 1
    else:
        while index < len(tokens):
            word = words[index]
            if word in ("ANALYZE", "ANALYSE"):
                analyze = True
                index += 1
            elif word in _EXPLAIN_FLAGS:
                index += 1
            elif word == "FORMAT" and context.dialect == "mysql" and index + 2 < len(tokens):
                index += 3
            else:
                break
    inner = tokens[index:]
    if not inner:
        return _verdict(READ, f"{first} reads a table's definition")
    inner_first = _word(inner[0])
    if (
        context.dialect == "mysql"
        and inner_first == "FOR"
        and _word(inner[1:2][0] if len(inner) > 1 else None) == "CONNECTION"
    ):
        return _verdict(READ, f"{first} FOR CONNECTION shows another statement's plan")
    if context.wrapping >= MAX_WRAPPING:
        return _verdict(UNKNOWN, "statements wrapped too deeply")
    nested = _Context(context.sql, context.dialect, context.wrapping + 1)
    if inner_first in _QUERY_STARTS or inner[0].token_type is TokenType.L_PAREN:
        verdict = _classify_query(nested, inner, plan_only=not analyze)
    elif inner_first in _EXPLAINABLE_DML:
        if analyze:
            return _verdict(WRITE, f"{first} ANALYZE runs the {inner_first}, which modifies data")
        verdict = _classify_query(nested, inner, plan_only=True)
    elif (
        context.dialect == "mysql"
        and not analyze
        and _MYSQL_DESCRIBE_TABLE.fullmatch(" ".join(_describe_shape(token) for token in inner))
    ):
        return _verdict(READ, f"{first} reads a table's definition")
    elif analyze:
        return _classify_statement(nested, inner)
    else:
        return _verdict(UNKNOWN, f"{first} of a {inner_first or 'statement'} is not classified")
    if not verdict.is_read:
        return verdict
    if analyze:
        return _verdict(READ, f"{first} ANALYZE runs a read-only query")
    return _verdict(READ, f"{first} only plans the statement; it does not run it")


def _copy(context: _Context, tokens: list[Token]) -> Verdict:
    index = 1
    if _word(tokens[index] if len(tokens) > index else None) == "BINARY":
        index += 1
    query: list[Token] | None = None
    if len(tokens) > index and tokens[index].token_type is TokenType.L_PAREN:
        closing = _closing_paren(tokens, index)
        if closing < 0:
            return _verdict(UNKNOWN, "COPY not understood")
        query = tokens[index + 1 : closing]
        index = closing + 1
    else:
        while index < len(tokens) and (
            _word(tokens[index]) not in ("FROM", "TO")
            or tokens[index - 1].token_type is TokenType.DOT
        ):
            if tokens[index].token_type is TokenType.L_PAREN:
                closing = _closing_paren(tokens, index)
                if closing < 0:
                    return _verdict(UNKNOWN, "COPY not understood")
                index = closing
            index += 1
    if index + 1 >= len(tokens):
        return _verdict(UNKNOWN, "COPY not understood")
    direction, target = _word(tokens[index]), tokens[index + 1]
    target_word = _word(target)
    if target_word == "PROGRAM":
        return _verdict(ADMIN, "COPY ... PROGRAM runs a shell command on the server")
    if target.token_type in _QUOTED_TOKEN_TYPES - {TokenType.IDENTIFIER}:
        return _verdict(ADMIN, "COPY to or from a file reads or writes the server's file system")
    if direction == "FROM" and target_word == "STDIN":
        return _verdict(WRITE, "COPY FROM STDIN loads rows into a table")
    if direction != "TO" or target_word != "STDOUT":
        return _verdict(UNKNOWN, "COPY not understood")
    if query is None:
        return _verdict(READ, "COPY TO STDOUT reads a table")
    if not query or context.wrapping >= MAX_WRAPPING:
        return _verdict(UNKNOWN, "COPY not understood")
    verdict = _classify_statement(
        _Context(context.sql, context.dialect, context.wrapping + 1), query
    )
    if verdict.is_read:
        return _verdict(READ, "COPY (query) TO STDOUT runs a read-only query")
    return verdict


def _declare(context: _Context, tokens: list[Token]) -> Verdict:
    words = _words(tokens)
    if "CURSOR" not in words or "FOR" not in words[words.index("CURSOR") :]:
        return _verdict(UNKNOWN, "DECLARE not understood")
    query = tokens[words.index("FOR", words.index("CURSOR")) + 1 :]
    if not query or context.wrapping >= MAX_WRAPPING:
        return _verdict(UNKNOWN, "DECLARE not understood")
    verdict = _classify_query(_Context(context.sql, context.dialect, context.wrapping + 1), query)
    if verdict.is_read:
        return _verdict(READ, "DECLARE CURSOR over a read-only query")
    return verdict


def _prepare(context: _Context, tokens: list[Token]) -> Verdict:
    words = _words(tokens)
    if words[1:2] == ["TRANSACTION"]:
        return _verdict(WRITE, "PREPARE TRANSACTION turns the transaction into a two-phase one")
    if context.wrapping >= MAX_WRAPPING:
        return _verdict(UNKNOWN, "statements wrapped too deeply")
    if context.dialect == "mysql":
        if len(tokens) != 4 or words[2] != "FROM" or tokens[3].token_type is not TokenType.STRING:
            return _verdict(UNKNOWN, "PREPARE from a variable: the statement cannot be seen")
        raw = context.sql[tokens[3].start : tokens[3].end + 1]
        if "\\" in raw:
            return _verdict(UNKNOWN, "PREPARE from a string with escapes is not classified")
        verdict = _classify_text(tokens[3].text, "mysql", context.wrapping + 1)
    else:
        as_index = _top_level_word(tokens, "AS")
        inner = tokens[as_index + 1 :] if as_index > 0 else []
        if not inner:
            return _verdict(UNKNOWN, "PREPARE not understood")
        verdict = _classify_statement(
            _Context(context.sql, context.dialect, context.wrapping + 1), inner
        )
    if verdict.is_read:
        return _verdict(READ, "PREPARE of a read-only statement")
    return verdict


_ADMIN_OBJECTS = frozenset({"ROLE", "USER", "GROUP", "SYSTEM", "SERVER", "INSTANCE"})
_DDL_MODIFIERS = _names(
    """
    OR REPLACE TEMP TEMPORARY UNLOGGED GLOBAL LOCAL UNIQUE MATERIALIZED RECURSIVE
    DEFINER ALGORITHM UNDEFINED MERGE TEMPTABLE SQL SECURITY INVOKER IF NOT EXISTS
    CONSTRAINT TRUSTED PROCEDURAL ONLINE OFFLINE AGGREGATE EXTERNAL
    """
)


def _ddl(context: _Context, tokens: list[Token]) -> Verdict:
    words = _words(tokens)
    verb = words[0]
    objects = [word for word in words[1:6] if word not in _DDL_MODIFIERS]
    what = objects[0] if objects and objects[0] else "object"
    if what in _ADMIN_OBJECTS or (what == "DEFAULT" and words[2:3] == ["PRIVILEGES"]):
        return _verdict(ADMIN, f"{verb} {what} changes roles, privileges or server settings")
    if verb == "DROP" and what == "PREPARE" and context.dialect == "mysql":
        return _verdict(READ, "DROP PREPARE drops this session's prepared statement")
    if verb == "DROP" and what == "OWNED":
        return _verdict(ADMIN, "DROP OWNED drops a role's objects and privileges")
    return _verdict(DDL, f"{verb} {what} changes the schema")


def _rename(context: _Context, tokens: list[Token]) -> Verdict:
    if _words(tokens[1:2]) == ["USER"]:
        return _verdict(ADMIN, "RENAME USER changes accounts")
    return _verdict(DDL, "RENAME changes the schema")


def _lock_mysql(context: _Context, tokens: list[Token]) -> Verdict:
    if " ".join(_words(tokens[:2])) == "LOCK INSTANCE":
        return _verdict(ADMIN, "LOCK INSTANCE blocks the whole server")
    return _verdict(WRITE, "LOCK TABLES takes table locks")


def _unlock_mysql(context: _Context, tokens: list[Token]) -> Verdict:
    if " ".join(_words(tokens)) in ("UNLOCK TABLES", "UNLOCK TABLE"):
        return _verdict(READ, "UNLOCK TABLES releases this session's table locks")
    return _verdict(ADMIN, "UNLOCK INSTANCE acts on the whole server")


def _load_mysql(context: _Context, tokens: list[Token]) -> Verdict:
    if _words(tokens[1:2]) == ["INDEX"]:
        return _verdict(ADMIN, "LOAD INDEX changes server caches")
    return _verdict(ADMIN, "LOAD DATA/XML reads a file into a table")


_MYSQL_ANALYZE_TABLE = _names("TABLE TABLES NO_WRITE_TO_BINLOG LOCAL")


def _analyze_mysql(context: _Context, tokens: list[Token]) -> Verdict:
    """ANALYZE TABLE is maintenance; MariaDB's ANALYZE [FORMAT=...] <statement> runs the
    statement (and reports what it did), so it is that statement's class."""
    words = _words(tokens)
    if words[1:2] and words[1] in _MYSQL_ANALYZE_TABLE:
        return _verdict(ADMIN, "ANALYZE TABLE is maintenance: it writes statistics")
    index = 1
    if words[1:2] == ["FORMAT"]:
        if len(tokens) < 4 or tokens[2].token_type is not TokenType.EQ:
            return _verdict(UNKNOWN, "ANALYZE not understood")
        index = 4
    inner = tokens[index:]
    inner_first = _word(inner[0]) if inner else ""
    if not inner or context.wrapping >= MAX_WRAPPING:
        return _verdict(UNKNOWN, "ANALYZE not understood")
    if inner_first in _DML:
        return _verdict(WRITE, f"ANALYZE runs the {inner_first}, which modifies data")
    if inner_first not in _QUERY_STARTS and inner[0].token_type is not TokenType.L_PAREN:
        return _verdict(UNKNOWN, f"ANALYZE of a {inner_first or 'statement'} is not classified")
    verdict = _classify_query(_Context(context.sql, context.dialect, context.wrapping + 1), inner)
    if verdict.is_read:
        return _verdict(READ, "ANALYZE runs a read-only query")
    return verdict


def _do_mysql(context: _Context, tokens: list[Token]) -> Verdict:
    verdict = _expression(context, tokens[1:])
    if verdict.is_read:
        return _verdict(READ, "DO only evaluates read-safe expressions")
    return verdict


# --------------------------------------------------------------------------- queries

_PLACEHOLDERS = {TokenType.NUMBER: "1", TokenType.HEX_STRING: "00", TokenType.BIT_STRING: "0"}


def _normalized(tokens: Sequence[Token]) -> list[Token]:
    """The tokens with every literal's text replaced by a fixed placeholder.

    sqlglot reads some literals (JSON paths, intervals, ...): parsing placeholders keeps
    the tree, and so the verdict, independent of literal values.
    """
    return [
        Token(
            token.token_type,
            _PLACEHOLDERS.get(token.token_type, "s"),
            token.line,
            token.col,
            token.start,
            token.end,
            token.comments,
        )
        if token.token_type in LITERAL_TOKEN_TYPES
        else token
        for token in tokens
    ]


@functools.cache
def _function_parser_names(dialect: str) -> frozenset[str]:
    """Function names sqlglot parses by special rules: its nodes for them carry no position."""
    parser = _dialect(dialect).parser_class
    names = set(parser.FUNCTION_PARSERS) | set(parser.NO_PAREN_FUNCTION_PARSERS)
    return frozenset(name.lower() for name in names) - {"case", "any"}


_DML_NODES: tuple[type[exp.Expr], ...] = (exp.Insert, exp.Update, exp.Delete, exp.Merge)

#: Nodes a read-only query may contain (functions and operators are checked separately).
_QUERY_NODES: frozenset[type[exp.Expr]] = frozenset(
    {
        exp.Select,
        exp.Union,
        exp.Intersect,
        exp.Except,
        exp.Subquery,
        exp.Values,
        exp.Tuple,
        exp.From,
        exp.Join,
        exp.Where,
        exp.Group,
        exp.Having,
        exp.Order,
        exp.Ordered,
        exp.Limit,
        exp.Offset,
        exp.Fetch,
        exp.Distinct,
        exp.With,
        exp.CTE,
        exp.TableAlias,
        exp.Table,
        exp.Column,
        exp.Identifier,
        exp.Star,
        exp.Literal,
        exp.Boolean,
        exp.Null,
        exp.Placeholder,
        exp.Parameter,
        exp.SessionParameter,
        exp.Alias,
        exp.DataType,
        exp.DataTypeParam,
        exp.Interval,
        exp.Var,
        exp.Window,
        exp.WindowSpec,
        exp.Lateral,
        exp.Bracket,
        exp.Slice,
        exp.Filter,
        exp.WithinGroup,
        exp.IgnoreNulls,
        exp.RespectNulls,
        exp.AtTimeZone,
        exp.Qualify,
        exp.TableSample,
        exp.ColumnDef,
        exp.JSONPath,
        exp.JSONPathRoot,
        exp.JSONPathKey,
        exp.JSONPathSubscript,
        exp.JSONPathWildcard,
        exp.JSONPathSlice,
        exp.JSONPathFilter,
        exp.JSONPathRecursive,
        exp.JSONPathScript,
        exp.JSONPathSelector,
        exp.JSONPathUnion,
        exp.Introducer,
        exp.National,
        exp.HexString,
        exp.BitString,
        exp.ByteString,
        exp.UnicodeString,
        exp.RawString,
        exp.Heredoc,
        exp.PseudoType,
        exp.ObjectIdentifier,
        exp.Pseudocolumn,
        exp.Lambda,  # sqlglot reads PostgreSQL's f(a->'k') as a lambda; its parts are checked
        exp.JSONKeyValue,
        exp.JSONSchema,
        exp.JSONColumnDef,
        exp.IndexTableHint,
        exp.Partition,  # MySQL: t PARTITION (p0)
        exp.LimitOptions,
        exp.Rollup,
        exp.Cube,
        exp.GroupingSets,
    }
)

_GROUPING_NODES: frozenset[type[exp.Expr]] = frozenset({exp.Rollup, exp.Cube, exp.GroupingSets})

#: The parts of INSERT/UPDATE/DELETE/MERGE: a statement containing them is a write anyway
#: (the DML node says so), but what they contain is still checked.
_DML_PART_NODES: frozenset[type[exp.Expr]] = frozenset(
    {exp.Schema, exp.OnConflict, exp.Returning, exp.When, exp.Whens, exp.Set, exp.SetItem}
)

#: Nodes that `EXPLAIN` without ANALYZE may plan: the statement itself does not run.
_PLANNED_NODES: frozenset[type[exp.Expr]] = frozenset({*_DML_NODES, exp.Into, exp.Lock})

#: Function-like nodes that stand for syntax, not a call by name: CASE, casts, ARRAY[...],
#: CURRENT_DATE, ..., or a function sqlglot parses by special rules (its name is checked
#: against the allowlist on the tokens; see `_function_parser_names`).
_SYNTAX_FUNCTIONS: frozenset[type[exp.Expr]] = frozenset(
    {
        exp.Case,
        exp.If,
        exp.Cast,
        exp.Extract,
        exp.Trim,
        exp.Substring,
        exp.StrPosition,
        exp.Overlay,
        exp.MatchAgainst,
        exp.JSONTable,
        exp.DecodeCase,
        exp.JSONArrayAgg,
        exp.JSONBExists,
        exp.WeightString,
        exp.XMLElement,
        # What sqlglot builds around or inside functions it knows (TO_DAYS is a DATEDIFF,
        # GROUP_CONCAT holds a CONCAT, date arguments get conversions).
        exp.Concat,
        exp.DateDiff,
        exp.TsOrDsToTimestamp,
        exp.TsOrDsToDate,
        exp.TsOrDsToTime,
        exp.TimeStrToTime,
        exp.Ceil,
        exp.Floor,
        exp.Chr,
        exp.Initcap,
        exp.Normalize,
        exp.Decode,
        exp.JSONObject,
        exp.JSONObjectAgg,
        exp.GroupConcat,
        exp.Array,
        exp.Exists,
        exp.Any,
        exp.All,
        exp.Unnest,
        exp.CurrentDate,
        exp.CurrentTime,
        exp.CurrentTimestamp,
        exp.CurrentUser,
        exp.CurrentRole,
        exp.CurrentSchema,
        exp.CurrentCatalog,
        exp.SessionUser,
        exp.Localtime,
        exp.Localtimestamp,
    }
)

# A word before "(" that no function node accounts for is grammar only where the server's
# grammar reads it so; elsewhere it may call a function of that name (PostgreSQL lets many
# keywords name functions: filter(...), over(...), join(...), show(...)). So each grammar
# word is accepted only after the tokens it follows in that grammar; anything else is
# "could not tell", which is not read. The tree check still sees what sqlglot made of it.
_OPERAND_ENDS = frozenset(
    {
        TokenType.VAR,
        TokenType.IDENTIFIER,
        TokenType.NUMBER,
        TokenType.STRING,
        TokenType.NATIONAL_STRING,
        TokenType.BYTE_STRING,
        TokenType.UNICODE_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.R_PAREN,
        TokenType.R_BRACKET,
        TokenType.STAR,
        TokenType.NULL,
        TokenType.TRUE,
        TokenType.FALSE,
        TokenType.PLACEHOLDER,
    }
)
#: Reserved words that start a clause or expression: never a function name.
_GRAMMAR_ANYWHERE = _names(
    """
    SELECT WHERE HAVING WHEN THEN ELSE CASE NOT EXISTS ANY ALL SOME ARRAY ROW VALUES
    LATERAL FROM INTO DISTINCT LIMIT OFFSET RETURNING UNION INTERSECT EXCEPT TABLE WITH FOR
    """
)
#: Words that follow an operand or a table: x IN (...), f(x) OVER (...), t JOIN (...).
_GRAMMAR_AFTER_OPERAND = _names(
    """
    FILTER OVER OVERLAPS LIKE ILIKE RLIKE REGEXP DIV MOD XOR ESCAPE AND OR IN JOIN AGAINST
    REPEATABLE COLUMNS USING ON AS SET BETWEEN
    """
)
#: Words that follow particular words: WITHIN GROUP (...), TABLESAMPLE SYSTEM (...), ...
_GRAMMAR_AFTER_WORD: dict[str, frozenset[str]] = {
    "GROUP": frozenset({"WITHIN"}),
    "SYSTEM": frozenset({"TABLESAMPLE"}),
    "BERNOULLI": frozenset({"TABLESAMPLE"}),
    "MATERIALIZED": frozenset({"AS", "NOT"}),
    "ROLLUP": frozenset({"GROUP BY"}),
    "CUBE": frozenset({"GROUP BY"}),
    "SETS": frozenset({"GROUPING"}),
    "ZONE": frozenset({"TIME"}),
    "CONFLICT": frozenset({"ON"}),
    "FIRST": frozenset({"FETCH"}),
    "NEXT": frozenset({"FETCH"}),
    "INSERT": frozenset({"THEN"}),
    "ON": frozenset({"DISTINCT"}),
    "IN": frozenset({"NOT"}),
    "LIKE": frozenset({"NOT"}),
    "ILIKE": frozenset({"NOT"}),
    "RLIKE": frozenset({"NOT"}),
    "REGEXP": frozenset({"NOT"}),
    "BETWEEN": frozenset({"NOT"}),
    "JOIN": frozenset(
        {"LEFT", "RIGHT", "FULL", "INNER", "OUTER", "CROSS", "NATURAL", "STRAIGHT_JOIN", "FOR"}
    ),
}
#: MySQL index hints and partition selection: t USE INDEX (i), t PARTITION (p).
_MYSQL_GRAMMAR_AFTER_OPERAND = frozenset({"PARTITION"})
_MYSQL_GRAMMAR_AFTER_WORD: dict[str, frozenset[str]] = {
    "INDEX": frozenset({"USE", "FORCE", "IGNORE", "JOIN", "ORDER BY", "GROUP BY"}),
    "KEY": frozenset({"USE", "FORCE", "IGNORE", "JOIN", "ORDER BY", "GROUP BY"}),
}
#: Type names take parameters after :: or AS: x::numeric(10, 2), CAST(x AS varchar(10)).
_TYPE_NAMES = _names(
    """
    VARCHAR CHAR CHARACTER NCHAR NVARCHAR BPCHAR DECIMAL NUMERIC DEC FLOAT DOUBLE REAL BIT
    VARBIT TIMESTAMP TIMESTAMPTZ TIME TIMETZ INTERVAL DATETIME BINARY VARBINARY INT INTEGER
    BIGINT SMALLINT TINYINT MEDIUMINT YEAR VECTOR HALFVEC SPARSEVEC SIGNED UNSIGNED
    """
)


def _is_grammar(word: str, previous: Token | None, dialect: str) -> bool:
    """Whether `word (` is grammar here, given the token before it."""
    if " " in word or word in _GRAMMAR_ANYWHERE:
        return True  # "GROUPING SETS (", "ORDER BY (": keyword pairs are grammar
    before = "," if previous is not None and previous.token_type is TokenType.COMMA else ""
    before = before or _word(previous)
    after_operand = word in _GRAMMAR_AFTER_OPERAND or (
        dialect == "mysql" and word in _MYSQL_GRAMMAR_AFTER_OPERAND
    )
    if after_operand and previous is not None and previous.token_type in _OPERAND_ENDS:
        return True
    if (
        word in _TYPE_NAMES
        and previous is not None
        and (previous.token_type in (TokenType.DCOLON, TokenType.ALIAS))
    ):
        return True
    if dialect == "mysql" and before in _MYSQL_GRAMMAR_AFTER_WORD.get(word, ()):
        return True
    return before in _GRAMMAR_AFTER_WORD.get(word, ())


def _clause_of(tokens: Sequence[Token], index: int) -> str:
    """The keyword of the clause that tokens[index] is in, at its own bracket depth."""
    depth = 0
    for token in reversed(tokens[:index]):
        kind = token.token_type
        if kind is TokenType.R_PAREN:
            depth += 1
        elif kind is TokenType.L_PAREN:
            if depth == 0:
                return "("
            depth -= 1
        elif depth == 0 and token.token_type is not TokenType.COMMA:
            word = _word(token)
            if word in _CLAUSES:
                return word
    return ""


_CLAUSES = _names("SELECT FROM WHERE HAVING WINDOW LIMIT OFFSET RETURNING VALUES SET ON USING") | {
    "GROUP BY",
    "ORDER BY",
    "PARTITION BY",
}


#: MySQL parses these as built-in functions only when "(" follows the name directly; with a
#: space in between (and no IGNORE_SPACE) the name is an identifier: a stored function.
_MYSQL_SPACE_SENSITIVE = _names(
    """
    adddate bit_and bit_or bit_xor cast count curdate curtime date_add date_sub extract
    group_concat max mid min now position session_user std stddev stddev_pop stddev_samp
    st_collect subdate substr substring sum sysdate system_user trim variance var_pop var_samp
    """
)

_SAFE_PARSE_ERROR = re.compile(
    r"Invalid expression / Unexpected token|Expecting [()\[\]]|Expected [A-Za-z ]+"
    r"|Required keyword: '\w+' missing for <class '[\w.]+'>"
)

_Finding = tuple[StatementClass, str]


def _expression(context: _Context, tokens: list[Token]) -> Verdict:
    """The verdict for evaluating an expression list, as `SELECT <tokens>` would."""
    if not tokens:
        return _verdict(UNKNOWN, "missing expression")
    select = Token(TokenType.SELECT, "SELECT", 1, 1, tokens[0].start, tokens[0].start, [])
    return _classify_query(context, [select, *tokens], synthetic=1)


def _classify_query(
    context: _Context, tokens: list[Token], *, plan_only: bool = False, synthetic: int = 0
) -> Verdict:
    """A query (SELECT, WITH, VALUES, TABLE, parenthesised), or DML that is only planned.

    `synthetic`: how many leading tokens were made up (not in the text).
    """
    findings: list[_Finding] = []
    accounted: set[int] = set()  # indexes of name tokens followed by ( that were checked
    dialect = context.dialect
    special_names = _function_parser_names(dialect)
    calls = [
        index
        for index in range(synthetic + 1, len(tokens))
        if tokens[index].token_type is TokenType.L_PAREN
    ]
    for index in calls:
        if _word(tokens[index - 1]).lower() in special_names:
            accounted.add(index - 1)
            findings.extend(_call_findings(context, tokens, index - 1))
    if dialect == "mysql":
        for token, following in itertools.pairwise(tokens):
            if token.token_type is TokenType.INTO and _word(following) in ("OUTFILE", "DUMPFILE"):
                return _verdict(
                    ADMIN, f"SELECT ... INTO {_word(following)} writes a file on the server"
                )
    try:
        trees = (
            _dialect(dialect)
            .parser(error_message_context=0)
            .parse(_normalized(tokens), context.sql)
        )
    except ParseError as error:
        description = str(error.errors[0].get("description", "")) if error.errors else ""
        if _SAFE_PARSE_ERROR.fullmatch(description):
            return _verdict(UNKNOWN, f"could not parse: {description}")
        return _verdict(UNKNOWN, "could not parse")
    if len(trees) != 1 or trees[0] is None:
        return _verdict(UNKNOWN, "could not parse as a single query")
    root = trees[0]
    allowed_roots: tuple[type[exp.Expr], ...] = (exp.Query, exp.Values, *_DML_NODES)
    if not isinstance(root, allowed_roots):
        return _verdict(UNKNOWN, f"not understood as a query ({type(root).__name__})")
    index_of = {token.start: index for index, token in enumerate(tokens) if index >= synthetic}
    findings.extend(_tree_findings(context, root, tokens, index_of, accounted, plan_only))
    if dialect == "postgres":
        findings.extend(_postgres_operator_findings(tokens, synthetic))
        findings.extend(_postgres_type_findings(context.sql, tokens, root, index_of, synthetic))
    # Every name before "(" that no function node accounted for: grammar where it stands,
    # or else checked as a call of that name (sqlglot may have made it something else).
    for index in calls:
        name = index - 1
        if name in accounted or name < synthetic:
            continue
        token = tokens[name]
        word = _word(token)
        if word in ("ROLLUP", "CUBE") and _clause_of(tokens, name) == "GROUP BY":
            continue  # GROUP BY a, ROLLUP (b)
        if token.token_type is TokenType.IDENTIFIER or (
            word and not _is_grammar(word, tokens[name - 1] if name > 0 else None, dialect)
        ):
            findings.extend(_call_findings(context, tokens, name))
    if findings:
        classes = {statement_class for statement_class, _ in findings}
        return Verdict(
            classes.pop() if len(classes) == 1 else UNKNOWN,
            tuple(dict.fromkeys(reason for _, reason in findings)),
        )
    first = _word(tokens[synthetic]) if len(tokens) > synthetic else ""
    return _verdict(READ, f"{first or 'query'} only reads data and calls read-safe functions")


def _tree_findings(
    context: _Context,
    root: exp.Expr,
    tokens: Sequence[Token],
    index_of: dict[int, int],
    accounted: set[int],
    plan_only: bool,
) -> list[_Finding]:
    findings: list[_Finding] = []
    for node in root.walk(prune=lambda node: isinstance(node, exp.Hint)):
        kind = type(node)
        if isinstance(node, exp.Hint):
            continue  # comments to PostgreSQL; MySQL's are checked in `_check_comments`
        if plan_only and kind in _PLANNED_NODES:
            continue
        if kind is exp.Select and not node.expressions:
            findings.append((UNKNOWN, "could not parse: SELECT without a select list"))
        elif kind in _GROUPING_NODES and not isinstance(node.parent, exp.Group):
            # cube(x) outside GROUP BY is a call of a function named cube
            findings.append((UNKNOWN, f"{kind.__name__.upper()}(...) outside GROUP BY"))
        elif isinstance(node, _DML_NODES):
            what = kind.__name__.upper()
            if node is root:
                findings.append((WRITE, f"{what} modifies data"))
            else:
                findings.append((WRITE, f"data-modifying {what} inside the query"))
        elif isinstance(node, exp.Into):
            if context.dialect == "mysql" and _into_user_variable(node):
                continue  # SELECT ... INTO @v: a session variable, as SET @v = (...)
            if context.dialect == "postgres":
                findings.append((DDL, "SELECT ... INTO creates a table"))
            else:
                findings.append((WRITE, "SELECT ... INTO assigns variables"))
        elif isinstance(node, exp.Lock):
            findings.append((WRITE, "SELECT ... FOR UPDATE/SHARE locks rows"))
        elif isinstance(node, exp.Command):
            findings.append((UNKNOWN, "contains a statement the parser does not model"))
        elif isinstance(node, exp.Operator):
            findings.append((UNKNOWN, "OPERATOR(...) may call a user-defined function"))
        elif isinstance(node, exp.Identifier):
            parent = node.parent
            if node.arg_key == "this" and (
                isinstance(parent, exp.TableAlias)
                or (isinstance(parent, exp.Table) and isinstance(parent.parent, exp.Schema))
            ):
                position = index_of.get(node.meta.get("start", -1))
                if position is not None:
                    accounted.add(position)  # AS v(a, b) or INSERT INTO t(a, b): not calls
        elif (call := _call_index(node, tokens, index_of)) is not None:
            accounted.add(call)
            findings.extend(_call_findings(context, tokens, call))
        elif isinstance(node, exp.Func):
            if not (
                isinstance(node, (exp.Binary, exp.Unary, exp.Predicate))
                or kind in _SYNTAX_FUNCTIONS
            ):
                findings.append((UNKNOWN, f"{kind.__name__} is not on the read-safe allowlist"))
        elif not (
            kind in _QUERY_NODES
            or kind in _DML_PART_NODES
            or isinstance(node, (exp.Binary, exp.Unary, exp.Predicate, exp.Connector))
        ):
            findings.append((UNKNOWN, f"{kind.__name__} is not understood"))
    return findings


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


# --------------------------------------------------------------------------- PostgreSQL
# operators and types: both can run user code (an operator is a function; a domain's CHECK
# and a type's input function run on a cast), so only built-in ones, as written, are read.

#: Operator symbols of pg_catalog (PostgreSQL 15), plus => (named arguments, not an
#: operator) and the operators of the extensions whose functions are allowlisted
#: (pgvector, pg_trgm).
_POSTGRES_OPERATORS = _names(
    """
    !! !~ !~* !~~ !~~* # ## #- #> #>> % & && &< &<| &> * *< *<= *<> *= *> *>= + - -> ->>
    -|- / < <-> << <<= <<| <= <> <@ <^ = > >= >> >>= >^ ? ?# ?& ?- ?-| ?| ?|| @ @-@ @>
    @? @@ @@@ ^ ^@ | |&> |/ |>> || ||/ ~ ~* ~<=~ ~<~ ~= ~>=~ ~>~ ~~ ~~* != =>
    <=> <#> <+> <~> <%> <% %> <<% %>> <<-> <->> <<<-> <->>>
    """
)
_OPERATOR_CHARS = frozenset("+-*/<>=~!@#%^&|`?")
_OPERATOR_KEEPS_SIGN = frozenset("~!@#^&|`?%")


def _postgres_operators(run: str) -> list[str]:
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


def _postgres_operator_findings(tokens: Sequence[Token], synthetic: int) -> list[_Finding]:
    findings: list[_Finding] = []
    run = ""
    end = -2
    for token in [*tokens[synthetic:], None]:
        text = token.text if token is not None else ""
        is_operator = (
            token is not None
            and token.token_type not in _QUOTED_TOKEN_TYPES
            and bool(text)
            and _OPERATOR_CHARS.issuperset(text)
        )
        if is_operator and token is not None and token.start == end + 1 and run:
            run += text
            end = token.end
            continue
        for operator in _postgres_operators(run):
            if operator not in _POSTGRES_OPERATORS:
                findings.append(
                    (UNKNOWN, f"operator {operator} is not built in: it may call a user function")
                )
        run, end = (text, token.end) if is_operator and token is not None else ("", -2)
    return findings


#: Type names of pg_catalog (base, range, multirange and pseudo types of PostgreSQL 15),
#: valid bare or "quoted"; and pgvector's, whose functions are allowlisted too.
_POSTGRES_CATALOG_TYPES = _names(
    """
    aclitem any anyarray anycompatible anycompatiblearray anycompatiblemultirange
    anycompatiblenonarray anycompatiblerange anyelement anyenum anymultirange anynonarray
    anyrange bit bool box bpchar bytea char cid cidr circle cstring date datemultirange
    daterange event_trigger fdw_handler float4 float8 gtsvector index_am_handler inet int2
    int2vector int4 int4multirange int4range int8 int8multirange int8range internal
    interval json jsonb jsonpath language_handler line lseg macaddr macaddr8 money name
    numeric nummultirange numrange oid oidvector path pg_brin_bloom_summary
    pg_brin_minmax_multi_summary pg_ddl_command pg_dependencies pg_lsn pg_mcv_list
    pg_ndistinct pg_node_tree pg_snapshot point polygon record refcursor regclass
    regcollation regconfig regdictionary regnamespace regoper regoperator regproc
    regprocedure regrole regtype table_am_handler text tid time timestamp timestamptz
    timetz trigger tsm_handler tsmultirange tsquery tsrange tstzmultirange tstzrange
    tsvector txid_snapshot unknown uuid varbit varchar void xid xid8 xml
    vector halfvec sparsevec
    """
)
#: Type names the grammar itself maps to pg_catalog types: bare only ("integer" quoted is
#: a lookup of a type by that name, which may be the user's).
_POSTGRES_GRAMMAR_TYPES = _names(
    """
    int integer smallint bigint real float double decimal dec boolean character nchar
    national
    """
)
#: The words of the built-in type names sqlglot reads as one token.
_POSTGRES_TYPE_WORDS = _names(
    "DOUBLE PRECISION CHARACTER CHAR VARYING BIT NATIONAL TIMESTAMP TIME WITH WITHOUT ZONE"
)
#: Types whose name takes a second word: double precision, national character.
_POSTGRES_TYPE_SECOND_WORD = {"double": ("PRECISION",), "national": ("CHARACTER", "CHAR")}


def _postgres_type_problem(sql: str, tokens: Sequence[Token], index: int) -> str | None:
    """None when the type name starting at tokens[index] is a built-in type, as written."""
    words = _word(tokens[index]).split()
    if len(words) > 1:  # sqlglot's one token for DOUBLE PRECISION, CHARACTER VARYING, ...
        if _POSTGRES_TYPE_WORDS.issuperset(words):
            return None
        return "a type name that is not understood"
    name, used = _name_at(sql, tokens, index)
    quoted = tokens[index].token_type is TokenType.IDENTIFIER or used == 3
    following = index + used
    if (
        name is not None
        and following < len(tokens)
        and tokens[following].token_type is (TokenType.DOT)
    ):
        if name != "pg_catalog":
            return f"type {name}.… is not a built-in type"
        name, used = _name_at(sql, tokens, following + 1)
        quoted = tokens[following + 1].token_type is TokenType.IDENTIFIER or used == 3
        following += 1 + used
    if name is None:
        return "a type name that is not understood"
    if name in _POSTGRES_CATALOG_TYPES:
        return None
    if not quoted and name in _POSTGRES_GRAMMAR_TYPES:
        second = _POSTGRES_TYPE_SECOND_WORD.get(name)
        if second is None or _word(tokens[following] if following < len(tokens) else None) in (
            second
        ):
            return None
    return f"type {name} is not a built-in type"


@functools.cache
def _type_tokens(dialect: str) -> frozenset[TokenType]:
    return frozenset(_dialect(dialect).parser_class.TYPE_TOKENS)


def _postgres_type_findings(
    sql: str,
    tokens: Sequence[Token],
    root: exp.Expr,
    index_of: dict[int, int],
    synthetic: int,
) -> list[_Finding]:
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
        elif _word(token) in ("CAST", "TRY_CAST") and following.token_type is TokenType.L_PAREN:
            closing = _closing_paren(tokens, index + 1)
            inner = tokens[index + 2 : closing] if closing > 0 else []
            as_at = _top_level_word(inner, "AS")
            if as_at >= 0:
                starts.add(index + 2 + as_at + 1)  # CAST(x AS type)
    findings: list[_Finding] = []
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
        elif node.this is exp.DataType.Type.USERDEFINED:
            findings.append((UNKNOWN, "a type that is not built in may run user code"))
    for start in sorted(starts):
        if start >= len(tokens):
            findings.append((UNKNOWN, "a type name that is not understood"))
            continue
        problem = _postgres_type_problem(sql, tokens, start)
        if problem is not None:
            findings.append((UNKNOWN, f"{problem}: a cast to it may run user code"))
    return findings


def _call_index(node: exp.Expr, tokens: Sequence[Token], index_of: dict[int, int]) -> int | None:
    """Index of the name token when `node` was written as name(...), else None."""
    index = index_of.get(node.meta.get("start", -1))
    if index is None or index + 1 >= len(tokens):
        return None
    return index if tokens[index + 1].token_type is TokenType.L_PAREN else None


def _call_findings(context: _Context, tokens: Sequence[Token], index: int) -> list[_Finding]:
    """Whether calling the function named by tokens[index] is read-safe, as written."""
    token = tokens[index]
    quoted = token.token_type is TokenType.IDENTIFIER
    name = token.text if quoted else token.text.lower()
    qualified = index >= 2 and tokens[index - 1].token_type is TokenType.DOT
    if quoted:
        # PostgreSQL: "coalesce"(...) is no longer the COALESCE construct but a lookup of a
        # function by that name; MySQL: `lower`(...) is a stored function.
        return [(UNKNOWN, f"quoted function name {name} may name a user-defined function")]
    if context.dialect == "mysql":
        if qualified:
            return [(UNKNOWN, f"function {name} is qualified: a stored function")]
        if name in _MYSQL_SPACE_SENSITIVE and tokens[index + 1].start != token.end + 1:
            return [(UNKNOWN, f"space before ( makes {name} a stored function call")]
    elif qualified:
        schema = tokens[index - 2]
        schema_name = schema.text if schema.token_type is TokenType.IDENTIFIER else _word(schema)
        if schema_name.lower() != "pg_catalog" or (
            index >= 3 and tokens[index - 3].token_type is TokenType.DOT
        ):
            return [(UNKNOWN, f"function {name} is schema-qualified and not on the allowlist")]
    if name in _READ_SAFE_FUNCTIONS[context.dialect]:
        return []
    effect = _KNOWN_EFFECTS.get(name)
    if effect is not None:
        return [(effect[0], f"function {name} {effect[1]}")]
    return [(UNKNOWN, f"function {name} is not on the read-safe allowlist")]


_Handler = Callable[[_Context, list[Token]], Verdict]

_HANDLERS: dict[tuple[str, str], _Handler] = {
    ("", "BEGIN"): _begin,
    ("", "START"): _start,
    ("", "COMMIT"): _end_transaction,
    ("", "ROLLBACK"): _end_transaction,
    ("postgres", "END"): _end_transaction,
    ("postgres", "ABORT"): _end_transaction,
    ("postgres", "SET"): _set_postgres,
    ("mysql", "SET"): _set_mysql,
    ("postgres", "RESET"): _reset_postgres,
    ("postgres", "DISCARD"): _discard,
    ("", "SHOW"): _show,
    ("", "EXPLAIN"): _explain,
    ("mysql", "DESCRIBE"): _explain,
    ("mysql", "DESC"): _explain,
    ("postgres", "COPY"): _copy,
    ("postgres", "DECLARE"): _declare,
    ("", "PREPARE"): _prepare,
    ("", "CREATE"): _ddl,
    ("", "ALTER"): _ddl,
    ("", "DROP"): _ddl,
    ("mysql", "RENAME"): _rename,
    ("mysql", "LOCK"): _lock_mysql,
    ("mysql", "UNLOCK"): _unlock_mysql,
    ("mysql", "LOAD"): _load_mysql,
    ("mysql", "DO"): _do_mysql,
    ("mysql", "ANALYZE"): _analyze_mysql,
}
