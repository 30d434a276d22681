"""hakmem.bench.loops — the benchmark's workload loops, as nogil C loops.

Every loop takes an allocator vtable (bench_vt_t: a malloc and a free function
pointer), so the loop is the same machine code for every allocator compared:
hakmem (hak_malloc / hak_free, cimported), libc malloc/free, pymalloc
(PyObject_Malloc/Free: the GIL is held for its runs), and any shared library that
exports a malloc/free pair, opened with dlopen (mimalloc, or ``--vs PATH``).

Workloads (ops/s counts one free + one malloc per op, or one block for xthread/xmalloc):
  ring      ws slots; op i frees slot i mod ws if full, mallocs `size` bytes into it
            and writes its first byte (fixed16_ws60, fixed256_ws50).
  mixed     ws slots; op picks a slot and a size in 16..1024 from a xorshift64
            generator with a fixed seed (mixed16-1024_ws256).
  simple    glibc's bench-malloc-simple shape: round r mallocs n blocks of
            16 << (r mod 3) bytes, then frees them all in order (glibc-simple_nN).
  xthread   a producer thread mallocs blocks and hands them through a lock-free
            single-producer/single-consumer ring to a consumer thread that frees them.
  xmalloc   xmalloc-test's shape: N threads only malloc, handing batches of 64 blocks
            through a shared queue to N threads that only free (xmalloc-test-N).
  threads   N threads run the ring loop at once (threads-N scaling).
The one-thread loops call hakmem_bench_mark() just before and after the loop, so a
callgrind run (--dump-before=hakmem_bench_mark) counts each loop's instructions
alone (``hakmem bench --instructions``). The Python driver is hakmem.bench.runner;
this module only measures.
"""
from libc.stdint cimport uint64_t, uint32_t
from libc.stdlib cimport malloc as libc_malloc, free as libc_free, calloc as libc_calloc, abort
from libc.string cimport memset

from hakmem.front cimport hak_malloc, hak_free, hak_heap_t, hak_heap, hak_heap_malloc, hak_heap_free

cdef extern from *:
    """
    #include <dlfcn.h>
    #include <link.h>
    /* 16..1024 from the high 32 bits of x, without a division. */
    #define bench_mixed_size(x) ((size_t)(16 + ((((x) >> 32) * 1009ULL) >> 32)))
    /* 0..ws-1 from the low 32 bits of x, by multiply-shift (a division would cost
       more than some allocators' whole malloc). */
    #define bench_mixed_slot(x, ws) ((uint32_t)((((x) & 0xffffffffULL) * (uint64_t)(ws)) >> 32))
    /* The file name the dynamic linker recorded for a dlopen handle (NULL if unknown). */
    static const char* bench_dl_name(void* h) {
        struct link_map* lm = NULL;
        if (dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0 || lm == NULL) return NULL;
        return lm->l_name;
    }
    /* A real call callgrind can split its profile at (--dump-before=hakmem_bench_mark);
       not static and not inlined, so the symbol exists under that name. */
    __attribute__((noinline)) void hakmem_bench_mark(void) { __asm__ volatile("" ::: "memory"); }
    """
    size_t bench_mixed_size(uint64_t x) nogil
    uint32_t bench_mixed_slot(uint64_t x, uint32_t ws) nogil
    const char* bench_dl_name(void* h) nogil
    void hakmem_bench_mark() nogil

cdef extern from "<dlfcn.h>" nogil:
    void* dlopen(const char* filename, int flags)
    void* dlsym(void* handle, const char* symbol)
    char* dlerror()
    int RTLD_NOW
    int RTLD_LOCAL
    ctypedef struct Dl_info:
        const char* dli_fname
        void* dli_fbase
        const char* dli_sname
        void* dli_saddr
    int dladdr(const void* addr, Dl_info* info)

cdef extern from "Python.h":
    void* PyObject_Malloc(size_t n)
    void PyObject_Free(void* p)


# ---- the allocators ----------------------------------------------------------
cdef class Allocator:
    """One allocator the bench can drive: a name and a malloc/free vtable.

    ``needs_gil`` is True for pymalloc, whose functions may only be called with
    the GIL held: its loops run holding the GIL and it is skipped for workloads
    that need several threads. Build instances with the functions below.
    """
    def __cinit__(self):
        self.handle = NULL
        self.needs_gil = False
        self.path = ""

    def __dealloc__(self):
        # dlopened libraries stay loaded: memory they handed out may outlive us,
        # and unloading an allocator with live blocks is never safe.
        pass

    def __repr__(self):
        return f"Allocator({self.name!r}, kind={self.kind!r})"


def hakmem_allocator(str name="hakmem"):
    """hakmem's hak_malloc / hak_free, through the cimport (capsule) path."""
    cdef Allocator a = Allocator()
    a.vt.malloc = hak_malloc
    a.vt.free = hak_free
    a.name = name
    a.kind = "hakmem"
    return a


def libc_allocator():
    """The C library's malloc / free."""
    cdef Allocator a = Allocator()
    a.vt.malloc = <bench_malloc_t>libc_malloc
    a.vt.free = <bench_free_t>libc_free
    a.name = "libc"
    a.kind = "libc"
    return a


def pymalloc_allocator():
    """CPython's PyObject_Malloc / PyObject_Free (runs hold the GIL)."""
    cdef Allocator a = Allocator()
    a.vt.malloc = <bench_malloc_t><void*>PyObject_Malloc
    a.vt.free = <bench_free_t><void*>PyObject_Free
    a.name = "pymalloc"
    a.kind = "pymalloc"
    a.needs_gil = True
    return a


def dl_allocator(str path, str name, str malloc_sym="malloc", str free_sym="free"):
    """An allocator from a shared library: dlopen(path) and dlsym the two symbols.

    Raises OSError (one line) when the library cannot be opened, lacks a symbol,
    or the symbol resolves into another library (e.g. a library that does not
    define malloc itself, so dlsym would hand back libc's).
    """
    cdef bytes bpath = path.encode()
    cdef bytes bm = malloc_sym.encode()
    cdef bytes bf = free_sym.encode()
    cdef void* h = dlopen(bpath, RTLD_NOW | RTLD_LOCAL)
    cdef void* fm
    cdef void* ff
    cdef Dl_info im, ib
    if h == NULL:
        err = dlerror()
        raise OSError(f"cannot load {path}: " + (err.decode(errors="replace") if err != NULL else "dlopen failed"))
    fm = dlsym(h, bm)
    ff = dlsym(h, bf)
    if fm == NULL or ff == NULL:
        raise OSError(f"{path} does not export {malloc_sym if fm == NULL else free_sym}")
    # dlsym searches the library's dependencies too; insist the symbol is its own.
    if dladdr(fm, &im) == 0 or dladdr(ff, &ib) == 0:
        raise OSError(f"cannot tell which library {malloc_sym}/{free_sym} of {path} live in")
    import os
    lib = bench_dl_name(h)
    lib_path = os.path.realpath(lib.decode(errors="replace")) if lib != NULL else None
    own_m = os.path.realpath(im.dli_fname.decode(errors="replace"))
    own_f = os.path.realpath(ib.dli_fname.decode(errors="replace"))
    if own_m != own_f or (lib_path is not None and own_m != lib_path):
        raise OSError(f"{path} does not define {malloc_sym}/{free_sym} itself "
                      f"(dlsym found them in {own_m})")
    cdef Allocator a = Allocator()
    a.vt.malloc = <bench_malloc_t>fm
    a.vt.free = <bench_free_t>ff
    a.handle = h
    a.name = name
    a.kind = "dlopen"
    a.path = own_m
    return a


# ---- the loops (nogil; identical for every allocator) ------------------------
# The ring is written out three times on purpose: through the vtable, and with
# hak_malloc/hak_free and libc malloc/free called by name. Folding them into one
# inline body specialised by a constant was tried: GCC unswitched the shared body
# instead of cloning it, and the by-name hakmem loop measured 0.85 of the in-module
# loop instead of 0.93-0.99, i.e. the fold changed the figure the loop exists to measure.
cdef int bench_ring(bench_vt_t* vt, size_t size, uint32_t ws, uint64_t nops) noexcept nogil:
    """fixedS_wsW: op i frees slot i mod ws (when full) and allocates into it."""
    cdef void* slots[BENCH_MAX_WS]
    cdef uint64_t i
    cdef uint32_t j = 0
    cdef void* p
    cdef int rc = 0
    memset(slots, 0, ws * sizeof(void*))
    for i in range(nops):
        if slots[j] != NULL:
            vt.free(slots[j])
        p = vt.malloc(size)
        if p == NULL:
            slots[j] = NULL
            rc = -1
            break
        bench_touch(p, i)
        slots[j] = p
        j += 1
        if j == ws:
            j = 0
    for j in range(ws):
        if slots[j] != NULL:
            vt.free(slots[j])
    return rc


cdef int _ring_hak_direct(size_t size, uint32_t ws, uint64_t nops) noexcept nogil:
    """bench_ring with hak_malloc / hak_free called by name (the plain cimport call)."""
    cdef void* slots[BENCH_MAX_WS]
    cdef uint64_t i
    cdef uint32_t j = 0
    cdef void* p
    cdef int rc = 0
    memset(slots, 0, ws * sizeof(void*))
    for i in range(nops):
        if slots[j] != NULL:
            hak_free(slots[j])
        p = hak_malloc(size)
        if p == NULL:
            slots[j] = NULL
            rc = -1
            break
        bench_touch(p, i)
        slots[j] = p
        j += 1
        if j == ws:
            j = 0
    for j in range(ws):
        if slots[j] != NULL:
            hak_free(slots[j])
    return rc


cdef int _ring_hak_inline(size_t size, uint32_t ws, uint64_t nops) noexcept nogil:
    """bench_ring through the inline heap API (hak_heap_malloc / hak_heap_free compiled
    into this module): what a cimporting module gets without any call."""
    cdef void* slots[BENCH_MAX_WS]
    cdef uint64_t i
    cdef uint32_t j = 0
    cdef void* p
    cdef int rc = 0
    cdef hak_heap_t* h = hak_heap()
    if h == NULL:
        return -1
    memset(slots, 0, ws * sizeof(void*))
    for i in range(nops):
        if slots[j] != NULL:
            hak_heap_free(h, slots[j])
        p = hak_heap_malloc(h, size)
        if p == NULL:
            slots[j] = NULL
            rc = -1
            break
        bench_touch(p, i)
        slots[j] = p
        j += 1
        if j == ws:
            j = 0
    for j in range(ws):
        if slots[j] != NULL:
            hak_heap_free(h, slots[j])
    return rc


cdef int _ring_libc_direct(size_t size, uint32_t ws, uint64_t nops) noexcept nogil:
    """bench_ring with libc malloc / free called by name (a direct PLT call)."""
    cdef void* slots[BENCH_MAX_WS]
    cdef uint64_t i
    cdef uint32_t j = 0
    cdef void* p
    cdef int rc = 0
    memset(slots, 0, ws * sizeof(void*))
    for i in range(nops):
        if slots[j] != NULL:
            libc_free(slots[j])
        p = libc_malloc(size)
        if p == NULL:
            slots[j] = NULL
            rc = -1
            break
        bench_touch(p, i)
        slots[j] = p
        j += 1
        if j == ws:
            j = 0
    for j in range(ws):
        if slots[j] != NULL:
            libc_free(slots[j])
    return rc


cdef int _mixed(bench_vt_t* vt, uint32_t ws, uint64_t nops, uint64_t seed) noexcept nogil:
    """mixed16-1024_wsW: a random slot, a random size in 16..1024, per op."""
    cdef void* slots[BENCH_MAX_WS]
    cdef uint64_t i, x = seed
    cdef uint32_t j
    cdef void* p
    cdef int rc = 0
    memset(slots, 0, ws * sizeof(void*))
    for i in range(nops):
        x = bench_xorshift(x)
        j = bench_mixed_slot(x, ws)
        if slots[j] != NULL:
            vt.free(slots[j])
        p = vt.malloc(bench_mixed_size(x))
        if p == NULL:
            slots[j] = NULL
            rc = -1
            break
        bench_touch(p, i)
        slots[j] = p
    for j in range(ws):
        if slots[j] != NULL:
            vt.free(slots[j])
    return rc


cdef int _simple(bench_vt_t* vt, uint32_t n, uint64_t rounds) noexcept nogil:
    """glibc-simple_nN: per round, malloc n blocks of 16/32/64 bytes, then free them all."""
    cdef void* slots[BENCH_MAX_WS]
    cdef uint64_t r
    cdef uint32_t i, k
    cdef size_t size
    cdef void* p
    for r in range(rounds):
        size = (<size_t>16) << (r % 3)
        for i in range(n):
            p = vt.malloc(size)
            if p == NULL:
                for k in range(i):
                    vt.free(slots[k])
                return -1
            bench_touch(p, i)
            slots[i] = p
        for i in range(n):
            vt.free(slots[i])
    return 0


cdef void _check_ws(uint32_t ws) except *:
    if ws == 0 or ws > BENCH_MAX_WS:
        raise ValueError(f"working set must be 1..{BENCH_MAX_WS}, got {ws}")


cdef enum:
    LOOP_RING = 0
    LOOP_MIXED = 1
    LOOP_SIMPLE = 2


cdef struct loop_t:
    int kind
    size_t size
    uint32_t ws          # slots (ring, mixed) or blocks per round (simple)
    uint64_t nops        # ops (ring, mixed) or rounds (simple)
    uint64_t seed
    double wall
    double cpu
    int rc


cdef void _loop_timed(bench_vt_t* vt, loop_t* L) noexcept nogil:
    """One timed one-thread loop, between two callgrind marks."""
    cdef double t0, t1, c0, c1
    hakmem_bench_mark()
    c0 = bench_cpu_now()
    t0 = bench_now()
    if L.kind == LOOP_RING:
        L.rc = bench_ring(vt, L.size, L.ws, L.nops)
    elif L.kind == LOOP_MIXED:
        L.rc = _mixed(vt, L.ws, L.nops, L.seed)
    else:
        L.rc = _simple(vt, L.ws, L.nops)
    t1 = bench_now()
    c1 = bench_cpu_now()
    hakmem_bench_mark()
    L.wall = t1 - t0
    L.cpu = c1 - c0


cdef double _run_loop(Allocator a, loop_t* L, list cpu, str what) except -1.0:
    """Run L on a (holding the GIL only for allocators that need it); wall seconds."""
    _check_ws(L.ws)
    if a.needs_gil:
        _loop_timed(&a.vt, L)
    else:
        with nogil:
            _loop_timed(&a.vt, L)
    if L.rc != 0:
        raise MemoryError(f"{a.name}: malloc returned NULL in {what}")
    if cpu is not None:
        cpu.append(L.cpu)
    return L.wall


def run_ring(Allocator a, size_t size, uint32_t ws, uint64_t nops, list cpu=None):
    """Run the ring workload once; return the elapsed (wall) seconds.

    If ``cpu`` is a list, the CPU seconds the calling thread used are appended to it.
    """
    cdef loop_t L
    memset(&L, 0, sizeof(L))
    L.kind = LOOP_RING
    L.size = size
    L.ws = ws
    L.nops = nops
    return _run_loop(a, &L, cpu, f"the ring of {size}-byte blocks")


def run_mixed(Allocator a, uint32_t ws, uint64_t nops, uint64_t seed=MIXED_SEED, list cpu=None):
    """Run the mixed-size workload once; return the elapsed (wall) seconds.

    If ``cpu`` is a list, the CPU seconds the calling thread used are appended to it.
    """
    cdef loop_t L
    if seed == 0:
        raise ValueError("xorshift seed must not be 0")
    memset(&L, 0, sizeof(L))
    L.kind = LOOP_MIXED
    L.ws = ws
    L.nops = nops
    L.seed = seed
    return _run_loop(a, &L, cpu, "the mixed workload")


def run_simple(Allocator a, uint32_t n, uint64_t rounds, list cpu=None):
    """glibc-simple: ``rounds`` rounds of n mallocs then n frees; return wall seconds.

    Round r uses blocks of 16 << (r mod 3) bytes (16, 32, 64, 16, ...); ops = n * rounds.
    If ``cpu`` is a list, the CPU seconds the calling thread used are appended to it.
    """
    cdef loop_t L
    memset(&L, 0, sizeof(L))
    L.kind = LOOP_SIMPLE
    L.ws = n
    L.nops = rounds
    return _run_loop(a, &L, cpu, f"glibc-simple with {n} blocks")


def run_ring_direct(str which, size_t size, uint32_t ws, uint64_t nops):
    """The ring workload calling ``which`` by name, not via the vtable: "hakmem"
    (hak_malloc/hak_free through the cimport table), "hakmem-inline" (the inline heap
    API compiled into this module) or "libc" (a direct PLT call)."""
    cdef double t0, t1
    cdef int rc
    cdef int w
    _check_ws(ws)
    if which == "hakmem":
        w = 0
    elif which == "libc":
        w = 1
    elif which == "hakmem-inline":
        w = 2
    else:
        raise ValueError(f"run_ring_direct: unknown allocator {which!r}")
    with nogil:
        t0 = bench_now()
        if w == 0:
            rc = _ring_hak_direct(size, ws, nops)
        elif w == 2:
            rc = _ring_hak_inline(size, ws, nops)
        else:
            rc = _ring_libc_direct(size, ws, nops)
        t1 = bench_now()
    if rc != 0:
        raise MemoryError(f"{which}: malloc({size}) returned NULL")
    return t1 - t0


def mixed_sizes(uint64_t n, uint64_t seed=MIXED_SEED):
    """The first n sizes of the mixed workload's generator (for tests and docs)."""
    cdef uint64_t x = seed
    out = []
    for _ in range(n):
        x = bench_xorshift(x)
        out.append(bench_mixed_size(x))
    return out


# ---- memory held: N live blocks of the mixed distribution ------------------
cdef class LiveBlocks:
    """N blocks of the mixed size distribution, every byte written, held until release().

    Used to measure bytes per live block: read RSS / the allocator's own mapped
    bytes before and after, divide by N. ``requested`` is the sum of the sizes.
    """
    cdef void** ptrs
    cdef uint64_t n
    cdef Allocator a
    cdef readonly uint64_t requested

    def __cinit__(self, Allocator a, uint64_t n, uint64_t seed=MIXED_SEED):
        cdef int fail
        self.a = a
        self.n = 0
        self.requested = 0
        self.ptrs = <void**>libc_calloc(n if n else 1, sizeof(void*))
        if self.ptrs == NULL:
            raise MemoryError()
        if a.needs_gil:
            fail = self._fill(n, seed)
        else:
            with nogil:
                fail = self._fill(n, seed)
        if fail:
            self.release()
            raise MemoryError(f"{a.name}: out of memory holding {n} blocks")

    cdef int _fill(self, uint64_t n, uint64_t seed) noexcept nogil:
        cdef uint64_t i, x = seed
        cdef size_t sz
        cdef void* p
        for i in range(n):
            x = bench_xorshift(x)
            sz = bench_mixed_size(x)
            p = self.a.vt.malloc(sz)
            if p == NULL:
                return 1
            memset(p, <int>(i & 0xff), sz)
            self.ptrs[i] = p
            self.n += 1
            self.requested += sz
        return 0

    def __len__(self):
        return self.n

    def release(self):
        """Free every block (idempotent)."""
        cdef uint64_t i
        if self.ptrs == NULL:
            return
        if self.a.needs_gil:
            for i in range(self.n):
                self.a.vt.free(self.ptrs[i])
        else:
            with nogil:
                for i in range(self.n):
                    self.a.vt.free(self.ptrs[i])
        libc_free(self.ptrs)
        self.ptrs = NULL
        self.n = 0

    def __dealloc__(self):
        self.release()
