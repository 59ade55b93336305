"""policy.sqlscan, the scans of the gate's hot path, against the regular expressions the C
scans replaced: in C (policy/sqlscan.pyx) and in pure Python (policy/sqlscan.py), each on
the same texts (both in a compiled tree, the pure one in scripts/test's pure run).

A fingerprint that differs from the reference in the unsafe direction would let a write
reuse a read's cached verdict, so the scanner is held to the reference exactly: on
hand-picked edge cases, and on random text drawn from the characters that matter (quotes,
digits, dots, the words SET and PREPARE, whitespace, characters outside the alphabet).
"""

from __future__ import annotations

import random
import re

import pytest

from tests.support.builds import PURE, implementations

SCANS = implementations("policy.sqlscan")

# ---------------------------------------------------------------- the reference (regexes)
# policy/fingerprint.py's fast path as it was written before it moved to C.

_FAST_ALPHABET = re.compile(r"[A-Za-z0-9_ \t\n\r'=<>!(),.;*+:\[\]%|]*", re.ASCII)
_FAST_STRING = re.compile(r"'[^']*'", re.ASCII)
_FAST_STRING_CONTEXT = re.compile(
    r"[A-Za-z0-9_.]\x01|\x01[A-Za-z0-9_.\x01]|\x01[ \t\n\r]+\x01", re.ASCII
)
_FAST_NUMBER = re.compile(r"\b[0-9]+(?:\.[0-9]+)?(?![A-Za-z0-9_.\x01])", re.ASCII)
_LITERAL_SENSITIVE = re.compile(r"\b(?:set|prepare|set_config)\b", re.ASCII)
_NAMES_STATEMENTS = re.compile("PREPARE|DEALLOCATE|DISCARD", re.IGNORECASE)


def reference_fingerprint(sql: str, dialect: str) -> str | None:
    if not _FAST_ALPHABET.fullmatch(sql):
        return None
    stripped = sql
    if "'" in sql:
        stripped = _FAST_STRING.sub("\x01", sql)
        if "'" in stripped or ("\x01" in stripped and _FAST_STRING_CONTEXT.search(stripped)):
            return None
    lowered = stripped.lower()
    if ("set" in lowered or "prepare" in lowered) and _LITERAL_SENSITIVE.search(lowered):
        return None
    stripped = _FAST_NUMBER.sub("\x02", stripped)
    return f"{dialect}\x00F\x00" + " ".join(stripped.split())


def scanned(sql: str, dialect: str = "postgres", max_opens: int = 1 << 30) -> str | None:
    """The key every implementation gives `sql`: they must agree."""
    prefix = f"{dialect}\x00F\x00".encode()
    keys = {name: scan.fast_fingerprint(sql, prefix, max_opens) for name, scan in SCANS.items()}
    assert len(set(keys.values())) == 1, (sql, keys)
    key: str | None = keys["pure"]
    return key


def names_statements(sql: str) -> bool:
    """What every implementation says of `sql`: they must agree."""
    said = {name: scan.names_statements(sql) for name, scan in SCANS.items()}
    assert len(set(said.values())) == 1, (sql, said)
    return bool(said["pure"])


def test_both_implementations_are_here_unless_the_tree_is_pure() -> None:
    assert sorted(SCANS) == (["pure"] if PURE else ["compiled", "pure"])


# ---------------------------------------------------------------- fast_fingerprint

EDGE_CASES = [
    "",
    " ",
    "SELECT 1",
    "SELECT set_config('TimeZone', 'UTC', false)",
    "SELECT set_configs('a')",
    "  SELECT\t1 \n\r ",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
    "select * from t where a = 'x' and b = 2.5",
    "select 'a''b'",
    "select 'a' 'b'",
    "select 'a'\n'b'",
    "select 'a'||'b'",
    "select 'a' || 'b'",
    "select E'x'",
    "select e 'x'",
    "select 1'x'",
    "select .'x'",
    "select 'x'.y",
    "select 'x'y",
    "select 'x'1",
    "select 'unpaired",
    "select ''",
    "select '''",
    "select ''''",
    "select t1, 1a, 1e5, 1.5.5, 1., .5, a.5, 5.a, 1.5x, 12abc",
    "select 0.1, 10.25, 007, 1_000",
    "set x = 1",
    "SET x = 1",
    "sEt x = 1",
    "select 1 from settings",
    "select offset, reset, set_x, x_set, 1set, set1",
    "prepare p as select 1",
    "select 1; PrEpArE p as select 2",
    "select 'set' from t",
    "select 'prepare', 1",
    "select a.set from t",
    "select [1], 2%3, 4|5, a<>b, a!=b, x::int, f(1,2)",
    'select "quoted"',
    "select 1 -- comment",
    "select /* c */ 1",
    "select $1",
    "select 'x\\'y'",
    "select 1 # mysql comment",
    "select {fn now()}",
    "select 'caf\u00e9'",
    "select caf\u00e9",
    "select '\x01'",
    "select 1\x00",
    "select\x0b1",
    "select\x0c1",
    "select\x1c1",
]


@pytest.mark.parametrize("sql", EDGE_CASES)
@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_edge_cases_match_the_reference(sql: str, dialect: str) -> None:
    assert scanned(sql, dialect) == reference_fingerprint(sql, dialect)


def test_strings_and_numbers_are_taken_out_and_whitespace_collapsed() -> None:
    key = scanned("  SELECT  a FROM t\n WHERE b = 'it''s'  AND c = 12.5 ")
    assert key is None  # 'it''s' glues two strings: not for the fast path
    key = scanned("  SELECT  a FROM t\n WHERE b = 'its'  AND c = 12.5 ")
    assert key == "postgres\x00F\x00SELECT a FROM t WHERE b = \x01 AND c = \x02"
    assert scanned("select a from t where b = 'x' and c = 1") == scanned(
        "select a from t where b = 'a much longer string' and c = 987654"
    )


def test_long_text_takes_the_heap_buffer() -> None:
    sql = "select " + ", ".join(f"'{i}' as c{i}, {i}.{i}" for i in range(400))
    assert len(sql) > 1024
    assert scanned(sql) == reference_fingerprint(sql, "postgres")
    assert scanned(sql + " set") is None


def test_more_opening_brackets_than_allowed_end_the_fast_path() -> None:
    sql = "select " + "(" * 3 + "'[(x'" + ")" * 3
    assert scanned(sql) is not None
    assert scanned(sql, max_opens=5) is not None
    assert scanned(sql, max_opens=4) is None  # the ones inside the string count too
    assert scanned("select a[1][2]", max_opens=1) is None


# Characters weighted towards what the scanner decides on.
_PIECES = [
    *"abcxyzSETPRE_019",
    *["'", "'", "'", ".", ".", " ", " ", "\t", "\n", "\r", "(", ")", ",", "=", ";", "|", ":"],
    *[
        "set",
        "SET",
        "sEt",
        "prepare",
        "PREPARE",
        "set_config",
        "Set_Config",
        "set_configs",
        "12",
        "3.4",
        "t1",
        "1e5",
        "''",
        "' '",
    ],
    *[" 'q' ", "= 'q',", " 7 ", "(8)"],
    *['"', "-", "/", "#", "$", "\\", "{", "\x01", "\x02", "\x00", "\x0b", "\u00e9", "\u2028"],
]


# The same without what ends the fast path at once, to reach its string and number rules.
_IN_ALPHABET = [
    piece for piece in _PIECES if reference_fingerprint(piece, "postgres") or "'" in piece
]


def _random_text(rng: random.Random) -> str:
    pieces = _PIECES if rng.random() < 0.5 else _IN_ALPHABET
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 24)))


@pytest.mark.parametrize("seed", range(8))
def test_random_text_matches_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    keyed = strings = numbers = 0
    for _ in range(25_000):
        sql = _random_text(rng)
        dialect = rng.choice(("postgres", "mysql"))
        expected = reference_fingerprint(sql, dialect)
        assert scanned(sql, dialect) == expected, repr(sql)
        if expected is not None:
            keyed += 1
            strings += "\x01" in expected
            numbers += "\x02" in expected
    # The generator reaches the fast path and its rules, not only its refusals.
    assert keyed > 3_000
    assert strings > 1_000
    assert numbers > 1_000


def test_random_statements_in_the_alphabet_match_the_reference() -> None:
    rng = random.Random(99)
    words = ["select", "a", "t", "from", "where", "and", "=", "<", ",", "(", ")", ";", "."]
    values = ["1", "22.5", "'x'", "''", "'a b'", "7", "1.", ".5", "3a"]
    for _ in range(20_000):
        parts = [rng.choice(words + values) for _ in range(rng.randint(1, 16))]
        sql = rng.choice(["", " ", "\n"]).join(parts) if rng.random() < 0.3 else " ".join(parts)
        assert scanned(sql) == reference_fingerprint(sql, "postgres"), repr(sql)


# ---------------------------------------------------------------- names_statements


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select 1", False),
        ("PREPARE p AS select 1", True),
        ("prepare p as select 1", True),
        ("select 1; DeAlLoCaTe ALL", True),
        ("discard all", True),
        ("select * from prepared_orders", True),  # any substring: a false positive is safe
        ("select 'discard'", True),
        ("prepar e", False),
        ("dealloc", False),
        ("discar", False),
        ("d", False),
        ("", False),
        ("select 'caf\u00e9'; prepare p as select 1", True),  # not ASCII: the regex
        ("select 'caf\u00e9'", False),
        ("DI\u017fCARD", True),  # the regex's IGNORECASE folds the long s to s
    ],
)
def test_names_statements(sql: str, expected: bool) -> None:
    assert names_statements(sql) is expected
    assert names_statements(sql) is (_NAMES_STATEMENTS.search(sql) is not None)


def test_names_statements_matches_the_regex_on_random_text() -> None:
    rng = random.Random(7)
    pieces = [*"prepaPREPAdealoctDEALOCTiscrISCRx ;", "prepare", "DISCARD", "Deallocate"]
    for _ in range(50_000):
        sql = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        assert names_statements(sql) is (_NAMES_STATEMENTS.search(sql) is not None), repr(sql)


def test_a_negative_bracket_allowance_refuses_every_text() -> None:
    assert scanned("select 1", max_opens=-1) is None
    assert scanned("select 1", max_opens=0) is not None


@pytest.mark.parametrize("name", sorted(SCANS))
def test_wrong_argument_types_are_refused(name: str) -> None:
    scan = SCANS[name]
    with pytest.raises(TypeError):
        scan.fast_fingerprint(None, b"p", 1)
    with pytest.raises(TypeError):
        scan.fast_fingerprint(b"select 1", b"p", 1)
    with pytest.raises(TypeError):
        scan.fast_fingerprint("select 1", "p", 1)
    with pytest.raises(TypeError):
        scan.fast_fingerprint("select 1", b"p", 1.5)
    with pytest.raises(TypeError):
        scan.names_statements(None)
    with pytest.raises(TypeError):
        scan.names_statements(b"prepare")
