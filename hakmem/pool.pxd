# hakmem.pool — kept for code that cimports it: RecordPool and the pool's nogil C API
# now live in hakmem.records.pool / hakmem.records.cpool (see there).
#
#   from hakmem.pool cimport RecordPool, hak_pool_of, hak_pool_alloc, HAK_POOL_OK
from hakmem.records.pool cimport (RecordPool, hak_pool_of, hak_pool_t, hak_pchunk_t,
                                  hak_pool_alloc, hak_pool_free, hak_pool_deref,
                                  hak_pool_read, hak_pool_write, hak_pool_live,
                                  HAK_POOL_OK, HAK_POOL_ESTALE, HAK_POOL_ECLOSED,
                                  HAK_POOL_ENOMEM, HAK_POOL_END, HAK_POOL_GEN_LAST,
                                  HAK_POOL_GEN_RETIRED, HAK_POOL_CHUNK_BYTES,
                                  HAK_PCHUNK_PRESENT, HAK_PCHUNK_TRIMMED, HAK_PCHUNK_DEAD)
