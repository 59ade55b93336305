# C declarations for packets.py when Cython compiles it (see setup.py); the .py is the source.
cimport cython

cdef class Packet:
    cdef readonly int sequence_id
    cdef readonly int last_sequence_id
    cdef readonly bytes payload
    cdef readonly bytes raw
    cdef readonly bint oversized

@cython.locals(data="const unsigned char *", length=Py_ssize_t, end=Py_ssize_t)
cpdef Py_ssize_t packet_end(bytes raw, Py_ssize_t pos, Py_ssize_t size) except? -2

cdef class PacketReader:
    cdef bytearray _buffer
    cdef bint _drain
    cdef Py_ssize_t _max
    cdef Py_ssize_t _need
    cdef Py_ssize_t _oversized_at
    cdef object _skip

    cpdef list feed(self, bytes data)

    @cython.locals(packets=list, drained=object)
    cdef list _feed(self, bytes data, int most)

    @cython.locals(packets=list, size=Py_ssize_t, limit=Py_ssize_t, pos=Py_ssize_t, end=Py_ssize_t, length=Py_ssize_t, seq=int, whole=bytes)
    cdef tuple _scan(self, bytes raw, int most)
