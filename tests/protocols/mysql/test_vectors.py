"""The codec against bytes captured from a real MariaDB 10.11, PyMySQL and the mariadb CLI.

Every stream is framed whole, byte by byte, and with trailing data, and must add
up to its input (what is forwarded is forwarded verbatim). Each command's
response goes through a ResponseTracker, which must call it complete exactly at
its last packet, and what it decodes must match what the capture tool stated
from the SQL or read back from the server (tests/support/capture_mysql_vectors.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from protocols.errors import ProtocolViolation
from protocols.mysql import messages as m
from protocols.mysql.auth import native_password, native_password_hash, verify_native_password
from protocols.mysql.messages import Capability as C
from protocols.mysql.packets import Packet, PacketReader
from protocols.mysql.responses import ResponseTracker, expects_response

VECTORS = Path(__file__).parent / "vectors"
FILES = sorted(path.stem for path in VECTORS.glob("*.json"))
SESSIONS = [name for name in FILES if name.startswith("session_")]
CAP = 1 << 24


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text())
    return data


def hex_bytes(lines: list[str]) -> bytes:
    return bytes.fromhex("".join(lines))


def expected(value: Any) -> Any:
    """Undo the capture's JSON encoding of bytes."""
    if isinstance(value, dict):
        if set(value) == {"bytes"}:
            return bytes.fromhex(value["bytes"])
        return {key: expected(item) for key, item in value.items()}
    if isinstance(value, list):
        return [expected(item) for item in value]
    return value


def frame_whole(stream: bytes) -> list[Packet]:
    reader = PacketReader(CAP)
    packets = reader.feed(stream)
    assert reader.buffered == 0
    return packets


def packets_of(stream: bytes) -> list[bytes]:
    return [packet.payload for packet in frame_whole(stream)]


def exchanges() -> Iterator[tuple[str, int, dict[str, Any]]]:
    for name in FILES:
        for index, exchange in enumerate(load(name)["exchanges"]):
            yield name, index, exchange


def test_vectors_exist() -> None:
    assert {
        "session_eof",
        "session_deprecate_eof",
        "session_metadata_cache",
        "login_native_password",
        "driver_pymysql",
        "driver_mariadb_cli",
        "ssl_requests",
        "clear_password_switch",
    } <= set(FILES)


@pytest.mark.parametrize("how", ["whole", "byte_by_byte", "trailing"])
def test_framing(how: str) -> None:
    tail = b"\x10\x00\x00\x00\x03SEL"  # the start of another packet
    for name, index, exchange in exchanges():
        for side in ("client", "server"):
            stream = hex_bytes(exchange[side])
            reader = PacketReader(CAP)
            if how == "whole":
                packets = reader.feed(stream)
            elif how == "byte_by_byte":
                packets = []
                for i in range(len(stream)):
                    packets += reader.feed(stream[i : i + 1])
            else:
                packets = reader.feed(stream + tail)
                assert reader.take_rest() == tail
            assert reader.buffered == 0
            assert b"".join(p.raw for p in packets) == stream, (name, index, side)
            if side == "server":
                assert [p.sequence_id for p in packets] == exchange["server_sequence_ids"]


# --- the command-phase sessions


@dataclass
class Statement:
    num_params: int
    column_types: tuple[int, ...] = ()
    types: tuple[int, ...] | None = None


@dataclass
class Replay:
    capabilities: int
    mariadb_capabilities: int
    greeting: m.HandshakeV10 | None = None
    statements: dict[int, Statement] = field(default_factory=dict)
    infile: ResponseTracker | None = None


def column_type(payload: bytes) -> int:
    column = m.ColumnDefinition.parse(payload)
    return column.type | (m.UNSIGNED_FLAG if column.flags & 0x20 else 0)


def check_client(replay: Replay, exchange: dict[str, Any], payload: bytes) -> None:
    client = expected(exchange["expect"].get("client", {}))
    if "query" in client:
        assert m.query_text(payload) == client["query"].encode()
    if "stmt_execute" in client:
        want = client["stmt_execute"]
        statement = replay.statements[want["statement_id"]]
        assert m.stmt_id(payload) == want["statement_id"]
        execute = m.parse_stmt_execute(payload, statement.num_params, statement.types)
        assert execute.statement_id == want["statement_id"]
        assert execute.new_params_bound == want["new_params_bound"]
        assert list(execute.types) == want["types"]
        assert list(execute.values) == want["values"]
        assert execute.iteration_count == 1
        assert execute.ambiguous == want.get("ambiguous", False)
        if execute.new_params_bound:
            statement.types = execute.types
    if "send_long_data" in client:
        want = client["send_long_data"]
        assert m.parse_send_long_data(payload) == (
            want["statement_id"],
            want["param"],
            want["data"],
        )
    if "fetch" in client:
        want = client["fetch"]
        assert m.parse_stmt_fetch(payload) == (want["statement_id"], want["rows"])
    if "statement_id" in client:
        assert m.stmt_id(payload) == client["statement_id"]


def replay_command(replay: Replay, name: str, exchange: dict[str, Any]) -> None:
    client = packets_of(hex_bytes(exchange["client"]))
    server = packets_of(hex_bytes(exchange["server"]))
    want = expected(exchange["expect"]["response"])
    kind = want["kind"]
    command = exchange["command"]
    (payload,) = client
    if command is None:
        # The client's answer to a LOCAL INFILE request: the server's reply follows.
        assert payload == b""
        assert replay.infile is not None
        tracker = replay.infile
        tracker.continue_after_local_infile()
        replay.infile = None
        rows: list[tuple[int, bytes]] = []
        columns: list[tuple[int, bytes]] = []
    else:
        assert m.command_of(payload) == command
        check_client(replay, exchange, payload)
        if not expects_response(command):
            assert kind == "none"
            assert server == []
            return
        rows = []
        columns = []
        tracker = ResponseTracker(
            command,
            replay.capabilities,
            mariadb_capabilities=replay.mariadb_capabilities,
            on_row=lambda p: rows.append((tracker.result_sets, p)),
            on_column=lambda p: columns.append((tracker.result_sets, p)),
        )
    for index, packet in enumerate(server):
        assert tracker.feed(packet) == (index == len(server) - 1), (name, index, packet[:16])
    assert tracker.complete

    if kind == "error":
        assert tracker.error is not None
        assert (tracker.error.code, tracker.error.sqlstate) == (want["code"], want["sqlstate"])
        assert tracker.summary()["error"] == {
            "code": want["code"],
            "sqlstate": want["sqlstate"],
            "message": tracker.error.message,
        }
        if "result_sets" in want:
            assert (tracker.result_sets, tracker.rows) == (want["result_sets"], want["rows"])
        return
    assert tracker.error is None
    if kind == "ok":
        assert tracker.ok is not None
        assert tracker.ok.header == 0
        summary = tracker.summary()
        assert summary["affected_rows"] == want["affected_rows"]
        assert summary["last_insert_id"] == want["last_insert_id"]
        assert tracker.result_sets == 0
        if "info" in want:
            assert tracker.ok.info == want["info"].encode()
        if "system_variables" in want:
            assert tracker.ok.system_variables().items() >= want["system_variables"].items()
        if "schema" in want:
            assert tracker.ok.schema() == want["schema"]
    elif kind in ("result", "cursor"):
        assert tracker.result_sets == want["result_sets"]
        if "rows" in want:
            assert tracker.rows == want["rows"]
            assert tracker.summary()["rows"] == want["rows"]
        assert tracker.cursor_opened == (kind == "cursor")
        if "affected_rows" in want:
            assert tracker.affected_rows == want["affected_rows"]
        if "warnings" in want:
            assert tracker.warnings == want["warnings"]
        check_rows(replay, exchange, payload, columns, rows, want)
    elif kind == "prepare":
        prepared = tracker.prepare_ok
        assert prepared is not None
        assert (prepared.statement_id, prepared.num_params, prepared.num_columns) == (
            want["statement_id"],
            want["num_params"],
            want["num_columns"],
        )
        assert len(columns) == prepared.num_columns
        replay.statements[prepared.statement_id] = Statement(
            prepared.num_params, tuple(column_type(p) for _, p in columns)
        )
    elif kind == "local_infile":
        assert tracker.local_infile
        assert tracker.infile_filename == want["filename"].encode()
        assert tracker.summary() == {"local_infile": want["filename"]}
        replay.infile = tracker
    elif kind == "fetch":
        assert tracker.rows == want["rows"]
    elif kind == "fields":
        assert tracker.columns == want["columns"] == len(columns)
        names = [m.ColumnDefinition.parse(p).name for _, p in columns]
        assert names == [b"id", b"v"]
    elif kind == "statistics":
        assert tracker.statistics is not None
        assert tracker.statistics.startswith(b"Uptime: ")
    elif kind == "eof":
        assert tracker.ok is None or tracker.ok.header == 0xFE
    else:
        raise AssertionError(f"unknown kind {kind}")
    status = m.ServerStatus(tracker.status_flags)
    for flag in want.get("status_has", []):
        assert status & m.ServerStatus[flag], flag
    for flag in want.get("status_lacks", []):
        assert not status & m.ServerStatus[flag], flag


def check_rows(
    replay: Replay,
    exchange: dict[str, Any],
    payload: bytes,
    columns: list[tuple[int, bytes]],
    rows: list[tuple[int, bytes]],
    want: dict[str, Any],
) -> None:
    types: dict[int, list[int]] = {}
    for result_set, column in columns:
        types.setdefault(result_set, []).append(column_type(column))
    if "text_rows" in want:
        got = [
            [None if v is None else v.decode() for v in m.parse_text_row(p, len(types[n]))]
            for n, p in rows
        ]
        assert got == want["text_rows"]
    if "binary_rows" in want:
        cached: tuple[int, ...] = ()
        if exchange["command"] == m.Command.STMT_EXECUTE:
            cached = replay.statements[m.stmt_id(payload)].column_types
        decoded = [list(m.parse_binary_row(p, tuple(types.get(n, cached)))) for n, p in rows]
        assert decoded == want["binary_rows"]


def replay_connection_phase(replay: Replay, exchange: dict[str, Any]) -> None:
    server = packets_of(hex_bytes(exchange["server"]))
    want = expected(exchange["expect"])
    if "greeting" in want:
        (payload,) = server
        greeting = m.HandshakeV10.parse(payload)
        assert greeting.build() == payload
        assert greeting.is_mariadb
        assert greeting.server_version.startswith("5.5.5-")
        assert len(greeting.auth_data) == 20
        assert not greeting.capabilities & C.LONG_PASSWORD
        assert greeting.mariadb_capabilities & m.MariaDbCapability.CACHE_METADATA
        if want["greeting"].get("version"):
            assert greeting.version == want["greeting"]["version"]
            assert greeting.connection_id == want["greeting"]["connection_id"]
        replay.greeting = greeting
        return
    login = want["login"]
    (client,) = packets_of(hex_bytes(exchange["client"]))
    response = m.HandshakeResponse41.parse(client)
    assert response.build() == client
    assert response.username == login["username"]
    assert replay.greeting is not None
    assert response.auth_response == native_password(
        login["password"].encode(), replay.greeting.auth_data
    )
    assert server[0][0] == 0x00
    m.OkPacket.parse(server[0], replay.capabilities)


@pytest.mark.parametrize("name", SESSIONS)
def test_session(name: str) -> None:
    vector = load(name)
    caps = vector["capabilities"]
    mariadb_caps = vector["mariadb_capabilities"]
    replay = Replay(caps, mariadb_caps)
    for exchange in vector["exchanges"]:
        if exchange["command"] is None and "response" not in exchange["expect"]:
            replay_connection_phase(replay, exchange)
        else:
            replay_command(replay, exchange["name"], exchange)


# --- logins


def test_login_native_password() -> None:
    vector = load("login_native_password")
    caps = vector["capabilities"]
    by_name = {exchange["name"]: exchange for exchange in vector["exchanges"]}

    def greeting(name: str) -> m.HandshakeV10:
        (payload,) = packets_of(hex_bytes(by_name[name]["server"]))
        return m.HandshakeV10.parse(payload)

    def client(name: str) -> list[Packet]:
        return frame_whole(hex_bytes(by_name[name]["client"]))

    def server(name: str) -> list[Packet]:
        return frame_whole(hex_bytes(by_name[name]["server"]))

    # A login MariaDB accepted, made with our native_password.
    login = expected(by_name["login"]["expect"]["login"])
    password = login["password"].encode()
    (packet,) = client("login")
    assert packet.sequence_id == 1
    response = m.HandshakeResponse41.parse(packet.payload)
    assert response.username == login["username"]
    assert response.database == login["database"]
    assert response.auth_plugin_name == login["plugin"]
    nonce = greeting("greeting").auth_data
    assert response.auth_response == native_password(password, nonce)
    (reply,) = server("login")
    assert reply.sequence_id == 2
    ok = m.OkPacket.parse(reply.payload, caps)
    assert ok.status_flags & m.ServerStatus.AUTOCOMMIT
    # What MariaDB stores, SELECT PASSWORD(...), is our intermediate.
    assert native_password_hash(password) == login["stored_hash"]
    assert verify_native_password(response.auth_response, nonce, login["stored_hash"])

    (reply,) = server("login_wrong_password")
    error = m.ErrPacket.parse(reply.payload)
    want = by_name["login_wrong_password"]["expect"]["login"]
    assert (error.code, error.sqlstate) == (want["code"], want["sqlstate"])
    assert "Access denied" in error.message

    # The client claims caching_sha2_password; MariaDB switches it to native.
    (packet,) = client("login_claims_caching_sha2")
    assert m.HandshakeResponse41.parse(packet.payload).auth_plugin_name == "caching_sha2_password"
    (reply,) = server("login_claims_caching_sha2")
    assert reply.sequence_id == 2
    switch = m.AuthSwitchRequest.parse(reply.payload)
    want = expected(by_name["login_claims_caching_sha2"]["expect"]["auth_switch"])
    assert switch.plugin_name == want["plugin"] == m.AuthPlugin.NATIVE
    assert switch.scramble == want["scramble"]
    assert switch.auth_data == want["scramble"] + b"\0"
    assert switch.build() == reply.payload
    (answer,) = client("auth_switch_response")
    assert answer.sequence_id == 3
    assert answer.payload == native_password(password, switch.scramble)
    (reply,) = server("auth_switch_response")
    assert (reply.sequence_id, reply.payload[0]) == (4, 0x00)

    # Length-encoded auth data and connect attributes.
    (packet,) = client("login_lenenc_attrs")
    login = expected(by_name["login_lenenc_attrs"]["expect"]["login"])
    response = m.HandshakeResponse41.parse(packet.payload)
    assert response.capabilities == login["capabilities"]
    assert response.capabilities & C.PLUGIN_AUTH_LENENC_CLIENT_DATA
    assert response.connect_attributes == login["connect_attributes"]
    assert response.auth_response == native_password(password, greeting("greeting_4").auth_data)
    assert response.build() == packet.payload
    assert server("login_lenenc_attrs")[0].payload[0] == 0x00


# --- real drivers


@pytest.mark.parametrize("name", ["driver_pymysql", "driver_mariadb_cli"])
def test_driver_connection(name: str) -> None:
    vector = load(name)
    (exchange,) = vector["exchanges"]
    want = expected(exchange["expect"]["driver"])
    client = frame_whole(hex_bytes(exchange["client"]))
    server = [p.payload for p in frame_whole(hex_bytes(exchange["server"]))]

    greeting = m.HandshakeV10.parse(server[0])
    response = m.HandshakeResponse41.parse(client[0].payload)
    assert response.build() == client[0].payload
    assert response.username == want["username"]
    assert response.database == want["database"]
    assert response.auth_plugin_name == want["plugin"]
    assert response.connect_attributes["_client_name"] == want["client_name"]
    assert response.auth_response == native_password(want["password"].encode(), greeting.auth_data)
    assert m.CHARSET_NAMES[response.character_set] in ("utf8mb4", "utf8mb3", "utf8")
    caps = response.capabilities & greeting.capabilities
    assert caps == vector["capabilities"]
    mariadb_caps = response.mariadb_capabilities & greeting.mariadb_capabilities
    if name == "driver_mariadb_cli":
        assert not response.capabilities & C.LONG_PASSWORD
        assert mariadb_caps & m.MariaDbCapability.CACHE_METADATA  # column counts carry a flag
    assert server[1][0] == 0x00  # login OK

    # Every command's response, in order, consumes the server's stream exactly.
    queries: list[bytes] = []
    pos = 2
    for packet in client[1:]:
        assert packet.sequence_id == 0
        command = m.command_of(packet.payload)
        if command == m.Command.QUERY:
            queries.append(m.query_text(packet.payload))
        if not expects_response(command):
            continue
        tracker = ResponseTracker(command, caps, mariadb_capabilities=mariadb_caps)
        while not tracker.feed(server[pos]):
            pos += 1
        pos += 1
        assert tracker.error is None
    assert pos == len(server)
    assert m.command_of(client[-1].payload) == m.Command.QUIT
    assert queries == [query.encode() for query in want["queries"]]


def test_ssl_requests() -> None:
    vector = load("ssl_requests")
    for exchange in vector["exchanges"]:
        (greeting_packet,) = packets_of(hex_bytes(exchange["server"]))
        greeting = m.HandshakeV10.parse(greeting_packet)
        assert greeting.capabilities & C.SSL
        (packet,) = frame_whole(hex_bytes(exchange["client"]))
        assert packet.sequence_id == 1
        assert m.is_ssl_request(packet.payload)
        request = m.SslRequest.parse(packet.payload)
        assert request.build() == packet.payload
        assert request.capabilities & C.SSL
        assert request.capabilities & C.PROTOCOL_41
        if "mariadb_cli" in exchange["name"]:
            assert request.mariadb_capabilities  # MariaDB's client clears CLIENT_MYSQL
        else:
            assert request.character_set == exchange["expect"]["ssl_request"]["character_set"]
        with pytest.raises(ProtocolViolation):
            m.HandshakeResponse41.parse(packet.payload)


def test_clear_password_switch() -> None:
    vector = load("clear_password_switch")
    assert vector["exchanges"]
    for exchange in vector["exchanges"]:
        want = exchange["expect"]["clear_password"]
        greeting_packet, switch_packet = frame_whole(hex_bytes(exchange["server"]))
        switch = m.AuthSwitchRequest.parse(switch_packet.payload)
        assert switch == m.AuthSwitchRequest(m.AuthPlugin.CLEAR, b"")
        assert switch_packet.sequence_id == 2
        login, answer = frame_whole(hex_bytes(exchange["client"]))
        response = m.HandshakeResponse41.parse(login.payload)
        assert response.username == want["username"]
        nonce = m.HandshakeV10.parse(greeting_packet.payload).auth_data
        assert response.auth_response == native_password(want["password"].encode(), nonce)
        assert answer.sequence_id == 3
        assert answer.payload == want["password"].encode() + b"\0"
