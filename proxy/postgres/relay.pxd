# C declarations for pg_relay.py when Cython compiles it (see setup.py); the .py is the source.
cimport cython

from protocols.postgres.framing cimport BackendRelay, frame_at
from proxy.recording.event_chain cimport EventChain
from proxy.postgres.gate cimport PgGate

# Module constants the hot path reads, as C values.
cdef int _Z, _S, _K, _R, _E, _T, _C, _D
cdef int _QUERY, _SYNC, _FUNCTION_CALL, _TERMINATE
cdef int _PARSE_COMPLETE, _BIND_COMPLETE, _CLOSE_COMPLETE, _EXECUTE
cdef int _PLAIN, _GATE, _OPENS_BATCH, _ENDS_BATCH, _FRAMED
cdef bytes _FRONTEND_FLAGS

cdef class PgRelay:
    cdef public str transaction_status
    cdef PgGate _gate
    cdef object _client
    cdef Py_ssize_t _max_message_bytes
    cdef bint _client_idle
    cdef object _results
    cdef public EventChain chain
    cdef BackendRelay _server
    cdef Py_ssize_t _owed
    cdef Py_ssize_t _units_sent
    cdef Py_ssize_t _unit_messages
    cdef list _own_units
    cdef list _own_readies
    cdef list _switchbacks
    cdef list _runs
    cdef Py_ssize_t _answered
    cdef Py_ssize_t _failed_at
    cdef tuple _roles
    cdef public bint role_in_doubt
    cdef bint _savepoints_in_doubt
    cdef list _query_returns
    cdef bytes _looked_at
    cdef bint _unsynced
    cdef bint _failed_batch
    cdef str _refusal_prefix
    cdef object _refusal_pattern
    cdef Py_ssize_t _refusal_seq
    cdef dict _refusals
    cdef public object held
    cdef Py_ssize_t _probe_unit
    cdef public list probe_rows
    cdef public bint probe_failed
    cdef public object on_probed
    cdef public bint terminated
    cdef public bint server_fatal
    cdef public dict server_parameters

    cdef void _update_idle(self)

    @cython.locals(size=Py_ssize_t, pos=Py_ssize_t, end=Py_ssize_t, kind=int, flags=int, flags_of=bytes, max_bytes=Py_ssize_t)
    cpdef Py_ssize_t fast_forward(self, bytes raw) except -1

    @cython.locals(kind=int, start=Py_ssize_t, end=Py_ssize_t, framed=bytes, server=BackendRelay, marks="long long[::1]", tag=str, data="const char *", swaps=list, count=Py_ssize_t, i=Py_ssize_t, own_answers=bint, counting=bint)
    cpdef bytes server_data(self, bytes raw)

    cdef void _note_forwarded(self, int kind)

    cdef void _unit_sent(self)

    cdef bint _own_answer(self, bytes framed, int kind, Py_ssize_t start, Py_ssize_t end) except -1

    cdef bint _server_ready(self, bytes framed, Py_ssize_t start, Py_ssize_t end) except -1


cdef class Pipe:
    cdef public PgRelay relay
    cdef public object to_server
    cdef public object to_client
    cdef public object client_rest
    cdef public object server_failed
    cdef public bint open
    cdef public EventChain chain
    cdef public object on_latency
    cdef int _countdown

    @cython.locals(started=double)
    cpdef client_data(self, bytes raw)

    @cython.locals(done=Py_ssize_t, whole=bint)
    cdef bint _client_data(self, bytes raw) except -1

    @cython.locals(out=bytes)
    cpdef server_data(self, bytes raw)
