# hakmem.front — the public nogil C API (cimport contract) and the per-thread caches.
#
#   from hakmem.front cimport hak_malloc, hak_free      (or: cimport hakmem)
#
# Every function is `noexcept nogil` and thread-safe. Memory from hak_malloc must be
# released with hak_free / hak_free_checked / hak_realloc of this module, from any
# thread. Tiny requests (<= 1024 bytes) are served by hakmem; larger ones by the
# system malloc, tracked so that hak_free tells them apart.
#
# Per-thread cache (hak_tcache_t), fast path first:
#   mag[c]     TinyHeapV2 L0 magazine: LIFO array of k[c].mag_lim slots (mag_cap for
#              c < mag_classes, 0 otherwise); alloc pops it first, free pushes it
#              while it has room.
#   k[c].sll   TLS singly-linked free list; refilled in batches from owned slabs,
#              half returned to the slabs when it grows past k[c].sll_cap.
# A thread with no cache yet points at a static empty one (never an owner), so the
# fast paths need no NULL test.
# Invariant: every block in mag[] / sll[] belongs to a slab this cache owns.
from libc.stdint cimport uint64_t, uint32_t
from hakmem.slab cimport hak_slab_t

cdef enum:
    HAK_MAG_MAX_CLASSES = 8     # compile-time room; HAKMEM_TINY_MAG_CLASSES picks how many
    HAK_MAG_MAX_CAP = 64        # compile-time room; HAKMEM_TINY_MAG_CAP picks how many
    HAK_MAX_CLASSES = 20        # == HAK_NCLASSES

# Error codes of hak_free_checked (0 = freed).
cdef enum:
    HAK_OK = 0
    HAK_EFOREIGN = -1           # not a pointer hakmem handed out (or already unmapped)
    HAK_EDOUBLE = -2            # the block is already free
    HAK_EINTERIOR = -3          # points inside a hakmem block, not at its start

cdef struct hak_class_stats_t:
    uint64_t mag_hit            # allocs served by the magazine
    uint64_t mag_miss           # allocs of a covered class that found it empty
    uint64_t sll_pop            # allocs served by the TLS free list
    uint64_t free_mag           # frees pushed into the magazine (supply hook)
    uint64_t free_sll           # frees pushed onto the TLS free list
    uint64_t free_remote        # frees of another thread's block
    uint64_t refills            # batch refills from slabs
    uint64_t flushes            # half-list returns to slabs

# Per-class hot state: one cache line holds everything a fast path touches for
# its class except the magazine slot itself.
cdef struct hak_tclass_t:
    void* sll                   # TLS SLL head
    uint32_t sll_n              # blocks on the SLL
    uint32_t sll_cap            # past this, half the SLL goes back to the slabs
    uint32_t mag_top            # blocks in this class's magazine
    uint32_t mag_lim            # magazine slots for this class (0 = not covered)
    void** mag                  # this class's magazine slots (inside hak_tcache_t.mag)
    uint64_t mag_hit            # counters: see hak_class_stats_t
    uint64_t sll_pop
    uint64_t free_mag
    uint64_t free_sll

# Counters off the fast path.
cdef struct hak_tcold_t:
    uint64_t batch              # blocks per refill
    uint64_t mag_miss
    uint64_t free_remote
    uint64_t refills
    uint64_t flushes

cdef struct hak_tcache_t:
    hak_tclass_t k[HAK_MAX_CLASSES]
    void* mag[HAK_MAG_MAX_CLASSES * HAK_MAG_MAX_CAP]
    hak_tcold_t cold[HAK_MAX_CLASSES]
    hak_slab_t* slabs[HAK_MAX_CLASSES]   # owned slabs that may have free blocks,
                                         # the one most recently freed into first
    hak_slab_t* full[HAK_MAX_CLASSES]    # owned slabs a refill found exhausted
    hak_slab_t* cur[HAK_MAX_CLASSES]     # the slab of the last refill (kept even if empty)
    uint32_t mag_classes        # classes the magazine covers (0 when it is off)
    uint32_t mag_cap
    uint32_t epoch              # config generation this cache was set up for
    hak_tcache_t* gnext         # all live caches (for stats, fork)
    hak_tcache_t* gprev

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

# ---- for hakmem's own layers (stats, pool, bench) --------------------------
cdef void hak_stats_collect(hak_class_stats_t* out) noexcept nogil   # HAK_MAX_CLASSES rows
cdef void hak_configure(uint32_t mag_classes, uint32_t mag_cap, uint32_t batch,
                        uint32_t sll_cap) noexcept nogil
