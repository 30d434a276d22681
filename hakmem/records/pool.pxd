# hakmem.records.pool — RecordPool: typed fixed-size records with handles that cannot dangle.
#
#   from hakmem.records.pool cimport RecordPool, hak_pool_of, hak_pool_alloc, HAK_POOL_OK
#   (also: from hakmem.pool cimport ...)
#
# The C pool and its nogil API (hak_pool_t, hak_pool_alloc / free / deref / read /
# write / live and the HAK_POOL_* codes) are declared in hakmem.records.cpool and
# re-exported here.
from libc.stdint cimport int64_t, uint64_t
from hakmem.records.codec cimport Codec
from hakmem.records.view cimport RecordOwner
from hakmem.records.cpool cimport (hak_pool_t, hak_pchunk_t, hak_pool_alloc, hak_pool_free,
                                   hak_pool_deref, hak_pool_read, hak_pool_write,
                                   hak_pool_live, HAK_POOL_OK, HAK_POOL_ESTALE,
                                   HAK_POOL_ECLOSED, HAK_POOL_ENOMEM, HAK_POOL_END,
                                   HAK_POOL_GEN_LAST, HAK_POOL_GEN_RETIRED,
                                   HAK_POOL_CHUNK_BYTES, HAK_PCHUNK_PRESENT,
                                   HAK_PCHUNK_TRIMMED, HAK_PCHUNK_DEAD)


cdef class RecordPool(RecordOwner):
    cdef hak_pool_t _p
    cdef readonly object spec       # hakmem.spec.RecordSpec (re-derived from the dtype)
    cdef readonly Codec codec
    cdef object __weakref__
    # internals (pool.pyx)
    cdef int _check_open(self) except -1
    cdef int _why(self, uint64_t h) except -1
    cdef object _scan(self, Py_ssize_t fi)


# The C pool behind a RecordPool (GIL needed for the call; the pointer stays valid
# while the RecordPool object is alive — keep a reference).
cdef hak_pool_t* hak_pool_of(RecordPool pool) except NULL
