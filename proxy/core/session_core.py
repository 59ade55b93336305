"""The session core, sans-I/O: how a statement that needs a decision is decided, for
both protocols.

`SessionCore.handle` takes an event and returns the actions to carry out, in order;
it does no I/O and reads no clock. `GatedSession` is its asyncio adapter: it asks the
approval store and hub, waits, writes the transcript, and feeds the outcome back as
the next event. The hold is an action (`AwaitDecision`), and what can happen during
it are events: the decision, the deadline, a cancel, the client's close, the end of
the session's time, a failed transcript write.

A statement's life: `StatementReady` -> the judge (policy/judge.py). Allowed: `Forward`;
denied: `Refuse`; held: `LookUpSessionGrant` (an approval for the session granted after
an earlier statement stopped waiting), `UseStatementGrant` (an approval of exactly this
text and these values), else `RequestApproval` -> `ApprovalRequested` -> under `reject`
`Refuse` at once, under `wait` `AnnounceHold` and `AwaitDecision` -> `ApprovalDecided`
(`Record` it, `MakeDurable`, then `Forward` or `Refuse`) or `DeadlineReached` (`Refuse`;
the request stays pending). A statement held when the client cancels, closes, or the
session ends is `Withdraw`n: it never reaches the server.

The session's time: `SessionStarted` -> `SetDeadline` (the token's expiry, capped by
the rule's session_ttl counted from the start; and when to warn the client). A fresh
token for the session (`TokenOffered`, already verified like a login token) of the same
subject moves the deadline to its expiry, still capped (`Record`, `SetDeadline`,
`AnswerRefresh`); one of another subject is refused and changes nothing; one whose groups
no longer give the session's rules ends the session (fail closed: its rules were chosen
by groups the identity no longer has). `WarningDue` -> `WarnClient`, once per deadline;
`TimeUp` ends the session with the deadline's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policy.classify import Verdict
from policy.judge import Ruling, judge
from policy.rules import EffectivePolicy, HoldMode
from proxy.approvals.store import APPROVED, DENIED, WITHDRAWN, ApprovalRequest
from proxy.errors import (
    AirlockError,
    ApprovalStoreUnavailable,
    HoldTimedOut,
    QueryCanceled,
    RecordingFailed,
    RefreshRefused,
    SessionExpired,
    StatementDenied,
)
from proxy.parameters import Parameter
from proxy.recording.format import ApprovalDecided as RecordedDecision
from proxy.recording.format import ApprovalRequested as RecordedRequest
from proxy.recording.format import Parameter as RecordedParameter
from proxy.recording.format import TokenRefreshed

#: Why a held statement's request is withdrawn when its client closes the connection.
CLIENT_DISCONNECTED = "the client disconnected"
RECORDING_BROKE = "the gateway cannot record this session any more, so it ends it"
#: Why a session's time is up (the end reason, and the transcript's `session.end` reason).
TOKEN_EXPIRED = "the token expired"  # noqa: S105 (a reason)
SESSION_TTL = "session_ttl reached"
GROUPS_CHANGED = "the identity's groups changed"
#: Why the deadline is when it is, as an answer to a refresh shows it.
ENDS_BECAUSE = {TOKEN_EXPIRED: "token expires", SESSION_TTL: "session_ttl"}

# --- events


@dataclass(frozen=True, slots=True)
class StatementReady:
    """A client statement needs a decision (classified; off the relay's hot path)."""

    sql: str
    verdict: Verdict
    parameters: tuple[Parameter, ...]
    key: str  # proxy.parameters.parameters_key of what it binds
    now: float
    session_grant_until: float


@dataclass(frozen=True, slots=True)
class SessionGrantFound:
    grant: ApprovalRequest | None


@dataclass(frozen=True, slots=True)
class StatementGrantFound:
    grant: ApprovalRequest | None


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    request: ApprovalRequest


@dataclass(frozen=True, slots=True)
class ApprovalDecided:
    request: ApprovalRequest  # approved, denied or withdrawn


@dataclass(frozen=True, slots=True)
class DeadlineReached:
    """The hold's timeout passed without a decision."""


@dataclass(frozen=True, slots=True)
class Durable:
    """What was recorded so far is on disk."""


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """The client (or KILL QUERY) cancels the statement it waits on."""

    reason: str


@dataclass(frozen=True, slots=True)
class ClientClosed:
    detail: str | None = None  # why the connection broke; None: it was closed


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The session ended (by whatever ended it) while a statement was decided."""


@dataclass(frozen=True, slots=True)
class TimeUp:
    """The session's time is up: session_ttl, or the token's expiry."""

    reason: str


@dataclass(frozen=True, slots=True)
class RecordingBroke:
    """The transcript cannot be written (recording.on_failure: refuse)."""


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """The session relays from `now`: its time starts."""

    now: float
    subject: str
    token_expires_at: float
    session_ttl_s: float
    #: Warn the client this long before the end (0: never).
    warn_before_s: float


@dataclass(frozen=True, slots=True)
class TokenOffered:
    """A fresh token for this session, verified as a login token is."""

    subject: str
    expires_at: float
    token_id: str | None
    issued_at: float | None
    #: Its groups give the session's rules on its target (as the login token's did).
    same_rules: bool
    #: How it came: "api" or "statement" (in-band).
    via: str
    now: float


@dataclass(frozen=True, slots=True)
class WarningDue:
    """The time to warn the client of the session's end has come."""

    now: float


@dataclass(frozen=True, slots=True)
class Draining:
    """The gateway drains (SIGTERM): a held statement is refused, its request withdrawn,
    and so is any statement held from now on."""

    reason: str


@dataclass(frozen=True, slots=True)
class StoreFailed:
    """The approval store could not be reached while the statement was decided."""

    detail: str


Event = (
    StatementReady
    | SessionGrantFound
    | StatementGrantFound
    | ApprovalRequested
    | ApprovalDecided
    | DeadlineReached
    | Durable
    | CancelRequested
    | ClientClosed
    | SessionEnded
    | TimeUp
    | RecordingBroke
    | SessionStarted
    | TokenOffered
    | WarningDue
    | Draining
    | StoreFailed
)

# --- actions


@dataclass(frozen=True, slots=True)
class Forward:
    """The statement goes to the server; `decision` as the transcript says it."""

    decision: str


@dataclass(frozen=True, slots=True)
class Refuse:
    error: AirlockError
    decision: str


@dataclass(frozen=True, slots=True)
class LookUpSessionGrant:
    """Answer with SessionGrantFound: this session's valid grant, if any."""


@dataclass(frozen=True, slots=True)
class UseStatementGrant:
    """Answer with StatementGrantFound: use up a grant of this text and these values."""

    sql: str
    key: str


@dataclass(frozen=True, slots=True)
class GrantSession:
    """The gate lets statements that need approval run until `until`."""

    until: float


@dataclass(frozen=True, slots=True)
class UseGrant:
    """A statement grant approved while its statement waited is used up now."""

    request_id: str


@dataclass(frozen=True, slots=True)
class RequestApproval:
    """Answer with ApprovalRequested."""

    sql: str
    verdict: Verdict
    parameters: tuple[Parameter, ...]
    key: str
    hold: HoldMode


@dataclass(frozen=True, slots=True)
class Record:
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AnnounceHold:
    """Tell the client, if its protocol can, that its statement waits for `request`."""

    request: ApprovalRequest


@dataclass(frozen=True, slots=True)
class AwaitDecision:
    """The hold: answer with ApprovalDecided, or DeadlineReached after `timeout_s`."""

    request_id: str
    timeout_s: float


@dataclass(frozen=True, slots=True)
class MakeDurable:
    """Answer with Durable once what is recorded is on disk."""


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Withdraw the request a held statement waits for: nobody can approve it, and the
    statement never runs. The hub answers the hold with the withdrawn request."""

    request_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class EndSession:
    reason: str
    error: AirlockError | None = None
    cancel_running: bool = False


@dataclass(frozen=True, slots=True)
class SetDeadline:
    """The session ends at `end_at` (answer with TimeUp(reason) then), and the client is
    warned at `warn_at` (answer with WarningDue), unless None. Replaces earlier ones."""

    end_at: float
    reason: str
    warn_at: float | None


@dataclass(frozen=True, slots=True)
class WarnClient:
    """Tell the client, if its protocol can, that the session ends at `end_at`."""

    end_at: float
    reason: str
    left_s: float


@dataclass(frozen=True, slots=True)
class AnswerRefresh:
    """The answer to whoever offered the token: the session's new end, or why not."""

    end_at: float | None
    reason: str | None
    error: AirlockError | None = None


Action = (
    Forward
    | Refuse
    | LookUpSessionGrant
    | UseStatementGrant
    | GrantSession
    | UseGrant
    | RequestApproval
    | Record
    | AnnounceHold
    | AwaitDecision
    | MakeDurable
    | Withdraw
    | EndSession
    | SetDeadline
    | WarnClient
    | AnswerRefresh
)


class SessionCore:
    """One session's decisions. One statement is decided at a time (the relays hold the
    client's next messages meanwhile)."""

    def __init__(self, policy: EffectivePolicy | None, target: str) -> None:
        #: The session's rules (None until login found them: nothing is decided then,
        #: but the session can still end).
        self.policy = policy
        self.target = target
        #: The approval request the held statement waits for.
        self.waiting: str | None = None
        self.ended = False
        self._statement: StatementReady | None = None
        self._request_id: str | None = None  # the statement's approval request
        self._decided: ApprovalRequest | None = None
        # The session's time (see SessionStarted).
        self.subject: str | None = None
        self.end_at: float | None = None
        self.end_reason: str | None = None
        self._ttl_end_at = 0.0
        self._warn_before_s = 0.0
        self._warned = False
        #: Why the gateway drains (Draining): a held statement is refused with it.
        self.draining: str | None = None

    def handle(self, event: Event) -> list[Action]:
        if isinstance(event, StatementReady):
            return self._ready(event)
        if isinstance(event, SessionGrantFound):
            grant = event.grant
            if grant is not None and grant.expires_at is not None:
                # Approved for this session after a statement stopped waiting (reject
                # mode, a timeout): the session holds the grant from now on.
                approved = f"approved for the session ({grant.id})"
                return [GrantSession(grant.expires_at), self._forward(approved)]
            statement = self._current()
            return [UseStatementGrant(statement.sql, statement.key)]
        if isinstance(event, StatementGrantFound):
            if event.grant is not None:
                return [self._forward(f"approved ({event.grant.id})")]
            s = self._current()
            return [RequestApproval(s.sql, s.verdict, s.parameters, s.key, self._rules().hold)]
        if isinstance(event, ApprovalRequested):
            return self._requested(event.request)
        if isinstance(event, ApprovalDecided):
            return self._decided_now(event.request)
        if isinstance(event, DeadlineReached):
            request_id, self.waiting = self.waiting, None
            return [self._refuse(HoldTimedOut(
                f"approval request {request_id} was not decided in time; it stays pending",
                hint=f"once `airlock approve {request_id}` is run, retry the same statement",
            ), f"hold timed out ({request_id})")]  # fmt: skip
        if isinstance(event, Durable):
            return self._durable()
        if isinstance(event, SessionEnded):
            self.ended = True
            return self._session_ended()
        if isinstance(event, CancelRequested):
            return self._withdraw(event.reason)
        if isinstance(event, Draining):
            self.draining = event.reason
            return self._withdraw(event.reason)
        if isinstance(event, ClientClosed):
            reason = "client closed the connection"
            if event.detail is not None:
                reason = f"client connection lost: {event.detail}"
            return self._end(CLIENT_DISCONNECTED, EndSession(reason, cancel_running=True))
        if isinstance(event, TimeUp):
            return self._time_up(event.reason)
        if isinstance(event, SessionStarted):
            self.subject, self._warn_before_s = event.subject, event.warn_before_s
            self._ttl_end_at = event.now + event.session_ttl_s
            return [self._deadline(event.token_expires_at)]
        if isinstance(event, TokenOffered):
            return self._offered(event)
        if isinstance(event, WarningDue):
            if self.ended or self._warned or self.end_at is None or self.end_reason is None:
                return []
            self._warned = True
            return [WarnClient(self.end_at, self.end_reason, max(self.end_at - event.now, 0.0))]
        if isinstance(event, StoreFailed):
            # Fail closed: a statement that needs approval is refused while the store
            # that would hold its request (or grant) cannot be reached.
            self.waiting = None
            return [self._refuse(ApprovalStoreUnavailable(
                "the statement needs approval and the approval store is unreachable;"
                " it was not run",
                detail=event.detail,
                hint="retry once the store is back; statements that need no approval"
                " still run",
            ), "approval store unavailable")]  # fmt: skip
        if isinstance(event, RecordingBroke):
            reason = "the transcript cannot be written"
            end = EndSession(reason, RecordingFailed(RECORDING_BROKE), cancel_running=True)
            return self._end(f"the session ended: {reason}", end)
        raise TypeError(f"not a session event: {event!r}")

    # --- the session's time

    def _deadline(self, token_expires_at: float) -> SetDeadline:
        """The end is the token's expiry, capped by session_ttl; a new end warns anew."""
        if token_expires_at < self._ttl_end_at:
            self.end_at, self.end_reason = token_expires_at, TOKEN_EXPIRED
        else:
            self.end_at, self.end_reason = self._ttl_end_at, SESSION_TTL
        self._warned = False
        warn_at = self.end_at - self._warn_before_s if self._warn_before_s > 0 else None
        return SetDeadline(self.end_at, self.end_reason, warn_at)

    def _offered(self, offer: TokenOffered) -> list[Action]:
        if self.ended or self.subject is None:
            return [AnswerRefresh(None, None, RefreshRefused("the session has ended"))]
        if offer.subject != self.subject:
            # Never another identity: the session goes on as it was.
            return [AnswerRefresh(None, None, RefreshRefused(
                "the token is for another subject than the session's",
                hint="a session can only be extended by a token of the identity it logged in as",
            ))]  # fmt: skip
        if offer.expires_at <= offer.now:
            return [AnswerRefresh(None, None, RefreshRefused("the token has expired"))]
        if not offer.same_rules:
            refusal = RefreshRefused(
                "the token's groups no longer give this session's rules: the session ends",
                hint="log in again with the new token",
            )
            error = SessionExpired(
                f"session ended by the gateway: {GROUPS_CHANGED}",
                detail="a fresh token's groups no longer give the rules this session "
                "logged in under",
                hint="log in again with the new token",
            )
            end = EndSession(GROUPS_CHANGED, error, cancel_running=True)
            return [AnswerRefresh(None, None, refusal),
                    *self._end(f"the session ended: {GROUPS_CHANGED}", end)]  # fmt: skip
        deadline = self._deadline(offer.expires_at)
        recorded = TokenRefreshed(
            exp=offer.expires_at,
            jti=offer.token_id,
            iat=offer.issued_at,
            ends_at=deadline.end_at,
            ends_because=ENDS_BECAUSE[deadline.reason],
            via=offer.via,
        )
        return [
            Record(TokenRefreshed.KIND, recorded.to_data()),
            deadline,
            AnswerRefresh(deadline.end_at, deadline.reason),
        ]

    def _time_up(self, reason: str) -> list[Action]:
        hint = None
        if reason == TOKEN_EXPIRED:
            hint = (
                "before the token expires, present a fresh one: run "
                "SELECT airlock.refresh('<token>') in the session, or "
                "airlock sessions refresh --token <token>"
            )
        elif reason == SESSION_TTL:
            hint = "session_ttl caps a session whatever its token: connect again"
        error = SessionExpired(f"session ended by the gateway: {reason}", hint=hint)
        withdraw = f"the session ended: {reason}"
        return self._end(withdraw, EndSession(reason, error, cancel_running=True))

    # --- the steps

    def _ready(self, statement: StatementReady) -> list[Action]:
        self._statement, self._request_id, self._decided = statement, None, None
        statement_class = statement.verdict.statement_class.value
        until, now = statement.session_grant_until, statement.now
        judgement = judge(statement_class, self._rules(), until, now)
        if judgement.allows:
            # (A gate under on_failure: refuse leaves allowed classes that may change data
            # to this path, to be recorded durably first.)
            return [self._forward("allow")]
        if judgement.ruling is Ruling.DENY:
            return [self._refuse(StatementDenied(
                f'{statement_class} statements are not allowed on target "{self.target}"',
                detail=self._reasons(),
            ), "deny")]  # fmt: skip
        return [LookUpSessionGrant()]

    def _requested(self, request: ApprovalRequest) -> list[Action]:
        record = Record("approval.requested", request_event(request))
        statement_class = self._current().verdict.statement_class.value
        if self._rules().hold is HoldMode.REJECT:
            return [record, self._refuse(StatementDenied(
                f"{statement_class} statement needs approval: request {request.id}",
                detail=self._reasons(),
                hint=f"once an approver runs `airlock approve {request.id}`, "
                "retry the same statement",
            ), f"rejected until approved ({request.id})")]  # fmt: skip
        if self.draining is not None:
            # No approver's answer could run it: the gateway is going away.
            reason = self.draining
            return [
                record,
                Withdraw(request.id, reason),
                self._refuse(self._withdrawn_error(request), f"withdrawn: {reason} ({request.id})"),
            ]
        self.waiting = self._request_id = request.id
        hold = AwaitDecision(request.id, self._rules().hold_timeout_s)
        return [record, AnnounceHold(request), hold]

    def _decided_now(self, request: ApprovalRequest) -> list[Action]:
        self.waiting = None
        if self.ended:
            return self._session_ended(request.id)
        if request.state == WITHDRAWN:  # its Withdraw recorded it
            return [self._refuse(self._withdrawn_error(request),
                                 f"withdrawn: {request.reason} ({request.id})")]  # fmt: skip
        self._decided = request
        # The decision is on disk before the statement runs.
        return [Record("approval.decided", decision_event(request)), MakeDurable()]

    def _durable(self) -> list[Action]:
        request = self._decided
        if request is None:
            raise RuntimeError("Durable without a decision")
        if self.ended:
            return self._session_ended(request.id)
        if request.state == APPROVED:
            first: Action
            if request.scope == "session" and request.expires_at is not None:
                first = GrantSession(request.expires_at)
            else:
                first = UseGrant(request.id)
            return [first, self._forward(f"approved by {request.decided_by} ({request.id})")]
        assert request.state == DENIED, request.state
        return [self._refuse(StatementDenied(
            f"denied by {request.decided_by}: {request.reason}",
            detail=f"approval request {request.id}",
        ), f"denied by {request.decided_by} ({request.id})")]  # fmt: skip

    def _withdrawn_error(self, request: ApprovalRequest) -> QueryCanceled:
        if self.draining is None:
            return QueryCanceled("canceling statement due to user request")
        return QueryCanceled(
            f"canceling statement: {self.draining}; approval request {request.id} was withdrawn",
            hint="run it again once the gateway is back",
        )

    def _session_ended(self, request_id: str | None = None) -> list[Action]:
        """The session ended as the decision came: the statement has nowhere to run."""
        if self._statement is None:
            return []
        request_id = request_id or self._request_id
        self.waiting = None
        return [self._refuse(QueryCanceled("the session ended"), f"session ended ({request_id})")]

    def _withdraw(self, reason: str) -> list[Action]:
        request_id, self.waiting = self.waiting, None
        return [] if request_id is None else [Withdraw(request_id, reason)]

    def _end(self, reason: str, end: EndSession) -> list[Action]:
        """Whatever ends the session withdraws a held statement's request first."""
        return [*self._withdraw(reason), end]

    # --- helpers

    def _rules(self) -> EffectivePolicy:
        if self.policy is None:
            raise RuntimeError("a statement to decide before the session has rules")
        return self.policy

    def _current(self) -> StatementReady:
        if self._statement is None:
            raise RuntimeError("no statement is being decided")
        return self._statement

    def _reasons(self) -> str | None:
        return "; ".join(self._current().verdict.reasons) or None

    def _forward(self, decision: str) -> Forward:
        self._statement = None
        return Forward(decision)

    def _refuse(self, error: AirlockError, decision: str) -> Refuse:
        self._statement = None
        return Refuse(error, decision)


def request_event(request: ApprovalRequest) -> dict[str, Any]:
    r = request.request
    return RecordedRequest(
        id=request.id,
        sql=r.sql,
        params=tuple(RecordedParameter(p.type, p.value, p.format) for p in r.parameters),
        statement_class=r.statement_class,
        hold=r.hold,
        approver_groups=tuple(r.approver_groups),
        why=r.why,
        extra={"approvals_required": r.approvals_required} if r.approvals_required > 1 else {},
    ).to_data()


def decision_event(request: ApprovalRequest) -> dict[str, Any]:
    return RecordedDecision(
        id=request.id,
        state=request.state,
        by=request.decided_by,
        groups=tuple(request.decided_groups),
        at=request.decided_at,
        scope=request.scope,
        expires_at=request.expires_at,
        comment=request.comment,
        reason=request.reason,
        extra=_approvals_counted(request),
    ).to_data()


def progress_event(request: ApprovalRequest) -> dict[str, Any]:
    """An approval that leaves the request pending (it needs more approvers): the
    latest approver's decision, with the request still `pending`."""
    latest = request.approvals[-1]
    return RecordedDecision(
        id=request.id,
        state=request.state,
        by=latest.by,
        groups=latest.groups,
        at=latest.at,
        scope=latest.scope,
        expires_at=latest.expires_at,
        comment=latest.comment,
        extra=_approvals_counted(request),
    ).to_data()


def _approvals_counted(request: ApprovalRequest) -> dict[str, Any]:
    """Under the two-person rule: how many approved of how many needed, and who."""
    required = request.request.approvals_required
    if required < 2:
        return {}
    return {
        "approvals": len(request.approvals),
        "approvals_required": required,
        "approved_by": [d.by for d in request.approvals],
    }
