"""hakmem.pyalloc — hakmem as CPython's allocator for the "mem" and "obj" domains (PEP 445).

A hook is a PyMemAllocatorEx whose ctx points at one hook_t (one per domain). It sits
on top of the allocator that was installed before it (`old`: pymalloc, or the debug
hooks, or whatever was there) and routes:

  malloc/calloc(n)   n <= serve               -> hakmem (old allocator if hakmem is out of memory)
                     otherwise                -> old
  free(p)            p in a hakmem region     -> hak_free
                     otherwise (NULL too)     -> old
  realloc(p, n)      p NULL                   -> malloc(n)
                     p in a region, n <= serve -> hak_realloc (stays tiny)
                     p in a region, otherwise -> old.malloc(n), copy, hak_free   ("moved out")
                     p not ours               -> old.realloc  (its size is unknown to us,
                                                 so a shrinking big block stays in old)

serve is HAKMEM_HOOK_MAX (g_limit: 512 by default, at most 1024) while the hook is
installed, 0 in pass-through: the largest request hakmem serves through the hook. 512
is pymalloc's own limit, so the old allocator sees the same stream of large requests
as without hakmem; serving 513..1024 from hakmem too left
glibc's heap emptier, and it shrank and regrew its top on every phase of a program
(ast.parse: 16,000 page faults per five rounds instead of 8,800, +3% CPU time).

"Is p ours?" is the slab registry (two dependent loads, no lock): only tiny blocks live
in regions, and hakmem never hands this hook a large block, so region membership
decides alone. A block of the old allocator can never lie in a region: a region's
registry entry is cleared before it is unmapped.

Uninstall keeps the hook in the chain and turns it to pass-through (`serve = 0`):
objects allocated by hakmem while it was active outlive uninstall() and must still be
freed by hakmem. Restoring `old` would hand those pointers to pymalloc (a crash). A
pass-through hook costs one registry lookup per free. install() after uninstall()
flips the same hook back on.

Thread safety: CPython calls the mem and obj domains with the GIL held, which
serialises the hook's counters and install()/uninstall(); hakmem itself is thread-safe
(threads take turns on the GIL, blocks migrate between thread caches as remote frees).
The raw domain (called without the GIL) is never touched.
"""
from libc.stdint cimport uintptr_t, uint64_t, uint8_t
from libc.string cimport memcpy, memset

from hakmem.classes cimport HAK_TINY_MAX, HAK_DEBUG, hak_likely, hak_unlikely
from hakmem.slab cimport hak_is_tiny, hak_registry, hak_slab_purge_idle, HAK_IDLE_LARGE_BYTES
from hakmem.front cimport (hak_malloc, hak_calloc, hak_realloc, hak_free, hak_usable_size,
                          hak_heap_t, hak_heap, hak_heap_malloc, hak_heap_pop,
                          hak_free_if_owner, hak_realloc_stays, hak_thread_id)

cdef extern from "Python.h":
    ctypedef enum PyMemAllocatorDomain:
        PYMEM_DOMAIN_RAW
        PYMEM_DOMAIN_MEM
        PYMEM_DOMAIN_OBJ
    ctypedef struct PyMemAllocatorEx:
        void* ctx
        void* (*malloc)(void* ctx, size_t size) noexcept nogil
        void* (*calloc)(void* ctx, size_t nelem, size_t elsize) noexcept nogil
        void* (*realloc)(void* ctx, void* ptr, size_t new_size) noexcept nogil
        void (*free)(void* ctx, void* ptr) noexcept nogil
    void PyMem_GetAllocator(PyMemAllocatorDomain domain, PyMemAllocatorEx* allocator)
    void PyMem_SetAllocator(PyMemAllocatorDomain domain, PyMemAllocatorEx* allocator)

cdef extern from *:
    """
    /* n * size without overflow, and whether it is at most limit */
    static inline int hak_product_within(size_t n, size_t size, size_t limit, size_t* out) {
        return !__builtin_mul_overflow(n, size, out) && *out <= limit;
    }
    """
    bint hak_product_within(size_t n, size_t size, size_t limit, size_t* out) nogil


cdef struct hook_t:
    PyMemAllocatorEx old    # the allocator below this hook (valid once hooked)
    int hooked              # our functions were set for this domain (never undone)
    size_t serve            # the largest request hakmem serves: g_limit while installed,
                            # 0 in pass-through. The fast path's one test is
                            # n - 1 < serve (n == 0 wraps around to the slow path)
    uint64_t tiny_allocs    # malloc/calloc/realloc(NULL) served by hakmem
    uint64_t old_allocs     # ... served by the old allocator
    uint64_t tiny_frees     # frees of hakmem blocks
    uint64_t old_frees      # frees handed to the old allocator (NULL included)
    uint64_t tiny_reallocs  # reallocs that stayed in hakmem
    uint64_t old_reallocs   # reallocs handed to the old allocator
    uint64_t moved_out      # hakmem blocks moved to the old allocator by a realloc
    uint64_t oom_fallbacks  # tiny requests hakmem could not serve (old allocator used)


cdef const uint8_t* g_reg = hak_registry()   # the registry's address never moves
cdef size_t g_limit = 512                 # HAKMEM_HOOK_MAX (set_limit); also the
                                          # line between small and large requests
cdef hook_t g_hooks[2]                    # [0] = mem, [1] = obj
memset(g_hooks, 0, sizeof(g_hooks))
# The heap of the thread that last called the hook (the GIL serialises the hook). A
# heap is hakmem.front's thread cache, which is never freed, only reused by a later
# thread, and whose tid matches no live thread but its owner's: so one compare of
# heap.tid with the caller's id tells whether the cached pointer is the caller's.
# It starts at a heap whose tid (0) is no thread's.
cdef hak_heap_t g_no_heap
memset(&g_no_heap, 0, sizeof(g_no_heap))
cdef hak_heap_t* g_heap = &g_no_heap
# The idle purge (_old_done) counts how far the old allocator's large blocks have
# grown since its last check. Growth, not turnover: a large block freed or grown soon
# after it was handed out (a regex's backtracking stack, a list being appended to) is
# taken back off the count when it goes. A direct-mapped table remembers the most
# recent large blocks and their sizes; one that falls out of it stays counted.
cdef size_t g_large_bytes = 0
cdef enum:
    RECENT = 64                        # a power of two
cdef void* g_recent_p[RECENT]
cdef size_t g_recent_n[RECENT]
memset(g_recent_p, 0, sizeof(g_recent_p))
# _hook_malloc's slow path, called through a pointer so the compiler cannot inline it
# into the fast path (which then needs no stack frame); set below its definition.
ctypedef void* (*malloc_slow_t)(hook_t* h, size_t n) noexcept nogil
cdef malloc_slow_t g_malloc_slow

_DOMAINS = {"mem": (0, PYMEM_DOMAIN_MEM), "obj": (1, PYMEM_DOMAIN_OBJ)}


# ---- the hook functions (called by CPython with the GIL held) -------------------
cdef inline bint _ours(void* p) noexcept nogil:
    return hak_is_tiny(g_reg, <uintptr_t>p)


cdef inline size_t _recent_slot(void* p) noexcept nogil:
    return ((<uintptr_t>p >> 4) ^ (<uintptr_t>p >> 12)) & (RECENT - 1)


cdef inline void* _old_done(void* q, size_t n) noexcept nogil:
    """q is the old allocator's answer to a request of n bytes; returns q. A large one
    (n > g_limit) is counted and remembered. Every few MiB of growth, hakmem gives back
    the empty slabs its small-block work has stopped needing (hak_slab_purge_idle): the
    memory pymalloc gives back by freeing empty arenas."""
    global g_large_bytes
    cdef size_t i
    if n > g_limit and q != NULL:
        i = _recent_slot(q)
        g_recent_p[i] = q
        g_recent_n[i] = n
        g_large_bytes += n
        if hak_unlikely(g_large_bytes >= HAK_IDLE_LARGE_BYTES):
            g_large_bytes = 0
            hak_slab_purge_idle()
    return q


cdef inline void _large_gone(void* p) noexcept nogil:
    """p, a block of the old allocator, is being freed or reallocated."""
    global g_large_bytes
    cdef size_t i = _recent_slot(p)
    if g_recent_p[i] == p:
        g_recent_p[i] = NULL
        g_large_bytes = g_large_bytes - g_recent_n[i] if g_large_bytes > g_recent_n[i] else 0


cdef hak_heap_t* _heap_refresh() noexcept nogil:
    """The caller's heap, looked up (first call on this thread since another thread
    used the hook); NULL only when hakmem is out of memory."""
    global g_heap
    cdef hak_heap_t* hp = hak_heap()
    if hp != NULL:
        g_heap = hp
    return hp


cdef inline hak_heap_t* _heap() noexcept nogil:
    cdef hak_heap_t* hp = g_heap
    if hak_likely(hp.tid == hak_thread_id()):
        return hp
    return _heap_refresh()


cdef void* _hook_malloc(void* ctx, size_t n) noexcept nogil:
    """The fast path: a pop from the caller's magazine or free list. It calls nothing
    but, in tail position, the slow path, so it compiles to a leaf with no frame."""
    cdef hook_t* h = <hook_t*>ctx
    cdef hak_heap_t* hp = g_heap
    cdef void* p
    if hak_likely(n - 1 < h.serve and hp.tid == hak_thread_id()):
        p = hak_heap_pop(hp, n)
        if hak_likely(p != NULL):
            h.tiny_allocs += 1
            return p
    return g_malloc_slow(h, n)


cdef void* _hook_malloc_slow(hook_t* h, size_t n) noexcept nogil:
    """Everything _hook_malloc's fast path leaves: another thread's first call since
    the last switch, a refill, n == 0, large requests, pass-through."""
    cdef hak_heap_t* hp
    cdef void* p
    if h.serve and n <= h.serve:
        hp = _heap()
        # n == 0 gets a unique 16-byte block; the inline pop compiles in here
        p = hak_heap_malloc(hp, n) if hak_likely(hp != NULL) else NULL
        if hak_likely(p != NULL):
            h.tiny_allocs += 1
            return p
        h.oom_fallbacks += 1
    h.old_allocs += 1
    return _old_done(h.old.malloc(h.old.ctx, n), n)


g_malloc_slow = _hook_malloc_slow


cdef void* _hook_calloc(void* ctx, size_t nelem, size_t elsize) noexcept nogil:
    cdef hook_t* h = <hook_t*>ctx
    cdef size_t total
    cdef void* p
    cdef bint small = hak_product_within(nelem, elsize, g_limit, &total)
    if h.serve and small:
        p = hak_calloc(total, 1)
        if p != NULL:
            h.tiny_allocs += 1
            return p
        h.oom_fallbacks += 1
    h.old_allocs += 1
    # (total wrapped if the product overflowed: old.calloc refuses that, q is NULL)
    return _old_done(h.old.calloc(h.old.ctx, nelem, elsize), total)


cdef void* _move_out(hook_t* h, void* p, size_t n) noexcept nogil:
    """Realloc of a hakmem block into the old allocator: copy, then free ours."""
    cdef size_t have = hak_usable_size(p)
    cdef void* q = _old_done(h.old.malloc(h.old.ctx, n), n)
    if q == NULL:
        return NULL                # p untouched, as realloc promises
    memcpy(q, p, n if n < have else have)
    _free_ours(p)
    h.moved_out += 1
    return q


cdef inline void _free_ours(void* p) noexcept nogil:
    """Free a block known to be hakmem's, as the hook frees. The owner's free needs no
    heap lookup: the block's slab names its owner thread and class state, and past a
    full magazine the block goes straight back to its slab (see hak_owner_free). Other
    threads' blocks, and every free in a debug build (whose checks live there), go
    through hak_free, a call in tail position."""
    if HAK_DEBUG or not hak_free_if_owner(p, hak_thread_id(), False):
        hak_free(p)


cdef void* _realloc_tiny(void* p, size_t n) noexcept nogil:
    """hak_realloc for a hakmem block staying tiny, through the caller's heap: the old
    block is freed as the hook frees (straight back to its slab, see hak_owner_free)."""
    cdef hak_heap_t* hp
    cdef size_t have
    cdef void* q
    if hak_realloc_stays(p, n):
        return p
    hp = _heap()
    if hp == NULL:
        return hak_realloc(p, n)
    q = hak_heap_malloc(hp, n)
    if q == NULL:
        return NULL
    have = hak_usable_size(p)
    memcpy(q, p, n if n < have else have)
    _free_ours(p)
    return q


cdef void* _hook_realloc(void* ctx, void* p, size_t n) noexcept nogil:
    cdef hook_t* h = <hook_t*>ctx
    cdef void* q
    if p == NULL:
        return _hook_malloc(ctx, n)
    if _ours(p):
        if h.serve and n <= h.serve:
            q = _realloc_tiny(p, n)   # stays tiny: n == 0 keeps or gets a 16-byte block
            if q != NULL:
                h.tiny_reallocs += 1
                return q
            h.oom_fallbacks += 1
        return _move_out(h, p, n)
    h.old_reallocs += 1
    _large_gone(p)
    return _old_done(h.old.realloc(h.old.ctx, p, n), n)


cdef void _hook_free(void* ctx, void* p) noexcept nogil:
    cdef hook_t* h = <hook_t*>ctx
    if hak_likely(_ours(p)):
        h.tiny_frees += 1
        _free_ours(p)
        return
    h.old_frees += 1
    _large_gone(p)
    h.old.free(h.old.ctx, p)


# ---- Python surface ----------------------------------------------------------------
def set_limit(size_t limit):
    """The largest request the hook serves from hakmem (``HAKMEM_HOOK_MAX``; 1..1024);
    ``hakmem.configure(hook_max=...)``. Takes effect at once for installed hooks."""
    global g_limit
    if not 1 <= limit <= HAK_TINY_MAX:
        raise ValueError(f"set_limit(): {limit} is not in 1..{HAK_TINY_MAX}")
    g_limit = limit
    for i in range(2):
        if g_hooks[i].serve:
            g_hooks[i].serve = limit

def parse_domains(domains, where):
    """Domains as a tuple from "obj,mem" or an iterable; ``where`` names the caller in
    the errors (ValueError for an unknown or empty domain, TypeError for a bad type)."""
    if isinstance(domains, str):
        domains = [d for d in domains.replace(",", " ").split()]
    try:
        out = tuple(dict.fromkeys(domains))
    except TypeError:
        raise TypeError(f"{where}: domains must be a string or an iterable of strings, "
                        f"not {type(domains).__name__}") from None
    if not out:
        raise ValueError(f"{where}: no domain given; choose from 'obj', 'mem'")
    for d in out:
        if d not in _DOMAINS:
            if d == "raw":
                raise ValueError(f"{where}: the 'raw' domain is called without the GIL "
                                 "and is never replaced; choose from 'obj', 'mem'")
            raise ValueError(f"{where}: unknown domain {d!r}; choose from 'obj', 'mem'")
    return out


def _tracemalloc_tracing():
    import sys
    tm = sys.modules.get("tracemalloc")
    return tm is not None and tm.is_tracing()


def install(domains=("obj", "mem")):
    """Serve CPython's small allocations (<= 1024 bytes) of ``domains`` from hakmem.

    ``domains`` is a subset of ``("obj", "mem")`` (or a string like ``"obj,mem"``).
    Larger requests, and blocks allocated before this call, stay with the allocator
    that was installed before (pymalloc). RuntimeError if a requested domain is already
    installed (nothing changed then), or if tracemalloc is tracing: its ``stop()``
    would restore the allocator it saved and drop hakmem's hook while hakmem blocks
    are live (start tracemalloc after install() instead). Returns the domains that
    are now installed.
    """
    cdef hook_t* h
    cdef PyMemAllocatorEx ours
    todo = parse_domains(domains, "install()")
    busy = [d for d in todo if g_hooks[_DOMAINS[d][0]].serve]
    if busy:
        raise RuntimeError(f"install(): hakmem is already installed for domain(s) "
                           f"{', '.join(busy)}; call uninstall() first")
    if _tracemalloc_tracing() and any(not g_hooks[_DOMAINS[d][0]].hooked for d in todo):
        raise RuntimeError("install(): tracemalloc is tracing; tracemalloc.stop() would "
                           "remove hakmem's hook while hakmem blocks are live. Start "
                           "tracemalloc after install(), or stop it first")
    for d in todo:
        i, dom = _DOMAINS[d]
        h = &g_hooks[i]
        if not h.hooked:
            PyMem_GetAllocator(dom, &h.old)
            ours.ctx = h
            ours.malloc = _hook_malloc
            ours.calloc = _hook_calloc
            ours.realloc = _hook_realloc
            ours.free = _hook_free
            h.serve = g_limit
            h.hooked = 1
            PyMem_SetAllocator(dom, &ours)
        else:
            h.serve = g_limit  # the pass-through hook is still in the chain: switch it on
    return installed()


def uninstall(domains=None):
    """Stop serving new allocations of ``domains`` (default: all installed) from hakmem.

    The hook stays in CPython's allocator chain in pass-through mode, so blocks that
    hakmem handed out while installed are still freed (and reallocated) correctly;
    new requests go to the previous allocator. RuntimeError if hakmem is not installed
    for a requested domain (nothing changed then). Returns the domains still installed.
    """
    if domains is None:
        todo = installed()
        if not todo:
            raise RuntimeError("uninstall(): hakmem is not installed")
    else:
        todo = parse_domains(domains, "uninstall()")
        idle = [d for d in todo if not g_hooks[_DOMAINS[d][0]].serve]
        if idle:
            raise RuntimeError(f"uninstall(): hakmem is not installed for domain(s) "
                               f"{', '.join(idle)}")
    for d in todo:
        g_hooks[_DOMAINS[d][0]].serve = 0
    return installed()


def installed():
    """The domains whose small allocations hakmem serves now, e.g. ``("obj", "mem")``."""
    return tuple(d for d in ("obj", "mem") if g_hooks[_DOMAINS[d][0]].serve)


def hook_stats():
    """Per-domain routing counters of the hook: ``{"obj": {...}, "mem": {...}}``.

    Each dict has ``hooked`` (the hook is in CPython's chain), ``active`` (serving
    from hakmem), and counts of allocations, frees and reallocs that went to hakmem
    (``tiny_*``) or to the previous allocator (``old_*``), ``moved_out`` (hakmem
    blocks a realloc moved to the previous allocator) and ``oom_fallbacks``.
    """
    cdef hook_t* h
    out = {}
    for d in ("obj", "mem"):
        h = &g_hooks[_DOMAINS[d][0]]
        out[d] = dict(hooked=bool(h.hooked), active=bool(h.serve),
                      tiny_allocs=h.tiny_allocs, old_allocs=h.old_allocs,
                      tiny_frees=h.tiny_frees, old_frees=h.old_frees,
                      tiny_reallocs=h.tiny_reallocs, old_reallocs=h.old_reallocs,
                      moved_out=h.moved_out, oom_fallbacks=h.oom_fallbacks)
    return out


def format_hook_stats(st=None):
    """The hook counters as a short text table (printed by ``run --stats``)."""
    st = hook_stats() if st is None else st
    lines = ["hakmem PEP 445 hook",
             f"{'domain':>6} {'state':>12} {'hakmem allocs':>14} {'old allocs':>11} "
             f"{'hakmem frees':>13} {'old frees':>10} {'moved out':>10}"]
    for d, s in st.items():
        state = "active" if s["active"] else ("pass-through" if s["hooked"] else "-")
        allocs = s["tiny_allocs"] + s["old_allocs"]
        share = f" ({100 * s['tiny_allocs'] / allocs:.1f}%)" if allocs else ""
        lines.append(f"{d:>6} {state:>12} {s['tiny_allocs']:>14} {s['old_allocs']:>11} "
                     f"{s['tiny_frees']:>13} {s['old_frees']:>10} {s['moved_out']:>10}"
                     + share)
    return "\n".join(lines)

