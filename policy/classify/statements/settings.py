"""Session settings: SET, RESET, DISCARD, SHOW, and PostgreSQL's set_config(...). A SET is
read only for a setting on the dialect's allowlist, to a plain constant, and never to a
value that would change how the server lexes statements (character set,
standard_conforming_strings, sql_mode), what names resolve to (search_path) or who the
session acts as (ROLE, SESSION AUTHORIZATION). `set_config('name', 'value', is_local)` is
the SET it amounts to, judged the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sqlglot.tokenizer_core import Token, TokenType

from policy.classify.data import mysql as mysql_data
from policy.classify.data import postgres as postgres_data
from policy.classify.statements.queries import expression
from policy.classify.statements.transactions import transaction_modes
from policy.classify.tokens import closing_paren, top_level_split, word_of, words_of
from policy.classify.verdicts import (
    ADMIN,
    LEXER_REASON,
    READ,
    UNKNOWN,
    WRITE,
    Finding,
    Verdict,
    verdict_of,
)

if TYPE_CHECKING:
    from policy.classify.context import Context, Handler

_SIMPLE_VALUE_TYPES = frozenset(
    {TokenType.STRING, TokenType.NUMBER, TokenType.IDENTIFIER, TokenType.NATIONAL_STRING}
)


def simple_values(tokens: Sequence[Token]) -> list[str] | None:
    """A SET value list: strings, numbers, names, signed numbers; else None.

    Bare names come back in lower case (the server folds them), quoted ones as written.
    """
    values: list[str] = []
    for part in top_level_split(tokens, TokenType.COMMA):
        if len(part) == 2 and part[0].token_type in (TokenType.DASH, TokenType.PLUS):
            part = part[1:]
        if len(part) != 1:
            return None
        token = part[0]
        if token.token_type in _SIMPLE_VALUE_TYPES:
            values.append(token.text)
        elif word_of(token):
            values.append(token.text.lower())
        else:
            return None
    return values


def set_postgres(context: Context, tokens: list[Token]) -> Verdict:
    rest = tokens[1:]
    words = words_of(rest)
    if words[:1] in (["SESSION"], ["LOCAL"]) and words[1:2] not in (
        ["AUTHORIZATION"],
        ["CHARACTERISTICS"],
    ):
        rest, words = rest[1:], words[1:]
    if not rest:
        return verdict_of(UNKNOWN, "SET without a setting")
    head = words[0]
    if head == "ROLE" or words[:2] == ["SESSION", "AUTHORIZATION"]:
        return verdict_of(
            ADMIN,
            f"SET {' '.join(words[:2]) if head != 'ROLE' else 'ROLE'} "
            "changes the identity the session acts as",
        )
    if head == "TRANSACTION":
        return transaction_modes(rest[1:], "SET TRANSACTION", snapshot=True)
    if words[:4] == ["SESSION", "CHARACTERISTICS", "AS", "TRANSACTION"]:
        return transaction_modes(rest[4:], "SET SESSION CHARACTERISTICS")
    if head == "CONSTRAINTS":
        return verdict_of(READ, "SET CONSTRAINTS only changes when this transaction checks them")
    if words[:2] == ["XML", "OPTION"]:
        return verdict_of(READ, "SET XML OPTION is an allowlisted session setting")
    if words[:2] == ["TIME", "ZONE"]:
        name, value_tokens = "timezone", rest[2:]
        if words[2:3] == ["INTERVAL"]:
            return verdict_of(READ, "SET TIME ZONE is an allowlisted session setting")
    elif head in ("NAMES", "SCHEMA"):
        name = "client_encoding" if head == "NAMES" else "search_path"
        value_tokens = rest[1:]
    else:
        if len(rest) < 2 or not head:
            return verdict_of(UNKNOWN, "SET statement not understood")
        if rest[1].token_type is TokenType.DOT:
            return verdict_of(ADMIN, "SET of a custom (extension or application) setting")
        name = rest[0].text.lower()
        if words[1:2] != ["TO"] and rest[1].token_type is not TokenType.EQ:
            return verdict_of(UNKNOWN, "SET statement not understood")
        value_tokens = rest[2:]
    return _postgres_setting(f"SET {name}", name, simple_values(value_tokens))


def _postgres_setting(
    what: str, name: str, values: list[str] | None, *, keyword_default: bool = True
) -> Verdict:
    """The verdict for setting `name` to `values` (None: not plain constants), said of
    `what` ("SET timezone"). With `keyword_default`, values of just "default" are SET's
    keyword DEFAULT, a reset; otherwise they are the text "default"."""
    if name not in postgres_data.SETTINGS:
        return verdict_of(ADMIN, f"{what} changes a setting that is not on the allowlist")
    if not values:
        return verdict_of(UNKNOWN, f"{what} to a value that is not a plain constant")
    problem = _postgres_setting_problem(name, values, keyword_default)
    if problem is not None:
        return verdict_of(ADMIN, problem)
    return verdict_of(READ, f"{what} is an allowlisted session setting")


#: The allowlisted settings whose value `_postgres_setting_problem` checks.
_VALUE_CHECKED = frozenset({"client_encoding", "standard_conforming_strings", "search_path"})


def _postgres_setting_problem(name: str, values: list[str], keyword_default: bool) -> str | None:
    lowered = [value.lower() for value in values]
    if keyword_default and lowered == ["default"]:
        return None
    if name == "client_encoding":
        if (
            len(values) != 1
            or re.sub(r"[^a-z0-9]", "", lowered[0]) not in postgres_data.UTF8_ENCODINGS
        ):
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


# A setting's value as set_config's text argument gives it: the server splits list
# settings (search_path) at commas, "quoted" elements as written, bare ones folded to lower
# case (SplitIdentifierString).
_LIST_ELEMENT = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([^\s,"]+))\s*(,|$)')


def _set_config_values(name: str, text: str) -> list[str] | None:
    """The values SET would be given for set_config(name, text, ...); None when unsure."""
    if name != "search_path":
        return [text]  # one value, as a quoted SET value is
    values: list[str] = []
    pos = 0
    while pos < len(text):
        element = _LIST_ELEMENT.match(text, pos)
        if element is None:
            return None
        quoted, bare, _ = element.groups()
        values.append(quoted.replace('""', '"') if quoted is not None else bare.lower())
        pos = element.end()
    return values


def _plain_string(sql: str, tokens: Sequence[Token]) -> str | None:
    """The value of a lone standard '...' string literal, else None."""
    if len(tokens) != 1 or tokens[0].token_type is not TokenType.STRING:
        return None
    raw = sql[tokens[0].start : tokens[0].end + 1]
    if len(raw) < 2 or raw[0] != "'" or raw[-1] != "'":
        return None
    return raw[1:-1].replace("''", "'")


def set_config_findings(sql: str, tokens: Sequence[Token], index: int) -> list[Finding] | None:
    """set_config('name', 'value', is_local) at tokens[index], judged as the SET of that
    setting would be; None when its arguments are not two plain strings and a third
    argument (the caller then treats it as an unknown change of any setting)."""
    close = closing_paren(tokens, index + 1)
    if close < 0:
        return None
    arguments = top_level_split(tokens[index + 2 : close], TokenType.COMMA)
    if len(arguments) != 3 or not arguments[2]:
        return None
    name = _plain_string(sql, arguments[0])
    if name is None or "." in name:
        return None
    name = name.lower()
    text = _plain_string(sql, arguments[1])
    if text is None and name in postgres_data.SETTINGS and name not in _VALUE_CHECKED:
        # set_config('jit', $1, false) (asyncpg's introspection): any value of this setting
        # is harmless, and the expression that computes it is checked as part of the query.
        return []
    values = _set_config_values(name, text) if text is not None else None
    verdict = _postgres_setting(f"set_config of {name}", name, values, keyword_default=False)
    if verdict.is_read:
        return []
    return [(verdict.statement_class, reason) for reason in verdict.reasons]


def set_mysql(context: Context, tokens: list[Token]) -> Verdict:
    words = words_of(tokens[1:])
    if words[:1] in (["PASSWORD"], ["ROLE"], ["DEFAULT"], ["RESOURCE"]):
        return verdict_of(ADMIN, f"SET {words[0]} changes privileges or server resources")
    scope = words[0] if words and words[0] in mysql_data.SCOPES else ""
    if words[1 if scope else 0 : 2 if scope else 1] == ["TRANSACTION"]:
        if mysql_data.SCOPES.get(scope) is ADMIN:
            return verdict_of(ADMIN, f"SET {scope} TRANSACTION changes a server-wide default")
        return transaction_modes(tokens[3 if scope else 2 :], "SET TRANSACTION")
    verdicts = [
        _mysql_set_item(context, item) for item in top_level_split(tokens[1:], TokenType.COMMA)
    ]
    blocking = [verdict for verdict in verdicts if not verdict.is_read]
    if not blocking:
        return verdict_of(READ, *dict.fromkeys(r for v in verdicts for r in v.reasons))
    classes = {verdict.statement_class for verdict in blocking}
    return Verdict(
        classes.pop() if len(classes) == 1 else UNKNOWN,
        tuple(dict.fromkeys(r for v in blocking for r in v.reasons)),
    )


def _mysql_set_item(context: Context, item: list[Token]) -> Verdict:
    words = words_of(item)
    if not item:
        return verdict_of(UNKNOWN, "SET statement not understood")
    if words[0] == "NAMES" or words[:2] == ["CHARACTER", "SET"] or words[0] == "CHARSET":
        value_at = 1 if words[0] != "CHARACTER" else 2
        charset = item[value_at].text.lower() if len(item) > value_at else ""
        collate = words[value_at + 1 : value_at + 2] == ["COLLATE"]
        collation = item[value_at + 2].text.lower() if collate and len(item) > value_at + 2 else ""
        expected = value_at + (3 if collate else 1)
        if (
            len(item) == expected
            and (charset in mysql_data.CHARSETS or charset == "default")
            and (not collate or collation.split("_")[0] in mysql_data.CHARSETS)
        ):
            return verdict_of(READ, f"SET {words[0]} to a lexer-safe character set")
        return verdict_of(
            ADMIN,
            "changing the character set to anything but utf8mb4/utf8/ascii/latin1 would "
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
        return verdict_of(UNKNOWN, "SET statement not understood")
    target, value = item[:assign], item[assign + 1 :]
    kinds = [token.token_type for token in target]
    if kinds[0] is TokenType.PARAMETER:
        if len(target) != 2:
            return verdict_of(UNKNOWN, "SET of a user variable not understood")
        verdict = expression(context, value)
        if verdict.is_read:
            return verdict_of(READ, "SET of a user variable only changes this session")
        return verdict
    scope = "SESSION"
    if kinds[0] is TokenType.SESSION_PARAMETER:
        if len(target) == 4 and kinds[2] is TokenType.DOT:
            scope = word_of(target[1])
        elif len(target) != 2:
            return verdict_of(UNKNOWN, "SET of a system variable not understood")
        name_token = target[-1]
    else:
        if len(target) == 2:
            scope = word_of(target[0])
        elif len(target) != 1:
            return verdict_of(UNKNOWN, "SET of a system variable not understood")
        name_token = target[-1]
    if scope not in mysql_data.SCOPES or not word_of(name_token):
        return verdict_of(UNKNOWN, "SET of a system variable not understood")
    if mysql_data.SCOPES[scope] is ADMIN:
        return verdict_of(ADMIN, f"SET {scope} changes a server-wide setting")
    name = name_token.text.lower()
    if name not in mysql_data.SETTINGS:
        return verdict_of(ADMIN, f"SET {name} changes a setting that is not on the allowlist")
    values = simple_values(value)
    if name in mysql_data.CHECKED_SETTINGS:
        problem = _mysql_setting_problem(name, values)
        if problem is not None:
            return verdict_of(ADMIN, problem)
    elif values is None:
        verdict = expression(context, value)
        if not verdict.is_read:
            return verdict
    return verdict_of(READ, f"SET {name} is an allowlisted session setting")


def _mysql_setting_problem(name: str, values: list[str] | None) -> str | None:
    if values is None or len(values) != 1:
        return f"SET {name} to a value that is not a plain constant {LEXER_REASON}"
    value = values[0].lower()
    if value == "default":
        return None
    if name == "sql_mode":
        modes = {mode.strip() for mode in value.split(",")} - {""}
        if modes <= mysql_data.SAFE_SQL_MODES:
            return None
        return (
            "SET sql_mode with modes that change how statements are lexed (ANSI_QUOTES, ...) "
            + LEXER_REASON
        )
    if name == "collation_connection":
        if value.split("_")[0] in mysql_data.CHARSETS:
            return None
    elif value in mysql_data.CHARSETS or (
        name == "character_set_results" and value in ("binary", "null")
    ):
        return None
    return f"SET {name} to anything but utf8mb4/utf8/ascii/latin1 {LEXER_REASON}"


def reset_postgres(context: Context, tokens: list[Token]) -> Verdict:
    words = words_of(tokens[1:])
    if words == ["ALL"]:
        return verdict_of(ADMIN, "RESET ALL undoes the settings the gateway relies on")
    if words[:1] == ["ROLE"] or words[:2] == ["SESSION", "AUTHORIZATION"]:
        return verdict_of(ADMIN, "RESET changes the identity the session acts as")
    name = "timezone" if words == ["TIME", "ZONE"] else (words[0].lower() if words else "")
    if len(words) in (1, 2) and name in postgres_data.SETTINGS:
        return verdict_of(READ, f"RESET {name} is an allowlisted session setting")
    return verdict_of(ADMIN, "RESET of a setting that is not on the allowlist")


def discard(context: Context, tokens: list[Token]) -> Verdict:
    words = words_of(tokens[1:])
    if words in (["PLANS"], ["SEQUENCES"]):
        return verdict_of(READ, f"DISCARD {words[0]} only drops this session's caches")
    if words in (["TEMP"], ["TEMPORARY"]):
        return verdict_of(WRITE, "DISCARD TEMP drops temporary tables")
    return verdict_of(ADMIN, "DISCARD ALL resets the session, including its role and settings")


def show(context: Context, tokens: list[Token]) -> Verdict:
    if not any(token.token_type is TokenType.L_PAREN for token in tokens):
        return verdict_of(READ, "SHOW reads a setting or the catalog")
    words = words_of(tokens)
    if "WHERE" in words:
        condition = tokens[words.index("WHERE") + 1 :]
        if not any(
            token.token_type is TokenType.L_PAREN for token in tokens[: words.index("WHERE")]
        ):
            verdict = expression(context, condition)
            if verdict.is_read:
                return verdict_of(READ, "SHOW reads a setting or the catalog")
            return verdict
    return verdict_of(UNKNOWN, "SHOW with parentheses not understood")


COMMON: Mapping[str, Handler | Verdict] = {"SHOW": show}
POSTGRES: Mapping[str, Handler | Verdict] = {
    "SET": set_postgres,
    "RESET": reset_postgres,
    "DISCARD": discard,
}
MYSQL: Mapping[str, Handler | Verdict] = {"SET": set_mysql}
