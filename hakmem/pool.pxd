# hakmem.pool — RecordPool: typed fixed-size records with handles that cannot dangle.
#
# Glossary
#   slot    room for one record (`stride` bytes) in a chunk; global index
#           s = chunk * K + j, K = records per chunk (a power of two, 1 << kshift).
#   chunk   K slots in one block from hak_malloc (<= 1 KiB, the tiny path with the
#           thread caches) plus K uint16 generations in a second block.
#   gen     per-slot generation: odd = live, even = free. alloc and free each add 1.
#           Handles carry generations 1, 3, ... 0xFFFD; freeing generation 0xFFFD
#           retires the slot (gen 0xFFFF, never matched, never reused), so a
#           generation once handed out never comes back for that slot.
#   handle  uint64: bits 0..15 gen, 16..47 slot, 48..61 the pool's tag (random per
#           pool, catches handles of another pool). Always < 2**62, never 0.
#   floor   for a trimmed chunk (memory returned): the highest generation any of its
#           slots had; if it is repopulated its generations restart above it.
#
# Invariants (under p.lock)
#   live + nfree + retired(present chunks) == K * present chunks
#   every slot on the free list has an even gen and sits in a present chunk;
#   the free list is linked through the first 4 bytes of free records (uint32 slot
#   index, HAK_POOL_END ends it). stride >= 4 so the link always fits.
#
# Locking: every operation on a pool (Python methods and the functions below) holds
# p.lock, a futex mutex, while it touches the pool. Nothing calls into Python or
# waits for the GIL while holding it, so the GIL and p.lock cannot deadlock.
from libc.stdint cimport uint64_t, uint32_t, uint16_t, uint8_t

cdef enum:
    HAK_POOL_END = 0xFFFFFFFF       # end of the free list
    HAK_POOL_GEN_LAST = 0xFFFD      # last generation a handle can carry
    HAK_POOL_GEN_RETIRED = 0xFFFF   # a retired slot's generation (no handle carries it)
    HAK_POOL_CHUNK_BYTES = 1024     # target chunk size: the largest tiny class
    # chunk states
    HAK_PCHUNK_PRESENT = 0
    HAK_PCHUNK_TRIMMED = 1          # memory returned; may be repopulated above `floor`
    HAK_PCHUNK_DEAD = 2             # every generation used up; never reused

# Error codes of hak_pool_free / hak_pool_read / hak_pool_write (0 = done).
cdef enum:
    HAK_POOL_OK = 0
    HAK_POOL_ESTALE = -1            # handle not live in this pool (freed, foreign, bogus)
    HAK_POOL_ECLOSED = -2           # the pool is closed
    HAK_POOL_ENOMEM = -3            # out of memory, or 2**32 slots used

cdef struct hak_pchunk_t:
    char* rec                       # K * stride bytes (NULL unless PRESENT)
    uint16_t* gen                   # K generations (NULL unless PRESENT)
    uint16_t live                   # live records in this chunk
    uint16_t retired                # retired slots in this chunk
    uint16_t floor                  # TRIMMED: highest generation seen
    uint8_t state                   # HAK_PCHUNK_*

cdef struct hak_pool_t:
    int lock                        # futex mutex: 0 free, 1 held, 2 held + waiters
    uint8_t closed
    uint32_t itemsize               # bytes of a record (numpy's itemsize)
    uint32_t stride                 # bytes per slot: max(itemsize, 4)
    uint32_t kshift                 # K = 1 << kshift records per chunk
    uint64_t tag                    # bits 48..61 of every handle
    hak_pchunk_t* chunks
    uint32_t nchunks                # chunks ever created (present, trimmed or dead)
    uint32_t chunks_cap             # room in `chunks`
    uint32_t npresent               # chunks holding memory
    uint32_t ntrimmed               # chunks that may be repopulated
    uint32_t trim_hint              # no TRIMMED chunk below this index
    uint32_t free_head              # first free slot, or HAK_POOL_END
    uint64_t nfree                  # slots on the free list
    uint64_t live                   # live records
    uint64_t retired                # retired slots in present chunks
    uint64_t nbytes                 # bytes held from hakmem (chunks, gens, table)
    uint64_t allocs                 # counters (since creation / unpickling)
    uint64_t frees
    uint64_t stale                  # operations refused for a stale handle
    uint64_t layout                 # bumped whenever a chunk gains or loses memory

# ---- the cimport API (all nogil, thread-safe; see docs/records.md) -------------
# Allocate a zeroed record; its handle goes to *handle_out. NULL if the pool is
# closed or out of memory. The pointer is valid until the handle is freed: do not
# free a handle while another thread still writes through its pointer.
cdef void* hak_pool_alloc(hak_pool_t* p, uint64_t* handle_out) noexcept nogil
# Free a record: HAK_POOL_OK, HAK_POOL_ESTALE (nothing changed) or HAK_POOL_ECLOSED.
cdef int hak_pool_free(hak_pool_t* p, uint64_t handle) noexcept nogil
# Pointer to a live record, NULL if the handle is stale (or the pool closed).
cdef void* hak_pool_deref(hak_pool_t* p, uint64_t handle) noexcept nogil
# Copy a live record into out (itemsize bytes): HAK_POOL_OK or an error code.
cdef int hak_pool_read(hak_pool_t* p, uint64_t handle, void* out) noexcept nogil
# Overwrite a live record from src (itemsize bytes): HAK_POOL_OK or an error code.
cdef int hak_pool_write(hak_pool_t* p, uint64_t handle, const void* src) noexcept nogil
cdef uint64_t hak_pool_live(hak_pool_t* p) noexcept nogil   # live records


cdef class RecordPool:
    cdef hak_pool_t _p
    cdef readonly object spec       # hakmem.spec.RecordSpec
    cdef object _dtype
    cdef dict _index                # field name -> field number
    cdef tuple _names               # field names (interned)
    cdef int _nfields
    cdef uint32_t* _foff            # per field: offset
    cdef uint32_t* _fsize           # per field: size in bytes
    cdef uint8_t* _fkind            # per field: a _K_* code (pool.pyx)
    cdef object __weakref__
    # internals (pool.pyx)
    cdef int _check_open(self) except -1
    cdef int _field(self, object name) except -1
    cdef int _pack(self, int fi, object v, char* rec) except -1
    cdef object _unpack(self, int fi, const char* rec)
    cdef int _read(self, object handle, char* out) except -1
    cdef int _write_field(self, object handle, int fi, const char* rec) except -1
    cdef char* _tmp(self, char* stackbuf, size_t room) except NULL
    cdef int _why(self, object handle) except -1
    cdef object _column_values(self, int fi, object values, Py_ssize_t n)
    cdef object _scan(self, int fi)


# The C pool behind a RecordPool (GIL needed for the call; the pointer stays valid
# while the RecordPool object is alive — keep a reference).
cdef hak_pool_t* hak_pool_of(RecordPool pool) except NULL
