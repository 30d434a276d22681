"""hakmem.large — system-malloc blocks above 1 KiB, tracked in a sharded hash set.

Each shard also remembers the last RECENT addresses it freed (a ring), so a second
free of a large block can be told apart from a foreign pointer ("double free" rather
than "not a block allocated by hakmem"). An address leaves the ring when the system
malloc hands it to hakmem again, so a live block is never reported as freed; one
reused by someone else still reads as "freed by hakmem", which it was.
"""
from libc.stdint cimport uintptr_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset

cdef extern from "<malloc.h>" nogil:
    size_t malloc_usable_size(void* p)

from hakmem.remote cimport (pthread_mutex_t, pthread_mutex_init, pthread_mutex_lock,
                            pthread_mutex_unlock)

cdef enum:
    NSHARDS = 32
    RECENT = 16           # freed addresses remembered per shard (512 in all)

cdef struct entry_t:
    uintptr_t key         # 0 = empty, 1 = tombstone
    size_t size

cdef struct shard_t:
    pthread_mutex_t lock
    entry_t* tab
    size_t cap            # power of two
    size_t n              # live keys
    size_t used           # live keys + tombstones
    uint64_t allocs
    uint64_t frees
    uint64_t bytes_live
    uintptr_t recent[RECENT]   # recently freed addresses of this shard, 0 = none
    uint32_t recent_next       # ring position of the next one
    char pad[64]

cdef shard_t g_shards[NSHARDS]
memset(g_shards, 0, sizeof(g_shards))
for _i in range(NSHARDS):
    pthread_mutex_init(&g_shards[_i].lock, NULL)


cdef inline uintptr_t _mix(uintptr_t k) noexcept nogil:
    k ^= k >> 33
    k *= <uintptr_t>0xff51afd7ed558ccdULL
    k ^= k >> 33
    return k


cdef inline shard_t* _shard(uintptr_t k) noexcept nogil:
    return &g_shards[(k >> 4) & (NSHARDS - 1)]


cdef bint _grow(shard_t* sh) noexcept nogil:
    cdef size_t ncap = sh.cap * 2 if sh.cap else 64
    cdef entry_t* nt
    cdef size_t i, j
    while sh.n * 2 >= ncap:
        ncap *= 2
    nt = <entry_t*>calloc(ncap, sizeof(entry_t))
    if nt == NULL:
        return False
    for i in range(sh.cap):
        if sh.tab[i].key > 1:
            j = _mix(sh.tab[i].key) & (ncap - 1)
            while nt[j].key != 0:
                j = (j + 1) & (ncap - 1)
            nt[j] = sh.tab[i]
    free(sh.tab)
    sh.tab = nt
    sh.cap = ncap
    sh.used = sh.n
    return True


cdef bint _insert(shard_t* sh, uintptr_t k, size_t size) noexcept nogil:
    cdef size_t j
    if (sh.used + 1) * 2 > sh.cap and not _grow(sh):
        return False
    j = _mix(k) & (sh.cap - 1)
    while sh.tab[j].key > 1:
        j = (j + 1) & (sh.cap - 1)
    if sh.tab[j].key == 0:
        sh.used += 1
    sh.tab[j].key = k
    sh.tab[j].size = size
    sh.n += 1
    return True


cdef entry_t* _find(shard_t* sh, uintptr_t k) noexcept nogil:
    cdef size_t j
    if sh.cap == 0 or k <= 1:
        return NULL           # 0 and 1 mark empty and deleted slots: never live keys
    j = _mix(k) & (sh.cap - 1)
    while sh.tab[j].key != 0:
        if sh.tab[j].key == k:
            return &sh.tab[j]
        j = (j + 1) & (sh.cap - 1)
    return NULL


cdef void _recent_forget(shard_t* sh, uintptr_t k) noexcept nogil:
    """k is live again (the system malloc reused it): it is no longer 'freed'."""
    cdef int i
    for i in range(RECENT):
        if sh.recent[i] == k:
            sh.recent[i] = 0


cdef void _recent_add(shard_t* sh, uintptr_t k) noexcept nogil:
    sh.recent[sh.recent_next] = k
    sh.recent_next = (sh.recent_next + 1) % RECENT


cdef bint hak_large_recently_freed(void* p) noexcept nogil:
    cdef shard_t* sh = _shard(<uintptr_t>p)
    cdef int i
    cdef bint found = False
    if p == NULL:
        return False
    pthread_mutex_lock(&sh.lock)
    for i in range(RECENT):
        if sh.recent[i] == <uintptr_t>p:
            found = True
    pthread_mutex_unlock(&sh.lock)
    return found


cdef void* hak_large_alloc(size_t size, bint zero) noexcept nogil:
    cdef void* p = calloc(1, size) if zero else malloc(size)
    cdef shard_t* sh
    if p == NULL:
        return NULL
    sh = _shard(<uintptr_t>p)
    pthread_mutex_lock(&sh.lock)
    if not _insert(sh, <uintptr_t>p, size):
        pthread_mutex_unlock(&sh.lock)
        free(p)
        return NULL
    _recent_forget(sh, <uintptr_t>p)
    sh.allocs += 1
    sh.bytes_live += size
    pthread_mutex_unlock(&sh.lock)
    return p


cdef int hak_large_free(void* p) noexcept nogil:
    cdef shard_t* sh = _shard(<uintptr_t>p)
    cdef entry_t* e
    pthread_mutex_lock(&sh.lock)
    e = _find(sh, <uintptr_t>p)
    if e == NULL:
        pthread_mutex_unlock(&sh.lock)
        return -1
    sh.bytes_live -= e.size
    e.key = 1
    sh.n -= 1
    sh.frees += 1
    _recent_add(sh, <uintptr_t>p)
    # free under the lock: were it after, another thread could get p from malloc and
    # take it out of the ring before we put it in (then a live block would read "freed")
    free(p)
    pthread_mutex_unlock(&sh.lock)
    return 0


cdef size_t hak_large_usable(void* p) noexcept nogil:
    cdef shard_t* sh = _shard(<uintptr_t>p)
    cdef entry_t* e
    cdef bint known
    pthread_mutex_lock(&sh.lock)
    known = _find(sh, <uintptr_t>p) != NULL
    pthread_mutex_unlock(&sh.lock)
    return malloc_usable_size(p) if known else 0


cdef void* hak_large_realloc(void* p, size_t size) noexcept nogil:
    cdef shard_t* sh = _shard(<uintptr_t>p)
    cdef entry_t* e
    cdef size_t old
    cdef void* q
    # p's shard stays locked across realloc(3): once it has moved the block, another
    # thread's malloc may get p back, and must find p out of the table (and in the
    # ring) by the time it can take the lock to record it as live.
    pthread_mutex_lock(&sh.lock)
    e = _find(sh, <uintptr_t>p)
    if e == NULL:
        pthread_mutex_unlock(&sh.lock)
        return NULL
    old = e.size
    q = realloc(p, size)
    if q == NULL:
        pthread_mutex_unlock(&sh.lock)
        return NULL            # p untouched and still tracked
    if q == p:
        e.size = size
        sh.bytes_live += size - old
        pthread_mutex_unlock(&sh.lock)
        return q
    e.key = 1
    sh.n -= 1
    sh.bytes_live -= old
    _recent_add(sh, <uintptr_t>p)
    pthread_mutex_unlock(&sh.lock)
    sh = _shard(<uintptr_t>q)
    pthread_mutex_lock(&sh.lock)
    _insert(sh, <uintptr_t>q, size)  # growth failure here would lose tracking only
    _recent_forget(sh, <uintptr_t>q)
    sh.bytes_live += size
    pthread_mutex_unlock(&sh.lock)
    return q


cdef void hak_large_get_stats(hak_large_stats_t* out) noexcept nogil:
    cdef int i
    memset(out, 0, sizeof(hak_large_stats_t))
    for i in range(NSHARDS):
        pthread_mutex_lock(&g_shards[i].lock)
        out.allocs += g_shards[i].allocs
        out.frees += g_shards[i].frees
        out.bytes_live += g_shards[i].bytes_live
        out.blocks_live += g_shards[i].n
        pthread_mutex_unlock(&g_shards[i].lock)


cdef void hak_large_fork_prepare() noexcept nogil:
    cdef int i
    for i in range(NSHARDS):
        pthread_mutex_lock(&g_shards[i].lock)

cdef void hak_large_fork_parent() noexcept nogil:
    cdef int i
    for i in range(NSHARDS):
        pthread_mutex_unlock(&g_shards[i].lock)

cdef void hak_large_fork_child() noexcept nogil:
    cdef int i
    for i in range(NSHARDS):
        pthread_mutex_init(&g_shards[i].lock, NULL)


def info():
    """Large-path counters: allocs, frees, live blocks and bytes."""
    cdef hak_large_stats_t st
    hak_large_get_stats(&st)
    return st
