"""hakmem.arena — Pool: C memory owned by a Python object, with cymem's interface.

What: ``Pool.alloc(number, elem_size)`` hands out zeroed memory that lives until
``Pool.free`` or until the pool is collected; ``Address`` is one such block owned
by its own object. Cython code switches from cymem with one line,
``from hakmem.arena cimport Pool``.

Why: cymem keeps a Python dict of addresses beside calloc'ed memory, so every
alloc/free creates and hashes Python ints. Here a 16-byte header in front of each
block links the pool's blocks into a doubly linked list (no dict, no Python
objects) and the memory comes from hakmem's thread caches.

How: the header layout, the pool tag that makes a foreign or freed address fail
safely, and the invariants are in arena.pxd. ``alloc``/``free``/``realloc`` are cdef
methods (cymem's signatures); Python sees the same names as ordinary methods that
take and return int addresses. Threads: see ``Pool``'s docstring.
"""
import operator
import os

from cpython.object cimport PyTypeObject
from cpython.ref cimport PyObject
from libc.stdint cimport uint64_t, uintptr_t, uint32_t, uint8_t
from libc.string cimport memset, memcpy
from libc.stdio cimport fprintf, fflush, stderr
from libc.stdlib cimport abort

from hakmem.classes cimport (HAK_TINY_MAX, HAK_DEBUG, HAK_NCLASSES, hak_size_class,
                             hak_block_size, hak_likely, hak_unlikely)
from hakmem.front cimport (hak_malloc, hak_calloc, hak_free, hak_usable_size,
                           hak_check_live, HAK_OK, HAK_EDOUBLE)
from hakmem.slab cimport hak_registry, hak_is_tiny, hak_slab_of
from hakmem.remote cimport pthread_mutex_init, pthread_mutex_lock, pthread_mutex_unlock

cdef extern from "Python.h":
    void PyType_Modified(PyTypeObject* t)

cdef extern from *:
    """
    #define ARENA_ADDR   0x0000FFFFFFFFFFF0ULL   /* link bits of a header word */
    #define ARENA_SLACK  0x00FF000000000000ULL   /* slack field of word 0 */
    #define ARENA_LARGE  0xFF                     /* slack field of a large-form block */
    #define arena_mul_overflow(a, b, out) __builtin_mul_overflow((a), (b), (out))
    #define arena_prefetch(p) __builtin_prefetch((const void*)(p))
    """
    const uint64_t ARENA_ADDR
    const uint64_t ARENA_SLACK
    const uint64_t ARENA_LARGE
    bint arena_mul_overflow(size_t a, size_t b, size_t* out) nogil
    void arena_prefetch(const void* p) nogil

__all__ = ["Pool", "Address", "NotInPoolError"]

cdef enum:
    _HDR = 16                         # header bytes below the user pointer
    _TINY_PAYLOAD = HAK_TINY_MAX - _HDR   # largest request served in the tiny form
    _ENOTLARGER = -2                  # realloc: n is not above the current size
    _ENOMEM = -3


class NotInPoolError(KeyError, ValueError):
    """An address that is not a live block of this pool (freed, foreign, or interior).

    A KeyError, as cymem's ``Pool.free`` raises, and a ValueError, as cymem's
    ``Pool.realloc`` and hakmem's own ``free`` raise.
    """

    def __str__(self):
        return str(self.args[0]) if self.args else ""


cdef const uint8_t* g_reg = hak_registry()   # its address never changes

# ---- pool tags ---------------------------------------------------------------------
cdef uint32_t g_serial = 0                    # pools made so far (GIL held)
cdef uint32_t g_salt = int.from_bytes(os.urandom(4), "little")


cdef uint32_t _next_tag():
    """A 32-bit tag, distinct from every other live pool's (a bijection of a counter)."""
    global g_serial
    cdef uint32_t t
    while True:
        g_serial += 1
        t = (g_serial * <uint32_t>0x9E3779B1) ^ g_salt
        # word 1's top 16 bits: never those of a pointer (0) or a hakmem free tag
        if (t >> 16) != 0 and (t >> 16) != 0x9e37:
            return t


# ---- the list (caller holds the mutex of a shared pool) ------------------------------
cdef inline void** _list_of(Pool p, uint64_t* h) noexcept nogil:
    """The head of the list that header h (linked, or just written) belongs on."""
    if ((h[0] & ARENA_SLACK) >> 48) == ARENA_LARGE:
        return &p.heads[ARENA_LARGE_LIST]
    return &p.heads[hak_slab_of(<uintptr_t>h).cls]


cdef inline void _link(Pool p, uint64_t* h, uint64_t slack, uint32_t lst) noexcept nogil:
    """Put header h first on list lst."""
    cdef uint64_t* old = <uint64_t*>p.heads[lst]
    h[0] = <uint64_t><uintptr_t>old | p.tag0 | (slack << 48)
    h[1] = p.tag1
    if old != NULL:
        old[1] = <uint64_t><uintptr_t>h | p.tag1     # word 1 is prev | tag: no load needed
    p.heads[lst] = h


cdef inline void _unlink(Pool p, uint64_t* h) noexcept nogil:
    """Take header h off p's list and zero it (a stale address then fails the tag test)."""
    cdef uint64_t nxt = h[0] & ARENA_ADDR
    cdef uint64_t prv = h[1] & ARENA_ADDR
    if prv != 0:
        (<uint64_t*><uintptr_t>prv)[0] = ((<uint64_t*><uintptr_t>prv)[0] & ~ARENA_ADDR) | nxt
    else:
        _list_of(p, h)[0] = <void*><uintptr_t>nxt
    if nxt != 0:
        (<uint64_t*><uintptr_t>nxt)[1] = prv | p.tag1
    h[0] = 0
    h[1] = 0


cdef inline bint _tagged(Pool p, uint64_t* h) noexcept nogil:
    return ((h[1] & ~ARENA_ADDR) == p.tag1
            and (h[0] & ~(ARENA_ADDR | ARENA_SLACK)) == p.tag0)


cdef inline void* _block_of(uint64_t* h) noexcept nogil:
    """The hakmem block that holds header h (on p's list)."""
    if ((h[0] & ARENA_SLACK) >> 48) == ARENA_LARGE:
        return <char*>h - _HDR
    return h


cdef inline size_t _large_size(uint64_t* h) noexcept nogil:
    """Requested bytes of a large-form block (kept in the prefix word before its header)."""
    return (<uint64_t*>(<char*>h - _HDR))[0]


cdef inline uint64_t* _find(Pool p, void* addr, size_t* req) noexcept nogil:
    """Header of addr if it is a live block of p (its requested size in req), else NULL.

    The acceptance rule is in arena.pxd: no byte is read unless reading it is safe,
    and membership is proven by the list's back-links, not by the header alone.
    """
    cdef uintptr_t u = <uintptr_t>addr
    cdef uint64_t* h
    cdef size_t usable, slack
    cdef uint32_t cls
    if (u & 15) != 0 or u < 2 * _HDR:
        return NULL
    h = <uint64_t*>(u - _HDR)
    if hak_likely(hak_is_tiny(g_reg, <uintptr_t>h)):
        cls = hak_slab_of(<uintptr_t>h).cls      # garbage for a region header: check it
        if cls >= <uint32_t>HAK_NCLASSES or not _tagged(p, h):
            return NULL
        usable = hak_block_size(cls)
        slack = (h[0] & ARENA_SLACK) >> 48
        if slack > usable - _HDR:       # also rejects the large form's 0xFF
            return NULL
        req[0] = usable - _HDR - slack
    else:
        if (hak_is_tiny(g_reg, <uintptr_t>h - _HDR)
                or hak_check_live(<char*>h - _HDR) != HAK_OK):
            return NULL
        usable = hak_usable_size(<char*>h - _HDR)
        if usable <= <size_t>HAK_TINY_MAX or not _tagged(p, h):
            return NULL
        if ((h[0] & ARENA_SLACK) >> 48) != ARENA_LARGE:
            return NULL
        req[0] = _large_size(h)
        if req[0] > usable - 2 * _HDR:
            return NULL
    return h if _linked(p, h) else NULL


cdef inline bint _readable(uint64_t a) noexcept nogil:
    """True if the 16 bytes at header address a may be read: a tiny region of hakmem,
    or the header of a live large-form block."""
    if hak_is_tiny(g_reg, a):
        return True
    return hak_check_live(<void*><uintptr_t>(a - _HDR)) == HAK_OK


cdef inline bint _linked(Pool p, uint64_t* h) noexcept nogil:
    """h's neighbours point back at it: h is on p's list, not a copy of a header of it."""
    cdef uint64_t nxt = h[0] & ARENA_ADDR
    cdef uint64_t prv = h[1] & ARENA_ADDR
    if prv == 0:
        if _list_of(p, h)[0] != <void*>h:
            return False
    elif (not _readable(prv)
            or ((<uint64_t*><uintptr_t>prv)[0] & ARENA_ADDR) != <uint64_t><uintptr_t>h):
        return False
    return nxt == 0 or (_readable(nxt) and
                        ((<uint64_t*><uintptr_t>nxt)[1] & ARENA_ADDR) == <uint64_t><uintptr_t>h)


cdef void _die(const char* what, void* h) noexcept nogil:
    """Debug builds: report a broken pool list and abort, as hakmem's own checks do."""
    fprintf(stderr, b"hakmem.arena: %s: block header %p\n", what, h)
    fflush(stderr)
    abort()


# ---- operations (take the mutex of a shared pool themselves) ---------------------------
cdef inline void _lock(Pool p) noexcept nogil:
    if p.shared:
        pthread_mutex_lock(&p.mutex)


cdef inline void _unlock(Pool p) noexcept nogil:
    if p.shared:
        pthread_mutex_unlock(&p.mutex)


cdef inline uint64_t* _new_block(size_t n, uint64_t* slack, uint32_t* lst) noexcept nogil:
    """An unlinked block with n zeroed user bytes; its header, or NULL (out of memory)."""
    cdef char* b
    cdef size_t total
    if hak_likely(n <= <size_t>_TINY_PAYLOAD):
        total = n + _HDR
        b = <char*>hak_malloc(total)
        if b == NULL:
            return NULL
        memset(b + _HDR, 0, n)
        lst[0] = hak_size_class(total)
        slack[0] = hak_block_size(lst[0]) - total
        return <uint64_t*>b
    if n > <size_t>-1 - 2 * _HDR:
        return NULL
    b = <char*>hak_calloc(1, n + 2 * _HDR)
    if b == NULL:
        return NULL
    if (<uintptr_t>b >> 48) != 0:       # no room for the tag in its links
        hak_free(b)
        return NULL
    (<uint64_t*>b)[0] = n
    slack[0] = ARENA_LARGE
    lst[0] = ARENA_LARGE_LIST
    return <uint64_t*>(b + _HDR)


cdef inline void* _alloc(Pool p, size_t number, size_t elem_size) noexcept nogil:
    cdef size_t n
    cdef uint64_t slack
    cdef uint32_t lst
    cdef uint64_t* h
    if hak_unlikely(arena_mul_overflow(number, elem_size, &n)):
        return NULL
    h = _new_block(n, &slack, &lst)
    if h == NULL:
        return NULL
    _lock(p)
    _link(p, h, slack, lst)
    p.size += n
    p.count += 1
    _unlock(p)
    return <char*>h + _HDR


cdef inline int _free(Pool p, void* addr) noexcept nogil:
    cdef size_t req
    cdef uint64_t* h
    cdef void* b
    _lock(p)
    h = _find(p, addr, &req)
    if h == NULL:
        _unlock(p)
        return ARENA_ENOTOWNED
    b = _block_of(h)
    _unlink(p, h)
    p.size -= req
    p.count -= 1
    hak_free(b)         # before unlock: a racing free of addr must not read freed memory
    _unlock(p)
    return ARENA_OK


cdef void* _realloc(Pool p, void* addr, size_t n, int* err) noexcept nogil:
    """Grow addr's block to n bytes (zeroed tail); NULL and err on error, nothing changed."""
    cdef size_t old
    cdef uint64_t slack
    cdef uint64_t* h
    cdef uint64_t* q
    cdef void* b
    cdef uint32_t lst
    _lock(p)
    h = _find(p, addr, &old)
    if h == NULL:
        err[0] = ARENA_ENOTOWNED
    elif n <= old:
        err[0] = _ENOTLARGER
    elif _block_of(h) == <void*>h and n + _HDR <= hak_usable_size(h):
        memset(<char*>addr + old, 0, n - old)        # fits the block's slack: in place
        h[0] = (h[0] & ~ARENA_SLACK) | (<uint64_t>(hak_usable_size(h) - _HDR - n) << 48)
        p.size += n - old
        _unlock(p)
        return addr
    else:
        q = _new_block(n, &slack, &lst)
        if q == NULL:
            err[0] = _ENOMEM
        else:
            memcpy(<char*>q + _HDR, addr, old)
            b = _block_of(h)
            _unlink(p, h)
            hak_free(b)
            _link(p, q, slack, lst)
            p.size += n - old
            _unlock(p)
            return <char*>q + _HDR
    _unlock(p)
    return NULL


cdef int _not_in_pool(str where, void* addr, str more) except -1:
    """Raise NotInPoolError for addr, saying why if hakmem can tell."""
    cdef uintptr_t u = <uintptr_t>addr
    if (u & 15) != 0 or u < 2 * _HDR:
        why = "is not one a Pool hands out (not 16-byte aligned, or too small)"
    elif hak_check_live(<void*>(u - _HDR)) == HAK_EDOUBLE:
        why = "is already freed"
    else:
        why = "is not a live block of this pool (freed, or from another pool or allocator)"
    raise NotInPoolError(f"{where}({u:#x}{more}): the address {why}; nothing changed")


cdef int _alloc_error(size_t number, size_t elem_size) except -1:
    """Raise MemoryError for a failed alloc, saying whether the size overflowed."""
    cdef size_t n
    if arena_mul_overflow(number, elem_size, &n):
        raise MemoryError(f"Pool.alloc({number}, {elem_size}): "
                          "number * elem_size overflows size_t")
    raise MemoryError(f"Pool.alloc({number}, {elem_size}): cannot allocate {n} bytes")


cdef inline size_t _size_arg(object v, str where, str what) except? 0:
    """A Python int as a byte count, with a clear error for anything else."""
    v = operator.index(v)
    if v < 0:
        raise ValueError(f"{where}: {what} must be >= 0, got {v}")
    if v > <size_t>-1:
        raise MemoryError(f"{where}: {what}={v} is too large to allocate")
    return v


cdef inline void* _addr_arg(object v, str where) except? NULL:
    """A Python int as an address; NotInPoolError if no pointer could have that value."""
    v = operator.index(v)
    if v < 0 or v > <uintptr_t>-1:
        raise NotInPoolError(f"{where}: {v} is not an address a Pool hands out; nothing changed")
    return <void*><uintptr_t>v


# The error paths are called through pointers set at import, so the C compiler does not
# inline them into alloc/free (whose fast paths then need a smaller stack frame).
ctypedef int (*alloc_error_fn)(size_t, size_t) except -1
ctypedef int (*not_in_pool_fn)(str, void*, str) except -1
cdef alloc_error_fn g_alloc_error = _alloc_error
cdef not_in_pool_fn g_not_in_pool = _not_in_pool


cdef class Pool:
    """Memory that lives as long as this object: every block still held is freed with it.

    Cython (cymem's interface)::

        from hakmem.arena cimport Pool
        cdef Pool mem = Pool()
        cdef double* xs = <double*>mem.alloc(10, sizeof(double))   # zeroed
        xs = <double*>mem.realloc(xs, 20 * sizeof(double))         # must grow
        mem.free(xs)                                               # or leave it to mem

    Python: the same names take and return int addresses; ``len(pool)`` is the
    number of blocks held, ``pool.size`` their requested bytes.

    Errors: ``alloc`` raises MemoryError when ``number * elem_size`` overflows or
    memory runs out; ``free`` and ``realloc`` raise NotInPoolError (a KeyError and a
    ValueError) for an address that is not a live block of this pool, and realloc
    raises ValueError unless the new size is larger (as cymem). Nothing changes
    on an error.

    Threads: methods that hold the GIL (all of cymem's) are safe to call from any
    thread. The ``*_nogil`` methods may run with the GIL released, but on a pool
    made with ``Pool()`` only one thread may use the pool while they run (no
    other nogil call and no GIL-holding call on it at the same time).
    ``Pool(shared=True)`` puts every method behind a mutex, so any threads may
    share the pool in any mix; it costs a lock and unlock per call. The contents
    of the memory are the caller's to synchronise.
    """

    def __cinit__(self, *, bint shared=False):
        cdef uint32_t t = _next_tag()
        self.tag0 = (<uint64_t>(t & 0xF)) | ((<uint64_t>((t >> 4) & 0xFF)) << 56)
        self.tag1 = (<uint64_t>((t >> 12) & 0xF)) | ((<uint64_t>(t >> 16)) << 48)
        memset(self.heads, 0, sizeof(self.heads))
        self.size = 0
        self.count = 0
        self.refs = []
        self.shared = shared
        pthread_mutex_init(&self.mutex, NULL)

    def __dealloc__(self):
        # Walk the lists side by side: their cache misses overlap instead of queueing.
        cdef uint64_t* cur[ARENA_LISTS]
        cdef uint64_t* h
        cdef int j, lo = 0, hi = ARENA_LISTS
        memcpy(cur, self.heads, sizeof(cur))
        while lo < hi:
            while lo < hi and cur[lo] == NULL:
                lo += 1
            while lo < hi and cur[hi - 1] == NULL:
                hi -= 1
            for j in range(lo, hi):
                h = cur[j]
                if h != NULL:
                    if HAK_DEBUG and not _tagged(self, h):
                        _die("pool list broken at dealloc (a write below a block's start?)", h)
                    cur[j] = <uint64_t*><uintptr_t>(h[0] & ARENA_ADDR)
                    arena_prefetch(cur[j])      # needed a round later: start the miss now
                    hak_free(_block_of(h))
        memset(self.heads, 0, sizeof(self.heads))

    # -- cymem's API ------------------------------------------------------------------
    cdef void* alloc(self, size_t number, size_t elem_size) except NULL:
        """number * elem_size zeroed bytes, 16-byte aligned, held until free or dealloc."""
        cdef void* p = _alloc(self, number, elem_size)
        if hak_unlikely(p == NULL):
            g_alloc_error(number, elem_size)
        return p

    cdef void free(self, void* addr) except *:
        """Free a block this pool handed out; NotInPoolError (nothing changed) otherwise."""
        if hak_unlikely(_free(self, addr) != ARENA_OK):
            g_not_in_pool("Pool.free", addr, "")

    cdef void* realloc(self, void* addr, size_t n) except NULL:
        """Grow a block to n bytes (n must exceed its size; new bytes zeroed); new address."""
        cdef int err = 0
        cdef void* q = _realloc(self, addr, n, &err)
        if q != NULL:
            return q
        if err == ARENA_ENOTOWNED:
            _not_in_pool("Pool.realloc", addr, f", {n}")
        if err == _ENOTLARGER:
            raise ValueError(f"Pool.realloc({<uintptr_t>addr:#x}, {n}): the new size must be "
                             "larger than the block's current size (as in cymem)")
        raise MemoryError(f"Pool.realloc({<uintptr_t>addr:#x}, {n}): cannot allocate {n} bytes")

    # -- nogil variants ---------------------------------------------------------------
    cdef void* alloc_nogil(self, size_t number, size_t elem_size) noexcept nogil:
        """alloc without the GIL: NULL on overflow or out of memory."""
        return _alloc(self, number, elem_size)

    cdef int free_nogil(self, void* addr) noexcept nogil:
        """free without the GIL: ARENA_OK, or ARENA_ENOTOWNED and nothing changed."""
        return _free(self, addr)

    cdef void* realloc_nogil(self, void* addr, size_t n) noexcept nogil:
        """realloc without the GIL: NULL (nothing changed) if addr is not a live block
        of this pool, n is not larger than its size, or memory runs out."""
        cdef int err
        return _realloc(self, addr, n, &err)

    # -- Python API (alloc/free/realloc are installed under those names below) --------
    def _py_alloc(self, number, elem_size):
        """alloc(number, elem_size) -> int: address of number * elem_size zeroed bytes.

        MemoryError if the product overflows or memory runs out.
        """
        cdef size_t a = _size_arg(number, "Pool.alloc", "number")
        cdef size_t b = _size_arg(elem_size, "Pool.alloc", "elem_size")
        return <uintptr_t>self.alloc(a, b)

    def _py_free(self, addr):
        """free(addr): free a block of this pool; NotInPoolError if it is not one."""
        self.free(_addr_arg(addr, "Pool.free"))

    def _py_realloc(self, addr, n):
        """realloc(addr, n) -> int: grow a block to n bytes (n > its size), tail zeroed."""
        cdef void* p = _addr_arg(addr, "Pool.realloc")
        cdef size_t m = _size_arg(n, "Pool.realloc", "n")
        return <uintptr_t>self.realloc(p, m)

    def own_pyref(self, object py_ref):
        """Keep py_ref alive as long as this pool."""
        self.refs.append(py_ref)

    def __len__(self):
        return self.count

    def __contains__(self, addr):
        cdef size_t req
        cdef bint found
        try:
            addr = operator.index(addr)
        except TypeError:
            return False
        if addr < 0 or addr > <uintptr_t>-1:
            return False
        _lock(self)
        found = _find(self, <void*><uintptr_t>addr, &req) != NULL
        _unlock(self)
        return found

    @property
    def addresses(self):
        """{address: requested bytes} of the blocks held (a new dict, as cymem's attribute)."""
        cdef dict out = {}
        cdef uint64_t* h
        cdef list rows = []
        cdef size_t req
        cdef int j
        _lock(self)
        try:
            for j in range(ARENA_LISTS):
                h = <uint64_t*>self.heads[j]
                while h != NULL:
                    if _block_of(h) == <void*>h:
                        req = hak_usable_size(h) - _HDR - ((h[0] & ARENA_SLACK) >> 48)
                    else:
                        req = _large_size(h)
                    rows.append((<uintptr_t>h + _HDR, req))
                    h = <uint64_t*><uintptr_t>(h[0] & ARENA_ADDR)
        finally:
            _unlock(self)
        out.update(rows)
        return out

    def __repr__(self):
        return (f"<hakmem.arena.Pool: {self.count} blocks, {self.size} bytes"
                f"{', shared' if self.shared else ''}>")


cdef class Address:
    """number * elem_size zeroed bytes owned by this object, freed when it is collected.

    Cython: ``cdef Address a = Address(10, sizeof(double)); xs = <double*>a.ptr``;
    Python: ``Address(10, 8).addr`` is the int address.
    """

    def __cinit__(self, number, elem_size):
        cdef size_t a = _size_arg(number, "Address", "number")
        cdef size_t b = _size_arg(elem_size, "Address", "elem_size")
        cdef size_t n
        if arena_mul_overflow(a, b, &n):
            raise MemoryError(f"Address({a}, {b}): number * elem_size overflows size_t")
        self.ptr = hak_calloc(1, n if n != 0 else 1)
        if self.ptr == NULL:
            raise MemoryError(f"Address({a}, {b}): cannot allocate {n} bytes")

    @property
    def addr(self):
        """The block's address as an int."""
        return <uintptr_t>self.ptr

    def __dealloc__(self):
        hak_free(self.ptr)


# Python sees alloc/free/realloc as methods: a cdef class cannot have a def method of the
# same name as a cdef one, so the Python functions are entered in the type under them.
def _install_python_names():
    cdef dict d = <dict><PyObject*>(<PyTypeObject*>Pool).tp_dict
    for name in ("alloc", "free", "realloc"):
        f = d["_py_" + name]
        f.__name__ = name
        f.__qualname__ = "Pool." + name
        f.__doc__ = f.__doc__.replace("_py_" + name, name)
        d[name] = f
    PyType_Modified(<PyTypeObject*>Pool)


_install_python_names()
del _install_python_names
