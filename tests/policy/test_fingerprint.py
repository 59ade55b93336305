"""fingerprint and CachedClassifier.

The property everything rests on: two texts with the same fingerprint get the same verdict
from classify. It is checked over the case tables with their literals varied, over texts
built to fool a naive literal stripper, and over generated texts.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from policy.classify import Lexed, StatementClass, Verdict, classify, lex
from policy.fingerprint import CachedClassifier, _token_fingerprint, fingerprint
from tests.policy.test_classify import CORPUS_CASES, OWN_CASES, literal_variants

PG = "postgres"
MY = "mysql"


def token_key(sql: str, dialect: str) -> str | None:
    lexed = lex(sql, dialect)
    return _token_fingerprint(sql, dialect, lexed) if isinstance(lexed, Lexed) else None


def assert_one_verdict_per_fingerprint(texts: list[tuple[str, str]]) -> int:
    """Groups `texts` by fingerprint; returns how many groups had more than one text."""
    groups: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for sql, dialect in texts:
        key = fingerprint(sql, dialect)
        if key is not None:
            groups[key].add((sql, dialect))
    shared = 0
    for key, members in groups.items():
        verdicts = {classify(sql, dialect) for sql, dialect in members}
        assert len(verdicts) == 1, (key, members, verdicts)
        shared += len(members) > 1
    return shared


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 7;",
        ),
        (
            "SELECT * FROM t WHERE name = 'alice' AND n > 1.5",
            "SELECT * FROM t WHERE name = '' AND n > 0.25",
        ),
        ("select  a\n from t where b in (1, 2)", "select a from t where b in (3,  4)"),
        ("SELECT * FROM t WHERE a = $1", "SELECT * FROM t WHERE a = $2"),
        ("SELECT E'x', 1 -- note", "SELECT E'y\\'z', 99 -- note"),
        ("SELECT $$a$$, 'b''c'", "SELECT $$d; DROP TABLE t$$, 'e'"),
        ("INSERT INTO t VALUES (1, 'a'), (2, 'b')", "INSERT INTO t VALUES (3, 'c'), (4, 'd')"),
    ],
)
def test_texts_differing_only_in_literals_share_a_key(a: str, b: str) -> None:
    assert fingerprint(a, PG) is not None
    assert fingerprint(a, PG) == fingerprint(b, PG)
    assert classify(a, PG) == classify(b, PG)


def test_mysql_keys_strip_literals_too() -> None:
    a = "SELECT * FROM users WHERE id = 42 AND name = 'it\\'s'"
    b = 'SELECT * FROM users WHERE id = 7 AND name = "x"'
    assert fingerprint(a, MY) is not None
    assert fingerprint(a, MY) == fingerprint(b, MY)


def test_the_fast_path_takes_the_pgbench_query_and_keeps_everything_but_literals() -> None:
    key = fingerprint("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", PG)
    assert key == "postgres\x00F\x00SELECT abalance FROM pgbench_accounts WHERE aid = \x02;"
    assert fingerprint("SELECT t1.c2 FROM t1 WHERE x = 'y'", PG) == (
        "postgres\x00F\x00SELECT t1.c2 FROM t1 WHERE x = \x01"
    )


def test_the_fast_path_takes_a_point_select_in_mysql_and_nothing_mysql_reads_otherwise() -> None:
    key = fingerprint("SELECT c FROM sbtest1 WHERE id=5017", MY)
    assert key == "mysql\x00F\x00SELECT c FROM sbtest1 WHERE id=\x02"
    assert fingerprint("SELECT c FROM sbtest1 WHERE id = 'x'", MY) == (
        "mysql\x00F\x00SELECT c FROM sbtest1 WHERE id = \x01"
    )
    # Escapes, double-quoted strings, introducers, hex literals and comments: token path.
    for sql in (
        "SELECT 'it\\'s' FROM t",
        'SELECT "x" FROM t',
        "SELECT _utf8'x' FROM t",
        "SELECT X'41' FROM t",
        "SELECT 1 /*! , 2 */ FROM t",
        "SELECT 1 # c",
        "SELECT `a` FROM t",
    ):
        key = fingerprint(sql, MY)
        assert key is None or not key.startswith("mysql\x00F\x00"), sql


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # A naive stripper merges each pair; the verdicts differ.
        ("SELECT '\\' ; DELETE FROM t; --'", "SELECT 'x'"),
        ("SELECT 'a' ; DELETE FROM t", "SELECT 'a ; DELETE FROM t'"),
        ("SELECT E'\\' ; DELETE FROM t; --'", "SELECT E'x' ; DELETE FROM t; --'"),
        ("SELECT 'x '' y'", "SELECT 'x 'Q' y'"),
        ("SELECT 'a''b'", "SELECT 'a' 'b'"),
        ("SELECT 1a", "SELECT 1 a"),
        ("SELECT t1", "SELECT t 1"),
        ("SELECT 1.5.5", "SELECT 1.5"),
        ("SELECT E'x'", "SELECT 'x'"),
        ("SELECT B'1'", "SELECT 'x'"),
        ("SELECT lower('x')", "SELECT upper('x')"),
        ("SELECT log10(1)", "SELECT log11(1)"),
        ("SELECT $$x$$", "SELECT 'x'"),
        ("SELECT 1 -- x\n, 2", "SELECT 1 -- x, 2"),
        ("SELECT 1 FOR UPDATE", "SELECT 1"),
    ],
)
def test_texts_a_naive_stripper_merges_keep_apart(a: str, b: str) -> None:
    key_a, key_b = fingerprint(a, PG), fingerprint(b, PG)
    assert key_a is None or key_b is None or key_a != key_b


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SELECT 1 /*!50000 , SLEEP(1) */", "SELECT 1 /* 50000 , SLEEP(1) */"),
        ("SELECT 'a\\' ; DELETE FROM t; -- '", "SELECT 'a' ; DELETE FROM t; -- '"),
        ("SELECT /*+ BKA(t) */ 1", "SELECT /*+ SET_VAR(x=1) */ 1"),
        ("SELECT count(*)", "SELECT count (*)"),
        ("SELECT `a`", "SELECT 'a'"),
        ("SELECT 1 # x\n, 2", "SELECT 1 # x, 2"),
    ],
)
def test_mysql_texts_that_must_stay_apart(a: str, b: str) -> None:
    key_a, key_b = fingerprint(a, MY), fingerprint(b, MY)
    assert key_a is None or key_b is None or key_a != key_b


@pytest.mark.parametrize(
    ("sql", "dialect"),
    [
        ("SET client_encoding = 'UTF8'", PG),
        ("SET statement_timeout = 5", PG),
        ("UPDATE t SET a = 1", PG),
        ("PREPARE s FROM 'SELECT 1'", MY),
        ("set names utf8mb4", MY),
        ("SELECT 1 /*!50000 x */", MY),  # refused by the lexer: no key, classify says unknown
        ("SELECT 'unterminated", PG),
        ("SELECT 1\x00", PG),
        ("SELECT " + "(" * 100 + ")" * 100, PG),
        ("x" * 2_000_000, PG),
        ("SELECT 1", "oracle"),
    ],
)
def test_no_key_when_literals_matter_or_the_text_is_refused(sql: str, dialect: str) -> None:
    assert fingerprint(sql, dialect) is None


def test_a_key_never_crosses_dialects() -> None:
    assert fingerprint("SELECT 1", PG) != fingerprint("SELECT 1", MY)


# --------------------------------------------------------------------------- the property


def test_one_verdict_per_fingerprint_over_the_cases_and_their_literal_variants() -> None:
    texts = []
    for case in OWN_CASES + CORPUS_CASES:
        texts.append((case["sql"], case["dialect"]))
        texts.extend(
            (variant, case["dialect"]) for variant in literal_variants(case["sql"], case["dialect"])
        )
    assert assert_one_verdict_per_fingerprint(texts) > 200


_LITERALS = ["1", "42", "3.5", "0", "'a'", "''", "'x y'", "'it''s'", "1e5", ".5", "$$z$$"]
_PIECES = [
    "SELECT", "FROM", "WHERE", "t", "t1", "x", "=", "(", ")", ",", ";", " ", " ", "\n", "'",
    "E'", "e'", "B'", "N'", "U&'", "\\", "\\'", "''", "--", "/*", "*/", "$$", "$a$", "$1", "$",
    '"', "DROP TABLE t", "DELETE FROM t", "lower(", "pg_sleep(", "FOR UPDATE", "AS", "::int",
    "1", "2.5", "a1", "1a", ".", "+", "*", "#", "`", "/*!", "SET", "set_config(", "INTO",
]  # fmt: skip


def _generated(rng: random.Random) -> list[str]:
    """A skeleton of random pieces with literal slots, filled three different ways."""
    skeleton = [rng.choice(_PIECES + ["{}"] * 6) for _ in range(rng.randint(1, 12))]
    joiners = [rng.choice(["", " ", "  ", "\n"]) for _ in skeleton]
    texts = []
    for _ in range(3):
        parts = [rng.choice(_LITERALS) if piece == "{}" else piece for piece in skeleton]
        texts.append("".join(part + joiner for part, joiner in zip(parts, joiners, strict=True)))
    return texts


def test_one_verdict_per_fingerprint_over_generated_texts() -> None:
    rng = random.Random(7)
    texts = [(sql, dialect) for _ in range(700) for sql in _generated(rng) for dialect in (PG, MY)]
    texts += [(f"SELECT {a} FROM t WHERE x = {b}", PG) for a in _LITERALS for b in _LITERALS]  # noqa: S608
    assert assert_one_verdict_per_fingerprint(texts) > 50


@pytest.mark.parametrize("dialect", [PG, MY])
def test_the_fast_path_never_merges_what_the_token_path_keeps_apart(dialect: str) -> None:
    # Every fast-path key must stand for exactly one token-path key: the fast path may
    # only strip what sqlglot's tokenizer also reads as literals.
    rng = random.Random(11)
    fast_to_token: dict[str, set[str | None]] = defaultdict(set)
    pieces = ["SELECT", "a", "t1", "1", "12", "1.5", "1.", "1e5", "'x'", "''", "'a b'", "(", ")",
              ",", ".", "=", "<", ">", "!", "*", "+", ":", "::", "[", "]", "%", "|", ";", "x1",
              "_", "AS", "FROM", "lower", "offset", " ", "\n", "\t"]  # fmt: skip
    for _ in range(6000):
        sql = "".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(1, 10)))
        key = fingerprint(sql, dialect)
        if key is not None and key.startswith(f"{dialect}\x00F\x00"):
            fast_to_token[key].add(token_key(sql, dialect))
    assert len(fast_to_token) > 1000
    assert {key: tokens for key, tokens in fast_to_token.items() if len(tokens) > 1} == {}


# --------------------------------------------------------------------------- the cache


def test_cache_hits_by_exact_text_and_by_fingerprint() -> None:
    cache = CachedClassifier(PG)
    assert cache.lookup("SELECT 1 WHERE a = 5") is None
    verdict = cache.classify("SELECT 1 WHERE a = 5")
    assert (cache.hits, cache.misses) == (0, 2)
    assert cache.lookup("SELECT 1 WHERE a = 5") is verdict
    assert cache.lookup("SELECT 1 WHERE a = 6") is verdict
    assert cache.lookup("SELECT 2 WHERE a = 6") is verdict
    assert cache.lookup("SELECT 1 WHERE b = 6") is None
    assert (cache.hits, cache.misses) == (3, 3)


def test_key_is_the_fingerprint_lookup_used() -> None:
    cache = CachedClassifier(MY)
    cache.lookup("SELECT c FROM t WHERE id=5")
    assert cache.key("SELECT c FROM t WHERE id=5") == fingerprint("SELECT c FROM t WHERE id=5", MY)
    assert cache.key("SELECT c FROM t WHERE id=6") == fingerprint("SELECT c FROM t WHERE id=5", MY)
    assert cache.key("SET @a = 1") is None


def test_a_write_never_reuses_a_cached_read() -> None:
    cache = CachedClassifier(PG)
    cache.classify("SELECT 'a' ; SELECT 1")
    assert not cache.classify("SELECT '\\' ; DELETE FROM t; --'").is_read
    cache.classify("SELECT * FROM t")
    assert not cache.classify("SELECT * FROM t FOR UPDATE").is_read
    cache.classify("SELECT lower('x')")
    assert not cache.classify("SELECT pg_sleep('1')").is_read


def test_set_statements_are_cached_by_exact_text_only() -> None:
    cache = CachedClassifier(PG)
    assert cache.classify("SET client_encoding = 'UTF8'").is_read
    assert cache.lookup("SET client_encoding = 'UTF8'") is not None
    assert cache.lookup("SET client_encoding = 'SJIS'") is None
    assert not cache.classify("SET client_encoding = 'SJIS'").is_read


def test_store_accepts_a_verdict_made_elsewhere() -> None:
    cache = CachedClassifier(MY)
    sql = "SELECT * FROM t WHERE id = 1"
    cache.store(sql, classify(sql, MY))
    assert cache.lookup("SELECT * FROM t WHERE id = 2") == Verdict(
        StatementClass.READ, ("SELECT only reads data and calls read-safe functions",)
    )


def test_the_cache_is_bounded() -> None:
    cache = CachedClassifier(PG, max_entries=3)
    for n in range(10):
        cache.classify(f"SELECT c{n} FROM t")  # noqa: S608
    assert len(cache) == 6  # three exact texts, three fingerprints
    assert cache.lookup("SELECT c9 FROM t") is not None
    assert cache.lookup("SELECT c0 FROM t") is None


def test_the_cache_is_bounded_in_characters_too() -> None:
    cache = CachedClassifier(PG, max_total_chars=1000)
    for n in range(50):
        cache.classify(f"SELECT c{n}, {'x' * 50} FROM t")  # noqa: S608
    assert len(cache) < 50


def test_long_texts_are_not_cached() -> None:
    cache = CachedClassifier(PG, max_text_chars=100)
    sql = "SELECT " + ", ".join(f"c{n}" for n in range(100)) + " FROM t"  # noqa: S608
    cache.classify(sql)
    assert len(cache) == 0
    assert cache.lookup(sql) is None


def test_the_token_path_is_skipped_for_long_texts_but_the_fast_path_is_not() -> None:
    cache = CachedClassifier(PG, max_token_chars=60)
    fast = "SELECT a FROM t WHERE b IN (" + ", ".join(str(n) for n in range(40)) + ")"  # noqa: S608
    tokens = "SELECT a FROM t WHERE b = $1 AND c IN (" + ", ".join(["$2"] * 20) + ")"  # noqa: S608
    cache.classify(fast)
    cache.classify(tokens)
    assert cache.lookup(fast.replace("39", "41")) is not None  # fingerprint hit
    assert cache.lookup(tokens.replace("$1", "$3")) is None  # exact text only
    assert cache.lookup(tokens) is not None
    assert fingerprint(tokens, PG, max_token_chars=60) is None
    assert fingerprint(tokens, PG) is not None


@pytest.mark.parametrize(
    ("sql", "token_path"),
    [("SELECT 1 FROM t WHERE a = 2", False), ("SELECT 1 FROM t WHERE a = 2 -- why", True)],
)
def test_a_miss_then_store_fingerprints_the_text_once(
    monkeypatch: pytest.MonkeyPatch, sql: str, token_path: bool
) -> None:
    import policy.fingerprint as module
    import policy.sqlscan as sqlscan

    fast_calls: list[str] = []
    calls: list[str] = []
    real_fast = sqlscan.fast_fingerprint

    def fast_counting(sql: str, prefix: bytes, max_opens: int) -> str | None:
        fast_calls.append(sql)
        return real_fast(sql, prefix, max_opens)

    real_slow = module._slow_fingerprint

    def counting(sql: str, dialect: str, max_token_chars: int | None) -> str | None:
        calls.append(sql)
        return real_slow(sql, dialect, max_token_chars)

    monkeypatch.setattr(module, "fast_fingerprint", fast_counting)
    monkeypatch.setattr(module, "_slow_fingerprint", counting)
    CachedClassifier(PG).classify(sql)
    assert fast_calls == [sql]
    assert calls == ([sql] if token_path else [])


def test_recently_used_entries_survive() -> None:
    cache = CachedClassifier(PG, max_entries=2)  # SET texts: cached by exact text only
    cache.classify("SET application_name = 'a'")
    cache.classify("SET application_name = 'b'")
    assert cache.lookup("SET application_name = 'a'") is not None  # a is now the most recent
    cache.classify("SET application_name = 'c'")
    assert cache.lookup("SET application_name = 'a'") is not None
    assert cache.lookup("SET application_name = 'b'") is None


def test_hits_reorder_the_cache_only_once_it_is_half_full() -> None:
    texts = [f"SET application_name = '{name}'" for name in "abcde"]
    cache = CachedClassifier(PG, max_entries=4)
    a, b, c, d, e = texts
    for sql in (a, b):
        cache.classify(sql)
    assert cache.lookup(a) is not None  # half full: the order stays a, b
    for sql in (c, d):
        cache.classify(sql)
    assert cache.lookup(b) is not None  # full: b moves behind d
    cache.classify(e)  # evicts the oldest: a (first inserted, not moved)
    assert [cache.lookup(sql) is not None for sql in texts] == [False, True, True, True, True]


def test_clear() -> None:
    cache = CachedClassifier(PG)
    cache.classify("SELECT 1")
    cache.clear()
    assert len(cache) == 0
