"""What every client session does whatever its wire protocol: the approval hold and
the transcript.

`PgSession` and `MySqlSession` inherit from `GatedSession`. The protocol side
frames messages, classifies and asks its gate; once a statement needs a
decision, `gatekeep` applies the policy: deny, run under a grant, or make an
approval request and hold (wait) or refuse (reject) it. The transcript events
are written here too, so both protocols record the same evidence.

Recording fails closed (`recording.on_failure: refuse`, the default): a statement of any
class but read is on disk before it is forwarded (the protocol's gate sends those
classes here, off its hot path, and the session awaits `record_durably`), and when the
transcript cannot be written, whether in that wait or in the Recorder's periodic flush of
what reads recorded, the session ends with `RecordingFailed` (58030; MySQL 1026).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

from policy.classify import CLASS_NAMES, StatementClass, Verdict
from policy.identity import Identity
from policy.judge import Ruling, judge
from policy.rules import EffectivePolicy, effective_policy
from protocols.errors import MessageTooLarge
from proxy import logs
from proxy.addresses import is_loopback
from proxy.approvals.hub import ApprovalHub
from proxy.approvals.store import ApprovalRequest, NewRequest, Parameter, StoreUnavailable
from proxy.config import Settings, TargetSettings
from proxy.core import preview
from proxy.core.actions import EndSession as EndRelay
from proxy.core.actions import SendToClient, SendToServer
from proxy.core.channel import Channel, ConnectionClosed
from proxy.core.classifying import Classifiers
from proxy.core.listener import TokenVerifier
from proxy.core.metrics import Instruments, StatementCounts, decision_label
from proxy.core.refresh import REDACTED, answer_sql, mentions_refresh, refresh_token
from proxy.core.session_core import CLIENT_DISCONNECTED as CLIENT_DISCONNECTED
from proxy.core.session_core import (
    ENDS_BECAUSE,
    Action,
    AnnounceHold,
    AnswerRefresh,
    ApprovalDecided,
    ApprovalRequested,
    AwaitDecision,
    CancelRequested,
    ClientClosed,
    DeadlineReached,
    Draining,
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
    SessionStarted,
    SetDeadline,
    StatementGrantFound,
    StatementReady,
    StoreFailed,
    TimeUp,
    TokenOffered,
    UseGrant,
    UseStatementGrant,
    WarnClient,
    WarningDue,
    Withdraw,
    decision_event,
    progress_event,
)
from proxy.core.session_core import RECORDING_BROKE as _RECORDING_FAILED
from proxy.errors import (
    AirlockError,
    AuthorizationDenied,
    InsecureTransport,
    LoginTimedOut,
    RecordingFailed,
    RecordingUnavailable,
    RefreshRefused,
    UpstreamUnavailable,
)
from proxy.recording.writer import Recorder, SessionRecording, TranscriptError

log = logging.getLogger("airlock.session")

#: Under `recording.on_failure: refuse`, statements of these classes are on disk (written
#: and fsynced) before they are forwarded: every class that may change data.
DURABLE_CLASSES = frozenset(c for c in StatementClass if c is not StatementClass.READ)


class SessionHost(Protocol):
    """The listener a session belongs to, as far as holds and recording go."""

    settings: Settings
    hub: ApprovalHub
    recorder: Recorder | None
    clock: Callable[[], float]
    classifiers: Classifiers
    verifier: TokenVerifier
    #: Statements decided in every session of the listener.
    statements: int
    #: The same by (target, class, decision label).
    statement_counts: StatementCounts
    #: The sessions relaying now.
    sessions: set[Any]
    #: The histograms sessions observe (metrics).
    instruments: Instruments
    #: The gateway drains (SIGTERM): a statement held from now on is refused at once.
    draining: bool

    def login_refused(self, error: AirlockError) -> None:
        """A login was refused with `error` (counted by reason)."""


class Gate(Protocol):
    """A protocol's per-session gate, as far as the policy goes."""

    #: Until then (clock time), statements that need approval run: a session grant.
    session_grant_until: float


#: What runs under a target's write role, when it has one: every class but read.
WRITE_ROLE_CLASSES = frozenset(c for c in StatementClass if c is not StatementClass.READ)
#: The decision on a statement that would be held, forwarded instead because the session
#: is inside a READ ONLY transaction where the server refuses it (policy/read_only.py):
#: it runs under the read role, and the agent gets the server's own error at once.
READ_ONLY_REFUSES = "allow: read-only transaction, the server refuses it"
#: The verdict on statement text that is not valid in the connection's character set.
NOT_TEXT = Verdict(
    StatementClass.UNKNOWN,
    ("the statement is not valid text in the connection's character set",),
)


class GatedSession:
    """The protocol-neutral part of a client session. A protocol's session adds its login,
    its relay, and these hooks: `_detach` (leave the listener's tables, stop what runs
    upstream), `_error_reply` and `_upstream_goodbye` (what the wire says at the end),
    `_quiet_close` (an upstream close the session expects), `_decision` (decide a held
    message: the relay's actions once it is released)."""

    #: "postgres" or "mysql": the transcript's and the approval request's protocol, and
    #: the classifier's dialect.
    protocol: ClassVar[str]

    def __init__(self, listener: SessionHost, client_side: Channel) -> None:
        self.id = uuid.uuid4().hex
        self.listener = listener
        self.client_side = client_side
        self.identity: Identity | None = None
        self.target: TargetSettings | None = None
        self.policy: EffectivePolicy | None = None
        self.client_address: tuple[str, int] | None = None
        self.recording: SessionRecording | None = None
        #: Classes the gate must not admit on its hot path: their statements are made
        #: durable here first (`record_durably`). Empty unless the session is recorded
        #: under `recording.on_failure: refuse`.
        self.durable_classes: frozenset[StatementClass] = frozenset()
        self.statements = 0
        self.ended = False
        #: Decides what needs a decision (sans-I/O; this class carries out its actions).
        self.core: SessionCore | None = None
        #: The session's transaction state as the statement being decided found it
        #: (proxy/approvals/store.py's TRANSACTION_STATES; None: not known).
        self._transaction: str | None = None
        #: Client bytes read since a statement was held (see `read_while_held`).
        self._read_while_held = 0
        self._requested = False  # this session has made approval requests
        self._deadline: asyncio.TimerHandle | None = None
        self._warning: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] | None = None  # set by end()
        self.server_side: Channel | None = None
        self._deciding: asyncio.Task[None] | None = None  # decides the held message
        # Result rows captured (recording.capture_rows) for the running statement, while
        # the session's max_row_bytes lasts.
        self._rows: list[bytes] = []
        self._row_bytes_left = 0
        self._rows_cut = False
        self._held_s = 0.0  # the time the statement being decided waited for an approver

    def end(
        self,
        reason: str,
        error: AirlockError | None = None,
        *,
        cancel_running: bool = False,
        sequence: int | None = None,
    ) -> None:
        """Close both sides once; `error`, if any, goes to the client first (a MySQL ERR
        numbered `sequence` when given), and `cancel_running` stops a statement the
        upstream is still running (closing its socket alone would not: a server notices
        only when it next writes)."""
        if self.ended:
            return
        self.ended = True
        self.cancel_deadline()
        self._detach(cancel_running)
        self.listener.sessions.discard(self)
        # A held statement can run no more: its request is withdrawn (and recorded so)
        # before the transcript is sealed; an approval arriving later is refused.
        self.withdraw_waiting(f"the session ended: {reason}")
        self._stop_recording_in_place()
        self.seal(reason, error)
        if self._deciding is not None:
            self._deciding.cancel()
        self.sessions_gone()
        if error is not None and not self.client_side.closed:
            reply = self._error_reply(error, sequence)
            if reply is not None:
                self.client_side.write(reply)
        self.client_side.close()
        server = self.server_side
        if server is not None:
            if not server.closed:
                goodbye = self._upstream_goodbye()
                if goodbye is not None:
                    server.write(goodbye)
            server.close()
        if self.identity is not None:
            log.info("session %s ended: %s", self.id, reason,
                     extra=self.log_fields("session_ended"))  # fmt: skip
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # --- the protocol's hooks

    def _detach(self, cancel_running: bool) -> None:
        """The session ends: leave the listener's tables; when `cancel_running`, stop a
        statement the upstream still runs."""

    def _stop_recording_in_place(self) -> None:
        """The session ends: what records on the relay's hot path records no more."""

    def _error_reply(self, error: AirlockError, sequence: int | None) -> bytes | None:
        """The bytes that tell the client `error` as the session ends; None: nothing."""
        raise NotImplementedError

    def _upstream_goodbye(self) -> bytes | None:
        """What the upstream is told as the session ends (Terminate, COM_QUIT)."""
        return None

    def _quiet_close(self) -> str | None:
        """The upstream closes as the session expects (the client asked, or the server
        said why): the session's end reason; None when the close is unexpected."""
        return None

    async def _decision(self, held: Any) -> Sequence[object]:
        """Decide the held message: the relay's actions once it is released."""
        raise NotImplementedError

    async def _transaction_state(self, sql: str, verdict: Verdict) -> tuple[str | None, bool]:
        """A statement that needs approval is being decided: the session's transaction
        state (None: not known), and whether the server surely refuses the statement
        there (a READ ONLY transaction: policy/read_only.py), so it needs no approval."""
        return None, False

    async def log_in(self) -> bool:
        """The protocol's login, up to relaying; False when it ended without a session."""
        raise NotImplementedError

    async def run(self, login_timeout_s: float, login_finished: Callable[[bool], None]) -> None:
        """Log in within `login_timeout_s` (limits.login_timeout), tell the listener with
        `login_finished(timed_out)` however that went, then relay until the session ends."""
        self._done = asyncio.get_running_loop().create_future()
        self.client_address = self.client_side.remote_address
        # Records logged while this session's task runs name it (proxy/logs.py).
        logs.bind(session=self.id, client=logs.host_port(self.client_address))
        timed_out = False
        try:
            async with asyncio.timeout(login_timeout_s):
                relaying = await self.log_in()
        except AirlockError as error:
            self.listener.login_refused(error)
            log.info(
                "login refused for %s: %s%s",
                logs.host_port(self.client_address),
                error.message,
                f" ({error.log_detail})" if error.log_detail else "",
                extra=self.log_fields("login_refused"),
            )
            self.end(f"login refused: {error.message}", error)
            return
        except TimeoutError:
            timed_out = True
            log.info("login timed out for %s", logs.host_port(self.client_address),
                     extra=self.log_fields("login_timed_out"))  # fmt: skip
            self.end(
                "login timed out",
                LoginTimedOut(f"login not completed within {login_timeout_s:g}s"),
            )
            return
        except ConnectionClosed:
            self.end("client closed during login")
            return
        finally:
            login_finished(timed_out)
        if relaying:
            await self._done

    # --- relaying

    def write_roles(self) -> tuple[str, str] | None:
        """The target's read and write roles, when it splits them."""
        target = self.target
        assert target is not None
        if target.read_role is not None and target.write_role is not None:
            return (target.read_role, target.write_role)
        return None

    def cold_classes(self, roles: tuple[str, str] | None) -> frozenset[StatementClass]:
        """Classes the gate never admits on its hot path: those whose statements are on
        disk before they are forwarded, and those that run under the write role."""
        return self.durable_classes | (WRITE_ROLE_CLASSES if roles else frozenset())

    def relaying(self) -> None:
        """Both sides are up: the session is the listener's, its time runs, and each
        side's channel knows its peer (flow control)."""
        self.listener.sessions.add(self)
        if self.listener.draining:  # logged in as the drain began: no hold can be decided
            self.drain("the gateway is shutting down")
        self.start_deadline()
        server_side = self.server_side
        assert server_side is not None
        self.client_side.peer, server_side.peer = server_side, self.client_side

    # --- the session's time

    def start_deadline(self) -> None:
        """The session's time starts: it ends when its token expires, or at the rule's
        session_ttl if sooner (the session core decides; this sets the timers)."""
        policy, identity = self.policy, self.identity
        assert policy is not None
        assert identity is not None
        self.session_event(
            SessionStarted(
                now=self.listener.clock(),
                subject=identity.subject,
                token_expires_at=identity.expires_at,
                session_ttl_s=policy.session_ttl_s,
                warn_before_s=self.listener.settings.session_end_warning_s,
            )
        )

    def cancel_deadline(self) -> None:
        for timer in (self._deadline, self._warning):
            if timer is not None:
                timer.cancel()

    def _set_deadline(self, deadline: SetDeadline) -> None:
        self.cancel_deadline()
        loop, now = asyncio.get_running_loop(), self.listener.clock()
        self._deadline = loop.call_later(
            max(deadline.end_at - now, 0.0), self._expire, deadline.reason
        )
        self._warning = None
        if deadline.warn_at is not None:
            self._warning = loop.call_later(max(deadline.warn_at - now, 0.0), self._warning_due)

    def _expire(self, reason: str) -> None:
        # The session is over: a statement still running would finish unobserved.
        self.session_event(TimeUp(reason))

    def _warning_due(self) -> None:
        self.session_event(WarningDue(self.listener.clock()))

    def warn_client(self, warning: WarnClient) -> None:
        """Tell the client, if its protocol can, that the session ends soon."""

    def refresh(self, identity: Identity, via: str) -> AnswerRefresh:
        """A fresh token for this session, verified as at login (`via`: "api" or
        "statement"): the session's new end, or why not (the core decides)."""
        target = self.target
        same_rules = target is not None and self.policy == effective_policy(
            self.listener.settings.rules, identity.groups, target.name
        )
        issued = identity.claims.get("iat")
        offer = TokenOffered(
            subject=identity.subject,
            expires_at=identity.expires_at,
            token_id=identity.token_id,
            issued_at=float(issued) if isinstance(issued, int | float) else None,
            same_rules=same_rules,
            via=via,
            now=self.listener.clock(),
        )
        for action in self.session_event(offer):
            if isinstance(action, AnswerRefresh):
                if action.error is None:
                    log.info("session %s: token refreshed (%s); it now ends in %.0fs",
                             self.id, via, (action.end_at or 0.0) - offer.now)  # fmt: skip
                else:
                    log.info("session %s: token refresh refused (%s): %s",
                             self.id, via, action.error.message)  # fmt: skip
                return action
        raise AssertionError("the core answered no refresh")

    async def in_band_refresh(self, sql: str) -> str | AirlockError | None:
        """A statement that names airlock.refresh is consumed here, never forwarded (see
        proxy/core/refresh.py): the constant query to run in its place, or the error to refuse
        it with. None: the statement is no refresh."""
        if not mentions_refresh(sql):
            return None
        try:
            token = refresh_token(sql)
            identity = await self.listener.verifier.verify(token)
        except AirlockError as error:
            refusal = error
            if not isinstance(error, RefreshRefused):
                refusal = RefreshRefused(f"token refresh refused: {error.message}")
            self.record_refused_refresh(refusal)
            return refusal
        answer = self.refresh(identity, "statement")
        if answer.error is not None:
            self.record_refused_refresh(answer.error)
            return answer.error
        assert answer.end_at is not None
        assert answer.reason is not None
        return answer_sql(answer.end_at, ENDS_BECAUSE[answer.reason])

    def record_refused_refresh(self, error: AirlockError) -> None:
        """A refused in-band refresh, in the transcript with its token withheld."""
        verdict = Verdict(StatementClass.ADMIN, ("a token refresh, consumed by the gateway",))
        self.record_statement(REDACTED, verdict, f"deny: {error.message}")

    # --- the hold

    def announce_hold(self, request: ApprovalRequest) -> None:
        """Tell the client, if its protocol can, that a statement waits for `request`."""

    def drain(self, reason: str) -> None:
        """The gateway drains: a held statement is refused at once, its request withdrawn,
        and so is any statement held from now on."""
        self.session_event(Draining(reason))

    def idle(self) -> bool:
        """Nothing is decided, held, or running upstream, and (PostgreSQL) no transaction
        is open: the session can end without losing a statement."""
        return not self.ended and self._deciding is None and self._relay_idle()

    def _relay_idle(self) -> bool:
        """The protocol's relay has nothing in flight (`idle`)."""
        return True

    def withdraw_waiting(self, reason: str) -> bool:
        """Withdraw the approval request a held statement waits for; False when none.
        The statement is then never forwarded, and nobody can approve the request."""
        return bool(self.session_event(CancelRequested(reason)))

    def _core(self) -> SessionCore:
        core = self.core
        if core is None:
            target = self.target
            core = self.core = SessionCore(self.policy, "" if target is None else target.name)
        return core

    def session_event(self, event: Event) -> list[Action]:
        """Something happened to the session (not to the statement being decided, which
        `gatekeep` follows): the core's actions, carried out at once."""
        actions = self._core().handle(event)
        for action in actions:
            if isinstance(action, Withdraw):
                self._withdraw(action)
            elif isinstance(action, EndSession):
                self.end(action.reason, action.error, cancel_running=action.cancel_running)
            elif isinstance(action, SetDeadline):
                self._set_deadline(action)
            elif isinstance(action, WarnClient):
                self.warn_client(action)
            elif isinstance(action, Record):
                self.record(action.kind, action.data)
            elif isinstance(action, AnswerRefresh):
                pass  # for the caller (`refresh`)
            else:
                raise AssertionError(f"not an action outside a decision: {action!r}")
        return actions

    def _withdraw(self, action: Withdraw) -> None:
        withdrawn = self.listener.hub.withdraw(action.request_id, action.reason)
        if withdrawn is not None:
            self.record("approval.decided", decision_event(withdrawn))

    def hold_started(self) -> None:
        """A statement is held: the client is still read (its close must be seen at once:
        see `read_while_held`), and what it sends meanwhile waits behind the statement."""
        self._read_while_held = 0
        self.client_side.watch_for_close(True)

    def hold_ended(self) -> None:
        """The held statement was decided: the client is read as the relay's flow allows."""
        self.client_side.watch_for_close(False)

    def _apply(self, actions: Sequence[object]) -> None:
        """Carry out the relay's actions: sends, the end, and a hold (any other action: the
        relay's HoldMessage or HoldCommand), decided off the hot path by `_decision`."""
        for action in actions:
            if isinstance(action, SendToServer):
                assert self.server_side is not None
                self.server_side.write(action.raw)
            elif isinstance(action, SendToClient):
                self.client_side.write(action.raw)
            elif isinstance(action, EndRelay):
                self.end(action.reason, action.error, sequence=action.sequence)
                return
            else:
                # The client is still read while the statement is decided, so that its
                # close is seen at once; what it sends waits in the relay. Its earlier
                # statements' results keep flowing from the server meanwhile.
                self.hold_started()
                self._deciding = asyncio.get_running_loop().create_task(self._decide(action))

    async def _decide(self, held: object) -> None:
        started = time.perf_counter()
        self._held_s = 0.0
        try:
            actions = await self._decision(held)
        except AirlockError as error:
            self.end(f"client protocol error: {error.message}", error)
            return
        except Exception:
            # A bug or a store failure must not leave the client waiting forever.
            log.exception("session %s: deciding a held statement failed", self.id)
            self.end("internal error", AirlockError("internal gateway error"))
            return
        self._deciding = None
        if self.ended:
            return  # an ended session's held statement never reaches the server
        self.hold_ended()
        self._apply(actions)
        self.listener.instruments.decided_latency(self.protocol)(
            time.perf_counter() - started - self._held_s
        )

    async def _classify(self, sql: str | None) -> Verdict:
        """Raises StatementTooLarge; cold parses are scheduled fairly per session. Text
        the connection's character set cannot decode (None) is of unknown class."""
        if sql is None:
            return NOT_TEXT
        return await self.listener.classifiers.classify(sql, self.protocol, self)

    def _server_closed(self, exc: BaseException | None) -> None:
        quiet = self._quiet_close()
        if quiet is not None:
            self.end(quiet)
            return
        self.end(
            "upstream closed the connection",
            UpstreamUnavailable("the upstream server closed the connection"),
        )

    def read_while_held(self, size: int) -> bool:
        """`size` more client bytes arrived behind a held statement. They wait in the
        relay's framer, up to limits.max_message_bytes: a client that sends more is
        ended (and its request withdrawn) rather than left unread, since a client the
        gateway does not read could close unseen. False when the session ended."""
        self._read_while_held += size
        limit = self.listener.settings.max_message_bytes
        if self._read_while_held <= limit:
            return True
        reason = f"the client sent more than {limit} bytes while a statement waited for approval"
        self.withdraw_waiting(reason)
        self.end(
            reason,
            MessageTooLarge(
                f"{reason}; the session ends",
                hint="wait for a held statement's result before sending more "
                "(or raise limits.max_message_bytes)",
            ),
        )
        return False

    def _client_closed(self, exc: BaseException | None) -> None:
        """The client closed its connection (or it broke): a statement held for approval
        is withdrawn before anything else, then the session ends."""
        self.session_event(ClientClosed(None if exc is None else str(exc)))

    def sessions_gone(self) -> None:
        """The session ended: its pending approval requests can no longer run."""
        if self._requested:
            self.listener.hub.sessions_gone([self.id])

    # --- login steps both protocols take

    def check_transport(self, tls: bool, hint: str) -> None:
        """Tokens only over TLS, unless the settings allow plain loopback clients."""
        if not tls and not (
            self.listener.settings.allow_insecure_loopback
            and self.client_address is not None
            and is_loopback(self.client_address[0])
        ):
            raise InsecureTransport("the gateway accepts tokens only over TLS", hint=hint)

    def enter(self, target: TargetSettings) -> EffectivePolicy:
        """The session is for `target`, under the rules that match its identity."""
        identity = self.identity
        assert identity is not None
        self.target = target
        self.policy = effective_policy(self.listener.settings.rules, identity.groups, target.name)
        if self.policy is None:
            raise AuthorizationDenied(
                f'no rule lets "{identity.subject}" reach target "{target.name}"',
                detail=f"groups: {', '.join(sorted(identity.groups)) or '(none)'}",
            )
        return self.policy

    def log_session(self, tls: bool) -> None:
        identity, target = self.identity, self.target
        assert identity is not None
        assert target is not None
        groups = ",".join(sorted(identity.groups))
        where = logs.host_port(self.client_address)
        logs.bind(identity=identity.subject, target=target.name)
        log.info("session %s: %s (%s) -> %s from %s, tls=%s",
                 self.id, identity.subject, groups, target.name, where, tls,
                 extra=self.log_fields("session_started"))  # fmt: skip

    def log_fields(self, event: str) -> dict[str, str]:
        """A record's names for this session (proxy/logs.py): given on each of its own
        records, as `end` runs in whichever task ends the session."""
        fields = {"event": event, "session": self.id, "client": logs.host_port(self.client_address)}
        if self.identity is not None:
            fields["identity"] = self.identity.subject
        if self.target is not None:
            fields["target"] = self.target.name
        return fields

    async def gatekeep(
        self, gate: Gate, sql: str, verdict: Verdict, parameters: tuple[Parameter, ...], key: str
    ) -> tuple[AirlockError | None, str]:
        """Decide a statement: (None to forward, else the refusal; the decision as the
        transcript says it). The session core decides; this carries out its actions and
        feeds their outcome back, until it forwards or refuses."""
        policy, identity, target = self.policy, self.identity, self.target
        assert policy is not None
        assert identity is not None
        assert target is not None
        core = self._core()
        hub, now = self.listener.hub, self.listener.clock()
        self._transaction = None
        statement_class = CLASS_NAMES[verdict.statement_class]
        if judge(statement_class, policy, gate.session_grant_until, now).ruling is Ruling.HOLD:
            self._transaction, refused = await self._transaction_state(sql, verdict)
            if refused:
                log.info("session %s: %s statement forwarded: the server refuses it in the "
                         "read-only transaction", self.id, statement_class,
                         extra=self.log_fields("statement_read_only"))  # fmt: skip
                return None, READ_ONLY_REFUSES
        actions = core.handle(
            StatementReady(sql, verdict, parameters, key, now, gate.session_grant_until)
        )
        while True:
            event: Event | None = None
            try:
                for action in actions:
                    if isinstance(action, Forward):
                        if action.decision.startswith("approved"):
                            log.info("session %s: statement runs under %s", self.id,
                                     action.decision,
                                     extra=self.log_fields("statement_approved"))  # fmt: skip
                        return None, action.decision
                    if isinstance(action, Refuse):
                        if action.decision == "deny":
                            log.info("session %s: %s statement denied by policy", self.id,
                                     verdict.statement_class.value,
                                     extra=self.log_fields("statement_denied"))  # fmt: skip
                        return action.error, action.decision
                    if isinstance(action, LookUpSessionGrant):
                        event = SessionGrantFound(hub.store.session_grant(self.id, now))
                    elif isinstance(action, UseStatementGrant):
                        grant = hub.store.use_statement_grant(
                            subject=identity.subject,
                            target=target.name,
                            sql=action.sql,
                            params_key=action.key,
                            now=now,
                        )
                        event = StatementGrantFound(grant)
                    elif isinstance(action, GrantSession):
                        gate.session_grant_until = action.until
                    elif isinstance(action, UseGrant):
                        hub.store.use_grant(action.request_id, self.listener.clock())
                    elif isinstance(action, RequestApproval):
                        event = ApprovalRequested(self._request(action))
                    elif isinstance(action, Record):
                        self.record(action.kind, action.data)
                    elif isinstance(action, AnnounceHold):
                        self.announce_hold(action.request)
                    elif isinstance(action, Withdraw):
                        self._withdraw(action)
                    elif isinstance(action, AwaitDecision):
                        waited = time.perf_counter()
                        decided = await hub.wait(
                            action.request_id, action.timeout_s, on_progress=self._approved_once
                        )
                        waited = time.perf_counter() - waited
                        self._held_s += waited
                        self.listener.instruments.hold_wait.labels(target=target.name).observe(
                            waited
                        )
                        if self.ended:
                            event = SessionEnded()
                        elif decided is None:
                            event = DeadlineReached()
                        else:
                            event = ApprovalDecided(decided)
                    elif isinstance(action, MakeDurable):
                        await self.flush_recording()
                        event = SessionEnded() if self.ended else Durable()
                    else:
                        raise AssertionError(f"not an action of a decision: {action!r}")
            except StoreUnavailable as error:
                event = StoreFailed(str(error))
            assert event is not None, actions
            actions = core.handle(event)

    def _approved_once(self, request: ApprovalRequest) -> None:
        """One approver of several approved the held statement: it waits on, recorded."""
        if not self.ended:
            self.record("approval.decided", progress_event(request))

    def _request(self, action: RequestApproval) -> ApprovalRequest:
        policy, identity, target = self.policy, self.identity, self.target
        assert policy is not None
        assert identity is not None
        assert target is not None
        request = self.listener.hub.request(
            NewRequest(
                session_id=self.id,
                subject=identity.subject,
                groups=tuple(sorted(identity.groups)),
                email=identity.email,
                target=target.name,
                protocol=self.protocol,
                sql=action.sql,
                parameters=action.parameters,
                params_key=action.key,
                statement_class=action.verdict.statement_class.value,
                reasons=action.verdict.reasons,
                hold=action.hold.value,
                approver_groups=tuple(sorted(policy.approvers)),
                grant_ttl_s=policy.grant_ttl_s,
                why=preview.justification(action.sql),
                transaction=self._transaction,
                approvals_required=policy.approvals_for(action.verdict.statement_class.value),
            ),
            policy.webhooks,
        )
        self._requested = True
        # The impact preview runs in the background: the hold does not wait for it.
        preview.start(self.listener.hub.store, request, target, policy.preview)
        return request

    # --- the transcript

    async def open_recording(self, tls: bool, client: dict[str, Any]) -> SessionRecording | None:
        """Start the transcript (identity, target, client, policy); `client` adds what the
        protocol knows of the client. Refuses the session when it cannot be recorded,
        unless `recording.on_failure: allow`.

        Opening makes the transcript's start and its ledger entry durable (fsyncs), so it
        runs in a worker thread: other sessions' traffic does not wait for the disk."""
        identity, target, recorder = self.identity, self.target, self.listener.recorder
        assert identity is not None
        assert target is not None
        assert recorder is not None
        address = self.client_address
        start = {
            "protocol": self.protocol,
            "identity": {
                "iss": identity.issuer,
                "sub": identity.subject,
                "email": identity.email,
                "groups": sorted(identity.groups),
                "jti": identity.token_id,
                "exp": identity.expires_at,
            },
            "target": target.name,
            "client": {
                "address": address[0] if address else None,
                "port": address[1] if address else None,
                "tls": tls,
                **client,
            },
            "policy": self.listener.settings.policy_hash,
            "claims_seen": sorted(identity.claims),
        }
        opening = asyncio.get_running_loop().run_in_executor(None, recorder.open, self.id, start)
        try:
            self.recording = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The login gave up (timeout, shutdown) while the file was being made.
            opening.add_done_callback(lambda done: seal_abandoned(recorder, done))
            raise
        except TranscriptError as error:
            if self.listener.settings.recording.on_failure == "allow":
                log.error("session %s NOT RECORDED (recording.on_failure: allow): %s",
                          self.id, error)  # fmt: skip
                return None
            log.error("session %s refused: cannot record it: %s", self.id, error)
            raise RecordingUnavailable(
                "the gateway cannot record this session, so it refuses it"
            ) from None
        if self.listener.settings.recording.on_failure == "refuse":
            self.durable_classes = DURABLE_CLASSES
            loop = asyncio.get_running_loop()

            def write_failed(error: TranscriptError) -> None:  # in any thread
                with contextlib.suppress(RuntimeError):  # the loop has closed: nothing runs
                    loop.call_soon_threadsafe(self.recording_failed, error)

            self.recording.on_write_failed = write_failed
        return self.recording

    async def record_durably(self, statement_class: StatementClass) -> None:
        """Before a statement of `statement_class` is forwarded: unless the class is a read
        (or the session runs under `on_failure: allow`), wait until every event recorded so
        far, the statement's own last, is written and fsynced (in a worker thread). When it
        cannot be, the session has ended (58030) when this raises RecordingFailed: the
        statement must not be forwarded."""
        if statement_class in self.durable_classes:
            await self.flush_recording()

    async def flush_recording(self) -> None:
        """Write and fsync what is pending, in a worker thread. On failure: under
        `on_failure: refuse` end the session and raise RecordingFailed; under `allow`
        log it and carry on (the Recorder counts the failure and retries)."""
        recording = self.recording
        if recording is None:
            return
        try:
            await asyncio.to_thread(recording.flush)
        except TranscriptError as error:
            if not self.durable_classes:
                log.warning("session %s relays on unrecorded (recording.on_failure: allow): %s",
                            self.id, error)  # fmt: skip
                return
            self.recording_failed(error)
            raise RecordingFailed(_RECORDING_FAILED) from None

    def recording_failed(self, error: TranscriptError) -> None:
        """The transcript cannot be written (`on_failure: refuse`): the session ends rather
        than relay anything unrecorded. Runs on the event loop."""
        if self.recording is None:
            return  # ended already (sealing), or never recorded
        log.error("session %s ends: its transcript cannot be written: %s", self.id, error)
        self.session_event(RecordingBroke())

    def record_statement(
        self, sql: str, verdict: Verdict, decision: str, extra: dict[str, Any] | None = None
    ) -> None:
        """A statement reached its decision: counted, and recorded with why (its reasons,
        unless its class allows it) and what the protocol adds (`extra`)."""
        self.count_statement(verdict.statement_class, decision)
        recording = self.recording
        if recording is None:
            return
        data: dict[str, Any] = {
            "sql": sql,
            "class": verdict.statement_class.value,
            "decision": decision,
        }
        if decision != "allow":
            data["reasons"] = list(verdict.reasons)  # why it was held, refused or granted
        if extra:
            data.update(extra)
        recording.event("statement", data)

    def capture_row(self, body: bytes) -> None:
        """A result row, captured (recording.capture_rows) while the session's cap lasts."""
        if len(body) > self._row_bytes_left:
            self._row_bytes_left = 0
            self._rows_cut = True
            return
        self._row_bytes_left -= len(body)
        self._rows.append(body)

    def record_result(self, data: dict[str, Any], *, count_rows: bool) -> None:
        """A statement's result, with the row bodies captured for it under `row_data`
        (proxy/recording/format.py's Result); `count_rows`: `rows` is their count, unless
        the session's max_row_bytes cut them short (a protocol that knows the count from
        the server sets `rows` itself)."""
        if self._rows or self._rows_cut:
            if count_rows and not self._rows_cut:
                data["rows"] = len(self._rows)
            data["row_data"], self._rows = self._rows, []
            if self._rows_cut:
                data["rows_cut"] = True  # the session's max_row_bytes ran out
                self._rows_cut = False
        self.record("result", data)

    def record(self, kind: str, data: dict[str, Any]) -> None:
        if self.recording is not None:
            self.recording.event(kind, data)

    def count_statement(self, statement_class: StatementClass, decision: str) -> None:
        """A statement reached `decision` (as the transcript says it): counted for metrics."""
        self.statements += 1
        listener = self.listener
        listener.statements += 1
        target = self.target
        key = (
            "" if target is None else target.name,
            CLASS_NAMES[statement_class],
            decision_label(decision),
        )
        listener.statement_counts[key] += 1

    def uncounted_statements(self) -> StatementCounts:
        """Statements run and not yet in the listener's counts (a PostgreSQL gate counts
        those it allows itself until the session ends)."""
        return StatementCounts()

    def seal(self, reason: str, error: AirlockError | None) -> None:
        recording, self.recording = self.recording, None
        if recording is None:
            return
        recording.on_write_failed = None  # the session is over; the Recorder retries alone
        end = {
            "reason": reason,
            "error": None
            if error is None
            else {"sqlstate": error.sqlstate, "message": error.message},
            "statements": self.statements,
        }
        recorder = self.listener.recorder
        assert recorder is not None
        recorder.seal_soon(recording, end)


def seal_abandoned(recorder: Recorder, opening: asyncio.Future[SessionRecording]) -> None:
    """Seal a transcript whose session ended while it was being opened."""
    if opening.cancelled() or opening.exception() is not None:
        return  # nothing was opened, or nothing is left open (Recorder.open cleans up)
    end = {"reason": "the session ended during login", "error": None, "statements": 0}
    recorder.seal_soon(opening.result(), end)
