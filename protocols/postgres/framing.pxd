cimport cython

cdef class BackendRelay:
    cdef bytes _types
    cdef Py_ssize_t _max_inspected
    cdef Py_ssize_t _remaining
    cdef bytes _held

    @cython.locals(size=Py_ssize_t, pos=Py_ssize_t, kind=int, length=Py_ssize_t, end=Py_ssize_t, what=int)
    cpdef tuple feed(self, bytes raw)
