"""The hub tells its watchers (the web page's live updates) when requests change, and
when a waiting agent stops waiting."""

from __future__ import annotations

import asyncio
from pathlib import Path

from policy.identity import Identity
from proxy.approvals.hub import ApprovalHub
from proxy.approvals.store import ApprovalStore
from tests.proxy.test_store import NOW, new


def dba() -> Identity:
    return Identity(
        subject="dba-1", issuer="test", groups=frozenset({"oncall-dba"}), expires_at=NOW + 3600
    )


async def test_watchers_hear_of_requests_decisions_withdrawals_and_gone_sessions(
    tmp_path: Path,
) -> None:
    hub = ApprovalHub(ApprovalStore(tmp_path / "a.db"), clock=lambda: NOW)
    heard: list[tuple[str, str]] = []
    stop = hub.watch(lambda change, request_id: heard.append((change, request_id)))
    first = hub.request(new(session="s1"))
    second = hub.request(new(session="s2"))
    hub.approve(first.id, dba())
    hub.withdraw(second.id, "the client cancelled the statement")
    hub.sessions_gone(["s1"])
    assert heard == [
        ("requested", first.id),
        ("requested", second.id),
        ("settled", first.id),
        ("settled", second.id),
        ("session_gone", "s1"),
    ]
    stop()
    hub.request(new(session="s3"))
    assert len(heard) == 5


async def test_the_wait_deadline_is_known_while_an_agent_waits(tmp_path: Path) -> None:
    hub = ApprovalHub(ApprovalStore(tmp_path / "a.db"), clock=lambda: NOW)
    request = hub.request(new())
    assert hub.wait_deadline(request.id) is None
    waiting = asyncio.create_task(hub.wait(request.id, 30.0))
    await asyncio.sleep(0)
    assert hub.wait_deadline(request.id) == NOW + 30.0
    hub.approve(request.id, dba())
    assert (await waiting) is not None
    assert hub.wait_deadline(request.id) is None


async def test_a_wait_that_times_out_is_told_and_the_request_stays_pending(
    tmp_path: Path,
) -> None:
    hub = ApprovalHub(ApprovalStore(tmp_path / "a.db"), clock=lambda: NOW)
    heard: list[tuple[str, str]] = []
    hub.watch(lambda change, request_id: heard.append((change, request_id)))
    request = hub.request(new())
    assert await hub.wait(request.id, 0.01) is None
    assert heard[-1] == ("timed_out", request.id)
    assert hub.timed_out_at(request.id) == NOW
    assert hub.wait_deadline(request.id) is None
    assert hub.store.get(request.id).state == "pending"
    hub.approve(request.id, dba())
    assert hub.timed_out_at(request.id) is None
