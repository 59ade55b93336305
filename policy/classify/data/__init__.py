"""What each server allows, as data: function allowlists, harmless settings, type names,
operators, EXPLAIN options, grammar words. Plain Python constants, built once at import.

`common` holds what both servers share; `postgres` and `mysql` what is one server's own.
The dialect classes (`policy.classify.dialects`) and the statement handlers read these;
nothing here decides anything.
"""

from __future__ import annotations


def names(text: str) -> frozenset[str]:
    """The whitespace-separated words of `text`, as a set."""
    return frozenset(text.split())
