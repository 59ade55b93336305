# C declarations for pg_gate.py when Cython compiles it (see setup.py); the .py is the source.

cimport cython

from policy.fingerprint cimport CachedClassifier
from proxy.event_chain cimport EventChain

# Message types, as C values.
cdef int _Q, _P, _B, _E, _C, _D


@cython.locals(i=Py_ssize_t)
cdef Py_ssize_t _nul(bytes raw, Py_ssize_t start, Py_ssize_t end) except? -2

cdef class PreparedStatement:
    cdef public str sql
    cdef public object verdict
    cdef public str class_name
    cdef public bytes declared
    cdef public tuple declared_types
    cdef public bint allowed
    cdef public object described


cdef class Portal:
    cdef public PreparedStatement statement
    cdef public bytes bind
    cdef public bint approved


cdef class PgGate:
    cdef public CachedClassifier classifier
    cdef public object policy
    cdef public object clock
    cdef public dict statements
    cdef public dict portals
    cdef public double session_grant_until
    cdef public Py_ssize_t admitted
    cdef public EventChain chain
    cdef public object on_statement
    cdef object _describing
    cdef dict _allow
    cdef frozenset _durable

    @cython.locals(
        name_end=Py_ssize_t, statement_end=Py_ssize_t, sql_end=Py_ssize_t,
        statement=PreparedStatement, existing=PreparedStatement, found=Portal, types=tuple,
        data="const char *",
    )
    cpdef bint admit(self, int kind, bytes raw, Py_ssize_t start, Py_ssize_t end) except -1

    cpdef bint allowed(self, object verdict) except -1

    cpdef ready(self, str transaction_status)

    cpdef note_query(self, str sql)
