# C declarations for fingerprint.py when Cython compiles it (see setup.py); the .py is the source.

cimport cython


cdef object _keyed(str sql, str dialect, bytes prefix, object max_token_chars)

cdef class _Lru:
    cdef dict _entries
    cdef Py_ssize_t _chars
    cdef Py_ssize_t _max_entries
    cdef Py_ssize_t _max_chars

    cpdef object get(self, str key)
    cpdef put(self, str key, object verdict)


cdef class CachedClassifier:
    cdef public str dialect
    cdef bytes _prefix
    cdef public Py_ssize_t max_text_chars
    cdef public Py_ssize_t max_token_chars
    cdef public Py_ssize_t hits
    cdef public Py_ssize_t misses
    cdef _Lru _exact
    cdef _Lru _by_fingerprint
    cdef str _last_sql
    cdef object _last_key

    cpdef object lookup(self, str sql)
    cpdef object key(self, str sql)
    cpdef object _fingerprint(self, str sql)
