# cython: binding=False
"""hakmem.records.cpool — the C pool: K-record chunks from hak_malloc with a uint16
generation per slot, a free list threaded through free records, a futex lock, and the
nogil cimport API (hak_pool_alloc / free / deref / read / write / live).

Layout, handle format, invariants and locking: see cpool.pxd. hakmem.records.pool
builds RecordPool (the Python API) on top.
"""
from libc.stdint cimport int64_t, uint64_t, uint32_t, uint16_t

import numpy as np
from libc.string cimport memcpy, memset

from hakmem.front cimport hak_malloc, hak_free, hak_realloc, hak_usable_size

cdef void hak_pool_chunk_release(hak_pool_t* p, hak_pchunk_t* ch) noexcept nogil:
    """Give a chunk's two blocks back to hakmem (its slots must not be on the free list)."""
    p.nbytes -= hak_usable_size(ch.rec) + hak_usable_size(ch.gen)
    p.layout += 1
    hak_free(ch.rec)
    hak_free(ch.gen)
    ch.rec = NULL
    ch.gen = NULL
    p.npresent -= 1
    p.retired -= ch.retired
    ch.retired = 0
    ch.live = 0


cdef void hak_pool_rebuild_free(hak_pool_t* p) noexcept nogil:
    """Recompute the free list and all counts from the generations (slot order)."""
    cdef uint32_t K = 1u << p.kshift
    cdef uint32_t c, j
    cdef int64_t jj
    cdef hak_pchunk_t* ch
    cdef uint16_t g
    p.free_head = HAK_POOL_END
    p.nfree = 0
    p.live = 0
    p.retired = 0
    c = p.nchunks
    while c > 0:
        c -= 1
        ch = &p.chunks[c]
        if ch.state != HAK_PCHUNK_PRESENT:
            continue
        ch.live = 0
        ch.retired = 0
        jj = K
        while jj > 0:
            jj -= 1
            j = <uint32_t>jj
            g = ch.gen[j]
            if g == HAK_POOL_GEN_RETIRED:
                ch.retired += 1
            elif g & 1:
                ch.live += 1
            else:
                hak_st32(ch.rec + <size_t>j * p.stride, p.free_head)
                p.free_head = (c << p.kshift) | j
                p.nfree += 1
        p.live += ch.live
        p.retired += ch.retired


cdef int hak_pool_grow(hak_pool_t* p) noexcept nogil:
    """Add one chunk of free slots (repopulate a trimmed chunk, else append). 0 or -1."""
    cdef uint32_t K = 1u << p.kshift
    cdef uint32_t c = p.nchunks, j, newcap
    cdef uint64_t maxchunks = (<uint64_t>1 << 32) >> p.kshift
    cdef uint16_t g0 = 0
    cdef hak_pchunk_t* ch
    cdef hak_pchunk_t* tab
    cdef char* rec
    cdef uint16_t* gen
    cdef int64_t jj
    if p.ntrimmed:
        c = p.trim_hint                 # amortised O(1): the hint only moves forward
        while c < p.nchunks and p.chunks[c].state != HAK_PCHUNK_TRIMMED:
            c += 1
        p.trim_hint = c + 1
    if c == p.nchunks:
        if c >= maxchunks:
            return -1
        if c == p.chunks_cap:
            newcap = 16 if p.chunks_cap == 0 else p.chunks_cap * 2
            if newcap > maxchunks:
                newcap = <uint32_t>maxchunks
            if p.chunks != NULL:
                p.nbytes -= hak_usable_size(p.chunks)
            tab = <hak_pchunk_t*>hak_realloc(p.chunks, newcap * sizeof(hak_pchunk_t))
            if tab == NULL:
                if p.chunks != NULL:
                    p.nbytes += hak_usable_size(p.chunks)
                return -1
            p.chunks = tab
            p.chunks_cap = newcap
            p.nbytes += hak_usable_size(tab)
    rec = <char*>hak_malloc(<size_t>K * p.stride)
    gen = <uint16_t*>hak_malloc(K * sizeof(uint16_t))
    if rec == NULL or gen == NULL:
        hak_free(rec)
        hak_free(gen)
        return -1
    ch = &p.chunks[c]
    if c == p.nchunks:
        p.nchunks += 1
        ch.floor = 0
    else:
        p.ntrimmed -= 1
        g0 = (ch.floor | 1) + 1        # first even generation above every old one
    ch.rec = rec
    ch.gen = gen
    p.layout += 1
    ch.live = 0
    ch.retired = 0
    ch.state = HAK_PCHUNK_PRESENT
    p.npresent += 1
    p.nbytes += hak_usable_size(rec) + hak_usable_size(gen)
    jj = K
    while jj > 0:                       # lowest slot ends up first on the list
        jj -= 1
        j = <uint32_t>jj
        gen[j] = g0
        hak_st32(rec + <size_t>j * p.stride, p.free_head)
        p.free_head = (c << p.kshift) | j
    p.nfree += K
    return 0


cdef size_t hak_pool_trim_locked(hak_pool_t* p) noexcept nogil:
    """Release every chunk with no live record; returns bytes given back."""
    cdef uint32_t K = 1u << p.kshift
    cdef uint32_t c, j
    cdef uint16_t top
    cdef size_t before = p.nbytes
    cdef hak_pchunk_t* ch
    for c in range(p.nchunks):
        ch = &p.chunks[c]
        if ch.state != HAK_PCHUNK_PRESENT or ch.live != 0:
            continue
        top = 0
        for j in range(K):
            if ch.gen[j] > top:
                top = ch.gen[j]
        hak_pool_chunk_release(p, ch)
        ch.floor = top
        if (top | 1) + 2 <= HAK_POOL_GEN_LAST:  # room for one more generation above `top`
            ch.state = HAK_PCHUNK_TRIMMED
            p.ntrimmed += 1
            if c < p.trim_hint:
                p.trim_hint = c
        else:
            ch.state = HAK_PCHUNK_DEAD
    hak_pool_rebuild_free(p)
    return before - p.nbytes


cdef void hak_pool_release_all(hak_pool_t* p) noexcept nogil:
    """Free every block the pool holds (close / dealloc)."""
    cdef uint32_t c
    for c in range(p.nchunks):
        if p.chunks[c].state == HAK_PCHUNK_PRESENT:
            hak_free(p.chunks[c].rec)
            hak_free(p.chunks[c].gen)
    hak_free(p.chunks)
    p.chunks = NULL
    p.nchunks = p.chunks_cap = p.npresent = p.ntrimmed = p.trim_hint = 0
    p.free_head = HAK_POOL_END
    p.nfree = p.live = p.retired = p.nbytes = 0


# ---- the cimport API ------------------------------------------------------------
cdef void* hak_pool_alloc(hak_pool_t* p, uint64_t* handle_out) noexcept nogil:
    cdef char* r = NULL
    hak_plock(&p.lock)
    if not p.closed:
        r = hak_pool_alloc_locked(p, handle_out)
        if r != NULL:
            memset(r, 0, p.stride)
    hak_punlock(&p.lock)
    return r


cdef int hak_pool_free(hak_pool_t* p, uint64_t handle) noexcept nogil:
    cdef int r
    hak_plock(&p.lock)
    r = hak_pool_free_locked(p, handle)
    hak_punlock(&p.lock)
    if r == HAK_R_OK:
        return HAK_POOL_OK
    return HAK_POOL_ECLOSED if r == HAK_R_CLOSED else HAK_POOL_ESTALE


cdef void* hak_pool_deref(hak_pool_t* p, uint64_t handle) noexcept nogil:
    cdef hak_pchunk_t* ch
    cdef uint32_t j
    cdef char* out = NULL
    hak_plock(&p.lock)
    if hak_pool_decode(p, handle, &ch, &j) == HAK_R_OK:
        out = ch.rec + <size_t>j * p.stride
    hak_punlock(&p.lock)
    return out


cdef Py_ssize_t hak_pool_gather_locked(hak_pool_t* p, const int64_t* hs, Py_ssize_t n,
                                     uint32_t off, uint32_t size, char* dst,
                                     int* rout) noexcept nogil:
    """Under p.lock (held by the caller): decode handles hs[0:n] in order, copying field
    bytes [off, off + size) of each record to dst + i * size (dst NULL: only check).
    The index of the first handle that is not live (its _R_* code in *rout), or -1."""
    cdef Py_ssize_t i
    cdef hak_pchunk_t* ch
    cdef uint32_t j
    cdef int r
    for i in range(n):
        if i + HAK_POOL_PREFETCH_AHEAD < n:
            hak_pool_prefetch(p, <uint64_t>hs[i + HAK_POOL_PREFETCH_AHEAD], off)
        r = hak_pool_decode(p, <uint64_t>hs[i], &ch, &j)
        if r != HAK_R_OK:
            rout[0] = r
            return i
        if dst != NULL:
            memcpy(dst + i * size, ch.rec + <size_t>j * p.stride + off, size)
    return -1


cdef inline int _api_status(int r) noexcept nogil:
    """An _R_* code as the HAK_POOL_* code of the C API."""
    if r == HAK_R_OK:
        return HAK_POOL_OK
    return HAK_POOL_ECLOSED if r == HAK_R_CLOSED else HAK_POOL_ESTALE


cdef int hak_pool_read(hak_pool_t* p, uint64_t handle, void* out) noexcept nogil:
    return _api_status(hak_pool_copy_locked(p, handle, <char*>out, 0, p.itemsize, False, False))


cdef int hak_pool_write(hak_pool_t* p, uint64_t handle, const void* src) noexcept nogil:
    return _api_status(hak_pool_copy_locked(p, handle, <char*>src, 0, p.itemsize, True, False))


cdef uint64_t hak_pool_live(hak_pool_t* p) noexcept nogil:
    cdef uint64_t n
    hak_plock(&p.lock)
    n = p.live
    hak_punlock(&p.lock)
    return n


cdef void hak_pool_unmark(hak_pool_t* p, uint64_t h) noexcept nogil:
    """free_many rollback: the slot of h was marked (gen advanced by one): undo it."""
    cdef uint64_t s = (h >> HAK_POOL_GEN_BITS) & HAK_POOL_SLOT_MASK
    p.chunks[s >> p.kshift].gen[s & ((1u << p.kshift) - 1)] -= 1


cdef void hak_pool_release_marked(hak_pool_t* p, uint64_t h) noexcept nogil:
    """free_many pass 2: the slot of h is marked (gen even): release it."""
    cdef uint64_t s = (h >> HAK_POOL_GEN_BITS) & HAK_POOL_SLOT_MASK
    cdef hak_pchunk_t* ch = &p.chunks[s >> p.kshift]
    hak_pool_release_slot(p, ch, <uint32_t>(s & ((1u << p.kshift) - 1)), h)


# ---- pickling (RecordPool.__reduce__ / restore_pool) --------------------------------
cdef dict hak_pool_snapshot(hak_pool_t* p):
    """The pool's pickled state: chunk states and floors, the records and generations of
    present chunks (free, retired and never-written slots, and the bytes past itemsize,
    as zeros) and the tag. ValueError if the pool is closed."""
    cdef uint32_t c, nch, npres, K = 1u << p.kshift
    cdef size_t recbytes = <size_t>K * p.stride
    cdef uint64_t layout
    cdef unsigned char[::1] st_v
    cdef uint16_t[::1] fl_v
    cdef unsigned char[::1] rec_v
    cdef unsigned char[::1] gen_v
    cdef size_t ri
    cdef bint ok = False
    while not ok:                 # size the buffers unlocked, copy under the lock
        if p.closed:
            raise ValueError("operation on a closed RecordPool")
        hak_plock(&p.lock)
        layout = p.layout
        nch = p.nchunks
        npres = p.npresent
        hak_punlock(&p.lock)
        states = bytearray(nch)
        floors = np.zeros(nch, dtype=np.uint16)
        recs = np.zeros(npres * recbytes, dtype=np.uint8)
        gens = np.zeros(npres * K, dtype=np.uint16)
        if nch == 0:
            break
        st_v = states
        fl_v = floors
        rec_v = recs if npres else np.zeros(1, np.uint8)
        gen_v = gens.view(np.uint8) if npres else np.zeros(1, np.uint8)
        with nogil:
            hak_plock(&p.lock)
            ok = p.layout == layout and not p.closed
            if ok:
                ri = 0
                for c in range(nch):
                    st_v[c] = p.chunks[c].state
                    fl_v[c] = p.chunks[c].floor
                    if p.chunks[c].state == HAK_PCHUNK_PRESENT:
                        memcpy(&rec_v[ri * recbytes], p.chunks[c].rec, recbytes)
                        memcpy(&gen_v[ri * K * 2], p.chunks[c].gen, K * 2)
                        ri += 1
            hak_punlock(&p.lock)
    if npres:
        slots = recs.reshape(-1, p.stride)
        slots[(gens & 1) == 0] = 0                      # free slots
        slots[gens == HAK_POOL_GEN_RETIRED] = 0         # retired slots
        slots[:, p.itemsize:] = 0                       # the free-list link's bytes
    state = dict(version=1, tag=p.tag >> HAK_POOL_TAG_SHIFT, kshift=p.kshift,
                 stride=p.stride, states=bytes(states), floors=floors.tobytes(),
                 recs=recs.tobytes(), gens=gens.tobytes())
    return state


cdef int hak_pool_load(hak_pool_t* p, dict state, uint64_t tag) except -1:
    """Fill a new, empty pool from a state hak_pool_check_state accepted; its handles
    carry `tag` and those of the pickled pool stay valid (tag2)."""
    cdef uint32_t c, n, K = 1u << p.kshift
    cdef size_t recbytes = <size_t>K * p.stride
    cdef Py_ssize_t ri = 0
    cdef const unsigned char[::1] recs = state["recs"]
    cdef const unsigned char[::1] gens = state["gens"]
    cdef const unsigned char[::1] states = state["states"]
    cdef const uint16_t[::1] floors = np.frombuffer(state["floors"], dtype=np.uint16)
    n = <uint32_t>states.shape[0]
    p.tag2 = <uint64_t>state["tag"] << HAK_POOL_TAG_SHIFT
    p.tag = tag
    p.chunks = <hak_pchunk_t*>hak_malloc((n if n else 1) * sizeof(hak_pchunk_t))
    if p.chunks == NULL:
        raise MemoryError()
    memset(p.chunks, 0, (n if n else 1) * sizeof(hak_pchunk_t))
    p.chunks_cap = n if n else 1
    p.nbytes = hak_usable_size(p.chunks)
    p.nchunks = n
    for c in range(n):
        p.chunks[c].floor = floors[c]
        p.chunks[c].state = HAK_PCHUNK_DEAD
        if states[c] == HAK_PCHUNK_PRESENT:
            p.chunks[c].rec = <char*>hak_malloc(recbytes)
            p.chunks[c].gen = <uint16_t*>hak_malloc(K * 2)
            if p.chunks[c].rec == NULL or p.chunks[c].gen == NULL:
                hak_free(p.chunks[c].rec)
                hak_free(p.chunks[c].gen)
                p.chunks[c].rec = NULL
                p.chunks[c].gen = NULL
                raise MemoryError()
            memcpy(p.chunks[c].rec, &recs[ri * recbytes], recbytes)
            memcpy(p.chunks[c].gen, &gens[ri * K * 2], K * 2)
            ri += 1
            p.npresent += 1
            p.nbytes += hak_usable_size(p.chunks[c].rec) + hak_usable_size(p.chunks[c].gen)
            p.chunks[c].state = HAK_PCHUNK_PRESENT
        elif states[c] == HAK_PCHUNK_TRIMMED:
            p.chunks[c].state = HAK_PCHUNK_TRIMMED
            p.ntrimmed += 1
            if c < p.trim_hint:
                p.trim_hint = c
    hak_pool_rebuild_free(p)
    return 0


cdef int hak_pool_check_state(hak_pool_t* p, object state) except -1:
    """Every part of a pickled RecordPool state checked (types, lengths, counts, ranges,
    generations) before any memory is touched; ValueError / TypeError naming the part."""
    cdef uint32_t K = 1u << p.kshift
    if type(state) is not dict:
        raise TypeError(f"RecordPool pickle: state must be a dict, not {type(state).__name__}")
    want = {"version": int, "tag": int, "kshift": int, "stride": int, "states": bytes,
            "floors": bytes, "recs": bytes, "gens": bytes}
    for k, t in want.items():
        if type(state.get(k)) is not t:
            raise TypeError(f"RecordPool pickle: {k!r} must be {t.__name__}, "
                            f"not {type(state.get(k)).__name__}")
    if state["version"] != 1:
        raise ValueError(f"unknown RecordPool pickle version {state['version']!r}")
    if state["kshift"] != p.kshift or state["stride"] != p.stride:
        raise ValueError("RecordPool pickle was made with a different chunk layout")
    if not 0 < state["tag"] < (1 << HAK_POOL_TAG_BITS):
        raise ValueError(f"RecordPool pickle: tag {state['tag']!r} out of range")
    states = np.frombuffer(state["states"], dtype=np.uint8)
    n = states.shape[0]
    if n > ((<uint64_t>1 << 32) >> p.kshift):
        raise ValueError(f"RecordPool pickle: {n} chunks is more than a pool can hold")
    if not np.isin(states, [HAK_PCHUNK_PRESENT, HAK_PCHUNK_TRIMMED,
                            HAK_PCHUNK_DEAD]).all():
        raise ValueError("RecordPool pickle: unknown chunk state")
    npres = int((states == HAK_PCHUNK_PRESENT).sum())
    if len(state["floors"]) != 2 * n:
        raise ValueError("RecordPool pickle: floors do not match the chunk count")
    floors = np.frombuffer(state["floors"], dtype=np.uint16)
    if (floors > HAK_POOL_GEN_LAST).any():
        raise ValueError("RecordPool pickle: a chunk floor is out of range")
    if ((floors[states == HAK_PCHUNK_TRIMMED] | 1) + 2 > HAK_POOL_GEN_LAST).any():
        raise ValueError("RecordPool pickle: a trimmed chunk has no generations left")
    if len(state["recs"]) != npres * K * p.stride or len(state["gens"]) != npres * K * 2:
        raise ValueError("RecordPool pickle: record or generation bytes do not match "
                         "the present chunks")
    gens = np.frombuffer(state["gens"], dtype=np.uint16)
    if ((gens > HAK_POOL_GEN_LAST) & (gens != HAK_POOL_GEN_RETIRED)).any():
        raise ValueError("RecordPool pickle: a generation is out of range")
    return 0
