"""The classifier's answer: a `Verdict` (a `StatementClass` with human-readable reasons),
and how the verdicts of several statements run together combine into one."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class StatementClass(enum.Enum):
    READ = "read"
    WRITE = "write"
    DDL = "ddl"
    ADMIN = "admin"
    UNKNOWN = "unknown"

    # Members are singletons compared by identity, so identity is a correct hash; Enum's
    # own __hash__ is a Python function, and the relay looks classes up per statement.
    __hash__ = object.__hash__


#: Each class's name, as transcripts record it: `.value` is an Enum property, dearer.
CLASS_NAMES: dict[StatementClass, str] = {cls: cls.value for cls in StatementClass}


@dataclass(frozen=True, slots=True)
class Verdict:
    statement_class: StatementClass
    reasons: tuple[str, ...]

    @property
    def is_read(self) -> bool:
        return self.statement_class is StatementClass.READ

    def to_json(self) -> dict[str, object]:
        return {"class": self.statement_class.value, "reasons": list(self.reasons)}


#: The end of every reason given to a statement that would change how the server lexes
#: statements (character set, sql_mode): the MySQL gateway refuses these whatever the rule.
LEXER_REASON = "would desynchronise the gateway's lexer"

#: The reason a MySQL KILL statement carries: the gateway runs KILL itself, for the
#: agent's own sessions, and never forwards one (gateway and server ids differ).
KILL_REASON = "KILL ends a connection or query"

READ = StatementClass.READ

WRITE = StatementClass.WRITE

DDL = StatementClass.DDL

ADMIN = StatementClass.ADMIN

UNKNOWN = StatementClass.UNKNOWN


def verdict_of(statement_class: StatementClass, *reasons: str) -> Verdict:
    """A verdict of `statement_class` with `reasons`."""
    return Verdict(statement_class, tuple(reasons))


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict for several statements run together: the strictest.

    All read is read. Otherwise the non-read statements' class when they share one, else
    unknown. Reasons of several statements say which statement they are about.
    """
    if len(verdicts) == 1:
        return verdicts[0]
    blocking = [(n, v) for n, v in enumerate(verdicts, 1) if not v.is_read]
    shown = blocking or list(enumerate(verdicts, 1))
    classes = {v.statement_class for _, v in shown}
    statement_class = classes.pop() if len(classes) == 1 else UNKNOWN
    reasons: list[str] = []
    for number, verdict in shown:
        for reason in verdict.reasons:
            labelled = f"statement {number} of {len(verdicts)}: {reason}"
            if labelled not in reasons:
                reasons.append(labelled)
    return Verdict(statement_class, tuple(reasons))


#: One thing found in a statement that keeps it from being read: its class and why.
Finding = tuple[StatementClass, str]
