# C declarations for pg_gate.py when Cython compiles it (see setup.py); the .py is the source.

cimport cython

from policy.fingerprint cimport CachedClassifier
from protocols.postgres.scan cimport (
    bind_statement_end,
    execute_portal_end,
    parse_sql_end,
    target_name_end,
    text_end,
)
from proxy.recording.event_chain cimport EventChain

# Message types, as C values.
cdef int _Q, _P, _B, _E, _C, _D
cdef int _PARSE_COMPLETE, _BIND_COMPLETE, _CLOSE_COMPLETE

@cython.final
cdef class Change:
    cdef Py_ssize_t unit
    cdef int answer
    cdef bint portal
    cdef bytes name
    cdef object previous
    cdef Change next

cdef class PreparedStatement:
    cdef public str sql
    cdef public object verdict
    cdef public str class_name
    cdef public Py_ssize_t class_index
    cdef public bytes declared
    cdef public tuple declared_types
    cdef public bint allowed
    cdef public object described
    cdef public bytes parse


cdef class Portal:
    cdef public PreparedStatement statement
    cdef public bytes bind
    cdef public Py_ssize_t unit
    cdef public bint approved


cdef class PgGate:
    cdef public CachedClassifier classifier
    cdef public object policy
    cdef public object clock
    cdef public dict statements
    cdef public dict portals
    cdef public double session_grant_until
    cdef Py_ssize_t _admitted[5]
    cdef public EventChain chain
    cdef public object on_statement
    cdef public object on_drained
    cdef Py_ssize_t _sent
    cdef Py_ssize_t _done
    cdef Change _first
    cdef Change _last
    cdef Change _spare
    cdef bint _skipping
    cdef list _describing
    cdef Py_ssize_t _barrier
    cdef Py_ssize_t _last_bound
    cdef dict _allow
    cdef dict _grantable
    cdef dict _hot
    cdef frozenset _cold

    @cython.locals(
        name_end=Py_ssize_t, statement_end=Py_ssize_t, sql_end=Py_ssize_t, subtype=int,
        index=Py_ssize_t,
        statement=PreparedStatement, existing=PreparedStatement, found=Portal, types=tuple,
        first=Change, bound=Portal,
        data="const char *",
    )
    cpdef int admit(self, int kind, bytes raw, Py_ssize_t start, Py_ssize_t end) except -1

    cpdef unit_sent(self)

    cpdef wait_after(self, Py_ssize_t unit)

    @cython.locals(first=Change)
    cpdef answered(self, int kind)

    cpdef failed(self)

    @cython.locals(table=dict, change=Change)
    cdef _change(self, int answer, bint portal, bytes name, object value)

    @cython.locals(change=Change, sent=Py_ssize_t)
    cdef bint _unsettled(self, bint portal, bytes name) except -1

    @cython.locals(undone=list, change=Change, table=dict)
    cdef _undo(self, Py_ssize_t unit)

    cdef void _recycle(self, Change change)

    cpdef bint allowed(self, object verdict) except -1

    @cython.locals(unit=Py_ssize_t)
    cpdef ready(self, str transaction_status)

    @cython.locals(statements=dict)
    cpdef note_query(self, str sql)
