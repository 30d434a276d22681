# cython: binding=False
"""hakmem.containers — RecordVector, RecordDeque and RecordMap: typed records held inline
in hakmem memory (no Python object per element), usable from Cython without the GIL.

Glossary
  spec      a record layout (hakmem.spec.parse_spec): a numpy structured dtype, C alignment.
  codec     _Codec: packs Python values into the bytes of one record and reads them back;
            every check (type, range) happens before a byte of the target is written.
  view      Record: a lightweight handle on one record of a container. It holds the
            container and an index (vector), a sequence number (deque) or a key (map)
            and re-resolves on every access, so it can never dangle: a record that is
            gone raises IndexError / KeyError. Records popped out of a container are
            detached copies (they own their bytes).
  export    a live buffer-protocol export of a RecordVector (np.asarray, memoryview);
            while one exists the vector's buffer is pinned: anything that would move or
            free it raises BufferError.

Storage comes from hak_malloc / hak_realloc / hak_free: buffers up to 1 KiB from the tiny
classes, larger ones through hakmem's large path. `nbytes` is the memory a container holds.
Containers are not thread-safe (one thread at a time per container); see containers.pxd
for the nogil cdef API.
"""
cimport cython
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_AsDouble, PyFloat_FromDouble
from cpython.long cimport (PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong,
                           PyLong_FromLongLong, PyLong_FromUnsignedLongLong)
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.number cimport PyIndex_Check, PyNumber_Index, PyNumber_AsSsize_t
from cpython.object cimport PyObject, PyObject_GenericGetAttr, PyTypeObject, PyMethodDef, PyCFunction

from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM, PyTuple_GET_ITEM
from libc.math cimport isinf
from libc.stdint cimport INT64_MIN, INT64_MAX, int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcpy, memmove, memset

from hakmem.front cimport hak_malloc, hak_realloc, hak_free
from hakmem.record cimport hak_rec_put_int, hak_rec_get_int, hak_rec_get_uint, hak_rec_get_bytes

import numpy as np

from hakmem.spec import RecordSpec, parse_spec

__all__ = ["Record", "RecordVector", "RecordDeque", "RecordMap"]

cdef extern from "Python.h":
    bint PyLong_CheckExact(object)
    bint PyLong_Check(object)
    bint PyFloat_CheckExact(object)
    bint PyTuple_CheckExact(object)
    bint PyBool_Check(object)
    Py_ssize_t PyTuple_GET_SIZE(object)
    const Py_ssize_t PY_SSIZE_T_MAX

cdef extern from *:
    """
    /* The value of a small int without a call (CPython's compact ints). */
    static inline int hak_long_small(PyObject* o, long long* out) {
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject*)o)) {
            *out = (long long)PyUnstable_Long_CompactValue((PyLongObject*)o);
            return 1;
        }
        return 0;
    #else
        Py_ssize_t s = Py_SIZE(o);
        if (s == 0) { *out = 0; return 1; }
        if (s == 1) { *out = (long long)((PyLongObject*)o)->ob_digit[0]; return 1; }
        if (s == -1) { *out = -(long long)((PyLongObject*)o)->ob_digit[0]; return 1; }
        return 0;
    #endif
    }
    /* RecordVector.append as a METH_FASTCALL|METH_KEYWORDS method: Cython's own wrapper
       would build an empty **fields dict on every call. ml_meth is set at import. */
    static PyMethodDef hak_vec_append_def = {
        "append", NULL, METH_FASTCALL | METH_KEYWORDS,
        "append(self, rec=None, /, **fields)\\n--\\n\\n"
        "Append one record: a tuple/list/dict/Record, or the fields as keywords.\\n"
        "A refused record (TypeError/OverflowError/ValueError naming the field) leaves\\n"
        "the vector unchanged; BufferError if it must grow while its buffer is exported."};
    """
    bint hak_long_small(object o, long long* out)
    PyMethodDef hak_vec_append_def
    object PyDescr_NewMethod(PyTypeObject* t, PyMethodDef* d)
    void PyType_Modified(PyTypeObject* t)
    PyObject* PyTuple_GET_ITEM_P "PyTuple_GET_ITEM" (object, Py_ssize_t)

cdef enum:
    SCRATCH = 256                   # records up to this size are staged on the stack
    MAP_EMPTY = 0xFFFFFFFF
    MAP_DUMMY = 0xFFFFFFFE
    MAP_MAX_BITS = 31

cdef char _empty_buf[16]            # buffer address of an empty vector (never written)
cdef object _MISSING = object()
_np_bool = np.bool_
_np_void = np.void

_KIND_OF = {
    ("i", 1): HAK_K_I1, ("i", 2): HAK_K_I2, ("i", 4): HAK_K_I4, ("i", 8): HAK_K_I8,
    ("u", 1): HAK_K_U1, ("u", 2): HAK_K_U2, ("u", 4): HAK_K_U4, ("u", 8): HAK_K_U8,
    ("f", 4): HAK_K_F4, ("f", 8): HAK_K_F8, ("b", 1): HAK_K_BOOL,
}
# Ranges of the integer kinds (index = kind).
cdef int64_t[13] _IMIN
cdef int64_t[13] _IMAX
_IMIN[:] = [0, -128, -32768, -2147483648, 0, 0, 0, 0, 0, 0, 0, 0, 0]
_IMAX[:] = [0, 127, 32767, 2147483647, 0, 255, 65535, 4294967295, 0, 0, 0, 0, 0]
_IMIN[<int>HAK_K_I8] = INT64_MIN
_IMAX[<int>HAK_K_I8] = INT64_MAX


# ============================================================================ errors
cdef int _raise_rc(int rc, object who) except -1:
    """Turn a HAK_C_* code into the matching Python exception."""
    name = type(who).__name__
    if rc == HAK_C_EXPORTED:
        raise BufferError(f"{name} buffer is exported (np.asarray / memoryview alive): "
                          "it cannot be moved or freed until the export is released")
    if rc == HAK_C_NOMEM:
        raise MemoryError(f"{name}: out of memory")
    if rc == HAK_C_CLOSED:
        raise ValueError(f"operation on a closed {name}")
    if rc == HAK_C_EMPTY:
        raise IndexError(f"pop from an empty {name}")
    raise SystemError(f"{name}: unexpected status {rc}")


cdef inline int _check_open(bint closed, object who) except -1:
    if closed:
        raise ValueError(f"operation on a closed {type(who).__name__}")
    return 0


# ============================================================================ codec
cdef dict _codecs = {}


cdef _Codec _codec_for(object spec):
    """The (shared, immutable) codec of a spec; one per distinct dtype."""
    if isinstance(spec, _Codec):
        return <_Codec>spec
    rs = parse_spec(spec)
    c = _codecs.get(rs.dtype)
    if c is None:
        c = _Codec(rs)
        _codecs[rs.dtype] = c
    return <_Codec>c


cdef class _Codec:
    """Packs Python values into one record's bytes and reads them back."""

    def __cinit__(self, rs):
        cdef Py_ssize_t i, covered = 0
        self.spec = rs
        self.dtype = rs.dtype
        self.itemsize = rs.itemsize
        self.nfields = len(rs.fields)
        self.names = tuple(rs.names)
        self.index = {f.name: i for i, f in enumerate(rs.fields)}
        self.fields = <hak_field_t*>PyMem_Malloc(self.nfields * sizeof(hak_field_t))
        if self.fields == NULL:
            raise MemoryError()
        for i, f in enumerate(rs.fields):
            dt = f.dtype
            if dt.kind == "S":
                kind = HAK_K_BYTES
            else:
                kind = _KIND_OF[(dt.kind, dt.itemsize)]
            self.fields[i].kind = kind
            self.fields[i].offset = f.offset
            self.fields[i].size = f.size
            covered += f.size
        self.padded = covered != self.itemsize
        # numpy writes the PEP 3118 format of its own dtype; np.asarray reads it back.
        self.fmt = memoryview(np.zeros(1, self.dtype)).format.encode("ascii")

    def __dealloc__(self):
        PyMem_Free(self.fields)

    def __reduce__(self):
        return (_codec_for, (self.dtype,))

    cdef int pack(self, char* dst, object rec, dict kw) except -1:
        """Write rec (tuple/list/dict/Record/numpy record) or the keyword fields to dst."""
        cdef Py_ssize_t i, nf = self.nfields
        cdef char* src
        if kw:
            if rec is not None:
                raise TypeError("pass a record or its fields as keywords, not both")
            return self._pack_dict(dst, kw)
        if PyTuple_CheckExact(rec):
            if PyTuple_GET_SIZE(rec) != nf:
                self._bad_len(len(rec))
            if self.padded:
                memset(dst, 0, self.itemsize)
            for i in range(nf):
                self.pack_field(dst, i, <object>PyTuple_GET_ITEM(rec, i))
            return 0
        if isinstance(rec, Record):
            src = (<Record>rec)._resolve()
            if (<Record>rec).codec is self:
                memmove(dst, src, self.itemsize)
                return 0
            return self._pack_dict(dst, (<Record>rec).as_dict())
        if isinstance(rec, dict):
            return self._pack_dict(dst, <dict>rec)
        if isinstance(rec, _np_void) and rec.dtype.names is not None:
            if rec.dtype == self.dtype:
                b = rec.tobytes()
                memcpy(dst, PyBytes_AS_STRING(b), self.itemsize)
                return 0
            return self._pack_dict(dst, {n: rec[n] for n in rec.dtype.names})
        if isinstance(rec, (tuple, list)):
            if len(rec) != nf:
                self._bad_len(len(rec))
            if self.padded:
                memset(dst, 0, self.itemsize)
            for i in range(nf):
                self.pack_field(dst, i, rec[i])
            return 0
        if rec is None:
            raise TypeError(f"missing record: pass a tuple of {nf} fields "
                            f"({', '.join(self.names)}) or the fields as keywords")
        raise TypeError(f"a record must be a tuple, list, dict or Record, "
                        f"not {type(rec).__name__}")

    cdef int _bad_len(self, Py_ssize_t got) except -1:
        raise TypeError(f"record has {self.nfields} fields ({', '.join(self.names)}), "
                        f"got {got} values")

    cdef int _pack_dict(self, char* dst, dict d) except -1:
        """Named fields; fields not given are zero."""
        cdef Py_ssize_t i
        for k in d:
            if k not in self.index:
                raise TypeError(f"record has no field {k!r} (fields: {', '.join(self.names)})")
        memset(dst, 0, self.itemsize)
        for k, v in d.items():
            i = self.index[k]
            self.pack_field(dst, i, v)
        return 0

    cdef int pack_field(self, char* dst, Py_ssize_t i, object v) except -1:
        """Check v against field i and write it (nothing is written if v is refused)."""
        cdef hak_field_t* f = &self.fields[i]
        cdef int kind = f.kind
        cdef int ovf = 0
        cdef long long x
        cdef unsigned long long ux = 0
        cdef double d = 0.0
        cdef float fl
        cdef uint8_t b
        cdef char* p = dst + f.offset
        if kind == HAK_K_F8 or kind == HAK_K_F4:
            if PyFloat_CheckExact(v):
                d = PyFloat_AS_DOUBLE(v)
            else:
                if isinstance(v, (str, bytes)):
                    self._type_error(i, v, "a real number")
                try:
                    d = PyFloat_AsDouble(v)
                except TypeError:
                    self._type_error(i, v, "a real number")
                except OverflowError:
                    self._range_error(i, v)
            if kind == HAK_K_F8:
                memcpy(p, &d, 8)
            else:
                fl = <float>d
                if isinf(fl) and not isinf(d):
                    self._range_error(i, v)
                memcpy(p, &fl, 4)
            return 0
        if kind == HAK_K_BYTES:
            if isinstance(v, (bytearray, memoryview)):
                v = bytes(v)
            elif not isinstance(v, bytes):
                self._type_error(i, v, "bytes")
            if PyBytes_GET_SIZE(v) > f.size:
                raise ValueError(f"field {self.names[i]!r}: {PyBytes_GET_SIZE(v)} bytes do not "
                                 f"fit in S{f.size}")
            memset(p, 0, f.size)
            memcpy(p, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))
            return 0
        if kind == HAK_K_BOOL:
            if PyBool_Check(v) or isinstance(v, _np_bool):
                b = 1 if v else 0
            else:
                v = self._as_int(i, v)
                if v != 0 and v != 1:
                    raise OverflowError(f"field {self.names[i]!r}: {v} is not a bool (0 or 1)")
                b = 1 if v else 0
            p[0] = <char>b
            return 0
        # integers
        if not PyLong_Check(v):
            v = self._as_int(i, v)
        x = PyLong_AsLongLongAndOverflow(v, &ovf)
        if kind == HAK_K_U8:
            if ovf > 0:
                try:
                    ux = PyLong_AsUnsignedLongLong(v)
                except OverflowError:
                    self._range_error(i, v)
            elif ovf < 0 or x < 0:
                self._range_error(i, v)
            else:
                ux = <unsigned long long>x
            hak_rec_put_int(p, ux, 8)
            return 0
        if ovf != 0 or x < _IMIN[kind] or x > _IMAX[kind]:
            self._range_error(i, v)
        hak_rec_put_int(p, <uint64_t>x, f.size)
        return 0

    cdef object _as_int(self, Py_ssize_t i, object v):
        if isinstance(v, float) or not PyIndex_Check(v):
            self._type_error(i, v, "an integer")
        return PyNumber_Index(v)

    cdef int _type_error(self, Py_ssize_t i, object v, str want) except -1:
        raise TypeError(f"field {self.names[i]!r}: expected {want}, got "
                        f"{type(v).__name__} ({v!r:.40})")

    cdef int _range_error(self, Py_ssize_t i, object v) except -1:
        raise OverflowError(f"field {self.names[i]!r}: {v!r:.40} is out of range for "
                            f"{self.spec.fields[i].dtype}")

    cdef object get_field(self, const char* src, Py_ssize_t i):
        """Field i of the record at src, as a Python int / float / bool / bytes."""
        cdef hak_field_t* f = &self.fields[i]
        cdef const char* p = src + f.offset
        cdef int kind = f.kind
        cdef double d
        cdef float fl
        if kind == HAK_K_F8:
            memcpy(&d, p, 8)
            return PyFloat_FromDouble(d)
        if kind == HAK_K_F4:
            memcpy(&fl, p, 4)
            return PyFloat_FromDouble(fl)
        if kind <= HAK_K_I8:            # HAK_K_I1 .. HAK_K_I8
            return PyLong_FromLongLong(hak_rec_get_int(p, f.size))
        if kind == HAK_K_U8:
            return PyLong_FromUnsignedLongLong(hak_rec_get_uint(p, 8))
        if kind <= HAK_K_U4:            # HAK_K_U1 .. HAK_K_U4: fit a long long
            return PyLong_FromLongLong(<int64_t>hak_rec_get_uint(p, f.size))
        if kind == HAK_K_BOOL:
            return p[0] != 0
        return hak_rec_get_bytes(p, f.size)

    cdef tuple unpack(self, const char* src):
        """The record at src as a tuple of field values."""
        cdef Py_ssize_t i
        cdef tuple t = PyTuple_New(self.nfields)
        for i in range(self.nfields):
            v = self.get_field(src, i)
            Py_INCREF(v)
            PyTuple_SET_ITEM(t, i, v)
        return t


cdef inline int _pack_fast(_Codec c, char* dst, object rec) except -1:
    """The hot path of pack: a tuple of exact floats / small ints; the rest goes to pack."""
    cdef Py_ssize_t i
    cdef hak_field_t* f
    cdef PyObject* o
    cdef double d
    cdef long long x
    cdef int32_t x4
    if not PyTuple_CheckExact(rec) or PyTuple_GET_SIZE(rec) != c.nfields:
        return c.pack(dst, rec, None)
    if c.padded:
        memset(dst, 0, c.itemsize)
    for i in range(c.nfields):
        f = &c.fields[i]
        o = PyTuple_GET_ITEM_P(rec, i)
        if f.kind == HAK_K_F8 and PyFloat_CheckExact(<object>o):
            d = PyFloat_AS_DOUBLE(<object>o)
            memcpy(dst + f.offset, &d, 8)
        elif f.kind == HAK_K_I8 and PyLong_CheckExact(<object>o) and hak_long_small(<object>o, &x):
            memcpy(dst + f.offset, &x, 8)
        elif (f.kind == HAK_K_I4 and PyLong_CheckExact(<object>o) and hak_long_small(<object>o, &x)
              and x >= -2147483648 and x <= 2147483647):
            x4 = <int32_t>x
            memcpy(dst + f.offset, &x4, 4)
        else:
            c.pack_field(dst, i, <object>o)
    return 0


def _coerce_array(arr, dtype):
    """A C-contiguous 1-D array of exactly `dtype` from a structured array (checked)."""
    a = np.asarray(arr)
    if a.ndim != 1:
        raise ValueError(f"expected a 1-D array of records, got {a.ndim} dimensions")
    if a.dtype == dtype:
        return np.ascontiguousarray(a)
    if a.dtype.names is None:
        raise TypeError(f"expected a structured array with fields {', '.join(dtype.names)}, "
                        f"got dtype {a.dtype}")
    missing = [n for n in dtype.names if n not in a.dtype.names]
    extra = [n for n in a.dtype.names if n not in dtype.names]
    if missing or extra:
        raise TypeError(f"array fields do not match the record: missing {missing}, extra {extra}")
    out = np.zeros(len(a), dtype)
    for n in dtype.names:
        src, dst = a.dtype.fields[n][0], dtype.fields[n][0]
        col = a[n]
        if dst.kind == "S":
            if src.kind != "S" or src.itemsize > dst.itemsize:
                raise TypeError(f"field {n!r}: cannot store {src} in {dst}")
        elif not np.can_cast(src, dst, "same_kind"):
            raise TypeError(f"field {n!r}: cannot store {src} values in {dst}")
        elif dst.kind == "f" and src.kind == "f" and dst.itemsize < src.itemsize and len(col):
            fin = col[np.isfinite(col)]
            big = fin[np.abs(fin) > np.finfo(dst).max]
            if len(big):
                raise OverflowError(f"field {n!r}: {big[0]} is out of range for {dst}")
        elif dst.kind in "iub" and src.kind in "iu" and len(col):
            lo, hi = (np.iinfo(dst).min, np.iinfo(dst).max) if dst.kind != "b" else (0, 1)
            if col.min() < lo or col.max() > hi:
                bad = col[(col < lo) | (col > hi)][0]
                raise OverflowError(f"field {n!r}: {bad} is out of range for {dst}")
        out[n] = col
    return out


cdef inline char* _array_addr(a):
    return <char*><uintptr_t>a.__array_interface__["data"][0]


# ============================================================================ record view
cdef enum:
    VIEW_DETACHED = 0
    VIEW_VECTOR = 1
    VIEW_DEQUE = 2
    VIEW_MAP = 3


@cython.freelist(64)
@cython.final
@cython.no_gc          # a view refers to its container, never the reverse: no cycles
cdef class Record:
    """One record: a view into a container, or a detached copy (from pop, copy()).

    Fields read and write as attributes (``r.x``, ``r.x = 2.0``) or by name (``r["x"]``).
    A view re-resolves its record on every access: if the record has left the
    container, access raises IndexError (vector, deque) or KeyError (map). Equal to a
    tuple of the same values, and to a Record with the same values.
    """
    cdef object owner       # the container; for a detached record, its bytearray
    cdef _Codec codec
    cdef int mode
    cdef int64_t pos

    def __init__(self, *args, **kwargs):
        raise TypeError("Record views come from containers; use RecordVector etc.")

    cdef char* _resolve(self) except NULL:
        """The current address of the record (raises if it is gone)."""
        cdef RecordVector v
        cdef RecordDeque q
        cdef RecordMap m
        cdef char* p
        cdef int64_t i
        if self.mode == VIEW_VECTOR:
            v = <RecordVector>self.owner
            if v.closed:
                _check_open(True, v)
            if self.pos >= v.n:
                raise IndexError(f"record view at index {self.pos}: the RecordVector has "
                                 f"only {v.n} records now")
            return v.data + self.pos * v.itemsize
        if self.mode == VIEW_DEQUE:
            q = <RecordDeque>self.owner
            if q.closed:
                _check_open(True, q)
            i = self.pos - q.base_seq
            if i < 0 or i >= q.n:
                raise IndexError("the record this view refers to has left the RecordDeque")
            return q.ptr_at(i)
        if self.mode == VIEW_MAP:
            m = <RecordMap>self.owner
            if m.closed:
                _check_open(True, m)
            p = m.find_raw(self.pos)
            if p == NULL:
                raise KeyError(m._key_obj(<uint64_t>self.pos))
            return p
        return PyByteArray_AS_STRING(self.owner)

    def __getattribute__(self, name):
        i = self.codec.index.get(name)
        if i is not None:
            return self.codec.get_field(self._resolve(), <Py_ssize_t>i)
        return PyObject_GenericGetAttr(self, name)

    def __setattr__(self, name, value):
        i = self.codec.index.get(name)
        if i is None:
            raise AttributeError(f"record has no field {name!r} "
                                 f"(fields: {', '.join(self.codec.names)})")
        self._set(<Py_ssize_t>i, value)

    def __delattr__(self, name):
        raise AttributeError("record fields cannot be deleted")

    cdef int _set(self, Py_ssize_t i, object value) except -1:
        cdef char tmp[16]
        cdef hak_field_t* f = &self.codec.fields[i]
        cdef char* p
        if f.size <= 16:
            # stage the field so that a refused value writes nothing
            self.codec.pack_field(tmp - f.offset, i, value)
            p = self._resolve()
            memcpy(p + f.offset, tmp, f.size)
        else:
            buf = bytearray(self.codec.itemsize)
            self.codec.pack_field(PyByteArray_AS_STRING(buf), i, value)
            p = self._resolve()
            memcpy(p + f.offset, PyByteArray_AS_STRING(buf) + f.offset, f.size)
        return 0

    cdef Py_ssize_t _field_index(self, key) except -1:
        if isinstance(key, str):
            i = self.codec.index.get(key)
            if i is None:
                raise KeyError(key)
            return i
        if PyIndex_Check(key):
            j = PyNumber_Index(key)
            if j < 0:
                j += self.codec.nfields
            if not 0 <= j < self.codec.nfields:
                raise IndexError("record field index out of range")
            return j
        raise TypeError(f"record fields are indexed by name or position, not {type(key).__name__}")

    def __getitem__(self, key):
        return self.codec.get_field(self._resolve(), self._field_index(key))

    def __setitem__(self, key, value):
        self._set(self._field_index(key), value)

    def __len__(self):
        return self.codec.nfields

    def __iter__(self):
        return iter(self.codec.unpack(self._resolve()))

    def as_tuple(self):
        """The field values as a tuple."""
        return self.codec.unpack(self._resolve())

    def as_dict(self):
        """The field values as a dict keyed by field name."""
        return dict(zip(self.codec.names, self.codec.unpack(self._resolve())))

    def copy(self):
        """A detached copy of the record (owns its bytes)."""
        return _detached(self.codec, self._resolve())

    def __eq__(self, other):
        if isinstance(other, Record):
            return self.as_tuple() == (<Record>other).as_tuple()
        if isinstance(other, tuple):
            return self.as_tuple() == other
        return NotImplemented

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    __hash__ = None

    def __repr__(self):
        try:
            vals = self.codec.unpack(self._resolve())
        except (IndexError, KeyError, ValueError) as e:
            return f"<Record view, gone: {e}>"
        return "Record(" + ", ".join(f"{n}={v!r}" for n, v in zip(self.codec.names, vals)) + ")"

    def __reduce__(self):
        b = PyBytes_FromStringAndSize(self._resolve(), self.codec.itemsize)
        return (_record_from_bytes, (self.codec.dtype, b))


cdef inline Record _view(object owner, _Codec codec, int mode, int64_t pos):
    cdef Record r = Record.__new__(Record)
    r.owner = owner
    r.codec = codec
    r.mode = mode
    r.pos = pos
    return r


cdef Record _detached(_Codec codec, const char* src):
    cdef Record r = Record.__new__(Record)
    data = bytearray(codec.itemsize)
    memcpy(PyByteArray_AS_STRING(data), src, codec.itemsize)
    r.owner = data
    r.codec = codec
    r.mode = VIEW_DETACHED
    return r


def _record_from_bytes(dtype, bytes b):
    """Unpickle a Record (detached)."""
    cdef _Codec c = _codec_for(dtype)
    if len(b) != c.itemsize:
        raise ValueError("record bytes do not match the spec")
    return _detached(c, PyBytes_AS_STRING(b))


cdef inline Py_ssize_t _norm_index(object idx, Py_ssize_t n, str what) except? -1:
    """A list-style index (negative from the end) checked against n."""
    cdef Py_ssize_t i
    if not PyIndex_Check(idx):
        raise TypeError(f"{what} indices must be integers, not {type(idx).__name__}")
    i = PyNumber_AsSsize_t(idx, IndexError)
    if i < 0:
        i += n
    if i < 0 or i >= n:
        raise IndexError(f"{what} index out of range")
    return i


cdef inline Py_ssize_t _clamp_insert(object idx, Py_ssize_t n) except? -1:
    cdef Py_ssize_t i = PyNumber_AsSsize_t(idx, OverflowError)
    if i < 0:
        i += n
        if i < 0:
            i = 0
    if i > n:
        i = n
    return i


# ============================================================================ RecordVector
cdef class _RecordContainer:
    """The part RecordVector, RecordDeque and RecordMap share: the record codec, the
    closed flag, ``with`` blocks (close on exit) and the dtype / spec properties."""

    def __cinit__(self, *args, **kwargs):
        self.closed = True          # until __init__ succeeds

    cdef int _bind(self, object spec) except -1:
        """Take the record spec; refused if __init__ already ran."""
        if self._codec is not None:
            raise TypeError(f"{type(self).__name__} is already initialised")
        self._codec = _codec_for(spec)
        return 0

    def __enter__(self):
        _check_open(self.closed, self)
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def dtype(self):
        """The numpy dtype of one record."""
        return self._codec.dtype

    @property
    def spec(self):
        """The RecordSpec of the records."""
        return self._codec.spec


cdef RecordVector _new_vector(_Codec codec):
    """An empty open vector of codec's records (skips spec parsing)."""
    cdef RecordVector v = RecordVector.__new__(RecordVector)
    v._codec = codec
    v.itemsize = codec.itemsize
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


cdef inline int _room(RecordVector v, Py_ssize_t need) except -1:
    """Grow v to hold at least need records; MemoryError / BufferError if it cannot."""
    cdef int rc
    if need > v.cap:
        rc = v._grow(need)
        if rc != HAK_C_OK:
            _raise_rc(rc, v)
    return 0


cdef class RecordVector(_RecordContainer):
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
        self._bind(spec)
        self.itemsize = self._codec.itemsize
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

    # ---------------------------------------------------------------- Python API
    def append(self, rec=None, /, **fields):
        """Append one record: a tuple/list/dict/Record, or the fields as keywords."""
        # replaced at import by the METH_FASTCALL version below (_vector_append)
        _vector_append(self, rec, fields)

    def extend(self, src):
        """Append every record of src: an iterable of records, a numpy structured array
        (same fields; values are range-checked), a RecordVector or a RecordDeque.
        All or nothing: if one record is refused, nothing is appended."""
        cdef Py_ssize_t m, k, n0
        cdef RecordVector ov
        cdef RecordDeque od
        _check_open(self.closed, self)
        n0 = self.n
        if isinstance(src, RecordVector):
            ov = <RecordVector>src
            _check_open(ov.closed, ov)
            self._same_spec(ov._codec)
            m = ov.n
            _room(self, n0 + m)
            if m:
                memcpy(self.data + n0 * self.itemsize, ov.data, m * self.itemsize)
            self.n = n0 + m
            return
        if isinstance(src, RecordDeque):
            od = <RecordDeque>src
            _check_open(od.closed, od)
            self._same_spec(od._codec)
            m = od.n
            _room(self, n0 + m)
            for k in range(m):
                memcpy(self.data + (n0 + k) * self.itemsize, od.ptr_at(k), self.itemsize)
            self.n = n0 + m
            return
        if isinstance(src, np.ndarray):
            a = _coerce_array(src, self._codec.dtype)
            m = len(a)
            _room(self, n0 + m)
            if m:
                memcpy(self.data + n0 * self.itemsize, _array_addr(a), m * self.itemsize)
            self.n = n0 + m
            return
        if isinstance(src, (str, bytes, dict)):
            raise TypeError(f"extend() needs an iterable of records, not {type(src).__name__}")
        k = 0
        for rec in src:
            _room(self, n0 + k + 1)
            _pack_fast(self._codec, self.data + (n0 + k) * self.itemsize, rec)
            k += 1
        self.n = n0 + k

    cdef int _same_spec(self, _Codec other) except -1:
        if other is not self._codec and other.dtype != self._codec.dtype:
            raise TypeError(f"record specs differ: {other.dtype} vs {self._codec.dtype}")
        return 0

    def insert(self, index, rec=None, /, **fields):
        """Insert a record before index (clamped like list.insert)."""
        cdef Py_ssize_t i
        _check_open(self.closed, self)
        i = _clamp_insert(index, self.n)
        tmp = bytearray(self.itemsize)
        self._codec.pack(PyByteArray_AS_STRING(tmp), rec, fields)
        _room(self, self.n + 1)
        memmove(self.data + (i + 1) * self.itemsize, self.data + i * self.itemsize,
                (self.n - i) * self.itemsize)
        memcpy(self.data + i * self.itemsize, PyByteArray_AS_STRING(tmp), self.itemsize)
        self.n += 1

    def pop(self, index=-1):
        """Remove and return the record at index (last by default) as a detached Record."""
        cdef Py_ssize_t i
        _check_open(self.closed, self)
        if self.n == 0:
            raise IndexError("pop from an empty RecordVector")
        i = _norm_index(index, self.n, "pop")
        r = _detached(self._codec, self.data + i * self.itemsize)
        memmove(self.data + i * self.itemsize, self.data + (i + 1) * self.itemsize,
                (self.n - i - 1) * self.itemsize)
        self.n -= 1
        return r

    def __len__(self):
        return self.n

    def __getitem__(self, idx):
        cdef Py_ssize_t i
        if self.closed:
            _check_open(True, self)
        if PyLong_CheckExact(idx):
            i = PyNumber_AsSsize_t(idx, IndexError)
            if i < 0:
                i += self.n
            if <size_t>i >= <size_t>self.n:
                raise IndexError("RecordVector index out of range")
            return _view(self, self._codec, VIEW_VECTOR, i)
        if isinstance(idx, slice):
            return self._slice(idx)
        if not PyIndex_Check(idx):
            raise TypeError(f"RecordVector indices must be integers or slices, "
                            f"not {type(idx).__name__}")
        return _view(self, self._codec, VIEW_VECTOR, _norm_index(idx, self.n, "RecordVector"))

    cdef RecordVector _slice(self, slice s):
        cdef Py_ssize_t start, stop, step, m, k
        cdef int rc
        cdef RecordVector out = _new_vector(self._codec)
        start, stop, step = s.indices(self.n)
        m = len(range(start, stop, step))
        if m:
            rc = out.reserve_raw(m)
            if rc != HAK_C_OK:
                _raise_rc(rc, out)
            if step == 1:
                memcpy(out.data, self.data + start * self.itemsize, m * self.itemsize)
            else:
                for k in range(m):
                    memcpy(out.data + k * self.itemsize,
                           self.data + (start + k * step) * self.itemsize, self.itemsize)
            out.n = m
        return out

    def __setitem__(self, idx, value):
        cdef Py_ssize_t i
        cdef char tmp[SCRATCH]
        _check_open(self.closed, self)
        if isinstance(idx, slice):
            self._set_slice(idx, value)
            return
        i = _norm_index(idx, self.n, "RecordVector assignment")
        if self.itemsize <= SCRATCH:
            self._codec.pack(tmp, value, None)
            memcpy(self.data + i * self.itemsize, tmp, self.itemsize)
        else:
            buf = bytearray(self.itemsize)
            self._codec.pack(PyByteArray_AS_STRING(buf), value, None)
            memcpy(self.data + i * self.itemsize, PyByteArray_AS_STRING(buf), self.itemsize)

    cdef int _set_slice(self, slice s, value) except -1:
        cdef Py_ssize_t start, stop, step, m, k, newn, tail
        cdef RecordVector src
        start, stop, step = s.indices(self.n)
        src = _new_vector(self._codec)
        src.extend(value)           # validates every record first
        m = len(range(start, stop, step))
        if step != 1:
            if src.n != m:
                raise ValueError(f"attempt to assign sequence of size {src.n} to extended "
                                 f"slice of size {m}")
            for k in range(m):
                memcpy(self.data + (start + k * step) * self.itemsize,
                       src.data + k * self.itemsize, self.itemsize)
            return 0
        if stop < start:
            stop = start
        m = stop - start
        newn = self.n - m + src.n
        _room(self, newn)
        tail = self.n - stop
        memmove(self.data + (start + src.n) * self.itemsize, self.data + stop * self.itemsize,
                tail * self.itemsize)
        if src.n:
            memcpy(self.data + start * self.itemsize, src.data, src.n * self.itemsize)
        self.n = newn
        return 0

    def __delitem__(self, idx):
        cdef Py_ssize_t i, start, stop, step, k, w
        _check_open(self.closed, self)
        if isinstance(idx, slice):
            start, stop, step = idx.indices(self.n)
            doomed = range(start, stop, step)
            if len(doomed) == 0:
                return
            if step < 0:
                doomed = doomed[::-1]
            start, step = doomed.start, doomed.step
            stop = doomed[len(doomed) - 1] + 1
            w = start
            for k in range(start, self.n):
                if k < stop and (k - start) % step == 0:
                    continue
                if w != k:
                    memcpy(self.data + w * self.itemsize, self.data + k * self.itemsize,
                           self.itemsize)
                w += 1
            self.n = w
            return
        i = _norm_index(idx, self.n, "RecordVector assignment")
        memmove(self.data + i * self.itemsize, self.data + (i + 1) * self.itemsize,
                (self.n - i - 1) * self.itemsize)
        self.n -= 1

    def __iter__(self):
        cdef Py_ssize_t i = 0
        while i < self.n and not self.closed:
            yield _view(self, self._codec, VIEW_VECTOR, i)
            i += 1

    def reserve(self, Py_ssize_t n):
        """Make room for at least n records without moving the buffer again."""
        if n < 0:
            raise ValueError("reserve() needs a non-negative count")
        rc = self.reserve_raw(n)
        if rc != HAK_C_OK:
            _raise_rc(rc, self)

    def shrink_to_fit(self):
        """Give back the memory past len (BufferError while exported)."""
        cdef int rc
        _check_open(self.closed, self)
        if self.cap == self.n:
            return
        if self.exports > 0:
            _raise_rc(HAK_C_EXPORTED, self)
        if self.n == 0:
            hak_free(self.data)
            self.data = NULL
            self.cap = 0
            return
        rc = _vec_realloc(self, self.n)
        if rc != HAK_C_OK:
            _raise_rc(rc, self)

    def clear(self):
        """Remove every record (the capacity is kept; see shrink_to_fit)."""
        _check_open(self.closed, self)
        self.n = 0

    def sort(self, order=None, *, reverse=False):
        """Sort in place (stable) by a field name, a list of field names, or by all
        fields in spec order when order is None. reverse=True sorts descending and,
        like list.sort, keeps equal records in their original order."""
        _check_open(self.closed, self)
        names = self._codec.names if order is None else (
            [order] if isinstance(order, str) else list(order))
        for f in names:
            if f not in self._codec.index:
                raise ValueError(f"no field {f!r} to sort by (fields: "
                                 f"{', '.join(self._codec.names)})")
        if self.n < 2:
            return
        arr = np.asarray(self)          # an export: the buffer cannot move meanwhile
        src = arr[::-1] if reverse else arr
        idx = np.lexsort([src[f] for f in reversed(names)])
        if reverse:
            idx = (self.n - 1 - idx)[::-1]
        arr[:] = arr[idx]

    def tolist(self):
        """The records as a list of tuples."""
        cdef Py_ssize_t i
        _check_open(self.closed, self)
        return [self._codec.unpack(self.data + i * self.itemsize) for i in range(self.n)]

    def as_array(self):
        """A zero-copy numpy structured array over the records, like np.asarray(vec) but
        about 100x cheaper: numpy parses the PEP 3118 format of a structured buffer in
        Python (tens of microseconds); np.frombuffer with the dtype skips that. The array
        holds a buffer export, so the vector's buffer is pinned while it lives."""
        _check_open(self.closed, self)
        return np.frombuffer(self, self._codec.dtype)

    def to_numpy(self):
        """A numpy copy of the records (np.asarray(vec) is the zero-copy view)."""
        _check_open(self.closed, self)
        out = np.empty(self.n, self._codec.dtype)
        if self.n:
            memcpy(_array_addr(out), self.data, self.n * self.itemsize)
        return out

    def copy(self):
        """A new RecordVector with the same records."""
        cdef RecordVector out = _new_vector(self._codec)
        out.extend(self)
        return out

    def close(self):
        """Free the storage now (BufferError while exported). Idempotent."""
        if self.closed:
            return
        if self.exports > 0:
            _raise_rc(HAK_C_EXPORTED, self)
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
        return f"RecordVector({_spec_str(self._codec)!r}, len={self.n})"

    def __reduce__(self):
        _check_open(self.closed, self)
        return (_vector_from_bytes, (self._codec.dtype,
                                     PyBytes_FromStringAndSize(self.data, self.n * self.itemsize)))

    def __getbuffer__(self, Py_buffer* buf, int flags):
        cdef Py_ssize_t* dims
        _check_open(self.closed, self)
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
        buf.format = PyBytes_AS_STRING(self._codec.fmt) if flags & PyBUF_FORMAT else NULL
        buf.ndim = 1
        buf.shape = dims if (flags & PyBUF_ND) == PyBUF_ND else NULL
        buf.strides = dims + 1 if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        buf.suboffsets = NULL
        buf.internal = dims
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* buf):
        PyMem_Free(buf.internal)
        self.exports -= 1


cdef inline int _vector_append(RecordVector v, object rec, dict fields) except -1:
    cdef int rc
    if v.closed:
        _check_open(True, v)
    if v.n == v.cap:
        rc = v._grow(v.n + 1)
        if rc != HAK_C_OK:
            _raise_rc(rc, v)
    # written past the end: a refused record leaves len and contents unchanged
    if fields is None:
        _pack_fast(v._codec, v.data + v.n * v.itemsize, rec)
    else:
        v._codec.pack(v.data + v.n * v.itemsize, rec, fields)
    v.n += 1
    return 0


cdef object _vector_append_fastcall(object self, PyObject** args, Py_ssize_t nargs,
                                    PyObject* kwnames):
    """RecordVector.append's C entry point (METH_FASTCALL | METH_KEYWORDS)."""
    if kwnames == NULL and nargs == 1:          # append(rec): no Python locals here
        _vector_append(<RecordVector>self, <object>args[0], None)
        return None
    return _vector_append_slow(self, args, nargs, kwnames)


cdef object _vector_append_slow(object self, PyObject** args, Py_ssize_t nargs,
                                PyObject* kwnames):
    """append() with keywords (or a wrong number of arguments)."""
    cdef Py_ssize_t i
    cdef dict kw = None
    if nargs > 1:
        raise TypeError(f"append() takes at most 1 positional argument ({nargs} given)")
    if kwnames != NULL:
        names = <object>kwnames
        kw = {}
        for i in range(len(names)):
            kw[names[i]] = <object>args[nargs + i]
    _vector_append(<RecordVector>self, <object>args[0] if nargs else None, kw)
    return None


def _vector_from_bytes(dtype, bytes b):
    """Unpickle a RecordVector."""
    cdef RecordVector v = RecordVector(dtype)
    cdef Py_ssize_t m = len(b) // v.itemsize
    if m * v.itemsize != len(b):
        raise ValueError("pickled RecordVector bytes do not match the spec")
    if v.reserve_raw(m) != HAK_C_OK:
        _raise_rc(HAK_C_NOMEM, v)
    if m:
        memcpy(v.data, PyBytes_AS_STRING(b), len(b))
    v.n = m
    return v


cdef str _spec_str(_Codec c):
    return " ".join(f"{f.name}:{f.dtype.str.lstrip('<>|=')}" for f in c.spec.fields)


hak_vec_append_def.ml_meth = <PyCFunction><void*>_vector_append_fastcall
(<object>(<PyTypeObject*>RecordVector).tp_dict)["append"] = PyDescr_NewMethod(
    <PyTypeObject*>RecordVector, &hak_vec_append_def)
PyType_Modified(<PyTypeObject*>RecordVector)


# ============================================================================ RecordDeque
cdef class RecordDeque(_RecordContainer):
    """A double-ended queue of records on chunked hakmem storage.

    ``RecordDeque(spec, maxlen=None, data=None)``. O(1) ``append``, ``appendleft``,
    ``pop``, ``popleft``; ``extend``, ``extendleft``, ``insert``, ``rotate``, indexing
    (a :class:`Record` view that follows its record as the ends move), assignment,
    ``del``, ``len``, iteration. With ``maxlen``, pushing onto a full deque drops a
    record from the other end, as collections.deque does. Not thread-safe.
    """

    def __init__(self, spec, maxlen=None, data=None):
        cdef Py_ssize_t nper = 8
        self._bind(spec)
        self.itemsize = self._codec.itemsize
        if maxlen is None:
            self.maxn = -1
        else:
            if not PyIndex_Check(maxlen):
                raise TypeError(f"maxlen must be an integer or None, not {type(maxlen).__name__}")
            if maxlen < 0:
                raise ValueError("maxlen must be non-negative")
            self.maxn = maxlen
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

    cdef int append_raw(self, const void* rec) noexcept nogil:
        """Push a copy of rec at the right end (drops the leftmost record when full)."""
        cdef Py_ssize_t k
        cdef char* c
        if self.closed:
            return HAK_C_CLOSED
        if self.maxn >= 0 and self.n >= self.maxn:
            if self.maxn == 0:
                return HAK_C_OK
            self.popleft_raw(NULL)
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
        if self.maxn >= 0 and self.n >= self.maxn:
            if self.maxn == 0:
                return HAK_C_OK
            self.pop_raw(NULL)
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

    # ---------------------------------------------------------------- Python API
    cdef int _push(self, rec, dict fields, bint left) except -1:
        cdef char tmp[SCRATCH]
        cdef char* p = tmp
        cdef int rc
        if self.closed:
            _check_open(True, self)
        if self.itemsize > SCRATCH:
            buf = bytearray(self.itemsize)
            p = PyByteArray_AS_STRING(buf)
        self._codec.pack(p, rec, fields)
        rc = self.appendleft_raw(p) if left else self.append_raw(p)
        if rc != HAK_C_OK:
            _raise_rc(rc, self)
        return 0

    def append(self, rec=None, /, **fields):
        """Add a record at the right end (a tuple/list/dict/Record or keyword fields)."""
        self._push(rec, fields, False)

    def appendleft(self, rec=None, /, **fields):
        """Add a record at the left end."""
        self._push(rec, fields, True)

    def pop(self):
        """Remove and return the rightmost record (detached); IndexError if empty."""
        _check_open(self.closed, self)
        if self.n == 0:
            raise IndexError("pop from an empty RecordDeque")
        r = _detached(self._codec, self.ptr_at(self.n - 1))
        self.pop_raw(NULL)
        return r

    def popleft(self):
        """Remove and return the leftmost record (detached); IndexError if empty."""
        _check_open(self.closed, self)
        if self.n == 0:
            raise IndexError("pop from an empty RecordDeque")
        r = _detached(self._codec, self.ptr_at(0))
        self.popleft_raw(NULL)
        return r

    cdef int _push_all(self, src, bint left) except -1:
        """Validate and pack every record of src first (all or nothing), then push
        them one by one at the left or the right end."""
        cdef RecordVector tmp
        cdef Py_ssize_t k
        cdef int rc
        _check_open(self.closed, self)
        tmp = _new_vector(self._codec)
        tmp.extend(src)
        for k in range(tmp.n):
            rc = self.appendleft_raw(tmp.ptr_at(k)) if left else self.append_raw(tmp.ptr_at(k))
            if rc != HAK_C_OK:
                _raise_rc(rc, self)
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
        _check_open(self.closed, self)
        if self.maxn >= 0 and self.n >= self.maxn:
            raise IndexError("RecordDeque already at its maximum size")
        i = _clamp_insert(index, self.n)
        tmp = bytearray(self.itemsize)
        self._codec.pack(PyByteArray_AS_STRING(tmp), rec, fields)
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
            _raise_rc(rc, self)

    def rotate(self, Py_ssize_t k=1):
        """Rotate k steps to the right (left if k is negative), like deque.rotate."""
        cdef Py_ssize_t n = self.n, s
        _check_open(self.closed, self)
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
            _raise_rc(HAK_C_NOMEM, self)
        if self.spare == NULL:
            self.spare = <char*>hak_malloc(<size_t>(self.nper * self.itemsize))
            if self.spare == NULL:
                _raise_rc(HAK_C_NOMEM, self)
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
        _check_open(self.closed, self)
        self._release_all()
        self.state += 1
        hak_free(self.spare)
        self.spare = NULL

    def __len__(self):
        return self.n

    def __getitem__(self, idx):
        cdef Py_ssize_t i
        _check_open(self.closed, self)
        i = _norm_index(idx, self.n, "RecordDeque")
        return _view(self, self._codec, VIEW_DEQUE, self.base_seq + i)

    def __setitem__(self, idx, value):
        cdef Py_ssize_t i
        _check_open(self.closed, self)
        i = _norm_index(idx, self.n, "RecordDeque")
        tmp = bytearray(self.itemsize)
        self._codec.pack(PyByteArray_AS_STRING(tmp), value, None)
        memcpy(self.ptr_at(i), PyByteArray_AS_STRING(tmp), self.itemsize)

    def __delitem__(self, idx):
        cdef Py_ssize_t i, j
        _check_open(self.closed, self)
        i = _norm_index(idx, self.n, "RecordDeque")
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
        _check_open(self.closed, self)
        while i < self.n:
            yield _view(self, self._codec, VIEW_DEQUE, self.base_seq + i)
            if self.state != state or self.closed:
                raise RuntimeError("RecordDeque mutated during iteration")
            i += 1

    def __reversed__(self):
        cdef Py_ssize_t i = self.n - 1
        cdef uint64_t state = self.state
        _check_open(self.closed, self)
        while i >= 0:
            yield _view(self, self._codec, VIEW_DEQUE, self.base_seq + i)
            if self.state != state or self.closed:
                raise RuntimeError("RecordDeque mutated during iteration")
            i -= 1

    def tolist(self):
        """The records as a list of tuples, left to right."""
        cdef Py_ssize_t i
        _check_open(self.closed, self)
        return [self._codec.unpack(self.ptr_at(i)) for i in range(self.n)]

    def to_numpy(self):
        """A numpy copy of the records, left to right."""
        cdef Py_ssize_t i
        cdef char* dst
        _check_open(self.closed, self)
        out = np.empty(self.n, self._codec.dtype)
        dst = _array_addr(out)
        for i in range(self.n):
            memcpy(dst + i * self.itemsize, self.ptr_at(i), self.itemsize)
        return out

    def copy(self):
        """A new RecordDeque with the same records and maxlen."""
        _check_open(self.closed, self)
        return RecordDeque(self._codec, self.maxlen_obj(), self.to_numpy())

    cdef object maxlen_obj(self):
        return None if self.maxn < 0 else self.maxn

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
        return self.maxlen_obj()

    @property
    def nbytes(self):
        """Bytes of hakmem memory held (chunks, the spare chunk and the chunk ring)."""
        cdef Py_ssize_t c = self.nchunks + (1 if self.spare != NULL else 0)
        return c * self.nper * self.itemsize + self.mcap * <Py_ssize_t>sizeof(char*)

    def __repr__(self):
        if self.closed:
            return "<closed RecordDeque>"
        ml = "" if self.maxn < 0 else f", maxlen={self.maxn}"
        return f"RecordDeque({_spec_str(self._codec)!r}, len={self.n}{ml})"

    def __reduce__(self):
        _check_open(self.closed, self)
        return (RecordDeque, (self._codec.dtype, self.maxlen_obj(), self.to_numpy()))


# ============================================================================ RecordMap
# Probing follows CPython's dict: start at the key's low bits (so keys inserted in
# order sit in order: lookups in key order walk memory sequentially), then
# h = 5h + 1 + perturb with perturb = key >> 5, >> 10, ... so that keys sharing their
# low bits (strides of a power of two) spread out after a few steps.
cdef inline size_t _probe_next(size_t h, uint64_t* perturb, size_t mask) noexcept nogil:
    perturb[0] >>= 5
    return (h * 5 + 1 + <size_t>perturb[0]) & mask


cdef inline char* _map_find(RecordMap m, uint64_t k) noexcept nogil:
    """The record of key bits k, or NULL."""
    cdef size_t mask, h
    cdef uint64_t perturb = k
    cdef uint32_t e
    cdef char* ent
    if m.table == NULL:
        return NULL
    mask = <size_t>m.tcap - 1
    h = <size_t>k & mask
    while True:
        e = m.table[h]
        if e == MAP_EMPTY:
            return NULL
        if e != MAP_DUMMY:
            ent = m.entries + <size_t>e * <size_t>m.estride
            if (<uint64_t*>ent)[0] == k:
                return ent + 8
        h = _probe_next(h, &perturb, mask)


cdef inline int _map_key(RecordMap m, object k, int64_t* out) except -1:
    """RecordMap._key with the common case (a small int, i8 keys) inline."""
    cdef long long x
    if PyLong_CheckExact(k) and m.keykind == HAK_K_I8 and hak_long_small(k, &x):
        out[0] = x
        return 1
    return m._key(k, out)


cdef inline void _map_free_storage(RecordMap m) noexcept nogil:
    """Free the index table, the entries and the liveness bytes (the caller resets them)."""
    hak_free(m.table)
    hak_free(m.entries)
    hak_free(m.alive)


cdef class RecordMap(_RecordContainer):
    """An integer-keyed hash map whose values are records stored inline.

    ``RecordMap(spec, key="i8", data=None)``: key is an integer numpy type (i1..i8,
    u1..u8); data (optional) is a mapping or an iterable of (key, record) pairs.
    Like a dict: ``m[k]`` (a :class:`Record` view that re-resolves by key),
    ``m[k] = record``, ``del m[k]``, ``get``, ``in``, ``len``, ``pop``, ``popitem``,
    ``update``, iteration over keys / ``values()`` / ``items()`` in insertion order.
    Missing keys raise KeyError; keys that are not integers raise TypeError.
    Bulk ``get_many`` / ``set_many`` work on numpy arrays. Not thread-safe.
    """

    def __init__(self, spec, key="i8", data=None):
        self._bind(spec)
        self.itemsize = self._codec.itemsize
        self.estride = 8 + ((self.itemsize + 7) & ~7)
        try:
            kd = np.dtype(key)
        except TypeError:
            raise TypeError(f"key type {key!r} is not a numpy integer type") from None
        if kd.kind not in "iu" or kd.itemsize not in (1, 2, 4, 8):
            raise TypeError(f"key type {key!r} is not an integer type (use i1..i8 or u1..u8)")
        self.key_dtype = np.dtype(kd.kind + str(kd.itemsize))
        self.keykind = _KIND_OF[(kd.kind, kd.itemsize)]
        self.kmin = _IMIN[self.keykind]
        self.kmax = _IMAX[self.keykind]
        self.umax = <uint64_t>0xFFFFFFFFFFFFFFFFULL if self.keykind == HAK_K_U8 else <uint64_t>self.kmax
        self.closed = False
        if data is not None:
            self.update(data)

    def __dealloc__(self):
        _map_free_storage(self)

    # ---------------------------------------------------------------- cdef API
    cdef bint key_ok(self, int64_t key) noexcept nogil:
        if self.keykind >= HAK_K_U1:
            return self.keykind == HAK_K_U8 or <uint64_t>key <= self.umax
        return self.kmin <= key <= self.kmax

    cdef char* find_raw(self, int64_t key) noexcept nogil:
        return _map_find(self, <uint64_t>key)

    cdef Py_ssize_t _slot_of(self, uint64_t k) noexcept nogil:
        cdef size_t mask, h
        cdef uint64_t perturb = k
        cdef uint32_t e
        if self.table == NULL:
            return -1
        mask = <size_t>self.tcap - 1
        h = <size_t>k & mask
        while True:
            e = self.table[h]
            if e == MAP_EMPTY:
                return -1
            if e != MAP_DUMMY and (<uint64_t*>(self.entries + <size_t>e * self.estride))[0] == k:
                return h
            h = _probe_next(h, &perturb, mask)

    cdef int _resize(self, Py_ssize_t min_usable) noexcept nogil:
        """Rebuild with room for min_usable entries, compacting deleted ones out."""
        cdef int bits = 3
        cdef Py_ssize_t tcap, ecap, j, w = 0
        cdef uint32_t* nt
        cdef char* ne
        cdef uint8_t* na
        cdef size_t mask, h
        cdef uint64_t k, perturb
        while ((<Py_ssize_t>1) << bits) * 2 // 3 < min_usable:
            bits += 1
            if bits > MAP_MAX_BITS:
                return HAK_C_NOMEM
        tcap = (<Py_ssize_t>1) << bits
        ecap = tcap * 2 // 3
        nt = <uint32_t*>hak_malloc(<size_t>tcap * 4)
        ne = <char*>hak_malloc(<size_t>ecap * <size_t>self.estride)
        na = <uint8_t*>hak_malloc(<size_t>ecap)
        if nt == NULL or ne == NULL or na == NULL:
            hak_free(nt)
            hak_free(ne)
            hak_free(na)
            return HAK_C_NOMEM
        memset(nt, 0xFF, <size_t>tcap * 4)
        mask = <size_t>tcap - 1
        for j in range(self.eused):
            if not self.alive[j]:
                continue
            memcpy(ne + w * self.estride, self.entries + j * self.estride, self.estride)
            na[w] = 1
            k = (<uint64_t*>(ne + w * self.estride))[0]
            perturb = k
            h = <size_t>k & mask
            while nt[h] != MAP_EMPTY:
                h = _probe_next(h, &perturb, mask)
            nt[h] = <uint32_t>w
            w += 1
        _map_free_storage(self)
        self.table = nt
        self.entries = ne
        self.alive = na
        self.tcap = tcap
        self.tbits = bits
        self.ecap = ecap
        self.eused = w
        return HAK_C_OK

    cdef char* insert_raw(self, int64_t key, bint* created) noexcept nogil:
        """The record slot of key, made (zeroed) if new; NULL if closed or out of memory."""
        cdef uint64_t k = <uint64_t>key
        cdef uint64_t perturb
        cdef char* p
        cdef size_t mask, h
        cdef Py_ssize_t m
        if self.closed:
            return NULL
        p = self.find_raw(key)
        if p != NULL:
            created[0] = False
            return p
        if self.eused >= self.ecap:
            m = 2 * self.n
            if m < self.n + 1:
                m = self.n + 1
            if m < 5:
                m = 5
            if self._resize(m) != HAK_C_OK:
                return NULL
        mask = <size_t>self.tcap - 1
        perturb = k
        h = <size_t>k & mask
        while self.table[h] != MAP_EMPTY:
            h = _probe_next(h, &perturb, mask)
        self.table[h] = <uint32_t>self.eused
        p = self.entries + self.eused * self.estride
        (<uint64_t*>p)[0] = k
        memset(p + 8, 0, self.estride - 8)
        self.alive[self.eused] = 1
        self.eused += 1
        self.n += 1
        self.version += 1
        created[0] = True
        return p + 8

    cdef int set_raw(self, int64_t key, const void* rec) noexcept nogil:
        """m[key] = the itemsize bytes at rec."""
        cdef bint created
        cdef char* p
        if self.closed:
            return HAK_C_CLOSED
        if not self.key_ok(key):
            return HAK_C_RANGE
        p = self.insert_raw(key, &created)
        if p == NULL:
            return HAK_C_NOMEM
        memcpy(p, rec, self.itemsize)
        return HAK_C_OK

    cdef int remove_raw(self, int64_t key, void* out) noexcept nogil:
        """Delete key, copying its record to out unless out is NULL."""
        cdef Py_ssize_t s
        cdef uint32_t e
        if self.closed:
            return HAK_C_CLOSED
        s = self._slot_of(<uint64_t>key)
        if s < 0:
            return HAK_C_MISSING
        e = self.table[s]
        if out != NULL:
            memcpy(out, self.entries + <size_t>e * self.estride + 8, self.itemsize)
        self.table[s] = MAP_DUMMY
        self.alive[e] = 0
        self.n -= 1
        self.version += 1
        return HAK_C_OK

    # ---------------------------------------------------------------- Python API
    cdef inline int _key(self, object k, int64_t* out) except -1:
        """1 and the key bits if k is an in-range integer, 0 if out of range."""
        cdef int ovf = 0
        cdef long long x
        if not PyLong_Check(k):
            if isinstance(k, float) or not PyIndex_Check(k):
                raise TypeError(f"RecordMap keys must be integers, not {type(k).__name__}")
            k = PyNumber_Index(k)
        x = PyLong_AsLongLongAndOverflow(k, &ovf)
        if ovf == 0:
            if self.keykind >= HAK_K_U1:
                if x < 0 or (self.keykind != HAK_K_U8 and <uint64_t>x > self.umax):
                    return 0
            elif x < self.kmin or x > self.kmax:
                return 0
            out[0] = x
            return 1
        if ovf > 0 and self.keykind == HAK_K_U8:
            try:
                out[0] = <int64_t>PyLong_AsUnsignedLongLong(k)
            except OverflowError:
                return 0
            return 1
        return 0

    cdef object _key_obj(self, uint64_t bits):
        if self.keykind == HAK_K_U8:
            return PyLong_FromUnsignedLongLong(bits)
        return PyLong_FromLongLong(<int64_t>bits)

    cdef int _range_error(self, k) except -1:
        raise OverflowError(f"key {k!r} is out of range for key type {self.key_dtype}")

    def __getitem__(self, k):
        cdef int64_t key
        if _map_key(self, k, &key) and _map_find(self, <uint64_t>key) != NULL:
            return _view(self, self._codec, VIEW_MAP, key)
        _check_open(self.closed, self)      # a closed map has no table: it lands here
        raise KeyError(k)

    def get(self, k, default=None):
        """m[k] if k is present, else default."""
        cdef int64_t key
        _check_open(self.closed, self)
        if not _map_key(self, k, &key) or _map_find(self, <uint64_t>key) == NULL:
            return default
        return _view(self, self._codec, VIEW_MAP, key)

    def __contains__(self, k):
        cdef int64_t key
        _check_open(self.closed, self)
        return bool(_map_key(self, k, &key)) and _map_find(self, <uint64_t>key) != NULL

    def __setitem__(self, k, value):
        cdef int64_t key
        cdef char tmp[SCRATCH]
        cdef char* p = tmp
        cdef char* dst
        cdef bint created
        if self.closed:
            _check_open(True, self)
        if not self._key(k, &key):
            self._range_error(k)
        if self.itemsize > SCRATCH:
            buf = bytearray(self.itemsize)
            p = PyByteArray_AS_STRING(buf)
        self._codec.pack(p, value, None)
        dst = self.insert_raw(key, &created)
        if dst == NULL:
            _raise_rc(HAK_C_NOMEM, self)
        memcpy(dst, p, self.itemsize)

    def __delitem__(self, k):
        cdef int64_t key
        _check_open(self.closed, self)
        if not self._key(k, &key) or self.remove_raw(key, NULL) != HAK_C_OK:
            raise KeyError(k)

    def pop(self, k, default=_MISSING):
        """Remove k and return its record (detached); default or KeyError if missing."""
        cdef int64_t key
        cdef char* p
        _check_open(self.closed, self)
        if not self._key(k, &key) or (p := self.find_raw(key)) == NULL:
            if default is _MISSING:
                raise KeyError(k)
            return default
        r = _detached(self._codec, p)
        self.remove_raw(key, NULL)
        return r

    def popitem(self):
        """Remove and return the last inserted (key, record); KeyError if empty."""
        cdef Py_ssize_t j
        cdef uint64_t k
        _check_open(self.closed, self)
        if self.n == 0:
            raise KeyError("popitem(): RecordMap is empty")
        j = self.eused - 1
        while not self.alive[j]:
            j -= 1
        k = (<uint64_t*>(self.entries + j * self.estride))[0]
        r = _detached(self._codec, self.entries + j * self.estride + 8)
        self.remove_raw(<int64_t>k, NULL)
        return self._key_obj(k), r

    def setdefault(self, k, default=None):
        """m[k] if present; else insert default (zero record if None) and return it."""
        if k in self:
            return self[k]
        if default is None:
            default = {}
        self[k] = default
        return self[k]

    def update(self, other=(), **kw):
        """Insert every (key, record) of other (a mapping or pairs). All or nothing:
        every key and record is checked before the map changes."""
        cdef int64_t key
        cdef Py_ssize_t j, m
        cdef char* dst
        cdef bint created
        cdef RecordVector stage
        _check_open(self.closed, self)
        if kw:
            raise TypeError("RecordMap keys are integers: keyword arguments are not keys")
        if isinstance(other, RecordMap):
            pairs = list((<RecordMap>other)._items_raw())
        elif hasattr(other, "keys"):
            pairs = [(k, other[k]) for k in other.keys()]
        else:
            pairs = []
            for item in other:
                if not isinstance(item, (tuple, list)) or len(item) != 2:
                    raise TypeError("update() needs a mapping or (key, record) pairs")
                pairs.append(item)
        m = len(pairs)
        keys = np.empty(m, np.int64)
        stage = _new_vector(self._codec)
        stage.reserve_raw(m)
        for j in range(m):
            k, v = pairs[j]
            if not self._key(k, &key):
                self._range_error(k)
            keys[j] = key
            stage.append(v)
        self._bulk_set(keys, stage.data, m)

    cdef int _bulk_set(self, keys, const char* src, Py_ssize_t m) except -1:
        """Insert m checked (key bits, record) pairs; grows once first, so cannot fail midway."""
        cdef const int64_t[::1] kv = keys
        cdef Py_ssize_t j, need
        cdef bint created
        cdef char* dst
        if self.eused + m > self.ecap:
            need = self.n + m
            if need < 2 * self.n:
                need = 2 * self.n
            if self._resize(need if need > 5 else 5) != HAK_C_OK:
                _raise_rc(HAK_C_NOMEM, self)
        with nogil:
            for j in range(m):
                dst = self.insert_raw(kv[j], &created)
                memcpy(dst, src + j * self.itemsize, self.itemsize)
        return 0

    def _items_raw(self):
        cdef Py_ssize_t j
        for j in range(self.eused):
            if self.alive[j]:
                yield (self._key_obj((<uint64_t*>(self.entries + j * self.estride))[0]),
                       _detached(self._codec, self.entries + j * self.estride + 8))

    def clear(self):
        """Remove every entry and free the storage."""
        _check_open(self.closed, self)
        _map_free_storage(self)
        self.table = NULL
        self.entries = NULL
        self.alive = NULL
        self.tcap = self.ecap = self.eused = self.n = 0
        self.tbits = 0
        self.version += 1

    def __len__(self):
        return self.n

    def __iter__(self):
        return self.keys()

    def keys(self):
        """Iterator over the keys in insertion order."""
        cdef Py_ssize_t j = 0
        cdef uint64_t version = self.version
        _check_open(self.closed, self)
        while j < self.eused:
            if self.alive[j]:
                yield self._key_obj((<uint64_t*>(self.entries + j * self.estride))[0])
                if self.version != version or self.closed:
                    raise RuntimeError("RecordMap changed size during iteration")
            j += 1

    def values(self):
        """Iterator over record views in insertion order."""
        for k in self.keys():
            yield self[k]

    def items(self):
        """Iterator over (key, record view) pairs in insertion order."""
        for k in self.keys():
            yield k, self[k]

    def keys_array(self):
        """The keys as a numpy array of the key type, in insertion order."""
        cdef Py_ssize_t j, w = 0
        _check_open(self.closed, self)
        out = np.empty(self.n, np.uint64 if self.keykind == HAK_K_U8 else np.int64)
        cdef int64_t[::1] ov = out.view(np.int64)
        for j in range(self.eused):
            if self.alive[j]:
                ov[w] = (<int64_t*>(self.entries + j * self.estride))[0]
                w += 1
        return out.astype(self.key_dtype)

    def to_numpy(self):
        """The records as a numpy structured array, in insertion order (a copy)."""
        cdef Py_ssize_t j, w = 0
        cdef char* dst
        _check_open(self.closed, self)
        out = np.empty(self.n, self._codec.dtype)
        dst = _array_addr(out)
        for j in range(self.eused):
            if self.alive[j]:
                memcpy(dst + w * self.itemsize, self.entries + j * self.estride + 8, self.itemsize)
                w += 1
        return out

    cdef tuple _key_bits(self, keys):
        """(bits as int64 array, valid as uint8 array) for an array of integer keys."""
        ka = np.asarray(keys)
        if ka.ndim != 1:
            raise ValueError(f"keys must be a 1-D array, got {ka.ndim} dimensions")
        if ka.dtype.kind not in "iu":
            if len(ka) == 0:
                ka = ka.astype(np.int64)
            else:
                raise TypeError(f"keys must be an integer array, not {ka.dtype}")
        if self.keykind == HAK_K_U8:
            valid = ka >= 0
            bits = np.where(valid, ka, 0).astype(np.uint64).view(np.int64)
        else:
            valid = (ka >= self.kmin) & (ka <= self.kmax)
            bits = np.where(valid, ka, 0).astype(np.int64)
        return np.ascontiguousarray(bits), np.ascontiguousarray(valid).view(np.uint8), ka

    def get_many(self, keys, *, missing="raise"):
        """Records of an array of keys, as a numpy structured array (a copy).

        missing="raise": KeyError naming the first missing key. missing="mask":
        return (records, found) where found is a bool array and missing rows are zero.
        """
        cdef Py_ssize_t j, m
        cdef char* dst
        cdef char* p
        _check_open(self.closed, self)
        if missing not in ("raise", "mask"):
            raise ValueError(f"missing must be 'raise' or 'mask', not {missing!r}")
        bits, valid, ka = self._key_bits(keys)
        m = len(bits)
        out = np.zeros(m, self._codec.dtype)
        found = np.zeros(m, np.bool_)
        cdef const int64_t[::1] kv = bits
        cdef const uint8_t[::1] vv = valid
        cdef uint8_t[::1] fv = found.view(np.uint8)
        dst = _array_addr(out)
        with nogil:
            for j in range(m):
                if vv[j]:
                    p = self.find_raw(kv[j])
                    if p != NULL:
                        memcpy(dst + j * self.itemsize, p, self.itemsize)
                        fv[j] = 1
        if missing == "mask":
            return out, found
        if m and not found.all():
            raise KeyError(ka[np.argmin(found)].item())
        return out

    def set_many(self, keys, values):
        """m[keys[j]] = values[j] for every j (a structured array of the same fields).
        All or nothing: keys and values are checked, and the map grown, first."""
        _check_open(self.closed, self)
        bits, valid, ka = self._key_bits(keys)
        if len(bits) and not valid.all():
            self._range_error(ka[np.argmin(valid)].item())
        vals = _coerce_array(values, self._codec.dtype)
        if len(vals) != len(bits):
            raise ValueError(f"{len(bits)} keys but {len(vals)} records")
        self._bulk_set(bits, _array_addr(vals), len(bits))

    def copy(self):
        """A new RecordMap with the same entries."""
        _check_open(self.closed, self)
        out = RecordMap(self._codec, self.key_dtype)
        out.set_many(self.keys_array(), self.to_numpy())
        return out

    def close(self):
        """Free the storage now. Idempotent."""
        if self.closed:
            return
        self.clear()
        self.closed = True

    @property
    def nbytes(self):
        """Bytes of hakmem memory held (index table, entries, liveness bytes)."""
        return self.tcap * 4 + self.ecap * (self.estride + 1)

    def __repr__(self):
        if self.closed:
            return "<closed RecordMap>"
        return f"RecordMap({_spec_str(self._codec)!r}, key={self.key_dtype.str[1:]!r}, len={self.n})"

    def __reduce__(self):
        _check_open(self.closed, self)
        return (_map_from_arrays, (self._codec.dtype, self.key_dtype.str[1:],
                                   self.keys_array(), self.to_numpy()))


def _map_from_arrays(dtype, key, keys, values):
    """Unpickle a RecordMap."""
    m = RecordMap(dtype, key)
    m.set_many(keys, values)
    return m
