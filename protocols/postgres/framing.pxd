cimport cython

cdef class BackendRelay:
    cdef bytes _types
    cdef bytes _usual_types
    cdef bytes _all_types
    cdef Py_ssize_t _max_inspected
    cdef Py_ssize_t _remaining
    cdef bytes _held
    cdef public list inspected

    @cython.locals(size=Py_ssize_t, pos=Py_ssize_t, kind=int, length=Py_ssize_t, end=Py_ssize_t, what=int, inspected=list)
    cpdef bytes feed(self, bytes raw)

    cpdef inspect_all(self, bint every)
