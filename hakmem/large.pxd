# hakmem.large — requests above the tiny range, served by the system malloc.
#
# Each live large block is recorded in a sharded hash set (pointer -> size), so
# hak_free tells a large block from a foreign pointer exactly, and a checked free of
# an unknown pointer fails instead of corrupting libc's heap.
from libc.stdint cimport uint64_t

cdef struct hak_large_stats_t:
    uint64_t allocs
    uint64_t frees
    uint64_t bytes_live
    uint64_t blocks_live

cdef void* hak_large_alloc(size_t size, bint zero) noexcept nogil
cdef int hak_large_free(void* p) noexcept nogil          # 0, or -1 if p is not a live large block
cdef size_t hak_large_usable(void* p) noexcept nogil     # 0 if unknown
cdef bint hak_large_recently_freed(void* p) noexcept nogil   # freed here lately, not reused since
cdef void* hak_large_realloc(void* p, size_t size) noexcept nogil   # p must be live large
cdef void hak_large_get_stats(hak_large_stats_t* out) noexcept nogil
cdef void hak_large_fork_prepare() noexcept nogil
cdef void hak_large_fork_parent() noexcept nogil
cdef void hak_large_fork_child() noexcept nogil
