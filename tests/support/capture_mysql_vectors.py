"""Capture MySQL/MariaDB wire-protocol test vectors from a real local MariaDB.

Run ``python -m tests.support.capture_mysql_vectors [OUTDIR]`` (normally
``tests/protocols/mysql/vectors``, the default). It needs a MariaDB at
``AIRLOCK_TEST_MYSQL_HOST``/``_PORT`` (127.0.0.1:3306) where
``AIRLOCK_TEST_MYSQL_USER`` (root) logs in with ``AIRLOCK_TEST_MYSQL_PASSWORD``
(empty) and may create users, and a database ``AIRLOCK_TEST_MYSQL_DATABASE``
(test). It creates and drops a throwaway user and a stored procedure; every
table it uses is temporary.

Three sources of bytes:

- Raw sessions: the client side is built by hand with ``struct`` (no driver, and
  not the codec under test, except ``protocols.mysql.auth.native_password``,
  whose result the server itself must accept), and every byte the server sends
  back is kept. Each command's response is read until the server is quiet, so
  the capture does not depend on knowing where a response ends. They run twice,
  with and without CLIENT_DEPRECATE_EOF, plus once with MariaDB's metadata cache.
- Real drivers through a recording TCP forwarder: PyMySQL and the mariadb CLI.
- Real drivers against a tiny fake server (in this file) that replays a real
  greeting with CLIENT_SSL added, or asks for mysql_clear_password, to record
  the SSLRequest and cleartext-password packets the real server here cannot
  make them send (it has no TLS and no cleartext plugin).

Each vector is ``<name>.json``: the negotiated capabilities and a list of
exchanges, each with the client bytes sent, the server bytes received (hex, in
64-character lines) and ``expect``: what the exchange must decode to, stated
from the SQL (row counts, values, error codes) or read by the server itself
(connection id, version), never from the codec under test. ``README.md``
describes the format.

Spec: https://mariadb.com/docs/server/reference/clientserver-protocol
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import os
import select
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.mysql.auth import native_password

_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTDIR = _REPO_ROOT / "tests" / "protocols" / "mysql" / "vectors"

HOST = os.environ.get("AIRLOCK_TEST_MYSQL_HOST", "127.0.0.1")
PORT = int(os.environ.get("AIRLOCK_TEST_MYSQL_PORT", "3306"))
ADMIN_USER = os.environ.get("AIRLOCK_TEST_MYSQL_USER", "root")
ADMIN_PASSWORD = os.environ.get("AIRLOCK_TEST_MYSQL_PASSWORD", "")
DATABASE = os.environ.get("AIRLOCK_TEST_MYSQL_DATABASE", "test")

# The throwaway user; its password is in the vectors on purpose (tests recompute
# the scrambles). It exists only while the capture runs.
VECTOR_USER = "airlock_vectors"
VECTOR_PASSWORD = "vector-secret"
PROCEDURE = "airlock_vectors_two_results"

_QUIET_S = 0.25
_TIMEOUT_S = 10.0
_HEX_LINE = 64

# Capability flags, spelled out here so the capture does not use the codec's.
LONG_PASSWORD = 1
LONG_FLAG = 1 << 2
CONNECT_WITH_DB = 1 << 3
LOCAL_FILES = 1 << 7
PROTOCOL_41 = 1 << 9
SSL_FLAG = 1 << 11
TRANSACTIONS = 1 << 13
SECURE_CONNECTION = 1 << 15
MULTI_STATEMENTS = 1 << 16
MULTI_RESULTS = 1 << 17
PS_MULTI_RESULTS = 1 << 18
PLUGIN_AUTH = 1 << 19
CONNECT_ATTRS = 1 << 20
PLUGIN_AUTH_LENENC = 1 << 21
SESSION_TRACK = 1 << 23
DEPRECATE_EOF = 1 << 24
MARIADB_CACHE_METADATA = 1 << 4  # in MariaDB's extended capabilities

BASE_CAPS = (
    LONG_PASSWORD
    | LONG_FLAG
    | CONNECT_WITH_DB
    | LOCAL_FILES
    | PROTOCOL_41
    | TRANSACTIONS
    | SECURE_CONNECTION
    | MULTI_STATEMENTS
    | MULTI_RESULTS
    | PS_MULTI_RESULTS
    | PLUGIN_AUTH
)

COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_FIELD_LIST = 0x04
COM_STATISTICS = 0x09
COM_PROCESS_INFO = 0x0A
COM_PING = 0x0E
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_SEND_LONG_DATA = 0x18
COM_STMT_CLOSE = 0x19
COM_STMT_RESET = 0x1A
COM_SET_OPTION = 0x1B
COM_STMT_FETCH = 0x1C
COM_RESET_CONNECTION = 0x1F

# Parameter types of the binary protocol.
T_DECIMAL = 0xF6
T_TINY = 0x01
T_SHORT = 0x02
T_LONG = 0x03
T_FLOAT = 0x04
T_DOUBLE = 0x05
T_NULL = 0x06
T_LONGLONG = 0x08
T_DATE = 0x0A
T_TIME = 0x0B
T_DATETIME = 0x0C
T_YEAR = 0x0D
T_BLOB = 0xFC
T_VAR_STRING = 0xFD
UNSIGNED = 0x8000

_HEADER = struct.Struct("<I")


class CaptureError(RuntimeError):
    """The server or a driver did not behave as the capture expects."""


# --------------------------------------------------------------------------
# Packets, built and split by hand.


def packet(payload: bytes, seq: int) -> bytes:
    if len(payload) >= 0xFFFFFF:
        raise CaptureError("the capture never sends 16 MB packets")
    return _HEADER.pack(len(payload) | seq << 24) + payload


def split(raw: bytes) -> list[tuple[int, bytes]]:
    """(sequence id, payload) of each packet; the capture never sees 16 MB ones."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(raw):
        if len(raw) - pos < 4:
            raise CaptureError(f"truncated header at {pos}")
        (header,) = _HEADER.unpack_from(raw, pos)
        length = header & 0xFFFFFF
        if length == 0xFFFFFF or pos + 4 + length > len(raw):
            raise CaptureError(f"unexpected packet length {length} at {pos}")
        out.append((header >> 24, raw[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def lenenc(n: int) -> bytes:
    if n < 251:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n)
    return b"\xfd" + n.to_bytes(3, "little")


def lenenc_str(raw: bytes) -> bytes:
    return lenenc(len(raw)) + raw


def handshake_response(
    caps: int,
    user: str,
    auth: bytes,
    *,
    database: str | None = DATABASE,
    plugin: str = "mysql_native_password",
    charset: int = 45,
    attrs: dict[str, str] | None = None,
    mariadb_caps: int = 0,
) -> bytes:
    body = struct.pack("<IIB", caps, 16 * 1024 * 1024, charset) + bytes(19)
    body += struct.pack("<I", mariadb_caps)
    body += user.encode() + b"\0"
    if caps & PLUGIN_AUTH_LENENC:
        body += lenenc_str(auth)
    else:
        body += bytes((len(auth),)) + auth
    if caps & CONNECT_WITH_DB:
        body += (database or "").encode() + b"\0"
    if caps & PLUGIN_AUTH:
        body += plugin.encode() + b"\0"
    if caps & CONNECT_ATTRS:
        pairs = b"".join(
            lenenc_str(k.encode()) + lenenc_str(v.encode()) for k, v in (attrs or {}).items()
        )
        body += lenenc_str(pairs)
    return body


@dataclass
class Greeting:
    raw_payload: bytes
    version: str
    connection_id: int
    scramble: bytes
    capabilities: int
    caps_offset: int  # where the low capability bytes are, to patch them


def parse_greeting(payload: bytes) -> Greeting:
    """Just enough of HandshakeV10 to log in, done independently of the codec."""
    if payload[0] != 10:
        raise CaptureError(f"not a v10 greeting: {payload[:40]!r}")
    end = payload.index(b"\0", 1)
    version = payload[1:end].decode()
    pos = end + 1
    (connection_id,) = struct.unpack_from("<I", payload, pos)
    part1 = payload[pos + 4 : pos + 12]
    caps_offset = pos + 13
    (low,) = struct.unpack_from("<H", payload, caps_offset)
    (high,) = struct.unpack_from("<H", payload, caps_offset + 5)
    scramble_len = payload[caps_offset + 7]
    part2_at = caps_offset + 8 + 10
    part2 = payload[part2_at : part2_at + max(13, scramble_len - 8) - 1]
    return Greeting(payload, version, connection_id, part1 + part2, low | high << 16, caps_offset)


def ok_fields(payload: bytes) -> tuple[int, int, int]:
    """(affected rows, last insert id, status) of an OK packet with small numbers."""
    if payload[0] not in (0x00, 0xFE) or payload[1] >= 251 or payload[2] >= 251:
        raise CaptureError(f"not a small OK packet: {payload!r}")
    (status,) = struct.unpack_from("<H", payload, 3)
    return payload[1], payload[2], status


# --------------------------------------------------------------------------
# Recording.


def hex_lines(raw: bytes) -> list[str]:
    text = raw.hex()
    return [text[i : i + _HEX_LINE] for i in range(0, len(text), _HEX_LINE)]


def encode_value(value: object) -> object:
    """JSON form of an expected value: bytes become {"bytes": hex}."""
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, list | tuple):
        return [encode_value(item) for item in value]
    if isinstance(value, dict):
        return {key: encode_value(item) for key, item in value.items()}
    return value


@dataclass
class Exchange:
    name: str
    client: bytes
    server: bytes
    expect: dict[str, Any]
    command: int | None = None
    note: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "note": self.note,
            "command": self.command,
            "client": hex_lines(self.client),
            "server": hex_lines(self.server),
            "server_sequence_ids": [seq for seq, _ in split(self.server)],
            "expect": encode_value(self.expect),
        }


@dataclass
class Vector:
    name: str
    description: str
    source: str
    client_capabilities: int = 0
    server_capabilities: int = 0
    mariadb_capabilities: int = 0
    exchanges: list[Exchange] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "client_capabilities": self.client_capabilities,
            "server_capabilities": self.server_capabilities,
            # What both sides use: the client's flags that the server also has.
            "capabilities": self.client_capabilities & self.server_capabilities,
            "mariadb_capabilities": self.mariadb_capabilities,
            "exchanges": [exchange.to_json() for exchange in self.exchanges],
        }


# --------------------------------------------------------------------------
# A raw connection.


class RawConnection:
    def __init__(self, host: str = HOST, port: int = PORT) -> None:
        self.sock = socket.create_connection((host, port), timeout=_TIMEOUT_S)
        self.greeting_raw = self._read_one_packet()
        self.greeting = parse_greeting(split(self.greeting_raw)[0][1])

    def close(self) -> None:
        self.sock.close()

    def _read_one_packet(self) -> bytes:
        data = b""
        while len(data) < 4 or len(data) < 4 + (_HEADER.unpack_from(data)[0] & 0xFFFFFF):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CaptureError("server closed the connection")
            data += chunk
        return data

    def read_quiet(self, *, expect_reply: bool = True) -> bytes:
        """Everything the server sends until it has been quiet for a moment."""
        chunks: list[bytes] = []
        deadline = time.monotonic() + _TIMEOUT_S
        while True:
            wait = _QUIET_S if chunks or not expect_reply else deadline - time.monotonic()
            if wait <= 0:
                raise CaptureError("no reply from the server")
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                return b"".join(chunks)
            chunk = self.sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def exchange(self, client: bytes, *, expect_reply: bool = True) -> bytes:
        self.sock.sendall(client)
        return self.read_quiet(expect_reply=expect_reply)


class Session:
    """A raw connection whose every exchange is recorded into a vector."""

    def __init__(
        self,
        vector: Vector,
        caps: int,
        *,
        mariadb_caps: int = 0,
        user: str = ADMIN_USER,
        password: str = ADMIN_PASSWORD,
    ) -> None:
        self.vector = vector
        self.conn = RawConnection()
        self.caps = caps
        greeting = self.conn.greeting
        vector.client_capabilities = caps
        vector.server_capabilities = greeting.capabilities
        vector.mariadb_capabilities = mariadb_caps
        vector.exchanges.append(
            Exchange(
                "greeting",
                b"",
                self.conn.greeting_raw,
                {"greeting": {"connection_id": None, "version": None}},
                note="HandshakeV10; connection_id and version are filled in from SQL",
            )
        )
        auth = native_password(password.encode(), greeting.scramble)
        response = handshake_response(caps, user, auth, mariadb_caps=mariadb_caps)
        server = self.conn.exchange(packet(response, 1))
        if split(server)[0][1][:1] != b"\x00":
            raise CaptureError(f"login failed: {server!r}")
        vector.exchanges.append(
            Exchange(
                "login",
                packet(response, 1),
                server,
                {"login": {"result": "ok", "username": user, "password": password}},
            )
        )
        # The server's own word on what the greeting said.
        version, connection_id = self.scalar_row("SELECT VERSION(), CONNECTION_ID()")
        vector.exchanges[0].expect["greeting"] = {
            "version": version,
            "connection_id": int(connection_id),
        }

    def scalar_row(self, sql: str) -> list[str]:
        """Run a query off the record and return its single text row."""
        packets = split(self.conn.exchange(packet(bytes((COM_QUERY,)) + sql.encode(), 0)))
        count = packets[0][1][0]
        skip = 1 + count + (0 if self.caps & DEPRECATE_EOF else 1)
        row = packets[skip][1]
        values: list[str] = []
        pos = 0
        for _ in range(count):
            size = row[pos]
            values.append(row[pos + 1 : pos + 1 + size].decode())
            pos += 1 + size
        return values

    def command(
        self,
        name: str,
        payload: bytes,
        expect: dict[str, Any],
        *,
        seq: int = 0,
        reply: bool = True,
        note: str = "",
    ) -> list[bytes]:
        server = self.conn.exchange(packet(payload, seq), expect_reply=reply)
        packets = [body for _, body in split(server)]
        check(name, packets, expect)
        command = payload[0] if payload else None
        self.vector.exchanges.append(
            Exchange(name, packet(payload, seq), server, expect, command, note)
        )
        return packets

    def query(self, name: str, sql: str, expect: dict[str, Any], note: str = "") -> list[bytes]:
        expect = {"client": {"query": sql}, **expect}
        return self.command(name, bytes((COM_QUERY,)) + sql.encode(), expect, note=note)

    def close(self) -> None:
        self.command("quit", bytes((COM_QUIT,)), {"response": {"kind": "none"}}, reply=False)
        self.conn.close()


def check(name: str, packets: list[bytes], expect: dict[str, Any]) -> None:
    """Sanity checks at capture time, on the first packet only (no codec involved)."""
    response = expect.get("response", {})
    kind = response.get("kind")
    first = packets[0] if packets else b""
    if kind == "none":
        if packets:
            raise CaptureError(f"{name}: expected no reply, got {packets!r}")
        return
    if not packets:
        raise CaptureError(f"{name}: no reply")
    if kind == "error":
        if first[:1] != b"\xff" and not response.get("after_rows"):
            raise CaptureError(f"{name}: expected ERR, got {first!r}")
        last = packets[-1]
        code = struct.unpack_from("<H", last, 1)[0]
        if last[:1] != b"\xff" or code != response["code"]:
            raise CaptureError(f"{name}: expected error {response['code']}, got {last!r}")
    elif kind == "ok":
        affected, last_id, _ = ok_fields(first)
        if (affected, last_id) != (response["affected_rows"], response["last_insert_id"]):
            raise CaptureError(f"{name}: OK says {affected}, {last_id}: {first!r}")
    elif kind in ("result", "cursor") and first[:1] in (b"\x00", b"\xff", b"\xfb"):
        raise CaptureError(f"{name}: expected a result set, got {first!r}")
    elif kind == "local_infile" and first[:1] != b"\xfb":
        raise CaptureError(f"{name}: expected a LOCAL INFILE request, got {first!r}")
    elif kind == "prepare" and first[:1] != b"\x00":
        raise CaptureError(f"{name}: expected PREPARE_OK, got {first!r}")


# --------------------------------------------------------------------------
# Binary protocol parameters, encoded by hand.


@dataclass(frozen=True)
class Param:
    type_code: int
    wire: bytes | None  # None: NULL through the null bitmap
    value: object  # what the codec should decode the parameter to


def p_int(type_code: int, fmt: str, value: int) -> Param:
    return Param(type_code, struct.pack(fmt, value), value)


def p_lenenc(type_code: int, raw: bytes, value: object) -> Param:
    return Param(type_code, lenenc_str(raw), value)


ECHO_PARAMS = [
    p_int(T_LONGLONG, "<q", 42),
    p_int(T_TINY, "<b", -7),
    p_int(T_LONGLONG | UNSIGNED, "<Q", 2**64 - 1),
    p_int(T_SHORT, "<h", 1234),
    p_int(T_LONG, "<i", -100000),
    Param(T_DOUBLE, struct.pack("<d", 3.5), 3.5),
    Param(T_FLOAT, struct.pack("<f", 1.25), 1.25),
    p_lenenc(T_VAR_STRING, "héllo wörld".encode(), "héllo wörld"),
    p_lenenc(T_BLOB, b"\xff\x00\x01", b"\xff\x00\x01"),
    Param(T_NULL, None, None),
    Param(T_VAR_STRING, None, None),
    Param(T_DATE, bytes((4,)) + struct.pack("<HBB", 2024, 2, 29), "2024-02-29"),
    Param(
        T_DATETIME,
        bytes((11,)) + struct.pack("<HBBBBBI", 2024, 2, 29, 13, 14, 15, 123456),
        "2024-02-29 13:14:15.123456",
    ),
    Param(T_TIME, bytes((8,)) + struct.pack("<BIBBB", 1, 1, 1, 30, 0), "-25:30:00"),
    p_lenenc(T_DECIMAL, b"12.345", "12.345"),
]


def stmt_execute(
    statement_id: int, params: Sequence[Param], *, flags: int = 0, bind: bool = True
) -> bytes:
    body = bytes((COM_STMT_EXECUTE,)) + struct.pack("<IBI", statement_id, flags, 1)
    if params:
        bitmap = bytearray((len(params) + 7) // 8)
        for index, param in enumerate(params):
            if param.wire is None:
                bitmap[index // 8] |= 1 << (index % 8)
        body += bytes(bitmap) + (b"\x01" if bind else b"\x00")
        if bind:
            body += b"".join(struct.pack("<H", param.type_code) for param in params)
        body += b"".join(param.wire or b"" for param in params)
    return body


def statement_id_of(packets: list[bytes]) -> int:
    return int(struct.unpack_from("<I", packets[0], 1)[0])


def stmt_command(command: int, statement_id: int, extra: bytes = b"") -> bytes:
    return bytes((command,)) + struct.pack("<I", statement_id) + extra


def execute_expect(statement_id: int, params: Sequence[Param], bind: bool = True) -> dict[str, Any]:
    return {
        "statement_id": statement_id,
        "num_params": len(params),
        "new_params_bound": bind,
        "types": [param.type_code for param in params],
        "values": [param.value for param in params],
    }


# --------------------------------------------------------------------------
# The raw-session script.


def command_phase(session: Session, label: str) -> None:
    q = session.query
    q(
        "select_rows",
        "SELECT seq, CONCAT('row ', seq) AS label, IF(seq = 2, NULL, seq * 1.5) AS x "
        "FROM seq_1_to_3",
        {
            "response": {
                "kind": "result",
                "result_sets": 1,
                "rows": 3,
                "text_rows": [["1", "row 1", "1.5"], ["2", "row 2", None], ["3", "row 3", "4.5"]],
            }
        },
    )
    q(
        "select_empty",
        "SELECT seq FROM seq_1_to_3 WHERE seq > 5",
        {"response": {"kind": "result", "result_sets": 1, "rows": 0}},
    )
    q(
        "select_warning",
        "SELECT 1/0 AS x",
        {"response": {"kind": "result", "result_sets": 1, "rows": 1, "warnings": 1}},
    )
    q(
        "create_temporary_table",
        "CREATE TEMPORARY TABLE airlock_t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20))",
        {"response": {"kind": "ok", "affected_rows": 0, "last_insert_id": 0}},
    )
    q(
        "insert",
        "INSERT INTO airlock_t (v) VALUES ('a'), ('b'), ('c')",
        {
            "response": {
                "kind": "ok",
                "affected_rows": 3,
                "last_insert_id": 1,
                "info": "Records: 3  Duplicates: 0  Warnings: 0",
            }
        },
    )
    q(
        "update",
        "UPDATE airlock_t SET v = CONCAT(v, '!') WHERE id > 1",
        {
            "response": {
                "kind": "ok",
                "affected_rows": 2,
                "last_insert_id": 0,
                "info": "Rows matched: 2  Changed: 2  Warnings: 0",
            }
        },
    )
    q(
        "error_no_table",
        "SELECT * FROM airlock_no_such_table",
        {"response": {"kind": "error", "code": 1146, "sqlstate": "42S02"}},
    )
    q(
        "error_syntax",
        "SELEC 1",
        {"response": {"kind": "error", "code": 1064, "sqlstate": "42000"}},
    )
    q(
        "error_after_rows",
        "SELECT seq, EXP(IF(seq = 3, 1000, 1)) AS e FROM seq_1_to_5",
        {"response": {"kind": "error", "code": 1690, "sqlstate": "22003", "after_rows": True}},
        note="the error comes after the rows produced before it",
    )
    q(
        "multi_statement",
        "SELECT 1 AS a; INSERT INTO airlock_t (v) VALUES ('d');"
        " SELECT v FROM airlock_t ORDER BY id",
        {
            "response": {
                "kind": "result",
                "result_sets": 2,
                "rows": 5,
                "affected_rows": 1,
                "text_rows": [["1"], ["a"], ["b!"], ["c!"], ["d"]],
            }
        },
        note="three results flagged MORE_RESULTS_EXISTS but the last",
    )
    q(
        "multi_statement_error",
        "SELECT 1 AS a; SELECT * FROM airlock_no_such_table; SELECT 2 AS b",
        {
            "response": {
                "kind": "error",
                "code": 1146,
                "sqlstate": "42S02",
                "after_rows": True,
                "result_sets": 1,
                "rows": 1,
            }
        },
    )
    q(
        "call_two_results",
        f"CALL {PROCEDURE}()",
        {
            "response": {
                "kind": "result",
                "result_sets": 2,
                "rows": 3,
                "text_rows": [["1"], ["1", "2"], ["2", "4"]],
            }
        },
        note="two result sets, then the CALL's own OK",
    )
    # LOCAL INFILE: the server asks for the file; the client sends an empty packet.
    infile = "/nonexistent/airlock-vectors.csv"
    q(
        "local_infile_request",
        f"LOAD DATA LOCAL INFILE '{infile}' INTO TABLE airlock_t (v)",
        {"response": {"kind": "local_infile", "filename": infile}},
    )
    session.command(
        "local_infile_empty_reply",
        b"",
        {
            "response": {
                "kind": "ok",
                "affected_rows": 0,
                "last_insert_id": 0,
                "after_local_infile": True,
            }
        },
        seq=2,
        note="the client's empty packet (no file), then the server's OK",
    )
    session.command(
        "field_list",
        bytes((COM_FIELD_LIST,)) + b"airlock_t\0",
        {"response": {"kind": "fields", "columns": 2}},
    )
    session.command(
        "field_list_error",
        bytes((COM_FIELD_LIST,)) + b"airlock_no_such_table\0",
        {"response": {"kind": "error", "code": 1146, "sqlstate": "42S02"}},
    )
    session.command("statistics", bytes((COM_STATISTICS,)), {"response": {"kind": "statistics"}})
    session.command(
        "ping",
        bytes((COM_PING,)),
        {"response": {"kind": "ok", "affected_rows": 0, "last_insert_id": 0}},
    )
    session.command(
        "init_db",
        bytes((COM_INIT_DB,)) + DATABASE.encode(),
        {
            "response": {
                "kind": "ok",
                "affected_rows": 0,
                "last_insert_id": 0,
                **({"schema": DATABASE} if label == "track" else {}),
            }
        },
    )
    session.command(
        "init_db_error",
        bytes((COM_INIT_DB,)) + b"airlock_no_such_db",
        {"response": {"kind": "error", "code": 1044, "sqlstate": "42000"}},
    )
    session.command(
        "set_option_multi_off",
        bytes((COM_SET_OPTION,)) + struct.pack("<H", 1),
        {"response": {"kind": "eof"}},
    )
    q(
        "multi_statement_refused",
        "SELECT 1; SELECT 2",
        {"response": {"kind": "error", "code": 1064, "sqlstate": "42000"}},
    )
    session.command(
        "set_option_multi_on",
        bytes((COM_SET_OPTION,)) + struct.pack("<H", 0),
        {"response": {"kind": "eof"}},
    )
    session.command(
        "process_info",
        bytes((COM_PROCESS_INFO,)),
        {"response": {"kind": "result", "result_sets": 1}},
        note="the row count depends on the other sessions",
    )

    # Prepared statements.
    packets = session.command(
        "prepare_echo",
        bytes((COM_STMT_PREPARE,)) + ("SELECT " + ", ".join("?" * len(ECHO_PARAMS))).encode(),
        {"response": {"kind": "prepare", "num_params": len(ECHO_PARAMS), "num_columns": None}},
    )
    echo_id = statement_id_of(packets)
    session.vector.exchanges[-1].expect["response"].update(
        statement_id=echo_id, num_columns=len(ECHO_PARAMS)
    )
    session.command(
        "execute_echo",
        stmt_execute(echo_id, ECHO_PARAMS),
        {
            "client": {"stmt_execute": execute_expect(echo_id, ECHO_PARAMS)},
            "response": {
                "kind": "result",
                "result_sets": 1,
                "rows": 1,
                "binary_rows": [[param.value for param in ECHO_PARAMS]],
            },
        },
        note="every parameter comes back as a column of one binary row",
    )
    packets = session.command(
        "prepare_pair",
        b"\x16SELECT ? AS n, ? AS s",
        {"response": {"kind": "prepare", "num_params": 2, "num_columns": 2}},
    )
    pair_id = statement_id_of(packets)
    session.vector.exchanges[-1].expect["response"]["statement_id"] = pair_id
    first = [p_int(T_LONGLONG, "<q", 1), p_lenenc(T_VAR_STRING, b"one", "one")]
    again = [p_int(T_LONGLONG, "<q", -2), p_lenenc(T_VAR_STRING, b"two", "two")]
    session.command(
        "execute_pair_bound",
        stmt_execute(pair_id, first),
        {
            "client": {"stmt_execute": execute_expect(pair_id, first)},
            "response": {
                "kind": "result",
                "result_sets": 1,
                "rows": 1,
                "binary_rows": [[1, "one"]],
            },
        },
    )
    session.command(
        "execute_pair_not_rebound",
        stmt_execute(pair_id, again, bind=False),
        {
            "client": {"stmt_execute": execute_expect(pair_id, again, bind=False)},
            "response": {
                "kind": "result",
                "result_sets": 1,
                "rows": 1,
                "binary_rows": [[-2, "two"]],
            },
        },
        note="new_params_bound = 0: the types of the previous execute apply",
    )
    quirk = [p_int(T_YEAR, "<h", 2024), p_lenenc(T_VAR_STRING, b"x", "x")]
    session.command(
        "execute_year_parameter",
        stmt_execute(pair_id, quirk),
        {
            "client": {"stmt_execute": {**execute_expect(pair_id, quirk), "ambiguous": True}},
            "response": {
                "kind": "result",
                "result_sets": 1,
                "rows": 1,
                "binary_rows": [[None, ""]],
            },
        },
        note="MariaDB binds a YEAR parameter as NULL without reading its 2 bytes, then reads"
        " the string from them: it echoes NULL and '', not 2024 and 'x'",
    )
    packets = session.command(
        "prepare_insert",
        b"\x16INSERT INTO airlock_t (v) VALUES (?)",
        {"response": {"kind": "prepare", "num_params": 1, "num_columns": 0}},
    )
    insert_id = statement_id_of(packets)
    session.vector.exchanges[-1].expect["response"]["statement_id"] = insert_id
    value = [p_lenenc(T_VAR_STRING, b"e", "e")]
    session.command(
        "execute_insert",
        stmt_execute(insert_id, value),
        {
            "client": {"stmt_execute": execute_expect(insert_id, value)},
            "response": {"kind": "ok", "affected_rows": 1, "last_insert_id": 5},
        },
    )
    session.command(
        "send_long_data",
        stmt_command(COM_STMT_SEND_LONG_DATA, insert_id, struct.pack("<H", 0) + b"long data"),
        {
            "client": {
                "send_long_data": {"statement_id": insert_id, "param": 0, "data": b"long data"}
            },
            "response": {"kind": "none"},
        },
        reply=False,
    )
    session.command(
        "stmt_reset",
        stmt_command(COM_STMT_RESET, insert_id),
        {"response": {"kind": "ok", "affected_rows": 0, "last_insert_id": 0}},
    )
    packets = session.command(
        "prepare_no_params",
        b"\x16SELECT 1 AS one",
        {"response": {"kind": "prepare", "num_params": 0, "num_columns": 1}},
    )
    one_id = statement_id_of(packets)
    session.vector.exchanges[-1].expect["response"]["statement_id"] = one_id
    session.command(
        "execute_no_params",
        stmt_execute(one_id, []),
        {
            "client": {"stmt_execute": execute_expect(one_id, [], bind=False)},
            "response": {"kind": "result", "result_sets": 1, "rows": 1, "binary_rows": [[1]]},
        },
    )
    packets = session.command(
        "prepare_cursor",
        b"\x16SELECT seq FROM seq_1_to_5",
        {"response": {"kind": "prepare", "num_params": 0, "num_columns": 1}},
    )
    cursor_id = statement_id_of(packets)
    session.vector.exchanges[-1].expect["response"]["statement_id"] = cursor_id
    session.command(
        "execute_cursor",
        stmt_execute(cursor_id, [], flags=0x01),
        {"response": {"kind": "cursor", "result_sets": 1, "rows": 0}},
        note="CURSOR_TYPE_READ_ONLY: metadata, then EOF/OK with CURSOR_EXISTS, no rows",
    )
    session.command(
        "fetch_two",
        stmt_command(COM_STMT_FETCH, cursor_id, struct.pack("<I", 2)),
        {
            "client": {"fetch": {"statement_id": cursor_id, "rows": 2}},
            "response": {"kind": "fetch", "rows": 2, "status_has": ["CURSOR_EXISTS"]},
        },
    )
    session.command(
        "fetch_rest",
        stmt_command(COM_STMT_FETCH, cursor_id, struct.pack("<I", 10)),
        {
            "client": {"fetch": {"statement_id": cursor_id, "rows": 10}},
            "response": {"kind": "fetch", "rows": 3, "status_has": ["LAST_ROW_SENT"]},
        },
    )
    packets = session.command(
        "prepare_call",
        f"\x16CALL {PROCEDURE}()".encode(),
        {"response": {"kind": "prepare", "num_params": 0, "num_columns": 0}},
    )
    call_id = statement_id_of(packets)
    session.vector.exchanges[-1].expect["response"]["statement_id"] = call_id
    session.command(
        "execute_call",
        stmt_execute(call_id, []),
        {
            "response": {
                "kind": "result",
                "result_sets": 2,
                "rows": 3,
                "binary_rows": [[1], [1, 2], [2, 4]],
            }
        },
        note="binary result sets of a procedure, then its OK (PS_MULTI_RESULTS)",
    )
    session.command(
        "stmt_close",
        stmt_command(COM_STMT_CLOSE, pair_id),
        {"client": {"statement_id": pair_id}, "response": {"kind": "none"}},
        reply=False,
    )
    session.command(
        "execute_closed",
        stmt_execute(pair_id, first),
        {"response": {"kind": "error", "code": 1243, "sqlstate": "HY000"}},
    )
    session.command(
        "prepare_error",
        b"\x16SELEC ?",
        {"response": {"kind": "error", "code": 1064, "sqlstate": "42000"}},
    )
    q(
        "set_names_latin1",
        "SET NAMES latin1",
        {
            "response": {
                "kind": "ok",
                "affected_rows": 0,
                "last_insert_id": 0,
                **(
                    {"system_variables": {"character_set_client": "latin1"}}
                    if label == "track"
                    else {}
                ),
            }
        },
    )
    q(
        "ansi_quotes",
        "SET SESSION sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'",
        {
            "response": {
                "kind": "ok",
                "affected_rows": 0,
                "last_insert_id": 0,
                "status_has": ["ANSI_QUOTES", "NO_BACKSLASH_ESCAPES"],
            }
        },
        note="MariaDB reports both sql_mode lexing flags in the status",
    )
    session.command(
        "reset_connection",
        bytes((COM_RESET_CONNECTION,)),
        {
            "response": {
                "kind": "ok",
                "affected_rows": 0,
                "last_insert_id": 0,
                "status_lacks": ["ANSI_QUOTES", "NO_BACKSLASH_ESCAPES"],
            }
        },
    )


def metadata_cache_phase(session: Session) -> None:
    packets = session.command(
        "prepare",
        b"\x16SELECT seq, seq * 2 AS twice FROM seq_1_to_3",
        {"response": {"kind": "prepare", "num_params": 0, "num_columns": 2}},
    )
    statement = statement_id_of(packets)
    session.vector.exchanges[-1].expect["response"]["statement_id"] = statement
    rows = [[1, 2], [2, 4], [3, 6]]
    for name in ("execute_metadata_cached", "execute_metadata_cached_again"):
        session.command(
            name,
            stmt_execute(statement, []),
            {"response": {"kind": "result", "result_sets": 1, "rows": 3, "binary_rows": rows}},
            note="the prepare's metadata still holds: flag 0 and no column definitions",
        )
    session.query(
        "create_temporary_table",
        "CREATE TEMPORARY TABLE airlock_m (a INT)",
        {"response": {"kind": "ok", "affected_rows": 0, "last_insert_id": 0}},
    )
    session.query(
        "insert",
        "INSERT INTO airlock_m VALUES (7)",
        {"response": {"kind": "ok", "affected_rows": 1, "last_insert_id": 0}},
    )
    packets = session.command(
        "prepare_table",
        b"\x16SELECT * FROM airlock_m",
        {"response": {"kind": "prepare", "num_params": 0, "num_columns": 1}},
    )
    statement = statement_id_of(packets)
    session.vector.exchanges[-1].expect["response"]["statement_id"] = statement
    session.query(
        "alter_table",
        "ALTER TABLE airlock_m ADD COLUMN b INT DEFAULT 8",
        {"response": {"kind": "ok", "affected_rows": 1, "last_insert_id": 0}},
    )
    session.command(
        "execute_metadata_changed",
        stmt_execute(statement, []),
        {
            "response": {
                "kind": "result",
                "result_sets": 1,
                "rows": 1,
                "binary_rows": [[7, 8]],
            }
        },
        note="the table changed since the prepare: flag 1 and column definitions",
    )
    session.query(
        "select_rows",
        "SELECT seq FROM seq_1_to_2",
        {"response": {"kind": "result", "result_sets": 1, "rows": 2, "text_rows": [["1"], ["2"]]}},
        note="text result sets carry the flag too (1: definitions follow)",
    )


# --------------------------------------------------------------------------
# Logins.


def capture_logins(vectors: list[Vector]) -> None:
    # A login with the codec's native_password that the server must accept.
    vector = Vector(
        "login_native_password",
        "mysql_native_password login of a throwaway user with a password, a wrong"
        " password, and a login that needs an auth switch",
        f"MariaDB at {HOST}:{PORT}, raw socket",
    )
    conn = RawConnection()
    caps = BASE_CAPS
    vector.client_capabilities = caps
    vector.server_capabilities = conn.greeting.capabilities
    auth = native_password(VECTOR_PASSWORD.encode(), conn.greeting.scramble)
    oracle = _pymysql_auth().scramble_native_password(
        VECTOR_PASSWORD.encode(), conn.greeting.scramble
    )
    if auth != oracle:
        raise CaptureError("native_password disagrees with PyMySQL")
    response = handshake_response(caps, VECTOR_USER, auth)
    server = conn.exchange(packet(response, 1))
    if split(server)[0][1][:1] != b"\x00":
        raise CaptureError(f"login with native_password failed: {server!r}")
    vector.exchanges += [
        Exchange("greeting", b"", conn.greeting_raw, {"greeting": {}}),
        Exchange(
            "login",
            packet(response, 1),
            server,
            {
                "login": {
                    "result": "ok",
                    "username": VECTOR_USER,
                    "password": VECTOR_PASSWORD,
                    "database": DATABASE,
                    "plugin": "mysql_native_password",
                }
            },
            note="the auth response is native_password(password, greeting scramble)",
        ),
    ]
    conn.close()

    conn = RawConnection()
    bad = native_password(b"wrong-password", conn.greeting.scramble)
    response = handshake_response(caps, VECTOR_USER, bad)
    server = conn.exchange(packet(response, 1))
    vector.exchanges += [
        Exchange("greeting_2", b"", conn.greeting_raw, {"greeting": {}}),
        Exchange(
            "login_wrong_password",
            packet(response, 1),
            server,
            {"login": {"result": "error", "code": 1045, "sqlstate": "28000"}},
        ),
    ]
    conn.close()

    # Claim caching_sha2_password: MariaDB switches to the user's plugin.
    conn = RawConnection()
    fake = hashlib.sha256(b"not a real scramble").digest()
    response = handshake_response(caps, VECTOR_USER, fake, plugin="caching_sha2_password")
    server = conn.exchange(packet(response, 1))
    seq, switch = split(server)[0]
    if switch[:1] != b"\xfe" or seq != 2:
        raise CaptureError(f"expected an auth switch request: {server!r}")
    plugin_end = switch.index(b"\0", 1)
    plugin = switch[1:plugin_end].decode()
    scramble = switch[plugin_end + 1 :].rstrip(b"\0")
    reply = native_password(VECTOR_PASSWORD.encode(), scramble)
    final = conn.exchange(packet(reply, 3))
    if split(final)[0][1][:1] != b"\x00":
        raise CaptureError(f"login after the auth switch failed: {final!r}")
    vector.exchanges += [
        Exchange("greeting_3", b"", conn.greeting_raw, {"greeting": {}}),
        Exchange(
            "login_claims_caching_sha2",
            packet(response, 1),
            server,
            {"auth_switch": {"plugin": plugin, "scramble": scramble}},
            note="the server answers with AuthSwitchRequest (sequence id 2)",
        ),
        Exchange(
            "auth_switch_response",
            packet(reply, 3),
            final,
            {
                "login": {"result": "ok", "password": VECTOR_PASSWORD},
                "auth_switch_response": reply,
            },
            note="native_password of the switch request's scramble, then OK",
        ),
    ]
    conn.close()

    # The long forms: lenenc auth data and connect attributes.
    conn = RawConnection()
    caps_attrs = BASE_CAPS | PLUGIN_AUTH_LENENC | CONNECT_ATTRS
    auth = native_password(VECTOR_PASSWORD.encode(), conn.greeting.scramble)
    attrs = {"_client_name": "airlock-capture", "_pid": str(os.getpid()), "note": "héllo"}
    response = handshake_response(caps_attrs, VECTOR_USER, auth, attrs=attrs)
    server = conn.exchange(packet(response, 1))
    if split(server)[0][1][:1] != b"\x00":
        raise CaptureError(f"login with connect attributes failed: {server!r}")
    vector.exchanges += [
        Exchange("greeting_4", b"", conn.greeting_raw, {"greeting": {}}),
        Exchange(
            "login_lenenc_attrs",
            packet(response, 1),
            server,
            {
                "login": {
                    "result": "ok",
                    "username": VECTOR_USER,
                    "password": VECTOR_PASSWORD,
                    "database": DATABASE,
                    "plugin": "mysql_native_password",
                    "connect_attributes": attrs,
                    "capabilities": caps_attrs,
                }
            },
        ),
    ]
    conn.close()
    vectors.append(vector)


# --------------------------------------------------------------------------
# Real drivers: a recording forwarder and a fake server.


class Forwarder:
    """Relays one TCP connection to the server and records both directions."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.client_bytes = bytearray()
        self.server_bytes = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        client, _ = self.listener.accept()
        upstream = socket.create_connection((HOST, PORT))
        peers = {client: (upstream, self.client_bytes), upstream: (client, self.server_bytes)}
        with client, upstream:
            while True:
                ready, _, _ = select.select(list(peers), [], [], _TIMEOUT_S)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    other, record = peers[sock]
                    if not data:
                        with contextlib.suppress(OSError):
                            other.shutdown(socket.SHUT_WR)
                        return
                    record += data
                    other.sendall(data)

    def join(self) -> None:
        self.thread.join(_TIMEOUT_S)
        self.listener.close()


class FakeServer:
    """Sends a greeting, records what the client sends, follows a tiny script."""

    def __init__(self, greeting: bytes, script: Callable[[socket.socket], bytes]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.greeting = greeting
        self.script = script
        self.client_bytes = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        client, _ = self.listener.accept()
        client.settimeout(_TIMEOUT_S)
        with client:
            client.sendall(self.greeting)
            self.client_bytes = self.script(client)

    def join(self) -> None:
        self.thread.join(_TIMEOUT_S)
        self.listener.close()


def read_packet(sock: socket.socket) -> bytes:
    """One whole packet (header included) from a blocking socket."""
    data = b""
    while len(data) < 4 or len(data) < 4 + (_HEADER.unpack_from(data)[0] & 0xFFFFFF):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _pymysql() -> Any:
    return importlib.import_module("pymysql")


def _pymysql_auth() -> Any:
    return importlib.import_module("pymysql._auth")


def capture_drivers(vectors: list[Vector], greeting_packet: bytes) -> None:
    pymysql = _pymysql()

    # PyMySQL through the forwarder.
    forwarder = Forwarder()
    connection = pymysql.connect(
        host="127.0.0.1",
        port=forwarder.port,
        user=VECTOR_USER,
        password=VECTOR_PASSWORD,
        database=DATABASE,
        charset="utf8mb4",
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s AS greeting", ("it's",))
    connection.close()
    forwarder.join()
    vectors.append(
        driver_vector(
            "driver_pymysql",
            f"PyMySQL {importlib.metadata.version('PyMySQL')}: connect (utf8mb4, database"
            f" {DATABASE}), one query with a client-side escaped parameter, close",
            bytes(forwarder.client_bytes),
            bytes(forwarder.server_bytes),
            {
                "username": VECTOR_USER,
                "password": VECTOR_PASSWORD,
                "database": DATABASE,
                "plugin": "mysql_native_password",
                "client_name": "pymysql",
                "queries": [
                    "SET NAMES utf8mb4",
                    "SET AUTOCOMMIT = 0",
                    "SELECT 'it\\'s' AS greeting",
                ],
            },
        )
    )

    # The mariadb command-line client through the forwarder.
    forwarder = Forwarder()
    run_cli(
        forwarder.port,
        "-u",
        VECTOR_USER,
        f"-p{VECTOR_PASSWORD}",
        "--skip-ssl",
        "-e",
        "SELECT 1 AS one",
        DATABASE,
    )
    forwarder.join()
    vectors.append(
        driver_vector(
            "driver_mariadb_cli",
            f"the mariadb CLI ({cli_version()}): connect, one query, quit",
            bytes(forwarder.client_bytes),
            bytes(forwarder.server_bytes),
            {
                "username": VECTOR_USER,
                "password": VECTOR_PASSWORD,
                "database": DATABASE,
                "plugin": "mysql_native_password",
                "client_name": "libmariadb",
                "queries": ["SELECT 1 AS one"],
            },
        )
    )

    # SSLRequest: a fake server that replays a real greeting with CLIENT_SSL set.
    greeting = parse_greeting(split(greeting_packet)[0][1])
    with_ssl = bytearray(greeting.raw_payload)
    low = struct.unpack_from("<H", with_ssl, greeting.caps_offset)[0] | SSL_FLAG
    struct.pack_into("<H", with_ssl, greeting.caps_offset, low)
    fake_greeting = packet(bytes(with_ssl), 0)

    def first_packet_only(sock: socket.socket) -> bytes:
        return read_packet(sock)

    vector = Vector(
        "ssl_requests",
        "SSLRequest packets from real clients, sent to a fake server replaying a real"
        " greeting with CLIENT_SSL added (the local server has no TLS)",
        "fake server in capture_mysql_vectors.py",
        server_capabilities=greeting.capabilities | SSL_FLAG,
    )
    fake = FakeServer(fake_greeting, first_packet_only)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(Exception):
        pymysql.connect(
            host="127.0.0.1",
            port=fake.port,
            user=VECTOR_USER,
            password=VECTOR_PASSWORD,
            ssl=context,
            connect_timeout=5,
        )
    fake.join()
    vector.exchanges.append(
        Exchange(
            "pymysql_ssl_request",
            fake.client_bytes,
            fake_greeting,
            {"ssl_request": {"character_set": 45}},
            note="server = the fake greeting; client = PyMySQL's SSLRequest",
        )
    )
    fake = FakeServer(fake_greeting, first_packet_only)
    run_cli(fake.port, "-u", VECTOR_USER, f"-p{VECTOR_PASSWORD}", "--ssl", "-e", "SELECT 1")
    fake.join()
    vector.exchanges.append(
        Exchange(
            "mariadb_cli_ssl_request",
            fake.client_bytes,
            fake_greeting,
            {"ssl_request": {}},
            note="server = the fake greeting; client = the mariadb CLI's SSLRequest",
        )
    )
    vectors.append(vector)

    # mysql_clear_password: the fake server asks for it after the login packet.
    switch = packet(b"\xfemysql_clear_password\0", 2)

    def ask_cleartext(sock: socket.socket) -> bytes:
        login = read_packet(sock)
        sock.sendall(switch)
        return login + read_packet(sock)

    vector = Vector(
        "clear_password_switch",
        "AuthSwitchRequest to mysql_clear_password from a fake server, and what real"
        " clients answer (the password and a NUL)",
        "fake server in capture_mysql_vectors.py",
        server_capabilities=greeting.capabilities,
    )
    fake = FakeServer(greeting_packet, ask_cleartext)
    with contextlib.suppress(Exception):
        pymysql.connect(
            host="127.0.0.1",
            port=fake.port,
            user=VECTOR_USER,
            password=VECTOR_PASSWORD,
            connect_timeout=5,
        )
    fake.join()
    vector.exchanges.append(
        Exchange(
            "pymysql_clear_password",
            fake.client_bytes,
            greeting_packet + switch,
            {"clear_password": {"username": VECTOR_USER, "password": VECTOR_PASSWORD}},
            note="client = login packet, then the cleartext password; server = greeting, switch",
        )
    )
    fake = FakeServer(greeting_packet, ask_cleartext)
    run_cli(
        fake.port,
        "-u",
        VECTOR_USER,
        f"-p{VECTOR_PASSWORD}",
        "--skip-ssl",
        "--enable-cleartext-plugin",
        "-e",
        "SELECT 1",
    )
    fake.join()
    if fake.client_bytes:
        vector.exchanges.append(
            Exchange(
                "mariadb_cli_clear_password",
                fake.client_bytes,
                greeting_packet + switch,
                {"clear_password": {"username": VECTOR_USER, "password": VECTOR_PASSWORD}},
                note="with --enable-cleartext-plugin",
            )
        )
    vectors.append(vector)


def run_cli(port: int, *args: str) -> None:
    command = ["mariadb", "--protocol=tcp", "-h127.0.0.1", f"-P{port}", "--no-defaults", *args]
    # --no-defaults must come first.
    command.insert(1, command.pop(command.index("--no-defaults")))
    subprocess.run(command, capture_output=True, timeout=_TIMEOUT_S, check=False)


def cli_version() -> str:
    done = subprocess.run(["mariadb", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def driver_vector(
    name: str, description: str, client: bytes, server: bytes, expect: dict[str, Any]
) -> Vector:
    greeting = parse_greeting(split(server)[0][1])
    login = split(client)[0][1]
    (caps,) = struct.unpack_from("<I", login)
    vector = Vector(
        name,
        description,
        "recording TCP forwarder to the local MariaDB",
        client_capabilities=caps,
        server_capabilities=greeting.capabilities,
    )
    vector.exchanges.append(
        Exchange(
            "whole_connection",
            client,
            server,
            {"driver": expect},
            note="every byte each side sent, in order per direction",
        )
    )
    return vector


# --------------------------------------------------------------------------
# Main.


@contextlib.contextmanager
def fixtures() -> Iterator[Session]:
    """An admin session (off the record) that creates and drops the throwaway objects."""
    admin = Session(Vector("admin", "", ""), BASE_CAPS)
    setup = [
        f"DROP USER IF EXISTS '{VECTOR_USER}'@'127.0.0.1'",
        f"CREATE USER '{VECTOR_USER}'@'127.0.0.1' IDENTIFIED BY '{VECTOR_PASSWORD}'",
        f"GRANT ALL ON {DATABASE}.* TO '{VECTOR_USER}'@'127.0.0.1'",
        f"DROP PROCEDURE IF EXISTS {DATABASE}.{PROCEDURE}",
        f"CREATE PROCEDURE {DATABASE}.{PROCEDURE}() BEGIN SELECT 1 AS a;"  # noqa: S608 (constants)
        " SELECT seq, seq * 2 AS twice FROM seq_1_to_2; END",
    ]
    for sql in setup:
        run_admin(admin, sql)
    try:
        yield admin
    finally:
        run_admin(admin, f"DROP PROCEDURE IF EXISTS {DATABASE}.{PROCEDURE}")
        run_admin(admin, f"DROP USER IF EXISTS '{VECTOR_USER}'@'127.0.0.1'")
        admin.conn.close()


def run_admin(admin: Session, sql: str) -> bytes:
    reply = admin.conn.exchange(packet(bytes((COM_QUERY,)) + sql.encode(), 0))
    if split(reply)[0][1][:1] == b"\xff":
        raise CaptureError(f"{sql}: {reply!r}")
    return reply


def capture(outdir: Path) -> list[Vector]:
    vectors: list[Vector] = []
    with fixtures() as admin:
        stored = admin.scalar_row(f"SELECT PASSWORD('{VECTOR_PASSWORD}')")[0]
        for name, caps, label, description in (
            ("session_eof", BASE_CAPS, "eof", "classic EOF packets (no DEPRECATE_EOF)"),
            (
                "session_deprecate_eof",
                BASE_CAPS | DEPRECATE_EOF | SESSION_TRACK,
                "track",
                "DEPRECATE_EOF and SESSION_TRACK",
            ),
        ):
            vector = Vector(
                name,
                f"Command phase with {description}: queries, errors, multi-statements, CALL,"
                " LOCAL INFILE, prepared statements with cursors, utility commands",
                f"MariaDB at {HOST}:{PORT}, raw socket, client built by hand",
            )
            session = Session(vector, caps, user=VECTOR_USER, password=VECTOR_PASSWORD)
            command_phase(session, label)
            session.close()
            vectors.append(vector)

        vector = Vector(
            "session_metadata_cache",
            "MariaDB's MARIADB_CLIENT_CACHE_METADATA with DEPRECATE_EOF: executes that send no"
            " column definitions (the prepare's still hold), one after the table changed that"
            " sends them, and a text result set, whose column count carries the flag too",
            f"MariaDB at {HOST}:{PORT}, raw socket, client built by hand",
        )
        caps = (BASE_CAPS & ~LONG_PASSWORD) | DEPRECATE_EOF
        session = Session(
            vector,
            caps,
            mariadb_caps=MARIADB_CACHE_METADATA,
            user=VECTOR_USER,
            password=VECTOR_PASSWORD,
        )
        metadata_cache_phase(session)
        session.close()
        vectors.append(vector)

        capture_logins(vectors)
        vectors[-1].exchanges[1].expect["login"]["stored_hash"] = stored
        capture_drivers(vectors, vectors[0].exchanges[0].server)

    outdir.mkdir(parents=True, exist_ok=True)
    for vector in vectors:
        path = outdir / f"{vector.name}.json"
        path.write_text(json.dumps(vector.to_json(), indent=1, ensure_ascii=False) + "\n")
    (outdir / "README.md").write_text(readme(vectors, admin.conn.greeting.version))
    return vectors


def readme(vectors: list[Vector], server_version: str) -> str:
    lines = [
        "# MySQL/MariaDB wire vectors",
        "",
        "Bytes captured from a real server and real clients by"
        " `python -m tests.support.capture_mysql_vectors tests/protocols/mysql/vectors`.",
        f"Server: {server_version.removeprefix('5.5.5-')}.",
        "",
        "Each `<name>.json` holds `capabilities` (the client's flags that the server also"
        " has), `mariadb_capabilities`, and `exchanges`. An exchange has `client` (bytes the"
        " client sent, framed) and `server` (every byte the server sent back until it was"
        " quiet), both as hex in 64-character lines to join, `command` (the command byte,"
        " or null in the connection phase), `server_sequence_ids`, and `expect`: what the"
        " bytes must decode to. Expected values were stated from the SQL or read back from"
        ' the server, never produced by the codec; bytes appear as `{"bytes": hex}`.',
        "",
        "Values that change on every capture: scrambles, connection ids, statistics text,"
        " process lists, client pids.",
        "",
        "| file | exchanges | what |",
        "| --- | ---: | --- |",
    ]
    for vector in vectors:
        lines.append(f"| `{vector.name}.json` | {len(vector.exchanges)} | {vector.description} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("outdir", type=Path, nargs="?", default=DEFAULT_OUTDIR)
    args = parser.parse_args(argv)
    vectors = capture(args.outdir)
    for vector in vectors:
        print(f"{vector.name}: {len(vector.exchanges)} exchanges")
    return 0


if __name__ == "__main__":
    sys.exit(main())
