"""Text from agents and tokens, made safe to show to a person.

SQL, bound parameters, reasons and names come from agents (or their identity
provider), and whoever reads them decides on what they read: the approvals CLI, the
replay and the web page. Control, bidi and similar characters are shown escaped
(`\\x1b`, `\\u202e`), so a right-to-left override cannot reorder a statement, a
zero-width character cannot hide one, and an escape sequence cannot redraw a
terminal. One function for every place that shows such text.
"""

from __future__ import annotations

import unicodedata

# Control, format (bidi overrides, zero-width), surrogate, private-use, unassigned,
# and line/paragraph separators: anything that can move the cursor or hide text.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


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
