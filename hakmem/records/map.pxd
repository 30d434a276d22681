# hakmem.records.map — RecordMap: an integer-keyed hash map of records stored inline.
#
#   from hakmem.records.map cimport RecordMap            (or from hakmem.containers)
#
# Not thread-safe (one thread at a time per map). Raw methods return HAK_C_OK or a
# negative HAK_C_* code (hakmem.records.view) and never raise. Pointers from find_raw
# / insert_raw are valid until the next insert that grows, clear or close.
from libc.stdint cimport int64_t, uint64_t, uint32_t, uint8_t
from hakmem.records.view cimport RecordContainer


cdef class RecordMap(RecordContainer):
    # Compact open addressing (the layout and probe sequence of CPython's dict):
    # `table` (tcap = 2**tbits uint32 slots) holds entry numbers, EMPTY or DUMMY;
    # `entries` holds ecap entries of estride bytes (uint64 key, then the record at +8)
    # in insertion order; alive[j] says whether entry j is live. Invariants:
    # n <= eused <= ecap == tcap * 2 // 3; exactly eused table slots are non-empty
    # (deleted entries leave DUMMY slots until the next resize compacts them).
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
    # Python API helpers
    cdef int _key(self, object k, int64_t* out) except -1
    cdef int _key_checked(self, object k, int64_t* out) except -1
    cdef object _key_obj(self, uint64_t bits)
    cdef int _bulk_set(self, keys, vals) except -1
    cdef tuple _key_bits(self, keys)
