# cython: binding=False
"""hakmem.records.vector — RecordVector: a growable contiguous array of records held
inline in hakmem memory (no Python object per element), usable from Cython without
the GIL (see vector.pxd).

Every write packs the record into scratch first (hakmem.records.codec), then re-checks
the vector (closed? length now? capacity? buffer exported?) and commits with memcpy,
so user code run by a value (``__float__``, ``__index__``, a generator) can append,
clear or close the vector without corrupting it. Indices and slices are converted
before they are checked against the length.
"""
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.number cimport PyIndex_Check, PyNumber_AsSsize_t
from cpython.object cimport PyObject
from cpython.slice cimport PySlice_Unpack, PySlice_AdjustIndices
from libc.stdint cimport int64_t, uintptr_t
from libc.string cimport memcpy, memmove, memset

from hakmem.front cimport hak_realloc, hak_free
from hakmem.records.codec cimport (Codec, codec_for, hak_pack_plain, hak_pack_fast,
                                   HAK_SCRATCH)
from hakmem.records.view cimport (Record, RecordContainer, make_view, make_detached,
                                  index_arg, norm_index, clamp_index, hak_add_fastcall,
                                  HAK_C_OK, HAK_C_EXPORTED, HAK_C_NOMEM, HAK_C_CLOSED,
                                  HAK_C_EMPTY)

import numpy as np

__all__ = ["RecordVector", "vector_from_bytes"]

cdef extern from "Python.h":
    bint PyLong_CheckExact(object)
    const Py_ssize_t PY_SSIZE_T_MAX

cdef char _empty_buf[16]            # buffer address of an empty vector (never written)


cdef RecordVector new_vector(object codec):
    cdef RecordVector v = RecordVector.__new__(RecordVector)
    v.codec = <Codec>codec
    v.itemsize = v.codec.itemsize
    v.closed = False
    return v


cdef int _vec_realloc(RecordVector v, Py_ssize_t cap) noexcept nogil:
    """Move v's records to a buffer of exactly cap (>= v.n) records; the caller has
    checked that no buffer export pins it. HAK_C_OK or HAK_C_NOMEM (v unchanged)."""
    cdef void* p
    if cap > PY_SSIZE_T_MAX // v.itemsize:
        return HAK_C_NOMEM
    p = hak_realloc(v.data, <size_t>(cap * v.itemsize))
    if p == NULL:
        return HAK_C_NOMEM
    v.data = <char*>p
    v.cap = cap
    return HAK_C_OK


cdef class RecordVector(RecordContainer):
    """A growable contiguous array of records in hakmem memory.

    ``RecordVector(spec, data=None)``: spec as accepted by :func:`hakmem.spec.parse_spec`;
    data (optional) is anything :meth:`extend` takes. Behaves like a list of records:
    ``append``, ``extend``, ``insert``, ``pop``, indexing (an int gives a :class:`Record`
    view, a slice a new vector), assignment, ``del``, ``len``, iteration, ``sort``.
    It exports its buffer: ``np.asarray(vec)`` is a zero-copy structured array and
    ``memoryview(vec)`` works; while an export is alive, anything that would move the
    buffer (growth past capacity, ``reserve``, ``shrink_to_fit``, ``close``) raises
    BufferError. Not thread-safe.
    """

    def __init__(self, spec, data=None):
        self.bind(spec)
        self.itemsize = self.codec.itemsize
        self.closed = False
        if data is not None:
            self.extend(data)

    def __dealloc__(self):
        hak_free(self.data)

    # ---------------------------------------------------------------- cdef API
    cdef int _grow(self, Py_ssize_t need) noexcept nogil:
        """Make room for `need` records (amortised 1.5x growth)."""
        cdef Py_ssize_t ncap
        if self.exports > 0:
            return HAK_C_EXPORTED
        ncap = self.cap + (self.cap >> 1) + 8
        if ncap < need:
            ncap = need
        if ncap > PY_SSIZE_T_MAX // self.itemsize:
            ncap = need                 # too big to over-allocate: try exactly need
        return _vec_realloc(self, ncap)

    cdef int reserve_raw(self, Py_ssize_t cap) noexcept nogil:
        """Capacity for at least `cap` records (exactly `cap` if it has to grow)."""
        if self.closed:
            return HAK_C_CLOSED
        if cap <= self.cap:
            return HAK_C_OK
        if self.exports > 0:
            return HAK_C_EXPORTED
        return _vec_realloc(self, cap)

    cdef int append_raw(self, const void* rec) noexcept nogil:
        """Copy itemsize bytes from rec to a new last record."""
        cdef int rc
        if self.closed:
            return HAK_C_CLOSED
        if self.n == self.cap:
            rc = self._grow(self.n + 1)
            if rc != HAK_C_OK:
                return rc
        memcpy(self.data + self.n * self.itemsize, rec, self.itemsize)
        self.n += 1
        return HAK_C_OK

    cdef char* emplace_raw(self) noexcept nogil:
        """A new zeroed last record, to be filled in place (NULL if it cannot grow)."""
        cdef char* p
        if self.closed:
            return NULL
        if self.n == self.cap and self._grow(self.n + 1) != HAK_C_OK:
            return NULL
        p = self.data + self.n * self.itemsize
        memset(p, 0, self.itemsize)
        self.n += 1
        return p

    cdef int pop_raw(self, void* out) noexcept nogil:
        """Remove the last record, copying it to out unless out is NULL."""
        if self.closed:
            return HAK_C_CLOSED
        if self.n == 0:
            return HAK_C_EMPTY
        self.n -= 1
        if out != NULL:
            memcpy(out, self.data + self.n * self.itemsize, self.itemsize)
        return HAK_C_OK

    cdef int room(self, Py_ssize_t need) except -1:
        """Open, and room for need records: else ValueError / MemoryError / BufferError."""
        cdef int rc
        self.check_open()
        if need > self.cap:
            rc = self._grow(need)
            if rc != HAK_C_OK:
                self.raise_rc(rc)
        return 0

    # ---------------------------------------------------------------- views
    cdef char* view_addr(self, int64_t pos) except NULL:
        self.check_open()
        if pos >= self.n:
            raise IndexError(f"record view at index {pos}: the RecordVector has "
                             f"only {self.n} records now")
        return self.data + pos * self.itemsize

    cdef object records(self):
        return self.to_numpy()

    # ---------------------------------------------------------------- Python API
    def append(self, rec=None, /, **fields):
        """Append one record: a tuple/list/dict/Record, or the fields as keywords."""
        # replaced at import by the METH_FASTCALL version below (_vector_append)
        _vector_append(self, rec, fields)

    cdef int stage(self, object src) except -1:
        """extend()'s conversion: append every record of src to this vector, which no
        user code can see (it is new), so src may run any code meanwhile."""
        cdef Py_ssize_t m, k = 0
        if isinstance(src, RecordContainer) and not hasattr(src, "keys"):
            if (<RecordContainer>src).codec is not self.codec:
                if (<RecordContainer>src).codec.dtype != self.codec.dtype:
                    raise TypeError(f"record specs differ: {(<RecordContainer>src).codec.dtype}"
                                    f" vs {self.codec.dtype}")
            src = (<RecordContainer>src).records()
        if isinstance(src, np.ndarray):
            a = self.codec.coerce(src)
            m = a.shape[0]
            self.room(self.n + m)
            if m:
                memcpy(self.data + self.n * self.itemsize,
                       <char*><uintptr_t>a.__array_interface__["data"][0], m * self.itemsize)
            self.n += m
            return 0
        if isinstance(src, (str, bytes, dict)):
            raise TypeError(f"extend() needs an iterable of records, not {type(src).__name__}")
        for rec in src:
            if self.n == self.cap:
                self.room(self.n + 1)
            hak_pack_fast(self.codec, self.data + self.n * self.itemsize, rec)
            self.n += 1
        return 0

    def extend(self, src):
        """Append every record of src: an iterable of records, a numpy structured array
        (same fields; values are range-checked), a RecordVector or a RecordDeque.
        All or nothing: if one record is refused, nothing is appended."""
        cdef RecordVector st
        self.check_open()
        if isinstance(src, RecordVector) and (<RecordVector>src).codec is self.codec:
            st = <RecordVector>src
            st.check_open()
            if st is self:
                st = st.copy()
        else:
            st = new_vector(self.codec)
            st.stage(src)
        self.room(self.n + st.n)         # re-checked: src may have run code
        if st.n:
            memcpy(self.data + self.n * self.itemsize, st.data, st.n * self.itemsize)
        self.n += st.n

    def insert(self, index, rec=None, /, **fields):
        """Insert a record before index (clamped like list.insert)."""
        cdef Py_ssize_t i
        cdef char tmp[HAK_SCRATCH]
        cdef char* p = tmp
        self.check_open()
        i = PyNumber_AsSsize_t(index, None)  # clips huge values, as list.insert does
        if self.itemsize > HAK_SCRATCH:
            buf = bytearray(self.itemsize)
            p = PyByteArray_AS_STRING(buf)
        self.codec.pack(p, rec, fields)
        self.room(self.n + 1)
        i = clamp_index(i, self.n)
        memmove(self.data + (i + 1) * self.itemsize, self.data + i * self.itemsize,
                (self.n - i) * self.itemsize)
        memcpy(self.data + i * self.itemsize, p, self.itemsize)
        self.n += 1

    def pop(self, index=-1):
        """Remove and return the record at index (last by default) as a detached Record."""
        cdef Py_ssize_t i = -1
        if not (PyLong_CheckExact(index) and index == -1):
            i = index_arg(index, "pop")
        self.check_open()
        if self.n == 0:
            raise IndexError("pop from an empty RecordVector")
        i = norm_index(i, self.n, "pop")
        r = make_detached(self.codec, self.data + i * self.itemsize)
        memmove(self.data + i * self.itemsize, self.data + (i + 1) * self.itemsize,
                (self.n - i - 1) * self.itemsize)
        self.n -= 1
        return r

    def __len__(self):
        return self.n

    def __getitem__(self, idx):
        cdef Py_ssize_t i
        if PyLong_CheckExact(idx):
            i = PyNumber_AsSsize_t(idx, IndexError)
            self.check_open()
            if i < 0:
                i += self.n
            if <size_t>i >= <size_t>self.n:
                raise IndexError("RecordVector index out of range")
            return make_view(self, self.codec, i)
        if isinstance(idx, slice):
            return self._slice(idx)
        if not PyIndex_Check(idx):
            raise TypeError(f"RecordVector indices must be integers or slices, "
                            f"not {type(idx).__name__}")
        i = index_arg(idx, "RecordVector")
        self.check_open()
        return make_view(self, self.codec, norm_index(i, self.n, "RecordVector"))

    cdef RecordVector _slice(self, slice s):
        cdef Py_ssize_t start, stop, step, m, k
        cdef RecordVector out = new_vector(self.codec)
        PySlice_Unpack(s, &start, &stop, &step)         # runs __index__: before the length
        self.check_open()
        m = PySlice_AdjustIndices(self.n, &start, &stop, step)
        if m:
            out.room(m)
            if step == 1:
                if m:                   # an empty vector may have no storage (NULL)
                    memcpy(out.data, self.data + start * self.itemsize, m * self.itemsize)
            else:
                for k in range(m):
                    memcpy(out.data + k * self.itemsize,
                           self.data + (start + k * step) * self.itemsize, self.itemsize)
            out.n = m
        return out

    def __setitem__(self, idx, value):
        cdef Py_ssize_t i
        cdef char tmp[HAK_SCRATCH]
        cdef char* p = tmp
        if isinstance(idx, slice):
            self._set_slice(idx, value)
            return
        i = index_arg(idx, "RecordVector assignment")
        if self.itemsize > HAK_SCRATCH:
            buf = bytearray(self.itemsize)
            p = PyByteArray_AS_STRING(buf)
        self.codec.pack(p, value, None)
        self.check_open()
        i = norm_index(i, self.n, "RecordVector assignment")
        memcpy(self.data + i * self.itemsize, p, self.itemsize)

    cdef int _set_slice(self, slice s, value) except -1:
        cdef Py_ssize_t start, stop, step, m, k, newn
        cdef RecordVector src
        PySlice_Unpack(s, &start, &stop, &step)
        src = new_vector(self.codec)
        src.stage(value)            # every record converted before self is looked at
        self.check_open()
        m = PySlice_AdjustIndices(self.n, &start, &stop, step)
        if step != 1:
            if src.n != m:
                raise ValueError(f"attempt to assign sequence of size {src.n} to extended "
                                 f"slice of size {m}")
            for k in range(m):
                memcpy(self.data + (start + k * step) * self.itemsize,
                       src.data + k * self.itemsize, self.itemsize)
            return 0
        newn = self.n - m + src.n
        self.room(newn)
        if self.n - start - m:        # an empty vector may have no storage (NULL)
            memmove(self.data + (start + src.n) * self.itemsize,
                    self.data + (start + m) * self.itemsize, (self.n - start - m) * self.itemsize)
        if src.n:
            memcpy(self.data + start * self.itemsize, src.data, src.n * self.itemsize)
        self.n = newn
        return 0

    def __delitem__(self, idx):
        cdef Py_ssize_t i, start, stop, step, m, k, w, lo
        if isinstance(idx, slice):
            PySlice_Unpack(idx, &start, &stop, &step)
            self.check_open()
            m = PySlice_AdjustIndices(self.n, &start, &stop, step)
            if m == 0:
                return
            if step < 0:                  # the same records, walked upwards
                start = start + (m - 1) * step
                step = -step
            lo = start
            w = start
            for k in range(start, self.n):
                if k < lo + m * step and (k - lo) % step == 0:
                    continue
                if w != k:
                    memcpy(self.data + w * self.itemsize, self.data + k * self.itemsize,
                           self.itemsize)
                w += 1
            self.n = w
            return
        i = index_arg(idx, "RecordVector assignment")
        self.check_open()
        i = norm_index(i, self.n, "RecordVector assignment")
        memmove(self.data + i * self.itemsize, self.data + (i + 1) * self.itemsize,
                (self.n - i - 1) * self.itemsize)
        self.n -= 1

    def __iter__(self):
        cdef Py_ssize_t i = 0
        while i < self.n and not self.closed:
            yield make_view(self, self.codec, i)
            i += 1

    def reserve(self, Py_ssize_t n):
        """Make room for at least n records without moving the buffer again."""
        if n < 0:
            raise ValueError("reserve() needs a non-negative count")
        rc = self.reserve_raw(n)
        if rc != HAK_C_OK:
            self.raise_rc(rc)

    def shrink_to_fit(self):
        """Give back the memory past len (BufferError while exported)."""
        cdef int rc
        self.check_open()
        if self.cap == self.n:
            return
        if self.exports > 0:
            self.raise_rc(HAK_C_EXPORTED)
        if self.n == 0:
            hak_free(self.data)
            self.data = NULL
            self.cap = 0
            return
        rc = _vec_realloc(self, self.n)
        if rc != HAK_C_OK:
            self.raise_rc(rc)

    def clear(self):
        """Remove every record (the capacity is kept; see shrink_to_fit)."""
        self.check_open()
        self.n = 0

    def sort(self, order=None, *, reverse=False):
        """Sort in place (stable) by a field name, a list of field names, or by all
        fields in spec order when order is None. reverse=True sorts descending and,
        like list.sort, keeps equal records in their original order."""
        cdef bint rev = bool(reverse)
        names = self.codec.names if order is None else (
            [order] if isinstance(order, str) else list(order))
        names = [self.codec.names[self.codec.field(f)] for f in names]
        self.check_open()
        if self.n < 2:
            return
        arr = np.asarray(self)          # an export: the buffer cannot move meanwhile
        src = arr[::-1] if rev else arr
        idx = np.lexsort([src[f] for f in reversed(names)])
        if rev:
            idx = (self.n - 1 - idx)[::-1]
        arr[:] = arr[idx]

    def tolist(self):
        """The records as a list of tuples."""
        cdef Py_ssize_t i
        self.check_open()
        return [self.codec.unpack(self.data + i * self.itemsize) for i in range(self.n)]

    def as_array(self):
        """A zero-copy numpy structured array over the records, like np.asarray(vec) but
        about 100x cheaper: numpy parses the PEP 3118 format of a structured buffer in
        Python (tens of microseconds); np.frombuffer with the dtype skips that. The array
        holds a buffer export, so the vector's buffer is pinned while it lives."""
        self.check_open()
        return np.frombuffer(self, self.codec.dtype)

    def to_numpy(self):
        """A numpy copy of the records (np.asarray(vec) is the zero-copy view)."""
        self.check_open()
        out = np.empty(self.n, self.codec.dtype)
        if self.n:
            memcpy(<char*><uintptr_t>out.__array_interface__["data"][0], self.data,
                   self.n * self.itemsize)
        return out

    def copy(self):
        """A new RecordVector with the same records."""
        cdef RecordVector out = new_vector(self.codec)
        self.check_open()
        out.room(self.n)
        if self.n:
            memcpy(out.data, self.data, self.n * self.itemsize)
        out.n = self.n
        return out

    def close(self):
        """Free the storage now (BufferError while exported). Idempotent."""
        if self.closed:
            return
        if self.exports > 0:
            self.raise_rc(HAK_C_EXPORTED)
        hak_free(self.data)
        self.data = NULL
        self.n = self.cap = 0
        self.closed = True

    @property
    def capacity(self):
        """Records that fit before the buffer has to move."""
        return self.cap

    @property
    def nbytes(self):
        """Bytes of hakmem memory held (capacity * itemsize)."""
        return self.cap * self.itemsize

    @property
    def address(self):
        """Address of the first record (0 when nothing is allocated)."""
        return <uintptr_t>self.data

    def __repr__(self):
        if self.closed:
            return "<closed RecordVector>"
        return f"RecordVector({self.codec.spec_str()!r}, len={self.n})"

    def __reduce__(self):
        self.check_open()
        return (vector_from_bytes, (self.codec.dtype,
                                    PyBytes_FromStringAndSize(self.data, self.n * self.itemsize)))

    def __getbuffer__(self, Py_buffer* buf, int flags):
        cdef Py_ssize_t* dims
        self.check_open()
        dims = <Py_ssize_t*>PyMem_Malloc(2 * sizeof(Py_ssize_t))
        if dims == NULL:
            raise MemoryError()
        dims[0] = self.n               # per export: later appends do not change its shape
        dims[1] = self.itemsize
        buf.buf = self.data if self.data != NULL else _empty_buf
        buf.obj = self
        buf.len = self.n * self.itemsize
        buf.readonly = 0
        buf.itemsize = self.itemsize
        buf.format = PyBytes_AS_STRING(self.codec.fmt) if flags & PyBUF_FORMAT else NULL
        buf.ndim = 1
        buf.shape = dims if (flags & PyBUF_ND) == PyBUF_ND else NULL
        buf.strides = dims + 1 if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        buf.suboffsets = NULL
        buf.internal = dims
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* buf):
        PyMem_Free(buf.internal)
        self.exports -= 1


cdef int _vector_append(RecordVector v, object rec, dict fields) except -1:
    """Pack into scratch (user code runs here), then re-check v and commit. A plain
    record (no user code to run) is written in place when there is room."""
    cdef char tmp[HAK_SCRATCH]
    cdef char* p = tmp
    cdef int rc
    if fields is None and v.n < v.cap and hak_pack_plain(v.codec, v.data + v.n * v.itemsize, rec):
        v.n += 1                        # (a closed vector has cap 0: never here)
        return 0
    if v.itemsize > HAK_SCRATCH:
        buf = bytearray(v.itemsize)
        p = PyByteArray_AS_STRING(buf)
    if fields is None:
        hak_pack_fast(v.codec, p, rec)
    else:
        v.codec.pack(p, rec, fields)
    if v.closed:
        v.check_open()
    if v.n == v.cap:
        rc = v._grow(v.n + 1)
        if rc != HAK_C_OK:
            v.raise_rc(rc)
    memcpy(v.data + v.n * v.itemsize, p, v.itemsize)
    v.n += 1
    return 0


cdef object _vector_append_fastcall(object self, PyObject** args, Py_ssize_t nargs,
                                    PyObject* kwnames):
    """RecordVector.append's C entry point (METH_FASTCALL | METH_KEYWORDS)."""
    cdef Py_ssize_t i
    cdef dict kw = None
    if kwnames == NULL and nargs == 1:          # append(rec): no Python locals here
        _vector_append(<RecordVector>self, <object>args[0], None)
        return None
    if nargs > 1:
        raise TypeError(f"append() takes at most 1 positional argument ({nargs} given)")
    if kwnames != NULL:
        names = <object>kwnames
        kw = {}
        for i in range(len(names)):
            kw[names[i]] = <object>args[nargs + i]
    _vector_append(<RecordVector>self, <object>args[0] if nargs else None, kw)
    return None


def vector_from_bytes(dtype, b):
    """Unpickle a RecordVector: the spec's dtype and the records' bytes."""
    cdef RecordVector v = RecordVector(dtype)
    cdef Py_ssize_t m
    if type(b) is not bytes:
        raise TypeError(f"a pickled RecordVector holds bytes, not {type(b).__name__}")
    m = len(b) // v.itemsize
    if m * v.itemsize != len(b):
        raise ValueError("pickled RecordVector bytes do not match the spec")
    v.room(m)
    if m:
        memcpy(v.data, PyBytes_AS_STRING(b), len(b))
    v.n = m
    return v


# RecordVector.append as a METH_FASTCALL | METH_KEYWORDS method: Cython's own wrapper
# would build an empty **fields dict on every call.
hak_add_fastcall(RecordVector, b"append", <void*>_vector_append_fastcall,
    b"append(self, rec=None, /, **fields)\n--\n\n"
    b"Append one record: a tuple/list/dict/Record, or the fields as keywords.\n"
    b"A refused record (TypeError/OverflowError naming the field) leaves\n"
    b"the vector unchanged; BufferError if it must grow while its buffer is exported.")
