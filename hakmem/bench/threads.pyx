"""hakmem.bench.threads — the benchmark's multi-thread loops (nogil C, pthreads).

  threads-N      N new threads each run the ring loop of hakmem.bench.loops at once.
  xthread64      one producer thread mallocs 64-byte blocks and hands them through a
                 lock-free single-producer/single-consumer ring to a consumer that frees them.
  xmalloc-test-N the shape of xmalloc-test (Lever and Boreham): N threads only malloc
                 64-byte blocks, handing them in batches of 64 through one shared queue
                 (a mutex, taken once per batch) to N threads that only free.
  spin           N threads of pure arithmetic: what this machine gives N threads now.

Threads start behind a barrier; the wall time runs from the first start to the last end.
pymalloc (needs the GIL) is refused here.
"""
from libc.stdint cimport uint64_t, uint32_t
from libc.stdlib cimport free as libc_free, calloc as libc_calloc, abort

from hakmem.bench.loops cimport (Allocator, bench_vt_t, bench_ring, bench_now, bench_relax,
                                 bench_touch, bench_xorshift, bench_load_acq, bench_store_rel,
                                 BENCH_MAX_WS, MIXED_SEED)

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    ctypedef struct pthread_barrier_t:
        pass
    int pthread_create(pthread_t* t, const void* attr, void* (*fn)(void*) noexcept nogil, void* arg)
    int pthread_join(pthread_t t, void** ret)
    int pthread_barrier_init(pthread_barrier_t* b, const void* attr, unsigned count)
    int pthread_barrier_wait(pthread_barrier_t* b)
    int pthread_barrier_destroy(pthread_barrier_t* b)
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t* m, const void* attr)
    int pthread_mutex_lock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)
    int pthread_mutex_destroy(pthread_mutex_t* m)

cdef enum:
    BENCH_SPSC_CAP = 1024        # xthread ring capacity (a power of two)
    BENCH_MAX_THREADS = 256
    XM_BATCH = 64                # xmalloc: blocks per hand-off
    XM_QCAP = 64                 # xmalloc: full batches queued at most (bounds live memory)


cdef void _check_threads(uint32_t n) except *:
    if n == 0 or n > BENCH_MAX_THREADS:
        raise ValueError(f"threads must be 1..{BENCH_MAX_THREADS}, got {n}")


cdef void _check_no_gil(Allocator a) except *:
    if a.needs_gil:
        raise ValueError(f"{a.name} needs the GIL; it cannot run on several threads")


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
    w.rc = bench_ring(w.vt, w.size, w.ws, w.nops)
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
    _check_threads(nthreads)
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
    if ws == 0 or ws > BENCH_MAX_WS:
        raise ValueError(f"working set must be 1..{BENCH_MAX_WS}, got {ws}")
    _check_no_gil(a)
    _check_threads(nthreads)
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


cdef inline void _wait_at_least(uint64_t* p, uint64_t v) noexcept nogil:
    """Spin (then yield) until the other thread has published a value >= v at p."""
    cdef unsigned spins = 0
    while bench_load_acq(p) < v:
        bench_relax(spins)
        spins += 1


cdef void* _producer(void* arg) noexcept nogil:
    cdef spsc_t* q = <spsc_t*>arg
    cdef uint64_t i
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
        if i >= BENCH_SPSC_CAP:
            _wait_at_least(&q.tail, i + 1 - BENCH_SPSC_CAP)    # slot i mod CAP is free
        q.slot[i & (BENCH_SPSC_CAP - 1)] = p
        bench_store_rel(&q.head, i + 1)
        if q.rc != 0:
            break
    return NULL


cdef void* _consumer(void* arg) noexcept nogil:
    cdef spsc_t* q = <spsc_t*>arg
    cdef uint64_t i
    cdef void* p
    pthread_barrier_wait(q.barrier)
    for i in range(q.nops):
        _wait_at_least(&q.head, i + 1)                          # block i is published
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
    _check_no_gil(a)
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


# ---- xmalloc-test: N malloc-only threads, N free-only threads, batches --------
cdef struct xm_batch_t:
    uint32_t n
    void* blk[XM_BATCH]


cdef struct xm_shared_t:
    pthread_mutex_t lock             # guards everything below it
    xm_batch_t* full[XM_QCAP]        # ring of full batches: head (take) .. tail (put)
    uint64_t head
    uint64_t tail
    xm_batch_t** spare               # stack of empty batches
    uint32_t nspare
    uint32_t producers_left
    int rc
    bench_vt_t* vt                   # read-only from here on
    pthread_barrier_t* barrier
    size_t size
    uint64_t nops                    # blocks per malloc thread


cdef struct xm_worker_t:
    xm_shared_t* sh
    double t0
    double t1


cdef xm_batch_t* _xm_spare(xm_shared_t* sh) noexcept nogil:
    # never empty for a producer: QCAP queued + one per thread is how many exist
    cdef xm_batch_t* b
    pthread_mutex_lock(&sh.lock)
    sh.nspare -= 1
    b = sh.spare[sh.nspare]
    pthread_mutex_unlock(&sh.lock)
    b.n = 0
    return b


cdef void _xm_put(xm_shared_t* sh, xm_batch_t* b) noexcept nogil:
    cdef unsigned spins = 0
    while True:
        pthread_mutex_lock(&sh.lock)
        if sh.tail - sh.head < XM_QCAP:
            sh.full[sh.tail % XM_QCAP] = b
            sh.tail += 1
            pthread_mutex_unlock(&sh.lock)
            return
        pthread_mutex_unlock(&sh.lock)
        bench_relax(spins)
        spins += 1


cdef void* _xm_producer(void* arg) noexcept nogil:
    cdef xm_worker_t* w = <xm_worker_t*>arg
    cdef xm_shared_t* sh = w.sh
    cdef xm_batch_t* b = NULL
    cdef uint64_t i
    cdef void* p
    pthread_barrier_wait(sh.barrier)
    w.t0 = bench_now()
    for i in range(sh.nops):
        if b == NULL:
            b = _xm_spare(sh)
        p = sh.vt.malloc(sh.size)
        if p == NULL:
            pthread_mutex_lock(&sh.lock)
            sh.rc = -1
            pthread_mutex_unlock(&sh.lock)
            break
        bench_touch(p, i)
        b.blk[b.n] = p
        b.n += 1
        if b.n == XM_BATCH:
            _xm_put(sh, b)
            b = NULL
    if b != NULL:
        _xm_put(sh, b)           # a partial (or empty) last batch
    pthread_mutex_lock(&sh.lock)
    sh.producers_left -= 1
    pthread_mutex_unlock(&sh.lock)
    w.t1 = bench_now()
    return NULL


cdef void* _xm_consumer(void* arg) noexcept nogil:
    cdef xm_worker_t* w = <xm_worker_t*>arg
    cdef xm_shared_t* sh = w.sh
    cdef xm_batch_t* b
    cdef uint32_t k
    cdef unsigned spins = 0
    pthread_barrier_wait(sh.barrier)
    w.t0 = bench_now()
    while True:
        pthread_mutex_lock(&sh.lock)
        if sh.head != sh.tail:
            b = sh.full[sh.head % XM_QCAP]
            sh.head += 1
            pthread_mutex_unlock(&sh.lock)
        elif sh.producers_left == 0:
            pthread_mutex_unlock(&sh.lock)
            break
        else:
            pthread_mutex_unlock(&sh.lock)
            bench_relax(spins)
            spins += 1
            continue
        spins = 0
        for k in range(b.n):
            sh.vt.free(b.blk[k])
        pthread_mutex_lock(&sh.lock)
        sh.spare[sh.nspare] = b
        sh.nspare += 1
        pthread_mutex_unlock(&sh.lock)
    w.t1 = bench_now()
    return NULL


def run_xmalloc(Allocator a, uint32_t nthreads, size_t size, uint64_t nops):
    """xmalloc-test: ``nthreads`` malloc-only threads (``nops`` blocks each) hand their
    blocks in batches of 64 to ``nthreads`` free-only threads; return wall seconds.

    At most 64 full batches wait in the queue (a malloc thread waits when it is full),
    so at most 64 * (64 + 2 * nthreads) blocks are live. Blocks = nthreads * nops.
    """
    cdef xm_shared_t* sh
    cdef xm_worker_t* w
    cdef pthread_t* tids
    cdef pthread_barrier_t barrier
    cdef uint32_t i, nb, nt
    cdef double t0, t1
    cdef int ok = 1
    _check_no_gil(a)
    _check_threads(nthreads)
    nt = 2 * nthreads
    nb = XM_QCAP + nt
    sh = <xm_shared_t*>libc_calloc(1, sizeof(xm_shared_t))
    w = <xm_worker_t*>libc_calloc(nt, sizeof(xm_worker_t))
    tids = <pthread_t*>libc_calloc(nt, sizeof(pthread_t))
    if sh != NULL:
        sh.spare = <xm_batch_t**>libc_calloc(nb, sizeof(xm_batch_t*))
    if sh == NULL or w == NULL or tids == NULL or sh.spare == NULL:
        if sh != NULL:
            libc_free(sh.spare)
        libc_free(sh)
        libc_free(w)
        libc_free(tids)
        raise MemoryError()
    for i in range(nb):
        sh.spare[i] = <xm_batch_t*>libc_calloc(1, sizeof(xm_batch_t))
        if sh.spare[i] == NULL:
            ok = 0
    if ok:
        sh.nspare = nb
        sh.producers_left = nthreads
        sh.vt = &a.vt
        sh.barrier = &barrier
        sh.size = size
        sh.nops = nops
        pthread_mutex_init(&sh.lock, NULL)
        pthread_barrier_init(&barrier, NULL, nt)
        with nogil:
            for i in range(nt):
                w[i].sh = sh
                if pthread_create(&tids[i], NULL, _xm_producer if i < nthreads else _xm_consumer,
                                  &w[i]) != 0:
                    abort_run()
            for i in range(nt):
                pthread_join(tids[i], NULL)
        pthread_barrier_destroy(&barrier)
        pthread_mutex_destroy(&sh.lock)
        t0 = w[0].t0
        t1 = w[0].t1
        for i in range(nt):
            t0 = min(t0, w[i].t0)
            t1 = max(t1, w[i].t1)
        ok = sh.rc == 0
    for i in range(nb):
        libc_free(sh.spare[i])
    libc_free(sh.spare)
    libc_free(sh)
    libc_free(w)
    libc_free(tids)
    if not ok:
        raise MemoryError(f"{a.name}: xmalloc-test failed (out of memory)")
    return t1 - t0
