"""The agent's justification as the gateway reads it from a statement's leading comment,
and which held statements get an impact preview."""

from __future__ import annotations

import pytest

from policy.classify import StatementClass, classify
from policy.rules import Preview
from proxy.approvals.store import ApprovalRequest, NewRequest
from proxy.core.preview import WHY_MAX_CHARS, justification, previewed


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        (
            "/* airlock:why restock after audit #123 */ UPDATE t SET a = 1",
            "restock after audit #123",
        ),
        ("-- airlock:why refund batch 7\nUPDATE t SET a = ?", "refund batch 7"),
        ("  /*AIRLOCK:WHY  spread\n over\tlines */DELETE FROM t", "spread over lines"),
        ("/* pgjdbc */ /* airlock:why second comment */ UPDATE t SET a = 1", "second comment"),
        ("UPDATE t SET a = 1 /* airlock:why not leading */", None),
        ("/* airlock:whyever */ UPDATE t SET a = 1", None),
        ("/* airlock:why */ UPDATE t SET a = 1", None),
        ("UPDATE t SET a = '/* airlock:why in a string */'", None),
        ("/* airlock:why never closed UPDATE t SET a = 1", None),
    ],
)
def test_the_reason_is_a_leading_airlock_why_comment(sql: str, why: str | None) -> None:
    assert justification(sql) == why


def test_a_long_reason_is_cut() -> None:
    why = justification("/* airlock:why " + "x" * 2000 + " */ UPDATE t SET a = 1")
    assert why is not None
    assert len(why) == WHY_MAX_CHARS
    assert why.endswith("…")


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_the_reason_changes_no_classification(dialect: str) -> None:
    for sql in ("SELECT 1", "UPDATE t SET a = 1", "DROP TABLE t"):
        plain = classify(sql, dialect=dialect).statement_class
        assert classify(f"/* airlock:why x */ {sql}", dialect=dialect).statement_class is plain
        assert classify(f"-- airlock:why x\n{sql}", dialect=dialect).statement_class is plain


def held(statement_class: str) -> ApprovalRequest:
    new = NewRequest(
        session_id="s", subject="a", groups=(), email=None, target="t", protocol="postgres",
        sql="x", parameters=(), params_key="k", statement_class=statement_class, reasons=(),
        hold="wait", approver_groups=("dba",), grant_ttl_s=60.0,
    )  # fmt: skip
    return ApprovalRequest("apr_1", "pending", "open", 0.0, new)


def test_only_writes_are_previewed_and_only_when_the_rule_wants_it() -> None:
    assert previewed(held(StatementClass.WRITE.value), Preview())
    for other in ("read", "ddl", "admin", "unknown"):
        assert not previewed(held(other), Preview(dry_run=True))
    assert not previewed(held("write"), Preview(explain=False, dry_run=False))
