"""Literal-stripped fingerprints of SQL text, and a classifier cache keyed by them.

A fingerprint is a key such that two texts with the same fingerprint get the same verdict
from `policy.classify.classify`. It is the text with the *values* of its number and string
literals taken out, so `... WHERE aid = 12345` and `... WHERE aid = 678` share one key and
one cached verdict. This is safe because `classify` never looks at literal values (it
parses placeholders in their place), except in SET and PREPARE statements and calls of
PostgreSQL's set_config (judged as the SET they amount to), which are never fingerprinted.

Getting a key wrong would let a write reuse a read's verdict, so a key is only made when
the literals are known exactly:

- the fast path: the whole text matches a conservative alphabet (names, whitespace, plain
  numbers, plain '...' strings without backslashes, a little punctuation; no comments, no
  double quotes or backticks, no dollars, no dashes, no slashes, no #, nothing outside
  ASCII), which both of the classifier's lexers read one way only, in either dialect
  (MySQL's backslash escapes, "..." strings, introducers such as _utf8'..' and X'..',
  and executable comments all need a character outside it, or glue a name to the string);
- otherwise the classifier's own checked tokens (`policy.classify.lex`): sqlglot's tokens
  with literal tokens reduced to their type, everything else verbatim, comments included
  (a MySQL `/*! */` or hint changes the verdict);
- otherwise no key (None), and the caller classifies the text.

`CachedClassifier` looks a text up by exact text first (extended-protocol Parse texts repeat
exactly), then by fingerprint. Both maps are bounded LRUs.
"""

from __future__ import annotations

from policy.classify import (
    DIALECTS,
    LITERAL_TOKEN_TYPES,
    MAX_NESTING_DEPTH,
    MAX_STATEMENT_CHARS,
    Lexed,
    Verdict,
    classify,
    lex,
    precheck,
)
from policy.sqlscan import fast_fingerprint

# The fast path, in C: policy/sqlscan.pyx. Its alphabet: no comments (no - / #), no
# double quotes, dollars, backslashes, braces or anything outside ASCII. In it, every '
# opens or closes a plain string, paired left to right exactly as both of the classifier's
# lexers pair them. A string is only taken out where it cannot be anything else: not glued
# to a name, number or dot before it (E'..', B'..', 1'..'), nor to a name, dot or another
# string after it ('a''b' is one string with a quote in it; 'a'\n'b' is one literal in
# PostgreSQL). A number is only taken out when it stands alone: not part of a name (t1),
# not glued to a name, dot or exponent (1a, 1e5). SET and PREPARE statements, and
# set_config(...), read their literals' values: no key for them.
_FAST_PREFIX = {dialect: f"{dialect}\x00F\x00".encode() for dialect in DIALECTS}
_LITERAL_SENSITIVE_WORDS = frozenset({"SET", "PREPARE", "SET_CONFIG"})


def fingerprint(sql: str, dialect: str, *, max_token_chars: int | None = None) -> str | None:
    """A key shared only by texts that `classify` gives the same verdict; None if unsure.

    The fast path costs two passes in C over the characters; the token path costs about
    what lexing for `classify` does. `max_token_chars` skips the token path (None instead) for
    longer texts, for callers that must stay cheap.
    """
    prefix = _FAST_PREFIX.get(dialect)
    if prefix is None:
        return None
    return _keyed(sql, dialect, prefix, max_token_chars)


def _keyed(sql: str, dialect: str, prefix: bytes, max_token_chars: int | None) -> str | None:
    """`fingerprint` in a known dialect (`prefix` is its fast-path key's): the fast path,
    else the token path."""
    if len(sql) <= MAX_STATEMENT_CHARS:
        # A key from the fast path means precheck's caps hold: no NUL, no braces, and
        # no more opening brackets than the depth allowed.
        key = fast_fingerprint(sql, prefix, MAX_NESTING_DEPTH)
        if key is not None:
            return key
    return _slow_fingerprint(sql, dialect, max_token_chars)


def _slow_fingerprint(sql: str, dialect: str, max_token_chars: int | None) -> str | None:
    """`fingerprint` of a text its fast path gave no key."""
    if precheck(sql) is not None:
        return None  # the caps count characters of literals too
    if max_token_chars is not None and len(sql) > max_token_chars:
        return None
    lexed = lex(sql, dialect)
    if not isinstance(lexed, Lexed):
        return None
    return _token_fingerprint(sql, dialect, lexed)


def _token_fingerprint(sql: str, dialect: str, lexed: Lexed) -> str | None:
    parts = [dialect, "T"]
    previous_end = 0
    for token in lexed.tokens:
        gap = sql[previous_end : token.start]
        if gap and (previous_end or not gap.isspace()):
            # Whitespace counts only as "some"; comments stay as written.
            parts.append(" ".join(gap.split()) or " ")
        raw = sql[token.start : token.end + 1]
        if token.token_type in LITERAL_TOKEN_TYPES:
            parts.append(token.token_type.name)
        elif raw.upper() in _LITERAL_SENSITIVE_WORDS:
            return None
        else:
            parts.append(f"{token.token_type.name}:{raw}")
        previous_end = token.end + 1
    tail = sql[previous_end:]
    if tail and not tail.isspace():
        parts.append(" ".join(tail.split()))
    return "\x00".join(parts)


class _Lru:
    """Verdicts by key, least recently used first out; bounded in entries and characters.

    A plain dict keeps insertion order: a hit moves its key to the end by taking it out
    and putting it back, and the first key is the one to evict. While the map is less
    than half full (in entries and in characters) a hit leaves the order alone: nothing is
    evicted before the map has grown past that, and whatever is inserted meanwhile is
    newer than every entry already in; only the order among those entries is insertion's
    rather than last use's. (Taking out and putting back on every hit made the dict
    rebuild itself every few lookups.)
    """

    def __init__(self, max_entries: int, max_chars: int) -> None:
        self._entries: dict[str, Verdict] = {}
        self._chars = 0
        self._max_entries = max_entries
        self._max_chars = max_chars

    def get(self, key: str) -> Verdict | None:
        entries = self._entries
        if 2 * len(entries) <= self._max_entries and 2 * self._chars <= self._max_chars:
            return entries.get(key)
        verdict = entries.pop(key, None)
        if verdict is not None:
            entries[key] = verdict
        return verdict

    def put(self, key: str, verdict: Verdict) -> None:
        entries = self._entries
        if entries.pop(key, None) is not None:
            entries[key] = verdict
            return
        entries[key] = verdict
        self._chars += len(key)
        while len(entries) > self._max_entries or self._chars > self._max_chars:
            evicted = next(iter(entries))
            del entries[evicted]
            self._chars -= len(evicted)

    def clear(self) -> None:
        self._entries.clear()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._entries)


class CachedClassifier:
    """`classify` for one dialect, with verdicts cached by exact text and by fingerprint.

    `lookup` does no parsing, so it can run inline; on a miss the caller classifies
    (perhaps in a worker process) and calls `store`. Texts longer than `max_text_chars`
    are neither fingerprinted nor cached. A text that needs the token path for its
    fingerprint (not the fast path) gets one only up to `max_token_chars`: beyond that
    the token path costs about as much as classifying, and such texts are matched by
    exact text only.
    """

    def __init__(
        self,
        dialect: str,
        *,
        max_entries: int = 10_000,
        max_text_chars: int = 16_384,
        max_token_chars: int = 1_024,
        max_total_chars: int = 8_000_000,
    ) -> None:
        self.dialect = dialect
        self._prefix = _FAST_PREFIX.get(dialect)  # None: not a dialect (no keys at all)
        self.max_text_chars = max_text_chars
        self.max_token_chars = max_token_chars
        self.hits = 0
        self.misses = 0
        self._exact = _Lru(max_entries, max_total_chars)
        self._by_fingerprint = _Lru(max_entries, max_total_chars)
        # The last text looked up and its key: `store` after a miss needs it again.
        self._last_sql = ""
        self._last_key: str | None = None

    def lookup(self, sql: str) -> Verdict | None:
        verdict = self._exact.get(sql)
        if verdict is None:
            key = self._fingerprint(sql)
            if key is not None:
                verdict = self._by_fingerprint.get(key)
        if verdict is None:
            self.misses += 1
        else:
            self.hits += 1
        return verdict

    def store(self, sql: str, verdict: Verdict) -> None:
        """Remember `verdict`, which must be `classify(sql, self.dialect)`."""
        if len(sql) > self.max_text_chars:
            return
        self._exact.put(sql, verdict)
        key = self._fingerprint(sql)
        if key is not None:
            self._by_fingerprint.put(key, verdict)

    def classify(self, sql: str) -> Verdict:
        verdict = self.lookup(sql)
        if verdict is None:
            verdict = classify(sql, self.dialect)
            self.store(sql, verdict)
        return verdict

    def key(self, sql: str) -> str | None:
        """The fingerprint `lookup` and `store` use for `sql` (None: none); free for the
        text just looked up."""
        return self._fingerprint(sql)

    def clear(self) -> None:
        self._exact.clear()
        self._by_fingerprint.clear()
        self._last_sql, self._last_key = "", None

    def __len__(self) -> int:
        return len(self._exact) + len(self._by_fingerprint)

    def _fingerprint(self, sql: str) -> str | None:
        if len(sql) > self.max_text_chars:
            return None
        if sql == self._last_sql:
            return self._last_key
        key = None
        if self._prefix is not None:  # fingerprint(), past its dialect lookup
            key = _keyed(sql, self.dialect, self._prefix, self.max_token_chars)
        self._last_sql, self._last_key = sql, key
        return key
