"""hakmem.front — thread caches and the nogil fast paths (hak_malloc / hak_free ...).

Alloc:  direct[(size + 15) >> 4] -> class state k -> magazine pop -> TLS SLL pop
        -> refill from slabs: a slab's whole free list in O(1) (plus fresh blocks).
Free:   registry says tiny? -> slab header by masking -> its owner's id (kept in the
        header, so a remote free never reads the owner's hot state) is ours?
        -> magazine push if room (the TinyHeapV2 supply hook), else straight back
        onto the slab's own list (hak_owner_free; the header line is already cached).
        Not the owner -> push onto the slab's atomic remote list (hakmem.remote).
        Not tiny -> hakmem.large.
The fast paths do plain loads and stores only: no locks, no atomics, no syscalls,
and no test for "this thread has no cache yet" (it has the static empty one).
"""
from libc.stdint cimport uintptr_t, uint64_t, uint32_t, uint8_t
from libc.string cimport memset, memcpy

from hakmem.classes cimport (HAK_NCLASSES, HAK_NSIZES, HAK_TINY_MAX, HAK_DEBUG, HAK_CANARY,
                             hak_size_class, hak_block_size, hak_stride,
                             hak_likely, hak_unlikely)
from hakmem.slab cimport (hak_slab_t, hak_region_t, hak_region_of, hak_slab_of, hak_slab_index,
                          hak_slab_start, hak_is_tiny, hak_slab_disown,
                          hak_block_tag, hak_block_is_tagged,
                          hak_slab_put, hak_slab_mark_full, hak_slab_mark_active, hak_slab_reset,
                          hak_slab_list_push, hak_slab_list_remove, hak_registry,
                          hak_slab_acquire, hak_slab_release, hak_slab_abandon,
                          hak_slab_drain_remote, hak_slab_take, hak_slab_check,
                          hak_slab_trim, hak_slab_fork_prepare, hak_slab_fork_parent,
                          hak_slab_fork_child, HAK_FREE_TAG_OF, HAK_TID_NONE,
                          HAK_SLAB_POOLED, HAK_SLAB_FULL)
from hakmem.debug cimport (hak_die, hak_debug_on_free, hak_debug_check_link,
                           hak_debug_check_alloc)
from hakmem.remote cimport (hak_remote_push, hak_atomic_add_u64, hak_atomic_load_u64,
                            hak_atomic_load_ptr)
from hakmem.large cimport (hak_large_alloc, hak_large_free, hak_large_usable,
                           hak_large_realloc, hak_large_fork_prepare,
                           hak_large_fork_parent, hak_large_fork_child)

cdef extern from *:
    """
    /* One initial-exec TLS pointer: a plain %fs-relative load, no __tls_get_addr.
       Every thread starts on the static empty cache: no fast path tests for NULL. */
    static hak_tcache_t hak_empty_tc;
    static __thread void* hak_tls_tc __attribute__((tls_model("initial-exec"))) = &hak_empty_tc;
    #define hak_tls_get() (hak_tls_tc)
    #define hak_tls_set(p) (hak_tls_tc = (p))
    #define hak_empty_cache() (&hak_empty_tc)

    """
    void* hak_tls_get() nogil
    void hak_tls_set(void* p) nogil
    hak_tcache_t* hak_empty_cache() nogil

cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void** out, size_t align, size_t size)

from hakmem.remote cimport (pthread_mutex_t, pthread_mutex_init, pthread_mutex_lock,
                            pthread_mutex_unlock)
cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned int pthread_key_t
    int pthread_key_create(pthread_key_t*, void (*)(void*) noexcept nogil)
    int pthread_setspecific(pthread_key_t, const void*)
    int pthread_atfork(void (*)() noexcept nogil, void (*)() noexcept nogil,
                       void (*)() noexcept nogil)

# ---- globals ---------------------------------------------------------------
cdef const uint8_t* g_reg = hak_registry()  # copied once: the fast path reads it
cdef pthread_mutex_t g_tc_lock             # guards the cache list and retired stats
cdef hak_tcache_t* g_caches = NULL
cdef hak_class_stats_t g_retired[HAK_NCLASSES]   # counters of exited threads
cdef hak_tcache_t* g_spare = NULL      # caches of exited threads, for reuse (never freed)
cdef uint64_t g_orphan_free[HAK_NCLASSES]        # frees by threads with no cache
cdef pthread_key_t g_key
# Effective configuration for caches (set from hakmem.options at import).
cdef uint32_t g_mag_classes = HAK_NCLASSES
cdef uint32_t g_mag_cap = 64
cdef uint32_t g_batch = 64
cdef uint32_t g_epoch = 1
cdef uint32_t g_sll_cap = 2048         # HAKMEM_TINY_SLL_CAP
# Slow paths are called through pointers set at import: a run-time store keeps the
# C compiler from inlining them into hak_malloc/hak_free, whose fast paths then need
# no callee-saved registers (no push/pop per call).
ctypedef void* (*malloc_slow_fn)(size_t) noexcept nogil
ctypedef void (*free_remote_fn)(hak_slab_t*, void*) noexcept nogil
ctypedef void (*free_other_fn)(void*) noexcept nogil
ctypedef void (*slab_freed_fn)(hak_tclass_t*, hak_slab_t*) noexcept nogil
cdef malloc_slow_fn g_malloc_slow
cdef free_remote_fn g_free_remote
cdef free_other_fn g_free_other
cdef slab_freed_fn g_slab_freed
memset(g_retired, 0, sizeof(g_retired))
memset(g_orphan_free, 0, sizeof(g_orphan_free))
pthread_mutex_init(&g_tc_lock, NULL)


# ---- thread caches -----------------------------------------------------------
cdef hak_tclass_t g_decoy_k      # a decoy heap's every class: always empty, no owner


cdef void _heap_init(hak_heap_t* h, hak_tcache_t* tc, uintptr_t tid) noexcept nogil:
    """Point a heap's size table at tc's class states (at the empty decoy class if
    tc is NULL)."""
    cdef uint32_t i
    for i in range(HAK_NSIZES):
        h.direct[i] = &tc.k[hak_size_class(i * 16)] if tc != NULL else &g_decoy_k
    h.reg = g_reg
    h.tid = tid


cdef inline uint32_t _class_of(hak_tcache_t* tc, hak_tclass_t* k) noexcept nogil:
    return <uint32_t>(k - &tc.k[0])


cdef void _tc_apply(hak_tcache_t* tc) noexcept nogil:
    """Copy the global configuration into a cache (its magazine must be empty)."""
    cdef uint32_t c, size, b, cap
    cdef hak_tclass_t* k
    tc.mag_classes = g_mag_classes
    tc.mag_cap = g_mag_cap
    tc.epoch = g_epoch
    for c in range(HAK_NCLASSES):
        k = &tc.k[c]
        # magazine misses are the SLL pops of covered periods: fold the one ending now
        if k.mag_lim:
            tc.cold[c].mag_misses += k.sll_pops - tc.pops_mark[c]
        tc.pops_mark[c] = k.sll_pops
        k.mag_lim = g_mag_cap if c < g_mag_classes else 0
        size = hak_block_size(c)
        b = 8192 // size        # a refill carves about 8 KiB of fresh blocks
        if b < 4:
            b = 4
        if b > g_batch:
            b = g_batch
        tc.batch[c] = b
        cap = 131072 // size    # frees keep at most ~128 KiB per class on the list
        k.sll_cap = cap if cap < g_sll_cap else g_sll_cap



cdef hak_tcache_t* _tc_create() noexcept nogil:
    global g_caches, g_spare
    cdef void* mem = NULL
    cdef hak_tcache_t* tc
    cdef uintptr_t tid = hak_thread_id()
    cdef uint32_t c
    pthread_mutex_lock(&g_tc_lock)
    mem = g_spare
    if mem != NULL:
        g_spare = g_spare.gnext
    pthread_mutex_unlock(&g_tc_lock)
    if mem == NULL and posix_memalign(&mem, 64, sizeof(hak_tcache_t)) != 0:
        return NULL
    tc = <hak_tcache_t*>mem
    memset(tc, 0, sizeof(hak_tcache_t))     # heap.tid = HAK_TID_NONE until set below
    _heap_init(&tc.heap, tc, tid)
    _heap_init(&tc.decoy, NULL, HAK_TID_DECOY)
    _tc_apply(tc)
    pthread_mutex_lock(&g_tc_lock)
    tc.gnext = g_caches
    if g_caches != NULL:
        g_caches.gprev = tc
    g_caches = tc
    pthread_mutex_unlock(&g_tc_lock)
    hak_tls_set(tc)
    pthread_setspecific(g_key, tc)   # so the destructor runs at thread exit
    return tc


cdef hak_tcache_t* _tc_current() noexcept nogil:
    """This thread's cache, created on first use and brought up to the current
    configuration; NULL only when out of memory."""
    cdef hak_tcache_t* tc = <hak_tcache_t*>hak_tls_get()
    if tc == hak_empty_cache():
        return _tc_create()
    if tc.epoch != g_epoch:
        _mag_drain(tc)
        _tc_apply(tc)
    return tc


cdef void _mag_drain(hak_tcache_t* tc) noexcept nogil:
    """Move every magazine block onto its class's SLL."""
    cdef uint32_t c, i
    cdef void* p
    cdef hak_tclass_t* k
    for c in range(HAK_NCLASSES):
        k = &tc.k[c]
        for i in range(k.mag_top):
            p = k.mag[i]
            (<void**>p)[0] = k.sll
            k.sll = p
            k.sll_n += 1
        k.mag_top = 0


cdef void _flush(hak_tcache_t* tc, uint32_t c) noexcept nogil:
    """Return class c's whole SLL to the blocks' slabs (thread_flush, trim, exit)."""
    cdef hak_tclass_t* k = &tc.k[c]
    cdef void* rest = k.sll
    cdef void* nxt
    cdef hak_slab_t* s
    cdef hak_slab_t* checked = NULL
    k.sll = NULL
    k.sll_n = 0
    while rest != NULL:
        if HAK_DEBUG:
            hak_debug_check_link(g_reg, rest, c)
        nxt = (<void**>rest)[0]
        s = hak_slab_of(<uintptr_t>rest)
        if hak_slab_put(s, rest) == 0 and s != tc.cur[c]:
            _slab_unlink(tc, c, s)
            hak_slab_release(s)
        elif tc.slabs[c] != s:
            # Most recently freed-into first, as pymalloc orders its pools: the
            # next refills hand out the blocks that are likeliest still cached.
            _slab_unlink(tc, c, s)
            hak_slab_list_push(&tc.slabs[c], s)
        elif HAK_DEBUG and s != checked:
            hak_slab_check(s)
            checked = s
        rest = nxt
    tc.cold[c].flushes += 1


cdef void hak_slab_freed(hak_tclass_t* k, hak_slab_t* s) noexcept nogil:
    """The owner free's slow step (see hak_owner_free): s just became empty, or got
    a block back while on the full list."""
    cdef hak_tcache_t* tc = <hak_tcache_t*>hak_tls_get()
    cdef uint32_t c = _class_of(tc, k)
    if s.used == 0:
        if s != tc.cur[c]:
            _slab_unlink(tc, c, s)
            hak_slab_release(s)
        else:
            hak_slab_reset(s)
    elif s.state == HAK_SLAB_FULL:
        # pymalloc's usedpools order: a slab that gets room back goes first
        _slab_unlink(tc, c, s)
        hak_slab_list_push(&tc.slabs[c], s)


cdef inline void _slab_unlink(hak_tcache_t* tc, uint32_t c, hak_slab_t* s) noexcept nogil:
    """Take an owned slab off whichever of its owner's lists holds it."""
    if s.state == HAK_SLAB_FULL:
        hak_slab_list_remove(&tc.full[c], s)
        hak_slab_mark_active(s)
    else:
        hak_slab_list_remove(&tc.slabs[c], s)


cdef void _tc_release_slabs(hak_tcache_t* tc, bint abandon) noexcept nogil:
    """After a full flush: give back empty slabs; abandon the rest if exiting."""
    cdef uint32_t c
    cdef hak_slab_t* s
    cdef hak_slab_t* nxt
    for c in range(HAK_NCLASSES):
        # full slabs first back on the main list, so one walk sees them all
        while tc.full[c] != NULL:
            s = tc.full[c]
            _slab_unlink(tc, c, s)
            hak_slab_list_push(&tc.slabs[c], s)
        s = tc.slabs[c]
        while s != NULL:
            nxt = s.next
            hak_slab_drain_remote(s)
            if s.used == 0 or abandon:
                hak_slab_list_remove(&tc.slabs[c], s)
                if s.used == 0:
                    hak_slab_release(s)
                else:
                    hak_slab_abandon(s)
                if tc.cur[c] == s:
                    tc.cur[c] = NULL
            s = nxt


cdef void _tc_stats_into(hak_tcache_t* tc, hak_class_stats_t* out) noexcept nogil:
    """Add a cache's counters (hot and cold) to out[0..HAK_NCLASSES)."""
    cdef uint32_t c
    cdef hak_class_stats_t row
    cdef hak_tclass_t* k
    for c in range(HAK_NCLASSES):
        k = &tc.k[c]
        row = tc.cold[c]
        row.mag_hits = hak_atomic_load_u64(&k.mag_hits)
        row.sll_pops = hak_atomic_load_u64(&k.sll_pops)
        row.mag_pushes = hak_atomic_load_u64(&k.mag_pushes)
        row.sll_pushes = hak_atomic_load_u64(&k.sll_pushes)
        row.slab_frees = hak_atomic_load_u64(&k.slab_frees)
        if k.mag_lim and row.sll_pops > tc.pops_mark[c]:
            row.mag_misses += row.sll_pops - tc.pops_mark[c]
        hak_class_stats_add(&out[c], &row)


cdef void _tc_unregister(hak_tcache_t* tc) noexcept nogil:
    """Unlink a cache from the global list, folding its counters into g_retired."""
    global g_caches
    pthread_mutex_lock(&g_tc_lock)
    _tc_stats_into(tc, g_retired)
    if tc.gprev != NULL:
        tc.gprev.gnext = tc.gnext
    else:
        g_caches = tc.gnext
    if tc.gnext != NULL:
        tc.gnext.gprev = tc.gprev
    pthread_mutex_unlock(&g_tc_lock)


cdef void _tc_retire(hak_tcache_t* tc) noexcept nogil:
    """Keep an exited thread's cache for the next new thread; never free it. Code that
    caches a heap pointer (the PEP 445 hook) may still read heap.tid after the thread
    is gone: it must stay readable, and match no live thread until it is reused."""
    global g_spare
    tc.heap.tid = HAK_TID_NONE
    pthread_mutex_lock(&g_tc_lock)
    tc.gnext = g_spare
    g_spare = tc
    pthread_mutex_unlock(&g_tc_lock)


cdef void _tc_return_all(hak_tcache_t* tc, bint abandon) noexcept nogil:
    """Every cached block back to its slab, empty slabs back to the pool; with
    abandon (the thread is exiting), the other slabs are parked for adoption."""
    cdef uint32_t c
    _mag_drain(tc)
    for c in range(HAK_NCLASSES):
        tc.cur[c] = NULL
        _flush(tc, c)
    _tc_release_slabs(tc, abandon)


cdef void _tc_destructor(void* arg) noexcept nogil:
    """pthread key destructor: a thread is exiting; return everything it holds."""
    cdef hak_tcache_t* tc = <hak_tcache_t*>arg
    _tc_return_all(tc, True)
    _tc_unregister(tc)
    hak_tls_set(hak_empty_cache())
    _tc_retire(tc)


cdef void hak_thread_flush() noexcept nogil:
    """Return this thread's cached blocks and empty slabs to the global pool."""
    cdef hak_tcache_t* tc = <hak_tcache_t*>hak_tls_get()
    if tc == hak_empty_cache():
        return
    _tc_return_all(tc, False)


cdef size_t hak_trim() noexcept nogil:
    hak_thread_flush()
    return hak_slab_trim()


cdef void hak_configure(uint32_t mag_classes, uint32_t mag_cap, uint32_t batch,
                        uint32_t sll_cap) noexcept nogil:
    """Set cache parameters: now for this thread, at their next refill for others."""
    global g_mag_classes, g_mag_cap, g_batch, g_sll_cap, g_epoch
    cdef hak_tcache_t* tc = <hak_tcache_t*>hak_tls_get()
    g_mag_classes = mag_classes if mag_classes <= HAK_NCLASSES else HAK_NCLASSES
    g_mag_cap = mag_cap if mag_cap <= HAK_MAG_MAX_CAP else HAK_MAG_MAX_CAP
    g_batch = batch if batch >= 1 else 1
    g_sll_cap = sll_cap
    g_epoch += 1
    if tc != hak_empty_cache():
        _mag_drain(tc)
        _tc_apply(tc)


# ---- refill / slow paths -----------------------------------------------------
cdef int _refill(hak_tcache_t* tc, uint32_t c) noexcept nogil:
    """Fill the (empty) SLL of class c with a batch; 0 when out of memory."""
    cdef hak_slab_t* s = tc.slabs[c]
    cdef hak_slab_t* nxt
    cdef void* head = NULL
    cdef uint32_t n = 0
    cdef uint32_t want = tc.batch[c]
    # Front to back: the slab most recently freed into comes first. Slabs found
    # exhausted move to the full list, so later refills do not walk them again.
    while s != NULL:
        n = hak_slab_take(s, want, &head)
        if n != 0:
            break
        nxt = s.next
        hak_slab_list_remove(&tc.slabs[c], s)
        hak_slab_list_push(&tc.full[c], s)
        hak_slab_mark_full(s)
        s = nxt
    if n == 0:
        # Before mapping more: full slabs may have had blocks freed by other threads.
        s = tc.full[c]
        while s != NULL:
            nxt = s.next
            if hak_atomic_load_ptr(&s.remote_free) != NULL:
                _slab_unlink(tc, c, s)
                hak_slab_list_push(&tc.slabs[c], s)
                n = hak_slab_take(s, want, &head)
                if n != 0:
                    break
            s = nxt
    while n == 0:
        s = hak_slab_acquire(c, &tc.k[c], tc.heap.tid)
        if s == NULL:
            return 0
        hak_slab_list_push(&tc.slabs[c], s)
        n = hak_slab_take(s, want, &head)
    tc.cur[c] = s
    tc.k[c].sll = head
    tc.k[c].sll_n = n
    tc.cold[c].refills += 1
    return 1


cdef void* _malloc_slow(size_t n) noexcept nogil:
    cdef hak_tcache_t* tc
    cdef hak_tclass_t* k
    cdef uint32_t c
    cdef void* p
    if n > <size_t>HAK_TINY_MAX:
        return hak_large_alloc(n, False)
    tc = _tc_current()
    if tc == NULL:
        return NULL
    c = hak_size_class(n)
    k = &tc.k[c]
    if k.sll == NULL and not _refill(tc, c):
        return NULL
    p = k.sll
    if HAK_DEBUG:
        hak_debug_check_alloc(g_reg, p, c, True)
    return hak_sll_pop(k, p)


cdef void* hak_malloc(size_t size) noexcept nogil:
    cdef hak_tcache_t* tc = <hak_tcache_t*>hak_tls_get()
    cdef hak_tclass_t* k
    cdef uint32_t t
    cdef void* p
    if hak_likely(size <= <size_t>HAK_TINY_MAX):
        k = tc.heap.direct[(size + 15) >> 4]
        t = k.mag_top              # 0 for classes the magazine does not cover
        if hak_likely(t != 0):
            t -= 1
            k.mag_top = t
            p = k.mag[t]
            k.mag_hits += 1
            if HAK_DEBUG:
                hak_debug_check_alloc(g_reg, p, _class_of(tc, k), False)
            (<uint64_t*>p)[1] = 0      # clear the free tag
            return p
        p = k.sll
        if hak_likely(p != NULL):
            if HAK_DEBUG:
                hak_debug_check_alloc(g_reg, p, _class_of(tc, k), True)
            return hak_sll_pop(k, p)
    return g_malloc_slow(size)


# ---- the inline API's out-of-line half -----------------------------------------
cdef hak_heap_t* hak_heap() noexcept nogil:
    """The calling thread's heap (its cache; a checking decoy in debug builds)."""
    cdef hak_tcache_t* tc = _tc_current()
    if tc == NULL:
        return NULL
    return &tc.decoy if HAK_DEBUG else &tc.heap


cdef void _heap_check(hak_heap_t* h) noexcept nogil:
    """Debug builds: h must be the calling thread's heap."""
    cdef hak_tcache_t* tc = <hak_tcache_t*>hak_tls_get()
    if h != &tc.decoy and h != &tc.heap:
        hak_die("heap used from another thread (or after its thread exited)", h, 99)


cdef void* hak_heap_malloc_slow(hak_heap_t* h, size_t size) noexcept nogil:
    """hak_heap_malloc's fallback: everything but a magazine or free-list pop."""
    if HAK_DEBUG:
        _heap_check(h)
    return hak_malloc(size)


cdef void hak_heap_free_slow(hak_heap_t* h, void* p) noexcept nogil:
    """hak_heap_free's fallback: everything but a push into h's own magazine."""
    if HAK_DEBUG:
        _heap_check(h)
    hak_free(p)


cdef void _free_remote(hak_slab_t* s, void* p) noexcept nogil:
    """A block of a slab this thread does not own: push it to the slab's remote list."""
    cdef hak_tcache_t* tc = <hak_tcache_t*>hak_tls_get()
    cdef uint32_t c = s.cls
    hak_block_tag(p)
    hak_remote_push(&s.remote_free, p)
    if tc != hak_empty_cache():
        tc.cold[c].remote_frees += 1
    else:
        hak_atomic_add_u64(&g_orphan_free[c], 1)


cdef void _debug_check_free(hak_slab_t* s, void* p) noexcept nogil:
    """Debug builds: abort on any free that hak_free_checked would refuse."""
    cdef int rc = hak_check_live(p)
    if rc == HAK_EDOUBLE:
        hak_die("double free", p, s.cls)
    elif rc == HAK_EINTERIOR:
        hak_die("free of an interior pointer", p, s.cls)
    elif rc != HAK_OK:
        hak_die("free of a pointer hakmem does not own", p, s.cls)
    hak_debug_on_free(p, s.cls)


cdef void hak_free(void* p) noexcept nogil:
    cdef uintptr_t a = <uintptr_t>p
    cdef hak_slab_t* s
    cdef hak_tclass_t* k
    cdef uint32_t t, n
    if hak_likely(hak_is_tiny(g_reg, a)):
        s = hak_slab_of(a)
        if HAK_DEBUG:
            _debug_check_free(s, p)
        if hak_likely(s.owner_tid == hak_thread_id()):
            k = <hak_tclass_t*>s.owner
            if hak_unlikely(hak_owner_free(k, s, p, True)):
                g_slab_freed(k, s)
            return
        g_free_remote(s, p)
        return
    g_free_other(p)


cdef void _free_other(void* p) noexcept nogil:
    """Not a tiny block: NULL, a large block, or (a caller bug) a foreign pointer."""
    if p == NULL:
        return
    if hak_large_free(p) != 0 and HAK_DEBUG:
        hak_die("free of a pointer hakmem does not own", p, 99)


g_malloc_slow = _malloc_slow
g_slab_freed = hak_slab_freed
g_free_remote = _free_remote
g_free_other = _free_other


cdef int hak_check_live(void* p) noexcept nogil:
    """HAK_OK if p is a live block of ours, else the HAK_E* code a free would give."""
    cdef uintptr_t a = <uintptr_t>p
    cdef hak_slab_t* s
    if p == NULL:
        return HAK_EFOREIGN
    if hak_region_of(g_reg, a) == NULL:
        return HAK_OK if hak_large_usable(p) != 0 else HAK_EFOREIGN
    s = hak_slab_of(a)
    if hak_slab_index(s) == 0 or a < <uintptr_t>hak_slab_start(s):
        return HAK_EFOREIGN            # the region header or a slab header
    if s.state == HAK_SLAB_POOLED:
        return HAK_EDOUBLE             # every block of an empty slab is free
    if a >= <uintptr_t>s.bump:
        return HAK_EFOREIGN if a >= <uintptr_t>s.end else HAK_EDOUBLE
    if (a - <uintptr_t>hak_slab_start(s)) % hak_stride(s.cls) != 0:
        return HAK_EINTERIOR
    if hak_block_is_tagged(p):
        return HAK_EDOUBLE
    return HAK_OK


cdef int hak_free_checked(void* p) noexcept nogil:
    cdef int rc
    if p == NULL:
        return HAK_OK
    if hak_region_of(g_reg, <uintptr_t>p) == NULL:
        return HAK_OK if hak_large_free(p) == 0 else HAK_EFOREIGN
    rc = hak_check_live(p)
    if rc == HAK_OK:
        hak_free(p)
    return rc


cdef size_t hak_usable_size(void* p) noexcept nogil:
    cdef uintptr_t a = <uintptr_t>p
    if hak_region_of(g_reg, a) != NULL:
        return hak_block_size(hak_slab_of(a).cls)
    if p == NULL:
        return 0
    return hak_large_usable(p)


cdef void* hak_calloc(size_t n, size_t size) noexcept nogil:
    cdef size_t total
    cdef void* p
    if size != 0 and n > (<size_t>-1) // size:
        return NULL
    total = n * size
    if total > <size_t>HAK_TINY_MAX:
        return hak_large_alloc(total, True)
    p = hak_malloc(total)
    if p != NULL:
        memset(p, 0, total)
    return p


cdef void* hak_realloc(void* p, size_t size) noexcept nogil:
    cdef uintptr_t a = <uintptr_t>p
    cdef size_t old
    cdef void* q
    if p == NULL:
        return hak_malloc(size)
    if hak_region_of(g_reg, a) != NULL:
        if hak_realloc_stays(p, size):
            return p
        old = hak_block_size(hak_slab_of(a).cls)
    else:
        old = hak_large_usable(p)
        if size > <size_t>HAK_TINY_MAX:
            return hak_large_realloc(p, size)
    q = hak_malloc(size)
    if q == NULL:
        return NULL
    memcpy(q, p, size if size < old else old)
    hak_free(p)
    return q


cdef void hak_stats_collect(hak_class_stats_t* out) noexcept nogil:
    """Sum the counters of live caches, exited threads and cacheless frees."""
    cdef hak_tcache_t* tc
    cdef uint32_t c
    pthread_mutex_lock(&g_tc_lock)
    # Read the retired counters under the lock too: an exiting thread moves its
    # counters from its cache into g_retired under this lock, and a copy taken
    # before it would miss them in both places (a torn, shrinking snapshot).
    memcpy(out, g_retired, sizeof(g_retired))
    tc = g_caches
    while tc != NULL:
        _tc_stats_into(tc, out)
        tc = tc.gnext
    for c in range(HAK_NCLASSES):
        out[c].remote_frees += hak_atomic_load_u64(&g_orphan_free[c])
    pthread_mutex_unlock(&g_tc_lock)


# ---- fork ------------------------------------------------------------------
cdef void _fork_prepare() noexcept nogil:
    pthread_mutex_lock(&g_tc_lock)
    hak_slab_fork_prepare()
    hak_large_fork_prepare()

cdef void _fork_parent() noexcept nogil:
    hak_large_fork_parent()
    hak_slab_fork_parent()
    pthread_mutex_unlock(&g_tc_lock)

cdef void _fork_child() noexcept nogil:
    """Only the forking thread survives: retire every other cache.

    Their memory is kept (never freed): their slabs still point at them. Their ids
    become HAK_TID_NONE, so a new thread that gets a dead thread's id back never
    matches them; frees of their blocks take the remote path, and their cached
    blocks stay unavailable.
    """
    global g_caches
    cdef hak_tcache_t* me = <hak_tcache_t*>hak_tls_get()
    cdef hak_tcache_t* tc
    cdef hak_tcache_t* nxt
    cdef hak_slab_t* s
    cdef uint32_t c
    hak_large_fork_child()
    hak_slab_fork_child()
    pthread_mutex_init(&g_tc_lock, NULL)
    tc = g_caches
    while tc != NULL:
        nxt = tc.gnext
        if tc != me:
            _tc_stats_into(tc, g_retired)
            tc.heap.tid = HAK_TID_NONE     # its thread is gone: a cached heap must not match
            for c in range(HAK_NCLASSES):
                s = tc.slabs[c]
                while s != NULL:
                    hak_slab_disown(s)
                    s = s.next
                s = tc.full[c]
                while s != NULL:
                    hak_slab_disown(s)
                    s = s.next
                tc.k[c].mag_hits = 0
                tc.k[c].sll_pops = 0
                tc.k[c].mag_pushes = 0
                tc.k[c].sll_pushes = 0
                tc.k[c].slab_frees = 0
                tc.pops_mark[c] = 0
            memset(tc.cold, 0, sizeof(tc.cold))
        tc = nxt
    if me == hak_empty_cache():
        me = NULL
    g_caches = me
    if me != NULL:
        me.gprev = NULL
        me.gnext = NULL


cdef void _empty_cache_init() noexcept nogil:
    """The static cache of threads that have none yet: every list empty, no owner."""
    cdef hak_tcache_t* e = hak_empty_cache()
    cdef uint32_t c
    _heap_init(&e.heap, e, HAK_TID_NONE)


_empty_cache_init()
pthread_key_create(&g_key, _tc_destructor)
pthread_atfork(_fork_prepare, _fork_parent, _fork_child)

# ---- Python surface (tests, REPL) ------------------------------------------
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC


cdef double _now() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return t.tv_sec + t.tv_nsec * 1e-9


def configure_caches(uint32_t mag_classes, uint32_t mag_cap, uint32_t batch, uint32_t sll_cap):
    """Set the thread-cache parameters (hakmem.configure() checks and passes them)."""
    hak_configure(mag_classes, mag_cap, batch, sll_cap)


def thread_cache_state():
    """This thread's cache: per class (magazine fill, SLL length, owned slabs)."""
    cdef hak_tcache_t* tc = <hak_tcache_t*>hak_tls_get()
    cdef hak_slab_t* s
    out = []
    if tc == hak_empty_cache():
        return out
    for c in range(HAK_NCLASSES):
        n = 0
        s = tc.slabs[c]
        while s != NULL:
            n += 1
            s = s.next
        s = tc.full[c]
        while s != NULL:
            n += 1
            s = s.next
        out.append((tc.k[c].mag_top, tc.k[c].sll_n, n))
    return out


def ring_in_module(long nops, int ws, size_t size):
    """Bench hook: the seed's fixed-size ring run inside this module, where the C
    compiler may inline hak_malloc/hak_free; the bench compares it with the same loop
    in another module (the cimport path). Returns elapsed seconds."""
    cdef void* ring[4096]
    cdef long i
    cdef int k = 0
    cdef double t0, t1
    cdef void* p
    cdef bint oom = False
    if ws <= 0 or ws > 4096 or nops < 0:
        raise ValueError("ws must be in 1..4096 and nops >= 0")
    memset(ring, 0, sizeof(ring))
    with nogil:
        t0 = _now()
        for i in range(nops):
            if ring[k] != NULL:
                hak_free(ring[k])
            p = hak_malloc(size)
            if p == NULL:
                oom = True
                break
            (<char*>p)[0] = <char>i      # touch it, as the bench loops do
            ring[k] = p
            k += 1
            if k == ws:                  # no division in the timed loop
                k = 0
        t1 = _now()
        for k in range(ws):
            hak_free(ring[k])
    if oom:
        raise MemoryError(f"hak_malloc({size}) returned NULL")
    return t1 - t0
