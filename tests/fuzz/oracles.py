"""What the fuzzer checks, apart from the wire: the server's own statement log, the
gateway's transcripts, and the two pictures of which prepared statements exist.

Each check returns a list of problems (empty: it holds), so a unit test can show it
failing on a made-up log or picture.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from proxy.transcript import STATEMENT, read_transcript

#: log_line_prefix of the fuzz cluster: application name and backend pid.
LOG_LINE_PREFIX = "%a|%p|"
APPLICATION = "pgfuzz"
_LOGGED = re.compile(
    r"^(?P<app>[^|]*)\|(?P<pid>\d+)\|LOG:  "
    r"(?:statement: (?P<query>.*)|execute(?: fetch from)? (?P<name>\S+): (?P<sql>.*))$"
)


@dataclass(frozen=True)
class Executed:
    """A statement the server began to run (log_statement = all logs it first)."""

    pid: int
    sql: str
    how: str  # "query" (a simple Query) or "execute <statement>[/<portal>]"


def executed_statements(lines: Iterable[str], application: str = APPLICATION) -> list[Executed]:
    """The statements the server logged for `application`'s sessions, in order."""
    out: list[Executed] = []
    for line in lines:
        found = _LOGGED.match(line)
        if found is None or found["app"] != application:
            continue
        if found["query"] is not None:
            out.append(Executed(int(found["pid"]), found["query"], "query"))
        else:
            out.append(Executed(int(found["pid"]), found["sql"], f"execute {found['name']}"))
    return out


@dataclass(frozen=True)
class Recorded:
    """A statement event of a transcript."""

    session: str
    sql: str
    statement_class: str
    decision: str

    @property
    def ran(self) -> bool:
        """The gateway let it reach the server (allowed, or approved)."""
        return self.decision == "allow" or self.decision.startswith("approved")


def recorded_statements(paths: Iterable[Path]) -> list[Recorded]:
    out: list[Recorded] = []
    for path in paths:
        transcript = read_transcript(path)
        for event in transcript.events:
            if event.kind == STATEMENT:
                data = event.data
                out.append(
                    Recorded(
                        transcript.session_id,
                        str(data.get("sql")),
                        str(data.get("class")),
                        str(data.get("decision")),
                    )
                )
    return out


def transcript_problems(
    executed: list[Executed],
    recorded: list[Recorded],
    true_class: Mapping[str, str],
    allowed_classes: frozenset[str],
) -> list[str]:
    """Every statement the server ran is in a transcript as let through, under a class the
    policy allows without approval, and that class is the statement's true one; no
    transcript shows a statement of another class let through without approval."""
    problems: list[str] = []
    for entry in recorded:
        if entry.decision == "allow" and entry.statement_class not in allowed_classes:
            problems.append(
                f"transcript {entry.session}: {entry.statement_class} statement allowed "
                f"without approval: {entry.sql!r}"
            )
    let_through = collections.Counter(entry.sql for entry in recorded if entry.ran)
    classes = {entry.sql: entry.statement_class for entry in recorded if entry.ran}
    ran = collections.Counter(entry.sql for entry in executed)
    for sql, count in ran.items():
        if let_through[sql] < count:
            hows = sorted({e.how for e in executed if e.sql == sql})
            problems.append(
                f"the server ran {sql!r} {count} time(s) ({', '.join(hows)}); "
                f"the transcripts let it through {let_through[sql]} time(s)"
            )
        truth = true_class.get(sql, "unknown")
        if truth not in allowed_classes:
            problems.append(f"the server ran {sql!r}, a {truth} statement, with no approval")
        elif sql in classes and classes[sql] != truth:
            problems.append(f"the transcript says {sql!r} is {classes[sql]}; it is {truth}")
    return problems


def names_problems(gate: Mapping[bytes, str], server: Mapping[str, str]) -> list[str]:
    """Every named statement the gate is certain of exists on the server with its text.
    (The unnamed statement is not in pg_prepared_statements; names the server has and the
    gate does not know are refused by the gate, which is safe.)"""
    problems: list[str] = []
    for raw_name, sql in sorted(gate.items()):
        if not raw_name:
            continue
        name = raw_name.decode()
        if name not in server:
            problems.append(f"the gate knows statement {name!r} = {sql!r}; the server has none")
        elif server[name] != sql:
            problems.append(
                f"the gate knows statement {name!r} = {sql!r}; the server has {server[name]!r}"
            )
    return problems
