"""Bad bytes from a MySQL client end that session with a clear error, and only that one."""

from __future__ import annotations

import random
import socket
import struct
from typing import Any

import pymysql
import pytest

from tests.support.approvals import agent_token
from tests.support.gateway import RunningGateway


def frame(payload: bytes, sequence_id: int) -> bytes:
    return struct.pack("<I", len(payload) | sequence_id << 24) + payload


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    header = b""
    while len(header) < 4:
        chunk = sock.recv(4 - len(header))
        assert chunk, "the gateway closed without a packet"
        header += chunk
    length, sequence_id = int.from_bytes(header[:3], "little"), header[3]
    payload = b""
    while len(payload) < length:
        chunk = sock.recv(length - len(payload))
        assert chunk
        payload += chunk
    return sequence_id, payload


def closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def still_serving(gateway: RunningGateway) -> None:
    conn: Any = gateway.pymysql(agent_token(gateway))
    with conn, conn.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


@pytest.mark.parametrize(
    "response",
    [
        b"\x00",  # far too short for a HandshakeResponse41
        b"\xff" * 40,  # every capability, lengths that run off the end
        struct.pack("<IIB23x", 0x200 | 0x8000, 1 << 24, 45) + b"agent",  # user not terminated
        random.Random(3).randbytes(64),
    ],
    ids=["short", "all-ones", "unterminated", "random"],
)
def test_a_malformed_handshake_response_gets_an_error_packet_and_a_close(
    mysql_gateway: RunningGateway, response: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", mysql_gateway.mysql_port), timeout=10) as sock:
        sequence_id, greeting = read_packet(sock)
        assert (sequence_id, greeting[0]) == (0, 10)  # protocol 10
        sock.sendall(frame(response, 1))
        sequence_id, answer = read_packet(sock)
        assert answer[0] == 0xFF, answer  # an ERR packet...
        assert sequence_id == 2  # ...numbered after the client's packet
        assert closed(sock)
    still_serving(mysql_gateway)


def test_garbage_commands_after_login_end_only_that_session(
    mysql_gateway: RunningGateway,
) -> None:
    rng = random.Random(5)
    for _ in range(5):
        conn: Any = mysql_gateway.pymysql(agent_token(mysql_gateway))
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        conn._sock.sendall(frame(garbage, rng.randrange(256)))  # a packet out of any order
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 2")
        except pymysql.err.MySQLError:
            pass  # the session may end; the gateway must not
        conn.close()
    still_serving(mysql_gateway)
