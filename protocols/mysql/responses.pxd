# C declarations for responses.py when Cython compiles it (see setup.py); the .py is the source.
cimport cython

from protocols.mysql.packets cimport packet_end

# Module constants the hot path reads, as C values.
cdef int _FIRST, _COLUMNS, _COLUMNS_EOF, _ROWS, _PREPARE_OK, _PARAM_DEFS, _PARAM_DEFS_EOF
cdef int _PREPARE_COLUMNS, _PREPARE_COLUMNS_EOF, _FIELDS, _STATISTICS, _SINGLE, _DONE
cdef int _OK, _EOF, _ERR, _INFILE

cdef class ResponseTracker:
    cdef object _caps
    cdef int _command
    cdef bint _deprecate_eof
    cdef bint _metadata_byte
    cdef Py_ssize_t _pending
    cdef bint _progress
    cdef bint _protocol_41
    cdef int _state
    cdef Py_ssize_t _terminator_limit
    cdef public object affected_rows
    cdef public object columns
    cdef public bint cursor_opened
    cdef public object error
    cdef public object infile_filename
    cdef public bint local_infile
    cdef public object ok
    cdef public object on_column
    cdef public object on_row
    cdef public object prepare_ok
    cdef public Py_ssize_t result_sets
    cdef public Py_ssize_t rows
    cdef public object statistics
    cdef public int status_flags
    cdef public int warnings

    @cython.locals(data="const unsigned char *", end=Py_ssize_t, length=Py_ssize_t, state=int, first=int, done=bint)
    cpdef Py_ssize_t follow(self, bytes raw, Py_ssize_t pos, Py_ssize_t size) except -1

    @cython.locals(first=int, state=int)
    cpdef bint feed(self, payload) except -1
