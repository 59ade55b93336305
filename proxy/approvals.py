"""Approval requests in the running gateway: the store, the waiting sessions, webhooks.

A session holding a statement calls `request()` and then `wait()`. An approver's
decision (through the API) goes through `approve()` or `deny()`, which check who
decides (policy/approvals.py), record the decision in the store, wake the
waiting session, if any, and notify the webhooks. A request that needs several
approvers (the two-person rule) stays pending until enough distinct ones have
approved; each approval before the last is told to the waiting session (which
records it) and to the webhooks (`approval.partially_approved`). Everything here runs on the
event loop; the store's calls are short synchronous SQLite statements.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from policy.approvals import grant_expiry, refusal_to_decide
from policy.identity import Identity
from proxy.store import (
    PENDING,
    AlreadyDecided,
    ApprovalRequest,
    ApprovalStore,
    NewRequest,
)

log = logging.getLogger("airlock.approvals")


class NotAllowedToDecide(Exception):
    pass


class Notifier(Protocol):
    def notify(self, event_type: str, data: dict[str, Any], endpoints: Sequence[Any]) -> None: ...


class ApprovalHub:
    def __init__(
        self,
        store: ApprovalStore,
        *,
        notifier: Notifier | None = None,
        global_webhooks: Sequence[Any] = (),
        clock: Callable[[], float],
        public_url: str | None = None,
    ) -> None:
        self.store = store
        self.public_url = public_url
        self.notifier = notifier
        self.global_webhooks = tuple(global_webhooks)
        self.clock = clock
        self._waiters: dict[str, asyncio.Future[ApprovalRequest]] = {}
        #: request id -> what the waiting session does with an approval that is not the last
        self._progress: dict[str, Callable[[ApprovalRequest], None]] = {}
        self._webhooks: dict[str, tuple[Any, ...]] = {}  # request id -> its rules' endpoints

    # --- the requesting side

    def request(self, new: NewRequest, webhooks: Sequence[Any] = ()) -> ApprovalRequest:
        created = self.store.create(new, self.clock())
        self._webhooks[created.id] = tuple(webhooks)
        log.info(
            "approval %s requested by %s on %s: %s statement",
            created.id,
            new.subject,
            new.target,
            new.statement_class,
        )
        self._notify("approval.requested", created)
        return created

    async def wait(
        self,
        request_id: str,
        timeout_s: float,
        on_progress: Callable[[ApprovalRequest], None] | None = None,
    ) -> ApprovalRequest | None:
        """The request once decided or withdrawn; None when timeout_s passes first.
        `on_progress` is called with the request after each approval that leaves it
        pending (it needs more approvers)."""
        current = self.store.get(request_id)
        if current.state != PENDING:
            return current
        future = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        if on_progress is not None:
            self._progress[request_id] = on_progress
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            self._timed_out(request_id)
            return None
        finally:
            self._waiters.pop(request_id, None)
            self._progress.pop(request_id, None)

    def _timed_out(self, request_id: str) -> None:
        request = self.store.get(request_id)
        if request.state == PENDING:
            log.info("approval %s: its agent stopped waiting; it stays pending", request_id)
            self._notify("approval.timed_out", request)

    def withdraw(self, request_id: str, reason: str) -> ApprovalRequest | None:
        """Withdraw a pending request (a client cancel); None if it was decided already."""
        try:
            request = self.store.withdraw(request_id, reason=reason, now=self.clock())
        except AlreadyDecided:
            return None
        log.info("approval %s withdrawn: %s", request_id, reason)
        self._settled(request)
        return request

    def sessions_gone(self, session_ids: Sequence[str]) -> None:
        self.store.sessions_gone(session_ids)

    # --- the deciding side

    def approve(
        self,
        request_id: str,
        approver: Identity,
        *,
        scope: str = "statement",
        ttl_s: float | None = None,
        comment: str | None = None,
    ) -> ApprovalRequest:
        request = self._check_decider(request_id, approver)
        now = self.clock()
        decided = self.store.approve(
            request_id,
            approver=approver.subject,
            approver_groups=sorted(approver.groups),
            scope=scope,
            expires_at=grant_expiry(now, ttl_s, request.request.grant_ttl_s),
            comment=comment,
            now=now,
        )
        if decided.state == PENDING:
            log.info(
                "approval %s approved by %s (scope %s): %d of %d approvals",
                request_id,
                approver.subject,
                scope,
                len(decided.approvals),
                decided.request.approvals_required,
            )
            progress = self._progress.get(request_id)
            if progress is not None:
                progress(decided)
            self._notify("approval.partially_approved", decided)
            return decided
        log.info("approval %s approved by %s (scope %s)", request_id, approver.subject, scope)
        self._settled(decided)
        return decided

    def deny(self, request_id: str, approver: Identity, *, reason: str) -> ApprovalRequest:
        self._check_decider(request_id, approver)
        decided = self.store.deny(
            request_id,
            approver=approver.subject,
            approver_groups=sorted(approver.groups),
            reason=reason,
            now=self.clock(),
        )
        log.info("approval %s denied by %s", request_id, approver.subject)
        self._settled(decided)
        return decided

    def _check_decider(self, request_id: str, approver: Identity) -> ApprovalRequest:
        request = self.store.get(request_id)  # UnknownRequest
        refusal = refusal_to_decide(
            approver_subject=approver.subject,
            approver_groups=approver.groups,
            requester_subject=request.request.subject,
            allowed_groups=request.request.approver_groups,
        )
        if refusal is not None:
            raise NotAllowedToDecide(refusal)
        if request.state != PENDING:
            raise AlreadyDecided(request)
        return request

    def _settled(self, request: ApprovalRequest) -> None:
        waiter = self._waiters.get(request.id)
        if waiter is not None and not waiter.done():
            waiter.set_result(request)
        # Approved, denied or withdrawn: whoever was told of the request hears it is settled.
        self._notify("approval.decided", request)
        self._webhooks.pop(request.id, None)

    def page_url(self, request_id: str) -> str | None:
        """The request's card on the web page, when `web.public_url` is configured."""
        if self.public_url is None:
            return None
        return f"{self.public_url}/#request-{request_id}"

    def _notify(self, event_type: str, request: ApprovalRequest) -> None:
        if self.notifier is None:
            return
        endpoints = self.global_webhooks + self._webhooks.get(request.id, ())
        if endpoints:
            data = request.to_json()
            url = self.page_url(request.id)
            if url is not None:
                data["url"] = url
            self.notifier.notify(event_type, data, endpoints)
