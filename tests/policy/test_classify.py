"""classify: the shared corpus, our case tables, literal independence, caps, robustness.

Case tables live in cases/*.jsonl, one JSON object a line, shaped like the shared corpus:
{"dialect", "sql", "expected", "category", "why"}, where `expected` is a class (read,
write, ddl, admin, unknown) or "not-read" when only "not read" matters.

The shared corpus (copied from ../shared/corpus/sql_classification.jsonl into
shared_corpus.jsonl) says only read or write ("write" meaning anything not read).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlglot.tokenizer_core import TokenType

from policy.classify import (
    MAX_NESTING_DEPTH,
    MAX_STATEMENT_CHARS,
    Lexed,
    StatementClass,
    Verdict,
    classify,
    combine,
    lex,
    precheck,
)

CASES_DIR = Path(__file__).parent / "cases"
#: A copy of the project's shared corpus (../shared/corpus/sql_classification.jsonl), kept
#: in the repository so that CI always runs it; AIRLOCK_SQL_CORPUS points elsewhere.
SHARED_CORPUS = Path(
    os.environ.get("AIRLOCK_SQL_CORPUS", Path(__file__).parent / "shared_corpus.jsonl")
)
#: Reads of the shared corpus that we hold on purpose (none today).
HELD_READS: set[tuple[str, str]] = set()

READ = StatementClass.READ
WRITE = StatementClass.WRITE
DDL = StatementClass.DDL
ADMIN = StatementClass.ADMIN
UNKNOWN = StatementClass.UNKNOWN


def load_cases(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def own_cases() -> list[dict[str, str]]:
    return [case for path in sorted(CASES_DIR.glob("*.jsonl")) for case in load_cases(path)]


def corpus_cases() -> list[dict[str, str]]:
    return load_cases(SHARED_CORPUS)


def case_id(case: dict[str, str]) -> str:
    return f"{case['dialect']}:{case['category']}:{case['sql'][:40]!r}"


OWN_CASES = own_cases()
CORPUS_CASES = corpus_cases()


# --------------------------------------------------------------------------- case tables


def test_the_case_tables_are_well_formed_and_big_enough() -> None:
    assert len(OWN_CASES) >= 400
    for case in OWN_CASES:
        assert case["dialect"] in ("postgres", "mysql")
        assert case["expected"] in ("read", "write", "ddl", "admin", "unknown", "not-read")
        assert case["category"]
        assert case["why"]


@pytest.mark.parametrize("case", OWN_CASES, ids=case_id)
def test_own_case(case: dict[str, str]) -> None:
    verdict = classify(case["sql"], case["dialect"])
    assert verdict.reasons, "every verdict says why"
    if case["expected"] == "not-read":
        assert not verdict.is_read, verdict
    else:
        assert verdict.statement_class.value == case["expected"], verdict


def test_shared_corpus_has_no_write_classified_read() -> None:
    holes = [
        (case["dialect"], case["sql"], classify(case["sql"], case["dialect"]))
        for case in CORPUS_CASES
        if case["expected"] != "read"
    ]
    assert [hole for hole in holes if hole[2].is_read] == []
    assert len(holes) > 100


def test_shared_corpus_reads_pass_except_the_ones_held_on_purpose() -> None:
    held = {
        (case["dialect"], case["sql"])
        for case in CORPUS_CASES
        if case["expected"] == "read" and not classify(case["sql"], case["dialect"]).is_read
    }
    assert held == HELD_READS


# --------------------------------------------------------------------------- literals

# Replacement values for each kind of literal, written as the dialect needs them. The
# hostile ones hold what a naive lexer would take for a statement end or a comment.
_PLAIN = "plain value 42"
_HOSTILE_PG = "x; DELETE FROM t; -- /* '' $$ \\ */ ;"
_HOSTILE_MYSQL = "x; DELETE FROM t; -- /* '' \\' \\\\ \\\" # */ ;"


def _literal_replacement(raw: str, kind: TokenType, dialect: str, hostile: bool, n: int) -> str:
    if kind is TokenType.NUMBER:
        return str(987654321 + n) if raw.isdigit() else f"{n}.25"
    if kind is TokenType.HEREDOC_STRING:
        tag = raw[: raw.index("$", 1) + 1]
        return f"{tag}{_HOSTILE_PG.replace('$$', '$ $') if hostile else _PLAIN}{tag}"
    if kind in (TokenType.BIT_STRING, TokenType.HEX_STRING):
        digits = "1" if kind is TokenType.BIT_STRING else "ab"
        if raw[:2].lower() in ("0b", "0x"):
            return raw[:2] + digits
        return f"{raw[: raw.index(chr(39))]}'{digits}'"
    quote_at = min(i for i in (raw.find("'"), raw.find('"')) if i >= 0)
    prefix, quote = raw[:quote_at], raw[quote_at]
    if not hostile:
        return f"{prefix}{quote}{_PLAIN}{quote}"
    if dialect == "mysql":
        body = _HOSTILE_MYSQL if quote == "'" else _HOSTILE_MYSQL.replace("'", '"')
    elif kind is TokenType.BYTE_STRING:  # E'...': backslash escapes
        body = _HOSTILE_PG.replace("\\", "\\\\") + "\\'"
    elif kind is TokenType.UNICODE_STRING:
        body = _HOSTILE_PG.replace("\\", "")
    else:
        body = _HOSTILE_PG
    return f"{prefix}{quote}{body}{quote}"


def literal_variants(sql: str, dialect: str) -> Iterator[str]:
    """`sql` with every literal value replaced, once plainly and once with hostile text.

    Yields nothing for texts that cannot be lexed or whose literals are meant to matter
    (SET and PREPARE statements).
    """
    lexed = lex(sql, dialect)
    if not isinstance(lexed, Lexed):
        return
    words = {token.text.upper() for token in lexed.tokens}
    literal_kinds = {
        TokenType.NUMBER,
        TokenType.STRING,
        TokenType.NATIONAL_STRING,
        TokenType.BYTE_STRING,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.UNICODE_STRING,
        TokenType.HEREDOC_STRING,
    }
    literals = [token for token in lexed.tokens if token.token_type in literal_kinds]
    if not literals or words & {"SET", "PREPARE", "SET_CONFIG"}:
        return
    for hostile in (False, True):
        pieces: list[str] = []
        end = 0
        for n, token in enumerate(literals):
            raw = sql[token.start : token.end + 1]
            pieces.append(sql[end : token.start])
            pieces.append(_literal_replacement(raw, token.token_type, dialect, hostile, n))
            end = token.end + 1
        pieces.append(sql[end:])
        yield "".join(pieces)


LITERAL_CASES = [
    case
    for case in OWN_CASES + CORPUS_CASES
    if list(literal_variants(case["sql"], case["dialect"]))
]


def test_enough_cases_have_literals_to_vary() -> None:
    assert len(LITERAL_CASES) > 250


def test_a_verdict_never_depends_on_literal_values() -> None:
    """Class and reasons stay the same when every literal takes another value.

    This is what lets `policy.fingerprint` share a verdict between texts that differ only
    in their literals; it also proves no literal value leaks into a reason.
    """
    changed = []
    for case in LITERAL_CASES:
        original = classify(case["sql"], case["dialect"])
        for variant in literal_variants(case["sql"], case["dialect"]):
            verdict = classify(variant, case["dialect"])
            if verdict != original:
                changed.append((case["sql"], variant, original, verdict))
    assert changed == []


def test_literal_variants_really_change_the_text() -> None:
    variants = list(literal_variants("SELECT * FROM t WHERE a = 'x' AND b = 1", "postgres"))
    assert variants == [
        "SELECT * FROM t WHERE a = 'plain value 42' AND b = 987654322",
        "SELECT * FROM t WHERE a = 'x; DELETE FROM t; -- /* '' $$ \\ */ ;' AND b = 987654322",
    ]
    assert all(classify(variant, "postgres").is_read for variant in variants)


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize(
    ("sql", "dialect", "expected"),
    [
        ("SELECT 1", "postgres", READ),
        ("UPDATE t SET a = 1", "postgres", WRITE),
        ("DROP TABLE t", "mysql", DDL),
        ("GRANT SELECT ON t TO bob", "postgres", ADMIN),
        ("DO $$ BEGIN END $$", "postgres", UNKNOWN),
    ],
)
def test_each_class(sql: str, dialect: str, expected: StatementClass) -> None:
    assert classify(sql, dialect).statement_class is expected


def test_reasons_say_what_and_why() -> None:
    assert classify("UPDATE t SET a = 1", "postgres").reasons == ("UPDATE modifies data",)
    assert classify("SELECT pg_sleep(1)", "postgres").reasons == (
        "function pg_sleep is not on the read-safe allowlist",
    )
    assert classify("SELECT nextval('s')", "postgres") == Verdict(
        WRITE, ("function nextval changes a sequence",)
    )


def test_the_function_name_is_checked_as_written_not_as_sqlglot_normalises_it() -> None:
    # sqlglot maps uuid() onto its Uuid class, which stands for harmless builtins elsewhere;
    # PostgreSQL has no uuid(), so it can only be a user-defined function.
    assert not classify("SELECT uuid()", "postgres").is_read
    assert classify("SELECT gen_random_uuid()", "postgres").is_read
    assert classify("SELECT uuid()", "mysql").is_read
    assert not classify('SELECT "coalesce"(a, b) FROM t', "postgres").is_read
    assert not classify("SELECT `lower`('A')", "mysql").is_read
    assert classify("SELECT pg_catalog.lower('A')", "postgres").is_read
    assert not classify("SELECT public.lower('A')", "postgres").is_read


def test_several_statements_get_the_strictest_class() -> None:
    assert classify("SELECT 1; SELECT 2", "postgres").statement_class is READ
    assert classify("SELECT 1; DELETE FROM t; UPDATE t SET a = 1", "postgres") == Verdict(
        WRITE,
        ("statement 2 of 3: DELETE modifies data", "statement 3 of 3: UPDATE modifies data"),
    )
    mixed = classify("DELETE FROM t; DROP TABLE t", "postgres")
    assert mixed.statement_class is UNKNOWN
    assert mixed.reasons == (
        "statement 1 of 2: DELETE modifies data",
        "statement 2 of 2: DROP TABLE changes the schema",
    )


def test_combine() -> None:
    read = Verdict(READ, ("r",))
    write = Verdict(WRITE, ("w",))
    ddl = Verdict(DDL, ("d",))
    assert combine([read]) is read
    assert combine([read, read]).statement_class is READ
    assert combine([read, write, write]).statement_class is WRITE
    assert combine([write, ddl]).statement_class is UNKNOWN


_PLACES = [
    "SELECT {f}",
    "SELECT a, {f} FROM t",
    "SELECT a FROM t WHERE {f}",
    "SELECT a FROM t WHERE x = 1 AND {f}",
    "SELECT a FROM t WHERE x IN ({f})",
    "SELECT a FROM t ORDER BY {f}",
    "SELECT a FROM t GROUP BY {f}",
    "SELECT a FROM t GROUP BY a HAVING {f}",
    "SELECT a FROM t JOIN u ON {f}",
    "SELECT CASE WHEN {f} THEN 1 END",
    "SELECT lower({f})",
    "SELECT ({f})",
    "SELECT ARRAY[{f}]",
    "SELECT * FROM {f}",
    "SELECT * FROM t, {f}",
    "SELECT * FROM t CROSS JOIN LATERAL {f}",
    "SELECT a FROM t LIMIT {f}",
    "SELECT {f}::int",
    "SELECT count(*) FILTER (WHERE {f}) FROM t",
    "SELECT sum(a) OVER (PARTITION BY {f}) FROM t",
    "SELECT a FROM t WHERE EXISTS (SELECT {f})",
    "WITH c AS (SELECT {f}) SELECT * FROM c",
    "VALUES ({f})",
    "SELECT a FROM t WHERE a = ANY({f})",
    "SELECT CAST({f} AS int)",
    "SELECT a FROM t WHERE a BETWEEN {f} AND 2",
    "SELECT a FROM t WHERE a LIKE {f}",
    "SELECT 1 FROM t GROUP BY a, {f}",
    "SELECT DISTINCT ON ({f}) a FROM t",
    "SELECT a FROM t ORDER BY a OFFSET {f}",
    "SELECT a FROM t WINDOW w AS (ORDER BY {f})",
    "SELECT -{f}",
    "SELECT * FROM t JOIN {f} ON true",
    "SELECT a FROM t WHERE NOT {f}",
    "SELECT {f}[1]",
    "SELECT COALESCE({f}, 1)",
    "SELECT a FROM t UNION SELECT {f}",
    "SELECT EXTRACT(YEAR FROM {f})",
    "SELECT SUBSTRING({f} FROM 1)",
    "SELECT TRIM({f})",
    "SELECT 1 = {f}",
    "SELECT a FROM t WHERE a > SOME({f})",
    "EXPLAIN SELECT {f}",
]


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
@pytest.mark.parametrize(
    "name",
    [
        "pg_sleep",
        "sleep",
        "my_udf",
        "nextval",
        "file",
        "show",
        "filter",
        "over",
        "kill",
        "copy",
        "view",
        "set",
    ],
)
def test_a_call_of_a_function_off_the_allowlist_is_never_read_wherever_it_stands(
    name: str, dialect: str
) -> None:
    # Many of these names are keywords to sqlglot, which parses some of them as syntax
    # (an alias, a window clause, a grouping) where the server calls a function.
    read = [
        sql
        for place in _PLACES
        for sql in (place.replace("{f}", f"{name}({args})") for args in ("1", "x", "1, 2"))
        if classify(sql, dialect).is_read
    ]
    assert read == []


def test_explain_analyze_takes_the_class_of_what_it_runs() -> None:
    assert classify("EXPLAIN ANALYZE SELECT 1", "postgres").is_read
    assert classify("EXPLAIN ANALYZE DELETE FROM t", "postgres").statement_class is WRITE
    assert classify("EXPLAIN DELETE FROM t", "postgres").is_read
    assert classify("EXPLAIN (ANALYZE off) DELETE FROM t", "postgres").is_read
    assert not classify("EXPLAIN (ANALYZE 0) DELETE FROM t", "postgres").is_read  # unsure: runs
    assert not classify("EXPLAIN SELECT pg_sleep(1)", "postgres").is_read  # planning folds


def test_copy() -> None:
    assert classify("COPY t TO STDOUT", "postgres").is_read
    assert classify("COPY (SELECT 1) TO STDOUT", "postgres").is_read
    assert classify("COPY t FROM STDIN", "postgres").statement_class is WRITE
    assert classify("COPY t TO '/tmp/x'", "postgres").statement_class is ADMIN
    assert classify("COPY t FROM PROGRAM 'id'", "postgres").statement_class is ADMIN
    assert classify("COPY (DELETE FROM t RETURNING *) TO STDOUT", "postgres").statement_class is (
        WRITE
    )


def test_set_values_matter_where_they_change_the_lexer() -> None:
    assert classify("SET client_encoding = 'UTF8'", "postgres").is_read
    assert classify("SET client_encoding = 'SJIS'", "postgres").statement_class is ADMIN
    assert classify("SET standard_conforming_strings = on", "postgres").is_read
    assert classify("SET standard_conforming_strings = off", "postgres").statement_class is ADMIN
    assert classify("SET NAMES utf8mb4", "mysql").is_read
    assert classify("SET NAMES sjis", "mysql").statement_class is ADMIN
    assert classify("SET sql_mode = 'STRICT_TRANS_TABLES'", "mysql").is_read
    assert classify("SET sql_mode = 'ANSI_QUOTES'", "mysql").statement_class is ADMIN


def test_empty_and_comment_only_texts_are_harmless() -> None:
    for sql in ("", "   ", ";", "-- nothing\n", "/* nothing */"):
        assert classify(sql, "postgres") == Verdict(READ, ("empty statement: nothing runs",))


def test_unknown_dialect_is_unknown() -> None:
    assert classify("SELECT 1", "oracle").statement_class is UNKNOWN


def test_to_json_and_is_read() -> None:
    verdict = classify("DELETE FROM t", "postgres")
    assert verdict.to_json() == {"class": "write", "reasons": ["DELETE modifies data"]}
    assert json.loads(json.dumps(verdict.to_json()))["class"] == "write"
    assert not verdict.is_read
    assert classify("SELECT 1", "postgres").is_read


def test_classify_and_its_verdicts_pickle_for_worker_processes() -> None:
    # Round trips of our own objects, as a process pool does them.
    function = pickle.loads(pickle.dumps(classify))  # noqa: S301
    verdict = function("SELECT 1", "postgres")
    assert pickle.loads(pickle.dumps(verdict)) == verdict  # noqa: S301


# --------------------------------------------------------------------------- caps


def test_precheck() -> None:
    assert precheck("SELECT 1") is None
    assert precheck("SELECT " + "(" * MAX_NESTING_DEPTH + ")" * MAX_NESTING_DEPTH) is None
    too_deep = precheck("SELECT " + "(" * (MAX_NESTING_DEPTH + 1) + ")" * (MAX_NESTING_DEPTH + 1))
    assert too_deep is not None
    assert too_deep.statement_class is UNKNOWN
    assert precheck("(" * (MAX_NESTING_DEPTH + 1)) is not None  # unclosed counts too
    assert precheck("()" * 10_000) is None  # many brackets, shallow
    assert precheck("x" * (MAX_STATEMENT_CHARS + 1)) is not None
    assert precheck("SELECT 1\x00") is not None


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT '" + "x" * 10_000_000 + "'",
        "SELECT " + "(" * 100_000 + "1" + ")" * 100_000,
        "SELECT " + "[" * 100_000,
        "SELECT " + "(" * 500_000,
        "SELECT " + "{" * 65,
    ],
    ids=["10MB", "100k-parens", "100k-brackets", "500k-unclosed", "65-braces"],
)
def test_huge_or_deep_statements_are_refused_quickly(sql: str) -> None:
    started = time.perf_counter()
    verdict = classify(sql, "postgres")
    assert time.perf_counter() - started < 1.0
    assert verdict.statement_class is UNKNOWN


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        (
            "SELECT " + "ARRAY[" * 12 + "1" + "]" * 12,
            "array brackets are nested or chained too deeply",
        ),
        ("SELECT x" + "[1]" * 40, "array brackets are nested or chained too deeply"),
        (
            "SELECT " + "CASE WHEN true THEN " * 65 + "1" + " END" * 65,
            "CASE expressions are nested too deeply",
        ),
        ("SELECT " + "NOT " * 65 + "true", "too many prefix operators in a row"),
    ],
)
def test_constructs_sqlglot_parses_slowly_or_deeply_are_refused(sql: str, reason: str) -> None:
    started = time.perf_counter()
    assert classify(sql, "postgres") == Verdict(UNKNOWN, (reason,))
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("indent", [8, 40])
def test_a_string_literal_before_an_indented_line_is_lexed_at_once(indent: int) -> None:
    # Django's index introspection ends lines with a literal and indents the next one by
    # 28 spaces: the check for a literal continued on the next line ('a'\n'b') once
    # tried every way of splitting those spaces (tens of seconds, then "not classified").
    sql = "SELECT CASE x WHEN 1 THEN 'DESC' ELSE 'ASC'\n" + " " * indent + "END FROM t"  # noqa: S608
    started = time.perf_counter()
    assert classify(sql, "postgres").statement_class is READ
    assert time.perf_counter() - started < 1.0
    # Still one literal when the next line does continue it.
    continued = "SELECT 'a'\n" + " " * indent + "'b'"
    assert classify(continued, "postgres").statement_class is READ


def test_deep_input_never_crashes_the_process_even_with_a_high_recursion_limit() -> None:
    # The compiled sqlglot recurses in C; with a raised recursion limit, deep input that
    # reached the parser would overflow the C stack and kill the process.
    script = """
import sys
sys.setrecursionlimit(1_000_000)
from policy.classify import classify
for sql in [
    "SELECT " + "(" * 200_000 + "1" + ")" * 200_000,
    "SELECT " + "CASE WHEN 1 THEN " * 20_000 + "1" + " END" * 20_000,
    "SELECT " + "NOT " * 50_000 + "1",
    "SELECT " + "- " * 50_000 + "1",
    "SELECT x" + "[1]" * 50_000,
    "SELECT " + "ARRAY[" * 40 + "1" + "]" * 40,
]:
    print(classify(sql, "postgres").statement_class.value)
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["unknown"] * 6


# --------------------------------------------------------------------------- robustness


def _junk(rng: random.Random) -> str:
    pieces = [
        "SELECT", " ", "'", '"', "`", "$$", "$a$", "--", "/*", "*/", ";", "\\", "\n", "\x00",
        "\ud800", "\udfff", "\u00a0", "\u2028", "\x1c", "\x0b", "E'", "U&'", "(", ")", "[",
        "{", "#", "!", "/*!", "/*+", "DROP TABLE t", "1", "1e", ".5", "é", "\u202e", "\ufeff",
    ]  # fmt: skip
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))


def test_classify_never_raises_on_junk() -> None:
    rng = random.Random(20240611)
    for _ in range(3000):
        sql = _junk(rng)
        for dialect in ("postgres", "mysql"):
            verdict = classify(sql, dialect)
            assert isinstance(verdict, Verdict)
            assert verdict.reasons


def test_an_internal_error_is_unknown_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    import policy.classify.context as module

    def broken(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(module, "lex", broken)
    assert classify("SELECT 1", "postgres") == Verdict(UNKNOWN, ("could not parse: RuntimeError",))


# --------------------------------------------------------------------------- spelling

#: Column names that are also type names or keywords to sqlglot's tokenizer.
_KEYWORD_COLUMNS = [
    "name",
    "type",
    "text",
    "date",
    "time",
    "timestamp",
    "json",
    "uuid",
    "comment",
    "format",
    "value",
    "level",
    "role",
    "status",
    "year",
    "end_date",
]


_COLUMN_PLACES = [
    "SELECT 1 FROM t WHERE {c} IN ('a', 'b')",
    "SELECT 1 FROM t WHERE t.{c} IN ('a')",
    "SELECT 1 FROM t WHERE {c} NOT IN ('a')",
    "SELECT 1 FROM t WHERE {c} = 'a' AND ({c} = 'b' OR x = 1)",
    "SELECT 1 FROM t WHERE x = 1 OR {c} IN ('a') OR (x = 2)",
    "SELECT 1 FROM t WHERE {c} LIKE ('a%')",
    "SELECT 1 FROM t AS {c} JOIN (SELECT 1 AS x) AS u ON true",
]


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
@pytest.mark.parametrize("column", _KEYWORD_COLUMNS)
def test_a_column_named_like_a_type_or_keyword_before_a_bracket_is_read(
    column: str, dialect: str
) -> None:
    # Issue 16: `name IN (...)` was taken for a call of a function named "in".
    for sql in (place.replace("{c}", column) for place in _COLUMN_PLACES):
        verdict = classify(sql, dialect)
        assert verdict.is_read, (sql, verdict)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 FROM t WHERE a != $1::INTEGER AND (b = 1)",
        "SELECT 1 FROM t WHERE a > '2024-01-01'::timestamp OR (b = 1)",
        "SELECT 1 FROM t WHERE a > '2024-01-01'::timestamp with time zone OR (b = 1)",
        "SELECT 1 FROM t WHERE a::text IN ('x') AND (b::double precision > 1)",
        "SELECT 1 FROM t WHERE a::varchar(10) LIKE ('x%')",
        "SELECT 1 FROM t WHERE a::int[] IS NOT NULL AND (b = 1)",
        "SELECT 1 FROM t WHERE current_date IN (d) AND (b = 1)",
        "SELECT 1 FROM t WHERE CASE WHEN a THEN 1 END IN (1, 2)",
        "SELECT 1 FROM t WHERE CASE WHEN a THEN 'x' END LIKE ('x%')",
        "SELECT name FROM fruit WHERE name IN ('apple', 'pear')",
    ],
)
def test_casts_and_keyword_operands_before_a_bracket_are_read(sql: str) -> None:
    verdict = classify(sql, "postgres")
    assert verdict.is_read, verdict


_CALL_PLACES = [
    "SELECT {f}(1)",
    "SELECT 1 FROM t WHERE NOT {f}(1)",
    "SELECT 1 FROM t WHERE x = 1 AND {f}(1)",
    "SELECT 1 FROM t WHERE x::int AND {f}(1)",
    "SELECT 1 FROM t WHERE x LIKE y ESCAPE {f}(1)",
    "SELECT 1 FROM t WHERE x AT TIME ZONE {f}(1)",
    "SELECT 1 FROM t ORDER BY {f}(1)",
    "SELECT 1 FROM t WHERE x IN (SELECT {f}(1))",
    "SELECT public.{f}(1)",
    "SELECT 1 FROM t WHERE text = 'a' AND {f}(1)",
]


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
@pytest.mark.parametrize("name", ["like", "ilike", "overlaps", "join", "filter", "over", "my_udf"])
def test_a_grammar_word_is_still_a_call_where_no_operand_precedes_it(
    name: str, dialect: str
) -> None:
    # Words the server may take for a function name stay checked as calls wherever an
    # expression starts: after a keyword, after a type's own words, after a qualifier.
    read = [
        sql
        for sql in (place.replace("{f}", name) for place in _CALL_PLACES)
        if classify(sql, dialect).is_read
    ]
    assert read == []


@pytest.mark.parametrize("name", ["in", "and", "or", "like"])
def test_a_qualified_or_quoted_reserved_word_is_a_call(name: str) -> None:
    # PostgreSQL reads any word after a qualifier as a name: s.and(1) calls a function.
    for place in ("SELECT 1 FROM t WHERE x = 1 AND public.{f}(1)", 'SELECT 1 WHERE x = "{f}"(1)'):
        assert not classify(place.replace("{f}", name), "postgres").is_read


# --------------------------------------------------------------------------- set_config


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # Django's first query on every connection.
        ("SELECT set_config('TimeZone', 'UTC', false)", READ),
        ("SELECT set_config('timezone', 'Europe/Paris', true)", READ),
        ("select pg_catalog.set_config('application_name', 'app', false)", READ),
        ("SELECT set_config('statement_timeout', '5s', false)", READ),
        ("SELECT set_config('search_path', 'public', false)", READ),
        ("SELECT set_config('search_path', '\"$user\", public', false)", READ),
        ("SELECT set_config('search_path', 'pg_catalog, public', false)", READ),
        ("SELECT set_config('client_encoding', 'UTF8', false)", READ),
        ("SELECT set_config('standard_conforming_strings', 'on', false)", READ),
        # As SET would be: not on the allowlist, or a value that changes the lexer.
        ("SELECT set_config('role', 'postgres', false)", ADMIN),
        ("SELECT set_config('session_authorization', 'postgres', false)", ADMIN),
        ("SELECT set_config('work_mem', '1GB', false)", ADMIN),
        ("SELECT set_config('a.b', 'c', true)", ADMIN),
        ("SELECT set_config('search_path', 'evil, public', false)", ADMIN),
        ("SELECT set_config('search_path', 'default', false)", ADMIN),
        ("SELECT set_config('search_path', 'public, \"Evil\"', false)", ADMIN),
        ("SELECT set_config('client_encoding', 'SJIS', false)", ADMIN),
        ("SELECT set_config('standard_conforming_strings', 'off', false)", ADMIN),
        # Not literals: the gateway cannot tell which setting, or which value.
        ("SELECT set_config(name, 'UTC', false) FROM t", ADMIN),
        ("SELECT set_config($1, 'UTC', false)", ADMIN),
        ("SELECT set_config('client_encoding', $1, false)", UNKNOWN),
        ("SELECT set_config('search_path', $1, false)", UNKNOWN),
        # asyncpg's introspection turns jit off and back: any value of jit is harmless.
        ("SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new", READ),
        ("SELECT set_config('jit', $1, false)", READ),
        ("SELECT set_config('TimeZone', $1, false)", READ),
        ("SELECT set_config('TimeZone', pg_sleep(1)::text, false)", UNKNOWN),
        ("SELECT set_config('search_path', current_setting('x'), false)", UNKNOWN),
        ("SELECT set_config(E'search\\x5fpath', 'evil', false)", ADMIN),
        ("SELECT set_config('TimeZone', 'UTC')", ADMIN),
        # What else the query does still counts.
        ("SELECT set_config('TimeZone', 'UTC', false), pg_sleep(1)", UNKNOWN),
        ("SELECT \"set_config\"('TimeZone', 'UTC', false)", UNKNOWN),
        ("SELECT public.set_config('TimeZone', 'UTC', false)", UNKNOWN),
    ],
)
def test_set_config_is_judged_as_the_equivalent_set(sql: str, expected: StatementClass) -> None:
    verdict = classify(sql, "postgres")
    assert verdict.statement_class is expected, verdict


def test_set_config_agrees_with_set_on_every_allowlisted_setting() -> None:
    for name, value in [
        ("DateStyle", "ISO, MDY"),
        ("extra_float_digits", "3"),
        ("lock_timeout", "0"),
        ("idle_in_transaction_session_timeout", "60000"),
        ("bytea_output", "hex"),
        ("client_min_messages", "warning"),
        ("IntervalStyle", "iso_8601"),
        ("default_transaction_isolation", "read committed"),
    ]:
        as_set = classify(f"SET {name} = '{value}'", "postgres")
        as_function = classify(f"SELECT set_config('{name}', '{value}', false)", "postgres")
        assert as_set.is_read, as_set
        assert as_function.is_read, as_function


def test_set_config_is_never_fingerprinted_with_another_value() -> None:
    from policy.fingerprint import CachedClassifier

    cache = CachedClassifier("postgres")
    assert cache.classify("SELECT set_config('TimeZone', 'UTC', false)").is_read
    assert not cache.classify("SELECT set_config('role', 'postgres', false)").is_read
    assert not cache.classify("SELECT  set_config('role', 'postgres', false) ").is_read


# --------------------------------------------------------------------------- housekeeping


@pytest.mark.parametrize(
    "sql",
    [
        # asyncpg's pool reset (Connection.reset, PostgreSQL 15), as it sends it.
        "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;",
        "ROLLBACK;\nSELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;",
        "select pg_advisory_unlock_all(); close all; unlisten *; reset all",
        "CLOSE ALL",
        "UNLISTEN *",
    ],
)
def test_pool_housekeeping_that_only_resets_this_session_is_read(sql: str) -> None:
    verdict = classify(sql, "postgres")
    assert verdict.is_read, verdict


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # DISCARD ALL runs SET SESSION AUTHORIZATION DEFAULT: it leaves the read role.
        ("DISCARD ALL", ADMIN),
        ("RESET ROLE", ADMIN),
        ("RESET SESSION AUTHORIZATION", ADMIN),
        ("RESET ALL; RESET ROLE", ADMIN),
        # The corpus holds these alone: locks other code of the session relies on, and
        # settings. Only a whole reset, each statement once, is read.
        ("RESET ALL", ADMIN),
        ("SELECT pg_advisory_unlock_all()", WRITE),
        ("SELECT pg_advisory_unlock_all(); RESET ALL", UNKNOWN),
        ("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL; RESET ROLE", ADMIN),
        ("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL; DELETE FROM t", WRITE),
        ("SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL; RESET ALL", UNKNOWN),
        ("SELECT pg_advisory_unlock(1)", WRITE),
        ("SELECT pg_advisory_lock(1)", WRITE),
    ],
)
def test_housekeeping_that_changes_the_role_or_locks_stays_held(
    sql: str, expected: StatementClass
) -> None:
    assert classify(sql, "postgres").statement_class is expected


# --------------------------------------------------------------------------- captured corpora

#: What tests/policy/capture recorded real frameworks, drivers, pools and tools sending.
CAPTURED = {
    path.stem.removeprefix("captured_"): load_cases(path)
    for path in sorted(CASES_DIR.glob("captured_*.jsonl"))
}


def test_every_framework_source_was_captured() -> None:
    assert sorted(CAPTURED) == sorted(
        [
            "sqlalchemy_psycopg",
            "sqlalchemy_asyncpg",
            "pools_postgres",
            "django",
            "langchain",
            "psql",
            "node_pg",
            "mcp_postgres",
            "pgjdbc",
            "sqlalchemy_pymysql",
            "mysql_cli",
            "pools_mysql",
        ]
    )
    assert all(len(cases) >= 5 for cases in CAPTURED.values())
    assert sum(len(cases) for cases in CAPTURED.values()) > 250


@pytest.mark.parametrize("source", sorted(CAPTURED))
def test_what_frameworks_really_send_is_read(source: str) -> None:
    held = [
        (case["sql"][:200], verdict.reasons)
        for case in CAPTURED[source]
        if not (verdict := classify(case["sql"], case["dialect"])).is_read
    ]
    assert held == []


@pytest.mark.timeout(20)
def test_whitespace_after_a_string_is_lexed_in_linear_time() -> None:
    # The lexer's search for a string continued on the next line ('a'\n'b') backtracked
    # exponentially over a run of whitespace: 40 spaces took minutes (found with Django's
    # indented introspection SQL).
    for sql in ("SELECT 'a'\n" + " " * 5000 + "AS x", "SELECT 'a'\n" + " \n" * 5000 + "'b'"):
        started = time.perf_counter()
        assert classify(sql, "postgres").is_read
        assert time.perf_counter() - started < 2
