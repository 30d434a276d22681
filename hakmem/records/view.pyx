# cython: binding=False
"""hakmem.records.view — Record: one view class for records of pools and containers.

A view holds its owner and a position and re-resolves on every access (the owner's
``view_load`` / ``view_store``), so it can never dangle: a record that is gone raises
IndexError (vector, deque), KeyError (map) or StaleHandleError (pool), and a closed
owner raises ValueError. Values written through a view are packed into scratch first
(hakmem.records.codec), so a refused or re-entrant value never leaves half a record.
Records popped out of a container, and ``Record.copy()``, are detached copies.
"""
cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.number cimport PyIndex_Check, PyNumber_AsSsize_t
from cpython.object cimport PyObject_GenericGetAttr
from libc.string cimport memcpy

from hakmem.records.codec cimport (codec_for, hak_scratch_t, scratch_get, scratch_done,
                                   register_view)

from hakmem.spec import FieldError

__all__ = ["Record", "RecordOwner", "RecordContainer", "record_from_bytes"]


# ============================================================================ owners
cdef Codec _UNBOUND = codec_for("unbound:u1")     # the codec of a container before __init__

cdef class RecordOwner:
    """Base of everything a :class:`Record` view can point into."""

    cdef int view_load(self, int64_t pos, char* dst, Py_ssize_t off, Py_ssize_t size) except -1:
        raise NotImplementedError

    cdef int view_store(self, int64_t pos, const char* src, Py_ssize_t off,
                        Py_ssize_t size) except -1:
        raise NotImplementedError

    cdef object view_key(self, int64_t pos):
        return pos


cdef class RecordContainer(RecordOwner):
    """The part RecordVector, RecordDeque and RecordMap share: the record codec, the
    closed flag, ``with`` blocks (close on exit) and the dtype / spec properties."""

    def __cinit__(self, *args, **kwargs):
        # Closed, with a stand-in codec, until __init__ succeeds: a container made by
        # __new__ alone has no None to dereference, and refuses every use as closed.
        self.closed = True
        self.codec = _UNBOUND

    cdef int bind(self, object spec) except -1:
        """Take the record spec; refused if __init__ already ran."""
        if self.codec is not _UNBOUND:
            raise TypeError(f"{type(self).__name__} is already initialised")
        self.codec = codec_for(spec)
        return 0

    cdef int check_open(self) except -1:
        if self.closed:
            raise ValueError(f"operation on a closed {type(self).__name__}")
        return 0

    cdef int raise_rc(self, int rc) except -1:
        """Turn a HAK_C_* code into the matching Python exception."""
        name = type(self).__name__
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

    cdef object records(self):
        raise NotImplementedError

    cdef char* view_addr(self, int64_t pos) except NULL:
        raise NotImplementedError

    cdef int view_load(self, int64_t pos, char* dst, Py_ssize_t off, Py_ssize_t size) except -1:
        memcpy(dst + off, self.view_addr(pos) + off, size)
        return 0

    cdef int view_store(self, int64_t pos, const char* src, Py_ssize_t off,
                        Py_ssize_t size) except -1:
        memcpy(self.view_addr(pos) + off, src + off, size)
        return 0

    def __enter__(self):
        self.check_open()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def dtype(self):
        """The numpy dtype of one record."""
        return self._bound().dtype

    @property
    def spec(self):
        """The RecordSpec of the records."""
        return self._bound().spec

    cdef Codec _bound(self):
        if self.codec is _UNBOUND:
            raise TypeError(f"{type(self).__name__} was not initialised (call it with a spec)")
        return self.codec


# ============================================================================ Record
@cython.freelist(64)
@cython.final
@cython.no_gc          # a view refers to its owner, never the reverse: no cycles
cdef class Record:
    """One record: a view into a pool or container, or a detached copy (from pop, copy()).

    Fields read and write as attributes (``r.x``, ``r.x = 2.0``) or by name or
    position (``r["x"]``, ``r[0]``). A view re-resolves its record on every access:
    if the record is gone, access raises IndexError (vector, deque), KeyError (map) or
    StaleHandleError (pool). Equal to a tuple of the same values, and to a Record with
    the same values. Fields win over the methods and properties below when names clash.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("Record views come from pools and containers (pool[h], vec[i], ...)")

    cdef int load(self, char* dst, Py_ssize_t off, Py_ssize_t size) except -1:
        if self.attached:
            return (<RecordOwner>self.holder).view_load(self.pos, dst, off, size)
        memcpy(dst + off, PyByteArray_AS_STRING(self.holder) + off, size)
        return 0

    cdef object field_value(self, Py_ssize_t i):
        cdef hak_scratch_t s
        cdef char* buf = scratch_get(&s, self.codec.itemsize)
        try:
            self.load(buf, self.codec.fields[i].offset, self.codec.fields[i].size)
            return self.codec.get_field(buf, i)
        finally:
            scratch_done(&s)

    cdef int set_field(self, Py_ssize_t i, object value) except -1:
        """Pack value into scratch (user code runs here), then store the field's bytes."""
        cdef hak_scratch_t s
        cdef char* buf = scratch_get(&s, self.codec.itemsize)
        cdef Py_ssize_t off = self.codec.fields[i].offset, size = self.codec.fields[i].size
        try:
            self.codec.pack_field(buf, i, value)
            if self.attached:
                (<RecordOwner>self.holder).view_store(self.pos, buf, off, size)
            else:
                memcpy(PyByteArray_AS_STRING(self.holder) + off, buf + off, size)
        finally:
            scratch_done(&s)
        return 0

    cdef tuple _values(self):
        cdef hak_scratch_t s
        self._check()
        cdef char* buf = scratch_get(&s, self.codec.itemsize)
        try:
            self.load(buf, 0, self.codec.itemsize)
            return self.codec.unpack(buf)
        finally:
            scratch_done(&s)

    cdef int _check(self) except -1:
        if self.codec is None:              # made by Record.__new__, not by an owner
            raise TypeError("Record views come from pools and containers (pool[h], vec[i], ...)")
        return 0

    def __getattribute__(self, name):
        if self.codec is None:
            self._check()
        i = self.codec.index.get(name)
        if i is not None:
            return self.field_value(<Py_ssize_t>i)
        try:
            return PyObject_GenericGetAttr(self, name)
        except AttributeError:
            pass
        self.codec.field(name)               # raises FieldError naming the fields

    def __setattr__(self, name, value):
        self._check()
        self.set_field(self.codec.field(name), value)

    def __delattr__(self, name):
        raise AttributeError("record fields cannot be deleted")

    cdef Py_ssize_t _field_index(self, key) except -1:
        cdef Py_ssize_t j
        self._check()
        if isinstance(key, str):
            return self.codec.field(key)
        if PyIndex_Check(key):
            j = PyNumber_AsSsize_t(key, IndexError)
            if j < 0:
                j += self.codec.nfields
            if not 0 <= j < self.codec.nfields:
                raise IndexError("record field index out of range")
            return j
        raise TypeError(f"record fields are indexed by name or position, not {type(key).__name__}")

    def __getitem__(self, key):
        return self.field_value(self._field_index(key))     # the index first: it may run code

    def __setitem__(self, key, value):
        self.set_field(self._field_index(key), value)

    def __len__(self):
        self._check()
        return self.codec.nfields

    def __iter__(self):
        return iter(self._values())

    def as_tuple(self):
        """The field values as a tuple (one consistent copy)."""
        return self._values()

    def as_dict(self):
        """The field values as a dict keyed by field name (one consistent copy)."""
        return dict(zip(self.codec.names, self._values()))

    def copy(self):
        """A detached copy of the record (owns its bytes)."""
        cdef hak_scratch_t s
        cdef char* buf = scratch_get(&s, self.codec.itemsize)
        try:
            self.load(buf, 0, self.codec.itemsize)
            return make_detached(self.codec, buf)
        finally:
            scratch_done(&s)

    @property
    def owner(self):
        """The pool or container holding the record (None for a detached record)."""
        return self.holder if self.attached else None

    @property
    def key(self):
        """Where the record sits in its owner: the pool handle, the map key, or the
        vector index / deque sequence number (None for a detached record)."""
        return (<RecordOwner>self.holder).view_key(self.pos) if self.attached else None

    @property
    def handle(self):
        """For a view of a pool record: its handle (same as ``key``)."""
        return self.key

    @property
    def pool(self):
        """For a view of a pool record: the pool (same as ``owner``)."""
        return self.holder if self.attached else None

    def __eq__(self, other):
        if isinstance(other, Record):
            return self._values() == (<Record>other)._values()
        if isinstance(other, tuple):
            return self._values() == other
        return NotImplemented

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    __hash__ = None

    def __dir__(self):
        self._check()
        return sorted(set(self.codec.names) | {"as_tuple", "as_dict", "copy", "owner", "key",
                                               "handle", "pool"})

    def __repr__(self):
        try:
            vals = self._values()
        except (IndexError, KeyError, ValueError) as e:
            return f"<Record view, gone: {e}>"
        return "Record(" + ", ".join(f"{n}={v!r}" for n, v in zip(self.codec.names, vals)) + ")"

    def __reduce__(self):
        cdef hak_scratch_t s
        cdef char* buf = scratch_get(&s, self.codec.itemsize)
        try:
            self.load(buf, 0, self.codec.itemsize)
            b = PyBytes_FromStringAndSize(buf, self.codec.itemsize)
        finally:
            scratch_done(&s)
        return (record_from_bytes, (self.codec.dtype, b))


cdef Record make_detached(Codec codec, const char* src):
    cdef Record r = Record.__new__(Record)
    data = bytearray(codec.itemsize)
    memcpy(PyByteArray_AS_STRING(data), src, codec.itemsize)
    r.holder = data
    r.codec = codec
    r.attached = False
    return r


cdef Codec _codec_of_view(object rec):
    return (<Record>rec).codec


cdef int _load_view(object rec, char* dst) except -1:
    return (<Record>rec).load(dst, 0, (<Record>rec).codec.itemsize)


register_view(Record, _codec_of_view, _load_view)


def record_from_bytes(dtype, b):
    """Unpickle a Record (detached): the record bytes of a spec."""
    cdef Codec c = codec_for(dtype)
    if type(b) is not bytes or len(b) != c.itemsize:
        raise ValueError(f"a pickled Record needs {c.itemsize} bytes, not {type(b).__name__} "
                         f"of length {len(b) if isinstance(b, bytes) else '?'}")
    return make_detached(c, PyBytes_AS_STRING(b))
