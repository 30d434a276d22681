# hakmem.containers — kept for code that cimports it: the containers now live in
# hakmem.records.vector / deque / map and their status codes in hakmem.records.view.
#
#   from hakmem.containers cimport RecordVector, RecordDeque, RecordMap, HAK_C_OK
from hakmem.records.view cimport (HAK_C_OK, HAK_C_EXPORTED, HAK_C_NOMEM, HAK_C_CLOSED,
                                  HAK_C_EMPTY, HAK_C_MISSING, HAK_C_RANGE, Record,
                                  RecordContainer)
from hakmem.records.codec cimport (hak_field_t, HAK_K_I1, HAK_K_I2, HAK_K_I4, HAK_K_I8,
                                   HAK_K_U1, HAK_K_U2, HAK_K_U4, HAK_K_U8, HAK_K_F4,
                                   HAK_K_F8, HAK_K_BOOL, HAK_K_BYTES)
from hakmem.records.vector cimport RecordVector
from hakmem.records.deque cimport RecordDeque
from hakmem.records.map cimport RecordMap
