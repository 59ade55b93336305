"""Messages: round trips of everything built and parsed, hand-made edge cases, and
MySQL 8 bytes (MariaDB's real bytes are in test_vectors.py)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest

from protocols.errors import ProtocolViolation
from protocols.mysql import messages as m
from protocols.mysql.messages import Capability as C
from protocols.mysql.messages import FieldType as T
from protocols.mysql.packets import lenenc_bytes, lenenc_int

CLIENT_41 = (
    C.LONG_PASSWORD
    | C.LONG_FLAG
    | C.PROTOCOL_41
    | C.TRANSACTIONS
    | C.SECURE_CONNECTION
    | C.MULTI_RESULTS
    | C.PLUGIN_AUTH
)
SCRAMBLE = bytes(range(1, 21))

# MySQL 8.0.32's greeting, SSLRequest and HandshakeResponse41, as dumped byte by
# byte in "Exploring the MySQL protocol" (KarboniteKream/thoughts, 2024-01-08).
MYSQL8_GREETING = bytes.fromhex(
    "0a 382e302e333200 08000000 1c46194659764 04b 00 ffff ff 0200 ffdf 15"
    " 00000000000000000000 3f71347153455e5d227a323d00"
    " 63616368696e675f736861325f70617373776f726400".replace(" ", "")
)
MYSQL8_SSL_REQUEST = bytes.fromhex("08aa0a00ffffff00e0" + "00" * 23)
MYSQL8_RESPONSE = bytes.fromhex(
    "08aa0a00ffffff00e0"
    + "00" * 23
    + "726f6f7400"
    + "20382494b77530094f7aa0351eeea13eb2e5fe457f1bb4d9407254d3a993daeb55"
    + "7465737400"
    + "63616368696e675f736861325f70617373776f726400"
)


# --- connection phase


def test_mysql8_greeting() -> None:
    hs = m.HandshakeV10.parse(MYSQL8_GREETING)
    assert hs.protocol_version == 10
    assert hs.server_version == hs.version == "8.0.32"
    assert hs.connection_id == 8
    assert hs.auth_data == bytes.fromhex(
        "1c461946597640 4b3f7134715345 5e5d227a323d".replace(" ", "")
    )
    assert hs.capabilities == 0xDFFFFFFF
    assert hs.character_set == 255
    assert hs.status_flags == m.ServerStatus.AUTOCOMMIT
    assert hs.auth_plugin_name == m.AuthPlugin.CACHING_SHA2
    assert hs.mariadb_capabilities == 0
    assert not hs.is_mariadb
    assert hs.build() == MYSQL8_GREETING


def test_mysql8_ssl_request_and_response() -> None:
    assert m.is_ssl_request(MYSQL8_SSL_REQUEST)
    ssl = m.SslRequest.parse(MYSQL8_SSL_REQUEST)
    assert ssl == m.SslRequest(0x000AAA08, 0xFFFFFF, 0xE0)
    assert ssl.build() == MYSQL8_SSL_REQUEST
    assert not m.is_ssl_request(MYSQL8_RESPONSE)
    response = m.HandshakeResponse41.parse(MYSQL8_RESPONSE)
    assert response.username == "root"
    assert len(response.auth_response) == 32
    assert response.database == "test"
    assert response.auth_plugin_name == "caching_sha2_password"
    assert response.connect_attributes == {}
    assert response.build() == MYSQL8_RESPONSE


def test_mariadb_greeting_round_trip() -> None:
    hs = m.HandshakeV10(
        server_version="5.5.5-10.11.19-MariaDB-0+deb12u1",
        connection_id=0x01020304,
        auth_data=SCRAMBLE,
        capabilities=0x81FFF7FE,  # LONG_PASSWORD (CLIENT_MYSQL) clear
        character_set=45,
        status_flags=2,
        auth_plugin_name="mysql_native_password",
        mariadb_capabilities=int(m.MariaDbCapability.CACHE_METADATA | m.MariaDbCapability.PROGRESS),
    )
    raw = hs.build()
    assert raw[-22:] == b"mysql_native_password\0"
    parsed = m.HandshakeV10.parse(raw)
    assert parsed == hs
    assert parsed.is_mariadb
    assert parsed.version == "10.11.19-MariaDB-0+deb12u1"


def test_greeting_filler_ignored_for_mysql() -> None:
    raw = bytearray(MYSQL8_GREETING)
    struct.pack_into("<I", raw, 1 + 7 + 4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 6, 0xFFFF)
    assert m.HandshakeV10.parse(bytes(raw)).mariadb_capabilities == 0


def test_greeting_errors() -> None:
    with pytest.raises(ProtocolViolation, match="error instead"):
        m.HandshakeV10.parse(m.ErrPacket(1040, "08004", "Too many connections").build())
    with pytest.raises(ProtocolViolation):
        m.HandshakeV10.parse(b"\x09old")
    for cut in (5, 12, 20):
        with pytest.raises(ProtocolViolation):
            m.HandshakeV10.parse(MYSQL8_GREETING[:cut])
    with pytest.raises(ValueError, match="LONG_PASSWORD"):
        m.HandshakeV10("v", 1, SCRAMBLE, int(CLIENT_41), 45, 2, "p", 1).build()


def test_greeting_plugin_name_without_nul() -> None:
    assert m.HandshakeV10.parse(MYSQL8_GREETING[:-1]).auth_plugin_name == "caching_sha2_password"


RESPONSES = [
    m.HandshakeResponse41(
        int(CLIENT_41), 1 << 24, 45, "alice", SCRAMBLE, None, "mysql_native_password"
    ),
    m.HandshakeResponse41(
        int(CLIENT_41 | C.CONNECT_WITH_DB | C.PLUGIN_AUTH_LENENC_CLIENT_DATA | C.CONNECT_ATTRS),
        0xFFFFFF,
        255,
        "bob",
        b"t" * 1500,  # a JWT as a cleartext password
        "shop",
        "mysql_clear_password",
        {"_client_name": "libmysql", "program_name": "mysql", "note": "héllo"},
    ),
    m.HandshakeResponse41(
        int((CLIENT_41 & ~C.LONG_PASSWORD) | C.CONNECT_WITH_DB),
        1 << 30,
        33,
        "carol",
        b"",
        "",
        "",
        mariadb_capabilities=29,
    ),
    m.HandshakeResponse41(
        int(C.PROTOCOL_41 | C.PLUGIN_AUTH),
        1024,
        8,
        "dave",
        b"password",  # NUL-terminated: no SECURE_CONNECTION
        None,
        "mysql_clear_password",
    ),
    m.HandshakeResponse41(
        int(CLIENT_41 | C.ZSTD_COMPRESSION_ALGORITHM),
        1024,
        255,
        "erin",
        SCRAMBLE,
        None,
        "caching_sha2_password",
        zstd_compression_level=3,
    ),
]


@pytest.mark.parametrize("response", RESPONSES, ids=lambda r: r.username)
def test_handshake_response_round_trip(response: m.HandshakeResponse41) -> None:
    raw = response.build()
    assert m.HandshakeResponse41.parse(raw) == response
    assert not m.is_ssl_request(raw)


def test_handshake_response_repr_hides_the_secret() -> None:
    response = RESPONSES[1]
    assert "ttt" not in repr(response)
    assert "1500 bytes" in repr(response)


def test_handshake_response_layout() -> None:
    raw = RESPONSES[0].build()
    assert raw[:4] == struct.pack("<I", CLIENT_41)
    assert raw[9:32] == bytes(23)
    assert raw[32:38] == b"alice\0"
    assert raw[38] == 20  # 1-byte length under SECURE_CONNECTION
    raw = RESPONSES[2].build()
    assert raw[28:32] == struct.pack("<I", 29)  # MariaDB's extended capabilities
    raw = RESPONSES[1].build()
    assert raw[36:39] == b"\xfc\xdc\x05"  # lenenc 1500


def test_handshake_response_tolerates_missing_optional_fields() -> None:
    caps = int(CLIENT_41 | C.CONNECT_WITH_DB | C.CONNECT_ATTRS)
    raw = struct.pack("<IIB", caps, 1024, 45) + bytes(23) + b"u\0" + b"\x00"
    parsed = m.HandshakeResponse41.parse(raw)
    assert parsed.database is None
    assert parsed.auth_plugin_name is None
    assert parsed.connect_attributes == {}


def test_handshake_response_errors() -> None:
    good = RESPONSES[0].build()
    with pytest.raises(ProtocolViolation, match="too short"):
        m.HandshakeResponse41.parse(good[:20])
    with pytest.raises(ProtocolViolation):
        m.HandshakeResponse41.parse(good[:40])  # auth response cut
    with pytest.raises(ProtocolViolation, match="trailing"):
        m.HandshakeResponse41.parse(good + b"x")
    old = struct.pack("<IIB", int(C.LONG_PASSWORD), 1024, 8) + bytes(23) + b"u\0\0"
    with pytest.raises(ProtocolViolation, match=r"pre-4\.1"):
        m.HandshakeResponse41.parse(old)
    bad_user = struct.pack("<IIB", int(CLIENT_41), 1024, 45) + bytes(23) + b"\xff\0\0"
    with pytest.raises(ProtocolViolation, match="UTF-8"):
        m.HandshakeResponse41.parse(bad_user)
    with pytest.raises(ValueError, match="255"):
        m.HandshakeResponse41(int(CLIENT_41), 1, 45, "u", b"x" * 256).build()
    with pytest.raises(ValueError, match="CONNECT_WITH_DB"):
        m.HandshakeResponse41(int(CLIENT_41), 1, 45, "u", b"", "db").build()
    with pytest.raises(ValueError, match="NUL"):
        m.HandshakeResponse41(int(CLIENT_41), 1, 45, "u\0", b"").build()


def test_ssl_request() -> None:
    request = m.SslRequest(int(CLIENT_41), 1 << 24, 45)
    raw = request.build()
    assert len(raw) == 32
    assert m.is_ssl_request(raw)
    assert m.SslRequest.parse(raw) == m.SslRequest(int(CLIENT_41 | C.SSL), 1 << 24, 45)
    mariadb = m.SslRequest(int(CLIENT_41 & ~C.LONG_PASSWORD | C.SSL), 1 << 24, 45, 16)
    assert m.SslRequest.parse(mariadb.build()) == mariadb
    assert not m.is_ssl_request(raw[:31])
    no_ssl = struct.pack("<I", CLIENT_41) + raw[4:]
    assert not m.is_ssl_request(no_ssl)
    with pytest.raises(ProtocolViolation):
        m.SslRequest.parse(no_ssl)


def test_auth_switch_request() -> None:
    request = m.AuthSwitchRequest("mysql_native_password", SCRAMBLE + b"\0")
    raw = request.build()
    assert raw == b"\xfemysql_native_password\0" + SCRAMBLE + b"\0"
    parsed = m.AuthSwitchRequest.parse(raw)
    assert parsed == request
    assert parsed.scramble == SCRAMBLE
    clear = m.AuthSwitchRequest.parse(b"\xfemysql_clear_password\0")
    assert clear == m.AuthSwitchRequest("mysql_clear_password", b"")
    for bad in (b"", b"\x00x\0", b"\xfe", b"\xfeno-nul"):
        with pytest.raises(ProtocolViolation):
            m.AuthSwitchRequest.parse(bad)


def test_auth_more_data() -> None:
    assert m.AuthMoreData(b"\x04").build() == b"\x01\x04"
    assert m.AuthMoreData.parse(b"\x01\x03") == m.AuthMoreData(b"\x03")
    pem = b"-----BEGIN PUBLIC KEY-----\n..."
    assert m.AuthMoreData.parse(m.AuthMoreData(pem).build()).data == pem
    with pytest.raises(ProtocolViolation):
        m.AuthMoreData.parse(b"\x00\x03")


# --- responses

CAPS_41 = int(C.PROTOCOL_41 | C.TRANSACTIONS)
CAPS_TRACK = CAPS_41 | int(C.SESSION_TRACK)


def test_ok_packet_minimal() -> None:
    raw = b"\x00\x00\x00\x02\x00\x00\x00"
    ok = m.OkPacket.parse(raw, CAPS_41)
    assert ok == m.OkPacket(0, 0, 2, 0)
    assert ok.build(CAPS_41) == raw


def test_ok_packet_info_has_a_length_prefix_in_practice() -> None:
    info = b"Records: 3  Duplicates: 0  Warnings: 0"
    raw = b"\x00\x03\x01\x02\x00\x00\x00" + bytes((len(info),)) + info  # what MariaDB sends
    ok = m.OkPacket.parse(raw, CAPS_41)
    assert (ok.affected_rows, ok.last_insert_id, ok.info) == (3, 1, info)
    assert ok.build(CAPS_41) == raw
    # Documented string<EOF> without a prefix is kept whole.
    bare = b"\x00\x00\x00\x02\x00\x00\x00" + info
    assert m.OkPacket.parse(bare, CAPS_41).info == info


def test_ok_packet_big_numbers_round_trip() -> None:
    ok = m.OkPacket(2**40, 70000, 0x4003, 65535, b"x" * 300)
    for caps in (CAPS_41, CAPS_TRACK, int(C.TRANSACTIONS)):
        parsed = m.OkPacket.parse(ok.build(caps), caps)
        assert (parsed.affected_rows, parsed.last_insert_id, parsed.info) == (2**40, 70000, ok.info)
        assert parsed.status_flags == ok.status_flags


def test_ok_packet_session_track() -> None:
    variables = lenenc_bytes(lenenc_bytes(b"character_set_client") + lenenc_bytes(b"latin1"))
    schema = lenenc_bytes(lenenc_bytes(b"shop"))
    state = b"\x00" + variables + b"\x01" + schema
    ok = m.OkPacket(
        0,
        0,
        int(m.ServerStatus.AUTOCOMMIT | m.ServerStatus.SESSION_STATE_CHANGED),
        0,
        b"",
        0,
        state,
    )
    raw = ok.build(CAPS_TRACK)
    parsed = m.OkPacket.parse(raw, CAPS_TRACK)
    assert parsed == ok
    assert parsed.system_variables() == {"character_set_client": "latin1"}
    assert parsed.schema() == "shop"
    assert [kind for kind, _ in parsed.state_changes()] == [0, 1]
    # Without SESSION_TRACK the same bytes are just info.
    assert m.OkPacket.parse(raw, CAPS_41).session_state == b""


def test_ok_packet_with_eof_header() -> None:
    raw = b"\xfe\x00\x00\x22\x00\x01\x00"
    ok = m.OkPacket.parse(raw, CAPS_41 | int(C.DEPRECATE_EOF))
    assert (ok.header, ok.status_flags, ok.warnings) == (0xFE, 0x22, 1)
    assert ok.build(CAPS_41) == raw


def test_ok_packet_errors() -> None:
    for bad in (
        b"",
        b"\xff\x00",
        b"\x00",
        b"\x00\x00",
        b"\x00\x00\x00\x02",
        b"\x00\xfb\x00\0\0\0\0",
    ):
        with pytest.raises(ProtocolViolation):
            m.OkPacket.parse(bad, CAPS_41)
    with pytest.raises(ProtocolViolation, match="trailing"):
        m.OkPacket.parse(b"\x00\x00\x00\x02\x00\x00\x00\x00x", CAPS_TRACK)


def test_err_packet() -> None:
    err = m.ErrPacket(1146, "42S02", "Table 'test.nope' doesn't exist")
    raw = err.build()
    assert raw == b"\xff\x7a\x04#42S02" + err.message.encode()
    assert m.ErrPacket.parse(raw) == err
    bare = err.build(protocol_41=False)
    assert bare == b"\xff\x7a\x04" + err.message.encode()
    assert m.ErrPacket.parse(bare) == m.ErrPacket(1146, "HY000", err.message)
    assert m.ErrPacket.parse(b"\xff\x15\x04#28000\xe9").message == "\ufffd"
    with pytest.raises(ValueError, match="5 characters"):
        m.ErrPacket(1, "123", "x").build()
    for bad in (b"", b"\x00\x01\x02", b"\xff\x01", b"\xff\x01\x00#42"):
        with pytest.raises(ProtocolViolation):
            m.ErrPacket.parse(bad)


def test_progress_report() -> None:
    assert m.is_progress_report(b"\xff\xff\xff\x01\x01\x02\x00\x00\x00")
    assert not m.is_progress_report(m.ErrPacket(1146, "42S02", "x").build())


def test_eof_packet() -> None:
    eof = m.EofPacket(3, 0x0A)
    raw = eof.build()
    assert raw == b"\xfe\x03\x00\x0a\x00"
    assert m.is_eof(raw)
    assert m.EofPacket.parse(raw) == eof
    assert m.EofPacket.parse(b"\xfe") == m.EofPacket(0, 0)
    assert not m.is_eof(b"\xfe" + bytes(8))
    assert not m.is_eof(b"\x00\x00\x00")
    with pytest.raises(ProtocolViolation):
        m.EofPacket.parse(b"\xfe\x00")
    with pytest.raises(ProtocolViolation):
        m.EofPacket.parse(b"\x00\x00\x00\x00\x00")


def test_local_infile_request() -> None:
    raw = b"\xfb/etc/passwd"
    assert m.is_local_infile_request(raw)
    assert not m.is_local_infile_request(b"\x01")
    assert m.LocalInfileRequest.parse(raw).filename == b"/etc/passwd"
    assert m.LocalInfileRequest(b"/etc/passwd").build() == raw


def test_column_count() -> None:
    assert m.parse_column_count(b"\x03") == 3
    assert m.parse_column_count(b"\xfc\x00\x01") == 256
    assert m.parse_column_count(b"\x02\x01") == 2  # with a "metadata follows" byte
    for bad in (b"", b"\x00", b"\xfb"):
        with pytest.raises(ProtocolViolation):
            m.parse_column_count(bad)


def test_column_definition_round_trip() -> None:
    column = m.ColumnDefinition(b"test", b"t", b"t", b"id", b"id", 63, 11, T.LONG, 0x4203, 0)
    raw = column.build()
    assert raw.startswith(b"\x03def\x04test\x01t\x01t\x02id\x02id\x0c")
    assert len(raw) == 4 + 5 + 2 + 2 + 3 + 3 + 13
    assert m.ColumnDefinition.parse(raw) == column
    extended = raw[:19] + lenenc_bytes(b"\x00\x04json") + raw[19:]
    assert m.ColumnDefinition.parse(extended, extended_metadata=True) == column
    with pytest.raises(ProtocolViolation):
        m.ColumnDefinition.parse(raw[:-5])


def test_stmt_prepare_ok() -> None:
    raw = b"\x00\x07\x00\x00\x00\x02\x00\x03\x00\x00\x01\x00"
    prepared = m.StmtPrepareOk.parse(raw)
    assert prepared == m.StmtPrepareOk(7, 2, 3, 1)
    assert prepared.build() == raw
    no_metadata = m.StmtPrepareOk(7, 2, 3, 1, metadata_follows=False)
    assert m.StmtPrepareOk.parse(no_metadata.build()) == no_metadata
    with pytest.raises(ProtocolViolation):
        m.StmtPrepareOk.parse(raw[:9])
    with pytest.raises(ProtocolViolation):
        m.StmtPrepareOk.parse(b"\xff" + raw[1:])


# --- commands


def test_command_helpers() -> None:
    assert m.command_of(b"\x03SELECT 1") == m.Command.QUERY
    with pytest.raises(ProtocolViolation):
        m.command_of(b"")
    assert m.query_text(b"\x03SELECT 1") == b"SELECT 1"
    assert m.query_text(b"\x03") == b""
    with pytest.raises(ProtocolViolation):
        m.query_text(b"\x16SELECT 1")
    for command in (0x17, 0x18, 0x19, 0x1A, 0x1C, 0xFA):
        assert m.stmt_id(bytes((command,)) + struct.pack("<I", 0xDEADBEEF) + b"rest") == 0xDEADBEEF
    with pytest.raises(ProtocolViolation):
        m.stmt_id(b"\x03\x01\x00\x00\x00")
    with pytest.raises(ProtocolViolation):
        m.stmt_id(b"\x19\x01\x00")
    assert m.Command.STMT_BULK_EXECUTE.value == 0xFA
    assert len(m.Command) == 33


def test_send_long_data_and_fetch() -> None:
    raw = b"\x18" + struct.pack("<IH", 9, 2) + b"chunk"
    assert m.parse_send_long_data(raw) == (9, 2, b"chunk")
    with pytest.raises(ProtocolViolation):
        m.parse_send_long_data(b"\x18\x01\x00\x00\x00\x01")
    assert m.parse_stmt_fetch(b"\x1c" + struct.pack("<II", 9, 100)) == (9, 100)
    with pytest.raises(ProtocolViolation):
        m.parse_stmt_fetch(b"\x1c" + struct.pack("<II", 9, 100) + b"x")


def test_query_attributes() -> None:
    caps = int(C.QUERY_ATTRIBUTES)
    # One attribute "trace" = "abc" (VAR_STRING), then the SQL.
    raw = (
        b"\x03\x01\x01"  # parameter_count 1, parameter_set_count 1
        + b"\x00\x01"  # null bitmap, new_params_bind_flag
        + struct.pack("<H", T.VAR_STRING)
        + lenenc_bytes(b"trace")
        + lenenc_bytes(b"abc")
        + b"SELECT 1"
    )
    assert m.query_text(raw, caps) == b"SELECT 1"
    assert m.parse_query_attributes(raw) == {"trace": "abc"}
    assert m.query_text(b"\x03\x00\x01SELECT 2", caps) == b"SELECT 2"
    assert m.query_text(raw) == raw[1:]  # without the capability it is all SQL


def execute_payload(
    statement: int,
    values: Sequence[tuple[int, bytes | None]],
    *,
    flags: int = 0,
    bind: bool = True,
) -> bytes:
    body = b"\x17" + struct.pack("<IBI", statement, flags, 1)
    if values:
        bitmap = bytearray((len(values) + 7) // 8)
        for index, (_, wire) in enumerate(values):
            if wire is None:
                bitmap[index // 8] |= 1 << (index % 8)
        body += bytes(bitmap) + (b"\x01" if bind else b"\x00")
        if bind:
            body += b"".join(struct.pack("<H", kind) for kind, _ in values)
        body += b"".join(wire or b"" for _, wire in values)
    return body


PARAMS: list[tuple[int, bytes | None, object]] = [
    (T.TINY, b"\xf9", -7),
    (T.TINY | m.UNSIGNED_FLAG, b"\xf9", 249),
    (T.SHORT, struct.pack("<h", -300), -300),
    (T.YEAR, struct.pack("<h", 2024), 2024),
    (T.INT24, struct.pack("<i", -70000), -70000),
    (T.LONG | m.UNSIGNED_FLAG, struct.pack("<I", 2**32 - 1), 2**32 - 1),
    (T.LONGLONG, struct.pack("<q", -(2**63)), -(2**63)),
    (T.LONGLONG | m.UNSIGNED_FLAG, struct.pack("<Q", 2**64 - 1), 2**64 - 1),
    (T.FLOAT, struct.pack("<f", 0.5), 0.5),
    (T.DOUBLE, struct.pack("<d", -1e300), -1e300),
    (T.NEWDECIMAL, lenenc_bytes(b"-12.50"), "-12.50"),
    (T.DECIMAL, lenenc_bytes(b"1"), "1"),
    (T.STRING, lenenc_bytes("ünïcode".encode()), "ünïcode"),
    (T.VAR_STRING, lenenc_bytes(b"\xff\xfe"), b"\xff\xfe"),  # not UTF-8: bytes
    (T.VARCHAR, lenenc_bytes(b""), ""),
    (T.ENUM, lenenc_bytes(b"red"), "red"),
    (T.SET, lenenc_bytes(b"a,b"), "a,b"),
    (T.JSON, lenenc_bytes(b'{"a": 1}'), '{"a": 1}'),
    (T.BLOB, lenenc_bytes(b"blob"), b"blob"),
    (T.TINY_BLOB, lenenc_bytes(b"tb"), b"tb"),
    (T.MEDIUM_BLOB, lenenc_bytes(b"mb"), b"mb"),
    (T.LONG_BLOB, lenenc_bytes(b"x" * 70000), b"x" * 70000),
    (T.GEOMETRY, lenenc_bytes(b"\x00\x01"), b"\x00\x01"),
    (T.BIT, lenenc_bytes(b"\x05"), b"\x05"),
    (0x42, lenenc_bytes(b"??"), b"??"),  # unknown type: length-encoded bytes
    (T.NULL, None, None),
    (T.LONGLONG, None, None),  # NULL through the bitmap whatever the type
    (T.DATE, b"\x00", "0000-00-00"),
    (T.DATE, b"\x04" + struct.pack("<HBB", 1999, 12, 31), "1999-12-31"),
    (T.DATETIME, b"\x00", "0000-00-00 00:00:00"),
    (T.DATETIME, b"\x04" + struct.pack("<HBB", 2000, 1, 2), "2000-01-02 00:00:00"),
    (T.DATETIME, b"\x07" + struct.pack("<HBBBBB", 2000, 1, 2, 3, 4, 5), "2000-01-02 03:04:05"),
    (
        T.TIMESTAMP,
        b"\x0b" + struct.pack("<HBBBBBI", 2000, 1, 2, 3, 4, 5, 6),
        "2000-01-02 03:04:05.000006",
    ),
    (T.TIME, b"\x00", "00:00:00"),
    (T.TIME, b"\x08" + struct.pack("<BIBBB", 0, 0, 1, 2, 3), "01:02:03"),
    (T.TIME, b"\x0c" + struct.pack("<BIBBBI", 1, 34, 22, 59, 59, 999999), "-838:59:59.999999"),
]


def test_stmt_execute_decodes_every_common_type() -> None:
    raw = execute_payload(5, [(kind, wire) for kind, wire, _ in PARAMS], flags=1)
    execute = m.parse_stmt_execute(raw, len(PARAMS), None)
    assert execute.statement_id == 5
    assert execute.flags == 1
    assert execute.cursor
    assert execute.iteration_count == 1
    assert execute.new_params_bound
    assert execute.types == tuple(kind for kind, _, _ in PARAMS)
    for got, (kind, _, want) in zip(execute.values, PARAMS, strict=True):
        assert got == want, hex(kind)
        assert type(got) is type(want), hex(kind)


def test_stmt_execute_uses_the_previous_types_when_not_rebound() -> None:
    types = (int(T.LONGLONG), int(T.VAR_STRING))
    raw = execute_payload(3, [(T.LONGLONG, struct.pack("<q", 9)), (T.VAR_STRING, None)], bind=False)
    execute = m.parse_stmt_execute(raw, 2, types)
    assert not execute.new_params_bound
    assert execute.types == types
    assert execute.values == (9, None)
    with pytest.raises(ProtocolViolation, match="none bound"):
        m.parse_stmt_execute(raw, 2, None)
    with pytest.raises(ProtocolViolation, match="none bound"):
        m.parse_stmt_execute(raw, 2, types[:1])


def test_stmt_execute_without_parameters() -> None:
    execute = m.parse_stmt_execute(execute_payload(8, []), 0, None)
    assert (execute.statement_id, execute.types, execute.values) == (8, (), ())
    assert not execute.cursor


def test_stmt_execute_errors() -> None:
    good = execute_payload(1, [(T.LONG, struct.pack("<i", 1))])
    with pytest.raises(ProtocolViolation, match="trailing"):
        m.parse_stmt_execute(good + b"x", 1, None)
    for cut in range(1, len(good)):
        with pytest.raises(ProtocolViolation):
            m.parse_stmt_execute(good[:cut], 1, None)
    with pytest.raises(ProtocolViolation):
        m.parse_stmt_execute(b"\x03" + good[1:], 1, None)
    bad_flag = bytearray(good)
    bad_flag[11] = 2
    with pytest.raises(ProtocolViolation, match="flag"):
        m.parse_stmt_execute(bytes(bad_flag), 1, None)
    for kind, wire in ((T.DATE, b"\x05" + bytes(5)), (T.TIME, b"\x07" + bytes(7))):
        with pytest.raises(ProtocolViolation, match="length"):
            m.parse_stmt_execute(execute_payload(1, [(kind, wire)]), 1, None)


def test_stmt_execute_query_attributes() -> None:
    caps = int(C.QUERY_ATTRIBUTES)
    body = b"\x17" + struct.pack("<IBI", 4, int(m.CursorType.PARAMETER_COUNT_AVAILABLE), 1)
    body += lenenc_int(2) + b"\x00\x01"
    body += struct.pack("<H", T.LONGLONG) + lenenc_bytes(b"")
    body += struct.pack("<H", T.VAR_STRING) + lenenc_bytes(b"trace")
    body += struct.pack("<q", 11) + lenenc_bytes(b"abc")
    execute = m.parse_stmt_execute(body, 1, None, capabilities=caps)
    assert execute.values == (11, "abc")
    assert execute.names == ("", "trace")


def test_binary_and_text_rows() -> None:
    types = (int(T.LONGLONG | m.UNSIGNED_FLAG), int(T.VAR_STRING), int(T.DOUBLE))
    # Bitmap offset 2: column 1 is NULL -> bit 3.
    row = b"\x00\x08" + struct.pack("<Q", 2**64 - 1) + struct.pack("<d", 2.5)
    assert m.parse_binary_row(row, types) == (2**64 - 1, None, 2.5)
    with pytest.raises(ProtocolViolation):
        m.parse_binary_row(row + b"x", types)
    with pytest.raises(ProtocolViolation):
        m.parse_binary_row(b"\x01" + row[1:], types)
    text = b"\x011\xfb\x03abc"
    assert m.parse_text_row(text, 3) == (b"1", None, b"abc")
    with pytest.raises(ProtocolViolation):
        m.parse_text_row(text, 2)
    with pytest.raises(ProtocolViolation):
        m.parse_text_row(text, 4)


def test_charsets() -> None:
    for collation, name in [
        (8, "latin1"),
        (11, "ascii"),
        (33, "utf8mb3"),
        (83, "utf8mb3"),
        (192, "utf8mb3"),
        (45, "utf8mb4"),
        (46, "utf8mb4"),
        (224, "utf8mb4"),
        (247, "utf8mb4"),
        (255, "utf8mb4"),
        (63, "binary"),
        (28, "gbk"),
        (1, "big5"),
        (13, "sjis"),
        (95, "cp932"),
        (248, "gb18030"),
    ]:
        assert m.CHARSET_NAMES[collation] == name


def test_enums() -> None:
    assert m.ServerStatus.NO_BACKSLASH_ESCAPES.value == 0x200
    assert m.ServerStatus.SESSION_STATE_CHANGED.value == 0x4000
    assert m.Capability.SSL.value == 0x800
    assert m.Capability.DEPRECATE_EOF == 1 << 24
    assert m.Capability.REMEMBER_OPTIONS == 1 << 31
    assert m.Command.RESET_CONNECTION.value == 0x1F
    assert m.FieldType.NEWDECIMAL.value == 0xF6


def test_ambiguous_parameter_types() -> None:
    year_then_text = [(T.YEAR, struct.pack("<h", 2024)), (T.VAR_STRING, lenenc_bytes(b"x"))]
    execute = m.parse_stmt_execute(execute_payload(1, year_then_text), 2, None)
    assert execute.values == (2024, "x")
    assert execute.ambiguous  # MariaDB would bind NULL and read "x"'s bytes as the string
    null_year = [(T.YEAR, None), (T.VAR_STRING, lenenc_bytes(b"x"))]
    assert not m.parse_stmt_execute(execute_payload(1, null_year), 2, None).ambiguous
    plain = [(T.LONGLONG, struct.pack("<q", 1))]
    assert not m.parse_stmt_execute(execute_payload(1, plain), 1, None).ambiguous
    assert {T.INT24, T.YEAR, T.BIT, T.GEOMETRY} == m.AMBIGUOUS_PARAM_TYPES
