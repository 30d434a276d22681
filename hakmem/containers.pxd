# hakmem.containers — typed record containers whose storage comes from hakmem.
#
#   from hakmem.containers cimport RecordVector, RecordDeque, RecordMap, HAK_C_OK
#
# The cdef API below is for Cython users. Every method marked `noexcept nogil` touches
# no Python object and may run without the GIL. Containers are NOT thread-safe: one
# thread at a time may use a given container (the allocator underneath is
# thread-safe, so different containers in different threads are fine). Record bytes
# are in the layout of the container's numpy dtype (`vec.dtype`), C alignment.
#
# Raw methods return HAK_C_OK (0) or a negative HAK_C_* code and never raise; a
# failed call leaves the container unchanged. Pointers from ptr_at / find_raw are
# valid until the next call that may move storage (an append past capacity,
# reserve, shrink, insert/delete, a map insert that grows, clear, close).
from libc.stdint cimport int64_t, uint64_t, uint32_t, uint8_t

cdef enum:
    HAK_C_OK = 0
    HAK_C_EXPORTED = -1     # would move a RecordVector buffer while a buffer export is alive
    HAK_C_NOMEM = -2        # the allocator returned NULL (or the size overflowed)
    HAK_C_CLOSED = -3       # the container was closed
    HAK_C_EMPTY = -4        # pop from an empty container
    HAK_C_MISSING = -5      # RecordMap: no such key
    HAK_C_RANGE = -6        # RecordMap: key outside the key type's range

# Field kinds of a record layout (one per numpy scalar type the specs accept; in this
# order: _Codec.get_field tests ranges of them).
cdef enum:
    HAK_K_I1 = 1
    HAK_K_I2
    HAK_K_I4
    HAK_K_I8
    HAK_K_U1
    HAK_K_U2
    HAK_K_U4
    HAK_K_U8
    HAK_K_F4
    HAK_K_F8
    HAK_K_BOOL
    HAK_K_BYTES

cdef struct hak_field_t:
    int kind
    Py_ssize_t offset
    Py_ssize_t size


cdef class _Codec:
    """Converts between Python values and the bytes of one record (a checked spec)."""
    cdef readonly object spec        # hakmem.spec.RecordSpec
    cdef readonly object dtype       # its numpy dtype
    cdef Py_ssize_t itemsize
    cdef Py_ssize_t nfields
    cdef bint padded                 # record has padding bytes: zero them on pack
    cdef hak_field_t* fields
    cdef dict index                  # field name -> position
    cdef tuple names
    cdef bytes fmt                   # PEP 3118 struct format of one record
    cdef int pack(self, char* dst, object rec, dict kw) except -1
    cdef int pack_field(self, char* dst, Py_ssize_t i, object v) except -1
    cdef tuple unpack(self, const char* src)
    cdef object get_field(self, const char* src, Py_ssize_t i)
    cdef int _bad_len(self, Py_ssize_t got) except -1
    cdef int _pack_dict(self, char* dst, dict d) except -1
    cdef object _as_int(self, Py_ssize_t i, object v)
    cdef int _type_error(self, Py_ssize_t i, object v, str want) except -1
    cdef int _range_error(self, Py_ssize_t i, object v) except -1


cdef class _RecordContainer:
    # What RecordVector, RecordDeque and RecordMap share: the codec of their records
    # and the closed flag (their Python API adds with-blocks and dtype/spec).
    cdef readonly bint closed            # True after close(), and until __init__ succeeds
    cdef readonly _Codec _codec
    cdef int _bind(self, object spec) except -1    # __init__: take the spec (once)


cdef class RecordVector(_RecordContainer):
    # Invariant: 0 <= n <= cap; data holds cap * itemsize bytes (NULL when cap == 0);
    # exports > 0 pins data (nothing may move or free it).
    cdef char* data
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef readonly Py_ssize_t itemsize    # bytes per record
    cdef readonly int exports            # live buffer exports pinning `data`

    # The address of record i (0 <= i < len; not checked).
    cdef inline char* ptr_at(self, Py_ssize_t i) noexcept nogil:
        return self.data + i * self.itemsize
    cdef int reserve_raw(self, Py_ssize_t cap) noexcept nogil
    cdef int append_raw(self, const void* rec) noexcept nogil
    cdef char* emplace_raw(self) noexcept nogil          # zeroed new last record, NULL on failure
    cdef int pop_raw(self, void* out) noexcept nogil     # out may be NULL
    cdef int _grow(self, Py_ssize_t need) noexcept nogil
    # private helpers of the Python API
    cdef int _same_spec(self, _Codec other) except -1
    cdef RecordVector _slice(self, slice s)
    cdef int _set_slice(self, slice s, value) except -1


cdef class RecordDeque(_RecordContainer):
    # Records live in chunks of nper (a power of two) records; `chunks` is a ring of
    # mcap chunk pointers (a power of two) whose live part starts at cfirst.
    # Record i sits at position head + i counted from the start of chunk cfirst.
    # Invariant: n == 0 -> nchunks == 0 and head == 0;
    #            n > 0  -> 0 <= head < nper and nchunks == ceil((head + n) / nper).
    # base_seq is the sequence number of record 0 (views use it to follow a record).
    cdef char** chunks
    cdef Py_ssize_t mcap
    cdef Py_ssize_t cfirst
    cdef Py_ssize_t nchunks
    cdef Py_ssize_t head
    cdef Py_ssize_t n
    cdef Py_ssize_t nper
    cdef int shift
    cdef Py_ssize_t itemsize
    cdef Py_ssize_t maxn             # maxlen; -1: unbounded
    cdef int64_t base_seq
    cdef uint64_t state              # bumped by every change of length (iterators check it)
    cdef char* spare                 # one free chunk kept to avoid churn at boundaries

    cdef inline char* ptr_at(self, Py_ssize_t i) noexcept nogil:
        cdef Py_ssize_t k = self.head + i
        return (self.chunks[(self.cfirst + (k >> self.shift)) & (self.mcap - 1)]
                + (k & (self.nper - 1)) * self.itemsize)
    cdef int append_raw(self, const void* rec) noexcept nogil
    cdef int appendleft_raw(self, const void* rec) noexcept nogil
    cdef int pop_raw(self, void* out) noexcept nogil       # out may be NULL
    cdef int popleft_raw(self, void* out) noexcept nogil   # out may be NULL
    cdef char* _new_chunk(self) noexcept nogil
    cdef void _drop_chunk(self, char* c) noexcept nogil
    cdef int _ring_room(self) noexcept nogil
    cdef void _release_all(self) noexcept nogil
    # private helpers of the Python API
    cdef int _push(self, rec, dict fields, bint left) except -1
    cdef int _push_all(self, src, bint left) except -1
    cdef object maxlen_obj(self)


cdef class RecordMap(_RecordContainer):
    # Compact open addressing (the layout and probe sequence of CPython's dict):
    # `table` (tcap = 2**tbits uint32 slots) holds entry numbers, EMPTY or DUMMY;
    # `entries` holds ecap entries of estride bytes (uint64 key, then the record at +8)
    # in insertion order; alive[j] says whether entry j is live. Invariants: n <= eused <= ecap == tcap * 2 // 3;
    # exactly eused table slots are non-empty (deleted entries leave DUMMY slots until
    # the next resize compacts them).
    cdef uint32_t* table
    cdef char* entries
    cdef uint8_t* alive
    cdef Py_ssize_t tcap
    cdef int tbits
    cdef Py_ssize_t ecap
    cdef Py_ssize_t eused
    cdef Py_ssize_t n
    cdef Py_ssize_t estride
    cdef Py_ssize_t itemsize
    cdef int keykind                 # HAK_K_I1 .. HAK_K_U8
    cdef int64_t kmin                # signed kinds: the key range
    cdef int64_t kmax
    cdef uint64_t umax               # unsigned kinds: the largest key
    cdef uint64_t version            # bumped when a key is added or removed
    cdef readonly object key_dtype

    # Keys are passed as int64_t; for a "u8" map pass the key's bits (<int64_t>ukey).
    cdef bint key_ok(self, int64_t key) noexcept nogil      # key in the key type's range
    cdef char* find_raw(self, int64_t key) noexcept nogil   # record of key, or NULL
    cdef char* insert_raw(self, int64_t key, bint* created) noexcept nogil  # slot (zeroed if new); NULL on failure
    cdef int set_raw(self, int64_t key, const void* rec) noexcept nogil
    cdef int remove_raw(self, int64_t key, void* out) noexcept nogil      # out may be NULL
    cdef Py_ssize_t _slot_of(self, uint64_t key) noexcept nogil      # table slot or -1
    cdef int _resize(self, Py_ssize_t min_usable) noexcept nogil
    # private helpers of the Python API
    cdef int _key(self, object k, int64_t* out) except -1
    cdef object _key_obj(self, uint64_t bits)
    cdef int _range_error(self, k) except -1
    cdef int _bulk_set(self, keys, const char* src, Py_ssize_t m) except -1
    cdef tuple _key_bits(self, keys)
