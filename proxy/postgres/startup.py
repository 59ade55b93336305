"""PostgreSQL startup parameters as the statements they amount to.

A startup parameter sets a server setting just as `SET name = value` does, so the
login judges each one it would pass on as that SET, with the session's classifier
and rules. This module is the pure part: which settings a StartupMessage asks for
(its own parameters, and `-c name=value` in `options`, read as the server reads them:
postgres.c `pg_split_opts` and `process_postgres_switches`), and the SET that is
equivalent to each.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Parameters that describe the connection, not a setting.
CONNECTION_PARAMETERS = frozenset({"user", "database", "replication", "options"})


@dataclass(frozen=True, slots=True)
class StartupSetting:
    """One setting a client asked for at startup."""

    name: str  # lower case, '-' read as '_' (as the server does)
    value: str
    #: Where it came from: the parameter's name as sent, or "options" for `-c` there.
    source: str


@dataclass(frozen=True, slots=True)
class StartupSettings:
    settings: tuple[StartupSetting, ...]
    #: `options` words that are not `-c name=value` (other server switches).
    other_options: tuple[str, ...]


def split_options(options: str) -> list[str]:
    """`options` split as the server does: on whitespace, a backslash taking the next
    character literally (pg_split_opts)."""
    words: list[str] = []
    word: list[str] = []
    in_word = False
    escaped = False
    for char in options:
        if escaped:
            word.append(char)
            escaped = False
        elif char == "\\":
            escaped = in_word = True
        elif char.isspace() and char in " \t\n\r\f\v":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        else:
            word.append(char)
            in_word = True
    if escaped or in_word:
        words.append("".join(word))
    return words


def _setting(assignment: str) -> tuple[str, str] | None:
    """`name=value` as (name, value), the name as the server reads it (ParseLongOption)."""
    name, equals, value = assignment.partition("=")
    if not equals or not name:
        return None
    return name.replace("-", "_").lower(), value


def startup_settings(parameters: dict[str, str]) -> StartupSettings:
    """Every setting the parameters ask for: `options` first, then the parameters
    themselves, which the server applies after (and so over) `options`."""
    settings: list[StartupSetting] = []
    other: list[str] = []
    words = split_options(parameters.get("options", ""))
    index = 0
    while index < len(words):
        word = words[index]
        assignment: str | None = None
        if word == "-c" and index + 1 < len(words):
            assignment, index = words[index + 1], index + 1
        elif (word.startswith("-c") and len(word) > 2) or (word.startswith("--") and len(word) > 2):
            assignment = word[2:]
        parsed = _setting(assignment) if assignment is not None else None
        if parsed is None:
            other.append(word if assignment is None else f"{word} {assignment}")
        else:
            settings.append(StartupSetting(parsed[0], parsed[1], "options"))
        index += 1
    for name, value in parameters.items():
        if name in CONNECTION_PARAMETERS or name.startswith("_pq_."):
            continue
        settings.append(StartupSetting(name.lower(), value, name))
    return StartupSettings(tuple(settings), tuple(other))


def quote_literal(value: str) -> str:
    """A string constant that reads back as `value` whatever standard_conforming_strings
    says (PostgreSQL's quote_literal)."""
    quoted = value.replace("'", "''")
    if "\\" in value:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"


def split_identifier_list(value: str) -> list[str] | None:
    """A list setting's value (search_path) as its elements, read as the server reads it
    (varlena.c SplitIdentifierString): double quotes keep case and commas, unquoted
    names are folded to lower case. None when the server would refuse the value."""
    elements: list[str] = []
    position, length = 0, len(value)

    def skip_space(at: int) -> int:
        while at < length and value[at].isspace():
            at += 1
        return at

    position = skip_space(position)
    if position == length:
        return elements
    while True:
        if value[position] == '"':
            element: list[str] = []
            position += 1
            while True:
                end = value.find('"', position)
                if end < 0:
                    return None  # unterminated quotes
                element.append(value[position:end])
                if value[end + 1 : end + 2] == '"':
                    element.append('"')
                    position = end + 2
                    continue
                position = end + 1
                break
            elements.append("".join(element))
        else:
            start = position
            while position < length and value[position] != "," and not value[position].isspace():
                position += 1
            if position == start:
                return None  # empty unquoted name
            elements.append(value[start:position].lower())
        position = skip_space(position)
        if position == length:
            return elements
        if value[position] != ",":
            return None  # junk after a name
        position = skip_space(position + 1)
        if position == length:
            return None  # a trailing comma


def equivalent_set(setting: StartupSetting) -> str | None:
    """The SET statement that has the setting's effect; None when the server would refuse
    the value anyway. search_path lists its elements one literal each (the server quotes
    each as a name), so `SET search_path = 'a, b'` (one schema) is not what is judged for
    the parameter `a, b` (two)."""
    if setting.name == "search_path":
        elements = split_identifier_list(setting.value)
        if elements is None:
            return None
        values = ", ".join(quote_literal(e) for e in elements) if elements else "''"
        return f"SET search_path = {values}"
    return f"SET {setting.name} = {quote_literal(setting.value)}"
