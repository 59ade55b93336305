"""policy.scope: which databases a MySQL statement reaches, against those exposed."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from sqlglot.tokenizer_core import TokenType

from policy.classify import LITERAL_TOKEN_TYPES, Lexed, lex
from policy.fingerprint import fingerprint
from policy.scope import _checked, clear_cache, scope_refusal
from tests.policy.test_classify import CORPUS_CASES, OWN_CASES

SHOP = frozenset({"shop", "shop_archive"})
MY = "mysql"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM accounts",
        "SELECT a.id FROM accounts a JOIN shop_archive.accounts b ON a.id = b.id",
        "SELECT * FROM shop.accounts",
        "SELECT * FROM `shop`.`accounts`",
        "USE shop_archive",
        "SHOW TABLES",
        "SHOW TABLES FROM shop",
        "SELECT table_name FROM information_schema.tables",
        "SELECT * FROM INFORMATION_SCHEMA.COLUMNS",
        "SELECT 1; SELECT * FROM shop.accounts",
        "DESCRIBE shop.accounts",
        "PREPARE s FROM 'SELECT * FROM shop.accounts'",
        "SET NAMES utf8mb4",
        "BEGIN",
    ],
)
def test_names_inside_the_exposed_databases_pass(sql: str) -> None:
    assert scope_refusal(sql, SHOP) is None


@pytest.mark.parametrize(
    ("sql", "database"),
    [
        ("SELECT * FROM mysql.user", "mysql"),
        ("SELECT * FROM `mysql`.`user`", "mysql"),
        ("SELECT * FROM mysql . user", "mysql"),
        ("TABLE mysql.user", "mysql"),
        ("USE mysql", "mysql"),
        ("USE `performance_schema`", "performance_schema"),
        ("SELECT * FROM sys.processlist", "sys"),
        ("WITH c AS (SELECT * FROM mysql.user) SELECT * FROM c", "mysql"),
        ("SELECT (SELECT 1 FROM mysql.db LIMIT 1)", "mysql"),
        ("SELECT * FROM accounts WHERE id IN (SELECT id FROM other.t)", "other"),
        ("SELECT 1; SELECT * FROM mysql.user", "mysql"),
        ("SHOW TABLES FROM mysql", "mysql"),
        ("SHOW COLUMNS FROM user IN mysql", "mysql"),
        ("SHOW CREATE TABLE mysql.user", "mysql"),
        ("DESCRIBE mysql.user", "mysql"),
        ("EXPLAIN SELECT * FROM mysql.user", "mysql"),
        ("SET @x = (SELECT 1 FROM mysql.user LIMIT 1)", "mysql"),
        ("INSERT INTO shop.t SELECT * FROM mysql.user", "mysql"),
        ("SELECT * FROM SHOP.accounts", "SHOP"),  # names are case-sensitive on Linux
        # Not parsed into a tree: read token by token, string literals included.
        ("PREPARE s FROM 'SELECT * FROM mysql.user'", "mysql"),
        ("DO (SELECT 1 FROM mysql.user LIMIT 1)", "mysql"),
        ("CHECKSUM TABLE mysql.user", "mysql"),
    ],
)
def test_names_outside_are_refused(sql: str, database: str) -> None:
    assert scope_refusal(sql, SHOP) == f'database "{database}" is not exposed by this target'


def test_a_target_that_exposes_nothing_refuses_every_qualified_name() -> None:
    assert scope_refusal("SELECT * FROM shop.accounts", frozenset()) is not None
    assert scope_refusal("SELECT * FROM accounts", frozenset()) is None


def test_a_statement_that_cannot_be_read_is_refused() -> None:
    assert scope_refusal("SELECT 'unterminated", SHOP) is not None


def test_repeated_statements_are_answered_from_the_cache() -> None:
    clear_cache()
    for _ in range(3):
        scope_refusal("SELECT * FROM mysql.user", SHOP)
    assert _checked.cache_info().hits == 2


# ------------------------------------------------------------------ executable comments


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 /*! , (SELECT 1 FROM mysql.user LIMIT 1) */",
        "SELECT 1 /*!50700 , (SELECT 1 FROM mysql.user LIMIT 1) */",
        "SELECT 1 /*M!100100 , (SELECT 1 FROM mysql.user LIMIT 1) */",
        "SELECT * FROM shop.t /*! UNION SELECT * FROM mysql.user */",
        "PREPARE s FROM 'SELECT 1' /*! , mysql.user */",
        "SELECT 1 /*!*/ /*! , (SELECT 1 FROM mysql.user) */",
    ],
)
def test_names_inside_executable_comments_count(sql: str) -> None:
    # MySQL and MariaDB run the text of /*! ... */ (sqlglot reads it as a comment).
    assert scope_refusal(sql, SHOP) == 'database "mysql" is not exposed by this target'


def test_other_comments_and_harmless_executable_ones_pass() -> None:
    assert scope_refusal("SELECT * FROM shop.t /*!40001 SQL_NO_CACHE */", SHOP) is None
    assert scope_refusal("SELECT * FROM shop.t /* mysql.user */", SHOP) is None
    assert scope_refusal("SELECT /*+ MAX_EXECUTION_TIME(1) */ * FROM shop.t", SHOP) is None


# ------------------------------------------------------------------ cached by fingerprint


def test_statements_differing_only_in_literals_share_one_answer() -> None:
    clear_cache()
    for n in range(50):
        sql = f"SELECT c FROM sbtest1 WHERE id={n}"  # noqa: S608
        assert scope_refusal(sql, SHOP, fingerprint(sql, MY)) is None
    assert _checked.cache_info().misses == 1
    for n in range(50):
        sql = f"SELECT c FROM mysql.user WHERE id={n}"  # noqa: S608
        refusal = scope_refusal(sql, SHOP, fingerprint(sql, MY))
        assert refusal == 'database "mysql" is not exposed by this target'
    assert _checked.cache_info().misses == 2


def test_a_key_of_another_target_or_dialect_is_not_shared() -> None:
    clear_cache()
    sql = "SELECT c FROM shop.t WHERE id=1"
    assert scope_refusal(sql, SHOP, fingerprint(sql, MY)) is None
    assert scope_refusal(sql, frozenset({"other"}), fingerprint(sql, MY)) is not None
    # A PostgreSQL key is ignored: the text is checked (and cached) by itself.
    other = "SELECT c FROM mysql.t WHERE id=1"
    assert scope_refusal(other, SHOP, fingerprint(sql, "postgres")) is not None


def test_names_read_from_strings_are_never_shared() -> None:
    clear_cache()
    for sql in ("USE 'shop'", "SELECT * FROM 'shop'.t", "SHOW TABLES FROM 'shop'"):
        assert scope_refusal(sql, SHOP, fingerprint(sql, MY)) is None
    for sql in ("USE 'mysql'", "SELECT * FROM 'mysql'.t", "SHOW TABLES FROM 'mysql'"):
        key = fingerprint(sql, MY)
        assert key is not None  # one key with the texts above: the literal is taken out
        assert scope_refusal(sql, SHOP, key) == 'database "mysql" is not exposed by this target'


#: Statements with literals where names go, or literals that hold database names.
_TEMPLATES = [
    "SELECT * FROM {s}.user",
    "SELECT * FROM shop.{s}",
    "USE {s}",
    "SHOW TABLES FROM {s}",
    "SHOW COLUMNS FROM t IN {s}",
    "DESCRIBE {s}.t",
    "SELECT * FROM information_schema.tables WHERE table_schema = {s}",
    "SELECT * FROM shop.t WHERE name = {s} AND id = {n}",
    "INSERT INTO {s}.t VALUES ({n}, {s})",
    "INSERT INTO shop.t SELECT * FROM {s}.t",
    "SELECT * FROM t AS {s}",
    "SELECT {s}.b FROM t",
    "SELECT * FROM shop.t1 JOIN {s}.t2 ON 1",
    "SELECT * FROM t1 WHERE a IN (SELECT b FROM {s}.t2 WHERE c = {s})",
    "WITH c AS (SELECT * FROM {s}.t) SELECT * FROM c",
    "EXECUTE IMMEDIATE {s}",
    "PREPARE s FROM {s}",
    "DO {s}",
    "SELECT * FROM shop.t WHERE x > NOW() - INTERVAL {s} DAY",
    "SELECT JSON_EXTRACT(c, {s}) FROM shop.t",
    "SELECT * FROM shop.t LIMIT {n}",
    "SELECT {n}.t FROM shop.t",
    "SELECT * FROM {n}.t",
    "CALL {s}.p({s})",
    "SELECT * FROM shop.t WHERE a = {s} /*! AND b IN (SELECT 1 FROM mysql.user) */",
    "SELECT * FROM shop.t WHERE a = {s} /*! AND b = {s} */",
    "SELECT * FROM shop.t WHERE a = {s}; SELECT * FROM {s}.t",
    "SELECT * FROM {s}.t; USE mysql",
    "SELECT CONCAT({s}, '.', {s}) FROM shop.t",
    "SELECT * FROM shop.t WHERE a LIKE {s} ESCAPE {s}",
    "LOAD DATA INFILE {s} INTO TABLE {s}.t",
    "SELECT * FROM shop.t INTO OUTFILE {s}",
    "SELECT * FROM `shop`.`t` WHERE `a` = {s}",
]
_NAMES = ["shop", "mysql", "SHOP", "information_schema", "shop_archive", "sys", "x y", ""]
_STRINGS = [
    *(f"'{name}'" for name in _NAMES),
    *(f'"{name}"' for name in _NAMES),
    "'mysql.user'", "'shop.t'", "'it''s'", "'a\\'b'", "'$.mysql.user'", "'1 day'",
    "'SELECT * FROM mysql.user'", "'SELECT * FROM shop.t'", "_utf8mb4'mysql'", "X'6d7973716c'",
]  # fmt: skip
_NUMBERS = ["1", "42", "3.5", "0", "1e5"]


def _templated(rng: random.Random) -> list[str]:
    texts = []
    for template in _TEMPLATES:
        for _ in range(12):
            text = template
            while "{s}" in text or "{n}" in text:
                text = text.replace("{s}", rng.choice(_STRINGS), 1)
                text = text.replace("{n}", rng.choice(_NUMBERS), 1)
            texts.append(text)
    return texts


def _literal_variants(sql: str, rng: random.Random) -> list[str]:
    """`sql` with its literals replaced by database names, numbers and SQL."""
    lexed = lex(sql, MY)
    if not isinstance(lexed, Lexed):
        return []
    literals = [token for token in lexed.tokens if token.token_type in LITERAL_TOKEN_TYPES]
    variants = []
    for _ in range(4 if literals else 0):
        pieces, end = [], 0
        for token in literals:
            pieces.append(sql[end : token.start])
            numeric = token.token_type == TokenType.NUMBER
            pieces.append(rng.choice(_NUMBERS if numeric and rng.random() < 0.7 else _STRINGS))
            end = token.end + 1
        pieces.append(sql[end:])
        variants.append("".join(pieces))
    return variants


def _uncached(sql: str, databases: frozenset[str]) -> str | None:
    clear_cache()
    return scope_refusal(sql, databases)


def test_answers_shared_by_fingerprint_equal_the_uncached_ones() -> None:
    rng = random.Random(15)
    texts = _templated(rng)
    for case in OWN_CASES + CORPUS_CASES:
        if case["dialect"] == MY:
            texts.append(case["sql"])
            texts.extend(_literal_variants(case["sql"], rng))
    groups: dict[str, set[str]] = defaultdict(set)
    for sql in texts:
        key = fingerprint(sql, MY)
        if key is not None:
            groups[key].add(sql)
    shared = 0
    for databases in (SHOP, frozenset({"mysql"}), frozenset()):
        expected = {
            sql: _uncached(sql, databases) for members in groups.values() for sql in members
        }
        for key, members in groups.items():
            if len(members) < 2:
                continue
            for first in sorted(members):  # whichever text fills the cache
                clear_cache()
                scope_refusal(first, databases, key)
                for sql in members:
                    assert scope_refusal(sql, databases, key) == expected[sql], (first, sql)
                shared += _checked.cache_info().misses == 1
    assert len(texts) > 1500
    assert shared > 300  # the cache was shared, not just bypassed
