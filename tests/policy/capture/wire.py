"""A recording TCP relay: what a client sends a PostgreSQL or MySQL server, as SQL text.

It forwards bytes verbatim both ways and reads only the client's side: PostgreSQL's
Query and Parse messages, MySQL's COM_QUERY and COM_STMT_PREPARE (and, as a marker,
COM_RESET_CONNECTION). Plain TCP only: the capture turns TLS off.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102

#: The marker recorded for MySQL's COM_RESET_CONNECTION (a command, not SQL).
COM_RESET_CONNECTION = "<COM_RESET_CONNECTION>"


@dataclass
class Recording:
    """The SQL texts clients sent, in order, across every connection."""

    texts: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, text: str) -> None:
        with self.lock:
            self.texts.append(text)

    def take(self) -> list[str]:
        with self.lock:
            texts, self.texts = self.texts, []
        return texts


def _read_exact(sock: socket.socket, size: int, sink: socket.socket) -> bytes:
    """`size` bytes from `sock`, each forwarded to `sink` as it comes."""
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise EOFError
        sink.sendall(chunk)
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _cstring(payload: bytes, start: int) -> tuple[str, int]:
    end = payload.index(b"\x00", start)
    return payload[start:end].decode("utf-8", "replace"), end + 1


def _postgres_client(client: socket.socket, server: socket.socket, recording: Recording) -> None:
    while True:  # startup: untyped messages until the StartupMessage
        (length,) = struct.unpack("!i", _read_exact(client, 4, server))
        body = _read_exact(client, length - 4, server)
        (code,) = struct.unpack("!i", body[:4])
        if code == _CANCEL_REQUEST:
            return
        if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
            break
    while True:
        kind = _read_exact(client, 1, server)
        (length,) = struct.unpack("!i", _read_exact(client, 4, server))
        payload = _read_exact(client, length - 4, server)
        if kind == b"Q":
            recording.add(_cstring(payload, 0)[0])
        elif kind == b"P":
            _, after_name = _cstring(payload, 0)
            recording.add(_cstring(payload, after_name)[0])
        elif kind == b"X":
            return


def _mysql_client(client: socket.socket, server: socket.socket, recording: Recording) -> None:
    while True:
        header = _read_exact(client, 4, server)
        length = int.from_bytes(header[:3], "little")
        sequence = header[3]
        payload = _read_exact(client, length, server)
        if sequence != 0 or not payload:
            continue  # the handshake's and authentication's packets
        command = payload[0]
        if command in (0x03, 0x16):  # COM_QUERY, COM_STMT_PREPARE
            recording.add(payload[1:].decode("utf-8", "replace"))
        elif command == 0x1F:
            recording.add(COM_RESET_CONNECTION)
        elif command == 0x01:  # COM_QUIT
            return


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def _relay(client: socket.socket, upstream: tuple[str, int], dialect: str, rec: Recording) -> None:
    server = socket.create_connection(upstream)
    threading.Thread(target=_pump, args=(server, client), daemon=True).start()
    reader = _postgres_client if dialect == "postgres" else _mysql_client
    try:
        reader(client, server, rec)
        _pump(client, server)
    except (EOFError, OSError):
        pass
    finally:
        for end in (client, server):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


@contextmanager
def recording_relay(dialect: str, upstream: tuple[str, int]) -> Iterator[tuple[int, Recording]]:
    """A relay on 127.0.0.1 to `upstream` that records what clients send: (port, recording)."""
    listener = socket.create_server(("127.0.0.1", 0))
    recording = Recording()
    stopped = threading.Event()

    def accept() -> None:
        while not stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(
                target=_relay, args=(client, upstream, dialect, recording), daemon=True
            ).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], recording
    finally:
        stopped.set()
        listener.close()
