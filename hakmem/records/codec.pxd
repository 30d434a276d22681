# hakmem.records.codec — the one record codec: Python values <-> the bytes of a record.
#
#   from hakmem.records.codec cimport Codec, codec_for, hak_rec_put_int, hak_rec_get_int
#
# Contract: Codec.pack / pack_field / pack_fast write only into the buffer they are
# given, and every user conversion (__float__, __index__, __len__, __bytes__, a list's
# items, ...) runs inside them. Callers pack into scratch memory they own, then
# re-validate their container and commit with memcpy: user code never runs between
# a container computing an address and using it.
#
# The byte IO below is inline (no run-time import). Fields may be unaligned (packed
# specs), so every access is a memcpy of the field's width; values are in native
# byte order, as numpy stores them.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize

cdef extern from *:
    """
    /* The value of a small int without a call (CPython's compact ints). */
    static inline int hak_long_small(PyObject* o, long long* out) {
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject*)o)) {
            *out = (long long)PyUnstable_Long_CompactValue((PyLongObject*)o);
            return 1;
        }
        return 0;
    #else
        Py_ssize_t s = Py_SIZE(o);
        if (s == 0) { *out = 0; return 1; }
        if (s == 1) { *out = (long long)((PyLongObject*)o)->ob_digit[0]; return 1; }
        if (s == -1) { *out = -(long long)((PyLongObject*)o)->ob_digit[0]; return 1; }
        return 0;
    #endif
    }
    """
    # 1 and the value of an exact int that fits one digit (no call), else 0.
    bint hak_long_small(object o, long long* out)

# Field kinds (one per numpy scalar type the specs accept; range tests rely on the order).
cdef enum:
    HAK_K_I1 = 1
    HAK_K_I2
    HAK_K_I4
    HAK_K_I8
    HAK_K_U1
    HAK_K_U2
    HAK_K_U4
    HAK_K_U8
    HAK_K_F4
    HAK_K_F8
    HAK_K_BOOL
    HAK_K_BYTES

cdef enum:
    HAK_SCRATCH = 256               # records up to this size are staged on the stack

cdef struct hak_field_t:
    int kind
    Py_ssize_t offset
    Py_ssize_t size


cdef class Codec:
    # One per distinct dtype (codec_for), immutable, derived from the dtype alone.
    cdef readonly object spec        # hakmem.spec.RecordSpec (re-derived from dtype)
    cdef readonly object dtype       # its numpy dtype
    cdef readonly Py_ssize_t itemsize
    cdef readonly Py_ssize_t nfields
    cdef bint padded                 # record has padding bytes: zero them on pack
    cdef hak_field_t* fields
    cdef readonly dict index         # field name -> position
    cdef readonly tuple names        # field names (interned)
    cdef bytes fmt                   # PEP 3118 struct format of one record
    cdef Py_ssize_t field(self, object name) except -1   # FieldError if unknown
    cdef int pack(self, char* dst, object rec, dict kw) except -1
    cdef int pack_fast(self, char* dst, object rec) except -1
    cdef int pack_field(self, char* dst, Py_ssize_t i, object v) except -1
    cdef int pack_dict(self, char* dst, dict d) except -1
    cdef tuple unpack(self, const char* src)
    cdef object get_field(self, const char* src, Py_ssize_t i)
    cdef object column(self, Py_ssize_t i, object values, Py_ssize_t n)
    cdef object coerce(self, object arr)
    cdef str spec_str(self)


cdef Codec codec_for(object spec)


# What a record value that lives in hakmem memory offers the codec (hakmem.records.view's
# Record): packing one into a record of the same dtype is a byte copy.
cdef class RecordBase:
    cdef readonly Codec codec
    # Copy bytes [off, off + size) of the record to dst + off (raises if it is gone).
    cdef int load(self, char* dst, Py_ssize_t off, Py_ssize_t size) except -1


# A scratch record: on the stack when it fits, else heap (released by scratch_done).
cdef struct hak_scratch_t:
    char* p
    char stack[HAK_SCRATCH]

cdef char* scratch_get(hak_scratch_t* s, Py_ssize_t size) except NULL
cdef void scratch_done(hak_scratch_t* s) noexcept


# Store the low `size` (1, 2, 4 or 8) bytes of bits at dst. Signed and unsigned fields
# alike: a value in the field's range has the same low bytes either way (two's complement).
cdef inline void hak_rec_put_int(char* dst, uint64_t bits, Py_ssize_t size) noexcept nogil:
    cdef uint32_t u4
    cdef uint16_t u2
    if size == 8:
        memcpy(dst, &bits, 8)
    elif size == 4:
        u4 = <uint32_t>bits
        memcpy(dst, &u4, 4)
    elif size == 2:
        u2 = <uint16_t>bits
        memcpy(dst, &u2, 2)
    else:
        dst[0] = <char><uint8_t>bits


# The unsigned integer of `size` bytes at src.
cdef inline uint64_t hak_rec_get_uint(const char* src, Py_ssize_t size) noexcept nogil:
    cdef uint64_t u8
    cdef uint32_t u4
    cdef uint16_t u2
    if size == 8:
        memcpy(&u8, src, 8)
        return u8
    if size == 4:
        memcpy(&u4, src, 4)
        return u4
    if size == 2:
        memcpy(&u2, src, 2)
        return u2
    return (<const uint8_t*>src)[0]


# The signed integer of `size` bytes at src: the unsigned load, sign-extended.
cdef inline int64_t hak_rec_get_int(const char* src, Py_ssize_t size) noexcept nogil:
    cdef uint64_t u = hak_rec_get_uint(src, size)
    cdef uint64_t sign
    if size < 8:
        sign = <uint64_t>1 << (8 * size - 1)
        u = (u ^ sign) - sign       # two's complement: the top bit of the field spreads up
    return <int64_t>u


# A byte-string field of `size` bytes as bytes, trailing NULs dropped (numpy's S<n>).
cdef inline bytes hak_rec_get_bytes(const char* src, Py_ssize_t size):
    cdef Py_ssize_t n = size
    while n > 0 and src[n - 1] == 0:
        n -= 1
    return PyBytes_FromStringAndSize(src, n)
