"""ResponseTracker on hand-built response shapes (real ones are in test_vectors.py)."""

from __future__ import annotations

import pytest

from protocols.errors import ProtocolViolation
from protocols.mysql import messages as m
from protocols.mysql.messages import Capability as C
from protocols.mysql.messages import Command
from protocols.mysql.messages import ServerStatus as S
from protocols.mysql.packets import MAX_CHUNK, lenenc_bytes, lenenc_int
from protocols.mysql.responses import ResponseTracker, expects_response

CLASSIC = int(C.PROTOCOL_41 | C.TRANSACTIONS | C.MULTI_RESULTS | C.PS_MULTI_RESULTS)
DEPRECATE = CLASSIC | int(C.DEPRECATE_EOF)
BOTH = [pytest.param(CLASSIC, id="eof"), pytest.param(DEPRECATE, id="deprecate_eof")]

AUTOCOMMIT = int(S.AUTOCOMMIT)
MORE = int(S.AUTOCOMMIT | S.MORE_RESULTS_EXISTS)
COLUMN = m.ColumnDefinition(b"test", b"t", b"t", b"c", b"c", 45, 80, m.FieldType.VAR_STRING, 0, 0)
COLDEF = COLUMN.build()


def ok(
    affected: int = 0, status: int = AUTOCOMMIT, *, last_id: int = 0, warnings: int = 0
) -> bytes:
    return m.OkPacket(affected, last_id, status, warnings).build(CLASSIC)


def end(caps: int, status: int = AUTOCOMMIT, warnings: int = 0) -> bytes:
    """What ends a group of definitions or rows: EOF, or OK with 0xFE under DEPRECATE_EOF."""
    if caps & C.DEPRECATE_EOF:
        return m.OkPacket(0, 0, status, warnings, header=0xFE).build(caps)
    return m.EofPacket(warnings, status).build()


def result_set(
    caps: int, rows: list[bytes], columns: int = 1, status: int = AUTOCOMMIT
) -> list[bytes]:
    packets = [lenenc_int(columns), *[COLDEF] * columns]
    if not caps & C.DEPRECATE_EOF:
        packets.append(end(caps))
    return [*packets, *rows, end(caps, status)]


def text_row(*values: bytes | None) -> bytes:
    return b"".join(b"\xfb" if v is None else lenenc_bytes(v) for v in values)


def binary_row(value: int) -> bytes:
    return b"\x00\x00" + value.to_bytes(8, "little")


def feed_all(tracker: ResponseTracker, packets: list[bytes]) -> None:
    """Every packet but the last leaves the response open; the last completes it."""
    for index, payload in enumerate(packets):
        done = tracker.feed(payload)
        assert done == (index == len(packets) - 1), (index, payload[:12])
    assert tracker.complete


def test_query_ok() -> None:
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    feed_all(tracker, [ok(3, last_id=7, warnings=1)])
    assert tracker.ok is not None
    assert tracker.ok.affected_rows == 3
    assert tracker.summary() == {"affected_rows": 3, "last_insert_id": 7, "warnings": 1}
    assert tracker.error is None
    assert tracker.result_sets == tracker.rows == 0


def test_query_error() -> None:
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    feed_all(tracker, [m.ErrPacket(1146, "42S02", "no table").build()])
    assert tracker.summary() == {
        "error": {"code": 1146, "sqlstate": "42S02", "message": "no table"}
    }


@pytest.mark.parametrize("caps", BOTH)
def test_query_result_set(caps: int) -> None:
    seen: list[bytes] = []
    tracker = ResponseTracker(Command.QUERY, caps, on_row=seen.append)
    rows = [text_row(b"1", b"a"), text_row(None, b""), text_row(b"3", None)]
    feed_all(tracker, result_set(caps, rows, columns=2, status=AUTOCOMMIT | int(S.IN_TRANS)))
    assert seen == rows
    assert (tracker.rows, tracker.result_sets, tracker.columns) == (3, 1, 2)
    assert tracker.status_flags == AUTOCOMMIT | S.IN_TRANS
    assert tracker.summary() == {"rows": 3, "result_sets": 1}


@pytest.mark.parametrize("caps", BOTH)
def test_query_empty_result_set(caps: int) -> None:
    tracker = ResponseTracker(Command.QUERY, caps)
    feed_all(tracker, result_set(caps, []))
    assert tracker.summary() == {"rows": 0, "result_sets": 1}


def test_row_starting_with_fe_without_deprecate_eof() -> None:
    # A text row whose first value is 0xFE-length-encoded is at least 9 bytes long.
    row = b"\xfe" + (3).to_bytes(8, "little") + b"abc"
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    feed_all(tracker, result_set(CLASSIC, [row]))
    assert tracker.rows == 1


def test_huge_row_starting_with_fe_under_deprecate_eof() -> None:
    size = MAX_CHUNK + 1
    row = b"\xfe" + size.to_bytes(8, "little") + bytes(size)
    tracker = ResponseTracker(Command.QUERY, DEPRECATE)
    feed_all(tracker, result_set(DEPRECATE, [row, text_row(b"x")]))
    assert tracker.rows == 2


def test_short_fe_packet_ends_rows_under_deprecate_eof() -> None:
    # Under DEPRECATE_EOF an OK with session-track info can be longer than 9 bytes.
    info_ok = m.OkPacket(0, 0, AUTOCOMMIT, 0, b"some info text", header=0xFE).build(
        DEPRECATE | int(C.SESSION_TRACK)
    )
    assert len(info_ok) > 9
    tracker = ResponseTracker(Command.QUERY, DEPRECATE | int(C.SESSION_TRACK))
    feed_all(tracker, [b"\x01", COLDEF, text_row(b"1"), info_ok])
    assert tracker.ok is not None
    assert tracker.ok.info == b"some info text"


@pytest.mark.parametrize("caps", BOTH)
def test_multi_statement_results(caps: int) -> None:
    tracker = ResponseTracker(Command.QUERY, caps | int(C.MULTI_STATEMENTS))
    packets = [
        *result_set(caps, [text_row(b"1")], status=MORE),
        ok(2, MORE, last_id=5),
        *result_set(caps, [text_row(b"a"), text_row(b"b")]),
    ]
    feed_all(tracker, packets)
    assert tracker.summary() == {"rows": 3, "result_sets": 2, "affected_rows": 2}


@pytest.mark.parametrize("caps", BOTH)
def test_call_ends_with_ok(caps: int) -> None:
    tracker = ResponseTracker(Command.QUERY, caps)
    packets = [
        *result_set(caps, [text_row(b"1")], status=MORE),
        *result_set(caps, [text_row(b"2"), text_row(b"3")], status=MORE),
        ok(0, AUTOCOMMIT),
    ]
    feed_all(tracker, packets)
    assert tracker.summary() == {"rows": 3, "result_sets": 2}


def test_ok_statements_only() -> None:
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    feed_all(tracker, [ok(1, MORE, last_id=4), ok(2, AUTOCOMMIT, last_id=9)])
    assert tracker.summary() == {"affected_rows": 3, "last_insert_id": 9, "warnings": 0}


@pytest.mark.parametrize("caps", BOTH)
def test_error_after_rows(caps: int) -> None:
    tracker = ResponseTracker(Command.QUERY, caps)
    packets = result_set(caps, [text_row(b"1"), text_row(b"2")])[:-1]
    packets.append(m.ErrPacket(1690, "22003", "out of range").build())
    feed_all(tracker, packets)
    assert tracker.summary() == {
        "rows": 2,
        "result_sets": 1,
        "error": {"code": 1690, "sqlstate": "22003", "message": "out of range"},
    }


def test_error_ends_a_multi_statement() -> None:
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    feed_all(tracker, [ok(1, MORE), m.ErrPacket(1064, "42000", "syntax").build()])
    assert tracker.error is not None
    assert tracker.error.code == 1064


def test_local_infile_stops_and_resumes() -> None:
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    assert tracker.feed(b"\xfb/etc/passwd")
    assert tracker.complete
    assert tracker.local_infile
    assert tracker.infile_filename == b"/etc/passwd"
    assert tracker.summary() == {"local_infile": "/etc/passwd"}
    tracker.continue_after_local_infile()
    assert not tracker.complete
    assert not tracker.local_infile
    feed_all(tracker, [ok(0)])
    assert tracker.summary()["affected_rows"] == 0
    with pytest.raises(ValueError, match="no LOCAL INFILE"):
        tracker.continue_after_local_infile()


@pytest.mark.parametrize("caps", BOTH)
def test_execute_binary_rows(caps: int) -> None:
    seen: list[bytes] = []
    tracker = ResponseTracker(Command.STMT_EXECUTE, caps, on_row=seen.append)
    feed_all(tracker, result_set(caps, [binary_row(1), binary_row(0xFE)]))
    assert len(seen) == 2
    assert tracker.summary() == {"rows": 2, "result_sets": 1}
    assert not tracker.cursor_opened


@pytest.mark.parametrize("caps", BOTH)
def test_execute_with_cursor_returns_metadata_only(caps: int) -> None:
    tracker = ResponseTracker(Command.STMT_EXECUTE, caps)
    cursor = AUTOCOMMIT | int(S.CURSOR_EXISTS)
    feed_all(tracker, [b"\x01", COLDEF, end(caps, cursor)])
    assert tracker.cursor_opened
    assert tracker.summary() == {"rows": 0, "result_sets": 1}


def test_cursor_flag_in_a_query_response_does_not_stop_it() -> None:
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    cursor = AUTOCOMMIT | int(S.CURSOR_EXISTS)
    feed_all(tracker, [b"\x01", COLDEF, end(CLASSIC, cursor), text_row(b"1"), end(CLASSIC)])


@pytest.mark.parametrize("caps", BOTH)
def test_fetch(caps: int) -> None:
    tracker = ResponseTracker(Command.STMT_FETCH, caps, num_columns_hint=1)
    status = AUTOCOMMIT | int(S.CURSOR_EXISTS)
    feed_all(tracker, [binary_row(1), binary_row(2), end(caps, status)])
    assert tracker.rows == 2
    assert tracker.columns == 1
    tracker = ResponseTracker(Command.STMT_FETCH, caps)
    feed_all(tracker, [end(caps, AUTOCOMMIT | int(S.LAST_ROW_SENT))])
    assert tracker.status_flags & S.LAST_ROW_SENT


@pytest.mark.parametrize("caps", BOTH)
def test_prepare(caps: int) -> None:
    prepared = m.StmtPrepareOk(12, 1, 2, 0).build()
    packets = [prepared, COLDEF, COLDEF]
    if not caps & C.DEPRECATE_EOF:
        packets.append(end(caps))
    packets.append(COLDEF)
    if not caps & C.DEPRECATE_EOF:
        packets.append(end(caps))
    tracker = ResponseTracker(Command.STMT_PREPARE, caps)
    feed_all(tracker, packets)
    assert tracker.prepare_ok == m.StmtPrepareOk(12, 1, 2, 0)
    assert tracker.summary() == {"statement_id": 12, "num_params": 2, "num_columns": 1}


@pytest.mark.parametrize("caps", BOTH)
@pytest.mark.parametrize(("columns", "params"), [(0, 0), (0, 1), (2, 0)])
def test_prepare_partial_metadata(caps: int, columns: int, params: int) -> None:
    packets = [m.StmtPrepareOk(1, columns, params, 0).build()]
    for count in (params, columns):
        if count:
            packets += [COLDEF] * count
            if not caps & C.DEPRECATE_EOF:
                packets.append(end(caps))
    feed_all(ResponseTracker(Command.STMT_PREPARE, caps), packets)


def test_prepare_error_and_no_metadata() -> None:
    tracker = ResponseTracker(Command.STMT_PREPARE, CLASSIC)
    feed_all(tracker, [m.ErrPacket(1064, "42000", "syntax").build()])
    assert tracker.prepare_ok is None
    caps = CLASSIC | int(C.OPTIONAL_RESULTSET_METADATA)
    tracker = ResponseTracker(Command.STMT_PREPARE, caps)
    feed_all(tracker, [m.StmtPrepareOk(1, 3, 3, 0, metadata_follows=False).build()])


@pytest.mark.parametrize("caps", BOTH)
def test_field_list(caps: int) -> None:
    tracker = ResponseTracker(Command.FIELD_LIST, caps)
    feed_all(tracker, [COLDEF, COLDEF, COLDEF, end(caps)])
    assert tracker.columns == 3
    tracker = ResponseTracker(Command.FIELD_LIST, caps)
    feed_all(tracker, [m.ErrPacket(1146, "42S02", "x").build()])


def test_statistics() -> None:
    text = b"Uptime: 1  Threads: 1  Questions: 2"
    tracker = ResponseTracker(Command.STATISTICS, CLASSIC)
    feed_all(tracker, [text])
    assert tracker.statistics == text
    assert tracker.summary() == {"statistics": text.decode()}


@pytest.mark.parametrize(
    "command",
    [
        Command.PING,
        Command.INIT_DB,
        Command.RESET_CONNECTION,
        Command.STMT_RESET,
        Command.PROCESS_KILL,
        Command.REFRESH,
        Command.SLEEP,
    ],
)
def test_single_packet_commands(command: int) -> None:
    feed_all(ResponseTracker(command, CLASSIC), [ok()])
    feed_all(ResponseTracker(command, CLASSIC), [m.ErrPacket(1047, "08S01", "?").build()])


@pytest.mark.parametrize("caps", BOTH)
def test_set_option(caps: int) -> None:
    tracker = ResponseTracker(Command.SET_OPTION, caps)
    feed_all(tracker, [end(caps, AUTOCOMMIT)])
    assert tracker.status_flags == AUTOCOMMIT
    if caps & C.DEPRECATE_EOF:  # an OK packet with a 0xFE header
        assert tracker.summary() == {"affected_rows": 0, "last_insert_id": 0, "warnings": 0}
    else:
        assert tracker.summary() == {}


def test_status_flags_follow_the_last_ok() -> None:
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    tracker.feed(ok(0, AUTOCOMMIT | int(S.NO_BACKSLASH_ESCAPES)))
    assert tracker.status_flags & S.NO_BACKSLASH_ESCAPES


def test_process_info_is_a_result_set() -> None:
    tracker = ResponseTracker(Command.PROCESS_INFO, CLASSIC)
    feed_all(tracker, result_set(CLASSIC, [text_row(b"1")]))


def test_commands_without_a_response() -> None:
    for command in (Command.QUIT, Command.STMT_CLOSE, Command.STMT_SEND_LONG_DATA):
        assert not expects_response(command)
        with pytest.raises(ValueError, match="no response"):
            ResponseTracker(command, CLASSIC)
    assert expects_response(Command.QUERY)
    assert expects_response(Command.PING)
    for command in (Command.CHANGE_USER, Command.BINLOG_DUMP):
        with pytest.raises(ValueError, match="cannot be tracked"):
            ResponseTracker(command, CLASSIC)


def test_mariadb_progress_reports() -> None:
    progress = b"\xff\xff\xff\x01\x01\x02\x00\x00\x00\x05stage"
    tracker = ResponseTracker(
        Command.QUERY, CLASSIC, mariadb_capabilities=int(m.MariaDbCapability.PROGRESS)
    )
    feed_all(tracker, [progress, progress, ok(1)])
    assert tracker.error is None
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    feed_all(tracker, [progress])  # without the capability it is an error
    assert tracker.error is not None


@pytest.mark.parametrize("caps", BOTH)
def test_mariadb_metadata_cache(caps: int) -> None:
    cache = int(m.MariaDbCapability.CACHE_METADATA)
    tracker = ResponseTracker(Command.STMT_EXECUTE, caps, mariadb_capabilities=cache)
    skipped = [b"\x02\x00"] + ([] if caps & C.DEPRECATE_EOF else [end(caps)])
    feed_all(tracker, [*skipped, binary_row(1), end(caps)])
    assert (tracker.rows, tracker.columns) == (1, 2)
    tracker = ResponseTracker(Command.QUERY, caps, mariadb_capabilities=cache)
    sent = [b"\x01\x01", COLDEF] + ([] if caps & C.DEPRECATE_EOF else [end(caps)])
    feed_all(tracker, [*sent, text_row(b"x"), end(caps)])
    tracker = ResponseTracker(Command.QUERY, caps, mariadb_capabilities=cache)
    with pytest.raises(ProtocolViolation, match="metadata flag"):
        tracker.feed(b"\x01")


def test_protocol_violations() -> None:
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    with pytest.raises(ProtocolViolation):
        tracker.feed(b"")
    with pytest.raises(ProtocolViolation, match="EOF packet at the start"):
        tracker.feed(end(CLASSIC))
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    tracker.feed(b"\x02")
    with pytest.raises(ProtocolViolation, match="inside column definitions"):
        tracker.feed(end(CLASSIC))
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    tracker.feed(ok())
    with pytest.raises(ProtocolViolation, match="after the response was complete"):
        tracker.feed(ok())
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    for payload in (b"\x01", COLDEF, end(CLASSIC)):
        assert not tracker.feed(payload)
    with pytest.raises(ProtocolViolation, match="empty packet in a result set"):
        tracker.feed(b"")
    tracker = ResponseTracker(Command.PING, CLASSIC)
    with pytest.raises(ProtocolViolation, match="unexpected response"):
        tracker.feed(b"\x05")
    tracker = ResponseTracker(Command.QUERY, CLASSIC)
    with pytest.raises(ProtocolViolation, match="column count"):
        tracker.feed(b"\xfc\x00\x00")
