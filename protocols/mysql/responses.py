"""Following one command's response from the server, sans-I/O.

The gateway forwards server packets as they come; a `ResponseTracker` per
command tells it when the response is complete (the server will send nothing
more for it) and what it said: OK, ERR, rows, a prepared statement, a LOCAL
INFILE request. The relay's fast path hands it whole reads (`follow`): rows and
column definitions no one asked to see are counted where they lie, by their
first byte and length, and only the packets that carry status are cut out and
read (`feed`, which takes one reassembled packet at a time).

Shapes (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_command_phase.html):

- COM_QUERY, COM_STMT_EXECUTE, COM_PROCESS_INFO, COM_STMT_BULK_EXECUTE: OK, ERR,
  LOCAL INFILE (0xFB) or a result set (column count, column definitions, EOF
  unless DEPRECATE_EOF, rows, then EOF, or OK with a 0xFE header under
  DEPRECATE_EOF, or ERR). When the final OK/EOF has MORE_RESULTS_EXISTS,
  another result follows (multi-statements, CALL). An execute that opened a
  cursor gets its metadata and an EOF/OK flagged CURSOR_EXISTS, and no rows.
- COM_STMT_PREPARE: PREPARE_OK, then the parameter definitions and the column
  definitions, each group followed by EOF unless DEPRECATE_EOF; or ERR.
- COM_STMT_FETCH: binary rows until EOF/OK(0xFE) or ERR.
- COM_FIELD_LIST: column definitions until EOF/OK(0xFE) or ERR.
- COM_STATISTICS: one packet of text (or ERR).
- COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA: no response.
- Everything else the tracker accepts: one OK, EOF or ERR packet.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from protocols.errors import ProtocolViolation
from protocols.mysql.messages import (
    Capability,
    Command,
    EofPacket,
    ErrPacket,
    LocalInfileRequest,
    MariaDbCapability,
    OkPacket,
    ServerStatus,
    StmtPrepareOk,
    is_progress_report,
)
from protocols.mysql.packets import MAX_CHUNK, packet_end, read_lenenc_int

_NO_RESPONSE = frozenset(
    int(c) for c in (Command.QUIT, Command.STMT_CLOSE, Command.STMT_SEND_LONG_DATA)
)
#: Commands whose response the tracker cannot follow: the gateway handles them itself.
UNTRACKED_COMMANDS = frozenset(
    {Command.CHANGE_USER, Command.BINLOG_DUMP, Command.BINLOG_DUMP_GTID, Command.TABLE_DUMP}
)
_RESULT_COMMANDS = frozenset(
    int(c)
    for c in (Command.QUERY, Command.STMT_EXECUTE, Command.PROCESS_INFO, Command.STMT_BULK_EXECUTE)
)

# States.
_FIRST = 0  # the first packet of a result: OK, ERR, 0xFB or a column count
_COLUMNS = 1  # column definitions of a result set
_COLUMNS_EOF = 2  # the EOF after them (no DEPRECATE_EOF)
_ROWS = 3
_PREPARE_OK = 4
_PARAM_DEFS = 5
_PARAM_DEFS_EOF = 6
_PREPARE_COLUMNS = 7
_PREPARE_COLUMNS_EOF = 8
_FIELDS = 9  # COM_FIELD_LIST
_STATISTICS = 10
_SINGLE = 11  # one OK/EOF/ERR
_DONE = 12

_OK = 0x00
_EOF = 0xFE
_ERR = 0xFF
_INFILE = 0xFB
# Plain ints: IntFlag and IntEnum arithmetic costs microseconds on the hot path.
_DEPRECATE_EOF = int(Capability.DEPRECATE_EOF)
_PROTOCOL_41 = int(Capability.PROTOCOL_41)
_OPTIONAL_METADATA = int(Capability.OPTIONAL_RESULTSET_METADATA)
_CACHE_METADATA = int(MariaDbCapability.CACHE_METADATA)
_PROGRESS = int(MariaDbCapability.PROGRESS)
_MORE_RESULTS = int(ServerStatus.MORE_RESULTS_EXISTS)
_CURSOR_EXISTS = int(ServerStatus.CURSOR_EXISTS)
_QUERY = int(Command.QUERY)
_EXECUTE = int(Command.STMT_EXECUTE)
_PREPARE = int(Command.STMT_PREPARE)
_FETCH = int(Command.STMT_FETCH)
_FIELD_LIST = int(Command.FIELD_LIST)
_STATISTICS_COMMAND = int(Command.STATISTICS)
_EOF_STATUS = struct.Struct("<xHH")  # an EOF packet: header, warnings, status flags
#: More columns than this is no MySQL result (4096 is the most a table has).
_MAX_COLUMNS = 0xFFFFFFFF


def expects_response(command: int) -> bool:
    """False for the commands the server never answers."""
    return command not in _NO_RESPONSE


class ResponseTracker:
    """Consumes the server's packets for one command; `feed` says when it is complete.

    `capabilities` are the ones both sides agreed on (the client's flags as
    the server accepted them); `mariadb_capabilities` likewise for MariaDB's
    extended ones. `on_row`, when given, is called with every row payload
    (text or binary rows, as they are), and `on_column` with every column
    definition (of result sets, of a prepared statement's result, of
    COM_FIELD_LIST; not of parameters): `result_sets` tells which result set
    they belong to. With MariaDB's metadata cache an execute may send no column
    definitions: the ones from the statement's prepare apply.

    After a LOCAL INFILE request (`local_infile` set, `feed` returned True) the
    gateway answers the server itself; to follow the server's answer to that,
    call `continue_after_local_infile` and keep feeding.
    """

    __slots__ = (
        "_caps",
        "_command",
        "_deprecate_eof",
        "_metadata_byte",
        "_pending",
        "_progress",
        "_protocol_41",
        "_state",
        "_terminator_limit",
        "affected_rows",
        "columns",
        "cursor_opened",
        "error",
        "infile_filename",
        "local_infile",
        "ok",
        "on_column",
        "on_row",
        "prepare_ok",
        "result_sets",
        "rows",
        "statistics",
        "status_flags",
        "warnings",
    )

    def __init__(
        self,
        command: int,
        capabilities: int,
        *,
        num_columns_hint: int | None = None,
        mariadb_capabilities: int = 0,
        on_row: Callable[[bytes], None] | None = None,
        on_column: Callable[[bytes], None] | None = None,
    ) -> None:
        if not expects_response(command):
            raise ValueError(f"command 0x{command:02x} has no response")
        if command in UNTRACKED_COMMANDS:
            raise ValueError(f"the response to command 0x{command:02x} cannot be tracked")
        self._command = command = int(command)
        self._caps = capabilities = int(capabilities)
        self._deprecate_eof = bool(capabilities & _DEPRECATE_EOF)
        self._protocol_41 = bool(capabilities & _PROTOCOL_41)
        # A 0xFE packet shorter than this ends rows; a longer one is a row whose
        # first value is 16 MB or more.
        self._terminator_limit = MAX_CHUNK if self._deprecate_eof else 9
        self._metadata_byte = bool(
            capabilities & _OPTIONAL_METADATA or mariadb_capabilities & _CACHE_METADATA
        )
        self._progress = bool(mariadb_capabilities & _PROGRESS)
        self._pending = 0  # definitions still to come in the current group
        self.on_row = on_row
        self.on_column = on_column
        self.ok: OkPacket | None = None
        self.error: ErrPacket | None = None
        self.prepare_ok: StmtPrepareOk | None = None
        self.rows = 0
        self.result_sets = 0
        self.affected_rows = 0  # summed over every OK packet with a 0x00 header
        self.status_flags = 0
        self.warnings = 0
        self.columns = num_columns_hint or 0  # of the last result set
        self.local_infile = False
        self.infile_filename: bytes | None = None
        self.statistics: bytes | None = None
        self.cursor_opened = False
        if command in _RESULT_COMMANDS:
            self._state = _FIRST
        elif command == _PREPARE:
            self._state = _PREPARE_OK
        elif command == _FETCH:
            self._state = _ROWS
        elif command == _FIELD_LIST:
            self._state = _FIELDS
        elif command == _STATISTICS_COMMAND:
            self._state = _STATISTICS
        else:
            self._state = _SINGLE

    @property
    def complete(self) -> bool:
        return self._state == _DONE

    def follow(self, raw: bytes, pos: int, size: int) -> int:
        """Consume the whole one-chunk packets in `raw[pos:size]`, in order, until the
        response is complete; return where the first packet not consumed starts: after
        the response's last packet, or at a packet not all in `raw[pos:size]` or split in
        chunks (the caller reassembles it and `feed`s it).

        The relay's fast path. A row with no `on_row`, and a column definition with no
        `on_column`, is counted in place: no object is made for it. Every other packet
        is cut out and fed (`feed`), so the states move exactly as packet by packet.
        """
        data = raw  # compiled, a const unsigned char * (responses.pxd)
        while True:
            end = packet_end(raw, pos, size)
            if end < 0:
                return pos
            length = end - pos - 4
            state = self._state
            first = data[pos + 4] if length else -1
            if (
                state == _ROWS
                and self.on_row is None
                and first >= 0
                and first != _ERR
                and (first != _EOF or length >= self._terminator_limit)
            ):
                self.rows += 1
                pos = end
                continue
            if (
                state == _COLUMNS
                and self.on_column is None
                and first >= 0
                and first != _ERR
                and first != _EOF
                and self._pending > 1
            ):
                self._pending -= 1
                pos = end
                continue
            done = self.feed(raw[pos + 4 : end])
            pos = end
            if done:
                return pos

    def feed(self, payload: bytes) -> bool:
        """Consume one logical server packet; True once the response is complete."""
        if self._state == _ROWS:
            if not payload:
                raise ProtocolViolation("empty packet in a result set")
            first = payload[0]
            if first == _EOF and len(payload) < self._terminator_limit:
                return self._end_of_rows(payload)
            if first == _ERR:
                return self._fail(payload)
            self.rows += 1
            if self.on_row is not None:
                self.on_row(payload)
            return False
        if not payload:
            raise ProtocolViolation("empty packet in a response")
        state = self._state
        if state == _COLUMNS:
            return self._definition(payload, _COLUMNS_EOF)
        if state == _FIRST:
            return self._first(payload)
        if state == _COLUMNS_EOF:
            return self._columns_eof(payload)
        if state == _DONE:
            raise ProtocolViolation("the server sent a packet after the response was complete")
        return self._other(state, payload)

    def continue_after_local_infile(self) -> None:
        """Follow the server's answer to the gateway's LOCAL INFILE reply (OK or ERR)."""
        if not self.local_infile:
            raise ValueError("no LOCAL INFILE request is pending")
        self.local_infile = False
        self._state = _FIRST

    def summary(self) -> dict[str, object]:
        """What a transcript records about the response."""
        summary: dict[str, object] = {}
        if self.result_sets:
            summary["rows"] = self.rows
            summary["result_sets"] = self.result_sets
        if self.error is not None:
            summary["error"] = {
                "code": self.error.code,
                "sqlstate": self.error.sqlstate,
                "message": self.error.message,
            }
            return summary
        if self.prepare_ok is not None:
            summary["statement_id"] = self.prepare_ok.statement_id
            summary["num_params"] = self.prepare_ok.num_params
            summary["num_columns"] = self.prepare_ok.num_columns
        elif self.local_infile:
            summary["local_infile"] = (self.infile_filename or b"").decode(errors="replace")
        elif self.statistics is not None:
            summary["statistics"] = self.statistics.decode(errors="replace")
        elif self.result_sets:
            if self.affected_rows:
                summary["affected_rows"] = self.affected_rows
        elif self.ok is not None:
            summary["affected_rows"] = self.affected_rows
            summary["last_insert_id"] = self.ok.last_insert_id
            summary["warnings"] = self.ok.warnings
        return summary

    # --- states other than the row loop

    def _first(self, payload: bytes) -> bool:
        first = payload[0]
        if first == _OK:
            ok = self._take_ok(payload)
            return self._next_result(ok.status_flags)
        if first == _ERR:
            if self._progress and is_progress_report(payload):
                return False
            return self._fail(payload)
        if first == _INFILE:
            self.local_infile = True
            self.infile_filename = LocalInfileRequest.parse(payload).filename
            self._state = _DONE
            return True
        if first == _EOF:
            raise ProtocolViolation("unexpected EOF packet at the start of a result")
        count, pos = read_lenenc_int(payload, 0)
        if not count or count > _MAX_COLUMNS:
            raise ProtocolViolation("invalid column count")
        follows = True
        if self._metadata_byte:
            if pos >= len(payload):
                raise ProtocolViolation("column count without its metadata flag")
            follows = payload[pos] != 0
        self.result_sets += 1
        self.columns = count
        if follows:
            self._pending = count
            self._state = _COLUMNS
        else:
            self._after_definitions(_COLUMNS_EOF)
        return False

    def _definition(self, payload: bytes, eof_state: int) -> bool:
        first = payload[0]
        if first == _ERR:
            return self._fail(payload)
        if first == _EOF:
            raise ProtocolViolation("EOF packet inside column definitions")
        if self.on_column is not None and eof_state != _PARAM_DEFS_EOF:
            self.on_column(payload)
        self._pending -= 1
        if self._pending:
            return False
        self._after_definitions(eof_state)
        return self._state == _DONE

    def _after_definitions(self, eof_state: int) -> None:
        """Move past a group of definitions: to its EOF, or to what follows it."""
        if not self._deprecate_eof:
            self._state = eof_state
        elif eof_state == _COLUMNS_EOF:
            self._state = _ROWS
        elif eof_state == _PARAM_DEFS_EOF:
            self._prepare_columns()
        else:
            self._state = _DONE

    def _columns_eof(self, payload: bytes) -> bool:
        if payload[0] == _ERR:
            return self._fail(payload)
        status = self._take_terminator(payload)
        if status & _CURSOR_EXISTS and self._command == _EXECUTE:
            # A cursor was opened: rows come with COM_STMT_FETCH.
            self.cursor_opened = True
            self._state = _DONE
            return True
        self._state = _ROWS
        return False

    def _end_of_rows(self, payload: bytes) -> bool:
        status = self._take_terminator(payload)
        if self._command == _FETCH:
            self._state = _DONE
            return True
        if status & _CURSOR_EXISTS and self._command == _EXECUTE:
            self.cursor_opened = True
            self._state = _DONE
            return True
        return self._next_result(status)

    def _next_result(self, status: int) -> bool:
        if status & _MORE_RESULTS:
            self._state = _FIRST
            return False
        self._state = _DONE
        return True

    def _other(self, state: int, payload: bytes) -> bool:
        first = payload[0]
        if state == _PREPARE_OK:
            if first == _ERR:
                return self._fail(payload)
            prepared = StmtPrepareOk.parse(payload)
            self.prepare_ok = prepared
            self.warnings = prepared.warnings
            self.columns = prepared.num_columns
            if not prepared.metadata_follows:
                # MySQL 8 OPTIONAL_RESULTSET_METADATA with resultset_metadata=NONE.
                self._state = _DONE
            elif prepared.num_params:
                self._pending = prepared.num_params
                self._state = _PARAM_DEFS
            else:
                self._prepare_columns()
            return self._state == _DONE
        if state == _PARAM_DEFS:
            return self._definition(payload, _PARAM_DEFS_EOF)
        if state == _PREPARE_COLUMNS:
            return self._definition(payload, _PREPARE_COLUMNS_EOF)
        if state in (_PARAM_DEFS_EOF, _PREPARE_COLUMNS_EOF):
            if first == _ERR:
                return self._fail(payload)
            self._take_terminator(payload)
            if state == _PARAM_DEFS_EOF:
                self._prepare_columns()
            else:
                self._state = _DONE
            return self._state == _DONE
        if state == _FIELDS:
            if first == _ERR:
                return self._fail(payload)
            if first == _EOF and len(payload) < MAX_CHUNK:
                self._take_terminator(payload)
                self._state = _DONE
                return True
            self.columns += 1
            if self.on_column is not None:
                self.on_column(payload)
            return False
        if state == _STATISTICS:
            if first == _ERR:
                return self._fail(payload)
            self.statistics = payload
            self._state = _DONE
            return True
        # _SINGLE
        if first == _OK:
            self._take_ok(payload)
        elif first == _EOF:
            self._take_terminator(payload)
        elif first == _ERR:
            if self._progress and is_progress_report(payload):
                return False
            return self._fail(payload)
        else:
            raise ProtocolViolation(f"unexpected response packet 0x{first:02x}")
        self._state = _DONE
        return True

    def _prepare_columns(self) -> None:
        prepared = self.prepare_ok
        if prepared is not None and prepared.num_columns:
            self._pending = prepared.num_columns
            self._state = _PREPARE_COLUMNS
        else:
            self._state = _DONE

    # --- packets that carry status

    def _take_ok(self, payload: bytes) -> OkPacket:
        ok = OkPacket.parse(payload, self._caps)
        self.ok = ok
        self.affected_rows += ok.affected_rows
        self.status_flags = ok.status_flags
        self.warnings = ok.warnings
        return ok

    def _take_terminator(self, payload: bytes) -> int:
        """An EOF packet, or an OK packet with a 0xFE header (DEPRECATE_EOF): its status."""
        if payload[0] != _EOF:
            raise ProtocolViolation(f"expected EOF, got 0x{payload[0]:02x}")
        # An EOF packet has 5 bytes; an OK packet at least 7.
        if len(payload) == 5:
            self.warnings, self.status_flags = _EOF_STATUS.unpack(payload)
            return self.status_flags
        if len(payload) < 5:
            eof = EofPacket.parse(payload)
            self.status_flags = eof.status_flags
            self.warnings = eof.warnings
            return eof.status_flags
        if (
            self.result_sets
            and len(payload) == 7
            and payload[1] < 0xFB
            and payload[2] < 0xFB
            and self._protocol_41
        ):
            # The usual end of rows: one-byte counts, status and warnings, nothing more
            # (no info, no session state), read in place. No OkPacket is made: after a
            # result set nothing reads one (`ok` describes answers without rows).
            self.status_flags = status = payload[3] | payload[4] << 8
            self.warnings = payload[5] | payload[6] << 8
            return status
        ok = OkPacket.parse(payload, self._caps)
        self.ok = ok
        self.status_flags = ok.status_flags
        self.warnings = ok.warnings
        return ok.status_flags

    def _fail(self, payload: bytes) -> bool:
        self.error = ErrPacket.parse(payload)
        self._state = _DONE
        return True
