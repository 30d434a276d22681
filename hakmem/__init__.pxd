# `cimport hakmem` gives the nogil C API of hakmem.front (see front.pxd).
from hakmem.front cimport (hak_malloc, hak_calloc, hak_realloc, hak_free,
                           hak_usable_size, hak_free_checked, hak_check_live,
                           hak_thread_flush, hak_trim,
                           HAK_OK, HAK_EFOREIGN, HAK_EDOUBLE, HAK_EINTERIOR)
