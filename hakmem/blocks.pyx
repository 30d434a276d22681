"""hakmem.blocks — the Python block API: malloc/calloc/realloc/free on int addresses.

Every argument is converted into a Python int first (``__index__`` may run user code;
it cannot see a half-done call) and checked before anything changes; errors name the
function and the argument (``hakmem.malloc(size): size must be a non-negative int,
got -1``). Liveness comes from the nogil C API (``hak_check_live``); a large block
(> 1 KiB) freed twice is told apart from a foreign pointer by the large path's ring
of recently freed addresses.
"""
from operator import index as _index

from libc.stdint cimport uintptr_t

from hakmem.front cimport (hak_malloc, hak_calloc, hak_realloc, hak_usable_size,
                           hak_free_checked, hak_check_live, hak_thread_flush, hak_trim,
                           HAK_OK, HAK_EFOREIGN, HAK_EDOUBLE, HAK_EINTERIOR)
from hakmem.large cimport hak_large_recently_freed

_ERRORS = {
    HAK_EFOREIGN: "is not a block allocated by hakmem",
    HAK_EDOUBLE: "is already free (double free)",
    HAK_EINTERIOR: "points inside a hakmem block, not at its start",
}

_LIMIT = (<object>1) << (8 * sizeof(size_t))   # Python int: no C shift overflow


cdef object _int_arg(str call, str arg, object v, str what):
    """v as a Python int, in 0 .. 2**64-1; TypeError/ValueError/OverflowError naming
    call and arg otherwise (bool is refused: True is not a size)."""
    if isinstance(v, bool):
        raise TypeError(f"hakmem.{call}: {arg} must be {what}, not bool")
    try:
        n = _index(v)
    except TypeError:
        raise TypeError(f"hakmem.{call}: {arg} must be {what}, not {type(v).__name__}") from None
    if n < 0:
        raise ValueError(f"hakmem.{call}: {arg} must be {what}, got {n}")
    if n >= _LIMIT:
        raise OverflowError(f"hakmem.{call}: {arg} must be below 2**{8 * sizeof(size_t)}, got {n}")
    return n


cdef int _liveness(void* p) noexcept nogil:
    """hak_check_live, with a recently freed large block reported as a double free."""
    cdef int rc = hak_check_live(p)
    if rc == HAK_EFOREIGN and hak_large_recently_freed(p):
        return HAK_EDOUBLE
    return rc


cdef void* _addr_arg(str call, object addr) except? NULL:
    return <void*><uintptr_t>_int_arg(call, "addr", addr, "a non-negative int address")


cdef _bad_addr(str call, object addr, int rc):
    raise ValueError(f"hakmem.{call}: address {_index(addr):#x} {_ERRORS[rc]}")


def malloc(size):
    """Allocate ``size`` bytes; return the block's address as an int (16-byte aligned)."""
    cdef size_t nbytes = _int_arg("malloc(size)", "size", size, "a non-negative int")
    cdef void* p
    with nogil:
        p = hak_malloc(nbytes)
    if p == NULL:
        raise MemoryError(f"hakmem.malloc(size): cannot allocate {nbytes} bytes")
    return <uintptr_t>p


def calloc(n, size):
    """Allocate ``n * size`` zeroed bytes; return the address."""
    cdef size_t count = _int_arg("calloc(n, size)", "n", n, "a non-negative int")
    cdef size_t nbytes = _int_arg("calloc(n, size)", "size", size, "a non-negative int")
    cdef void* p
    with nogil:
        p = hak_calloc(count, nbytes)
    if p == NULL:
        raise MemoryError(f"hakmem.calloc(n, size): cannot allocate {count} x {nbytes} bytes")
    return <uintptr_t>p


def realloc(addr, size):
    """Resize the block at ``addr`` (0 = allocate); return the new address.

    ValueError (and nothing changed) if ``addr`` is not 0 or a live block; MemoryError
    (the block untouched) if there is no memory for the new size."""
    cdef void* p = _addr_arg("realloc(addr, size)", addr)
    cdef size_t nbytes = _int_arg("realloc(addr, size)", "size", size, "a non-negative int")
    cdef void* q
    cdef int rc = HAK_OK if p == NULL else _liveness(p)
    if rc != HAK_OK:
        _bad_addr("realloc(addr, size)", addr, rc)
    with nogil:
        q = hak_realloc(p, nbytes)
    if q == NULL:
        raise MemoryError(f"hakmem.realloc(addr, size): cannot reallocate to {nbytes} bytes")
    return <uintptr_t>q


def free(addr):
    """Free the block at ``addr`` (0 is a no-op); ValueError (and nothing changed) if it
    is not a live block: a double free, a foreign or an interior pointer."""
    cdef void* p = _addr_arg("free(addr)", addr)
    cdef int rc
    with nogil:
        rc = hak_free_checked(p)
        if rc == HAK_EFOREIGN and hak_large_recently_freed(p):
            rc = HAK_EDOUBLE
    if rc != HAK_OK:
        _bad_addr("free(addr)", addr, rc)


def usable_size(addr):
    """Usable bytes of the live block at ``addr``; ValueError if it is not live."""
    cdef void* p = _addr_arg("usable_size(addr)", addr)
    cdef int rc = _liveness(p)
    if rc != HAK_OK:
        _bad_addr("usable_size(addr)", addr, rc)
    return hak_usable_size(p)


def is_live(addr):
    """True if ``addr`` is a block hakmem handed out and that is not yet freed."""
    return hak_check_live(_addr_arg("is_live(addr)", addr)) == HAK_OK


def trim():
    """Flush this thread's caches and give empty slabs' memory back to the OS.

    Returns the number of bytes released. Other threads' caches are not touched.
    """
    cdef size_t n
    with nogil:
        n = hak_trim()
    return n


def thread_flush():
    """Return this thread's cached free blocks to their slabs (no memory unmapped)."""
    with nogil:
        hak_thread_flush()
