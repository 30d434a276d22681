# hakmem.record — the bytes of one record field: integers and byte strings stored and
# loaded by width. hakmem.pool and hakmem.containers both cimport these; each checks
# Python values against the field type in its own terms before storing.
#
#   from hakmem.record cimport hak_rec_put_int, hak_rec_get_int, hak_rec_get_uint
#
# Inline only (there is no hakmem.record module to import at run time). Fields may be
# unaligned (packed specs), so every access is a memcpy of the field's width; values
# are in native byte order, as numpy stores them.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize


# Store the low `size` (1, 2, 4 or 8) bytes of bits at dst. Signed and unsigned fields
# alike: a value in the field's range has the same low bytes either way (two's complement).
cdef inline void hak_rec_put_int(char* dst, uint64_t bits, Py_ssize_t size) noexcept nogil:
    cdef uint32_t u4
    cdef uint16_t u2
    if size == 8:
        memcpy(dst, &bits, 8)
    elif size == 4:
        u4 = <uint32_t>bits
        memcpy(dst, &u4, 4)
    elif size == 2:
        u2 = <uint16_t>bits
        memcpy(dst, &u2, 2)
    else:
        dst[0] = <char><uint8_t>bits


# The unsigned integer of `size` bytes at src.
cdef inline uint64_t hak_rec_get_uint(const char* src, Py_ssize_t size) noexcept nogil:
    cdef uint64_t u8
    cdef uint32_t u4
    cdef uint16_t u2
    if size == 8:
        memcpy(&u8, src, 8)
        return u8
    if size == 4:
        memcpy(&u4, src, 4)
        return u4
    if size == 2:
        memcpy(&u2, src, 2)
        return u2
    return (<const uint8_t*>src)[0]


# The signed integer of `size` bytes at src: the unsigned load, sign-extended.
cdef inline int64_t hak_rec_get_int(const char* src, Py_ssize_t size) noexcept nogil:
    cdef uint64_t u = hak_rec_get_uint(src, size)
    cdef uint64_t sign
    if size < 8:
        sign = <uint64_t>1 << (8 * size - 1)
        u = (u ^ sign) - sign       # two's complement: the top bit of the field spreads up
    return <int64_t>u


# A byte-string field of `size` bytes as bytes, trailing NULs dropped (numpy's S<n>).
cdef inline bytes hak_rec_get_bytes(const char* src, Py_ssize_t size):
    cdef Py_ssize_t n = size
    while n > 0 and src[n - 1] == 0:
        n -= 1
    return PyBytes_FromStringAndSize(src, n)
