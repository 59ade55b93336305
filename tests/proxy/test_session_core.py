"""The session core without sockets: each test is a script of events and the actions the
core must answer with (in the manner of mitmproxy's Playbook tests). `>>` feeds an event,
`<<` expects an action; the script fails on any action missing, extra or different."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, get_args

from policy.classify import StatementClass, Verdict
from policy.rules import Action as RuleAction
from policy.rules import HoldMode, Rule, effective_policy
from protocols.errors import (
    HoldTimedOut,
    QueryCanceled,
    RecordingFailed,
    SessionExpired,
    StatementDenied,
)
from proxy.parameters import NO_PARAMETERS_KEY, Parameter
from proxy.session_core import (
    CLIENT_DISCONNECTED,
    AnnounceHold,
    ApprovalDecided,
    ApprovalRequested,
    AwaitDecision,
    CancelRequested,
    ClientClosed,
    DeadlineReached,
    Durable,
    EndSession,
    Event,
    Forward,
    GrantSession,
    LookUpSessionGrant,
    MakeDurable,
    Record,
    RecordingBroke,
    Refuse,
    RequestApproval,
    SessionCore,
    SessionEnded,
    SessionGrantFound,
    StatementGrantFound,
    StatementReady,
    TimeUp,
    UseGrant,
    UseStatementGrant,
    Withdraw,
    decision_event,
    request_event,
)
from proxy.store import APPROVED, DENIED, PENDING, WITHDRAWN, ApprovalRequest, NewRequest

NOW = 1_000.0
UPDATE = "update accounts set balance = 0 where id = $1"
WRITE = Verdict(StatementClass.WRITE, ("UPDATE",))
PARAMS = (Parameter("int4", "7"),)


def core(hold: HoldMode = HoldMode.WAIT, **actions: RuleAction) -> SessionCore:
    groups, targets = frozenset({"agents"}), frozenset({"orders"})
    rule = Rule(groups, targets, hold=hold, hold_timeout_s=30.0, **actions)  # type: ignore[arg-type]
    policy = effective_policy([rule], ["agents"], "orders")
    assert policy is not None
    return SessionCore(policy, "orders")


def ready(sql: str = UPDATE, verdict: Verdict = WRITE, until: float = 0.0) -> StatementReady:
    return StatementReady(sql, verdict, PARAMS if sql == UPDATE else (), "k", NOW, until)


def request(state: str = PENDING, **decided: Any) -> ApprovalRequest:
    new = NewRequest("s1", "agent", ("agents",), None, "orders", "postgres", UPDATE, PARAMS,
                     "k", "write", WRITE.reasons, "wait", ("dbas",), 900.0)  # fmt: skip
    return ApprovalRequest("r1", state, "live", NOW, new, **decided)


APPROVED_ONCE = request(APPROVED, decided_by="dba", decided_at=NOW + 5, scope="statement")
APPROVED_SESSION = replace(APPROVED_ONCE, scope="session", expires_at=NOW + 900)
DENIED_BY_DBA = request(DENIED, decided_by="dba", decided_at=NOW + 5, reason="not now")
WITHDRAWN_BY_CANCEL = request(WITHDRAWN, reason="the client cancelled the statement")


def play(session: SessionCore, *script: tuple[str, object]) -> None:
    """Feed each `>>` event; the `<<` actions after it are what the core must answer."""
    expected: list[object] = []
    actual: list[object] = []
    for direction, item in script:
        if direction == ">>":
            assert actual == expected, f"before {item!r}"
            assert isinstance(item, get_args(Event))
            actual = list(session.handle(item))
            expected = []
        else:
            expected.append(item)
    assert actual == expected


def refusal(kind: type, decision: str) -> Any:
    """A Refuse of an error of `kind` (errors compare by identity: matched by type)."""

    class Matcher:
        def __eq__(self, other: object) -> bool:
            return (
                isinstance(other, Refuse)
                and type(other.error) is kind
                and other.decision == decision
            )

        def __repr__(self) -> str:
            return f"Refuse({kind.__name__}, {decision!r})"

    return Matcher()


def ending(kind: type | None, reason: str) -> Any:
    class Matcher:
        def __eq__(self, other: object) -> bool:
            return (
                isinstance(other, EndSession)
                and other.reason == reason
                and other.cancel_running
                and (other.error is None if kind is None else type(other.error) is kind)
            )

        def __repr__(self) -> str:
            return f"EndSession({kind}, {reason!r})"

    return Matcher()


HELD = (
    (">>", ready()),
    ("<<", LookUpSessionGrant()),
    (">>", SessionGrantFound(None)),
    ("<<", UseStatementGrant(UPDATE, "k")),
    (">>", StatementGrantFound(None)),
    ("<<", RequestApproval(UPDATE, WRITE, PARAMS, "k", HoldMode.WAIT)),
    (">>", ApprovalRequested(request())),
    ("<<", Record("approval.requested", request_event(request()))),
    ("<<", AnnounceHold(request())),
    ("<<", AwaitDecision("r1", 30.0)),
)


def test_an_allowed_class_is_forwarded_at_once() -> None:
    read = Verdict(StatementClass.READ, ())
    play(core(), (">>", ready("select 1", read)), ("<<", Forward("allow")))


def test_a_denied_class_is_refused_whatever_the_grant() -> None:
    ddl = Verdict(StatementClass.DDL, ("DROP",))
    play(
        core(),
        (">>", ready("drop table t", ddl, until=NOW + 60)),
        ("<<", refusal(StatementDenied, "deny")),
    )


def test_a_session_grant_the_gate_holds_lets_the_statement_run() -> None:
    play(core(), (">>", ready(until=NOW + 1)), ("<<", Forward("allow")))


def test_a_session_grant_found_in_the_store_is_handed_to_the_gate() -> None:
    play(
        core(),
        (">>", ready()),
        ("<<", LookUpSessionGrant()),
        (">>", SessionGrantFound(APPROVED_SESSION)),
        ("<<", GrantSession(NOW + 900)),
        ("<<", Forward("approved for the session (r1)")),
    )


def test_a_statement_grant_of_the_same_values_is_used() -> None:
    play(
        core(),
        (">>", ready()),
        ("<<", LookUpSessionGrant()),
        (">>", SessionGrantFound(None)),
        ("<<", UseStatementGrant(UPDATE, "k")),
        (">>", StatementGrantFound(APPROVED_ONCE)),
        ("<<", Forward("approved (r1)")),
    )


def test_reject_mode_refuses_at_once_with_the_request() -> None:
    rejected = replace(request(), request=replace(request().request, hold="reject"))
    play(
        core(HoldMode.REJECT),
        (">>", ready()),
        ("<<", LookUpSessionGrant()),
        (">>", SessionGrantFound(None)),
        ("<<", UseStatementGrant(UPDATE, "k")),
        (">>", StatementGrantFound(None)),
        ("<<", RequestApproval(UPDATE, WRITE, PARAMS, "k", HoldMode.REJECT)),
        (">>", ApprovalRequested(rejected)),
        ("<<", Record("approval.requested", request_event(rejected))),
        ("<<", refusal(StatementDenied, "rejected until approved (r1)")),
    )


def test_wait_mode_holds_then_an_approval_is_recorded_durably_before_it_runs() -> None:
    play(
        core(),
        *HELD,
        (">>", ApprovalDecided(APPROVED_ONCE)),
        ("<<", Record("approval.decided", decision_event(APPROVED_ONCE))),
        ("<<", MakeDurable()),
        (">>", Durable()),
        ("<<", UseGrant("r1")),
        ("<<", Forward("approved by dba (r1)")),
    )


def test_an_approval_for_the_session_grants_the_session() -> None:
    play(
        core(),
        *HELD,
        (">>", ApprovalDecided(APPROVED_SESSION)),
        ("<<", Record("approval.decided", decision_event(APPROVED_SESSION))),
        ("<<", MakeDurable()),
        (">>", Durable()),
        ("<<", GrantSession(NOW + 900)),
        ("<<", Forward("approved by dba (r1)")),
    )


def test_a_denial_refuses_the_held_statement() -> None:
    play(
        core(),
        *HELD,
        (">>", ApprovalDecided(DENIED_BY_DBA)),
        ("<<", Record("approval.decided", decision_event(DENIED_BY_DBA))),
        ("<<", MakeDurable()),
        (">>", Durable()),
        ("<<", refusal(StatementDenied, "denied by dba (r1)")),
    )


def test_a_timeout_refuses_and_leaves_the_request_pending() -> None:
    session = core()
    play(
        session,
        *HELD,
        (">>", DeadlineReached()),
        ("<<", refusal(HoldTimedOut, "hold timed out (r1)")),
    )
    assert session.waiting is None
    # Nothing is left to withdraw: the request stays pending, for a retry once approved.
    play(session, (">>", CancelRequested("late")))


def test_a_cancel_withdraws_the_request_and_the_statement_is_refused() -> None:
    reason = "the client cancelled the statement"
    play(
        core(),
        *HELD,
        (">>", CancelRequested(reason)),
        ("<<", Withdraw("r1", reason)),
        (">>", ApprovalDecided(WITHDRAWN_BY_CANCEL)),
        ("<<", refusal(QueryCanceled, f"withdrawn: {reason} (r1)")),
    )


def test_a_cancel_with_nothing_held_does_nothing() -> None:
    play(core(), (">>", CancelRequested("the client cancelled the statement")))


def test_the_client_closing_during_a_hold_withdraws_it_and_it_is_never_forwarded() -> None:
    session = core()
    play(
        session,
        *HELD,
        (">>", ClientClosed()),
        ("<<", Withdraw("r1", CLIENT_DISCONNECTED)),
        ("<<", ending(None, "client closed the connection")),
        # The hold ends as the session did: the statement has nowhere to run.
        (">>", SessionEnded()),
        ("<<", refusal(QueryCanceled, "session ended (r1)")),
    )
    play(
        session,
        (">>", ClientClosed("reset")),
        ("<<", ending(None, "client connection lost: reset")),
    )


def test_session_ttl_or_token_expiry_during_a_hold_withdraws_it_and_ends_the_session() -> None:
    for reason in ("session_ttl reached", "the token expired"):
        play(
            core(),
            *HELD,
            (">>", TimeUp(reason)),
            ("<<", Withdraw("r1", f"the session ended: {reason}")),
            ("<<", ending(SessionExpired, reason)),
            (">>", SessionEnded()),
            ("<<", refusal(QueryCanceled, "session ended (r1)")),
        )


def test_an_approval_arriving_as_the_session_ends_never_runs_the_statement() -> None:
    play(
        core(),
        *HELD,
        (">>", ApprovalDecided(APPROVED_ONCE)),
        ("<<", Record("approval.decided", decision_event(APPROVED_ONCE))),
        ("<<", MakeDurable()),
        (">>", SessionEnded()),
        ("<<", refusal(QueryCanceled, "session ended (r1)")),
    )


def test_a_recording_failure_ends_the_session_and_withdraws_a_hold() -> None:
    reason = "the transcript cannot be written"
    play(
        core(),
        *HELD,
        (">>", RecordingBroke()),
        ("<<", Withdraw("r1", f"the session ended: {reason}")),
        ("<<", ending(RecordingFailed, reason)),
    )
    play(core(), (">>", RecordingBroke()), ("<<", ending(RecordingFailed, reason)))


def test_the_core_decides_with_no_statement_key_for_a_simple_query() -> None:
    play(
        core(write=RuleAction.ALLOW),
        (">>", StatementReady("insert into t values (1)", WRITE, (), NO_PARAMETERS_KEY, NOW, 0.0)),
        ("<<", Forward("allow")),
    )


def test_a_core_without_rules_still_ends_the_session() -> None:
    session = SessionCore(None, "")
    play(session, (">>", ClientClosed()), ("<<", ending(None, "client closed the connection")))
    assert session.waiting is None
