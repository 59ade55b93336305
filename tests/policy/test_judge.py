"""The one judge: a statement's class, the session's rules, its grant and the time decide
whether it runs, waits for approval, is refused until approved, or is denied."""

from __future__ import annotations

import pytest

from policy.judge import (
    BY_CLASS,
    UNDER_SESSION_GRANT,
    Judgement,
    Ruling,
    class_rulings,
    judge,
)
from policy.rules import Action, EffectivePolicy, HoldMode, Rule, effective_policy

A, P, D = Action.ALLOW, Action.APPROVE, Action.DENY
WAIT, REJECT = HoldMode.WAIT, HoldMode.REJECT


def policy(hold: HoldMode = WAIT, **actions: Action) -> EffectivePolicy:
    rule = Rule(groups=frozenset({"agents"}), targets=frozenset({"orders"}), hold=hold, **actions)  # type: ignore[arg-type]
    found = effective_policy([rule], ["agents"], "orders")
    assert found is not None
    return found


NOW = 1_000.0

# (class, rules, hold mode, session grant until, now) -> (ruling, why, hold)
CASES: list[tuple[str, dict[str, Action], HoldMode, float | None, float, Judgement]] = [
    # allowed by class: a grant changes nothing, nor does the time
    ("read", {}, WAIT, None, NOW, Judgement(Ruling.ALLOW, BY_CLASS)),
    ("read", {}, REJECT, NOW + 60, NOW, Judgement(Ruling.ALLOW, BY_CLASS)),
    ("write", {"write": A}, WAIT, None, NOW, Judgement(Ruling.ALLOW, BY_CLASS)),
    # approve, no grant: held, in the rules' hold mode
    ("write", {}, WAIT, None, NOW, Judgement(Ruling.HOLD, hold=WAIT)),
    ("write", {}, REJECT, None, NOW, Judgement(Ruling.HOLD, hold=REJECT)),
    # approve, a valid session grant: allowed under it
    ("write", {}, WAIT, NOW + 0.001, NOW, Judgement(Ruling.ALLOW, UNDER_SESSION_GRANT)),
    ("write", {}, REJECT, NOW + 60, NOW, Judgement(Ruling.ALLOW, UNDER_SESSION_GRANT)),
    # the grant expires at its expiry (exclusive), and an expired one holds again
    ("write", {}, WAIT, NOW, NOW, Judgement(Ruling.HOLD, hold=WAIT)),
    ("write", {}, REJECT, NOW - 1, NOW, Judgement(Ruling.HOLD, hold=REJECT)),
    ("write", {}, WAIT, 0.0, 0.0, Judgement(Ruling.HOLD, hold=WAIT)),
    # denied: no grant lets a denied class through
    ("ddl", {}, WAIT, None, NOW, Judgement(Ruling.DENY)),
    ("ddl", {}, WAIT, NOW + 60, NOW, Judgement(Ruling.DENY)),
    ("admin", {"admin": D}, REJECT, NOW + 60, NOW, Judgement(Ruling.DENY)),
    # unknown is never looser than any other class, and an unheard-of class is unknown
    ("unknown", {}, WAIT, None, NOW, Judgement(Ruling.DENY)),
    ("unknown", {"ddl": P, "admin": P}, REJECT, None, NOW, Judgement(Ruling.HOLD, hold=REJECT)),
    ("unknown", {"ddl": P, "admin": P}, WAIT, NOW + 5, NOW,
     Judgement(Ruling.ALLOW, UNDER_SESSION_GRANT)),
    ("no such class", {"ddl": A, "admin": A, "unknown": A, "write": A}, WAIT, None, NOW,
     Judgement(Ruling.ALLOW, BY_CLASS)),
    ("no such class", {}, WAIT, NOW + 5, NOW, Judgement(Ruling.DENY)),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "actions", "hold", "until", "now", "expected"), CASES)
def test_the_judge(
    cls: str,
    actions: dict[str, Action],
    hold: HoldMode,
    until: float | None,
    now: float,
    expected: Judgement,
) -> None:
    judgement = judge(cls, policy(hold, **actions), until, now)
    assert judgement == expected
    assert judgement.allows is (expected.ruling is Ruling.ALLOW)


def test_the_tables_for_the_hot_path_are_the_judgement_without_a_grant() -> None:
    rules = policy(REJECT, write=P, ddl=A, admin=D)
    tables = class_rulings(rules)
    assert set(tables) == {"read", "write", "ddl", "admin", "unknown"}
    assert tables["read"] == Judgement(Ruling.ALLOW, BY_CLASS)
    assert tables["write"] == Judgement(Ruling.HOLD, hold=REJECT)
    assert tables["ddl"] == Judgement(Ruling.ALLOW, BY_CLASS)
    assert tables["admin"] == Judgement(Ruling.DENY)
    assert tables["unknown"] == Judgement(Ruling.DENY)
    for cls, judgement in tables.items():
        assert judge(cls, rules) == judgement
