# hakmem.front — the public nogil C API (cimport contract) and the per-thread caches.
#
#   from hakmem.front cimport hak_malloc, hak_free      (or: cimport hakmem)
#
# Every function is `noexcept nogil` and thread-safe. Memory from hak_malloc must be
# released with hak_free / hak_free_checked / hak_realloc of this module, from any
# thread. Tiny requests (<= 1024 bytes) are served by hakmem; larger ones by the
# system malloc, tracked so that hak_free tells them apart.
#
# Glossary (the structs are C, defined below, so their layout is checked where they
# are written: HAK_STATIC_ASSERT next to each)
#   hak_tcache_t   one thread's cache. A thread without one points at a static empty
#                  cache (every list empty, its id HAK_TID_NONE), so the fast paths
#                  need no NULL test.
#   hak_tclass_t   one class's state in a cache, fast path first:
#     mag[]        the TinyHeapV2 L0 magazine: a LIFO array of mag_lim slots (0 for a
#                  class it does not cover); alloc pops it first, free pushes it while
#                  it has room (the supply hook).
#     sll          the TLS singly-linked list behind it: what the last refill took
#                  from a slab (its whole free list, plus freshly carved blocks), and
#                  frees past a full magazine while it is shorter than sll_cap. Past
#                  that a free goes straight back onto its slab's list: nothing ever
#                  walks cold blocks to return them later.
#     tid          the owning thread's id (its thread pointer), copied into each slab the
#                  cache acquires (slab.owner_tid); a slab's `owner` points at its owner's
#                  hak_tclass_t. free() tells "mine" from "another thread's" by comparing
#                  the slab's owner_tid with its own id: one load, one compare.
#   direct[]       request size -> class state, indexed by (size + 15) >> 4: the size
#                  class lookup is one load.
# Invariant: every block in mag[] / sll belongs to a slab this cache owns, and carries
# the free tag (HAK_FREE_TAG_OF) in its word 1.
from libc.stdint cimport uint64_t, uint32_t, uintptr_t, uint8_t
from hakmem.classes cimport (HAK_NCLASSES, HAK_NSIZES, HAK_TINY_MAX, hak_likely, hak_unlikely,
                             hak_prefetch, hak_block_size)
from hakmem.slab cimport (hak_slab_t, hak_is_tiny, hak_slab_of, hak_slab_put, HAK_FREE_TAG_OF,
                          HAK_SLAB_FULL)

cdef extern from *:
    """
    #ifndef HAK_FRONT_H
    #define HAK_FRONT_H
    #define HAK_MAG_MAX_CAP 64       /* compile-time room; HAKMEM_TINY_MAG_CAP picks how many */

    /* Per-class counters: this one list makes the stats struct, the merge, the names
       hakmem.stats() uses as dict keys and the columns of the printed table. */
    #define HAK_CLASS_STATS(X) \\
        X(mag_hits,     "allocs served by the magazine") \\
        X(mag_misses,   "allocs of a covered class that found the magazine empty") \\
        X(sll_pops,     "allocs served by the TLS free list") \\
        X(mag_pushes,   "frees pushed into the magazine (the supply hook)") \\
        X(sll_pushes,   "frees pushed onto the TLS free list (magazine full)") \\
        X(slab_frees,   "frees past a full magazine and a full TLS list, put straight back on their slab") \\
        X(remote_frees, "frees of another thread's block") \\
        X(refills,      "batch refills from slabs") \\
        X(flushes,      "returns of a thread's cached blocks to slabs (thread_flush, trim, exit)")
    #define HAK_X_FIELD(name, doc) uint64_t name;
    #define HAK_X_COUNT(name, doc) + 1
    #define HAK_X_NAME(name, doc) #name,
    #define HAK_X_DOC(name, doc) doc,
    #define HAK_X_ADD(name, doc) out->name += in->name;
    typedef struct { HAK_CLASS_STATS(HAK_X_FIELD) } hak_class_stats_t;
    enum { HAK_NSTATS = 0 HAK_CLASS_STATS(HAK_X_COUNT) };
    HAK_STATIC_ASSERT(sizeof(hak_class_stats_t) == HAK_NSTATS * sizeof(uint64_t),
                      "stats rows are read as arrays of uint64_t");
    static const char* const hak_class_stat_names[HAK_NSTATS] = { HAK_CLASS_STATS(HAK_X_NAME) };
    static const char* const hak_class_stat_docs[HAK_NSTATS] = { HAK_CLASS_STATS(HAK_X_DOC) };
    static inline void hak_class_stats_add(hak_class_stats_t* out, const hak_class_stats_t* in) {
        HAK_CLASS_STATS(HAK_X_ADD)
    }

    typedef struct hak_tclass_s {
        /* line 0: everything a fast path touches except the magazine slot */
        uint32_t mag_top;       /* blocks in mag[] */
        uint32_t mag_lim;       /* magazine slots for this class (0 = not covered) */
        void* sll;              /* TLS free list head */
        uint32_t sll_n;         /* blocks on the list */
        uint32_t sll_cap;       /* frees push onto the list while it is shorter */
        uint64_t mag_hits;      /* the hot counters, one per op: see HAK_CLASS_STATS */
        uint64_t sll_pops;
        uint64_t mag_pushes;
        uint64_t sll_pushes;
        uint64_t slab_frees;
        void* mag[HAK_MAG_MAX_CAP];
    } hak_tclass_t;
        HAK_STATIC_ASSERT(offsetof(hak_tclass_t, mag) == 64, "hot fields fill exactly one cache line");
    HAK_STATIC_ASSERT(sizeof(hak_tclass_t) % 64 == 0, "class states stay cache-line aligned");

    /* What the inline API (hak_heap_malloc / hak_heap_free) reads: a prefix of the
       thread cache, or in debug builds a decoy whose lists are always empty and whose
       id matches no slab, so every inline call falls through to the checked path. */
    typedef struct hak_heap_s {
        hak_tclass_t* direct[HAK_NSIZES];   /* (size + 15) >> 4 -> its class state */
        const uint8_t* reg;                 /* the registry (hakmem.slab) */
        uintptr_t tid;                      /* owner's thread id; HAK_TID_DECOY in a decoy */
    } hak_heap_t;
    #define HAK_TID_DECOY ((uintptr_t)1)    /* thread pointers are aligned: never 1 */

    typedef struct hak_tcache_s {
        hak_heap_t heap;                    /* direct[] first: the alloc path's one load */
        hak_heap_t decoy;                   /* what hak_heap() returns in debug builds */
        hak_tclass_t k[HAK_NCLASSES] __attribute__((aligned(64)));
        hak_class_stats_t cold[HAK_NCLASSES];   /* counters kept off the fast path */
        uint64_t pops_mark[HAK_NCLASSES];   /* sll_pops when coverage last changed */
        hak_slab_t* slabs[HAK_NCLASSES];    /* owned slabs that may have free blocks,
                                               the one most recently freed into first */
        hak_slab_t* full[HAK_NCLASSES];     /* owned slabs a refill found exhausted */
        hak_slab_t* cur[HAK_NCLASSES];      /* the slab of the last refill */
        uint32_t batch[HAK_NCLASSES];       /* blocks per refill */
        uint32_t mag_classes;               /* classes the magazine covers (0 = off) */
        uint32_t mag_cap;
        uint32_t epoch;                     /* config generation this cache was set up for */
        struct hak_tcache_s* gnext;         /* all live caches (stats, fork) */
        struct hak_tcache_s* gprev;
    } hak_tcache_t;
    HAK_STATIC_ASSERT(offsetof(hak_tcache_t, k) % 64 == 0, "class states start on a cache line");
    HAK_STATIC_ASSERT(offsetof(hak_tcache_t, heap) == 0, "a cache is its own heap");

    /* The calling thread's id: its thread pointer (one %fs load on x86-64). Unique
       among live threads; a dead thread's id may come back, which is why a cache's
       slabs are abandoned (owner reset) when its thread exits. */
    #if defined(__x86_64__)
    static inline uintptr_t hak_thread_id(void) {
        uintptr_t t;
        __asm__("movq %%fs:0, %0" : "=r"(t));
        return t;
    }
    #elif defined(__GNUC__) && (defined(__aarch64__) || defined(__i386__) || defined(__powerpc64__))
    static inline uintptr_t hak_thread_id(void) { return (uintptr_t)__builtin_thread_pointer(); }
    #else
    static __thread char hak_tid_anchor;
    static inline uintptr_t hak_thread_id(void) { return (uintptr_t)&hak_tid_anchor; }
    #endif
    #endif
    """
    enum: HAK_MAG_MAX_CAP
    enum: HAK_NSTATS

    ctypedef struct hak_class_stats_t:
        uint64_t mag_hits
        uint64_t mag_misses
        uint64_t sll_pops
        uint64_t mag_pushes
        uint64_t sll_pushes
        uint64_t slab_frees
        uint64_t remote_frees
        uint64_t refills
        uint64_t flushes
    const char* const* hak_class_stat_names
    const char* const* hak_class_stat_docs
    void hak_class_stats_add(hak_class_stats_t* out, const hak_class_stats_t* inp) nogil

    ctypedef struct hak_tclass_t:
        uint32_t mag_top
        uint32_t mag_lim
        void* sll
        uint32_t sll_n
        uint32_t sll_cap
        uint64_t mag_hits
        uint64_t sll_pops
        uint64_t mag_pushes
        uint64_t sll_pushes
        uint64_t slab_frees
        void* mag[HAK_MAG_MAX_CAP]

    ctypedef struct hak_heap_t:
        hak_tclass_t* direct[HAK_NSIZES]
        const uint8_t* reg
        uintptr_t tid
    const uintptr_t HAK_TID_DECOY

    ctypedef struct hak_tcache_t:
        hak_heap_t heap
        hak_heap_t decoy
        hak_tclass_t k[HAK_NCLASSES]
        hak_class_stats_t cold[HAK_NCLASSES]
        uint64_t pops_mark[HAK_NCLASSES]
        hak_slab_t* slabs[HAK_NCLASSES]
        hak_slab_t* full[HAK_NCLASSES]
        hak_slab_t* cur[HAK_NCLASSES]
        uint32_t batch[HAK_NCLASSES]
        uint32_t mag_classes
        uint32_t mag_cap
        uint32_t epoch
        hak_tcache_t* gnext
        hak_tcache_t* gprev

    uintptr_t hak_thread_id() nogil

from libc.string cimport memset

# Error codes of hak_free_checked (0 = freed).
cdef enum:
    HAK_OK = 0
    HAK_EFOREIGN = -1           # not a pointer hakmem handed out (or already unmapped)
    HAK_EDOUBLE = -2            # the block is already free
    HAK_EINTERIOR = -3          # points inside a hakmem block, not at its start

# ---- the cimport API -------------------------------------------------------
cdef void* hak_malloc(size_t size) noexcept nogil            # NULL on out-of-memory
cdef void* hak_calloc(size_t n, size_t size) noexcept nogil  # zeroed; NULL on overflow/OOM
cdef void* hak_realloc(void* p, size_t size) noexcept nogil  # like realloc(3)
cdef void hak_free(void* p) noexcept nogil                   # NULL is a no-op
cdef size_t hak_usable_size(void* p) noexcept nogil          # 0 for NULL / unknown
cdef int hak_free_checked(void* p) noexcept nogil            # HAK_OK or a HAK_E* code
cdef int hak_check_live(void* p) noexcept nogil              # HAK_OK if p is a live block
cdef void hak_thread_flush() noexcept nogil                  # return this thread's cached blocks
cdef size_t hak_trim() noexcept nogil                        # flush + give pages to the OS

# ---- inline allocation for cimporting code ---------------------------------
# A heap is the calling thread's cache, fetched once (hak_heap) and then used by the
# inline functions below, which compile into the caller: the common case (a magazine
# or free-list pop, a magazine push) costs no call at all; anything else calls the
# out-of-line functions. Contract (docs/cimport.md): a heap is used only on the
# thread that obtained it, until that thread exits; any block may be freed through
# any heap, hak_free or another thread. Debug builds of hakmem hand out a decoy that
# sends every call through hak_heap_malloc_slow / hak_heap_free_slow, which abort
# when the heap belongs to another thread.
cdef hak_heap_t* hak_heap() noexcept nogil                   # NULL only when out of memory
cdef void hak_slab_freed(hak_tclass_t* k, hak_slab_t* s) noexcept nogil  # see hak_owner_free
cdef void* hak_heap_malloc_slow(hak_heap_t* h, size_t size) noexcept nogil
cdef void hak_heap_free_slow(hak_heap_t* h, void* p) noexcept nogil


cdef inline bint hak_owner_free(hak_tclass_t* k, hak_slab_t* s, void* p,
                                bint use_sll) noexcept nogil:
    """The owning thread frees its block p of slab s (k = s.owner): a magazine push if
    there is room, else (with use_sll) a push onto the TLS list while it is shorter
    than its cap, else p goes straight back onto s's list (no list is ever walked to
    return blocks later). True when s needs the slow step next (hak_slab_freed): it
    just became empty, or it was on the full list.

    use_sll is a constant at each call site. C callers (hak_free, the inline heap API)
    pass True: a batch of frees followed by a batch of allocations then never touches
    a slab (glibc-simple n = 400: 0.81x mimalloc without, 0.94x with). The PEP 445 hook
    passes False: Python objects freed straight to their slabs come back slab by slab,
    as pymalloc hands out a pool's blocks, and programs run faster that way
    (object_tree 0.82x pymalloc with the list, 1.00x without).
    """
    cdef uint32_t t = k.mag_top
    cdef uint32_t n
    (<uint64_t*>p)[1] = HAK_FREE_TAG_OF(p)
    if hak_likely(t < k.mag_lim):              # TinyHeapV2 supply hook
        k.mag[t] = p
        k.mag_top = t + 1
        k.mag_pushes += 1
        return False
    n = k.sll_n
    if use_sll and hak_likely(n < k.sll_cap):
        (<void**>p)[0] = k.sll
        k.sll = p
        k.sll_n = n + 1
        k.sll_pushes += 1
        return False
    k.slab_frees += 1
    return hak_slab_put(s, p) == 0 or s.state == HAK_SLAB_FULL


cdef inline bint hak_realloc_stays(void* p, size_t size) noexcept nogil:
    """realloc(p, size) of a tiny block p keeps p: it fits and would not waste more
    than a quarter of the block (pymalloc's rule: CPython shrinks strings and lists
    it over-allocated, and a shrunk block kept whole is memory held for nothing)."""
    cdef size_t have = hak_block_size(hak_slab_of(<uintptr_t>p).cls)
    return size <= have and (size * 4 > have * 3 or have == 16)


cdef inline void* hak_sll_pop(hak_tclass_t* k, void* p) noexcept nogil:
    """Unlink p, the head of k's SLL, and hand it out. The SLL is what a refill took
    from a slab, cold as a rule: the next head is prefetched now, so the next pop
    finds its link in cache instead of waiting on a dependent miss."""
    cdef void* nxt = (<void**>p)[0]
    k.sll = nxt
    k.sll_n -= 1
    k.sll_pops += 1
    hak_prefetch(nxt)
    (<uint64_t*>p)[1] = 0          # clear the free tag
    return p


cdef inline void* hak_heap_pop(hak_heap_t* h, size_t size) noexcept nogil:
    """The allocation fast path for size <= HAK_TINY_MAX: a magazine pop, else a
    free-list pop; NULL when both are empty (the caller takes its slow path)."""
    cdef hak_tclass_t* k = h.direct[(size + 15) >> 4]
    cdef uint32_t t = k.mag_top
    cdef void* p
    if hak_likely(t != 0):
        t -= 1
        k.mag_top = t
        p = k.mag[t]
        k.mag_hits += 1
        (<uint64_t*>p)[1] = 0      # clear the free tag (p is non-NULL from here on)
        return p
    p = k.sll
    if p != NULL:
        return hak_sll_pop(k, p)
    return NULL


cdef inline void* hak_heap_malloc(hak_heap_t* h, size_t size) noexcept nogil:
    """hak_malloc(size) with the fast path compiled into the caller."""
    cdef void* p
    if hak_likely(size <= <size_t>HAK_TINY_MAX):
        p = hak_heap_pop(h, size)
        if hak_likely(p != NULL):
            return p
    return hak_heap_malloc_slow(h, size)


cdef inline void* hak_heap_calloc(hak_heap_t* h, size_t n, size_t size) noexcept nogil:
    """hak_calloc(n, size) through the heap: zeroed; NULL on overflow or out of memory."""
    cdef void* p
    cdef size_t total
    if size != 0 and n > (<size_t>-1) // size:
        return NULL
    total = n * size
    p = hak_heap_malloc(h, total)
    if p != NULL:
        memset(p, 0, total)
    return p


cdef inline bint hak_free_if_owner(void* p, uintptr_t tid, bint use_sll) noexcept nogil:
    """Free p, a block known to lie in a hakmem region, if the thread whose id is tid
    (the caller) owns its slab; False, with nothing done, if it does not. The owner
    test needs no heap: a slab names its owner's class state (use_sll: see
    hak_owner_free)."""
    cdef hak_slab_t* s = hak_slab_of(<uintptr_t>p)
    cdef hak_tclass_t* k
    if hak_likely(s.owner_tid == tid):
        k = <hak_tclass_t*>s.owner
        if hak_unlikely(hak_owner_free(k, s, p, use_sll)):
            hak_slab_freed(k, s)
        return True
    return False


cdef inline void hak_heap_free(hak_heap_t* h, void* p) noexcept nogil:
    """hak_free(p) with the fast path (a magazine push, or a push onto the block's own
    slab) compiled into the caller."""
    if hak_likely(hak_is_tiny(h.reg, <uintptr_t>p) and hak_free_if_owner(p, h.tid, True)):
        return                                  # h's own block
    hak_heap_free_slow(h, p)


# ---- for hakmem's own layers (stats, pool, bench) --------------------------
cdef void hak_stats_collect(hak_class_stats_t* out) noexcept nogil   # HAK_NCLASSES rows
cdef void hak_configure(uint32_t mag_classes, uint32_t mag_cap, uint32_t batch,
                        uint32_t sll_cap) noexcept nogil
