"""Access rules: which groups may reach which targets, and what each statement class needs.

A rule matches a client when the client's groups intersect the rule's groups and
the target is one of the rule's targets. Precedence when several rules match:
the strictest answer wins per class (deny > approve > allow), approver groups are
the union, the hold mode is `wait` only if every matching rule says `wait`, and
the shortest timeout/ttl wins, and a class needs as many distinct approvers as the
most demanding rule asks (`unknown` as many as any class). Stricter-wins means
adding a rule can never loosen what another rule already demands of a group.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field


class Action(enum.Enum):
    ALLOW = "allow"
    APPROVE = "approve"
    DENY = "deny"


_STRICTNESS = {Action.ALLOW: 0, Action.APPROVE: 1, Action.DENY: 2}


class HoldMode(enum.Enum):
    WAIT = "wait"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class Preview:
    """What an approver is shown of a held write before deciding (a rule's `preview`):
    the server's plan and estimated rows (`explain`), and, opt-in, a `dry_run` (the
    statement run in a transaction that is rolled back), each within `timeout_s`."""

    explain: bool = True
    dry_run: bool = False
    timeout_s: float = 2.0


#: Statement classes, in the order of the SPEC.
STATEMENT_CLASSES = ("read", "write", "ddl", "admin", "unknown")


@dataclass(frozen=True, slots=True)
class Rule:
    groups: frozenset[str]
    targets: frozenset[str]
    read: Action = Action.ALLOW
    write: Action = Action.APPROVE
    ddl: Action = Action.DENY
    admin: Action = Action.DENY
    unknown: Action = Action.APPROVE
    approvers: frozenset[str] = frozenset()
    hold: HoldMode = HoldMode.WAIT
    hold_timeout_s: float = 300.0
    grant_ttl_s: float = 900.0
    session_ttl_s: float = 3600.0
    #: Where this rule's approval requests are announced, besides the global webhooks
    #: (opaque here: the gateway's endpoint objects).
    webhooks: tuple[object, ...] = ()
    preview: Preview = Preview()
    #: How many distinct approvers a class needs (the two-person rule), as (class, count)
    #: pairs; a class not listed needs one.
    approvals_required: tuple[tuple[str, int], ...] = ()

    def action_for(self, statement_class: str) -> Action:
        action: Action = getattr(self, statement_class)
        return action

    def approvals_for(self, statement_class: str) -> int:
        return dict(self.approvals_required).get(statement_class, 1)


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """What the matching rules add up to for one client on one target."""

    actions: dict[str, Action]
    approvers: frozenset[str]
    hold: HoldMode
    hold_timeout_s: float
    grant_ttl_s: float
    session_ttl_s: float
    webhooks: tuple[object, ...] = ()
    preview: Preview = Preview()
    #: Distinct approvers each class needs; 1 when absent.
    approvals_required: dict[str, int] = field(default_factory=dict)

    def action_for(self, statement_class: str) -> Action:
        # `unknown` (or anything unexpected) is treated as the strictest class.
        return self.actions.get(statement_class, self.actions["unknown"])

    def approvals_for(self, statement_class: str) -> int:
        """How many distinct approvers a held statement of this class needs."""
        if statement_class not in STATEMENT_CLASSES:  # anything unexpected: as unknown
            statement_class = "unknown"
        return self.approvals_required.get(statement_class, 1)


def matching_rules(rules: Iterable[Rule], groups: Iterable[str], target: str) -> list[Rule]:
    group_set = frozenset(groups)
    return [r for r in rules if target in r.targets and r.groups & group_set]


def effective_policy(
    rules: Iterable[Rule], groups: Iterable[str], target: str
) -> EffectivePolicy | None:
    """Combine the rules that match; None when no rule matches (the client is refused)."""
    matched = matching_rules(rules, groups, target)
    if not matched:
        return None
    actions: dict[str, Action] = {}
    for cls in STATEMENT_CLASSES:
        actions[cls] = max((r.action_for(cls) for r in matched), key=_STRICTNESS.__getitem__)
    # unknown is never looser than any other class
    actions["unknown"] = max(actions.values(), key=_STRICTNESS.__getitem__)
    # The most approvers any matching rule asks for; unknown needs the most of any class.
    required = {cls: max(r.approvals_for(cls) for r in matched) for cls in STATEMENT_CLASSES}
    required["unknown"] = max(required.values())
    return EffectivePolicy(
        actions=actions,
        approvers=frozenset().union(*(r.approvers for r in matched)),
        hold=HoldMode.WAIT if all(r.hold is HoldMode.WAIT for r in matched) else HoldMode.REJECT,
        hold_timeout_s=min(r.hold_timeout_s for r in matched),
        grant_ttl_s=min(r.grant_ttl_s for r in matched),
        session_ttl_s=min(r.session_ttl_s for r in matched),
        webhooks=tuple(dict.fromkeys(w for r in matched for w in r.webhooks)),
        # A dry run executes the write (rolled back): only when every matching rule opts in.
        preview=Preview(
            explain=all(r.preview.explain for r in matched),
            dry_run=all(r.preview.dry_run for r in matched),
            timeout_s=min(r.preview.timeout_s for r in matched),
        ),
        approvals_required={cls: n for cls, n in required.items() if n > 1},
    )


def transcript_refusal(groups: frozenset[str], auditors: frozenset[str]) -> str | None:
    """Why a caller in `groups` may not read transcripts; None when it may (only members
    of the config's `auditors` groups do)."""
    if groups & auditors:
        return None
    listed = ", ".join(sorted(auditors)) or "(none configured)"
    return f"only the auditors groups ({listed}) may read transcripts"


class RequestSight(enum.Enum):
    """What a caller may do with an approval request they ask about."""

    HIDDEN = "hidden"  # answered as if it did not exist (404): not even its existence
    READ = "read"  # its requester and the auditors: see it, decide nothing
    DECIDE = "decide"  # a member of its approver groups who did not ask for it


def request_sight(
    *,
    viewer_subject: str,
    viewer_groups: frozenset[str],
    requester_subject: str,
    approver_groups: Iterable[str],
    auditors: frozenset[str],
) -> RequestSight:
    """Who sees an approval request (its SQL and bound parameters): its requester, the
    members of the approver groups of the rules that held it (as recorded when it was
    held, so a later config change does not widen who saw it), and the auditors
    read-only; to anyone else it does not exist. A requester who is also an approver
    still only reads: nobody decides their own request."""
    if viewer_subject == requester_subject:
        return RequestSight.READ
    if viewer_groups & frozenset(approver_groups):
        return RequestSight.DECIDE
    if viewer_groups & auditors:
        return RequestSight.READ
    return RequestSight.HIDDEN
