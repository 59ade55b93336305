"""Capture PostgreSQL wire-protocol test vectors from real servers and real drivers.

Run ``python -m tests.support.capture_pg_vectors OUTDIR`` (normally
``tests/protocols/postgres/vectors``). It needs the shared test server
(``AIRLOCK_TEST_PG_*``, trust auth for TCP from 127.0.0.1) and starts its own
md5, SCRAM and TLS clusters with ``ThrowawayCluster``.

Two sources of bytes:

- Server to client: raw TCP sockets; the client side of the protocol is built
  by hand with ``struct`` (no driver), and every byte the server sends is kept.
- Client to server: a recording TCP forwarder sits between psycopg 3 / asyncpg
  and the server and keeps what each side sent.

Each vector is written as ``<name>.hex``: one ``# direction: description``
line, then the bytes as lowercase hex wrapped at 64 characters. ``be_`` files
hold backend (server to client) bytes and ``fe_`` files frontend (client to
server) bytes. ``MANIFEST.md`` lists them with the messages they contain.

This is test tooling: the tiny framer below only labels messages for the
manifest and picks captured streams apart; the codec under test lives in
``protocols/postgres``.

Spec: https://www.postgresql.org/docs/current/protocol-message-formats.html
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import os
import re
import secrets
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import asyncpg
import psycopg

from tests.support.pgcluster import PgServer, ThrowawayCluster, local_server_from_env

Direction = Literal["server->client", "client->server"]

PROTOCOL_3_0 = 3 << 16
PROTOCOL_3_1 = (3 << 16) | 1
PROTOCOL_3_2 = (3 << 16) | 2
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

_SOCKET_TIMEOUT_S = 10.0
_HEX_LINE_CHARS = 64
_INT32 = struct.Struct("!i")
_UINT32 = struct.Struct("!I")
_INT16 = struct.Struct("!h")
_NUL = b"\0"
_REPO_ROOT = Path(__file__).resolve().parents[2]


class CaptureError(RuntimeError):
    """The server or a driver did not behave as the capture expects."""


# --------------------------------------------------------------------------
# Frontend messages, built by hand.


def _cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def _typed(kind: bytes, body: bytes) -> bytes:
    return kind + _INT32.pack(len(body) + 4) + body


def _untyped(body: bytes) -> bytes:
    return _INT32.pack(len(body) + 4) + body


def startup_message(params: dict[str, str], version: int = PROTOCOL_3_0) -> bytes:
    pairs = b"".join(_cstr(key) + _cstr(value) for key, value in params.items())
    return _untyped(_INT32.pack(version) + pairs + b"\0")


def ssl_request() -> bytes:
    return _untyped(_INT32.pack(SSL_REQUEST_CODE))


def query(sql: str) -> bytes:
    return _typed(b"Q", _cstr(sql))


def parse(statement: str, sql: str, param_oids: Sequence[int] = ()) -> bytes:
    oids = b"".join(_UINT32.pack(oid) for oid in param_oids)
    return _typed(b"P", _cstr(statement) + _cstr(sql) + _INT16.pack(len(param_oids)) + oids)


def bind(portal: str, statement: str, params: Sequence[bytes | None] = ()) -> bytes:
    body = bytearray(_cstr(portal) + _cstr(statement))
    body += _INT16.pack(0)  # all parameters in text format
    body += _INT16.pack(len(params))
    for param in params:
        body += _INT32.pack(-1) if param is None else _INT32.pack(len(param)) + param
    body += _INT16.pack(0)  # all results in text format
    return _typed(b"B", bytes(body))


def describe(kind: Literal[b"S", b"P"], name: str) -> bytes:
    return _typed(b"D", kind + _cstr(name))


def execute(portal: str, max_rows: int = 0) -> bytes:
    return _typed(b"E", _cstr(portal) + _INT32.pack(max_rows))


def close(kind: Literal[b"S", b"P"], name: str) -> bytes:
    return _typed(b"C", kind + _cstr(name))


def sync() -> bytes:
    return _typed(b"S", b"")


def terminate() -> bytes:
    return _typed(b"X", b"")


def copy_data(raw: bytes) -> bytes:
    return _typed(b"d", raw)


def copy_done() -> bytes:
    return _typed(b"c", b"")


def copy_fail(reason: str) -> bytes:
    return _typed(b"f", _cstr(reason))


def function_call(function_oid: int, args: Sequence[bytes]) -> bytes:
    body = bytearray(_UINT32.pack(function_oid))
    body += _INT16.pack(1) + _INT16.pack(0)  # one format code: text for all arguments
    body += _INT16.pack(len(args))
    for arg in args:
        body += _INT32.pack(len(arg)) + arg
    body += _INT16.pack(0)  # result in text format
    return _typed(b"F", bytes(body))


def password_message(password: str) -> bytes:
    return _typed(b"p", _cstr(password))


def sasl_initial_response(mechanism: str, raw: bytes) -> bytes:
    return _typed(b"p", _cstr(mechanism) + _INT32.pack(len(raw)) + raw)


def sasl_response(raw: bytes) -> bytes:
    return _typed(b"p", raw)


# --------------------------------------------------------------------------
# Splitting and labelling captured streams.

_AUTH_NAMES = {
    0: "AuthenticationOk",
    2: "AuthenticationKerberosV5",
    3: "AuthenticationCleartextPassword",
    5: "AuthenticationMD5Password",
    7: "AuthenticationGSS",
    8: "AuthenticationGSSContinue",
    9: "AuthenticationSSPI",
    10: "AuthenticationSASL",
    11: "AuthenticationSASLContinue",
    12: "AuthenticationSASLFinal",
}
_BACKEND_NAMES = {
    b"1": "ParseComplete",
    b"2": "BindComplete",
    b"3": "CloseComplete",
    b"A": "NotificationResponse",
    b"C": "CommandComplete",
    b"D": "DataRow",
    b"E": "ErrorResponse",
    b"G": "CopyInResponse",
    b"H": "CopyOutResponse",
    b"I": "EmptyQueryResponse",
    b"K": "BackendKeyData",
    b"N": "NoticeResponse",
    b"R": "Authentication",
    b"S": "ParameterStatus",
    b"T": "RowDescription",
    b"V": "FunctionCallResponse",
    b"W": "CopyBothResponse",
    b"Z": "ReadyForQuery",
    b"c": "CopyDone",
    b"d": "CopyData",
    b"n": "NoData",
    b"s": "PortalSuspended",
    b"t": "ParameterDescription",
    b"v": "NegotiateProtocolVersion",
}
_FRONTEND_NAMES = {
    b"B": "Bind",
    b"C": "Close",
    b"D": "Describe",
    b"E": "Execute",
    b"F": "FunctionCall",
    b"H": "Flush",
    b"P": "Parse",
    b"Q": "Query",
    b"S": "Sync",
    b"X": "Terminate",
    b"c": "CopyDone",
    b"d": "CopyData",
    b"f": "CopyFail",
    b"p": "PasswordMessage",
}
_UNTYPED_NAMES = {
    SSL_REQUEST_CODE: "SSLRequest",
    GSSENC_REQUEST_CODE: "GSSENCRequest",
    CANCEL_REQUEST_CODE: "CancelRequest",
}


def split_backend(raw: bytes) -> list[bytes]:
    """Split a server-to-client stream into whole messages (type byte + length + body)."""
    messages: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if len(raw) - offset < 5:
            raise CaptureError(f"truncated backend message at offset {offset}")
        (length,) = _INT32.unpack_from(raw, offset + 1)
        end = offset + 1 + length
        if length < 4 or end > len(raw):
            raise CaptureError(f"bad backend message length {length} at offset {offset}")
        messages.append(raw[offset:end])
        offset = end
    return messages


def split_frontend(raw: bytes) -> list[bytes]:
    """Split a client-to-server stream. Untyped startup-phase messages start with 0x00."""
    messages: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if raw[offset] == 0:
            (length,) = _INT32.unpack_from(raw, offset)
            end = offset + length
        else:
            (length,) = _INT32.unpack_from(raw, offset + 1)
            end = offset + 1 + length
        if length < 4 or end > len(raw):
            raise CaptureError(f"bad frontend message length {length} at offset {offset}")
        messages.append(raw[offset:end])
        offset = end
    return messages


def _fields(body: bytes) -> dict[str, str]:
    """ErrorResponse/NoticeResponse fields by code letter."""
    found: dict[str, str] = {}
    for item in body.split(b"\0"):
        if item:
            found[chr(item[0])] = item[1:].decode(errors="replace")
    return found


def label_backend(message: bytes) -> str:
    kind, body = message[:1], message[5:]
    name = _BACKEND_NAMES.get(kind, f"Unknown({kind!r})")
    if kind == b"R":
        (code,) = _INT32.unpack_from(body)
        name = _AUTH_NAMES.get(code, f"Authentication({code})")
        if code == 10:
            mechanisms = [m.decode() for m in body[4:].split(b"\0") if m]
            name += f"[{', '.join(mechanisms)}]"
    elif kind == b"Z":
        name += f"({body.decode()})"
    elif kind == b"C":
        name += f"({body.rstrip(_NUL).decode()})"
    elif kind in (b"E", b"N"):
        fields = _fields(body)
        name += f"({fields.get('V', fields.get('S', '?'))} {fields.get('C', '?')})"
    elif kind == b"S":
        name += f"({body.split(_NUL)[0].decode()})"
    return name


def label_frontend(message: bytes) -> str:
    if message[0] == 0:
        (code,) = _INT32.unpack_from(message, 4)
        if code in _UNTYPED_NAMES:
            return _UNTYPED_NAMES[code]
        return f"StartupMessage({code >> 16}.{code & 0xFFFF})"
    kind = message[:1]
    name = _FRONTEND_NAMES.get(kind, f"Unknown({kind!r})")
    if kind == b"Q":
        name += f"({message[5:].rstrip(_NUL).decode()!r})"
    return name


def label_stream(raw: bytes, direction: Direction) -> list[str]:
    if direction == "client->server":
        return [label_frontend(message) for message in split_frontend(raw)]
    if raw in (b"S", b"N"):
        return [f"SSLResponse({raw.decode()})"]
    return [label_backend(message) for message in split_backend(raw)]


# --------------------------------------------------------------------------
# Raw sessions against a server.


class RawSession:
    """A TCP connection speaking the protocol by hand, keeping every server message."""

    def __init__(self, host: str, port: int) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=_SOCKET_TIMEOUT_S
        )
        self._buffer = bytearray()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sock.close()

    def send(self, *messages: bytes) -> None:
        self.sock.sendall(b"".join(messages))

    def _read_exact(self, count: int) -> bytes:
        while len(self._buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CaptureError(f"server closed the connection; had {bytes(self._buffer)!r}")
            self._buffer += chunk
        head = bytes(self._buffer[:count])
        del self._buffer[:count]
        return head

    def read_byte(self) -> bytes:
        return self._read_exact(1)

    def read_message(self) -> bytes:
        header = self._read_exact(5)
        (length,) = _INT32.unpack_from(header, 1)
        return header + self._read_exact(length - 4)

    def read_until(self, kinds: bytes) -> list[bytes]:
        """Messages up to and including the first whose type byte is in ``kinds``."""
        messages: list[bytes] = []
        while True:
            message = self.read_message()
            messages.append(message)
            if message[:1] in kinds:
                return messages

    def read_until_ready(self) -> bytes:
        return b"".join(self.read_until(b"Z"))

    def read_to_eof(self) -> bytes:
        received = bytes(self._buffer)
        self._buffer.clear()
        chunks = [received]
        while chunk := self.sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)

    def start_tls(self, ca_cert: Path) -> None:
        context = ssl.create_default_context(cafile=str(ca_cert))
        self.sock = context.wrap_socket(self.sock, server_hostname="127.0.0.1")

    def login(
        self,
        user: str,
        database: str,
        password: str | None = None,
        *,
        version: int = PROTOCOL_3_0,
        extra: dict[str, str] | None = None,
    ) -> list[bytes]:
        """Run startup and authentication; return every server message up to ReadyForQuery."""
        params = {"user": user, "database": database, **(extra or {})}
        self.send(startup_message(params, version))
        received: list[bytes] = []
        scram: _ScramClient | None = None
        while True:
            message = self.read_message()
            received.append(message)
            kind, body = message[:1], message[5:]
            if kind == b"E":
                raise CaptureError(f"login failed: {_fields(body)}")
            if kind == b"Z":
                return received
            if kind != b"R":
                continue
            (code,) = _INT32.unpack_from(body)
            if code in (0, 12):
                if code == 12 and scram is not None:
                    scram.verify_final(body[4:])
                continue
            if password is None:
                raise CaptureError(f"server asked for a password (auth code {code})")
            if code == 3:
                self.send(password_message(password))
            elif code == 5:
                self.send(password_message(md5_password(user, password, body[4:8])))
            elif code == 10:
                scram = _ScramClient(password)
                self.send(sasl_initial_response("SCRAM-SHA-256", scram.client_first()))
            elif code == 11 and scram is not None:
                self.send(sasl_response(scram.client_final(body[4:])))
            else:
                raise CaptureError(f"unsupported authentication request {code}")


def md5_password(user: str, password: str, salt: bytes) -> str:
    """The md5 PasswordMessage payload: md5(md5(password + user) + salt)."""
    inner = hashlib.md5((password + user).encode(), usedforsecurity=False).hexdigest()
    outer = hashlib.md5(inner.encode() + salt, usedforsecurity=False).hexdigest()
    return "md5" + outer


@dataclass
class _ScramClient:
    """The client half of SCRAM-SHA-256 (RFC 5802/7677), without channel binding."""

    password: str
    nonce: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(18)).decode())
    _client_first_bare: str = ""
    _auth_message: bytes = b""
    _salted: bytes = b""

    def client_first(self) -> bytes:
        # PostgreSQL takes the user name from the startup packet, so n= is empty (as libpq does).
        self._client_first_bare = f"n=,r={self.nonce}"
        return f"n,,{self._client_first_bare}".encode()

    def client_final(self, server_first: bytes) -> bytes:
        attributes = dict(item.split("=", 1) for item in server_first.decode().split(","))
        if not attributes["r"].startswith(self.nonce):
            raise CaptureError("server nonce does not extend the client nonce")
        self._salted = hashlib.pbkdf2_hmac(
            "sha256",
            self.password.encode(),
            base64.b64decode(attributes["s"]),
            int(attributes["i"]),
        )
        without_proof = f"c=biws,r={attributes['r']}"
        self._auth_message = (
            f"{self._client_first_bare},{server_first.decode()},{without_proof}".encode()
        )
        client_key = hmac.digest(self._salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        signature = hmac.digest(stored_key, self._auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_final(self, server_final: bytes) -> None:
        server_key = hmac.digest(self._salted, b"Server Key", "sha256")
        expected = hmac.digest(server_key, self._auth_message, "sha256")
        if server_final.decode() != f"v={base64.b64encode(expected).decode()}":
            raise CaptureError("SCRAM server signature does not verify")


# --------------------------------------------------------------------------
# A recording TCP forwarder for real drivers.
#
# It runs in a child process, not in threads of this one: psycopg's conn.cancel()
# (PQcancel) blocks without releasing the GIL until the server closes the cancel
# connection, so an in-process forwarder could never relay that cancel.


@dataclass(frozen=True)
class Recording:
    """What one forwarded connection carried, read from the forwarder's files."""

    prefix: Path

    def client_bytes(self) -> bytes:
        return self.prefix.with_suffix(".client").read_bytes()

    def server_bytes(self) -> bytes:
        return self.prefix.with_suffix(".server").read_bytes()

    def marks(self) -> tuple[int, int]:
        return len(self.client_bytes()), len(self.server_bytes())

    def since(self, marks: tuple[int, int]) -> tuple[bytes, bytes]:
        return self.client_bytes()[marks[0] :], self.server_bytes()[marks[1] :]

    def wait_finished(self, timeout_s: float = _SOCKET_TIMEOUT_S) -> None:
        """Wait until both directions of the connection have closed."""
        done = self.prefix.with_suffix(".done")
        deadline = time.monotonic() + timeout_s
        while not done.exists():
            if time.monotonic() > deadline:
                raise CaptureError(f"forwarded connection {self.prefix.name} did not finish")
            time.sleep(0.01)


class RecordingForwarder:
    """Listens on 127.0.0.1, forwards each connection to the upstream, records both sides.

    Each chunk is written to the recording before it is forwarded, so once a
    synchronous driver call has returned (it saw the server's answer)
    everything it sent is on disk. Recordings are removed on exit.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._record_dir = Path(tempfile.mkdtemp(prefix="airlock-forwarder-"))
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        launcher = (
            "import sys; from tests.support.capture_pg_vectors import serve_forwarder; "
            "serve_forwarder(sys.argv[1], int(sys.argv[2]), sys.argv[3])"
        )
        python_path = os.pathsep.join(
            filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH", "")])
        )
        self._process = subprocess.Popen(
            [sys.executable, "-c", launcher, *map(str, self.upstream), str(self._record_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": python_path},
        )
        try:
            assert self._process.stdout is not None
            line = self._process.stdout.readline()
            if not line.strip().isdigit():
                raise CaptureError(f"the forwarder process did not start (said {line!r})")
            self.port = int(line)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            assert process.stdin is not None
            assert process.stdout is not None
            process.stdin.close()  # the child exits when its stdin closes
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            process.stdout.close()
        shutil.rmtree(self._record_dir, ignore_errors=True)

    def connection_count(self) -> int:
        return len(list(self._record_dir.glob("*.client")))

    def recording(self, index: int) -> Recording:
        return Recording(self._record_dir / f"{index:04d}")

    def wait_for_connections(self, count: int, timeout_s: float = _SOCKET_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while self.connection_count() < count:
            if time.monotonic() > deadline:
                raise CaptureError(
                    f"expected {count} forwarded connections, saw {self.connection_count()}"
                )
            time.sleep(0.01)


def serve_forwarder(upstream_host: str, upstream_port: int, record_dir: str) -> None:
    """Child-process body of ``RecordingForwarder``.

    Prints its port, then forwards until its stdin closes (the parent exited or
    is done), so it never outlives the capture.
    """
    upstream = (upstream_host, upstream_port)
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)

    def exit_when_parent_is_gone() -> None:
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=exit_when_parent_is_gone, daemon=True).start()
    for index in itertools.count():
        client_side, _ = listener.accept()
        server_side = socket.create_connection(upstream, timeout=_SOCKET_TIMEOUT_S)
        server_side.settimeout(None)
        prefix = Path(record_dir) / f"{index:04d}"
        client_path, server_path = prefix.with_suffix(".client"), prefix.with_suffix(".server")
        server_path.touch()
        client_path.touch()  # last: connection_count() counts .client files
        open_pumps = [2]
        lock = threading.Lock()

        def pump(
            source: socket.socket,
            sink: socket.socket,
            path: Path,
            prefix: Path = prefix,
            open_pumps: list[int] = open_pumps,
            lock: threading.Lock = lock,
        ) -> None:
            try:
                with path.open("ab", buffering=0) as record:
                    while chunk := source.recv(65536):
                        record.write(chunk)
                        sink.sendall(chunk)
                sink.shutdown(socket.SHUT_WR)
            except OSError as exc:
                # One side went away mid-stream; the recording keeps what crossed before.
                with prefix.with_suffix(".errors").open("a") as errors:
                    errors.write(f"{path.name}: {exc!r}\n")
            finally:
                with lock:
                    open_pumps[0] -= 1
                    if open_pumps[0] == 0:
                        source.close()
                        sink.close()
                        prefix.with_suffix(".done").touch()

        for args in (
            (client_side, server_side, client_path),
            (server_side, client_side, server_path),
        ):
            threading.Thread(target=pump, args=args, daemon=True).start()


# --------------------------------------------------------------------------
# Vectors.


@dataclass(frozen=True)
class Vector:
    name: str
    direction: Direction
    description: str
    raw: bytes
    source: str
    expect: tuple[str, ...] = ()

    def labels(self) -> list[str]:
        return label_stream(self.raw, self.direction)


class Collector:
    """Gathers vectors from one source. ``expect`` is a space-separated list of message
    names the capture must match exactly; ``Name*`` stands for zero or more."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.vectors: list[Vector] = []

    def server(self, name: str, description: str, raw: bytes, expect: str = "") -> None:
        self._add(Vector(name, "server->client", description, raw, self.source, _split(expect)))

    def client(self, name: str, description: str, raw: bytes, expect: str = "") -> None:
        self._add(Vector(name, "client->server", description, raw, self.source, _split(expect)))

    def _add(self, vector: Vector) -> None:
        check(vector)
        self.vectors.append(vector)


def _split(expect: str) -> tuple[str, ...]:
    return tuple(expect.split())


def _matches(labels: Sequence[str], pattern: Sequence[str]) -> bool:
    """Match message names (details in parentheses ignored); ``X*`` is zero or more X."""
    names = [label.split("(")[0].split("[")[0] for label in labels]
    regex = "".join(
        f"(?:{re.escape(item[:-1])};)*" if item.endswith("*") else f"{re.escape(item)};"
        for item in pattern
    )
    return re.fullmatch(regex, "".join(f"{name};" for name in names)) is not None


def check(vector: Vector) -> None:
    if vector.expect and not _matches(vector.labels(), vector.expect):
        raise CaptureError(
            f"{vector.name}: expected {list(vector.expect)}, captured {vector.labels()}"
        )


def to_hex_file(vector: Vector) -> str:
    text = vector.raw.hex()
    lines = [text[i : i + _HEX_LINE_CHARS] for i in range(0, len(text), _HEX_LINE_CHARS)]
    return "\n".join([f"# {vector.direction}: {vector.description}", *lines]) + "\n"


def read_hex_file(path: Path) -> bytes:
    """Inverse of ``to_hex_file``: skip ``#`` lines, join the rest."""
    lines = path.read_text().splitlines()
    return bytes.fromhex("".join(line for line in lines if not line.startswith("#")))


_STARTUP = "AuthenticationOk ParameterStatus* BackendKeyData ReadyForQuery"


# Server to client, raw sockets.


def capture_local_server(server: PgServer) -> list[Vector]:
    out = Collector(f"PostgreSQL at {server.host}:{server.port}, trust auth, raw socket")
    user, password = server.superuser, server.password

    with RawSession(server.host, server.port) as session:
        session.send(ssl_request())
        out.server(
            "be_ssl_response_n",
            "reply to SSLRequest from a server with ssl=off",
            session.read_byte(),
        )

    with RawSession(server.host, server.port) as session:
        out.server(
            "be_startup_trust",
            "trust auth startup: AuthenticationOk, ParameterStatus*, BackendKeyData, ReadyForQuery",
            b"".join(session.login(user, "postgres", password)),
            _STARTUP,
        )
        _capture_simple_queries(session, out)
        _capture_extended(session, out)
        _capture_copy(session, out)

        # 2026 is pg_backend_pid(): FunctionCall runs a function by OID with no SQL text.
        session.send(function_call(2026, []))
        out.server(
            "be_function_call_response",
            "FunctionCall(pg_backend_pid, oid 2026): FunctionCallResponse, ReadyForQuery",
            session.read_until_ready(),
            "FunctionCallResponse ReadyForQuery",
        )
        session.send(terminate())

    with RawSession(server.host, server.port) as session:
        session.send(startup_message({"user": user, "database": "airlock_no_such_db"}))
        out.server(
            "be_fatal_bad_database",
            "startup for database 'airlock_no_such_db': AuthenticationOk (trust), then "
            "ErrorResponse FATAL 3D000, then the server closes",
            session.read_to_eof(),
            "AuthenticationOk ErrorResponse",
        )

    with RawSession(server.host, server.port) as session:
        out.server(
            "be_negotiate_protocol_version_3_1",
            "StartupMessage asking for protocol 3.1: NegotiateProtocolVersion(3.0, no "
            "options), then the normal startup",
            b"".join(session.login(user, "postgres", password, version=PROTOCOL_3_1)),
            f"NegotiateProtocolVersion {_STARTUP}",
        )
        session.send(terminate())

    with RawSession(server.host, server.port) as session:
        extra = {"_pq_.airlock_foo": "bar"}
        out.server(
            "be_negotiate_protocol_version_pq_option",
            "StartupMessage 3.0 with '_pq_.airlock_foo=bar': NegotiateProtocolVersion "
            "listing the unknown option, then the normal startup",
            b"".join(session.login(user, "postgres", password, extra=extra)),
            f"NegotiateProtocolVersion {_STARTUP}",
        )
        session.send(terminate())
    return out.vectors


def _capture_simple_queries(session: RawSession, out: Collector) -> None:
    rows_sql = "SELECT g AS n, 'row ' || g AS label FROM generate_series(1, 3) g"
    session.send(query(rows_sql))
    out.server(
        "be_simple_query_rows",
        f"Query {rows_sql!r}",
        session.read_until_ready(),
        "RowDescription DataRow DataRow DataRow CommandComplete ReadyForQuery",
    )

    multi_sql = "SELECT 1 AS one; SELECT 'two' AS two, 2 AS n; SELECT 1 WHERE false"
    session.send(query(multi_sql))
    out.server(
        "be_simple_query_multi",
        f"Query {multi_sql!r}: three result sets (the last empty), one ReadyForQuery",
        session.read_until_ready(),
        "RowDescription DataRow CommandComplete RowDescription DataRow CommandComplete "
        "RowDescription CommandComplete ReadyForQuery",
    )

    for name, sql in (("be_empty_query", ""), ("be_empty_query_comment", "-- only a comment")):
        session.send(query(sql))
        out.server(
            name,
            f"Query {sql!r}",
            session.read_until_ready(),
            "EmptyQueryResponse ReadyForQuery",
        )

    session.send(query("SELEC 1"))
    out.server(
        "be_error_syntax",
        "Query 'SELEC 1': ErrorResponse (ERROR 42601), ReadyForQuery(I)",
        session.read_until_ready(),
        "ErrorResponse ReadyForQuery",
    )

    session.send(query("DO $$BEGIN RAISE NOTICE 'hi'; END$$"))
    out.server(
        "be_notice",
        "Query \"DO $$BEGIN RAISE NOTICE 'hi'; END$$\"",
        session.read_until_ready(),
        "NoticeResponse CommandComplete ReadyForQuery",
    )

    session.send(query("SET application_name = 'airlock-vectors'"))
    out.server(
        "be_parameter_status_on_set",
        "Query \"SET application_name = 'airlock-vectors'\": ParameterStatus after CommandComplete",
        session.read_until_ready(),
        "CommandComplete ParameterStatus ReadyForQuery",
    )

    session.send(query("LISTEN airlock_vectors"))
    session.read_until_ready()
    session.send(query("NOTIFY airlock_vectors, 'payload'"))
    out.server(
        "be_notification",
        "after LISTEN airlock_vectors, Query \"NOTIFY airlock_vectors, 'payload'\" on the "
        "same connection",
        session.read_until_ready(),
        "CommandComplete NotificationResponse ReadyForQuery",
    )

    session.send(query("BEGIN"))
    out.server(
        "be_begin_ready_t",
        "Query 'BEGIN': CommandComplete, ReadyForQuery(T)",
        session.read_until_ready(),
        "CommandComplete ReadyForQuery",
    )
    session.send(query("SELEC 1"))
    out.server(
        "be_error_in_transaction",
        "Query 'SELEC 1' inside a transaction: ErrorResponse, ReadyForQuery(E)",
        session.read_until_ready(),
        "ErrorResponse ReadyForQuery",
    )
    session.send(query("ROLLBACK"))
    session.read_until_ready()


def _capture_extended(session: RawSession, out: Collector) -> None:
    rows_sql = "SELECT $1::int4 + g AS n, $2::text AS label FROM generate_series(1, 2) g"
    session.send(
        parse("", rows_sql),
        bind("", "", [b"40", b"x"]),
        describe(b"S", ""),
        describe(b"P", ""),
        execute("", 0),
        sync(),
    )
    out.server(
        "be_extended_pipeline",
        f"pipelined Parse(unnamed, {rows_sql!r}), Bind(text '40', 'x'), Describe(S), "
        "Describe(P), Execute(0), Sync",
        session.read_until_ready(),
        "ParseComplete BindComplete ParameterDescription RowDescription RowDescription "
        "DataRow DataRow CommandComplete ReadyForQuery",
    )

    session.send(
        parse("airlock_named", "LISTEN airlock_nodata"),
        describe(b"S", "airlock_named"),
        bind("", "airlock_named"),
        execute("", 0),
        close(b"S", "airlock_named"),
        sync(),
    )
    out.server(
        "be_extended_named_nodata_close",
        "Parse('airlock_named', 'LISTEN airlock_nodata'), Describe(S), Bind, Execute, "
        "Close(S), Sync",
        session.read_until_ready(),
        "ParseComplete ParameterDescription NoData BindComplete CommandComplete "
        "CloseComplete ReadyForQuery",
    )

    session.send(
        parse("", "SELECT g FROM generate_series(1, 5) g"),
        bind("", ""),
        execute("", 2),
        execute("", 0),
        sync(),
    )
    out.server(
        "be_portal_suspended",
        "Parse('SELECT g FROM generate_series(1, 5) g'), Bind, Execute(max_rows=2), "
        "Execute(0), Sync: PortalSuspended after 2 rows, then the other 3",
        session.read_until_ready(),
        "ParseComplete BindComplete DataRow DataRow PortalSuspended DataRow DataRow DataRow "
        "CommandComplete ReadyForQuery",
    )

    session.send(
        parse("", "SELEC $1"), bind("", "", [b"1"]), describe(b"P", ""), execute(""), sync()
    )
    out.server(
        "be_extended_error_until_sync",
        "Parse('SELEC $1') fails: one ErrorResponse, Bind/Describe/Execute skipped, "
        "ReadyForQuery at Sync",
        session.read_until_ready(),
        "ErrorResponse ReadyForQuery",
    )


def _capture_copy(session: RawSession, out: Collector) -> None:
    copy_out_sql = "COPY (SELECT g, 'r' || g FROM generate_series(1, 3) g) TO STDOUT"
    session.send(query(copy_out_sql))
    out.server(
        "be_copy_out",
        f"Query {copy_out_sql!r}",
        session.read_until_ready(),
        "CopyOutResponse CopyData CopyData CopyData CopyDone CommandComplete ReadyForQuery",
    )

    session.send(query("CREATE TEMP TABLE airlock_copy (n int, label text)"))
    session.read_until_ready()
    session.send(query("COPY airlock_copy FROM STDIN"))
    out.server(
        "be_copy_in_response",
        "Query 'COPY airlock_copy FROM STDIN' (a temp table with two columns)",
        session.read_message(),
        "CopyInResponse",
    )
    session.send(copy_data(b"1\tone\n"), copy_data(b"2\ttwo\n"), copy_done())
    out.server(
        "be_copy_in_done",
        "after CopyData x2, CopyDone: CommandComplete(COPY 2), ReadyForQuery",
        session.read_until_ready(),
        "CommandComplete ReadyForQuery",
    )

    session.send(query("COPY airlock_copy FROM STDIN"))
    session.read_message()
    session.send(copy_data(b"3\tthree\n"), copy_fail("client gave up"))
    out.server(
        "be_copy_in_fail",
        "after CopyInResponse, CopyData, CopyFail('client gave up'): ErrorResponse 57014",
        session.read_until_ready(),
        "ErrorResponse ReadyForQuery",
    )


def capture_md5(cluster: ThrowawayCluster) -> list[Vector]:
    out = Collector("ThrowawayCluster md5, raw socket")
    with RawSession(cluster.host, cluster.port) as session:
        received = session.login(cluster.role, cluster.dbname, cluster.password)
        session.send(terminate())
    out.server(
        "be_auth_md5_request",
        "AuthenticationMD5Password with its 4-byte random salt",
        received[0],
        "AuthenticationMD5Password",
    )
    out.server(
        "be_auth_md5_ok_startup",
        "after a correct md5 PasswordMessage: AuthenticationOk, ParameterStatus*, "
        "BackendKeyData, ReadyForQuery",
        b"".join(received[1:]),
        _STARTUP,
    )

    with RawSession(cluster.host, cluster.port) as session:
        session.send(startup_message({"user": cluster.role, "database": cluster.dbname}))
        session.read_message()
        session.send(password_message("md5" + "0" * 32))
        out.server(
            "be_auth_failed_fatal",
            "after a wrong md5 PasswordMessage: ErrorResponse FATAL 28P01, then the server closes",
            session.read_to_eof(),
            "ErrorResponse",
        )
    return out.vectors


def capture_scram(cluster: ThrowawayCluster) -> list[Vector]:
    out = Collector("ThrowawayCluster scram-sha-256, raw socket")
    with RawSession(cluster.host, cluster.port) as session:
        received = session.login(cluster.role, cluster.dbname, cluster.password)
        session.send(terminate())
    if len(received) < 4:
        raise CaptureError(f"short SCRAM exchange: {[label_backend(m) for m in received]}")
    out.server(
        "be_auth_sasl",
        "AuthenticationSASL over plain TCP: offers SCRAM-SHA-256 only (no -PLUS without TLS)",
        received[0],
        "AuthenticationSASL",
    )
    out.server(
        "be_auth_sasl_continue",
        "AuthenticationSASLContinue: server-first-message r=<nonce>,s=<salt>,i=4096",
        received[1],
        "AuthenticationSASLContinue",
    )
    out.server(
        "be_auth_sasl_final",
        "AuthenticationSASLFinal: server-final-message v=<server signature>",
        received[2],
        "AuthenticationSASLFinal",
    )
    out.server(
        "be_auth_sasl_ok_startup",
        "after SASLFinal: AuthenticationOk, ParameterStatus*, BackendKeyData, ReadyForQuery",
        b"".join(received[3:]),
        _STARTUP,
    )
    return out.vectors


def capture_tls(cluster: ThrowawayCluster) -> list[Vector]:
    out = Collector("ThrowawayCluster hostssl scram, raw socket")
    assert cluster.ca_cert_path is not None
    with RawSession(cluster.host, cluster.port) as session:
        session.send(ssl_request())
        out.server(
            "be_ssl_response_s",
            "reply to SSLRequest from a server with ssl=on (the TLS handshake follows)",
            session.read_byte(),
        )
        session.start_tls(cluster.ca_cert_path)
        session.send(startup_message({"user": cluster.role, "database": cluster.dbname}))
        out.server(
            "be_auth_sasl_tls",
            "AuthenticationSASL inside TLS: offers SCRAM-SHA-256-PLUS and SCRAM-SHA-256",
            session.read_message(),
            "AuthenticationSASL",
        )
    return out.vectors


# Client to server, through the recording forwarder.


def _split_batches(raw: bytes) -> list[bytes]:
    """Group frontend messages into batches, each ending with a Sync or a Flush."""
    batches: list[bytes] = []
    current: list[bytes] = []
    for message in split_frontend(raw):
        current.append(message)
        if message[:1] in (b"S", b"H"):
            batches.append(b"".join(current))
            current = []
    if current:
        batches.append(b"".join(current))
    return batches


def _startup_parts(raw: bytes) -> tuple[bytes, bytes]:
    """(SSLRequest or b'', StartupMessage) from the start of a client stream."""
    messages = split_frontend(raw)
    if label_frontend(messages[0]) == "SSLRequest":
        return messages[0], messages[1]
    return b"", messages[0]


def _via(forwarder: RecordingForwarder, server: PgServer) -> PgServer:
    return PgServer("127.0.0.1", forwarder.port, server.superuser, server.password)


def capture_psycopg(
    server: PgServer, scram: ThrowawayCluster, md5: ThrowawayCluster
) -> list[Vector]:
    libpq = psycopg.pq.version()
    out = Collector(
        f"psycopg {psycopg.__version__} (libpq {libpq // 10000}.{libpq % 10000}) "
        "via recording forwarder"
    )
    with (
        RecordingForwarder(server.host, server.port) as forwarder,
        psycopg.connect(_via(forwarder, server).dsn("postgres")) as session,
    ):
        recording = forwarder.recording(0)
        ssl_part, startup = _startup_parts(recording.client_bytes())
        if ssl_part:
            out.client(
                "fe_psycopg_ssl_request",
                "psycopg's SSLRequest (sslmode=prefer, the default)",
                ssl_part,
                "SSLRequest",
            )
        out.client(
            "fe_psycopg_startup_message",
            "psycopg's StartupMessage (default connection options)",
            startup,
            "StartupMessage",
        )

        marks = recording.marks()
        with session.pipeline():
            cursor = session.cursor()
            cursor.execute("SELECT %s::int4 AS n", [1])
            cursor.execute("SELECT %s::text AS label, %s::int8 AS big", ["two", 2])
            cursor.execute("SELECT 3 AS three")
        session.commit()
        client_raw, server_raw = recording.since(marks)
        out.client(
            "fe_psycopg_pipeline_batch",
            "psycopg conn.pipeline() with three cursor.execute() calls (autocommit off, so "
            "BEGIN first), then commit()",
            client_raw,
        )
        out.server(
            "be_psycopg_pipeline_batch",
            "the server's answers to fe_psycopg_pipeline_batch",
            server_raw,
        )

        for name, cancel in (("cancel_safe", session.cancel_safe), ("cancel", session.cancel)):
            before = forwarder.connection_count()
            _cancel_running_query(session, cancel)
            forwarder.wait_for_connections(before + 1)
            cancel_recording = forwarder.recording(before)
            cancel_recording.wait_finished()
            out.client(
                f"fe_psycopg_{name}",
                f"psycopg conn.{name}() while pg_sleep(5) runs: all the bytes of the "
                "new cancel connection (pid and secret from the session's BackendKeyData)",
                cancel_recording.client_bytes(),
            )

    with RecordingForwarder(server.host, server.port) as forwarder:
        dsn = _via(forwarder, server).dsn("postgres", sslmode="disable", max_protocol_version="3.2")
        with psycopg.connect(dsn):
            client_raw, server_raw = forwarder.recording(0).since((0, 0))
        out.client(
            "fe_psycopg_startup_protocol_3_2",
            "psycopg StartupMessage with max_protocol_version=3.2 (libpq 18), sslmode=disable",
            split_frontend(client_raw)[0],
            "StartupMessage",
        )
        out.server(
            "be_psycopg_startup_protocol_3_2",
            "PostgreSQL 15 answering libpq's 3.2 StartupMessage: NegotiateProtocolVersion "
            "(3.0), then the normal startup",
            server_raw,
            f"NegotiateProtocolVersion {_STARTUP}",
        )

    for cluster, method in ((scram, "scram"), (md5, "md5")):
        with RecordingForwarder(cluster.host, cluster.port) as forwarder:
            dsn = cluster.dsn(sslmode="disable").replace(
                f"port={cluster.port}", f"port={forwarder.port}"
            )
            with psycopg.connect(dsn):
                client_raw, _ = forwarder.recording(0).since((0, 0))
        out.client(
            f"fe_psycopg_{method}_login",
            f"psycopg logging in with {method} (sslmode=disable): StartupMessage, then its "
            "PasswordMessage(s) (SASLInitialResponse and SASLResponse for SCRAM)",
            client_raw,
            "StartupMessage PasswordMessage PasswordMessage"
            if method == "scram"
            else "StartupMessage PasswordMessage",
        )
    return out.vectors


def _cancel_running_query(
    session: psycopg.Connection[tuple[object, ...]], cancel: Callable[[], None]
) -> None:
    """Run 'SELECT pg_sleep(5)' in a thread and cancel it with ``cancel``."""
    canceled = threading.Event()

    def sleeper() -> None:
        try:
            session.execute("SELECT pg_sleep(5)")
        except psycopg.errors.QueryCanceled:
            canceled.set()

    thread = threading.Thread(target=sleeper)
    thread.start()
    time.sleep(0.3)
    cancel()
    thread.join(timeout=_SOCKET_TIMEOUT_S)
    session.rollback()
    if not canceled.is_set():
        raise CaptureError("the cancel request did not cancel the query")


@dataclass(frozen=True)
class _AsyncpgCapture:
    """(client bytes, server bytes) for each step of the asyncpg scenario."""

    startup: bytes
    fetch: tuple[bytes, bytes]
    prepare: tuple[bytes, bytes]
    cursor: tuple[bytes, bytes]


async def _asyncpg_scenario(forwarder: RecordingForwarder, server: PgServer) -> _AsyncpgCapture:
    connection = await asyncpg.connect(
        host="127.0.0.1",
        port=forwarder.port,
        user=server.superuser,
        password=server.password,
        database="postgres",
    )
    try:
        recording = forwarder.recording(0)
        startup = recording.client_bytes()

        marks = recording.marks()
        rows = await connection.fetch(_ASYNCPG_FETCH_SQL, 40, "x")
        if len(rows) != 2:
            raise CaptureError(f"asyncpg fetch returned {rows!r}")
        fetch = recording.since(marks)

        marks = recording.marks()
        statement = await connection.prepare("SELECT $1::int8 * 2 AS doubled")
        if await statement.fetchval(21) != 42:
            raise CaptureError("asyncpg prepared statement returned the wrong value")
        prepare = recording.since(marks)

        marks = recording.marks()
        async with connection.transaction():
            cursor_sql = "SELECT g FROM generate_series(1, 5) g"
            cursor_rows = [row async for row in connection.cursor(cursor_sql, prefetch=2)]
        if len(cursor_rows) != 5:
            raise CaptureError(f"asyncpg cursor returned {cursor_rows!r}")
        cursor = recording.since(marks)
    finally:
        await connection.close()
    return _AsyncpgCapture(startup, fetch, prepare, cursor)


_ASYNCPG_FETCH_SQL = "SELECT $1::int4 + g AS n, $2::text AS label FROM generate_series(1, 2) g"


def capture_asyncpg(server: PgServer) -> list[Vector]:
    out = Collector(f"asyncpg {asyncpg.__version__} via recording forwarder")
    with RecordingForwarder(server.host, server.port) as forwarder:
        captured = asyncio.run(_asyncpg_scenario(forwarder, server))

    ssl_part, startup = _startup_parts(captured.startup)
    if ssl_part:
        out.client(
            "fe_asyncpg_ssl_request",
            "asyncpg's SSLRequest (ssl='prefer', the default)",
            ssl_part,
            "SSLRequest",
        )
    out.client(
        "fe_asyncpg_startup_message",
        "asyncpg's StartupMessage (default connection options)",
        startup,
        "StartupMessage",
    )
    batches = _split_batches(captured.fetch[0])
    if len(batches) != 2:
        raise CaptureError(f"asyncpg fetch sent {len(batches)} batches, expected 2")
    out.client(
        "fe_asyncpg_fetch_parse_describe",
        f"asyncpg connection.fetch({_ASYNCPG_FETCH_SQL!r}, 40, 'x') on a new statement, "
        "first batch: Parse(__asyncpg_stmt_N__), Describe(S), Flush (no Sync)",
        batches[0],
        "Parse Describe Flush",
    )
    out.client(
        "fe_asyncpg_fetch_bind_execute",
        "the same fetch, second batch after the descriptions arrived: Bind (binary "
        "parameters and results), Execute, Sync",
        batches[1],
        "Bind Execute Sync",
    )
    out.server(
        "be_asyncpg_fetch",
        "the server's answers to fe_asyncpg_fetch_parse_describe and fe_asyncpg_fetch_bind_execute",
        captured.fetch[1],
        "ParseComplete ParameterDescription RowDescription BindComplete DataRow DataRow "
        "CommandComplete ReadyForQuery",
    )
    batches = _split_batches(captured.prepare[0])
    if len(batches) != 2:
        raise CaptureError(f"asyncpg prepare/fetchval sent {len(batches)} batches, expected 2")
    out.client(
        "fe_asyncpg_prepare",
        "asyncpg connection.prepare('SELECT $1::int8 * 2 AS doubled'): Parse, Describe(S), "
        "Flush (no Sync)",
        batches[0],
        "Parse Describe Flush",
    )
    out.client(
        "fe_asyncpg_prepared_bind_execute",
        "asyncpg statement.fetchval(21) on that prepared statement: Bind, Execute(max_rows=1), "
        "Sync",
        batches[1],
        "Bind Execute Sync",
    )
    out.server(
        "be_asyncpg_prepare",
        "the server's answers to fe_asyncpg_prepare and fe_asyncpg_prepared_bind_execute "
        "(PortalSuspended: fetchval executes with a row limit of 1)",
        captured.prepare[1],
        "ParseComplete ParameterDescription RowDescription BindComplete DataRow "
        "PortalSuspended ReadyForQuery",
    )
    out.client(
        "fe_asyncpg_cursor_prefetch",
        "asyncpg cursor(prefetch=2) over 5 rows inside a transaction: Query('BEGIN;'), "
        "Parse/Describe/Flush, Bind/Execute(max_rows=2)/Sync, Execute/Sync x2, Close/Sync, "
        "Query('COMMIT;')",
        captured.cursor[0],
    )
    out.server(
        "be_asyncpg_cursor_prefetch",
        "the server's answers to fe_asyncpg_cursor_prefetch (PortalSuspended between batches)",
        captured.cursor[1],
    )
    return out.vectors


# --------------------------------------------------------------------------
# Output.


def write_vectors(outdir: Path, vectors: Sequence[Vector], summary: str) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    for stale in outdir.glob("*.hex"):
        first_line = stale.read_text().split("\n", 1)[0]
        if first_line.startswith(("# server->client:", "# client->server:")):
            stale.unlink()
    for vector in vectors:
        (outdir / f"{vector.name}.hex").write_text(to_hex_file(vector))
    (outdir / "MANIFEST.md").write_text(manifest(vectors, summary))


def manifest(vectors: Sequence[Vector], summary: str) -> str:
    lines = [
        "# PostgreSQL wire vectors",
        "",
        "Bytes captured from real servers and drivers by "
        "`python -m tests.support.capture_pg_vectors tests/protocols/postgres/vectors`.",
        f"{summary}",
        "",
        "Each `<name>.hex` file has one `# direction: description` line, then lowercase hex "
        "wrapped at 64 characters; ignore `#` lines and join the rest "
        "(`bytes.fromhex`). `be_` = backend (server to client), `fe_` = frontend "
        "(client to server). A file holds whole messages, back to back, as they "
        "crossed the wire.",
        "",
        "Some values change on every capture: BackendKeyData pid and secret, the "
        "process id in NotificationResponse, MD5 salts, SCRAM nonces/salts/proofs, "
        "CancelRequest keys, ErrorResponse source line numbers. Test structure and "
        "framing, not those values.",
        "",
        "| file | direction | bytes | source | what | messages |",
        "| --- | --- | ---: | --- | --- | --- |",
    ]
    for vector in vectors:
        cells = [
            f"`{vector.name}.hex`",
            vector.direction,
            str(len(vector.raw)),
            vector.source,
            vector.description,
            ", ".join(_collapse(vector.labels())),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _collapse(labels: Sequence[str]) -> Iterator[str]:
    """Fold runs: ParameterStatus(a), ParameterStatus(b) -> ParameterStatus x2."""
    index = 0
    while index < len(labels):
        base = labels[index].split("(")[0]
        run = index
        while run < len(labels) and labels[run].split("(")[0] == base and base in _FOLDED:
            run += 1
        if run - index > 1:
            yield f"{base} x{run - index}"
            index = run
        else:
            yield labels[index]
            index += 1


_FOLDED = frozenset({"ParameterStatus", "DataRow", "CopyData"})


@contextlib.contextmanager
def _clusters() -> Iterator[tuple[ThrowawayCluster, ThrowawayCluster, ThrowawayCluster]]:
    with (
        ThrowawayCluster("md5") as md5,
        ThrowawayCluster("scram-sha-256", tls=True) as scram,
        ThrowawayCluster("scram-sha-256", tls=True, hostssl_only=True) as tls,
    ):
        yield md5, scram, tls


def capture_all() -> tuple[list[Vector], str]:
    server = local_server_from_env()
    with psycopg.connect(server.dsn("postgres")) as probe:
        row = probe.execute("SELECT version()").fetchone()
    server_version = row[0] if row else "unknown"
    vectors = capture_local_server(server)
    with _clusters() as (md5, scram, tls):
        vectors += capture_md5(md5)
        vectors += capture_scram(scram)
        vectors += capture_tls(tls)
        vectors += capture_psycopg(server, scram, md5)
    vectors += capture_asyncpg(server)
    summary = f"Server: {server_version}."
    return vectors, summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("outdir", type=Path, help="where to write <name>.hex and MANIFEST.md")
    args = parser.parse_args(argv)
    vectors, summary = capture_all()
    write_vectors(args.outdir, vectors, summary)
    for vector in vectors:
        print(
            f"{vector.name:45} {len(vector.raw):6d} bytes  {', '.join(_collapse(vector.labels()))}"
        )
    print(f"{len(vectors)} vectors written to {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
