# cython: binding=False
"""hakmem.records.codec — the one codec of hakmem's records.

Every record a pool, vector, deque, map or view stores goes through :class:`Codec`:
it checks Python values against a spec (type, range, length) and writes the record's
bytes into a scratch buffer the caller owns. Every piece of user code a value can run
(``__float__``, ``__index__``, ``__bytes__``, a list's items, a generator) runs here,
before the caller touches its container; the caller then re-validates the container
and commits with memcpy. Values are read by their C value (an int subclass whose
comparisons lie, a bytes subclass whose ``__len__`` lies cannot fool it).

A codec is derived from a numpy dtype alone (:func:`codec_for` caches one per dtype),
so a hand-built RecordSpec cannot smuggle in offsets or sizes.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_AsDouble, PyFloat_FromDouble
from cpython.long cimport (PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong,
                           PyLong_FromLongLong, PyLong_FromUnsignedLongLong)
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.number cimport PyIndex_Check, PyNumber_Index
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.sequence cimport PySequence_Tuple
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.math cimport isinf
from libc.stdint cimport INT64_MIN, INT64_MAX, int32_t, uintptr_t
from libc.string cimport memset

import sys

import numpy as np

from hakmem.spec import FieldError, parse_spec

__all__ = ["Codec", "codec_of"]

cdef extern from "Python.h":
    bint PyLong_CheckExact(object)
    bint PyLong_Check(object)
    bint PyFloat_CheckExact(object)
    bint PyTuple_CheckExact(object)
    bint PyBool_Check(object)
    Py_ssize_t PyTuple_GET_SIZE(object)
    PyObject* PyTuple_GET_ITEM(object, Py_ssize_t)


_np_bool = np.bool_
_np_void = np.void

_KIND_OF = {
    ("i", 1): HAK_K_I1, ("i", 2): HAK_K_I2, ("i", 4): HAK_K_I4, ("i", 8): HAK_K_I8,
    ("u", 1): HAK_K_U1, ("u", 2): HAK_K_U2, ("u", 4): HAK_K_U4, ("u", 8): HAK_K_U8,
    ("f", 4): HAK_K_F4, ("f", 8): HAK_K_F8, ("b", 1): HAK_K_BOOL,
}
# Ranges of the integer kinds (index = kind; U8 is checked on its own).
cdef int64_t[13] _IMIN
cdef int64_t[13] _IMAX
_IMIN[:] = [0, -128, -32768, -2147483648, 0, 0, 0, 0, 0, 0, 0, 0, 0]
_IMAX[:] = [0, 127, 32767, 2147483647, 0, 255, 65535, 4294967295, 0, 0, 0, 0, 0]
_IMIN[<int>HAK_K_I8] = INT64_MIN
_IMAX[<int>HAK_K_I8] = INT64_MAX
cdef double _F4_MAX = 3.4028234663852886e38


# ============================================================================ cache
cdef dict _codecs = {}


cdef Codec codec_for(object spec):
    """The shared, immutable codec of a spec (one per distinct dtype; SpecError if bad)."""
    if isinstance(spec, Codec):
        return <Codec>spec
    dt = parse_spec(spec).dtype
    c = _codecs.get(dt)
    if c is None:
        c = Codec(dt)                    # from the dtype alone: the cache cannot be poisoned
        _codecs[dt] = c
    return <Codec>c


def codec_of(spec):
    """The :class:`Codec` of a spec (any form parse_spec takes); cached per dtype."""
    return codec_for(spec)


# ============================================================================ Codec
cdef type _view_cls = None
cdef hak_view_codec_t _view_codec = NULL
cdef hak_view_load_t _view_load = NULL


cdef int register_view(type cls, hak_view_codec_t codec_of_view,
                       hak_view_load_t load) except -1:
    """hakmem.records.view: how to read a Record (its codec; its whole record's bytes)."""
    global _view_cls, _view_codec, _view_load
    _view_cls = cls
    _view_codec = codec_of_view
    _view_load = load
    return 0


cdef class Codec:
    """Packs Python values into one record's bytes and reads them back (see module doc)."""

    def __cinit__(self, rs):
        cdef Py_ssize_t i, covered = 0
        rs = parse_spec(rs)                 # a hand-built RecordSpec is re-derived, not trusted
        self.spec = rs
        self.dtype = rs.dtype
        self.itemsize = rs.itemsize
        self.nfields = len(rs.fields)
        self.names = tuple(sys.intern(n) for n in rs.names)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.fields = <hak_field_t*>PyMem_Malloc(self.nfields * sizeof(hak_field_t))
        if self.fields == NULL:
            raise MemoryError()
        for i, f in enumerate(rs.fields):
            dt = f.dtype
            self.fields[i].kind = HAK_K_BYTES if dt.kind == "S" else _KIND_OF[(dt.kind, dt.itemsize)]
            self.fields[i].offset = f.offset
            self.fields[i].size = f.size
            covered += f.size
        self.padded = covered != self.itemsize
        # numpy writes the PEP 3118 format of its own dtype; np.asarray reads it back.
        self.fmt = memoryview(np.zeros(1, self.dtype)).format.encode("ascii")

    def __dealloc__(self):
        PyMem_Free(self.fields)

    def __reduce__(self):
        return (codec_of, (self.dtype,))

    def __repr__(self):
        return f"Codec({self.spec_str()!r})"

    cdef str spec_str(self):
        return " ".join(f"{f.name}:{f.dtype.str.lstrip('<>|=')}" for f in self.spec.fields)

    cdef Py_ssize_t field(self, object name) except -1:
        """The position of field `name`; FieldError naming the known fields if none."""
        cdef PyObject* i = PyDict_GetItem(self.index, name) if isinstance(name, str) else NULL
        if i == NULL:
            raise FieldError(f"record has no field {name!r} (fields: {', '.join(self.names)})")
        return <Py_ssize_t><object>i

    cdef int pack(self, char* dst, object rec, dict kw) except -1:
        """Write rec (tuple/list/dict/Record/numpy record) or the keyword fields to dst."""
        cdef Py_ssize_t i, nf = self.nfields
        if kw:
            if rec is not None:
                raise TypeError("pass a record or its fields as keywords, not both")
            return self.pack_dict(dst, kw)
        if not PyTuple_CheckExact(rec):
            if _view_cls is not None and type(rec) is _view_cls:
                if _view_codec(rec) is self:
                    return _view_load(rec, dst)
                return self.pack_dict(dst, rec.as_dict())
            if isinstance(rec, dict):
                return self.pack_dict(dst, <dict>rec)
            if isinstance(rec, _np_void) and rec.dtype.names is not None:
                if rec.dtype == self.dtype:
                    b = rec.tobytes()
                    memcpy(dst, PyBytes_AS_STRING(b), self.itemsize)
                    return 0
                return self.pack_dict(dst, {n: rec[n] for n in rec.dtype.names})
            if not isinstance(rec, (tuple, list)):
                if rec is None:
                    raise TypeError(f"missing record: pass a tuple of {nf} fields "
                                    f"({', '.join(self.names)}) or the fields as keywords")
                raise TypeError(f"a record must be a tuple, list, dict or Record, "
                                f"not {type(rec).__name__}")
            rec = PySequence_Tuple(rec)   # a snapshot: items may change the list meanwhile
        if PyTuple_GET_SIZE(rec) != nf:
            raise TypeError(f"record has {nf} fields ({', '.join(self.names)}), "
                            f"got {PyTuple_GET_SIZE(rec)} values")
        if self.padded:
            memset(dst, 0, self.itemsize)
        for i in range(nf):
            self.pack_field(dst, i, <object>PyTuple_GET_ITEM(rec, i))
        return 0

    cdef int pack_dict(self, char* dst, dict d) except -1:
        """Named fields; fields not given are zero."""
        items = list(d.items())          # a snapshot: values may change d meanwhile
        for k, v in items:
            self.field(k)
        memset(dst, 0, self.itemsize)
        for k, v in items:
            self.pack_field(dst, self.field(k), v)
        return 0

    cdef int pack_field(self, char* dst, Py_ssize_t i, object v) except -1:
        """Check v against field i and write it to its place in dst."""
        cdef hak_field_t* f = &self.fields[i]
        cdef int kind = f.kind
        cdef int ovf = 0
        cdef long long x
        cdef unsigned long long ux = 0
        cdef double d = 0.0
        cdef float fl
        cdef char* p = dst + f.offset
        if kind == HAK_K_F8 or kind == HAK_K_F4:
            if PyFloat_CheckExact(v):
                d = PyFloat_AS_DOUBLE(v)
            else:
                if isinstance(v, (str, bytes, bytearray)):
                    _type_error(self, i, v, "a real number")
                try:
                    d = PyFloat_AsDouble(v)
                except TypeError:
                    _type_error(self, i, v, "a real number")
                except OverflowError:
                    _range_error(self, i, v)
            if kind == HAK_K_F8:
                memcpy(p, &d, 8)
            else:
                if not isinf(d) and (d > _F4_MAX or d < -_F4_MAX):
                    _range_error(self, i, v)
                fl = <float>d
                memcpy(p, &fl, 4)
            return 0
        if kind == HAK_K_BYTES:
            if not isinstance(v, bytes):
                if not isinstance(v, (bytearray, memoryview)):
                    _type_error(self, i, v, "bytes")
                v = bytes(v)
            # PyBytes_GET_SIZE is the real length (a subclass's __len__ may lie)
            if PyBytes_GET_SIZE(v) > f.size:
                raise OverflowError(f"field {self.names[i]!r}: {PyBytes_GET_SIZE(v)} bytes do "
                                    f"not fit in S{f.size}")
            memset(p, 0, f.size)
            memcpy(p, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))
            return 0
        if kind == HAK_K_BOOL:
            if PyBool_Check(v) or isinstance(v, _np_bool):
                p[0] = 1 if v else 0
                return 0
            x = PyLong_AsLongLongAndOverflow(_as_int(self, i, v), &ovf)
            if ovf != 0 or (x != 0 and x != 1):
                raise OverflowError(f"field {self.names[i]!r}: {v!r:.40} is not a bool "
                                    "(True/False, 0 or 1)")
            p[0] = <char>x
            return 0
        # integers: the C value decides (an int subclass's comparisons may lie)
        if not PyLong_Check(v):
            v = _as_int(self, i, v)
        x = PyLong_AsLongLongAndOverflow(v, &ovf)
        if kind == HAK_K_U8:
            if ovf > 0:
                try:
                    ux = PyLong_AsUnsignedLongLong(v)
                except OverflowError:
                    _range_error(self, i, v)
            elif ovf < 0 or x < 0:
                _range_error(self, i, v)
            else:
                ux = <unsigned long long>x
            hak_rec_put_int(p, ux, 8)
            return 0
        if ovf != 0 or x < _IMIN[kind] or x > _IMAX[kind]:
            _range_error(self, i, v)
        hak_rec_put_int(p, <uint64_t>x, f.size)
        return 0

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

    cdef object column(self, Py_ssize_t i, object values, Py_ssize_t n):
        """values (a scalar or n values) checked for field i, as a new contiguous array
        of the field's dtype. Object values are converted once, by pack_field."""
        cdef hak_field_t* f = &self.fields[i]
        cdef int kind = f.kind
        cdef hak_scratch_t s
        cdef char* rec
        cdef char* dst
        cdef Py_ssize_t j, m
        name = self.names[i]
        fdt = self.dtype.fields[name][0]
        v = np.asarray(values)
        if v.ndim > 1:
            raise ValueError(f"field {name!r}: values must be a scalar or 1-d, "
                             f"not shape {v.shape}")
        if v.ndim == 1 and v.shape[0] != n:
            raise ValueError(f"field {name!r}: {v.shape[0]} values for {n} records")
        if v.dtype.kind == "O":          # Python objects: each checked and packed once
            items = v.reshape(-1).tolist()
            m = len(items)
            out = np.zeros(m, dtype=fdt)
            dst = <char*><uintptr_t>out.ctypes.data
            rec = scratch_get(&s, self.itemsize)
            try:
                for j in range(m):
                    self.pack_field(rec, i, items[j])
                    memcpy(dst + j * f.size, rec + f.offset, f.size)
            finally:
                scratch_done(&s)
            v = out if v.ndim == 1 else out.reshape(())
        sk = v.dtype.kind
        if v.size:
            if kind == HAK_K_F8 or kind == HAK_K_F4:
                if sk not in "biuf":
                    raise TypeError(f"field {name!r} ({fdt}) needs real numbers, not {v.dtype}")
                if kind == HAK_K_F4 and sk == "f" and v.dtype.itemsize > 4:
                    fin = v[np.isfinite(v)]
                    if fin.size and np.abs(fin).max() > _F4_MAX:
                        raise OverflowError(f"field {name!r}: values out of range for float32")
            elif kind == HAK_K_BYTES:
                if sk != "S":
                    raise TypeError(f"field {name!r} ({fdt}) needs bytes, not {v.dtype}")
                if v.dtype.itemsize > fdt.itemsize:
                    longest = int(np.char.str_len(v).max())
                    if longest > fdt.itemsize:
                        raise OverflowError(f"field {name!r}: {longest} bytes do not fit "
                                            f"in {fdt}")
            else:
                if sk not in "biu":
                    raise TypeError(f"field {name!r} ({fdt}) needs ints, not {v.dtype}")
                if sk != "b":
                    lo, hi = int(v.min()), int(v.max())
                    if kind == HAK_K_BOOL:
                        ok_lo, ok_hi = 0, 1
                    else:
                        info = np.iinfo(fdt)
                        ok_lo, ok_hi = int(info.min), int(info.max)
                    if lo < ok_lo or hi > ok_hi:
                        bad = lo if lo < ok_lo else hi
                        raise OverflowError(f"field {name!r}: {bad} is out of range for "
                                            f"{fdt} [{ok_lo}, {ok_hi}]")
        return np.array(np.broadcast_to(v, (n,)), dtype=fdt, order="C", copy=True)

    cdef object coerce(self, object arr):
        """A new C-contiguous 1-D array of exactly this dtype from a structured array
        (fields matched by name, values range-checked). Always a copy: the caller may
        release the GIL over it while other threads hold the source."""
        dtype = self.dtype
        a = np.asarray(arr)
        if a.ndim != 1:
            raise ValueError(f"expected a 1-D array of records, got {a.ndim} dimensions")
        if a.dtype == dtype:
            return np.array(a, dtype=dtype, order="C", copy=True)
        if a.dtype.names is None:
            raise TypeError(f"expected a structured array with fields {', '.join(dtype.names)}, "
                            f"got dtype {a.dtype}")
        missing = [n for n in dtype.names if n not in a.dtype.names]
        extra = [n for n in a.dtype.names if n not in dtype.names]
        if missing or extra:
            raise TypeError(f"array fields do not match the record: missing {missing}, "
                            f"extra {extra}")
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


cdef object _as_int(Codec c, Py_ssize_t i, object v):
    """v as an exact int (its __index__), TypeError naming the field if it has none."""
    if isinstance(v, float) or not PyIndex_Check(v):
        _type_error(c, i, v, "an integer")
    return PyNumber_Index(v)


cdef int _type_error(Codec c, Py_ssize_t i, object v, str want) except -1:
    raise TypeError(f"field {c.names[i]!r}: expected {want}, got "
                    f"{type(v).__name__} ({_short(v)})")


cdef int _range_error(Codec c, Py_ssize_t i, object v) except -1:
    raise OverflowError(f"field {c.names[i]!r}: {_short(v)} is out of range for "
                        f"{c.spec.fields[i].dtype}")


cdef str _short(object v):
    """repr(v) cut to 40 characters; a repr that fails is not the caller's error."""
    try:
        return f"{v!r:.40}"
    except Exception:
        return f"<{type(v).__name__} object>"
