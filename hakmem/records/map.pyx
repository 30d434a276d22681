# cython: binding=False
"""hakmem.records.map — RecordMap: an integer-keyed hash map whose values are records
stored inline in hakmem memory (CPython dict's compact layout and probe sequence).

Keys and records are converted (all user code: ``__index__``, ``__float__``, a
mapping's items) into scratch before the map is looked at; the map is then
re-checked (closed?) and grown once, so bulk inserts cannot fail half-way.
"""
from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.long cimport (PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong,
                           PyLong_FromLongLong, PyLong_FromUnsignedLongLong)
from cpython.number cimport PyIndex_Check, PyNumber_Index
from libc.stdint cimport uintptr_t
from libc.string cimport memcpy, memset

from hakmem.front cimport hak_malloc, hak_free
from hakmem.records.codec cimport (Codec, HAK_SCRATCH, hak_long_small, HAK_K_I1, HAK_K_I8,
                                   HAK_K_U1, HAK_K_U8)
from hakmem.records.view cimport (Record, RecordContainer, make_view, make_detached,
                                  HAK_C_OK, HAK_C_NOMEM, HAK_C_CLOSED, HAK_C_MISSING,
                                  HAK_C_RANGE)
from hakmem.records.vector cimport RecordVector, new_vector

import numpy as np

__all__ = ["RecordMap", "map_from_arrays"]

cdef extern from "Python.h":
    bint PyLong_CheckExact(object)
    bint PyLong_Check(object)

cdef enum:
    MAP_EMPTY = 0xFFFFFFFF
    MAP_DUMMY = 0xFFFFFFFE
    MAP_MAX_BITS = 31

cdef object _MISSING = object()
# key kinds: (kind, min, max) of the integer key types
_KEY_KINDS = {"i1": (HAK_K_I1, -128, 127), "i2": (HAK_K_I1 + 1, -32768, 32767),
              "i4": (HAK_K_I1 + 2, -2147483648, 2147483647),
              "i8": (HAK_K_I8, -9223372036854775808, 9223372036854775807),
              "u1": (HAK_K_U1, 0, 255), "u2": (HAK_K_U1 + 1, 0, 65535),
              "u4": (HAK_K_U1 + 2, 0, 4294967295), "u8": (HAK_K_U8, 0, 0)}


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


cdef class RecordMap(RecordContainer):
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
        try:
            kd = np.dtype(key)
        except TypeError:
            raise TypeError(f"key type {key!r} is not a numpy integer type") from None
        if kd.kind not in "iu" or kd.itemsize not in (1, 2, 4, 8):
            raise TypeError(f"key type {key!r} is not an integer type (use i1..i8 or u1..u8)")
        self.bind(spec)
        self.itemsize = self.codec.itemsize
        self.estride = 8 + ((self.itemsize + 7) & ~7)
        self.key_dtype = np.dtype(kd.kind + str(kd.itemsize))
        kind, lo, hi = _KEY_KINDS[kd.kind + str(kd.itemsize)]
        self.keykind = kind
        self.kmin = lo
        self.kmax = hi
        self.umax = <uint64_t>0xFFFFFFFFFFFFFFFFULL if kind == HAK_K_U8 else <uint64_t>hi
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

    # ---------------------------------------------------------------- views
    cdef char* view_addr(self, int64_t key) except NULL:
        cdef char* p
        self.check_open()
        p = _map_find(self, <uint64_t>key)
        if p == NULL:
            raise KeyError(self._key_obj(<uint64_t>key))
        return p

    cdef object view_key(self, int64_t pos):
        return self._key_obj(<uint64_t>pos)

    cdef object records(self):
        return self.to_numpy()

    # ---------------------------------------------------------------- Python API
    cdef int _key(self, object k, int64_t* out) except -1:
        """1 and the key bits if k is an in-range integer, 0 if out of range (its C
        value decides: an int subclass's comparisons are not consulted)."""
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

    cdef int _key_checked(self, object k, int64_t* out) except -1:
        if not self._key(k, out):
            raise OverflowError(f"key {k!r:.40} is out of range for key type {self.key_dtype}")
        return 0

    cdef object _key_obj(self, uint64_t bits):
        if self.keykind == HAK_K_U8:
            return PyLong_FromUnsignedLongLong(bits)
        return PyLong_FromLongLong(<int64_t>bits)

    def __getitem__(self, k):
        cdef int64_t key
        if _map_key(self, k, &key) and _map_find(self, <uint64_t>key) != NULL:
            return make_view(self, self.codec, key)
        self.check_open()      # a closed map has no table: it lands here
        raise KeyError(k)

    def get(self, k, default=None):
        """m[k] if k is present, else default."""
        cdef int64_t key
        if not _map_key(self, k, &key):
            self.check_open()
            return default
        self.check_open()
        if _map_find(self, <uint64_t>key) == NULL:
            return default
        return make_view(self, self.codec, key)

    def __contains__(self, k):
        cdef int64_t key
        cdef bint ok = _map_key(self, k, &key)
        self.check_open()
        return ok and _map_find(self, <uint64_t>key) != NULL

    def __setitem__(self, k, value):
        cdef int64_t key
        cdef char tmp[HAK_SCRATCH]
        cdef char* p = tmp
        cdef int rc
        self._key_checked(k, &key)
        if self.itemsize > HAK_SCRATCH:
            buf = bytearray(self.itemsize)
            p = PyByteArray_AS_STRING(buf)
        self.codec.pack(p, value, None)
        rc = self.set_raw(key, p)       # checks closed: the value may have closed the map
        if rc != HAK_C_OK:
            self.raise_rc(rc)

    def __delitem__(self, k):
        cdef int64_t key
        cdef bint ok = self._key(k, &key)
        self.check_open()
        if not ok or self.remove_raw(key, NULL) != HAK_C_OK:
            raise KeyError(k)

    def pop(self, k, default=_MISSING):
        """Remove k and return its record (detached); default or KeyError if missing."""
        cdef int64_t key
        cdef char* p = NULL
        cdef bint ok = self._key(k, &key)
        self.check_open()
        if ok:
            p = self.find_raw(key)
        if p == NULL:
            if default is _MISSING:
                raise KeyError(k)
            return default
        r = make_detached(self.codec, p)
        self.remove_raw(key, NULL)
        return r

    def popitem(self):
        """Remove and return the last inserted (key, record); KeyError if empty."""
        cdef Py_ssize_t j
        cdef uint64_t k
        self.check_open()
        if self.n == 0:
            raise KeyError("popitem(): RecordMap is empty")
        j = self.eused - 1
        while not self.alive[j]:
            j -= 1
        k = (<uint64_t*>(self.entries + j * self.estride))[0]
        r = make_detached(self.codec, self.entries + j * self.estride + 8)
        self.remove_raw(<int64_t>k, NULL)
        return self._key_obj(k), r

    def setdefault(self, k, default=None):
        """m[k] if present; else insert default (zero record if None) and return it."""
        cdef int64_t key
        cdef char tmp[HAK_SCRATCH]
        cdef char* p = tmp
        cdef int rc
        self._key_checked(k, &key)
        self.check_open()
        if _map_find(self, <uint64_t>key) == NULL:
            if self.itemsize > HAK_SCRATCH:
                buf = bytearray(self.itemsize)
                p = PyByteArray_AS_STRING(buf)
            self.codec.pack(p, {} if default is None else default, None)
            if _map_find(self, <uint64_t>key) == NULL or self.closed:   # the value ran code
                rc = self.set_raw(key, p)
                if rc != HAK_C_OK:
                    self.raise_rc(rc)
        return make_view(self, self.codec, key)

    def update(self, other=(), **kw):
        """Insert every (key, record) of other (a mapping or pairs). All or nothing:
        every key and record is converted before the map changes."""
        cdef int64_t key
        cdef Py_ssize_t j, m
        cdef RecordVector stage
        self.check_open()
        if kw:
            raise TypeError("RecordMap keys are integers: keyword arguments are not keys")
        if isinstance(other, RecordMap):
            self.set_many(other.keys_array(), other.to_numpy())
            return
        if hasattr(other, "keys"):
            pairs = [(k, other[k]) for k in list(other.keys())]
        else:
            pairs = []
            for item in other:
                if not isinstance(item, (tuple, list)) or len(item) != 2:
                    raise TypeError("update() needs a mapping or (key, record) pairs")
                pairs.append(tuple(item))
        m = len(pairs)
        keys = np.empty(m, np.int64)
        stage = new_vector(self.codec)
        stage.room(m)
        for j in range(m):
            k, v = pairs[j]
            self._key_checked(k, &key)
            keys[j] = key
            stage.append(v)
        self._bulk_set(keys, stage.to_numpy())

    cdef int _bulk_set(self, keys, vals) except -1:
        """Insert checked (key bits, records) pairs (arrays we own); re-checks the map
        first and grows it once, so it cannot fail midway."""
        cdef const int64_t[::1] kv = keys
        cdef const char* src = <const char*><uintptr_t>vals.__array_interface__["data"][0]
        cdef Py_ssize_t j, need, m = kv.shape[0]
        cdef bint created
        cdef char* dst
        self.check_open()
        if self.eused + m > self.ecap:
            need = self.n + m
            if need < 2 * self.n:
                need = 2 * self.n
            if self._resize(need if need > 5 else 5) != HAK_C_OK:
                self.raise_rc(HAK_C_NOMEM)
        with nogil:
            for j in range(m):
                dst = self.insert_raw(kv[j], &created)
                memcpy(dst, src + j * self.itemsize, self.itemsize)
        return 0

    def clear(self):
        """Remove every entry and free the storage."""
        self.check_open()
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
        self.check_open()
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
        self.check_open()
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
        self.check_open()
        out = np.empty(self.n, self.codec.dtype)
        dst = <char*><uintptr_t>out.__array_interface__["data"][0]
        for j in range(self.eused):
            if self.alive[j]:
                memcpy(dst + w * self.itemsize, self.entries + j * self.estride + 8, self.itemsize)
                w += 1
        return out

    cdef tuple _key_bits(self, keys):
        """(bits as a new int64 array, valid as uint8 array, the keys) for integer keys."""
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
        if missing not in ("raise", "mask"):
            raise ValueError(f"missing must be 'raise' or 'mask', not {missing!r}")
        bits, valid, ka = self._key_bits(keys)
        self.check_open()
        m = len(bits)
        out = np.zeros(m, self.codec.dtype)
        found = np.zeros(m, np.bool_)
        cdef const int64_t[::1] kv = bits
        cdef const uint8_t[::1] vv = valid
        cdef uint8_t[::1] fv = found.view(np.uint8)
        dst = <char*><uintptr_t>out.__array_interface__["data"][0]
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
        bits, valid, ka = self._key_bits(keys)
        if len(bits) and not valid.all():
            raise OverflowError(f"key {ka[np.argmin(valid)].item()!r} is out of range for "
                                f"key type {self.key_dtype}")
        vals = self.codec.coerce(values)
        if len(vals) != len(bits):
            raise ValueError(f"{len(bits)} keys but {len(vals)} records")
        self._bulk_set(bits, vals)

    def copy(self):
        """A new RecordMap with the same entries."""
        self.check_open()
        out = RecordMap(self.codec, self.key_dtype)
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
        return (f"RecordMap({self.codec.spec_str()!r}, key={self.key_dtype.str[1:]!r}, "
                f"len={self.n})")

    def __reduce__(self):
        self.check_open()
        return (map_from_arrays, (self.codec.dtype, self.key_dtype.str[1:],
                                  self.keys_array(), self.to_numpy()))


def map_from_arrays(dtype, key, keys, values):
    """Unpickle a RecordMap: spec dtype, key type, keys array, records array."""
    m = RecordMap(dtype, key)
    m.set_many(keys, values)
    return m
