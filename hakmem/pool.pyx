"""hakmem.pool — RecordPool: typed fixed-size records with handles that cannot dangle.

Records live in chunks from hakmem (``hak_malloc``: 1 KiB chunks on the tiny path with
its thread caches), next to a uint16 generation per slot; no per-record Python object.
A handle is an int (tag | slot | generation); a freed slot's generation moves on, so
an old handle is refused (StaleHandleError) even after the slot is reused. Layout,
handle format and locking are described in pool.pxd and docs/records.md.
"""
from cpython.long cimport PyLong_CheckExact, PyLong_Check, PyLong_AsUnsignedLongLong
from cpython.float cimport PyFloat_CheckExact, PyFloat_AS_DOUBLE, PyFloat_AsDouble
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.long cimport PyLong_FromUnsignedLongLong
from cpython.exc cimport PyErr_Occurred, PyErr_Clear
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport (uint64_t, uint32_t, uint16_t, uint8_t, int64_t, uintptr_t, INT64_MIN,
                          INT64_MAX)
from libc.string cimport memcpy, memset
from libc.math cimport isfinite, fabs
from libc.float cimport FLT_MAX

from hakmem.front cimport hak_malloc, hak_free, hak_realloc, hak_usable_size, hak_trim
from hakmem.classes cimport hak_likely, hak_unlikely
from hakmem.record cimport hak_rec_put_int, hak_rec_get_int, hak_rec_get_uint, hak_rec_get_bytes

cimport cython

import numbers
import random as _random

import numpy as np

from hakmem.spec import parse_spec, RecordSpec

__all__ = ["RecordPool", "RecordView", "StaleHandleError"]

cdef extern from *:
    """
    /* The pool lock: a futex mutex (Drepper's "mutex2"): 0 free, 1 held, 2 held with
       waiters. Uncontended lock/unlock is one CAS and one exchange, no syscall. */
    #include <linux/futex.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    #include <string.h>
    static void hak_plock_slow(int* l) {
        int c, z;
        for (int i = 0; i < 100; i++) {       /* short spin: critical sections are short */
            if (__atomic_load_n(l, __ATOMIC_RELAXED) == 0) {
                z = 0;
                if (__atomic_compare_exchange_n(l, &z, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                    return;
            }
    #if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
    #endif
        }
        c = __atomic_exchange_n(l, 2, __ATOMIC_ACQUIRE);
        while (c != 0) {
            syscall(SYS_futex, l, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
            c = __atomic_exchange_n(l, 2, __ATOMIC_ACQUIRE);
        }
    }
    static inline void hak_plock(int* l) {
        int z = 0;
        if (__builtin_expect(__atomic_compare_exchange_n(l, &z, 1, 0, __ATOMIC_ACQUIRE,
                                                         __ATOMIC_RELAXED), 1))
            return;
        hak_plock_slow(l);
    }
    static inline int hak_ptrylock(int* l) {
        int z = 0;
        return __atomic_compare_exchange_n(l, &z, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
    }
    static inline void hak_punlock(int* l) {
        if (__atomic_exchange_n(l, 0, __ATOMIC_RELEASE) == 2)
            syscall(SYS_futex, l, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
    /* An exact int as uint64 without raising: 1 and *out, or 0 if it is negative or
       >= 2**64. Reads the digits directly on CPython < 3.12 (handles are 3 digits). */
    static inline int hak_long_u64(PyObject* o, uint64_t* out) {
        unsigned long long v;
    #if PY_VERSION_HEX < 0x030C0000 && !defined(PYPY_VERSION)
        Py_ssize_t n = Py_SIZE(o);
        const digit* d = ((PyLongObject*)o)->ob_digit;
        if (n >= 0 && n <= 3) {
            uint64_t r = 0;
            while (n > 0) {
                n--;
                if (r >> (64 - PyLong_SHIFT)) goto slow;   /* would not fit in 64 bits */
                r = (r << PyLong_SHIFT) | d[n];
            }
            *out = r;
            return 1;
        }
    slow:
    #endif
        v = PyLong_AsUnsignedLongLong(o);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        *out = (uint64_t)v;
        return 1;
    }
    /* Unaligned-safe 4-byte load/store (free-list links; packed records). */
    static inline uint32_t hak_ld32(const char* p) { uint32_t v; memcpy(&v, p, 4); return v; }
    static inline void hak_st32(char* p, uint32_t v) { memcpy(p, &v, 4); }
    #define hak_prefetch(p) __builtin_prefetch((const void*)(p))
    /* Install a METH_FASTCALL|METH_KEYWORDS C function as a method of a static type. */
    static int hak_add_method(PyObject* type, PyMethodDef* def) {
        PyObject* d = PyDescr_NewMethod((PyTypeObject*)type, def);
        if (d == NULL) return -1;
        int rc = PyDict_SetItemString(((PyTypeObject*)type)->tp_dict, def->ml_name, d);
        Py_DECREF(d);
        PyType_Modified((PyTypeObject*)type);
        return rc;
    }
    static PyMethodDef hak_alloc_def;
    """
    ctypedef struct PyMethodDef:
        const char* ml_name
        void* ml_meth
        int ml_flags
        const char* ml_doc
    int METH_FASTCALL
    int METH_KEYWORDS
    PyMethodDef hak_alloc_def
    int hak_add_method(object type, PyMethodDef* d) except -1
    void hak_plock(int* l) nogil
    int hak_ptrylock(int* l) nogil
    void hak_punlock(int* l) nogil
    int hak_long_u64(object o, uint64_t* out)
    uint32_t hak_ld32(const char* p) nogil
    void hak_st32(char* p, uint32_t v) nogil
    void hak_prefetch(const void* p) nogil


# ---- handle layout ------------------------------------------------------------
cdef enum:
    _GEN_BITS = 16
    _GEN_MASK = 0xFFFF
    _GEN_LAST = HAK_POOL_GEN_LAST          # its free retires the slot
    _GEN_RETIRED = HAK_POOL_GEN_RETIRED    # odd, but never matches: handles stop at _GEN_LAST
    _TAG_SHIFT = 48
    _TAG_BITS = 14

cdef uint64_t _SLOT_MASK = 0xFFFFFFFF
cdef uint64_t _LOW_MASK = (<uint64_t>1 << _TAG_SHIFT) - 1

# Reasons a handle is refused (for the error message).
cdef enum:
    _R_OK = 0
    _R_TAG = 1          # another pool's (or not a handle at all)
    _R_RANGE = 2        # slot never handed out
    _R_FREED = 3        # slot freed (and maybe reused)
    _R_CLOSED = 4


# ---- the C pool (callers hold p.lock unless said otherwise) ---------------------
cdef inline bint _gen_live(uint16_t g) noexcept nogil:
    return (g & 1) != 0 and g != _GEN_RETIRED


cdef inline int _decode(hak_pool_t* p, uint64_t h, hak_pchunk_t** cout,
                        uint32_t* jout) noexcept nogil:
    """_R_OK and the chunk/slot of live handle h, else why it is refused."""
    cdef uint64_t s
    cdef uint32_t c, j
    cdef hak_pchunk_t* ch
    if hak_unlikely((h & ~_LOW_MASK) != p.tag):
        return _R_CLOSED if p.closed else _R_TAG
    s = (h >> _GEN_BITS) & _SLOT_MASK
    c = <uint32_t>(s >> p.kshift)
    if hak_unlikely(c >= p.nchunks):
        return _R_CLOSED if p.closed else _R_RANGE   # a closed pool has no chunks
    ch = &p.chunks[c]
    if hak_unlikely(ch.state != HAK_PCHUNK_PRESENT):
        return _R_FREED
    j = <uint32_t>s & ((1u << p.kshift) - 1)
    if hak_unlikely(ch.gen[j] != <uint16_t>(h & _GEN_MASK) or not _gen_live(ch.gen[j])):
        return _R_FREED
    cout[0] = ch
    jout[0] = j
    return _R_OK


cdef enum:
    _PREFETCH_AHEAD = 16            # bulk loops: handles looked ahead (random order pays)


cdef inline void _prefetch(hak_pool_t* p, uint64_t h, uint32_t off) noexcept nogil:
    """Start loading the generation and the record bytes of handle h (no checks needed:
    a bogus handle just prefetches nothing useful)."""
    cdef uint64_t s = (h >> _GEN_BITS) & _SLOT_MASK
    cdef uint32_t c = <uint32_t>(s >> p.kshift)
    cdef uint32_t j
    cdef hak_pchunk_t* ch
    if c < p.nchunks:
        ch = &p.chunks[c]
        if ch.rec != NULL:
            j = <uint32_t>s & ((1u << p.kshift) - 1)
            hak_prefetch(&ch.gen[j])
            hak_prefetch(ch.rec + <size_t>j * p.stride + off)


cdef void _chunk_release(hak_pool_t* p, hak_pchunk_t* ch) noexcept nogil:
    """Give a chunk's two blocks back to hakmem (its slots must not be on the free list)."""
    p.nbytes -= hak_usable_size(ch.rec) + hak_usable_size(ch.gen)
    p.layout += 1
    hak_free(ch.rec)
    hak_free(ch.gen)
    ch.rec = NULL
    ch.gen = NULL
    p.npresent -= 1
    p.retired -= ch.retired
    ch.retired = 0
    ch.live = 0


cdef void _rebuild_free(hak_pool_t* p) noexcept nogil:
    """Recompute the free list and all counts from the generations (slot order)."""
    cdef uint32_t K = 1u << p.kshift
    cdef uint32_t c, j
    cdef int64_t jj
    cdef hak_pchunk_t* ch
    cdef uint16_t g
    p.free_head = HAK_POOL_END
    p.nfree = 0
    p.live = 0
    p.retired = 0
    c = p.nchunks
    while c > 0:
        c -= 1
        ch = &p.chunks[c]
        if ch.state != HAK_PCHUNK_PRESENT:
            continue
        ch.live = 0
        ch.retired = 0
        jj = K
        while jj > 0:
            jj -= 1
            j = <uint32_t>jj
            g = ch.gen[j]
            if g == _GEN_RETIRED:
                ch.retired += 1
            elif g & 1:
                ch.live += 1
            else:
                hak_st32(ch.rec + <size_t>j * p.stride, p.free_head)
                p.free_head = (c << p.kshift) | j
                p.nfree += 1
        p.live += ch.live
        p.retired += ch.retired


cdef int _grow(hak_pool_t* p) noexcept nogil:
    """Add one chunk of free slots (repopulate a trimmed chunk, else append). 0 or -1."""
    cdef uint32_t K = 1u << p.kshift
    cdef uint32_t c = p.nchunks, j, newcap
    cdef uint64_t maxchunks = (<uint64_t>1 << 32) >> p.kshift
    cdef uint16_t g0 = 0
    cdef hak_pchunk_t* ch
    cdef hak_pchunk_t* tab
    cdef char* rec
    cdef uint16_t* gen
    cdef int64_t jj
    if p.ntrimmed:
        c = p.trim_hint                 # amortised O(1): the hint only moves forward
        while c < p.nchunks and p.chunks[c].state != HAK_PCHUNK_TRIMMED:
            c += 1
        p.trim_hint = c + 1
    if c == p.nchunks:
        if c >= maxchunks:
            return -1
        if c == p.chunks_cap:
            newcap = 16 if p.chunks_cap == 0 else p.chunks_cap * 2
            if newcap > maxchunks:
                newcap = <uint32_t>maxchunks
            if p.chunks != NULL:
                p.nbytes -= hak_usable_size(p.chunks)
            tab = <hak_pchunk_t*>hak_realloc(p.chunks, newcap * sizeof(hak_pchunk_t))
            if tab == NULL:
                if p.chunks != NULL:
                    p.nbytes += hak_usable_size(p.chunks)
                return -1
            p.chunks = tab
            p.chunks_cap = newcap
            p.nbytes += hak_usable_size(tab)
    rec = <char*>hak_malloc(<size_t>K * p.stride)
    gen = <uint16_t*>hak_malloc(K * sizeof(uint16_t))
    if rec == NULL or gen == NULL:
        hak_free(rec)
        hak_free(gen)
        return -1
    ch = &p.chunks[c]
    if c == p.nchunks:
        p.nchunks += 1
        ch.floor = 0
    else:
        p.ntrimmed -= 1
        g0 = (ch.floor | 1) + 1        # first even generation above every old one
    ch.rec = rec
    ch.gen = gen
    p.layout += 1
    ch.live = 0
    ch.retired = 0
    ch.state = HAK_PCHUNK_PRESENT
    p.npresent += 1
    p.nbytes += hak_usable_size(rec) + hak_usable_size(gen)
    jj = K
    while jj > 0:                       # lowest slot ends up first on the list
        jj -= 1
        j = <uint32_t>jj
        gen[j] = g0
        hak_st32(rec + <size_t>j * p.stride, p.free_head)
        p.free_head = (c << p.kshift) | j
    p.nfree += K
    return 0


cdef bint _free_list_ok(hak_pool_t* p, uint32_t s, uint32_t nxt) noexcept nogil:
    """Cheap sanity check of a slot popped off the free list (a late write through a
    nogil pointer after free could have clobbered its link)."""
    cdef hak_pchunk_t* ch = &p.chunks[s >> p.kshift]
    if ch.state != HAK_PCHUNK_PRESENT or (ch.gen[s & ((1u << p.kshift) - 1)] & 1):
        return False
    return nxt == HAK_POOL_END or (nxt >> p.kshift) < p.nchunks


cdef inline char* _alloc_locked(hak_pool_t* p, uint64_t* hout) noexcept nogil:
    """Pop a free slot and make it live; NULL when out of memory."""
    cdef uint32_t s, nxt, j
    cdef hak_pchunk_t* ch
    cdef char* r
    cdef uint16_t g
    if hak_unlikely(p.free_head == HAK_POOL_END):
        if _grow(p) != 0:
            return NULL
    s = p.free_head
    ch = &p.chunks[s >> p.kshift]
    j = s & ((1u << p.kshift) - 1)
    r = ch.rec + <size_t>j * p.stride
    nxt = hak_ld32(r)
    if hak_unlikely(not _free_list_ok(p, s, nxt)):
        _rebuild_free(p)
        return _alloc_locked(p, hout)
    g = ch.gen[j] + 1
    ch.gen[j] = g
    ch.live += 1
    p.free_head = nxt
    p.nfree -= 1
    p.live += 1
    p.allocs += 1
    hout[0] = p.tag | (<uint64_t>s << _GEN_BITS) | g
    return r


cdef inline void _release_slot(hak_pool_t* p, hak_pchunk_t* ch, uint32_t j,
                               uint64_t h) noexcept nogil:
    """Slot j of ch (generation already advanced to even g or not): push or retire."""
    cdef uint16_t g = ch.gen[j]
    cdef uint32_t s = <uint32_t>((h >> _GEN_BITS) & _SLOT_MASK)
    ch.live -= 1
    p.live -= 1
    p.frees += 1
    if hak_likely(g < _GEN_LAST + 1):
        hak_st32(ch.rec + <size_t>j * p.stride, p.free_head)
        p.free_head = s
        p.nfree += 1
        return
    # Generation space of this slot used up: retire it for good.
    ch.gen[j] = _GEN_RETIRED
    ch.retired += 1
    p.retired += 1
    if ch.retired == (1u << p.kshift):
        _chunk_release(p, ch)
        ch.state = HAK_PCHUNK_DEAD


cdef inline int _free_locked(hak_pool_t* p, uint64_t h) noexcept nogil:
    cdef hak_pchunk_t* ch
    cdef uint32_t j
    cdef int r = _decode(p, h, &ch, &j)
    if hak_unlikely(r != _R_OK):
        p.stale += 1
        return r
    ch.gen[j] += 1
    _release_slot(p, ch, j, h)
    return _R_OK


cdef size_t _trim_locked(hak_pool_t* p) noexcept nogil:
    """Release every chunk with no live record; returns bytes given back."""
    cdef uint32_t K = 1u << p.kshift
    cdef uint32_t c, j
    cdef uint16_t top
    cdef size_t before = p.nbytes
    cdef hak_pchunk_t* ch
    for c in range(p.nchunks):
        ch = &p.chunks[c]
        if ch.state != HAK_PCHUNK_PRESENT or ch.live != 0:
            continue
        top = 0
        for j in range(K):
            if ch.gen[j] > top:
                top = ch.gen[j]
        _chunk_release(p, ch)
        ch.floor = top
        if (top | 1) + 2 <= _GEN_LAST:  # room for one more generation above `top`
            ch.state = HAK_PCHUNK_TRIMMED
            p.ntrimmed += 1
            if c < p.trim_hint:
                p.trim_hint = c
        else:
            ch.state = HAK_PCHUNK_DEAD
    _rebuild_free(p)
    return before - p.nbytes


cdef void _release_all(hak_pool_t* p) noexcept nogil:
    """Free every block the pool holds (close / dealloc)."""
    cdef uint32_t c
    for c in range(p.nchunks):
        if p.chunks[c].state == HAK_PCHUNK_PRESENT:
            hak_free(p.chunks[c].rec)
            hak_free(p.chunks[c].gen)
    hak_free(p.chunks)
    p.chunks = NULL
    p.nchunks = p.chunks_cap = p.npresent = p.ntrimmed = p.trim_hint = 0
    p.free_head = HAK_POOL_END
    p.nfree = p.live = p.retired = p.nbytes = 0


# ---- the cimport API ------------------------------------------------------------
cdef void* hak_pool_alloc(hak_pool_t* p, uint64_t* handle_out) noexcept nogil:
    cdef char* r = NULL
    hak_plock(&p.lock)
    if not p.closed:
        r = _alloc_locked(p, handle_out)
        if r != NULL:
            memset(r, 0, p.stride)
    hak_punlock(&p.lock)
    return r


cdef int hak_pool_free(hak_pool_t* p, uint64_t handle) noexcept nogil:
    cdef int r
    hak_plock(&p.lock)
    r = _free_locked(p, handle)
    hak_punlock(&p.lock)
    if r == _R_OK:
        return HAK_POOL_OK
    return HAK_POOL_ECLOSED if r == _R_CLOSED else HAK_POOL_ESTALE


cdef void* hak_pool_deref(hak_pool_t* p, uint64_t handle) noexcept nogil:
    cdef hak_pchunk_t* ch
    cdef uint32_t j
    cdef char* out = NULL
    hak_plock(&p.lock)
    if _decode(p, handle, &ch, &j) == _R_OK:
        out = ch.rec + <size_t>j * p.stride
    hak_punlock(&p.lock)
    return out


cdef inline int _copy_locked(hak_pool_t* p, uint64_t h, char* buf, uint32_t off, uint32_t size,
                             bint store, bint count_stale) noexcept nogil:
    """Under p.lock: copy `size` bytes at `off` of the record of h into buf[off:]
    (store: from buf[off:] into the record; buf is then only read). An _R_* code;
    nothing is copied unless _R_OK, else p.stale counts the refusal if count_stale
    (the Python API counts, the C API does not)."""
    cdef hak_pchunk_t* ch
    cdef uint32_t j
    cdef char* rec
    cdef int r
    hak_plock(&p.lock)
    r = _decode(p, h, &ch, &j)
    if hak_likely(r == _R_OK):
        rec = ch.rec + <size_t>j * p.stride + off
        if store:
            memcpy(rec, buf + off, size)
        else:
            memcpy(buf + off, rec, size)
    elif count_stale:
        p.stale += 1
    hak_punlock(&p.lock)
    return r


cdef inline Py_ssize_t _gather_locked(hak_pool_t* p, const int64_t* hs, Py_ssize_t n,
                                     uint32_t off, uint32_t size, char* dst,
                                     int* rout) noexcept nogil:
    """Under p.lock (held by the caller): decode handles hs[0:n] in order, copying field
    bytes [off, off + size) of each record to dst + i * size (dst NULL: only check).
    The index of the first handle that is not live (its _R_* code in *rout), or -1."""
    cdef Py_ssize_t i
    cdef hak_pchunk_t* ch
    cdef uint32_t j
    cdef int r
    for i in range(n):
        if i + _PREFETCH_AHEAD < n:
            _prefetch(p, <uint64_t>hs[i + _PREFETCH_AHEAD], off)
        r = _decode(p, <uint64_t>hs[i], &ch, &j)
        if r != _R_OK:
            rout[0] = r
            return i
        if dst != NULL:
            memcpy(dst + i * size, ch.rec + <size_t>j * p.stride + off, size)
    return -1


cdef inline int _api_status(int r) noexcept nogil:
    """An _R_* code as the HAK_POOL_* code of the C API."""
    if r == _R_OK:
        return HAK_POOL_OK
    return HAK_POOL_ECLOSED if r == _R_CLOSED else HAK_POOL_ESTALE


cdef int hak_pool_read(hak_pool_t* p, uint64_t handle, void* out) noexcept nogil:
    return _api_status(_copy_locked(p, handle, <char*>out, 0, p.itemsize, False, False))


cdef int hak_pool_write(hak_pool_t* p, uint64_t handle, const void* src) noexcept nogil:
    return _api_status(_copy_locked(p, handle, <char*>src, 0, p.itemsize, True, False))


cdef uint64_t hak_pool_live(hak_pool_t* p) noexcept nogil:
    cdef uint64_t n
    hak_plock(&p.lock)
    n = p.live
    hak_punlock(&p.lock)
    return n


cdef hak_pool_t* hak_pool_of(RecordPool pool) except NULL:
    if pool is None:
        raise TypeError("expected a RecordPool, got None")
    return &pool._p


# ---- Python layer -----------------------------------------------------------------
class StaleHandleError(KeyError):
    """A handle that is not live in this pool: freed (even if its slot was reused),
    from another pool, or never handed out. The pool is unchanged."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


_REASONS = {
    _R_TAG: "is not a handle of this pool",
    _R_RANGE: "was never handed out by this pool",
    _R_FREED: "was freed",
}

# field kinds
cdef enum:
    _K_F8 = 0
    _K_F4 = 1
    _K_INT = 2          # signed, 1..8 bytes
    _K_UINT = 3         # unsigned, 1..8 bytes
    _K_BOOL = 4
    _K_BYTES = 5

cdef uint64_t _BAD_HANDLE = 0     # gen 0 is even: never live

cdef int64_t _IMIN[9]
cdef int64_t _IMAX[9]
cdef uint64_t _UMAX[9]
_IMIN[1] = -128; _IMAX[1] = 127; _UMAX[1] = 0xFF
_IMIN[2] = -32768; _IMAX[2] = 32767; _UMAX[2] = 0xFFFF
_IMIN[4] = -2147483648; _IMAX[4] = 2147483647; _UMAX[4] = 0xFFFFFFFF
_IMIN[8] = INT64_MIN; _IMAX[8] = INT64_MAX; _UMAX[8] = 0xFFFFFFFFFFFFFFFF


cdef inline uint64_t _handle(object handle) except? 0xFFFFFFFFFFFFFFFF:
    """An int-like handle as uint64 (out-of-range ints map to an invalid handle)."""
    cdef uint64_t v
    if hak_likely(PyLong_CheckExact(handle)):
        if hak_long_u64(handle, &v):
            return v
        return _BAD_HANDLE              # negative or >= 2**64: no pool's handle
    return _handle_slow(handle)


cdef uint64_t _handle_slow(object handle) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t v
    if not PyLong_Check(handle):
        if isinstance(handle, (float, str, bytes)) or not hasattr(handle, "__index__"):
            raise TypeError(f"a handle is an int, not {type(handle).__name__}")
    handle = int(handle.__index__())
    if hak_long_u64(handle, &v):
        return v
    return _BAD_HANDLE


cdef _closed_error():
    return ValueError("operation on a closed RecordPool")


cdef _stale(int reason, object handle):
    if reason == _R_CLOSED:
        return _closed_error()
    try:
        shown = hex(handle.__index__())
    except Exception:
        shown = repr(handle)
    return StaleHandleError(f"handle {shown} {_REASONS.get(reason, 'is not live')} "
                            "(stale handle: the pool is unchanged)")


cdef _as_array_of_handles(object handles):
    """Any int sequence/array of handles -> contiguous int64 array (copy if needed)."""
    a = np.asarray(handles)
    if a.dtype.kind not in "iu":
        if a.size == 0:
            return np.zeros(a.shape, dtype=np.int64)
        raise TypeError(f"handles must be ints, not {a.dtype} values")
    if a.dtype == np.uint64:
        a = a.view(np.int64)          # >= 2**63 becomes negative: still no valid handle
    return np.ascontiguousarray(a, dtype=np.int64)


cdef class RecordView:
    """A live view of one record: ``rec.x`` reads, ``rec.x = v`` writes (checked).

    Every access re-checks the handle, so a view of a freed record raises
    StaleHandleError instead of reading another record. Methods win over fields of
    the same name (use ``pool.get`` for a field called e.g. ``handle``).
    """
    cdef RecordPool _pool
    cdef object _h

    @staticmethod
    cdef RecordView _make(RecordPool pool, object handle):
        cdef RecordView v = RecordView.__new__(RecordView)
        v._pool = pool
        v._h = handle
        return v

    def __init__(self, *a, **k):
        raise TypeError("RecordView objects come from pool[handle]")

    @property
    def handle(self):
        """The handle this view reads through."""
        return self._h

    @property
    def pool(self):
        """The pool holding the record."""
        return self._pool

    def __getattr__(self, name):
        return self._pool.get(self._h, name)

    def __setattr__(self, name, value):
        self._pool.set(self._h, name, value)

    def as_tuple(self):
        """Field values in declaration order (one consistent copy)."""
        return self._pool.read(self._h)

    def as_dict(self):
        """Field values by name (one consistent copy)."""
        return dict(zip(self._pool._names, self._pool.read(self._h)))

    def __eq__(self, other):
        if isinstance(other, RecordView):
            o = <RecordView>other
            return (self._pool._names == o._pool._names
                    and self._pool.read(self._h) == o._pool.read(o._h))
        if isinstance(other, tuple):
            return self._pool.read(self._h) == other
        return NotImplemented

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    __hash__ = None

    def __dir__(self):
        return sorted(set(self._pool._names) | {"as_tuple", "as_dict", "handle", "pool"})

    def __repr__(self):
        try:
            vals = self._pool.read(self._h)
        except (KeyError, ValueError):
            return f"<RecordView of stale handle {self._h!r}>"
        return "Record(" + ", ".join(f"{n}={v!r}" for n, v in zip(self._pool._names, vals)) + ")"


cdef inline int _copy_or_raise(RecordPool pool, object handle, char* buf, uint32_t off,
                               uint32_t size, bint store) except -1:
    """_copy_locked for a Python handle: a refused handle is counted and raised."""
    cdef int r = _copy_locked(&pool._p, _handle(handle), buf, off, size, store, True)
    if r != _R_OK:
        raise _stale(r, handle)
    return 0


cdef class RecordPool:
    """A pool of fixed-size typed records living in hakmem memory.

    ``RecordPool(spec, packed=False)``: ``spec`` is a list of ``(name, type)`` pairs,
    a structured numpy dtype or a string such as ``"x:f8 y:f8 id:i4"`` (see
    :func:`hakmem.spec.parse_spec`). ``alloc(**fields)`` returns an int handle;
    after ``free(handle)`` every use of that handle raises :class:`StaleHandleError`,
    even once its slot holds a new record.

    Thread safety: every method is atomic with respect to every other method and to
    the nogil C API (a per-pool lock); bulk methods release the GIL while they work.
    A :class:`RecordView`'s attribute accesses are each atomic, not as a group.
    """

    def __cinit__(self, spec, packed=False):
        cdef int i, n
        cdef uint32_t stride, kshift
        self._foff = NULL
        self._fsize = NULL
        self._fkind = NULL
        memset(&self._p, 0, sizeof(hak_pool_t))
        self._p.free_head = HAK_POOL_END
        self._p.closed = 1              # until fully set up
        rs = parse_spec(spec, packed=packed)
        self.spec = rs
        self._dtype = rs.dtype
        n = len(rs.fields)
        self._nfields = n
        self._foff = <uint32_t*>PyMem_Malloc(n * sizeof(uint32_t))
        self._fsize = <uint32_t*>PyMem_Malloc(n * sizeof(uint32_t))
        self._fkind = <uint8_t*>PyMem_Malloc(n * sizeof(uint8_t))
        if self._foff == NULL or self._fsize == NULL or self._fkind == NULL:
            raise MemoryError()
        names = []
        self._index = {}
        for i, f in enumerate(rs.fields):
            name = __import__("sys").intern(f.name)
            names.append(name)
            self._index[name] = i
            self._foff[i] = f.offset
            self._fsize[i] = f.size
            k = f.dtype.kind
            if k == "f":
                self._fkind[i] = _K_F8 if f.size == 8 else _K_F4
                if f.size not in (4, 8):
                    raise TypeError(f"field {f.name!r}: only f4 and f8 floats are supported")
            elif k == "i":
                self._fkind[i] = _K_INT
            elif k == "u":
                self._fkind[i] = _K_UINT
            elif k == "b":
                self._fkind[i] = _K_BOOL
            else:
                self._fkind[i] = _K_BYTES
        self._names = tuple(names)
        self._p.itemsize = rs.itemsize
        stride = rs.itemsize if rs.itemsize >= 4 else 4   # room for the free-list link
        self._p.stride = stride
        kshift = 0
        while (stride << (kshift + 1)) <= HAK_POOL_CHUNK_BYTES:
            kshift += 1
        self._p.kshift = kshift
        self._p.tag = <uint64_t>(_random.getrandbits(_TAG_BITS) | 1) << _TAG_SHIFT
        self._p.closed = 0

    def __dealloc__(self):
        _release_all(&self._p)
        PyMem_Free(self._foff)
        PyMem_Free(self._fsize)
        PyMem_Free(self._fkind)

    # -- helpers -------------------------------------------------------------------
    cdef int _check_open(self) except -1:
        if self._p.closed:
            raise _closed_error()
        return 0

    cdef int _field(self, object name) except -1:
        cdef PyObject* o = PyDict_GetItem(self._index, name)
        if o == NULL:
            raise AttributeError(f"record has no field {name!r} "
                                 f"(fields: {', '.join(self._names)})")
        return <int><object>o

    cdef int _pack(self, int fi, object v, char* rec) except -1:
        """Check value v for field fi and store it at its offset in rec."""
        cdef char* dst = rec + self._foff[fi]
        cdef int kind = self._fkind[fi]
        cdef uint32_t size = self._fsize[fi]
        cdef double d
        cdef float f32
        cdef int64_t iv
        cdef uint64_t uv
        cdef Py_ssize_t blen
        if kind == _K_F8 or kind == _K_F4:
            if PyFloat_CheckExact(v):
                d = PyFloat_AS_DOUBLE(v)
            else:
                if not isinstance(v, numbers.Real):
                    raise TypeError(f"field {self._names[fi]!r} ({self._dtype[fi]}) needs a "
                                    f"real number, not {type(v).__name__}")
                try:
                    d = PyFloat_AsDouble(v)
                except OverflowError:
                    raise OverflowError(f"field {self._names[fi]!r}: {v!r} is out of range "
                                        f"for {self._dtype[fi]}") from None
            if kind == _K_F8:
                memcpy(dst, &d, 8)
            else:
                if isfinite(d) and fabs(d) > FLT_MAX:
                    raise OverflowError(f"field {self._names[fi]!r}: {v!r} is out of range "
                                        f"for float32")
                f32 = <float>d
                memcpy(dst, &f32, 4)
            return 0
        if kind == _K_INT or kind == _K_UINT or kind == _K_BOOL:
            if not PyLong_Check(v):
                if isinstance(v, (float, str, bytes)) or not isinstance(v, numbers.Integral):
                    if kind == _K_BOOL and isinstance(v, np.bool_):
                        v = bool(v)
                    else:
                        raise TypeError(f"field {self._names[fi]!r} ({self._dtype[fi]}) needs "
                                        f"an int, not {type(v).__name__}")
                else:
                    v = v.__index__()
            if kind == _K_INT:
                if not (_IMIN[size] <= v <= _IMAX[size]):
                    raise OverflowError(f"field {self._names[fi]!r}: {v!r} is out of range "
                                        f"for {self._dtype[fi]} [{_IMIN[size]}, {_IMAX[size]}]")
                iv = v
                hak_rec_put_int(dst, <uint64_t>iv, size)
                return 0
            if kind == _K_BOOL:
                if not (v == 0 or v == 1):
                    raise OverflowError(f"field {self._names[fi]!r}: {v!r} is not a bool "
                                        "(True/False, 0 or 1)")
                dst[0] = 1 if v else 0
                return 0
            if not (0 <= v <= _UMAX[size]):
                raise OverflowError(f"field {self._names[fi]!r}: {v!r} is out of range "
                                    f"for {self._dtype[fi]} [0, {_UMAX[size]}]")
            uv = v
            hak_rec_put_int(dst, uv, size)
            return 0
        # bytes
        if not isinstance(v, (bytes, bytearray)):
            raise TypeError(f"field {self._names[fi]!r} ({self._dtype[fi]}) needs bytes, "
                            f"not {type(v).__name__}")
        blen = len(v)
        if <size_t>blen > size:
            raise OverflowError(f"field {self._names[fi]!r}: {blen} bytes do not fit in "
                                f"{self._dtype[fi]}")
        bv = bytes(v)
        memset(dst, 0, size)
        if blen:
            memcpy(dst, <const char*>bv, blen)
        return 0

    cdef object _unpack(self, int fi, const char* rec):
        """The Python value of field fi of the record bytes at rec."""
        cdef const char* src = rec + self._foff[fi]
        cdef int kind = self._fkind[fi]
        cdef uint32_t size = self._fsize[fi]
        cdef double d
        cdef float f32
        if kind == _K_F8:
            memcpy(&d, src, 8)
            return d
        if kind == _K_F4:
            memcpy(&f32, src, 4)
            return <double>f32
        if kind == _K_INT:
            return hak_rec_get_int(src, size)
        if kind == _K_UINT:
            return hak_rec_get_uint(src, size)
        if kind == _K_BOOL:
            return src[0] != 0
        return hak_rec_get_bytes(src, size)

    cdef int _read(self, object handle, char* out) except -1:
        """Copy the record of a live handle into out (itemsize bytes)."""
        return _copy_or_raise(self, handle, out, 0, self._p.itemsize, False)

    cdef int _write_field(self, object handle, int fi, const char* rec) except -1:
        """Copy field fi from the record buffer rec into the live record of handle."""
        return _copy_or_raise(self, handle, <char*>rec, self._foff[fi], self._fsize[fi], True)

    cdef char* _tmp(self, char* stackbuf, size_t room) except NULL:
        """A record-sized scratch buffer: stackbuf if it is big enough."""
        cdef char* b
        if self._p.stride <= room:
            return stackbuf
        b = <char*>PyMem_Malloc(self._p.stride)
        if b == NULL:
            raise MemoryError()
        return b

    # -- single records ----------------------------------------------------------
    # alloc(*values, **fields) is _alloc_vc below (a METH_FASTCALL method: no
    # tuple or dict is built for the arguments).

    @cython.always_allow_keywords(False)
    def free(self, handle):
        """Free the record of ``handle``; StaleHandleError (pool unchanged) if not live."""
        cdef uint64_t h = _handle(handle)
        cdef int r
        hak_plock(&self._p.lock)
        r = _free_locked(&self._p, h)
        hak_punlock(&self._p.lock)
        if r != _R_OK:
            raise _stale(r, handle)

    def get(self, handle, name):
        """The value of field ``name`` of the record of ``handle``."""
        cdef char stackbuf[256]
        cdef char* buf
        cdef int fi = self._field(name)
        buf = self._tmp(stackbuf, 256)
        try:
            self._read(handle, buf)
            return self._unpack(fi, buf)
        finally:
            if buf != stackbuf:
                PyMem_Free(buf)

    def set(self, handle, name, value):
        """Set field ``name`` of the record of ``handle`` (checked first; all or nothing)."""
        cdef char stackbuf[256]
        cdef char* buf
        cdef int fi = self._field(name)
        buf = self._tmp(stackbuf, 256)
        try:
            self._pack(fi, value, buf)
            self._write_field(handle, fi, buf)
        finally:
            if buf != stackbuf:
                PyMem_Free(buf)

    def update(self, handle, /, **fields):
        """Set several fields of one record at once (all checked before any is written)."""
        cdef char stackbuf[256]
        cdef char* buf
        cdef int fi
        cdef uint64_t h = _handle(handle)
        cdef hak_pchunk_t* ch
        cdef uint32_t j
        cdef int r
        cdef char* dst
        fis = [self._field(k) for k in fields]
        buf = self._tmp(stackbuf, 256)
        try:
            for k, v in fields.items():
                self._pack(self._field(k), v, buf)
            hak_plock(&self._p.lock)
            r = _decode(&self._p, h, &ch, &j)
            if r == _R_OK:
                dst = ch.rec + <size_t>j * self._p.stride
                for fi in fis:
                    memcpy(dst + self._foff[fi], buf + self._foff[fi], self._fsize[fi])
            else:
                self._p.stale += 1
            hak_punlock(&self._p.lock)
            if r != _R_OK:
                raise _stale(r, handle)
        finally:
            if buf != stackbuf:
                PyMem_Free(buf)

    def read(self, handle):
        """The record of ``handle`` as a tuple of field values (one consistent copy)."""
        cdef char stackbuf[256]
        cdef char* buf = self._tmp(stackbuf, 256)
        cdef int i
        try:
            self._read(handle, buf)
            return tuple([self._unpack(i, buf) for i in range(self._nfields)])
        finally:
            if buf != stackbuf:
                PyMem_Free(buf)

    def __getitem__(self, handle):
        """A :class:`RecordView` of the record of ``handle`` (checked now and on each use)."""
        cdef int r = self._why(handle)
        if r != _R_OK:
            hak_plock(&self._p.lock)
            self._p.stale += 1
            hak_punlock(&self._p.lock)
            raise _stale(r, handle)
        return RecordView._make(self, handle)

    def __delitem__(self, handle):
        """``del pool[h]`` is ``pool.free(h)``."""
        self.free(handle)

    cdef int _why(self, object handle) except -1:
        cdef hak_pchunk_t* ch
        cdef uint32_t j
        cdef uint64_t h = _handle(handle)
        cdef int r
        hak_plock(&self._p.lock)
        r = _decode(&self._p, h, &ch, &j)
        hak_punlock(&self._p.lock)
        return r

    def __contains__(self, handle):
        """True if ``handle`` is a live record of this pool."""
        if not PyLong_Check(handle) and not hasattr(handle, "__index__"):
            return False
        return self._why(handle) == _R_OK

    def is_live(self, handle):
        """True if ``handle`` is a live record of this pool (same as ``handle in pool``)."""
        return handle in self

    def __len__(self):
        """Number of live records."""
        self._check_open()
        return self._p.live

    def __bool__(self):
        return self._p.live != 0

    # -- bulk ----------------------------------------------------------------------
    cdef object _column_values(self, int fi, object values, Py_ssize_t n):
        """values (scalar or array-like) checked for field fi -> contiguous array of n."""
        name = self._names[fi]
        fdt = self._dtype[fi]
        cdef int kind = self._fkind[fi]
        v = np.asarray(values)
        if v.dtype.kind == "O":          # mixed Python objects: check each like alloc does
            scratch = bytearray(self._p.stride)
            for e in v.reshape(-1).tolist():
                self._pack(fi, e, scratch)
            v = np.array(v.tolist(), dtype=fdt)
        if v.ndim > 1:
            raise ValueError(f"field {name!r}: values must be a scalar or 1-d, "
                             f"not shape {v.shape}")
        if v.ndim == 1 and v.shape[0] != n:
            raise ValueError(f"field {name!r}: {v.shape[0]} values for {n} records")
        sk = v.dtype.kind
        if v.size:
            if kind == _K_F8 or kind == _K_F4:
                if sk not in "biuf":
                    raise TypeError(f"field {name!r} ({fdt}) needs real numbers, not {v.dtype}")
                if kind == _K_F4 and sk == "f" and v.dtype.itemsize > 4:
                    fin = v[np.isfinite(v)]
                    if fin.size and np.abs(fin).max() > FLT_MAX:
                        raise OverflowError(f"field {name!r}: values out of range for float32")
            elif kind == _K_INT or kind == _K_UINT or kind == _K_BOOL:
                if sk not in "biu":
                    raise TypeError(f"field {name!r} ({fdt}) needs ints, not {v.dtype}")
                if sk != "b":
                    lo, hi = int(v.min()), int(v.max())
                    if kind == _K_BOOL:
                        ok_lo, ok_hi = 0, 1
                    else:
                        info = np.iinfo(fdt)
                        ok_lo, ok_hi = int(info.min), int(info.max)
                    if lo < ok_lo or hi > ok_hi:
                        bad = lo if lo < ok_lo else hi
                        raise OverflowError(f"field {name!r}: {bad} is out of range for "
                                            f"{fdt} [{ok_lo}, {ok_hi}]")
            else:
                if sk != "S":
                    raise TypeError(f"field {name!r} ({fdt}) needs bytes, not {v.dtype}")
                if v.dtype.itemsize > fdt.itemsize:
                    longest = int(np.char.str_len(v).max())
                    if longest > fdt.itemsize:
                        raise OverflowError(f"field {name!r}: {longest} bytes do not fit "
                                            f"in {fdt}")
        return np.ascontiguousarray(np.broadcast_to(v, (n,)).astype(fdt))

    def alloc_many(self, Py_ssize_t n, /, **columns):
        """Allocate ``n`` records at once; return their handles (numpy int64 array).

        Each keyword gives one field: a scalar (same for all) or ``n`` values. All
        values are checked first; on any error nothing is allocated.
        """
        cdef char* src
        cdef int64_t[::1] out
        cdef Py_ssize_t i, done = 0
        cdef uint64_t h
        cdef char* r
        cdef size_t isz = self._p.itemsize
        cdef int closed = 0
        self._check_open()
        if n < 0:
            raise ValueError(f"alloc_many: n must be >= 0, not {n}")
        recs = np.zeros(n, dtype=self._dtype)
        for k, v in columns.items():
            fi = self._field(k)
            recs[k] = self._column_values(fi, v, n)
        handles = np.empty(n, dtype=np.int64)
        if n == 0:
            return handles
        out = handles
        src = <char*><uintptr_t>recs.ctypes.data
        with nogil:
            hak_plock(&self._p.lock)
            if self._p.closed:
                closed = 1
            else:
                while self._p.nfree < <uint64_t>n:      # reserve first: all or nothing
                    if _grow(&self._p) != 0:
                        break
                if self._p.nfree >= <uint64_t>n:
                    for i in range(n):
                        r = _alloc_locked(&self._p, &h)
                        memcpy(r, src + i * isz, isz)
                        out[i] = <int64_t>h
                    done = n
            hak_punlock(&self._p.lock)
        if closed:
            raise _closed_error()
        if done != n:
            raise MemoryError(f"RecordPool: cannot allocate {n} records")
        return handles

    def free_many(self, handles):
        """Free many records: all or nothing (one stale or repeated handle frees none)."""
        cdef const int64_t[::1] hs
        cdef Py_ssize_t i, n, bad = -1
        cdef int r = _R_OK
        cdef hak_pchunk_t* ch
        cdef uint32_t j
        cdef hak_pool_t* p = &self._p
        self._check_open()
        arr = _as_array_of_handles(handles).reshape(-1)
        n = arr.shape[0]
        if n == 0:
            return
        hs = arr
        with nogil:
            hak_plock(&p.lock)
            for i in range(n):               # pass 1: check and mark (gen -> even)
                r = _decode(p, <uint64_t>hs[i], &ch, &j)
                if r != _R_OK:
                    bad = i
                    break
                ch.gen[j] += 1
            if bad >= 0:                     # undo the marks, newest first
                i = bad
                while i > 0:
                    i -= 1
                    _decode_marked_undo(p, <uint64_t>hs[i])
                p.stale += 1
            else:                            # pass 2: release
                for i in range(n):
                    _release_marked(p, <uint64_t>hs[i])
            hak_punlock(&p.lock)
        if bad >= 0:
            if r == _R_CLOSED:
                raise _closed_error()
            why = ("is not live (freed, or repeated in the list)" if r == _R_FREED
                   else _REASONS.get(r, "is not live"))
            raise StaleHandleError(f"free_many: handle {int(arr[bad])!r} at position {bad} "
                                   f"{why}; nothing was freed")

    def gather(self, field, handles):
        """One field of many records as a numpy array shaped like ``handles``."""
        cdef int fi = self._field(field)
        cdef const int64_t[::1] hs
        cdef Py_ssize_t n, bad = -1
        cdef int r = _R_OK
        cdef uint32_t off = self._foff[fi], size = self._fsize[fi]
        cdef hak_pool_t* p = &self._p
        cdef char* dst
        self._check_open()
        arr = _as_array_of_handles(handles)
        out = np.empty(arr.shape, dtype=self._dtype[fi])
        n = arr.size
        if n == 0:
            return out
        hs = arr.reshape(-1)
        dst = <char*><uintptr_t>out.ctypes.data
        with nogil:
            hak_plock(&p.lock)
            if size == 8:                     # a constant size: the copy is one move
                bad = _gather_locked(p, &hs[0], n, off, 8, dst, &r)
            else:
                bad = _gather_locked(p, &hs[0], n, off, size, dst, &r)
            if bad >= 0:
                p.stale += 1
            hak_punlock(&p.lock)
        if bad >= 0:
            self._bulk_error("gather", r, arr, bad)
        return out

    def scatter(self, field, handles, values):
        """Set one field of many records (values: scalar or one per handle); all or nothing."""
        cdef int fi = self._field(field)
        cdef const int64_t[::1] hs
        cdef Py_ssize_t i, n, bad = -1
        cdef int r = _R_OK
        cdef hak_pchunk_t* ch = NULL
        cdef uint32_t j = 0, off = self._foff[fi], size = self._fsize[fi], stride = self._p.stride
        cdef hak_pool_t* p = &self._p
        cdef const char* src
        self._check_open()
        arr = _as_array_of_handles(handles).reshape(-1)
        n = arr.shape[0]
        vals = self._column_values(fi, values, n)
        if n == 0:
            return
        hs = arr
        src = <const char*><uintptr_t>vals.ctypes.data
        with nogil:
            hak_plock(&p.lock)
            bad = _gather_locked(p, &hs[0], n, off, size, NULL, &r)   # check all before writing
            if bad < 0:
                for i in range(n):
                    _decode(p, <uint64_t>hs[i], &ch, &j)
                    memcpy(ch.rec + <size_t>j * stride + off, src + i * size, size)
            else:
                p.stale += 1
            hak_punlock(&p.lock)
        if bad >= 0:
            self._bulk_error("scatter", r, arr, bad)

    def _bulk_error(self, what, int r, arr, Py_ssize_t bad):
        if r == _R_CLOSED:
            raise _closed_error()
        h = int(arr.reshape(-1)[bad])
        raise StaleHandleError(f"{what}: handle {h!r} at position {bad} "
                               f"{_REASONS.get(r, 'is not live')}; nothing was changed")

    cdef object _scan(self, int fi):
        """Live handles (fi < 0) or field fi of live records, in slot order."""
        cdef uint64_t want, room
        cdef Py_ssize_t k = 0
        cdef uint32_t c, j, K = 1u << self._p.kshift
        cdef uint32_t off = 0, size = 8, stride = self._p.stride
        cdef hak_pchunk_t* ch
        cdef hak_pool_t* p = &self._p
        cdef char* dst
        cdef uint64_t h
        cdef bint ok
        if fi >= 0:
            off = self._foff[fi]
            size = self._fsize[fi]
        while True:
            self._check_open()
            want = p.live
            room = want + want // 16 + 64        # slack: other threads may alloc meanwhile
            out = np.empty(room, dtype=np.int64 if fi < 0 else self._dtype[fi])
            dst = <char*><uintptr_t>out.ctypes.data
            with nogil:
                hak_plock(&p.lock)
                ok = p.live <= room and not p.closed   # else: grew meanwhile, retry
                if ok:
                    k = 0
                    for c in range(p.nchunks):
                        ch = &p.chunks[c]
                        if ch.state != HAK_PCHUNK_PRESENT or ch.live == 0:
                            continue
                        for j in range(K):
                            if _gen_live(ch.gen[j]):
                                if fi < 0:
                                    h = p.tag | ((<uint64_t>c << p.kshift | j) << _GEN_BITS) | ch.gen[j]
                                    memcpy(dst + k * 8, &h, 8)
                                else:
                                    memcpy(dst + k * size, ch.rec + <size_t>j * stride + off, size)
                                k += 1
                hak_punlock(&p.lock)
            if ok:
                return out[:k].copy() if <uint64_t>k * 2 < room else out[:k]

    def handles(self):
        """All live handles (numpy int64 array, slot order): a snapshot."""
        return self._scan(-1)

    def column(self, field):
        """A copy of one field of every live record, in the order of :meth:`handles`."""
        return self._scan(self._field(field))

    def __iter__(self):
        """Iterate over a snapshot of the live handles (freeing while iterating is fine)."""
        return iter(self._scan(-1).tolist())

    # -- memory and lifetime -----------------------------------------------------
    @property
    def dtype(self):
        """The numpy structured dtype of one record."""
        return self._dtype

    @property
    def fields(self):
        """Field names in declaration order."""
        return self._names

    @property
    def itemsize(self):
        """Bytes of one record (numpy's itemsize)."""
        return self._p.itemsize

    @property
    def nbytes(self):
        """Bytes of hakmem memory the pool holds (records, generations, chunk table)."""
        return self._p.nbytes

    @property
    def capacity(self):
        """Records the pool can hold without asking hakmem for more memory."""
        return (<uint64_t>self._p.npresent << self._p.kshift) - self._p.retired

    @property
    def closed(self):
        """True after :meth:`close`."""
        return self._p.closed != 0

    def trim(self):
        """Give chunks with no live record back to hakmem (and hakmem's empty slabs to
        the OS); return the bytes the pool released. Handles stay valid."""
        cdef size_t n
        self._check_open()
        with nogil:
            hak_plock(&self._p.lock)
            n = _trim_locked(&self._p)
            hak_punlock(&self._p.lock)
            hak_trim()
        return n

    def clear(self):
        """Free every record (all handles become stale); memory is kept for reuse."""
        cdef uint32_t c, j, K = 1u << self._p.kshift
        cdef hak_pchunk_t* ch
        cdef hak_pool_t* p = &self._p
        self._check_open()
        with nogil:
            hak_plock(&p.lock)
            p.frees += p.live
            for c in range(p.nchunks):
                ch = &p.chunks[c]
                if ch.state != HAK_PCHUNK_PRESENT or ch.live == 0:
                    continue
                for j in range(K):
                    if _gen_live(ch.gen[j]):
                        ch.gen[j] = _GEN_RETIRED if ch.gen[j] >= _GEN_LAST else ch.gen[j] + 1
            _rebuild_free(p)
            hak_punlock(&p.lock)

    def close(self):
        """Free all memory; afterwards every operation raises ValueError. Idempotent."""
        with nogil:
            hak_plock(&self._p.lock)
            _release_all(&self._p)
            self._p.closed = 1
            hak_punlock(&self._p.lock)

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def stats(self):
        """The pool's counters and memory as a dict."""
        cdef hak_pool_t* p = &self._p
        cdef hak_pool_t snap
        cdef uint32_t c
        cdef uint64_t dead = 0
        hak_plock(&p.lock)
        for c in range(p.nchunks):
            if p.chunks[c].state == HAK_PCHUNK_DEAD:
                dead += 1
        memcpy(&snap, p, sizeof(hak_pool_t))
        hak_punlock(&p.lock)
        st = dict(
            live=snap.live, capacity=(<uint64_t>snap.npresent << snap.kshift) - snap.retired,
            free_slots=snap.nfree, retired_slots=snap.retired,
            chunks=snap.nchunks, chunks_present=snap.npresent, chunks_trimmed=snap.ntrimmed,
            chunks_dead=dead, records_per_chunk=1 << snap.kshift,
            record_size=snap.itemsize, slot_size=snap.stride, nbytes=snap.nbytes,
            allocs=snap.allocs, frees=snap.frees, stale_refused=snap.stale,
            closed=bool(snap.closed))
        st["bytes_per_live"] = (st["nbytes"] / st["live"]) if st["live"] else None
        return st

    def __repr__(self):
        spec = " ".join(f"{n}:{self._dtype[n].str.lstrip('<>|=')}" for n in self._names)
        if self._p.closed:
            return f"<RecordPool {spec!r} closed>"
        return f"<RecordPool {spec!r} live={self._p.live} capacity={self.capacity}>"

    # -- pickling ----------------------------------------------------------------
    def __reduce__(self):
        """Pickle records, generations and the tag, so live handles stay valid."""
        cdef hak_pool_t* p = &self._p
        cdef uint32_t c, nch, npres, K = 1u << p.kshift
        cdef size_t recbytes = <size_t>K * p.stride
        cdef uint64_t layout
        cdef unsigned char[::1] st_v
        cdef uint16_t[::1] fl_v
        cdef unsigned char[::1] rec_v
        cdef unsigned char[::1] gen_v
        cdef size_t ri
        cdef bint ok = False
        while not ok:                 # size the buffers unlocked, copy under the lock
            self._check_open()
            hak_plock(&p.lock)
            layout = p.layout
            nch = p.nchunks
            npres = p.npresent
            hak_punlock(&p.lock)
            states = bytearray(nch)
            floors = np.zeros(nch, dtype=np.uint16)
            recs = bytearray(npres * recbytes)
            gens = bytearray(npres * K * 2)
            if nch == 0:
                break
            st_v = states
            fl_v = floors
            rec_v = recs if npres else bytearray(1)
            gen_v = gens if npres else bytearray(1)
            with nogil:
                hak_plock(&p.lock)
                ok = p.layout == layout and not p.closed
                if ok:
                    ri = 0
                    for c in range(nch):
                        st_v[c] = p.chunks[c].state
                        fl_v[c] = p.chunks[c].floor
                        if p.chunks[c].state == HAK_PCHUNK_PRESENT:
                            memcpy(&rec_v[ri * recbytes], p.chunks[c].rec, recbytes)
                            memcpy(&gen_v[ri * K * 2], p.chunks[c].gen, K * 2)
                            ri += 1
                hak_punlock(&p.lock)
        state = dict(version=1, tag=p.tag >> _TAG_SHIFT, kshift=p.kshift, stride=p.stride,
                     states=bytes(states), floors=floors.tobytes(), recs=bytes(recs),
                     gens=bytes(gens))
        return (_restore, (self._dtype, state))

    def _load(self, dict state):
        """Fill an empty pool from a pickled state."""
        cdef hak_pool_t* p = &self._p
        cdef uint32_t c, n, K
        cdef size_t recbytes
        cdef Py_ssize_t ri = 0
        cdef const unsigned char[::1] recs
        cdef const unsigned char[::1] gens
        cdef const uint16_t[::1] floors
        if state.get("version") != 1:
            raise ValueError(f"unknown RecordPool pickle version {state.get('version')!r}")
        if state["kshift"] != p.kshift or state["stride"] != p.stride:
            raise ValueError("RecordPool pickle was made with a different chunk layout")
        states = state["states"]
        n = len(states)
        K = 1u << p.kshift
        recbytes = <size_t>K * p.stride
        floors = np.frombuffer(state["floors"], dtype=np.uint16)
        npres = sum(1 for s in states if s == HAK_PCHUNK_PRESENT)
        if (len(state["recs"]) != npres * recbytes or len(state["gens"]) != npres * K * 2
                or floors.shape[0] != n):
            raise ValueError("corrupt RecordPool pickle (sizes do not match)")
        recs = state["recs"]
        gens = state["gens"]
        p.tag = <uint64_t>state["tag"] << _TAG_SHIFT
        p.chunks = <hak_pchunk_t*>hak_malloc((n if n else 1) * sizeof(hak_pchunk_t))
        if p.chunks == NULL:
            raise MemoryError()
        memset(p.chunks, 0, (n if n else 1) * sizeof(hak_pchunk_t))
        p.chunks_cap = n if n else 1
        p.nbytes = hak_usable_size(p.chunks)
        p.nchunks = n
        for c in range(n):
            st = states[c]
            p.chunks[c].floor = floors[c]
            if st == HAK_PCHUNK_PRESENT:
                p.chunks[c].rec = <char*>hak_malloc(recbytes)
                p.chunks[c].gen = <uint16_t*>hak_malloc(K * 2)
                if p.chunks[c].rec == NULL or p.chunks[c].gen == NULL:
                    hak_free(p.chunks[c].rec)
                    hak_free(p.chunks[c].gen)
                    p.chunks[c].rec = NULL
                    p.chunks[c].gen = NULL
                    p.chunks[c].state = HAK_PCHUNK_DEAD
                    raise MemoryError()
                memcpy(p.chunks[c].rec, &recs[ri * recbytes], recbytes)
                memcpy(p.chunks[c].gen, &gens[ri * K * 2], K * 2)
                ri += 1
                p.npresent += 1
                p.nbytes += hak_usable_size(p.chunks[c].rec) + hak_usable_size(p.chunks[c].gen)
                p.chunks[c].state = HAK_PCHUNK_PRESENT
            elif st == HAK_PCHUNK_TRIMMED:
                p.chunks[c].state = HAK_PCHUNK_TRIMMED
                p.ntrimmed += 1
                if c < p.trim_hint:
                    p.trim_hint = c
            else:
                p.chunks[c].state = HAK_PCHUNK_DEAD
        _rebuild_free(p)


cdef object _alloc_commit(RecordPool self, char* buf, PyObject** args, Py_ssize_t nargs,
                          PyObject* kwnames):
    """alloc: build the record in buf (every value checked), then take a slot."""
    cdef Py_ssize_t i, k, nkw = 0
    cdef int fi
    cdef char* r
    cdef uint64_t h
    cdef PyObject* name
    cdef double d
    cdef tuple names = self._names
    memset(buf, 0, self._p.stride)
    for i in range(nargs):
        if self._fkind[i] == _K_F8 and PyFloat_CheckExact(<object>args[i]):   # common case
            d = PyFloat_AS_DOUBLE(<object>args[i])
            memcpy(buf + self._foff[i], &d, 8)
        else:
            self._pack(<int>i, <object>args[i], buf)
    if kwnames != NULL:
        nkw = PyTuple_GET_SIZE(<object>kwnames)
    for i in range(nkw):
        name = <PyObject*>PyTuple_GET_ITEM(<object>kwnames, i)
        fi = -1
        for k in range(self._nfields):          # interned names: pointer compare
            if <PyObject*>PyTuple_GET_ITEM(names, k) == name:
                fi = <int>k
                break
        if fi < 0:
            fi = self._field(<object>name)
        if fi < nargs:
            raise TypeError(f"field {<object>name!r} given both by position and by name")
        if self._fkind[fi] == _K_F8 and PyFloat_CheckExact(<object>args[nargs + i]):
            d = PyFloat_AS_DOUBLE(<object>args[nargs + i])
            memcpy(buf + self._foff[fi], &d, 8)
        else:
            self._pack(fi, <object>args[nargs + i], buf)
    hak_plock(&self._p.lock)
    r = NULL if self._p.closed else _alloc_locked(&self._p, &h)
    if r != NULL:
        memcpy(r, buf, self._p.itemsize)
    hak_punlock(&self._p.lock)
    if r == NULL:
        if self._p.closed:
            raise _closed_error()
        raise MemoryError("RecordPool: out of memory (or 2**32 slots used)")
    return PyLong_FromUnsignedLongLong(h)


cdef object _alloc_vc(PyObject* self_, PyObject** args, Py_ssize_t nargs, PyObject* kwnames):
    """RecordPool.alloc as a vectorcall method (see the docstring below)."""
    cdef RecordPool self = <RecordPool>self_
    cdef char stackbuf[256]
    cdef char* buf
    if self._p.closed:
        raise _closed_error()
    if nargs > self._nfields:
        raise TypeError(f"record has {self._nfields} fields, got {nargs} values")
    if self._p.stride <= 256:
        return _alloc_commit(self, stackbuf, args, nargs, kwnames)
    buf = <char*>PyMem_Malloc(self._p.stride)
    if buf == NULL:
        raise MemoryError()
    try:
        return _alloc_commit(self, buf, args, nargs, kwnames)
    finally:
        PyMem_Free(buf)


hak_alloc_def.ml_name = b"alloc"
hak_alloc_def.ml_meth = <void*>_alloc_vc
hak_alloc_def.ml_flags = METH_FASTCALL | METH_KEYWORDS
hak_alloc_def.ml_doc = (b"alloc($self, /, *values, **fields)\n--\n\n"
    b"Allocate a record; return its handle (an int). Fields are given by position\n"
    b"(declaration order) and/or by name; fields not given are zero. Every value is\n"
    b"checked before anything is written (TypeError / OverflowError / AttributeError\n"
    b"naming the field).")
hak_add_method(RecordPool, &hak_alloc_def)


cdef void _decode_marked_undo(hak_pool_t* p, uint64_t h) noexcept nogil:
    """free_many rollback: the slot of h was marked (gen advanced by one): undo it."""
    cdef uint64_t s = (h >> _GEN_BITS) & _SLOT_MASK
    p.chunks[s >> p.kshift].gen[s & ((1u << p.kshift) - 1)] -= 1


cdef void _release_marked(hak_pool_t* p, uint64_t h) noexcept nogil:
    """free_many pass 2: the slot of h is marked (gen even): release it."""
    cdef uint64_t s = (h >> _GEN_BITS) & _SLOT_MASK
    cdef hak_pchunk_t* ch = &p.chunks[s >> p.kshift]
    _release_slot(p, ch, <uint32_t>(s & ((1u << p.kshift) - 1)), h)


def _restore(dtype, state):
    """Unpickle a RecordPool (see RecordPool.__reduce__)."""
    pool = RecordPool(dtype)
    pool._load(state)
    return pool
