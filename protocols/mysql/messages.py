"""MySQL/MariaDB protocol messages as frozen dataclasses, named as in the docs.

Each works on one logical packet payload (no header): `parse(payload)` decodes
it, raising `ProtocolViolation` for anything malformed, and `build()` returns
the payload to frame with `packets.frame`. Only what the gateway inspects or
sends is decoded; rows and column definitions are relayed as bytes.

https://dev.mysql.com/doc/dev/mysql-server/latest/PAGE_PROTOCOL.html
https://mariadb.com/docs/server/reference/clientserver-protocol

MariaDB differences handled here: its server version starts with "5.5.5-"; a
MariaDB server or client that clears CLIENT_MYSQL (= LONG_PASSWORD) in its
capabilities puts MariaDB's extended capabilities (`MariaDbCapability`) into
the last 4 filler bytes of the handshake and handshake response.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from protocols.errors import ProtocolViolation
from protocols.mysql.packets import (
    lenenc_bytes,
    lenenc_int,
    read_bytes,
    read_lenenc_bytes,
    read_lenenc_int,
    read_nul_string,
    read_uint,
)


class Capability(enum.IntFlag):
    """Client/server capability flags (the 32-bit field)."""

    LONG_PASSWORD = 1 << 0  # MariaDB calls it CLIENT_MYSQL: cleared by MariaDB peers
    FOUND_ROWS = 1 << 1
    LONG_FLAG = 1 << 2
    CONNECT_WITH_DB = 1 << 3
    NO_SCHEMA = 1 << 4
    COMPRESS = 1 << 5
    ODBC = 1 << 6
    LOCAL_FILES = 1 << 7
    IGNORE_SPACE = 1 << 8
    PROTOCOL_41 = 1 << 9
    INTERACTIVE = 1 << 10
    SSL = 1 << 11
    IGNORE_SIGPIPE = 1 << 12
    TRANSACTIONS = 1 << 13
    RESERVED = 1 << 14
    SECURE_CONNECTION = 1 << 15  # RESERVED2 in MySQL 8's headers
    MULTI_STATEMENTS = 1 << 16
    MULTI_RESULTS = 1 << 17
    PS_MULTI_RESULTS = 1 << 18
    PLUGIN_AUTH = 1 << 19
    CONNECT_ATTRS = 1 << 20
    PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
    CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
    SESSION_TRACK = 1 << 23
    DEPRECATE_EOF = 1 << 24
    OPTIONAL_RESULTSET_METADATA = 1 << 25  # MySQL 8
    ZSTD_COMPRESSION_ALGORITHM = 1 << 26  # MySQL 8
    QUERY_ATTRIBUTES = 1 << 27  # MySQL 8.0.23+: changes COM_QUERY and COM_STMT_EXECUTE
    MULTI_FACTOR_AUTHENTICATION = 1 << 28  # MySQL 8.0.27+
    CAPABILITY_EXTENSION = 1 << 29  # MySQL; MariaDB's obsolete CLIENT_PROGRESS
    SSL_VERIFY_SERVER_CERT = 1 << 30
    REMEMBER_OPTIONS = 1 << 31


class MariaDbCapability(enum.IntFlag):
    """MariaDB's extended capabilities (bits 32+ of its 64-bit flags, shifted down)."""

    PROGRESS = 1 << 0  # ERR packets with code 0xFFFF report progress mid-command
    COM_MULTI = 1 << 1  # removed in 10.6
    STMT_BULK_OPERATIONS = 1 << 2  # COM_STMT_BULK_EXECUTE
    EXTENDED_METADATA = 1 << 3  # extra field in column definitions
    CACHE_METADATA = 1 << 4  # column count packet gets a "metadata follows" byte
    BULK_UNIT_RESULTS = 1 << 5


class ServerStatus(enum.IntFlag):
    IN_TRANS = 0x0001
    AUTOCOMMIT = 0x0002
    MORE_RESULTS_EXISTS = 0x0008
    NO_GOOD_INDEX_USED = 0x0010
    NO_INDEX_USED = 0x0020
    CURSOR_EXISTS = 0x0040
    LAST_ROW_SENT = 0x0080
    DB_DROPPED = 0x0100
    NO_BACKSLASH_ESCAPES = 0x0200
    METADATA_CHANGED = 0x0400
    QUERY_WAS_SLOW = 0x0800
    PS_OUT_PARAMS = 0x1000
    IN_TRANS_READONLY = 0x2000
    SESSION_STATE_CHANGED = 0x4000
    ANSI_QUOTES = 0x8000  # MariaDB only: sql_mode has ANSI_QUOTES


# Plain ints of the flags OK parsing tests: IntFlag arithmetic is slow on the hot path.
_PROTOCOL_41 = int(Capability.PROTOCOL_41)
_TRANSACTIONS = int(Capability.TRANSACTIONS)
_SESSION_TRACK = int(Capability.SESSION_TRACK)
_SESSION_STATE_CHANGED = int(ServerStatus.SESSION_STATE_CHANGED)


class Command(enum.IntEnum):
    SLEEP = 0x00
    QUIT = 0x01
    INIT_DB = 0x02
    QUERY = 0x03
    FIELD_LIST = 0x04
    CREATE_DB = 0x05
    DROP_DB = 0x06
    REFRESH = 0x07
    SHUTDOWN = 0x08
    STATISTICS = 0x09
    PROCESS_INFO = 0x0A
    CONNECT = 0x0B
    PROCESS_KILL = 0x0C
    DEBUG = 0x0D
    PING = 0x0E
    TIME = 0x0F
    DELAYED_INSERT = 0x10
    CHANGE_USER = 0x11
    BINLOG_DUMP = 0x12
    TABLE_DUMP = 0x13
    CONNECT_OUT = 0x14
    REGISTER_SLAVE = 0x15
    STMT_PREPARE = 0x16
    STMT_EXECUTE = 0x17
    STMT_SEND_LONG_DATA = 0x18
    STMT_CLOSE = 0x19
    STMT_RESET = 0x1A
    SET_OPTION = 0x1B
    STMT_FETCH = 0x1C
    DAEMON = 0x1D
    BINLOG_DUMP_GTID = 0x1E
    RESET_CONNECTION = 0x1F
    STMT_BULK_EXECUTE = 0xFA  # MariaDB


class FieldType(enum.IntEnum):
    """Column and parameter types (the low byte of a parameter's 2-byte type)."""

    DECIMAL = 0x00
    TINY = 0x01
    SHORT = 0x02
    LONG = 0x03
    FLOAT = 0x04
    DOUBLE = 0x05
    NULL = 0x06
    TIMESTAMP = 0x07
    LONGLONG = 0x08
    INT24 = 0x09
    DATE = 0x0A
    TIME = 0x0B
    DATETIME = 0x0C
    YEAR = 0x0D
    NEWDATE = 0x0E
    VARCHAR = 0x0F
    BIT = 0x10
    TIMESTAMP2 = 0x11
    DATETIME2 = 0x12
    TIME2 = 0x13
    VECTOR = 0xF2  # MySQL 9
    JSON = 0xF5
    NEWDECIMAL = 0xF6
    ENUM = 0xF7
    SET = 0xF8
    TINY_BLOB = 0xF9
    MEDIUM_BLOB = 0xFA
    LONG_BLOB = 0xFB
    BLOB = 0xFC
    VAR_STRING = 0xFD
    STRING = 0xFE
    GEOMETRY = 0xFF


#: Flag in the high byte of a parameter type: the integer is unsigned.
UNSIGNED_FLAG = 0x8000


class SetOption(enum.IntEnum):
    """The argument of COM_SET_OPTION."""

    MULTI_STATEMENTS_ON = 0
    MULTI_STATEMENTS_OFF = 1


class CursorType(enum.IntFlag):
    """The flags byte of COM_STMT_EXECUTE."""

    NO_CURSOR = 0x00
    READ_ONLY = 0x01
    FOR_UPDATE = 0x02
    SCROLLABLE = 0x04
    PARAMETER_COUNT_AVAILABLE = 0x08  # MySQL 8 with QUERY_ATTRIBUTES


class SessionTrackType(enum.IntEnum):
    SYSTEM_VARIABLES = 0
    SCHEMA = 1
    STATE_CHANGE = 2
    GTIDS = 3
    TRANSACTION_CHARACTERISTICS = 4
    TRANSACTION_STATE = 5


class AuthPlugin(enum.StrEnum):
    NATIVE = "mysql_native_password"
    CACHING_SHA2 = "caching_sha2_password"
    SHA256 = "sha256_password"
    CLEAR = "mysql_clear_password"
    ED25519 = "client_ed25519"


OK_HEADER = 0x00
EOF_HEADER = 0xFE
ERR_HEADER = 0xFF
LOCAL_INFILE_HEADER = 0xFB
AUTH_MORE_DATA_HEADER = 0x01
AUTH_SWITCH_HEADER = 0xFE

#: The error code MariaDB uses for progress reports (MariaDbCapability.PROGRESS).
PROGRESS_REPORT_CODE = 0xFFFF

_HANDSHAKE_FIXED = struct.Struct("<IIB")  # capabilities, max packet size, collation
_FILLER_19 = bytes(19)
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ProtocolViolation(f"invalid UTF-8 in {what}") from None


def _cstring(text: str | bytes, what: str) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    if b"\0" in raw:
        raise ValueError(f"{what} cannot contain NUL")
    return raw + b"\0"


def _expect_header(payload: bytes, header: int, what: str) -> None:
    if not payload or payload[0] != header:
        got = payload[:1].hex() or "an empty payload"
        raise ProtocolViolation(f"expected {what} (0x{header:02x}), got {got}")


# --- connection phase


@dataclass(frozen=True, slots=True)
class HandshakeV10:
    """The server's greeting (Protocol::HandshakeV10).

    A server that refuses the connection sends an ERR packet instead: check
    `payload[0] == ERR_HEADER` before parsing.
    """

    server_version: str
    connection_id: int
    auth_data: bytes  # the whole scramble, normally 20 bytes, without the trailing NUL
    capabilities: int  # 32 bits
    character_set: int
    status_flags: int
    auth_plugin_name: str
    mariadb_capabilities: int = 0  # only when LONG_PASSWORD (CLIENT_MYSQL) is clear
    protocol_version: int = 10

    @property
    def is_mariadb(self) -> bool:
        return not self.capabilities & Capability.LONG_PASSWORD or "MariaDB" in self.server_version

    @property
    def version(self) -> str:
        """The server version without MariaDB's "5.5.5-" replication-compatibility prefix."""
        return self.server_version.removeprefix("5.5.5-")

    def build(self) -> bytes:
        caps = self.capabilities
        data = self.auth_data
        if len(data) < 8:
            raise ValueError("auth_data needs at least 8 bytes")
        if not caps & Capability.SECURE_CONNECTION and len(data) != 8:
            raise ValueError("without SECURE_CONNECTION the scramble has exactly 8 bytes")
        if self.mariadb_capabilities and caps & Capability.LONG_PASSWORD:
            raise ValueError("MariaDB capabilities need LONG_PASSWORD (CLIENT_MYSQL) clear")
        out = bytearray((self.protocol_version,))
        out += _cstring(self.server_version, "server version")
        out += _U32.pack(self.connection_id)
        out += data[:8] + b"\0"
        out += _U16.pack(caps & 0xFFFF)
        out += bytes((self.character_set,))
        out += _U16.pack(self.status_flags)
        out += _U16.pack(caps >> 16 & 0xFFFF)
        out.append(len(data) + 1 if caps & Capability.PLUGIN_AUTH else 0)
        out += bytes(6) + _U32.pack(self.mariadb_capabilities)
        if caps & Capability.SECURE_CONNECTION:
            out += data[8:].ljust(12, b"\0") + b"\0"
        if caps & Capability.PLUGIN_AUTH:
            out += _cstring(self.auth_plugin_name, "plugin name")
        return bytes(out)

    @classmethod
    def parse(cls, payload: bytes) -> HandshakeV10:
        if payload[:1] == bytes((ERR_HEADER,)):
            raise ProtocolViolation("the server sent an error instead of its handshake")
        _expect_header(payload, 10, "protocol version 10")
        raw_version, pos = read_nul_string(payload, 1)
        connection_id, pos = read_uint(payload, pos, 4)
        part1, pos = read_bytes(payload, pos, 8)
        pos += 1  # filler
        caps_low, pos = read_uint(payload, pos, 2)
        # Everything after the low capabilities is optional in the oldest servers.
        character_set = status_flags = caps_high = data_len = mariadb_caps = 0
        part2 = b""
        plugin = ""
        if pos < len(payload):
            character_set, pos = read_uint(payload, pos, 1)
            status_flags, pos = read_uint(payload, pos, 2)
            caps_high, pos = read_uint(payload, pos, 2)
            data_len, pos = read_uint(payload, pos, 1)
            pos += 6
            mariadb_caps, pos = read_uint(payload, pos, 4)
        caps = caps_low | caps_high << 16
        if caps & Capability.LONG_PASSWORD:
            mariadb_caps = 0  # filler for MySQL
        if caps & Capability.SECURE_CONNECTION and pos < len(payload):
            part2, pos = read_bytes(payload, pos, min(max(13, data_len - 8), len(payload) - pos))
            if part2.endswith(b"\0"):
                part2 = part2[:-1]
        if caps & Capability.PLUGIN_AUTH and pos < len(payload):
            end = payload.find(b"\0", pos)
            # MySQL 5.5.7-5.5.9 forgot the NUL: the name then runs to the end.
            plugin = _text(payload[pos : end if end >= 0 else len(payload)], "plugin name")
        return cls(
            server_version=_text(raw_version, "server version"),
            connection_id=connection_id,
            auth_data=part1 + part2,
            capabilities=caps,
            character_set=character_set,
            status_flags=status_flags,
            auth_plugin_name=plugin,
            mariadb_capabilities=mariadb_caps,
        )


def _mariadb_filler(capabilities: int, mariadb_capabilities: int) -> bytes:
    if mariadb_capabilities and capabilities & Capability.LONG_PASSWORD:
        raise ValueError("MariaDB capabilities need LONG_PASSWORD (CLIENT_MYSQL) clear")
    return _U32.pack(mariadb_capabilities)


@dataclass(frozen=True, slots=True)
class SslRequest:
    """The 32-byte short handshake response that asks for TLS (Protocol::SSLRequest)."""

    capabilities: int
    max_packet_size: int
    character_set: int
    mariadb_capabilities: int = 0

    def build(self) -> bytes:
        caps = self.capabilities | Capability.SSL
        return (
            _HANDSHAKE_FIXED.pack(caps, self.max_packet_size, self.character_set)
            + _FILLER_19
            + _mariadb_filler(caps, self.mariadb_capabilities)
        )

    @classmethod
    def parse(cls, payload: bytes) -> SslRequest:
        if not is_ssl_request(payload):
            raise ProtocolViolation("not an SSL request")
        caps, max_packet, charset = _HANDSHAKE_FIXED.unpack_from(payload)
        mariadb_caps = 0 if caps & Capability.LONG_PASSWORD else _U32.unpack_from(payload, 28)[0]
        return cls(caps, max_packet, charset, mariadb_caps)


def is_ssl_request(payload: bytes) -> bool:
    return len(payload) == 32 and bool(payload[1] & (Capability.SSL >> 8))


@dataclass(frozen=True, slots=True)
class HandshakeResponse41:
    """The client's login packet (Protocol::HandshakeResponse41).

    Which optional fields are present follows the client's own capabilities.
    `auth_response` can be a cleartext password or a token: it never appears in
    a repr.
    """

    capabilities: int
    max_packet_size: int
    character_set: int
    username: str
    auth_response: bytes
    database: str | None = None
    auth_plugin_name: str | None = None
    connect_attributes: dict[str, str] = field(default_factory=dict)
    mariadb_capabilities: int = 0  # only when LONG_PASSWORD (CLIENT_MYSQL) is clear
    zstd_compression_level: int | None = None  # MySQL 8 with ZSTD_COMPRESSION_ALGORITHM

    def __repr__(self) -> str:
        return (
            f"HandshakeResponse41(capabilities=0x{self.capabilities:08x}, "
            f"username={self.username!r}, auth_response=<{len(self.auth_response)} bytes>, "
            f"database={self.database!r}, auth_plugin_name={self.auth_plugin_name!r}, "
            f"character_set={self.character_set}, connect_attributes={self.connect_attributes!r})"
        )

    def build(self) -> bytes:
        caps = self.capabilities
        if not caps & Capability.PROTOCOL_41:
            raise ValueError("HandshakeResponse41 needs PROTOCOL_41")
        out = bytearray(_HANDSHAKE_FIXED.pack(caps, self.max_packet_size, self.character_set))
        out += _FILLER_19 + _mariadb_filler(caps, self.mariadb_capabilities)
        out += _cstring(self.username, "user name")
        auth = self.auth_response
        if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            out += lenenc_bytes(auth)
        elif caps & Capability.SECURE_CONNECTION:
            if len(auth) > 0xFF:
                raise ValueError(
                    "auth response over 255 bytes needs PLUGIN_AUTH_LENENC_CLIENT_DATA"
                )
            out.append(len(auth))
            out += auth
        else:
            out += _cstring(auth, "auth response")
        if caps & Capability.CONNECT_WITH_DB:
            out += _cstring(self.database or "", "database")
        elif self.database is not None:
            raise ValueError("a database needs CONNECT_WITH_DB")
        if caps & Capability.PLUGIN_AUTH:
            out += _cstring(self.auth_plugin_name or "", "plugin name")
        elif self.auth_plugin_name is not None:
            raise ValueError("a plugin name needs PLUGIN_AUTH")
        if caps & Capability.CONNECT_ATTRS:
            attrs = b"".join(
                lenenc_bytes(key.encode()) + lenenc_bytes(value.encode())
                for key, value in self.connect_attributes.items()
            )
            out += lenenc_bytes(attrs)
        elif self.connect_attributes:
            raise ValueError("connect attributes need CONNECT_ATTRS")
        if self.zstd_compression_level is not None:
            if not caps & Capability.ZSTD_COMPRESSION_ALGORITHM:
                raise ValueError("a zstd level needs ZSTD_COMPRESSION_ALGORITHM")
            out.append(self.zstd_compression_level)
        return bytes(out)

    @classmethod
    def parse(cls, payload: bytes) -> HandshakeResponse41:
        if len(payload) < 33:
            raise ProtocolViolation("handshake response too short")
        caps, max_packet, charset = _HANDSHAKE_FIXED.unpack_from(payload)
        if not caps & Capability.PROTOCOL_41:
            raise ProtocolViolation("pre-4.1 handshake responses are not supported")
        mariadb_caps = 0 if caps & Capability.LONG_PASSWORD else _U32.unpack_from(payload, 28)[0]
        raw_user, pos = read_nul_string(payload, 32)
        auth: bytes | None
        if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            auth, pos = read_lenenc_bytes(payload, pos)
            if auth is None:
                raise ProtocolViolation("NULL auth response")
        elif caps & Capability.SECURE_CONNECTION:
            size, pos = read_uint(payload, pos, 1)
            auth, pos = read_bytes(payload, pos, size)
        else:
            auth, pos = read_nul_string(payload, pos)
        size = len(payload)
        database: str | None = None
        plugin: str | None = None
        attributes: dict[str, str] = {}
        zstd_level: int | None = None
        # Old clients set a flag and end the packet before its field: tolerate that.
        if caps & Capability.CONNECT_WITH_DB and pos < size:
            raw_db, pos = read_nul_string(payload, pos)
            database = _text(raw_db, "database name")
        if caps & Capability.PLUGIN_AUTH and pos < size:
            raw_plugin, pos = read_nul_string(payload, pos)
            plugin = _text(raw_plugin, "plugin name")
        if caps & Capability.CONNECT_ATTRS and pos < size:
            block, pos = read_lenenc_bytes(payload, pos)
            attributes = _parse_attributes(block or b"")
        if caps & Capability.ZSTD_COMPRESSION_ALGORITHM and pos < size:
            zstd_level, pos = read_uint(payload, pos, 1)
        if pos != size:
            raise ProtocolViolation("trailing bytes after the handshake response")
        return cls(
            capabilities=caps,
            max_packet_size=max_packet,
            character_set=charset,
            username=_text(raw_user, "user name"),
            auth_response=auth,
            database=database,
            auth_plugin_name=plugin,
            connect_attributes=attributes,
            mariadb_capabilities=mariadb_caps,
            zstd_compression_level=zstd_level,
        )


def _parse_attributes(block: bytes) -> dict[str, str]:
    attributes: dict[str, str] = {}
    pos = 0
    while pos < len(block):
        key, pos = read_lenenc_bytes(block, pos)
        value, pos = read_lenenc_bytes(block, pos)
        # Informational only (driver name, pid, ...): never fail a login on their bytes.
        attributes[(key or b"").decode(errors="replace")] = (value or b"").decode(errors="replace")
    return attributes


@dataclass(frozen=True, slots=True)
class AuthSwitchRequest:
    """0xFE + plugin name + its data; for the native and sha2 plugins the data is the
    20-byte scramble followed by a NUL (see `scramble`)."""

    plugin_name: str
    auth_data: bytes

    @property
    def scramble(self) -> bytes:
        """`auth_data` without the one trailing NUL servers add."""
        data = self.auth_data
        return data[:-1] if data.endswith(b"\0") else data

    def build(self) -> bytes:
        return (
            bytes((AUTH_SWITCH_HEADER,))
            + _cstring(self.plugin_name, "plugin name")
            + self.auth_data
        )

    @classmethod
    def parse(cls, payload: bytes) -> AuthSwitchRequest:
        _expect_header(payload, AUTH_SWITCH_HEADER, "auth switch request")
        if len(payload) == 1:
            raise ProtocolViolation("old auth switch request (mysql_old_password) not supported")
        name, pos = read_nul_string(payload, 1)
        return cls(_text(name, "plugin name"), payload[pos:])


@dataclass(frozen=True, slots=True)
class AuthMoreData:
    """0x01 + plugin data (caching_sha2's fast-auth result, an RSA public key, ...)."""

    data: bytes

    def build(self) -> bytes:
        return bytes((AUTH_MORE_DATA_HEADER,)) + self.data

    @classmethod
    def parse(cls, payload: bytes) -> AuthMoreData:
        _expect_header(payload, AUTH_MORE_DATA_HEADER, "auth more data")
        return cls(payload[1:])


# --- generic responses


@dataclass(frozen=True, slots=True)
class OkPacket:
    """OK_Packet, with header 0x00, or 0xFE where it ends a result set under DEPRECATE_EOF.

    `info` is the human-readable text ("Rows matched: 1 ..."); `session_state`
    the raw session-state-change block (SESSION_TRACK with SESSION_STATE_CHANGED),
    decoded by `state_changes` and `system_variables`.
    """

    affected_rows: int
    last_insert_id: int
    status_flags: int
    warnings: int
    info: bytes = b""
    header: int = OK_HEADER
    session_state: bytes = b""

    def build(self, capabilities: int) -> bytes:
        out = bytearray((self.header,))
        out += lenenc_int(self.affected_rows) + lenenc_int(self.last_insert_id)
        if capabilities & Capability.PROTOCOL_41:
            out += _U16.pack(self.status_flags) + _U16.pack(self.warnings)
        elif capabilities & Capability.TRANSACTIONS:
            out += _U16.pack(self.status_flags)
        if capabilities & Capability.SESSION_TRACK:
            if self.session_state or self.status_flags & ServerStatus.SESSION_STATE_CHANGED:
                out += lenenc_bytes(self.info) + lenenc_bytes(self.session_state)
            elif self.info:
                out += lenenc_bytes(self.info)
        elif self.info:
            # Documented as string<EOF>; MySQL and MariaDB both send a length prefix.
            out += lenenc_bytes(self.info)
        return bytes(out)

    @classmethod
    def parse(cls, payload: bytes, capabilities: int) -> OkPacket:
        if not payload or payload[0] not in (OK_HEADER, EOF_HEADER):
            raise ProtocolViolation(f"expected an OK packet, got {payload[:1].hex() or 'nothing'}")
        if payload[0] == EOF_HEADER and len(payload) >= 0xFFFFFF:
            raise ProtocolViolation("a 0xFE packet this long is a row, not an OK packet")
        affected, pos = read_lenenc_int(payload, 1)
        last_id, pos = read_lenenc_int(payload, pos)
        if affected is None or last_id is None:
            raise ProtocolViolation("NULL in OK packet")
        status = warnings = 0
        if capabilities & _PROTOCOL_41:
            status, pos = read_uint(payload, pos, 2)
            warnings, pos = read_uint(payload, pos, 2)
        elif capabilities & _TRANSACTIONS:
            status, pos = read_uint(payload, pos, 2)
        info = b""
        state = b""
        size = len(payload)
        if capabilities & _SESSION_TRACK:
            if pos < size:
                raw_info, pos = read_lenenc_bytes(payload, pos)
                info = raw_info or b""
            if status & _SESSION_STATE_CHANGED and pos < size:
                raw_state, pos = read_lenenc_bytes(payload, pos)
                state = raw_state or b""
            if pos != size:
                raise ProtocolViolation("trailing bytes after OK packet fields")
        elif pos < size:
            info = _strip_length_prefix(payload[pos:])
        return cls(affected, last_id, status, warnings, info, payload[0], state)

    def state_changes(self) -> list[tuple[int, bytes]]:
        """The session-state changes as (SessionTrackType, data) pairs."""
        changes: list[tuple[int, bytes]] = []
        pos = 0
        block = self.session_state
        while pos < len(block):
            kind, pos = read_uint(block, pos, 1)
            data, pos = read_lenenc_bytes(block, pos)
            changes.append((kind, data or b""))
        return changes

    def system_variables(self) -> dict[str, str]:
        """Session system variables the server reports as changed (name -> new value)."""
        variables: dict[str, str] = {}
        for kind, data in self.state_changes():
            if kind != SessionTrackType.SYSTEM_VARIABLES:
                continue
            pos = 0
            while pos < len(data):
                name, pos = read_lenenc_bytes(data, pos)
                value, pos = read_lenenc_bytes(data, pos)
                variables[(name or b"").decode(errors="replace")] = (value or b"").decode(
                    errors="replace"
                )
        return variables

    def schema(self) -> str | None:
        """The new default database, when the server reports one."""
        for kind, data in self.state_changes():
            if kind == SessionTrackType.SCHEMA:
                name, _ = read_lenenc_bytes(data, 0)
                return (name or b"").decode(errors="replace")
        return None


@dataclass(frozen=True, slots=True)
class ErrPacket:
    code: int
    sqlstate: str
    message: str

    def build(self, *, protocol_41: bool = True) -> bytes:
        """The payload; without `protocol_41` (errors before the handshake
        response is read) the '#' + SQLSTATE marker is left out."""
        out = bytes((ERR_HEADER,)) + _U16.pack(self.code)
        if protocol_41:
            state = self.sqlstate.encode("ascii")
            if len(state) != 5:
                raise ValueError("a SQLSTATE has 5 characters")
            out += b"#" + state
        return out + self.message.encode()

    @classmethod
    def parse(cls, payload: bytes) -> ErrPacket:
        _expect_header(payload, ERR_HEADER, "an ERR packet")
        code, pos = read_uint(payload, 1, 2)
        sqlstate = "HY000"
        if payload[pos : pos + 1] == b"#":
            state, pos = read_bytes(payload, pos + 1, 5)
            sqlstate = state.decode("ascii", errors="replace")
        # Server messages are in character_set_results; never fail on them.
        return cls(code, sqlstate, payload[pos:].decode(errors="replace"))


def _strip_length_prefix(info: bytes) -> bytes:
    """OK info is string<EOF> in the docs, yet MySQL and MariaDB prefix it with its
    length: drop a prefix that gives exactly the rest's length."""
    try:
        length, start = read_lenenc_int(info, 0)
    except ProtocolViolation:
        return info
    return info[start:] if length is not None and start + length == len(info) else info


def is_progress_report(payload: bytes) -> bool:
    """A MariaDB progress report (0xFF, code 0xFFFF): not an error, more packets follow."""
    return payload[:3] == b"\xff\xff\xff"


@dataclass(frozen=True, slots=True)
class EofPacket:
    warnings: int
    status_flags: int

    def build(self) -> bytes:
        return bytes((EOF_HEADER,)) + _U16.pack(self.warnings) + _U16.pack(self.status_flags)

    @classmethod
    def parse(cls, payload: bytes) -> EofPacket:
        if not is_eof(payload):
            raise ProtocolViolation("expected an EOF packet")
        if len(payload) == 1:  # pre-4.1
            return cls(0, 0)
        warnings, pos = read_uint(payload, 1, 2)
        status, pos = read_uint(payload, pos, 2)
        return cls(warnings, status)


def is_eof(payload: bytes) -> bool:
    return len(payload) < 9 and payload[:1] == b"\xfe"


@dataclass(frozen=True, slots=True)
class LocalInfileRequest:
    """0xFB + file name: the server asks the client to upload a file."""

    filename: bytes

    def build(self) -> bytes:
        return bytes((LOCAL_INFILE_HEADER,)) + self.filename

    @classmethod
    def parse(cls, payload: bytes) -> LocalInfileRequest:
        _expect_header(payload, LOCAL_INFILE_HEADER, "a LOCAL INFILE request")
        return cls(payload[1:])


def is_local_infile_request(payload: bytes) -> bool:
    """True for 0xFB as the first byte of a response's first packet (nowhere else)."""
    return payload[:1] == b"\xfb"


def parse_column_count(payload: bytes) -> int:
    """The column count that opens a result set (any "metadata follows" byte ignored)."""
    count, _ = read_lenenc_int(payload, 0)
    if not count:
        raise ProtocolViolation("invalid column count")
    return count


@dataclass(frozen=True, slots=True)
class ColumnDefinition:
    """Protocol::ColumnDefinition41 (MariaDB's extended type info is skipped)."""

    schema: bytes
    table: bytes
    org_table: bytes
    name: bytes
    org_name: bytes
    character_set: int
    column_length: int
    type: int
    flags: int
    decimals: int
    catalog: bytes = b"def"

    def build(self) -> bytes:
        return (
            b"".join(
                lenenc_bytes(part)
                for part in (
                    self.catalog,
                    self.schema,
                    self.table,
                    self.org_table,
                    self.name,
                    self.org_name,
                )
            )
            + b"\x0c"
            + struct.pack(
                "<HIBHBxx",
                self.character_set,
                self.column_length,
                self.type,
                self.flags,
                self.decimals,
            )
        )

    @classmethod
    def parse(cls, payload: bytes, *, extended_metadata: bool = False) -> ColumnDefinition:
        parts: list[bytes] = []
        pos = 0
        for _ in range(6):
            part, pos = read_lenenc_bytes(payload, pos)
            parts.append(part or b"")
        if extended_metadata:
            _, pos = read_lenenc_bytes(payload, pos)
        fixed, pos = read_lenenc_int(payload, pos)
        if fixed is None or fixed < 0x0C:
            raise ProtocolViolation("invalid column definition")
        fields, _ = read_bytes(payload, pos, 10)
        charset, length, kind, flags, decimals = struct.unpack_from("<HIBHB", fields)
        catalog, schema, table, org_table, name, org_name = parts
        return cls(
            schema,
            table,
            org_table,
            name,
            org_name,
            charset,
            length,
            kind,
            flags,
            decimals,
            catalog,
        )


# --- commands


def command_of(payload: bytes) -> int:
    if not payload:
        raise ProtocolViolation("empty command packet")
    return payload[0]


def query_text(payload: bytes, capabilities: int = 0) -> bytes:
    """The SQL of a COM_QUERY.

    With QUERY_ATTRIBUTES (MySQL 8.0.23+) the attributes come before the SQL
    and are skipped (`parse_query_attributes` decodes them).
    """
    _expect_header(payload, Command.QUERY, "COM_QUERY")
    if not capabilities & Capability.QUERY_ATTRIBUTES:
        return payload[1:]
    _, _, pos = _query_attributes(payload)
    return payload[pos:]


def parse_query_attributes(payload: bytes) -> dict[str, object]:
    """The query attributes of a COM_QUERY sent with QUERY_ATTRIBUTES (name -> value)."""
    _expect_header(payload, Command.QUERY, "COM_QUERY")
    names, values, _ = _query_attributes(payload)
    return dict(zip(names, values, strict=True))


def _query_attributes(payload: bytes) -> tuple[tuple[str, ...], tuple[object, ...], int]:
    count, pos = read_lenenc_int(payload, 1)
    sets, pos = read_lenenc_int(payload, pos)
    if count is None or sets is None:
        raise ProtocolViolation("NULL query attribute count")
    if not count:
        return (), (), pos
    bitmap, pos = read_bytes(payload, pos, (count + 7) // 8)
    bound, pos = read_uint(payload, pos, 1)
    if bound != 1:
        raise ProtocolViolation("query attributes without types")
    types, names, pos = _read_types(payload, pos, count, with_names=True)
    values, pos = _read_values(payload, pos, bitmap, types)
    return names, values, pos


def stmt_id(payload: bytes) -> int:
    """The statement id of a COM_STMT_EXECUTE/FETCH/CLOSE/RESET/SEND_LONG_DATA/BULK_EXECUTE.

    MariaDB accepts 0xFFFFFFFF for "the statement prepared last" (pipelined
    prepare + execute).
    """
    if not payload or payload[0] not in _STMT_COMMANDS:
        raise ProtocolViolation("not a statement command")
    value, _ = read_uint(payload, 1, 4)
    return value


_STMT_COMMANDS = frozenset(
    {
        Command.STMT_EXECUTE,
        Command.STMT_SEND_LONG_DATA,
        Command.STMT_CLOSE,
        Command.STMT_RESET,
        Command.STMT_FETCH,
        Command.STMT_BULK_EXECUTE,
    }
)


def parse_send_long_data(payload: bytes) -> tuple[int, int, bytes]:
    """COM_STMT_SEND_LONG_DATA: (statement id, parameter index, data)."""
    _expect_header(payload, Command.STMT_SEND_LONG_DATA, "COM_STMT_SEND_LONG_DATA")
    statement, pos = read_uint(payload, 1, 4)
    param, pos = read_uint(payload, pos, 2)
    return statement, param, payload[pos:]


def parse_stmt_fetch(payload: bytes) -> tuple[int, int]:
    """COM_STMT_FETCH: (statement id, number of rows)."""
    _expect_header(payload, Command.STMT_FETCH, "COM_STMT_FETCH")
    statement, pos = read_uint(payload, 1, 4)
    rows, pos = read_uint(payload, pos, 4)
    if pos != len(payload):
        raise ProtocolViolation("trailing bytes after COM_STMT_FETCH")
    return statement, rows


@dataclass(frozen=True, slots=True)
class StmtPrepareOk:
    """COM_STMT_PREPARE_OK."""

    statement_id: int
    num_columns: int
    num_params: int
    warnings: int
    metadata_follows: bool = True  # False only with MySQL 8's OPTIONAL_RESULTSET_METADATA

    def build(self) -> bytes:
        out = struct.pack(
            "<BIHHxH",
            OK_HEADER,
            self.statement_id,
            self.num_columns,
            self.num_params,
            self.warnings,
        )
        return out if self.metadata_follows else out + b"\0"

    @classmethod
    def parse(cls, payload: bytes) -> StmtPrepareOk:
        _expect_header(payload, OK_HEADER, "COM_STMT_PREPARE_OK")
        if len(payload) < 12:
            raise ProtocolViolation("COM_STMT_PREPARE_OK too short")
        _, statement, columns, params, warnings = struct.unpack_from("<BIHHxH", payload)
        follows = payload[12] != 0 if len(payload) > 12 else True
        return cls(statement, columns, params, warnings, follows)


@dataclass(frozen=True, slots=True)
class StmtExecute:
    """A decoded COM_STMT_EXECUTE.

    `types` holds 2-byte type codes (`FieldType` | `UNSIGNED_FLAG`); `values`
    the decoded parameters (see `parse_stmt_execute`).
    """

    statement_id: int
    flags: int
    iteration_count: int
    new_params_bound: bool
    types: tuple[int, ...]
    values: tuple[object, ...]
    names: tuple[str, ...] = ()  # MySQL 8 QUERY_ATTRIBUTES only

    @property
    def cursor(self) -> bool:
        return bool(self.flags & 0x07)

    @property
    def ambiguous(self) -> bool:
        """True when a non-NULL parameter has a type that MySQL and MariaDB read
        differently (`AMBIGUOUS_PARAM_TYPES`): the decoded values may then not be
        the ones the server binds. A gateway that records or shows parameter
        values should refuse such an execute."""
        return any(
            (kind & 0xFF) in AMBIGUOUS_PARAM_TYPES and value is not None
            for kind, value in zip(self.types, self.values, strict=False)
        )


def parse_stmt_execute(
    payload: bytes,
    num_params: int,
    previous_types: tuple[int, ...] | None,
    *,
    capabilities: int = 0,
) -> StmtExecute:
    """Decode a COM_STMT_EXECUTE for a statement with `num_params` parameters.

    `previous_types` are the types bound by an earlier execute of the same
    statement, used when this one does not re-bind. Values: NULL -> None;
    integer types -> int (signed or unsigned as flagged); FLOAT/DOUBLE -> float;
    DECIMAL/NEWDECIMAL -> str; text types (VARCHAR, VAR_STRING, STRING, ENUM,
    SET, JSON) -> str when valid UTF-8, else bytes; BLOB types, BIT, GEOMETRY
    and unknown types -> bytes (unknown types are assumed length-encoded);
    DATE/DATETIME/TIMESTAMP -> "YYYY-MM-DD[ HH:MM:SS[.ffffff]]"; TIME ->
    "[-]HH:MM:SS[.ffffff]" with hours beyond 24 for days.

    Parameters whose data came with COM_STMT_SEND_LONG_DATA have no value
    here; this decoder does not know about them and reports a malformed packet.
    The decoding follows MySQL's documented binary format; MariaDB 10.11 reads
    INT24, YEAR, BIT and GEOMETRY parameters differently (see
    `AMBIGUOUS_PARAM_TYPES` and `StmtExecute.ambiguous`). MariaDB is also more
    lenient (it ignores trailing bytes and clamps overlong lengths) where this
    decoder raises ProtocolViolation.
    """
    _expect_header(payload, Command.STMT_EXECUTE, "COM_STMT_EXECUTE")
    statement, pos = read_uint(payload, 1, 4)
    flags, pos = read_uint(payload, pos, 1)
    iterations, pos = read_uint(payload, pos, 4)
    count = num_params
    attributes = bool(capabilities & Capability.QUERY_ATTRIBUTES)
    if attributes and flags & CursorType.PARAMETER_COUNT_AVAILABLE:
        announced, pos = read_lenenc_int(payload, pos)
        if announced is None or announced < num_params:
            raise ProtocolViolation("parameter count below the statement's")
        count = announced
    bound = False
    types: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    values: tuple[object, ...] = ()
    if count:
        bitmap, pos = read_bytes(payload, pos, (count + 7) // 8)
        flag, pos = read_uint(payload, pos, 1)
        bound = flag == 1
        if bound:
            types, names, pos = _read_types(payload, pos, count, with_names=attributes)
        elif flag != 0:
            raise ProtocolViolation("invalid new-params-bound flag")
        elif previous_types is None or len(previous_types) != count:
            raise ProtocolViolation("execute without parameter types, and none bound before")
        else:
            types = previous_types
        values, pos = _read_values(payload, pos, bitmap, types)
    if pos != len(payload):
        raise ProtocolViolation("trailing bytes after COM_STMT_EXECUTE parameters")
    return StmtExecute(statement, flags, iterations, bound, types, values, names)


def _read_types(
    payload: bytes, pos: int, count: int, *, with_names: bool
) -> tuple[tuple[int, ...], tuple[str, ...], int]:
    if not with_names:
        raw, pos = read_bytes(payload, pos, 2 * count)
        return struct.unpack(f"<{count}H", raw), (), pos
    types: list[int] = []
    names: list[str] = []
    for _ in range(count):
        kind, pos = read_uint(payload, pos, 2)
        name, pos = read_lenenc_bytes(payload, pos)
        types.append(kind)
        names.append((name or b"").decode(errors="replace"))
    return tuple(types), tuple(names), pos


def _read_values(
    payload: bytes, pos: int, bitmap: bytes, types: tuple[int, ...], bitmap_offset: int = 0
) -> tuple[tuple[object, ...], int]:
    values: list[object] = []
    for index, kind in enumerate(types):
        bit = index + bitmap_offset
        if bitmap[bit >> 3] & (1 << (bit & 7)):
            values.append(None)
            continue
        value, pos = decode_binary_value(payload, pos, kind)
        values.append(value)
    return tuple(values), pos


_INTS: dict[int, struct.Struct] = {
    FieldType.TINY: struct.Struct("<b"),
    FieldType.SHORT: struct.Struct("<h"),
    FieldType.YEAR: struct.Struct("<h"),
    FieldType.LONG: struct.Struct("<i"),
    FieldType.INT24: struct.Struct("<i"),
    FieldType.LONGLONG: struct.Struct("<q"),
}
_UINTS: dict[int, struct.Struct] = {
    FieldType.TINY: struct.Struct("<B"),
    FieldType.SHORT: struct.Struct("<H"),
    FieldType.YEAR: struct.Struct("<H"),
    FieldType.LONG: struct.Struct("<I"),
    FieldType.INT24: struct.Struct("<I"),
    FieldType.LONGLONG: struct.Struct("<Q"),
}
_FLOATS: dict[int, struct.Struct] = {
    FieldType.FLOAT: struct.Struct("<f"),
    FieldType.DOUBLE: struct.Struct("<d"),
}
#: Parameter types MariaDB 10.11 binds as NULL without reading any bytes, where
#: MySQL documents a value (INT24 as 4 bytes, YEAR as 2, BIT and GEOMETRY as
#: length-encoded strings): every value after such a parameter is then read from
#: a different offset by the server than by this decoder. (Found by replaying
#: executes against MariaDB 10.11; MySQL 8's own reading is not checked here.)
AMBIGUOUS_PARAM_TYPES = frozenset(
    {FieldType.INT24, FieldType.YEAR, FieldType.BIT, FieldType.GEOMETRY}
)
_TEXT_TYPES = frozenset(
    {
        FieldType.VARCHAR,
        FieldType.VAR_STRING,
        FieldType.STRING,
        FieldType.ENUM,
        FieldType.SET,
        FieldType.JSON,
    }
)
_DECIMAL_TYPES = frozenset({FieldType.DECIMAL, FieldType.NEWDECIMAL})
_DATE_TYPES = frozenset(
    {FieldType.DATE, FieldType.DATETIME, FieldType.TIMESTAMP, FieldType.NEWDATE}
)


def decode_binary_value(buf: bytes, pos: int, type_code: int) -> tuple[object, int]:
    """One value of the binary protocol (execute parameters, binary rows): (value, new pos)."""
    base = type_code & 0xFF
    if base == FieldType.NULL:
        return None, pos
    codec = (_UINTS if type_code & UNSIGNED_FLAG else _INTS).get(base) or _FLOATS.get(base)
    if codec is not None:
        end = pos + codec.size
        if end > len(buf):
            raise ProtocolViolation("truncated parameter value")
        return codec.unpack_from(buf, pos)[0], end
    if base in _DATE_TYPES:
        return _read_datetime(buf, pos, date_only=base in (FieldType.DATE, FieldType.NEWDATE))
    if base == FieldType.TIME:
        return _read_time(buf, pos)
    raw, pos = read_lenenc_bytes(buf, pos)
    if raw is None:
        raise ProtocolViolation("NULL marker inside a binary value")
    if base in _DECIMAL_TYPES:
        return raw.decode(errors="replace"), pos
    if base in _TEXT_TYPES:
        try:
            return raw.decode(), pos
        except UnicodeDecodeError:
            return raw, pos
    return raw, pos


def _read_datetime(buf: bytes, pos: int, *, date_only: bool) -> tuple[str, int]:
    size, pos = read_uint(buf, pos, 1)
    if size not in (0, 4, 7, 11):
        raise ProtocolViolation(f"invalid date/time value length {size}")
    raw, pos = read_bytes(buf, pos, size)
    year = month = day = hour = minute = second = micro = 0
    if size >= 4:
        year, month, day = struct.unpack_from("<HBB", raw)
    if size >= 7:
        hour, minute, second = raw[4], raw[5], raw[6]
    if size == 11:
        (micro,) = struct.unpack_from("<I", raw, 7)
    text = f"{year:04d}-{month:02d}-{day:02d}"
    if date_only and not (hour or minute or second or micro):
        return text, pos
    text += f" {hour:02d}:{minute:02d}:{second:02d}"
    return (text + f".{micro:06d}" if micro else text), pos


def _read_time(buf: bytes, pos: int) -> tuple[str, int]:
    size, pos = read_uint(buf, pos, 1)
    if size not in (0, 8, 12):
        raise ProtocolViolation(f"invalid time value length {size}")
    raw, pos = read_bytes(buf, pos, size)
    if not size:
        return "00:00:00", pos
    negative, days, hour, minute, second = struct.unpack_from("<BIBBB", raw)
    micro = struct.unpack_from("<I", raw, 8)[0] if size == 12 else 0
    text = f"{'-' if negative else ''}{days * 24 + hour:02d}:{minute:02d}:{second:02d}"
    return (text + f".{micro:06d}" if micro else text), pos


def parse_binary_row(payload: bytes, column_types: tuple[int, ...]) -> tuple[object, ...]:
    """A binary-protocol result row (0x00 header), given each column's type code
    (`ColumnDefinition.type`, | UNSIGNED_FLAG for unsigned columns)."""
    _expect_header(payload, 0x00, "a binary row")
    bitmap, pos = read_bytes(payload, 1, (len(column_types) + 9) // 8)
    values, pos = _read_values(payload, pos, bitmap, column_types, bitmap_offset=2)
    if pos != len(payload):
        raise ProtocolViolation("trailing bytes after binary row values")
    return values


def parse_text_row(payload: bytes, num_columns: int) -> tuple[bytes | None, ...]:
    """A text-protocol result row: each value as bytes, or None for NULL."""
    values: list[bytes | None] = []
    pos = 0
    for _ in range(num_columns):
        value, pos = read_lenenc_bytes(payload, pos)
        values.append(value)
    if pos != len(payload):
        raise ProtocolViolation("trailing bytes after text row values")
    return tuple(values)


# --- character sets

# Collation ids (what the handshake response's character_set byte and
# SET NAMES ... COLLATE select) -> character set, for every id below 256 in
# MariaDB 10.11 and MySQL 8 (they agree where both define an id).
CHARSET_NAMES: dict[int, str] = {
    **dict.fromkeys((1, 84), "big5"),
    **dict.fromkeys((2, 9, 21, 27, 77), "latin2"),
    **dict.fromkeys((3, 69), "dec8"),
    **dict.fromkeys((4, 80), "cp850"),
    **dict.fromkeys((5, 8, 15, 31, 47, 48, 49, 94), "latin1"),
    **dict.fromkeys((6, 72), "hp8"),
    **dict.fromkeys((7, 74), "koi8r"),
    **dict.fromkeys((10, 82), "swe7"),
    **dict.fromkeys((11, 65), "ascii"),
    **dict.fromkeys((12, 91), "ujis"),
    **dict.fromkeys((13, 88), "sjis"),
    **dict.fromkeys((14, 23, 50, 51, 52), "cp1251"),
    **dict.fromkeys((16, 71), "hebrew"),
    **dict.fromkeys((18, 89), "tis620"),
    **dict.fromkeys((19, 85), "euckr"),
    **dict.fromkeys((20, 41, 42, 79), "latin7"),
    **dict.fromkeys((22, 75), "koi8u"),
    **dict.fromkeys((24, 86), "gb2312"),
    **dict.fromkeys((25, 70), "greek"),
    **dict.fromkeys((26, 34, 44, 66, 99), "cp1250"),
    **dict.fromkeys((28, 87), "gbk"),
    **dict.fromkeys((29, 58, 59), "cp1257"),
    **dict.fromkeys((30, 78), "latin5"),
    **dict.fromkeys((32, 64), "armscii8"),
    **dict.fromkeys((33, 76, 83, *range(192, 216), 223), "utf8mb3"),
    **dict.fromkeys((35, 90, *range(128, 152), 159), "ucs2"),
    **dict.fromkeys((36, 68), "cp866"),
    **dict.fromkeys((37, 73), "keybcs2"),
    **dict.fromkeys((38, 43), "macce"),
    **dict.fromkeys((39, 53), "macroman"),
    **dict.fromkeys((40, 81), "cp852"),
    **dict.fromkeys((45, 46, *range(224, 248), 255), "utf8mb4"),
    **dict.fromkeys((54, 55, *range(101, 125)), "utf16"),
    **dict.fromkeys((56, 62), "utf16le"),
    **dict.fromkeys((57, 67), "cp1256"),
    **dict.fromkeys((60, 61, *range(160, 184)), "utf32"),
    63: "binary",
    **dict.fromkeys((92, 93), "geostd8"),
    **dict.fromkeys((95, 96), "cp932"),
    **dict.fromkeys((97, 98), "eucjpms"),
    **dict.fromkeys((248, 249, 250), "gb18030"),  # MySQL 8 only
}

#: Character sets in which the server lexes quotes and backslashes exactly as
#: the classifier does (no multibyte character can end in 0x5C or 0x27).
