# cython: language_level=3
"""Transcript events as bytes: their msgpack encoding and their SHA-256 chain, in C.

An event is the msgpack map {"seq", "ts", "kind", "data", "prev"} (proxy/recording/format.py
describes the format). `EventChain` writes that map around a `data` map packed by
msgpack (`append`), or, for the two events every statement makes, packs the whole
record itself (`statement`, `result_tag`), byte for byte as msgpack-python's Packer
(use_bin_type=True) would: tests/proxy/test_event_chain.py holds it to that. It then
hashes the record with OpenSSL's SHA-256, and the hex digest becomes the next event's
"prev". One event costs a fraction of a microsecond and one bytes object; built from
Python dicts, msgpack and hashlib it cost two, on the event loop, twice per statement.

Records wait in the chain, written one after another into one growing C buffer, until
a writer `take`s them all as one bytes object: no object per event to allocate, keep and
join. A record is packed when it is recorded, and chained (its prev filled in, then
hashed) by `hash_pending`, which the relay calls once it has passed on the message the
record is about: the hashing is not between a query and the server. Whatever reads the
chain's end (`take`, `prev`, `queue`, `put_back`, `close`) hashes what waits first, and
so does a seventeenth record waiting. Every method runs start to end holding the GIL
(nothing in them calls back into Python but the clock, before anything changes), so
the event loop may record while the flush thread takes, with no lock.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memmove, memset


# The low-level SHA-256 calls: deprecated in OpenSSL 3 in favour of EVP, but they hash
# directly, where the one-shot SHA256() looks the algorithm up by name on every call
# (most of the cost at this size).
cdef extern from *:
    """
    #define OPENSSL_SUPPRESS_DEPRECATED
    """
cdef extern from "openssl/sha.h" nogil:
    ctypedef struct SHA256_CTX:
        pass
    int SHA256_Init(SHA256_CTX *c)
    int SHA256_Update(SHA256_CTX *c, const void *data, size_t n)
    int SHA256_Final(unsigned char *md, SHA256_CTX *c)


cdef const char *_HEX = b"0123456789abcdef"
# Each byte's two hex digits, by value: the digest's 32 bytes are 32 copies of 2 bytes.
cdef unsigned char _HEX_PAIRS[512]


cdef void _fill_hex_pairs() noexcept:
    cdef int i
    for i in range(256):
        _HEX_PAIRS[2 * i] = _HEX[i >> 4]
        _HEX_PAIRS[2 * i + 1] = _HEX[i & 0x0F]


_fill_hex_pairs()

# Keys and constant strings as msgpack encodes them (each a fixstr: 0xa0 | length).
cdef bytes _MAP5 = b"\x85"
cdef bytes _SEQ = b"\xa3seq"
cdef bytes _TS = b"\xa2ts"
cdef bytes _KIND = b"\xa4kind"
cdef bytes _DATA = b"\xa4data"
cdef bytes _PREV = b"\xa4prev\xd9\x40"  # the key, then str8 of 64 characters
cdef bytes _STATEMENT = b"\xa9statement"
cdef bytes _RESULT = b"\xa6result"
cdef bytes _SQL = b"\xa3sql"
cdef bytes _CLASS = b"\xa5class"
cdef bytes _DECISION = b"\xa8decision"
cdef bytes _BIND = b"\xa4bind"
cdef bytes _TYPES = b"\xa5types"
cdef bytes _TAG = b"\xa3tag"

# The envelope around seq's value, the kind's value and data: the map header, the five
# keys, a float64 ts, and prev's 64 characters.
cdef Py_ssize_t _ENVELOPE = 1 + 4 + 3 + 9 + 5 + 5 + 7 + 64
# Pending records' buffer: kept between takes up to this size, freed above it.
cdef Py_ssize_t _KEPT_CAPACITY = 1 << 20


cdef inline Py_ssize_t _str_header_size(Py_ssize_t n) noexcept:
    if n < 32:
        return 1
    if n <= 0xFF:
        return 2
    if n <= 0xFFFF:
        return 3
    return 5


cdef inline Py_ssize_t _int_size(int64_t value) noexcept:
    """Bytes `_put_int` writes for value."""
    if value >= 0:
        if value < 128:
            return 1
        if value <= 0xFF:
            return 2
        if value <= 0xFFFF:
            return 3
        if value <= 0xFFFFFFFF:
            return 5
        return 9
    if value >= -32:
        return 1
    if value >= -128:
        return 2
    if value >= -32768:
        return 3
    if value >= -2147483648:
        return 5
    return 9


cdef inline Py_ssize_t _bin_header_size(Py_ssize_t n) noexcept:
    if n <= 0xFF:
        return 2
    if n <= 0xFFFF:
        return 3
    return 5


cdef inline unsigned char *_put_be(unsigned char *p, uint64_t value, int size) noexcept:
    cdef int i
    for i in range(size - 1, -1, -1):
        p[i] = value & 0xFF
        value >>= 8
    return p + size


cdef inline unsigned char *_put_raw(unsigned char *p, bytes raw) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw)
    memcpy(p, PyBytes_AS_STRING(raw), n)
    return p + n


cdef inline unsigned char *_put_header(
    unsigned char *p, Py_ssize_t n, int fixed, Py_ssize_t fixed_below, int code8, int code16,
    int code32,
) noexcept:
    """A msgpack length header: the fixed form (`fixed | n`) below `fixed_below`, else the
    smallest of the 8-bit (if the type has one: code8 != 0), 16-bit and 32-bit forms."""
    if n < fixed_below:
        p[0] = fixed | n
        return p + 1
    if code8 and n <= 0xFF:
        p[0] = code8
        return _put_be(p + 1, n, 1)
    if n <= 0xFFFF:
        p[0] = code16
        return _put_be(p + 1, n, 2)
    p[0] = code32
    return _put_be(p + 1, n, 4)


cdef inline unsigned char *_put_str(unsigned char *p, const char *s, Py_ssize_t n) noexcept:
    p = _put_header(p, n, 0xA0, 32, 0xD9, 0xDA, 0xDB)
    memcpy(p, s, n)
    return p + n


cdef inline unsigned char *_put_bin(unsigned char *p, const char *s, Py_ssize_t n) noexcept:
    p = _put_header(p, n, 0, 0, 0xC4, 0xC5, 0xC6)  # bin has no fixed form
    memcpy(p, s, n)
    return p + n


cdef inline unsigned char *_put_int(unsigned char *p, int64_t value) noexcept:
    """msgpack-python's choice: the shortest form, unsigned forms for values >= 0."""
    if value >= 0:
        if value < 128:
            p[0] = <unsigned char>value
            return p + 1
        if value <= 0xFF:
            p[0] = 0xCC
            return _put_be(p + 1, <uint64_t>value, 1)
        if value <= 0xFFFF:
            p[0] = 0xCD
            return _put_be(p + 1, <uint64_t>value, 2)
        if value <= 0xFFFFFFFF:
            p[0] = 0xCE
            return _put_be(p + 1, <uint64_t>value, 4)
        p[0] = 0xCF
        return _put_be(p + 1, <uint64_t>value, 8)
    if value >= -32:
        p[0] = <unsigned char>(value & 0xFF)
        return p + 1
    if value >= -128:
        p[0] = 0xD0
        return _put_be(p + 1, <uint64_t>value, 1)
    if value >= -32768:
        p[0] = 0xD1
        return _put_be(p + 1, <uint64_t>value, 2)
    if value >= -2147483648:
        p[0] = 0xD2
        return _put_be(p + 1, <uint64_t>value, 4)
    p[0] = 0xD3
    return _put_be(p + 1, <uint64_t>value, 8)


cdef inline unsigned char *_put_double(unsigned char *p, double value) noexcept:
    cdef uint64_t bits
    memcpy(&bits, &value, 8)
    p[0] = 0xCB
    return _put_be(p + 1, bits, 8)


cdef class EventChain:
    """One transcript's chain: the next sequence number, the hash of the last event, and
    the records not yet taken for writing.

    Events are recorded from one thread (the session's event loop); `take` and
    `put_back` may run in another.
    """

    # Its fields are declared in event_chain.pxd.

    def __cinit__(self, clock):
        self.seq = 0
        memset(self._prev, ord("0"), 64)
        self._clock = clock
        self._pending = NULL
        self._pending_size = 0
        self._capacity = 0
        self._closed = False
        self._unhashed = 0

    def __dealloc__(self):
        free(self._pending)

    @property
    def has_pending(self):
        return self._pending_size > 0

    def take(self):
        """Every record not yet taken, oldest first, back to back (b"" when none)."""
        self.hash_pending()
        if self._pending_size == 0:
            return b""
        taken = PyBytes_FromStringAndSize(<char *>self._pending, self._pending_size)
        self._pending_size = 0
        if self._capacity > _KEPT_CAPACITY:  # after a burst, give the memory back
            free(self._pending)
            self._pending = NULL
            self._capacity = 0
        return taken

    def put_back(self, bytes taken):
        """Records taken but not written: they go first again."""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(taken)
        if size == 0:
            return
        self.hash_pending()  # the records pending move, and with them where they end
        self._reserve(size)
        memmove(self._pending + size, self._pending, self._pending_size)
        memcpy(self._pending, PyBytes_AS_STRING(taken), size)
        self._pending_size += size

    def queue(self, bytes raw):
        """A record outside the chain (the seal), after the events so far."""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(raw)
        self.hash_pending()
        memcpy(self._reserve(size), PyBytes_AS_STRING(raw), size)
        self._pending_size += size

    cdef unsigned char *_reserve(self, Py_ssize_t size) except NULL:
        """Room for `size` more bytes after the pending ones; where it starts."""
        cdef Py_ssize_t needed = self._pending_size + size
        cdef Py_ssize_t capacity
        cdef unsigned char *grown
        if needed > self._capacity:
            capacity = max(needed, 2 * self._capacity, 4096)
            grown = <unsigned char *>realloc(self._pending, capacity)
            if grown == NULL:
                raise MemoryError()
            self._pending = grown
            self._capacity = capacity
        return self._pending + self._pending_size

    def close(self):
        """No more events: recording one is a bug, and raises."""
        self.hash_pending()
        self._closed = True

    @property
    def prev(self):
        """The hex SHA-256 of the last event's bytes (64 zeros before the first)."""
        self.hash_pending()
        return self._prev[:64].decode("ascii")

    cpdef append(self, str kind, bytes data, object ts=None):
        """Record the next event, of `kind`, with `data` (a map, packed by msgpack), at `ts`
        (unix seconds; now if None)."""
        cdef double when = self._clock() if ts is None else ts
        cdef Py_ssize_t kind_size
        cdef const char *kind_utf8 = PyUnicode_AsUTF8AndSize(kind, &kind_size)
        cdef Py_ssize_t size = (
            _ENVELOPE + _int_size(self.seq) + _str_header_size(kind_size) + kind_size
            + PyBytes_GET_SIZE(data)
        )
        cdef unsigned char *p = self._open(size, when)
        p = _put_str(p, kind_utf8, kind_size)
        p = _put_raw(p, _DATA)
        p = _put_raw(p, data)
        self._close(p, size)

    cpdef statement(
        self, str sql, str statement_class, str decision, bytes bind=None, tuple types=()
    ):
        """Record a `statement` event {"sql", "class", "decision"}, plus {"bind", "types"}
        when `bind` (the raw PostgreSQL Bind message) is given, at the clock's time."""
        cdef double ts = self._clock()
        cdef Py_ssize_t sql_size, class_size, decision_size
        cdef const char *sql_utf8 = PyUnicode_AsUTF8AndSize(sql, &sql_size)
        cdef const char *class_utf8 = PyUnicode_AsUTF8AndSize(statement_class, &class_size)
        cdef const char *decision_utf8 = PyUnicode_AsUTF8AndSize(decision, &decision_size)
        cdef Py_ssize_t size = (
            _ENVELOPE + _int_size(self.seq) + PyBytes_GET_SIZE(_STATEMENT) + 1
            + PyBytes_GET_SIZE(_SQL) + _str_header_size(sql_size) + sql_size
            + PyBytes_GET_SIZE(_CLASS) + _str_header_size(class_size) + class_size
            + PyBytes_GET_SIZE(_DECISION) + _str_header_size(decision_size) + decision_size
        )
        cdef Py_ssize_t bind_size = 0
        cdef Py_ssize_t count = 0
        cdef Py_ssize_t i
        cdef int64_t oid
        if bind is not None:
            bind_size = PyBytes_GET_SIZE(bind)
            count = len(types)
            size += (
                PyBytes_GET_SIZE(_BIND) + _bin_header_size(bind_size) + bind_size
                + PyBytes_GET_SIZE(_TYPES) + (1 if count < 16 else 3 if count <= 0xFFFF else 5)
            )
            for i in range(count):
                size += _int_size(types[i])
        cdef unsigned char *p = self._open(size, ts)
        p = _put_raw(p, _STATEMENT)
        p = _put_raw(p, _DATA)
        p[0] = 0x85 if bind is not None else 0x83  # fixmap of 5 or 3
        p += 1
        p = _put_raw(p, _SQL)
        p = _put_str(p, sql_utf8, sql_size)
        p = _put_raw(p, _CLASS)
        p = _put_str(p, class_utf8, class_size)
        p = _put_raw(p, _DECISION)
        p = _put_str(p, decision_utf8, decision_size)
        if bind is not None:
            p = _put_raw(p, _BIND)
            p = _put_bin(p, PyBytes_AS_STRING(bind), bind_size)
            p = _put_raw(p, _TYPES)
            p = _put_header(p, count, 0x90, 16, 0, 0xDC, 0xDD)  # array: no 8-bit form
            for i in range(count):
                oid = types[i]
                p = _put_int(p, oid)
        self._close(p, size)

    cpdef result_tag(self, str tag):
        """Record a `result` event {"tag": tag}: a statement completed, at the clock's time."""
        cdef double ts = self._clock()
        cdef Py_ssize_t tag_size
        cdef const char *tag_utf8 = PyUnicode_AsUTF8AndSize(tag, &tag_size)
        cdef Py_ssize_t size = (
            _ENVELOPE + _int_size(self.seq) + PyBytes_GET_SIZE(_RESULT) + 1
            + PyBytes_GET_SIZE(_TAG) + _str_header_size(tag_size) + tag_size
        )
        cdef unsigned char *p = self._open(size, ts)
        p = _put_raw(p, _RESULT)
        p = _put_raw(p, _DATA)
        p[0] = 0x81
        p += 1
        p = _put_raw(p, _TAG)
        p = _put_str(p, tag_utf8, tag_size)
        self._close(p, size)

    cdef unsigned char *_open(self, Py_ssize_t size, double ts) except NULL:
        """Room for the next record, of `size` bytes, after the pending ones, and the
        record written up to the kind's value (map header, seq, ts, the kind key): where
        that value goes. Nothing is pending until `_close`."""
        if self._closed:
            raise RuntimeError("event recorded after the transcript was sealed")
        cdef unsigned char *p = self._reserve(size)
        p = _put_raw(p, _MAP5)
        p = _put_raw(p, _SEQ)
        p = _put_int(p, self.seq)
        p = _put_raw(p, _TS)
        p = _put_double(p, ts)
        return _put_raw(p, _KIND)

    cdef int _close(self, unsigned char *p, Py_ssize_t size) except -1:
        """End the record `_open` began with prev's key, and make it pending, its prev
        and hash to come (`hash_pending`)."""
        cdef unsigned char *start = self._pending + self._pending_size
        p = _put_raw(p, _PREV) + 64
        cdef Py_ssize_t length = p - start
        if length != size:  # the sizes computed are exact: a bug
            raise AssertionError(f"event of {length} bytes, {size} reserved")
        if self._unhashed == UNHASHED_MAX:
            self.hash_pending()
        if self._unhashed == 0:
            self._unhashed_start = self._pending_size
        self.seq += 1
        self._pending_size += length
        self._unhashed_ends[self._unhashed] = self._pending_size
        self._unhashed += 1
        return 0

    cpdef hash_pending(self):
        """Chain the records packed since the last call: each gets the hex SHA-256 of the
        one before as its prev, and is hashed in turn."""
        cdef unsigned char digest[32]
        cdef SHA256_CTX sha
        cdef int i, k
        cdef Py_ssize_t start, end
        if self._unhashed == 0:
            return
        start = self._unhashed_start
        for k in range(self._unhashed):
            end = self._unhashed_ends[k]
            memcpy(self._pending + end - 64, self._prev, 64)
            SHA256_Init(&sha)
            SHA256_Update(&sha, self._pending + start, end - start)
            SHA256_Final(digest, &sha)
            for i in range(32):
                memcpy(self._prev + 2 * i, _HEX_PAIRS + 2 * digest[i], 2)
            start = end
        self._unhashed = 0
