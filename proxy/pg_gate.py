"""The per-session gate for PostgreSQL: which client messages may reach the server now.

Sans-I/O, called by `PgRelay` for every client message. It admits at once what
it can decide from cached verdicts: a simple Query whose text (or fingerprint)
is cached and allowed; every Parse whose statement is cached (a Parse never
runs anything; its verdict is remembered under the statement name); Bind,
Describe, Close, Sync, Flush and COPY data; an Execute whose portal runs an
allowed statement. Anything else waits, and the session decides it off the hot
path: classify a statement not yet cached, hold a statement for approval, or
refuse it.

Named statements and portals are tracked as the server keeps them: the unnamed
statement and portal are replaced by the next Parse or Bind and destroyed by a
simple Query; Close forgets a name. SQL-level PREPARE, DEALLOCATE and DISCARD
share the names of protocol-level statements, so a Query that mentions them
forgets every statement: an Execute of a statement the gateway did not see
prepared is of unknown class and waits.
"""

from __future__ import annotations

import datetime
import hashlib
import struct
import uuid
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from policy.classify import CLASS_NAMES, StatementClass, Verdict
from policy.fingerprint import CachedClassifier
from policy.rules import Action, EffectivePolicy
from policy.sqlscan import names_statements
from protocols.postgres import messages as m
from proxy.event_chain import EventChain
from proxy.store import Parameter

_Q, _P, _B, _E, _C, _D = (ord(c) for c in "QPBECD")


def _nul(raw: bytes, start: int, end: int) -> int:
    """Where the first NUL in raw[start:end] is, or -1 (a loop in C when compiled)."""
    i = start
    while i < end:
        if raw[i] == 0:
            return i
        i += 1
    return -1


UNPREPARED = Verdict(
    StatementClass.UNKNOWN,
    ("executes a statement the gateway did not see prepared",),
)
AMBIGUOUS = Verdict(
    StatementClass.UNKNOWN,
    ("a named statement was parsed again with other text without being closed",),
)


StatementListener = Callable[[str, Verdict, bytes | None, tuple[int, ...], str], None]
#: What a statement admitted on the hot path was decided by: its class, or a session grant.
ALLOW, SESSION_GRANT = "allow", "approved for the session"


class PreparedStatement:
    """A statement the server keeps under a name, as the gate saw it parsed."""

    __slots__ = (
        "allowed",
        "class_name",
        "declared",
        "declared_types",
        "described",
        "sql",
        "verdict",
    )

    def __init__(self, sql: str, verdict: Verdict, declared: bytes, allowed: bool) -> None:
        self.sql = sql
        self.verdict = verdict
        self.class_name = CLASS_NAMES[verdict.statement_class]
        #: The Parse message's parameter type section, as sent and as type OIDs.
        self.declared = declared
        self.declared_types = _declared_types(declared)
        #: Runs without a decision under the policy alone (its class is allowed).
        self.allowed = allowed
        #: The server's ParameterDescription, when the client asked for one.
        self.described: tuple[int, ...] | None = None

    @property
    def param_types(self) -> tuple[int, ...]:
        return self.declared_types if self.described is None else self.described


def _declared_types(declared: bytes) -> tuple[int, ...]:
    count = int.from_bytes(declared[:2], "big", signed=True)
    if count <= 0 or len(declared) < 2 + 4 * count:
        return ()
    types: tuple[int, ...] = struct.unpack_from(f"!{count}I", declared, 2)
    return types


class Portal:
    """A portal the server keeps under a name: the statement it binds, and the Bind."""

    __slots__ = ("approved", "bind", "statement")

    def __init__(self, statement: PreparedStatement | None, bind: bytes) -> None:
        self.statement = statement
        self.bind = bind  # the whole Bind message, decoded only when an approver must see it
        #: An approved Execute lets the portal's later Executes (a suspended portal) go on.
        self.approved = False


class PgGate:
    """Statement and portal names are kept as the bytes the client sent: no decoding on
    the hot path."""

    def __init__(
        self,
        classifier: CachedClassifier,
        policy: EffectivePolicy,
        clock: Callable[[], float],
        *,
        durable_classes: frozenset[StatementClass] = frozenset(),
    ) -> None:
        self.classifier = classifier
        self.policy = policy
        self.clock = clock
        self.statements: dict[bytes, PreparedStatement] = {}
        self.portals: dict[bytes, Portal] = {}
        #: Until then (clock time), statements that need approval run: a session grant.
        self.session_grant_until = 0.0
        #: Statements admitted here under their class's `allow`: counted here, and
        #: recorded straight into the session transcript's `chain` when there is one.
        self.admitted = 0
        self.chain: EventChain | None = None
        #: Told of every other statement admitted here (under a session grant): sql,
        #: verdict, and for an Execute its Bind message and parameter types.
        self.on_statement: StatementListener | None = None
        self._describing: deque[bytes] = deque()  # statement Describes awaiting an answer
        # Per class: allowed without a decision? (`approve` classes are, under a grant.)
        # Never the durable classes (recording.on_failure: refuse): the session records
        # each of their statements on disk before it forwards it, off the hot path.
        self._durable = durable_classes
        self._allow = {
            cls: policy.action_for(cls.value) is Action.ALLOW and cls not in durable_classes
            for cls in StatementClass
        }

    # --- the relay's questions

    def admit(self, kind: int, raw: bytes, start: int, end: int) -> bool:
        # Slices of `data` are bytes made straight from the buffer when compiled (a C
        # pointer there), with no slice object; their bounds are always in order here.
        data = raw
        if kind == _Q:
            if raw[end - 1] != 0:
                return False  # malformed: the slow path says so
            try:
                sql = data[start + 5 : end - 1].decode()
            except UnicodeDecodeError:
                return False
            verdict = self.classifier.lookup(sql)
            if verdict is None:
                return False
            if self._allow[verdict.statement_class]:
                self.note_query(sql)
                self.admitted += 1
                if self.chain is not None:
                    self.chain.statement(sql, CLASS_NAMES[verdict.statement_class], ALLOW)
                return True
            if not self.allowed(verdict):
                return False
            self.note_query(sql)
            if self.on_statement is not None:
                self.on_statement(sql, verdict, None, (), SESSION_GRANT)
            return True
        if kind == _B:
            name_end = _nul(raw, start + 5, end)
            # (A name without its NUL leaves name_end at -1: not a search from 0.)
            statement_end = _nul(raw, name_end + 1, end) if name_end >= 0 else -1
            if statement_end < 0:
                return False
            statement = self.statements.get(data[name_end + 1 : statement_end])
            portal = data[start + 5 : name_end]
            if portal and portal in self.portals:
                # The server refuses to bind an existing named portal and keeps the old
                # one: which one runs at Execute is not certain, so neither is its verdict.
                statement = None
            self.portals[portal] = Portal(statement, data[start:end])
            return True
        if kind == _E:
            name_end = _nul(raw, start + 5, end)
            if name_end < 0:
                return False
            found = self.portals.get(data[start + 5 : name_end])
            if found is None or (statement := found.statement) is None:
                return False
            types = statement.declared_types if statement.described is None else statement.described
            if statement.allowed:
                self.admitted += 1
                if self.chain is not None:
                    self.chain.statement(
                        statement.sql, statement.class_name, ALLOW, found.bind, types
                    )
                return True
            if found.approved or self.allowed(statement.verdict):
                if self.on_statement is not None:
                    self.on_statement(
                        statement.sql, statement.verdict, found.bind, types, SESSION_GRANT
                    )
                return True
            return False
        if kind == _P:
            name_end = _nul(raw, start + 5, end)
            sql_end = _nul(raw, name_end + 1, end) if name_end >= 0 else -1
            if sql_end < 0:
                return False
            name = data[start + 5 : name_end]
            declared = data[sql_end + 1 : end]
            existing = self.statements.get(name)
            try:
                sql = data[name_end + 1 : sql_end].decode()
            except UnicodeDecodeError:
                return False
            if existing is not None and existing.sql == sql and existing.declared == declared:
                return True  # the same statement parsed again (the unnamed one, usually)
            verdict = self.classifier.lookup(sql)
            if verdict is None:
                return False
            self._remember(name, sql, verdict, declared)
            return True
        if kind == _C:
            name_end = _nul(raw, start + 6, end)
            if name_end < 0:
                return False
            if raw[start + 5] == 0x53:  # 'S'
                self.statements.pop(data[start + 6 : name_end], None)
            else:
                self.portals.pop(data[start + 6 : name_end], None)
            return True
        if kind == _D and raw[start + 5] == 0x53:
            name_end = _nul(raw, start + 6, end)
            if name_end < 0:
                return False
            self._describing.append(data[start + 6 : name_end])
            return True
        return True

    def described(self, param_types: tuple[int, ...]) -> None:
        if self._describing:
            statement = self.statements.get(self._describing.popleft())
            if statement is not None:
                statement.described = param_types

    def ready(self, transaction_status: str) -> None:
        if self._describing:
            self._describing.clear()
        if transaction_status == "I":
            self.portals.clear()  # a transaction's end destroys its portals

    # --- decisions made off the hot path

    def allowed(self, verdict: Verdict) -> bool:
        """Runs without a decision: its class is allowed, or approved for this session
        (a durable class never: the session decides and records it)."""
        if self._allow[verdict.statement_class]:
            return True
        if verdict.statement_class in self._durable:
            return False
        return self.needs_approval(verdict) and self.clock() < self.session_grant_until

    def needs_approval(self, verdict: Verdict) -> bool:
        return self.policy.action_for(verdict.statement_class.value) is Action.APPROVE

    def note_query(self, sql: str) -> None:
        """A simple Query goes to the server.

        SQL that may create or drop protocol-level statements' names (PREPARE, DEALLOCATE,
        DISCARD anywhere in it, in any case) makes the gate forget the named ones: a false
        positive only costs classifying them again.
        """
        self.statements.pop(b"", None)
        self.portals.pop(b"", None)
        if names_statements(sql):
            self.statements.clear()

    def note_parse(self, parse: m.Parse, verdict: Verdict) -> None:
        name = parse.statement.encode()
        sql_end = parse.raw.index(b"\0", 5 + len(name) + 1)
        self._remember(name, parse.sql, verdict, parse.raw[sql_end + 1 :])

    def _remember(self, name: bytes, sql: str, verdict: Verdict, declared: bytes) -> None:
        existing = self.statements.get(name)
        if name and existing is not None and (existing.sql, existing.declared) != (sql, declared):
            # The server refuses to parse over an existing named statement and keeps the
            # old one, unless that one had failed to parse: which of the two runs at
            # Execute is not certain, so neither is its verdict.
            verdict = AMBIGUOUS
        allowed = self._allow[verdict.statement_class]
        self.statements[name] = PreparedStatement(sql, verdict, declared, allowed)

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
            return Execution("", UNPREPARED, (), _digest(b""), None, ())
        bind = m.decode_frontend(portal.bind)
        assert isinstance(bind, m.Bind)
        statement = portal.statement
        types = statement.param_types
        return Execution(
            statement.sql,
            statement.verdict,
            describe_parameters(bind, types),
            parameters_key(bind),
            portal.bind,
            types,
        )


class Execution(NamedTuple):
    sql: str
    verdict: Verdict
    parameters: tuple[Parameter, ...]
    key: str
    bind: bytes | None
    types: tuple[int, ...]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parameters_key(bind: m.Bind | None) -> str:
    """A digest of exactly what was bound: formats and bytes of every value."""
    if bind is None:
        return _digest(b"")
    h = hashlib.sha256()
    formats = bind.param_formats
    for index, value in enumerate(bind.params):
        fmt = formats[0] if len(formats) == 1 else (formats[index] if formats else 0)
        if value is None:
            h.update(b"N")
        else:
            h.update(b"%d:%d:" % (fmt, len(value)) + value)
    return h.hexdigest()


# --- parameter values as an approver sees them

_TYPE_NAMES = {
    16: "bool",
    17: "bytea",
    18: "char",
    19: "name",
    20: "int8",
    21: "int2",
    23: "int4",
    25: "text",
    26: "oid",
    114: "json",
    700: "float4",
    701: "float8",
    1042: "bpchar",
    1043: "varchar",
    1082: "date",
    1114: "timestamp",
    1184: "timestamptz",
    1700: "numeric",
    2950: "uuid",
    3802: "jsonb",
}
_TEXTUAL = frozenset((18, 19, 25, 114, 1042, 1043))
_EPOCH_2000 = datetime.datetime(2000, 1, 1)
_DATE_2000 = datetime.date(2000, 1, 1)


def describe_parameters(bind: m.Bind, types: tuple[int, ...]) -> tuple[Parameter, ...]:
    formats = bind.param_formats
    out: list[Parameter] = []
    for index, value in enumerate(bind.params):
        oid = types[index] if index < len(types) else 0
        name = _TYPE_NAMES.get(oid, "unknown" if oid == 0 else f"oid {oid}")
        fmt = formats[0] if len(formats) == 1 else (formats[index] if formats else 0)
        if value is None:
            out.append(Parameter(name, None))
        elif fmt == 0:
            try:
                out.append(Parameter(name, value.decode()))
            except UnicodeDecodeError:
                out.append(Parameter(name, value.hex(), "hex"))
        else:
            decoded = _decode_binary(oid, value)
            if decoded is None:
                out.append(Parameter(name, value.hex(), "hex"))
            else:
                out.append(Parameter(name, decoded))
    return tuple(out)


def _decode_binary(oid: int, value: bytes) -> str | None:
    """Common binary formats as text; None when shown better as hex."""
    try:
        size = len(value)
        if oid == 16 and size == 1:
            return "true" if value[0] else "false"
        if oid in (21, 23, 20) and size in (2, 4, 8):
            return str(int.from_bytes(value, "big", signed=True))
        if oid == 26 and size == 4:
            return str(int.from_bytes(value, "big"))
        if oid == 700 and size == 4:
            return repr(struct.unpack("!f", value)[0])
        if oid == 701 and size == 8:
            return repr(struct.unpack("!d", value)[0])
        if oid in _TEXTUAL:
            return value.decode()
        if oid == 3802 and size >= 1 and value[0] == 1:
            return value[1:].decode()
        if oid == 2950 and size == 16:
            return str(uuid.UUID(bytes=value))
        if oid == 1082 and size == 4:
            days = int.from_bytes(value, "big", signed=True)
            return (_DATE_2000 + datetime.timedelta(days=days)).isoformat()
        if oid in (1114, 1184) and size == 8:
            micros = int.from_bytes(value, "big", signed=True)
            moment = _EPOCH_2000 + datetime.timedelta(microseconds=micros)
            return moment.isoformat(sep=" ") + ("+00" if oid == 1184 else "")
    except (UnicodeDecodeError, OverflowError, ValueError):
        return None
    return None
