"""hakmem.bench — the benchmark's workload loops, as nogil C loops.

Every loop takes an allocator vtable (bench_vt_t: a malloc and a free function
pointer), so the loop is the same machine code for every allocator compared:
hakmem (hak_malloc / hak_free, cimported), libc malloc/free, pymalloc
(PyObject_Malloc/Free: the GIL is held for its runs), and any shared library that
exports a malloc/free pair, opened with dlopen (mimalloc, or ``--vs PATH``).

Workloads (ops/s counts one free + one malloc per op, or one block for xthread):
  ring      ws slots; op i frees slot i mod ws if full, mallocs `size` bytes into it
            and writes its first byte (fixed16_ws60, fixed256_ws50).
  mixed     ws slots; op picks a slot and a size in 16..1024 from a xorshift64
            generator with a fixed seed (mixed16-1024_ws256).
  xthread   a producer thread mallocs blocks and hands them through a lock-free
            single-producer/single-consumer ring to a consumer thread that frees them.
  threads   N threads run the ring loop at once (threads-N scaling).
The Python driver is hakmem.bench_runner; this module only measures.
"""
from libc.stdint cimport uint64_t, uint32_t, uintptr_t
from libc.stdlib cimport malloc as libc_malloc, free as libc_free, calloc as libc_calloc, abort
from libc.string cimport memset

from hakmem.front cimport hak_malloc, hak_free

cdef extern from *:
    """
    #include <time.h>
    #include <stdint.h>
    #include <sched.h>
    #include <dlfcn.h>
    #include <pthread.h>
    /* Seconds on the monotonic clock. */
    static double bench_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    /* CPU seconds used by the calling thread (not counting time it waited for a CPU). */
    static double bench_cpu_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    static inline uint64_t bench_load_acq(uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void bench_store_rel(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void bench_relax(unsigned spins) {
        /* spin briefly, then yield: the machine may have fewer free cores than threads */
        if (spins < 64) {
    #if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
    #endif
        } else {
            sched_yield();
        }
    }
    /* Keep the compiler from dropping writes into blocks nobody reads. */
    #define bench_touch(p, v) (*(volatile char*)(p) = (char)(v))
    /* xorshift64: the mixed workload's generator (fixed seed, so every allocator
       sees the same sequence of slots and sizes). */
    static inline uint64_t bench_xorshift(uint64_t x) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x;
    }
    /* 16..1024 from the high 32 bits of x, without a division. */
    #define bench_mixed_size(x) ((size_t)(16 + ((((x) >> 32) * 1009ULL) >> 32)))
    /* 0..ws-1 from the low 32 bits of x, by multiply-shift (a division would cost
       more than some allocators' whole malloc). */
    #define bench_mixed_slot(x, ws) ((uint32_t)((((x) & 0xffffffffULL) * (uint64_t)(ws)) >> 32))
    #include <link.h>
    /* The file name the dynamic linker recorded for a dlopen handle (NULL if unknown). */
    static const char* bench_dl_name(void* h) {
        struct link_map* lm = NULL;
        if (dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0 || lm == NULL) return NULL;
        return lm->l_name;
    }
    """
    double bench_now() nogil
    double bench_cpu_now() nogil
    uint64_t bench_load_acq(uint64_t* p) nogil
    void bench_store_rel(uint64_t* p, uint64_t v) nogil
    void bench_relax(unsigned spins) nogil
    void bench_touch(void* p, uint64_t v) nogil
    uint64_t bench_xorshift(uint64_t x) nogil
    size_t bench_mixed_size(uint64_t x) nogil
    uint32_t bench_mixed_slot(uint64_t x, uint32_t ws) nogil
    const char* bench_dl_name(void* h) nogil

cdef extern from "<dlfcn.h>" nogil:
    void* dlopen(const char* filename, int flags)
    void* dlsym(void* handle, const char* symbol)
    char* dlerror()
    int dlclose(void* handle)
    int RTLD_NOW
    int RTLD_LOCAL
    ctypedef struct Dl_info:
        const char* dli_fname
        void* dli_fbase
        const char* dli_sname
        void* dli_saddr
    int dladdr(const void* addr, Dl_info* info)

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_barrier_t:
        pass
    int pthread_create(pthread_t* t, const void* attr, void* (*fn)(void*) noexcept nogil, void* arg)
    int pthread_join(pthread_t t, void** ret)
    int pthread_barrier_init(pthread_barrier_t* b, const void* attr, unsigned count)
    int pthread_barrier_wait(pthread_barrier_t* b)
    int pthread_barrier_destroy(pthread_barrier_t* b)

cdef extern from "Python.h":
    void* PyObject_Malloc(size_t n)
    void PyObject_Free(void* p)

ctypedef void* (*bench_malloc_t)(size_t) noexcept nogil
ctypedef void (*bench_free_t)(void*) noexcept nogil

cdef struct bench_vt_t:
    bench_malloc_t malloc
    bench_free_t free

cdef enum:
    BENCH_MAX_WS = 4096          # most ring slots a workload may use
    BENCH_SPSC_CAP = 1024        # xthread ring capacity (a power of two)
    BENCH_MAX_THREADS = 256
    MIXED_SEED = 0x9E3779B97F4A7C15


# ---- the allocators ----------------------------------------------------------
cdef class Allocator:
    """One allocator the bench can drive: a name and a malloc/free vtable.

    ``needs_gil`` is True for pymalloc, whose functions may only be called with
    the GIL held: its loops run holding the GIL and it is skipped for workloads
    that need several threads. Build instances with the functions below.
    """
    cdef bench_vt_t vt
    cdef void* handle
    cdef readonly str name
    cdef readonly str kind
    cdef readonly bint needs_gil
    cdef readonly str path

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
cdef int _ring(bench_vt_t* vt, size_t size, uint32_t ws, uint64_t nops) noexcept nogil:
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
    """_ring with hak_malloc / hak_free called by name (the plain cimport call)."""
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


cdef int _ring_libc_direct(size_t size, uint32_t ws, uint64_t nops) noexcept nogil:
    """_ring with libc malloc / free called by name (a direct PLT call)."""
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


cdef void _check_ws(uint32_t ws) except *:
    if ws == 0 or ws > BENCH_MAX_WS:
        raise ValueError(f"working set must be 1..{BENCH_MAX_WS}, got {ws}")


def run_ring(Allocator a, size_t size, uint32_t ws, uint64_t nops, list cpu=None):
    """Run the ring workload once; return the elapsed (wall) seconds.

    If ``cpu`` is a list, the CPU seconds the calling thread used are appended to it.
    """
    cdef double t0, t1, c0, c1
    cdef int rc
    _check_ws(ws)
    if a.needs_gil:
        c0 = bench_cpu_now()
        t0 = bench_now()
        rc = _ring(&a.vt, size, ws, nops)
        t1 = bench_now()
        c1 = bench_cpu_now()
    else:
        with nogil:
            c0 = bench_cpu_now()
            t0 = bench_now()
            rc = _ring(&a.vt, size, ws, nops)
            t1 = bench_now()
            c1 = bench_cpu_now()
    if rc != 0:
        raise MemoryError(f"{a.name}: malloc({size}) returned NULL")
    if cpu is not None:
        cpu.append(c1 - c0)
    return t1 - t0


def run_ring_direct(str which, size_t size, uint32_t ws, uint64_t nops):
    """The ring workload calling ``which`` ("hakmem" or "libc") by name, not via the vtable."""
    cdef double t0, t1
    cdef int rc
    cdef int w
    _check_ws(ws)
    if which == "hakmem":
        w = 0
    elif which == "libc":
        w = 1
    else:
        raise ValueError(f"run_ring_direct: unknown allocator {which!r}")
    with nogil:
        t0 = bench_now()
        if w == 0:
            rc = _ring_hak_direct(size, ws, nops)
        else:
            rc = _ring_libc_direct(size, ws, nops)
        t1 = bench_now()
    if rc != 0:
        raise MemoryError(f"{which}: malloc({size}) returned NULL")
    return t1 - t0


def run_mixed(Allocator a, uint32_t ws, uint64_t nops, uint64_t seed=MIXED_SEED, list cpu=None):
    """Run the mixed-size workload once; return the elapsed (wall) seconds.

    If ``cpu`` is a list, the CPU seconds the calling thread used are appended to it.
    """
    cdef double t0, t1, c0, c1
    cdef int rc
    _check_ws(ws)
    if seed == 0:
        raise ValueError("xorshift seed must not be 0")
    if a.needs_gil:
        c0 = bench_cpu_now()
        t0 = bench_now()
        rc = _mixed(&a.vt, ws, nops, seed)
        t1 = bench_now()
        c1 = bench_cpu_now()
    else:
        with nogil:
            c0 = bench_cpu_now()
            t0 = bench_now()
            rc = _mixed(&a.vt, ws, nops, seed)
            t1 = bench_now()
            c1 = bench_cpu_now()
    if rc != 0:
        raise MemoryError(f"{a.name}: malloc returned NULL in the mixed workload")
    if cpu is not None:
        cpu.append(c1 - c0)
    return t1 - t0


def mixed_sizes(uint64_t n, uint64_t seed=MIXED_SEED):
    """The first n sizes of the mixed workload's generator (for tests and docs)."""
    cdef uint64_t x = seed
    out = []
    for _ in range(n):
        x = bench_xorshift(x)
        out.append(bench_mixed_size(x))
    return out


# ---- threads: N rings at once, and the producer/consumer pair ----------------
cdef void abort_run() noexcept nogil:
    # a started thread waits at a barrier that can never open: nothing sane remains
    abort()


cdef struct worker_t:
    bench_vt_t* vt
    pthread_barrier_t* barrier
    size_t size
    uint32_t ws
    uint64_t nops
    double t0
    double t1
    int rc


cdef void* _ring_worker(void* arg) noexcept nogil:
    cdef worker_t* w = <worker_t*>arg
    pthread_barrier_wait(w.barrier)
    w.t0 = bench_now()
    w.rc = _ring(w.vt, w.size, w.ws, w.nops)
    w.t1 = bench_now()
    return NULL


cdef void* _spin_worker(void* arg) noexcept nogil:
    cdef worker_t* w = <worker_t*>arg
    cdef uint64_t i, x = MIXED_SEED
    pthread_barrier_wait(w.barrier)
    w.t0 = bench_now()
    for i in range(w.nops):
        x = bench_xorshift(x)
    w.t1 = bench_now()
    w.rc = <int>(x == 0)     # uses x, so the loop stays
    return NULL


cdef double _spawn(void* (*fn)(void*) noexcept nogil, bench_vt_t* vt, uint32_t nthreads,
                   size_t size, uint32_t ws, uint64_t nops, int* rc_out) noexcept nogil:
    """Start nthreads threads of fn behind a barrier; wall seconds first start..last end.

    Returns -1.0 if a thread could not be started (then none was left waiting).
    """
    cdef worker_t* w = <worker_t*>libc_calloc(nthreads, sizeof(worker_t))
    cdef pthread_t* tids = <pthread_t*>libc_calloc(nthreads, sizeof(pthread_t))
    cdef pthread_barrier_t barrier
    cdef uint32_t i
    cdef double t0, t1
    cdef int rc = 0
    if w == NULL or tids == NULL:
        libc_free(w)
        libc_free(tids)
        return -1.0
    pthread_barrier_init(&barrier, NULL, nthreads)
    for i in range(nthreads):
        w[i].vt = vt
        w[i].barrier = &barrier
        w[i].size = size
        w[i].ws = ws
        w[i].nops = nops
        if pthread_create(&tids[i], NULL, fn, &w[i]) != 0:
            abort_run()      # earlier threads wait at a barrier that can never open
    for i in range(nthreads):
        pthread_join(tids[i], NULL)
    pthread_barrier_destroy(&barrier)
    t0 = w[0].t0
    t1 = w[0].t1
    for i in range(nthreads):
        if w[i].t0 < t0:
            t0 = w[i].t0
        if w[i].t1 > t1:
            t1 = w[i].t1
        rc |= w[i].rc
    libc_free(w)
    libc_free(tids)
    rc_out[0] = rc
    return t1 - t0


def run_spin(uint32_t nthreads, uint64_t nops):
    """Reference: N threads of pure arithmetic (no memory); wall seconds.

    Its speed-up over one thread is what this machine can give threads-N right now
    (other load, SMT siblings and frequency limits included).
    """
    cdef double dt
    cdef int rc = 0
    if nthreads == 0 or nthreads > BENCH_MAX_THREADS:
        raise ValueError(f"threads must be 1..{BENCH_MAX_THREADS}, got {nthreads}")
    with nogil:
        dt = _spawn(_spin_worker, NULL, nthreads, 0, 1, nops, &rc)
    if dt < 0:
        raise MemoryError()
    return dt


def run_threads(Allocator a, uint32_t nthreads, size_t size, uint32_t ws, uint64_t nops):
    """N new threads each run the ring workload (nops each); return wall seconds.

    The wall time runs from the first thread's start to the last one's end.
    """
    cdef double dt
    cdef int rc = 0
    _check_ws(ws)
    if a.needs_gil:
        raise ValueError(f"{a.name} needs the GIL; it cannot run on several threads")
    if nthreads == 0 or nthreads > BENCH_MAX_THREADS:
        raise ValueError(f"threads must be 1..{BENCH_MAX_THREADS}, got {nthreads}")
    with nogil:
        dt = _spawn(_ring_worker, &a.vt, nthreads, size, ws, nops, &rc)
    if dt < 0:
        raise MemoryError()
    if rc != 0:
        raise MemoryError(f"{a.name}: malloc({size}) returned NULL on a worker thread")
    return dt


cdef struct spsc_t:
    uint64_t head                 # written by the producer only
    char pad0[56]
    uint64_t tail                 # written by the consumer only
    char pad1[56]
    void* slot[BENCH_SPSC_CAP]
    bench_vt_t* vt
    pthread_barrier_t* barrier
    size_t size
    uint64_t nops
    double t0
    double t1
    int rc


cdef void* _producer(void* arg) noexcept nogil:
    cdef spsc_t* q = <spsc_t*>arg
    cdef uint64_t i, tail
    cdef unsigned spins
    cdef void* p
    pthread_barrier_wait(q.barrier)
    q.t0 = bench_now()
    for i in range(q.nops):
        p = q.vt.malloc(q.size)
        if p == NULL:
            q.rc = -1
            p = <void*>1        # tell the consumer to stop: an odd, never-real pointer
        else:
            bench_touch(p, i)
        spins = 0
        tail = bench_load_acq(&q.tail)
        while i - tail >= BENCH_SPSC_CAP:
            bench_relax(spins)
            spins += 1
            tail = bench_load_acq(&q.tail)
        q.slot[i & (BENCH_SPSC_CAP - 1)] = p
        bench_store_rel(&q.head, i + 1)
        if q.rc != 0:
            break
    return NULL


cdef void* _consumer(void* arg) noexcept nogil:
    cdef spsc_t* q = <spsc_t*>arg
    cdef uint64_t i, head
    cdef unsigned spins
    cdef void* p
    pthread_barrier_wait(q.barrier)
    for i in range(q.nops):
        spins = 0
        head = bench_load_acq(&q.head)
        while head <= i:
            bench_relax(spins)
            spins += 1
            head = bench_load_acq(&q.head)
        p = q.slot[i & (BENCH_SPSC_CAP - 1)]
        bench_store_rel(&q.tail, i + 1)
        if p == <void*>1:
            break
        q.vt.free(p)
    q.t1 = bench_now()
    return NULL


def run_xthread(Allocator a, size_t size, uint64_t nops):
    """Producer thread mallocs, consumer thread frees, through a lock-free ring.

    Returns the wall seconds from the producer's start to the consumer's last free.
    At most BENCH_SPSC_CAP blocks are in flight, so memory must stay bounded.
    """
    cdef spsc_t* q
    cdef pthread_barrier_t barrier
    cdef pthread_t tp, tc
    cdef int ok
    cdef double dt
    if a.needs_gil:
        raise ValueError(f"{a.name} needs the GIL; it cannot run on several threads")
    if nops == 0:
        return 0.0
    q = <spsc_t*>libc_calloc(1, sizeof(spsc_t))
    if q == NULL:
        raise MemoryError()
    q.vt = &a.vt
    q.barrier = &barrier
    q.size = size
    q.nops = nops
    pthread_barrier_init(&barrier, NULL, 2)
    with nogil:
        ok = pthread_create(&tc, NULL, _consumer, q) == 0
        if ok:
            if pthread_create(&tp, NULL, _producer, q) != 0:
                ok = 0
                abort_run()
            pthread_join(tp, NULL)
            pthread_join(tc, NULL)
    pthread_barrier_destroy(&barrier)
    dt = q.t1 - q.t0
    ok = ok and q.rc == 0
    libc_free(q)
    if not ok:
        raise MemoryError(f"{a.name}: xthread run failed (thread start or malloc)")
    return dt




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
