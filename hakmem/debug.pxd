# hakmem.debug — the debug build's checks (HAKMEM_DEBUG=1): poisoned free blocks,
# canaries after blocks, checked free-list links, and aborts with a message that names
# the pointer and its class. Declarations and inline code only (no module of its own);
# every caller guards a check with `if HAK_DEBUG:`, so release builds compile them away.
from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t
from hakmem.slab cimport (hak_slab_t, hak_region_of, hak_slab_of, hak_slab_index,
                          hak_slab_is_block, hak_block_is_tagged)

cdef extern from *:
    """
    #ifndef HAK_DEBUG_H
    #define HAK_DEBUG_H
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #define HAK_POISON 0xDD
    #define HAK_CANARY_BYTE 0xCA
    /* The one way the debug build reports: what, where, which class; then abort(). */
    static void hak_die(const char* what, void* p, unsigned cls) {
        if (cls < HAK_NCLASSES)
            fprintf(stderr, "hakmem: %s: block %p (class %u, %u bytes)\\n", what, p, cls,
                    hak_block_size(cls));
        else
            fprintf(stderr, "hakmem: %s: pointer %p (no hakmem class)\\n", what, p);
        fflush(stderr);
        abort();
    }
    static void hak_die_count(void* s, unsigned cls, unsigned used, unsigned nfree, unsigned cap) {
        fprintf(stderr, "hakmem: slab %p (class %u) is inconsistent: used %u + free %u + "
                "uncarved != capacity %u (a double free or a corrupted list)\\n",
                s, cls, used, nfree, cap);
        fflush(stderr);
        abort();
    }
    /* A block being freed: its canary must be intact; then poison it. */
    static void hak_debug_on_free(void* p, unsigned cls) {
    #if HAK_DEBUG
        unsigned size = hak_block_size(cls);
        const unsigned char* cz = (const unsigned char*)p + size;
        for (int i = 0; i < HAK_CANARY; i++)
            if (cz[i] != HAK_CANARY_BYTE) hak_die("buffer overflow (canary overwritten)", p, cls);
        memset((char*)p + 16, HAK_POISON, size - 16);
        memset(p, HAK_POISON, 8);    /* the link word: a list push overwrites it */
    #else
        (void)p; (void)cls;
    #endif
    }
    /* A freshly formatted slab: every block's canary set. */
    static void hak_debug_fill_canaries(char* start, char* end, uint32_t stride, uint32_t size) {
    #if HAK_CANARY
        for (char* p = start; p < end; p += stride) memset(p + size, HAK_CANARY_BYTE, HAK_CANARY);
    #else
        (void)start; (void)end; (void)stride; (void)size;
    #endif
    }
    /* A block being handed out: its poison must be intact. */
    static void hak_debug_on_alloc(void* p, unsigned cls) {
    #if HAK_DEBUG
        unsigned size = hak_block_size(cls);
        const unsigned char* b = (const unsigned char*)p;
        for (unsigned i = 16; i < size; i++)
            if (b[i] != HAK_POISON) hak_die("write after free (poison overwritten)", p, cls);
    #else
        (void)p; (void)cls;
    #endif
    }
    #endif
    """
    void hak_die(const char* what, void* p, unsigned cls) nogil
    void hak_die_count(void* s, unsigned cls, unsigned used, unsigned nfree, unsigned cap) nogil
    void hak_debug_on_free(void* p, unsigned cls) nogil
    void hak_debug_on_alloc(void* p, unsigned cls) nogil
    void hak_debug_fill_canaries(char* start, char* end, uint32_t stride, uint32_t size) nogil


cdef inline void hak_debug_check_link(const uint8_t* reg, void* p, uint32_t c) noexcept nogil:
    """The free-list link (word 0) of free block p must be NULL or a carved block start
    of class c; else a write after free hit it."""
    cdef void* nxt = (<void**>p)[0]
    cdef hak_slab_t* s
    if nxt == NULL:
        return
    if hak_region_of(reg, <uintptr_t>nxt) != NULL:
        s = hak_slab_of(<uintptr_t>nxt)
        if hak_slab_index(s) != 0 and s.cls == c and hak_slab_is_block(s, nxt):
            return
    hak_die("write after free (free-list link overwritten)", p, c)


cdef inline void hak_debug_check_alloc(const uint8_t* reg, void* p, uint32_t c,
                                       bint linked) noexcept nogil:
    """A block leaving a thread cache must still look free: free tag (word 1), link
    (word 0, for list blocks) and poison (bytes 16..) intact."""
    if not hak_block_is_tagged(p):
        hak_die("write after free (free tag overwritten)", p, c)
    if linked:
        hak_debug_check_link(reg, p, c)
    elif (<uint64_t*>p)[0] != <uint64_t>0xDDDDDDDDDDDDDDDDULL:
        # magazine blocks keep word 0 poisoned (no link): see hak_debug_on_free
        hak_die("write after free (poison overwritten)", p, c)
    hak_debug_on_alloc(p, c)
