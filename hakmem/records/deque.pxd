# hakmem.records.deque — RecordDeque: a double-ended queue of records on chunked storage.
#
#   from hakmem.records.deque cimport RecordDeque        (or from hakmem.containers)
#
# Not thread-safe (one thread at a time per deque). Raw methods return HAK_C_OK or a
# negative HAK_C_* code (hakmem.records.view) and never raise; `noexcept nogil` ones
# touch no Python object.
from libc.stdint cimport int64_t, uint64_t
from hakmem.records.view cimport RecordContainer


cdef class RecordDeque(RecordContainer):
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
    cdef bint _full_drop(self, bint drop_left) noexcept nogil
    cdef void _release_all(self) noexcept nogil
    # Python API helpers
    cdef int _push(self, rec, dict fields, bint left) except -1
    cdef int _push_all(self, src, bint left) except -1
