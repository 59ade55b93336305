"""PostgreSQL protocol messages as frozen dataclasses, named as in the docs.

https://www.postgresql.org/docs/current/protocol-message-formats.html

Each decoded message keeps the exact bytes it came from in `raw`, so a message
that is only inspected is forwarded verbatim. Messages the gateway itself sends
are made with their `build` class methods, which fill `raw` in.
Only the messages the gateway inspects or sends are decoded; everything else
(DataRow, RowDescription, ...) is framed and relayed as bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from protocols.errors import ProtocolViolation

PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_HEADER = struct.Struct("!ci")


def frame(type_byte: bytes, body: bytes) -> bytes:
    """One typed message: type byte, int32 length (itself included), body."""
    return _HEADER.pack(type_byte, len(body) + 4) + body


def cstring(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    if b"\0" in raw:
        raise ValueError("a C string cannot contain NUL")
    return raw + b"\0"


class Reader:
    """Cursor over a message body; every read checks bounds."""

    __slots__ = ("_body", "_pos")

    def __init__(self, body: bytes, pos: int = 0) -> None:
        self._body = body
        self._pos = pos

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self._pos + n > len(self._body):
            raise ProtocolViolation(f"truncated message: cannot read {what}")

    def int32(self) -> int:
        self._need(4, "int32")
        (value,) = _I32.unpack_from(self._body, self._pos)
        self._pos += 4
        return int(value)

    def int16(self) -> int:
        self._need(2, "int16")
        (value,) = _I16.unpack_from(self._body, self._pos)
        self._pos += 2
        return int(value)

    def count16(self) -> int:
        """An unsigned 16-bit count (parameters, formats: up to 65,535)."""
        self._need(2, "count")
        (value,) = _U16.unpack_from(self._body, self._pos)
        self._pos += 2
        return int(value)

    def byte(self) -> int:
        self._need(1, "byte")
        value = self._body[self._pos]
        self._pos += 1
        return value

    def cstring_bytes(self) -> bytes:
        end = self._body.find(b"\0", self._pos)
        if end < 0:
            raise ProtocolViolation("unterminated string")
        value = self._body[self._pos : end]
        self._pos = end + 1
        return value

    def cstring(self) -> str:
        raw = self.cstring_bytes()
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise ProtocolViolation("invalid UTF-8 in message string") from None

    def take(self, n: int) -> bytes:
        self._need(n, f"{n} bytes")
        value = self._body[self._pos : self._pos + n]
        self._pos += n
        return value

    def rest(self) -> bytes:
        value = self._body[self._pos :]
        self._pos = len(self._body)
        return value

    def end(self) -> None:
        if self._pos != len(self._body):
            raise ProtocolViolation("trailing bytes after message fields")


# --- startup phase
# Untyped messages: int32 length, then an int32 code.


@dataclass(frozen=True, slots=True)
class StartupMessage:
    protocol_version: int
    parameters: dict[str, str]
    raw: bytes

    @classmethod
    def build(
        cls, parameters: dict[str, str], protocol_version: int = PROTOCOL_3_0
    ) -> StartupMessage:
        body = _I32.pack(protocol_version)
        for name, value in parameters.items():
            body += cstring(name) + cstring(value)
        body += b"\0"
        return cls(protocol_version, dict(parameters), _I32.pack(len(body) + 4) + body)

    @property
    def major(self) -> int:
        return self.protocol_version >> 16

    @property
    def minor(self) -> int:
        return self.protocol_version & 0xFFFF


@dataclass(frozen=True, slots=True)
class SSLRequest:
    raw: bytes = _I32.pack(8) + _I32.pack(SSL_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    raw: bytes = _I32.pack(8) + _I32.pack(GSSENC_REQUEST_CODE)


@dataclass(frozen=True, slots=True)
class CancelRequest:
    process_id: int
    secret_key: int
    raw: bytes

    @classmethod
    def build(cls, process_id: int, secret_key: int) -> CancelRequest:
        raw = struct.pack("!iiii", 16, CANCEL_REQUEST_CODE, process_id, secret_key)
        return cls(process_id, secret_key, raw)


InitialMessage = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest


def decode_initial(raw: bytes) -> InitialMessage:
    """Decode a whole untyped startup-phase message (length prefix included)."""
    reader = Reader(raw, 4)
    code = reader.int32()
    if code == SSL_REQUEST_CODE:
        reader.end()
        return SSLRequest(raw)
    if code == GSSENC_REQUEST_CODE:
        reader.end()
        return GSSENCRequest(raw)
    if code == CANCEL_REQUEST_CODE:
        pid = reader.int32()
        secret = reader.int32()
        # Protocol 3.2 allows longer keys; we only ever hand out 4-byte ones.
        reader.end()
        return CancelRequest(pid, secret, raw)
    if code >> 16 != 3:
        raise ProtocolViolation(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
    parameters: dict[str, str] = {}
    while True:
        name = reader.cstring()
        if not name:
            break
        if name in parameters:
            raise ProtocolViolation(f"duplicate startup parameter {name!r}")
        parameters[name] = reader.cstring()
    reader.end()
    return StartupMessage(code, parameters, raw)


# --- frontend (client) messages


@dataclass(frozen=True, slots=True)
class Query:
    TYPE: ClassVar[bytes] = b"Q"
    sql: str
    raw: bytes

    @classmethod
    def build(cls, sql: str) -> Query:
        return cls(sql, frame(b"Q", cstring(sql)))


@dataclass(frozen=True, slots=True)
class Parse:
    TYPE: ClassVar[bytes] = b"P"
    statement: str
    sql: str
    param_types: tuple[int, ...]
    raw: bytes


@dataclass(frozen=True, slots=True)
class Bind:
    TYPE: ClassVar[bytes] = b"B"
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]
    raw: bytes


@dataclass(frozen=True, slots=True)
class Describe:
    TYPE: ClassVar[bytes] = b"D"
    kind: str  # "S" statement or "P" portal
    name: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Execute:
    TYPE: ClassVar[bytes] = b"E"
    portal: str
    max_rows: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class Close:
    TYPE: ClassVar[bytes] = b"C"
    kind: str
    name: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Sync:
    TYPE: ClassVar[bytes] = b"S"
    raw: bytes = frame(b"S", b"")


@dataclass(frozen=True, slots=True)
class Flush:
    TYPE: ClassVar[bytes] = b"H"
    raw: bytes = frame(b"H", b"")


@dataclass(frozen=True, slots=True)
class Terminate:
    TYPE: ClassVar[bytes] = b"X"
    raw: bytes = frame(b"X", b"")


@dataclass(frozen=True, slots=True)
class CopyData:
    TYPE: ClassVar[bytes] = b"d"
    raw: bytes


@dataclass(frozen=True, slots=True)
class CopyDone:
    TYPE: ClassVar[bytes] = b"c"
    raw: bytes = frame(b"c", b"")


@dataclass(frozen=True, slots=True)
class CopyFail:
    TYPE: ClassVar[bytes] = b"f"
    message: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class FunctionCall:
    TYPE: ClassVar[bytes] = b"F"
    function_oid: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class PasswordMessage:
    """'p' during cleartext or MD5 authentication. Its password never reaches a log."""

    TYPE: ClassVar[bytes] = b"p"
    password: bytes
    raw: bytes

    def __repr__(self) -> str:
        return "PasswordMessage(<redacted>)"

    @classmethod
    def build(cls, password: bytes) -> PasswordMessage:
        return cls(password, frame(b"p", cstring(password)))


@dataclass(frozen=True, slots=True)
class SASLInitialResponse:
    """'p' carrying the first SASL message."""

    TYPE: ClassVar[bytes] = b"p"
    mechanism: str
    data: bytes | None
    raw: bytes

    def __repr__(self) -> str:
        return f"SASLInitialResponse({self.mechanism!r}, <redacted>)"

    @classmethod
    def build(cls, mechanism: str, data: bytes | None) -> SASLInitialResponse:
        body = cstring(mechanism) + (_I32.pack(-1) if data is None else _I32.pack(len(data)) + data)
        return cls(mechanism, data, frame(b"p", body))


@dataclass(frozen=True, slots=True)
class SASLResponse:
    TYPE: ClassVar[bytes] = b"p"
    data: bytes
    raw: bytes

    def __repr__(self) -> str:
        return "SASLResponse(<redacted>)"

    @classmethod
    def build(cls, data: bytes) -> SASLResponse:
        return cls(data, frame(b"p", data))


FrontendMessage = (
    Query
    | Parse
    | Bind
    | Describe
    | Execute
    | Close
    | Sync
    | Flush
    | Terminate
    | CopyData
    | CopyDone
    | CopyFail
    | FunctionCall
)

#: Type bytes a client may send once the session is established.
FRONTEND_TYPES = frozenset(b"QPBDESCHXdcfF")


def _formats(reader: Reader) -> tuple[int, ...]:
    count = reader.count16()
    return tuple(reader.int16() for _ in range(count))


def decode_frontend(raw: bytes) -> FrontendMessage:
    """Decode one whole typed frontend message (header included)."""
    kind = raw[0:1]
    reader = Reader(raw, 5)
    message: FrontendMessage
    if kind == b"Q":
        message = Query(reader.cstring(), raw)
    elif kind == b"P":
        name = reader.cstring()
        sql = reader.cstring()
        count = reader.count16()
        types = tuple(reader.int32() & 0xFFFFFFFF for _ in range(count))
        message = Parse(name, sql, types, raw)
    elif kind == b"B":
        portal = reader.cstring()
        statement = reader.cstring()
        param_formats = _formats(reader)
        count = reader.count16()
        params: list[bytes | None] = []
        for _ in range(count):
            size = reader.int32()
            if size < -1:
                raise ProtocolViolation("invalid parameter length")
            params.append(None if size == -1 else reader.take(size))
        message = Bind(portal, statement, param_formats, tuple(params), _formats(reader), raw)
    elif kind == b"D" or kind == b"C":
        which = chr(reader.byte())
        if which not in ("S", "P"):
            raise ProtocolViolation(f"invalid {kind.decode()} target {which!r}")
        name = reader.cstring()
        message = Describe(which, name, raw) if kind == b"D" else Close(which, name, raw)
    elif kind == b"E":
        message = Execute(reader.cstring(), reader.int32(), raw)
    elif kind == b"S":
        message = Sync(raw)
    elif kind == b"H":
        message = Flush(raw)
    elif kind == b"X":
        message = Terminate(raw)
    elif kind == b"d":
        return CopyData(raw)
    elif kind == b"c":
        message = CopyDone(raw)
    elif kind == b"f":
        message = CopyFail(reader.cstring(), raw)
    elif kind == b"F":
        return FunctionCall(reader.int32(), raw)
    else:
        raise ProtocolViolation(f"unexpected frontend message type {kind!r}")
    reader.end()
    return message


def decode_password(raw: bytes) -> PasswordMessage:
    if raw[0:1] != b"p":
        raise ProtocolViolation(f"expected a password message, got type {raw[0:1]!r}")
    reader = Reader(raw, 5)
    password = reader.cstring_bytes()
    reader.end()
    return PasswordMessage(password, raw)


def decode_sasl_initial(raw: bytes) -> SASLInitialResponse:
    if raw[0:1] != b"p":
        raise ProtocolViolation(f"expected SASLInitialResponse, got type {raw[0:1]!r}")
    reader = Reader(raw, 5)
    mechanism = reader.cstring()
    size = reader.int32()
    data = None if size == -1 else reader.take(size)
    reader.end()
    return SASLInitialResponse(mechanism, data, raw)


def decode_sasl_response(raw: bytes) -> SASLResponse:
    if raw[0:1] != b"p":
        raise ProtocolViolation(f"expected SASLResponse, got type {raw[0:1]!r}")
    return SASLResponse(raw[5:], raw)


# --- backend (server) messages


@dataclass(frozen=True, slots=True)
class AuthenticationOk:
    raw: bytes = frame(b"R", _I32.pack(0))


@dataclass(frozen=True, slots=True)
class AuthenticationCleartextPassword:
    raw: bytes = frame(b"R", _I32.pack(3))


@dataclass(frozen=True, slots=True)
class AuthenticationMD5Password:
    salt: bytes
    raw: bytes

    @classmethod
    def build(cls, salt: bytes) -> AuthenticationMD5Password:
        return cls(salt, frame(b"R", _I32.pack(5) + salt))


@dataclass(frozen=True, slots=True)
class AuthenticationSASL:
    mechanisms: tuple[str, ...]
    raw: bytes

    @classmethod
    def build(cls, mechanisms: tuple[str, ...]) -> AuthenticationSASL:
        body = _I32.pack(10) + b"".join(cstring(m) for m in mechanisms) + b"\0"
        return cls(mechanisms, frame(b"R", body))


@dataclass(frozen=True, slots=True)
class AuthenticationSASLContinue:
    data: bytes
    raw: bytes

    @classmethod
    def build(cls, data: bytes) -> AuthenticationSASLContinue:
        return cls(data, frame(b"R", _I32.pack(11) + data))


@dataclass(frozen=True, slots=True)
class AuthenticationSASLFinal:
    data: bytes
    raw: bytes

    @classmethod
    def build(cls, data: bytes) -> AuthenticationSASLFinal:
        return cls(data, frame(b"R", _I32.pack(12) + data))


@dataclass(frozen=True, slots=True)
class AuthenticationOther:
    """Kerberos, GSS, SSPI: methods the gateway does not speak."""

    code: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    name: str
    value: str
    raw: bytes

    @classmethod
    def build(cls, name: str, value: str) -> ParameterStatus:
        return cls(name, value, frame(b"S", cstring(name) + cstring(value)))


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    process_id: int
    secret_key: int
    raw: bytes

    @classmethod
    def build(cls, process_id: int, secret_key: int) -> BackendKeyData:
        return cls(process_id, secret_key, frame(b"K", struct.pack("!ii", process_id, secret_key)))


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    status: str  # "I" idle, "T" in a transaction, "E" in a failed transaction
    raw: bytes

    @classmethod
    def build(cls, status: str) -> ReadyForQuery:
        return cls(status, frame(b"Z", status.encode("ascii")))


def _encode_fields(fields: dict[str, str]) -> bytes:
    return b"".join(code.encode("ascii") + cstring(value) for code, value in fields.items()) + b"\0"


def _decode_fields(reader: Reader) -> dict[str, str]:
    fields: dict[str, str] = {}
    while True:
        code = reader.byte()
        if code == 0:
            break
        raw_value = reader.cstring_bytes()
        # The server sends these in its own encoding; never fail on them.
        fields[chr(code)] = raw_value.decode("utf-8", "replace")
    reader.end()
    return fields


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    fields: dict[str, str]
    raw: bytes

    @property
    def severity(self) -> str:
        return self.fields.get("V", self.fields.get("S", "ERROR"))

    @property
    def code(self) -> str:
        return self.fields.get("C", "")

    @property
    def message(self) -> str:
        return self.fields.get("M", "")

    @classmethod
    def build(
        cls,
        severity: str,
        code: str,
        message: str,
        *,
        detail: str | None = None,
        hint: str | None = None,
    ) -> ErrorResponse:
        fields = {"S": severity, "V": severity, "C": code, "M": message}
        if detail:
            fields["D"] = detail
        if hint:
            fields["H"] = hint
        return cls(fields, frame(b"E", _encode_fields(fields)))


@dataclass(frozen=True, slots=True)
class NoticeResponse:
    fields: dict[str, str]
    raw: bytes

    @property
    def message(self) -> str:
        return self.fields.get("M", "")

    @classmethod
    def build(
        cls,
        message: str,
        *,
        severity: str = "NOTICE",
        code: str = "00000",
        detail: str | None = None,
        hint: str | None = None,
    ) -> NoticeResponse:
        fields = {"S": severity, "V": severity, "C": code, "M": message}
        if detail:
            fields["D"] = detail
        if hint:
            fields["H"] = hint
        return cls(fields, frame(b"N", _encode_fields(fields)))


@dataclass(frozen=True, slots=True)
class NotificationResponse:
    process_id: int
    channel: str
    payload: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    newest_minor: int
    unrecognized: tuple[str, ...]
    raw: bytes

    @classmethod
    def build(cls, newest_minor: int, unrecognized: tuple[str, ...]) -> NegotiateProtocolVersion:
        body = _I32.pack(newest_minor) + _I32.pack(len(unrecognized))
        body += b"".join(cstring(name) for name in unrecognized)
        return cls(newest_minor, unrecognized, frame(b"v", body))


@dataclass(frozen=True, slots=True)
class CommandComplete:
    tag: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class CopyResponse:
    """CopyInResponse ('G'), CopyOutResponse ('H') or CopyBothResponse ('W')."""

    direction: str  # "in", "out" or "both"
    raw: bytes


@dataclass(frozen=True, slots=True)
class OtherBackendMessage:
    """A backend message relayed without decoding its body (DataRow, RowDescription, ...)."""

    type: bytes
    raw: bytes


BackendMessage = (
    AuthenticationOk
    | AuthenticationCleartextPassword
    | AuthenticationMD5Password
    | AuthenticationSASL
    | AuthenticationSASLContinue
    | AuthenticationSASLFinal
    | AuthenticationOther
    | ParameterStatus
    | BackendKeyData
    | ReadyForQuery
    | ErrorResponse
    | NoticeResponse
    | NotificationResponse
    | NegotiateProtocolVersion
    | CommandComplete
    | CopyResponse
    | OtherBackendMessage
)

#: Every type byte a PostgreSQL server may send.
BACKEND_TYPES = frozenset(b"R123ACDEGHIKNSTVWZcdnstv")
_COPY_DIRECTIONS = {b"G": "in", b"H": "out", b"W": "both"}


def decode_parameter_description(raw: bytes) -> tuple[int, ...]:
    """The parameter type OIDs of a ParameterDescription ('t') message."""
    if raw[0:1] != b"t":
        raise ProtocolViolation("not a ParameterDescription")
    reader = Reader(raw, 5)
    count = reader.count16()
    types = tuple(reader.int32() & 0xFFFFFFFF for _ in range(count))
    reader.end()
    return types


def decode_backend(raw: bytes) -> BackendMessage:
    """Decode one whole typed backend message (header included)."""
    kind = raw[0:1]
    reader = Reader(raw, 5)
    message: BackendMessage
    if kind == b"R":
        code = reader.int32()
        if code == 0:
            message = AuthenticationOk(raw)
        elif code == 3:
            message = AuthenticationCleartextPassword(raw)
        elif code == 5:
            message = AuthenticationMD5Password(reader.take(4), raw)
        elif code == 10:
            mechanisms: list[str] = []
            while (name := reader.cstring()) != "":
                mechanisms.append(name)
            message = AuthenticationSASL(tuple(mechanisms), raw)
        elif code == 11:
            return AuthenticationSASLContinue(reader.rest(), raw)
        elif code == 12:
            return AuthenticationSASLFinal(reader.rest(), raw)
        else:
            return AuthenticationOther(code, raw)
    elif kind == b"S":
        message = ParameterStatus(reader.cstring(), reader.cstring(), raw)
    elif kind == b"K":
        message = BackendKeyData(reader.int32(), reader.int32(), raw)
    elif kind == b"Z":
        status = chr(reader.byte())
        if status not in ("I", "T", "E"):
            raise ProtocolViolation(f"invalid transaction status {status!r}")
        message = ReadyForQuery(status, raw)
    elif kind == b"E":
        return ErrorResponse(_decode_fields(reader), raw)
    elif kind == b"N":
        return NoticeResponse(_decode_fields(reader), raw)
    elif kind == b"A":
        message = NotificationResponse(reader.int32(), reader.cstring(), reader.cstring(), raw)
    elif kind == b"v":
        newest = reader.int32()
        count = reader.int32()
        if count < 0:
            raise ProtocolViolation("negative option count")
        message = NegotiateProtocolVersion(
            newest, tuple(reader.cstring() for _ in range(count)), raw
        )
    elif kind == b"C":
        message = CommandComplete(reader.cstring(), raw)
    elif kind in _COPY_DIRECTIONS:
        return CopyResponse(_COPY_DIRECTIONS[kind], raw)
    elif kind[0] in BACKEND_TYPES:
        return OtherBackendMessage(kind, raw)
    else:
        raise ProtocolViolation(f"unexpected backend message type {kind!r}")
    reader.end()
    return message
