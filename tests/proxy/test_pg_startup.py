"""Startup settings read as the server reads them, and the SET each amounts to."""

from __future__ import annotations

import pytest

from proxy.postgres.startup import (
    StartupSetting,
    equivalent_set,
    quote_literal,
    split_identifier_list,
    split_options,
    startup_settings,
)


def test_options_split_on_spaces_with_backslash_escapes() -> None:
    assert split_options(r"-c search_path=a\ b  -c x=1\\ ") == [
        "-c",
        "search_path=a b",
        "-c",
        "x=1\\",
    ]
    assert split_options("") == []


def test_settings_from_options_then_parameters() -> None:
    found = startup_settings(
        {
            "user": "agent",
            "options": "-c search_path=a --lock-timeout=5s -cstatement_timeout=1 -S 1000",
            "Search_Path": "b",
            "_pq_.x": "1",
        }
    )
    assert [(s.name, s.value, s.source) for s in found.settings] == [
        ("search_path", "a", "options"),
        ("lock_timeout", "5s", "options"),
        ("statement_timeout", "1", "options"),
        ("search_path", "b", "Search_Path"),
    ]
    assert found.other_options == ("-S", "1000")


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("abc", "'abc'"), ("it's", "'it''s'"), ("a\\'b", "E'a\\\\''b'"), ("", "''")],
)
def test_quote_literal(value: str, quoted: str) -> None:
    assert quote_literal(value) == quoted


@pytest.mark.parametrize(
    ("value", "elements"),
    [
        ("pg_catalog, public", ["pg_catalog", "public"]),
        ('  PUBLIC ,"My ""x"", y"', ["public", 'My "x", y']),
        ("", []),
        ("a,", None),
        ("a b", None),
        ('"open', None),
        (",a", None),
    ],
)
def test_identifier_lists_as_the_server_splits_them(value: str, elements: list[str] | None) -> None:
    assert split_identifier_list(value) == elements


def test_equivalent_set() -> None:
    assert (
        equivalent_set(StartupSetting("search_path", 'pg_catalog, "Evil\'s"', "options"))
        == "SET search_path = 'pg_catalog', 'Evil''s'"
    )
    assert equivalent_set(StartupSetting("search_path", "a,,b", "search_path")) is None
    assert equivalent_set(StartupSetting("timezone", "UTC", "TimeZone")) == "SET timezone = 'UTC'"
