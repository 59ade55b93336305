"""The fuzzer's oracles fail when they should: on log lines, transcripts and pictures made
up here (the differential test shows them failing on a real gateway)."""

from __future__ import annotations

from tests.fuzz.oracles import (
    Executed,
    Recorded,
    executed_statements,
    names_problems,
    transcript_problems,
)

# As PostgreSQL 15 writes them with log_line_prefix '%a|%p|' and log_statement = all.
LOG = [
    "pgfuzz|101|LOG:  statement: SELECT 1",
    "pgfuzz|101|LOG:  execute <unnamed>: INSERT INTO canary VALUES (666, 'x')",
    "pgfuzz|101|LOG:  execute s1/p1: SELECT v FROM items WHERE id = $1::int",
    "pgfuzz|101|DETAIL:  parameters: $1 = '1'",
    "pgfuzz|101|LOG:  execute fetch from s1/p1: SELECT v FROM items WHERE id = $1::int",
    'pgfuzz|101|ERROR:  syntax error at or near "SELEC"',
    "pgfuzz|101|STATEMENT:  SELEC oops",
    "oracle|102|LOG:  statement: SELECT id, v FROM canary ORDER BY id",
    "|103|LOG:  connection received: host=127.0.0.1 port=5555",
]
TRUE_CLASS = {
    "SELECT 1": "read",
    "INSERT INTO canary VALUES (666, 'x')": "write",
    "SELECT v FROM items WHERE id = $1::int": "read",
}
READ_ONLY = frozenset({"read"})


def test_the_server_log_gives_every_statement_the_fuzz_sessions_ran_and_nothing_else() -> None:
    assert executed_statements(LOG) == [
        Executed(101, "SELECT 1", "query"),
        Executed(101, "INSERT INTO canary VALUES (666, 'x')", "execute <unnamed>"),
        Executed(101, "SELECT v FROM items WHERE id = $1::int", "execute s1/p1"),
        Executed(101, "SELECT v FROM items WHERE id = $1::int", "execute s1/p1"),
    ]


def recorded(sql: str, statement_class: str = "read", decision: str = "allow") -> Recorded:
    return Recorded("sess", sql, statement_class, decision)


def test_a_write_the_server_ran_that_the_transcript_calls_a_read_is_caught() -> None:
    # Issue 14's hole as the oracle sees it: the transcript says SELECT 1 was allowed,
    # the server's log says the INSERT ran.
    executed = [Executed(101, "INSERT INTO canary VALUES (666, 'x')", "execute <unnamed>")]
    problems = transcript_problems(executed, [recorded("SELECT 1")], TRUE_CLASS, READ_ONLY)
    assert len(problems) == 2
    assert "the transcripts let it through 0 time(s)" in problems[0]
    assert "a write statement, with no approval" in problems[1]


def test_a_statement_the_server_ran_more_often_than_the_transcript_let_through_is_caught() -> None:
    executed = [Executed(101, "SELECT 1", "query")] * 2
    problems = transcript_problems(executed, [recorded("SELECT 1")], TRUE_CLASS, READ_ONLY)
    assert problems == [
        "the server ran 'SELECT 1' 2 time(s) (query); the transcripts let it through 1 time(s)"
    ]


def test_a_write_the_transcript_shows_allowed_is_caught_even_if_it_never_ran() -> None:
    sql = "INSERT INTO canary VALUES (666, 'x')"
    problems = transcript_problems([], [recorded(sql, "write")], TRUE_CLASS, READ_ONLY)
    assert problems == [f"transcript sess: write statement allowed without approval: {sql!r}"]


def test_a_refused_write_and_reads_that_ran_are_no_problem() -> None:
    sql = "INSERT INTO canary VALUES (666, 'x')"
    executed = [Executed(101, "SELECT 1", "query")]
    transcripts = [recorded("SELECT 1"), recorded(sql, "write", "rejected until approved (apr_1)")]
    assert transcript_problems(executed, transcripts, TRUE_CLASS, READ_ONLY) == []


def test_a_name_the_gate_is_sure_of_must_exist_on_the_server_with_its_text() -> None:
    gate = {b"": "SELECT 1", b"s1": "SELECT 1", b"s2": "SELECT 2"}
    assert names_problems(gate, {"s1": "SELECT 1", "s2": "SELECT 2", "s3": "x"}) == []
    assert names_problems(gate, {"s1": "INSERT INTO canary VALUES (666, 'x')"}) == [
        "the gate knows statement 's1' = 'SELECT 1'; the server has "
        "\"INSERT INTO canary VALUES (666, 'x')\"",
        "the gate knows statement 's2' = 'SELECT 2'; the server has none",
    ]
