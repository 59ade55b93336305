"""The one judge: what happens to a statement, from its class, the session's rules, the
session's grant and the time. Pure: no I/O, no clock of its own.

Every place that decides a statement asks here: the gates build their per-class tables
for the hot path from `judge` (`class_rulings`), and ask it again only for a class a
session grant may let through; the session asks it for every statement it holds.

- ALLOW: the rules allow the class (`by class`), or they ask for approval and a session
  grant is still valid at `now` (`under a session grant`).
- HOLD: the rules ask for approval and no session grant holds: an approval request is
  made, and the statement waits for it (`wait`) or is refused until approved (`reject`).
- DENY: the rules deny the class. Anything the rules do not name (`unknown`, or a class
  this module has never heard of) is judged as `unknown`, the strictest class.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from policy.classify import StatementClass
from policy.rules import STATEMENT_CLASSES, Action, EffectivePolicy, HoldMode


class Ruling(enum.Enum):
    ALLOW = "allow"
    HOLD = "hold"
    DENY = "deny"


#: Why a statement is allowed.
BY_CLASS = "allow"
UNDER_SESSION_GRANT = "approved for the session"


@dataclass(frozen=True, slots=True)
class Judgement:
    ruling: Ruling
    #: For ALLOW: BY_CLASS or UNDER_SESSION_GRANT; else None.
    why: str | None = None
    #: For HOLD: whether the statement waits for the decision or is refused until then.
    hold: HoldMode | None = None

    @property
    def allows(self) -> bool:
        return self.ruling is Ruling.ALLOW


# The judgements there are (shared: judging allocates nothing).
ALLOWED = Judgement(Ruling.ALLOW, BY_CLASS)
GRANTED = Judgement(Ruling.ALLOW, UNDER_SESSION_GRANT)
HOLD_WAIT = Judgement(Ruling.HOLD, hold=HoldMode.WAIT)
HOLD_REJECT = Judgement(Ruling.HOLD, hold=HoldMode.REJECT)
DENIED = Judgement(Ruling.DENY)


def judge(
    statement_class: str,
    policy: EffectivePolicy,
    session_grant_until: float | None = None,
    now: float = 0.0,
) -> Judgement:
    """The judgement on a statement of `statement_class` (a class name, as in the rules)
    at clock time `now`, in a session whose grant, if any, is valid until
    `session_grant_until` (exclusive)."""
    action = policy.action_for(statement_class)
    if action is Action.ALLOW:
        return ALLOWED
    if action is Action.APPROVE:
        if session_grant_until is not None and now < session_grant_until:
            return GRANTED
        return HOLD_WAIT if policy.hold is HoldMode.WAIT else HOLD_REJECT
    return DENIED


def class_rulings(
    policy: EffectivePolicy, classes: Iterable[str] = STATEMENT_CLASSES
) -> dict[str, Judgement]:
    """Per class, the judgement without any grant: what a gate's hot-path tables hold."""
    return {cls: judge(cls, policy) for cls in classes}


class GateTables:
    """A gate's per-class tables for its hot path, from the judge's answers without a
    grant: `allow` (allowed by class), `grantable` (held: a session grant lets it run,
    which the gate asks `judge`), and `hot` (allowed, and not of the `cold` classes,
    which the session must see first: recorded durably, run under a write role)."""

    __slots__ = ("allow", "grantable", "hot")

    def __init__(self, policy: EffectivePolicy, cold: Iterable[StatementClass] = ()) -> None:
        rulings = class_rulings(policy, [cls.value for cls in StatementClass])
        cold_set = frozenset(cold)
        self.allow = {cls: rulings[cls.value].allows for cls in StatementClass}
        self.grantable = {cls: rulings[cls.value].ruling is Ruling.HOLD for cls in StatementClass}
        self.hot = {cls: allowed and cls not in cold_set for cls, allowed in self.allow.items()}
