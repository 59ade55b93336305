# C declarations for scan.py when Cython compiles it (see setup.py); the .py is the source.
# cpdef: the gate calls them as C functions (cimport), tests as Python ones.

cimport cython


@cython.locals(
    i=Py_ssize_t, b=int, more=Py_ssize_t, low=int, high=int, k=Py_ssize_t,
    data="const unsigned char *",
)
cpdef Py_ssize_t text_end(bytes raw, Py_ssize_t pos, Py_ssize_t end) except? -2

# Callers have checked the bytes are there (every accessor's first text_end checks `end`).
cdef long _count16(const unsigned char *data, Py_ssize_t pos) noexcept

@cython.locals(value="long long")
cdef long long _int32(const unsigned char *data, Py_ssize_t pos) noexcept

@cython.locals(sql_end=Py_ssize_t)
cpdef Py_ssize_t query_sql_end(bytes raw, Py_ssize_t start, Py_ssize_t end) except? -2

@cython.locals(name_end=Py_ssize_t, sql_end=Py_ssize_t, count=Py_ssize_t)
cpdef Py_ssize_t parse_sql_end(bytes raw, Py_ssize_t start, Py_ssize_t end) except? -2

@cython.locals(
    portal_end=Py_ssize_t, statement_end=Py_ssize_t, pos=Py_ssize_t, count=Py_ssize_t,
    size="long long",
)
cpdef Py_ssize_t bind_statement_end(bytes raw, Py_ssize_t start, Py_ssize_t end) except? -2

@cython.locals(portal_end=Py_ssize_t)
cpdef Py_ssize_t execute_portal_end(bytes raw, Py_ssize_t start, Py_ssize_t end) except? -2

@cython.locals(subtype=int, name_end=Py_ssize_t)
cpdef Py_ssize_t target_name_end(bytes raw, Py_ssize_t start, Py_ssize_t end) except? -2
