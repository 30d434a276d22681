"""hakmem.arena.Pool / Address: cymem's behaviours, errors that change nothing, a
downstream Cython user (C and C++) and the nogil variants from several threads."""
import ctypes
import gc
import random
import threading
import weakref

import pytest

import hakmem
from hakmem.arena import Address, NotInPoolError, Pool

HDR = 16            # header bytes below every address (see arena.pxd)


def block_start(addr, nbytes):
    """The hakmem block behind a pool address (white box: the two header forms)."""
    return addr - HDR if nbytes + HDR <= 1024 else addr - 2 * HDR


@pytest.fixture(params=[False, True], ids=["owned", "shared"])
def pool(request):
    return Pool(shared=request.param)


def state(pool):
    return len(pool), pool.size, pool.addresses


# ---- cymem's own tests (cymem/tests/test_import.py), ported ----------------------------
def test_pool():
    mem = Pool()
    assert mem.size == 0


def test_address():
    address = Address(1, 2)
    assert address.addr % 16 == 0
    assert ctypes.string_at(address.addr, 2) == b"\0\0"


# ---- cymem's documented semantics ------------------------------------------------------
def test_alloc_zeroed_aligned_counted(pool):
    addrs = {}
    for n, size in [(10, 4), (1, 0), (0, 8), (3, 333), (1, 1008), (1, 1009), (7, 1000)]:
        a = pool.alloc(n, size)
        assert a % 16 == 0
        assert ctypes.string_at(a, n * size) == bytes(n * size)
        ctypes.memset(a, 0xAB, n * size)
        addrs[a] = n * size
    assert len(set(addrs)) == len(addrs) == len(pool)
    assert pool.size == sum(addrs.values())
    assert pool.addresses == addrs
    assert all(a in pool for a in addrs)


def test_free_and_reuse(pool):
    a = pool.alloc(4, 8)
    b = pool.alloc(100, 30)         # the large form
    pool.free(a)
    assert a not in pool and len(pool) == 1 and pool.size == 3000
    pool.free(b)
    assert state(pool) == (0, 0, {})
    c = pool.alloc(4, 8)
    assert ctypes.string_at(c, 32) == bytes(32)   # zeroed even if the block is reused


def test_realloc_grows_keeps_contents_zeroes_tail(pool):
    a = pool.alloc(1, 20)
    ctypes.memmove(a, b"x" * 20, 20)
    b = pool.realloc(a, 30)          # fits the block's slack: may stay in place
    assert ctypes.string_at(b, 30) == b"x" * 20 + bytes(10)
    assert pool.size == 30 and len(pool) == 1
    c = pool.realloc(b, 500)
    assert ctypes.string_at(c, 500) == b"x" * 20 + bytes(480)
    d = pool.realloc(c, 5000)        # tiny -> large form
    assert ctypes.string_at(d, 5000) == b"x" * 20 + bytes(4980)
    e = pool.realloc(d, 9000)        # large -> large
    assert ctypes.string_at(e, 9000) == b"x" * 20 + bytes(8980)
    assert state(pool) == (1, 9000, {e: 9000})


def test_realloc_must_grow_as_in_cymem(pool):
    a = pool.alloc(1, 64)
    ctypes.memset(a, 7, 64)
    before = state(pool)
    for n in (64, 10, 0):
        with pytest.raises(ValueError, match="must be larger"):
            pool.realloc(a, n)
    assert state(pool) == before
    assert ctypes.string_at(a, 64) == b"\x07" * 64


def test_dealloc_frees_every_block():
    pool = Pool()
    sizes = [0, 8, 100, 1008, 1009, 4000, 70000]
    addrs = [(pool.alloc(1, n), n) for n in sizes]
    starts = [block_start(a, n) for a, n in addrs]
    assert all(hakmem.is_live(s) for s in starts)
    del pool
    gc.collect()
    assert not any(hakmem.is_live(s) for s in starts)


def test_own_pyref_lives_with_the_pool():
    class Thing:
        pass
    pool = Pool()
    t = Thing()
    ref = weakref.ref(t)
    pool.own_pyref(t)
    assert pool.refs == [t]
    del t
    gc.collect()
    assert ref() is not None
    del pool
    gc.collect()
    assert ref() is None


def test_python_names_and_repr():
    assert Pool.alloc.__name__ == "alloc" and "zeroed" in Pool.alloc.__doc__
    assert {"alloc", "free", "realloc"} <= set(dir(Pool))
    p = Pool(shared=True)
    assert p.shared and not Pool().shared
    p.alloc(2, 8)
    assert repr(p) == "<hakmem.arena.Pool: 1 blocks, 16 bytes, shared>"


# ---- errors: clear, and nothing changed ------------------------------------------------
def test_double_free(pool):
    a = pool.alloc(1, 24)
    keep = pool.alloc(1, 24)
    pool.free(a)
    before = state(pool)
    with pytest.raises(NotInPoolError, match="already freed") as ei:
        pool.free(a)
    assert isinstance(ei.value, KeyError) and isinstance(ei.value, ValueError)
    assert f"{a:#x}" in str(ei.value)
    assert state(pool) == before and keep in pool


def test_double_free_large(pool):
    a = pool.alloc(1, 3000)
    pool.free(a)
    with pytest.raises(NotInPoolError):
        pool.free(a)
    assert state(pool) == (0, 0, {})


def test_foreign_addresses(pool):
    mine = pool.alloc(1, 40)
    big = pool.alloc(1, 2000)
    other = Pool()
    theirs = other.alloc(1, 40)
    theirs_big = other.alloc(1, 2000)
    raw = hakmem.malloc(64)
    raw_big = hakmem.malloc(4096)
    ctypes.memmove(raw, ctypes.string_at(mine - HDR, HDR), HDR)   # a copied header: still
    ctypes.memmove(raw_big + HDR, ctypes.string_at(big - HDR, HDR), HDR)  # not ours
    before, before_other = state(pool), state(other)
    region = mine & ~(2**22 - 1)      # its 4 MiB region; the first 64 KiB are its header
    bad = [theirs, theirs_big, raw + HDR, raw_big + 2 * HDR, raw, raw_big, mine + 16,
           mine + 1, big + 16, 0, 16, 12345, 12352, 2**48 + 16, 2**64 - 16,
           region + 32, region + 4096, region + 65536 - 16, region + 2**22 - 16]
    for addr in bad:
        with pytest.raises(NotInPoolError):
            pool.free(addr)
        with pytest.raises(NotInPoolError):
            pool.realloc(addr, 10**4)
        assert addr not in pool
    for addr in (-1, 2**64, 2**100):
        with pytest.raises(NotInPoolError):
            pool.free(addr)
    with pytest.raises(TypeError):
        pool.free(1.5)
    assert state(pool) == before and state(other) == before_other
    assert hakmem.is_live(raw) and hakmem.is_live(raw_big)
    hakmem.free(raw)
    hakmem.free(raw_big)


def test_overflow_and_bad_sizes(pool):
    a = pool.alloc(1, 8)
    before = state(pool)
    for n, size in [(2**63, 2), (2**62, 5), (2**32, 2**32), (2**64 - 1, 2), (1, 2**64 - 8),
                    (2**64, 1), (1, 2**70)]:
        with pytest.raises(MemoryError):
            pool.alloc(n, size)
    with pytest.raises(MemoryError):
        pool.alloc(1, 2**60)        # no overflow, but no such memory either
    with pytest.raises(MemoryError):
        pool.realloc(a, 2**60)
    with pytest.raises(MemoryError):
        pool.realloc(a, 2**64 + 5)
    for n, size in [(-1, 8), (8, -1)]:
        with pytest.raises(ValueError, match=">= 0"):
            pool.alloc(n, size)
    with pytest.raises(TypeError):
        pool.alloc(1.0, 8)
    with pytest.raises(MemoryError):
        Address(2**63, 4)
    assert state(pool) == before


def test_user_code_in_conversions_runs_first(pool):
    victim = pool.alloc(1, 32)

    class Sneaky:
        def __index__(self):
            pool.free(victim)
            return 48
    a = pool.alloc(1, Sneaky())
    assert victim not in pool and state(pool) == (1, 48, {a: 48})


def test_model(pool):
    """Random alloc/free/realloc against a dict; contents stamped and checked."""
    rng = random.Random(1234)
    model = {}
    for step in range(3000):
        op = rng.random()
        if op < 0.5 or not model:
            n = rng.choice([0, 1, 7, 16, 33, 200, 1008, 1009, 3000])
            a = pool.alloc(1, n)
            assert a not in model
            ctypes.memset(a, step & 0xFF, n)
            model[a] = (n, step & 0xFF)
        elif op < 0.8:
            a = rng.choice(list(model))
            n, byte = model.pop(a)
            assert ctypes.string_at(a, n) == bytes([byte]) * n
            pool.free(a)
        else:
            a = rng.choice(list(model))
            n, byte = model.pop(a)
            m = n + rng.choice([1, 15, 100, 2000])
            b = pool.realloc(a, m)
            assert ctypes.string_at(b, m) == bytes([byte]) * n + bytes(m - n)
            ctypes.memset(b, byte, m)
            model[b] = (m, byte)
    assert pool.addresses == {a: n for a, (n, _) in model.items()}
    assert len(pool) == len(model) and pool.size == sum(n for n, _ in model.values())


# ---- a downstream extension (C and C++) ------------------------------------------------
def test_downstream_core_pxds(arenadown):
    assert arenadown.core_pxds()


def test_downstream_preshed_map(arenadown):
    m = arenadown.PreshMap()
    model = {}
    rng = random.Random(7)
    for _ in range(20000):
        k = rng.randrange(2, 3000)
        if rng.random() < 0.7:
            v = rng.getrandbits(64)
            m[k] = v
            model[k] = v
        elif k in model:
            del m[k]
            del model[k]
        else:
            with pytest.raises(KeyError):
                m[k]
        assert len(m) == len(model)
    assert sorted(m.items()) == sorted(model.items())
    assert all(m[k] == v for k, v in model.items())
    pool = m.pool
    assert len(pool) == 2          # the map struct and the current cells
    assert pool.size == 32 + m.capacity() * 16
    del m
    gc.collect()
    assert len(pool) == 2           # the pool (still referenced) keeps the cells


def test_downstream_cdef_errors(arenadown):
    pool = Pool()
    a = arenadown.cdef_alloc(pool, 3, 8)
    before = state(pool)
    with pytest.raises(NotInPoolError):
        arenadown.cdef_free(pool, a + 16)
    with pytest.raises(MemoryError, match="overflows"):
        arenadown.cdef_alloc(pool, 2**63, 4)
    with pytest.raises(ValueError, match="must be larger"):
        arenadown.cdef_realloc(pool, a, 8)
    with pytest.raises(NotInPoolError):
        arenadown.cdef_realloc(pool, 12345, 8)
    assert state(pool) == before
    b = arenadown.cdef_realloc(pool, a, 4000)
    arenadown.cdef_free(pool, b)
    assert state(pool) == (0, 0, {})
    blk, nonzero = arenadown.address_block(100, 8)
    assert nonzero == 0 and blk.addr % 16 == 0


def test_downstream_nogil_errors(arenadown):
    ok, notowned = arenadown.codes()
    pool = Pool()
    a = arenadown.nogil_alloc(pool, 4, 4)
    arenadown.write_bytes(a, b"abcd")
    before = state(pool)
    assert arenadown.nogil_alloc(pool, 2**63, 4) == 0
    assert arenadown.nogil_free(pool, a + 1) == notowned
    assert arenadown.nogil_free(pool, Pool().alloc(1, 8)) == notowned
    assert arenadown.nogil_realloc(pool, a, 16) == 0
    assert arenadown.nogil_realloc(pool, a, 2**60) == 0
    assert state(pool) == before
    b = arenadown.nogil_realloc(pool, a, 100)
    assert arenadown.read_bytes(b, 6) == b"abcd\0\0"
    assert arenadown.nogil_free(pool, b) == ok
    assert arenadown.nogil_free(pool, b) == notowned
    assert state(pool) == (0, 0, {})


def run_threads(target, args_list):
    results = [None] * len(args_list)

    def run(i):
        results[i] = target(*args_list[i])
    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(args_list))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results


@pytest.mark.parametrize("nthreads", [4])
def test_nogil_one_pool_per_thread(arenadown, nthreads):
    """The default contract: each pool used by one thread at a time, GIL released."""
    pools = [Pool() for _ in range(nthreads)]
    res = run_threads(arenadown.worker, [(pools[i], i, 60000, False) for i in range(nthreads)])
    for pool, (bad, dirty, failed, allocs, frees, left) in zip(pools, res):
        assert (bad, dirty, failed) == (0, 0, 0)
        assert allocs - frees == len(left) == len(pool)
        assert set(pool.addresses) == set(left)
    every = [a for p in pools for a in p.addresses]
    assert len(every) == len(set(every))     # no block handed to two pools


def python_worker(pool, nops, seed):
    """The Python API (GIL held) on a pool that nogil threads use at the same time."""
    rng = random.Random(seed)
    mine = {}
    for i in range(nops):
        if mine and rng.random() < 0.5:
            a = rng.choice(list(mine))
            assert ctypes.string_at(a, 8) == mine.pop(a)
            pool.free(a)
        else:
            a = pool.alloc(1, rng.choice([8, 100, 2000]))
            assert a not in mine and ctypes.string_at(a, 8) == bytes(8)
            mine[a] = i.to_bytes(8, "little")
            ctypes.memmove(a, mine[a], 8)
    return 0, 0, 0, len(mine), 0, list(mine)


def test_nogil_shared_pool(arenadown):
    """Pool(shared=True): several threads, GIL released, blocks freed by other threads,
    and one thread on the Python API at the same time."""
    pool = Pool(shared=True)
    arenadown.reset_xfer()
    jobs = [(arenadown.worker, (pool, i, 60000, True)) for i in range(4)]
    jobs.append((python_worker, (pool, 20000, 5)))
    res = run_threads(lambda f, a: f(*a), jobs)
    parked = arenadown.drain_xfer()
    left = [a for r in res for a in r[5]] + parked
    assert all(r[:3] == (0, 0, 0) for r in res), [r[:5] for r in res]
    assert len(left) == len(set(left))       # no block handed out twice
    assert sum(r[3] - r[4] for r in res) == len(left) == len(pool)
    assert set(pool.addresses) == set(left)  # no block lost
    for a in left:
        pool.free(a)
    assert state(pool) == (0, 0, {})


def test_arena_bench_runs():
    """The bench module builds its kernels and returns well-formed rows (no timing asserted)."""
    from hakmem.bench import arena as arena_bench
    rows = arena_bench.run(ops=2000, rounds=1, fill=500, mem_blocks=2000)
    timed = [r for r in rows if "mops" in r]
    assert {r["kind"] for r in timed} >= {"hakmem.arena", "hakmem.arena nogil",
                                          "hakmem.arena shared"}
    assert all(r["mops"] > 0 for r in timed)
    mem = [r for r in rows if r["case"].startswith("bytes per") and "rss_bytes" in r]
    assert mem and mem[0]["hakmem_bytes"] == 48.0      # a 32-byte request + 16-byte header
    try:
        import cymem  # noqa: F401
    except ImportError:
        assert any(r["kind"] == "cymem" and "skipped" in r for r in rows)
    else:
        assert any(r["kind"] == "cymem" and "mops" in r for r in rows)
    assert "alloc+free" in arena_bench.format_rows(rows)
