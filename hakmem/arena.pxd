# hakmem.arena — Pool: memory owned by a Python object, freed with it (cymem's interface).
#
#   from hakmem.arena cimport Pool          (was: from cymem.cymem cimport Pool)
#   cdef Pool mem = Pool()
#   cdef int* xs = <int*>mem.alloc(10, sizeof(int))    # zeroed; MemoryError on failure
#   xs = <int*>mem.realloc(xs, 20 * sizeof(int))       # grows only (as cymem); tail zeroed
#   mem.free(xs)                                       # optional: the rest goes with `mem`
#
# Glossary
#   block   one hakmem block per alloc: [prefix 16 B, large form only][header 16 B][user bytes]
#   header  two words just below the user pointer, doubly linking the pool's live blocks:
#             w0 = next header | tag bits | slack << 48      (slack: 8 bits, see below)
#             w1 = prev header | tag bits
#           Headers are 16-byte aligned and below 2**48, so a link uses bits 4..47 only and
#           the pool's 32-bit tag fills the other bits (w0: bits 0..3, 56..63; w1: bits
#           0..3, 48..63). The tag is distinct for every live pool and its w1 part is never
#           0 nor 0x9e37, so a pointer, a small int or a hakmem free tag never passes.
#   lists   one list per tiny size class plus one for the large form: a list is then one
#           ascending run of addresses in a few slabs, and dealloc walks all lists side by
#           side, so the hardware prefetches each and their cache misses overlap.
#   form    tiny (header + request <= 1024 B): the block starts at the header; slack =
#           usable bytes after the header - requested bytes (< 128). Large: a 16-byte prefix
#           before the header holds the requested size; slack field = 0xFF.
#
# Invariants
#   size  == sum of the requested bytes of the blocks on the list
#   count == number of blocks on the lists
#   a tiny block is on heads[its class], a large-form block on heads[ARENA_LARGE_LIST]
#   every header on a list carries this pool's tag; a freed block's header is zeroed
#   before the block goes back to hakmem.
# An address is accepted by free/realloc only if
#   1. reading its header cannot fault: it lies in a hakmem tiny region (mapped as a whole
#      while registered) or, for the large form, hak_check_live confirms the block first;
#   2. the header carries this pool's tag; and
#   3. its list neighbours point back at it (or it heads its list).
# 3 proves the header is on this pool's list, so the block is live and ours: a freed
# block's header was zeroed, and a copy of a header elsewhere fails 3.
#
# Threads: see Pool's docstring and docs/arena.md. In short: the methods that hold the GIL
# are safe against each other; the *_nogil methods need one thread at a time per pool
# unless the pool was made with Pool(shared=True), which makes every method take a mutex.
from libc.stdint cimport uint64_t
from hakmem.classes cimport HAK_NCLASSES
from hakmem.remote cimport pthread_mutex_t

cdef extern from *:
    """
    #define ARENA_LARGE_LIST HAK_NCLASSES   /* the list of large-form blocks */
    #define ARENA_LISTS (HAK_NCLASSES + 1)
    """
    enum: ARENA_LARGE_LIST
    enum: ARENA_LISTS

# Error codes of Pool.free_nogil (0 = freed).
cdef enum:
    ARENA_OK = 0
    ARENA_ENOTOWNED = -1        # not a live block of this pool (foreign, freed, interior)


cdef class Pool:
    cdef readonly size_t size       # bytes requested by the blocks the pool holds
    cdef readonly list refs         # objects kept alive by own_pyref()
    cdef size_t count               # blocks held (len(pool))
    cdef void* heads[ARENA_LISTS]   # each list's newest header
    cdef uint64_t tag0              # tag bits of header word 0 (see above)
    cdef uint64_t tag1              # tag bits of header word 1
    cdef readonly bint shared       # every method takes `mutex`
    cdef pthread_mutex_t mutex

    # cymem's API (hold the GIL; raise on error)
    cdef void* alloc(self, size_t number, size_t elem_size) except NULL
    cdef void free(self, void* addr) except *
    cdef void* realloc(self, void* addr, size_t n) except NULL

    # nogil variants: NULL / ARENA_ENOTOWNED on error, nothing changed then
    cdef void* alloc_nogil(self, size_t number, size_t elem_size) noexcept nogil
    cdef int free_nogil(self, void* addr) noexcept nogil
    cdef void* realloc_nogil(self, void* addr, size_t n) noexcept nogil


cdef class Address:
    cdef void* ptr                  # number * elem_size zeroed bytes, freed with the object
