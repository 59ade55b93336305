"""A deliberately small PostgreSQL client over a plain socket, for sending what
real drivers never send (garbage, oversized or out-of-order messages) and for
reading exactly what the gateway answers. Built on the project's own codec.
"""

from __future__ import annotations

import socket
import struct

from protocols.postgres import messages as m
from protocols.postgres.framing import MessageFramer


class RawPg:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self._framer = MessageFramer(frozenset(m.BACKEND_TYPES), 64 * 1024 * 1024)

    def __enter__(self) -> RawPg:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def read_byte(self) -> bytes:
        return self.sock.recv(1)

    def read(self) -> m.BackendMessage | None:
        """The next message, or None when the gateway closed the connection."""
        while (raw := self._framer.next_message()) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._framer.feed(chunk)
        return m.decode_backend(raw)

    def read_until_ready(self) -> list[m.BackendMessage]:
        """Messages up to and including ReadyForQuery (or until the connection closes)."""
        out: list[m.BackendMessage] = []
        while (message := self.read()) is not None:
            out.append(message)
            if isinstance(message, m.ReadyForQuery):
                break
        return out

    def startup(self, **parameters: str) -> None:
        self.send(m.StartupMessage.build({"user": "agent", "database": "orders", **parameters}).raw)

    def login(self, token: str, **parameters: str) -> list[m.BackendMessage]:
        """Startup over plain TCP, answer the password request; messages until ready."""
        self.startup(**parameters)
        first = self.read()
        assert isinstance(first, m.AuthenticationCleartextPassword), first
        self.send(m.PasswordMessage.build(token.encode()).raw)
        return self.read_until_ready()

    def is_closed(self) -> bool:
        """True once the gateway has closed the connection: whatever it sent last is
        read and dropped, then reads return EOF within the socket timeout."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        except TimeoutError:
            return False
        return True


def function_call(oid: int = 1234) -> bytes:
    return m.frame(b"F", struct.pack("!ihhhh", oid, 0, 0, 0, 0))
