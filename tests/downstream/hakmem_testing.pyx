"""hakmem_testing — test-only nogil kernels; not part of the hakmem package.

tests/conftest.py builds it against the hakmem under test (a downstream extension
that cimports hakmem, like tests/downstream/hakdown.pyx), once per hakmem build, with
the core's sanitizer flags when HAKMEM_SANITIZE is set; wheels never ship it.

- ``StressRun`` / ``stress()``: N pthreads (GIL released) allocating random sizes,
  filling each block with a cookie (unique id, size, id-derived pattern), passing a
  share to other threads through atomic transfer slots, verifying and freeing.
  Every thread keeps counts and id checksums, so the caller can prove that every
  block was freed exactly once and none was handed out twice.
- ``churn()``: waves of short-lived pthreads that allocate, cache and exit.
- ``stale_heap_rounds()``: a dead thread's heap pointer against the next thread's id.
- ``raw_*``: the unchecked C API (``hak_free`` without the liveness check the Python
  ``free`` does), so tests can provoke the debug build's aborts.
"""
from libc.stdint cimport uint64_t, uint32_t, uintptr_t, uint8_t
from libc.stdlib cimport calloc as sys_calloc, free as sys_free
from libc.string cimport memset

from hakmem.front cimport (hak_malloc, hak_calloc, hak_realloc, hak_free,
                           hak_thread_flush, hak_heap_t, hak_heap, hak_heap_malloc,
                           hak_heap_free, hak_thread_id)
from hakmem.slab cimport hak_slab_stats_t, hak_slab_get_stats

cdef extern from *:
    """
    #include <pthread.h>
    #define tst_xchg(p, v) __atomic_exchange_n((void**)(p), (void*)(v), __ATOMIC_ACQ_REL)
    #define tst_load_int(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
    #define tst_store_int(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
    typedef void* (*tst_start_fn)(void*);
    """
    ctypedef unsigned long pthread_t
    ctypedef void* (*tst_start_fn)(void*) noexcept nogil
    int pthread_create(pthread_t* t, void* attr, tst_start_fn fn, void* arg) nogil
    int pthread_join(pthread_t t, void** ret) nogil
    void* tst_xchg(void* p, void* v) nogil
    int tst_load_int(int* p) nogil
    void tst_store_int(int* p, int v) nogil

cdef enum:
    TINY_MAX = 1024
    COOKIE_MIN = 16                  # id + size words


# ---- random numbers and cookies ----------------------------------------------
cdef inline uint64_t _next(uint64_t* s) noexcept nogil:
    """splitmix64: fast, good enough to pick sizes and slots."""
    s[0] += <uint64_t>0x9E3779B97F4A7C15ULL
    cdef uint64_t z = s[0]
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t _hash(uint64_t id) noexcept nogil:
    """What the id checksums add up: sums of distinct ids rarely collide after mixing."""
    id = (id ^ (id >> 33)) * <uint64_t>0xff51afd7ed558ccdULL
    return id ^ (id >> 29)


cdef void _fill(char* p, uint64_t id, size_t size, size_t start) noexcept nogil:
    """Cookie: word 0 = id, word 1 = size, then words id*K+i and bytes id&0xff."""
    cdef size_t i, nw = size // 8
    cdef uint64_t k = id * <uint64_t>0x9E3779B97F4A7C15ULL
    (<uint64_t*>p)[0] = id
    (<uint64_t*>p)[1] = size
    i = start // 8 if start > 16 else 2
    while i < nw:
        (<uint64_t*>p)[i] = k + i
        i += 1
    i = nw * 8
    while i < size:
        p[i] = <char>(id & 0xff)
        i += 1


cdef bint _check(char* p, uint64_t id, size_t size, size_t upto) noexcept nogil:
    """True if the cookie of (id, size) is intact in the first `upto` bytes."""
    cdef size_t i, nw = upto // 8
    cdef uint64_t k = id * <uint64_t>0x9E3779B97F4A7C15ULL
    if (<uint64_t*>p)[0] != id:
        return False
    if upto == size and (<uint64_t*>p)[1] != size:
        return False
    i = 2
    while i < nw and i < size // 8:
        if (<uint64_t*>p)[i] != k + i:
            return False
        i += 1
    i = (size // 8) * 8
    while i < upto:
        if p[i] != <char>(id & 0xff):
            return False
        i += 1
    return True


# ---- the stress workload -----------------------------------------------------
cdef struct shared_t:
    void** slots             # transfer slots (atomic exchange only)
    uint32_t nslots
    uint64_t ops             # per thread; 0 = run until `stop`
    int stop
    uint32_t live            # blocks each thread holds at most
    uint32_t large_permille  # share of requests above the tiny range
    uint32_t large_max
    uint32_t transfer_pct    # share of frees that become hand-overs
    uint32_t realloc_pct
    uint32_t calloc_pct

cdef struct rec_t:
    char* p
    uint64_t id
    uint64_t size

cdef struct worker_t:
    shared_t* sh
    uint64_t tid
    uint64_t seed
    uint64_t ops_done
    uint64_t allocs_tiny
    uint64_t allocs_large
    uint64_t frees_tiny
    uint64_t frees_large
    uint64_t handed          # blocks put into a transfer slot
    uint64_t received        # blocks taken out of a transfer slot
    uint64_t reallocs
    uint64_t oom
    uint64_t sum_alloc       # sum of _hash(id) over blocks this thread created
    uint64_t sum_free        # ... over blocks this thread freed
    uint64_t errors
    uint64_t bad_addr
    uint64_t bad_id


cdef inline void _count_free(worker_t* w, uint64_t id, size_t size) noexcept nogil:
    if size <= TINY_MAX:
        w.frees_tiny += 1
    else:
        w.frees_large += 1
    w.sum_free += _hash(id)


cdef inline void _bad(worker_t* w, char* p, uint64_t id) noexcept nogil:
    if w.errors == 0:
        w.bad_addr = <uintptr_t>p
        w.bad_id = id
    w.errors += 1


cdef bint _receive(worker_t* w, char* q, rec_t* out) noexcept nogil:
    """A block taken from a transfer slot: read its cookie from itself and verify it."""
    cdef uint64_t id = (<uint64_t*>q)[0]
    cdef uint64_t size = (<uint64_t*>q)[1]
    w.received += 1
    if size < COOKIE_MIN or size > w.sh.large_max or not _check(q, id, size, size):
        _bad(w, q, id)
        return False          # leak it rather than free a block someone else may hold
    out.p = q
    out.id = id
    out.size = size
    return True


cdef void* _worker(void* arg) noexcept nogil:
    cdef worker_t* w = <worker_t*>arg
    cdef shared_t* sh = w.sh
    cdef uint64_t rng = w.seed
    cdef uint64_t r, op = 0, counter = 0, size, id
    cdef uint32_t i, action, nlive = sh.live
    cdef rec_t* live = <rec_t*>sys_calloc(nlive, sizeof(rec_t))
    cdef rec_t got
    cdef char* q
    cdef size_t j
    if live == NULL:
        w.errors += 1
        return NULL
    while True:
        if sh.ops != 0:
            if op >= sh.ops:
                break
        elif (op & 255) == 0 and tst_load_int(&sh.stop):
            break
        op += 1
        r = _next(&rng)
        i = <uint32_t>(r % nlive)
        action = <uint32_t>((r >> 32) % 100)
        if live[i].p != NULL:
            if not _check(live[i].p, live[i].id, live[i].size, live[i].size):
                _bad(w, live[i].p, live[i].id)
                live[i].p = NULL
                continue
            if action < sh.transfer_pct:
                # Hand it over; whatever was in the slot is now ours.
                q = <char*>tst_xchg(&sh.slots[(r >> 48) % sh.nslots], live[i].p)
                live[i].p = NULL
                w.handed += 1
                if q != NULL and _receive(w, q, &got):
                    if action & 1:
                        live[i] = got
                    else:
                        _count_free(w, got.id, got.size)
                        hak_free(got.p)
            elif action < sh.transfer_pct + sh.realloc_pct:
                size = _pick_size(sh, _next(&rng))
                q = <char*>hak_realloc(live[i].p, size)
                if q == NULL:
                    w.oom += 1
                    continue
                w.reallocs += 1
                if not _check(q, live[i].id, live[i].size,
                              size if size < live[i].size else live[i].size):
                    _bad(w, q, live[i].id)
                # Count what hakmem's stats count: a move through hak_malloc + hak_free,
                # except large -> large, which libc's realloc does (no alloc/free counted).
                if q != live[i].p and (size <= TINY_MAX or live[i].size <= TINY_MAX):
                    _count_free(w, live[i].id, live[i].size)
                    w.sum_free -= _hash(live[i].id)     # the same id lives on in q
                    if size <= TINY_MAX:
                        w.allocs_tiny += 1
                    else:
                        w.allocs_large += 1
                _fill(q, live[i].id, size, 16)
                live[i].p = q
                live[i].size = size
            else:
                _count_free(w, live[i].id, live[i].size)
                hak_free(live[i].p)
                live[i].p = NULL
        else:
            size = _pick_size(sh, r)
            if action < sh.calloc_pct:
                q = <char*>hak_calloc(1, size)
                if q != NULL:
                    j = 0
                    while j < size:
                        if q[j] != 0:
                            _bad(w, q, 0)
                            break
                        j += 1
            else:
                q = <char*>hak_malloc(size)
            if q == NULL:
                w.oom += 1
                continue
            counter += 1
            id = (w.tid << 40) | counter
            _fill(q, id, size, 16)
            live[i].p = q
            live[i].id = id
            live[i].size = size
            w.sum_alloc += _hash(id)
            if size <= TINY_MAX:
                w.allocs_tiny += 1
            else:
                w.allocs_large += 1
    # Free what is left; blocks still in transfer slots are drained by join().
    for i in range(nlive):
        if live[i].p != NULL:
            if _check(live[i].p, live[i].id, live[i].size, live[i].size):
                _count_free(w, live[i].id, live[i].size)
                hak_free(live[i].p)
            else:
                _bad(w, live[i].p, live[i].id)
    sys_free(live)
    w.ops_done = op
    return NULL


cdef inline uint64_t _pick_size(shared_t* sh, uint64_t r) noexcept nogil:
    """Mostly tiny (16..1024, small sizes likelier), sometimes large (1025..large_max)."""
    if (r >> 8) % 1000 < sh.large_permille:
        return TINY_MAX + 1 + (r >> 20) % (sh.large_max - TINY_MAX)
    if r & 1:
        return COOKIE_MIN + (r >> 20) % (128 - COOKIE_MIN + 1)
    return COOKIE_MIN + (r >> 20) % (TINY_MAX - COOKIE_MIN + 1)


_FIELDS = ("ops_done", "allocs_tiny", "allocs_large", "frees_tiny", "frees_large", "handed",
           "received", "reallocs", "oom", "sum_alloc", "sum_free", "errors")


cdef class StressRun:
    """A running stress workload: ``StressRun(threads, ops, ...)`` starts it,
    ``join()`` waits (GIL released), drains the transfer slots and returns totals.

    ``ops=0`` runs until ``stop()``. Threads are raw pthreads, so by the time
    ``join()`` returns their thread caches have been returned (pthread_join waits
    for the TLS destructors).
    """
    cdef shared_t sh
    cdef worker_t* w
    cdef pthread_t* th
    cdef int nthreads
    cdef int started
    cdef bint joined

    def __cinit__(self, int threads=8, uint64_t ops=100000, uint64_t seed=1, *,
                  uint32_t slots=256, uint32_t live=128, uint32_t large_permille=20,
                  uint32_t large_max=65536, uint32_t transfer_pct=25,
                  uint32_t realloc_pct=10, uint32_t calloc_pct=5):
        if threads < 1 or live < 1 or slots < 1:
            raise ValueError("threads, live and slots must be >= 1")
        if large_max <= TINY_MAX or transfer_pct + realloc_pct > 100 or calloc_pct > 100:
            raise ValueError("large_max must exceed 1024 and the percentages fit in 100")
        memset(&self.sh, 0, sizeof(shared_t))
        self.sh.slots = <void**>sys_calloc(slots, sizeof(void*))
        self.w = <worker_t*>sys_calloc(threads, sizeof(worker_t))
        self.th = <pthread_t*>sys_calloc(threads, sizeof(pthread_t))
        if self.sh.slots == NULL or self.w == NULL or self.th == NULL:
            raise MemoryError()
        self.sh.nslots = slots
        self.sh.ops = ops
        self.sh.live = live
        self.sh.large_permille = large_permille
        self.sh.large_max = large_max
        self.sh.transfer_pct = transfer_pct
        self.sh.realloc_pct = realloc_pct
        self.sh.calloc_pct = calloc_pct
        self.nthreads = threads
        cdef int t
        for t in range(threads):
            self.w[t].sh = &self.sh
            self.w[t].tid = t + 1
            self.w[t].seed = seed * 1000003 + <uint64_t>t
        with nogil:
            for t in range(threads):
                if pthread_create(&self.th[t], NULL, _worker, &self.w[t]) != 0:
                    break
                self.started += 1
        if self.started != threads:
            self.stop()
            self.join()
            raise RuntimeError(f"could only start {self.started} of {threads} threads")

    def stop(self):
        """Ask ``ops=0`` workers to finish (they free their blocks and exit)."""
        tst_store_int(&self.sh.stop, 1)

    def join(self):
        """Wait for every worker, free what sits in the transfer slots, return totals.

        Returns a dict: the per-thread counters summed (``ops_done``, ``allocs_tiny``,
        ``allocs_large``, ``frees_tiny``, ``frees_large``, ``handed``, ``received``,
        ``reallocs``, ``oom``, ``sum_alloc``, ``sum_free`` mod 2**64, ``errors``), plus
        ``threads``, ``drained`` and ``bad`` (first bad block per thread).
        """
        cdef int t
        cdef uint32_t k
        cdef worker_t main
        cdef rec_t got
        cdef char* q
        if self.joined:
            raise RuntimeError("already joined")
        with nogil:
            for t in range(self.started):
                pthread_join(self.th[t], NULL)
        self.joined = True
        memset(&main, 0, sizeof(worker_t))
        main.sh = &self.sh
        for k in range(self.sh.nslots):
            q = <char*>tst_xchg(&self.sh.slots[k], NULL)
            if q != NULL and _receive(&main, q, &got):
                _count_free(&main, got.id, got.size)
                hak_free(got.p)
        out = {f: 0 for f in _FIELDS}
        bad = []
        for t in range(self.started):
            for f in _FIELDS:
                out[f] += (<object>_field(&self.w[t], f))
            if self.w[t].errors:
                bad.append((t, self.w[t].bad_addr, self.w[t].bad_id))
        for f in _FIELDS:
            out[f] += (<object>_field(&main, f))
        if main.errors:
            bad.append(("drain", main.bad_addr, main.bad_id))
        out["sum_alloc"] &= (1 << 64) - 1
        out["sum_free"] &= (1 << 64) - 1
        out["threads"] = self.started
        out["drained"] = main.received
        out["bad"] = bad
        return out

    def __dealloc__(self):
        cdef int t
        if self.started and not self.joined:
            tst_store_int(&self.sh.stop, 1)
            with nogil:
                for t in range(self.started):
                    pthread_join(self.th[t], NULL)
        sys_free(self.sh.slots)
        sys_free(self.w)
        sys_free(self.th)


cdef object _field(worker_t* w, str f):
    return {
        "ops_done": w.ops_done, "allocs_tiny": w.allocs_tiny, "allocs_large": w.allocs_large,
        "frees_tiny": w.frees_tiny, "frees_large": w.frees_large, "handed": w.handed,
        "received": w.received, "reallocs": w.reallocs, "oom": w.oom,
        "sum_alloc": w.sum_alloc, "sum_free": w.sum_free, "errors": w.errors,
    }[f]


def stress(int threads=8, uint64_t ops=100000, uint64_t seed=1, **kw):
    """Run the stress workload to completion and return ``StressRun.join()``'s totals."""
    return StressRun(threads, ops, seed, **kw).join()


# ---- thread churn ------------------------------------------------------------
cdef struct churn_t:
    uint64_t seed
    uint32_t nblocks
    uint32_t keep            # blocks handed to the caller (live after exit)
    void** kept
    uint64_t errors


cdef void* _churn_worker(void* arg) noexcept nogil:
    """Allocate, free most (they stay in this thread's cache), keep a few, exit."""
    cdef churn_t* c = <churn_t*>arg
    cdef uint64_t rng = c.seed
    cdef uint32_t i
    cdef void** tmp = <void**>sys_calloc(c.nblocks, sizeof(void*))
    if tmp == NULL:
        c.errors += 1
        return NULL
    for i in range(c.nblocks):
        tmp[i] = hak_malloc(COOKIE_MIN + _next(&rng) % (TINY_MAX - COOKIE_MIN + 1))
        if tmp[i] == NULL:
            c.errors += 1
        else:
            (<uint64_t*>tmp[i])[0] = <uintptr_t>tmp[i]
    for i in range(c.nblocks):
        if tmp[i] == NULL:
            continue
        if (<uint64_t*>tmp[i])[0] != <uintptr_t>tmp[i]:
            c.errors += 1
        if i < c.keep:
            c.kept[i] = tmp[i]
        else:
            hak_free(tmp[i])
    sys_free(tmp)
    return NULL


def churn(int nthreads=1000, int wave=8, uint32_t nblocks=200, uint32_t keep=4,
          uint64_t seed=1):
    """``nthreads`` pthreads in waves of ``wave``: each allocates ``nblocks`` tiny blocks,
    frees all but ``keep`` (which outlive it) and exits; the caller frees the kept ones
    after each wave (remote frees into abandoned slabs).

    Returns ``(errors, max_bytes_mapped, bytes_mapped_per_wave)``.
    """
    if nthreads < 1 or wave < 1 or keep > nblocks:
        raise ValueError("need nthreads >= 1, wave >= 1, keep <= nblocks")
    cdef churn_t* cs = <churn_t*>sys_calloc(wave, sizeof(churn_t))
    cdef pthread_t* th = <pthread_t*>sys_calloc(wave, sizeof(pthread_t))
    cdef void** kept = <void**>sys_calloc(<size_t>wave * (keep + 1), sizeof(void*))
    cdef hak_slab_stats_t st
    cdef int done = 0, n, t, started
    cdef uint32_t i
    cdef uint64_t errors = 0, peak = 0
    if cs == NULL or th == NULL or kept == NULL:
        sys_free(cs); sys_free(th); sys_free(kept)
        raise MemoryError()
    per_wave = []
    try:
        while done < nthreads:
            n = wave if nthreads - done > wave else nthreads - done
            started = 0
            with nogil:
                for t in range(n):
                    cs[t].seed = seed * 7919 + <uint64_t>(done + t)
                    cs[t].nblocks = nblocks
                    cs[t].keep = keep
                    cs[t].kept = &kept[<size_t>t * (keep + 1)]
                    cs[t].errors = 0
                    memset(cs[t].kept, 0, (keep + 1) * sizeof(void*))
                    if pthread_create(&th[t], NULL, _churn_worker, &cs[t]) != 0:
                        break
                    started += 1
                for t in range(started):
                    pthread_join(th[t], NULL)
                    errors += cs[t].errors
                    for i in range(keep):
                        if cs[t].kept[i] != NULL:
                            hak_free(cs[t].kept[i])
                hak_slab_get_stats(&st)
                if st.bytes_mapped > peak:
                    peak = st.bytes_mapped
            if started != n:
                raise RuntimeError(f"pthread_create failed after {done + started} threads")
            done += n
            per_wave.append(st.bytes_mapped)
    finally:
        sys_free(cs)
        sys_free(th)
        sys_free(kept)
    return errors, peak, per_wave


# ---- the raw C API -------------------------------------------------------------
def raw_malloc(size_t size):
    """``hak_malloc(size)`` as an int; 0 when it returned NULL (no exception)."""
    cdef void* p
    with nogil:
        p = hak_malloc(size)
    return <uintptr_t>p


def raw_calloc(size_t n, size_t size):
    """``hak_calloc(n, size)`` as an int; 0 for NULL."""
    cdef void* p
    with nogil:
        p = hak_calloc(n, size)
    return <uintptr_t>p


def raw_realloc(uintptr_t addr, size_t size):
    """``hak_realloc(addr, size)`` as an int; 0 for NULL. No liveness check."""
    cdef void* p
    with nogil:
        p = hak_realloc(<void*>addr, size)
    return <uintptr_t>p


def raw_free(uintptr_t addr):
    """``hak_free(addr)`` with no liveness check: a bad pointer aborts a debug build
    and corrupts a release build. For tests of the debug build only."""
    with nogil:
        hak_free(<void*>addr)


def raw_thread_flush():
    """``hak_thread_flush()`` for the calling thread."""
    with nogil:
        hak_thread_flush()


# ---- out-of-memory helper ----------------------------------------------------------
cdef class Hoard:
    """Allocates blocks until the allocator says NULL, keeping them in a C array made
    beforehand, so nothing else needs memory while memory is exhausted."""
    cdef void** blocks
    cdef size_t cap
    cdef size_t n

    def __cinit__(self, size_t cap):
        self.blocks = <void**>sys_calloc(cap if cap else 1, sizeof(void*))
        if self.blocks == NULL:
            raise MemoryError()
        self.cap = cap

    def fill(self, size_t size):
        """``hak_malloc(size)`` until NULL or the array is full; returns how many
        blocks this call got and whether it ended on a NULL."""
        cdef size_t got = 0
        cdef bint null = False
        cdef void* p
        with nogil:
            while self.n < self.cap:
                p = hak_malloc(size)
                if p == NULL:
                    null = True
                    break
                (<char*>p)[0] = 1          # touch it: the page must really exist
                self.blocks[self.n] = p
                self.n += 1
                got += 1
        return got, null

    def pop(self):
        """Free the most recent block; returns its address (0 if empty)."""
        cdef void* p = NULL
        if self.n:
            self.n -= 1
            p = self.blocks[self.n]
            hak_free(p)
        return <uintptr_t>p

    def release(self):
        """Free every block held; returns how many."""
        cdef size_t k = self.n
        with nogil:
            while self.n:
                self.n -= 1
                hak_free(self.blocks[self.n])
        return k

    def __len__(self):
        return self.n

    def __dealloc__(self):
        while self.n:
            self.n -= 1
            hak_free(self.blocks[self.n])
        sys_free(self.blocks)


# ---- stats consistency -----------------------------------------------------------
from hakmem.front cimport hak_stats_collect, hak_class_stats_t
from hakmem.classes cimport HAK_NCLASSES

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec* ts)
    int CLOCK_MONOTONIC


def watch_stats(double seconds):
    """Collect the per-class counters in a tight nogil loop for ``seconds``; returns
    ``(reads, drops)`` where a drop is a total (allocs or frees) smaller than the
    previous read: counters only grow, so any drop is a torn snapshot."""
    cdef hak_class_stats_t st[HAK_NCLASSES]
    cdef timespec t0, t
    cdef uint64_t a, f, pa = 0, pf = 0, reads = 0, drops = 0
    cdef int c
    with nogil:
        clock_gettime(CLOCK_MONOTONIC, &t0)
        while True:
            hak_stats_collect(st)
            a = 0
            f = 0
            for c in range(HAK_NCLASSES):
                a += st[c].mag_hits + st[c].sll_pops
                f += st[c].mag_pushes + st[c].sll_pushes + st[c].slab_frees + st[c].remote_frees
            if a < pa or f < pf:
                drops += 1
            pa = a
            pf = f
            reads += 1
            if (reads & 1023) == 0:
                clock_gettime(CLOCK_MONOTONIC, &t)
                if (t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) * 1e-9 > seconds:
                    break
    return reads, drops


# ---- a dead thread's heap pointer (what the PEP 445 hook caches) -------------------
cdef struct stale_t:
    hak_heap_t* heap        # set by the first thread: its heap
    uintptr_t tid           # ... and its id
    int reused_id           # second thread: it got the dead thread's id
    int bad                 # second thread: the stale heap matched its id but is not its heap


cdef void* _stale_first(void* arg) noexcept nogil:
    cdef stale_t* st = <stale_t*>arg
    cdef hak_heap_t* h = hak_heap()
    hak_heap_free(h, hak_heap_malloc(h, 64))
    st.heap = h
    st.tid = hak_thread_id()
    return NULL


cdef void* _stale_second(void* arg) noexcept nogil:
    cdef stale_t* st = <stale_t*>arg
    cdef uintptr_t me = hak_thread_id()
    cdef hak_heap_t* mine
    st.reused_id = me == st.tid
    if st.heap.tid == me:               # before this thread has a cache of its own
        st.bad = 1
    mine = hak_heap()                   # may reuse the dead thread's cache
    if st.heap.tid == me and st.heap != mine:
        st.bad = 1
    hak_heap_free(mine, hak_heap_malloc(mine, 64))
    return NULL


def stale_heap_rounds(int rounds=50):
    """Start a thread that takes its heap and exits, then a second one: a heap pointer
    kept from the dead thread must never match the second thread's id unless it is
    now that thread's own heap. Returns (rounds where the second thread got the dead
    one's thread id, rounds where the stale pointer would have been misused)."""
    cdef stale_t st
    cdef pthread_t t
    cdef int i, reused = 0, bad = 0
    with nogil:
        for i in range(rounds):
            memset(&st, 0, sizeof(st))
            if pthread_create(&t, NULL, _stale_first, &st) != 0:
                break
            pthread_join(t, NULL)
            if pthread_create(&t, NULL, _stale_second, &st) != 0:
                break
            pthread_join(t, NULL)
            reused += st.reused_id
            bad += st.bad
    return reused, bad
