"""Approval requests in the running gateway: the store, the waiting sessions, webhooks.

A session holding a statement calls `request()` and then `wait()`. An approver's
decision (through the API) goes through `approve()` or `deny()`, which check who
decides (policy/approvals.py), record the decision in the store, wake the
waiting session, if any, and notify the webhooks. A request that needs several
approvers (the two-person rule) stays pending until enough distinct ones have
approved; each approval before the last is told to the waiting session (which
records it) and to the webhooks (`approval.partially_approved`). Everything here
runs on the event loop; the store's calls are short synchronous statements (SQLite,
or the shared PostgreSQL store).

With a shared store the decision may be made through another gateway: the store
then calls `wake` (proxy/approvals/store_pg.py `follow`) with the request's id on its
notification, or with None after a reconnect and every poll interval, and the
waiting session's request is re-read from the store. (An approval through another
gateway that leaves a request pending is not told to the waiting session: its
transcript records the decision that settles the request.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from policy.approvals import grant_expiry, refusal_to_decide
from policy.identity import Identity
from proxy.approvals.store import (
    PENDING,
    AlreadyDecided,
    ApprovalRequest,
    ApprovalStore,
    NewRequest,
    StoreUnavailable,
)

log = logging.getLogger("airlock.approvals")
#: Timed-out requests whose time of timing out is remembered (for the web page).
_TIMED_OUT_KEPT = 10_000


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
        #: request id -> when its waiting agent stops waiting (a `hold: wait` being waited on)
        self._deadlines: dict[str, float] = {}
        #: request id -> when its agent stopped waiting, the timeout having passed (the
        #: request stays pending: approving it lets the agent retry); the latest kept.
        self._timed_out: dict[str, float] = {}
        self._watchers: list[Callable[[str, str], None]] = []

    # --- who watches the requests change (the web page's live updates)

    def watch(self, watcher: Callable[[str, str], None]) -> Callable[[], None]:
        """Call `watcher(change, request_id)` whenever a request is made (`requested`),
        decided or withdrawn (`settled`), its agent stops waiting (`timed_out`: it stays
        pending) or it loses its session (`session_gone`, with the session's id for the
        request id). Returns the function that stops watching.
        Watchers run on the event loop and must not block or raise."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None

    def _changed(self, change: str, request_id: str) -> None:
        for watcher in tuple(self._watchers):
            try:
                watcher(change, request_id)
            except Exception:
                log.exception("a watcher of approval changes failed")

    def wait_deadline(self, request_id: str) -> float | None:
        """When the agent waiting for this request stops waiting; None when no agent
        waits on it (a `hold: reject`, a timeout passed, or a session that is gone)."""
        return self._deadlines.get(request_id)

    def timed_out_at(self, request_id: str) -> float | None:
        """When the agent stopped waiting for this pending request, its timeout having
        passed (as far as this process knows)."""
        return self._timed_out.get(request_id)

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
        self._changed("requested", created.id)
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
        try:
            current = self.store.get(request_id)
            if current.state != PENDING:
                return current
        except StoreUnavailable:
            pass  # created a moment ago; re-read when the store is back (`wake`)
        future = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        self._deadlines[request_id] = self.clock() + timeout_s
        if on_progress is not None:
            self._progress[request_id] = on_progress
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            while len(self._timed_out) >= _TIMED_OUT_KEPT:
                del self._timed_out[next(iter(self._timed_out))]
            self._timed_out[request_id] = self.clock()
            self._changed("timed_out", request_id)
            self._stopped_waiting(request_id)
            return None
        finally:
            self._waiters.pop(request_id, None)
            self._deadlines.pop(request_id, None)
            self._progress.pop(request_id, None)

    def _stopped_waiting(self, request_id: str) -> None:
        try:
            request = self.store.get(request_id)
        except StoreUnavailable:
            return
        if request.state == PENDING:
            log.info("approval %s: its agent stopped waiting; it stays pending", request_id)
            self._notify("approval.timed_out", request)

    def withdraw(self, request_id: str, reason: str) -> ApprovalRequest | None:
        """Withdraw a pending request (a client cancel); None if it was decided already."""
        try:
            request = self.store.withdraw(request_id, reason=reason, now=self.clock())
        except AlreadyDecided:
            return None
        except StoreUnavailable as error:
            # The statement never runs (its session stops waiting for it); the request
            # is withdrawn when the gateway stops, or by the others if it dies.
            log.warning("approval %s not withdrawn (%s): %s", request_id, reason, error)
            return None
        log.info("approval %s withdrawn: %s", request_id, reason)
        self._settled(request)
        return request

    def sessions_gone(self, session_ids: Sequence[str]) -> None:
        try:
            self.store.sessions_gone(session_ids)
        except StoreUnavailable as error:
            log.warning(
                "sessions %s not marked gone in the store: %s", ", ".join(session_ids), error
            )
        for session_id in session_ids:
            self._changed("session_gone", session_id)

    def wake(self, request_id: str | None) -> None:
        """A request may have been decided elsewhere (None: any of them): wake the
        sessions here whose requests are no longer pending."""
        if request_id is None:
            waiting = list(self._waiters)
        elif request_id in self._waiters:
            waiting = [request_id]
        else:
            return
        if not waiting:
            return
        try:
            found = self.store.get_many(waiting)
        except StoreUnavailable:
            return  # the store calls again (with None) once it is back
        for request in found:
            if request.state != PENDING:
                waiter = self._waiters.get(request.id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(request)

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
            self._changed("partially_approved", request_id)
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
        self._timed_out.pop(request.id, None)
        self._changed("settled", request.id)

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
