# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A downstream extension, built at test time, that cimports hakmem's C API.

It proves the cimport contract works from another module and drives the allocator
from several threads with the GIL released.
"""
from libc.stdint cimport uint64_t, uintptr_t
cimport hakmem
from testkit cimport xorshift
from hakmem.front cimport (hak_malloc, hak_free, hak_free_checked, hak_calloc,
                           hak_realloc, hak_usable_size, HAK_OK, HAK_EDOUBLE)
from hakmem cimport hak_heap_t, hak_heap, hak_heap_malloc, hak_heap_calloc, hak_heap_free

cdef extern from *:
    """
    #define xchg_ptr(p, v) __atomic_exchange_n((void**)(p), (void*)(v), __ATOMIC_ACQ_REL)
    #define load_ptr(p) __atomic_load_n((void**)(p), __ATOMIC_ACQUIRE)
    #define store_ptr(p, v) __atomic_store_n((void**)(p), (void*)(v), __ATOMIC_RELEASE)
    #define load_u64(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
    #define store_u64(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
    """
    void* xchg_ptr(void* p, void* v) nogil
    void* load_ptr(void* p) nogil
    void store_ptr(void* p, void* v) nogil
    uint64_t load_u64(uint64_t* p) nogil
    void store_u64(uint64_t* p, uint64_t v) nogil

cdef enum:
    NXFER = 64
    RING = 256

cdef void* g_xfer[NXFER]     # cross-thread handoff slots
for _i in range(NXFER):
    g_xfer[_i] = NULL


cdef inline void stamp(void* p, size_t n, uint64_t cookie) noexcept nogil:
    (<uint64_t*>p)[0] = cookie
    (<uint64_t*>(<char*>p + n - 8))[0] = ~cookie


cdef inline bint check(void* p, size_t n) noexcept nogil:
    return (<uint64_t*>(<char*>p + n - 8))[0] == ~(<uint64_t*>p)[0]


cdef inline size_t size_of(uint64_t r) noexcept nogil:
    # mostly tiny sizes 16..1024; 1 in 64 is large (1032..8192); multiples of 8
    # so the end cookie never overlaps the second word
    if (r & 63) == 0:
        return (1032 + <size_t>((r >> 8) % 7160)) & ~(<size_t>7)
    return (16 + <size_t>((r >> 8) % 1009)) & ~(<size_t>7)


cdef inline void _ring_free(hak_heap_t* h, void* p, uint64_t r) noexcept nogil:
    """By name (h NULL), or mostly through h with some frees by name mixed in."""
    if h == NULL or (r >> 40) & 3 == 0:
        hak_free(p)
    else:
        hak_heap_free(h, p)


cdef inline void* _ring_alloc(hak_heap_t* h, size_t n, uint64_t r, long* bad) noexcept nogil:
    """By name (h NULL), or through h (some calloc, some hak_malloc mixed in)."""
    cdef void* p
    if h == NULL or (r >> 44) & 7 == 1:
        return hak_malloc(n)
    if (r >> 44) & 7 == 0:
        p = hak_heap_calloc(h, 1, n)
        if p != NULL and (<uint64_t*>p)[0] != 0:
            bad[0] += 1
        return p
    return hak_heap_malloc(h, n)


cdef object _ring_worker(int tid, long nops, int xfer_every, uint64_t seed, hak_heap_t* h):
    """The body of mixed_worker (h NULL: the by-name API) and inline_worker."""
    cdef void* ring[RING]
    cdef size_t sizes[RING]
    cdef uint64_t r, seq = 0
    cdef long i, bad = 0, allocs = 0, frees = 0
    cdef int k, slot
    cdef void* p
    cdef void* q
    cdef size_t n
    for k in range(RING):
        ring[k] = NULL
    with nogil:
        for i in range(nops):
            r = xorshift(&seed)
            k = <int>(r % RING)
            if ring[k] != NULL:
                if not check(ring[k], sizes[k]):
                    bad += 1
                if xfer_every > 0 and (i % xfer_every) == 0:
                    # hand it to whichever thread looks at this slot next
                    slot = <int>((r >> 32) % NXFER)
                    q = xchg_ptr(&g_xfer[slot], ring[k])
                    if q != NULL:
                        if not check(q, 16):   # every block is >= 16 bytes
                            bad += 1
                        # often another thread's block
                        if h == NULL:
                            hak_free(q)
                        else:
                            hak_heap_free(h, q)
                        frees += 1
                else:
                    _ring_free(h, ring[k], r)
                    frees += 1
                ring[k] = NULL
            n = size_of(r)
            p = _ring_alloc(h, n, r, &bad)
            if p == NULL:
                bad += 1
                continue
            allocs += 1
            seq += 1
            # transferred blocks are checked with n=16: stamp the first 16 bytes too
            stamp(p, 16, (<uint64_t>tid << 48) | seq)
            stamp(p, n, (<uint64_t>tid << 48) | seq)
            ring[k] = p
            sizes[k] = n
        for k in range(RING):
            if ring[k] != NULL:
                if not check(ring[k], sizes[k]):
                    bad += 1
                if h == NULL:
                    hak_free(ring[k])
                else:
                    hak_heap_free(h, ring[k])
                frees += 1
    return bad, allocs, frees


def mixed_worker(int tid, long nops, int xfer_every):
    """nops mixed alloc/free ops; every xfer_every-th block is handed to another thread.

    Each block carries a cookie (unique id + its complement at the end), checked
    before it is freed: a block handed out twice would show a broken cookie.
    Returns (bad_cookies, allocs, frees).
    """
    return _ring_worker(tid, nops, xfer_every,
                        0x9E3779B97F4A7C15 ^ (<uint64_t>tid * 0x100000001B3), NULL)


def drain_xfer():
    """Free whatever is left in the handoff slots; returns how many."""
    cdef int k, n = 0
    cdef void* q
    for k in range(NXFER):
        q = xchg_ptr(&g_xfer[k], NULL)
        if q != NULL:
            hak_free(q)
            n += 1
    return n


# ---- producer/consumer through a single-producer single-consumer ring --------
cdef enum:
    PC_RING = 1024

cdef void* g_pc[PC_RING]
cdef uint64_t g_head = 0     # next slot the producer writes
cdef uint64_t g_tail = 0     # next slot the consumer reads


def pc_reset():
    global g_head, g_tail
    g_head = 0
    g_tail = 0


def producer(long n, size_t size):
    """Allocate n blocks of `size` bytes and push them through the ring."""
    cdef long i
    cdef void* p
    cdef uint64_t h
    with nogil:
        for i in range(n):
            p = hak_malloc(size)
            (<uint64_t*>p)[0] = <uint64_t>i
            h = g_head
            while h - load_u64(&g_tail) >= PC_RING:
                pass
            store_ptr(&g_pc[h % PC_RING], p)
            store_u64(&g_head, h + 1)
    return n


def consumer(long n):
    """Pop n blocks from the ring, check their sequence numbers and free them."""
    cdef long i, bad = 0
    cdef void* p
    cdef uint64_t t
    with nogil:
        for i in range(n):
            t = g_tail
            while load_u64(&g_head) == t:
                pass
            p = load_ptr(&g_pc[t % PC_RING])
            if (<uint64_t*>p)[0] != <uint64_t>i:
                bad += 1
            hak_free(p)
            store_u64(&g_tail, t + 1)
    return bad


def ring_ops(long nops, int ws, size_t size):
    """The seed's fixed-size ring: free slot i % ws if full, allocate `size` into it."""
    cdef void* ring[4096]
    cdef long i
    cdef int k
    if ws <= 0 or ws > 4096:
        raise ValueError("ws out of range")
    for k in range(ws):
        ring[k] = NULL
    with nogil:
        for i in range(nops):
            k = <int>(i % ws)
            if ring[k] != NULL:
                hak_free(ring[k])
            ring[k] = hak_malloc(size)
            (<char*>ring[k])[0] = 1
        for k in range(ws):
            hak_free(ring[k])


def checked_free(uintptr_t addr):
    """hak_free_checked through the cimport path; returns its code."""
    cdef int rc
    with nogil:
        rc = hak_free_checked(<void*>addr)
    return rc


def api_roundtrip():
    """Exercise calloc/realloc/usable_size through cimport; True when all hold."""
    cdef char* p = <char*>hak_calloc(10, 10)
    cdef int i
    cdef bint ok = p != NULL and hak_usable_size(p) >= 100
    for i in range(100):
        ok = ok and p[i] == 0
        p[i] = <char>i
    p = <char*>hak_realloc(p, 3000)
    for i in range(100):
        ok = ok and p[i] == <char>i
    ok = ok and hak_usable_size(p) >= 3000
    ok = ok and hak_free_checked(p) == HAK_OK and hakmem.hak_free_checked(p) != HAK_OK
    return bool(ok)


# ---- the inline heap API (hak_heap_*), compiled into this module ----------------
def inline_worker(int tid, long nops, int xfer_every):
    """mixed_worker through the inline API: blocks come from hak_heap_malloc (or
    hak_heap_calloc) and go back through hak_heap_free, hak_free, or another thread
    (which frees them through its own heap). Returns (bad_cookies, allocs, frees)."""
    cdef hak_heap_t* h = hak_heap()
    if h == NULL:
        raise MemoryError("hak_heap() returned NULL")
    return _ring_worker(tid, nops, xfer_every,
                        0x2545F4914F6CDD1D ^ (<uint64_t>tid * 0x100000001B3), h)


def inline_ring(long nops, int ws, size_t size):
    """The seed's ring through the inline API (stats checks use it)."""
    cdef void* ring[4096]
    cdef long i
    cdef int k = 0
    cdef hak_heap_t* h = hak_heap()
    if ws <= 0 or ws > 4096:
        raise ValueError("ws out of range")
    for k in range(ws):
        ring[k] = NULL
    k = 0
    with nogil:
        for i in range(nops):
            if ring[k] != NULL:
                hak_heap_free(h, ring[k])
            ring[k] = hak_heap_malloc(h, size)
            (<char*>ring[k])[0] = 1
            k += 1
            if k == ws:
                k = 0
        for k in range(ws):
            hak_heap_free(h, ring[k])


cdef hak_heap_t* g_shared_heap = NULL


def heap_grab():
    """Obtain this thread's heap and keep it (for the misuse test)."""
    global g_shared_heap
    g_shared_heap = hak_heap()
    return <uintptr_t>g_shared_heap


def heap_use_shared(size_t size):
    """Allocate and free through the kept heap: misuse when called on another thread."""
    cdef void* p = hak_heap_malloc(g_shared_heap, size)
    hak_heap_free(g_shared_heap, p)
