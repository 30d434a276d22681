# hakmem.remote — lock-free cross-thread free lists (the "_mt" paths), and the one
# declaration of the pthread mutex that the slow paths (slab pool, large set, cache
# list) use.
#
# A block freed by a thread that does not own its slab is pushed onto the slab's
# atomic remote list (a Treiber stack: push-only from any thread, drained whole by
# the owner with one exchange, so there is no ABA). Thread exit, thread adoption and
# fork handling live in hakmem.front / hakmem.slab; this file holds the primitives.
from libc.stdint cimport uint64_t

cdef extern from *:
    """
    #ifndef HAK_ATOMICS_H
    #define HAK_ATOMICS_H
    #define hak_atomic_load_ptr(p) __atomic_load_n((void**)(p), __ATOMIC_ACQUIRE)
    #define hak_atomic_xchg_ptr(p, v) __atomic_exchange_n((void**)(p), (void*)(v), __ATOMIC_ACQ_REL)
    #define hak_atomic_cas_ptr(p, expp, v) \
        __atomic_compare_exchange_n((void**)(p), (void**)(expp), (void*)(v), 1, \
                                    __ATOMIC_RELEASE, __ATOMIC_RELAXED)
    #define hak_atomic_add_u64(p, v) ((void)__atomic_fetch_add((p), (v), __ATOMIC_RELAXED))
    #define hak_atomic_load_u64(p) __atomic_load_n((p), __ATOMIC_RELAXED)
    #define hak_atomic_store_u64(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
    #if defined(__x86_64__) || defined(__i386__)
    #define hak_cpu_relax() __builtin_ia32_pause()
    #else
    #define hak_cpu_relax() ((void)0)
    #endif
    #endif
    """
    void* hak_atomic_load_ptr(void* p) nogil
    void* hak_atomic_xchg_ptr(void* p, void* v) nogil
    bint hak_atomic_cas_ptr(void* p, void* expp, void* v) nogil
    void hak_atomic_add_u64(uint64_t* p, uint64_t v) nogil
    uint64_t hak_atomic_load_u64(uint64_t* p) nogil
    void hak_atomic_store_u64(uint64_t* p, uint64_t v) nogil
    void hak_cpu_relax() nogil


cdef inline void hak_remote_push(void** head, void* p) noexcept nogil:
    """Push block p onto an atomic list (any thread)."""
    cdef void* old = hak_atomic_load_ptr(head)
    while True:
        (<void**>p)[0] = old
        if hak_atomic_cas_ptr(head, &old, p):
            return


cdef inline void* hak_remote_take_all(void** head) noexcept nogil:
    """Detach the whole list (owner, or anyone under the slab lock for unowned slabs)."""
    if hak_atomic_load_ptr(head) == NULL:
        return NULL
    return hak_atomic_xchg_ptr(head, NULL)


# A futex lock (Drepper's "mutex2": 0 free, 1 held, 2 held with waiters) for short
# critical sections entered from nogil code: one CAS to take, one exchange to release,
# no syscall unless contended (the record pool's lock).
cdef extern from *:
    """
    #ifndef HAK_PLOCK_H
    #define HAK_PLOCK_H
    #include <linux/futex.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    #include <string.h>
    static void hak_plock_slow(int* l) {
        int c, z;
        for (int i = 0; i < 100; i++) {       /* short spin: critical sections are short */
            if (__atomic_load_n(l, __ATOMIC_RELAXED) == 0) {
                z = 0;
                if (__atomic_compare_exchange_n(l, &z, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                    return;
            }
            hak_cpu_relax();
        }
        c = __atomic_exchange_n(l, 2, __ATOMIC_ACQUIRE);
        while (c != 0) {
            syscall(SYS_futex, l, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
            c = __atomic_exchange_n(l, 2, __ATOMIC_ACQUIRE);
        }
    }
    static inline void hak_plock(int* l) {
        int z = 0;
        if (__builtin_expect(__atomic_compare_exchange_n(l, &z, 1, 0, __ATOMIC_ACQUIRE,
                                                         __ATOMIC_RELAXED), 1))
            return;
        hak_plock_slow(l);
    }
    static inline int hak_ptrylock(int* l) {
        int z = 0;
        return __atomic_compare_exchange_n(l, &z, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
    }
    static inline void hak_punlock(int* l) {
        if (__atomic_exchange_n(l, 0, __ATOMIC_RELEASE) == 2)
            syscall(SYS_futex, l, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
    #endif
    """
    void hak_plock(int* l) nogil
    int hak_ptrylock(int* l) nogil
    void hak_punlock(int* l) nogil


# Mutexes guard only slow paths (slab pool, large-block set, the list of caches).
cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t*, void*)
    int pthread_mutex_lock(pthread_mutex_t*)
    int pthread_mutex_unlock(pthread_mutex_t*)
