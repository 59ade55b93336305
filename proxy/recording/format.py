"""The transcript format: one definition per event kind, the one encoder, the one decoder.

docs/transcript-format.md describes the format for auditors; this module is it in code.
A transcript file is a stream of msgpack maps: events, each

    {"seq": n, "ts": unix seconds (float), "kind": str, "data": {...}, "prev": hex sha256}

then, once the session ended, one seal {"seal": {"last", "seq", "key_id", "sig"}}.
`encode_event` is the one encoder of an event; proxy/recording/event_chain.pyx packs the two events
every statement makes (a `statement` allowed on its class, a bare `result` tag) in C,
byte for byte as `encode_event` would, and tests/proxy/test_recording_format.py holds it
to that for every kind. `decode` is the one decoder of an event's data: it takes every
shape a version of the format wrote and gives the kind's typed definition.

Versions (`format` in the session start):
- 1: a PostgreSQL `result` held the captured row bodies in `rows`, a MySQL one a count
  (bodies under `row_data`); `approval.requested` named its parameters `parameters`.
- 2: `rows` is always a count and `row_data` always the bodies, for both protocols;
  parameters are `params` wherever they are decoded.
"""

from __future__ import annotations

import enum
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeGuard

import msgpack  # type: ignore[import-untyped]

#: The schema version new transcripts carry, as `format` in their session start.
SCHEMA_VERSION = 2
#: What a session start without `format` is read as (none was ever written without one).
FIRST_VERSION = 1

TRANSCRIPTS_DIR = "transcripts"
SUFFIX = ".airlock"
ZERO_HASH = "0" * 64
SEAL_DOMAIN = b"airlock transcript seal v1\x00"
#: Session ids name files: nothing that could climb out of the day directory.
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

SESSION_START = "session.start"
STATEMENT = "statement"
APPROVAL_REQUESTED = "approval.requested"
APPROVAL_DECIDED = "approval.decided"
RESULT = "result"
SESSION_END = "session.end"
TOKEN_REFRESHED = "token_refreshed"  # noqa: S105 (an event kind)

EVENT_KEYS = ("seq", "ts", "kind", "data", "prev")
SEAL_KEYS = ("last", "seq", "key_id", "sig")


def transcripts_dir(data_dir: Path) -> Path:
    return data_dir / TRANSCRIPTS_DIR


def seal_message(session_id: str, last: str, seq: int) -> bytes:
    """The bytes a seal signs: the session, its last event's hash and seq."""
    return SEAL_DOMAIN + b"\x00".join(
        (session_id.encode("utf-8"), last.encode("ascii"), str(seq).encode("ascii"))
    )


def client_address(client: object) -> str | None:
    """ "addr:port" from a session start's `client`, a string or {address, port}."""
    if isinstance(client, dict):
        address, port = client.get("address"), client.get("port")
        if address is None:
            return None
        return str(address) if port is None else f"{address}:{port}"
    return client if isinstance(client, str) else None


# --- the encoder -------------------------------------------------------------------------------


def _packable(value: object) -> object:
    """What msgpack cannot pack itself but the gateway may hand over."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot record a {type(value).__name__} in a transcript")


class _Packers(threading.local):
    """One msgpack Packer per thread: making one per record (as `packb` does) costs more
    than packing a small record, and a Packer must not be shared between threads."""

    def __init__(self) -> None:
        self.packer = msgpack.Packer(use_bin_type=True, default=_packable, datetime=False)


_packers = _Packers()


def pack(record: Mapping[str, Any]) -> bytes:
    """A map as msgpack (str as str, bytes as bin): an event's data, or a whole record."""
    raw = _packers.packer.pack(record)
    assert isinstance(raw, bytes)
    return raw


def encode_event(seq: int, ts: float, kind: str, data: Mapping[str, Any], prev: str) -> bytes:
    """One event's bytes as they are written and hashed."""
    return pack({"seq": seq, "ts": float(ts), "kind": kind, "data": data, "prev": prev})


def encode_seal(last: str, seq: int, key_id: str, sig: bytes) -> bytes:
    """The seal record: the last event's hash and seq, the key's id and the signature."""
    return pack({"seal": {"last": last, "seq": seq, "key_id": key_id, "sig": sig}})


# --- the event kinds ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parameter:
    """A bound parameter: its type's name, its value as text (None: NULL), and `format`
    ("text", "binary" as hex, or "hex" for an undecodable raw message)."""

    type: str | None
    value: Any
    format: str = "text"

    def to_data(self) -> dict[str, Any]:
        return {"type": self.type, "value": self.value, "format": self.format}

    @classmethod
    def from_data(cls, data: object) -> Parameter:
        if not isinstance(data, dict):
            return cls(None, data)
        kind = data.get("type")
        shape = data.get("format")
        return cls(
            kind if isinstance(kind, str) else None,
            data.get("value"),
            shape if isinstance(shape, str) else "text",
        )


@dataclass(frozen=True, slots=True)
class EventData:
    """Base of the kinds. `extra` keeps keys a definition does not name (what another
    version wrote), so that nothing recorded is lost on the way to replay or export."""

    KIND: ClassVar[str]
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    def to_data(self) -> dict[str, Any]:
        raise NotImplementedError


def _kept(data: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: object) -> float | None:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class SessionStart(EventData):
    """The session's first event. The writer adds `session_id` and `format`."""

    KIND: ClassVar[str] = SESSION_START
    KEYS: ClassVar[tuple[str, ...]] = (
        "session_id", "format", "protocol", "identity", "target", "client", "policy",
        "claims_seen",
    )  # fmt: skip
    session_id: str | None = None
    format: int = SCHEMA_VERSION
    protocol: str | None = None
    #: {iss, sub, email, groups, jti, exp}
    identity: dict[str, Any] = field(default_factory=dict)
    target: str | None = None
    #: {address, port, tls, application_name, ...}, or "addr:port"
    client: Any = None
    #: SHA-256 of the policy the gateway ran with.
    policy: str | None = None
    claims_seen: tuple[str, ...] = ()

    def to_data(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "format": self.format,
            "protocol": self.protocol,
            "identity": self.identity,
            "target": self.target,
            "client": self.client,
            "policy": self.policy,
            "claims_seen": list(self.claims_seen),
        } | self.extra

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> SessionStart:
        identity = data.get("identity")
        claims = data.get("claims_seen")
        version = data.get("format")
        return cls(
            session_id=_str(data.get("session_id")),
            format=version if is_count(version) else FIRST_VERSION,
            protocol=_str(data.get("protocol")),
            identity=identity if isinstance(identity, dict) else {},
            target=_str(data.get("target")),
            client=data.get("client"),
            policy=_str(data.get("policy")),
            claims_seen=tuple(c for c in claims if isinstance(c, str))
            if isinstance(claims, list)
            else (),
            extra=_kept(data, cls.KEYS),
        )


@dataclass(frozen=True, slots=True)
class Statement(EventData):
    """A statement and the gateway's decision on it, with its bound parameters.

    On disk the parameters are `params` [{type, value, format}], or, where the relay
    records them without spending time on them, the raw message they came in: a
    PostgreSQL Bind (`bind`, with the parameter type OIDs `types`) or a MySQL
    COM_STMT_EXECUTE (`execute`, with `num_params`, the `param_types` an earlier
    execute bound, and `long_data` {index: bytes}). `decode` turns either into `params`;
    the raw fields stay for whoever wants the bytes.
    """

    KIND: ClassVar[str] = STATEMENT
    #: In the order the C packer writes them (sql, class, decision, bind, types).
    KEYS: ClassVar[tuple[str, ...]] = (
        "sql", "class", "decision", "reasons", "approval_id", "grant", "params", "bind",
        "types", "execute", "num_params", "param_types", "long_data",
    )  # fmt: skip
    sql: str | None = None
    #: read, write, ddl, admin, unknown
    statement_class: str | None = None
    #: allow, deny, "approved by ...", "denied by ...", ...
    decision: str | None = None
    reasons: tuple[str, ...] = ()
    approval_id: str | None = None
    grant: str | None = None
    params: tuple[Parameter, ...] | None = None
    bind: bytes | None = None
    types: tuple[int, ...] = ()
    execute: bytes | None = None
    num_params: int | None = None
    param_types: bytes | None = None
    long_data: dict[int, bytes] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "sql": self.sql,
            "class": self.statement_class,
            "decision": self.decision,
        }
        if self.reasons:
            data["reasons"] = list(self.reasons)
        if self.approval_id is not None:
            data["approval_id"] = self.approval_id
        if self.grant is not None:
            data["grant"] = self.grant
        if self.params is not None:
            data["params"] = [p.to_data() for p in self.params]
        if self.bind is not None:
            data["bind"] = self.bind
            data["types"] = list(self.types)
        if self.execute is not None:
            data["execute"] = self.execute
            data["num_params"] = self.num_params or 0
            if self.param_types is not None:
                data["param_types"] = self.param_types
            if self.long_data:
                data["long_data"] = {str(i): d for i, d in sorted(self.long_data.items())}
        return data | self.extra

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Statement:
        from proxy.recording.parameters import decoded_parameters  # the protocols' codecs

        reasons = data.get("reasons")
        types = data.get("types")
        long_data = data.get("long_data")
        count = data.get("num_params")
        param_types = data.get("param_types")
        bind, execute = data.get("bind"), data.get("execute")
        params = decoded_parameters(data)
        return cls(
            sql=_str(data.get("sql")),
            statement_class=_str(data.get("class")),
            decision=_str(data.get("decision")),
            reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
            approval_id=_str(data.get("approval_id")),
            grant=_str(data.get("grant")),
            params=None if params is None else tuple(Parameter.from_data(p) for p in params),
            bind=bind if isinstance(bind, bytes) else None,
            types=tuple(t for t in types if is_count(t)) if isinstance(types, list) else (),
            execute=execute if isinstance(execute, bytes) else None,
            num_params=count if is_count(count) else None,
            param_types=param_types if isinstance(param_types, bytes) else None,
            long_data={
                int(k): v for k, v in long_data.items() if str(k).isdigit() and isinstance(v, bytes)
            }
            if isinstance(long_data, dict)
            else {},
            extra=_kept(data, cls.KEYS),
        )


@dataclass(frozen=True, slots=True)
class ApprovalRequested(EventData):
    """A statement held for approval: what approvers are asked to decide."""

    KIND: ClassVar[str] = APPROVAL_REQUESTED
    KEYS: ClassVar[tuple[str, ...]] = (
        "id", "sql", "params", "class", "hold", "approver_groups", "timeout_s", "why",
    )  # fmt: skip
    V1_KEYS: ClassVar[tuple[str, ...]] = ("approval_id", "parameters", "approvers")
    id: str | None = None
    sql: str | None = None
    params: tuple[Parameter, ...] = ()
    statement_class: str | None = None
    #: wait, reject
    hold: str | None = None
    approver_groups: tuple[str, ...] = ()
    timeout_s: float | None = None
    #: The agent's justification (an `airlock:why` comment), when it gave one.
    why: str | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "sql": self.sql,
            "params": [p.to_data() for p in self.params],
            "class": self.statement_class,
            "hold": self.hold,
            "approver_groups": list(self.approver_groups),
        }
        if self.timeout_s is not None:
            data["timeout_s"] = self.timeout_s
        if self.why is not None:
            data["why"] = self.why
        return data | self.extra

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ApprovalRequested:
        params = _first(data, "params", "parameters")
        groups = _first(data, "approver_groups", "approvers")
        return cls(
            id=_str(_first(data, "id", "approval_id")),
            sql=_str(data.get("sql")),
            params=tuple(Parameter.from_data(p) for p in params)
            if isinstance(params, list)
            else (),
            statement_class=_str(data.get("class")),
            hold=_str(data.get("hold")),
            approver_groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
            timeout_s=_number(data.get("timeout_s")),
            why=_str(data.get("why")),
            extra=_kept(data, cls.KEYS + cls.V1_KEYS),
        )


@dataclass(frozen=True, slots=True)
class ApprovalDecided(EventData):
    """An approval's decision (approved, denied, withdrawn, expired)."""

    KIND: ClassVar[str] = APPROVAL_DECIDED
    KEYS: ClassVar[tuple[str, ...]] = (
        "id", "state", "by", "groups", "at", "scope", "expires_at", "ttl_s", "comment",
        "reason",
    )  # fmt: skip
    V1_KEYS: ClassVar[tuple[str, ...]] = ("approval_id", "approver")
    id: str | None = None
    state: str | None = None
    #: The approver's subject (older writers: {sub, email}).
    by: Any = None
    groups: tuple[str, ...] = ()
    at: float | None = None
    #: statement, session
    scope: str | None = None
    expires_at: float | None = None
    ttl_s: float | None = None
    comment: str | None = None
    reason: str | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "by": self.by,
            "groups": list(self.groups),
            "at": self.at,
            "scope": self.scope,
            "expires_at": self.expires_at,
            "comment": self.comment,
            "reason": self.reason,
        }
        if self.ttl_s is not None:
            data["ttl_s"] = self.ttl_s
        return data | self.extra

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ApprovalDecided:
        groups = data.get("groups")
        return cls(
            id=_str(_first(data, "id", "approval_id")),
            state=_str(data.get("state")),
            by=_first(data, "by", "approver"),
            groups=tuple(str(g) for g in groups) if isinstance(groups, list) else (),
            at=_number(data.get("at")),
            scope=_str(data.get("scope")),
            expires_at=_number(data.get("expires_at")),
            ttl_s=_number(data.get("ttl_s")),
            comment=_str(data.get("comment")),
            reason=_str(data.get("reason")),
            extra=_kept(data, cls.KEYS + cls.V1_KEYS),
        )


@dataclass(frozen=True, slots=True)
class Result(EventData):
    """How a statement ended: its command tag, or the error the client saw.

    `rows` counts the rows it returned, where the gateway counted them; `row_data` holds
    the bodies captured (`recording.capture_rows`: PostgreSQL DataRow bodies, MySQL row
    packets), `rows_cut` when the session's `max_row_bytes` ran out before the last.
    """

    KIND: ClassVar[str] = RESULT
    KEYS: ClassVar[tuple[str, ...]] = (
        "tag", "error", "rows", "row_data", "rows_cut", "result_sets", "last_insert_id",
        "duration_s",
    )  # fmt: skip
    tag: str | None = None
    #: {sqlstate, message} and, for MySQL, errno
    error: dict[str, Any] | None = None
    rows: int | None = None
    row_data: tuple[bytes, ...] | None = None
    rows_cut: bool = False
    result_sets: int | None = None
    last_insert_id: int | None = None
    duration_s: float | None = None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"error": self.error} if self.error is not None else {}
        if self.tag is not None or self.error is None:
            data["tag"] = self.tag
        if self.rows is not None:
            data["rows"] = self.rows
        if self.result_sets is not None:
            data["result_sets"] = self.result_sets
        if self.last_insert_id is not None:
            data["last_insert_id"] = self.last_insert_id
        if self.duration_s is not None:
            data["duration_s"] = self.duration_s
        if self.row_data is not None:
            data["row_data"] = list(self.row_data)
        if self.rows_cut:
            data["rows_cut"] = True
        return data | self.extra

    @classmethod
    def from_data(cls, data: Mapping[str, Any], version: int = SCHEMA_VERSION) -> Result:
        rows, row_data = data.get("rows"), data.get("row_data")
        if isinstance(rows, list) and version < 2:
            # Version 1, PostgreSQL: the captured bodies under `rows`. Their number is
            # the count only when none were cut.
            row_data, rows = rows, None if data.get("rows_cut") else len(rows)
        error = data.get("error")
        result_sets, insert_id = data.get("result_sets"), data.get("last_insert_id")
        duration_s = _number(data.get("duration_s"))
        return cls(
            tag=_str(data.get("tag")),
            error=error if isinstance(error, dict) else None,
            rows=rows if is_count(rows) else None,
            row_data=tuple(r for r in row_data if isinstance(r, bytes))
            if isinstance(row_data, list)
            else None,
            rows_cut=data.get("rows_cut") is True,
            result_sets=result_sets if is_count(result_sets) else None,
            last_insert_id=insert_id if is_count(insert_id) else None,
            duration_s=duration_s,
            extra=_kept(data, cls.KEYS),
        )


@dataclass(frozen=True, slots=True)
class SessionEnd(EventData):
    """The session's last event: why it ended, and how many statements it ran."""

    KIND: ClassVar[str] = SESSION_END
    KEYS: ClassVar[tuple[str, ...]] = ("reason", "error", "statements")
    reason: str | None = None
    #: {sqlstate, message}
    error: dict[str, Any] | None = None
    statements: int | None = None

    def to_data(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "error": self.error,
            "statements": self.statements,
        } | self.extra

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> SessionEnd:
        error, statements = data.get("error"), data.get("statements")
        return cls(
            reason=_str(data.get("reason")),
            error=error if isinstance(error, dict) else None,
            statements=statements if is_count(statements) else None,
            extra=_kept(data, cls.KEYS),
        )


@dataclass(frozen=True, slots=True)
class TokenRefreshed(EventData):
    """A fresh token extended the session: the token's `exp`, `jti` and `iat` (never the
    token), when the session now ends and why then (`token expires`, `session_ttl`), and
    how the token came (`api`, or `statement`: in-band)."""

    KIND: ClassVar[str] = TOKEN_REFRESHED
    KEYS: ClassVar[tuple[str, ...]] = ("exp", "jti", "iat", "ends_at", "ends_because", "via")
    exp: float | None = None
    jti: str | None = None
    iat: float | None = None
    ends_at: float | None = None
    ends_because: str | None = None
    via: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {
            "exp": self.exp,
            "jti": self.jti,
            "iat": self.iat,
            "ends_at": self.ends_at,
            "ends_because": self.ends_because,
            "via": self.via,
        } | self.extra

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> TokenRefreshed:
        return cls(
            exp=_number(data.get("exp")),
            jti=_str(data.get("jti")),
            iat=_number(data.get("iat")),
            ends_at=_number(data.get("ends_at")),
            ends_because=_str(data.get("ends_because")),
            via=_str(data.get("via")),
            extra=_kept(data, cls.KEYS),
        )


@dataclass(frozen=True, slots=True)
class UnknownEvent(EventData):
    """An event of a kind this version does not define: its data as recorded."""

    KIND: ClassVar[str] = ""
    kind: str = ""

    def to_data(self) -> dict[str, Any]:
        return dict(self.extra)


#: Every kind the format defines, by name.
KINDS: dict[str, type[EventData]] = {
    definition.KIND: definition
    for definition in (
        SessionStart,
        Statement,
        ApprovalRequested,
        ApprovalDecided,
        Result,
        SessionEnd,
        TokenRefreshed,
    )
}


def decode(kind: str, data: Mapping[str, Any], version: int = SCHEMA_VERSION) -> EventData:
    """An event's data as its kind's definition, whichever version wrote it."""
    if kind == SESSION_START:
        return SessionStart.from_data(data)
    if kind == STATEMENT:
        return Statement.from_data(data)
    if kind == RESULT:
        return Result.from_data(data, version)
    if kind == APPROVAL_REQUESTED:
        return ApprovalRequested.from_data(data)
    if kind == APPROVAL_DECIDED:
        return ApprovalDecided.from_data(data)
    if kind == SESSION_END:
        return SessionEnd.from_data(data)
    if kind == TOKEN_REFRESHED:
        return TokenRefreshed.from_data(data)
    return UnknownEvent(kind=kind, extra=dict(data))


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    """The first of `keys` that `data` holds a value for (versions named some fields
    differently)."""
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    return None
