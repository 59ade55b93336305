"""A MySQL client at the command level, for tests that send what drivers never would.

It rides on a PyMySQL connection (login, TLS) and then writes commands and reads
answers itself, following each answer with the gateway's own `ResponseTracker`
(its correctness is proven by the codec tests against captured vectors). Commands
may be pipelined: `send` several, then `answer` each in order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import pymysql

from protocols.mysql.messages import Command, ErrPacket
from protocols.mysql.packets import read_lenenc_int
from protocols.mysql.responses import UNTRACKED_COMMANDS, ResponseTracker, expects_response

#: COM_STMT_EXECUTE flags.
NO_CURSOR, READ_ONLY_CURSOR = 0, 1
#: MYSQL_TYPE_VAR_STRING, the type a client binds text and numbers as here.
VAR_STRING = 0xFD


@dataclass(frozen=True)
class Answer:
    """What the server (through the gateway) said to one command."""

    command: int
    error: ErrPacket | None
    statement_id: int | None  # COM_STMT_PREPARE's
    num_params: int
    rows: list[bytes]  # row payloads as sent (text rows, or binary rows)
    affected_rows: int
    result_sets: int
    status_flags: int

    @property
    def errno(self) -> int | None:
        return None if self.error is None else self.error.code

    def text_rows(self) -> list[tuple[str | None, ...]]:
        """Text-protocol rows, decoded (every value as str)."""
        out = []
        for payload in self.rows:
            values: list[str | None] = []
            pos = 0
            while pos < len(payload):
                if payload[pos] == 0xFB:
                    values.append(None)
                    pos += 1
                    continue
                length, pos = read_lenenc_int(payload, pos)
                assert length is not None
                assert pos is not None
                values.append(payload[pos : pos + length].decode())
                pos += length
            out.append(tuple(values))
        return out


class RawMySql:
    def __init__(self, connection: pymysql.Connection[Any]) -> None:
        self.connection: Any = connection  # its private reads and writes are used
        self.capabilities = int(connection.client_flag)
        self._sent: list[int] = []

    # --- commands

    def send(self, payload: bytes) -> None:
        """Write one command (sequence id 0) without waiting for its answer."""
        header = struct.pack("<I", len(payload))[:3] + b"\0"
        self.connection._write_bytes(header + payload)
        if expects_response(payload[0]):
            self._sent.append(payload[0])

    def query(self, sql: str) -> Answer:
        self.send(bytes([Command.QUERY]) + sql.encode())
        return self.answer()

    def prepare(self, sql: str) -> Answer:
        self.send(bytes([Command.STMT_PREPARE]) + sql.encode())
        return self.answer()

    def execute(
        self, statement_id: int, params: tuple[str | None, ...] = (), *, cursor: int = NO_CURSOR,
        bind_types: bool = True,
    ) -> Answer:  # fmt: skip
        self.send(execute_payload(statement_id, params, cursor=cursor, bind_types=bind_types))
        return self.answer()

    def close(self, statement_id: int) -> None:
        self.send(bytes([Command.STMT_CLOSE]) + struct.pack("<I", statement_id))

    def reset(self, statement_id: int) -> Answer:
        self.send(bytes([Command.STMT_RESET]) + struct.pack("<I", statement_id))
        return self.answer()

    def long_data(self, statement_id: int, parameter: int, chunk: bytes) -> None:
        self.send(
            bytes([Command.STMT_SEND_LONG_DATA]) + struct.pack("<IH", statement_id, parameter)
            + chunk
        )  # fmt: skip

    def fetch(self, statement_id: int, rows: int) -> Answer:
        self.send(bytes([Command.STMT_FETCH]) + struct.pack("<II", statement_id, rows))
        return self.answer()

    def init_db(self, database: str) -> Answer:
        self.send(bytes([Command.INIT_DB]) + database.encode())
        return self.answer()

    def reset_connection(self) -> Answer:
        self.send(bytes([Command.RESET_CONNECTION]))
        return self.answer()

    # --- answers

    def answer(self) -> Answer:
        """Read the answer to the oldest command still unanswered."""
        command = self._sent.pop(0)
        rows: list[bytes] = []
        if command in UNTRACKED_COMMANDS:
            command = Command.PING  # only an ERR (or OK) is expected here
        tracker = ResponseTracker(command, self.capabilities, on_row=rows.append)
        while not tracker.feed(self._packet()):
            pass
        prepare_ok = tracker.prepare_ok
        return Answer(
            command,
            tracker.error,
            prepare_ok.statement_id if prepare_ok is not None else None,
            prepare_ok.num_params if prepare_ok is not None else 0,
            rows,
            tracker.affected_rows,
            tracker.result_sets,
            tracker.status_flags,
        )

    def _packet(self) -> bytes:
        payload = b""
        while True:
            header = self.connection._read_bytes(4)
            length = int.from_bytes(header[:3], "little")
            payload += bytes(self.connection._read_bytes(length))
            if length < 0xFFFFFF:
                return payload


def execute_payload(
    statement_id: int,
    params: tuple[str | None, ...] = (),
    *,
    cursor: int = NO_CURSOR,
    bind_types: bool = True,
) -> bytes:
    """COM_STMT_EXECUTE binding every parameter as a string (NULL for None)."""
    out = bytearray([Command.STMT_EXECUTE])
    out += struct.pack("<IBI", statement_id, cursor, 1)
    if params:
        bitmap = bytearray((len(params) + 7) // 8)
        for i, value in enumerate(params):
            if value is None:
                bitmap[i // 8] |= 1 << (i % 8)
        out += bitmap
        out.append(1 if bind_types else 0)
        if bind_types:
            out += struct.pack("<H", VAR_STRING) * len(params)
        for value in params:
            if value is not None:
                raw = value.encode()
                out += _lenenc(len(raw)) + raw
    return bytes(out)


def _lenenc(value: int) -> bytes:
    if value < 251:
        return bytes([value])
    if value < 1 << 16:
        return b"\xfc" + struct.pack("<H", value)
    return b"\xfd" + struct.pack("<I", value)[:3]
