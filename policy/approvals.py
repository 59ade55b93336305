"""Who may decide an approval request, and how long a grant lasts. Pure.

A request is decided only by a member of one of the approver groups of the
rules that held it, and never by its requester: the same subject cannot approve
its own statement even if it also belongs to an approver group. A grant lasts
what the approver asks for, never longer than the rule's grant_ttl.
"""

from __future__ import annotations

from collections.abc import Iterable


def refusal_to_decide(
    *,
    approver_subject: str,
    approver_groups: Iterable[str],
    requester_subject: str,
    allowed_groups: Iterable[str],
) -> str | None:
    """Why this approver may not decide the request; None when they may."""
    if approver_subject == requester_subject:
        return "nobody may decide their own request"
    allowed = frozenset(allowed_groups)
    if not allowed & frozenset(approver_groups):
        listed = ", ".join(sorted(allowed)) or "(none)"
        return f"only members of the approver groups ({listed}) may decide this request"
    return None


def grant_expiry(now: float, requested_ttl_s: float | None, grant_ttl_s: float) -> float:
    """When a grant ends: the requested TTL (the rule's by default), capped by grant_ttl."""
    if requested_ttl_s is None:
        return now + grant_ttl_s
    if requested_ttl_s <= 0:
        raise ValueError("ttl must be positive")
    return now + min(requested_ttl_s, grant_ttl_s)
