"""Text from agents and tokens, made safe to show to a person.

SQL, bound parameters, reasons and names come from agents (or their identity
provider), and whoever reads them decides on what they read: the approvals CLI, the
replay and the web page. Control, bidi and similar characters are shown escaped
(`\\x1b`, `\\u202e`), so a right-to-left override cannot reorder a statement, a
zero-width character cannot hide one, and an escape sequence cannot redraw a
terminal. One function for every place that shows such text, and the few formats
(one-line SQL, ages, bound parameters) that the CLIs, the replay and the web page share.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

# Control, format (bidi overrides, zero-width), surrogate, private-use, unassigned,
# and line/paragraph separators: anything that can move the cursor or hide text.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

SQL_COLUMN_CHARS = 60
PARAMETER_VALUE_CHARS = 200
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def printable(text: str, *, multiline: bool = False) -> str:
    """`text` with control, bidi and similar characters escaped (`\\x1b`, `\\u202e`);
    with `multiline`, line feeds are kept and tabs become four spaces."""
    pieces: list[str] = []
    for char in text:
        if multiline and char == "\n":
            pieces.append(char)
        elif char == "\t":
            pieces.append("    " if multiline else " ")
        elif unicodedata.category(char) in _UNSAFE_CATEGORIES:
            pieces.append(char.encode("unicode_escape").decode("ascii"))
        else:
            pieces.append(char)
    return "".join(pieces)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def field_text(value: Any) -> str:
    """A JSON field as printable one-line text ("" for null or missing)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = json.dumps(value)
    return printable(value)


def one_line_sql(sql: str, width: int = SQL_COLUMN_CHARS) -> str:
    """SQL with whitespace runs collapsed, escaped and clipped for one table cell."""
    return clip(printable(" ".join(sql.split())), width)


def format_age(seconds: float) -> str:
    """42s, 5m, 2h, 3d: the largest whole unit; clock skew into the future reads 0s."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        return f"{whole // 3600}h"
    return f"{whole // 86400}d"


def format_duration(seconds: float) -> str:
    """A duration as parse_duration reads it back: 1h30m, 10m, 45s, 1.5s."""
    if seconds < 60:
        return f"{seconds:g}s"
    parts, rest = [], round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_parameter(index: int, parameter: Any) -> str:
    """`$1 = 42 (int4)`, `$2 = 'it''s' (text)`, `$3 = NULL (text)`.

    Values other than plain numbers are quoted as SQL literals, so an empty string, a
    string 'NULL' and a null cannot be mistaken for one another.
    """
    if not isinstance(parameter, dict):
        return f"${index} = {field_text(parameter)}"
    value = parameter.get("value")
    if value is None:
        shown = "NULL"
    else:
        text = value if isinstance(value, str) else json.dumps(value)
        literal = text if _NUMBER.fullmatch(text) else "'" + text.replace("'", "''") + "'"
        shown = printable(literal)
        if len(shown) > PARAMETER_VALUE_CHARS:
            shown = (
                shown[:PARAMETER_VALUE_CHARS] + f"... ({len(text)} chars in all; --json shows it)"
            )
    type_name = field_text(parameter.get("type"))
    return f"${index} = {shown}" + (f" ({type_name})" if type_name else "")


def preview_lines(preview: Any) -> list[str]:
    """A request's impact preview (API `preview`) as lines of plain text, unescaped: the
    CLI prints them through `printable`, the web page through its own escaping."""
    if not isinstance(preview, dict):
        return []
    if preview.get("state") == "running":
        return ["running..."]
    lines: list[str] = []
    if preview.get("error") is not None:
        lines.append(f"not available: {field_text(preview['error'])}")
    explain = preview.get("explain")
    if isinstance(explain, dict):
        if explain.get("error") is not None:
            lines.append(f"plan: not available: {field_text(explain['error'])}")
        else:
            estimate = explain.get("estimated_rows")
            lines.append(f"estimated rows: {'unknown' if estimate is None else estimate}")
            lines.append("plan:")
            lines.extend("  " + line for line in str(explain.get("plan") or "").splitlines())
    dry_run = preview.get("dry_run")
    if isinstance(dry_run, dict):
        if dry_run.get("error") is not None:
            lines.append(f"dry run: not available: {field_text(dry_run['error'])}")
        else:
            lines.append(f"dry run (rolled back): {dry_run.get('rows_affected')} rows affected")
            sample = dry_run.get("sample")
            if isinstance(sample, list) and sample:
                lines.append("rows as the statement leaves them (a sample):")
                lines.extend("  " + json.dumps(row, ensure_ascii=False) for row in sample)
    return lines
