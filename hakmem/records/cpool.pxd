# hakmem.records.cpool — the C pool under RecordPool: chunks, generations, the free list,
# the lock, and the nogil cimport API (also re-exported by hakmem.pool and hakmem.records.pool).
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
#   tag2    an unpickled / deep-copied pool has a tag of its own and also accepts the
#           tag of the pool it was copied from (so the original's handles stay valid
#           in the copy, while the copy's new handles are refused by the original).
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
from libc.stdint cimport int64_t, uint64_t, uint32_t, uint16_t, uint8_t
from libc.string cimport memcpy

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
    uint64_t tag2                   # also accepted (the original's tag), or 0
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




# ---- shared with hakmem.records.pool (not part of the public contract) -------------
from hakmem.classes cimport hak_likely, hak_unlikely
from hakmem.remote cimport hak_plock, hak_ptrylock, hak_punlock

cdef extern from *:
    """
    #include <string.h>
    /* An exact int as uint64 without raising: 1 and *out, or 0 if it is negative or
       >= 2**64. Reads the digits directly on CPython < 3.12 (handles are 3 digits). */
    static inline int hak_long_u64(PyObject* o, uint64_t* out) {
        unsigned long long v;
    #if PY_VERSION_HEX < 0x030C0000 && !defined(PYPY_VERSION)
        Py_ssize_t n = Py_SIZE(o);
        const digit* d = ((PyLongObject*)o)->ob_digit;
        if (n >= 0 && n <= 3) {
            uint64_t r = 0;
            while (n > 0) {
                n--;
                if (r >> (64 - PyLong_SHIFT)) goto slow;   /* would not fit in 64 bits */
                r = (r << PyLong_SHIFT) | d[n];
            }
            *out = r;
            return 1;
        }
    slow:
    #endif
        v = PyLong_AsUnsignedLongLong(o);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        *out = (uint64_t)v;
        return 1;
    }
    /* Unaligned-safe 4-byte load/store (free-list links; packed records). */
    static inline uint32_t hak_ld32(const char* p) { uint32_t v; memcpy(&v, p, 4); return v; }
    static inline void hak_st32(char* p, uint32_t v) { memcpy(p, &v, 4); }
    #define hak_prefetch(p) __builtin_prefetch((const void*)(p))
    #define HAK_POOL_SLOT_MASK 0xFFFFFFFFull
    #define HAK_POOL_LOW_MASK ((1ull << 48) - 1)
    """
    int hak_long_u64(object o, uint64_t* out)
    uint32_t hak_ld32(const char* p) nogil
    void hak_st32(char* p, uint32_t v) nogil
    void hak_prefetch(const void* p) nogil
    uint64_t HAK_POOL_SLOT_MASK         # slot bits of a handle, after >> HAK_POOL_GEN_BITS
    uint64_t HAK_POOL_LOW_MASK          # gen and slot bits (all but the tag)



# ---- handle layout ------------------------------------------------------------
cdef enum:
    HAK_POOL_GEN_BITS = 16
    HAK_POOL_GEN_MASK = 0xFFFF
    HAK_POOL_TAG_SHIFT = 48
    HAK_POOL_TAG_BITS = 14

# Reasons a handle is refused (for the error message).
cdef enum:
    HAK_R_OK = 0
    HAK_R_TAG = 1          # another pool's (or not a handle at all)
    HAK_R_RANGE = 2        # slot never handed out
    HAK_R_FREED = 3        # slot freed (and maybe reused)
    HAK_R_CLOSED = 4


cdef enum:
    HAK_POOL_PREFETCH_AHEAD = 16    # bulk loops: handles looked ahead (random order pays)


cdef inline bint hak_gen_live(uint16_t g) noexcept nogil:
    return (g & 1) != 0 and g != HAK_POOL_GEN_RETIRED


cdef inline int hak_pool_decode(hak_pool_t* p, uint64_t h, hak_pchunk_t** cout,
                        uint32_t* jout) noexcept nogil:
    """HAK_R_OK and the chunk/slot of live handle h, else why it is refused."""
    cdef uint64_t s
    cdef uint32_t c, j
    cdef hak_pchunk_t* ch
    if hak_unlikely((h & ~HAK_POOL_LOW_MASK) != p.tag):
        if p.tag2 == 0 or (h & ~HAK_POOL_LOW_MASK) != p.tag2:
            return HAK_R_CLOSED if p.closed else HAK_R_TAG
    s = (h >> HAK_POOL_GEN_BITS) & HAK_POOL_SLOT_MASK
    c = <uint32_t>(s >> p.kshift)
    if hak_unlikely(c >= p.nchunks):
        return HAK_R_CLOSED if p.closed else HAK_R_RANGE   # a closed pool has no chunks
    ch = &p.chunks[c]
    if hak_unlikely(ch.state != HAK_PCHUNK_PRESENT):
        return HAK_R_FREED
    j = <uint32_t>s & ((1u << p.kshift) - 1)
    if hak_unlikely(ch.gen[j] != <uint16_t>(h & HAK_POOL_GEN_MASK) or not hak_gen_live(ch.gen[j])):
        return HAK_R_FREED
    cout[0] = ch
    jout[0] = j
    return HAK_R_OK


cdef inline void hak_pool_prefetch(hak_pool_t* p, uint64_t h, uint32_t off) noexcept nogil:
    """Start loading the generation and the record bytes of handle h (no checks needed:
    a bogus handle just prefetches nothing useful)."""
    cdef uint64_t s = (h >> HAK_POOL_GEN_BITS) & HAK_POOL_SLOT_MASK
    cdef uint32_t c = <uint32_t>(s >> p.kshift)
    cdef uint32_t j
    cdef hak_pchunk_t* ch
    if c < p.nchunks:
        ch = &p.chunks[c]
        if ch.rec != NULL:
            j = <uint32_t>s & ((1u << p.kshift) - 1)
            hak_prefetch(&ch.gen[j])
            hak_prefetch(ch.rec + <size_t>j * p.stride + off)


# The hot paths, inline (compiled into hakmem.records.pool). Callers hold p.lock.
cdef inline bint hak_pool_free_list_ok(hak_pool_t* p, uint32_t s, uint32_t nxt) noexcept nogil:
    """Cheap sanity check of a slot popped off the free list (a late write through a
    nogil pointer after free could have clobbered its link)."""
    cdef hak_pchunk_t* ch = &p.chunks[s >> p.kshift]
    if ch.state != HAK_PCHUNK_PRESENT or (ch.gen[s & ((1u << p.kshift) - 1)] & 1):
        return False
    return nxt == HAK_POOL_END or (nxt >> p.kshift) < p.nchunks


cdef inline char* hak_pool_alloc_locked(hak_pool_t* p, uint64_t* hout) noexcept nogil:
    """Pop a free slot and make it live; NULL when out of memory."""
    cdef uint32_t s, nxt, j
    cdef hak_pchunk_t* ch
    cdef char* r
    cdef uint16_t g
    if hak_unlikely(p.free_head == HAK_POOL_END):
        if hak_pool_grow(p) != 0:
            return NULL
    s = p.free_head
    ch = &p.chunks[s >> p.kshift]
    j = s & ((1u << p.kshift) - 1)
    r = ch.rec + <size_t>j * p.stride
    nxt = hak_ld32(r)
    if hak_unlikely(not hak_pool_free_list_ok(p, s, nxt)):
        hak_pool_rebuild_free(p)
        return hak_pool_alloc_locked(p, hout)
    g = ch.gen[j] + 1
    ch.gen[j] = g
    ch.live += 1
    p.free_head = nxt
    p.nfree -= 1
    p.live += 1
    p.allocs += 1
    hout[0] = p.tag | (<uint64_t>s << HAK_POOL_GEN_BITS) | g
    return r


cdef inline void hak_pool_release_slot(hak_pool_t* p, hak_pchunk_t* ch, uint32_t j,
                               uint64_t h) noexcept nogil:
    """Slot j of ch (generation already advanced to even g or not): push or retire."""
    cdef uint16_t g = ch.gen[j]
    cdef uint32_t s = <uint32_t>((h >> HAK_POOL_GEN_BITS) & HAK_POOL_SLOT_MASK)
    ch.live -= 1
    p.live -= 1
    p.frees += 1
    if hak_likely(g < HAK_POOL_GEN_LAST + 1):
        hak_st32(ch.rec + <size_t>j * p.stride, p.free_head)
        p.free_head = s
        p.nfree += 1
        return
    # Generation space of this slot used up: retire it for good.
    ch.gen[j] = HAK_POOL_GEN_RETIRED
    ch.retired += 1
    p.retired += 1
    if ch.retired == (1u << p.kshift):
        hak_pool_chunk_release(p, ch)
        ch.state = HAK_PCHUNK_DEAD


cdef inline int hak_pool_free_locked(hak_pool_t* p, uint64_t h) noexcept nogil:
    cdef hak_pchunk_t* ch
    cdef uint32_t j
    cdef int r = hak_pool_decode(p, h, &ch, &j)
    if hak_unlikely(r != HAK_R_OK):
        p.stale += 1
        return r
    ch.gen[j] += 1
    hak_pool_release_slot(p, ch, j, h)
    return HAK_R_OK


cdef inline int hak_pool_copy_locked(hak_pool_t* p, uint64_t h, char* buf, uint32_t off, uint32_t size,
                             bint store, bint count_stale) noexcept nogil:
    """Under p.lock: copy `size` bytes at `off` of the record of h into buf[off:]
    (store: from buf[off:] into the record; buf is then only read). An _R_* code;
    nothing is copied unless HAK_R_OK, else p.stale counts the refusal if count_stale
    (the Python API counts, the C API does not)."""
    cdef hak_pchunk_t* ch
    cdef uint32_t j
    cdef char* rec
    cdef int r
    hak_plock(&p.lock)
    r = hak_pool_decode(p, h, &ch, &j)
    if hak_likely(r == HAK_R_OK):
        rec = ch.rec + <size_t>j * p.stride + off
        if store:
            memcpy(rec, buf + off, size)
        else:
            memcpy(buf + off, rec, size)
    elif count_stale:
        p.stale += 1
    hak_punlock(&p.lock)
    return r


# Callers hold p.lock (the *_locked functions) or take it (the cimport API above).
cdef void hak_pool_chunk_release(hak_pool_t* p, hak_pchunk_t* ch) noexcept nogil
cdef void hak_pool_rebuild_free(hak_pool_t* p) noexcept nogil
cdef int hak_pool_grow(hak_pool_t* p) noexcept nogil
cdef size_t hak_pool_trim_locked(hak_pool_t* p) noexcept nogil
cdef void hak_pool_release_all(hak_pool_t* p) noexcept nogil
cdef Py_ssize_t hak_pool_gather_locked(hak_pool_t* p, const int64_t* hs, Py_ssize_t n,
                                       uint32_t off, uint32_t size, char* dst,
                                       int* rout) noexcept nogil
cdef void hak_pool_unmark(hak_pool_t* p, uint64_t h) noexcept nogil
cdef void hak_pool_release_marked(hak_pool_t* p, uint64_t h) noexcept nogil

# Pickling (GIL held): the state of a pool as a dict; checking a state (TypeError /
# ValueError naming the bad part) before loading it into a new, empty pool.
cdef dict hak_pool_snapshot(hak_pool_t* p)
cdef int hak_pool_check_state(hak_pool_t* p, object state) except -1
cdef int hak_pool_load(hak_pool_t* p, dict state, uint64_t tag) except -1
