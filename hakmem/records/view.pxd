# hakmem.records.view — the record view shared by pools and containers, and the base
# classes that views resolve through.
#
#   from hakmem.records.view cimport Record, RecordOwner, RecordContainer, make_view
#
# A Record holds its owner and a position (vector index, deque sequence number, map
# key bits, pool handle) and asks the owner for the bytes on every access, so it can
# never dangle: the owner raises IndexError / KeyError / StaleHandleError (or
# ValueError if closed) when the record is gone. A detached Record owns a copy.
from libc.stdint cimport int64_t
from hakmem.records.codec cimport Codec

# Install fn (a METH_FASTCALL | METH_KEYWORDS C function) as method `name` of the
# extension type `type` (its def lives for the process): the pool's alloc and the
# vector's append, so no tuple or dict is built for their arguments.
cdef extern from *:
    """
    static int hak_add_fastcall(PyObject* type, const char* name, void* fn, const char* doc) {
        PyMethodDef* def = (PyMethodDef*)PyMem_RawCalloc(1, sizeof(PyMethodDef));
        if (def == NULL) { PyErr_NoMemory(); return -1; }
        def->ml_name = name;
        def->ml_meth = (PyCFunction)fn;
        def->ml_flags = METH_FASTCALL | METH_KEYWORDS;
        def->ml_doc = doc;
        PyObject* d = PyDescr_NewMethod((PyTypeObject*)type, def);
        if (d == NULL) return -1;
        int rc = PyDict_SetItemString(((PyTypeObject*)type)->tp_dict, name, d);
        Py_DECREF(d);
        PyType_Modified((PyTypeObject*)type);
        return rc;
    }
    """
    int hak_add_fastcall(object type, const char* name, void* fn, const char* doc) except -1

# Status codes of the containers' raw (nogil) cdef API; 0 = done.
cdef enum:
    HAK_C_OK = 0
    HAK_C_EXPORTED = -1     # would move a RecordVector buffer while a buffer export is alive
    HAK_C_NOMEM = -2        # the allocator returned NULL (or the size overflowed)
    HAK_C_CLOSED = -3       # the container was closed
    HAK_C_EMPTY = -4        # pop from an empty container
    HAK_C_MISSING = -5      # RecordMap: no such key
    HAK_C_RANGE = -6        # RecordMap: key outside the key type's range


cdef class RecordOwner:
    # Anything Record views resolve through (RecordPool and the containers).
    # Copy bytes [off, off + size) of the record at pos to dst + off / from src + off.
    cdef int view_load(self, int64_t pos, char* dst, Py_ssize_t off, Py_ssize_t size) except -1
    cdef int view_store(self, int64_t pos, const char* src, Py_ssize_t off,
                        Py_ssize_t size) except -1
    cdef object view_key(self, int64_t pos)      # the Python index / key / handle of pos


cdef class RecordContainer(RecordOwner):
    # What RecordVector, RecordDeque and RecordMap share: the codec of their records,
    # the closed flag, with-blocks and the dtype / spec properties.
    cdef readonly bint closed            # True after close(), and until __init__ succeeds
    cdef readonly Codec codec
    cdef int bind(self, object spec) except -1   # __init__: take the spec (once)
    cdef int check_open(self) except -1
    cdef int raise_rc(self, int rc) except -1    # HAK_C_* code -> exception
    cdef object records(self)                    # a numpy copy of the records, in order
    cdef Codec _bound(self)                      # the codec; TypeError before __init__
    # The address of the record at pos now (raises if it is gone or the container is
    # closed); view_load / view_store copy through it.
    cdef char* view_addr(self, int64_t pos) except NULL


cdef class Record:
    cdef Codec codec
    cdef object holder      # a RecordOwner; for a detached record, its bytearray
    cdef int64_t pos
    cdef bint attached
    cdef int load(self, char* dst, Py_ssize_t off, Py_ssize_t size) except -1
    cdef object field_value(self, Py_ssize_t i)
    cdef int set_field(self, Py_ssize_t i, object value) except -1
    cdef tuple _values(self)
    cdef int _check(self) except -1
    cdef Py_ssize_t _field_index(self, key) except -1


# A view of the record at pos of owner (inline: map and vector lookups make one per call).
cdef inline Record make_view(RecordOwner owner, Codec codec, int64_t pos):
    cdef Record r = Record.__new__(Record)
    r.holder = owner
    r.codec = codec
    r.pos = pos
    r.attached = True
    return r
cdef Record make_detached(Codec codec, const char* src)


# ---- index helpers of the sequence containers ------------------------------------
# Convert first (user code may run: __index__), then check against the length the
# container has *after* that code: never the length read before it.
from cpython.number cimport PyIndex_Check, PyNumber_AsSsize_t

cdef inline Py_ssize_t index_arg(object idx, str what) except? -1:
    """An index argument as a C integer (runs its __index__); TypeError if not an int."""
    if not PyIndex_Check(idx):
        raise TypeError(f"{what} indices must be integers, not {type(idx).__name__}")
    return PyNumber_AsSsize_t(idx, IndexError)

cdef inline Py_ssize_t norm_index(Py_ssize_t i, Py_ssize_t n, str what) except -1:
    """A list-style index (negative from the end) checked against the length n."""
    if i < 0:
        i += n
    if i < 0 or i >= n:
        raise IndexError(f"{what} index out of range")
    return i

cdef inline Py_ssize_t clamp_index(Py_ssize_t i, Py_ssize_t n) noexcept:
    """An insert position clamped like list.insert's."""
    if i < 0:
        i += n
        if i < 0:
            i = 0
    return n if i > n else i
