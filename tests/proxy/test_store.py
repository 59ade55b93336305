"""The approval store: requests, decisions and grants in SQLite, across reopenings."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from policy.approvals import grant_expiry, refusal_to_decide
from proxy.approvals.store import (
    _SCHEMA,
    AlreadyApproved,
    AlreadyDecided,
    ApprovalRequest,
    ApprovalStore,
    NewRequest,
    Parameter,
    UnknownRequest,
)

NOW = 1_800_000_000.0


def new(sql: str = "update t set a = $1", key: str = "k1", session: str = "s1") -> NewRequest:
    return NewRequest(
        session_id=session,
        subject="agent-1",
        groups=("data-agents",),
        email=None,
        target="orders",
        protocol="postgres",
        sql=sql,
        parameters=(Parameter("int4", "42"), Parameter("text", None)),
        params_key=key,
        statement_class="write",
        reasons=("UPDATE modifies data",),
        hold="wait",
        approver_groups=("oncall-dba",),
        grant_ttl_s=900.0,
    )


@pytest.fixture
def store(tmp_path: Path) -> ApprovalStore:
    return ApprovalStore(tmp_path / "airlock.db")


def approve(
    store: ApprovalStore, request_id: str, scope: str = "statement", ttl: float = 60
) -> ApprovalRequest:
    return store.approve(
        request_id,
        approver="dba-1",
        approver_groups=["oncall-dba"],
        scope=scope,
        expires_at=NOW + ttl,
        comment="ok",
        now=NOW,
    )


def test_a_request_is_stored_whole_and_listed_newest_first(store: ApprovalStore) -> None:
    first = store.create(new(), NOW)
    second = store.create(new(sql="delete from t"), NOW + 1)
    assert store.get(first.id) == first
    assert [r.id for r in store.list("pending")] == [second.id, first.id]
    shown = first.to_json()
    assert shown["parameters"] == [
        {"type": "int4", "value": "42", "format": "text"},
        {"type": "text", "value": None, "format": "text"},
    ]
    assert shown["requester"] == {"subject": "agent-1", "groups": ["data-agents"], "email": None}
    assert shown["decision"] is None
    assert shown["created_at"].endswith("Z")


def test_a_decision_is_recorded_once(store: ApprovalStore) -> None:
    request = store.create(new(), NOW)
    decided = approve(store, request.id)
    assert decided.state == "approved"
    assert (decided.decided_by, decided.scope, decided.comment) == ("dba-1", "statement", "ok")
    with pytest.raises(AlreadyDecided):
        store.deny(request.id, approver="dba-2", approver_groups=[], reason="no", now=NOW)
    with pytest.raises(AlreadyDecided):
        store.withdraw(request.id, reason="cancel", now=NOW)
    with pytest.raises(UnknownRequest):
        store.get("apr_nope")
    assert store.list("pending") == []


def test_a_statement_grant_runs_the_same_statement_once_before_it_expires(
    store: ApprovalStore,
) -> None:
    request = store.create(new(), NOW)
    approve(store, request.id, ttl=60)

    def use(
        sql: str = "update t set a = $1", key: str = "k1", now: float = NOW + 1
    ) -> ApprovalRequest | None:
        return store.use_statement_grant(
            subject="agent-1", target="orders", sql=sql, params_key=key, now=now
        )

    assert use(key="other") is None  # other parameters
    assert use(sql="update t set a = 2") is None  # other text
    assert use(now=NOW + 61) is None  # expired
    assert (
        store.use_statement_grant(
            subject="agent-2", target="orders", sql="update t set a = $1", params_key="k1", now=NOW
        )
        is None
    )  # another identity
    used = use()
    assert used is not None
    assert used.id == request.id
    assert use() is None  # once


def test_a_session_grant_covers_its_session_until_it_expires(store: ApprovalStore) -> None:
    request = store.create(new(session="s1"), NOW)
    approve(store, request.id, scope="session", ttl=30)
    assert store.session_grant("s1", NOW + 29) is not None
    assert store.session_grant("s1", NOW + 31) is None
    assert store.session_grant("s2", NOW) is None


def test_requests_survive_reopening_and_orphans_are_marked(tmp_path: Path) -> None:
    path = tmp_path / "airlock.db"
    first = ApprovalStore(path)
    request = first.create(new(), NOW)
    first.close()
    second = ApprovalStore(path)
    assert second.sessions_gone() == 1
    found = second.get(request.id)
    assert (found.state, found.session_state) == ("pending", "gone")


def test_at_a_restart_waiting_holds_are_withdrawn_and_rejected_ones_stay_decidable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "airlock.db"
    first = ApprovalStore(path)
    waited = first.create(new(session="s1"), NOW)
    rejected = first.create(replace(new(session="s2"), hold="reject"), NOW)
    first.close()
    second = ApprovalStore(path)
    assert second.withdraw_orphaned_holds(reason="the gateway restarted", now=NOW + 5) == 1
    second.sessions_gone()
    found = second.get(waited.id)
    assert (found.state, found.session_state, found.reason) == (
        "withdrawn",
        "gone",
        "the gateway restarted",
    )
    with pytest.raises(AlreadyDecided, match="was withdrawn \\(the gateway restarted\\)"):
        second.approve(
            waited.id,
            approver="dba-1",
            approver_groups=["oncall-dba"],
            scope="statement",
            expires_at=NOW + 60,
            comment=None,
            now=NOW + 6,
        )
    assert second.get(rejected.id).state == "pending"


def test_who_may_decide() -> None:
    def refusal(approver: str, groups: tuple[str, ...]) -> str | None:
        return refusal_to_decide(
            approver_subject=approver,
            approver_groups=groups,
            requester_subject="agent-1",
            allowed_groups=("oncall-dba",),
        )

    assert refusal("dba-1", ("oncall-dba",)) is None
    assert "own request" in (refusal("agent-1", ("oncall-dba",)) or "")
    assert "oncall-dba" in (refusal("dev-1", ("developers",)) or "")


def test_grants_are_capped_by_grant_ttl() -> None:
    assert grant_expiry(NOW, None, 900) == NOW + 900
    assert grant_expiry(NOW, 60, 900) == NOW + 60
    assert grant_expiry(NOW, 3600, 900) == NOW + 900
    with pytest.raises(ValueError, match="positive"):
        grant_expiry(NOW, 0, 900)


def test_the_reason_and_preview_are_kept_with_the_request(store: ApprovalStore) -> None:
    created = store.create(replace(new(), why="restock after audit #123"), now=1000.0)
    assert store.get(created.id).preview is None
    store.set_preview(created.id, {"state": "done", "explain": {"estimated_rows": 3}})
    again = store.get(created.id)
    assert again.request.why == "restock after audit #123"
    assert again.to_json()["why"] == "restock after audit #123"
    assert again.to_json()["preview"] == {"state": "done", "explain": {"estimated_rows": 3}}


def test_a_store_made_before_reasons_and_previews_gains_their_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:  # the schema as it was before
        old.executescript(
            _SCHEMA.replace("    why             TEXT,\n", "").replace(
                "    used_at         REAL,\n    preview_json    TEXT,\n    gateway_id      TEXT,\n"
                "    transaction_state TEXT\n",
                "    used_at         REAL\n",
            )
        )
        columns = {row[1] for row in old.execute("PRAGMA table_info(approvals)")}
        assert "why" not in columns
        assert "preview_json" not in columns
        assert "gateway_id" not in columns
    old_store = ApprovalStore(path)
    created = old_store.create(replace(new(), why="because"), now=1.0)
    old_store.set_preview(created.id, {"state": "running"})
    assert old_store.get(created.id).request.why == "because"
    assert old_store.get(created.id).preview == {"state": "running"}
    old_store.close()


def test_list_filters_by_states_requester_and_target_and_pages(store: ApprovalStore) -> None:
    made = [store.create(new(session=f"s{n}"), NOW + n) for n in range(5)]
    other = store.create(replace(new(), subject="agent-2", target="billing"), NOW + 10)
    store.deny(made[0].id, approver="dba-1", approver_groups=["oncall-dba"], reason="no", now=NOW)
    store.withdraw(made[1].id, reason="cancelled", now=NOW)
    assert [r.id for r in store.list(["denied", "withdrawn"])] == [made[1].id, made[0].id]
    assert [r.id for r in store.list(subject="agent-2")] == [other.id]
    assert [r.id for r in store.list(target="orders", limit=2)] == [made[4].id, made[3].id]
    assert [r.id for r in store.list(target="orders", limit=2, offset=2)] == [
        made[2].id,
        made[1].id,
    ]
    assert store.list("pending", target="billing", subject="agent-1") == []


def test_times_requested_counts_the_same_statement_by_the_same_identity_and_target(
    store: ApprovalStore,
) -> None:
    first = store.create(new("delete from t where id = 1"), NOW)
    assert store.times_requested(first) == 1
    store.create(new("delete from t where id = 2"), NOW + 1)  # the same but for its literal
    store.create(new("delete from t where id = 1"), NOW + 2)
    store.create(new("delete from u where id = 1"), NOW + 3)  # another statement
    store.create(replace(new("delete from t where id = 1"), subject="agent-2"), NOW + 4)
    store.create(replace(new("delete from t where id = 1"), target="billing"), NOW + 5)
    assert store.times_requested(first) == 3


def test_a_request_keeps_the_session_transaction_state(store: ApprovalStore) -> None:
    made = store.create(replace(new(), transaction="read only"), NOW)
    assert store.get(made.id).request.transaction == "read only"
    assert store.get(made.id).to_json()["transaction"] == "read only"
    assert store.get(store.create(new(key="k2"), NOW).id).to_json()["transaction"] is None


def test_a_store_made_before_the_transaction_column_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    old_schema = _SCHEMA.replace(",\n    transaction_state TEXT\n", "\n")
    assert "transaction_state" not in old_schema
    db.executescript(old_schema)
    db.execute(
        "INSERT INTO approvals (id, state, session_id, session_state, subject, groups_json,"
        " target, protocol, sql, params_json, params_key, class, reasons_json, hold,"
        " approvers_json, grant_ttl_s, created_at) VALUES ('apr_old', 'pending', 's0', 'open',"
        " 'agent-1', '[]', 'orders', 'postgres', 'delete from t', '[]', 'k', 'write', '[]',"
        " 'wait', '[]', 60, 1)"
    )
    db.commit()
    db.close()
    store = ApprovalStore(path)
    old = store.get("apr_old")
    assert old.request.sql == "delete from t"
    assert old.request.transaction is None
    made = store.create(replace(new(), transaction="idle"), NOW)
    store.close()
    assert ApprovalStore(path).get(made.id).request.transaction == "idle"


# --- the two-person rule


def approve_as(
    store: ApprovalStore, request_id: str, approver: str, scope: str = "statement", ttl: float = 60
) -> ApprovalRequest:
    return store.approve(
        request_id,
        approver=approver,
        approver_groups=["oncall-dba"],
        scope=scope,
        expires_at=NOW + ttl,
        comment=f"ok from {approver}",
        now=NOW,
    )


def test_a_request_needing_two_approvers_is_approved_by_the_second_distinct_one(
    store: ApprovalStore,
) -> None:
    request = store.create(replace(new(), approvals_required=2), NOW)
    once = approve_as(store, request.id, "dba-1", scope="session", ttl=600)
    assert (once.state, once.approvals_missing) == ("pending", 1)
    assert once.to_json()["approvals_received"] == 1
    with pytest.raises(AlreadyApproved, match=r"dba-1 already approved .* 1 more approval from"):
        approve_as(store, request.id, "dba-1")
    assert store.get(request.id).approvals_missing == 1
    twice = approve_as(store, request.id, "dba-2", scope="session", ttl=60)
    assert (twice.state, twice.decided_by, twice.approvals_missing) == ("approved", "dba-2", 0)
    # Both asked for a session grant; it ends at the earlier expiry.
    assert (twice.scope, twice.expires_at) == ("session", NOW + 60)
    assert [d.by for d in twice.decisions] == ["dba-1", "dba-2"]
    with pytest.raises(AlreadyDecided):
        approve_as(store, request.id, "dba-3")


def test_one_approver_choosing_statement_scope_makes_the_grant_a_statement_grant(
    store: ApprovalStore,
) -> None:
    request = store.create(replace(new(), approvals_required=2), NOW)
    approve_as(store, request.id, "dba-1", scope="statement")
    assert approve_as(store, request.id, "dba-2", scope="session").scope == "statement"


def test_a_denial_after_an_approval_denies_and_keeps_both_decisions(
    store: ApprovalStore,
) -> None:
    request = store.create(replace(new(), approvals_required=2), NOW)
    approve_as(store, request.id, "dba-1")
    denied = store.deny(
        request.id, approver="dba-1", approver_groups=["oncall-dba"], reason="second thoughts",
        now=NOW + 1,
    )  # fmt: skip
    assert denied.state == "denied"
    # An approver who approves then denies leaves only the denial.
    assert [(d.by, d.verdict) for d in denied.decisions] == [("dba-1", "deny")]
    assert denied.to_json()["decisions"][0]["reason"] == "second thoughts"


def test_history_filters_by_state_requester_target_and_time(store: ApprovalStore) -> None:
    first = store.create(new(), NOW)
    other = store.create(replace(new(), subject="agent-2", target="billing"), NOW + 10)
    store.withdraw(first.id, reason="the client disconnected", now=NOW + 20)
    assert [r.id for r in store.list("withdrawn")] == [first.id]
    assert [r.id for r in store.list(requester="agent-2")] == [other.id]
    assert [r.id for r in store.list(target="orders")] == [first.id]
    assert [r.id for r in store.list(since=NOW + 5)] == [other.id]
    assert [r.id for r in store.list()] == [other.id, first.id]
    assert store.list("pending", requester="agent-1") == []


def test_an_older_store_gains_the_decisions_table_with_its_past_decisions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    schema = _SCHEMA.split("CREATE TABLE IF NOT EXISTS decisions")[0]
    old.executescript(schema)
    old.execute(
        "INSERT INTO approvals (id, state, session_id, session_state, subject, groups_json,"
        " target, protocol, sql, params_json, params_key, class, reasons_json, hold,"
        " approvers_json, grant_ttl_s, created_at, decided_at, decided_by,"
        " decided_groups_json, scope, expires_at, comment)"
        " VALUES ('apr_old', 'approved', 's0', 'gone', 'agent-1', '[]', 'orders',"
        " 'postgres', 'update t set a = 1', '[]', 'k', 'write', '[]', 'wait',"
        " '[\"oncall-dba\"]', 900, ?, ?, 'dba-1', '[\"oncall-dba\"]', 'statement', ?, 'fine')",
        (NOW, NOW + 5, NOW + 65),
    )
    old.commit()
    old.close()
    store = ApprovalStore(path)
    migrated = store.get("apr_old")
    assert migrated.request.approvals_required == 1
    assert [(d.by, d.verdict, d.comment) for d in migrated.decisions] == [
        ("dba-1", "approve", "fine")
    ]
    store.close()
    assert ApprovalStore(path).get("apr_old").decisions == migrated.decisions  # once only
