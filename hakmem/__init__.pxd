# `cimport hakmem` gives the nogil C API of hakmem.front (see front.pxd): the
# allocator functions, and the inline heap API (hak_heap_*) compiled into the caller.
from hakmem.front cimport (hak_malloc, hak_calloc, hak_realloc, hak_free,
                           hak_usable_size, hak_free_checked, hak_check_live,
                           hak_thread_flush, hak_trim,
                           hak_heap_t, hak_heap, hak_heap_malloc, hak_heap_calloc,
                           hak_heap_free,
                           HAK_OK, HAK_EFOREIGN, HAK_EDOUBLE, HAK_EINTERIOR)
