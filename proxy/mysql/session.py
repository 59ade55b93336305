"""The MySQL listener: login, upstream connection, relay, KILL, session_ttl.

Each client connection is one `MySqlSession`. The gateway greets the client
with its own handshake (its own scramble and connection id) and gets the
agent's JWT as a cleartext password: through caching_sha2_password full
authentication over TLS, or by switching to mysql_clear_password (which
clients opt in to). It then logs in to the target's upstream with the
configured credentials and the capabilities the client agreed to, so both
legs speak the same command phase and packets are relayed verbatim through
the sans-I/O `MySqlRelay`.

The handshake's connection id is the gateway's (it is sent before the upstream
is chosen), while CONNECTION_ID() and SHOW PROCESSLIST show the upstream thread's:
`KILL [QUERY] id` and COM_PROCESS_KILL take either, and are carried out by the
gateway for the agent's own sessions only: a KILL QUERY of a held statement
withdraws its approval request; of a running one, the gateway kills the upstream
thread on a connection of its own.

The greeting announces the upstream's own version with "-airlock" after it (as
MariaDB writes it, "5.5.5-10.11.19-MariaDB-...", so drivers tell MariaDB from
MySQL), learned from the announcing target's greeting when the listener starts and
at each login to it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from time import perf_counter
from typing import Any

from policy.classify import LEXER_REASON, StatementClass, Verdict
from policy.classify.data.mysql import CHARSETS as SAFE_CHARSETS
from policy.read_only import refused_in_read_only
from policy.rules import effective_policy
from protocols.errors import ProtocolViolation
from protocols.mysql import auth
from protocols.mysql.messages import (
    CHARSET_NAMES,
    AuthMoreData,
    AuthSwitchRequest,
    Capability,
    Command,
    HandshakeResponse41,
    HandshakeV10,
    OkPacket,
    ServerStatus,
    is_ssl_request,
)
from protocols.mysql.packets import Packet, PacketReader, frame
from protocols.mysql.responses import ResponseTracker
from proxy.approvals.credentials import Credential, is_credential_name
from proxy.config import TargetSettings
from proxy.core.channel import Channel
from proxy.core.gated_session import READ_ONLY_REFUSES, WRITE_ROLE_CLASSES, GatedSession
from proxy.core.listener import Listener
from proxy.core.metrics import LATENCY_SAMPLE_EVERY
from proxy.errors import (
    AirlockError,
    AuthenticationFailed,
    AuthorizationDenied,
    FeatureNotSupported,
    SessionExpired,
    StatementDenied,
    StatementTooLarge,
    UnknownSession,
    UnknownTarget,
    UpstreamUnavailable,
)
from proxy.mysql.relay import (
    Action,
    EndSession,
    HoldCommand,
    Kill,
    MySqlGate,
    MySqlRelay,
    PreparedStatement,
    SendToServer,
    error_packet,
    is_kill,
    parse_kill,
)
from proxy.mysql.upstream import PacketStream, connect_upstream, kill_query, upstream_version
from proxy.parameters import NO_PARAMETERS_KEY, Parameter

log = logging.getLogger("airlock.mysql")

#: What the gateway says it is until it has heard an upstream's greeting. Clients pick
#: features by the version: an 8.0 would make mysql-connector ask for utf8mb4_0900_ai_ci,
#: which MariaDB lacks; 5.7 gets what both MariaDB and MySQL 8 understand.
SERVER_VERSION = "5.7.99-airlock"
#: After the upstream's version in the greeting.
VERSION_SUFFIX = "-airlock"
#: Gateway connection ids are drawn from [2**30, 2**31), far above the thread ids a
#: server hands out, so a KILL's id names a gateway id or an upstream thread, not both.
_CONNECTION_ID_FLOOR = 1 << 30
#: utf8mb4_general_ci: the character set the gateway greets with.
GREETING_CHARSET = 45
#: What the gateway offers clients. Left out: LOCAL_FILES (a server could ask for any
#: client file), COMPRESS and ZSTD (not implemented), QUERY_ATTRIBUTES (it moves the
#: statement text), SESSION_TRACK and OPTIONAL_RESULTSET_METADATA (other packet
#: layouts), IGNORE_SPACE (it changes how function names lex), NO_SCHEMA.
ADVERTISED = (
    Capability.LONG_PASSWORD
    | Capability.FOUND_ROWS
    | Capability.LONG_FLAG
    | Capability.CONNECT_WITH_DB
    | Capability.ODBC
    | Capability.PROTOCOL_41
    | Capability.INTERACTIVE
    | Capability.IGNORE_SIGPIPE
    | Capability.TRANSACTIONS
    | Capability.RESERVED
    | Capability.SECURE_CONNECTION
    | Capability.MULTI_STATEMENTS
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.PLUGIN_AUTH
    | Capability.CONNECT_ATTRS
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.DEPRECATE_EOF
)
#: Python codecs for the safe character sets (how statement text is decoded).
_ENCODINGS = {"latin1": "latin-1", "ascii": "ascii"}
_MAX_TOKEN_PACKET = 64 * 1024


class MySqlListener(Listener["MySqlSession"]):
    def init_protocol_state(self) -> None:
        #: Sessions by the connection id the gateway gave their client (for KILL).
        self.connections: dict[int, MySqlSession] = {}
        #: Sessions by (target name, upstream thread id): the id CONNECTION_ID() shows.
        self.upstream_threads: dict[tuple[str, int], MySqlSession] = {}
        #: The version the greeting announces.
        self.server_version = SERVER_VERSION
        mysql_targets = [t for t in self.settings.targets.values() if t.protocol == "mysql"]
        #: Whose version that is: the default MySQL target, else the first configured.
        self.announcing: TargetSettings | None = next(
            (t for t in mysql_targets if t.default), mysql_targets[0] if mysql_targets else None
        )

    def new_session(self, channel: Channel) -> MySqlSession:
        return MySqlSession(self, channel)

    def new_connection_id(self) -> int:
        while True:
            connection_id = _CONNECTION_ID_FLOOR | secrets.randbits(30)
            if connection_id not in self.connections:
                return connection_id

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> asyncio.Server:
        server = await super().start(host, port, reuse_port=reuse_port)
        if self.announcing is not None:
            self.spawn(self._learn_version(self.announcing))
        return server

    async def _learn_version(self, target: TargetSettings) -> None:
        """The announcing target's version, from its greeting (no login)."""
        try:
            version = await upstream_version(target.upstream, self.new_channel)
        except UpstreamUnavailable as exc:
            log.warning(
                "could not read the version of MySQL target %s (greeting with %s until a "
                "login reaches it): %s",
                target.name,
                self.server_version,
                exc.message,
            )
            return
        self.heard_version(target, version)

    def heard_version(self, target: TargetSettings, version: str) -> None:
        """An upstream greeted the gateway: the announcing target's version is announced."""
        if self.announcing is not None and target.name == self.announcing.name:
            self.server_version = version + VERSION_SUFFIX


async def _first_packet(channel: Channel) -> tuple[Packet, bytes]:
    """The client's first packet (an SSLRequest or its HandshakeResponse), and the bytes
    after it: after an SSLRequest, the start of a TLS handshake, not packets."""
    reader = PacketReader(_MAX_TOKEN_PACKET)
    while True:
        packet = reader.next_packet(await channel.read())
        if packet is not None:
            return packet, reader.take_rest()


class MySqlSession(GatedSession):
    protocol = "mysql"
    listener: MySqlListener

    def __init__(self, listener: MySqlListener, client_side: Channel) -> None:
        super().__init__(listener, client_side)
        self._upstream: Channel
        self.connection_id = listener.new_connection_id()
        self.upstream_thread_id = 0
        self.relay: MySqlRelay | None = None
        self.gate: MySqlGate | None = None
        self._login_sequence = 0  # the sequence id of the next packet to the client in login
        self._elevated_classes: frozenset[StatementClass] = frozenset()
        #: Every statement the session ran was a read: it cannot have made a temporary
        #: table, so a write's table is not one (policy/read_only.py).
        self._only_reads = True
        self._relay_latency: Callable[[float], None] = _ignore
        self._countdown = LATENCY_SAMPLE_EVERY

    # --- lifecycle

    async def log_in(self) -> bool:
        self.listener.connections[self.connection_id] = self  # KILL can name it from now on
        await self._login()
        return True

    def _detach(self, cancel_running: bool) -> None:
        self.listener.connections.pop(self.connection_id, None)
        if self.target is not None and self.upstream_thread_id:
            thread = (self.target.name, self.upstream_thread_id)
            if self.listener.upstream_threads.get(thread) is self:
                del self.listener.upstream_threads[thread]
        relay = self.relay
        if cancel_running and relay is not None and relay.busy and self.target is not None:
            self.listener.spawn(
                kill_query(
                    self.target.upstream,
                    self.upstream_thread_id,
                    connection=False,
                    role=self.target.read_role,
                )
            )

    def _error_reply(self, error: AirlockError, sequence: int | None) -> bytes | None:
        """An ERR numbered `sequence`, or as the answer the client waits for now."""
        if sequence is None:
            sequence = self._error_sequence()
        return None if sequence is None else error_packet(error, sequence)

    def _upstream_goodbye(self) -> bytes | None:
        relay = self.relay
        return None if relay is not None and relay.terminated else frame(bytes([Command.QUIT]), 0)

    def _quiet_close(self) -> str | None:
        relay = self.relay
        if relay is not None and relay.terminated:
            return "client quit (COM_QUIT)"  # the server closes after a COM_QUIT
        return None

    def _error_sequence(self) -> int | None:
        """The sequence id an ERR to the client must carry now; None when the client is
        in the middle of a server answer (it only gets the close). A command the server
        has not begun to answer is answered by the ERR."""
        relay = self.relay
        if relay is None:
            return self._login_sequence
        if relay.held is not None:
            return (relay.held.packet.last_sequence_id + 1) & 0xFF
        if relay.elevating is not None:  # released, waiting for the write role
            return (relay.elevating.packet.last_sequence_id + 1) & 0xFF
        if relay.busy:
            return relay.answer_sequence  # the ERR answers the command, if none of it came
        return 1  # read as the answer to the client's next command

    # --- login

    async def _login(self) -> None:
        listener, settings = self.listener, self.listener.settings
        client = self.client_side
        nonce = auth.new_nonce()
        offered = ADVERTISED | (Capability.SSL if listener.tls_context is not None else 0)
        greeting = HandshakeV10(
            protocol_version=10,
            server_version=listener.server_version,
            connection_id=self.connection_id,
            auth_data=nonce,
            capabilities=int(offered),
            character_set=GREETING_CHARSET,
            status_flags=int(ServerStatus.AUTOCOMMIT),
            auth_plugin_name="caching_sha2_password",
        )
        client.write(frame(greeting.build(), 0))
        packet, rest = await _first_packet(client)
        self._login_sequence = (packet.last_sequence_id + 1) & 0xFF
        if is_ssl_request(packet.payload):
            if listener.tls_context is None:
                raise ProtocolViolation("TLS requested, but the gateway offered none")
            # The client's TLS handshake follows its SSLRequest at once: `rest` is its start.
            await client.start_tls(listener.tls_context, server_side=True, received=rest)
            rest = b""
        stream = PacketStream(client, _MAX_TOKEN_PACKET)
        stream.pending.extend(stream.reader.feed(rest))  # nothing, unless a client hurries
        if client.is_tls:
            packet = await stream.packet()
            self._login_sequence = (packet.last_sequence_id + 1) & 0xFF
        response = HandshakeResponse41.parse(packet.payload)
        capabilities = response.capabilities & int(offered)
        if not capabilities & Capability.PROTOCOL_41:
            raise FeatureNotSupported("the gateway speaks only protocol 4.1 with clients")
        tls = client.is_tls
        self.check_transport(
            tls, "connect with TLS (e.g. --ssl-mode=REQUIRED, or ssl= in the driver)"
        )
        charset = CHARSET_NAMES.get(response.character_set)
        if charset not in SAFE_CHARSETS:
            raise FeatureNotSupported(
                f"character set {charset or response.character_set} is not supported "
                "through the gateway",
                hint="use utf8mb4",
            )
        credential = None
        if is_credential_name(response.username):
            credential = await self._credential_login(stream, response, nonce)
            self.identity = credential.identity
        else:
            token = await self._read_token(stream, response, tls)
            self.identity = await listener.verifier.verify(token)
        database = response.database or ""
        if credential is not None:
            target = settings.targets.get(database or credential.target)
            if target is not None and target.name != credential.target:
                raise AuthorizationDenied(
                    f'credential "{credential.username}" is for target "{credential.target}", '
                    f'not "{target.name}"'
                )
        elif database:
            target = settings.targets.get(database)
        else:
            target = self._unnamed_target()
        if target is None or target.protocol != "mysql":
            raise UnknownTarget(f'no MySQL target named "{database}"')
        self.enter(target)
        if listener.recorder is not None:
            await self.open_recording(
                tls,
                {
                    "connection_id": self.connection_id,
                    "program_name": response.connect_attributes.get("program_name"),
                    "client_name": response.connect_attributes.get("_client_name"),
                    **({"credential": credential.username} if credential is not None else {}),
                },
            )
        upstream = await connect_upstream(
            target.upstream,
            capabilities=capabilities,
            character_set=response.character_set,
            channel_factory=listener.new_channel,
            role=target.read_role if target.write_role is not None else None,
        )
        self.server_side = upstream.channel
        self.upstream_thread_id = upstream.handshake.connection_id
        listener.upstream_threads[(target.name, self.upstream_thread_id)] = self
        listener.heard_version(target, upstream.handshake.server_version)
        ok = OkPacket(
            affected_rows=0, last_insert_id=0, status_flags=upstream.status_flags, warnings=0
        )
        client.write(frame(ok.build(capabilities), self._login_sequence))
        self.log_session(tls)
        self._start_relay(capabilities, _ENCODINGS.get(charset or "", "utf-8"), upstream.leftover)

    def _unnamed_target(self) -> TargetSettings:
        """The target of a client that named no database (the mysql CLI's Ctrl-C
        connection, `mysql -e` without one): the one MySQL target the identity's rules
        reach, or, when they reach several, the one marked default."""
        settings = self.listener.settings
        assert self.identity is not None
        groups = self.identity.groups
        reachable = [
            t
            for t in settings.targets.values()
            if t.protocol == "mysql" and effective_policy(settings.rules, groups, t.name)
        ]
        if len(reachable) == 1:
            return reachable[0]
        default = next((t for t in reachable if t.default), None)
        if default is not None:
            return default
        if not reachable:
            raise UnknownTarget("no database named, and your rules reach no MySQL target")
        names = ", ".join(t.name for t in reachable)
        raise UnknownTarget(
            f"no database named, and your rules reach several MySQL targets: {names}",
            hint="set the database to one of them (or the operator marks one default: true)",
        )

    async def _credential_login(
        self, stream: PacketStream, response: HandshakeResponse41, nonce: bytes
    ) -> Credential:
        """A gateway-minted credential, checked as MariaDB and MySQL check a password:
        caching_sha2_password's fast path, or mysql_native_password (a client that
        offered neither is switched to it). Only the stored hashes are needed."""
        credential = self.listener.credentials.find(response.username)
        plugin, answer = response.auth_plugin_name, response.auth_response
        if plugin == "caching_sha2_password" and len(answer) == 32:
            valid = credential is not None and auth.verify_caching_sha2(
                answer, nonce, credential.sha2_hash
            )
            if valid:
                self.client_side.write(
                    frame(AuthMoreData(auth.FAST_AUTH_OK).build(), self._login_sequence)
                )
                self._login_sequence = (self._login_sequence + 1) & 0xFF
        else:
            if plugin != "mysql_native_password" or len(answer) != 20:
                switch = AuthSwitchRequest("mysql_native_password", nonce + b"\0")
                self.client_side.write(frame(switch.build(), self._login_sequence))
                reply = await stream.packet()
                self._login_sequence = (reply.last_sequence_id + 1) & 0xFF
                answer = reply.payload
            valid = credential is not None and auth.verify_native_password(
                answer, nonce, credential.native_hash
            )
        if stream.has_unread:
            raise ProtocolViolation("client sent packets before authentication completed")
        if not valid or credential is None:
            raise AuthenticationFailed(
                f'access denied for "{response.username}": the credential is unknown or '
                "expired, or the password is wrong"
            )
        return credential

    async def _read_token(
        self, stream: PacketStream, response: HandshakeResponse41, tls: bool
    ) -> str:
        """The JWT, as the client sends its password in cleartext: at once under
        mysql_clear_password, after a caching_sha2_password request for full
        authentication over TLS, else after a switch to mysql_clear_password."""
        client = self.client_side
        if response.auth_plugin_name == "mysql_clear_password":
            password = response.auth_response
        else:
            if tls and response.auth_plugin_name == "caching_sha2_password":
                ask = AuthMoreData(auth.PERFORM_FULL_AUTH).build()
            else:
                ask = AuthSwitchRequest("mysql_clear_password", b"").build()
            client.write(frame(ask, self._login_sequence))
            answer = await stream.packet()
            self._login_sequence = (answer.last_sequence_id + 1) & 0xFF
            password = answer.payload
            if stream.has_unread:
                raise ProtocolViolation("client sent packets before authentication completed")
        try:
            token = password.rstrip(b"\0").decode("ascii").strip()
        except UnicodeDecodeError:
            raise AuthenticationFailed("the password is not a token") from None
        if not token:
            raise AuthenticationFailed(
                "no token: send the OIDC token as the password",
                hint="mysql clients: --enable-cleartext-plugin, or TLS",
            )
        return token

    # --- relay

    def _start_relay(self, capabilities: int, encoding: str, leftover: bytes) -> None:
        assert self.policy is not None
        assert self.identity is not None
        assert self.server_side is not None
        listener = self.listener
        settings = listener.settings
        target = self.target
        assert target is not None
        roles = self.write_roles()
        self.gate = MySqlGate(
            listener.classifiers.cached("mysql"),
            self.policy,
            listener.clock,
            frozenset(target.databases),
            cold_classes=self.cold_classes(roles),
        )
        recording = self.recording is not None
        self.relay = MySqlRelay(
            capabilities=capabilities,
            gate=self.gate,
            max_packet_bytes=settings.max_message_bytes,
            results=self if recording else None,
            capture_rows=recording and settings.recording.capture_rows,
            encoding=encoding,
            roles=roles,
        )
        #: Held commands of these classes, once decided, run under the write role.
        self._elevated_classes = WRITE_ROLE_CLASSES if roles else frozenset()
        # Every admitted statement is counted (metrics), and recorded when the session is.
        self.relay.on_statement = self._statement_admitted
        if recording:
            self._row_bytes_left = settings.recording.max_row_bytes
        self.relaying()
        client_side, server_side = self.client_side, self.server_side
        self._upstream = server_side
        self._relay_latency = self.listener.instruments.relay_latency("mysql")
        server_side.start_relay(self._server_data, self._server_closed)
        if leftover:
            self._server_data(leftover)
        client_side.start_relay(self._client_data, self._client_closed)

    def _client_data(self, raw: bytes) -> None:
        # One read in LATENCY_SAMPLE_EVERY is timed (metrics: the latency the gateway adds).
        self._countdown -= 1
        if self._countdown == 0:
            self._countdown = LATENCY_SAMPLE_EVERY
            started = perf_counter()
            if self._relay_client(raw):
                self._relay_latency(perf_counter() - started)
            return
        self._relay_client(raw)

    def _relay_client(self, raw: bytes) -> bool:
        """The client's bytes through the relay; True when the hot path forwarded them."""
        relay = self.relay
        assert relay is not None
        if relay.held is not None and not self.read_while_held(len(raw)):
            return False
        try:
            actions = relay.client_data(raw)
        except AirlockError as error:
            self.end(f"client protocol error: {error.message}", error)
            return False
        if len(actions) == 1 and type(actions[0]) is SendToServer:
            self._upstream.write(actions[0].raw)  # the hot path
            return True
        self._apply(actions)
        return False

    def _relay_idle(self) -> bool:
        # MySQL's transaction status is not followed: between statements is idle.
        relay = self.relay
        return relay is None or (relay.held is None and not relay.busy)

    def _server_data(self, raw: bytes) -> None:
        relay = self.relay
        assert relay is not None
        try:
            to_client, actions = relay.server_data(raw)
        except AirlockError as error:
            log.warning("session %s: upstream protocol error: %s", self.id, error.message)
            self.end(f"upstream protocol error: {error.message}", error)
            return
        if to_client:
            self.client_side.write(to_client)
        if actions:
            if relay.role_error is not None:
                log.warning("session %s: the upstream refused SET ROLE: %s", self.id,
                            relay.role_error)  # fmt: skip
                relay.role_error = None
            self._apply(actions)

    # --- transcript hooks (ResultListener)

    def _statement_admitted(
        self, sql: str, verdict: Verdict, statement: PreparedStatement | None, execute: bytes | None
    ) -> None:
        """The relay let a statement run on the hot path (its class is allowed, or a session
        grant holds). An execute's parameters are recorded raw, and decoded on replay."""
        assert self.gate is not None
        decision = "allow" if self.gate.class_allowed(verdict) else "approved for the session"
        if verdict.statement_class is not StatementClass.READ:
            self._only_reads = False
        if self.recording is None:
            self.count_statement(verdict.statement_class, decision)
            return
        extra: dict[str, Any] = {}
        if statement is not None and execute is not None:
            extra["execute"] = execute
            extra["num_params"] = statement.num_params
            if statement.types is not None:
                extra["param_types"] = statement.types
            if statement.long_data:
                extra["long_data"] = {str(i): bytes(d) for i, d in statement.long_data.items()}
        self.record_statement(sql, verdict, decision, extra)

    def _statement_ran(
        self,
        sql: str,
        verdict: Verdict,
        parameters: tuple[Parameter, ...] | None,
        decision: str,
    ) -> None:
        """A statement decided off the hot path (held, refused, or carried out here)."""
        ran = decision != "deny" and decision != READ_ONLY_REFUSES
        if ran and verdict.statement_class is not StatementClass.READ:
            self._only_reads = False
        extra = None if parameters is None else {"params": [p.to_json() for p in parameters]}
        self.record_statement(sql, verdict, decision, extra)

    def result(self, tracker: ResponseTracker) -> None:
        if self.recording is None:
            return
        data: dict[str, Any]
        if tracker.error is not None:
            error = tracker.error
            data = {
                "error": {"errno": error.code, "sqlstate": error.sqlstate, "message": error.message}
            }
        elif tracker.result_sets:
            data = {"tag": "SELECT", "rows": tracker.rows}
            if tracker.result_sets > 1:
                data["result_sets"] = tracker.result_sets
        else:
            ok = tracker.ok
            affected = ok.affected_rows if ok is not None else 0
            data = {"tag": f"OK, {affected} row{'' if affected == 1 else 's'} affected"}
            if ok is not None and ok.last_insert_id:
                data["last_insert_id"] = ok.last_insert_id
        self.record_result(data, count_rows=False)

    def row(self, payload: bytes) -> None:
        self.capture_row(payload)

    # --- decisions on held commands

    async def _decision(self, held: HoldCommand) -> list[Action]:
        relay, gate = self.relay, self.gate
        assert relay is not None
        assert gate is not None
        if held.command in (Command.QUERY, Command.STMT_PREPARE):
            consumed = await self._consume_refresh(held)
            if isinstance(consumed, AirlockError):
                return relay.release(forward=False, error=consumed)
            held = consumed
        payload = held.packet.payload
        if held.command == Command.STMT_PREPARE:
            try:
                verdict = await self._classify(held.sql)
            except StatementTooLarge as too_large:
                return relay.release(forward=False, error=too_large)
            outside = gate.scope_refusal(held.sql) if held.sql is not None else None
            if outside is not None:
                self._statement_ran(held.sql or "", verdict, None, "deny")
                return relay.release(forward=False, error=outside)
            # Text that is not valid in the connection's character set is shown as hex.
            shown = held.sql if held.sql is not None else payload[1:].hex()
            # The server checks privileges at prepare: what is no read is prepared (not run)
            # under the write role, and each execute of it is judged.
            elevate = verdict.statement_class in self._elevated_classes
            return relay.release(forward=True, prepared=(shown, verdict), elevate=elevate)
        if held.command == Command.PROCESS_KILL:
            if len(payload) < 5:
                raise ProtocolViolation("COM_PROCESS_KILL without a connection id")
            process = Kill(int.from_bytes(payload[1:5], "little"), query_only=False)
            return await self._carry_out(process, f"COM_PROCESS_KILL {process.connection_id}")
        if held.command == Command.QUERY:
            sql = held.sql
            try:
                verdict = await self._classify(sql)
            except StatementTooLarge as too_large:
                return relay.release(forward=False, error=too_large)
            if sql is not None and is_kill(verdict):
                kill = parse_kill(sql)
                if kill is not None:
                    return await self._carry_out(kill, sql)
                refusal: AirlockError | None = StatementDenied(
                    "KILL goes through the gateway only as KILL [QUERY | CONNECTION] id, "
                    "alone in its statement"
                )
                self._statement_ran(sql, verdict, None, "deny")
                return relay.release(forward=False, error=refusal)
            text = sql if sql is not None else payload[1:].hex()
            outside = gate.scope_refusal(sql) if sql is not None else None
            if outside is not None:
                self._statement_ran(text, verdict, None, "deny")
                return relay.release(forward=False, error=outside)
            refusal, decision = await self._judge(text, verdict, (), NO_PARAMETERS_KEY)
            self._statement_ran(text, verdict, None, decision)
            if refusal is None:
                await self.record_durably(verdict.statement_class)
            # What the server refuses as read-only runs as it came: under the read role.
            elevate = (
                verdict.statement_class in self._elevated_classes and decision != READ_ONLY_REFUSES
            )
            return relay.release(forward=refusal is None, error=refusal, elevate=elevate)
        if held.command == Command.STMT_EXECUTE:
            run = gate.execution(payload)
            if run.ambiguous and not gate.allowed(run.verdict):
                refusal = StatementDenied(
                    "this execute binds parameter types (INT24, YEAR, BIT, GEOMETRY, JSON, ...) "
                    "whose values the gateway cannot show an approver as the server reads them",
                    hint="bind such values as strings or 64-bit integers",
                )
                self._statement_ran(run.sql, run.verdict, run.parameters, "deny")
                return relay.release(forward=False, error=refusal)
            refusal, decision = await self._judge(run.sql, run.verdict, run.parameters, run.key)
            self._statement_ran(run.sql, run.verdict, run.parameters, decision)
            if refusal is None:
                await self.record_durably(run.verdict.statement_class)
            elevate = (
                run.verdict.statement_class in self._elevated_classes
                and decision != READ_ONLY_REFUSES
            )
            return relay.release(forward=refusal is None, error=refusal, elevate=elevate)
        raise ProtocolViolation(f"unexpected held command {held.command}")

    async def _transaction_state(self, sql: str, verdict: Verdict) -> tuple[str | None, bool]:
        """The transaction state by the status flags of the last statement's answer
        (MariaDB sets IN_TRANS_READONLY in a READ ONLY transaction); None when they do not
        tell it. A write the server refuses there needs no approval, unless the session
        could have a temporary table (one made by a statement that was not a read)."""
        relay = self.relay
        assert relay is not None
        flags = relay.transaction_flags
        if flags is None or relay.busy:
            return None, False
        if not flags & ServerStatus.IN_TRANS:
            return "idle", False
        if not flags & ServerStatus.IN_TRANS_READONLY:
            return "in transaction", False
        return "read only", self._only_reads and refused_in_read_only(
            sql, "mysql", verdict.statement_class
        )

    async def _consume_refresh(self, held: HoldCommand) -> HoldCommand | AirlockError:
        """The held command, or in place of an in-band token refresh the constant query
        that answers it (proxy/core/refresh.py), or the error that refuses it."""
        sql = held.sql if held.sql is not None else held.packet.payload[1:].decode("latin-1")
        replaced = await self.in_band_refresh(sql)
        if replaced is None or isinstance(replaced, AirlockError):
            return held if replaced is None else replaced
        payload = bytes([held.command]) + replaced.encode("ascii")
        sequence = held.packet.sequence_id
        packet = Packet(sequence, sequence, payload, frame(payload, sequence))
        consumed = HoldCommand(packet, held.command, replaced)
        assert self.relay is not None
        self.relay.held = consumed
        return consumed

    async def _judge(
        self, sql: str, verdict: Verdict, parameters: tuple[Parameter, ...], key: str
    ) -> tuple[AirlockError | None, str]:
        if any(reason.endswith(LEXER_REASON) for reason in verdict.reasons):
            # No approval makes this safe: the gateway would misread every later statement.
            return StatementDenied(
                "statements that change the character set or sql_mode this way are not "
                "allowed through the gateway",
                detail="; ".join(verdict.reasons),
            ), "deny"
        assert self.gate is not None
        return await self.gatekeep(self.gate, sql, verdict, parameters, key)

    async def _carry_out(self, kill: Kill, sql: str) -> list[Action]:
        """KILL for one of the agent's own sessions (this one included)."""
        relay = self.relay
        assert relay is not None
        assert self.identity is not None
        # The id the handshake gave, or the upstream thread's (CONNECTION_ID()) on this
        # session's own target.
        target = self.listener.connections.get(kill.connection_id)
        if target is None and self.target is not None:
            target = self.listener.upstream_threads.get((self.target.name, kill.connection_id))
        if (
            target is None
            or target.identity is None
            or target.identity.subject != self.identity.subject
            or target.target != self.target
        ):
            self._kill_recorded(sql, "deny: not one of the agent's sessions")
            return relay.release(
                forward=False, error=UnknownSession(f"Unknown thread id: {kill.connection_id}")
            )
        reason = f"KILL from session {self.id}"
        if kill.query_only:
            withdrawn = target.withdraw_waiting(f"withdrawn by KILL QUERY ({reason})")
            running = target.relay is not None and target.relay.busy
            if not withdrawn and running and target.target is not None:
                self.listener.spawn(
                    kill_query(
                        target.target.upstream,
                        target.upstream_thread_id,
                        connection=False,
                        role=target.target.read_role,
                    )
                )
        elif target is not self:
            target.end(f"killed ({reason})", SessionExpired("Connection was killed"),
                       cancel_running=True)  # fmt: skip
        self._kill_recorded(sql, "carried out by the gateway")
        if target is self and not kill.query_only:
            return [EndSession("the client killed its own connection",
                               SessionExpired("Connection was killed"))]  # fmt: skip
        ok = OkPacket(affected_rows=0, last_insert_id=0, status_flags=0, warnings=0)
        return relay.release(forward=False, reply=ok.build(relay.capabilities))

    def _kill_recorded(self, sql: str, decision: str) -> None:
        verdict = Verdict(StatementClass.ADMIN, ("KILL of a gateway session",))
        self._statement_ran(sql, verdict, None, decision)


def _ignore(_seconds: float) -> None:
    """No relay yet: nothing to time."""
