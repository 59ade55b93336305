"""Who sees an approval request: its requester, its approver groups, the auditors
(read-only); nobody else learns that it exists."""

from __future__ import annotations

import pytest

from policy.rules import RequestSight, request_sight

AUDITORS = frozenset({"auditors"})


@pytest.mark.parametrize(
    ("subject", "groups", "expected"),
    [
        ("agent-1", {"data-agents"}, RequestSight.READ),  # the requester
        ("agent-1", {"data-agents", "oncall-dba"}, RequestSight.READ),  # never decides its own
        ("dba-1", {"oncall-dba"}, RequestSight.DECIDE),
        ("dba-2", {"oncall-dba", "auditors"}, RequestSight.DECIDE),
        ("audit-1", {"auditors"}, RequestSight.READ),
        ("agent-2", {"data-agents"}, RequestSight.HIDDEN),  # same group as the requester
        ("dba-9", {"billing-dba"}, RequestSight.HIDDEN),  # another rule's approvers
        ("nobody", set(), RequestSight.HIDDEN),
        ("AGENT-1", {"data-agents"}, RequestSight.HIDDEN),  # subjects compare exactly
    ],
)
def test_who_sees_a_request(subject: str, groups: set[str], expected: RequestSight) -> None:
    sight = request_sight(
        viewer_subject=subject,
        viewer_groups=frozenset(groups),
        requester_subject="agent-1",
        approver_groups=("oncall-dba",),
        auditors=AUDITORS,
    )
    assert sight is expected


def test_a_request_with_no_approver_groups_is_seen_by_no_approver() -> None:
    sight = request_sight(
        viewer_subject="dba-1",
        viewer_groups=frozenset({"oncall-dba"}),
        requester_subject="agent-1",
        approver_groups=(),
        auditors=frozenset(),
    )
    assert sight is RequestSight.HIDDEN
