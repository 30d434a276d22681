# hakmem.slab — the backend: 4 MiB regions from mmap, carved into 64 KiB slabs.
#
# Glossary
#   region  4 MiB, 4 MiB-aligned mapping. Its first 64 KiB (slab 0) hold only the
#           region header; slabs 1..63 hold blocks. A slab's pages become resident
#           only when a class first takes it (the region's `cold` mask), so mapping a
#           region costs one page, and a purged slab gives back all its pages.
#   slab    64 KiB, 64 KiB-aligned, of blocks of one class. Its metadata (hak_slab_t,
#           HAK_SLAB_HDR bytes) sits at the slab's start, so free() finds it with one
#           mask (rpmalloc's span header); the blocks follow it.
#   owner   the thread cache's per-class state (hak_tclass_t in hakmem.front) that may
#           pop/push the slab's local list without a lock; owner_tid is its thread's id,
#           which free() compares with its own. Pooled and abandoned slabs have
#           owner_tid == HAK_TID_NONE, which no thread matches.
#
# Invariants (per slab, owner's view; checked whole by hak_slab_check in debug builds)
#   used + nfree + (end - bump) / stride == capacity
#   i.e. `used` counts blocks held by users, by thread caches and on remote_free;
#   nfree == |local_free|. A slab is cold (its bit in region.cold) or on exactly one
#   list: the global pool, abandoned[cls], or one of its owner's per-class lists;
#   `next`/`prev` link it.
#   Only this layer writes a slab's fields: the owner calls the inline functions
#   below (hak_slab_put, hak_slab_mark_full, ...) and hak_slab_take/drain_remote.
#
# Registry: a flat byte map over address bits 47..22 (64 MiB of reserved,
# lazily-touched address space; one byte per 4 MiB region) answers "is this a tiny
# block of ours?" with one load and no lock.
from libc.stdint cimport uintptr_t, uint64_t, uint32_t, uint16_t, uint8_t
from hakmem.classes cimport hak_stride

cdef extern from *:
    """
    #ifndef HAK_SLAB_H
    #define HAK_SLAB_H
    #ifndef HAK_STATIC_ASSERT
    #ifdef __cplusplus
    #define HAK_STATIC_ASSERT static_assert
    #else
    #define HAK_STATIC_ASSERT _Static_assert
    #endif
    #endif
    #include <stddef.h>
    #include <stdint.h>
    #define HAK_SLAB_SHIFT 16
    #define HAK_SLAB_SIZE ((size_t)1 << HAK_SLAB_SHIFT)
    #define HAK_SLAB_HDR 128          /* header bytes before the first block */
    #define HAK_REGION_SHIFT 22
    #define HAK_REGION_SIZE ((size_t)1 << HAK_REGION_SHIFT)
    #define HAK_SLABS_PER_REGION 64
    #define HAK_REGION_MAGIC 0x48414b4d454d5247ULL
    #define HAK_REG_ENTRIES ((uintptr_t)1 << (48 - HAK_REGION_SHIFT))
    #define HAK_TID_NONE ((uintptr_t)0)   /* never a thread's id */
    /* A free block's word 1: its address plus an odd constant. One `lea` and one
       store; no live block plausibly holds it (odd, not a pointer). */
    #define HAK_FREE_TAG_OF(p) ((uint64_t)(uintptr_t)(p) + 0x5bd1e995ULL)
    /* slab states */
    #define HAK_SLAB_POOLED 0
    #define HAK_SLAB_ACTIVE 1
    #define HAK_SLAB_ABANDONED 2
    #define HAK_SLAB_FULL 3      /* active, on its owner's full list */

    typedef struct hak_slab_s {
        /* line 0: what free() reads (owner_tid, owner) and the owner's slow paths write */
        uintptr_t owner_tid;        /* the owner's thread id; HAK_TID_NONE if unowned.
                                       Read-mostly: a remote free compares it here, never
                                       touching the owner's hot class state */
        void* owner;                /* owner's class state (hak_tclass_t), or a static word */
        void* local_free;           /* owner-only free list */
        char* bump;                 /* first never-carved block */
        char* end;                  /* one past the last block */
        uint32_t used;              /* see the invariant above */
        uint32_t nfree;             /* blocks on local_free */
        uint32_t capacity;
        uint16_t cls;
        uint8_t state;              /* HAK_SLAB_POOLED / ACTIVE / FULL / ABANDONED */
        /* line 1: written by other threads (remote frees), and the list links */
        void* remote_free __attribute__((aligned(64)));  /* atomic Treiber stack */
        struct hak_slab_s* next;
        struct hak_slab_s* prev;
    } hak_slab_t;
    HAK_STATIC_ASSERT(sizeof(hak_slab_t) <= HAK_SLAB_HDR, "slab header must fit before the first block");
    HAK_STATIC_ASSERT(offsetof(hak_slab_t, remote_free) == 64, "remote frees get their own cache line");
    HAK_STATIC_ASSERT(HAK_SLAB_HDR % 16 == 0, "blocks must stay 16-byte aligned");

    /* A region is on two lists: all regions (trim, unmap) and the regions with cold
       slabs (acquire). link[HAK_RL_x] holds its next/prev on list x. */
    enum { HAK_RL_ALL = 0, HAK_RL_COLD = 1 };
    typedef struct hak_region_s {
        uint64_t magic;
        struct hak_region_s* link[2][2];   /* [list][0] = next, [list][1] = prev */
        uint32_t npooled;           /* empty slabs: on the pool list or cold */
        /* Bit i: slab i is empty and none of its pages (header included) is resident:
           never touched since the map, or given back by a purge. A cold slab is on no
           list; its header reads as zeros (state HAK_SLAB_POOLED, capacity 0). */
        uint64_t cold;
        uint64_t returned;          /* the cold slabs a purge or trim gave back */
    } hak_region_t;
    HAK_STATIC_ASSERT(sizeof(hak_region_t) <= 4096, "region header fits the first page of slab 0");
    HAK_STATIC_ASSERT(HAK_SLABS_PER_REGION <= 64, "a region's cold slabs are one 64-bit mask");
    HAK_STATIC_ASSERT(HAK_SLAB_POOLED == 0, "a cold slab's zeroed header must read as pooled");
    #define hak_region_slab(r, i) ((hak_slab_t*)((char*)(r) + ((size_t)(i) << HAK_SLAB_SHIFT)))
    #endif
    """
    const int HAK_SLAB_SHIFT
    const size_t HAK_SLAB_SIZE
    const size_t HAK_SLAB_HDR
    const int HAK_REGION_SHIFT
    const size_t HAK_REGION_SIZE
    const int HAK_SLABS_PER_REGION
    const uint64_t HAK_REGION_MAGIC
    const uintptr_t HAK_REG_ENTRIES
    const uintptr_t HAK_TID_NONE
    uint64_t HAK_FREE_TAG_OF(void* p) nogil
    const int HAK_SLAB_POOLED
    const int HAK_SLAB_ACTIVE
    const int HAK_SLAB_ABANDONED
    const int HAK_SLAB_FULL

    ctypedef struct hak_slab_t:
        uintptr_t owner_tid
        void* owner
        void* local_free
        char* bump
        char* end
        uint32_t used
        uint32_t nfree
        uint32_t capacity
        uint16_t cls
        uint8_t state
        void* remote_free
        hak_slab_t* next
        hak_slab_t* prev

    enum: HAK_RL_ALL
    enum: HAK_RL_COLD
    ctypedef struct hak_region_t:
        uint64_t magic
        hak_region_t* link[2][2]
        uint32_t npooled
        uint64_t cold
        uint64_t returned

    hak_slab_t* hak_region_slab(hak_region_t* r, int i) nogil

cdef struct hak_slab_stats_t:
    uint64_t bytes_mapped
    uint64_t regions
    uint64_t slabs_active
    uint64_t slabs_pooled
    uint64_t slabs_abandoned
    uint64_t slabs_decommitted
    uint64_t bytes_trimmed      # total given back to the OS by trim()
    uint64_t mmap_failures
    uint64_t purges             # times the pool gave its coldest empty slabs back by itself
    uint64_t bytes_purged       # bytes those purges gave back (decommitted or unmapped)


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
    """Slab header of an address already known to be in one of our regions."""
    return <hak_slab_t*>(a & ~(HAK_SLAB_SIZE - 1))


cdef inline int hak_slab_index(hak_slab_t* s) noexcept nogil:
    """Index of a slab in its region (0 is the region header, never a slab)."""
    return <int>((<uintptr_t>s >> HAK_SLAB_SHIFT) & (HAK_SLABS_PER_REGION - 1))


cdef inline hak_region_t* hak_region_of_slab(hak_slab_t* s) noexcept nogil:
    return <hak_region_t*>(<uintptr_t>s & ~(HAK_REGION_SIZE - 1))


cdef inline char* hak_slab_start(hak_slab_t* s) noexcept nogil:
    """Address of the slab's first block."""
    return <char*>s + HAK_SLAB_HDR


cdef inline void hak_slab_disown(hak_slab_t* s) noexcept nogil:
    """fork() child: the owner's thread is gone; frees take the remote path from now on."""
    s.owner_tid = HAK_TID_NONE


cdef inline bint hak_slab_is_block(hak_slab_t* s, void* p) noexcept nogil:
    """p is the start of a block of s that has been carved."""
    cdef char* start = hak_slab_start(s)
    return (<char*>p >= start and <char*>p < s.bump
            and (<uintptr_t>(<char*>p - start)) % hak_stride(s.cls) == 0)


# ---- free blocks: word 0 is the list link, word 1 the free tag -----------------
cdef inline void hak_block_tag(void* p) noexcept nogil:
    """Mark block p free (hak_check_live then says HAK_EDOUBLE for it)."""
    (<uint64_t*>p)[1] = HAK_FREE_TAG_OF(p)

cdef inline bint hak_block_is_tagged(void* p) noexcept nogil:
    return (<uint64_t*>p)[1] == HAK_FREE_TAG_OF(p)


# ---- the owner's state changes (no lock: only the owner calls these) ---------
cdef inline uint32_t hak_slab_put(hak_slab_t* s, void* p) noexcept nogil:
    """Owner: block p (already tagged free) goes back on the local list; returns `used`."""
    (<void**>p)[0] = s.local_free
    s.local_free = p
    s.nfree += 1
    s.used -= 1
    return s.used

cdef inline void hak_slab_reset(hak_slab_t* s) noexcept nogil:
    """Owner: an empty slab (used == 0: every block is on local_free or uncarved) that
    it keeps goes back to bump carving, so the blocks come out in address order again
    instead of in the order they died."""
    s.local_free = NULL
    s.nfree = 0
    s.bump = hak_slab_start(s)


cdef inline void hak_slab_mark_full(hak_slab_t* s) noexcept nogil:
    """Owner: a refill found the slab exhausted (it moves to the owner's full list)."""
    s.state = HAK_SLAB_FULL

cdef inline void hak_slab_mark_active(hak_slab_t* s) noexcept nogil:
    """Owner: the slab leaves the full list (blocks came back)."""
    s.state = HAK_SLAB_ACTIVE


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
cdef hak_slab_t* hak_slab_acquire(uint32_t cls, void* owner, uintptr_t owner_tid) noexcept nogil
cdef void hak_slab_release(hak_slab_t* s) noexcept nogil
cdef void hak_slab_abandon(hak_slab_t* s) noexcept nogil
cdef uint32_t hak_slab_drain_remote(hak_slab_t* s) noexcept nogil
cdef uint32_t hak_slab_take(hak_slab_t* s, uint32_t want, void** head) noexcept nogil
cdef void hak_slab_check(hak_slab_t* s) noexcept nogil
cdef size_t hak_slab_trim() noexcept nogil
cdef void hak_slab_get_stats(hak_slab_stats_t* out) noexcept nogil
cdef void hak_slab_fork_prepare() noexcept nogil
cdef void hak_slab_fork_parent() noexcept nogil
cdef void hak_slab_fork_child() noexcept nogil
cdef void hak_slab_set_map_limit(uint64_t limit) noexcept nogil
cdef void hak_slab_set_purge(uint32_t keep) noexcept nogil
# The idle purge (see hak_slab_purge_idle): empty slabs it always leaves resident, and
# how many bytes of large requests the PEP 445 hook lets pass between two calls.
cdef enum:
    HAK_IDLE_RESERVE = 8
    HAK_IDLE_LARGE_BYTES = 4 << 20
cdef size_t hak_slab_purge_idle() noexcept nogil
