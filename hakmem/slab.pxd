# hakmem.slab — the backend: 4 MiB regions from mmap, carved into 64 KiB slabs.
#
# Glossary
#   region  4 MiB, 4 MiB-aligned mapping. Its first 64 KiB hold the region header
#           (magic + the metadata of all 64 slabs); slabs 1..63 hold blocks.
#   slab    64 KiB of blocks of one class. Its metadata (hak_slab_t) sits in the
#           region header, so no bytes a user can write ever hold allocator state
#           except a free block's first two words (next pointer, free tag).
#   owner   the thread cache that may pop/push the slab's local list without a lock.
#           Pooled and abandoned slabs have owner == HAK_NO_OWNER (never NULL, so a
#           thread with no cache yet can never match it).
#
# Invariants (per slab, owner's view)
#   used == capacity - |local_free| - (end - bump) / stride
#   i.e. `used` counts blocks held by users, by thread caches and on remote_free.
#   A slab is on exactly one list: the global pool, abandoned[cls], or its owner's
#   per-class list; `next`/`prev` are that list's links.
#
# Registry: a flat byte map over address bits 47..22 (64 MiB of reserved,
# lazily-touched address space; one byte per 4 MiB region) answers "is this a tiny
# block of ours?" with one load and no lock.
from libc.stdint cimport uintptr_t, uint64_t, uint32_t, uint16_t, uint8_t

cdef extern from *:
    """
    #ifndef HAK_SLAB_H
    #define HAK_SLAB_H
    #define HAK_SLAB_SHIFT 16
    #define HAK_SLAB_SIZE ((size_t)1 << HAK_SLAB_SHIFT)
    #define HAK_REGION_SHIFT 22
    #define HAK_REGION_SIZE ((size_t)1 << HAK_REGION_SHIFT)
    #define HAK_SLABS_PER_REGION 64
    #define HAK_REGION_MAGIC 0x48414b4d454d5247ULL
    #define HAK_REG_ENTRIES ((uintptr_t)1 << (48 - HAK_REGION_SHIFT))
    #define HAK_NO_OWNER ((void*)1)
    #define HAK_FREE_TAG 0x9e3779b97f4a7c15ULL
    /* slab states */
    #define HAK_SLAB_POOLED 0
    #define HAK_SLAB_ACTIVE 1
    #define HAK_SLAB_ABANDONED 2
    #define HAK_SLAB_FULL 3      /* active, on its owner's full list */
    #endif
    """
    const int HAK_SLAB_SHIFT
    const size_t HAK_SLAB_SIZE
    const int HAK_REGION_SHIFT
    const size_t HAK_REGION_SIZE
    const int HAK_SLABS_PER_REGION
    const uint64_t HAK_REGION_MAGIC
    const uintptr_t HAK_REG_ENTRIES
    void* HAK_NO_OWNER
    const uint64_t HAK_FREE_TAG
    const int HAK_SLAB_POOLED
    const int HAK_SLAB_ACTIVE
    const int HAK_SLAB_ABANDONED
    const int HAK_SLAB_FULL


# 64 bytes exactly, so free() finds a slab's metadata with a shift, not a multiply.
# The first block is derived (hak_slab_start); capacity = HAK_SLAB_SIZE // stride.
cdef struct hak_slab_s:
    void* owner             # owning thread cache, or HAK_NO_OWNER
    void* local_free        # owner-only free list
    void* remote_free       # atomic Treiber stack of cross-thread frees
    char* bump              # first never-carved block
    char* end               # one past the last block
    hak_slab_s* next
    hak_slab_s* prev
    uint32_t used           # see the invariant above
    uint16_t cls
    uint8_t state           # HAK_SLAB_POOLED / ACTIVE / FULL / ABANDONED
    uint8_t committed       # 0 after trim() gave the pages back to the OS
ctypedef hak_slab_s hak_slab_t

cdef struct hak_region_s:
    uint64_t magic
    hak_region_s* next      # all regions, for trim and stats
    hak_region_s* prev
    uint32_t npooled        # slabs of this region sitting in the pool
    char pad[36]            # slabs[] starts on a cache line
    hak_slab_t slabs[64]    # slabs[0] is the header itself and never used
ctypedef hak_region_s hak_region_t

cdef struct hak_slab_stats_t:
    uint64_t bytes_mapped
    uint64_t regions
    uint64_t slabs_active
    uint64_t slabs_pooled
    uint64_t slabs_abandoned
    uint64_t slabs_decommitted
    uint64_t bytes_trimmed      # total given back to the OS by trim()
    uint64_t mmap_failures


cdef inline hak_region_t* hak_region_of(const uint8_t* reg, uintptr_t a) noexcept nogil:
    """Region holding address a, or NULL if a is not in a tiny region of ours.

    reg is hak_registry(); callers copy it once (its address never changes).
    """
    cdef uintptr_t i = a >> HAK_REGION_SHIFT
    if i >= HAK_REG_ENTRIES or reg[i] == 0:
        return NULL
    return <hak_region_t*>(a & ~(HAK_REGION_SIZE - 1))


cdef inline bint hak_is_tiny(const uint8_t* reg, uintptr_t a) noexcept nogil:
    """True if a lies in one of our regions (the fast-path form of hak_region_of)."""
    cdef uintptr_t i = a >> HAK_REGION_SHIFT
    return i < HAK_REG_ENTRIES and reg[i] != 0


cdef inline hak_slab_t* hak_slab_of(uintptr_t a) noexcept nogil:
    """Slab metadata of an address already known to be in one of our regions."""
    return &(<hak_region_t*>(a & ~(HAK_REGION_SIZE - 1))).slabs[
        (a >> HAK_SLAB_SHIFT) & (HAK_SLABS_PER_REGION - 1)]


cdef inline hak_slab_t* hak_slab_in(hak_region_t* r, uintptr_t a) noexcept nogil:
    return &r.slabs[(a >> HAK_SLAB_SHIFT) & (HAK_SLABS_PER_REGION - 1)]


cdef inline hak_region_t* hak_region_of_slab(hak_slab_t* s) noexcept nogil:
    # slab metadata lives in its region's header
    return <hak_region_t*>(<uintptr_t>s & ~(HAK_REGION_SIZE - 1))


cdef inline char* hak_slab_start(hak_slab_t* s) noexcept nogil:
    """Address of the slab's first block."""
    cdef hak_region_t* r = hak_region_of_slab(s)
    return <char*>r + (<size_t>(s - &r.slabs[0]) << HAK_SLAB_SHIFT)


# Intrusive doubly linked lists of slabs (pool, abandoned, owner lists).
cdef inline void hak_slab_list_push(hak_slab_t** head, hak_slab_t* s) noexcept nogil:
    s.prev = NULL
    s.next = head[0]
    if s.next != NULL:
        s.next.prev = s
    head[0] = s

cdef inline void hak_slab_list_remove(hak_slab_t** head, hak_slab_t* s) noexcept nogil:
    if s.prev != NULL:
        s.prev.next = s.next
    else:
        head[0] = s.next
    if s.next != NULL:
        s.next.prev = s.prev
    s.next = NULL
    s.prev = NULL


cdef const uint8_t* hak_registry() noexcept nogil
cdef hak_slab_t* hak_slab_acquire(uint32_t cls, void* owner) noexcept nogil
cdef void hak_slab_release(hak_slab_t* s) noexcept nogil
cdef void hak_slab_abandon(hak_slab_t* s) noexcept nogil
cdef uint32_t hak_slab_drain_remote(hak_slab_t* s) noexcept nogil
cdef uint32_t hak_slab_take(hak_slab_t* s, uint32_t want, void** head) noexcept nogil
cdef size_t hak_slab_trim() noexcept nogil
cdef void hak_slab_get_stats(hak_slab_stats_t* out) noexcept nogil
cdef void hak_slab_fork_prepare() noexcept nogil
cdef void hak_slab_fork_parent() noexcept nogil
cdef void hak_slab_fork_child() noexcept nogil
cdef void hak_slab_set_map_limit(uint64_t limit) noexcept nogil
