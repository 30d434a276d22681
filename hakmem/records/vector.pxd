# hakmem.records.vector — RecordVector: a growable contiguous array of records.
#
#   from hakmem.records.vector cimport RecordVector      (or from hakmem.containers)
#
# The cdef API is for Cython users. Methods marked `noexcept nogil` touch no Python
# object. Not thread-safe: one thread at a time per vector. Raw methods return
# HAK_C_OK (0) or a negative HAK_C_* code (hakmem.records.view) and never raise; a
# failed call leaves the vector unchanged. ptr_at pointers are valid until the next
# call that may move storage (append past capacity, reserve, shrink, insert/delete,
# clear, close).
from libc.stdint cimport int64_t
from hakmem.records.view cimport RecordContainer


cdef class RecordVector(RecordContainer):
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
    # for the other record modules (Python API helpers)
    cdef int room(self, Py_ssize_t need) except -1       # grow to need records or raise
    cdef int stage(self, object src) except -1           # append src's records (extend)
    cdef RecordVector _slice(self, slice s)
    cdef int _set_slice(self, slice s, value) except -1


# A new empty open vector of codec's records (no spec parsing).
cdef RecordVector new_vector(object codec)
