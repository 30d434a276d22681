# cython: binding=False
"""hakmem.records.deque — RecordDeque: a double-ended queue of records in chunks of up to
1 KiB from hakmem (the tiny classes), with O(1) pushes and pops at both ends.

Writes pack into scratch first (hakmem.records.codec); the index and the deque's
length are looked at only after every piece of user code has run, so a value or an
index whose conversion empties or closes the deque gets a clear error, never a write
into a freed chunk. Views (Record) follow their record by sequence number.
"""
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.number cimport PyIndex_Check, PyNumber_AsSsize_t
from libc.stdint cimport uintptr_t
from libc.string cimport memcpy

from hakmem.front cimport hak_malloc, hak_free
from hakmem.records.codec cimport Codec, HAK_SCRATCH
from hakmem.records.view cimport (Record, RecordContainer, make_view, make_detached,
                                  index_arg, norm_index, clamp_index,
                                  HAK_C_OK, HAK_C_NOMEM, HAK_C_CLOSED, HAK_C_EMPTY)
from hakmem.records.vector cimport RecordVector, new_vector

import numpy as np

__all__ = ["RecordDeque"]


cdef class RecordDeque(RecordContainer):
    """A double-ended queue of records on chunked hakmem storage.

    ``RecordDeque(spec, maxlen=None, data=None)``. O(1) ``append``, ``appendleft``,
    ``pop``, ``popleft``; ``extend``, ``extendleft``, ``insert``, ``rotate``, indexing
    (a :class:`Record` view that follows its record as the ends move), assignment,
    ``del``, ``len``, iteration. With ``maxlen``, pushing onto a full deque drops a
    record from the other end, as collections.deque does. Not thread-safe.
    """

    def __init__(self, spec, maxlen=None, data=None):
        cdef Py_ssize_t nper = 8, ml = -1
        if maxlen is not None:
            if not PyIndex_Check(maxlen):
                raise TypeError(f"maxlen must be an integer or None, not {type(maxlen).__name__}")
            ml = PyNumber_AsSsize_t(maxlen, OverflowError)
            if ml < 0:
                raise ValueError("maxlen must be non-negative")
        self.bind(spec)
        self.itemsize = self.codec.itemsize
        self.maxn = ml
        # chunks of up to 1 KiB (a hakmem tiny class), at least 8 records
        self.shift = 3
        while (nper * 2) * self.itemsize <= 1024:
            nper *= 2
            self.shift += 1
        self.nper = nper
        self.closed = False
        if data is not None:
            self.extend(data)

    def __dealloc__(self):
        self._release_all()
        hak_free(self.chunks)
        hak_free(self.spare)

    # ---------------------------------------------------------------- cdef API
    cdef char* _new_chunk(self) noexcept nogil:
        cdef char* c = self.spare
        if c != NULL:
            self.spare = NULL
            return c
        return <char*>hak_malloc(<size_t>(self.nper * self.itemsize))

    cdef void _drop_chunk(self, char* c) noexcept nogil:
        if self.spare == NULL:
            self.spare = c
        else:
            hak_free(c)

    cdef int _ring_room(self) noexcept nogil:
        """Room in the chunk ring for one more chunk (unwraps it when it grows)."""
        cdef Py_ssize_t ncap, k
        cdef char** nr
        if self.nchunks < self.mcap:
            return HAK_C_OK
        ncap = self.mcap * 2 if self.mcap else 8
        nr = <char**>hak_malloc(<size_t>ncap * sizeof(char*))
        if nr == NULL:
            return HAK_C_NOMEM
        for k in range(self.nchunks):
            nr[k] = self.chunks[(self.cfirst + k) & (self.mcap - 1)]
        hak_free(self.chunks)
        self.chunks = nr
        self.mcap = ncap
        self.cfirst = 0
        return HAK_C_OK

    cdef void _release_all(self) noexcept nogil:
        """Drop every record and chunk (the ring itself is kept)."""
        cdef Py_ssize_t k
        for k in range(self.nchunks):
            self._drop_chunk(self.chunks[(self.cfirst + k) & (self.mcap - 1)])
        self.base_seq += self.n
        self.nchunks = 0
        self.head = 0
        self.n = 0
        self.cfirst = 0

    cdef bint _full_drop(self, bint drop_left) noexcept nogil:
        """At maxlen, make room for one push by dropping a record from the other end
        (the left one when drop_left). True when maxlen is 0: the push stores nothing."""
        if self.maxn >= 0 and self.n >= self.maxn:
            if self.maxn == 0:
                return True
            if drop_left:
                self.popleft_raw(NULL)
            else:
                self.pop_raw(NULL)
        return False

    cdef int append_raw(self, const void* rec) noexcept nogil:
        """Push a copy of rec at the right end (drops the leftmost record when full)."""
        cdef Py_ssize_t k
        cdef char* c
        if self.closed:
            return HAK_C_CLOSED
        if self._full_drop(True):
            return HAK_C_OK
        k = self.head + self.n
        if (k >> self.shift) == self.nchunks:
            if self._ring_room() != HAK_C_OK:
                return HAK_C_NOMEM
            c = self._new_chunk()
            if c == NULL:
                return HAK_C_NOMEM
            self.chunks[(self.cfirst + self.nchunks) & (self.mcap - 1)] = c
            self.nchunks += 1
        memcpy(self.ptr_at(self.n), rec, self.itemsize)
        self.n += 1
        self.state += 1
        return HAK_C_OK

    cdef int appendleft_raw(self, const void* rec) noexcept nogil:
        """Push a copy of rec at the left end (drops the rightmost record when full)."""
        cdef char* c
        if self.closed:
            return HAK_C_CLOSED
        if self._full_drop(False):
            return HAK_C_OK
        if self.head == 0:
            if self._ring_room() != HAK_C_OK:
                return HAK_C_NOMEM
            c = self._new_chunk()
            if c == NULL:
                return HAK_C_NOMEM
            self.cfirst = (self.cfirst - 1) & (self.mcap - 1)
            self.chunks[self.cfirst] = c
            self.nchunks += 1
            self.head = self.nper
        self.head -= 1
        self.n += 1
        self.base_seq -= 1
        self.state += 1
        memcpy(self.ptr_at(0), rec, self.itemsize)
        return HAK_C_OK

    cdef int pop_raw(self, void* out) noexcept nogil:
        """Remove the rightmost record (copied to out unless out is NULL)."""
        cdef Py_ssize_t k
        if self.closed:
            return HAK_C_CLOSED
        if self.n == 0:
            return HAK_C_EMPTY
        if out != NULL:
            memcpy(out, self.ptr_at(self.n - 1), self.itemsize)
        self.n -= 1
        self.state += 1
        if self.n == 0:
            self._release_all()
            return HAK_C_OK
        k = self.head + self.n
        if (k & (self.nper - 1)) == 0:        # the last chunk is now empty
            self.nchunks -= 1
            self._drop_chunk(self.chunks[(self.cfirst + self.nchunks) & (self.mcap - 1)])
        return HAK_C_OK

    cdef int popleft_raw(self, void* out) noexcept nogil:
        """Remove the leftmost record (copied to out unless out is NULL)."""
        if self.closed:
            return HAK_C_CLOSED
        if self.n == 0:
            return HAK_C_EMPTY
        if out != NULL:
            memcpy(out, self.ptr_at(0), self.itemsize)
        self.n -= 1
        self.base_seq += 1
        self.state += 1
        if self.n == 0:
            self._release_all()
            return HAK_C_OK
        self.head += 1
        if self.head == self.nper:            # the first chunk is now empty
            self._drop_chunk(self.chunks[self.cfirst])
            self.cfirst = (self.cfirst + 1) & (self.mcap - 1)
            self.nchunks -= 1
            self.head = 0
        return HAK_C_OK

    # ---------------------------------------------------------------- views
    cdef char* view_addr(self, int64_t seq) except NULL:
        cdef int64_t i = seq - self.base_seq
        self.check_open()
        if i < 0 or i >= self.n:
            raise IndexError("the record this view refers to has left the RecordDeque")
        return self.ptr_at(i)

    cdef object view_key(self, int64_t pos):
        return pos - self.base_seq if self.base_seq <= pos < self.base_seq + self.n else None

    cdef object records(self):
        return self.to_numpy()

    # ---------------------------------------------------------------- Python API
    cdef int _push(self, rec, dict fields, bint left) except -1:
        cdef char tmp[HAK_SCRATCH]
        cdef char* p = tmp
        cdef int rc
        if self.itemsize > HAK_SCRATCH:
            buf = bytearray(self.itemsize)
            p = PyByteArray_AS_STRING(buf)
        self.codec.pack(p, rec, fields)
        rc = self.appendleft_raw(p) if left else self.append_raw(p)   # they check closed
        if rc != HAK_C_OK:
            self.raise_rc(rc)
        return 0

    def append(self, rec=None, /, **fields):
        """Add a record at the right end (a tuple/list/dict/Record or keyword fields)."""
        self._push(rec, fields, False)

    def appendleft(self, rec=None, /, **fields):
        """Add a record at the left end."""
        self._push(rec, fields, True)

    def pop(self):
        """Remove and return the rightmost record (detached); IndexError if empty."""
        self.check_open()
        if self.n == 0:
            raise IndexError("pop from an empty RecordDeque")
        r = make_detached(self.codec, self.ptr_at(self.n - 1))
        self.pop_raw(NULL)
        return r

    def popleft(self):
        """Remove and return the leftmost record (detached); IndexError if empty."""
        self.check_open()
        if self.n == 0:
            raise IndexError("pop from an empty RecordDeque")
        r = make_detached(self.codec, self.ptr_at(0))
        self.popleft_raw(NULL)
        return r

    cdef int _push_all(self, src, bint left) except -1:
        """Convert every record of src first (all or nothing), then push them one by
        one at the left or the right end (no user code runs while pushing)."""
        cdef RecordVector tmp
        cdef Py_ssize_t k
        cdef int rc
        self.check_open()
        tmp = new_vector(self.codec)
        tmp.stage(src)
        for k in range(tmp.n):
            rc = self.appendleft_raw(tmp.ptr_at(k)) if left else self.append_raw(tmp.ptr_at(k))
            if rc != HAK_C_OK:
                self.raise_rc(rc)
        return 0

    def extend(self, src):
        """Append every record of src at the right end (all or nothing)."""
        self._push_all(src, False)

    def extendleft(self, src):
        """appendleft every record of src in turn (so they end up reversed)."""
        self._push_all(src, True)

    def insert(self, index, rec=None, /, **fields):
        """Insert a record before index; IndexError if the deque is at maxlen."""
        cdef Py_ssize_t i, j
        cdef int rc
        i = PyNumber_AsSsize_t(index, None)  # clips huge values, as list.insert does
        tmp = bytearray(self.itemsize)
        self.codec.pack(PyByteArray_AS_STRING(tmp), rec, fields)
        self.check_open()                    # after all user code: the deque as it is now
        if self.maxn >= 0 and self.n >= self.maxn:
            raise IndexError("RecordDeque already at its maximum size")
        i = clamp_index(i, self.n)
        if i == 0:
            rc = self.appendleft_raw(PyByteArray_AS_STRING(tmp))
        else:
            rc = self.append_raw(PyByteArray_AS_STRING(tmp))
            if rc == HAK_C_OK:
                j = self.n - 1
                while j > i:
                    memcpy(self.ptr_at(j), self.ptr_at(j - 1), self.itemsize)
                    j -= 1
                memcpy(self.ptr_at(i), PyByteArray_AS_STRING(tmp), self.itemsize)
        if rc != HAK_C_OK:
            self.raise_rc(rc)

    def rotate(self, Py_ssize_t k=1):
        """Rotate k steps to the right (left if k is negative), like deque.rotate."""
        cdef Py_ssize_t n = self.n, s
        self.check_open()
        if n <= 1:
            return
        k %= n
        if k < 0:
            k += n
        if k == 0:
            return
        # With ring room for one more chunk and a spare chunk in hand, moving records
        # one at a time between the ends never allocates: the chunk one end needs is
        # the one the other end has just given back (or the spare).
        if self._ring_room() != HAK_C_OK:
            self.raise_rc(HAK_C_NOMEM)
        if self.spare == NULL:
            self.spare = <char*>hak_malloc(<size_t>(self.nper * self.itemsize))
            if self.spare == NULL:
                self.raise_rc(HAK_C_NOMEM)
        tmp = bytearray(self.itemsize)
        if k <= n - k:
            for s in range(k):
                self.pop_raw(PyByteArray_AS_STRING(tmp))
                self.appendleft_raw(PyByteArray_AS_STRING(tmp))
        else:
            for s in range(n - k):
                self.popleft_raw(PyByteArray_AS_STRING(tmp))
                self.append_raw(PyByteArray_AS_STRING(tmp))

    def clear(self):
        """Remove every record and free the chunks."""
        self.check_open()
        self._release_all()
        self.state += 1
        hak_free(self.spare)
        self.spare = NULL

    def __len__(self):
        return self.n

    def __getitem__(self, idx):
        cdef Py_ssize_t i = index_arg(idx, "RecordDeque")
        self.check_open()
        i = norm_index(i, self.n, "RecordDeque")
        return make_view(self, self.codec, self.base_seq + i)

    def __setitem__(self, idx, value):
        cdef Py_ssize_t i = index_arg(idx, "RecordDeque")
        tmp = bytearray(self.itemsize)
        self.codec.pack(PyByteArray_AS_STRING(tmp), value, None)
        self.check_open()
        i = norm_index(i, self.n, "RecordDeque")
        memcpy(self.ptr_at(i), PyByteArray_AS_STRING(tmp), self.itemsize)

    def __delitem__(self, idx):
        cdef Py_ssize_t j, i = index_arg(idx, "RecordDeque")
        self.check_open()
        i = norm_index(i, self.n, "RecordDeque")
        if i < self.n // 2:
            j = i
            while j > 0:
                memcpy(self.ptr_at(j), self.ptr_at(j - 1), self.itemsize)
                j -= 1
            self.popleft_raw(NULL)
        else:
            for j in range(i, self.n - 1):
                memcpy(self.ptr_at(j), self.ptr_at(j + 1), self.itemsize)
            self.pop_raw(NULL)

    def __iter__(self):
        cdef Py_ssize_t i = 0
        cdef uint64_t state = self.state
        self.check_open()
        while i < self.n:
            yield make_view(self, self.codec, self.base_seq + i)
            if self.state != state or self.closed:
                raise RuntimeError("RecordDeque mutated during iteration")
            i += 1

    def __reversed__(self):
        cdef Py_ssize_t i = self.n - 1
        cdef uint64_t state = self.state
        self.check_open()
        while i >= 0:
            yield make_view(self, self.codec, self.base_seq + i)
            if self.state != state or self.closed:
                raise RuntimeError("RecordDeque mutated during iteration")
            i -= 1

    def tolist(self):
        """The records as a list of tuples, left to right."""
        cdef Py_ssize_t i
        self.check_open()
        return [self.codec.unpack(self.ptr_at(i)) for i in range(self.n)]

    def to_numpy(self):
        """A numpy copy of the records, left to right."""
        cdef Py_ssize_t i
        cdef char* dst
        self.check_open()
        out = np.empty(self.n, self.codec.dtype)
        dst = <char*><uintptr_t>out.__array_interface__["data"][0]
        for i in range(self.n):
            memcpy(dst + i * self.itemsize, self.ptr_at(i), self.itemsize)
        return out

    def copy(self):
        """A new RecordDeque with the same records and maxlen."""
        self.check_open()
        return RecordDeque(self.codec, self.maxlen, self.to_numpy())

    def close(self):
        """Free the storage now. Idempotent."""
        if self.closed:
            return
        self._release_all()
        hak_free(self.chunks)
        hak_free(self.spare)
        self.chunks = NULL
        self.spare = NULL
        self.mcap = 0
        self.closed = True

    @property
    def maxlen(self):
        """The maximum length, or None if unbounded."""
        return None if self.maxn < 0 else self.maxn

    @property
    def nbytes(self):
        """Bytes of hakmem memory held (chunks, the spare chunk and the chunk ring)."""
        cdef Py_ssize_t c = self.nchunks + (1 if self.spare != NULL else 0)
        return c * self.nper * self.itemsize + self.mcap * <Py_ssize_t>sizeof(char*)

    def __repr__(self):
        if self.closed:
            return "<closed RecordDeque>"
        ml = "" if self.maxn < 0 else f", maxlen={self.maxn}"
        return f"RecordDeque({self.codec.spec_str()!r}, len={self.n}{ml})"

    def __reduce__(self):
        self.check_open()
        return (RecordDeque, (self.codec.dtype, self.maxlen, self.to_numpy()))
