# hakmem.classes — the size-class table (the only one) and size <-> class mapping.
#
# Classes step by 16 bytes up to 128, then four classes per doubling up to 1 KiB,
# so every block size is a multiple of 16 and every block is 16-byte aligned.
# HAK_BLOCK_SIZE is the usable size; HAK_STRIDE adds the debug canary (0 in release).
from libc.stdint cimport uint8_t, uint32_t

cdef extern from *:
    """
    #ifndef HAK_CLASSES_H
    #define HAK_CLASSES_H
    #include <stdint.h>
    #include <stddef.h>
    #ifdef HAKMEM_DEBUG
    #define HAK_DEBUG 1
    #define HAK_CANARY 16
    #else
    #define HAK_DEBUG 0
    #define HAK_CANARY 0
    #endif
    #define HAK_NCLASSES 20
    #define HAK_TINY_MAX 1024
    #define HAK_ALIGN 16
    #define HAK_NSIZES (HAK_TINY_MAX / 16 + 1)   /* rows of hak_class_of_tab */
    #ifndef HAK_STATIC_ASSERT
    #ifdef __cplusplus
    #define HAK_STATIC_ASSERT static_assert
    #else
    #define HAK_STATIC_ASSERT _Static_assert
    #endif
    #endif
    static const uint32_t hak_block_size_tab[HAK_NCLASSES] = {
        16, 32, 48, 64, 80, 96, 112, 128,
        160, 192, 224, 256, 320, 384, 448, 512,
        640, 768, 896, 1024};
    /* class of a request of n bytes, indexed by (n + 15) >> 4 for n <= 1024 */
    static const uint8_t hak_class_of_tab[HAK_NSIZES] = {
        0, 0, 1, 2, 3, 4, 5, 6, 7,
        8, 8, 9, 9, 10, 10, 11, 11,
        12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15,
        16, 16, 16, 16, 16, 16, 16, 16, 17, 17, 17, 17, 17, 17, 17, 17,
        18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 19, 19, 19, 19, 19, 19};
    #define hak_size_class(n) (hak_class_of_tab[((n) + 15) >> 4])
    #define hak_block_size(c) (hak_block_size_tab[(c)])
    #define hak_stride(c) (hak_block_size_tab[(c)] + HAK_CANARY)
    #if defined(__GNUC__)
    #define hak_likely(x) __builtin_expect(!!(x), 1)
    #define hak_unlikely(x) __builtin_expect(!!(x), 0)
    #define hak_prefetch(p) __builtin_prefetch((p), 1, 3)   /* for writing, keep cached */
    #else
    #define hak_likely(x) (x)
    #define hak_unlikely(x) (x)
    #define hak_prefetch(p) ((void)(p))
    #endif
    #endif
    """
    # enums, so Cython code may size arrays with them
    enum: HAK_DEBUG               # 1 in a HAKMEM_DEBUG=1 build
    enum: HAK_CANARY              # bytes of canary after each block (debug builds)
    enum: HAK_NCLASSES            # number of tiny classes
    enum: HAK_TINY_MAX            # largest tiny request (bytes)
    enum: HAK_ALIGN               # alignment of every tiny block
    enum: HAK_NSIZES              # (HAK_TINY_MAX / 16) + 1 request sizes, in 16-byte steps
    const uint32_t* hak_block_size_tab
    const uint8_t* hak_class_of_tab
    uint32_t hak_size_class(size_t n) nogil      # n <= HAK_TINY_MAX only
    uint32_t hak_block_size(uint32_t c) nogil
    uint32_t hak_stride(uint32_t c) nogil
    bint hak_likely(bint) nogil
    bint hak_unlikely(bint) nogil
    void hak_prefetch(const void* p) nogil
