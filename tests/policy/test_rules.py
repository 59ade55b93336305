"""Rule precedence: when several rules match a client, the strictest answer wins."""

from __future__ import annotations

from policy.rules import Action, HoldMode, Rule, effective_policy


def rule(groups: set[str], targets: set[str] | None = None, **fields: object) -> Rule:
    return Rule(groups=frozenset(groups), targets=frozenset(targets or {"orders"}), **fields)  # type: ignore[arg-type]


def test_no_matching_rule_means_no_policy() -> None:
    rules = [rule({"agents"}), rule({"dbas"}, {"billing"})]
    assert effective_policy(rules, ["dbas"], "orders") is None
    assert effective_policy(rules, ["strangers"], "billing") is None
    assert effective_policy(rules, ["agents"], "orders") is not None


def test_the_strictest_action_wins_per_class() -> None:
    loose = rule({"agents"}, write=Action.ALLOW, ddl=Action.APPROVE, unknown=Action.ALLOW)
    strict = rule({"auditors"}, write=Action.APPROVE, ddl=Action.DENY, unknown=Action.ALLOW)
    policy = effective_policy([loose, strict], ["agents", "auditors"], "orders")
    assert policy is not None
    assert policy.action_for("read") is Action.ALLOW
    assert policy.action_for("write") is Action.APPROVE
    assert policy.action_for("ddl") is Action.DENY
    # a rule only for other groups changes nothing
    only_loose = effective_policy([loose, strict], ["agents"], "orders")
    assert only_loose is not None
    assert only_loose.action_for("write") is Action.ALLOW


def test_unknown_is_never_looser_than_any_other_class() -> None:
    policy = effective_policy(
        [rule({"agents"}, admin=Action.DENY, unknown=Action.APPROVE)], ["agents"], "orders"
    )
    assert policy is not None
    assert policy.action_for("unknown") is Action.DENY
    assert policy.action_for("something new") is Action.DENY


def test_approvers_are_the_union_and_the_hold_waits_only_if_every_rule_waits() -> None:
    a = rule({"agents"}, approvers=frozenset({"dba"}), hold=HoldMode.WAIT, hold_timeout_s=600)
    b = rule({"etl"}, approvers=frozenset({"oncall"}), hold=HoldMode.REJECT, hold_timeout_s=60)
    policy = effective_policy([a, b], ["agents", "etl"], "orders")
    assert policy is not None
    assert policy.approvers == {"dba", "oncall"}
    assert policy.hold is HoldMode.REJECT
    assert policy.hold_timeout_s == 60


def test_the_shortest_lifetimes_win() -> None:
    a = rule({"agents"}, grant_ttl_s=900, session_ttl_s=3600)
    b = rule({"etl"}, grant_ttl_s=60, session_ttl_s=7200)
    policy = effective_policy([a, b], ["agents", "etl"], "orders")
    assert policy is not None
    assert (policy.grant_ttl_s, policy.session_ttl_s) == (60, 3600)


def test_webhooks_of_every_matching_rule_apply_once_each() -> None:
    a = rule({"agents"}, webhooks=("hook-a", "shared"))
    b = rule({"etl"}, webhooks=("shared", "hook-b"))
    policy = effective_policy([a, b], ["agents", "etl"], "orders")
    assert policy is not None
    assert policy.webhooks == ("hook-a", "shared", "hook-b")


def test_a_class_needs_as_many_approvers_as_the_most_demanding_rule_and_unknown_the_most() -> None:
    two_for_ddl = rule({"agents"}, ddl=Action.APPROVE, approvals_required=(("ddl", 2),))
    three_for_write = rule({"etl"}, approvals_required=(("write", 3),))
    policy = effective_policy([two_for_ddl, three_for_write], ["agents", "etl"], "orders")
    assert policy is not None
    assert (policy.approvals_for("ddl"), policy.approvals_for("write")) == (2, 3)
    assert policy.approvals_for("read") == 1
    assert policy.approvals_for("unknown") == 3
    assert policy.approvals_for("something new") == 3
    only_agents = effective_policy([two_for_ddl, three_for_write], ["agents"], "orders")
    assert only_agents is not None
    assert (only_agents.approvals_for("ddl"), only_agents.approvals_for("write")) == (2, 1)
