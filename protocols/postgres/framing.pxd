cimport cython

cdef Py_ssize_t NEED_DATA, BAD_TYPE, BAD_LENGTH, TOO_LARGE, UNCAPPED

# It answers codes, not exceptions; -9, which it never answers, stands for one (None as raw).
@cython.locals(
    data="const unsigned char *", flags="const unsigned char *", top="long long", length="long long"
)
cpdef Py_ssize_t frame_at(bytes raw, Py_ssize_t pos, bytes types, Py_ssize_t max_bytes) except? -9

cdef class BackendRelay:
    cdef bytes _types
    cdef bytes _usual_types
    cdef bytes _all_types
    cdef Py_ssize_t _max_inspected
    cdef Py_ssize_t _remaining
    cdef bytes _held
    cdef public long long[::1] marks
    cdef public Py_ssize_t marked

    @cython.locals(size=Py_ssize_t, pos=Py_ssize_t, kind=int, end=Py_ssize_t, marked=Py_ssize_t)
    cpdef bytes feed(self, bytes raw)

    @cython.locals(marks="long long[::1]", i=Py_ssize_t)
    cdef _grow(self)

    cpdef inspect_all(self, bint every)
