"""The gate's scans of SQL text, in pure Python: the fallback of sqlscan.pyx.

setup.py compiles sqlscan.pyx (the same two functions, as one-pass scans in C) into an
extension of this module's name, which Python imports before this file; where nothing
was compiled (no C compiler, or AIRLOCK_PURE=1 at install), this file is the module. Here
they are the regular expressions the C scans replaced: tests/policy/test_sqlscan.py
holds both versions to its own copy of them, on the same edge cases and random texts.

`fast_fingerprint` is policy.fingerprint's fast path (policy/fingerprint.py says why it
is safe, and when it gives up); `names_statements` says whether a text may create or
drop prepared statements (PREPARE, DEALLOCATE, DISCARD, as any substring in any case).
"""

from __future__ import annotations

import operator
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_ \t\n\r'=<>!(),.;*+:\[\]%|]*", re.ASCII)
# A plain '...' string, replaced by \x01; one glued to what is around it ends the path.
_STRING = re.compile(r"'[^']*'", re.ASCII)
_STRING_CONTEXT = re.compile(
    r"[A-Za-z0-9_.]\x01|\x01[A-Za-z0-9_.\x01]|\x01[ \t\n\r]+\x01", re.ASCII
)
# A free-standing number, replaced by \x02.
_NUMBER = re.compile(r"\b[0-9]+(?:\.[0-9]+)?(?![A-Za-z0-9_.\x01])", re.ASCII)
# SET and PREPARE statements, and set_config(...), read their literals' values: no key.
_LITERAL_SENSITIVE = re.compile(r"\b(?:set|prepare|set_config)\b", re.ASCII)
_NAMES_STATEMENTS = re.compile("PREPARE|DEALLOCATE|DISCARD", re.IGNORECASE)


def names_statements(sql: str) -> bool:
    """Whether `sql` mentions PREPARE, DEALLOCATE or DISCARD anywhere, in any case."""
    if not isinstance(sql, str):
        raise TypeError(f"sql must be str, not {type(sql).__name__}")
    return _NAMES_STATEMENTS.search(sql) is not None


def fast_fingerprint(sql: str, prefix: bytes, max_opens: int) -> str | None:
    """`prefix` + the fast-path key of `sql`, or None where the fast path does not apply.

    It does not apply either where `sql` has more than `max_opens` opening brackets
    (inside strings too), so that a key also says the classifier's depth cap holds.
    """
    if not isinstance(sql, str):
        raise TypeError(f"sql must be str, not {type(sql).__name__}")
    if not isinstance(prefix, bytes):
        raise TypeError(f"prefix must be bytes, not {type(prefix).__name__}")
    max_opens = operator.index(max_opens)
    if not sql.isascii() or not _ALPHABET.fullmatch(sql):
        return None
    if sql.count("(") + sql.count("[") > max_opens:
        return None
    stripped = sql
    if "'" in sql:
        stripped = _STRING.sub("\x01", sql)
        if "'" in stripped or _STRING_CONTEXT.search(stripped):
            return None
    lowered = stripped.lower()
    if ("set" in lowered or "prepare" in lowered) and _LITERAL_SENSITIVE.search(lowered):
        return None
    stripped = _NUMBER.sub("\x02", stripped)
    return prefix.decode("ascii") + " ".join(stripped.split())
