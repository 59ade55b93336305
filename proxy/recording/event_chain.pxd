# C declarations of event_chain.pyx, for modules that call the chain in C (the gate and
# the relay record every allowed statement and its result through it).

cdef enum:
    UNHASHED_MAX = 16

cdef class EventChain:
    cdef readonly Py_ssize_t seq
    cdef char _prev[64]
    cdef object _clock
    cdef unsigned char *_pending  # records not yet taken, back to back
    cdef Py_ssize_t _pending_size
    cdef Py_ssize_t _capacity
    cdef bint _closed
    # Records packed but not yet hashed (see `hash_pending`): how many, where the first
    # begins, where each one ends.
    cdef Py_ssize_t _unhashed
    cdef Py_ssize_t _unhashed_start
    cdef Py_ssize_t _unhashed_ends[UNHASHED_MAX]

    cdef unsigned char *_reserve(self, Py_ssize_t size) except NULL
    cpdef append(self, str kind, bytes data, object ts=*)
    cpdef statement(
        self, str sql, str statement_class, str decision, bytes bind=*, tuple types=*
    )
    cpdef result_tag(self, str tag)
    cdef unsigned char *_open(self, Py_ssize_t size, double ts) except NULL
    cdef int _close(self, unsigned char *p, Py_ssize_t size) except -1
    cpdef hash_pending(self)
