# cython: binding=False
"""hakmem.records.pool — RecordPool: typed fixed-size records with handles that cannot dangle.

Records live in chunks from hakmem (``hak_malloc``: 1 KiB chunks on the tiny path with
its thread caches), next to a uint16 generation per slot; no per-record Python object
(the C pool is hakmem.records.cpool). A handle is an int (tag | slot | generation); a
freed slot's generation moves on, so an old handle is refused (StaleHandleError) even
after the slot is reused.

Values go through hakmem.records.codec into scratch memory first; the pool is locked
only to commit. Bulk methods copy the caller's handle array before releasing the GIL
(another thread may change it meanwhile). Pickles carry live records only: free and
never-written slots are zeroed in the copy, and loading checks every part of the
state before it touches memory.
"""
from cpython.long cimport PyLong_CheckExact, PyLong_Check, PyLong_FromUnsignedLongLong
from cpython.float cimport PyFloat_CheckExact, PyFloat_AS_DOUBLE
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport uint64_t, uint32_t, uint16_t, uint8_t, int64_t, uintptr_t
from libc.string cimport memcpy, memset

from hakmem.front cimport hak_malloc, hak_free, hak_usable_size, hak_trim
from hakmem.classes cimport hak_likely, hak_unlikely
from hakmem.records.codec cimport (Codec, codec_for, HAK_K_F8, hak_scratch_t, scratch_get,
                                   scratch_done)
from hakmem.records.view cimport RecordOwner, Record, make_view, hak_add_fastcall
from hakmem.records.cpool cimport *

cimport cython

import random as _random

import numpy as np

from hakmem.spec import parse_spec

__all__ = ["RecordPool", "StaleHandleError", "restore_pool"]

class StaleHandleError(KeyError):
    """A handle that is not live in this pool: freed (even if its slot was reused),
    from another pool, or never handed out. The pool is unchanged."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


_REASONS = {
    HAK_R_TAG: "is not a handle of this pool",
    HAK_R_RANGE: "was never handed out by this pool",
    HAK_R_FREED: "was freed",
}

cdef uint64_t _BAD_HANDLE = 0     # gen 0 is even: never live


cdef inline uint64_t _handle(object handle) except? 0xFFFFFFFFFFFFFFFF:
    """An int-like handle as uint64 (out-of-range ints map to an invalid handle)."""
    cdef uint64_t v
    if hak_likely(PyLong_CheckExact(handle)):
        if hak_long_u64(handle, &v):
            return v
        return _BAD_HANDLE              # negative or >= 2**64: no pool's handle
    return _handle_slow(handle)


cdef uint64_t _handle_slow(object handle) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t v
    if not PyLong_Check(handle):
        if isinstance(handle, (float, str, bytes)) or not hasattr(handle, "__index__"):
            raise TypeError(f"a handle is an int, not {type(handle).__name__}")
    handle = int(handle.__index__())
    if hak_long_u64(handle, &v):
        return v
    return _BAD_HANDLE


cdef _closed_error():
    return ValueError("operation on a closed RecordPool")


cdef _stale(int reason, object handle):
    if reason == HAK_R_CLOSED:
        return _closed_error()
    try:
        shown = hex(handle.__index__())
    except Exception:
        shown = repr(handle)
    return StaleHandleError(f"handle {shown} {_REASONS.get(reason, 'is not live')} "
                            "(stale handle: the pool is unchanged)")


cdef _handle_array(object handles, bint copy):
    """Any int sequence/array of handles -> a contiguous int64 array; a copy if `copy`
    (free_many and scatter check every handle, release the GIL, then act: another
    thread must not change the array in between; gather decodes each handle once)."""
    a = np.asarray(handles)
    if a.dtype.kind not in "iu":
        if a.size == 0:
            return np.zeros(a.shape, dtype=np.int64)
        raise TypeError(f"handles must be ints, not {a.dtype} values")
    if a.dtype == np.uint64:
        a = a.view(np.int64)          # >= 2**63 becomes negative: still no valid handle
    if copy:
        return np.array(a, dtype=np.int64, order="C", copy=True)
    return np.ascontiguousarray(a, dtype=np.int64)


cdef inline int _copy_or_raise(RecordPool pool, uint64_t h, object handle, char* buf,
                               Py_ssize_t off, Py_ssize_t size, bint store) except -1:
    """hak_pool_copy_locked for a Python handle: a refusal is counted and raised."""
    cdef int r = hak_pool_copy_locked(&pool._p, h, buf, <uint32_t>off, <uint32_t>size,
                                      store, True)
    if r != HAK_R_OK:
        raise _stale(r, handle)
    return 0


cdef class RecordPool(RecordOwner):
    """A pool of fixed-size typed records living in hakmem memory.

    ``RecordPool(spec, packed=False)``: ``spec`` is a list of ``(name, type)`` pairs,
    a structured numpy dtype or a string such as ``"x:f8 y:f8 id:i4"`` (see
    :func:`hakmem.spec.parse_spec`). ``alloc(**fields)`` returns an int handle;
    after ``free(handle)`` every use of that handle raises :class:`StaleHandleError`,
    even once its slot holds a new record.

    Thread safety: every method is atomic with respect to every other method and to
    the nogil C API (a per-pool lock); bulk methods release the GIL while they work.
    A record view's (``pool[h]``) attribute accesses are each atomic, not as a group.
    """

    def __cinit__(self, spec, packed=False):
        cdef uint32_t stride, kshift
        memset(&self._p, 0, sizeof(hak_pool_t))
        self._p.free_head = HAK_POOL_END
        self._p.closed = 1              # until fully set up
        self.codec = codec_for(parse_spec(spec, packed=packed).dtype)
        self.spec = self.codec.spec
        self._p.itemsize = <uint32_t>self.codec.itemsize
        stride = self._p.itemsize if self._p.itemsize >= 4 else 4   # room for the free-list link
        self._p.stride = stride
        kshift = 0
        while (stride << (kshift + 1)) <= HAK_POOL_CHUNK_BYTES:
            kshift += 1
        self._p.kshift = kshift
        self._p.tag = _new_tag(0)
        self._p.closed = 0

    def __dealloc__(self):
        hak_pool_release_all(&self._p)

    # -- helpers -------------------------------------------------------------------
    cdef int _check_open(self) except -1:
        if self._p.closed:
            raise _closed_error()
        return 0

    cdef int view_load(self, int64_t pos, char* dst, Py_ssize_t off, Py_ssize_t size) except -1:
        return _copy_or_raise(self, <uint64_t>pos, <uint64_t>pos, dst, off, size, False)

    cdef int view_store(self, int64_t pos, const char* src, Py_ssize_t off,
                        Py_ssize_t size) except -1:
        return _copy_or_raise(self, <uint64_t>pos, <uint64_t>pos, <char*>src, off, size, True)

    cdef object view_key(self, int64_t pos):
        return <uint64_t>pos

    # -- single records ----------------------------------------------------------
    # alloc(*values, **fields) is _alloc_vc below (a METH_FASTCALL method: no
    # tuple or dict is built for the arguments).

    @cython.always_allow_keywords(False)
    def free(self, handle):
        """Free the record of ``handle``; StaleHandleError (pool unchanged) if not live."""
        cdef uint64_t h = _handle(handle)
        cdef int r
        hak_plock(&self._p.lock)
        r = hak_pool_free_locked(&self._p, h)
        hak_punlock(&self._p.lock)
        if r != HAK_R_OK:
            raise _stale(r, handle)

    def get(self, handle, name):
        """The value of field ``name`` of the record of ``handle``."""
        cdef hak_scratch_t s
        cdef Py_ssize_t fi = self.codec.field(name)
        cdef uint64_t h = _handle(handle)
        cdef char* buf = scratch_get(&s, self._p.stride)
        try:
            _copy_or_raise(self, h, handle, buf, self.codec.fields[fi].offset,
                           self.codec.fields[fi].size, False)
            return self.codec.get_field(buf, fi)
        finally:
            scratch_done(&s)

    def set(self, handle, name, value):
        """Set field ``name`` of the record of ``handle`` (checked first; all or nothing)."""
        cdef hak_scratch_t s
        cdef Py_ssize_t fi = self.codec.field(name)
        cdef uint64_t h = _handle(handle)
        cdef char* buf = scratch_get(&s, self._p.stride)
        try:
            self.codec.pack_field(buf, fi, value)
            _copy_or_raise(self, h, handle, buf, self.codec.fields[fi].offset,
                           self.codec.fields[fi].size, True)
        finally:
            scratch_done(&s)

    def update(self, handle, /, **fields):
        """Set several fields of one record at once (all checked before any is written)."""
        cdef hak_scratch_t s
        cdef Py_ssize_t fi
        cdef uint64_t h = _handle(handle)
        cdef hak_pchunk_t* ch
        cdef uint32_t j
        cdef int r
        cdef char* dst
        cdef char* buf
        cdef Codec c = self.codec
        items = list(fields.items())
        fis = [c.field(k) for k, v in items]
        buf = scratch_get(&s, self._p.stride)
        try:
            for k, v in items:
                c.pack_field(buf, c.field(k), v)
            hak_plock(&self._p.lock)
            r = hak_pool_decode(&self._p, h, &ch, &j)
            if r == HAK_R_OK:
                dst = ch.rec + <size_t>j * self._p.stride
                for fi in fis:
                    memcpy(dst + c.fields[fi].offset, buf + c.fields[fi].offset,
                           c.fields[fi].size)
            else:
                self._p.stale += 1
            hak_punlock(&self._p.lock)
            if r != HAK_R_OK:
                raise _stale(r, handle)
        finally:
            scratch_done(&s)

    def read(self, handle):
        """The record of ``handle`` as a tuple of field values (one consistent copy)."""
        cdef hak_scratch_t s
        cdef uint64_t h = _handle(handle)
        cdef char* buf = scratch_get(&s, self._p.stride)
        try:
            _copy_or_raise(self, h, handle, buf, 0, self._p.itemsize, False)
            return self.codec.unpack(buf)
        finally:
            scratch_done(&s)

    def __getitem__(self, handle):
        """A record view (:class:`hakmem.Record`) of ``handle`` (checked now and on each use)."""
        cdef uint64_t h = _handle(handle)
        cdef int r = self._why(h)
        if r != HAK_R_OK:
            hak_plock(&self._p.lock)
            self._p.stale += 1
            hak_punlock(&self._p.lock)
            raise _stale(r, handle)
        return make_view(self, self.codec, <int64_t>h)

    def __delitem__(self, handle):
        """``del pool[h]`` is ``pool.free(h)``."""
        self.free(handle)

    cdef int _why(self, uint64_t h) except -1:
        cdef hak_pchunk_t* ch
        cdef uint32_t j
        cdef int r
        hak_plock(&self._p.lock)
        r = hak_pool_decode(&self._p, h, &ch, &j)
        hak_punlock(&self._p.lock)
        return r

    def __contains__(self, handle):
        """True if ``handle`` is a live record of this pool."""
        if not PyLong_Check(handle) and not hasattr(handle, "__index__"):
            return False
        return self._why(_handle(handle)) == HAK_R_OK

    def is_live(self, handle):
        """True if ``handle`` is a live record of this pool (same as ``handle in pool``)."""
        return handle in self

    def __len__(self):
        """Number of live records."""
        self._check_open()
        return self._p.live

    def __bool__(self):
        return self._p.live != 0

    # -- bulk ----------------------------------------------------------------------
    def alloc_many(self, Py_ssize_t n, /, **columns):
        """Allocate ``n`` records at once; return their handles (numpy int64 array).

        Each keyword gives one field: a scalar (same for all) or ``n`` values. All
        values are checked first; on any error nothing is allocated.
        """
        cdef char* src
        cdef int64_t[::1] out
        cdef Py_ssize_t i, done = 0
        cdef uint64_t h = 0
        cdef char* r
        cdef size_t isz = self._p.itemsize
        cdef int closed = 0
        self._check_open()
        if n < 0:
            raise ValueError(f"alloc_many: n must be >= 0, not {n}")
        recs = np.zeros(n, dtype=self.codec.dtype)
        for k, v in list(columns.items()):
            recs[self.codec.names[self.codec.field(k)]] = self.codec.column(self.codec.field(k), v, n)
        handles = np.empty(n, dtype=np.int64)
        if n == 0:
            return handles
        out = handles
        src = <char*><uintptr_t>recs.ctypes.data
        with nogil:
            hak_plock(&self._p.lock)
            if self._p.closed:
                closed = 1
            else:
                while self._p.nfree < <uint64_t>n:      # reserve first: all or nothing
                    if hak_pool_grow(&self._p) != 0:
                        break
                if self._p.nfree >= <uint64_t>n:
                    for i in range(n):
                        r = hak_pool_alloc_locked(&self._p, &h)
                        memcpy(r, src + i * isz, isz)
                        out[i] = <int64_t>h
                    done = n
            hak_punlock(&self._p.lock)
        if closed:
            raise _closed_error()
        if done != n:
            raise MemoryError(f"RecordPool: cannot allocate {n} records")
        return handles

    def free_many(self, handles):
        """Free many records: all or nothing (one stale or repeated handle frees none)."""
        cdef const int64_t[::1] hs
        cdef Py_ssize_t i, n, bad = -1
        cdef int r = HAK_R_OK
        cdef hak_pchunk_t* ch
        cdef uint32_t j
        cdef hak_pool_t* p = &self._p
        self._check_open()
        arr = _handle_array(handles, True).reshape(-1)
        n = arr.shape[0]
        if n == 0:
            return
        hs = arr
        with nogil:
            hak_plock(&p.lock)
            for i in range(n):               # pass 1: check and mark (gen -> even)
                r = hak_pool_decode(p, <uint64_t>hs[i], &ch, &j)
                if r != HAK_R_OK:
                    bad = i
                    break
                ch.gen[j] += 1
            if bad >= 0:                     # undo the marks, newest first
                i = bad
                while i > 0:
                    i -= 1
                    hak_pool_unmark(p, <uint64_t>hs[i])
                p.stale += 1
            else:                            # pass 2: release
                for i in range(n):
                    hak_pool_release_marked(p, <uint64_t>hs[i])
            hak_punlock(&p.lock)
        if bad >= 0:
            if r == HAK_R_CLOSED:
                raise _closed_error()
            why = ("is not live (freed, or repeated in the list)" if r == HAK_R_FREED
                   else _REASONS.get(r, "is not live"))
            raise StaleHandleError(f"free_many: handle {int(arr[bad])!r} at position {bad} "
                                   f"{why}; nothing was freed")

    def gather(self, field, handles):
        """One field of many records as a numpy array shaped like ``handles``."""
        cdef Py_ssize_t fi = self.codec.field(field)
        cdef const int64_t[::1] hs
        cdef Py_ssize_t n, bad = -1
        cdef int r = HAK_R_OK
        cdef uint32_t off = self.codec.fields[fi].offset, size = self.codec.fields[fi].size
        cdef hak_pool_t* p = &self._p
        cdef char* dst
        self._check_open()
        arr = _handle_array(handles, False)
        out = np.empty(arr.shape, dtype=self.codec.spec.fields[fi].dtype)
        n = arr.size
        if n == 0:
            return out
        hs = arr.reshape(-1)
        dst = <char*><uintptr_t>out.ctypes.data
        with nogil:
            hak_plock(&p.lock)
            if size == 8:                     # a constant size: the copy is one move
                bad = hak_pool_gather_locked(p, &hs[0], n, off, 8, dst, &r)
            else:
                bad = hak_pool_gather_locked(p, &hs[0], n, off, size, dst, &r)
            if bad >= 0:
                p.stale += 1
            hak_punlock(&p.lock)
        if bad >= 0:
            self._bulk_error("gather", r, arr, bad)
        return out

    def scatter(self, field, handles, values):
        """Set one field of many records (values: scalar or one per handle); all or nothing."""
        cdef Py_ssize_t fi = self.codec.field(field)
        cdef const int64_t[::1] hs
        cdef Py_ssize_t i, n, bad = -1
        cdef int r = HAK_R_OK
        cdef hak_pchunk_t* ch = NULL
        cdef uint32_t j = 0, stride = self._p.stride
        cdef uint32_t off = self.codec.fields[fi].offset, size = self.codec.fields[fi].size
        cdef hak_pool_t* p = &self._p
        cdef const char* src
        self._check_open()
        arr = _handle_array(handles, True).reshape(-1)
        n = arr.shape[0]
        vals = self.codec.column(fi, values, n)
        if n == 0:
            return
        hs = arr
        src = <const char*><uintptr_t>vals.ctypes.data
        with nogil:
            hak_plock(&p.lock)
            bad = hak_pool_gather_locked(p, &hs[0], n, off, size, NULL, &r)   # check all before writing
            if bad < 0:
                for i in range(n):         # hs is our copy: every handle was checked
                    hak_pool_decode(p, <uint64_t>hs[i], &ch, &j)
                    memcpy(ch.rec + <size_t>j * stride + off, src + i * size, size)
            else:
                p.stale += 1
            hak_punlock(&p.lock)
        if bad >= 0:
            self._bulk_error("scatter", r, arr, bad)

    def _bulk_error(self, what, int r, arr, Py_ssize_t bad):
        if r == HAK_R_CLOSED:
            raise _closed_error()
        h = int(arr.reshape(-1)[bad])
        raise StaleHandleError(f"{what}: handle {h!r} at position {bad} "
                               f"{_REASONS.get(r, 'is not live')}; nothing was changed")

    cdef object _scan(self, Py_ssize_t fi):
        """Live handles (fi < 0) or field fi of live records, in slot order."""
        cdef uint64_t want, room
        cdef Py_ssize_t k = 0
        cdef uint32_t c, j, K = 1u << self._p.kshift
        cdef uint32_t off = 0, size = 8, stride = self._p.stride
        cdef hak_pchunk_t* ch
        cdef hak_pool_t* p = &self._p
        cdef char* dst
        cdef uint64_t h
        cdef bint ok
        if fi >= 0:
            off = self.codec.fields[fi].offset
            size = self.codec.fields[fi].size
        while True:
            self._check_open()
            want = p.live
            room = want + want // 16 + 64        # slack: other threads may alloc meanwhile
            out = np.empty(room, dtype=np.int64 if fi < 0 else self.codec.spec.fields[fi].dtype)
            dst = <char*><uintptr_t>out.ctypes.data
            with nogil:
                hak_plock(&p.lock)
                ok = p.live <= room and not p.closed   # else: grew meanwhile, retry
                if ok:
                    k = 0
                    for c in range(p.nchunks):
                        ch = &p.chunks[c]
                        if ch.state != HAK_PCHUNK_PRESENT or ch.live == 0:
                            continue
                        for j in range(K):
                            if hak_gen_live(ch.gen[j]):
                                if fi < 0:
                                    h = p.tag | ((<uint64_t>c << p.kshift | j) << HAK_POOL_GEN_BITS) | ch.gen[j]
                                    memcpy(dst + k * 8, &h, 8)
                                else:
                                    memcpy(dst + k * size, ch.rec + <size_t>j * stride + off, size)
                                k += 1
                hak_punlock(&p.lock)
            if ok:
                return out[:k].copy() if <uint64_t>k * 2 < room else out[:k]

    def handles(self):
        """All live handles (numpy int64 array, slot order): a snapshot."""
        return self._scan(-1)

    def column(self, field):
        """A copy of one field of every live record, in the order of :meth:`handles`."""
        return self._scan(self.codec.field(field))

    def __iter__(self):
        """Iterate over a snapshot of the live handles (freeing while iterating is fine)."""
        return iter(self._scan(-1).tolist())

    # -- memory and lifetime -----------------------------------------------------
    @property
    def dtype(self):
        """The numpy structured dtype of one record."""
        return self.codec.dtype

    @property
    def fields(self):
        """Field names in declaration order."""
        return self.codec.names

    @property
    def itemsize(self):
        """Bytes of one record (numpy's itemsize)."""
        return self._p.itemsize

    @property
    def nbytes(self):
        """Bytes of hakmem memory the pool holds (records, generations, chunk table)."""
        return self._p.nbytes

    @property
    def capacity(self):
        """Records the pool can hold without asking hakmem for more memory."""
        return (<uint64_t>self._p.npresent << self._p.kshift) - self._p.retired

    @property
    def closed(self):
        """True after :meth:`close`."""
        return self._p.closed != 0

    def trim(self):
        """Give chunks with no live record back to hakmem (and hakmem's empty slabs to
        the OS); return the bytes the pool released. Handles stay valid."""
        cdef size_t n
        self._check_open()
        with nogil:
            hak_plock(&self._p.lock)
            n = hak_pool_trim_locked(&self._p)
            hak_punlock(&self._p.lock)
            hak_trim()
        return n

    def clear(self):
        """Free every record (all handles become stale); memory is kept for reuse."""
        cdef uint32_t c, j, K = 1u << self._p.kshift
        cdef hak_pchunk_t* ch
        cdef hak_pool_t* p = &self._p
        self._check_open()
        with nogil:
            hak_plock(&p.lock)
            p.frees += p.live
            for c in range(p.nchunks):
                ch = &p.chunks[c]
                if ch.state != HAK_PCHUNK_PRESENT or ch.live == 0:
                    continue
                for j in range(K):
                    if hak_gen_live(ch.gen[j]):
                        ch.gen[j] = HAK_POOL_GEN_RETIRED if ch.gen[j] >= HAK_POOL_GEN_LAST else ch.gen[j] + 1
            hak_pool_rebuild_free(p)
            hak_punlock(&p.lock)

    def close(self):
        """Free all memory; afterwards every operation raises ValueError. Idempotent."""
        with nogil:
            hak_plock(&self._p.lock)
            hak_pool_release_all(&self._p)
            self._p.closed = 1
            hak_punlock(&self._p.lock)

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def stats(self):
        """The pool's counters and memory as a dict."""
        cdef hak_pool_t* p = &self._p
        cdef hak_pool_t snap
        cdef uint32_t c
        cdef uint64_t dead = 0
        hak_plock(&p.lock)
        for c in range(p.nchunks):
            if p.chunks[c].state == HAK_PCHUNK_DEAD:
                dead += 1
        memcpy(&snap, p, sizeof(hak_pool_t))
        hak_punlock(&p.lock)
        st = dict(
            live=snap.live, capacity=(<uint64_t>snap.npresent << snap.kshift) - snap.retired,
            free_slots=snap.nfree, retired_slots=snap.retired,
            chunks=snap.nchunks, chunks_present=snap.npresent, chunks_trimmed=snap.ntrimmed,
            chunks_dead=dead, records_per_chunk=1 << snap.kshift,
            record_size=snap.itemsize, slot_size=snap.stride, nbytes=snap.nbytes,
            allocs=snap.allocs, frees=snap.frees, stale_refused=snap.stale,
            closed=bool(snap.closed))
        st["bytes_per_live"] = (st["nbytes"] / st["live"]) if st["live"] else None
        return st

    def __repr__(self):
        spec = self.codec.spec_str()
        if self._p.closed:
            return f"<RecordPool {spec!r} closed>"
        return f"<RecordPool {spec!r} live={self._p.live} capacity={self.capacity}>"

    # -- pickling ----------------------------------------------------------------
    def __reduce__(self):
        """Pickle live records, generations and the tag, so live handles stay valid in
        the copy (which gets a tag of its own besides; see cpool.pxd). Free, retired
        and never-written slots, and the bytes past itemsize, are zeros in the pickle."""
        return (restore_pool, (self.codec.dtype, hak_pool_snapshot(&self._p)))


cdef uint64_t _new_tag(uint64_t avoid):
    """A random non-zero handle tag (bits 48..61) at least two bits away from avoid
    (a one-bit flip of a handle must not turn it into the other pool's)."""
    cdef uint64_t t = avoid
    while avoid and (t == avoid or ((t ^ avoid) & ((t ^ avoid) - 1)) == 0) or t == 0:
        t = <uint64_t>(_random.getrandbits(HAK_POOL_TAG_BITS) | 1) << HAK_POOL_TAG_SHIFT
    return t


def restore_pool(dtype, state):
    """Unpickle a RecordPool (see RecordPool.__reduce__): its dtype and checked state."""
    cdef RecordPool pool = RecordPool(dtype)
    hak_pool_check_state(&pool._p, state)
    hak_pool_load(&pool._p, state, _new_tag(<uint64_t>state["tag"] << HAK_POOL_TAG_SHIFT))
    return pool


cdef object _alloc_commit(RecordPool self, char* buf, PyObject** args, Py_ssize_t nargs,
                          PyObject* kwnames):
    """alloc: build the record in buf (every value checked, all user code run), then
    take a slot under the lock and copy it in."""
    cdef Py_ssize_t i, k, fi, nkw = 0
    cdef char* r
    cdef uint64_t h
    cdef PyObject* name
    cdef double d
    cdef Codec c = self.codec
    cdef tuple names = c.names
    memset(buf, 0, self._p.stride)
    for i in range(nargs):
        if c.fields[i].kind == HAK_K_F8 and PyFloat_CheckExact(<object>args[i]):   # common case
            d = PyFloat_AS_DOUBLE(<object>args[i])
            memcpy(buf + c.fields[i].offset, &d, 8)
        else:
            c.pack_field(buf, i, <object>args[i])
    if kwnames != NULL:
        nkw = PyTuple_GET_SIZE(<object>kwnames)
    for i in range(nkw):
        name = <PyObject*>PyTuple_GET_ITEM(<object>kwnames, i)
        fi = -1
        for k in range(c.nfields):              # interned names: pointer compare
            if <PyObject*>PyTuple_GET_ITEM(names, k) == name:
                fi = k
                break
        if fi < 0:
            fi = c.field(<object>name)
        if fi < nargs:
            raise TypeError(f"field {<object>name!r} given both by position and by name")
        if c.fields[fi].kind == HAK_K_F8 and PyFloat_CheckExact(<object>args[nargs + i]):
            d = PyFloat_AS_DOUBLE(<object>args[nargs + i])
            memcpy(buf + c.fields[fi].offset, &d, 8)
        else:
            c.pack_field(buf, fi, <object>args[nargs + i])
    hak_plock(&self._p.lock)
    r = NULL if self._p.closed else hak_pool_alloc_locked(&self._p, &h)
    if r != NULL:
        memcpy(r, buf, self._p.stride)
    hak_punlock(&self._p.lock)
    if r == NULL:
        if self._p.closed:
            raise _closed_error()
        raise MemoryError("RecordPool: out of memory (or 2**32 slots used)")
    return PyLong_FromUnsignedLongLong(h)


cdef object _alloc_vc(PyObject* self_, PyObject** args, Py_ssize_t nargs, PyObject* kwnames):
    """RecordPool.alloc as a vectorcall method (see the docstring below)."""
    cdef RecordPool self = <RecordPool>self_
    cdef hak_scratch_t s
    cdef char* buf
    if self._p.closed:
        raise _closed_error()
    if nargs > self.codec.nfields:
        raise TypeError(f"record has {self.codec.nfields} fields, got {nargs} values")
    buf = scratch_get(&s, self._p.stride)
    try:
        return _alloc_commit(self, buf, args, nargs, kwnames)
    finally:
        scratch_done(&s)


hak_add_fastcall(RecordPool, b"alloc", <void*>_alloc_vc,
    b"alloc($self, /, *values, **fields)\n--\n\n"
    b"Allocate a record; return its handle (an int). Fields are given by position\n"
    b"(declaration order) and/or by name; fields not given are zero. Every value is\n"
    b"checked before anything is written (TypeError / OverflowError / FieldError\n"
    b"naming the field).")


cdef hak_pool_t* hak_pool_of(RecordPool pool) except NULL:
    if pool is None:
        raise TypeError("expected a RecordPool, got None")
    return &pool._p
