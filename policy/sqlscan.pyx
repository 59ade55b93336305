# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""One-pass scans of SQL text for the gate's hot path, in C.

`fast_fingerprint` is policy.fingerprint's fast path: where a text is made only of a
conservative alphabet, its fingerprint is the text with plain '...' strings and
free-standing numbers taken out and whitespace collapsed (policy/fingerprint.py says why
that is safe, and when it gives up). It was five regular-expression passes, a lower-cased
copy, a split and a join: most of the cost of a cached simple Query. Here it is two passes
over the characters and one string built. tests/policy/test_sqlscan.py holds it, on
random and adversarial text, to the regular expressions it replaced, which it keeps.

`names_statements` says whether a text may create or drop prepared statements (PREPARE,
DEALLOCATE, DISCARD, as any substring in any case): the gate then forgets the ones it
knows.

Both read the text's characters in place: a str whose characters are all ASCII is stored
one byte per character. Anything else takes the slow road (the fingerprint's token path,
the regular expression).
"""

import re

from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy


cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object)
    const unsigned char *PyUnicode_1BYTE_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)


# Character classes, by ASCII code.
cdef enum:
    ALPHABET = 1  # the fast path's: [A-Za-z0-9_ \t\n\r'=<>!(),.;*+:\[\]%|]
    WORD = 2  # [A-Za-z0-9_]: what \b separates
    DIGIT = 4
    SPACE = 8  # [ \t\n\r]: what str.split() splits on, within the alphabet
    GLUED = 16  # [A-Za-z0-9_.\x01]: after a number, makes it part of something else

cdef unsigned char _CLASS[128]


cdef void _fill_classes():
    cdef int c
    for c in range(128):
        _CLASS[c] = 0
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_":
        _CLASS[c] |= ALPHABET | WORD | GLUED
    for c in b"0123456789":
        _CLASS[c] |= ALPHABET | WORD | DIGIT | GLUED
    for c in b" \t\n\r":
        _CLASS[c] |= ALPHABET | SPACE
    for c in b"'=<>!(),.;*+:[]%|":
        _CLASS[c] |= ALPHABET
    _CLASS[ord(".")] |= GLUED
    _CLASS[1] |= GLUED


_fill_classes()

# What replaces a string and a number in the key.
cdef enum:
    STRING = 1
    NUMBER = 2

# Case-blind, as `re.compile("PREPARE|DEALLOCATE|DISCARD", re.IGNORECASE)` reads; the
# slow road for non-ASCII text (where IGNORECASE also folds a few other letters).
_NAMES_STATEMENTS = re.compile("PREPARE|DEALLOCATE|DISCARD", re.IGNORECASE)


cdef inline unsigned char _lower(unsigned char c) noexcept nogil:
    return c | 0x20 if 0x41 <= c <= 0x5A else c


cdef inline bint _is(const unsigned char *s, Py_ssize_t n, const char *word) noexcept nogil:
    """s[:n] spells word (lower case), letters in any case."""
    cdef Py_ssize_t i
    for i in range(n):
        if _lower(s[i]) != <unsigned char>word[i]:
            return False
    return word[n] == 0


cdef inline bint _has_at(const unsigned char *s, Py_ssize_t n, Py_ssize_t i, const char *word) noexcept nogil:
    """word (lower case) is at s[i:], letters in any case."""
    cdef Py_ssize_t k = 0
    while word[k] != 0:
        if i + k >= n or _lower(s[i + k]) != <unsigned char>word[k]:
            return False
        k += 1
    return True


def names_statements(str sql not None) -> bool:
    """Whether `sql` mentions PREPARE, DEALLOCATE or DISCARD anywhere, in any case."""
    if not PyUnicode_IS_ASCII(sql):
        return _NAMES_STATEMENTS.search(sql) is not None
    cdef const unsigned char *s = PyUnicode_1BYTE_DATA(sql)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(sql)
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = _lower(s[i])
        if c == b"p":
            if _has_at(s, n, i, b"prepare"):
                return True
        elif c == b"d":
            if _has_at(s, n, i, b"deallocate") or _has_at(s, n, i, b"discard"):
                return True
    return False


def fast_fingerprint(str sql not None, bytes prefix not None, Py_ssize_t max_opens):
    """`prefix` + the fast-path key of `sql`, or None where the fast path does not apply.

    It does not apply either where `sql` has more than `max_opens` opening brackets
    (inside strings too), so that a key also says the classifier's depth cap holds.
    """
    if not PyUnicode_IS_ASCII(sql):
        return None
    cdef const unsigned char *s = PyUnicode_1BYTE_DATA(sql)
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(sql)
    cdef Py_ssize_t p = len(prefix)
    cdef Py_ssize_t stripped, written
    cdef unsigned char small[1024]
    cdef unsigned char *buffer = small  # the stripped text, then the key
    if 2 * n + p > 1024:
        buffer = <unsigned char *>malloc(2 * n + p)
        if buffer == NULL:
            raise MemoryError()
    try:
        stripped = _strip_strings(s, n, buffer, max_opens)
        if stripped < 0:
            return None
        memcpy(buffer + n, <const char *>prefix, p)
        written = _strip_numbers(buffer, stripped, buffer + n + p)
        if written < 0:
            return None
        return PyUnicode_DecodeASCII(<const char *>buffer + n, p + written, NULL)
    finally:
        if buffer != small:
            free(buffer)


cdef Py_ssize_t _strip_strings(
    const unsigned char *s, Py_ssize_t n, unsigned char *out, Py_ssize_t max_opens
) noexcept nogil:
    """s with each plain '...' string as one STRING character, into out; its length.

    -1 where the fast path does not apply: a character outside the alphabet, a quote
    left unpaired, or a string glued to what is around it: after a name, number or dot
    (E'..', 1'..'), before a name, number, dot or quote ('a''b'), or before another
    string across nothing but whitespace ('a' 'b' is one literal in PostgreSQL); more
    than max_opens ( and [.
    """
    cdef Py_ssize_t i, j, w = 0, opens = 0
    cdef unsigned char c
    for i in range(n):
        if s[i] == b"(" or s[i] == b"[":
            opens += 1
    if opens > max_opens:
        return -1
    i = 0
    while i < n:
        c = s[i]
        if c >= 128 or not (_CLASS[c] & ALPHABET):
            return -1
        if c != b"'":
            out[w] = c
            w += 1
            i += 1
            continue
        j = i + 1
        while j < n and s[j] != b"'":
            if s[j] >= 128 or not (_CLASS[s[j]] & ALPHABET):
                return -1
            j += 1
        if j == n:
            return -1  # unpaired
        if w and (_CLASS[out[w - 1]] & GLUED):
            return -1
        out[w] = STRING
        w += 1
        i = j + 1
        if i < n:
            c = s[i]
            if c == b"'" or (c < 128 and _CLASS[c] & GLUED):
                return -1
            if c < 128 and _CLASS[c] & SPACE:
                j = i
                while j < n and s[j] < 128 and _CLASS[s[j]] & SPACE:
                    j += 1
                if j < n and s[j] == b"'":
                    return -1
    return w


cdef Py_ssize_t _strip_numbers(
    const unsigned char *s, Py_ssize_t n, unsigned char *out
) noexcept nogil:
    """s (stripped of strings) with each free-standing number as one NUMBER character and
    its whitespace collapsed, into out; its length.

    A number is digits, perhaps a dot and more digits, not preceded by a name character
    (t1) and not followed by a name character, dot or string (1a, 1.5.5, 1e5). -1 where
    the text has the word SET, PREPARE or SET_CONFIG, in any case: those statements (and
    set_config(...)) read their literals' values.
    """
    cdef Py_ssize_t p = 0, e, w = 0
    cdef bint space = False
    cdef unsigned char c, kind
    while p < n:
        c = s[p]
        kind = _CLASS[c]
        if kind & SPACE:
            space = True
            p += 1
            continue
        if space and w:
            out[w] = b" "
            w += 1
        space = False
        if (kind & WORD) and (p == 0 or not (_CLASS[s[p - 1]] & WORD)):
            e = p + 1
            while e < n and _CLASS[s[e]] & WORD:
                e += 1
            if (
                _is(s + p, e - p, b"set")
                or _is(s + p, e - p, b"prepare")
                or _is(s + p, e - p, b"set_config")
            ):
                return -1
            if kind & DIGIT:
                e = p + 1
                while e < n and _CLASS[s[e]] & DIGIT:
                    e += 1
                if e + 1 < n and s[e] == b"." and _CLASS[s[e + 1]] & DIGIT:
                    e += 2
                    while e < n and _CLASS[s[e]] & DIGIT:
                        e += 1
                if e == n or not (_CLASS[s[e]] & GLUED):
                    out[w] = NUMBER
                    w += 1
                    p = e
                    continue
        out[w] = c
        w += 1
        p += 1
    return w
