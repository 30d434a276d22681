"""hakmem.bench.loops, the cimport side: the vtable, the Allocator class, the
shared C helpers and the ring loop that hakmem.bench.threads runs on each thread."""
from libc.stdint cimport uint64_t, uint32_t

cdef extern from *:
    """
    #include <time.h>
    #include <stdint.h>
    #include <sched.h>
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
    """
    double bench_now() nogil
    double bench_cpu_now() nogil
    uint64_t bench_load_acq(uint64_t* p) nogil
    void bench_store_rel(uint64_t* p, uint64_t v) nogil
    void bench_relax(unsigned spins) nogil
    void bench_touch(void* p, uint64_t v) nogil
    uint64_t bench_xorshift(uint64_t x) nogil

ctypedef void* (*bench_malloc_t)(size_t) noexcept nogil
ctypedef void (*bench_free_t)(void*) noexcept nogil

cdef struct bench_vt_t:
    bench_malloc_t malloc
    bench_free_t free

cdef enum:
    BENCH_MAX_WS = 4096          # most ring slots a workload may use
    MIXED_SEED = 0x9E3779B97F4A7C15


cdef class Allocator:
    cdef bench_vt_t vt
    cdef void* handle
    cdef readonly str name
    cdef readonly str kind
    cdef readonly bint needs_gil
    cdef readonly str path


cdef int bench_ring(bench_vt_t* vt, size_t size, uint32_t ws, uint64_t nops) noexcept nogil
