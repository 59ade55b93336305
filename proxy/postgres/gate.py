"""The per-session gate for PostgreSQL: which client messages may reach the server now,
and the gateway's picture of the server's extended-query state.

Sans-I/O, called by `PgRelay` for every client message (`admit`) and for the server's
answers that change that picture (`answered`, `failed`, `ready`). `admit` answers
ADMIT (forward it; the gate has noted it), DECIDE (the session must decide it off the
hot path: classify a statement not yet cached, hold one for approval, or refuse it)
or WAIT (its meaning depends on an earlier batch the server has not finished: the
session waits for the server, then asks again).

The picture follows what the server really does, never what the client asked for:
- The server runs a batch (the messages up to Sync) in order, and after the first
  error it skips everything up to Sync. So within a batch the gate may assume every
  earlier message succeeded: if one did not, the later ones never run.
- A Parse, Bind or Close changes a name at once, but only tentatively: the change is
  kept as a `Change` until the server's ParseComplete, BindComplete or CloseComplete
  confirms it. An ErrorResponse undoes the failed batch's unconfirmed changes (the
  server skipped them), and once the gate has seen its own batch fail, it passes the
  rest of that batch unexamined: the server runs none of it.
- Batches pipelined behind one the server has not finished cannot know its outcome.
  A message that uses or changes a name an unfinished earlier batch changed waits
  (WAIT) until the server has answered up to it; a simple Query waits for every
  unconfirmed change (it drops the unnamed statement and portal, and may PREPARE or
  DEALLOCATE). Changes of different batches then never touch the same name, so
  undoing one batch's changes is exact.
- A transaction's end (ReadyForQuery "I") destroys the portals made before it. SQL
  PREPARE, DEALLOCATE and DISCARD share the protocol's statement names, so a Query
  that mentions them makes the gate forget every statement: an Execute of a statement
  the gate does not know is of unknown class. Portals are never forgotten early: SQL
  FETCH and MOVE run a protocol-level portal too, so a Query that mentions them while a
  portal of a statement that needs a decision may exist is itself of unknown class.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

from policy.classify import CLASS_NAMES, StatementClass, Verdict
from policy.fingerprint import CachedClassifier
from policy.judge import GateTables, judge
from policy.rules import EffectivePolicy
from policy.sqlscan import names_statements
from protocols.errors import ProtocolViolation
from protocols.postgres import messages as m
from protocols.postgres.scan import (
    bind_statement_end,
    execute_portal_end,
    parse_sql_end,
    target_name_end,
    text_end,
)
from proxy.parameters import (
    NO_PARAMETERS_KEY,
    Execution,
    parameters_key,
    postgres_bound_values,
    postgres_parameters,
)
from proxy.recording.event_chain import EventChain

_Q, _P, _B, _E, _C, _D = (ord(c) for c in "QPBECD")


UNPREPARED = Verdict(
    StatementClass.UNKNOWN,
    ("executes a statement the gateway did not see prepared",),
)

#: Each class's place in the gate's counts of the statements it admits itself (metrics).
CLASSES = tuple(StatementClass)
CLASS_INDEX = {cls: index for index, cls in enumerate(CLASSES)}
assert len(CLASSES) == 5, "PgGate._admitted (pg_gate.pxd) holds one count per class"

StatementListener = Callable[[str, Verdict, bytes | None, tuple[int, ...], str], None]
#: What a statement admitted on the hot path was decided by: its class, or a session grant.
ALLOW, SESSION_GRANT = "allow", "approved for the session"


class PreparedStatement:
    """A statement the server keeps under a name, as the gate saw it parsed."""

    __slots__ = (
        "allowed",
        "class_index",
        "class_name",
        "declared",
        "declared_types",
        "described",
        "parse",
        "sql",
        "verdict",
    )

    def __init__(
        self, sql: str, verdict: Verdict, declared: bytes, allowed: bool, parse: bytes
    ) -> None:
        self.sql = sql
        self.verdict = verdict
        self.class_name = CLASS_NAMES[verdict.statement_class]
        self.class_index = CLASS_INDEX[verdict.statement_class]
        #: The Parse message's parameter type section, as sent and as type OIDs.
        self.declared = declared
        self.declared_types = _declared_types(declared)
        #: Runs without a decision, on the hot path: its class is allowed, and it needs
        #: no switch to the target's write role.
        self.allowed = allowed
        #: The server's ParameterDescription, when the client asked for one.
        self.described: tuple[int, ...] | None = None
        #: The whole Parse message that made it: the same one again is the same statement.
        self.parse = parse

    @property
    def param_types(self) -> tuple[int, ...]:
        return self.declared_types if self.described is None else self.described


def _declared_types(declared: bytes) -> tuple[int, ...]:
    count = int.from_bytes(declared[:2], "big")  # unsigned: up to 65,535
    if count <= 0 or len(declared) < 2 + 4 * count:
        return ()
    types: tuple[int, ...] = struct.unpack_from(f"!{count}I", declared, 2)
    return types


class Portal:
    """A portal the server keeps under a name: the statement it binds, and the Bind."""

    __slots__ = ("approved", "bind", "statement", "unit")

    def __init__(self, statement: PreparedStatement | None, bind: bytes, unit: int) -> None:
        self.statement = statement
        self.bind = bind  # the whole Bind message, decoded only when an approver must see it
        #: The batch (see PgGate's units) whose Bind made it: a transaction's end destroys
        #: the portals of the batches before it, not of those pipelined behind it.
        self.unit = unit
        #: An approved Execute lets the portal's later Executes (a suspended portal) go on.
        self.approved = False


class Change:
    """A Parse, Bind or Close forwarded but not yet confirmed, undone if its batch fails
    first. The gate keeps them in the order sent, as a chain (`next`): one is needed per
    Bind on the hot path, so it is a small C struct when compiled, reused once confirmed
    (the gate's `_spare` chain), and made and confirmed without a Python call."""

    __slots__ = ("answer", "name", "next", "portal", "previous", "unit")

    unit: int  # the batch it is in
    answer: int  # the server message that confirms it: ParseComplete, BindComplete, ...
    portal: bool  # a portal's name (else a statement's)
    name: bytes
    previous: object  # what the name meant before, restored by an undo
    next: Change | None  # the change sent after it


#: What `admit` answers.
DECIDE, ADMIT, WAIT = 0, 1, 2
_PARSE_COMPLETE, _BIND_COMPLETE, _CLOSE_COMPLETE = b"1"[0], b"2"[0], b"3"[0]
#: SQL that runs a portal: FETCH and MOVE name portals, the protocol's included.
_CURSOR_MOTION = re.compile(r"(?<![\w$])(?:fetch|move)(?![\w$])", re.IGNORECASE)
PORTAL_BY_SQL = Verdict(
    StatementClass.UNKNOWN,
    (
        "FETCH or MOVE may run a protocol-level portal of a statement that needs a "
        "decision in this session",
    ),
)


class PgGate:
    """Statement and portal names are kept as the bytes the client sent: no decoding on
    the hot path.

    Units: every Sync and simple Query the relay forwards ends one unit of work, which
    the server answers with one ReadyForQuery. `_sent` counts the units forwarded (so it
    is also the number of the batch being built), `_done` the ReadyForQuery messages
    received (so it is the number of the unit the server is working on)."""

    def __init__(
        self,
        classifier: CachedClassifier,
        policy: EffectivePolicy,
        clock: Callable[[], float],
        *,
        cold_classes: frozenset[StatementClass] = frozenset(),
    ) -> None:
        self.classifier = classifier
        self.policy = policy
        self.clock = clock
        self.statements: dict[bytes, PreparedStatement] = {}
        self.portals: dict[bytes, Portal] = {}
        #: Until then (clock time), statements that need approval run: a session grant.
        self.session_grant_until = 0.0
        #: Statements admitted here under their class's `allow`, by class (CLASS_INDEX):
        #: counted here (`admitted`), and recorded straight into the session transcript's
        #: `chain` when there is one. A C array when compiled.
        self._admitted = [0, 0, 0, 0, 0]
        self.chain: EventChain | None = None
        #: Told of every other statement admitted here (under a session grant): sql,
        #: verdict, and for an Execute its Bind message and parameter types.
        self.on_statement: StatementListener | None = None
        #: Called once when the server has answered every unit forwarded (see `drained`).
        self.on_drained: Callable[[], None] | None = None
        self._sent = 0
        self._done = 0
        #: Unconfirmed changes in the order sent (so by unit too): the oldest and newest.
        self._first: Change | None = None
        self._last: Change | None = None
        self._spare: Change | None = None  # confirmed ones, made again from here
        #: The server failed the batch being built: it skips the rest of it, up to Sync.
        self._skipping = False
        self._describing: list[tuple[int, bytes]] = []  # statement Describes: (unit, name)
        #: Messages of units after this one wait until the server has answered it.
        self._barrier = -1
        self._last_bound = -1  # the unit of the latest Bind
        #: Classes never admitted here, on the hot path, even when allowed or granted: the
        #: session records their statements on disk first (recording.on_failure: refuse),
        #: or switches to the target's write role around them.
        self._cold = cold_classes
        # Per class, the judge's answer without a grant (see GateTables).
        tables = GateTables(policy, cold_classes)
        self._allow, self._grantable = tables.allow, tables.grantable
        #: Per class, its CLASS_INDEX when the hot path admits it, else -1.
        self._hot = {cls: CLASS_INDEX[cls] if hot else -1 for cls, hot in tables.hot.items()}

    # --- the relay's questions

    def admit(self, kind: int, raw: bytes, start: int, end: int) -> int:
        # Slices of `data` are bytes made straight from the buffer when compiled (a C
        # pointer there), with no slice object; their bounds are always in order here.
        data = raw
        if self._barrier >= 0:
            if self._done > self._barrier:
                self._barrier = -1
            elif self._sent > self._barrier:
                return WAIT
        if kind == _Q:
            if self._first is not None:
                return WAIT
            if raw[end - 1] != 0:
                return DECIDE  # malformed: the slow path says so
            try:
                sql = data[start + 5 : end - 1].decode()
            except UnicodeDecodeError:
                return DECIDE
            verdict = self.classifier.lookup(sql)
            if verdict is None:
                return DECIDE
            if self.portals and self.query_verdict(sql, verdict) is not verdict:
                return DECIDE
            index = self._hot[verdict.statement_class]
            if index >= 0:
                self.note_query(sql)
                self._admitted[index] += 1
                if self.chain is not None:
                    self.chain.statement(sql, CLASS_NAMES[verdict.statement_class], ALLOW)
                return ADMIT
            if verdict.statement_class in self._cold or not self.allowed(verdict):
                return DECIDE
            self.note_query(sql)
            if self.on_statement is not None:
                self.on_statement(sql, verdict, None, (), SESSION_GRANT)
            return ADMIT
        if self._skipping:
            return ADMIT  # the server skips it: it runs nothing and changes no name
        if kind == _B:
            # The scan checks the whole message as decode_frontend would: a malformed
            # one goes to the slow path, which refuses it.
            statement_end = bind_statement_end(raw, start, end)
            if statement_end < 0:
                return DECIDE
            name_end = text_end(raw, start + 5, end)
            statement_name = data[name_end + 1 : statement_end]
            portal = data[start + 5 : name_end]
            first = self._first
            if (
                first is not None
                and first.unit != self._sent
                and (self._unsettled(False, statement_name) or self._unsettled(True, portal))
            ):
                return WAIT
            bound = Portal.__new__(Portal)  # no __init__ call: its fields are set here
            bound.statement = self.statements.get(statement_name)
            bound.bind = data[start:end]
            bound.unit = self._last_bound = self._sent
            bound.approved = False
            self._change(_BIND_COMPLETE, True, portal, bound)
            return ADMIT
        if kind == _E:
            name_end = execute_portal_end(raw, start, end)
            if name_end < 0:
                return DECIDE
            portal = data[start + 5 : name_end]
            first = self._first
            if first is not None and first.unit != self._sent and self._unsettled(True, portal):
                return WAIT
            found = self.portals.get(portal)
            if found is None or (statement := found.statement) is None:
                return DECIDE
            types = statement.declared_types if statement.described is None else statement.described
            if statement.allowed:
                self._admitted[statement.class_index] += 1
                if self.chain is not None:
                    self.chain.statement(
                        statement.sql, statement.class_name, ALLOW, found.bind, types
                    )
                return ADMIT
            if found.approved or (
                statement.verdict.statement_class not in self._cold
                and self.allowed(statement.verdict)
            ):
                if self.on_statement is not None:
                    self.on_statement(
                        statement.sql, statement.verdict, found.bind, types, SESSION_GRANT
                    )
                return ADMIT
            return DECIDE
        if kind == _P:
            name_end = text_end(raw, start + 5, end)
            if name_end < 0:
                return DECIDE
            name = data[start + 5 : name_end]
            first = self._first
            if first is not None and first.unit != self._sent and self._unsettled(False, name):
                return WAIT
            parse = data[start:end]
            existing = self.statements.get(name)
            if existing is not None and existing.parse == parse:
                # The same Parse again, byte for byte (drivers parse the unnamed statement
                # anew for each query): checked and classified when it first came. A named
                # one fails on the server (it exists), and the unnamed one is made anew.
                self._change(_PARSE_COMPLETE, False, name, existing)
                return ADMIT
            sql_end = parse_sql_end(raw, start, end)
            if sql_end < 0:
                return DECIDE
            try:
                sql = data[name_end + 1 : sql_end].decode()
            except UnicodeDecodeError:
                return DECIDE
            verdict = self.classifier.lookup(sql)
            if verdict is None:
                return DECIDE
            self._remember(name, sql, verdict, data[sql_end + 1 : end], parse)
            return ADMIT
        if kind == _C:
            name_end = target_name_end(raw, start, end)
            if name_end < 0:
                return DECIDE
            subtype = raw[start + 5]  # 'S' or 'P'
            name = data[start + 6 : name_end]
            first = self._first
            if (
                first is not None
                and first.unit != self._sent
                and self._unsettled(subtype == 0x50, name)
            ):
                return WAIT
            self._change(_CLOSE_COMPLETE, subtype == 0x50, name, None)
            return ADMIT
        if kind == _D:
            name_end = target_name_end(raw, start, end)
            if name_end < 0:
                return DECIDE
            if raw[start + 5] == 0x53:  # 'S'
                self._describing.append((self._sent, data[start + 6 : name_end]))
            return ADMIT
        return ADMIT

    def wait_after(self, unit: int) -> None:
        """Messages of later units wait until the server has answered `unit`."""
        self._barrier = unit

    def unit_sent(self) -> None:
        """The relay forwarded a Sync or a simple Query: the unit it ends is the server's."""
        self._sent += 1
        self._skipping = False

    def answered(self, kind: int) -> None:
        """The server confirmed the oldest unconfirmed Parse, Bind or Close."""
        first = self._first
        if first is None or first.answer != kind or first.unit != self._done:
            raise ProtocolViolation("server answered a message the gateway did not send")
        self._first = first.next
        if self._first is None:
            self._last = None
        self._recycle(first)

    def failed(self) -> None:
        """The server sent an ErrorResponse: it failed the unit it is working on, and
        skipped that unit's messages after the one that failed."""
        unit = self._done
        self._undo(unit)
        if self._describing:
            self._describing = [entry for entry in self._describing if entry[0] != unit]
        if unit == self._sent:
            self._skipping = True  # the batch being built: the server skips the rest

    def described(self, param_types: tuple[int, ...]) -> None:
        if self._describing:
            statement = self.statements.get(self._describing.pop(0)[1])
            if statement is not None:
                statement.described = param_types

    def ready(self, transaction_status: str) -> None:
        unit = self._done
        if self._first is not None:
            self._undo(unit)  # a unit answered in full leaves nothing unconfirmed
        self._done = unit + 1
        if self._describing:
            self._describing = [entry for entry in self._describing if entry[0] > unit]
        if transaction_status == "I" and self.portals:
            # A transaction's end destroys its portals; later batches' portals live on.
            if self._last_bound <= unit:
                # None was bound in a later batch: the usual case. The unnamed portal,
                # the one drivers use, is deleted first: the dict keeps its room for the
                # next, where clearing an empty-but-for-it dict would free and remake it.
                self.portals.pop(b"", None)
                if self.portals:
                    self.portals.clear()
            else:
                for name in [n for n, portal in self.portals.items() if portal.unit <= unit]:
                    del self.portals[name]
        if self._done == self._sent and self.on_drained is not None:
            drained, self.on_drained = self.on_drained, None
            drained()

    def admitted(self) -> dict[StatementClass, int]:
        """The statements admitted here under their class's `allow`, by class, since the
        last `forget_admitted`."""
        counts = self._admitted
        return {cls: counts[i] for i, cls in enumerate(CLASSES) if counts[i]}

    def forget_admitted(self) -> None:
        for i in range(len(CLASSES)):
            self._admitted[i] = 0

    @property
    def drained(self) -> bool:
        """The server has answered every unit forwarded: no name is in doubt."""
        return self._done == self._sent

    def known_statements(self) -> dict[bytes, str]:
        """The statements the gate is certain the server keeps: name -> SQL."""
        unsettled = set()
        change = self._first
        while change is not None:
            if not change.portal:
                unsettled.add(change.name)
            change = change.next
        return {name: s.sql for name, s in self.statements.items() if name not in unsettled}

    # --- the picture's bookkeeping

    def _change(self, answer: int, portal: bool, name: bytes, value: object) -> None:
        table: dict[bytes, object] = self.portals if portal else self.statements  # type: ignore[assignment]
        change = self._spare
        if change is None:
            change = Change.__new__(Change)  # no __init__ call: its fields are set here
        else:
            self._spare = change.next
        change.unit = self._sent
        change.answer = answer
        change.portal = portal
        change.name = name
        change.previous = table.get(name)
        change.next = None
        if self._last is None:
            self._first = change
        else:
            self._last.next = change
        self._last = change
        if value is None:
            table.pop(name, None)
        else:
            table[name] = value

    def _unsettled(self, portal: bool, name: bytes) -> bool:
        """An earlier batch the server has not finished changed this name. (Callers on
        the hot path first check that an earlier batch's change waits at all: the
        changes are in unit order, so then the first one is not this batch's.)"""
        sent = self._sent
        change = self._first
        while change is not None:
            if change.unit != sent and change.portal == portal and change.name == name:
                return True
            change = change.next
        return False

    def _undo(self, unit: int) -> None:
        """Undo `unit`'s unconfirmed changes, newest first (they lead the chain)."""
        undone: list[Change] = []
        change = self._first
        while change is not None and change.unit == unit:
            undone.append(change)
            change = change.next
        self._first = change
        if change is None:
            self._last = None
        for change in reversed(undone):
            table: dict[bytes, object] = self.portals if change.portal else self.statements  # type: ignore[assignment]
            if change.previous is None:
                table.pop(change.name, None)
            else:
                table[change.name] = change.previous
            self._recycle(change)

    def _recycle(self, change: Change) -> None:
        """A change confirmed or undone: kept for the next one (one at most is made per
        message on the hot path, so a session keeps about as many as it pipelines)."""
        change.name = b""
        change.previous = None
        change.next = self._spare
        self._spare = change

    # --- decisions made off the hot path

    def allowed(self, verdict: Verdict) -> bool:
        """Runs without a decision: its class is allowed, or approved for this session."""
        statement_class = verdict.statement_class
        if self._allow[statement_class]:
            return True
        if not self._grantable[statement_class]:
            return False
        return judge(
            statement_class.value, self.policy, self.session_grant_until, self.clock()
        ).allows

    def query_verdict(self, sql: str, verdict: Verdict) -> Verdict:
        """A simple Query's verdict in this session: SQL FETCH or MOVE of a portal that
        binds a statement needing a decision would run that statement."""
        if self.portals and _CURSOR_MOTION.search(sql) is not None:
            for portal in self.portals.values():
                statement = portal.statement
                if not portal.approved and (statement is None or not statement.allowed):
                    return PORTAL_BY_SQL
        return verdict

    def note_query(self, sql: str) -> None:
        """A simple Query goes to the server (the gate's changes are all confirmed).

        It drops the unnamed statement and portal. SQL that may create or drop
        protocol-level statements' names (PREPARE, DEALLOCATE, DISCARD anywhere in it,
        in any case) makes the gate forget every statement: a false positive only costs
        classifying them again. With none to forget (simple-protocol clients), the SQL is
        not scanned for them.
        """
        statements = self.statements
        statements.pop(b"", None)
        self.portals.pop(b"", None)
        if statements and names_statements(sql):
            statements.clear()

    def note_parse(self, parse: m.Parse, verdict: Verdict) -> None:
        name = parse.statement.encode()
        sql_end = parse.raw.index(b"\0", 5 + len(name) + 1)
        self._remember(name, parse.sql, verdict, parse.raw[sql_end + 1 :], parse.raw)

    def _remember(
        self, name: bytes, sql: str, verdict: Verdict, declared: bytes, parse: bytes
    ) -> None:
        # A named statement parsed over an existing one fails on the server, which skips
        # the rest of the batch; the undo then brings the old one back.
        allowed = self._hot[verdict.statement_class] >= 0
        self._change(
            _PARSE_COMPLETE,
            False,
            name,
            PreparedStatement(sql, verdict, declared, allowed, parse),
        )

    def note_execute(self, portal_name: str) -> None:
        """An Execute that needed a decision was let through."""
        portal = self.portals.get(portal_name.encode())
        if portal is not None:
            portal.approved = True

    def execution(self, execute: m.Execute) -> Execution:
        """What an Execute runs: SQL, verdict, parameters as an approver sees them, and a
        digest of the exact bound values (a retry must bind the same ones)."""
        portal = self.portals.get(execute.portal.encode())
        if portal is None or portal.statement is None:
            return Execution("", UNPREPARED, (), NO_PARAMETERS_KEY)
        bind = m.decode_frontend(portal.bind)
        assert isinstance(bind, m.Bind)
        statement = portal.statement
        types = statement.param_types
        return Execution(
            statement.sql,
            statement.verdict,
            postgres_parameters(bind, types),
            parameters_key(postgres_bound_values(bind, statement.declared_types)),
            portal.bind,
            types,
        )
