# hakmem.record — kept for code that cimports it: the byte IO of one record field now
# lives in hakmem.records.codec (see there).
#
#   from hakmem.record cimport hak_rec_put_int, hak_rec_get_int, hak_rec_get_uint
from hakmem.records.codec cimport (hak_rec_put_int, hak_rec_get_int, hak_rec_get_uint,
                                   hak_rec_get_bytes)
