"""policy.scope: which databases a MySQL statement reaches, against those exposed."""

from __future__ import annotations

import pytest

from policy.scope import scope_refusal

SHOP = frozenset({"shop", "shop_archive"})


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
    scope_refusal.cache_clear()
    for _ in range(3):
        scope_refusal("SELECT * FROM mysql.user", SHOP)
    assert scope_refusal.cache_info().hits == 2
