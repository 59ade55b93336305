"""The zero-copy scan of the frontend messages the gate reads on the hot path.

https://www.postgresql.org/docs/current/protocol-message-formats.html

Each accessor takes a buffer and the bounds of one whole typed message in it
(`raw[start:end]`, header included), checks the whole message is well formed as
`messages.decode_frontend` would (every length in bounds, no trailing bytes, every
string NUL-terminated UTF-8), and answers an offset into `raw`, or -1 when the message
is malformed. None raises, and none copies: the caller slices out only the fields it
needs. When compiled (see scan.pxd) they are C functions the gate calls directly.

`decode_frontend` is the reference: for any bytes, an accessor answers -1 exactly when
decoding raises ProtocolViolation, and its fields are the decoder's
(tests/protocols/postgres/test_scan.py holds the two to that).
"""

from __future__ import annotations


def text_end(raw: bytes, pos: int, end: int) -> int:
    """Where the NUL ending the string at `pos` is, if that string is valid UTF-8 and
    ends before `end`; else -1. (The strict decoder's rules: no overlong forms, no
    surrogates, nothing above U+10FFFF.)"""
    if end > len(raw):
        return -1
    data = raw  # a C pointer when compiled: one bounds check above, none per byte
    i = pos
    while i < end:
        b = data[i]
        if b == 0:
            return i
        if b < 0x80:
            i += 1
            continue
        if 0xC2 <= b <= 0xDF:
            more = 1
            low = 0x80
            high = 0xBF
        elif 0xE0 <= b <= 0xEF:
            more = 2
            low = 0xA0 if b == 0xE0 else 0x80
            high = 0x9F if b == 0xED else 0xBF
        elif 0xF0 <= b <= 0xF4:
            more = 3
            low = 0x90 if b == 0xF0 else 0x80
            high = 0x8F if b == 0xF4 else 0xBF
        else:
            return -1
        if i + more >= end:
            return -1  # the sequence, or the NUL after it, is cut off
        b = data[i + 1]
        if b < low or b > high:
            return -1
        k = 2
        while k <= more:
            b = data[i + k]
            if b < 0x80 or b > 0xBF:
                return -1
            k += 1
        i += more + 1
    return -1


def _count16(data: bytes, pos: int) -> int:
    """An unsigned 16-bit count (parameters, format codes: up to 65,535)."""
    return (data[pos] << 8) | data[pos + 1]


def _int32(data: bytes, pos: int) -> int:
    value = (data[pos] << 24) | (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
    return value - 0x100000000 if value >= 0x80000000 else value


def query_sql_end(raw: bytes, start: int, end: int) -> int:
    """Query: the NUL ending its SQL, which is raw[start + 5 : that]; or -1."""
    sql_end = text_end(raw, start + 5, end)
    if sql_end < 0 or sql_end + 1 != end:
        return -1
    return sql_end


def parse_sql_end(raw: bytes, start: int, end: int) -> int:
    """Parse: the NUL ending its SQL; or -1. Its statement name is
    raw[start + 5 : text_end(raw, start + 5, end)], its SQL runs from the NUL after the
    name to this one, and its declared parameter types (count and OIDs, as sent) from
    here + 1 to `end`."""
    name_end = text_end(raw, start + 5, end)
    if name_end < 0:
        return -1
    sql_end = text_end(raw, name_end + 1, end)
    if sql_end < 0 or sql_end + 3 > end:
        return -1
    count = _count16(raw, sql_end + 1)
    if sql_end + 3 + 4 * count != end:
        return -1
    return sql_end


def bind_statement_end(raw: bytes, start: int, end: int) -> int:
    """Bind: the NUL ending its statement's name; or -1. Its portal's name is
    raw[start + 5 : text_end(raw, start + 5, end)], and the statement's runs from the
    NUL after it to this one."""
    portal_end = text_end(raw, start + 5, end)
    if portal_end < 0:
        return -1
    statement_end = text_end(raw, portal_end + 1, end)
    if statement_end < 0:
        return -1
    pos = statement_end + 1
    # Parameter format codes.
    if pos + 2 > end:
        return -1
    count = _count16(raw, pos)
    pos += 2 + 2 * count
    # Parameter values, each a length (-1 for NULL) and that many bytes.
    if pos + 2 > end:
        return -1
    count = _count16(raw, pos)
    pos += 2
    while count > 0:
        if pos + 4 > end:
            return -1
        size = _int32(raw, pos)
        if size < -1:
            return -1
        pos += 4
        if size > 0:
            pos += size
        count -= 1
    # Result format codes.
    if pos + 2 > end:
        return -1
    count = _count16(raw, pos)
    if pos + 2 + 2 * count != end:
        return -1
    return statement_end


def execute_portal_end(raw: bytes, start: int, end: int) -> int:
    """Execute: the NUL ending its portal's name, raw[start + 5 : that]; or -1."""
    portal_end = text_end(raw, start + 5, end)
    if portal_end < 0 or portal_end + 5 != end:
        return -1
    return portal_end


def target_name_end(raw: bytes, start: int, end: int) -> int:
    """Close or Describe: the NUL ending the name of its target, raw[start + 6 : that];
    or -1. The target is a statement when raw[start + 5] is 'S', a portal when 'P'."""
    if end - start < 7:
        return -1
    subtype = raw[start + 5]
    if subtype != 0x53 and subtype != 0x50:  # 'S', 'P'
        return -1
    name_end = text_end(raw, start + 6, end)
    if name_end < 0 or name_end + 1 != end:
        return -1
    return name_end
