"""The in-band refresh form: exactly one spelling is consumed, anything else that names
the function is refused, and such text never enters the verdict cache."""

from __future__ import annotations

import pytest

from proxy.core.classifying import Classifiers
from proxy.core.refresh import answer_sql, mentions_refresh, refresh_token
from proxy.errors import RefreshRefused

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "sql",
    [
        f"SELECT airlock.refresh('{TOKEN}')",
        f"select AIRLOCK.REFRESH( '{TOKEN}' );",
        f"  SELECT airlock . refresh('{TOKEN}')\n",
    ],
)
def test_the_form_gives_its_token(sql: str) -> None:
    assert mentions_refresh(sql)
    assert refresh_token(sql) == TOKEN


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT airlock.refresh($1)",
        "SELECT airlock.refresh(?)",
        "SELECT airlock.refresh(%s)",
        "SELECT airlock.refresh('')",
        f"SELECT 1; SELECT airlock.refresh('{TOKEN}')",
        f"SELECT airlock.refresh('{TOKEN}'), 1",
        f'SELECT "airlock"."refresh"(\'{TOKEN}\')',
        f"SELECT `airlock`.`refresh`('{TOKEN}')",
        f"SELECT 1 /* airlock.refresh('{TOKEN}') */",
        f"SELECT airlock.refresh('{TOKEN}') FROM t",  # noqa: S608 (a fixed test string)
        f"SELECT airlock/**/./* x */refresh('{TOKEN}')",
        f"SELECT airlock -- x\n.refresh('{TOKEN}')",
        f"SELECT airlock.refresh('{TOKEN}' || 'x')",
    ],
)
def test_anything_else_naming_the_function_is_refused(sql: str) -> None:
    assert mentions_refresh(sql)
    with pytest.raises(RefreshRefused) as refused:
        refresh_token(sql)
    assert TOKEN not in refused.value.message
    assert "malformed token refresh" in refused.value.message


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1", "SELECT * FROM airlock_refresh_log", "SELECT refresh FROM airlock", ""],
)
def test_other_statements_are_not_refreshes(sql: str) -> None:
    assert not mentions_refresh(sql)


def test_the_answer_is_a_constant_row() -> None:
    assert answer_sql(1_750_000_000.0, "token expires") == (
        "SELECT '2025-06-15T15:06:40Z' AS ends_at, 'token expires' AS ends_because"
    )


async def test_text_naming_the_function_is_never_cached() -> None:
    classifiers = Classifiers()
    try:
        for dialect in ("postgres", "mysql"):
            sql = f"SELECT airlock.refresh('{TOKEN}')"
            await classifiers.classify(sql, dialect, "s")
            assert classifiers.cached(dialect).lookup(sql) is None
            await classifiers.classify("SELECT 1", dialect, "s")
            assert classifiers.cached(dialect).lookup("SELECT 1") is not None
    finally:
        classifiers.close()
