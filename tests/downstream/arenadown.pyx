# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A downstream extension, built at test time (as C and as C++), that cimports hakmem.arena.

It uses Pool the way cymem's users do: a preshed-style open-addressing hash table whose
cells come from the pool, the cdef error paths, and the nogil variants from several
threads with the GIL released.
"""
from libc.stdint cimport uint64_t, uintptr_t
from hakmem.arena cimport Pool, Address, ARENA_OK, ARENA_ENOTOWNED
from testkit cimport xorshift

cdef extern from *:
    """
    #define ad_xchg_ptr(p, v) __atomic_exchange_n((void**)(p), (void*)(v), __ATOMIC_ACQ_REL)
    """
    void* ad_xchg_ptr(void* p, void* v) nogil


# ---- a preshed-style map: uint64 key -> uint64 value, cells in a Pool ------------------
cdef enum:
    EMPTY = 0               # key 0 marks an empty cell
    DELETED = 1             # key 1 marks a tombstone (users' keys are >= 2)

cdef struct Cell:
    uint64_t key
    uint64_t value

cdef struct MapStruct:
    Cell* cells
    uint64_t length         # a power of two
    uint64_t filled         # live cells + tombstones
    uint64_t live


cdef inline uint64_t mix(uint64_t k) noexcept nogil:
    k ^= k >> 33
    k *= <uint64_t>0xff51afd7ed558ccd
    k ^= k >> 33
    return k


cdef Cell* find_cell(Cell* cells, uint64_t length, uint64_t key) noexcept nogil:
    """The cell holding key, or the first empty cell of its probe sequence."""
    cdef uint64_t i = mix(key) & (length - 1)
    cdef Cell* tomb = NULL
    while cells[i].key != EMPTY:
        if cells[i].key == key:
            return &cells[i]
        if cells[i].key == DELETED and tomb == NULL:
            tomb = &cells[i]
        i = (i + 1) & (length - 1)
    return tomb if tomb != NULL else &cells[i]


cdef class PreshMap:
    """uint64 -> uint64 map in cells allocated from a hakmem.arena.Pool (as preshed does
    with cymem's Pool): the pool frees the cells when the map goes."""
    cdef Pool mem
    cdef MapStruct* c_map

    def __init__(self, size_t initial_size=8):
        self.mem = Pool()
        self.c_map = <MapStruct*>self.mem.alloc(1, sizeof(MapStruct))
        self.c_map.length = initial_size
        self.c_map.cells = <Cell*>self.mem.alloc(initial_size, sizeof(Cell))

    @property
    def pool(self):
        return self.mem

    cdef void resize(self, uint64_t new_length) except *:
        cdef Cell* old = self.c_map.cells
        cdef uint64_t old_length = self.c_map.length
        cdef Cell* cells = <Cell*>self.mem.alloc(new_length, sizeof(Cell))
        cdef uint64_t i
        for i in range(old_length):
            if old[i].key > DELETED:
                find_cell(cells, new_length, old[i].key)[0] = old[i]
        self.c_map.cells = cells
        self.c_map.length = new_length
        self.c_map.filled = self.c_map.live
        self.mem.free(old)

    def __setitem__(self, uint64_t key, uint64_t value):
        if key <= DELETED:
            raise KeyError(f"keys 0 and 1 are reserved, got {key}")
        cdef Cell* c = find_cell(self.c_map.cells, self.c_map.length, key)
        if c.key != key:
            if c.key == EMPTY:
                self.c_map.filled += 1
            self.c_map.live += 1
            c.key = key
        c.value = value
        if self.c_map.filled * 5 >= self.c_map.length * 3:
            self.resize(self.c_map.length * 2)

    def __getitem__(self, uint64_t key):
        cdef Cell* c = find_cell(self.c_map.cells, self.c_map.length, key)
        if key <= DELETED or c.key != key:
            raise KeyError(key)
        return c.value

    def __delitem__(self, uint64_t key):
        cdef Cell* c = find_cell(self.c_map.cells, self.c_map.length, key)
        if key <= DELETED or c.key != key:
            raise KeyError(key)
        c.key = DELETED
        self.c_map.live -= 1

    def __len__(self):
        return self.c_map.live

    def capacity(self):
        return self.c_map.length

    def items(self):
        cdef uint64_t i
        return [(self.c_map.cells[i].key, self.c_map.cells[i].value)
                for i in range(self.c_map.length) if self.c_map.cells[i].key > DELETED]


# ---- the cdef API, called from another module --------------------------------------------
def cdef_alloc(Pool mem, size_t number, size_t elem_size):
    return <uintptr_t>mem.alloc(number, elem_size)


def cdef_free(Pool mem, uintptr_t addr):
    mem.free(<void*>addr)


def cdef_realloc(Pool mem, uintptr_t addr, size_t n):
    return <uintptr_t>mem.realloc(<void*>addr, n)


def nogil_alloc(Pool mem, size_t number, size_t elem_size):
    cdef void* p
    with nogil:
        p = mem.alloc_nogil(number, elem_size)
    return <uintptr_t>p


def nogil_free(Pool mem, uintptr_t addr):
    cdef int rc
    with nogil:
        rc = mem.free_nogil(<void*>addr)
    return rc


def nogil_realloc(Pool mem, uintptr_t addr, size_t n):
    cdef void* p
    with nogil:
        p = mem.realloc_nogil(<void*>addr, n)
    return <uintptr_t>p


def codes():
    return ARENA_OK, ARENA_ENOTOWNED


def read_bytes(uintptr_t addr, size_t n):
    return (<char*>addr)[:n]


def write_bytes(uintptr_t addr, bytes data):
    cdef size_t i
    for i in range(len(data)):
        (<unsigned char*>addr)[i] = data[i]


def address_block(size_t number, size_t elem_size):
    cdef Address a = Address(number, elem_size)
    cdef size_t i, nonzero = 0
    for i in range(number * elem_size):
        nonzero += (<unsigned char*>a.ptr)[i] != 0
    return a, nonzero


# ---- threads: the nogil variants with the GIL released ------------------------------------
cdef enum:
    RING = 128
    NXFER = 64

cdef void* g_xfer[NXFER]     # blocks handed from one thread to another (shared pools)


def reset_xfer():
    for i in range(NXFER):
        g_xfer[i] = NULL


def drain_xfer():
    """Blocks still waiting in the hand-off slots (their addresses)."""
    out = []
    for i in range(NXFER):
        if g_xfer[i] != NULL:
            out.append(<uintptr_t>g_xfer[i])
            g_xfer[i] = NULL
    return out


cdef inline void stamp(void* p, size_t n, uint64_t cookie) noexcept nogil:
    """cookie, size, ..., ~cookie: any thread can check a block it did not allocate."""
    (<uint64_t*>p)[0] = cookie
    (<uint64_t*>p)[1] = n
    (<uint64_t*>(<char*>p + n - 8))[0] = ~cookie


cdef inline bint intact(void* p) noexcept nogil:
    cdef size_t n = (<uint64_t*>p)[1]
    return n >= 24 and (<uint64_t*>(<char*>p + n - 8))[0] == ~(<uint64_t*>p)[0]


def worker(Pool mem, int tid, long nops, bint handoff):
    """nops alloc/free ops on mem with the GIL released, blocks of 24..1512 bytes.

    Every block carries a cookie (a unique id, its complement in the last word); a
    block handed out twice would show a broken cookie. With handoff, every 8th block
    goes to a shared slot and whatever was there is freed by this thread instead.
    Returns (bad_cookies, not_zeroed, failed_frees, allocs, frees, addresses left).
    """
    cdef void* ring[RING]
    cdef uint64_t seed = 0x9E3779B97F4A7C15 ^ (<uint64_t>(tid + 1) * 0x100000001B3)
    cdef uint64_t r, seq = <uint64_t>tid << 40
    cdef long i, bad = 0, dirty = 0, failed = 0, allocs = 0, frees = 0
    cdef int k, slot
    cdef size_t n
    cdef void* p
    for k in range(RING):
        ring[k] = NULL
    with nogil:
        for i in range(nops):
            r = xorshift(&seed)
            k = <int>(r % RING)
            p = ring[k]
            if p != NULL:
                if not intact(p):
                    bad += 1
                if handoff and (r >> 20) % 8 == 0:
                    slot = <int>((r >> 32) % NXFER)
                    p = ad_xchg_ptr(&g_xfer[slot], p)
                    if p != NULL and not intact(p):
                        bad += 1
                if p != NULL:
                    if mem.free_nogil(p) != ARENA_OK:
                        failed += 1
                    frees += 1
                ring[k] = NULL
            else:
                n = 24 + 8 * <size_t>((r >> 8) % 187)   # 24 .. 1512: both header forms
                p = mem.alloc_nogil(1, n)
                if p == NULL:
                    failed += 1
                    continue
                allocs += 1
                if (<uint64_t*>p)[0] != 0 or (<uint64_t*>(<char*>p + n - 8))[0] != 0:
                    dirty += 1
                seq += 1
                stamp(p, n, seq)
                ring[k] = p
    left = [<uintptr_t>ring[k] for k in range(RING) if ring[k] != NULL]
    return bad, dirty, failed, allocs, frees, left


# ---- the core .pxd files compile here too (C and C++): use their inline functions -------
cimport hakmem
from libc.stdint cimport uint8_t
from hakmem.front cimport hak_malloc, hak_free, hak_check_live, HAK_OK
from hakmem.classes cimport HAK_NCLASSES
from hakmem.slab cimport (hak_registry, hak_region_of, hak_slab_of, hak_slab_index,
                          hak_slab_start, hak_region_of_slab, hak_is_tiny, hak_slab_t,
                          hak_region_t, HAK_SLAB_SIZE)
from hakmem.classes cimport hak_size_class, hak_block_size, hak_stride, HAK_TINY_MAX
from hakmem.remote cimport hak_remote_push, hak_remote_take_all


def core_pxds():
    """A tiny block looked up through every layer's inline helpers; True if all agree."""
    cdef const uint8_t* reg = hak_registry()
    cdef void* q = hakmem.hak_malloc(24)
    cdef void* lst = NULL
    cdef hak_region_t* r = hak_region_of(reg, <uintptr_t>q)
    cdef hak_slab_t* s = hak_slab_of(<uintptr_t>q)
    cdef bint ok = (hak_is_tiny(reg, <uintptr_t>q) and hak_slab_index(s) != 0
                    and hak_region_of_slab(s) == r and hak_slab_start(s) <= <char*>q
                    and <char*>q < hak_slab_start(s) + HAK_SLAB_SIZE
                    and hak_block_size(hak_size_class(24)) == 32 and hak_stride(1) >= 32
                    and hak_check_live(q) == HAK_OK and HAK_TINY_MAX == 1024
                    and HAK_NCLASSES == 20)
    hak_remote_push(&lst, q)
    ok = ok and hak_remote_take_all(&lst) == q
    hak_free(q)
    return ok
