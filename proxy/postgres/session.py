"""The PostgreSQL listener: login, upstream connection, relay, cancel, session_ttl.

Each client connection is one `PgSession`. Its login is linear async code over
a `Channel`; once both sides are up, bytes flow through the sans-I/O `PgRelay`
from `data_received` callbacks, and this module only carries out the relay's
actions. Clients get BackendKeyData with the upstream backend's real process id
(what notifications and pg_backend_pid() show) and a secret minted by the gateway;
a CancelRequest is mapped back to the upstream backend of the session that owns the
key, so no client can cancel another's query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from policy.classify import CLASS_NAMES, LEXER_REASON, StatementClass, Verdict
from policy.identity import Identity
from policy.judge import judge
from policy.read_only import refused_in_read_only
from protocols.errors import ProtocolViolation
from protocols.postgres import messages as m
from protocols.postgres.auth import ScramServerExchange
from protocols.postgres.framing import MessageFramer, StartupFramer
from proxy.approvals.credentials import Credential, is_credential_name
from proxy.approvals.store import ApprovalRequest
from proxy.core.actions import SendToServer
from proxy.core.channel import Channel, ConnectionClosed
from proxy.core.gated_session import READ_ONLY_REFUSES, GatedSession
from proxy.core.listener import Listener
from proxy.core.metrics import StatementCounts
from proxy.core.session_core import TOKEN_EXPIRED, WarnClient
from proxy.errors import (
    AirlockError,
    AuthenticationFailed,
    AuthorizationDenied,
    FeatureNotSupported,
    StatementDenied,
    StatementTooLarge,
    UnknownTarget,
)
from proxy.parameters import NO_PARAMETERS_KEY
from proxy.postgres.gate import ADMIT, ALLOW, WAIT, PgGate
from proxy.postgres.relay import (
    Action,
    HoldMessage,
    PgRelay,
    Pipe,
    check_lexer_assumption,
    error_message,
)
from proxy.postgres.startup import equivalent_set, startup_settings
from proxy.postgres.upstream import UpstreamSession, connect_upstream, read_message

log = logging.getLogger("airlock.postgres")

CANCEL_TIMEOUT_S = 5.0
#: A warning of the session's end waits this long while the client is busy, then retries.
WARN_RETRY_S = 1.0
#: What the gateway asks the server, on the session's own connection and unseen by the
#: client, when a statement that needs approval arrives inside a transaction: is it READ
#: ONLY, and does the session have any temporary relation (a write could be to one)?
READ_ONLY_PROBE = (
    "SELECT pg_catalog.current_setting('transaction_read_only'), EXISTS (SELECT FROM "
    "pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema())"
)
#: The transaction state by ReadyForQuery status (proxy/approvals/store.py's TRANSACTION_STATES).
TRANSACTION_STATES = {"I": "idle", "T": "in transaction", "E": "failed"}
#: Room for the largest token we would verify, plus the message envelope.
_MAX_PASSWORD_MESSAGE_BYTES = 64 * 1024

#: Settings a client may not choose at startup, whatever its rules: the gateway chooses
#: the role the session acts as (the target's read and write roles). Dropped with a
#: warning. Every other setting asked for at startup (as a parameter, or `-c`/`--name=`
#: in `options`) is judged as the equivalent SET and passed on as a parameter when the
#: rules simply allow that SET. `options` itself is never passed: its other switches
#: (`-S`, `-e`, ...) set server settings without any SQL the gateway sees.
NEVER_FORWARDED_SETTINGS = frozenset({"role", "session_authorization"})
#: Client encodings whose multibyte characters can end in a backslash or quote
#: byte: the classifier could not lex such text as the server does.
UNSAFE_CLIENT_ENCODINGS = frozenset(
    {
        "SJIS",
        "SHIFT_JIS",
        "BIG5",
        "GBK",
        "GB18030",
        "UHC",
        "JOHAB",
        "WIN932",
        "WIN936",
        "WIN949",
        "WIN950",
        "MSKANJI",
        "SHIFTJIS2004",
        "SHIFT_JIS_2004",
        "TCVN",
    }
)


@dataclass(frozen=True, slots=True)
class CancelTarget:
    """Where a client's cancel key leads: one upstream backend."""

    host: str
    port: int
    process_id: int
    secret_key: int
    session: PgSession


#: A cancel secret's owner number sits above this bit (8 bits), the random part below.
OWNER_SHIFT = 24


def _int32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


class PgListener(Listener["PgSession"]):
    def init_protocol_state(self) -> None:
        self.cancel_keys: dict[tuple[int, int], CancelTarget] = {}
        #: This gateway's (or worker's) owner number in the shared store, 1-255: the top 8
        #: bits of the secrets it mints. 0: no shared store, all 32 bits random.
        self.owner = 0
        #: Forwards a cancel key whose owner is another gateway or worker (the store's
        #: NOTIFY airlock_cancel): (owner, process id, secret).
        self.route_cancel: Callable[[int, int, int], None] | None = None

    def new_session(self, channel: Channel) -> PgSession:
        return PgSession(self, channel)

    def new_cancel_key(self, process_id: int) -> tuple[int, int]:
        """The client's cancel key for an upstream backend: its real process id (public:
        pg_stat_activity shows it) and a secret of the gateway's own, unique among this
        listener's keys. With a shared store its top 8 bits are this gateway's owner number
        and 24 are random; without, all 32 are random (docs/security.md, "Cancel keys")."""
        while True:
            if self.owner:
                secret = self.owner << OWNER_SHIFT | secrets.randbits(OWNER_SHIFT)
            else:
                secret = secrets.randbits(32)
            key = (process_id, _int32(secret))
            if key not in self.cancel_keys:
                return key

    async def forward_cancel(self, request: m.CancelRequest) -> None:
        owner = (request.secret_key & 0xFFFFFFFF) >> OWNER_SHIFT
        if (
            (request.process_id, request.secret_key) not in self.cancel_keys
            and self.owner
            and owner != self.owner
            and self.route_cancel is not None
        ):
            # Another gateway's (or worker's) key: it decides, against its own sessions.
            log.info("cancel request forwarded to owner %d", owner)
            self.route_cancel(owner, request.process_id, request.secret_key)
            return
        await self.cancel_key_of_ours(request.process_id, request.secret_key)

    def cancel_forwarded(self, process_id: int, secret_key: int) -> None:
        """A cancel key that landed on another gateway or worker, routed here by its owner
        number: honoured only if both halves match a session of ours."""
        self.spawn(self.cancel_key_of_ours(process_id, secret_key))

    async def cancel_key_of_ours(self, process_id: int, secret_key: int) -> None:
        target = self.cancel_keys.get((process_id, secret_key))
        if target is None:
            log.info("cancel request with an unknown key ignored")
            return
        if target.session.cancel_requested():
            return  # it withdrew a held statement, and the upstream runs nothing of it
        await self.cancel_upstream(target)

    async def cancel_upstream(self, target: CancelTarget) -> None:
        loop = asyncio.get_running_loop()
        channel: Channel | None = None
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                _, channel = await loop.create_connection(
                    self.new_channel, target.host, target.port
                )
                channel.write(m.CancelRequest.build(target.process_id, target.secret_key).raw)
                with contextlib.suppress(ConnectionClosed):
                    await channel.read()  # the server closes when it has the request
        except (OSError, TimeoutError) as exc:
            log.warning(
                "could not forward a cancel request for session %s: %s", target.session.id, exc
            )
        finally:
            if channel is not None:
                channel.abort()  # nothing more to say on it; also when shutdown cancels us


class PgSession(GatedSession):
    protocol = "postgres"
    listener: PgListener

    def __init__(self, listener: PgListener, client_side: Channel) -> None:
        super().__init__(listener, client_side)
        self.relay: PgRelay | None = None
        self.cancel_key: tuple[int, int] | None = None
        self.gate: PgGate | None = None
        self._pipe: Pipe | None = None
        #: The held message, once decided, runs under the target's write role.
        self._elevate = False

    # --- lifecycle

    async def log_in(self) -> bool:
        upstream = await self._login()
        if upstream is None:
            self.end("startup finished without a session")
            return False
        self._start_relay(upstream)
        return True

    def _detach(self, cancel_running: bool) -> None:
        if self._pipe is not None:
            self._pipe.open = False  # nothing more passes between the sockets
        if self.cancel_key is not None:
            target = self.listener.cancel_keys.pop(self.cancel_key, None)
            if cancel_running and target is not None and self.relay is not None and self.relay.busy:
                self.listener.spawn(self.listener.cancel_upstream(target))

    def _error_reply(self, error: AirlockError, sequence: int | None) -> bytes:
        return error_message(error, fatal=True)

    def _upstream_goodbye(self) -> bytes:
        return m.Terminate().raw

    def _quiet_close(self) -> str | None:
        relay = self.relay
        # A server that said why it closes (FATAL) was heard; a client that sent
        # Terminate expects the close. Anything else gets a reason from us.
        if relay is not None and (relay.terminated or relay.server_fatal):
            return "upstream closed the connection"
        return None

    def cancel_requested(self) -> bool:
        """A CancelRequest arrived with this session's key. A statement waiting for approval
        is withdrawn; True when that was all there was to cancel (nothing runs upstream)."""
        log.info("session %s: cancel requested", self.id)
        if not self.withdraw_waiting("the client cancelled the statement"):
            return False
        return self.relay is not None and not self.relay.busy

    # --- recording

    def _stop_recording_in_place(self) -> None:
        """The gate and relay record into the transcript no more, and the gate's count of
        statements joins the session's and the listener's."""
        if self.relay is not None:
            self.relay.chain = None
        gate = self.gate
        if gate is not None:
            gate.chain = None
            counts = self.uncounted_statements()
            admitted = sum(counts.values())
            self.statements += admitted
            self.listener.statements += admitted
            self.listener.statement_counts.update(counts)
            gate.forget_admitted()

    def uncounted_statements(self) -> StatementCounts:
        counts = StatementCounts()
        gate, target = self.gate, self.target
        if gate is not None and target is not None:
            for statement_class, count in gate.admitted().items():
                counts[(target.name, CLASS_NAMES[statement_class], "allowed")] = count
        return counts

    def _relay_idle(self) -> bool:
        relay = self.relay
        return relay is None or (
            relay.held is None and not relay.busy and relay.transaction_status == "I"
        )

    def _statement_ran(
        self,
        sql: str,
        verdict: Verdict,
        bind: bytes | None,
        types: tuple[int, ...],
        decision: str,
    ) -> None:
        """A statement reached its decision (most are allowed on the hot path, where the
        gate says only that it runs: under its class's `allow`, or a session grant)."""
        if decision == ALLOW and self.recording is not None:
            # An allowed statement's class says why: the hot path's compact event.
            self.count_statement(verdict.statement_class, decision)
            statement_class = CLASS_NAMES[verdict.statement_class]
            self.recording.statement(sql, statement_class, decision, bind, types)
            return
        # A bound statement's Bind is decoded on replay: nothing to spend on the hot path.
        extra = None if bind is None else {"bind": bind, "types": list(types)}
        self.record_statement(sql, verdict, decision, extra)

    def result(self, tag: str | None, error: m.ErrorResponse | None) -> None:
        """The relay saw a statement finish (CommandComplete, or the error the client saw)."""
        recording = self.recording
        if recording is None:
            return
        if error is None and tag is not None and not self._rows and not self._rows_cut:
            recording.result_tag(tag)  # the hot path
            return
        data: dict[str, Any]
        if error is not None:
            data = {"error": {"sqlstate": error.code, "message": error.message}}
        else:
            data = {"tag": tag}
        self.record_result(data, count_rows=True)

    def row(self, raw: bytes, start: int, end: int) -> None:
        """A DataRow (recording.capture_rows): its body is captured."""
        self.capture_row(raw[start + 5 : end])

    # --- login

    async def _login(self) -> UpstreamSession | None:
        startup = await self._negotiate_startup()
        if startup is None:
            return None
        settings = self.listener.settings
        client_tls = self.client_side.is_tls
        self.check_transport(client_tls, "connect with sslmode=require (or verify-full)")
        user = startup.parameters.get("user", "")
        framer = MessageFramer(frozenset(b"p"), _MAX_PASSWORD_MESSAGE_BYTES)
        credential = await self._scram_login(user, framer) if is_credential_name(user) else None
        if credential is not None:
            self.identity = credential.identity
        else:
            self.identity = await self._token_login(framer)
        if framer.buffered:
            raise ProtocolViolation("client sent messages before authentication completed")
        database = startup.parameters.get("database") or (
            credential.target if credential is not None else user
        )
        target = settings.targets.get(database)
        if target is None or target.protocol != "postgres":
            raise UnknownTarget(f'no PostgreSQL target named "{database}"')
        if credential is not None and credential.target != target.name:
            raise AuthorizationDenied(
                f'credential "{user}" is for target "{credential.target}", not "{target.name}"'
            )
        self.enter(target)
        forwarded, dropped = await self._startup_parameters(startup)
        if self.listener.recorder is not None:
            client = {"application_name": startup.parameters.get("application_name")}
            if credential is not None:
                client["credential"] = user
            await self.open_recording(client_tls, client)
        upstream = await connect_upstream(
            target.upstream,
            forwarded,
            max_message_bytes=settings.max_message_bytes,
            channel_factory=self.listener.new_channel,
            role=target.read_role,
        )
        self.server_side = upstream.channel
        for status in upstream.login.parameters:
            check_lexer_assumption(status.name, status.value)
        reply = [m.AuthenticationOk().raw]
        reply += [status.raw for status in upstream.login.parameters]
        if upstream.login.backend_key is not None:
            key = upstream.login.backend_key
            self.cancel_key = self.listener.new_cancel_key(key.process_id)
            self.listener.cancel_keys[self.cancel_key] = CancelTarget(
                target.upstream.host, target.upstream.port, key.process_id, key.secret_key, self
            )
            reply.append(m.BackendKeyData.build(*self.cancel_key).raw)
        if dropped:
            reply.append(
                m.NoticeResponse.build(
                    "the gateway did not pass on startup parameter(s): "
                    + ", ".join(sorted(dropped)),
                    severity="WARNING",
                    code="01000",
                ).raw
            )
        assert upstream.login.ready is not None
        reply.append(upstream.login.ready.raw)
        self.client_side.write(b"".join(reply))
        self.log_session(client_tls)
        return upstream

    async def _token_login(self, framer: MessageFramer) -> Identity:
        """The agent's JWT, sent as a cleartext password, verified."""
        self.client_side.write(m.AuthenticationCleartextPassword().raw)
        password = m.decode_password(await read_message(self.client_side, framer))
        try:
            token = password.password.decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("the password is not a token") from None
        return await self.listener.verifier.verify(token.strip())

    async def _scram_login(self, user: str, framer: MessageFramer) -> Credential:
        """A gateway-minted credential's SCRAM-SHA-256 exchange; its identity is the
        token's that minted it. An unknown or expired name fails as a wrong password."""
        credential = self.listener.credentials.find(user)
        exchange = ScramServerExchange(
            lambda _user: credential.scram if credential is not None else None, user
        )
        client = self.client_side
        client.write(exchange.start())
        client.write(exchange.client_first(await read_message(client, framer)))
        client.write(exchange.client_final(await read_message(client, framer)))
        assert credential is not None  # client_final refuses an unknown name
        return credential

    async def _negotiate_startup(self) -> m.StartupMessage | None:
        framer = StartupFramer()
        while True:
            raw = framer.next_message()
            if raw is None:
                framer.feed(await self.client_side.read())
                continue
            message = m.decode_initial(raw)
            if isinstance(message, m.CancelRequest):
                await self.listener.forward_cancel(message)
                return None
            if isinstance(message, m.GSSENCRequest):
                self.client_side.write(b"N")
                continue
            if isinstance(message, m.SSLRequest):
                if self.client_side.is_tls:
                    raise ProtocolViolation("SSLRequest on a connection that is already TLS")
                rest = framer.take_rest()
                if rest or self.client_side.has_unread:
                    # Bytes sent before the handshake would be read as if they came over
                    # TLS (CVE-2021-23214): refuse them.
                    raise ProtocolViolation("data received before the TLS handshake")
                if self.listener.tls_context is None:
                    self.client_side.write(b"N")
                    continue
                self.client_side.write(b"S")
                await self.client_side.start_tls(self.listener.tls_context, server_side=True)
                continue
            return self._check_startup(message)

    def _check_startup(self, startup: m.StartupMessage) -> m.StartupMessage:
        replication = startup.parameters.get("replication", "false").lower()
        if replication not in ("false", "off", "no", "0"):
            raise FeatureNotSupported("replication connections are not allowed through the gateway")
        unrecognized = tuple(sorted(p for p in startup.parameters if p.startswith("_pq_.")))
        if startup.minor != 0 or unrecognized:
            # We speak 3.0 only: tell the client, which then carries on in 3.0.
            self.client_side.write(m.NegotiateProtocolVersion.build(0, unrecognized).raw)
        encoding = startup.parameters.get("client_encoding", "").upper().replace("-", "_")
        if encoding in UNSAFE_CLIENT_ENCODINGS:
            raise FeatureNotSupported(
                f"client_encoding {encoding} is not supported through the gateway",
                hint="use UTF8",
            )
        return startup

    async def _startup_parameters(
        self, startup: m.StartupMessage
    ) -> tuple[dict[str, str], set[str]]:
        """The settings to pass on, each judged as the SET it amounts to under the session's
        rules (StatementDenied, FATAL, when one would not run without approval), and the
        names of those dropped."""
        policy = self.policy
        assert policy is not None
        requested = startup_settings(startup.parameters)
        forwarded: dict[str, str] = {}
        dropped = {f"{word} (in options)" for word in requested.other_options}
        for setting in requested.settings:
            shown = setting.name if setting.source != "options" else f"{setting.name} (in options)"
            if setting.name in NEVER_FORWARDED_SETTINGS:
                dropped.add(shown)
                continue
            sql = equivalent_set(setting)
            if sql is None:
                raise StatementDenied(
                    f'startup parameter "{setting.name}" is refused: its value is malformed',
                    detail=f"value: {setting.value!r}",
                )
            verdict = await self._classify(sql)
            statement_class = CLASS_NAMES[verdict.statement_class]
            lexer = any(reason.endswith(LEXER_REASON) for reason in verdict.reasons)
            if lexer or not judge(statement_class, policy).allows:
                raise StatementDenied(
                    f'startup parameter "{setting.name}" is refused: the equivalent SET is '
                    f"{statement_class}, which your rules do not allow"
                    + (" without approval" if not lexer else ""),
                    detail=f"judged as: {sql}; " + "; ".join(verdict.reasons),
                    hint="leave it out of the connection parameters, or SET it once connected",
                )
            forwarded[setting.name] = setting.value
        return forwarded, dropped

    # --- relay

    def _start_relay(self, upstream: UpstreamSession) -> None:
        assert self.policy is not None
        assert self.identity is not None
        ready = upstream.login.ready
        assert ready is not None
        listener = self.listener
        roles = self.write_roles()
        self.gate = PgGate(
            listener.classifiers.cached("postgres"),
            self.policy,
            listener.clock,
            cold_classes=self.cold_classes(roles),
        )
        chain = None if self.recording is None else self.recording.chain
        recording = chain is not None
        capture = recording and listener.settings.recording.capture_rows
        # Every admitted statement is counted (metrics), and recorded when the session is:
        # those allowed by their class by the gate itself, straight into the transcript's
        # chain; the others (session grants) here.
        self.gate.on_statement = self._statement_ran
        self.gate.chain = chain
        if recording:
            self._row_bytes_left = listener.settings.recording.max_row_bytes
        self.relay = PgRelay(
            transaction_status=ready.status,
            max_message_bytes=listener.settings.max_message_bytes,
            gate=self.gate,
            results=self if recording else None,
            capture_rows=capture,
            roles=roles,
        )
        if not capture:
            self.relay.chain = chain  # records tags: no rows go with them
        self.relay.server_parameters.update({p.name: p.value for p in upstream.login.parameters})
        self.relaying()
        client_side, server_side = self.client_side, upstream.channel
        assert client_side.transport is not None
        assert server_side.transport is not None
        # Whole messages pass straight from one transport to the other (Pipe); the
        # session sees only what the fast path leaves.
        pipe = self._pipe = Pipe(
            self.relay,
            server_side.transport.write,
            client_side.transport.write,
            self._client_rest,
            self._server_failed,
        )
        pipe.chain = chain
        pipe.on_latency = listener.instruments.relay_latency("postgres")
        server_side.start_relay(pipe.server_data, self._server_closed)
        if upstream.leftover:
            pipe.server_data(upstream.leftover)
        client_side.start_relay(pipe.client_data, self._client_closed)

    def _client_rest(self, raw: bytes, done: int) -> None:
        """Client bytes the pipe's fast path did not take all of (`done` it did)."""
        assert self.relay is not None
        if self.relay.held is not None and not self.read_while_held(len(raw)):
            return
        try:
            actions = self.relay.client_data(raw, done)
        except AirlockError as error:
            self.end(f"client protocol error: {error.message}", error)
            return
        self._apply(actions)

    def _server_failed(self, error: AirlockError) -> None:
        log.warning("session %s: upstream protocol error: %s", self.id, error.message)
        self.end("upstream protocol error", error)

    # --- decisions on held messages

    async def _decision(self, held: HoldMessage) -> list[Action]:
        refusal = await self._judged(held.raw)
        relay = self.relay
        assert relay is not None
        if self.ended:
            return []  # an ended session's held message never reaches the server
        elevate, self._elevate = self._elevate, False
        # Forwarded (under the write role when `elevate`) or refused; then the client's
        # next messages go on.
        return relay.release(forward=refusal is None, error=refusal, elevate=elevate)

    async def _judged(self, raw: bytes) -> AirlockError | None:
        """None to forward the held message; else the error that refuses it."""
        gate = self.gate
        assert gate is not None
        # A message whose meaning hangs on an earlier batch waits for the server's answer
        # to it (WAIT); one the gate can then admit on its own goes on (ADMIT).
        while (outcome := gate.admit(raw[0], raw, 0, len(raw))) == WAIT:
            await self._server_caught_up()
        if outcome == ADMIT:
            return None
        message = m.decode_frontend(raw)  # ProtocolViolation when malformed
        if isinstance(message, m.Query | m.Parse):
            replaced = await self.in_band_refresh(message.sql)
            if isinstance(replaced, AirlockError):
                return replaced
            if replaced is not None:
                # The refresh is consumed: a constant query runs in its place.
                message = _in_place_of(message, replaced)
                assert self.relay is not None
                self.relay.held = message.raw
        if isinstance(message, m.Parse):
            # A Parse runs nothing: it waited only for its statement to be classified.
            try:
                gate.note_parse(message, await self._classify(message.sql))
            except StatementTooLarge as too_large:
                return too_large
            return None
        if isinstance(message, m.Query):
            try:
                verdict = gate.query_verdict(message.sql, await self._classify(message.sql))
            except StatementTooLarge as too_large:
                return too_large
            refusal, decision = await self.gatekeep(
                gate, message.sql, verdict, (), NO_PARAMETERS_KEY
            )
            self._statement_ran(message.sql, verdict, None, (), decision)
            if refusal is None:
                await self.record_durably(verdict.statement_class)
                gate.note_query(message.sql)
                # What the server refuses as read-only runs as it came: under the read role.
                self._elevate = (
                    verdict.statement_class is not StatementClass.READ
                    and decision != READ_ONLY_REFUSES
                )
            return refusal
        if isinstance(message, m.Execute):
            run = gate.execution(message)
            refusal, decision = await self.gatekeep(
                gate, run.sql, run.verdict, run.parameters, run.key
            )
            self._statement_ran(run.sql, run.verdict, run.bind, run.types, decision)
            if refusal is None:
                await self.record_durably(run.verdict.statement_class)
                gate.note_execute(message.portal)
                self._elevate = run.verdict.statement_class is not StatementClass.READ
            return refusal
        # Only a malformed Bind, Close or Describe gets here, and decoding it failed.
        raise ProtocolViolation(f"unexpected held message {raw[:1]!r}")

    async def _transaction_state(self, sql: str, verdict: Verdict) -> tuple[str | None, bool]:
        """The transaction state as the server's last ReadyForQuery gave it; inside a
        transaction, a held simple Query asks the server whether it is READ ONLY
        (READ_ONLY_PROBE). An Execute is not asked about: its batch is open on the server,
        where a Query of ours would end it, so its state is not known."""
        relay = self.relay
        assert relay is not None
        held = relay.held
        if held is None or held[0] != ord("Q"):
            return None, False
        if relay.busy:
            await self._server_caught_up()  # earlier Queries still run: their end decides
            if relay.busy or relay.held is not held:
                return None, False
        status = TRANSACTION_STATES.get(relay.transaction_status)
        if status != "in transaction":
            return status, False
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def probed() -> None:
            if not answered.done():
                answered.set_result(None)

        relay.on_probed = probed
        self._apply([SendToServer(relay.probe(READ_ONLY_PROBE))])
        await answered
        values = None if relay.probe_failed else _single_row(relay.probe_rows)
        if values is None or values[0] not in ("on", "off"):
            log.warning("session %s: the server did not say whether the transaction is "
                        "read only", self.id)  # fmt: skip
            return status, False
        if values[0] == "off":
            return status, False
        # No temporary relation in the session: a write cannot be to a temporary table.
        no_temporary = values[1] == "f"
        return "read only", no_temporary and refused_in_read_only(
            sql, "postgres", verdict.statement_class
        )

    async def _server_caught_up(self) -> None:
        """Until the server has answered every batch the gateway forwarded."""
        gate = self.gate
        assert gate is not None
        if gate.drained:
            return
        caught_up: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def drained() -> None:
            if not caught_up.done():
                caught_up.set_result(None)

        gate.on_drained = drained
        await caught_up

    def warn_client(self, warning: WarnClient) -> None:
        """A NoticeResponse, which a server may send whenever it is idle: sent once the
        client waits for nothing (no statement running, no message half relayed)."""
        relay, core = self.relay, self.core
        if self.ended or relay is None or core is None or core.end_at != warning.end_at:
            return  # ended, or a refresh moved the end (and will warn anew)
        if relay.busy or relay.held is not None or not relay.between_server_messages:
            asyncio.get_running_loop().call_later(WARN_RETRY_S, self.warn_client, warning)
            return
        left_s = max(warning.end_at - self.listener.clock(), 0.0)
        self.client_side.write(end_warning(warning.reason, left_s, self.id).raw)

    def announce_hold(self, request: ApprovalRequest) -> None:
        reasons = "; ".join(request.request.reasons)
        self.client_side.write(
            m.NoticeResponse.build(
                f"statement held for approval: request {request.id}",
                severity="NOTICE",
                code="01000",
                detail=reasons or None,
                hint=f"an approver runs: airlock approve {request.id}",
            ).raw
        )


def _single_row(rows: list[bytes]) -> list[str | None] | None:
    """The text columns of the one DataRow in `rows`; None unless there is exactly one."""
    if len(rows) != 1:
        return None
    row = rows[0]
    count = int.from_bytes(row[5:7], "big")
    values: list[str | None] = []
    pos = 7
    for _ in range(count):
        length = int.from_bytes(row[pos : pos + 4], "big", signed=True)
        pos += 4
        if length < 0:
            values.append(None)
            continue
        values.append(row[pos : pos + length].decode("utf-8", "replace"))
        pos += length
    return values


def _in_place_of(message: m.Query | m.Parse, sql: str) -> m.Query | m.Parse:
    """The message with `sql` in place of its statement (a Parse declaring no types)."""
    if isinstance(message, m.Query):
        return m.Query.build(sql)
    body = m.cstring(message.statement) + m.cstring(sql) + b"\0\0"
    return m.Parse(message.statement, sql, (), m.frame(b"P", body))


def end_warning(reason: str, left_s: float, session_id: str) -> m.NoticeResponse:
    """The notice that the session ends soon: when, why, and how to extend it."""
    if left_s < 90:
        seconds = max(math.ceil(left_s), 1)
        when = f"in {seconds} second{'' if seconds == 1 else 's'}"
    else:
        when = f"in about {round(left_s / 60)} minutes"
    if reason == TOKEN_EXPIRED:
        message = f"this session ends {when}: its token expires"
        hint = (
            "present a fresh token for the same identity: SELECT airlock.refresh('<token>'), "
            f"or airlock sessions refresh {session_id} --token <token>"
        )
    else:
        message = f"this session ends {when}: {reason}"
        hint = "session_ttl caps the session whatever its token: connect again after it ends"
    return m.NoticeResponse.build(message, severity="WARNING", code="01000", hint=hint)
