"""The MySQL relay, sans-I/O: which client commands reach the server, and when.

MySQL is half duplex: the client sends a command (sequence id 0), the server
answers it, and only then comes the next command (COM_STMT_CLOSE and
COM_STMT_SEND_LONG_DATA have no answer). So the relay looks at one command at a
time. It admits at once what the cached verdicts allow: a COM_QUERY whose text
is cached and allowed, a COM_STMT_PREPARE whose text is cached (preparing runs
nothing), a COM_STMT_EXECUTE of a statement prepared with an allowed verdict,
and the harmless commands (ping, statistics, fetch, reset, ...). Anything else
is held, and the session decides it off the hot path: classify, hold for
approval, refuse, or answer it itself (KILL). Commands the client sends while
another is answered or held wait in order; nothing is forwarded out of turn.

The server's answer is followed packet by packet (`ResponseTracker`) and relayed
verbatim; the relay learns from it the prepared statement ids, the result for
the transcript, and the status flags. A server that turns NO_BACKSLASH_ESCAPES
on, or asks for a LOCAL INFILE file, ends the session: the gateway's lexer
would no longer read statements as the server does, and the client never
agreed to send files.

A target with read and write roles (`roles`) runs the session under the read
role; a command released with `elevate` (a statement the rules allow or an
approver approved, of any class but read, and the COM_STMT_PREPARE of one: the
server checks privileges at prepare too) runs under the write role. The relay
sends `SET ROLE write` as a COM_QUERY of its own and forwards the command only
once the server said OK (an ERR refuses the command); once the command's whole
answer is relayed, it sends `SET ROLE read`, and so again after every
COM_RESET_CONNECTION. Those answers are not relayed, and the client's next
command waits until they are in; a failed return to the read role ends the
session. SET ROLE is not transactional on MariaDB: neither a COMMIT nor a
ROLLBACK undoes it, and it commits nothing.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from policy.classify import KILL_REASON, StatementClass, Verdict
from policy.fingerprint import CachedClassifier
from policy.judge import GateTables, judge
from policy.rules import EffectivePolicy
from policy.scope import exposed, scope_refusal
from protocols.errors import MessageTooLarge, ProtocolViolation
from protocols.mysql.messages import (
    Capability,
    Command,
    ErrPacket,
    ServerStatus,
    parse_send_long_data,
)
from protocols.mysql.packets import Packet, PacketReader, frame
from protocols.mysql.responses import ResponseTracker, expects_response
from proxy.core.actions import EndSession as EndSession
from proxy.core.actions import SendToClient as SendToClient
from proxy.core.actions import SendToServer as SendToServer
from proxy.errors import (
    AirlockError,
    DatabaseAccessDenied,
    FeatureNotSupported,
    RoleNotRestored,
    WriteRoleRefused,
)
from proxy.parameters import (
    AMBIGUOUS,
    BINARY,
    BoundValue,
    Execution,
    mysql_execute,
    parameters_key,
)

UNPREPARED = Verdict(
    StatementClass.UNKNOWN, ("executes a statement the gateway did not see prepared",)
)

#: Commands that read nothing the agent could not read with a SELECT, and change no data.
_HARMLESS = frozenset(
    {
        Command.PING,
        Command.STATISTICS,
        Command.FIELD_LIST,
        Command.INIT_DB,
        Command.STMT_FETCH,
        Command.STMT_RESET,
        Command.SET_OPTION,
        Command.RESET_CONNECTION,
    }
)
_QUERY, _PREPARE, _EXECUTE = Command.QUERY, Command.STMT_PREPARE, Command.STMT_EXECUTE
_READ = StatementClass.READ
_PING, _STATISTICS = Command.PING, Command.STATISTICS
#: ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION: refused before it ran; the transaction is
#: as it was.
_READ_ONLY_REFUSAL = 1792
_SET_OPTION = int(Command.SET_OPTION)
_NO_BACKSLASH_ESCAPES = int(ServerStatus.NO_BACKSLASH_ESCAPES)
_ANSI_QUOTES = int(ServerStatus.ANSI_QUOTES)  # MariaDB reports it; MySQL does not
#: Commands that name a prepared statement by id.
_STATEMENT_COMMANDS = frozenset(
    int(c)
    for c in (
        Command.STMT_EXECUTE,
        Command.STMT_SEND_LONG_DATA,
        Command.STMT_CLOSE,
        Command.STMT_RESET,
        Command.STMT_FETCH,
    )
)
#: MariaDB reads statement id 0xFFFFFFFF as "the last statement prepared": the gateway
#: would not know which statement runs.
_LAST_STATEMENT = b"\xff\xff\xff\xff"
#: KILL [QUERY | CONNECTION] id: the only KILL the gateway runs (for the agent's own sessions).
_KILL = re.compile(
    r"\s*KILL\s+(?:(QUERY|CONNECTION)\s+)?([0-9]{1,10})\s*;?\s*", re.IGNORECASE | re.ASCII
)


#: What the gateway's own command in flight is for.
_TO_WRITE, _TO_READ = 1, 2


@dataclass(frozen=True, slots=True)
class HoldCommand:
    """This command waits for a decision; call `MySqlRelay.release` for it."""

    packet: Packet
    command: int
    sql: str | None  # COM_QUERY and COM_STMT_PREPARE text; None when it is not UTF-8


Action = SendToServer | SendToClient | HoldCommand | EndSession


@dataclass(frozen=True, slots=True)
class Kill:
    """A KILL statement or COM_PROCESS_KILL: the session carries it out itself."""

    connection_id: int
    query_only: bool


def parse_kill(sql: str) -> Kill | None:
    match = _KILL.fullmatch(sql)
    if match is None:
        return None
    return Kill(int(match.group(2)), (match.group(1) or "").upper() == "QUERY")


class ResultListener(Protocol):
    def result(self, tracker: ResponseTracker) -> None:
        """A statement's answer ended: the tracker says what it was."""

    def row(self, payload: bytes) -> None:
        """A result row, when rows are captured."""


#: Told of a statement the relay admits on its own: sql, verdict, and for a
#: COM_STMT_EXECUTE the statement (its parameters are decoded on replay, not here).
StatementListener = Callable[[str, Verdict, "PreparedStatement | None", bytes | None], None]


@dataclass(slots=True)
class PreparedStatement:
    sql: str
    verdict: Verdict
    allowed: bool  # runs without a decision under the policy alone
    num_params: int = 0
    types: bytes | None = None  # the last bound types (raw), for executes that omit them
    long_data: dict[int, bytearray] = field(default_factory=dict)


class MySqlGate:
    """The policy's view per session: verdicts of prepared statements, the session grant."""

    def __init__(
        self,
        classifier: CachedClassifier,
        policy: EffectivePolicy,
        clock: Callable[[], float],
        databases: frozenset[str] = frozenset(),
        *,
        cold_classes: frozenset[StatementClass] = frozenset(),
    ) -> None:
        self.classifier = classifier
        self.policy = policy
        self.clock = clock
        #: The databases the target exposes (information_schema besides).
        self.databases = databases
        self.statements: dict[int, PreparedStatement] = {}
        self.session_grant_until = 0.0
        # Per class, the judge's answer without a grant (see GateTables). A KILL is
        # carried out by the session (never forwarded as it is), and a statement that would
        # change how statements lex is refused whatever the rule: both are admin, so admin
        # statements never run from the hot path, even where the rule allows them. Nor the
        # cold classes, session grant or not: the durable ones (recording.on_failure:
        # refuse), whose statements the session records on disk before it forwards them,
        # and those that run under the target's write role, which the session switches to.
        self._cold = cold_classes
        tables = GateTables(policy, cold_classes | {StatementClass.ADMIN})
        self._allow, self._grantable, self._hot = tables.allow, tables.grantable, tables.hot

    def allowed(self, verdict: Verdict) -> bool:
        """The policy lets it run now: its class is allowed, or a session grant holds."""
        return self._allow[verdict.statement_class] or self._granted(verdict)

    def admits(self, verdict: Verdict) -> bool:
        """It may run from the hot path, without the session looking at it."""
        if self._hot[verdict.statement_class]:
            return True
        if verdict.statement_class in self._cold:
            return False
        return self._granted(verdict)

    def _granted(self, verdict: Verdict) -> bool:
        """The judge lets a statement its rules hold run under the session's grant."""
        statement_class = verdict.statement_class
        if not self._grantable[statement_class]:
            return False
        return judge(
            statement_class.value, self.policy, self.session_grant_until, self.clock()
        ).allows

    def class_admits(self, verdict: Verdict) -> bool:
        """A prepared statement of this verdict runs from the hot path under the policy
        alone (no grant needed)."""
        return self._hot[verdict.statement_class]

    def class_allowed(self, verdict: Verdict) -> bool:
        """Allowed by its class alone (not under a grant): what the transcript says."""
        return self._allow[verdict.statement_class]

    def scope_refusal(self, sql: str) -> DatabaseAccessDenied | None:
        """The refusal for a statement that names a database the target does not expose."""
        reason = scope_refusal(sql, self.databases, self.classifier.key(sql))
        if reason is None:
            return None
        return DatabaseAccessDenied(
            f"access denied: {reason}",
            hint=f"this target exposes: {', '.join(sorted(self.databases)) or '(none)'}",
        )

    def database_refusal(self, name: str) -> DatabaseAccessDenied | None:
        """COM_INIT_DB of a database the target does not expose."""
        if exposed(name, self.databases):
            return None
        return DatabaseAccessDenied(
            f'access denied: database "{name}" is not exposed by this target',
            hint=f"this target exposes: {', '.join(sorted(self.databases)) or '(none)'}",
        )

    def execution(self, payload: bytes) -> Execution:
        """Decode a COM_STMT_EXECUTE for the approver (slow path only)."""
        statement_id = int.from_bytes(payload[1:5], "little")
        statement = self.statements.get(statement_id)
        if statement is None:
            key = parameters_key((BoundValue(0, BINARY, payload[1:]),))
            return Execution(f"(statement {statement_id})", UNPREPARED, (), key)
        types = bound_types(statement, payload)  # remembered only once it is forwarded
        long_data = {i: bytes(d) for i, d in statement.long_data.items()}
        parameters, bound = mysql_execute(payload, statement.num_params, types, long_data)
        ambiguous = any(p.type == AMBIGUOUS for p in parameters)
        return Execution(
            statement.sql, statement.verdict, parameters, parameters_key(bound), ambiguous=ambiguous
        )


def bound_types(statement: PreparedStatement, payload: bytes) -> bytes | None:
    """The parameter types an execute runs with: the ones it binds, else the last ones
    bound. Cheap: no decoding, only the new-params-bound flag and a slice."""
    count = statement.num_params
    if not count:
        return statement.types
    flag = 10 + (count + 7) // 8  # command, statement id, flags, iteration count, NULL bitmap
    if len(payload) > flag and payload[flag] == 1:
        return payload[flag + 1 : flag + 1 + 2 * count]
    return statement.types


def note_bound_types(statement: PreparedStatement, payload: bytes) -> None:
    """An execute reaches the server: later executes that do not bind types use its."""
    statement.types = bound_types(statement, payload)


def _executed(statement: PreparedStatement, payload: bytes) -> None:
    """An execute goes to the server: its types stay bound, its long data is used up
    (servers clear long data at the end of every execute)."""
    note_bound_types(statement, payload)
    statement.long_data.clear()


def error_packet(error: AirlockError, sequence_id: int) -> bytes:
    """The one place an AirlockError becomes a MySQL ERR packet."""
    message = error.message
    if error.detail:
        message += f" ({error.detail})"
    if error.hint:
        message += f"; {error.hint}"
    payload = ErrPacket(error.mysql_errno, error.mysql_sqlstate, message).build()
    return frame(payload, sequence_id)


class MySqlRelay:
    def __init__(
        self,
        *,
        capabilities: int,
        gate: MySqlGate,
        max_packet_bytes: int,
        results: ResultListener | None = None,
        capture_rows: bool = False,
        encoding: str = "utf-8",
        roles: tuple[str, str] | None = None,
    ) -> None:
        self.capabilities = capabilities
        self.encoding = encoding  # how statement text is decoded (the client's charset)
        self.gate = gate
        self.results = results
        self._capture = capture_rows and results is not None
        #: Told of every statement the relay admits on its own: sql, verdict, parameters.
        self.on_statement: StatementListener | None = None
        self._max_packet_bytes = max_packet_bytes
        self._client = PacketReader(max_packet_bytes, drain_oversized=True)
        self._server = PacketReader(max_packet_bytes)
        self._queue: deque[Packet] = deque()
        self._answering: ResponseTracker | None = None
        self._answered = 0  # the command of the answer being relayed (or last relayed)
        #: The sequence id the pending answer starts at; None once the server sent any of it.
        self.answer_sequence: int | None = None
        #: The command the client waits on the decision for.
        self.held: HoldCommand | None = None
        #: The server status flags of the last statement's answer (its last OK or EOF), as
        #: far as they tell the transaction's state now; None when not known (no statement
        #: answered yet, the last one failed, or another command came since).
        self.transaction_flags: int | None = None
        self._preparing: tuple[str, Verdict] | None = None
        self.multi_statements = bool(capabilities & Capability.MULTI_STATEMENTS)
        self._option: bool | None = None  # a COM_SET_OPTION awaiting the server's answer
        self.terminated = False  # the client sent COM_QUIT
        #: The target's (read role, write role) as SET ROLE packets, or None.
        self._roles: tuple[bytes, bytes] | None = None
        if roles is not None:
            self._roles = (set_role(roles[0]), set_role(roles[1]))
        #: The answer to the gateway's own SET ROLE, while it is in flight, and its purpose.
        self._own: ResponseTracker | None = None
        self._own_purpose = 0
        #: The command that waits for the write role (forwarded once the server took it).
        self.elevating: HoldCommand | None = None
        #: Once the answer being relayed ends, return to the read role.
        self._switch_back = False
        #: The server's words when it refused a SET ROLE of the gateway's (for its log).
        self.role_error: str | None = None

    @property
    def busy(self) -> bool:
        """A command is with the server (its answer has not ended)."""
        return self._answering is not None

    # --- client to server

    def client_data(self, raw: bytes) -> list[Action]:
        packets = self._client.feed(raw)
        if not packets:
            return []
        if (
            len(packets) == 1
            and not self._queue
            and self._answering is None
            and self.held is None
            and self._own is None
            and packets[0].sequence_id == 0
        ):
            action = self._command(packets[0])  # the hot path: one command, nothing pending
            return [action] if action is not None else []
        self._queue.extend(packets)
        return self._pump()

    def _pump(self) -> list[Action]:
        actions: list[Action] = []
        while self._queue and self._answering is None and self.held is None and self._own is None:
            packet = self._queue.popleft()
            if packet.sequence_id != 0:
                return [EndSession(
                    "client protocol error",
                    ProtocolViolation("a packet that is not a command, out of turn"),
                )]  # fmt: skip
            action = self._command(packet)
            if action is not None:
                actions.append(action)
                if isinstance(action, EndSession):
                    break
        return actions

    def _command(self, packet: Packet) -> Action | None:
        """Forward, hold or refuse one command (None: nothing to send now)."""
        if packet.oversized:
            return EndSession(
                "client sent a packet over max_message_bytes",
                MessageTooLarge(
                    f"the packet is larger than the gateway's max_message_bytes "
                    f"({self._max_packet_bytes} bytes)"
                ),
                (packet.last_sequence_id + 1) & 0xFF,
            )
        payload = packet.payload
        command = payload[0] if payload else -1
        gate = self.gate
        if command == _QUERY:
            sql = _text(payload, self.encoding)
            if sql is not None:
                verdict = gate.classifier.lookup(sql)
                if (
                    verdict is not None
                    and gate.admits(verdict)
                    and scope_refusal(sql, gate.databases, gate.classifier.key(sql)) is None
                ):
                    if self.on_statement is not None:
                        self.on_statement(sql, verdict, None, None)
                    return self._forward(packet, command)
            return self._hold(packet, command, sql)
        if command in _STATEMENT_COMMANDS and payload[1:5] == _LAST_STATEMENT:
            return EndSession(
                "client used statement id -1",
                FeatureNotSupported(
                    "statement id -1 (MariaDB's last prepared statement) is not accepted "
                    "through the gateway; use the id PREPARE returned"
                ),
            )
        if command == _EXECUTE:
            statement = gate.statements.get(int.from_bytes(payload[1:5], "little"))
            if statement is not None and (statement.allowed or gate.admits(statement.verdict)):
                if self.on_statement is not None:
                    self.on_statement(statement.sql, statement.verdict, statement, payload)
                _executed(statement, payload)
                return self._forward(packet, command)
            return self._hold(packet, command, None)
        if command == _PREPARE:
            sql = _text(payload, self.encoding)
            verdict = gate.classifier.lookup(sql) if sql is not None else None
            if (
                sql is None
                or verdict is None
                or scope_refusal(sql, gate.databases, gate.classifier.key(sql)) is not None
                or (self._roles is not None and verdict.statement_class is not _READ)
            ):
                # Classified off the hot path; prepared under the write role unless a read.
                return self._hold(packet, command, sql)
            self._preparing = (sql, verdict)
            return self._forward(packet, command)
        if command == Command.STMT_SEND_LONG_DATA:
            statement_id, parameter, data = parse_send_long_data(payload)
            statement = gate.statements.get(statement_id)
            if statement is not None:
                statement.long_data.setdefault(parameter, bytearray()).extend(data)
            return SendToServer(packet.raw)
        if command == Command.STMT_CLOSE:
            gate.statements.pop(int.from_bytes(payload[1:5], "little"), None)
            return SendToServer(packet.raw)
        if command == Command.QUIT:
            self.terminated = True
            return SendToServer(packet.raw)
        if command in _HARMLESS:
            if command == Command.STMT_RESET:
                statement = gate.statements.get(int.from_bytes(payload[1:5], "little"))
                if statement is not None:
                    statement.long_data.clear()
            elif command == Command.RESET_CONNECTION:
                gate.statements.clear()
                self.multi_statements = bool(self.capabilities & Capability.MULTI_STATEMENTS)
                # Whatever the reset does to the current role, the read role is taken again.
                self._switch_back = self._roles is not None
            elif command == Command.INIT_DB:
                refusal = gate.database_refusal(payload[1:].decode(self.encoding, "replace"))
                if refusal is not None:
                    return SendToClient(error_packet(refusal, packet.last_sequence_id + 1))
            elif command == Command.SET_OPTION:
                # MYSQL_OPTION_MULTI_STATEMENTS_ON is 0; it takes effect once the server agrees.
                self._option = payload[1:3] == b"\0\0"
            return self._forward(packet, command)
        if command == Command.PROCESS_KILL:
            return self._hold(packet, command, None)
        if command == Command.CHANGE_USER:
            return EndSession(
                "client sent COM_CHANGE_USER",
                FeatureNotSupported(
                    "changing the user is not supported through the gateway; "
                    "connect again with the other identity's token"
                ),
            )
        name = Command(command).name if command in Command._value2member_map_ else command
        return SendToClient(
            error_packet(
                FeatureNotSupported(f"command {name} is not allowed through the gateway"),
                packet.last_sequence_id + 1,
            )
        )

    def _forward(self, packet: Packet, command: int) -> SendToServer:
        if expects_response(command):
            self._answered = command
            self._answering = ResponseTracker(
                command, self.capabilities, on_row=self._row if self._capture else None
            )
            self.answer_sequence = (packet.last_sequence_id + 1) & 0xFF
        return SendToServer(packet.raw)

    def _hold(self, packet: Packet, command: int, sql: str | None) -> HoldCommand:
        self.held = HoldCommand(packet, command, sql)
        return self.held

    def release(
        self,
        *,
        forward: bool,
        error: AirlockError | None = None,
        reply: bytes | None = None,
        prepared: tuple[str, Verdict] | None = None,
        elevate: bool = False,
    ) -> list[Action]:
        """Decide the held command: forward it (a COM_STMT_PREPARE with its `prepared`
        text and verdict; under the target's write role when `elevate`), refuse it with
        `error`, or answer it with `reply` (an OK packet's payload, for a KILL the
        session carried out)."""
        held = self.held
        if held is None:
            raise RuntimeError("no command is held")
        self.held = None
        actions: list[Action] = []
        if forward:
            self._preparing = prepared
            if elevate and self._roles is not None:
                # The command goes once the server has taken the write role.
                self.elevating = held
                return [self._own_command(self._roles[1], _TO_WRITE)]
            actions.append(self._forward_held(held))
        elif reply is not None:
            actions.append(SendToClient(frame(reply, held.packet.last_sequence_id + 1)))
        else:
            assert error is not None
            actions.append(SendToClient(error_packet(error, held.packet.last_sequence_id + 1)))
        actions.extend(self._pump())
        return actions

    # --- server to client

    def server_data(self, raw: bytes) -> tuple[bytes, list[Action]]:
        """Server bytes in; the bytes to relay to the client, and what the relay must do
        next (commands that waited for this answer). Raises ProtocolViolation when the
        server is out of step, or does what would desync the lexer."""
        self.answer_sequence = None
        tracker = self._answering
        if tracker is None:
            # The answer to the gateway's own command (`_own`), or a server out of step.
            return self._server_packets(raw)
        head = b""
        if self._server.buffered:
            # The end of a packet split over reads; what follows it takes the fast path.
            packet = self._server.next_packet(raw)
            if packet is None:
                return b"", []
            head, raw = packet.raw, self._server.take_rest()
            if tracker.feed(packet.payload):
                return head, self._answer_complete(tracker, bool(raw))
        # The fast path: the read's whole packets followed in place, relayed as they came.
        size = len(raw)
        pos = tracker.follow(raw, 0, size)
        if tracker.complete:
            return head + raw, self._answer_complete(tracker, pos != size)
        if pos == size:
            return head + raw if head else raw, []
        # A packet split over reads, or in chunks: framed whole by the reader.
        rest, actions = self._server_packets(raw[pos:] if pos else raw)
        return head + raw[:pos] + rest, actions

    def _answer_complete(self, tracker: ResponseTracker, more: bool) -> list[Action]:
        """The server's answer to a client command ended (`more`: bytes came after it)."""
        if tracker.local_infile:
            raise ProtocolViolation("the server asked for a LOCAL INFILE file")
        if more:
            raise ProtocolViolation("the server sent more than its answer")
        self._answering = None
        self._finished(tracker)
        return self._answer_ended()

    def _server_packets(self, raw: bytes) -> tuple[bytes, list[Action]]:
        """Server bytes framed by the reader, packet by packet (the slow path)."""
        packets = self._server.feed(raw)
        if not packets:
            return b"", []
        if self._own is not None:
            return b"", self._own_answer(packets)
        tracker = self._answering
        if tracker is None:
            raise ProtocolViolation("the server sent a packet when no command was pending")
        out: list[bytes] = []
        for index, packet in enumerate(packets):
            out.append(packet.raw)
            if tracker.feed(packet.payload) or tracker.local_infile:
                more = index + 1 < len(packets) or bool(self._server.buffered)
                return b"".join(out), self._answer_complete(tracker, more)
        return b"".join(out) if len(out) > 1 else out[0], []

    # --- the gateway's own SET ROLE commands

    def _answer_ended(self) -> list[Action]:
        """A command's whole answer is relayed: return to the read role if it ran under
        the write role (or reset the connection), else go on with the client's commands."""
        if self._switch_back:
            self._switch_back = False
            assert self._roles is not None
            return [self._own_command(self._roles[0], _TO_READ)]
        return self._pump() if self._queue else []

    def _own_command(self, raw: bytes, purpose: int) -> SendToServer:
        self._own = ResponseTracker(_QUERY, self.capabilities)
        self._own_purpose = purpose
        return SendToServer(raw)

    def _own_answer(self, packets: list[Packet]) -> list[Action]:
        """Packets of the answer to the gateway's own SET ROLE: swallowed."""
        tracker = self._own
        assert tracker is not None
        for index, packet in enumerate(packets):
            if tracker.feed(packet.payload):
                if index != len(packets) - 1:
                    raise ProtocolViolation("the server sent more than its answer")
                break
        else:
            return []
        self._own = None
        error = tracker.error
        if error is not None or tracker.result_sets:
            self.role_error = (
                f"{error.code} {error.message}" if error is not None else "a result set"
            )
        else:
            self.role_error = None
        if self._own_purpose == _TO_READ:
            if self.role_error is not None:
                return [EndSession(
                    f"could not return to the read role: {self.role_error}",
                    RoleNotRestored(
                        "the gateway could not return the upstream session to the target's "
                        "read role, so it ended the session"
                    ),
                )]  # fmt: skip
            return self._pump() if self._queue else []
        held = self.elevating
        assert held is not None
        self.elevating = None
        if self.role_error is not None:
            self._preparing = None
            # Nothing changed upstream: the session is still under the read role.
            refusal = WriteRoleRefused(
                "the gateway could not take the target's write role for this statement, "
                "so it did not run",
                hint="the gateway's log has the upstream's reason",
            )
            actions: list[Action] = [
                SendToClient(error_packet(refusal, held.packet.last_sequence_id + 1))
            ]
            actions.extend(self._pump())
            return actions
        self._switch_back = True
        return [self._forward_held(held)]

    def _forward_held(self, held: HoldCommand) -> SendToServer:
        if held.command == _EXECUTE:
            payload = held.packet.payload
            statement = self.gate.statements.get(int.from_bytes(payload[1:5], "little"))
            if statement is not None:
                _executed(statement, payload)
        return self._forward(held.packet, held.command)

    def _finished(self, tracker: ResponseTracker) -> None:
        if tracker.status_flags & (_NO_BACKSLASH_ESCAPES | _ANSI_QUOTES):
            raise ProtocolViolation(
                "the session turned NO_BACKSLASH_ESCAPES or ANSI_QUOTES on, which the "
                "gateway cannot follow"
            )
        command = self._answered
        if command in (_QUERY, _EXECUTE):
            error = tracker.error
            if error is None:
                self.transaction_flags = tracker.status_flags
            elif error.code != _READ_ONLY_REFUSAL:
                # Some errors end the transaction (a deadlock rolls it back): not known.
                self.transaction_flags = None
        elif command not in (_PREPARE, _PING, _STATISTICS):
            self.transaction_flags = None
        if command == _PREPARE:
            preparing, self._preparing = self._preparing, None
            ok = tracker.prepare_ok
            if ok is not None and preparing is not None:
                sql, verdict = preparing
                self.gate.statements[ok.statement_id] = PreparedStatement(
                    sql, verdict, self.gate.class_admits(verdict), ok.num_params
                )
            return
        if command == _SET_OPTION and tracker.error is None and self._option is not None:
            self.multi_statements = self._option
        if self.results is not None and command in (_QUERY, _EXECUTE):
            self.results.result(tracker)

    def _row(self, payload: bytes) -> None:
        assert self.results is not None
        self.results.row(payload)


def set_role(role: str) -> bytes:
    """The COM_QUERY packet that makes `role` the session's current role."""
    return frame(b"\x03SET ROLE `" + role.replace("`", "``").encode() + b"`", 0)


def _text(payload: bytes, encoding: str) -> str | None:
    try:
        return payload[1:].decode(encoding)
    except UnicodeDecodeError:
        return None


def is_kill(verdict: Verdict) -> bool:
    """The statement (or one of several) is a KILL."""
    return any(reason.endswith(KILL_REASON) for reason in verdict.reasons)
