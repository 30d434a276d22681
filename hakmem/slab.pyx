"""hakmem.slab — regions, slabs, the global pool and the pointer registry.

Everything here except hak_slab_take/drain_remote runs under one global
mutex; those three are called by a slab's owner only (or under the mutex for
unowned slabs) and touch nothing shared but the atomic remote list.
"""
from libc.stdint cimport uintptr_t, uint64_t, uint32_t, uint8_t
from libc.string cimport memset
from posix.unistd cimport sysconf, _SC_PAGESIZE
from hakmem.classes cimport hak_stride, HAK_NCLASSES, HAK_CANARY, HAK_DEBUG
from hakmem.remote cimport hak_remote_take_all, hak_atomic_load_ptr

cdef extern from *:
    """
    #include <sys/mman.h>
    /* Regions are 4 MiB-aligned: under THP "always" the kernel would back a touched
       region with 2 MiB pages and make the cold slabs around a hot one resident. */
    static inline void hak_no_huge_pages(void* p, size_t n) {
    #ifdef MADV_NOHUGEPAGE
        madvise(p, n, MADV_NOHUGEPAGE);
    #endif
    }
    """
    int __builtin_ctzll(unsigned long long) nogil
    int __builtin_popcountll(unsigned long long) nogil
    void hak_no_huge_pages(void* p, size_t n) nogil

cdef extern from "<sys/mman.h>" nogil:
    void* mmap(void* addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void* addr, size_t length)
    int madvise(void* addr, size_t length, int advice)
    int PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE, MADV_DONTNEED
    void* MAP_FAILED

from hakmem.remote cimport (pthread_mutex_t, pthread_mutex_init, pthread_mutex_lock,
                            pthread_mutex_unlock)

from hakmem.debug cimport hak_die, hak_die_count, hak_debug_fill_canaries
from hakmem.classes cimport hak_block_size

# ---- global state (guarded by g_lock) --------------------------------------
cdef pthread_mutex_t g_lock
pthread_mutex_init(&g_lock, NULL)
# The registry: one byte per 4 MiB of address space below 2**48. 64 MiB of address
# space reserved at import; only pages covering our regions are ever touched.
cdef uint8_t* g_reg = <uint8_t*>mmap(NULL, HAK_REG_ENTRIES, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
if g_reg == <uint8_t*>MAP_FAILED:
    raise MemoryError("hakmem: cannot reserve the 64 MiB region registry")
cdef hak_region_t* g_regions = NULL
cdef hak_slab_t* g_pool = NULL        # empty slabs of any class, pages resident (LIFO)
cdef uint32_t g_npool = 0             # slabs on g_pool
cdef hak_region_t* g_cold_regions = NULL   # regions with cold slabs (region.cold != 0)
cdef hak_slab_t* g_abandoned[HAK_NCLASSES]
cdef hak_slab_stats_t g_st
cdef uint64_t g_map_limit = 0         # 0 = unlimited; a test hook for OOM handling
# Owner of pooled and abandoned slabs: a word holding HAK_TID_NONE, which no
# thread's id equals, so free() sends their blocks down the remote path.
cdef uintptr_t g_no_owner = HAK_TID_NONE
# A purge gives back a whole slab, header page included, unless pages are larger.
cdef size_t g_page = <size_t>sysconf(_SC_PAGESIZE)
# Purge policy (HAKMEM_PURGE_KEEP): the pool keeps at most 2 * g_purge_keep empty slabs
# with resident pages; past that, all but the g_purge_keep most recently emptied are
# given back to the OS (they turn cold), and wholly empty regions are unmapped.
# 0 = only trim() does it.
cdef uint32_t g_purge_keep = 64
# hak_slab_purge_idle: the most slabs in use since its last call, and before that
cdef uint64_t g_peak_now = 0
cdef uint64_t g_peak_before = 0
memset(g_abandoned, 0, sizeof(g_abandoned))
memset(&g_st, 0, sizeof(g_st))


cdef const uint8_t* hak_registry() noexcept nogil:
    """The registry byte map; its address never changes."""
    return g_reg


cdef bint _registry_set(uintptr_t a, uint8_t v) noexcept nogil:
    cdef uintptr_t i = a >> HAK_REGION_SHIFT
    if i >= HAK_REG_ENTRIES:
        return False
    g_reg[i] = v
    return True


cdef hak_region_t** _region_list(int which) noexcept nogil:
    return &g_regions if which == HAK_RL_ALL else &g_cold_regions


cdef void _region_list_push(int which, hak_region_t* r) noexcept nogil:
    """r goes to the front of region list `which` (lock held)."""
    cdef hak_region_t** head = _region_list(which)
    r.link[which][1] = NULL
    r.link[which][0] = head[0]
    if head[0] != NULL:
        head[0].link[which][1] = r
    head[0] = r


cdef void _region_list_remove(int which, hak_region_t* r) noexcept nogil:
    """r leaves region list `which` (lock held)."""
    cdef hak_region_t** head = _region_list(which)
    cdef hak_region_t* nxt = r.link[which][0]
    cdef hak_region_t* prv = r.link[which][1]
    if prv != NULL:
        prv.link[which][0] = nxt
    else:
        head[0] = nxt
    if nxt != NULL:
        nxt.link[which][1] = prv
    r.link[which][0] = NULL
    r.link[which][1] = NULL


cdef hak_slab_t* _cold_take(hak_region_t* r) noexcept nogil:
    """The lowest cold slab of r leaves the cold mask (lock held); its header is zeros."""
    cdef int i = __builtin_ctzll(r.cold)
    cdef uint64_t bit = (<uint64_t>1) << i
    r.cold &= ~bit
    r.returned &= ~bit
    if r.cold == 0:
        _region_list_remove(HAK_RL_COLD, r)
    return hak_region_slab(r, i)


cdef hak_region_t* _region_map() noexcept nogil:
    """Map one aligned region, its 63 slabs cold (lock held)."""
    cdef size_t sz = HAK_REGION_SIZE
    cdef char* raw
    cdef char* base
    cdef uintptr_t a
    cdef hak_region_t* r
    cdef hak_slab_t* s
    cdef int i
    if g_map_limit and g_st.bytes_mapped + sz > g_map_limit:
        g_st.mmap_failures += 1
        return NULL
    # Over-map by one region, then cut the misaligned head and the tail.
    raw = <char*>mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if raw == <char*>MAP_FAILED:
        g_st.mmap_failures += 1
        return NULL
    a = (<uintptr_t>raw + sz - 1) & ~(sz - 1)
    base = <char*>a
    if base > raw:
        munmap(raw, base - raw)
    munmap(base + sz, raw + sz - base)
    if not _registry_set(a, 1):
        munmap(base, sz)
        g_st.mmap_failures += 1
        return NULL
    hak_no_huge_pages(base, sz)
    r = <hak_region_t*>base
    r.magic = HAK_REGION_MAGIC
    _region_list_push(HAK_RL_ALL, r)
    # Every slab starts cold: no header is written (a fresh mapping reads as zeros,
    # i.e. pooled), so the map touches this one page, not 63 headers.
    r.npooled = HAK_SLABS_PER_REGION - 1
    r.cold = ~<uint64_t>0 << 1
    r.returned = 0
    _region_list_push(HAK_RL_COLD, r)
    g_st.bytes_mapped += sz
    g_st.regions += 1
    g_st.slabs_pooled += HAK_SLABS_PER_REGION - 1
    return r


cdef inline void _slab_format(hak_slab_t* s, uint32_t cls) noexcept nogil:
    cdef uint32_t stride = hak_stride(cls)
    cdef char* start = hak_slab_start(s)
    s.cls = <uint16_t>cls
    s.capacity = <uint32_t>((HAK_SLAB_SIZE - HAK_SLAB_HDR) // stride)
    s.end = start + <size_t>s.capacity * stride
    hak_slab_reset(s)           # no free list; bump carving from the first block
    s.remote_free = NULL
    s.used = 0
    if HAK_CANARY:
        hak_debug_fill_canaries(start, s.end, stride, hak_block_size(cls))


cdef hak_slab_t* hak_slab_acquire(uint32_t cls, void* owner, uintptr_t owner_tid) noexcept nogil:
    """A slab of class cls for owner: adopt an abandoned one, else a pooled one (warm
    first: the pool, then a cold one), else map a region.

    Returns NULL when no memory can be mapped.
    """
    global g_npool, g_peak_now
    cdef hak_slab_t* s
    cdef hak_region_t* r
    pthread_mutex_lock(&g_lock)
    s = g_abandoned[cls]
    if s != NULL:
        hak_slab_list_remove(&g_abandoned[cls], s)
        g_st.slabs_abandoned -= 1
    else:
        s = g_pool
        if s != NULL:
            hak_slab_list_remove(&g_pool, s)
            g_npool -= 1
        else:
            if g_cold_regions == NULL and _region_map() == NULL:
                pthread_mutex_unlock(&g_lock)
                return NULL
            s = _cold_take(g_cold_regions)
        # Formatted afresh even a warm slab of the class that emptied it: its free list
        # is in the order its blocks died, scattered; bump carving hands them out in
        # address order again, so objects allocated together lie together, as in a
        # pool pymalloc re-initialises (object_tree: 0.94x -> 1.03x pymalloc, 27% fewer
        # samples in the collector's list walks).
        _slab_format(s, cls)
        r = hak_region_of_slab(s)
        r.npooled -= 1
        g_st.slabs_pooled -= 1
    s.state = HAK_SLAB_ACTIVE
    s.owner = owner
    s.owner_tid = owner_tid
    g_st.slabs_active += 1
    if g_st.slabs_active > g_peak_now:
        g_peak_now = g_st.slabs_active
    pthread_mutex_unlock(&g_lock)
    return s


cdef inline void _pool_push(hak_slab_t* s) noexcept nogil:
    global g_npool
    hak_slab_list_push(&g_pool, s)
    g_npool += 1


cdef void hak_slab_release(hak_slab_t* s) noexcept nogil:
    """Give an empty slab (used == 0, unlinked by its owner) back to the pool."""
    cdef hak_region_t* r = hak_region_of_slab(s)
    pthread_mutex_lock(&g_lock)
    s.owner = &g_no_owner
    s.owner_tid = HAK_TID_NONE
    s.state = HAK_SLAB_POOLED
    _pool_push(s)
    r.npooled += 1
    g_st.slabs_active -= 1
    g_st.slabs_pooled += 1
    if g_purge_keep and g_npool > 2 * g_purge_keep:
        g_st.purges += 1
        g_st.bytes_purged += _purge(g_purge_keep)
    pthread_mutex_unlock(&g_lock)


cdef void hak_slab_abandon(hak_slab_t* s) noexcept nogil:
    """Its owner is exiting while blocks are still live: park it for adoption."""
    pthread_mutex_lock(&g_lock)
    s.owner = &g_no_owner
    s.owner_tid = HAK_TID_NONE
    s.state = HAK_SLAB_ABANDONED
    hak_slab_list_push(&g_abandoned[s.cls], s)
    g_st.slabs_active -= 1
    g_st.slabs_abandoned += 1
    pthread_mutex_unlock(&g_lock)


cdef uint32_t hak_slab_drain_remote(hak_slab_t* s) noexcept nogil:
    """Move the remote list onto the local list; returns how many blocks came back."""
    cdef void* head = hak_remote_take_all(&s.remote_free)
    cdef void* p
    cdef void* nxt
    cdef uint32_t n = 0
    p = head
    while p != NULL:
        if HAK_DEBUG and (<void**>p)[0] != NULL:
            _debug_check_link(s, p)
        nxt = (<void**>p)[0]
        (<void**>p)[0] = s.local_free
        s.local_free = p
        n += 1
        p = nxt
    s.nfree += n
    s.used -= n
    return n


cdef void _debug_check_link(hak_slab_t* s, void* p) noexcept nogil:
    """Debug builds: a local-free link must point at a carved block of this slab."""
    cdef char* n = <char*>(<void**>p)[0]
    if n < hak_slab_start(s) or n >= s.bump or (<uintptr_t>(n - hak_slab_start(s))) % hak_stride(s.cls) != 0:
        hak_die("write after free (free-list link overwritten)", p, s.cls)


cdef uint32_t hak_slab_take(hak_slab_t* s, uint32_t want, void** head) noexcept nogil:
    """Owner: detach free blocks as a NULL-terminated chain in head[0]; returns how many.

    With no local free block, the blocks other threads freed are taken whole, however
    many (one read-only walk to count them; `used` already counts them). Otherwise the
    whole local list is taken in O(1), whatever its length (`nfree` counts it; no
    block is read). Past the recycled blocks, fresh ones are carved from the bump
    pointer, up to `want` in all.
    """
    cdef uint32_t n = 0
    cdef uint32_t stride
    cdef void* first = NULL
    cdef void* p
    cdef char* b
    cdef char* fresh
    if s.local_free == NULL:
        first = hak_remote_take_all(&s.remote_free)
        if first != NULL:
            p = first
            while p != NULL:
                if HAK_DEBUG and (<void**>p)[0] != NULL:
                    _debug_check_link(s, p)
                n += 1
                p = (<void**>p)[0]
            head[0] = first
            return n
    # Recycled blocks first: they are warm and already carry the free tag.
    # The whole local list, however long, in O(1): no block is read here. Walking
    # it to cut a batch would chase cold links one dependent miss at a time; popped
    # one per malloc instead, each miss overlaps the caller's own work.
    first = s.local_free
    if first != NULL:
        n = s.nfree
        s.local_free = NULL
        s.nfree = 0
    if n < want and s.bump < s.end:
        # Carve fresh blocks in ascending address order, ahead of any recycled ones:
        # consecutive allocations then walk memory upwards, as the prefetcher expects.
        stride = hak_stride(s.cls)
        b = s.bump
        fresh = b
        while True:
            hak_block_tag(b)
            if HAK_DEBUG:
                memset(b + 16, 0xDD, hak_block_size(s.cls) - 16)
            n += 1
            if n >= want or b + stride >= s.end:
                break
            (<void**>b)[0] = b + stride
            b += stride
        (<void**>b)[0] = first
        first = fresh
        s.bump = b + stride
    s.used += n
    head[0] = first
    if HAK_DEBUG:
        hak_slab_check(s)
    return n


cdef void hak_slab_check(hak_slab_t* s) noexcept nogil:
    """Debug builds: walk the whole local list and check the slab's invariant
    (used + nfree + uncarved == capacity; every local block a carved block start)."""
    cdef uint32_t n = 0
    cdef void* p = s.local_free
    cdef uint32_t stride = hak_stride(s.cls)
    cdef char* start = hak_slab_start(s)
    while p != NULL:
        if (<char*>p < start or <char*>p >= s.bump
                or (<uintptr_t>(<char*>p - start)) % stride != 0 or n > s.capacity):
            hak_die("write after free (free-list link overwritten)", p, s.cls)
        n += 1
        p = (<void**>p)[0]
    if n != s.nfree or <uint64_t>s.used + s.nfree + <uint32_t>((s.end - s.bump) // stride) != s.capacity:
        hak_die_count(s, s.cls, s.used, s.nfree, s.capacity)


cdef size_t _decommit(hak_slab_t* s) noexcept nogil:
    """A slab on the pool list gives all its pages back to the OS and turns cold
    (lock held); returns bytes."""
    global g_npool
    cdef hak_region_t* r = hak_region_of_slab(s)
    cdef uint64_t bit = (<uint64_t>1) << hak_slab_index(s)
    hak_slab_list_remove(&g_pool, s)
    g_npool -= 1
    if r.cold == 0:
        _region_list_push(HAK_RL_COLD, r)
    r.cold |= bit
    r.returned |= bit
    if g_page > HAK_SLAB_SIZE:
        return 0     # pages larger than a slab: it stays resident, though cold
    # The header goes too: its page reads as zeros from now on, i.e. pooled.
    madvise(<void*>s, HAK_SLAB_SIZE, MADV_DONTNEED)
    return HAK_SLAB_SIZE


cdef size_t _unmap_empty_regions() noexcept nogil:
    """Unmap every region whose slabs are all empty (lock held); returns bytes."""
    global g_npool
    cdef hak_region_t* r = g_regions
    cdef hak_region_t* rn
    cdef hak_slab_t* s
    cdef size_t freed = 0
    cdef int i
    while r != NULL:
        rn = r.link[HAK_RL_ALL][0]
        if r.npooled == HAK_SLABS_PER_REGION - 1:
            for i in range(1, HAK_SLABS_PER_REGION):
                if not (r.cold >> i) & 1:      # the warm ones are on the pool list
                    s = hak_region_slab(r, i)
                    hak_slab_list_remove(&g_pool, s)
                    g_npool -= 1
            if r.cold:
                _region_list_remove(HAK_RL_COLD, r)
            g_st.slabs_pooled -= HAK_SLABS_PER_REGION - 1
            _region_list_remove(HAK_RL_ALL, r)
            _registry_set(<uintptr_t>r, 0)
            munmap(<void*>r, HAK_REGION_SIZE)
            g_st.bytes_mapped -= HAK_REGION_SIZE
            g_st.regions -= 1
            freed += HAK_REGION_SIZE
        r = rn
    return freed


cdef size_t _purge(uint32_t keep) noexcept nogil:
    """Give back the pooled slabs past the `keep` most recently emptied ones, then
    unmap regions left wholly empty (lock held); returns bytes given back.

    The pool is LIFO, so the slabs kept are the ones a refill would take next."""
    cdef hak_slab_t* s = g_pool
    cdef hak_slab_t* nxt
    cdef uint32_t seen = 0
    cdef size_t freed = 0
    while s != NULL:
        nxt = s.next
        seen += 1
        if seen > keep:
            freed += _decommit(s)
        s = nxt
    if keep:   # trim() unmaps first, then decommits what is left
        freed += _unmap_empty_regions()
    return freed


cdef size_t hak_slab_trim() noexcept nogil:
    """Return pooled slabs' pages to the OS and unmap wholly empty regions."""
    cdef size_t freed = 0
    cdef hak_slab_t* s
    cdef hak_slab_t* nxt
    cdef hak_region_t* r
    cdef hak_region_t* rn
    cdef int i, c
    pthread_mutex_lock(&g_lock)
    # Abandoned slabs whose last blocks came home remotely are empty now.
    for c in range(HAK_NCLASSES):
        s = g_abandoned[c]
        while s != NULL:
            nxt = s.next
            hak_slab_drain_remote(s)
            if s.used == 0:
                hak_slab_list_remove(&g_abandoned[c], s)
                s.state = HAK_SLAB_POOLED
                _pool_push(s)
                r = hak_region_of_slab(s)
                r.npooled += 1
                g_st.slabs_abandoned -= 1
                g_st.slabs_pooled += 1
            s = nxt
    freed += _unmap_empty_regions()
    freed += _purge(0)
    g_st.bytes_trimmed += freed
    pthread_mutex_unlock(&g_lock)
    return freed


cdef size_t hak_slab_purge_idle() noexcept nogil:
    """Called by the PEP 445 hook after every HAK_IDLE_LARGE_BYTES of large requests:
    give back the pages of the empty slabs that the program's small-block work has not
    needed since the call before last (the most slabs in use over those two intervals,
    less those in use now; at least HAK_IDLE_RESERVE stay), and unmap wholly empty
    regions, so the allocator serving the large requests can use the memory. A no-op
    under HAKMEM_PURGE_KEEP=0. Returns bytes given back.

    Measured against the peak, not against "no slab taken since": a program that
    alternates rounds of small objects with a few MiB of large ones takes slabs from
    the pool only while a round builds up; a check that came after a quiet interval
    would give back the slabs the next round needs, to be faulted in again."""
    global g_peak_now, g_peak_before
    cdef size_t freed = 0
    cdef uint64_t need, keep
    pthread_mutex_lock(&g_lock)
    need = g_peak_now if g_peak_now > g_peak_before else g_peak_before
    g_peak_before = g_peak_now
    g_peak_now = g_st.slabs_active
    keep = need - g_st.slabs_active if need > g_st.slabs_active else 0
    if keep < HAK_IDLE_RESERVE:
        keep = HAK_IDLE_RESERVE
    if g_purge_keep and g_npool > keep:
        g_st.purges += 1
        freed = _purge(<uint32_t>keep)
        g_st.bytes_purged += freed
    pthread_mutex_unlock(&g_lock)
    return freed


cdef void hak_slab_get_stats(hak_slab_stats_t* out) noexcept nogil:
    cdef hak_region_t* r
    pthread_mutex_lock(&g_lock)
    out[0] = g_st
    # given back and not taken since: counted off the regions' masks, not kept twice
    out.slabs_decommitted = 0
    r = g_regions
    while r != NULL:
        out.slabs_decommitted += __builtin_popcountll(r.returned)
        r = r.link[HAK_RL_ALL][0]
    pthread_mutex_unlock(&g_lock)


cdef void hak_slab_set_purge(uint32_t keep) noexcept nogil:
    """HAKMEM_PURGE_KEEP: empty slabs the pool keeps resident (0 = purge only on trim)."""
    global g_purge_keep
    pthread_mutex_lock(&g_lock)
    g_purge_keep = keep
    pthread_mutex_unlock(&g_lock)


cdef void hak_slab_set_map_limit(uint64_t limit) noexcept nogil:
    """Cap bytes mapped (0 = none): lets tests drive the out-of-memory path."""
    global g_map_limit
    pthread_mutex_lock(&g_lock)
    g_map_limit = limit
    pthread_mutex_unlock(&g_lock)


cdef void hak_slab_fork_prepare() noexcept nogil:
    pthread_mutex_lock(&g_lock)

cdef void hak_slab_fork_parent() noexcept nogil:
    pthread_mutex_unlock(&g_lock)

cdef void hak_slab_fork_child() noexcept nogil:
    pthread_mutex_init(&g_lock, NULL)


def info():
    """Backend counters: bytes mapped, regions, slabs by state, bytes trimmed."""
    cdef hak_slab_stats_t st
    hak_slab_get_stats(&st)
    return st


def set_purge(uint32_t keep):
    """Empty slabs the pool keeps resident before it gives the coldest back to the OS
    (0 = only trim() gives memory back); ``hakmem.configure(purge_keep=...)``."""
    hak_slab_set_purge(keep)


def _set_map_limit(uint64_t limit):
    """Test hook: refuse to map past ``limit`` bytes (0 = no limit)."""
    hak_slab_set_map_limit(limit)
