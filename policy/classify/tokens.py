"""Reading checked tokens: bare words, statement and list boundaries, brackets, and names
as the server resolves them. Shared by the prechecks and every statement handler."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlglot.tokenizer_core import Token, TokenType

from policy.classify.lexers import QUOTED_TOKEN_TYPES


def split_statements(tokens: Sequence[Token]) -> list[list[Token]]:
    """The statements of a text: its tokens split at `;`, empty statements left out."""
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type is TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return [statement for statement in statements if statement]


_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def word_of(token: Token | None) -> str:
    """The token's text in upper case when it is a bare word (keyword or name), else "".

    sqlglot makes one token of a few keyword pairs ("LOCK TABLES", "GROUP BY"): those come
    back as their words joined by one space.
    """
    if token is None or token.token_type in QUOTED_TOKEN_TYPES:
        return ""
    text = token.text
    if _BARE_WORD.fullmatch(text):
        return text.upper()
    parts = text.split()
    if len(parts) > 1 and all(_BARE_WORD.fullmatch(part) for part in parts):
        return " ".join(parts).upper()
    return ""


def words_of(tokens: Sequence[Token]) -> list[str]:
    return [word_of(token) for token in tokens]


def top_level_split(tokens: Sequence[Token], separator: TokenType) -> list[list[Token]]:
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


def top_level_word(tokens: Sequence[Token], word: str) -> int:
    """Index of the first bare `word` outside brackets, or -1."""
    depth = 0
    for index, token in enumerate(tokens):
        kind = token.token_type
        if kind in (TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE):
            depth += 1
        elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE):
            depth -= 1
        elif depth == 0 and word_of(token) == word:
            return index
    return -1


def closing_paren(tokens: Sequence[Token], opening: int) -> int:
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


_UNICODE_ESCAPE = re.compile(r"\\(?:\\|([0-9A-Fa-f]{4})|\+([0-9A-Fa-f]{6}))")


def name_at(sql: str, tokens: Sequence[Token], index: int) -> tuple[str | None, int]:
    """The name that starts at tokens[index] as the server resolves it, and how many tokens
    it takes: a bare word folded to lower case, a "quoted" name as written, a U&"..." name
    with its escapes resolved. (None, 1) when it is none of these or cannot be resolved."""
    token = tokens[index] if index < len(tokens) else None
    if token is None:
        return None, 1
    following = tokens[index + 1] if index + 1 < len(tokens) else None
    after = tokens[index + 2] if index + 2 < len(tokens) else None
    if (
        word_of(token) == "U"
        and following is not None
        and following.token_type is TokenType.AMP
        and after is not None
        and after.token_type is TokenType.IDENTIFIER
        and following.start == token.end + 1
        and after.start == following.end + 1
    ):
        if index + 3 < len(tokens) and word_of(tokens[index + 3]) == "UESCAPE":
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
    word = word_of(token)
    return (word.lower() if word and " " not in word else None), 1
