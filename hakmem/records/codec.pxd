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
    cdef int pack_field(self, char* dst, Py_ssize_t i, object v) except -1
    cdef int pack_dict(self, char* dst, dict d) except -1
    cdef tuple unpack(self, const char* src)
    cdef object get_field(self, const char* src, Py_ssize_t i)
    cdef object column(self, Py_ssize_t i, object values, Py_ssize_t n)
    cdef object coerce(self, object arr)
    cdef str spec_str(self)


cdef Codec codec_for(object spec)


# pack's hot path, inline. hak_pack_plain writes rec to dst only if rec is an exact
# tuple of exact floats / small ints for f8 / i8 / i4 fields, and runs no user code
# (no conversion, no allocation): 1 if it wrote the whole record, else 0 (dst may hold
# part of it). So a caller may let it write into a container directly.
from cpython.object cimport PyObject
from libc.stdint cimport int32_t
from libc.string cimport memset
cdef extern from "Python.h":
    bint hak_tuple_exact "PyTuple_CheckExact"(object)
    bint hak_float_exact "PyFloat_CheckExact"(object)
    bint hak_long_exact "PyLong_CheckExact"(object)
    Py_ssize_t hak_tuple_size "PyTuple_GET_SIZE"(object)
    PyObject* hak_tuple_item "PyTuple_GET_ITEM"(object, Py_ssize_t)
    double hak_float_value "PyFloat_AS_DOUBLE"(object)

cdef inline bint hak_pack_plain(Codec c, char* dst, object rec) noexcept:
    cdef Py_ssize_t i
    cdef hak_field_t* f
    cdef PyObject* o
    cdef double d
    cdef long long x
    cdef int32_t x4
    if not hak_tuple_exact(rec) or hak_tuple_size(rec) != c.nfields:
        return False
    if c.padded:
        memset(dst, 0, c.itemsize)
    for i in range(c.nfields):
        f = &c.fields[i]
        o = hak_tuple_item(rec, i)
        if f.kind == HAK_K_F8 and hak_float_exact(<object>o):
            d = hak_float_value(<object>o)
            memcpy(dst + f.offset, &d, 8)
        elif f.kind == HAK_K_I8 and hak_long_exact(<object>o) and hak_long_small(<object>o, &x):
            memcpy(dst + f.offset, &x, 8)
        elif (f.kind == HAK_K_I4 and hak_long_exact(<object>o)
              and hak_long_small(<object>o, &x) and -2147483648 <= x <= 2147483647):
            x4 = <int32_t>x
            memcpy(dst + f.offset, &x4, 4)
        else:
            return False
    return True

# Pack any record into dst (scratch): the plain path, else Codec.pack.
cdef inline int hak_pack_fast(Codec c, char* dst, object rec) except -1:
    if hak_pack_plain(c, dst, rec):
        return 0
    return c.pack(dst, rec, None)



# Record views (hakmem.records.view) register how the codec reads one: packing a view
# of the same dtype is a byte copy. (A registration, not a base class: a base would
# cost the view class its freelist.)
ctypedef Codec (*hak_view_codec_t)(object rec)
ctypedef int (*hak_view_load_t)(object rec, char* dst) except -1
cdef int register_view(type cls, hak_view_codec_t codec_of_view,
                       hak_view_load_t load) except -1


# A scratch record: on the stack when it fits, else heap (released by scratch_done).
cdef struct hak_scratch_t:
    char* p
    char stack[HAK_SCRATCH]

from cpython.mem cimport PyMem_Malloc, PyMem_Free

cdef inline char* scratch_get(hak_scratch_t* s, Py_ssize_t size) except NULL:
    if size <= HAK_SCRATCH:
        s.p = s.stack
        return s.p
    s.p = <char*>PyMem_Malloc(<size_t>size)
    if s.p == NULL:
        raise MemoryError()
    return s.p

cdef inline void scratch_done(hak_scratch_t* s) noexcept:
    if s.p != NULL and s.p != s.stack:
        PyMem_Free(s.p)
    s.p = NULL


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
