"""The session core without sockets: each test is a script of events and the actions the
core must answer with (in the manner of mitmproxy's Playbook tests). `>>` feeds an event,
`<<` expects an action; the script fails on any action missing, extra or different."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, get_args

from policy.classify import StatementClass, Verdict
from policy.rules import Action as RuleAction
from policy.rules import HoldMode, Rule, effective_policy
from proxy.approvals.store import APPROVED, DENIED, PENDING, WITHDRAWN, ApprovalRequest, NewRequest
from proxy.core import session_core as core
from proxy.errors import (
    HoldTimedOut,
    QueryCanceled,
    RecordingFailed,
    RefreshRefused,
    SessionExpired,
    StatementDenied,
)
from proxy.parameters import NO_PARAMETERS_KEY, Parameter
from proxy.recording.format import TokenRefreshed

NOW = 1_000.0
UPDATE = "update accounts set balance = 0 where id = $1"
WRITE = Verdict(StatementClass.WRITE, ("UPDATE",))
PARAMS = (Parameter("int4", "7"),)


def new_core(hold: HoldMode = HoldMode.WAIT, **actions: RuleAction) -> core.SessionCore:
    groups, targets = frozenset({"agents"}), frozenset({"orders"})
    rule = Rule(groups, targets, hold=hold, hold_timeout_s=30.0, **actions)  # type: ignore[arg-type]
    policy = effective_policy([rule], ["agents"], "orders")
    assert policy is not None
    return core.SessionCore(policy, "orders")


def ready(sql: str = UPDATE, verdict: Verdict = WRITE, until: float = 0.0) -> core.StatementReady:
    return core.StatementReady(sql, verdict, PARAMS if sql == UPDATE else (), "k", NOW, until)


def request(state: str = PENDING, **decided: Any) -> ApprovalRequest:
    new = NewRequest("s1", "agent", ("agents",), None, "orders", "postgres", UPDATE, PARAMS,
                     "k", "write", WRITE.reasons, "wait", ("dbas",), 900.0)  # fmt: skip
    return ApprovalRequest("r1", state, "live", NOW, new, **decided)


APPROVED_ONCE = request(APPROVED, decided_by="dba", decided_at=NOW + 5, scope="statement")
APPROVED_SESSION = replace(APPROVED_ONCE, scope="session", expires_at=NOW + 900)
DENIED_BY_DBA = request(DENIED, decided_by="dba", decided_at=NOW + 5, reason="not now")
WITHDRAWN_BY_CANCEL = request(WITHDRAWN, reason="the client cancelled the statement")


def play(session: core.SessionCore, *script: tuple[str, object]) -> None:
    """Feed each `>>` event; the `<<` actions after it are what the core must answer."""
    expected: list[object] = []
    actual: list[object] = []
    for direction, item in script:
        if direction == ">>":
            assert actual == expected, f"before {item!r}"
            assert isinstance(item, get_args(core.Event))
            actual = list(session.handle(item))
            expected = []
        else:
            expected.append(item)
    assert actual == expected


def refusal(kind: type, decision: str) -> Any:
    """A core.Refuse of an error of `kind` (errors compare by identity: matched by type)."""

    class Matcher:
        def __eq__(self, other: object) -> bool:
            return (
                isinstance(other, core.Refuse)
                and type(other.error) is kind
                and other.decision == decision
            )

        def __repr__(self) -> str:
            return f"core.Refuse({kind.__name__}, {decision!r})"

    return Matcher()


def ending(kind: type | None, reason: str) -> Any:
    class Matcher:
        def __eq__(self, other: object) -> bool:
            return (
                isinstance(other, core.EndSession)
                and other.reason == reason
                and other.cancel_running
                and (other.error is None if kind is None else type(other.error) is kind)
            )

        def __repr__(self) -> str:
            return f"core.EndSession({kind}, {reason!r})"

    return Matcher()


HELD = (
    (">>", ready()),
    ("<<", core.LookUpSessionGrant()),
    (">>", core.SessionGrantFound(None)),
    ("<<", core.UseStatementGrant(UPDATE, "k")),
    (">>", core.StatementGrantFound(None)),
    ("<<", core.RequestApproval(UPDATE, WRITE, PARAMS, "k", HoldMode.WAIT)),
    (">>", core.ApprovalRequested(request())),
    ("<<", core.Record("approval.requested", core.request_event(request()))),
    ("<<", core.AnnounceHold(request())),
    ("<<", core.AwaitDecision("r1", 30.0)),
)


def test_an_allowed_class_is_forwarded_at_once() -> None:
    read = Verdict(StatementClass.READ, ())
    play(new_core(), (">>", ready("select 1", read)), ("<<", core.Forward("allow")))


def test_a_denied_class_is_refused_whatever_the_grant() -> None:
    ddl = Verdict(StatementClass.DDL, ("DROP",))
    play(
        new_core(),
        (">>", ready("drop table t", ddl, until=NOW + 60)),
        ("<<", refusal(StatementDenied, "deny")),
    )


def test_a_session_grant_the_gate_holds_lets_the_statement_run() -> None:
    play(new_core(), (">>", ready(until=NOW + 1)), ("<<", core.Forward("allow")))


def test_a_session_grant_found_in_the_store_is_handed_to_the_gate() -> None:
    play(
        new_core(),
        (">>", ready()),
        ("<<", core.LookUpSessionGrant()),
        (">>", core.SessionGrantFound(APPROVED_SESSION)),
        ("<<", core.GrantSession(NOW + 900)),
        ("<<", core.Forward("approved for the session (r1)")),
    )


def test_a_statement_grant_of_the_same_values_is_used() -> None:
    play(
        new_core(),
        (">>", ready()),
        ("<<", core.LookUpSessionGrant()),
        (">>", core.SessionGrantFound(None)),
        ("<<", core.UseStatementGrant(UPDATE, "k")),
        (">>", core.StatementGrantFound(APPROVED_ONCE)),
        ("<<", core.Forward("approved (r1)")),
    )


def test_reject_mode_refuses_at_once_with_the_request() -> None:
    rejected = replace(request(), request=replace(request().request, hold="reject"))
    play(
        new_core(HoldMode.REJECT),
        (">>", ready()),
        ("<<", core.LookUpSessionGrant()),
        (">>", core.SessionGrantFound(None)),
        ("<<", core.UseStatementGrant(UPDATE, "k")),
        (">>", core.StatementGrantFound(None)),
        ("<<", core.RequestApproval(UPDATE, WRITE, PARAMS, "k", HoldMode.REJECT)),
        (">>", core.ApprovalRequested(rejected)),
        ("<<", core.Record("approval.requested", core.request_event(rejected))),
        ("<<", refusal(StatementDenied, "rejected until approved (r1)")),
    )


def test_wait_mode_holds_then_an_approval_is_recorded_durably_before_it_runs() -> None:
    play(
        new_core(),
        *HELD,
        (">>", core.ApprovalDecided(APPROVED_ONCE)),
        ("<<", core.Record("approval.decided", core.decision_event(APPROVED_ONCE))),
        ("<<", core.MakeDurable()),
        (">>", core.Durable()),
        ("<<", core.UseGrant("r1")),
        ("<<", core.Forward("approved by dba (r1)")),
    )


def test_an_approval_for_the_session_grants_the_session() -> None:
    play(
        new_core(),
        *HELD,
        (">>", core.ApprovalDecided(APPROVED_SESSION)),
        ("<<", core.Record("approval.decided", core.decision_event(APPROVED_SESSION))),
        ("<<", core.MakeDurable()),
        (">>", core.Durable()),
        ("<<", core.GrantSession(NOW + 900)),
        ("<<", core.Forward("approved by dba (r1)")),
    )


def test_a_denial_refuses_the_held_statement() -> None:
    play(
        new_core(),
        *HELD,
        (">>", core.ApprovalDecided(DENIED_BY_DBA)),
        ("<<", core.Record("approval.decided", core.decision_event(DENIED_BY_DBA))),
        ("<<", core.MakeDurable()),
        (">>", core.Durable()),
        ("<<", refusal(StatementDenied, "denied by dba (r1)")),
    )


def test_a_timeout_refuses_and_leaves_the_request_pending() -> None:
    session = new_core()
    play(
        session,
        *HELD,
        (">>", core.DeadlineReached()),
        ("<<", refusal(HoldTimedOut, "hold timed out (r1)")),
    )
    assert session.waiting is None
    # Nothing is left to withdraw: the request stays pending, for a retry once approved.
    play(session, (">>", core.CancelRequested("late")))


def test_a_cancel_withdraws_the_request_and_the_statement_is_refused() -> None:
    reason = "the client cancelled the statement"
    play(
        new_core(),
        *HELD,
        (">>", core.CancelRequested(reason)),
        ("<<", core.Withdraw("r1", reason)),
        (">>", core.ApprovalDecided(WITHDRAWN_BY_CANCEL)),
        ("<<", refusal(QueryCanceled, f"withdrawn: {reason} (r1)")),
    )


def test_a_cancel_with_nothing_held_does_nothing() -> None:
    play(new_core(), (">>", core.CancelRequested("the client cancelled the statement")))


def test_the_client_closing_during_a_hold_withdraws_it_and_it_is_never_forwarded() -> None:
    session = new_core()
    play(
        session,
        *HELD,
        (">>", core.ClientClosed()),
        ("<<", core.Withdraw("r1", core.CLIENT_DISCONNECTED)),
        ("<<", ending(None, "client closed the connection")),
        # The hold ends as the session did: the statement has nowhere to run.
        (">>", core.SessionEnded()),
        ("<<", refusal(QueryCanceled, "session ended (r1)")),
    )
    play(
        session,
        (">>", core.ClientClosed("reset")),
        ("<<", ending(None, "client connection lost: reset")),
    )


def test_session_ttl_or_token_expiry_during_a_hold_withdraws_it_and_ends_the_session() -> None:
    for reason in ("session_ttl reached", "the token expired"):
        play(
            new_core(),
            *HELD,
            (">>", core.TimeUp(reason)),
            ("<<", core.Withdraw("r1", f"the session ended: {reason}")),
            ("<<", ending(SessionExpired, reason)),
            (">>", core.SessionEnded()),
            ("<<", refusal(QueryCanceled, "session ended (r1)")),
        )


def test_an_approval_arriving_as_the_session_ends_never_runs_the_statement() -> None:
    play(
        new_core(),
        *HELD,
        (">>", core.ApprovalDecided(APPROVED_ONCE)),
        ("<<", core.Record("approval.decided", core.decision_event(APPROVED_ONCE))),
        ("<<", core.MakeDurable()),
        (">>", core.SessionEnded()),
        ("<<", refusal(QueryCanceled, "session ended (r1)")),
    )


def test_a_recording_failure_ends_the_session_and_withdraws_a_hold() -> None:
    reason = "the transcript cannot be written"
    play(
        new_core(),
        *HELD,
        (">>", core.RecordingBroke()),
        ("<<", core.Withdraw("r1", f"the session ended: {reason}")),
        ("<<", ending(RecordingFailed, reason)),
    )
    play(new_core(), (">>", core.RecordingBroke()), ("<<", ending(RecordingFailed, reason)))


def test_the_core_decides_with_no_statement_key_for_a_simple_query() -> None:
    play(
        new_core(write=RuleAction.ALLOW),
        (
            ">>",
            core.StatementReady("insert into t values (1)", WRITE, (), NO_PARAMETERS_KEY, NOW, 0.0),
        ),
        ("<<", core.Forward("allow")),
    )


def test_a_core_without_rules_still_ends_the_session() -> None:
    session = core.SessionCore(None, "")
    play(session, (">>", core.ClientClosed()), ("<<", ending(None, "client closed the connection")))
    assert session.waiting is None


# --- the session's time: token expiry, session_ttl, refresh, the warning

TTL_S = 8 * 3600.0
WARN_S = 300.0


def started(token_expires_at: float = NOW + 3600, subject: str = "agent") -> core.SessionCore:
    """A session core whose time has started (a token good for an hour, session_ttl 8h)."""
    session = new_core()
    play(
        session,
        (">>", core.SessionStarted(NOW, subject, token_expires_at, TTL_S, WARN_S)),
        ("<<", deadline_at(token_expires_at, core.TOKEN_EXPIRED)),
    )
    return session


def deadline_at(end_at: float, reason: str) -> core.SetDeadline:
    return core.SetDeadline(end_at, reason, end_at - WARN_S)


def offer(
    expires_at: float, *, subject: str = "agent", same_rules: bool = True, now: float = NOW + 3000
) -> core.TokenOffered:
    return core.TokenOffered(subject, expires_at, "jti-2", NOW + 2990, same_rules, "api", now)


def refreshed(expires_at: float, ends_at: float, because: str) -> core.Record:
    data = TokenRefreshed(
        exp=expires_at, jti="jti-2", iat=NOW + 2990, ends_at=ends_at, ends_because=because,
        via="api",
    ).to_data()  # fmt: skip
    return core.Record("token_refreshed", data)


def answer_refused(message: str) -> Any:
    class Matcher:
        def __eq__(self, other: object) -> bool:
            return (
                isinstance(other, core.AnswerRefresh)
                and other.end_at is None
                and isinstance(other.error, RefreshRefused)
                and other.error.message == message
            )

        def __repr__(self) -> str:
            return f"core.AnswerRefresh(refused: {message!r})"

    return Matcher()


def test_a_session_ends_when_its_token_expires_or_at_session_ttl_if_sooner() -> None:
    started(NOW + 3600)
    play(
        new_core(),
        (">>", core.SessionStarted(NOW, "agent", NOW + 10 * 3600, TTL_S, WARN_S)),
        ("<<", deadline_at(NOW + TTL_S, core.SESSION_TTL)),
    )
    play(
        new_core(),
        (">>", core.SessionStarted(NOW, "agent", NOW + 60, TTL_S, 0.0)),
        ("<<", core.SetDeadline(NOW + 60, core.TOKEN_EXPIRED, None)),  # no warning at 0
    )


def test_a_fresh_token_of_the_same_subject_extends_the_session_and_is_recorded() -> None:
    session = started()
    later = NOW + 7200
    play(
        session,
        (">>", offer(later)),
        ("<<", refreshed(later, later, "token expires")),
        ("<<", deadline_at(later, core.TOKEN_EXPIRED)),
        ("<<", core.AnswerRefresh(later, core.TOKEN_EXPIRED)),
    )
    assert (session.end_at, session.end_reason) == (later, core.TOKEN_EXPIRED)


def test_session_ttl_caps_a_refresh() -> None:
    session = started()
    cap = NOW + TTL_S
    play(
        session,
        (">>", offer(NOW + 24 * 3600)),
        ("<<", refreshed(NOW + 24 * 3600, cap, "session_ttl")),
        ("<<", deadline_at(cap, core.SESSION_TTL)),
        ("<<", core.AnswerRefresh(cap, core.SESSION_TTL)),
    )


def test_a_token_of_another_subject_is_refused_and_changes_nothing() -> None:
    session = started()
    play(
        session,
        (">>", offer(NOW + 7200, subject="someone-else")),
        ("<<", answer_refused("the token is for another subject than the session's")),
    )
    assert (session.end_at, session.end_reason) == (NOW + 3600, core.TOKEN_EXPIRED)
    assert not session.ended


def test_an_expired_token_is_refused() -> None:
    play(
        started(),
        (">>", offer(NOW + 2999)),
        ("<<", answer_refused("the token has expired")),
    )


def test_a_token_whose_groups_no_longer_give_the_rules_ends_the_session() -> None:
    session = started()
    play(
        session,
        *HELD,  # a statement waits for approval meanwhile: it is withdrawn, never run
        (">>", offer(NOW + 7200, same_rules=False)),
        ("<<", answer_refused(
            "the token's groups no longer give this session's rules: the session ends")),
        ("<<", core.Withdraw("r1", f"the session ended: {core.GROUPS_CHANGED}")),
        ("<<", ending(SessionExpired, core.GROUPS_CHANGED)),
    )  # fmt: skip
    assert session.end_at == NOW + 3600  # not extended


def test_the_warning_comes_once_per_deadline_and_again_after_a_refresh() -> None:
    session = started()
    play(
        session,
        (">>", core.WarningDue(NOW + 3300)),
        ("<<", core.WarnClient(NOW + 3600, core.TOKEN_EXPIRED, 300.0)),
        (">>", core.WarningDue(NOW + 3301)),
    )
    later = NOW + 7200
    play(
        session,
        (">>", offer(later, now=NOW + 3400)),
        ("<<", refreshed(later, later, "token expires")),
        ("<<", deadline_at(later, core.TOKEN_EXPIRED)),
        ("<<", core.AnswerRefresh(later, core.TOKEN_EXPIRED)),
        (">>", core.WarningDue(later - 300)),
        ("<<", core.WarnClient(later, core.TOKEN_EXPIRED, 300.0)),
    )


def test_the_end_names_its_reason() -> None:
    for reason in (core.TOKEN_EXPIRED, core.SESSION_TTL):
        session = started()
        actions = session.handle(core.TimeUp(reason))
        assert actions == [ending(SessionExpired, reason)]
        end = actions[0]
        assert isinstance(end, core.EndSession)
        assert end.error is not None
        assert end.error.message == f"session ended by the gateway: {reason}"
        assert end.error.hint is not None
    token_hint = started().handle(core.TimeUp(core.TOKEN_EXPIRED))[0]
    assert isinstance(token_hint, core.EndSession)
    assert token_hint.error is not None
    assert "airlock.refresh" in (token_hint.error.hint or "")


def test_an_ended_session_takes_no_refresh_and_gives_no_warning() -> None:
    session = started()
    play(session, (">>", core.ClientClosed()), ("<<", ending(None, "client closed the connection")))
    play(session, (">>", core.SessionEnded()))
    play(
        session,
        (">>", offer(NOW + 7200)),
        ("<<", answer_refused("the session has ended")),
        (">>", core.WarningDue(NOW + 3300)),
    )
