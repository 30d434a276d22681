# Helpers shared by the downstream test extensions (cimported; build_extension copies
# this file next to them).
from libc.stdint cimport uint64_t


cdef inline uint64_t xorshift(uint64_t* s) noexcept nogil:
    """xorshift64: the next value of the generator whose state is s (s never 0)."""
    cdef uint64_t x = s[0]
    x ^= x << 13
    x ^= x >> 7
    x ^= x << 17
    s[0] = x
    return x
