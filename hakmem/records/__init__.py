"""hakmem.records — typed records in hakmem memory: the codec, the record view, the
pool and the containers, one module each.

  codec    Codec: Python values <-> record bytes (every check, every user conversion)
  view     Record: the one view class of pool and container records
  cpool    the C pool (chunks, generations, free list, lock) and its nogil cimport API
  pool     RecordPool: handles that cannot dangle
  vector   RecordVector;  deque  RecordDeque;  map  RecordMap
"""
